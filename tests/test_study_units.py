"""The study's pieces without training: grid, frozen settings, summary fits, per-l density errors, CLI errors."""

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest

from ase_density.density import density_error, density_error_by_l
from ase_density.study import Run, Settings, StudyError, grid_runs
from ase_density.study.__main__ import main
from ase_density.study import grid
from ase_density.study.grid import frozen_settings, load_or_freeze_settings
from ase_density.study.summary import (aggregate, feature_emergence, learning_curve_slopes,
                                      learning_curves_markdown, saturation_markdown, slopes_markdown)

FIXTURE = Path(__file__).parent / "data" / "small_water.h5"


def overrides(settings: Settings, run: Run) -> dict:
    """{key: value} of the nequip-train overrides of ``run``."""
    return dict(o.split("=", 1) for o in settings.train_overrides(run))


def test_grid_order_names_and_seeds():
    runs = grid_runs([1, 0], [0], [16, 8], repeats=2, seed=5)
    assert [r.n_train for r in runs] == [8] * 4 + [16] * 4  # smallest training sets first
    assert runs[:4] == [Run(0, 0, 8, 5), Run(0, 0, 8, 6), Run(1, 0, 8, 5), Run(1, 0, 8, 6)]
    assert runs[0].name == "n0008_o0_h0_s5"
    assert len({r.name for r in grid_runs([0, 1, 2, 3, 4], [0, 1, 2, 4], [8, 256], 3)}) == 5 * 4 * 2 * 3


@pytest.mark.parametrize("kwargs, message", [
    ({"lmax_h": [5]}, "lmax_h"), ({"lmax_o": []}, "lmax_o"), ({"sizes": [0]}, "sizes"), ({"repeats": 0}, "repeats"),
])
def test_grid_rejects_bad_axes(kwargs, message):
    args = {"lmax_h": [0], "lmax_o": [0], "sizes": [8], "repeats": 1, **kwargs}
    with pytest.raises(StudyError, match=message):
        grid_runs(**args)


def test_overrides_scale_patience_with_training_set_size(tmp_path):
    settings = Settings(train_data="pool.h5", test_data="test.h5", max_steps=1000, patience_steps=200, batch_size=4,
                        overrides=["trainer.accelerator=cpu"])
    assert Path(settings.train_data).is_absolute()
    small, large = overrides(settings, Run(2, 1, 8, 0)), overrides(settings, Run(2, 1, 256, 0))
    assert small["patience"] == "100" and large["patience"] == "4"  # 2 and 64 steps per epoch
    assert large["lr_patience"] == "1" and small["max_steps"] == large["max_steps"] == "1000"
    assert (small["lmax_h"], small["lmax_o"], small["n_train"]) == ("2", "1", "8")
    assert small["trainer.accelerator"] == "cpu" and small["feature_norm_every"] == "10"
    assert "val_every_epochs" not in small  # every epoch: no override, so older frozen templates still work
    with pytest.raises(StudyError, match="key=value"):
        Settings(train_data="a", test_data="b", overrides=["oops"])


def test_validation_interval_in_steps_is_whole_epochs_and_scales_patience():
    settings = Settings(train_data="pool.h5", test_data="test.h5", patience_steps=500, validation_steps=64,
                        batch_size=4)
    small, large, odd = (overrides(settings, Run(2, 4, n, 0)) for n in (8, 256, 100))
    assert (small["val_every_epochs"], large["val_every_epochs"], odd["val_every_epochs"]) == ("32", "1", "3")
    # patience counts validation checks: 500 steps = 8 checks of 64 steps at every size
    assert small["patience"] == large["patience"] == "8" and small["lr_patience"] == "2"
    with pytest.raises(StudyError, match="validation_steps"):
        Settings(train_data="a", test_data="b", validation_steps=0)


def test_num_features_per_lmax_h_for_equal_parameter_counts(tmp_path):
    settings = Settings(train_data=str(FIXTURE), test_data=str(FIXTURE), num_features=[28, 16, 11, 8, 6])
    features = {h: overrides(settings, Run(h, 4, 8, 0))["num_features"] for h in range(5)}
    assert features == {0: "28", 1: "16", 2: "11", 3: "8", 4: "6"}
    study = tmp_path / "study"
    load_or_freeze_settings(study, settings)
    assert frozen_settings(study) == settings  # survives the JSON round trip as a tuple
    assert Settings(train_data="a", test_data="b", num_features=[8]).num_features == 8  # one value: every lmax_h
    for wrong, message in (([8, 8], "one value or 5"), ([8, 8, 8, 8, 0], ">= 1")):
        with pytest.raises(StudyError, match=message):
            Settings(train_data="a", test_data="b", num_features=wrong)
    with pytest.raises(StudyError, match="num_features"):  # the CLI takes five values and freezes them
        load_or_freeze_settings(study, dataclasses.replace(settings, num_features=8))


def test_settings_are_frozen_and_data_compared_by_content(tmp_path, monkeypatch):
    moved = tmp_path / "moved.h5"
    shutil.copyfile(FIXTURE, moved)
    settings = Settings(train_data=str(FIXTURE), test_data=str(FIXTURE), num_features=8)
    study = tmp_path / "study"
    assert load_or_freeze_settings(study, settings) == settings
    elsewhere = dataclasses.replace(settings, train_data=str(moved))
    assert load_or_freeze_settings(study, elsewhere) == elsewhere  # same content, other path: fine
    assert frozen_settings(study).train_data == str(moved)  # the path last used is recorded
    with pytest.raises(StudyError, match="num_features"):
        load_or_freeze_settings(study, dataclasses.replace(settings, num_features=16))
    # a pool that has changed (e.g. grown while labelling) is refused
    real = grid.data_fingerprint
    monkeypatch.setattr(grid, "data_fingerprint", lambda path: "grown" if path == str(moved) else real(path))
    with pytest.raises(StudyError, match=r"train_data \(content\)"):
        load_or_freeze_settings(study, elsewhere)


