import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule

from ase_density.validation import StructureError, find_waters, validate_atoms


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
