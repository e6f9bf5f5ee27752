"""One writer discipline for the project's HDF5 files (reference, prediction and analysis files).

Every writer:

1. refuses an output that is one of its inputs (same file, by inode);
2. takes an exclusive lock (``<output>.lock``) before it touches anything, so a second writer gets
   a clear error and the first writer's file survives;
3. opens an existing output only after checking that it is a file of its own format made with the
   same settings (never with mode ``"w"``); then repairs what a killed writer left and appends;
4. with ``overwrite``, writes a fresh file ``<output>.tmp`` next to the output and renames it over
   the output only when the run succeeds;
5. keeps the file in HDF5's single-writer/multiple-reader (SWMR) mode and flushes each batch of
   records before it writes their marker column, so a killed run (SIGKILL included) leaves a
   readable file that holds every finished record.

Schemas are ``{group: {name: Column}}``. A *record group* (one row per structure) has a marker
column written last; a record exists once its marker is not the fill value. A *part group*
(rows per atom or per molecule) is addressed by start/count columns of its record group.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from typing import NamedTuple

import h5py
import numpy as np

from .errors import OutputError

KEY_DTYPE, REASON_DTYPE = "S64", "S1024"


class Column(NamedTuple):
    """One dataset of a schema: trailing ``shape``, ``dtype``, ``fill`` value, ``unit``, and rows
    per HDF5 chunk."""

    shape: tuple
    dtype: str
    fill: object
    unit: str = ""
    chunk: int = 1024


def file_sha256(path) -> str:
    """SHA-256 hex digest of a file, read in 16 MB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 24), b""):
            h.update(chunk)
    return h.hexdigest()


def versions() -> dict:
    """{package: version} of the packages whose versions go into every output file."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("ase-density", "pyscf", "ase", "numpy", "h5py"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def check_not_input(output, inputs, error=OutputError) -> None:
    """Raise ``error`` if ``output`` is the same file (inode) as one of ``inputs``."""
    output = os.fspath(output)
    if not os.path.exists(output):
        return
    for path in inputs:
        if path is not None and os.path.exists(path) and os.path.samefile(output, path):
            raise error(f"{output}: the output is the input file {os.fspath(path)}; refusing to write it "
                        "(choose another output)")


def open_for_reading(path, fmt: str, error, what: str):
    """Open one of the project's HDF5 files (format attribute ``fmt``, described as ``what``)
    read-only, also while a writer has it open in SWMR mode or after such a writer was killed.
    Raises ``error`` for a missing, unreadable or foreign file."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise error(f"{path}: no such file")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        if "already open for write" not in str(exc):
            raise error(f"{path}: not a readable HDF5 file (truncated or corrupt, or not HDF5), so not an {what}") from exc
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

    def __init__(self, path, error=OutputError):
        self.name = os.fspath(path) + ".lock"
        while True:
            self._file = open(self.name, "a")
            try:
                fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._file.close()
                raise error(f"{os.fspath(path)}: another process is writing this file (lock {self.name} is held)") from None
            try:  # the holder we waited for may have removed the file we locked: lock the current one
                if os.stat(self.name).st_ino == os.fstat(self._file.fileno()).st_ino:
                    return
            except FileNotFoundError:
                pass
            self._file.close()

    def release(self):
        if not self._file.closed:
            try:
                os.unlink(self.name)
            except FileNotFoundError:
                pass
            self._file.close()


def create_datasets(f, schema: dict) -> None:
    """Create the empty, resizable datasets of ``schema`` ({group: {name: Column}}) in ``f``."""
    for group, columns in schema.items():
        for name, col in columns.items():
            fill = {} if np.dtype(col.dtype).kind == "S" else {"fillvalue": col.fill}
            f.create_dataset(f"{group}/{name}", (0, *col.shape), maxshape=(None, *col.shape), dtype=col.dtype,
                             chunks=(col.chunk, *col.shape), **fill)


