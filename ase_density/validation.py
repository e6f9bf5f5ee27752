"""Input checks shared by every public entry point: one clear message per problem."""

from __future__ import annotations

import numpy as np

from .errors import StructureError

MIN_DISTANCE = 0.5  # Å: closer atoms are treated as overlapping
OH_BOND = 1.3  # Å: O–H distance below which H belongs to O (water detection)
HH_BOND = 1.0  # Å: closer H atoms are bonded (H2: 0.74 Å; the H atoms of one water are 1.5 Å apart)
OO_BOND = 1.7  # Å: closer O atoms are bonded (O2: 1.21 Å, peroxide: 1.47 Å; water O–O >= 2.4 Å)
#: bytes held per grid point while a cube file is written (coordinates, their copies, the values)
CUBE_BYTES_PER_POINT = 80
#: the fraction of the available memory that a cube grid may take
CUBE_MEMORY_FRACTION = 0.5


def _name(atoms, label):
    return f"structure {label}" if label is not None else f"structure {atoms.get_chemical_formula() or '(empty)'}"


def validate_atoms(atoms, elements=("H", "O"), label=None, require_waters=False, allow_non_water=False):
    """Check an ``ase.Atoms`` for ase-density: non-empty, only ``elements``, finite coordinates,
    no atoms closer than 0.5 Å, not periodic, neutral (initial charges sum to 0), closed-shell
    (even electron count, no initial magnetic moments), and a water cluster: every molecule is
    H2O by connectivity (:func:`check_water_cluster`), unless ``allow_non_water``.
    ``require_waters``: whole waters by :func:`find_waters` even with ``allow_non_water``.
    Raises :class:`StructureError` naming ``label`` (or the formula) and the problem."""
    name = _name(atoms, label)
    if len(atoms) == 0:
        raise StructureError(f"{name}: empty structure (no atoms)")
    symbols = atoms.get_chemical_symbols()
    bad = sorted(set(symbols) - set(elements))
    if bad:
        raise StructureError(f"{name}: unsupported element(s) {', '.join(bad)}; supported: {', '.join(elements)}")
    pos = atoms.get_positions()
    if not np.all(np.isfinite(pos)):
        rows = np.where(~np.all(np.isfinite(pos), axis=1))[0]
        raise StructureError(f"{name}: non-finite (NaN/inf) coordinates for atom(s) {rows.tolist()}")
    if np.any(atoms.pbc):
        raise StructureError(f"{name}: periodic boundary conditions are not supported (pbc={atoms.pbc.tolist()}); "
                             "use an isolated cluster with pbc=False")
    if len(atoms) > 1:
        d = _pair_distances(pos)
        i, j = np.unravel_index(np.argmin(d), d.shape)
        if d[i, j] < MIN_DISTANCE:
            raise StructureError(f"{name}: atoms {i} and {j} are {d[i, j]:.3f} Å apart (< {MIN_DISTANCE} Å): overlapping atoms")
    charge = float(np.sum(atoms.get_initial_charges()))
    if abs(charge) > 1e-8:
        raise StructureError(f"{name}: total charge {charge:+g} e (initial charges); only neutral systems are supported")
    if int(np.sum(atoms.get_atomic_numbers())) % 2:
        raise StructureError(f"{name}: odd number of electrons; only closed-shell systems are supported")
    magnetic = np.flatnonzero(atoms.get_initial_magnetic_moments().reshape(len(atoms), -1).any(axis=1))
    if len(magnetic):
        raise StructureError(f"{name}: initial magnetic moments on atom(s) {magnetic.tolist()}; "
                             "only closed-shell (singlet) systems are supported")
    if not allow_non_water:
        check_water_cluster(atoms, label=label)
    if require_waters:
        find_waters(atoms, label=label)


