"""A fitted (e.g. predicted) density as the initial guess of a PySCF SCF.

From the density rho = sum_P c_P chi_P alone (no density matrix), for the SCF's functional ``xc``:

    pure (LDA/GGA):  F = h + J[rho] + V_xc[rho]
    global hybrid:   dm1 from F1 = h + J[rho] + V_pure[rho]   (``pure_xc``, e.g. PBE for PBE0)
                     F = h + J[rho] + V_xc,semilocal[rho] - (a/2) K[dm1]   (a: exact-exchange share)

J_ij = sum_P (ij|P) c_P; V_xc from rho and its gradient evaluated on a DFT grid from the auxiliary
expansion. One diagonalisation F C = S C e with closed-shell occupation gives the density matrix
to pass as ``dm0``. Exact exchange needs a density matrix, hence the intermediate dm1: with the
pure potential alone, the PBE-vs-PBE0 difference, not the density, limits a guess from an exact
density (measured: the exact DFT density with the PBE potential is no better than the fitted one).

Cost against benefit (a one-off measurement on two 8-water test clusters, PBE0/def2-SVP, model densities): V_xc on
a level-1 grid gives the same SCF cycle counts as on level 3 at a third of the cost, so
``grid_level=1`` is the default; the K build costs about one and a half SCF cycles and saves at most
one cycle from a model density, so ``exact_exchange=False`` (dm1 itself) is the faster guess in
wall time, the default ``True`` the one with fewer cycles (``benchmarks/scf_guess.py`` measures both).

    from ase_density.scf_guess import density_guess
    dm0 = density_guess(mol, atoms.calc.get_density_coefficients(), atoms.calc.basis, xc="PBE0")
    mf = dft.RKS(mol, xc="PBE0"); mf.kernel(dm0=dm0)
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from .reference import int3c2e_blocks


def _aux_for(mol, basis):
    symbols = [mol.atom_pure_symbol(i) for i in range(mol.natm)]
    return symbols, basis.aux_mole(symbols, mol.atom_coords(unit="Angstrom"))


def coulomb_matrix(mol, auxmol, flat) -> np.ndarray:
    """J_ij = sum_P (ij|P) c_P (Hartree), the AO Coulomb matrix of the fitted density with
    PySCF-ordered coefficients ``flat`` on ``auxmol``."""
    from pyscf import lib

    vj = np.zeros(mol.nao * (mol.nao + 1) // 2)
    for block, ints in int3c2e_blocks(mol, auxmol):
        vj += ints @ flat[block]
    return lib.unpack_tril(vj)


def xc_matrices(mol, auxmol, flat, functionals, grid_level: int = 3) -> list:
    """[V_xc,ij] (Hartree) of the fitted density for each LDA/GGA ``functionals`` entry (of a
    global hybrid: its semilocal part), in one pass over a PySCF grid of ``grid_level``. Points
    where the fitted density is negative get no potential."""
    from pyscf.dft import gen_grid, libxc, numint

    for xc in functionals:
        if libxc.xc_type(xc) not in ("LDA", "GGA") or libxc.rsh_coeff(xc)[0] != 0:
            raise ValueError(f"xc={xc!r}: density guesses support LDA, GGA and global hybrids of them")
    deriv = int(any(libxc.xc_type(xc) == "GGA" for xc in functionals))
    grids = gen_grid.Grids(mol)
    grids.level = grid_level
    grids.build(with_non0tab=True)
    ni = numint.NumInt()
    ao_loc = mol.ao_loc_nr()
    out = [np.zeros((mol.nao, mol.nao)) for _ in functionals]
    for ao, mask, weight, coords in ni.block_loop(mol, grids, mol.nao, deriv=deriv):
        chi = numint.eval_ao(auxmol, coords, deriv=deriv, non0tab=gen_grid.make_mask(auxmol, coords))
        rho = chi @ flat  # (ng,) or (4, ng): rho and its gradient
        rho = np.where(rho[0] > 0, rho, 0.0) if deriv else np.maximum(rho, 0.0)
        ao0 = ao[0] if deriv else ao
        for xc, v in zip(functionals, out):
            gga = libxc.xc_type(xc) == "GGA"
            wv = weight * ni.eval_xc_eff(xc, rho if gga or not deriv else rho[0], deriv=1, xctype=libxc.xc_type(xc))[1]
            wv[0] *= 0.5  # the symmetrisation below doubles it
            aow = numint._scale_ao(ao[:4], wv[:4]) if gga else numint._scale_ao(ao0, wv[0])
            v += numint._dot_ao_ao(mol, ao0, aow, mask, (0, mol.nbas), ao_loc)
    return [v + v.T for v in out]


def density_guess(mol, coefficients, basis, xc: str = "PBE0", pure_xc: str = "PBE", grid_level: int = 1,
                  exact_exchange: bool = True) -> np.ndarray:
    """Closed-shell AO density matrix (for ``mf.kernel(dm0=...)``) for an SCF with functional
    ``xc`` (or ``"HF"``) from the density of ``coefficients`` ((n_atoms, width), a.u., e3nn layout, atoms in
    ``mol``'s order) in aux basis ``basis``, with V_xc on a PySCF grid of ``grid_level``; a hybrid
    ``xc`` takes one exact-exchange step from the ``pure_xc`` orbitals unless ``exact_exchange`` is
    False, which returns those orbitals' density matrix (module docstring)."""
    from pyscf.dft import libxc
    from pyscf.scf import hf

    symbols, auxmol = _aux_for(mol, basis)
    flat = basis.e3nn_to_pyscf(symbols, coefficients)
    overlap = mol.intor_symmetric("int1e_ovlp")

    def occupied_dm(fock):
        orbitals = scipy.linalg.eigh(fock, overlap)[1][:, :mol.nelectron // 2]
        return 2.0 * orbitals @ orbitals.T

    fixed = hf.get_hcore(mol) + coulomb_matrix(mol, auxmol, flat)
    hybrid = libxc.is_hybrid_xc(xc)
    if not (hybrid and exact_exchange):  # one step with a semilocal potential
        return occupied_dm(fixed + xc_matrices(mol, auxmol, flat, [pure_xc if hybrid else xc], grid_level)[0])
    semilocal = [xc] if libxc.xc_type(xc) != "HF" else []  # Hartree-Fock: exact exchange only
    v_pure, *v_semilocal = xc_matrices(mol, auxmol, flat, [pure_xc, *semilocal], grid_level)
    exchange = hf.get_jk(mol, occupied_dm(fixed + v_pure), with_j=False)[1]
    return occupied_dm(fixed + sum(v_semilocal) - 0.5 * libxc.hybrid_coeff(xc) * exchange)
