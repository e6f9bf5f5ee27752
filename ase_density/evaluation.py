"""Accuracy of a density model on a labelled reference file (``ase-density evaluate``).

Per structure: eps_rho (%) of the predicted density against the fitted reference and, where the
file stores the DFT density matrix, against the full DFT density (PySCF grid); the dipole error
(Debye) against the DFT dipole and against the fitted reference's dipole, and its signed component
along the DFT dipole (positive: the predicted dipole is too long, a bias that averages out
only if the errors are random); per-atom charge errors
(e) against the fitted reference's charges; the electrostatic errors of
:func:`ase_density.electrostatics.electrostatic_errors` (per-water net charges, and the dipole
error split into molecular net charges, charge flow within molecules and atomic l = 1 moments);
the electron-count error of the uncorrected model output; where the DFT density is stored,
Hirshfeld charge errors against it (:func:`ase_density.electrostatics.hirshfeld_errors`: a
partition that, unlike the basis functions' one, does not depend on how the density is expanded).
Over the file: means, and the RMSE of
the (corrected) coefficients per element and l.
"""

from __future__ import annotations

import datetime

import numpy as np
from ase.units import Debye

from .electrostatics import ELECTROSTATIC_FIELDS, HIRSHFELD_FIELDS, electrostatic_errors, hirshfeld_errors
from .errors import ModelError
from .h5io import file_sha256, portable_path, versions
from .prediction import predict_frames
from .properties import density_properties

#: per-structure metrics averaged in the summary (None values, e.g. no density matrix, are skipped)
SUMMARY_FIELDS = ("eps_fit", "eps_full", "reference_fit_error", "dipole_error", "dipole_error_along_reference",
                  "dipole_error_vs_fit",
                  "charge_mae", "charge_max_error", "n_electrons_error") + tuple(
    name for name in ELECTROSTATIC_FIELDS if name != "charge_mae") + HIRSHFELD_FIELDS


def check_same_basis(model_basis, data_basis):
    """Raise :class:`~ase_density.errors.ModelError` unless the model predicts the data file's
    coefficient layout."""
    for sym in data_basis.symbols:
        if sym not in model_basis.elements or \
                model_basis.element(sym).to_pyscf() != data_basis.element(sym).to_pyscf():
            raise ModelError(f"the model predicts aux basis {model_basis.name!r}, the data file is fitted in "
                             f"{data_basis.name!r} (element {sym} differs): coefficients are not comparable")


def evaluate_structure(atoms, predicted, basis, density_matrix=None, orbital_basis=None, grid_level: int = 3) -> dict:
    """Metrics of one prediction (``predicted``: a :class:`ase_density.prediction.PredictedFrame`)
    against a reference ``atoms`` from ``ReferenceData`` (fitted coefficients in
    ``arrays['density_coefficients']``, DFT dipole in ``info['dipole']``); units in the module
    docstring. ``density_matrix`` (AO, in ``orbital_basis``) adds eps against the full density."""
    from . import density

    ref = atoms.arrays["density_coefficients"]
    grid = density.densities_on_grid(atoms, predicted.coefficients, basis, reference_coefficients=ref,
                                     density_matrix=density_matrix, orbital_basis=orbital_basis,
                                     grid_level=grid_level, by_l=True)
    eps = density.grid_errors(grid)
    pred = density_properties(atoms, predicted.coefficients, basis, predicted.uncorrected)
    fit = density_properties(atoms, ref, basis)
    mu_pred, mu_dft, dq = pred["dipole"] / Debye, atoms.info["dipole"] / Debye, pred["charges"] - fit["charges"]
    floor = atoms.info.get("fit_error")
    return {
        "key": atoms.info.get("key"), "n_atoms": len(atoms), "eps_fit": eps["fit"], "eps_full": eps.get("full"),
        "eps_fit_by_l": eps["fit_by_l"],
        "reference_fit_error": floor if floor is not None and np.isfinite(floor) else None,
        "dipole_error": float(np.linalg.norm(mu_pred - mu_dft)),
        "dipole_error_along_reference": float((mu_pred - mu_dft) @ mu_dft / np.linalg.norm(mu_dft))
        if np.linalg.norm(mu_dft) > 0 else None,
        "dipole_error_vs_fit": float(np.linalg.norm(mu_pred - fit["dipole"] / Debye)),
        "charge_max_error": float(np.max(np.abs(dq))),
        "n_electrons_error": pred["n_electrons"] - pred["n_electrons_expected"],
        **electrostatic_errors(atoms, predicted.coefficients, ref, basis),
        **hirshfeld_errors(atoms, grid),
    }


def _coefficient_squares(atoms, pred, ref, basis, sums):
    """Accumulate {symbol: {l: [sum of squared errors, count]}}."""
    symbols = atoms.get_chemical_symbols()
    for sym, ls, p, r in zip(symbols, basis.function_l(symbols), pred, ref):
        for l, e in zip(ls[ls >= 0], (p[ls >= 0] - r[ls >= 0]) ** 2):
            acc = sums.setdefault(sym, {}).setdefault(int(l), [0.0, 0])
            acc[0] += e
            acc[1] += 1


