"""The shipped default model: `DensityCalculator()` with no arguments, its card consistent with the
files in the repository, and its accuracy on a slice of the committed test set as the card states.
(The model is never retrained here; see examples/train_default.sh.)"""

import json
from pathlib import Path

import numpy as np
import pytest

from ase_density.calculator import DEFAULT_MODEL, DensityCalculator
from ase_density.dataset import ReferenceData
from ase_density.h5io import file_sha256
from ase_density.evaluation import evaluate

ROOT = Path(__file__).resolve().parents[1]
CARD = DEFAULT_MODEL.with_name("default.json")


@pytest.fixture(scope="module")
def card():
    return json.loads(CARD.read_text())


def test_card_describes_the_shipped_files(card):
    assert card["model_sha256"] == file_sha256(DEFAULT_MODEL)
    assert card["training_data"]["sha256"] == file_sha256(ROOT / card["training_data"]["path"])
    for extra in card.get("extra_training_data", []):  # files labelling may have grown since: by structure keys
        assert set(extra["keys"]) <= set(ReferenceData(ROOT / extra["path"]).keys), extra["path"]
    assert "test.h5" in card["evaluation"]
    for name, evaluation in card["evaluation"].items():  # evaluated on the files as committed
        assert evaluation["data_sha256"] == file_sha256(ROOT / "data" / name), name
    assert "lmax_h" in card["config_yaml"] and card["command"]
    assert DEFAULT_MODEL.stat().st_size < 5e6  # "a few MB at most"


def test_default_calculator_on_a_test_slice(card):
    from ase_density.density import electron_count

    calc = DensityCalculator()
    data = ReferenceData(ROOT / "data" / "test.h5")
    report = evaluate(calc, data, indices=[0, 1], grid_level=3, full_density=True)
    stated = card["evaluation"]["test.h5"]["mean"]
    # two structures of forty: within a factor of two of the card's means
    for metric in ("eps_fit", "eps_full", "dipole_error", "charge_mae"):
        assert report["mean"][metric] < 2 * stated[metric], metric
    assert report["mean"]["eps_fit"] < 1.0  # the project's accuracy target (percent)
    atoms = data[0]
    atoms.calc = calc
    coefficients = calc.get_property("density_coefficients", atoms)
    assert electron_count(atoms, coefficients, calc.basis) == pytest.approx(atoms.numbers.sum(), abs=1e-6)
    assert np.allclose(atoms.get_dipole_moment(), calc.results["dipole"])
