"""Tables over the grid: one row per evaluated run, means over repeats, learning-curve slopes.

Files written into the study directory: ``summary.csv`` (one row per run), ``summary.json``
(means and standard deviations over seeds per (lmax_h, lmax_o, n_train)), ``slopes.csv`` and
``slopes.md`` (fitted learning-curve exponents b of log(error) = a + b log(n_train)),
``saturation.md`` (errors at the largest training-set size per (lmax_o, lmax_h)),
``learning_curves.md`` (total error per lmax_h and training-set size, one table per lmax_o),
``emergence.csv`` and ``emergence.md`` (when the hidden features of each l grow during training,
from the feature-norm records).
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


def saturation_markdown(means: Sequence[Dict]) -> str:
    """Errors at the largest training-set size as a Markdown table, one row per (lmax_o, lmax_h):
    seed means of every channel the model predicts (%), ± the standard deviation over seeds where
    there are several, '–' for the channels it does not predict."""
    n_max = max(entry["n_train"] for entry in means)
    lines = [f"Test-set errors (%, mean ± standard deviation over seeds) at n_train = {n_max}:", "",
             "| lmax_o | lmax_h | parameters | seeds | " + " | ".join(CHANNELS) + " |",
             "|" + "---|" * (4 + len(CHANNELS))]
    for entry in sorted((e for e in means if e["n_train"] == n_max), key=lambda e: (e["lmax_o"], e["lmax_h"])):
        lines.append(f"| {entry['lmax_o']} | {entry['lmax_h']} | {entry['n_parameters']} | {entry['n_seeds']} | "
                     + " | ".join(_mean_cell(entry, c) for c in CHANNELS) + " |")
    return "\n".join(lines) + "\n"


def _mean_cell(entry: Dict, channel: str) -> str:
    """A table cell: the seed mean of ``channel`` (%), ± the standard deviation where there are
    several seeds, '–' for a channel the model does not predict."""
    if channel not in entry or (channel_l(channel) is not None and channel_l(channel) > entry["lmax_o"]):
        return "–"
    spread = f" ± {entry[channel + '_std']:.3f}" if entry["n_seeds"] > 1 else ""
    return f"{entry[channel]:.3f}{spread}"


def learning_curves_markdown(means: Sequence[Dict], channel: str = "eps_total") -> str:
    """The learning curves as Markdown tables, one per lmax_o: ``channel`` (%, seed mean ± standard
    deviation where there are several seeds) with a row per lmax_h and a column per n_train
    ('' where that size was not run)."""
    blocks = []
    for lmax_o in sorted({e["lmax_o"] for e in means}):
        curve = {(e["lmax_h"], e["n_train"]): e for e in means if e["lmax_o"] == lmax_o}
        sizes = sorted({n for _, n in curve})
        lines = [f"{channel} (%) at lmax_o = {lmax_o}, by training-set size:", "",
                 "| lmax_h | " + " | ".join(map(str, sizes)) + " |", "|" + "---|" * (1 + len(sizes))]
        for lmax_h in sorted({h for h, _ in curve}):
            cells = [_mean_cell(curve[lmax_h, n], channel) if (lmax_h, n) in curve else "" for n in sizes]
            lines.append(f"| {lmax_h} | " + " | ".join(cells) + " |")
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)


def write_summary(study_dir: Path, results: Sequence[Dict]) -> Dict:
    """Write the summary files for the evaluated runs ``results`` (``eval.json`` contents);
    returns {"runs": rows, "means": ..., "slopes": ...}."""
    rows = sorted((flatten(r) for r in results), key=lambda r: (r["n_train"], r["lmax_o"], r["lmax_h"], r["seed"]))
    means = aggregate(rows)
    slopes = learning_curve_slopes(means)
    if rows:
        _write_csv(study_dir / "summary.csv", rows)
    (study_dir / "summary.json").write_text(json.dumps({"means": means, "slopes": slopes}, indent=1) + "\n")
    if means:
        (study_dir / "saturation.md").write_text(saturation_markdown(means))
        (study_dir / "learning_curves.md").write_text(learning_curves_markdown(means))
    if slopes:
        _write_csv(study_dir / "slopes.csv", slopes)
        (study_dir / "slopes.md").write_text(slopes_markdown(slopes))
    return {"runs": rows, "means": means, "slopes": slopes}


def read_feature_norms(path: Path) -> Dict[int, Dict[str, List[tuple]]]:
    """{layer: {irrep label like '1o': [(step, mean norm), ...]}} from a ``feature_norms.csv``."""
    out: Dict[int, Dict[str, List[tuple]]] = {}
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            label = f"{row['l']}{'e' if int(row['parity']) > 0 else 'o'}"
            out.setdefault(int(row["layer"]), {}).setdefault(label, []).append(
                (int(row["step"]), float(row["mean_norm"])))
    return out


#: final / minimum norm below which a block of features counts as not emerged
MIN_GROWTH = 1.1


def feature_emergence(points: Sequence[tuple]) -> Dict:
    """When one block of hidden features grows during training, from its [(step, mean norm), ...]:
    the norm at the first record, its minimum and the step of it, the final norm, the growth
    final / minimum, and the emergence step, the first step after the minimum at which the norm
    has covered half of its rise from the minimum to the final value (``None`` when it rises by
    less than :data:`MIN_GROWTH`: a block still shrinking or flat has not emerged)."""
    steps = np.array([p[0] for p in points])
    norms = np.array([p[1] for p in points], dtype=float)
    lowest = int(np.argmin(norms))
    rise = norms[-1] - norms[lowest]
    after = np.nonzero(norms[lowest:] - norms[lowest] >= 0.5 * rise)[0]
    return {"initial": float(norms[0]), "minimum": float(norms[lowest]), "minimum_step": int(steps[lowest]),
            "final": float(norms[-1]), "growth": float(norms[-1] / norms[lowest]),
            "emergence_step": int(steps[lowest + after[0]]) if norms[-1] >= MIN_GROWTH * norms[lowest] else None}


def write_emergence(study_dir: Path, runs: Sequence[tuple]) -> List[Dict]:
    """``emergence.csv``/``.md`` from ``runs`` = [(result, feature_norms.csv path), ...]: per run
    and hidden irrep of the last convolution, :func:`feature_emergence`."""
    rows = []
    for result, path in runs:
        norms = read_feature_norms(path)
        last = max(norms)
        for label, points in sorted(norms[last].items(), key=lambda kv: (int(kv[0][:-1]), kv[0][-1])):
            rows.append({"run": result["run"], "lmax_h": result["lmax_h"], "lmax_o": result["lmax_o"],
                         "n_train": result["n_train"], "layer": last, "irrep": label, **feature_emergence(points)})
    if not rows:
        return rows
    _write_csv(study_dir / "emergence.csv", rows)
    lines = ["| lmax_o | lmax_h | irrep | norm at step 0 | minimum (step) | final | growth | emergence step |",
             "|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["lmax_o"], r["lmax_h"])):
        lines.append(f"| {r['lmax_o']} | {r['lmax_h']} | {r['irrep']} | {r['initial']:.4f} | {r['minimum']:.4f} "
                     f"({r['minimum_step']}) | {r['final']:.4f} | {r['growth']:.2f} | {r['emergence_step'] or '–'} |")
    (study_dir / "emergence.md").write_text("\n".join(lines) + "\n")
    return rows
