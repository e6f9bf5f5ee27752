"""Training one run of the study with ``nequip-train``, resumably.

Layout of a study directory::

    study.json                 frozen settings (grid.Settings)
    config/run.yaml            frozen copy of the nequip-train template
    runs/<run name>/           hydra output dir: best.ckpt, metrics/, feature_norms.csv, train.log (Hydra's
                               log), nequip-train.out (stdout and stderr), train.json (written
                               last: the run is finished), eval.json
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import List

from ase_density.h5io import portable_path

from .grid import Run, Settings

TEMPLATE = Path(__file__).with_name("template.yaml")
CONFIG_NAME = "run"
#: marker of a finished training run (its content: command, wall time)
TRAIN_MARKER = "train.json"
CHECKPOINT = "best.ckpt"
#: stdout and stderr of nequip-train (``train.log`` is Hydra's own log file)
OUTPUT = "nequip-train.out"
#: nequip-train's last log line of a training that ran to its end. Lightning exits with status 0
#: on SIGTERM too (a killed run leaves a checkpoint as well), so the status alone proves nothing.
FINISHED_LINE = "TRAIN RUN END"


class TrainingError(RuntimeError):
    """``nequip-train`` failed for one run."""


def run_dir(study_dir: Path, run: Run) -> Path:
    return study_dir / "runs" / run.name


def is_trained(study_dir: Path, run: Run) -> bool:
    return (run_dir(study_dir, run) / TRAIN_MARKER).exists()


def freeze_template(study_dir: Path, template: Path = TEMPLATE) -> Path:
    """The study's config directory, holding a copy of ``template`` made on the first call."""
    config_dir = study_dir / "config"
    frozen = config_dir / f"{CONFIG_NAME}.yaml"
    if not frozen.exists():
        config_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(template, frozen)
    return config_dir


def _nequip_train() -> str:
    beside_python = Path(sys.executable).with_name("nequip-train")
    found = str(beside_python) if beside_python.exists() else shutil.which("nequip-train")
    if found is None:
        raise TrainingError("`nequip-train` not found: install nequip in this environment")
    return found


def train_command(study_dir: Path, settings: Settings, run: Run) -> List[str]:
    """The ``nequip-train`` command line of ``run`` (absolute paths: Hydra needs an absolute ``-cp``)."""
    study_dir = study_dir.resolve()
    return [_nequip_train(), "-cp", str(study_dir / "config"), "-cn", CONFIG_NAME,
            *settings.train_overrides(run), f"hydra.run.dir={run_dir(study_dir, run)}"]


def train(study_dir: Path, settings: Settings, run: Run) -> Path:
    """Train ``run`` unless it has finished before; returns its directory.

    A directory without the finish marker (a killed or failed run) is deleted and the run starts
    over. On success (nequip-train reached its end) the marker ``train.json`` (command, wall time
    in s) is written last; on failure, a kill included, :class:`TrainingError` carries the tail of
    the output."""
    directory = run_dir(study_dir, run)
    if is_trained(study_dir, run):
        return directory
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    command = train_command(study_dir, settings, run)
    start = time.perf_counter()
    with open(directory / OUTPUT, "w") as log:
        result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, cwd=directory,
                                env={**os.environ, "HYDRA_FULL_ERROR": "1"})
    seconds = time.perf_counter() - start
    output = (directory / OUTPUT).read_text()
    if result.returncode != 0 or not (directory / CHECKPOINT).exists() or FINISHED_LINE not in output:
        raise TrainingError(f"run {run.name}: nequip-train exited with {result.returncode} after {seconds:.0f} s "
                            f"without finishing (output: {directory / OUTPUT}):\n{output[-3000:]}")
    shutil.rmtree(directory / ".hydra", ignore_errors=True)  # Hydra's copies of the config, with machine paths
    marker = {"command": portable_command(command), "wall_seconds": round(seconds, 1),
              "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
    (directory / TRAIN_MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    return directory


def portable_command(command: List[str]) -> List[str]:
    """``command`` as recorded in provenance: the program by name, absolute paths (also in
    ``key=/path`` overrides) repository-relative (:func:`ase_density.h5io.portable_path`)."""
    out = [Path(command[0]).name]
    for arg in command[1:]:
        key, sep, value = arg.rpartition("=") if "=" in arg else ("", "", arg)
        out.append(key + sep + portable_path(value) if os.path.isabs(value) else arg)
    return out