def schema_units(schema: dict) -> dict:
    """{name: unit} of the columns of ``schema`` that have one."""
    return {name: col.unit for columns in schema.values() for name, col in columns.items() if col.unit}


def complete_count(ds, fill) -> int:
    """Rows of the marker dataset ``ds`` before the first one still holding ``fill``."""
    values = ds[()]
    bad = np.where(values == fill)[0]
    return int(bad[0]) if len(bad) else len(values)


class LockedH5Writer:
    """Base of the project's appending writers; see the module docstring for the discipline.

    Subclasses set ``FORMAT``, ``WHAT`` (e.g. ``"ase-density prediction file"``), ``ERROR`` (the
    exception class) and ``schema`` and give ``_complete_rows(f)`` ({group: complete rows}) and
    ``_new_file_attrs()``; then call :meth:`_start`. ``close()`` (or leaving the ``with`` block)
    closes the file, renames a fresh ``overwrite`` file into place (only without an exception) and
    releases the lock."""

    FORMAT = WHAT = ""
    ERROR = OutputError
    f = None
    _lock = None
    _target = None  # with overwrite: the output that the finished temporary file replaces

    def _start(self, path, meta: dict, inputs=(), overwrite: bool = False, info: dict | None = None) -> None:
        """Under the writer lock: refuse an input as output, reopen ``path`` (same ``meta``
        attributes only; repaired after a crash) or create it (``overwrite``: a temporary file
        renamed on success), merge ``info`` ({attribute: dict}: provenance that reopening does not
        compare) into its JSON-dict attributes, then switch to SWMR mode."""
        self.path = os.fspath(path)
        check_not_input(self.path, inputs, self.ERROR)
        self._lock = WriterLock(self.path, self.ERROR)
        try:
            if overwrite:
                if os.path.exists(self.path):
                    self._read().close()  # only a file of our own format may be replaced
                self._target, self.path = self.path, self.path + ".tmp"
                if os.path.exists(self.path):  # left by a killed overwrite; ours, since we hold the lock
                    os.unlink(self.path)
            if os.path.exists(self.path):
                self._check_compatible(meta)
                self._repair()
                self.f = h5py.File(self.path, "a", libver="latest")
            else:
                self.f = h5py.File(self.path, "w-", libver="latest")
                self.f.attrs.update(format=self.FORMAT, versions=json.dumps(versions()), **self._new_file_attrs(), **meta)
                create_datasets(self.f, self.schema)
            for name, entries in (info or {}).items():  # attributes cannot change in SWMR mode
                self.f.attrs[name] = json.dumps({**json.loads(self.f.attrs.get(name, "{}")), **entries}, sort_keys=True)
        except BaseException:
            self._abort()
            raise
        self.f.swmr_mode = True

    def _new_file_attrs(self) -> dict:
        return {}

    def _read(self):
        """``self.path`` opened read-only (SWMR), refusing files that are not of this writer's kind."""
        return open_for_reading(self.path, self.FORMAT, self.ERROR, self.WHAT)

    def _check_compatible(self, meta: dict) -> None:
        """Refuse to append to a file made with other ``meta`` attributes, naming the difference."""
        with self._read() as f:
            for name, value in meta.items():
                found = f.attrs.get(name)
                if found == value:
                    continue
                detail = f"\n  file:      {found}\n  requested: {value}"
                if name == "settings" and found is not None:
                    a, b = json.loads(found), json.loads(value)
                    detail = "".join(f"\n  {k}: file {a.get(k)!r}, requested {b.get(k)!r}"
                                     for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k))
                raise self.ERROR(f"{self.path}: made with other {name} than requested; refusing to append "
                                 f"(choose another output, or pass --overwrite).{detail}")

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
        if os.path.exists(tmp):  # left by a killed repair; ours, since we hold the lock
            os.unlink(tmp)
        with self._read() as old, h5py.File(tmp, "w-", libver="latest") as new:
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

    def _abort(self):
        """Close without keeping a fresh ``overwrite`` file; release the lock."""
        if self.f is not None:
            self.f.close()
            self.f = None
        if self._target is not None and os.path.exists(self.path):
            os.unlink(self.path)
        if self._lock is not None:
            self._lock.release()

    def close(self):
        """Close the file; with ``overwrite``, move the finished file over the output."""
        if self.f is not None:
            self.f.close()
            self.f = None
            if self._target is not None:
                os.replace(self.path, self._target)
                self.path, self._target = self._target, None
        if self._lock is not None:
            self._lock.release()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        if exc_type is None:
            self.close()
        else:
            self._abort()


