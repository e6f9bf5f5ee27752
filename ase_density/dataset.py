"""HDF5 reference data: schema, crash-safe appending writer, reader, validation, splits.

Layout (one file = one level of theory, recorded in the root attributes):

    /atoms/numbers (N,) int8, /atoms/positions (N, 3) Å, /atoms/coefficients (N, width) a.u.,
        e3nn layout, NaN-padded — all atoms of all structures, concatenated
    /structures/<field> (S, ...) — per structure: atom_start, n_atoms, energy (eV), dipole (e·Å),
        n_electrons_fit, fit_error (%), scf_cycles, time_scf, time_fit (s), dm_start, nao; and
        key, written last: a record exists only once its key is non-empty
    /density_matrix/values — optional AO density matrices, lower triangles packed, concatenated
    /failures/key, /failures/reason — structures that could not be labelled, with the reason

The writer keeps the file in HDF5's single-writer/multiple-reader (SWMR) mode and flushes each
record before marking it complete, so a killed run (SIGKILL included) leaves a readable file that
holds every finished record; the next writer repairs the open-file flag by copying the complete
records into a fresh file.
"""

from __future__ import annotations

import fcntl
import json
import os

import h5py
import numpy as np
from ase import Atoms

from .basis import AuxBasis

FORMAT = "ase-density-reference"
FORMAT_VERSION = 1
KEY_DTYPE, REASON_DTYPE = "S64", "S1024"
UNITS = {"positions": "Angstrom", "coefficients": "atomic units (density in e/Bohr^3)", "energy": "eV",
         "dipole": "e*Angstrom", "time": "s", "fit_error": "percent of electrons"}

STRUCTURE_FIELDS = {  # name: (trailing shape, dtype, fill value)
    "atom_start": ((), "i8", -1), "n_atoms": ((), "i4", 0), "energy": ((), "f8", np.nan),
    "dipole": ((3,), "f8", np.nan), "n_electrons_fit": ((), "f8", np.nan), "fit_error": ((), "f8", np.nan),
    "scf_cycles": ((), "i4", -1), "time_scf": ((), "f8", np.nan), "time_fit": ((), "f8", np.nan),
    "dm_start": ((), "i8", -1), "nao": ((), "i4", 0), "key": ((), KEY_DTYPE, b""),
}


