"""Reference densities with PySCF: SCF, then the Coulomb-metric fit onto the auxiliary basis
with the exact electron-count constraint (Lagrange multiplier)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
import warnings
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
#: auxiliary basis of the density-fitted (RI-JK) SCF
SCF_AUXBASIS = "def2-universal-jkfit"
#: memory budget of one SCF (MB) unless told otherwise: leaves room beside it on a 24 GB machine
DEFAULT_MAX_MEMORY = 16000
#: the smallest budget (MB) accepted; PySCF then keeps only its minimal blocks in memory
MIN_MAX_MEMORY = 100


class SCFNotConverged(RuntimeError):
    """The SCF did not converge: a failure to record, never data."""


class ScratchSpaceError(RuntimeError):
    """The scratch directory has no room for an out-of-core DF tensor: a failure to record."""


def check_max_memory(max_memory) -> float:
    """``max_memory`` (MB) as a float if it is a usable SCF memory budget (>= ``MIN_MAX_MEMORY``),
    else ``OptionError``."""
    from .errors import OptionError

    if isinstance(max_memory, bool) or not isinstance(max_memory, (int, float, np.integer, np.floating)) \
            or not MIN_MAX_MEMORY <= max_memory < float("inf"):
        raise OptionError(f"max_memory must be a number of MB >= {MIN_MAX_MEMORY}, got {max_memory!r}")
    return float(max_memory)


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
    scf_cycles: int  # cycles of the SCF run that finished (counted from its checkpoint if it restarted)
    scf_restarted: bool = False  # the SCF continued from a checkpoint of an interrupted run
    timings: dict = field(default_factory=dict)
    density_matrix: np.ndarray | None = None


def run_scf(mol, settings: ReferenceSettings, dm0=None, checkpoint=None, df_file=None, on_cycle=None):
    """Run RKS (or RHF for ``xc='HF'``) on PySCF ``mol`` within its ``max_memory`` (MB), from the
    initial density matrix ``dm0`` (default: PySCF's ``minao`` guess), or from ``dm0(mf)`` when it
    is a callable (a guess that reuses the SCF object's integrals, e.g. ``scf_guess.initial_guess``).

    ``checkpoint``: an HDF5 file (PySCF chkfile layout) that receives the orbitals after every
    cycle, replaced atomically. If it already holds a checkpoint of the same geometry, functional,
    basis, grid and RI flag, the SCF continues from it instead of ``dm0`` (``conv_tol`` and
    ``max_cycle`` may differ); a checkpoint of another geometry or settings, or an unreadable
    one, is ignored with a warning and replaced.
    ``df_file``: where the RI-JK tensor goes when it does not fit in ``mol.max_memory`` (default:
    a temporary file in the system temp dir); deleted before this returns, also on error.
    ``on_cycle(cycle, energy)``: called after every cycle of this run with its number (from 1) and
    the SCF energy (Ha), e.g. to show the progress of an SCF of hours.

    Returns the finished mean-field object with ``n_cycles`` (cycles of this run), ``restarted``
    (it started from ``checkpoint``) and ``df_on_disk`` (the RI-JK tensor was out of core) set."""
    from pyscf import dft, scf

    if settings.is_hartree_fock:
        mf = scf.RHF(mol)
    else:
        mf = dft.RKS(mol, xc=settings.xc)
        mf.grids.level = settings.grid_level
    mf.conv_tol = settings.conv_tol
    mf.max_cycle = settings.max_cycle
    mf.chkfile = None  # PySCF rewrites its chkfile in place (not kill-safe); ours is written in the callback
    if settings.density_fit_scf:
        mf = mf.density_fit(auxbasis=SCF_AUXBASIS)
    cycles = []

    def callback(env):
        cycles.append(env.get("cycle"))
        if checkpoint is not None:
            _save_checkpoint(checkpoint, mol, settings, env)
        if on_cycle is not None:
            on_cycle(len(cycles), float(env["e_tot"]))

    mf.callback = callback
    on_disk = None
    try:
        if settings.density_fit_scf:
            on_disk = _build_df_tensor(mf.with_df, df_file)
        start = _load_checkpoint(checkpoint, mol, settings) if checkpoint is not None else None
        mf.restarted = start is not None
        if start is None:
            start = dm0(mf) if callable(dm0) else dm0
        mf.kernel(dm0=start)
    finally:
        if on_disk is not None:
            mf.with_df.reset()
            mf.with_df._cderi_to_save = None  # a later use rebuilds with PySCF's own temporary file
            _remove(on_disk)
    mf.n_cycles = len(cycles)
    mf.df_on_disk = on_disk is not None
    return mf


def df_tensor_bytes(mol, auxbasis: str = SCF_AUXBASIS) -> int:
    """Bytes of the RI-JK three-centre tensor of ``mol`` with ``auxbasis``: n_aux x n_ao(n_ao+1)/2
    doubles (the tensor PySCF's ``df.DF`` keeps in memory when it fits, else on disk)."""
    from pyscf.df import addons

    naux = addons.make_auxmol(mol, auxbasis).nao
    return 8 * naux * (mol.nao * (mol.nao + 1) // 2)


def _build_df_tensor(with_df, path=None):
    """Build ``with_df``'s tensor in memory if it fits in 90 % of the budget left (PySCF's own
    rule), else in HDF5 file ``path`` (a temporary file when None), whose name is returned; the
    SCF's J/K builds then stream it in blocks within ``max_memory``."""
    from pyscf import lib

    need = df_tensor_bytes(with_df.mol, with_df.auxbasis)
    if need / 1e6 < 0.9 * (with_df.max_memory - lib.current_memory()[0]):
        with_df.build()
        return None
    path = os.fspath(path) if path else None  # PySCF takes only a str as a file name here
    directory = os.path.dirname(os.path.abspath(path)) if path else tempfile.gettempdir()
    os.makedirs(directory, exist_ok=True)
    if path:
        _remove(path)  # a killed run's tensor: HDF5 would keep its space if only the dataset were replaced
    else:
        fd, path = tempfile.mkstemp(prefix="ase-density-cderi-", suffix=".h5", dir=directory)
        os.close(fd)
    free = shutil.disk_usage(directory).free
    if free < 1.05 * need:
        _remove(path)
        raise ScratchSpaceError(f"the RI-JK tensor needs {need / 1e9:.1f} GB on disk (more than the memory "
                                f"budget), {directory} has {free / 1e9:.1f} GB free: choose another scratch "
                                f"directory or a larger max_memory")
    with_df._cderi_to_save = path
    try:
        with_df.build()
    except BaseException:
        _remove(path)
        raise
    return path


def _remove(path):
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


#: the settings that decide which SCF state a checkpoint belongs to (conv_tol and max_cycle only
#: decide when it stops; the fit's aux basis plays no part)
_SCF_FIELDS = ("xc", "basis", "grid_level", "density_fit_scf")


def _checkpoint_record(mol, settings) -> dict:
    scf_settings = {name: getattr(settings, name) for name in _SCF_FIELDS}
    return {"settings": json.dumps(scf_settings, sort_keys=True), "charges": mol.atom_charges(),
            "coords_bohr": mol.atom_coords(), "nao": mol.nao}


def _save_checkpoint(path, mol, settings, env):
    """Write the orbitals of the cycle in ``env`` (the SCF callback's locals) to ``path``: a new
    file renamed over the old one, so a kill at any moment leaves the previous checkpoint whole."""
    import h5py

    tmp = f"{path}.tmp"
    with h5py.File(tmp, "w") as f:
        f["mol"] = mol.dumps()
        for name in ("e_tot", "mo_energy", "mo_occ", "mo_coeff"):
            f[f"scf/{name}"] = env[name]
        for name, value in _checkpoint_record(mol, settings).items():
            f[f"ase_density/{name}"] = value
        f["ase_density/cycles"] = env["cycle"] + 1  # cycles done in this run (for progress; not compared)
    os.replace(tmp, path)


def _load_checkpoint(path, mol, settings):
    """The density matrix of the checkpoint in ``path`` if it is one of ``mol``'s geometry made with
    ``settings``; None if there is none. Any other file is reported (warning), removed, and None
    returned: it must neither stop the run nor start an SCF from another structure's density."""
    import h5py
    from pyscf.scf import hf

    if not os.path.exists(path):
        return None
    expected = _checkpoint_record(mol, settings)
    try:
        with h5py.File(path, "r") as f:
            stored = {name: f[f"ase_density/{name}"][()] for name in expected}
            mo_coeff, mo_occ = f["scf/mo_coeff"][()], f["scf/mo_occ"][()]
        stored["settings"] = stored["settings"].decode() if isinstance(stored["settings"], bytes) else stored["settings"]
        if stored["settings"] != expected["settings"]:
            problem = "made with other settings"
        elif np.shape(stored["charges"]) != np.shape(expected["charges"]) \
                or np.any(stored["charges"] != expected["charges"]) \
                or np.abs(stored["coords_bohr"] - expected["coords_bohr"]).max() > 1e-8:
            problem = "of another geometry"
        elif mo_coeff.shape != (mol.nao, mol.nao) or mo_occ.shape != (mol.nao,) \
                or not np.isfinite(mo_coeff).all() or abs(mo_occ.sum() - mol.nelectron) > 1e-8:
            problem = "with orbitals that do not fit this molecule"
        else:
            return hf.make_rdm1(mo_coeff, mo_occ)
    except Exception as exc:  # a damaged file can fail in h5py, in decoding or in shapes
        problem = f"unreadable ({type(exc).__name__}: {exc})"
    warnings.warn(f"ignoring SCF checkpoint {path}: {problem}; starting from the initial guess", stacklevel=3)
    _remove(path)
    return None


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
    return constrained_coulomb_fit(auxmol.intor("int2c2e"), coulomb_projection(mol, auxmol, density_matrix),
                                  integrals, n_electrons)


def constrained_coulomb_fit(metric, projection, integrals, n_electrons) -> np.ndarray:
    """argmin_c (c^T metric c - 2 projection·c) subject to integrals·c = n_electrons, on plain
    arrays: ``metric`` (P|Q) (Hartree), ``projection`` (P|rho), ``integrals`` ∫chi_P, all in one
    aux-function order; returns c in that order (a.u.)."""
    factor = scipy.linalg.cho_factor(metric)
    c0 = scipy.linalg.cho_solve(factor, projection)
    u = scipy.linalg.cho_solve(factor, integrals)
    lagrange = (n_electrons - integrals @ c0) / (integrals @ u)
    return c0 + lagrange * u


def aux_function_integrals(basis: AuxBasis, symbols) -> np.ndarray:
    """∫chi_P (a.u.) of every auxiliary function of atoms ``symbols`` in PySCF order."""
    return np.concatenate([basis.rotation(s).T @ basis.moments(s)[0] for s in symbols])


def compute_reference(atoms, settings: ReferenceSettings = ReferenceSettings(), basis: AuxBasis | None = None,
                      fit_error: bool = True, save_density_matrix: bool = False, label=None,
                      guess=None, allow_non_water: bool = False, max_memory: float = DEFAULT_MAX_MEMORY,
                      checkpoint=None, df_file=None, on_cycle=None) -> ReferenceResult:
    """DFT (or HF) on ``atoms`` (Å) and the constrained Coulomb fit of its density onto the
    auxiliary basis. Raises :class:`SCFNotConverged` if the SCF fails to converge.
    ``fit_error`` also computes eps (%) of the fit against the full density on the DFT grid.
    ``guess``: the SCF's initial guess as ``run_scf``'s ``dm0`` (default ``minao``); its cost
    counts in ``timings['scf']``. ``max_memory``: the SCF's memory budget in MB (PySCF's
    ``max_memory``). ``checkpoint``, ``df_file``, ``on_cycle``: as in :func:`run_scf` (restart file
    of the SCF, file for an RI-JK tensor that does not fit in ``max_memory``, progress callback)."""
    max_memory = check_max_memory(max_memory)
    basis = basis or AuxBasis.load(settings.auxbasis)
    validate_atoms(atoms, elements=basis.symbols, label=label, allow_non_water=allow_non_water)
    symbols = atoms.get_chemical_symbols()
    integrals = aux_function_integrals(basis, symbols)
    timings = {}
    t0 = time.perf_counter()
    mol = build_mole(symbols, atoms.get_positions(), settings.basis, max_memory=max_memory)
    mf = run_scf(mol, settings, dm0=guess, checkpoint=checkpoint, df_file=df_file, on_cycle=on_cycle)
    timings["scf"] = time.perf_counter() - t0
    if not mf.converged:
        raise SCFNotConverged(f"SCF did not converge in {settings.max_cycle} cycles (last energy {mf.e_tot:.8f} Ha)")
    dm = mf.make_rdm1()
    energy, dipole = float(mf.e_tot * Hartree), np.asarray(mf.dip_moment(unit="AU", verbose=0)) * Bohr
    if settings.density_fit_scf:
        mf.with_df.reset()  # frees an in-memory RI-JK tensor (8.5 GB at 32 waters) before the fit
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
        energy=energy,
        dipole=dipole,
        n_electrons_fit=float(integrals @ flat),
        fit_error=eps,
        converged=True,
        scf_cycles=int(mf.n_cycles),
        scf_restarted=bool(mf.restarted),
        timings=timings,
        density_matrix=dm if save_density_matrix else None,
    )
