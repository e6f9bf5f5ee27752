"""Tables over the grid: one row per evaluated run, means over repeats, learning-curve slopes.

Files written into the study directory: ``summary.csv`` (one row per run), ``summary.json``
(means and standard deviations over seeds per (lmax_h, lmax_o, n_train)), ``slopes.csv`` and
``slopes.md`` (fitted learning-curve exponents b of log(error) = a + b log(n_train)).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

#: error channels: total eps_rho and the l-channels (%); ``eps_l{l}`` for l = 0..4
CHANNELS = ("eps_total",) + tuple(f"eps_l{l}" for l in range(5))


def channel_l(channel: str):
    """The output l of a channel name, ``None`` for ``eps_total``."""
    return None if channel == "eps_total" else int(channel[len("eps_l"):])


def flatten(result: Dict) -> Dict:
    """One CSV row from a run's evaluation: identity, eps channels, coefficient RMSE per element and l."""
    row = {key: result[key] for key in ("run", "lmax_h", "lmax_o", "n_train", "seed", "n_parameters")}
    row["eps_total"] = result["eps_total"]
    row.update({f"eps_l{l}": v for l, v in result["eps_l"].items()})
    for element, per_l in result["coeff_rmse"].items():
        row.update({f"rmse_{element}_l{l}": v for l, v in per_l.items()})
    return row


def aggregate(rows: Sequence[Dict]) -> List[Dict]:
    """Per (lmax_h, lmax_o, n_train): mean and standard deviation (ddof 0) over seeds of every
    numeric column, and the number of seeds."""
    groups: Dict[tuple, List[Dict]] = {}
    for row in rows:
        groups.setdefault((row["lmax_h"], row["lmax_o"], row["n_train"]), []).append(row)
    metrics = [k for k in rows[0] if k.startswith(("eps_", "rmse_"))] if rows else []
    out = []
    for (lmax_h, lmax_o, n_train), members in sorted(groups.items()):
        entry = {"lmax_h": lmax_h, "lmax_o": lmax_o, "n_train": n_train, "n_seeds": len(members),
                 "n_parameters": members[0]["n_parameters"]}
        for key in metrics:
            values = np.array([m[key] for m in members], dtype=float)
            entry[key] = float(values.mean())
            entry[f"{key}_std"] = float(values.std())
        out.append(entry)
    return out


def learning_curve_slopes(means: Sequence[Dict]) -> List[Dict]:
    """Least-squares exponent b of log(err) = a + b log(n_train) per (lmax_h, lmax_o) and channel
    (seed means; channels with l > lmax_o, which the model does not predict, are skipped); needs
    at least two training-set sizes."""
    curves: Dict[tuple, List[Dict]] = {}
    for entry in means:
        curves.setdefault((entry["lmax_h"], entry["lmax_o"]), []).append(entry)
    out = []
    for (lmax_h, lmax_o), points in sorted(curves.items()):
        if len(points) < 2:
            continue
        n = np.log([p["n_train"] for p in points])
        row = {"lmax_h": lmax_h, "lmax_o": lmax_o, "sizes": f"{points[0]['n_train']}-{points[-1]['n_train']}"}
        for channel in CHANNELS:
            l = channel_l(channel)
            if channel in points[0] and (l is None or l <= lmax_o):
                row[channel] = float(np.polyfit(n, np.log([p[channel] for p in points]), 1)[0])
        out.append(row)
    return out


def _write_csv(path: Path, rows: Sequence[Dict]):
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def slopes_markdown(slopes: Sequence[Dict]) -> str:
    """The slopes as a Markdown table (one row per lmax_o, lmax_h; '–' where not fitted)."""
    header = "| lmax_o | lmax_h | sizes | " + " | ".join(CHANNELS) + " |"
    lines = [header, "|" + "---|" * (3 + len(CHANNELS))]
    for row in sorted(slopes, key=lambda r: (r["lmax_o"], r["lmax_h"])):
        cells = [f"{row[c]:.2f}" if c in row else "–" for c in CHANNELS]
        lines.append(f"| {row['lmax_o']} | {row['lmax_h']} | {row['sizes']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_summary(study_dir: Path, results: Sequence[Dict]) -> Dict:
    """Write the summary files for the evaluated runs ``results`` (``eval.json`` contents);
    returns {"runs": rows, "means": ..., "slopes": ...}."""
    rows = sorted((flatten(r) for r in results), key=lambda r: (r["n_train"], r["lmax_o"], r["lmax_h"], r["seed"]))
    means = aggregate(rows)
    slopes = learning_curve_slopes(means)
    if rows:
        _write_csv(study_dir / "summary.csv", rows)
    (study_dir / "summary.json").write_text(json.dumps({"means": means, "slopes": slopes}, indent=1) + "\n")
    if slopes:
        _write_csv(study_dir / "slopes.csv", slopes)
        (study_dir / "slopes.md").write_text(slopes_markdown(slopes))
    return {"runs": rows, "means": means, "slopes": slopes}
