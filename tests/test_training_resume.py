"""The training command resumes an interrupted run from its last checkpoint (real nequip-train)."""

import csv
import os
import subprocess
from pathlib import Path

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
    run = tmp_path / "run"
    first = _train(run, 4)
    assert first.returncode == 0, first.stderr[-2000:]
    assert (run / "last.ckpt").exists()
    reached = max(_steps(run))
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
