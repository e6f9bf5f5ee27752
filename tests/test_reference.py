import numpy as np
import pytest
from ase.build import molecule
from ase.units import Debye, Hartree

from ase_density.basis import build_mole
from ase_density.density import dipole_moment, electron_count
from ase_density.reference import (ReferenceSettings, SCFNotConverged, aux_function_integrals, compute_reference,
                                   fit_coefficients)


def test_water_reference(water, water_reference, aux_basis):
    from pyscf import dft

    r = water_reference
    assert r.converged and r.scf_cycles > 0
    assert abs(r.n_electrons_fit - 10) < 1e-10
    assert abs(electron_count(water, r.coefficients, aux_basis) - 10) < 1e-10
    # decontracted jfit loses ~1 % of a PBE0/def2-SVP water density (the fit floors of docs/data.md: ~0.98 %)
    assert 0.5 < r.fit_error < 2.0
    mol = build_mole(water.get_chemical_symbols(), water.positions, "def2-SVP")
    mf = dft.RKS(mol, xc="PBE0")
    mf.grids.level = 3
    assert abs(mf.kernel() * Hartree - r.energy) < 1e-5
    dft_dipole = np.asarray(mf.dip_moment(unit="Debye", verbose=0))
    assert np.abs(r.dipole / Debye - dft_dipole).max() < 1e-5
    fitted = dipole_moment(water, r.coefficients, aux_basis, unit="debye")
    assert np.abs(fitted - dft_dipole).max() < 0.1
    assert r.density_matrix.shape == (mol.nao, mol.nao)


def test_electron_count_constraint_is_what_fixes_n_e(water, water_reference, aux_basis):
    symbols = water.get_chemical_symbols()
    mol = build_mole(symbols, water.positions, "def2-SVP")
    auxmol = aux_basis.aux_mole(symbols, water.positions)
    integrals = aux_function_integrals(aux_basis, symbols)
    dm = water_reference.density_matrix
    constrained = fit_coefficients(mol, auxmol, dm, integrals, 10)
    assert abs(integrals @ constrained - 10) < 1e-10
    # a different target moves the count exactly there: the constraint is active, not incidental
    assert abs(integrals @ fit_coefficients(mol, auxmol, dm, integrals, 10.5) - 10.5) < 1e-10


def test_density_fitted_scf_agrees(water, aux_basis):
    conventional = compute_reference(water, ReferenceSettings(xc="HF"), basis=aux_basis, fit_error=False)
    ri = compute_reference(water, ReferenceSettings(xc="HF", density_fit_scf=True), basis=aux_basis, fit_error=False)
    assert abs(conventional.energy - ri.energy) < 5e-3  # eV: RI-JK error on one water (~50 µHa)
    assert np.nanmax(np.abs(conventional.coefficients - ri.coefficients)) < 1e-2


def test_non_converged_scf_is_an_error(water, aux_basis):
    with pytest.raises(SCFNotConverged, match="did not converge"):
        compute_reference(water, ReferenceSettings(max_cycle=2), basis=aux_basis, fit_error=False)


def test_unsupported_structures_are_refused(aux_basis):
    from ase_density.validation import StructureError

    with pytest.raises(StructureError, match="unsupported element"):
        compute_reference(molecule("CH4"), basis=aux_basis)
