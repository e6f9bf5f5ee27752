"""``DensityCalculator``: predicted electron densities as an ASE calculator.

    from ase.build import molecule
    from ase_density import DensityCalculator

    atoms = molecule("H2O")
    atoms.calc = DensityCalculator()             # the model shipped in ase_density/models/
    atoms.get_dipole_moment()                    # e·Å, from the predicted density
    atoms.get_charges()                          # e, per atom

Properties (ASE units; coefficients in atomic units, e3nn layout, NaN-padded):

- ``density_coefficients``: (n_atoms, width) coefficients after the electron-count correction
  (:func:`ase_density.density.correct_electron_count`)
- ``density_coefficients_uncorrected``: the raw model output
- every property of :data:`ase_density.properties.PROPERTIES`, among them ``charges`` (e, per
  atom: Z minus the electrons carried by its functions; sums to the total charge) and ``dipole``
  (e·Å; origin-independent: the corrected density is neutral)
- ``hirshfeld_charges``: (n_atoms,) e, the Hirshfeld partition of the density
  (:func:`ase_density.electrostatics.density_hirshfeld_charges` on a PySCF grid of
  ``hirshfeld_grid_level``): independent of how the density is expanded, unlike ``charges``;
  computed only when asked for (about a second for 20 waters)
- ``energy``, ``free_energy``, ``forces``, ``stress``: only with ``base=`` (delegated)

The calculator is a thin adapter: it predicts through :func:`ase_density.prediction.predict_frames`
and computes properties with :func:`ase_density.properties.density_properties`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes

from . import density
from .electrostatics import density_hirshfeld_charges
from .errors import ModelError
from .prediction import predict_frames
from .properties import PROPERTIES, density_properties
from .validation import check_grid_level

#: the model shipped with the package (its model card: ``default.json`` beside it)
DEFAULT_MODEL = Path(__file__).parent / "models" / "default.nequip.zip"

DENSITY_PROPERTIES = ["density_coefficients", "density_coefficients_uncorrected", *PROPERTIES, "hirshfeld_charges"]
#: properties taken from ``base`` when it implements them
BASE_PROPERTIES = ("energy", "free_energy", "energies", "forces", "stress", "stresses")
_DENSITY_UNITS = ("e/A^3", "e/Bohr^3")


def _load_model(path, device, trust_model=False):
    from nequip_plugin.inference import load_density_model

    path = Path(path)
    if not path.exists():
        if path == DEFAULT_MODEL:
            raise ModelError(f"the default density model is not installed ({DEFAULT_MODEL} is missing); "
                             "pass a trained model: DensityCalculator(model='path/to/model.nequip.zip')")
        raise ModelError(f"model file {path} does not exist")
    try:
        return load_density_model(str(path), device, trust_model=trust_model, default_model=DEFAULT_MODEL)
    except ModelError:  # refused by ase_density.trust: the message names the file
        raise
    except ValueError as exc:  # no aux basis in the metadata: not a density model
        raise ModelError(f"{path}: {exc}") from exc


def check_model_layout(model, basis) -> None:
    """Raise :class:`ModelError` unless ``model`` predicts ``basis``'s layout: every element it
    knows is in the basis, and its output has ``basis.width`` columns (one probe forward pass)."""
    from ase import Atoms

    from nequip_plugin.inference import predict_coefficients

    type_names = model.metadata["type_names"].split()
    missing = sorted(set(type_names) - set(basis.symbols))
    if missing:
        raise ModelError(f"the model predicts elements {missing} that its aux basis {basis.name!r} does not cover")
    probe = Atoms(type_names, positions=[[1.2 * i, 0.0, 0.0] for i in range(len(type_names))])
    try:
        width = predict_coefficients(model, probe).shape[1]
    except ValueError as exc:  # the NaN padding mask did not broadcast onto the output
        raise ModelError(f"model output does not match the layout of aux basis {basis.name!r}: {exc}") from exc
    if width != basis.width:
        raise ModelError(f"model outputs {width} coefficients per atom, its aux basis {basis.name!r} needs {basis.width}")


class DensityCalculator(Calculator):
    """Electron densities, charges and dipoles from a trained density model.

    Args:
        model: a packaged (``.nequip.zip``) or compiled (``.nequip.pt2``) density model; default:
            the model shipped in ``ase_density/models/default.nequip.zip``
        device: torch device, ``"cpu"`` or ``"cuda"``
        base: any ASE calculator that supplies ``energy``/``forces``/``stress`` (e.g. TIP3P,
            a NequIP potential, DFT), so that dynamics carry densities along
        trust_model: load a model file other than the shipped one (loading runs code from the
            file; see :mod:`ase_density.trust` for the alternative, an allow-list of hashes)
        allow_non_water: predict for structures that are not water clusters (H2, O2, OH, ...),
            outside the models' training domain (refused by default)
        hirshfeld_grid_level: PySCF grid level (0–9) of the ``hirshfeld_charges`` integration
    """

    name = "density"
    implemented_properties = DENSITY_PROPERTIES  # per instance: plus what ``base`` implements

    def __init__(self, model=None, device: str = "cpu", base=None, trust_model: bool = False,
                 allow_non_water: bool = False, hirshfeld_grid_level: int = 3, **kwargs):
        hirshfeld_grid_level = check_grid_level(hirshfeld_grid_level, "hirshfeld_grid_level")
        super().__init__(**kwargs)
        path = Path(model) if model is not None else DEFAULT_MODEL
        self.model, self.basis = _load_model(path, device, trust_model)
        check_model_layout(self.model, self.basis)
        self.model_path = str(path)
        self.device = device
        self.elements = tuple(self.model.metadata["type_names"].split())
        self.base = base
        self.allow_non_water = allow_non_water
        self.hirshfeld_grid_level = hirshfeld_grid_level
        self.parameters.update(model=str(path), device=device, allow_non_water=allow_non_water,
                               hirshfeld_grid_level=hirshfeld_grid_level,
                               base=getattr(base, "name", type(base).__name__) if base is not None else None)
        self.implemented_properties = DENSITY_PROPERTIES + [
            p for p in BASE_PROPERTIES if base is not None and p in base.implemented_properties]

    # --- the ASE contract ---
    def calculate(self, atoms=None, properties=("dipole",), system_changes=all_changes):
        """Predict the density of ``atoms`` (once per geometry), its Hirshfeld charges when asked
        for, and fetch the requested base properties from ``base``."""
        super().calculate(atoms, properties, system_changes)
        if "density_coefficients" not in self.results:
            frame = next(predict_frames(self.model, [(None, self.atoms)], batch_size=1, basis=self.basis,
                                         validation={"allow_non_water": self.allow_non_water}))
            self.results.update(density_coefficients=frame.coefficients, density_coefficients_uncorrected=frame.uncorrected,
                                **density_properties(self.atoms, frame.coefficients, self.basis, frame.uncorrected))
        if "hirshfeld_charges" in properties and "hirshfeld_charges" not in self.results:
            self.results["hirshfeld_charges"] = density_hirshfeld_charges(
                self.atoms, self.results["density_coefficients"], self.basis, self.hirshfeld_grid_level)
        for name in properties:
            if name in BASE_PROPERTIES:
                if self.base is None:
                    raise PropertyNotImplementedError(f"{name}: DensityCalculator predicts densities only; "
                                                      "pass base=<an ASE calculator> for energies and forces")
                self.results[name] = self.base.get_property(name, self.atoms)

    # --- density helpers ---
    def get_density_coefficients(self, atoms=None, layout: str = "e3nn", corrected: bool = True) -> np.ndarray:
        """Coefficients (a.u.): ``layout="e3nn"`` gives (n_atoms, width), NaN-padded;
        ``layout="pyscf"`` the flat vector for ``basis.aux_mole(symbols, positions)``."""
        name = "density_coefficients" if corrected else "density_coefficients_uncorrected"
        c = self.get_property(name, atoms)
        if layout == "e3nn":
            return c
        if layout == "pyscf":
            return self.basis.e3nn_to_pyscf((atoms if atoms is not None else self.atoms).get_chemical_symbols(), c)
        raise ValueError(f"unknown layout {layout!r}: use 'e3nn' or 'pyscf'")

    def get_electron_count(self, atoms=None, corrected: bool = True) -> float:
        """∫rho dr (electrons), analytic; exact after the correction."""
        c = self.get_density_coefficients(atoms, corrected=corrected)
        return density.electron_count(atoms if atoms is not None else self.atoms, c, self.basis)

    def get_density(self, points, atoms=None, unit: str = "e/A^3") -> np.ndarray:
        """Electron density at ``points`` (Å, shape (n, 3)), in ``unit`` ``"e/A^3"`` (ASE's
        convention) or ``"e/Bohr^3"``."""
        from ase.units import Bohr

        if unit not in _DENSITY_UNITS:
            raise ValueError(f"unknown density unit {unit!r}: use 'e/A^3' or 'e/Bohr^3'")
        c = self.get_density_coefficients(atoms)
        rho = density.density_on_points(atoms if atoms is not None else self.atoms, c, self.basis, points)
        return rho / Bohr**3 if unit == "e/A^3" else rho

    def write_cube(self, path, atoms=None, spacing: float = 0.2, margin: float = 3.0) -> np.ndarray:
        """Write the density to a Gaussian cube file (values e/Bohr^3, grid ``spacing`` Å, box
        ``margin`` Å beyond the atoms); returns the grid values."""
        c = self.get_density_coefficients(atoms)
        return density.write_cube(path, atoms if atoms is not None else self.atoms, c, self.basis, spacing=spacing, margin=margin)
