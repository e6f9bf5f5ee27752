"""HDF5 reference data: schema, crash-safe appending writer, reader, validation, splits.

Layout (one file = one level of theory, recorded in the root attributes):

    /atoms/numbers (N,) int8, /atoms/positions (N, 3) Å, /atoms/coefficients (N, width) a.u.,
        e3nn layout, NaN-padded — all atoms of all structures, concatenated
    /structures/<field> (S, ...) — per structure: atom_start, n_atoms, energy (eV), dipole (e·Å),
        n_electrons_fit, fit_error (%), scf_cycles, time_scf, time_fit (s), dm_start, nao; and
        key, written last: a record exists only once its key is non-empty
    /density_matrix/values — optional AO density matrices, lower triangles packed, concatenated
    /failures/key, /failures/reason — structures that could not be labelled, with the reason

The writer follows the discipline of :mod:`ase_density.h5io`: lock first, SWMR, one flushed
record at a time, repair after a crash, refusal of foreign files and other settings.
"""

from __future__ import annotations

import json
import os

import numpy as np
from ase import Atoms

from .basis import AuxBasis
from .errors import DatasetError
from .h5io import KEY_DTYPE, REASON_DTYPE, Column, LockedH5Writer, complete_count, open_for_reading

FORMAT = "ase-density-reference"
FORMAT_VERSION = 1
WHAT = "ase-density reference file"
UNITS = {"positions": "Angstrom", "coefficients": "atomic units (density in e/Bohr^3)", "energy": "eV",
         "dipole": "e*Angstrom", "time": "s", "fit_error": "percent of electrons"}

STRUCTURE_FIELDS = {  # name: (trailing shape, dtype, fill value)
    "atom_start": ((), "i8", -1), "n_atoms": ((), "i4", 0), "energy": ((), "f8", np.nan),
    "dipole": ((3,), "f8", np.nan), "n_electrons_fit": ((), "f8", np.nan), "fit_error": ((), "f8", np.nan),
    "scf_cycles": ((), "i4", -1), "time_scf": ((), "f8", np.nan), "time_fit": ((), "f8", np.nan),
    "dm_start": ((), "i8", -1), "nao": ((), "i4", 0), "key": ((), KEY_DTYPE, b""),
}


def _schema(width: int) -> dict:
    return {
        "atoms": {"numbers": Column((), "i1", 0, chunk=4096), "positions": Column((3,), "f8", 0.0),
                  "coefficients": Column((width,), "f8", np.nan, chunk=256)},
        "structures": {name: Column(shape, dtype, fill, chunk=256) for name, (shape, dtype, fill) in STRUCTURE_FIELDS.items()},
        "density_matrix": {"values": Column((), "f8", 0.0, chunk=65536)},
        "failures": {"key": Column((), KEY_DTYPE, b"", chunk=256), "reason": Column((), REASON_DTYPE, b"", chunk=256)},
    }


def read_reference(path):
    """``path`` opened read-only as a reference file (also while it is being written); raises
    :class:`DatasetError` for a missing, unreadable or foreign file."""
    return open_for_reading(path, FORMAT, DatasetError, WHAT)


def _n_complete(f) -> int:
    """Number of complete structure records (those whose key was written)."""
    try:
        return complete_count(f["structures/key"], b"")
    except KeyError as exc:
        raise DatasetError(f"{f.filename}: missing /structures/key: truncated or not an ase-density file") from exc


