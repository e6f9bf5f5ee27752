"""``ase-density predict``: model predictions for the structures of a file, into a resumable,
crash-safe HDF5 file (the writer discipline of :mod:`ase_density.h5io`).

Layout (``format = ase-density-prediction``, units in the ``units`` attribute)::

    /atoms/{numbers, positions (Å), coefficients (a.u., e3nn layout, NaN-padded, electron-count
            corrected), + the atom-level columns of ase_density.properties (charges, e)}
    /structures/{frame (index in the input file), atom_start, n_atoms, water_start, n_waters,
                 + the structure-level columns (dipole e·Å, charge, n_electrons, ...), key}
    /waters/{the water-level columns (atoms, charge, dipole)}
    /failures/{frame, reason, key}: input frames that could not be predicted

``key`` (frame index and a hash of its geometry, as reference files use) is written last: a record
counts once it is there. A rerun with the same model continues after the stored frames, and
refuses an input whose stored frames have changed.
"""

from __future__ import annotations

import json
import os

import numpy as np
from ase import Atoms

from . import properties
from .basis import AuxBasis
from .dataset import structure_key
from .density import write_cube
from .errors import OutputError, PredictionError, StructureError
from .h5io import KEY_DTYPE, REASON_DTYPE, Column, RecordWriter, file_sha256, open_for_reading, schema_units
from .prediction import check_batch_size, predict_frames

FORMAT = "ase-density-prediction"
FORMAT_VERSION = 2
WHAT = "ase-density prediction file"


def _schema(width: int) -> dict:
    return {
        "atoms": {"numbers": Column((), "i1", 0), "positions": Column((3,), "f8", np.nan, "Angstrom"),
                  "coefficients": Column((width,), "f8", np.nan, "atomic units (density in e/Bohr^3)", chunk=256),
                  **properties.columns("atom")},
        "waters": properties.columns("water"),
        "structures": {"frame": Column((), "i8", -1), "atom_start": Column((), "i8", -1), "n_atoms": Column((), "i4", 0),
                       "water_start": Column((), "i8", -1), "n_waters": Column((), "i4", 0),
                       **properties.columns("structure"), "key": Column((), KEY_DTYPE, b"")},
        "failures": {"frame": Column((), "i8", -1), "reason": Column((), REASON_DTYPE, b""),
                     "key": Column((), KEY_DTYPE, b"")},
    }


class PredictionWriter(RecordWriter):
    """Append predictions of ``calc``'s model (a ``DensityCalculator``) to ``path``: creates it,
    or reopens a prediction file of the same model. ``source``: the input file (refused as
    output). ``overwrite``: start afresh (the old file is replaced only when the run succeeds)."""

    FORMAT, WHAT, ERROR = FORMAT, WHAT, OutputError
    markers = {"structures": ("key", b""), "failures": ("key", b"")}
    parts = {"atoms": ("structures", "atom_start", "n_atoms"), "waters": ("structures", "water_start", "n_waters")}

    def __init__(self, path, calc, source=None, overwrite: bool = False):
        self.basis = calc.basis
        self.schema = _schema(calc.basis.width)
        self._source, self._model, self._model_sha256 = source, calc.model_path, file_sha256(calc.model_path)
        meta = {"settings": json.dumps({"model_sha256": self._model_sha256}), "auxbasis": calc.basis.to_json()}
        self._start(path, meta, inputs=[source], overwrite=overwrite)
        n = self.n_complete(self.f)
        self.done = dict(zip(self.f["structures/frame"][:n].tolist(), (k.decode() for k in self.f["structures/key"][:n])))
        n = self.n_complete(self.f, "failures")
        self.failed = {k.decode() for k in self.f["failures/key"][:n]}

    def _new_file_attrs(self) -> dict:
        return dict(format_version=FORMAT_VERSION, layout="e3nn", padding="NaN", width=self.basis.width,
                    model=os.path.basename(os.fspath(self._model)), model_sha256=self._model_sha256,
                    source=os.path.basename(os.fspath(self._source)) if self._source is not None else "",
                    electron_count_correction="minimal change of scalar coefficients in the one-centre "
                                              "Coulomb metric (ase_density.density.correct_electron_count)",
                    units=json.dumps(schema_units(self.schema)))

    def write(self, frames):
        """Append predicted frames (:class:`ase_density.prediction.PredictedFrame` with an int
        ``label``: the input index) and flush."""
        records = []
        for frame in frames:
            atoms = frame.atoms
            props = properties.density_properties(atoms, frame.coefficients, self.basis, frame.uncorrected)
            records.append({"frame": frame.label, "key": structure_key(frame.label, atoms),
                            **properties.rows(props, "structure"),
                            "atoms": {"numbers": atoms.numbers, "positions": atoms.get_positions(),
                                      "coefficients": frame.coefficients, **properties.rows(props, "atom")},
                            "waters": properties.rows(props, "water")})
        self.append_records("structures", records)
        self.done.update((r["frame"], r["key"]) for r in records)

    def write_failure(self, frame: int, atoms, reason: str):
        """Record that input frame ``frame`` could not be predicted, and why."""
        key = structure_key(frame, atoms)
        self.append_records("failures", [{"frame": frame, "reason": reason.encode()[:1024], "key": key}])
        self.failed.add(key)


