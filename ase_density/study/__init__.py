"""The lmax_h x lmax_o study: how the angular momentum of the hidden features (lmax_h) and of the
predicted coefficients (lmax_o) shape learning curves of density models.

``python -m ase_density.study run <study-dir> --train-data pool.h5 --test-data test.h5`` trains the
grid lmax_h x lmax_o x training-set sizes x repeats through ``nequip-train`` (one frozen config
template, fixed seeds, resumable), evaluates every run on the test set per output l, and writes
tables and figures; ``--quick`` runs a reduced grid in minutes. See ``docs/study.md``.
"""

from .grid import FULL_GRID, QUICK_GRID, Run, Settings, StudyError, grid_runs
from .runner import report, run_study

__all__ = ["FULL_GRID", "QUICK_GRID", "Run", "Settings", "StudyError", "grid_runs", "report", "run_study"]