class DatasetError(ValueError):
    """A reference file that is not ours, was made with other settings, or is damaged."""


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("ase-density", "pyscf", "ase", "numpy", "h5py"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def open_for_reading(path, fmt: str = FORMAT, error=None, what: str = "ase-density reference file"):
    """Open one of the project's HDF5 files (format attribute ``fmt``) read-only, also while a
    writer has it open in SWMR mode or after such a writer was killed. Raises ``error`` (default
    :class:`DatasetError`) for a missing, unreadable or foreign file."""
    error = error or DatasetError
    if not os.path.exists(path):
        raise error(f"{path}: no such file")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        if "already open for write" not in str(exc):
            raise error(f"{path}: not a readable HDF5 file (truncated or corrupt?): {exc}") from exc
        # being written right now, or its writer was killed: SWMR readers see every flushed record
        f = h5py.File(path, "r", libver="latest", swmr=True)
    found = f.attrs.get("format")
    if found != fmt:
        f.close()
        raise error(f"{path}: not an {what} (format attribute {found!r} missing or wrong)")
    return f


class WriterLock:
    """An exclusive lock on ``<path>.lock`` for the one process that may write ``path``; raises
    ``error`` if another process holds it. ``release()`` removes the lock file."""

    def __init__(self, path, error=None):
        self._file = open(os.fspath(path) + ".lock", "w")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            raise (error or DatasetError)(f"{path}: another process is writing this file") from None

    def release(self):
        if not self._file.closed:
            try:
                os.unlink(self._file.name)
            except FileNotFoundError:
                pass
            self._file.close()


def file_sha256(path) -> str:
    """SHA-256 hex digest of a file, read in 16 MB chunks."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 24), b""):
            h.update(chunk)
    return h.hexdigest()


def _n_complete(f) -> int:
    """Number of complete structure records (those whose key was written)."""
    try:
        keys = f["structures/key"][()]
    except KeyError as exc:
        raise DatasetError(f"{f.filename}: missing /structures/key: truncated or not an ase-density file") from exc
    empty = np.where(keys == b"")[0]
    return int(empty[0]) if len(empty) else len(keys)


class LockedH5Writer:
    """Base of the project's appending writers: an open HDF5 file ``f`` and the
    :class:`WriterLock` ``_lock``; ``close()`` (or leaving the ``with`` block) closes and releases both.
    Subclasses give ``_check_compatible(meta)``, ``_repair()`` and ``_create(meta)``."""

    f = None

    def _read(self):
        """``self.path`` opened read-only (SWMR), refusing files that are not of this writer's kind."""
        return open_for_reading(self.path)

    def _complete_rows(self, f) -> dict:
        """{group: rows of its datasets that complete records occupy} in the open file ``f``."""
        raise NotImplementedError

    def _repair(self):
        """Drop the rows of records a killed writer left unfinished. A writer killed in SWMR mode
        leaves the file flagged open: then the complete records are copied into a fresh file that
        atomically replaces the old one."""
        try:
            with h5py.File(self.path, "a", libver="latest") as f:
                for group, n in self._complete_rows(f).items():
                    for ds in f[group].values():
                        if ds.shape[0] != n:
                            ds.resize((n, *ds.shape[1:]))
            return
        except OSError:
            pass
        tmp = self.path + ".repair"
        with self._read() as old, h5py.File(tmp, "w", libver="latest") as new:
            new.attrs.update(dict(old.attrs))
            for group, n in self._complete_rows(old).items():
                for name, ds in old[group].items():
                    fill = {} if ds.dtype.kind == "S" else {"fillvalue": ds.fillvalue}  # a 64 kB fill overflows the header
                    new.create_dataset(f"{group}/{name}", data=ds[:n], maxshape=(None, *ds.shape[1:]),
                                       chunks=ds.chunks, **fill)
        os.replace(tmp, self.path)

    @staticmethod
    def _append(ds, values) -> int:
        """Append rows ``values`` to the resizable dataset ``ds``; returns the first new row."""
        n = ds.shape[0]
        ds.resize((n + len(values), *ds.shape[1:]))
        ds[n:] = values
        return n

    def _open(self, meta: dict, info: dict | None = None) -> None:
        """Under the held lock: reopen ``self.path`` (after refusing other ``meta`` and repairing
        what a killed writer left) or create it; merge ``info`` ({attribute: dict}, provenance
        that reopening does not compare) into its JSON-dict attributes; then SWMR mode. Releases
        the lock on failure."""
        try:
            if os.path.exists(self.path):
                self._check_compatible(meta)
                self._repair()
                self.f = h5py.File(self.path, "a", libver="latest")
            else:
                self.f = self._create(meta)
            for name, entries in (info or {}).items():  # attributes cannot change in SWMR mode
                self.f.attrs[name] = json.dumps({**json.loads(self.f.attrs.get(name, "{}")), **entries}, sort_keys=True)
        except BaseException:
            self._lock.release()
            raise
        self.f.swmr_mode = True

    def close(self):
        if getattr(self, "f", None) is not None:
            self.f.close()
            self.f = None
        self._lock.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class ReferenceWriter(LockedH5Writer):
    """Append reference records to ``path``, one flushed record at a time; creates the file or
    reopens it (same ``settings`` and ``basis`` only; ``info``: see ``LockedH5Writer._open``, e.g.
    ``{"scf_guesses": {"model": {...}}}``). Use as a context manager."""

    def __init__(self, path, settings: dict, basis: AuxBasis, info: dict | None = None):
        self.path = os.fspath(path)
        self.basis = basis
        self._lock = WriterLock(self.path)
        self._open({"settings": json.dumps(settings, sort_keys=True), "auxbasis": basis.to_json()}, info)
        self._done = {k.decode() for k in self.f["structures/key"][:_n_complete(self.f)]}
        self._failed = {k.decode() for k in self.f["failures/key"][()] if k}

    def _create(self, meta):
        f = h5py.File(self.path, "w", libver="latest")
        f.attrs.update(format=FORMAT, format_version=FORMAT_VERSION, layout="e3nn", padding="NaN",
                       width=self.basis.width, metric="coulomb", constraint="exact electron count",
                       units=json.dumps(UNITS), versions=json.dumps(_versions()), **meta)
        atoms = f.create_group("atoms")
        atoms.create_dataset("numbers", (0,), maxshape=(None,), dtype="i1", chunks=(4096,))
        atoms.create_dataset("positions", (0, 3), maxshape=(None, 3), dtype="f8", chunks=(1024, 3))
        atoms.create_dataset("coefficients", (0, self.basis.width), maxshape=(None, self.basis.width), dtype="f8",
                             chunks=(256, self.basis.width), fillvalue=np.nan)
        structures = f.create_group("structures")
        for name, (shape, dtype, fill) in STRUCTURE_FIELDS.items():
            structures.create_dataset(name, (0, *shape), maxshape=(None, *shape), dtype=dtype,
                                      chunks=(256, *shape), fillvalue=fill)
        f.create_group("density_matrix").create_dataset("values", (0,), maxshape=(None,), dtype="f8", chunks=(65536,))
        failures = f.create_group("failures")
        failures.create_dataset("key", (0,), maxshape=(None,), dtype=KEY_DTYPE, chunks=(256,))
        failures.create_dataset("reason", (0,), maxshape=(None,), dtype=REASON_DTYPE, chunks=(256,))
        return f

    def _check_compatible(self, meta):
        with self._read() as f:
            for name, value in meta.items():
                if f.attrs.get(name) != value:
                    raise DatasetError(f"{self.path}: made with other {name} than requested; refusing to append.\n"
                                       f"  file:      {f.attrs.get(name)}\n  requested: {value}")

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
        with open_for_reading(self.path) as f:
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
        with open_for_reading(self.path) as f:
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
