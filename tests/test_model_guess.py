"""The PySCF-native model guess (``scf_guess.model_guess``/``initial_guess``) on small real
molecules: same SCF solution as PySCF's minao guess, conventional and density-fitted, and clear
refusals of what it cannot guess."""

from pathlib import Path

import ase.io
import numpy as np
import pytest

from ase_density import scf_guess
from ase_density.basis import build_mole

CLUSTERS = Path(__file__).parent / "data" / "small_clusters.xyz"


@pytest.fixture(scope="module")
def dimer_atoms():
    return next(a for a in ase.io.read(CLUSTERS, index=":") if len(a) == 6)


@pytest.fixture(scope="module")
def dimer(dimer_atoms):
    return build_mole(dimer_atoms.get_chemical_symbols(), dimer_atoms.positions, "def2-SVP")


def _scf(mol, xc, density_fit, guess):
    from pyscf import dft, scf

    mf = scf.RHF(mol) if xc == "HF" else dft.RKS(mol, xc=xc)
    mf = mf.density_fit() if density_fit else mf
    mf.conv_tol = 1e-10
    cycles = []
    mf.callback = lambda env: cycles.append(env["cycle"])
    mf.kernel(dm0=scf_guess.initial_guess(mf, guess))
    assert mf.converged
    return mf.e_tot, len(cycles)


@pytest.mark.parametrize("density_fit", [False, True], ids=["conventional", "density-fitted"])
@pytest.mark.parametrize("xc", ["PBE0", "HF"])
def test_model_guess_reaches_the_minao_solution_in_fewer_cycles(dimer, xc, density_fit):
    e_minao, n_minao = _scf(dimer, xc, density_fit, "minao")
    e_model, n_model = _scf(dimer, xc, density_fit, "model")
    assert e_model == pytest.approx(e_minao, abs=1e-6)
    assert n_model < n_minao


def test_model_guess_of_a_mole_is_a_closed_shell_density_matrix(dimer):
    dm = scf_guess.model_guess(dimer, xc="PBE0", exact_exchange=True)
    np.testing.assert_allclose(dm, dm.T, atol=1e-12)
    assert np.trace(dm @ dimer.intor("int1e_ovlp")) == pytest.approx(dimer.nelectron, abs=1e-8)
    # idempotent (S-metric): a density matrix of doubly occupied orbitals
    s = dimer.intor("int1e_ovlp")
    np.testing.assert_allclose(dm @ s @ dm, 2 * dm, atol=1e-8)


def test_coulomb_matrix_from_the_scf_density_fitting_tensor_matches_the_direct_integrals(dimer_atoms, dimer):
    from pyscf import dft

    from ase_density.calculator import DEFAULT_MODEL

    calc = scf_guess.density_calculator(str(DEFAULT_MODEL))
    symbols, auxmol = scf_guess._aux_for(dimer, calc.basis)
    flat = calc.basis.e3nn_to_pyscf(symbols, calc.get_density_coefficients(dimer_atoms.copy()))
    direct = scf_guess.coulomb_matrix(dimer, auxmol, flat)
    with_df = dft.RKS(dimer).density_fit(auxbasis="def2-universal-jkfit").with_df
    fitted = scf_guess.coulomb_matrix_df(with_df, auxmol, flat)
    # the DF route refits the density onto the SCF's jkfit basis: equal up to that fit's error
    np.testing.assert_allclose(fitted, direct, atol=2e-3 * np.abs(direct).max())
    assert not np.allclose(fitted, direct, atol=1e-12)  # two independent routes, not one


def test_refuses_what_the_model_cannot_guess(dimer):
    from pyscf import dft, gto, scf

    def refused(target, match, **kwargs):
        with pytest.raises(scf_guess.GuessError, match=match):
            scf_guess.model_guess(target, **kwargs)

    refused(gto.M(atom="N 0 0 0; H 0 0 1.0; H 0.95 0 -0.3; H -0.5 0.8 -0.3", basis="sto-3g", verbose=0),
            r"element\(s\) N not covered")
    refused(gto.M(atom="O 0 0 0; H 0 0 0.97", basis="sto-3g", spin=1, verbose=0), "spin 1")
    refused(gto.M(atom="O 0 0 0; H 0 0 0.97; H 0.94 0 -0.24; H -0.47 0.8 -0.24", charge=1, basis="sto-3g", verbose=0),
            "charge 1")
    refused(scf.UHF(dimer), "UHF: .*restricted closed-shell")
    refused(scf.ROHF(dimer), "ROHF")
    refused(dft.RKS(dimer, xc="CAMB3LYP"), "CAMB3LYP")
    refused(dft.RKS(dimer, xc="SCAN"), "SCAN")
    refused(dft.RKS(dimer, xc="PBE0"), "xc is taken from the SCF", xc="PBE")
    refused(dimer.atom_coords(), "expected a pyscf Mole or SCF")
    with pytest.raises(scf_guess.GuessError, match="unknown initial guess"):
        scf_guess.initial_guess(scf.RHF(dimer), "sad")
    with pytest.raises(scf_guess.GuessError, match="vsap guess needs a DFT"):
        scf_guess.initial_guess(scf.RHF(dimer), "vsap")


@pytest.mark.parametrize("guess", ["atom", "huckel", "sap", "vsap"])
def test_builtin_guesses_pass_through_to_pyscf(dimer, guess):
    from pyscf import dft

    mf = dft.RKS(dimer, xc="PBE")
    dm = scf_guess.initial_guess(mf, guess)
    assert np.trace(dm @ dimer.intor("int1e_ovlp")) == pytest.approx(dimer.nelectron, abs=1e-6)
    assert not np.allclose(dm, mf.get_init_guess(key="minao"), atol=1e-3)  # not minao in disguise
