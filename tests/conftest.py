"""Shared fixtures: small real PySCF calculations, computed once per session."""

from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
SMALL_H5 = DATA / "small_water.h5"


@pytest.fixture(scope="session")
def aux_basis():
    from ase_density.basis import AuxBasis

    return AuxBasis.load()


@pytest.fixture(scope="session")
def water():
    from ase.build import molecule

    return molecule("H2O")


@pytest.fixture(scope="session")
def water_reference(water, aux_basis):
    """PBE0/def2-SVP reference of one water, density matrix kept."""
    from ase_density.reference import compute_reference

    return compute_reference(water, basis=aux_basis, save_density_matrix=True)


@pytest.fixture(scope="session")
def small_data():
    from ase_density.dataset import ReferenceData

    return ReferenceData(SMALL_H5)