def predict_file(structures, output, calc, batch_size: int = 16, skip_invalid: bool = False, cubes=None,
                 cube_spacing: float = 0.2, cube_margin: float = 3.0, overwrite: bool = False,
                 progress: bool = True) -> dict:
    """Predict every frame of ``structures`` (any file ``ase.io`` reads, streamed) with ``calc``
    (a ``DensityCalculator``) into ``output``, continuing a file made by the same model. ``cubes``:
    directory for one density cube file per frame. Returns {"done": new frames, "skipped": frames
    stored before, "failed": [(frame, reason)]}. Raises :class:`PredictionError` for an
    unreadable input or (without ``skip_invalid``) an invalid frame, after storing the frames
    before it."""
    import ase.io
    from tqdm import tqdm

    structures = os.fspath(structures)
    batch_size = check_batch_size(batch_size)
    if not os.path.isfile(structures):
        raise PredictionError(f"{structures}: no such file")
    summary = {"done": 0, "skipped": 0, "failed": []}
    with PredictionWriter(output, calc, source=structures, overwrite=overwrite) as writer, \
            tqdm(desc="predicting", unit="frame", disable=not progress) as bar:
        def pending():
            n_read = 0
            try:
                for atoms in ase.io.iread(structures, index=":"):
                    index, n_read = n_read, n_read + 1
                    key = structure_key(index, atoms)
                    if writer.done.get(index, key) != key:
                        raise OutputError(f"{writer.path}: frame {index} of {structures} differs from the one stored; "
                                          "the input changed since the file was made (choose another output, or "
                                          "pass --overwrite)")
                    if index in writer.done or key in writer.failed:
                        summary["skipped"] += 1
                        bar.update()
                        continue
                    yield index, atoms
            except OutputError:
                raise
            except Exception as exc:  # ASE raises many kinds for unreadable or truncated files
                raise PredictionError(f"{structures}: cannot read frame {n_read}: {type(exc).__name__}: {exc}") from exc

        batch = []
        try:
            for frame in predict_frames(calc.model, pending(), batch_size, basis=calc.basis, skip_invalid=skip_invalid,
                                        validation={"allow_non_water": calc.allow_non_water}):
                if frame.error is not None:
                    writer.write_failure(frame.label, frame.atoms, frame.error)
                    summary["failed"].append((frame.label, frame.error))
                    continue
                batch.append(frame)
                if len(batch) == batch_size:
                    _store(writer, batch, cubes, cube_spacing, cube_margin, summary, bar)
        except StructureError as exc:
            _store(writer, batch, cubes, cube_spacing, cube_margin, summary, bar)
            raise PredictionError(f"{structures}: {exc} ({len(writer.done)} frames are stored in {output}; "
                                  "--skip-invalid records such frames and goes on)", len(writer.done)) from exc
        except PredictionError as exc:
            _store(writer, batch, cubes, cube_spacing, cube_margin, summary, bar)
            raise PredictionError(f"{exc} ({len(writer.done)} frames before it are stored in {output})",
                                  len(writer.done)) from exc
        _store(writer, batch, cubes, cube_spacing, cube_margin, summary, bar)
    return summary


def _store(writer, batch, cubes, spacing, margin, summary, bar):
    """Write ``batch`` (then empty it) and its cube files."""
    if not batch:
        return
    writer.write(batch)
    if cubes is not None:
        os.makedirs(cubes, exist_ok=True)
        for frame in batch:
            write_cube(os.path.join(cubes, f"frame_{frame.label:06d}.cube"), frame.atoms, frame.coefficients,
                       writer.basis, spacing=spacing, margin=margin)
    summary["done"] += len(batch)
    bar.update(len(batch))
    batch.clear()


class PredictionData:
    """Read-only view of a prediction file: ``len``; indexing gives ``ase.Atoms`` with
    ``arrays['density_coefficients']`` and the atom-level properties (``charges``) in ``arrays``,
    the structure- and water-level properties of :data:`ase_density.properties.PROPERTIES` (and
    ``frame``, ``key``) in ``info``."""

    def __init__(self, path):
        self.path = os.fspath(path)
        with open_for_reading(self.path, FORMAT, OutputError, WHAT) as f:
            self.attrs = dict(f.attrs)
            self.basis = AuxBasis.from_json(f.attrs["auxbasis"])
            groups = {group: {name: ds[()] for name, ds in f[group].items()} for group in ("atoms", "waters", "structures")}
            n = PredictionWriter.n_complete(f)
            groups["structures"] = {name: values[:n] for name, values in groups["structures"].items()}
            self.structures, self.atoms, self.waters = groups["structures"], groups["atoms"], groups["waters"]
            self.failures = [(int(i), r.decode()) for i, r, k in
                             zip(f["failures/frame"][()], f["failures/reason"][()], f["failures/key"][()]) if k]

    def __len__(self):
        return len(self.structures["key"])

    def __getitem__(self, i) -> Atoms:
        s = self.structures
        sl = slice(int(s["atom_start"][i]), int(s["atom_start"][i] + s["n_atoms"][i]))
        wl = slice(int(s["water_start"][i]), int(s["water_start"][i] + s["n_waters"][i]))
        atoms = Atoms(numbers=self.atoms["numbers"][sl], positions=self.atoms["positions"][sl])
        atoms.arrays["density_coefficients"] = self.atoms["coefficients"][sl]
        atoms.info.update(frame=int(s["frame"][i]), key=s["key"][i].decode())
        for name, p in properties.PROPERTIES.items():
            if p.level == "atom":
                atoms.arrays[name] = self.atoms[p.column][sl]
            elif p.level == "water":
                atoms.info[name] = self.waters[p.column][wl]
            else:
                atoms.info[name] = s[p.column][i].copy() if p.shape else s[p.column][i].item()
        return atoms
