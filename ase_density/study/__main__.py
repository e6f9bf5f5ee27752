"""Command line of the study: ``python -m ase_density.study run|report ...`` (``--help``)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from ase_density.dataset import DatasetError

from .grid import FULL_GRID, QUICK_GRID, Settings, StudyError, frozen_settings, grid_runs
from .runner import report, run_study

#: ``--quick``: settings for tiny data (the fixture) that train each run in seconds
QUICK_SETTINGS = {"n_val": 2, "max_steps": 8, "patience_steps": 8, "validation_steps": 4, "batch_size": 2,
                  "num_layers": 1, "num_features": 4, "grid_level": 1}
#: command-line flags that set :class:`~ase_density.study.grid.Settings` fields: (type, help)
SETTING_FLAGS = {
    "train_data": (str, "training pool, HDF5 reference file (required for a new study)"),
    "test_data": (str, "test set, HDF5 reference file (required for a new study)"),
    "n_val": (int, "validation structures drawn from the pool"),
    "data_seed": (int, "seed of the pool's split"),
    "max_steps": (int, "optimizer steps per run"),
    "patience_steps": (int, "early-stopping patience in optimizer steps"),
    "validation_steps": (int, "optimizer steps between validation checks, rounded up to whole epochs"),
    "batch_size": (int, "training structures per step"),
    "num_layers": (int, "NequIP convolutions"),
    "num_features": (int, "multiplicity of every hidden irrep: one value, or five, one per lmax_h = 0..4 "
                          "(e.g. equal parameter counts)"),
    "cutoff_radius": (float, "neighbour cutoff (Å)"),
    "grid_level": (int, "PySCF grid level of the eps_rho integrals"),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ase_density.study", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="train, evaluate and report the grid (resumable)")
    run.add_argument("study_dir", type=Path)
    run.add_argument("--quick", action="store_true",
                     help=f"reduced grid {QUICK_GRID} and tiny models/budget {QUICK_SETTINGS} (defaults only)")
    run.add_argument("--lmax-h", type=int, nargs="+", help=f"hidden lmax values (default {FULL_GRID['lmax_h']})")
    run.add_argument("--lmax-o", type=int, nargs="+", help=f"output lmax values (default {FULL_GRID['lmax_o']})")
    run.add_argument("--sizes", type=int, nargs="+", help=f"training-set sizes (default {FULL_GRID['sizes']})")
    run.add_argument("--repeats", type=int, help=f"seeds per grid point (default {FULL_GRID['repeats']})")
    run.add_argument("--seed", type=int, default=0, help="seed of the first repeat (default 0)")
    run.add_argument("--jobs", type=int, default=1, help="runs trained at the same time (default 1)")
    run.add_argument("--no-train", action="store_true",
                     help="train nothing: evaluate and report the runs trained before (e.g. by a time-limited session)")
    run.add_argument("--no-eval", action="store_true",
                     help="train only, every size at once with --jobs workers (e.g. on a GPU machine); "
                          "evaluate later with --no-train")
    defaults = {f.name: f.default for f in dataclasses.fields(Settings) if f.default is not dataclasses.MISSING}
    for name, (kind, text) in SETTING_FLAGS.items():
        default = f"default {defaults[name]}; " if name in defaults else ""
        run.add_argument("--" + name.replace("_", "-"), type=kind, metavar=name.split("_")[-1].upper(),
                         nargs="+" if name == "num_features" else None, help=f"{text} ({default}frozen in study.json)")
    run.add_argument("--override", action="append", metavar="KEY=VALUE",
                     help="nequip-train override of the template for every run (repeatable; frozen)")
    rep = commands.add_parser("report", help="rewrite tables and figures from the evaluated runs")
    rep.add_argument("study_dir", type=Path)
    return parser


def _settings(args) -> Settings:
    """Settings from the flags given, over the frozen ones of an existing study, else over the defaults."""
    given = {name: getattr(args, name) for name in SETTING_FLAGS if getattr(args, name) is not None}
    if args.override is not None:
        given["overrides"] = tuple(args.override)
    frozen = args.study_dir / "study.json"
    if frozen.exists():
        return dataclasses.replace(frozen_settings(args.study_dir), **given)
    base = dict(QUICK_SETTINGS) if args.quick else {}
    missing = [f"--{n.replace('_', '-')}" for n in ("train_data", "test_data") if n not in given]
    if missing:
        raise StudyError(f"a new study needs {' and '.join(missing)}")
    return Settings(**{**base, **given})


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "report":
            report(args.study_dir)
            return 0
        grid = QUICK_GRID if args.quick else FULL_GRID
        pick = {key: grid[key] if getattr(args, key) is None else getattr(args, key)
                for key in ("lmax_h", "lmax_o", "sizes", "repeats")}
        runs = grid_runs(pick["lmax_h"], pick["lmax_o"], pick["sizes"], pick["repeats"], seed=args.seed)
        done = run_study(args.study_dir, _settings(args), runs, jobs=args.jobs, train_missing=not args.no_train,
                         evaluate_new=not args.no_eval)
    except (StudyError, DatasetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    where = ("evaluate them with --no-train" if args.no_eval
             else f"results in {args.study_dir}/summary.csv, slopes.md, plots/")
    print(f"{len(done['trained'])} run(s) trained, {len(done['evaluated'])} evaluated; {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
