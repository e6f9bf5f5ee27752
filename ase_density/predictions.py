"""HDF5 files of model predictions, in the layout of the reference files (``dataset.py``):

    /atoms/numbers (N,), /atoms/positions (N, 3) Å, /atoms/coefficients (N, width) a.u., e3nn
        layout, NaN-padded, electron-count corrected; /atoms/charges (N,) e
    /structures/<field> (S, ...): frame (index in the input file), atom_start, n_atoms,
        dipole (e·Å), n_electrons_model (∫rho of the uncorrected model output); key, written last
    /failures/frame, /failures/reason: input frames that could not be predicted

Root attributes: format ``ase-density-prediction``, the aux basis (JSON), the model path and
its SHA-256, the input file, units, package versions. Records are flushed per batch.
"""

from __future__ import annotations

import json
import os

import h5py
import numpy as np
from ase import Atoms

from .basis import AuxBasis
from .density import electron_count
from .dataset import KEY_DTYPE, REASON_DTYPE, _versions, file_sha256, structure_key

FORMAT = "ase-density-prediction"
FORMAT_VERSION = 1
UNITS = {"positions": "Angstrom", "coefficients": "atomic units (density in e/Bohr^3)", "charges": "e",
         "dipole": "e*Angstrom", "n_electrons_model": "electrons"}
ATOM_FIELDS = {"numbers": ((), "i1"), "positions": ((3,), "f8"), "charges": ((), "f8")}
STRUCTURE_FIELDS = {"frame": ((), "i8"), "atom_start": ((), "i8"), "n_atoms": ((), "i4"), "dipole": ((3,), "f8"),
                    "n_electrons_model": ((), "f8"), "key": ((), KEY_DTYPE)}


def _append(ds, values):
    n = ds.shape[0]
    ds.resize((n + len(values), *ds.shape[1:]))
    ds[n:] = values


class PredictionWriter:
    """Write predictions of ``calc`` (a ``DensityCalculator``) to a new HDF5 file ``path``;
    ``source`` names the input file. Use as a context manager."""

    def __init__(self, path, calc, source: str = ""):
        self.path = os.fspath(path)
        self.basis = calc.basis
        width = calc.basis.width
        self.f = h5py.File(self.path, "w")
        self.f.attrs.update(format=FORMAT, format_version=FORMAT_VERSION, layout="e3nn", padding="NaN", width=width,
                            auxbasis=calc.basis.to_json(), model=calc.model_path,
                            model_sha256=file_sha256(calc.model_path), source=str(source),
                            electron_count_correction="minimal change of scalar coefficients in the one-centre "
                                                      "Coulomb metric (ase_density.calculator)",
                            units=json.dumps(UNITS), versions=json.dumps(_versions()))
        for name, (shape, dtype) in ATOM_FIELDS.items():
            self.f.create_dataset("atoms/" + name, (0, *shape), maxshape=(None, *shape), dtype=dtype)
        self.f.create_dataset("atoms/coefficients", (0, width), maxshape=(None, width), dtype="f8",
                              chunks=(256, width), fillvalue=np.nan)
        for name, (shape, dtype) in STRUCTURE_FIELDS.items():
            self.f.create_dataset("structures/" + name, (0, *shape), maxshape=(None, *shape), dtype=dtype)
        self.f.create_dataset("failures/frame", (0,), maxshape=(None,), dtype="i8")
        self.f.create_dataset("failures/reason", (0,), maxshape=(None,), dtype=REASON_DTYPE)
        self.n_atoms = 0

    def write(self, frames, atoms_list, results):
        """Append structures (input indices ``frames``, their ``Atoms`` and
        ``DensityCalculator.compute_batch`` results) and flush."""
        f = self.f
        for frame, atoms, res in zip(frames, atoms_list, results):
            _append(f["atoms/numbers"], atoms.get_atomic_numbers().astype("i1"))
            _append(f["atoms/positions"], atoms.get_positions())
            _append(f["atoms/coefficients"], res["density_coefficients"])
            _append(f["atoms/charges"], res["charges"])
            n_model = electron_count(atoms, res["density_coefficients_uncorrected"], self.basis)
            values = {"frame": frame, "atom_start": self.n_atoms, "n_atoms": len(atoms), "dipole": res["dipole"],
                      "n_electrons_model": n_model}
            for name, value in values.items():
                _append(f["structures/" + name], np.asarray([value]))
            self.n_atoms += len(atoms)
        f.flush()  # data first, then the keys that mark the records complete
        for frame, atoms in zip(frames, atoms_list):
            _append(f["structures/key"], np.asarray([structure_key(frame, atoms).encode()], dtype=KEY_DTYPE))
        f.flush()

    def write_failure(self, frame: int, reason: str):
        """Record that input frame ``frame`` could not be predicted, and why."""
        _append(self.f["failures/reason"], np.asarray([reason.encode()[:1024]], dtype=REASON_DTYPE))
        _append(self.f["failures/frame"], np.asarray([frame]))
        self.f.flush()

    def close(self):
        if self.f is not None:
            self.f.close()
            self.f = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class PredictionData:
    """Read-only view of a prediction file: ``len``; indexing gives ``ase.Atoms`` with
    ``arrays['density_coefficients']``, ``arrays['charges']`` and ``info['dipole']`` (e·Å)."""

    def __init__(self, path):
        self.path = os.fspath(path)
        with h5py.File(self.path, "r") as f:
            if f.attrs.get("format") != FORMAT:
                raise ValueError(f"{self.path}: not an ase-density prediction file")
            self.attrs = dict(f.attrs)
            self.basis = AuxBasis.from_json(f.attrs["auxbasis"])
            n = int(np.sum(f["structures/key"][()] != b""))
            self.structures = {name: f["structures/" + name][:n] for name in STRUCTURE_FIELDS}
            self.atoms = {name: f["atoms/" + name][()] for name in (*ATOM_FIELDS, "coefficients")}
            self.failures = list(zip(f["failures/frame"][()].tolist(), (r.decode() for r in f["failures/reason"][()])))

    def __len__(self):
        return len(self.structures["key"])

    def __getitem__(self, i) -> Atoms:
        s = self.structures
        sl = slice(int(s["atom_start"][i]), int(s["atom_start"][i] + s["n_atoms"][i]))
        atoms = Atoms(numbers=self.atoms["numbers"][sl], positions=self.atoms["positions"][sl])
        atoms.arrays["density_coefficients"] = self.atoms["coefficients"][sl]
        atoms.arrays["charges"] = self.atoms["charges"][sl]
        atoms.info.update(frame=int(s["frame"][i]), dipole=s["dipole"][i].copy(),
                          n_electrons_model=float(s["n_electrons_model"][i]), key=s["key"][i].decode())
        return atoms