class RecordWriter(LockedH5Writer):
    """A :class:`LockedH5Writer` whose schema is made of record groups and part groups.

    ``markers``: {record group: (marker column, its fill value)}, the first one the main group;
    ``parts``: {part group: (record group, start column, count column)}."""

    markers: dict = {}
    parts: dict = {}

    @classmethod
    def n_complete(cls, f, group=None) -> int:
        """Complete records of ``group`` (default: the main record group) in the open file ``f``."""
        group = group or next(iter(cls.markers))
        marker, fill = cls.markers[group]
        return complete_count(f[f"{group}/{marker}"], fill)

    @classmethod
    def complete_rows(cls, f) -> dict:
        """{group: rows that complete records occupy} in the open file ``f``."""
        rows = {group: cls.n_complete(f, group) for group in cls.markers}
        for part, (group, start, count) in cls.parts.items():
            n = rows[group]
            rows[part] = int(f[f"{group}/{start}"][n - 1] + f[f"{group}/{count}"][n - 1]) if n else 0
        return rows

    def _complete_rows(self, f) -> dict:
        return self.complete_rows(f)

    def append_records(self, group: str, records: list) -> None:
        """Append ``records`` to record group ``group`` and flush, marker column last. Each record
        is {column: value} for the record group's columns, plus {part group: {column: rows}} for
        each of its part groups; the start/count columns are filled here."""
        if not records:
            return
        f = self.f
        parts = {p: spec for p, spec in self.parts.items() if spec[0] == group}
        offsets = {p: f[f"{p}/{next(iter(self.schema[p]))}"].shape[0] for p in parts}
        part_rows = {p: {name: [] for name in self.schema[p]} for p in parts}
        columns = {name: [] for name in self.schema[group]}
        for record in records:
            record = dict(record)
            for p, (_, start, count) in parts.items():
                rows = record.pop(p)
                n = None
                for name, col in self.schema[p].items():
                    values = np.asarray(rows[name], dtype=col.dtype)
                    n = len(values) if n is None else n
                    part_rows[p][name].append(values.reshape(n, *col.shape))
                record[start], record[count] = offsets[p], n
                offsets[p] += n
            for name in columns:
                columns[name].append(record[name])
        for p, rows in part_rows.items():
            for name, chunks in rows.items():
                self._append(f[f"{p}/{name}"], np.concatenate(chunks))
        marker = self.markers[group][0]
        for name, values in columns.items():
            if name != marker:
                self._append(f[f"{group}/{name}"], np.asarray(values, dtype=self.schema[group][name].dtype))
        f.flush()  # all data on disk before the markers make the records complete
        self._append(f[f"{group}/{marker}"], np.asarray(columns[marker], dtype=self.schema[group][marker].dtype))
        f.flush()


def portable_path(path) -> str:
    """``path`` as recorded in provenance: relative to the repository when inside it, else to the
    working directory when inside that, else its file name (never an absolute machine path)."""
    path = os.path.realpath(os.fspath(path))
    for root in (os.path.dirname(os.path.dirname(os.path.realpath(__file__))), os.path.realpath(os.getcwd())):
        if os.path.commonpath([path, root]) == root:
            return os.path.relpath(path, root)
    return os.path.basename(path)
