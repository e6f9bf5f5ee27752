import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule

from ase_density.validation import StructureError, check_grid_level, find_waters, validate_atoms


def dimer():
    a = molecule("H2O")
    b = molecule("H2O")
    b.translate([2.9, 0, 0])
    return a + b


@pytest.mark.parametrize("make, message", [
    (lambda: Atoms(), "empty"),
    (lambda: molecule("CH4"), "unsupported element"),
    (lambda: Atoms("OH2", positions=[[0, 0, 0], [np.nan, 0, 0], [0, 1, 0]]), "non-finite"),
    (lambda: Atoms("OH2", positions=[[0, 0, 0], [0.3, 0, 0], [0, 1, 0]]), "overlapping"),
    (lambda: Atoms("OH2", positions=[[0, 0, 0], [1, 0, 0], [0, 1, 0]], cell=[5, 5, 5], pbc=True), "periodic"),
    (lambda: Atoms("OH2", positions=[[0, 0, 0], [1, 0, 0], [0, 1, 0]], charges=[-1, 0, 0]), "charge"),
    (lambda: Atoms("OH", positions=[[0, 0, 0], [1, 0, 0]]), "odd number of electrons"),
])
def test_bad_structures(make, message):
    with pytest.raises(StructureError, match=message) as err:
        validate_atoms(make(), label="frame-7")
    assert "frame-7" in str(err.value)


def test_whole_waters():
    assert find_waters(dimer()).tolist() == [[0, 1, 2], [3, 4, 5]]
    validate_atoms(dimer(), require_waters=True)
    broken = dimer()
    broken.positions[4] += [0, 0, 2.0]  # an H wanders off its O
    with pytest.raises(StructureError, match="whole water"):
        find_waters(broken)
    with pytest.raises(StructureError, match="form H2O2, not H2O"):  # the default domain check
        validate_atoms(molecule("H2O2"))
    with pytest.raises(StructureError, match="whole water"):
        validate_atoms(molecule("H2O2"), require_waters=True, allow_non_water=True)


@pytest.mark.parametrize("level", [-1, 10, 2.0, True, "3", None])
def test_grid_level_refused_unless_an_integer_0_to_9(level):
    with pytest.raises(ValueError, match="hirshfeld_grid_level must be an integer 0..9"):
        check_grid_level(level, "hirshfeld_grid_level")


def test_grid_level_accepts_numpy_integers():
    assert type(check_grid_level(np.int64(4))) is int and check_grid_level(np.int64(4)) == 4
