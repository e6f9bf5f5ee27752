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

The PySCF entry point is :func:`model_guess`: it predicts the density on the ``Mole``'s own
geometry and builds the guess with the SCF object's own integrals, so what it builds the SCF reuses:

    from pyscf import dft
    from ase_density.scf_guess import model_guess
    mf = dft.RKS(mol, xc="PBE0").density_fit()   # or conventional
    mf.kernel(dm0=model_guess(mf))               # model_guess(mol, xc="PBE0") without an SCF object

Construction picked from the SCF's settings (measured on 3- and 6-water clusters, PBE0/def2-SVP;
numbers and method in docs/scf_guess.md): J from the SCF's DF tensor when it keeps one (the model
density refitted onto its aux basis), else from three-centre integrals in the model's aux basis;
V_xc on a level-0 grid (same cycle counts as level 1 at a fifth of the cost); the hybrid's
exact-exchange step only when K comes from integrals the SCF keeps (DF tensor, in-memory ERIs),
where it costs under a tenth of a cycle; an integral-direct K would cost about the cycle it saves.

:func:`density_guess` is the same construction for any fitted coefficients;
:func:`initial_guess` names PySCF's built-in guesses and the model's alike (``ase-density label
--guess``).
"""

from __future__ import annotations

import functools

import numpy as np
import scipy.linalg

from .errors import AseDensityError
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
    # blocks of 16 x 56 points: the aux functions' values stay small (PySCF's default block of up
    # to 67 200 points made GB-sized arrays whose page faults cost 5x the arithmetic)
    for ao, mask, weight, coords in ni.block_loop(mol, grids, mol.nao, deriv=deriv, blksize=16 * numint.BLKSIZE):
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


def coulomb_matrix_df(with_df, auxmol, flat) -> np.ndarray:
    """J_ij (Hartree) of the fitted density (PySCF-ordered ``flat`` on ``auxmol``) through a
    PySCF density-fitting object's own tensor B_L,ij = sum_P (L^-1)_LP (P|ij), V = L L^T the
    Cholesky-factored metric of its aux basis: the density is refitted onto that basis in the
    Coulomb metric, J = sum_L B_L,ij [L^-1 (P|rho)]_L. Builds ``with_df``'s tensor if it has none
    yet (the SCF then reuses it). Raises ``numpy.linalg.LinAlgError`` when the metric is not
    positive definite (PySCF then factors it otherwise)."""
    from pyscf import gto, lib
    from pyscf.df import addons

    if with_df._cderi is None:
        with_df.build()
    dfaux = with_df.auxmol or addons.make_auxmol(with_df.mol, with_df.auxbasis)
    metric = scipy.linalg.cholesky(dfaux.intor("int2c2e", hermi=1), lower=True)
    x = scipy.linalg.solve_triangular(metric, gto.mole.intor_cross("int2c2e", dfaux, auxmol) @ flat, lower=True)
    vj, start = 0.0, 0
    for block in with_df.loop():
        vj = vj + x[start:start + len(block)] @ block
        start += len(block)
    return lib.unpack_tril(vj)


def density_guess(mol, coefficients, basis, xc: str = "PBE0", pure_xc: str = "PBE", grid_level: int = 0,
                  exact_exchange: bool = True, mf=None) -> np.ndarray:
    """Closed-shell AO density matrix (for ``mf.kernel(dm0=...)``) for an SCF with functional
    ``xc`` (or ``"HF"``) from the density of ``coefficients`` ((n_atoms, width), a.u., e3nn layout, atoms in
    ``mol``'s order) in aux basis ``basis``, with V_xc on a PySCF grid of ``grid_level``; a hybrid
    ``xc`` takes one exact-exchange step from the ``pure_xc`` orbitals unless ``exact_exchange`` is
    False, which returns those orbitals' density matrix (module docstring). ``mf``, the SCF the
    guess is for, lends its integrals: J through its density-fitting tensor when it is density
    fitted, K through ``mf.get_k`` (its stored ERIs or DF tensor, which it then reuses)."""
    from pyscf import lib
    from pyscf.dft import libxc
    from pyscf.scf import hf

    symbols, auxmol = _aux_for(mol, basis)
    flat = basis.e3nn_to_pyscf(symbols, coefficients)
    overlap = mol.intor_symmetric("int1e_ovlp")
    occupation = np.zeros(mol.nao)
    occupation[:mol.nelectron // 2] = 2.0

    def occupied_dm(fock):
        orbitals = scipy.linalg.eigh(fock, overlap)[1]
        dm = (orbitals * occupation) @ orbitals.T
        return lib.tag_array(dm, mo_coeff=orbitals, mo_occ=occupation)  # lets a DF get_k use the orbitals

    with_df = getattr(mf, "with_df", None)
    coulomb = None
    hybrid = libxc.is_hybrid_xc(xc)
    if with_df is not None and (with_df._cderi is not None or hybrid):  # a pure DF SCF never stores the tensor
        try:
            coulomb = coulomb_matrix_df(with_df, auxmol, flat)
        except np.linalg.LinAlgError:  # PySCF factored a near-singular metric otherwise: use the direct integrals
            pass
    fixed = hf.get_hcore(mol) + (coulomb if coulomb is not None else coulomb_matrix(mol, auxmol, flat))
    if not (hybrid and exact_exchange):  # one step with a semilocal potential
        return occupied_dm(fixed + xc_matrices(mol, auxmol, flat, [pure_xc if hybrid else xc], grid_level)[0])
    semilocal = [xc] if libxc.xc_type(xc) != "HF" else []  # Hartree-Fock: exact exchange only
    v_pure, *v_semilocal = xc_matrices(mol, auxmol, flat, [pure_xc, *semilocal], grid_level)
    dm1 = occupied_dm(fixed + v_pure)
    exchange = mf.get_k(mol, dm1) if mf is not None else hf.get_jk(mol, dm1, with_j=False)[1]
    return occupied_dm(fixed + sum(v_semilocal) - 0.5 * libxc.hybrid_coeff(xc) * exchange)


class GuessError(AseDensityError):
    """A molecule or SCF that a model density cannot give a guess for, with the reason."""


@functools.lru_cache(maxsize=2)
def density_calculator(model: str, trust_model: bool = False):
    """The :class:`~ase_density.calculator.DensityCalculator` (CPU) of model file ``model``,
    loaded once per process (guesses for many molecules, labelling workers). ``trust_model``:
    load a file other than the shipped model (see :mod:`ase_density.trust`)."""
    from .calculator import DensityCalculator

    return DensityCalculator(model=model, trust_model=trust_model)


def _check_target(mf_or_mol, xc):
    """(mol, mf or None, xc) of a guess for ``mf_or_mol``; raises :class:`GuessError` for what
    the guess does not cover."""
    from pyscf import gto, scf
    from pyscf.dft import libxc, rks

    if isinstance(mf_or_mol, gto.Mole):
        mol, mf = mf_or_mol, None
    elif isinstance(mf_or_mol, scf.hf.SCF):
        mol, mf = mf_or_mol.mol, mf_or_mol
        if not isinstance(mf, scf.hf.RHF) or isinstance(mf, scf.rohf.ROHF):
            raise GuessError(f"{type(mf).__name__}: model guesses are for restricted closed-shell SCF (RHF, RKS) only")
        if xc is not None:
            raise GuessError("xc is taken from the SCF object: pass xc only with a Mole")
        xc = mf.xc if isinstance(mf, rks.KohnShamDFT) else "HF"
    else:
        raise GuessError(f"expected a pyscf Mole or SCF object, got {type(mf_or_mol).__name__}")
    xc = "PBE0" if xc is None else xc
    if mol.charge != 0 or mol.spin != 0:
        raise GuessError(f"charge {mol.charge}, spin {mol.spin}: model guesses are for neutral closed-shell molecules only")
    if mol.cart:
        raise GuessError("cartesian orbital basis (mol.cart = True): model guesses need spherical AOs")
    if libxc.xc_type(xc) not in ("HF", "LDA", "GGA") or libxc.rsh_coeff(xc)[0] != 0:
        raise GuessError(f"xc={xc!r}: model guesses support HF, LDA, GGA and global hybrids of them")
    return mol, mf, xc


def reuses_exchange_integrals(mf) -> bool:
    """Whether the K of a guess for SCF object ``mf`` (None: none) comes from integrals the SCF
    keeps anyway (its DF tensor, or its ERIs held in memory), so that it costs a small fraction
    of a cycle; an integral-direct K costs about one cycle, as much as it saves."""
    if mf is None:
        return False
    return getattr(mf, "with_df", None) is not None or mf._eri is not None or mf._is_mem_enough()


def model_guess(mf_or_mol, model=None, xc: str | None = None, exact_exchange: bool | None = None,
                grid_level: int = 0, pure_xc: str = "PBE", trust_model: bool = False) -> np.ndarray:
    """Initial density matrix (AO basis, closed shell) for ``mf.kernel(dm0=...)`` from a density
    model's prediction on the molecule's own geometry (``mol.atom_coords()``, Bohr -> Å).

    ``mf_or_mol``: an RHF/RKS object, plain or density fitted (``mf.density_fit()``), whose
    functional and integrals the guess uses (J from its DF tensor, K from its stored ERIs or DF
    tensor; the SCF reuses what the guess builds), or a ``Mole`` with functional ``xc`` (default
    PBE0; integrals then computed for the guess alone). ``model``: a model file or a loaded
    :class:`~ase_density.calculator.DensityCalculator` (default: the shipped model; files are
    loaded once per process). ``exact_exchange``: take the hybrid's exact-exchange step
    (default: when :func:`reuses_exchange_integrals`, i.e. K is cheap; never for a bare Mole;
    module docstring and docs/scf_guess.md). ``grid_level``: PySCF grid level of the guess's V_xc.
    ``trust_model``: load a model file other than the shipped one (:mod:`ase_density.trust`).
    Raises :class:`GuessError` for a Mole the model cannot guess (elements outside the model's,
    charged, open shell), for UHF/ROHF/GHF, range-separated or meta-GGA functionals."""
    from ase import Atoms
    from ase.units import Bohr

    from .calculator import DEFAULT_MODEL, DensityCalculator
    from .validation import StructureError

    mol, mf, xc = _check_target(mf_or_mol, xc)
    calc = model if isinstance(model, DensityCalculator) else density_calculator(str(model or DEFAULT_MODEL), trust_model)
    symbols = [mol.atom_pure_symbol(i) for i in range(mol.natm)]
    missing = sorted(set(symbols) - set(calc.elements))
    if missing:
        raise GuessError(f"element(s) {', '.join(missing)} not covered by the density model "
                         f"(it knows {', '.join(calc.elements)})")
    try:
        coefficients = calc.get_density_coefficients(Atoms(symbols, positions=mol.atom_coords() * Bohr))
    except StructureError as exc:
        raise GuessError(str(exc)) from exc
    if exact_exchange is None:
        exact_exchange = reuses_exchange_integrals(mf)
    return density_guess(mol, coefficients, calc.basis, xc=xc, pure_xc=pure_xc, grid_level=grid_level,
                         exact_exchange=exact_exchange, mf=mf)


#: PySCF's own initial guesses that :func:`initial_guess` passes through (``vsap``: DFT only)
BUILTIN_GUESSES = ("minao", "atom", "huckel", "mod_huckel", "sap", "vsap")
GUESSES = BUILTIN_GUESSES + ("model",)


def initial_guess(mf, guess: str = "minao", model=None, trust_model: bool = False) -> np.ndarray:
    """Initial density matrix for SCF object ``mf`` by name: one of PySCF's
    :data:`BUILTIN_GUESSES` or ``"model"`` (:func:`model_guess` with ``model``, at its defaults).
    Raises :class:`GuessError` for an unknown name or one that does not apply to ``mf``."""
    if guess not in GUESSES:
        raise GuessError(f"unknown initial guess {guess!r}; choose from {', '.join(GUESSES)}")
    if guess == "model":
        return model_guess(mf, model=model, trust_model=trust_model)
    if guess == "vsap" and not hasattr(mf, "init_guess_by_vsap"):
        raise GuessError(f"the vsap guess needs a DFT SCF object, not {type(mf).__name__}")
    return mf.get_init_guess(key=guess)