class ReferenceWriter(LockedH5Writer):
    """Append reference records to ``path``, one flushed record at a time; creates the file or
    reopens it (same ``settings`` and ``basis`` only), with the discipline of
    :mod:`ase_density.h5io`. ``inputs``: files the output must not be. ``info``: provenance
    attributes that reopening does not compare, e.g. ``{"scf_guesses": {"model": {...}}}``. Use
    as a context manager."""

    FORMAT, WHAT, ERROR = FORMAT, WHAT, DatasetError

    def __init__(self, path, settings: dict, basis: AuxBasis, inputs=(), overwrite: bool = False,
                 info: dict | None = None):
        self.basis = basis
        self.schema = _schema(basis.width)
        self._start(path, {"settings": json.dumps(settings, sort_keys=True), "auxbasis": basis.to_json()},
                    inputs, overwrite, info)
        self._done = {k.decode() for k in self.f["structures/key"][:_n_complete(self.f)]}
        self._failed = {k.decode() for k in self.f["failures/key"][()] if k}

    def _new_file_attrs(self) -> dict:
        return dict(format_version=FORMAT_VERSION, layout="e3nn", padding="NaN", width=self.basis.width,
                    metric="coulomb", constraint="exact electron count", units=json.dumps(UNITS))

    def _complete_rows(self, f) -> dict:
        n = _n_complete(f)
        n_atoms = int(f["structures/atom_start"][n - 1] + f["structures/n_atoms"][n - 1]) if n else 0
        dm_end = 0
        if n:
            starts, naos = f["structures/dm_start"][:n], f["structures/nao"][:n]
            has = starts >= 0
            dm_end = int(np.max(starts[has] + naos[has] * (naos[has] + 1) // 2)) if has.any() else 0
        n_fail = int(np.sum(f["failures/key"][()] != b""))
        return {"atoms": n_atoms, "structures": n, "density_matrix": dm_end, "failures": n_fail}

    @property
    def done(self) -> set:
        """Keys of the structures already stored."""
        return set(self._done)

    @property
    def failed(self) -> set:
        return set(self._failed)

    def write(self, key: str, atoms: Atoms, result):
        """Store one labelled structure (``result``: a ``ReferenceResult``) and flush it."""
        if key in self._done:
            raise DatasetError(f"{self.path}: structure {key} is already stored")
        f = self.f
        atom_start = self._append(f["atoms/numbers"], atoms.get_atomic_numbers().astype("i1"))
        self._append(f["atoms/positions"], atoms.get_positions())
        self._append(f["atoms/coefficients"], result.coefficients)
        dm_start, nao = -1, 0
        if result.density_matrix is not None:
            nao = result.density_matrix.shape[0]
            dm_start = self._append(f["density_matrix/values"], result.density_matrix[np.tril_indices(nao)])
        values = {"atom_start": atom_start, "n_atoms": len(atoms), "energy": result.energy, "dipole": result.dipole,
                  "n_electrons_fit": result.n_electrons_fit, "fit_error": result.fit_error,
                  "scf_cycles": result.scf_cycles, "time_scf": result.timings.get("scf", np.nan),
                  "time_fit": result.timings.get("fit", np.nan), "dm_start": dm_start, "nao": nao}
        for name, value in values.items():
            self._append(f["structures/" + name], np.asarray([value]))
        f.flush()  # all data on disk before the key marks the record complete
        self._append(f["structures/key"], np.asarray([key.encode()], dtype=KEY_DTYPE))
        f.flush()
        self._done.add(key)
        self._failed.discard(key)

    def write_failure(self, key: str, reason: str):
        """Record that structure ``key`` could not be labelled, and why."""
        self._append(self.f["failures/reason"], np.asarray([reason.encode()[:1024]], dtype=REASON_DTYPE))
        self.f.flush()
        self._append(self.f["failures/key"], np.asarray([key.encode()], dtype=KEY_DTYPE))
        self.f.flush()
        self._failed.add(key)



class ReferenceData:
    """Read-only view of a reference file: ``len``, indexing gives ``ase.Atoms`` with
    ``arrays['density_coefficients']`` and the labels in ``info``."""

    def __init__(self, path):
        self.path = os.fspath(path)
        with read_reference(self.path) as f:
            try:
                self.settings = json.loads(f.attrs["settings"])
                self.basis = AuxBasis.from_json(f.attrs["auxbasis"])
                self.n = _n_complete(f)
                self._structures = {name: f["structures/" + name][:self.n] for name in STRUCTURE_FIELDS}
                n_atoms = int(self._structures["atom_start"][-1] + self._structures["n_atoms"][-1]) if self.n else 0
                if f["atoms/numbers"].shape[0] < n_atoms:
                    raise DatasetError(f"{self.path}: atom arrays are shorter than the structure records say (truncated file)")
                self._numbers = f["atoms/numbers"][:n_atoms]
                self._positions = f["atoms/positions"][:n_atoms]
                self._coefficients = f["atoms/coefficients"][:n_atoms]
                self._failures = [(k.decode(), r.decode()) for k, r in
                                  zip(f["failures/key"][()], f["failures/reason"][()]) if k]
            except (KeyError, OSError, ValueError) as exc:
                raise DatasetError(f"{self.path}: damaged or incomplete reference file: {exc}") from exc
        self.keys = [k.decode() for k in self._structures["key"]]

    def __len__(self):
        return self.n

    @property
    def failures(self) -> list:
        """[(key, reason)] of structures that could not be labelled."""
        return list(self._failures)

    def _atoms_slice(self, i):
        s = self._structures
        return slice(int(s["atom_start"][i]), int(s["atom_start"][i] + s["n_atoms"][i]))

    def __getitem__(self, i) -> Atoms:
        if not -self.n <= i < self.n:
            raise IndexError(f"structure index {i} out of range for {self.n} structures")
        i %= self.n
        sl = self._atoms_slice(i)
        atoms = Atoms(numbers=self._numbers[sl], positions=self._positions[sl])
        atoms.arrays["density_coefficients"] = self._coefficients[sl].copy()
        s = self._structures
        atoms.info.update(key=self.keys[i], energy=float(s["energy"][i]), dipole=s["dipole"][i].copy(),
                          n_electrons_fit=float(s["n_electrons_fit"][i]), fit_error=float(s["fit_error"][i]),
                          scf_cycles=int(s["scf_cycles"][i]))
        return atoms

    def __iter__(self):
        for i in range(self.n):
            yield self[i]

    def has_density_matrix(self, i) -> bool:
        return bool(self._structures["dm_start"][i] >= 0)

    def density_matrix(self, i) -> np.ndarray:
        """The full AO density matrix of structure ``i`` (orbital basis ``settings['basis']``)."""
        start, nao = int(self._structures["dm_start"][i]), int(self._structures["nao"][i])
        if start < 0:
            raise DatasetError(f"{self.path}: structure {self.keys[i]} has no stored density matrix (label with --save-dm)")
        with read_reference(self.path) as f:
            packed = f["density_matrix/values"][start:start + nao * (nao + 1) // 2]
        if len(packed) != nao * (nao + 1) // 2:
            raise DatasetError(f"{self.path}: density matrix of {self.keys[i]} is truncated")
        dm = np.zeros((nao, nao))
        dm[np.tril_indices(nao)] = packed
        return dm + np.tril(dm, -1).T

    def validate(self) -> list:
        """Problems found in the records (empty list: the file is consistent)."""
        problems = []
        symbols = {1: "H", 8: "O"}
        for i in range(self.n):
            sl = self._atoms_slice(i)
            key = self.keys[i]
            try:
                syms = [symbols.get(int(z)) or f"Z={z}" for z in self._numbers[sl]]
                mask = self.basis.mask(syms)
            except Exception as exc:
                problems.append(f"{key}: {exc}")
                continue
            c = self._coefficients[sl]
            if not np.all(np.isfinite(c[mask])):
                problems.append(f"{key}: missing (NaN) coefficients")
            if np.any(np.isfinite(c[~mask])):
                problems.append(f"{key}: padding holds numbers instead of NaN")
            if not np.all(np.isfinite(self._positions[sl])):
                problems.append(f"{key}: non-finite positions")
            if not np.isfinite(self._structures["energy"][i]):
                problems.append(f"{key}: missing energy")
        if len(set(self.keys)) != len(self.keys):
            problems.append("duplicate structure keys")
        return problems


def split_indices(n: int, n_val: int, n_test: int = 0, seed: int = 0, n_train: int | None = None):
    """Seeded random split of ``range(n)`` into (train, val, test) index arrays; ``n_train``
    limits the training set (the rest of the pool is unused)."""
    if n_val < 0 or n_test < 0 or n_val + n_test > n:
        raise ValueError(f"cannot split {n} structures into {n_val} validation and {n_test} test")
    perm = np.random.default_rng(seed).permutation(n)
    test, val, train = perm[:n_test], perm[n_test:n_test + n_val], perm[n_test + n_val:]
    if n_train is not None:
        if n_train > len(train):
            raise ValueError(f"asked for {n_train} training structures, only {len(train)} left after val/test")
        train = train[:n_train]
    return train, val, test


def structure_key(index: int, atoms: Atoms) -> str:
    """Stable identity of input frame ``index``: its position and a hash of its geometry."""
    import hashlib

    h = hashlib.sha1(atoms.get_atomic_numbers().astype("i8").tobytes() + np.round(atoms.get_positions(), 8).tobytes())
    return f"{index:06d}-{h.hexdigest()[:12]}"
