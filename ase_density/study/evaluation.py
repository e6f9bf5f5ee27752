"""Test-set errors of finished runs, per output angular momentum l, cached as ``eval.json``.

For each run the best checkpoint predicts the whole test set; reported are

- ``coeff_rmse[element][l]``: RMSE of the coefficients of that element's functions of angular
  momentum l over all test atoms (a.u.);
- ``eps_total``: eps_rho (%) against the fitted reference coefficients, mean over test structures;
- ``eps_l[l]``: the error of the l-channel alone, 100 ∫|rho_l - rho_l,ref| / ∫rho_ref (%), mean over
  structures (for l > lmax_o the model predicts zero, so this is the size of the reference's
  l-channel).

The grid integrals dominate the cost (evaluating the basis on ~10^4 points per atom), so several
runs are evaluated together, one grid per test structure
(:func:`ase_density.density.density_error_by_l`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
from tqdm import tqdm

from ase_density.dataset import ReferenceData
from ase_density.density import density_error_by_l
from ase_density.h5io import portable_path
from ase_density.prediction import predict_frames

from .grid import Run
from .training import CHECKPOINT

EVAL_FILE = "eval.json"
#: structures per forward pass when predicting the test set
PREDICT_BATCH = 8
#: runs whose densities are evaluated on one grid pass (memory: points x (1 + 6 x runs) doubles)
RUNS_PER_PASS = 40


def is_evaluated(directory: Path) -> bool:
    return (directory / EVAL_FILE).exists()


def _predict(checkpoint: Path, frames: Sequence) -> tuple:
    """(coefficients per frame, number of model parameters) of a checkpoint on ``frames``."""
    from nequip_plugin.inference import load_density_model

    model, basis = load_density_model(str(checkpoint), trust_model=True)  # trained by this study into its run directory
    predictions = [f.coefficients for f in predict_frames(model, frames, PREDICT_BATCH, basis=basis, correct=False)]
    return predictions, sum(p.numel() for p in model.parameters())


def coefficient_rmse_by_l(frames: Sequence, predictions: Sequence[np.ndarray], basis) -> Dict[str, Dict[int, float]]:
    """{element: {l: RMSE (a.u.) over all its functions of angular momentum l in ``frames``}}."""
    squares: Dict[str, Dict[int, List[float]]] = {}
    for atoms, predicted in zip(frames, predictions):
        delta = predicted - atoms.arrays["density_coefficients"]
        symbols = atoms.get_chemical_symbols()
        for i, (symbol, ls) in enumerate(zip(symbols, basis.function_l(symbols))):
            per_l = squares.setdefault(symbol, {})
            for l in np.unique(ls[ls >= 0]):
                per_l.setdefault(int(l), []).extend(delta[i][ls == l] ** 2)
    return {symbol: {l: float(np.sqrt(np.mean(v))) for l, v in sorted(per_l.items())}
            for symbol, per_l in sorted(squares.items())}


def evaluate(runs: Sequence[Run], directories: Sequence[Path], test_data: str, grid_level: int) -> None:
    """Write ``eval.json`` into each run directory; up to :data:`RUNS_PER_PASS` runs share each
    structure's grid."""
    for start in range(0, len(runs), RUNS_PER_PASS):
        _evaluate_together(runs[start:start + RUNS_PER_PASS], directories[start:start + RUNS_PER_PASS],
                           test_data, grid_level)


def _evaluate_together(runs, directories, test_data, grid_level):
    test = ReferenceData(test_data)
    frames = list(test)
    if not frames:
        raise ValueError(f"{test_data}: the test set is empty")
    predictions, n_parameters = [], []
    for directory in tqdm(directories, desc="predict test set", unit="run", leave=False):
        coefficients, count = _predict(directory / CHECKPOINT, frames)
        predictions.append(coefficients)
        n_parameters.append(count)
    # eps[k, j, :] = (total, l = 0, 1, ...) of run k on structure j
    eps = np.stack([density_error_by_l(atoms, [p[j] for p in predictions], atoms.arrays["density_coefficients"],
                                       test.basis, grid_level)
                    for j, atoms in enumerate(tqdm(frames, desc="eps_rho on grids", unit="structure", leave=False))],
                   axis=1)
    for k, (run, directory) in enumerate(zip(runs, directories)):
        result = {
            "run": run.name, "lmax_h": run.lmax_h, "lmax_o": run.lmax_o, "n_train": run.n_train, "seed": run.seed,
            "n_parameters": n_parameters[k], "test_data": portable_path(test_data), "n_test": len(frames),
            "grid_level": grid_level,
            "eps_total": float(eps[k, :, 0].mean()),
            "eps_l": {l: float(eps[k, :, 1 + l].mean()) for l in range(eps.shape[2] - 1)},
            "coeff_rmse": coefficient_rmse_by_l(frames, predictions[k], test.basis),
            "eps_per_structure": {"keys": test.keys, "total_and_l": np.round(eps[k], 6).tolist()},
        }
        (directory / EVAL_FILE).write_text(json.dumps(result, indent=1) + "\n")


def load_evaluation(directory: Path) -> Dict:
    """A run's ``eval.json`` (JSON turns the l keys into strings: they come back as ints)."""
    result = json.loads((directory / EVAL_FILE).read_text())
    result["eps_l"] = {int(l): v for l, v in result["eps_l"].items()}
    result["coeff_rmse"] = {el: {int(l): v for l, v in per_l.items()} for el, per_l in result["coeff_rmse"].items()}
    return result
