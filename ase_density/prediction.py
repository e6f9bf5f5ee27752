"""The one prediction loop: validate structures, batch them, run the model, correct the electron
count. The ASE calculator, ``ase-density predict``, ``analyze``, ``evaluate`` and the study all
predict through :func:`predict_frames`.

    from nequip_plugin.inference import load_density_model
    model, basis = load_density_model("model.nequip.zip")
    for frame in predict_frames(model, ase.io.iread("md.traj"), batch_size=16, basis=basis):
        props = density_properties(frame.atoms, frame.coefficients, basis, frame.uncorrected)
"""

from __future__ import annotations

from typing import Iterable, NamedTuple, Optional

import numpy as np
from ase import Atoms

from . import density
from .errors import OptionError, StructureError
from .validation import validate_atoms


class PredictedFrame(NamedTuple):
    """One result of :func:`predict_frames`: ``label`` (the label given with the frame, else its
    position in the stream), ``atoms``, ``coefficients`` (n_atoms, width; a.u., e3nn layout,
    NaN-padded; electron-count corrected unless ``correct=False``), ``uncorrected`` (the raw model
    output) and ``error`` (why the frame was skipped; then both coefficient arrays are None)."""

    label: object
    atoms: Atoms
    coefficients: Optional[np.ndarray]
    uncorrected: Optional[np.ndarray]
    error: Optional[str] = None


def check_batch_size(batch_size) -> int:
    """``batch_size`` as an int >= 1, else :class:`OptionError`."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise OptionError(f"batch size must be an integer >= 1, got {batch_size!r}")
    return int(batch_size)


def _name(label):
    return f"frame {label}" if isinstance(label, (int, np.integer)) else label


def predict_frames(model, frames: Iterable, batch_size: int = 16, basis=None, correct: bool = True,
                   skip_invalid: bool = False, validation: Optional[dict] = None):
    """Yield a :class:`PredictedFrame` per structure of ``frames``, in order, predicting
    ``batch_size`` valid structures per forward pass of ``model`` (a loaded density model,
    :func:`nequip_plugin.inference.load_density_model`).

    ``frames``: ``ase.Atoms``, or ``(label, Atoms)`` pairs (the label names the frame in errors).
    ``basis``: the model's auxiliary basis (default: from its metadata). ``correct``: apply
    :func:`ase_density.density.correct_electron_count`. ``validation``: extra keyword arguments
    for :func:`ase_density.validation.validate_atoms`. An invalid structure raises
    :class:`~ase_density.errors.StructureError` naming it, after the valid structures before it
    were yielded; with ``skip_invalid`` it is yielded with ``error`` set instead. An error while
    reading ``frames`` is re-raised after the structures before it were yielded."""
    from nequip_plugin import inference

    batch_size = check_batch_size(batch_size)
    basis = basis if basis is not None else inference.aux_basis_from_metadata(model.metadata)
    elements = tuple(s for s in model.metadata["type_names"].split() if s in basis.elements)
    directions = density.correction_directions(basis) if correct else None
    pending, n_valid = [], 0

    def flush():
        valid = [item for item in pending if item[2] is None]
        raw = inference.predict_coefficients_batch(model, [atoms for _, atoms, _ in valid]) if valid else []
        out = iter(raw)
        for label, atoms, error in pending:
            if error is not None:
                yield PredictedFrame(label, atoms, None, None, error)
                continue
            c = next(out)
            corrected = density.correct_electron_count(atoms, c, basis, directions=directions) if correct else c
            yield PredictedFrame(label, atoms, corrected, c)
        pending.clear()

    iterator = iter(frames)
    position = 0
    while True:
        try:
            item = next(iterator)
        except StopIteration:
            break
        except Exception:  # unreadable input: keep what came before it
            yield from flush()
            raise
        label, atoms = (position, item) if isinstance(item, Atoms) else item
        position += 1
        try:
            validate_atoms(atoms, elements=elements, label=_name(label), **(validation or {}))
        except StructureError as exc:
            if not skip_invalid:
                yield from flush()
                raise
            pending.append((label, atoms, str(exc)))
            continue
        pending.append((label, atoms, None))
        n_valid += 1
        if n_valid % batch_size == 0:
            yield from flush()
    yield from flush()
