"""Ablation of the training objectives (and model options) that target electrostatics.

Every row trains the default architecture (examples/train_water.yaml) on the same training pool,
the same validation split and the same optimizer-step budget, once per seed; then each run's best
checkpoint is evaluated on the test set and the 20-water transfer set with the product's own
evaluation (``ase_density.evaluation.evaluate``: eps_rho against the fitted reference, dipole
errors against DFT, atomic and per-water charge errors in the basis partition and in Hirshfeld's
against the DFT density, the split of the dipole error).

    python examples/electrostatics/ablation.py train [--rows ...] [--seeds 0 1] [--jobs 2]
    python examples/electrostatics/ablation.py evaluate [--rows ...]
    python examples/electrostatics/ablation.py report          # table -> docs/electrostatics_ablation.md

Everything resumes: a run with ``train.json`` is finished; an interrupted run continues from its
``last.ckpt``; a run with ``eval.json`` is evaluated. Outputs: results/electrostatics_ablation/.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "results" / "electrostatics_ablation"
TABLE = ROOT / "docs" / "electrostatics_ablation.md"
EVAL_SETS = ("test", "transfer")
#: loss weights (see examples/train_water.yaml): each new term carries about the MSE's weight at the
#: shipped model's errors
WEIGHTS = {"structure_coulomb": 0.01, "population": 0.002, "dipole": 0.0003}
#: every row starts from all of them off (examples/train_water.yaml's defaults are the all_heavy row)
OFF = {**{f"training_module.loss.{k}": "null" for k in WEIGHTS}, "training_module.model.charge_equilibration": "false"}
#: all three terms at those weights (row "all"; the other rows of that family start from it)
ALL = {f"training_module.loss.{k}": v for k, v in WEIGHTS.items()}
#: the electrostatic terms at 2x (structure Coulomb, population) and 10x (dipole) those weights
HEAVY = {f"training_module.loss.{k}": round(v * f, 6) for (k, v), f in zip(WEIGHTS.items(), (2, 2, 10))}
#: the 12-16-water clusters labelled so far, added to the training split (train.json records how many)
LARGE = ROOT / "data" / "train_large.h5"
ROWS = {name: {**OFF, **row} for name, row in {
    "mse": {},
    "structure_coulomb": {"training_module.loss.structure_coulomb": WEIGHTS["structure_coulomb"]},
    "population": {"training_module.loss.population": WEIGHTS["population"]},
    "dipole": {"training_module.loss.dipole": WEIGHTS["dipole"]},
    "all": ALL,
    "all_charge_equilibration": {**ALL, "training_module.model.charge_equilibration": "true"},
    "all_heavy": HEAVY,
    # the same plus the larger training clusters (the validation split is unchanged)
    "all_heavy_large": {**HEAVY, "extra_train_files": f"[{LARGE}]"},
    # longer receptive field: a fourth interaction layer (16 A), or a 5 A cutoff (more neighbours per hop)
    "all_4_layers": {**ALL, "training_module.model.num_layers": 4},
    "all_cutoff_5": {**ALL, "cutoff_radius": 5.0},
    # the same plus the MSE of the Hirshfeld net charges of the water molecules (e^2), at two weights
    "all_hirshfeld_water": {**ALL, "hirshfeld_grid_level": 1, "training_module.loss.hirshfeld_water_charge": 0.1},
    "all_hirshfeld_water_light": {**ALL, "hirshfeld_grid_level": 1, "training_module.loss.hirshfeld_water_charge": 0.02},
    # the same with the MSE of the atoms' Hirshfeld populations (e^2) instead
    "all_hirshfeld_population": {**ALL, "hirshfeld_grid_level": 1, "training_module.loss.hirshfeld_population": 0.02},
}.items()}
MAX_STEPS = 1000
GRID_LEVEL = 2


def early_stopping_override() -> str:
    """The override that switches off early stopping of examples/train_water.yaml (found by class,
    not by its position in the callback list)."""
    import yaml

    callbacks = yaml.safe_load((ROOT / "examples" / "train_water.yaml").read_text())["trainer"]["callbacks"]
    index = next(i for i, c in enumerate(callbacks) if c["_target_"].endswith(".EarlyStopping"))
    return f"trainer.callbacks.{index}.patience=1000000"


def run_dir(row: str, seed: int) -> Path:
    return OUT / "runs" / f"{row}_s{seed}"


def train_one(row: str, seed: int, max_steps: int) -> str:
    """Train (or continue) one run; returns a status line."""
    directory = run_dir(row, seed)
    if (directory / "train.json").exists():
        return f"{directory.name}: finished before"
    directory.mkdir(parents=True, exist_ok=True)
    overrides = [f"{k}={v}" for k, v in ROWS[row].items()]
    command = [str(Path(sys.executable).with_name("nequip-train")), "-cp", str(ROOT / "examples"), "-cn", "train_water",
               f"data_file={ROOT / 'data' / 'train_pool.h5'}", f"seed={seed}", f"hydra.run.dir={directory}",
               f"++trainer.max_steps={max_steps}", "trainer.max_epochs=-1",
               early_stopping_override(), *overrides]
    if (directory / "last.ckpt").exists():
        command.append(f"+ckpt_path={directory / 'last.ckpt'}")
    extra = {}
    if "extra_train_files" in ROWS[row]:  # counted at the start: labelling may still be adding to the file
        from ase_density.dataset import ReferenceData

        extra["extra_train_structures"] = len(ReferenceData(LARGE))
    start = time.perf_counter()
    with open(directory / "nequip-train.out", "a") as log:
        code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                              env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}).returncode
    seconds = time.perf_counter() - start
    if code != 0 or "TRAIN RUN END" not in (directory / "nequip-train.out").read_text():
        return f"{directory.name}: nequip-train exited with {code} after {seconds:.0f} s (see nequip-train.out)"
    relative = [c.replace(str(ROOT) + "/", "") for c in command[1:]]
    (directory / "train.json").write_text(json.dumps(
        {"row": row, "seed": seed, "max_steps": max_steps, "command": ["nequip-train", *relative],
         "wall_seconds": round(seconds, 1), "threads": 1, **extra}, indent=1) + "\n")
    return f"{directory.name}: trained in {seconds:.0f} s"


def evaluate_one(row: str, seed: int) -> str:
    """Evaluate one finished run's best checkpoint on the test and transfer sets (eval.json)."""
    from ase_density.calculator import DensityCalculator
    from ase_density.dataset import ReferenceData
    from ase_density.evaluation import evaluate

    directory = run_dir(row, seed)
    if (directory / "eval.json").exists() or not (directory / "train.json").exists():
        return f"{directory.name}: nothing to do"
    calc = DensityCalculator(model=str(directory / "best.ckpt"), trust_model=True)  # our own checkpoint
    report = {"parameters": int(sum(p.numel() for p in calc.model.parameters()))}
    for name in EVAL_SETS:
        data = ReferenceData(ROOT / "data" / f"{name}.h5")
        result = evaluate(calc, data, grid_level=GRID_LEVEL, progress=True)  # with the DFT density: Hirshfeld columns
        report[name] = {"mean": result["mean"], "structures": result["structures"]}
    (directory / "eval.json").write_text(json.dumps(report, indent=1) + "\n")
    return f"{directory.name}: evaluated"


