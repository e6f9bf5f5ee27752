"""Input checks shared by every public entry point: one clear message per problem."""

from __future__ import annotations

import numpy as np

from .errors import StructureError

MIN_DISTANCE = 0.5  # Å: closer atoms are treated as overlapping
OH_BOND = 1.3  # Å: O–H distance below which H belongs to O (water detection)


def _name(atoms, label):
    return f"structure {label}" if label is not None else f"structure {atoms.get_chemical_formula() or '(empty)'}"


def validate_atoms(atoms, elements=("H", "O"), label=None, require_waters=False):
    """Check an ``ase.Atoms`` for ase-density: non-empty, only ``elements``, finite coordinates,
    no atoms closer than 0.5 Å, not periodic, neutral and closed-shell; optionally whole waters.
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
        raise StructureError(f"{name}: total charge {charge:+g} e; only neutral systems are supported")
    if int(np.sum(atoms.get_atomic_numbers())) % 2:
        raise StructureError(f"{name}: odd number of electrons; only closed-shell systems are supported")
    if require_waters:
        find_waters(atoms, label=label)


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
