"""The trajectory-analysis HDF5 file (``ase-density analyze``): schema, writer, reader.

Layout (``format = ase-density-trajectory-analysis``; units in the ``units`` attribute)::

    /frames/{time (fs), key (hash of numbers, positions and cell), atom_start, n_atoms,
             water_start, n_waters, + the structure-level columns of ase_density.properties
             (dipole e·Å, charge e, n_electrons, n_electrons_expected), index}
    /atoms/{numbers, + the atom-level columns (charges, e)}, + {positions (Å), coefficients
            (a.u., e3nn, NaN-padded)} if saved
    /waters/{the water-level columns: atoms (O, H, H indices within the frame), charge (e),
             dipole (e·Å)}
    /analysis/{water_dipole_edges, water_dipole_counts (Debye), charge_O_edges, charge_O_counts,
               charge_H_edges, charge_H_counts (e), ir_wavenumber (cm^-1), ir_intensity, ir_acf
               ((e·Å)^2, lags of the analysed-frame spacing), summary (JSON)}

``frames/index`` (the frame's index in the trajectory) is written last: a frame counts once it is
there. The writer follows :mod:`ase_density.h5io` (lock, SWMR, repair, atomic overwrite).
"""

from __future__ import annotations

import json
import os

import numpy as np

from . import properties
from .errors import TrajectoryError
from .h5io import KEY_DTYPE, Column, RecordWriter, open_for_reading, schema_units

FORMAT = "ase-density-trajectory-analysis"
FORMAT_VERSION = 2
WHAT = "ase-density trajectory analysis"
ANALYSIS_FIELDS = ("water_dipole_edges", "water_dipole_counts", "charge_O_edges", "charge_O_counts",
                   "charge_H_edges", "charge_H_counts", "ir_wavenumber", "ir_intensity", "ir_acf")
ANALYSIS_UNITS = {"water_dipole_edges": "Debye", "charge_O_edges": "e", "charge_H_edges": "e",
                  "ir_wavenumber": "cm^-1", "ir_intensity": "arbitrary (max 1)", "ir_acf": "(e*Angstrom)^2"}
FRAME_FIELDS = ("time", "dipole", "charge", "n_electrons", "n_electrons_expected", "index", "n_waters")
_SUMMARY_DTYPE = "S65536"


def _schema(width: int, save_coefficients: bool) -> dict:
    atoms = {"numbers": Column((), "i1", 0), **properties.columns("atom")}
    if save_coefficients:
        atoms.update(positions=Column((3,), "f8", np.nan, "Angstrom"),
                     coefficients=Column((width,), "f8", np.nan, "atomic units (density in e/Bohr^3)", chunk=64))
    frames = {"time": Column((), "f8", np.nan, "fs"), "key": Column((), KEY_DTYPE, b""),
              "atom_start": Column((), "i8", -1), "n_atoms": Column((), "i4", 0), "water_start": Column((), "i8", -1),
              "n_waters": Column((), "i4", 0), **properties.columns("structure"), "index": Column((), "i8", -1)}
    analysis = {name: Column((), "f8", 0.0, ANALYSIS_UNITS.get(name, "")) for name in ANALYSIS_FIELDS}
    analysis["summary"] = Column((), _SUMMARY_DTYPE, b"", chunk=1)
    return {"atoms": atoms, "waters": properties.columns("water"), "frames": frames, "analysis": analysis}


def frame_key(atoms) -> str:
    """Content hash of a frame: atomic numbers, positions (to 1e-8 Å) and cell."""
    import hashlib

    h = hashlib.sha1(atoms.numbers.astype("i8").tobytes() + np.round(atoms.get_positions(), 8).tobytes()
                     + np.round(atoms.cell.array, 8).tobytes())
    return h.hexdigest()[:32]


class AnalysisWriter(RecordWriter):
    """Per-frame results appended in flushed batches; creates ``path`` or reopens it for the same
    ``settings`` (refusing others). ``keys``: content hashes of the complete frames stored."""

    FORMAT, WHAT, ERROR = FORMAT, WHAT, TrajectoryError
    markers = {"frames": ("index", -1)}
    parts = {"atoms": ("frames", "atom_start", "n_atoms"), "waters": ("frames", "water_start", "n_waters")}

    def __init__(self, path, settings: dict, basis, save_coefficients: bool, source=None, overwrite: bool = False):
        self.basis, self._source = basis, source
        self.schema = _schema(basis.width, save_coefficients)
        self._start(path, {"settings": json.dumps(settings, sort_keys=True), "auxbasis": basis.to_json()},
                    inputs=[source], overwrite=overwrite)
        self.keys = [k.decode() for k in self.f["frames/key"][:self.n_complete(self.f)]]

    @property
    def n_done(self) -> int:
        return len(self.keys)

    def _new_file_attrs(self) -> dict:
        return dict(format_version=FORMAT_VERSION, layout="e3nn", padding="NaN", width=self.basis.width,
                    trajectory=os.path.basename(os.fspath(self._source)) if self._source is not None else "",
                    units=json.dumps(schema_units(self.schema)))

    @classmethod
    def complete_rows(cls, f) -> dict:
        return {**super().complete_rows(f), "analysis": 0}  # analysis products are recomputed at the end

    def write(self, frames, times):
        """Append predicted frames (:class:`ase_density.prediction.PredictedFrame`, label = the
        trajectory index) with their ``times`` (fs) and flush."""
        records = []
        for frame, t in zip(frames, times):
            atoms = frame.atoms
            props = properties.density_properties(atoms, frame.coefficients, self.basis, frame.uncorrected)
            atom_rows = {"numbers": atoms.numbers, **properties.rows(props, "atom")}
            if "coefficients" in self.schema["atoms"]:
                atom_rows.update(positions=atoms.get_positions(), coefficients=frame.coefficients)
            records.append({"index": frame.label, "time": t, "key": frame_key(atoms), **properties.rows(props, "structure"),
                            "atoms": atom_rows, "waters": properties.rows(props, "water")})
        self.append_records("frames", records)
        self.keys += [r["key"] for r in records]

    def write_products(self, products: dict):
        """Replace the /analysis datasets (a crash here leaves old or partial products, which the
        next run recomputes; the frames are untouched)."""
        f = self.f
        for name in ANALYSIS_FIELDS:
            values = np.asarray(products.get(name, []), dtype=float).ravel()
            ds = f["analysis/" + name]
            ds.resize((len(values),))
            ds[:] = values
        ds = f["analysis/summary"]
        ds.resize((1,))
        ds[0] = json.dumps(products["summary"], sort_keys=True).encode()
        f.flush()


def open_analysis(path):
    """An analysis file opened read-only (also while it is written); :class:`TrajectoryError` if
    it is missing, unreadable or of another kind."""
    return open_for_reading(path, FORMAT, TrajectoryError, WHAT)


def read_analysis(path) -> dict:
    """Per-frame arrays (time, dipole, charge, n_electrons, n_electrons_expected, index, n_waters)
    and the products of an analysis file; safe while it is being written."""
    with open_analysis(os.fspath(path)) as f:
        n = AnalysisWriter.n_complete(f)
        out = {name: f["frames/" + name][:n] for name in FRAME_FIELDS}
        for name in ANALYSIS_FIELDS:
            out[name] = f["analysis/" + name][()]
        s = f["analysis/summary"][()]
        out["summary"] = json.loads(s[0].decode()) if len(s) else None
        out["settings"] = json.loads(f.attrs["settings"])
        out["trajectory"] = str(f.attrs.get("trajectory", ""))
    return out
