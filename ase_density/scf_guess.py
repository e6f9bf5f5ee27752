"""A fitted (e.g. predicted) density as the initial guess of a PySCF SCF.

One Fock build from the density rho = sum_P c_P chi_P alone, no density matrix needed:

    F = h + J[rho] + V_xc[rho],   J_ij = sum_P (ij|P) c_P,   V_xc,ij = ∫ phi_i v_xc[rho] phi_j

then one diagonalisation F C = S C e and the closed-shell occupation of the lowest orbitals
give a density matrix to pass as ``dm0``. V_xc comes from rho (and its gradient) evaluated on a DFT
grid from the auxiliary expansion. Exact exchange needs a density matrix, so the potential uses a
pure (LDA/GGA) functional: for a hybrid SCF pass its pure parent (PBE for PBE0, BLYP for B3LYP).

    from ase_density.scf_guess import density_guess
    dm0 = density_guess(mol, atoms.calc.get_density_coefficients(), atoms.calc.basis)
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


def xc_matrix(mol, auxmol, flat, xc: str = "PBE", grid_level: int = 3) -> np.ndarray:
    """V_xc,ij (Hartree) of the fitted density for a pure (LDA or GGA) functional ``xc`` on a
    PySCF grid of ``grid_level``. Points where the fitted density is negative get no potential."""
    from pyscf import dft
    from pyscf.dft import gen_grid, libxc, numint

    xctype = libxc.xc_type(xc)
    if libxc.is_hybrid_xc(xc) or xctype not in ("LDA", "GGA"):
        raise ValueError(f"xc={xc!r}: the guess potential needs a pure LDA or GGA functional "
                         "(exact exchange needs a density matrix); use e.g. 'PBE' for PBE0")
    deriv = int(xctype == "GGA")
    grids = dft.gen_grid.Grids(mol)
    grids.level = grid_level
    grids.build(with_non0tab=True)
    ni = numint.NumInt()
    ao_loc = mol.ao_loc_nr()
    v = np.zeros((mol.nao, mol.nao))
    for ao, mask, weight, coords in ni.block_loop(mol, grids, mol.nao, deriv=deriv):
        chi = numint.eval_ao(auxmol, coords, deriv=deriv, non0tab=gen_grid.make_mask(auxmol, coords))
        rho = chi @ flat  # (ng,) or (4, ng): rho and its gradient
        rho = np.where(rho[0] > 0, rho, 0.0) if deriv else np.maximum(rho, 0.0)
        wv = weight * ni.eval_xc_eff(xc, rho, deriv=1, xctype=xctype)[1]
        wv[0] *= 0.5  # the symmetrisation below doubles it
        aow = numint._scale_ao(ao[:4], wv[:4]) if deriv else numint._scale_ao(ao, wv[0])
        v += numint._dot_ao_ao(mol, ao[0] if deriv else ao, aow, mask, (0, mol.nbas), ao_loc)
    return v + v.T


def density_guess(mol, coefficients, basis, xc: str = "PBE", grid_level: int = 3) -> np.ndarray:
    """Closed-shell AO density matrix (for ``mf.kernel(dm0=...)``) from one Fock build on the
    density of ``coefficients`` ((n_atoms, width), a.u., e3nn layout, atoms in ``mol``'s order)
    in aux basis ``basis``; ``xc`` the pure functional of the potential (module docstring)."""
    from pyscf.scf import hf

    symbols, auxmol = _aux_for(mol, basis)
    flat = basis.e3nn_to_pyscf(symbols, coefficients)
    fock = hf.get_hcore(mol) + coulomb_matrix(mol, auxmol, flat) + xc_matrix(mol, auxmol, flat, xc, grid_level)
    _, orbitals = scipy.linalg.eigh(fock, mol.intor_symmetric("int1e_ovlp"))
    occupied = orbitals[:, :mol.nelectron // 2]
    return 2.0 * occupied @ occupied.T