def evaluate(calc, data, indices=None, grid_level: int = 3, batch_size: int = 16, full_density: bool = True,
             progress: bool = False) -> dict:
    """Evaluate ``calc`` (a ``DensityCalculator``) on ``data`` (a ``ReferenceData``), structures
    ``indices`` (default all), predicting in batches of ``batch_size``. Returns a JSON-ready dict:
    ``structures`` (per structure), ``mean`` (over structures), ``coefficient_rmse``
    ({element: {l: a.u.}}) and provenance (model and data paths with SHA-256, grid level, versions)."""
    from tqdm import tqdm

    check_same_basis(calc.basis, data.basis)
    indices = list(range(len(data))) if indices is None else list(indices)
    rows, sums = [], {}
    by_key = {data.keys[i]: i for i in indices}
    with tqdm(total=len(indices), desc="evaluating", unit="structure", disable=not progress) as bar:
        for frame in predict_frames(calc.model, ((data.keys[i], data[i]) for i in indices), batch_size, basis=calc.basis):
            i, atoms = by_key[frame.label], frame.atoms
            dm = data.density_matrix(i) if full_density and data.has_density_matrix(i) else None
            rows.append(evaluate_structure(atoms, frame, calc.basis, dm, data.settings.get("basis"), grid_level))
            _coefficient_squares(atoms, frame.coefficients, atoms.arrays["density_coefficients"], calc.basis, sums)
            bar.update()
    mean = {}
    for name in SUMMARY_FIELDS:
        values = [abs(r[name]) if name == "n_electrons_error" else r[name] for r in rows if r[name] is not None]
        mean[name] = float(np.mean(values)) if values else None
    mean["eps_fit_by_l"] = np.mean([r["eps_fit_by_l"] for r in rows], axis=0).tolist() if rows else None
    return {
        "model": portable_path(calc.model_path), "model_sha256": file_sha256(calc.model_path),
        "data": portable_path(data.path), "data_sha256": file_sha256(data.path),
        "reference_settings": data.settings, "aux_basis": calc.basis.name, "grid_level": grid_level,
        "n_structures": len(rows), "n_with_density_matrix": sum(r["eps_full"] is not None for r in rows),
        "units": {"eps": "percent of electrons", "dipole": "Debye", "charges": "e", "coefficients": "atomic units",
                  "n_electrons_error": "electrons, uncorrected model output (mean of absolute values)"},
        "mean": mean,
        "coefficient_rmse": {sym: {str(l): float(np.sqrt(s / n)) for l, (s, n) in sorted(per_l.items())}
                             for sym, per_l in sums.items()},
        "structures": rows,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": versions(),
    }


def format_report(report: dict) -> str:
    """The evaluation as a plain-text table."""
    m = report["mean"]

    def fmt(x, spec):
        return format("n/a", ">" + spec.split(".")[0].lstrip("+")) if x is None else format(x, spec)

    lines = [f"model: {report['model']}", f"data:  {report['data']} ({report['n_structures']} structures, "
             f"{report['n_with_density_matrix']} with DFT density matrices)", "",
             f"{'metric (mean over structures)':<44}{'value':>12}",
             f"{'eps_rho vs fitted reference (%)':<44}{fmt(m['eps_fit'], '12.3f')}",
             f"{'eps_rho vs full DFT density (%)':<44}{fmt(m['eps_full'], '12.3f')}",
             f"{'  (floor: reference fit vs full DFT, %)':<44}{fmt(m['reference_fit_error'], '12.3f')}",
             f"{'dipole error vs DFT (D)':<44}{fmt(m['dipole_error'], '12.4f')}",
             f"{'  signed, along the DFT dipole (D)':<44}{fmt(m['dipole_error_along_reference'], '+12.4f')}",
             f"{'dipole error vs fitted reference (D)':<44}{fmt(m['dipole_error_vs_fit'], '12.4f')}",
             f"{'charge MAE (e)':<44}{fmt(m['charge_mae'], '12.4f')}",
             f"{'charge max error (e)':<44}{fmt(m['charge_max_error'], '12.4f')}",
             f"{'water net-charge MAE (e)':<44}{fmt(m['water_charge_mae'], '12.4f')}",
             f"{'  (reference mean |water net charge|, e)':<44}{fmt(m['water_charge_reference_mean_abs'], '12.4f')}",
             f"{'dipole error parts (D): molecular net charges':<44}{fmt(m['dipole_error_net_charges'], '12.4f')}",
             f"{'  charge flow within molecules':<44}{fmt(m['dipole_error_charge_flow'], '12.4f')}",
             f"{'  atomic l = 1 moments':<44}{fmt(m['dipole_error_atomic_moments'], '12.4f')}",
             f"{'Hirshfeld charge MAE vs DFT (e)':<44}{fmt(m['hirshfeld_charge_mae'], '12.4f')}",
             f"{'  (floor: reference fit vs DFT, e)':<44}{fmt(m['hirshfeld_charge_mae_fit'], '12.4f')}",
             f"{'Hirshfeld water net-charge MAE vs DFT (e)':<44}{fmt(m['hirshfeld_water_charge_mae'], '12.4f')}",
             f"{'  (floor: reference fit vs DFT, e)':<44}{fmt(m['hirshfeld_water_charge_mae_fit'], '12.4f')}",
             f"{'  (DFT mean |water Hirshfeld charge|, e)':<44}"
             f"{fmt(m['hirshfeld_water_charge_reference_mean_abs'], '12.4f')}",
             f"{'|N_e error| before correction (electrons)':<44}{fmt(m['n_electrons_error'], '12.2e')}"]
    if m.get("eps_fit_by_l"):
        lines.append(f"{'eps_rho vs fit of each l channel alone (%)':<44}"
                     + " ".join(f"l{l} {e:.3f}" for l, e in enumerate(m["eps_fit_by_l"])))
    lines += ["", "coefficient RMSE (a.u.) per element and l"]
    rmse = report["coefficient_rmse"]
    ls = sorted({int(l) for per_l in rmse.values() for l in per_l})
    lines.append(f"{'element':<8}" + "".join(f"{'l=' + str(l):>11}" for l in ls))
    for sym, per_l in rmse.items():
        lines.append(f"{sym:<8}" + "".join(fmt(per_l.get(str(l)), "11.2e").rjust(11) for l in ls))
    return "\n".join(lines)
