"""How a model's dipole error grows with cluster size, from ``ase-density evaluate`` reports.

Groups the per-structure dipole errors (Debye, against DFT) of one or more evaluation JSONs by the
number of waters, prints mean and RMS per size, and fits |error| = c * n_waters**alpha by least
squares on the logarithms: alpha = 0.5 if each water adds an independent error, alpha = 1 if the
waters' errors add up in one direction. Extrapolates to ``--predict`` waters.

    python examples/electrostatics/dipole_size_scaling.py results/model_v3/{test,transfer,transfer32}_eval.json
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def size_scaling(reports) -> tuple:
    """(n_waters, dipole errors in D) of every structure in ``reports`` (evaluate JSON dicts)."""
    waters, errors = [], []
    for report in reports:
        for row in report["structures"]:
            waters.append(row["n_atoms"] / 3)
            errors.append(row["dipole_error"])
    return np.asarray(waters), np.asarray(errors)


def fit_power_law(waters, errors) -> tuple:
    """(c, alpha) of |error| = c * waters**alpha, least squares on log |error|."""
    if len(set(waters.tolist())) < 2 or np.any(errors <= 0):
        raise ValueError("need positive errors at two or more cluster sizes")
    alpha, log_c = np.polyfit(np.log(waters), np.log(errors), 1)
    return float(np.exp(log_c)), float(alpha)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reports", nargs="+", help="ase-density evaluate --json outputs")
    parser.add_argument("--predict", type=float, nargs="*", default=[50.0], help="cluster sizes (waters) to extrapolate to")
    args = parser.parse_args(argv)
    reports = []
    for path in args.reports:
        with open(path) as fh:
            reports.append(json.load(fh))
    models = {r["model_sha256"] for r in reports}
    if len(models) > 1:
        parser.error("the reports are of different models")
    waters, errors = size_scaling(reports)
    print(f"{'waters':>7}{'clusters':>10}{'mean |dmu| D':>14}{'rms D':>8}")
    for n in sorted(set(waters.tolist())):
        chosen = errors[waters == n]
        print(f"{n:7.0f}{len(chosen):10d}{chosen.mean():14.3f}{np.sqrt((chosen ** 2).mean()):8.3f}")
    c, alpha = fit_power_law(waters, errors)
    print(f"fit: |dmu| = {c:.3f} D * n_waters^{alpha:.2f}  ({len(errors)} clusters)")
    for n in args.predict:
        print(f"extrapolated to {n:.0f} waters: {c * n ** alpha:.2f} D")
    return 0


if __name__ == "__main__":
    sys.exit(main())
