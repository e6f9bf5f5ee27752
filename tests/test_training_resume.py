"""The training command resumes an interrupted run from its last checkpoint (real nequip-train)."""

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _train(run, max_steps):
    env = {**os.environ, "RUN": str(run), "DATA": str(ROOT / "tests" / "data" / "small_water.h5"), "TRAIN_ONLY": "1",
           "OMP_NUM_THREADS": "1"}
    return subprocess.run(["bash", str(ROOT / "examples" / "train_default.sh"), "n_val=2",
                           f"++trainer.max_steps={max_steps}", "trainer.max_epochs=-1",
                           "training_module.model.num_layers=1", "training_module.model.num_features=4"],
                          env=env, capture_output=True, text=True, timeout=900)


def _steps(run):
    steps = []
    for path in sorted((run / "metrics").glob("version_*/metrics.csv")):
        with open(path) as fh:
            steps += [int(row["step"]) for row in csv.DictReader(fh) if row.get("step")]
    return steps


def test_train_default_resumes_from_last_checkpoint(tmp_path):
    first_run = tmp_path / "run"
    first = _train(first_run, 4)
    assert first.returncode == 0, first.stderr[-2000:]
    assert (first_run / "last.ckpt").exists()
    reached = max(_steps(first_run))
    # continued elsewhere, as a run copied back from another machine is: the checkpoints' recorded
    # paths no longer match the run directory
    run = tmp_path / "copied"
    shutil.copytree(first_run, run)
    # and at a lower learning rate (examples/set_learning_rate.py), which the resumed run keeps
    subprocess.run([sys.executable, str(ROOT / "examples" / "set_learning_rate.py"), str(run / "last.ckpt"),
                    "--lr", "0.00123"], check=True)
    second = _train(run, 8)  # an interrupted run, continued with a larger budget
    assert second.returncode == 0, second.stderr[-2000:]
    log = (run / "train.log").read_text() if (run / "train.log").exists() else second.stdout + second.stderr
    assert "Restoring states from the checkpoint path" in second.stdout + second.stderr + log
    steps = _steps(run)
    assert max(steps) > reached  # continued, not restarted: the new version starts past the old steps
    new_version = sorted((run / "metrics").glob("version_*"))[-1]
    with open(new_version / "metrics.csv") as fh:
        new_steps = [int(r["step"]) for r in csv.DictReader(fh) if r.get("step")]
    # a restarted run would log from step 0; validation logs the step before the epoch's last
    assert min(new_steps) >= reached - 1 > 0
    # the continued run overwrote last.ckpt (no last-v1.ckpt beside a stale one): a third call resumes from it
    assert sorted(p.name for p in run.glob("*.ckpt")) == ["best.ckpt", "best_dipole.ckpt", "last.ckpt"]
    def global_step(path):
        return torch.load(path, map_location="cpu", weights_only=False)["global_step"]

    assert global_step(run / "last.ckpt") > global_step(first_run / "last.ckpt")
    state = torch.load(run / "last.ckpt", map_location="cpu", weights_only=False)["optimizer_states"][0]
    assert state["param_groups"][0]["lr"] == 0.00123