def test_slopes_recover_power_laws():
    rows = []
    for n in (8, 16, 32, 64):
        for seed, noise in ((0, 1.1), (1, 1 / 1.1)):
            rows.append({"lmax_h": 1, "lmax_o": 1, "n_train": n, "seed": seed, "n_parameters": 10,
                         "eps_total": 3.0 * n ** -0.5 * noise, "eps_l0": 2.0 * n ** -0.25,
                         "eps_l1": 5.0 * n ** -1.0, "eps_l2": 1.0, "rmse_O_l0": 0.1})
    means = aggregate(rows)
    assert len(means) == 4 and all(m["n_seeds"] == 2 for m in means)
    assert means[0]["eps_l0_std"] == 0.0 and means[0]["eps_total_std"] > 0
    (slope,) = learning_curve_slopes(means)
    assert slope["eps_total"] == pytest.approx(-0.5) and slope["eps_l0"] == pytest.approx(-0.25)
    assert slope["eps_l1"] == pytest.approx(-1.0)
    assert "eps_l2" not in slope  # l = 2 > lmax_o: not predicted, not fitted
    assert "| 1 | 1 | 8-64 | -0.50 | -0.25 | -1.00 | – |" in slopes_markdown([slope])
    # at the largest size: seed means ± standard deviation (3 n^-0.5 (1.1 and 1/1.1) at n = 64)
    spread = 0.375 * (1.1 - 1 / 1.1) / 2
    row = f"| 1 | 1 | 10 | 2 | {0.375 * (1.1 + 1 / 1.1) / 2:.3f} ± {spread:.3f} | 0.707 ± 0.000 | 0.078 ± 0.000 | – |"
    assert row in saturation_markdown(means)
    curves = learning_curves_markdown(means + aggregate([{**rows[0], "lmax_h": 2, "seed": 0}]))
    assert "| lmax_h | 8 | 16 | 32 | 64 |" in curves
    first = 3 * 8 ** -0.5
    assert f"| 1 | {first * (1.1 + 1 / 1.1) / 2:.3f} ± {first * (1.1 - 1 / 1.1) / 2:.3f} | " in curves
    assert f"| 2 | {first * 1.1:.3f} |  |  |  |" in curves  # one seed, one size


def test_density_error_by_l_matches_density_error(small_data):
    atoms = small_data[6]
    reference = atoms.arrays["density_coefficients"]
    noisy = reference + 0.01 * np.random.default_rng(0).normal(size=reference.shape)
    no_p = np.where(small_data.basis.mask(atoms.get_chemical_symbols()), reference, np.nan)
    for sym_row, symbol in enumerate(atoms.get_chemical_symbols()):
        ls = small_data.basis.element(symbol).function_l()
        no_p[sym_row, :len(ls)][ls == 1] = 0.0
    errors = density_error_by_l(atoms, [noisy, no_p, reference], reference, small_data.basis, grid_level=1)
    assert errors.shape == (3, 2 + small_data.basis.lmax)
    assert errors[0, 0] == pytest.approx(density_error(atoms, noisy, small_data.basis, reference_coefficients=reference,
                                                       grid_level=1), rel=1e-10)
    assert errors[0, 0] <= errors[0, 1:].sum() and np.all(errors[0] > 0)  # triangle inequality
    # dropping the p functions is an error in the l = 1 channel only
    assert errors[1, 2] > 0 and errors[1, 0] == pytest.approx(errors[1, 2])
    assert np.all(errors[1, [1, 3, 4, 5]] == 0) and np.all(errors[2] == 0)


def test_cli_needs_data_for_a_new_study(tmp_path, capsys):
    assert main(["run", str(tmp_path / "new"), "--quick"]) == 1
    assert "--train-data and --test-data" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "nothing")]) == 1
    assert "not a study directory" in capsys.readouterr().err


def test_grid_larger_than_pool_is_refused(tmp_path, capsys):
    code = main(["run", str(tmp_path / "s"), "--quick", "--sizes", "11", "--train-data", str(FIXTURE),
                 "--test-data", str(FIXTURE)])
    assert code == 1 and "too few for n_train = 11" in capsys.readouterr().err


def test_neither_training_nor_evaluation_is_refused(tmp_path, capsys):
    code = main(["run", str(tmp_path / "s"), "--quick", "--no-train", "--no-eval", "--train-data", str(FIXTURE),
                 "--test-data", str(FIXTURE)])
    assert code == 1 and "nothing to do" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_feature_emergence_finds_the_half_rise_step():
    steps = np.arange(0, 1001, 10)
    # collapses to 0.01 at step 100, then rises as a logistic centred at step 600 to 0.05
    norms = np.where(steps <= 100, 0.2 - 0.19 * steps / 100, 0.01 + 0.04 / (1 + np.exp(-(steps - 600) / 40.0)))
    found = feature_emergence(list(zip(steps, norms)))
    assert found["minimum_step"] == 100 and found["emergence_step"] == 600
    assert found["growth"] == pytest.approx(norms[-1] / 0.01) and found["initial"] == pytest.approx(0.2)
    shrinking = feature_emergence(list(zip(steps, 1.0 / (1 + steps))))
    assert shrinking["emergence_step"] is None and shrinking["minimum_step"] == 1000
