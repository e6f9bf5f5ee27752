"""Reference densities with PySCF: SCF, then the Coulomb-metric fit onto the auxiliary basis
with the exact electron-count constraint (Lagrange multiplier)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np
import scipy.linalg
from ase.units import Bohr, Hartree

from .basis import DEFAULT_AUXBASIS, AuxBasis, build_mole
from .validation import validate_atoms

#: bytes of three-centre integrals computed at once (a 20-water slab unblocked is ~2 GB)
_BLOCK_BYTES = 4e8
#: PySCF's DFT integration grid levels
GRID_LEVELS = range(10)


class SCFNotConverged(RuntimeError):
    """The SCF did not converge: a failure to record, never data."""


@dataclass(frozen=True)
class ReferenceSettings:
    """Level of theory of a reference data set; stored in every HDF5 file it makes."""

    xc: str = "PBE0"
    basis: str = "def2-SVP"
    auxbasis: str = DEFAULT_AUXBASIS
    grid_level: int = 3
    conv_tol: float = 1e-9
    density_fit_scf: bool = False
    max_cycle: int = 100

    def __post_init__(self):
        """Normalise ``xc`` to upper case (PySCF reads functional names case-insensitively, so
        ``pbe0`` and ``PBE0`` are one setting) and check the ranges: ``ValueError`` names the field."""
        if not isinstance(self.xc, str) or not self.xc.strip():
            raise ValueError(f"xc must name a functional (or HF), got {self.xc!r}")
        object.__setattr__(self, "xc", self.xc.strip().upper())
        for name in ("basis", "auxbasis"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name).strip():
                raise ValueError(f"{name} must name a basis, got {getattr(self, name)!r}")
        if isinstance(self.grid_level, bool) or self.grid_level not in GRID_LEVELS:
            raise ValueError(f"grid_level must be a PySCF grid level 0-9, got {self.grid_level!r}")
        if isinstance(self.conv_tol, bool) or not 0 < self.conv_tol < 1:
            raise ValueError(f"conv_tol must be an energy tolerance in Hartree between 0 and 1, got {self.conv_tol!r}")
        if isinstance(self.max_cycle, bool) or not isinstance(self.max_cycle, (int, np.integer)) or self.max_cycle < 1:
            raise ValueError(f"max_cycle must be an integer >= 1, got {self.max_cycle!r}")

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def is_hartree_fock(self) -> bool:
        return self.xc.upper() in ("HF", "RHF")


@dataclass
class ReferenceResult:
    """One labelled structure. Units: energy eV, dipole e·Å, times s; coefficients (n_atoms,
    width) in e3nn layout, NaN-padded."""

    coefficients: np.ndarray
    energy: float
    dipole: np.ndarray
    n_electrons_fit: float
    fit_error: float  # eps (%) of the fit against the full density; NaN when not computed
    converged: bool
    scf_cycles: int
    timings: dict = field(default_factory=dict)
    density_matrix: np.ndarray | None = None


def run_scf(mol, settings: ReferenceSettings, dm0=None):
    """Run RKS (or RHF for ``xc='HF'``) on PySCF ``mol``, from the initial density matrix ``dm0``
    (default: PySCF's ``minao`` guess), or from ``dm0(mf)`` when it is a callable (a guess that
    reuses the SCF object's integrals, e.g. ``scf_guess.initial_guess``); returns the finished
    mean-field object, ``n_cycles`` set."""
    from pyscf import dft, scf

    if settings.is_hartree_fock:
        mf = scf.RHF(mol)
    else:
        mf = dft.RKS(mol, xc=settings.xc)
        mf.grids.level = settings.grid_level
    mf.conv_tol = settings.conv_tol
    mf.max_cycle = settings.max_cycle
    if settings.density_fit_scf:
        mf = mf.density_fit(auxbasis="def2-universal-jkfit")
    cycles = []
    mf.callback = lambda env: cycles.append(env.get("cycle"))
    mf.kernel(dm0=dm0(mf) if callable(dm0) else dm0)
    mf.n_cycles = len(cycles)
    return mf


def int3c2e_blocks(mol, auxmol):
    """Yield (aux function slice, (ij|P) of shape (n_ao_pairs, n_block)) in aux-shell blocks of at
    most ~_BLOCK_BYTES; AO pairs i >= j packed as ``pyscf.lib.pack_tril`` (atomic units)."""
    from pyscf.df import incore

    npair = mol.nao * (mol.nao + 1) // 2
    ao_loc = auxmol.ao_loc_nr()
    sh0 = 0
    while sh0 < auxmol.nbas:
        sh1 = sh0 + 1
        while sh1 < auxmol.nbas and (ao_loc[sh1 + 1] - ao_loc[sh0]) * npair * 8 < _BLOCK_BYTES:
            sh1 += 1
        ints = incore.aux_e2(mol, auxmol, intor="int3c2e", aosym="s2ij", shls_slice=(0, mol.nbas, 0, mol.nbas, sh0, sh1))
        yield slice(ao_loc[sh0], ao_loc[sh1]), ints
        sh0 = sh1


def coulomb_projection(mol, auxmol, density_matrix) -> np.ndarray:
    """b_P = sum_ij (ij|P) D_ij (atomic units), three-centre integrals in aux-shell blocks."""
    from pyscf import lib

    dm = np.asarray(density_matrix)
    dm_tril = lib.pack_tril(dm + dm.T - np.diag(np.diag(dm)))
    b = np.empty(auxmol.nao)
    for block, ints in int3c2e_blocks(mol, auxmol):
        b[block] = dm_tril @ ints
    return b


def fit_coefficients(mol, auxmol, density_matrix, integrals, n_electrons) -> np.ndarray:
    """Coulomb-metric fit with exact electron count: minimise (rho - rho~|rho - rho~) subject to
    sum_P c_P ∫chi_P = n_electrons. ``integrals``: ∫chi_P per aux function (PySCF order).
    Returns c (PySCF order)."""
    b = coulomb_projection(mol, auxmol, density_matrix)
    metric = scipy.linalg.cho_factor(auxmol.intor("int2c2e"))
    c0 = scipy.linalg.cho_solve(metric, b)
    u = scipy.linalg.cho_solve(metric, integrals)
    lagrange = (n_electrons - integrals @ c0) / (integrals @ u)
    return c0 + lagrange * u


def _pyscf_integrals(basis: AuxBasis, symbols) -> np.ndarray:
    return np.concatenate([basis.rotation(s).T @ basis.moments(s)[0] for s in symbols])


def compute_reference(atoms, settings: ReferenceSettings = ReferenceSettings(), basis: AuxBasis | None = None,
                      fit_error: bool = True, save_density_matrix: bool = False, label=None,
                      guess=None, allow_non_water: bool = False) -> ReferenceResult:
    """DFT (or HF) on ``atoms`` (Å) and the constrained Coulomb fit of its density onto the
    auxiliary basis. Raises :class:`SCFNotConverged` if the SCF fails to converge.
    ``fit_error`` also computes eps (%) of the fit against the full density on the DFT grid.
    ``guess``: the SCF's initial guess as ``run_scf``'s ``dm0`` (default ``minao``); its cost
    counts in ``timings['scf']``."""
    basis = basis or AuxBasis.load(settings.auxbasis)
    validate_atoms(atoms, elements=basis.symbols, label=label, allow_non_water=allow_non_water)
    symbols = atoms.get_chemical_symbols()
    integrals = _pyscf_integrals(basis, symbols)
    timings = {}
    t0 = time.perf_counter()
    mol = build_mole(symbols, atoms.get_positions(), settings.basis, max_memory=8000)
    mf = run_scf(mol, settings, dm0=guess)
    timings["scf"] = time.perf_counter() - t0
    if not mf.converged:
        raise SCFNotConverged(f"SCF did not converge in {settings.max_cycle} cycles (last energy {mf.e_tot:.8f} Ha)")
    dm = mf.make_rdm1()
    t0 = time.perf_counter()
    auxmol = basis.aux_mole(symbols, atoms.get_positions())
    flat = fit_coefficients(mol, auxmol, dm, integrals, mol.nelectron)
    timings["fit"] = time.perf_counter() - t0
    coefficients = basis.pyscf_to_e3nn(symbols, flat)
    eps = float("nan")
    if fit_error:
        from .density import density_error

        t0 = time.perf_counter()
        eps = density_error(atoms, coefficients, basis, density_matrix=dm, orbital_basis=settings.basis,
                            grid_level=settings.grid_level)
        timings["fit_error"] = time.perf_counter() - t0
    return ReferenceResult(
        coefficients=coefficients,
        energy=float(mf.e_tot * Hartree),
        dipole=np.asarray(mf.dip_moment(unit="AU", verbose=0)) * Bohr,
        n_electrons_fit=float(integrals @ flat),
        fit_error=eps,
        converged=True,
        scf_cycles=int(mf.n_cycles),
        timings=timings,
        density_matrix=dm if save_density_matrix else None,
    )