COLUMNS = [  # (header, set, key, format)
    ("eps test %", "test", "eps_fit", "{:.3f}"), ("eps 20 w %", "transfer", "eps_fit", "{:.3f}"),
    ("dipole test D", "test", "dipole_error", "{:.2f}"), ("dipole 20 w D", "transfer", "dipole_error", "{:.2f}"),
    ("atom q MAE e", "test", "charge_mae", "{:.4f}"), ("water q MAE e", "test", "water_charge_mae", "{:.4f}"),
    ("water q MAE 20 w e", "transfer", "water_charge_mae", "{:.4f}"),
    ("Hirshfeld atom q MAE e", "test", "hirshfeld_charge_mae", "{:.4f}"),
    ("Hirshfeld water q MAE e", "test", "hirshfeld_water_charge_mae", "{:.4f}"),
    ("Hirshfeld water q MAE 20 w e", "transfer", "hirshfeld_water_charge_mae", "{:.4f}"),
    ("dipole split test: net / flow / l=1 D", "test", None, None),
]


def report(rows) -> str:
    """Markdown table (mean ± spread over seeds) of every evaluated row; also writes summary.json."""
    summary, lines = {}, []
    header = ["row", "seeds"] + [c[0] for c in COLUMNS] + ["parameters", "train s"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        evals = [(json.loads((d / "eval.json").read_text()), json.loads((d / "train.json").read_text()))
                 for d in sorted((OUT / "runs").glob(f"{row}_s*")) if (d / "eval.json").exists()]
        if not evals:
            continue
        cells, entry = [row, str(len(evals))], {}
        for head, name, key, fmt in COLUMNS:
            if key is None:
                parts = [np.mean([e[name]["mean"][f"dipole_error_{k}"] for e, _ in evals])
                         for k in ("net_charges", "charge_flow", "atomic_moments")]
                cells.append(" / ".join(f"{p:.2f}" for p in parts))
                entry["dipole_split_test"] = parts
                continue
            values = np.array([e[name]["mean"][key] for e, _ in evals], dtype=float)
            entry[f"{name}.{key}"] = values.tolist()
            cells.append(fmt.format(values.mean()) + (f" ± {fmt.format(values.std())}" if len(values) > 1 else ""))
        cells += [str(evals[0][0]["parameters"]), f"{np.mean([t['wall_seconds'] for _, t in evals]):.0f}"]
        summary[row] = entry
        lines.append("| " + " | ".join(cells) + " |")
    (OUT / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["train", "evaluate", "report"])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--jobs", type=int, default=2, help="training runs at a time (one thread each)")
    parser.add_argument("--max-steps", type=int, default=MAX_STEPS)
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.max_steps < 1:
        parser.error("--jobs and --max-steps must be >= 1")
    tasks = [(row, seed) for seed in args.seeds for row in args.rows]  # seed 0 of every row first
    if args.action == "train":
        with ThreadPoolExecutor(args.jobs) as pool:
            for line in pool.map(lambda t: train_one(*t, args.max_steps), tasks):
                print(line, flush=True)
    elif args.action == "evaluate":
        from nequip.utils.global_state import set_global_state

        set_global_state()
        for row, seed in tasks:
            print(evaluate_one(row, seed), flush=True)
    else:
        table = report(args.rows)
        print(table)
        TABLE.write_text(f"# Electrostatics ablation\n\nMade by `python examples/electrostatics/ablation.py report` "
                         f"(after `train` and `evaluate`). Mean ± standard deviation over seeds.\n\n{table}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
