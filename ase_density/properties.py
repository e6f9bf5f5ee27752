"""The per-structure properties of a density, defined once.

:data:`PROPERTIES` is the schema (level, shape, dtype, unit, meaning) and
:func:`density_properties` computes them. Every consumer takes both from here: the ASE
calculator's results, the prediction and trajectory-analysis HDF5 files (columns per level:
``atoms/``, the per-structure group, ``waters/``), ``evaluate`` and the study. Adding a property
is one entry in :data:`PROPERTIES` and one line in :func:`density_properties`
(docs/architecture.md shows an example).

Levels: ``"atom"`` (one row per atom), ``"structure"`` (one value per structure), ``"water"``
(one row per water molecule found by O–H connectivity, :func:`ase_density.validation.find_waters`;
none when the structure is not made of whole waters).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import density
from .errors import StructureError
from .h5io import Column
from .validation import find_waters


class Property(NamedTuple):
    """One entry of :data:`PROPERTIES`: ``level`` (atom, structure or water), trailing ``shape``,
    ``dtype``, ``unit``, ``column`` (its dataset name in its level's HDF5 group), ``fill`` (the
    HDF5 fill value) and ``doc``."""

    level: str
    shape: tuple
    dtype: str
    unit: str
    column: str
    fill: object
    doc: str


PROPERTIES = {
    "charges": Property("atom", (), "f8", "e", "charges", np.nan,
                        "Z minus the electrons carried by each atom's basis functions"),
    "dipole": Property("structure", (3,), "f8", "e*Angstrom", "dipole", np.nan,
                       "about the centre of nuclear charge (equal to ASE's dipole about the origin when neutral)"),
    "charge": Property("structure", (), "f8", "e", "charge", np.nan, "net charge of the density"),
    "n_electrons": Property("structure", (), "f8", "electrons", "n_electrons", np.nan,
                            "∫rho dr of the model output before the electron-count correction"),
    "n_electrons_expected": Property("structure", (), "i4", "electrons", "n_electrons_expected", 0,
                                     "Σ Z minus the total initial charge"),
    "water_atoms": Property("water", (3,), "i4", "", "atoms", -1, "O, H, H indices of each water within the structure"),
    "water_charges": Property("water", (), "f8", "e", "charge", np.nan, "net charge of each water"),
    "water_dipoles": Property("water", (3,), "f8", "e*Angstrom", "dipole", np.nan,
                              "dipole of each water about its own centre of nuclear charge"),
}
LEVELS = ("atom", "structure", "water")


def density_properties(atoms, coefficients, basis, uncorrected=None) -> dict:
    """Every property of :data:`PROPERTIES` for ``atoms`` (Å) with density ``coefficients``
    (n_atoms, width; a.u., e3nn layout). ``uncorrected``: the model output before the
    electron-count correction, for ``n_electrons`` (default: ``coefficients``)."""
    try:
        waters = find_waters(atoms)
    except StructureError:
        waters = np.zeros((0, 3), dtype=int)
    charges = density.atomic_charges(atoms, coefficients, basis)
    return {
        "charges": charges,
        "dipole": density.dipole_moment(atoms, coefficients, basis, origin=density.centre_of_nuclear_charge(atoms)),
        "charge": float(charges.sum()),
        "n_electrons": density.electron_count(atoms, coefficients if uncorrected is None else uncorrected, basis),
        "n_electrons_expected": density.expected_electron_count(atoms),
        "water_atoms": waters,
        "water_charges": np.array([charges[w].sum() for w in waters]),
        "water_dipoles": density.molecular_dipoles(atoms, coefficients, basis, waters),
    }


def columns(level: str) -> dict:
    """{HDF5 column: :class:`ase_density.h5io.Column`} of the properties of ``level``."""
    if level not in LEVELS:
        raise ValueError(f"unknown property level {level!r}: use one of {LEVELS}")
    return {p.column: Column(p.shape, p.dtype, p.fill, p.unit) for p in PROPERTIES.values() if p.level == level}


def rows(properties: dict, level: str) -> dict:
    """{HDF5 column: values} of the ``level`` properties in ``properties`` (a
    :func:`density_properties` result)."""
    return {p.column: properties[name] for name, p in PROPERTIES.items() if p.level == level}
