"""The study end to end on the fixture (``--quick``, 4 real nequip-train runs of 8 steps), trained and
evaluated in separate calls: files, per-l errors, feature norms from a real run, resuming without
training, frozen settings."""

import csv
import json
import math
import os
import signal
import threading
import time
from pathlib import Path

import pytest


from ase_density.study import QUICK_GRID, Run, Settings, StudyError, grid_runs, run_study
from ase_density.study.__main__ import main
from ase_density.study.grid import frozen_settings
from ase_density.study.training import CHECKPOINT, is_trained, run_dir

FIXTURE = Path(__file__).parent / "data" / "small_water.h5"
LMAX_H = [0, 1]
LMAX_O = 1  # the fixture's basis goes to l = 4: channels 2-4 are never predicted


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The quick study made in two calls, as on a GPU machine and then a CPU one: train only
    (``--no-eval``, all sizes in one pool), then evaluate and report only (``--no-train``)."""
    directory = tmp_path_factory.mktemp("study") / "quick"
    grid = ["--quick", "--lmax-h", *map(str, LMAX_H), "--lmax-o", str(LMAX_O), "--train-data", str(FIXTURE),
            "--test-data", str(FIXTURE)]
    assert main(["run", str(directory), *grid, "--jobs", "2", "--no-eval"]) == 0
    assert len(list(directory.glob("runs/*/train.json"))) == 4
    assert not list(directory.glob("runs/*/eval.json")) and not (directory / "summary.csv").exists()
    assert main(["run", str(directory), *grid, "--no-train"]) == 0
    return directory


def rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_every_run_trained_and_evaluated(study):
    runs = sorted(p.name for p in (study / "runs").iterdir())
    assert runs == sorted(r.name for r in grid_runs(LMAX_H, [LMAX_O], QUICK_GRID["sizes"], 1))
    for name in runs:
        for file in ("best.ckpt", "train.json", "train.log", "nequip-train.out", "eval.json", "feature_norms.csv"):
            assert (study / "runs" / name / file).exists(), (name, file)
    assert (study / "config" / "run.yaml").exists()
    assert frozen_settings(study).n_val == 2


def test_errors_per_output_l(study):
    summary = rows(study / "summary.csv")
    assert len(summary) == 4
    for row in summary:
        errors = {k: float(v) for k, v in row.items() if k.startswith(("eps_", "rmse_"))}
        assert all(math.isfinite(v) and v > 0 for v in errors.values()), row
        assert errors["eps_total"] <= sum(errors[f"eps_l{l}"] for l in range(5)) + 1e-9  # triangle inequality
        assert set(errors) >= {"rmse_H_l2", "rmse_O_l4"}
    # channels above lmax_o are predicted as zero: their error is the reference's alone, the same in every run
    for key in ("eps_l2", "eps_l3", "eps_l4", "rmse_O_l3", "rmse_H_l2"):
        assert len({round(float(r[key]), 9) for r in summary}) == 1, key
    result = json.loads((study / "runs" / summary[0]["run"] / "eval.json").read_text())
    assert result["n_test"] == 12 and len(result["eps_per_structure"]["total_and_l"]) == 12


def test_slopes_and_plots(study):
    slopes = rows(study / "slopes.csv")
    assert {(int(s["lmax_h"]), int(s["lmax_o"])) for s in slopes} == {(h, LMAX_O) for h in LMAX_H}
    assert all(math.isfinite(float(s["eps_l1"])) and not s.get("eps_l2") for s in slopes)
    assert "| lmax_o | lmax_h |" in (study / "slopes.md").read_text()
    plots = study / "plots"
    assert (plots / "learning_curves.png").stat().st_size > 0 and (plots / "saturation.png").stat().st_size > 0
    assert sorted(p.stem for p in (plots / "feature_norms").glob("*.png")) == [f"n0008_o1_h{h}_s0" for h in LMAX_H]


def test_feature_norms_recorded_during_real_training(study):
    for lmax_h in LMAX_H:
        norms = rows(study / "runs" / f"n0008_o1_h{lmax_h}_s0" / "feature_norms.csv")
        assert {int(r["l"]) for r in norms} == set(range(lmax_h + 1))
        assert [int(r["step"]) for r in norms if r["l"] == "0"] == list(range(9))  # steps 0..max_steps
        for l in range(lmax_h + 1):
            values = [float(r["mean_norm"]) for r in norms if int(r["l"]) == l]
            assert all(math.isfinite(v) and v > 0 for v in values) and len(set(values)) > 1  # they change


def test_validation_interval_in_steps(study):
    """--quick validates every 4 steps: every 2nd epoch at n_train = 4 (2 steps per epoch), and the
    best checkpoint, written after validation, still loads (the evaluation read it)."""
    for n_train, epochs in ((4, {1, 3}), (8, {0, 1})):
        metrics = rows(study / "runs" / f"n{n_train:04d}_o1_h0_s0" / "metrics" / "version_0" / "metrics.csv")
        assert {int(r["epoch"]) for r in metrics if r["val0_epoch/weighted_sum"]} == epochs, n_train


def test_rerun_trains_and_evaluates_nothing(study):
    stamps = {p: p.stat().st_mtime_ns for p in study.glob("runs/*/*.json")}
    runs = grid_runs(LMAX_H, [LMAX_O], QUICK_GRID["sizes"], 1)
    done = run_study(study, frozen_settings(study), runs)
    assert done == {"trained": [], "evaluated": [], "failed": []}
    assert stamps == {p: p.stat().st_mtime_ns for p in study.glob("runs/*/*.json")}
    # other settings for the same study directory are refused
    with pytest.raises(StudyError, match="max_steps"):
        run_study(study, frozen_settings(study).__class__(**{**frozen_settings(study).to_json(), "max_steps": 9}), runs)


def test_failed_run_is_reported_and_left_for_a_retry(tmp_path):
    settings = Settings(train_data=str(FIXTURE), test_data=str(FIXTURE), n_val=2, overrides=["no_such_key=1"])
    run = Run(0, 0, 4, 0)
    with pytest.raises(StudyError, match="(?s)1 run\\(s\\) failed.*no_such_key"):
        run_study(tmp_path / "broken", settings, [run])
    assert not is_trained(tmp_path / "broken", run)
    assert "no_such_key" in (run_dir(tmp_path / "broken", run) / "nequip-train.out").read_text()


def _terminate_training(directory: Path, timeout: float = 300.0) -> None:
    """Send SIGTERM to the nequip-train process of ``directory`` once it has written a checkpoint."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (directory / CHECKPOINT).exists():
            for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
                try:
                    if f"hydra.run.dir={directory}".encode() in cmdline.read_bytes().split(b"\0"):
                        os.kill(int(cmdline.parent.name), signal.SIGTERM)
                        return
                except (OSError, ValueError):
                    continue
        time.sleep(0.2)


def test_killed_run_is_not_marked_finished(tmp_path):
    """Lightning exits with status 0 on SIGTERM and leaves a checkpoint: the run must stay unfinished."""
    settings = Settings(train_data=str(FIXTURE), test_data=str(FIXTURE), n_val=2, max_steps=100_000,
                        patience_steps=100_000, batch_size=2, num_layers=1, num_features=4)
    run = Run(0, 0, 4, 0)
    killer = threading.Thread(target=_terminate_training, args=(run_dir(tmp_path / "killed", run),))
    killer.start()
    with pytest.raises(StudyError, match="without finishing"):
        run_study(tmp_path / "killed", settings, [run])
    killer.join()
    assert not is_trained(tmp_path / "killed", run)
    assert (run_dir(tmp_path / "killed", run) / CHECKPOINT).exists()  # a checkpoint proves nothing
