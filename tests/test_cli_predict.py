"""``ase-density predict`` and ``ase-density evaluate`` on the tiny packaged model."""

import json
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase.build import molecule

from ase_density.cli import main
from ase_density.h5io import file_sha256
from ase_density.predictions import PredictionData

DATA = Path(__file__).parent / "data"
TINY_MODEL = str(DATA / "tiny_water.nequip.zip")


def test_predict_many_frames_with_cubes(tmp_path, capsys):
    from ase_density.calculator import DensityCalculator

    out, cubes = tmp_path / "p.h5", tmp_path / "cubes"
    frames = ase.io.read(DATA / "small_clusters.xyz", index=":")[:3]
    ase.io.write(tmp_path / "in.xyz", frames)
    assert main(["predict", str(tmp_path / "in.xyz"), "--model", TINY_MODEL, "--trust-model", "-o", str(out), "--cube", str(cubes),
                 "--cube-spacing", "0.4", "--batch-size", "2"]) == 0
    pred = PredictionData(out)
    assert len(pred) == 3 and pred.attrs["model_sha256"] == file_sha256(TINY_MODEL)
    calc = DensityCalculator(model=TINY_MODEL, trust_model=True)
    for i, atoms in enumerate(frames):
        got = pred[i]
        assert got.info["frame"] == i
        np.testing.assert_allclose(got.positions, atoms.positions)
        np.testing.assert_allclose(got.arrays["density_coefficients"], calc.get_density_coefficients(atoms.copy()),
                                   atol=1e-5, equal_nan=True)
        np.testing.assert_allclose(got.info["dipole"], calc.get_property("dipole", atoms.copy()), atol=1e-5)
        assert len(got.info["water_dipoles"]) == len(atoms) // 3
        assert got.arrays["charges"].sum() == pytest.approx(0, abs=1e-6)
        assert ase.io.read(cubes / f"frame_{i:06d}.cube").get_chemical_symbols() == atoms.get_chemical_symbols()
    assert "predictions for 3 new frames" in capsys.readouterr().out


def test_predict_stops_at_a_bad_frame_and_keeps_earlier_ones(tmp_path, capsys):
    path = tmp_path / "bad.xyz"
    ase.io.write(path, [molecule("H2O"), molecule("H2O"), molecule("CH4"), molecule("H2O")])
    out = tmp_path / "p.h5"
    assert main(["predict", str(path), "--model", TINY_MODEL, "--trust-model", "-o", str(out), "-q"]) == 2  # one batch
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ase-density predict: error:") and "frame 2: unsupported element(s) C" in err[0]
    assert [a.info["frame"] for a in PredictionData(out)] == [0, 1]
    # --skip-invalid records the failure and goes on (the rerun continues the file), within one batch too
    assert main(["predict", str(path), "--model", TINY_MODEL, "--trust-model", "-o", str(out), "--skip-invalid"]) == 1
    pred = PredictionData(out)
    assert [a.info["frame"] for a in pred] == [0, 1, 3]
    assert pred.failures[0][0] == 2 and "unsupported element" in pred.failures[0][1]


def test_evaluate_table_and_json(tmp_path, capsys):
    report_path = tmp_path / "eval.json"
    h5 = DATA / "small_water.h5"
    assert main(["evaluate", str(h5), "--model", TINY_MODEL, "--trust-model", "--limit", "3", "--json", str(report_path)]) == 0
    table = capsys.readouterr().out
    assert "eps_rho vs fitted reference" in table and "eps_rho vs full DFT density" in table
    assert "Hirshfeld charge MAE vs DFT" in table
    report = json.loads(report_path.read_text())
    assert report["n_structures"] == 3 == len(report["structures"]) == report["n_with_density_matrix"]
    assert report["data_sha256"] == file_sha256(h5) and report["model"].endswith("tiny_water.nequip.zip")
    for row in report["structures"]:
        assert 0 < row["eps_fit"] < 100 and 0 < row["eps_full"] < 100 and row["dipole_error"] >= 0
        # the fitted reference is closer to the full density than the tiny model is
        assert row["reference_fit_error"] < row["eps_full"]
        assert 0 <= row["hirshfeld_charge_mae_fit"] < row["hirshfeld_charge_mae"] < 1
    assert set(report["coefficient_rmse"]) == {"H", "O"} and set(report["coefficient_rmse"]["O"]) == {"0", "1", "2", "3", "4"}
    m = report["mean"]
    assert m["eps_fit"] == pytest.approx(np.mean([r["eps_fit"] for r in report["structures"]]))
    assert "signed, along the DFT dipole" in table
    # the signed error along the DFT dipole, against the calculator's own dipole of the first structure
    from ase.units import Debye

    from ase_density.calculator import DensityCalculator
    from ase_density.dataset import ReferenceData

    atoms = ReferenceData(h5)[0]
    reference = atoms.info["dipole"] / Debye
    atoms.calc = DensityCalculator(model=TINY_MODEL, trust_model=True)
    error = atoms.get_dipole_moment() / Debye - reference
    row = report["structures"][0]
    assert row["dipole_error_along_reference"] == pytest.approx(error @ reference / np.linalg.norm(reference), abs=1e-6)
    assert all(abs(r["dipole_error_along_reference"]) <= r["dipole_error"] + 1e-12 for r in report["structures"])


def load_card_tool():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_model_card", Path(__file__).parents[1] / "examples" / "make_model_card.py")
    card_tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(card_tool)
    return card_tool


def test_model_card_records_the_extra_training_files_by_structure():
    from ase_density.dataset import ReferenceData

    card_tool, path = load_card_tool(), DATA / "small_water.h5"
    records = card_tool.extra_training_data({"extra_train_files": [str(path)], "data_file": "ignored"})
    assert [r["sha256"] for r in records] == [file_sha256(path)]
    assert records[0]["keys"] == list(ReferenceData(path).keys) and records[0]["n_structures"] == len(records[0]["keys"])
    assert card_tool.extra_training_data({"extra_train_files": []}) == []


def test_model_card_takes_new_evaluations_of_its_own_model_only(tmp_path):
    card_tool = load_card_tool()
    report_path, card_path = tmp_path / "eval.json", tmp_path / "card.json"
    assert main(["evaluate", str(DATA / "small_water.h5"), "--model", TINY_MODEL, "--trust-model", "--limit", "1",
                 "--json", str(report_path)]) == 0
    old = {"model": "tiny_water.nequip.zip", "model_sha256": file_sha256(TINY_MODEL), "command": "kept",
           "evaluation": {"small_water.h5": {"mean": {}}, "other.h5": {"mean": {"eps_fit": 1.0}}}}
    card_path.write_text(json.dumps(old))
    card_tool.main(["--update", str(card_path), "--eval", str(report_path)])
    card = json.loads(card_path.read_text())
    assert card["command"] == "kept" and card["evaluation"]["other.h5"] == old["evaluation"]["other.h5"]
    assert card["evaluation"]["small_water.h5"]["mean"]["hirshfeld_charge_mae"] > 0
    card_path.write_text(json.dumps({**old, "model_sha256": "0" * 64}))
    with pytest.raises(SystemExit, match="another model"):
        card_tool.main(["--update", str(card_path), "--eval", str(report_path)])
    assert json.loads(card_path.read_text())["model_sha256"] == "0" * 64  # left as it was