def molecules(atoms) -> list:
    """Index arrays of the molecules of ``atoms``, by connectivity: bonds are O–H < 1.3 Å,
    H–H < 1.0 Å and O–O < 1.7 Å (other elements bond to nothing); sorted by first atom."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    symbols = np.array(atoms.get_chemical_symbols())
    pairs = cKDTree(atoms.get_positions()).query_pairs(max(OH_BOND, HH_BOND, OO_BOND), output_type="ndarray")
    cutoff = {("H", "O"): OH_BOND, ("O", "H"): OH_BOND, ("H", "H"): HH_BOND, ("O", "O"): OO_BOND}
    limit = np.array([cutoff.get((a, b), 0.0) for a, b in zip(symbols[pairs[:, 0]], symbols[pairs[:, 1]])])
    pairs = pairs[np.linalg.norm(atoms.positions[pairs[:, 0]] - atoms.positions[pairs[:, 1]], axis=1) < limit]
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(len(atoms), len(atoms)))
    _, component = connected_components(graph, directed=False)
    return sorted((np.flatnonzero(component == k) for k in np.unique(component)), key=lambda m: m[0])


def check_water_cluster(atoms, label=None) -> None:
    """Raise :class:`StructureError` unless every molecule of ``atoms`` (:func:`molecules`) is one
    O with two H: the density models know water clusters only. The message names the first
    molecule that is not water, by its atoms and formula."""
    symbols = np.array(atoms.get_chemical_symbols())
    bad = [m for m in molecules(atoms) if sorted(symbols[m]) != ["H", "H", "O"]]
    if bad:
        from ase.formula import Formula

        formula = Formula.from_list(symbols[bad[0]].tolist()).format("hill")
        more = f" (and {len(bad) - 1} more molecule(s) that are not H2O)" if len(bad) > 1 else ""
        raise StructureError(f"{_name(atoms, label)}: atoms {bad[0].tolist()} form {formula}, not H2O{more}; the models "
                             "know water clusters only (allow_non_water=True / --allow-non-water to predict anyway)")


def validate_points(points) -> np.ndarray:
    """``points`` (Å) as an (n, 3) float array; ``ValueError`` unless they are finite triples."""
    points = np.asarray(points, dtype=float)
    if points.size % 3 or (points.ndim > 1 and points.shape[-1] != 3):
        raise ValueError(f"points must have shape (n, 3), got {points.shape}")
    points = points.reshape(-1, 3)
    bad = np.flatnonzero(~np.isfinite(points).all(axis=1))
    if len(bad):
        raise ValueError(f"points {bad[:5].tolist()}{' ...' if len(bad) > 5 else ''} are not finite (NaN/inf): "
                         "the density is defined at finite points only")
    return points


def check_grid_level(level, name: str = "grid level") -> int:
    """``level`` as an int, if it is a PySCF DFT grid level (an integer 0..9); ``ValueError`` naming
    ``name`` otherwise (bools and floats are refused, not truncated)."""
    if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or not 0 <= level <= 9:
        raise ValueError(f"{name} must be an integer 0..9, got {level!r}")
    return int(level)


def available_memory() -> int:
    """Bytes of memory available to a new allocation: ``MemAvailable`` of /proc/meminfo, else the
    free physical pages (``os.sysconf``)."""
    import os

    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_cube_grid(shape, spacing: float, margin: float, available: int | None = None) -> None:
    """Raise ``ValueError`` if a cube grid of ``shape`` points (``spacing``, ``margin`` in Å) would
    take more than half of the ``available`` memory (bytes; default :func:`available_memory`),
    at :data:`CUBE_BYTES_PER_POINT` bytes per point."""
    n_points = int(np.prod(np.asarray(shape, dtype=np.int64)))
    available = available_memory() if available is None else available
    needed = n_points * CUBE_BYTES_PER_POINT
    if needed > CUBE_MEMORY_FRACTION * available:
        box = " × ".join(f"{n * spacing:.0f}" for n in shape)
        raise ValueError(f"a cube grid of {' × '.join(map(str, shape))} = {n_points:.3g} points (box {box} Å at spacing "
                         f"{spacing:g} Å, margin {margin:g} Å) needs about {needed / 1e9:.1f} GB, more than half of the "
                         f"{available / 1e9:.1f} GB available: use a larger spacing or a smaller margin, or split "
                         "far-apart molecules into separate structures")


def _pair_distances(pos):
    d = np.linalg.norm(pos[:, None, :] - pos[None, :, :], axis=-1)
    np.fill_diagonal(d, np.inf)
    return d


def find_waters(atoms, label=None) -> np.ndarray:
    """Group atoms into water molecules by O–H connectivity (H belongs to its nearest O, within
    1.3 Å). Returns an (n_waters, 3) index array [O, H, H]; raises :class:`StructureError` if the
    structure is not made of whole water molecules."""
    name = _name(atoms, label)
    symbols = np.array(atoms.get_chemical_symbols())
    o_idx = np.where(symbols == "O")[0]
    h_idx = np.where(symbols == "H")[0]
    other = np.where((symbols != "O") & (symbols != "H"))[0]
    if len(other) or len(h_idx) != 2 * len(o_idx) or len(o_idx) == 0:
        raise StructureError(f"{name}: not made of whole water molecules ({atoms.get_chemical_formula()})")
    pos = atoms.get_positions()
    d = np.linalg.norm(pos[h_idx][:, None] - pos[o_idx][None], axis=-1)
    owner = np.argmin(d, axis=1)
    if np.any(d[np.arange(len(h_idx)), owner] > OH_BOND):
        h = h_idx[np.argmax(d[np.arange(len(h_idx)), owner])]
        raise StructureError(f"{name}: H atom {h} is more than {OH_BOND} Å from every O: not whole waters")
    counts = np.bincount(owner, minlength=len(o_idx))
    if np.any(counts != 2):
        o = o_idx[np.argmax(counts != 2)]
        raise StructureError(f"{name}: O atom {o} has {counts[np.argmax(counts != 2)]} H atoms within {OH_BOND} Å, not 2")
    return np.array([[o, *h_idx[owner == k]] for k, o in enumerate(o_idx)])
