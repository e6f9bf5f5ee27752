"""Density guesses for PySCF from fitted densities (the labelled fixture, PBE0/def2-SVP)."""

from pathlib import Path

import numpy as np
import pytest
from ase.units import Hartree

from ase_density import scf_guess
from ase_density.basis import build_mole
from ase_density.reference import ReferenceSettings, run_scf

MONOMER = 6  # index of a single water in tests/data/small_water.h5


@pytest.fixture(scope="module")
def monomer(small_data):
    atoms = small_data[MONOMER]
    mol = build_mole(atoms.get_chemical_symbols(), atoms.positions, small_data.settings["basis"])
    return atoms, mol


def test_coulomb_and_xc_matrices_match_the_full_density(small_data, monomer):
    from pyscf import dft, scf

    atoms, mol = monomer
    dm = small_data.density_matrix(MONOMER)
    symbols, auxmol = scf_guess._aux_for(mol, small_data.basis)
    flat = small_data.basis.e3nn_to_pyscf(symbols, atoms.arrays["density_coefficients"])
    j_ref = scf.hf.get_jk(mol, dm)[0]
    np.testing.assert_allclose(scf_guess.coulomb_matrix(mol, auxmol, flat), j_ref, atol=5e-3 * np.abs(j_ref).max())
    grids = dft.gen_grid.Grids(mol)
    grids.level = 3
    grids.build()
    functionals = ["LDA", "PBE", "PBE0"]  # PBE0: its semilocal part, as in PySCF's own RKS
    for xc, v in zip(functionals, scf_guess.xc_matrices(mol, auxmol, flat, functionals)):
        np.testing.assert_allclose(v, dft.numint.NumInt().nr_rks(mol, grids, xc, dm)[2], atol=2e-3)
    for xc in ("CAMB3LYP", "SCAN"):  # range-separated, meta-GGA
        with pytest.raises(ValueError, match="global hybrids"):
            scf_guess.xc_matrices(mol, auxmol, flat, [xc])


def test_fitted_density_guess_saves_cycles_and_reaches_the_same_solution(small_data, monomer):
    atoms, mol = monomer
    dm_scf = small_data.density_matrix(MONOMER)
    c = atoms.arrays["density_coefficients"]
    dm0 = scf_guess.density_guess(mol, c, small_data.basis, xc="PBE0")
    np.testing.assert_allclose(dm0, dm0.T, atol=1e-12)
    assert np.trace(dm0 @ mol.intor("int1e_ovlp")) == pytest.approx(mol.nelectron, abs=1e-8)
    # the exact-exchange step of the hybrid guess brings it closer than the pure PBE potential alone
    dm_pure = scf_guess.density_guess(mol, c, small_data.basis, xc="PBE")
    assert np.linalg.norm(dm0 - dm_scf) < 0.3 * np.linalg.norm(dm_pure - dm_scf)
    # without the exchange step a hybrid's guess is the pure functional's
    dm_no_k = scf_guess.density_guess(mol, c, small_data.basis, xc="PBE0", exact_exchange=False)
    np.testing.assert_allclose(dm_no_k, dm_pure, atol=1e-10)
    mf = run_scf(mol, ReferenceSettings(**small_data.settings), dm0=dm0)
    assert mf.converged and mf.e_tot * Hartree == pytest.approx(atoms.info["energy"], abs=1e-5)
    assert mf.n_cycles <= atoms.info["scf_cycles"] - 2  # stored: cycles from PySCF's minao guess


def test_predicted_density_guess_converges(small_data, monomer):
    from ase_density.calculator import DensityCalculator

    atoms, mol = monomer
    calc = DensityCalculator(model=Path(__file__).parent / "data" / "tiny_water.nequip.zip", trust_model=True)
    c = calc.get_density_coefficients(atoms)
    mf = run_scf(mol, ReferenceSettings(**small_data.settings), dm0=scf_guess.density_guess(mol, c, calc.basis))
    assert mf.converged and mf.e_tot * Hartree == pytest.approx(atoms.info["energy"], abs=1e-5)
