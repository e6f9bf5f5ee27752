"""Running the whole study: train what is missing, evaluate what is new, rewrite tables and plots.

Runs are processed size by size (smallest training sets first); after each size the new runs are
evaluated and the summary files and figures are rewritten, so a long study can be committed as it
goes and killed at any time: a rerun of the same command skips every finished run and every
cached evaluation.
"""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Dict, List, Sequence

from tqdm import tqdm

from ase_density.dataset import ReferenceData

from . import plots
from .evaluation import evaluate, is_evaluated, load_evaluation
from .grid import Run, Settings, StudyError, frozen_settings, load_or_freeze_settings
from .summary import write_emergence, write_summary
from .training import TEMPLATE, TrainingError, freeze_template, is_trained, run_dir, train


def check_data(settings: Settings, runs: Sequence[Run]) -> None:
    """Refuse a grid whose largest training set plus the validation set exceeds the pool."""
    pool = len(ReferenceData(settings.train_data))
    largest = max(run.n_train for run in runs)
    if largest + settings.n_val > pool:
        raise StudyError(f"{settings.train_data} holds {pool} structures: too few for n_train = {largest} "
                         f"plus n_val = {settings.n_val} validation structures")
    if len(ReferenceData(settings.test_data)) == 0:
        raise StudyError(f"{settings.test_data}: the test set is empty")


def _train_group(study_dir: Path, settings: Settings, group: Sequence[Run], jobs: int, bar) -> Dict[str, List]:
    """Train the unfinished runs of ``group`` (``jobs`` at a time); {"trained": runs, "failed": messages}."""
    pending = [run for run in group if not is_trained(study_dir, run)]
    bar.update(len(group) - len(pending))
    out: Dict[str, List] = {"trained": [], "failed": []}
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(train, study_dir, settings, run): run for run in pending}
        for future in as_completed(futures):
            try:
                future.result()
                out["trained"].append(futures[future])
            except TrainingError as exc:
                out["failed"].append(str(exc))
                tqdm.write(str(exc))
            bar.update(1)
    return out


def run_study(study_dir: Path, settings: Settings, runs: Sequence[Run], jobs: int = 1, train_missing: bool = True,
              evaluate_new: bool = True, template: Path = TEMPLATE) -> Dict[str, List]:
    """Train, evaluate and report every run of ``runs`` that has not been done before
    (``train_missing=False``: evaluate and report only the runs trained before;
    ``evaluate_new=False``: train only, all sizes in one pool of ``jobs`` workers, e.g. on a GPU
    machine, and evaluate later elsewhere).

    Returns {"trained": runs trained now, "evaluated": runs evaluated now, "failed": error
    messages}; raises :class:`StudyError` after the report if any run failed (rerun to retry)."""
    study_dir = Path(study_dir)
    if not runs:
        raise StudyError("the grid is empty")
    if jobs < 1:
        raise StudyError(f"`jobs` must be >= 1, got {jobs}")
    if not (train_missing or evaluate_new):
        raise StudyError("nothing to do: neither training nor evaluation asked for")
    settings = load_or_freeze_settings(study_dir, settings)
    check_data(settings, runs)
    freeze_template(study_dir, template)
    done: Dict[str, List] = {"trained": [], "evaluated": [], "failed": []}
    # train and evaluate: size by size, so that evaluated results arrive early. Train only: one pool
    # for all sizes, the largest (most expensive, most telling) first, so that a time-limited
    # session finishes those. Evaluate only: all runs in one group, so they share the grid passes.
    if train_missing and evaluate_new:
        groups = itertools.groupby(sorted(runs, key=lambda r: r.n_train), key=lambda r: r.n_train)
    else:
        groups = [(max(run.n_train for run in runs), sorted(runs, key=lambda r: -r.n_train))]
    with tqdm(total=len(runs), desc="study runs", unit="run") as bar:
        for n_train, group in groups:
            bar.set_postfix(n_train=n_train)
            group = list(group)
            if train_missing:
                outcome = _train_group(study_dir, settings, group, jobs, bar)
                done["trained"] += outcome["trained"]
                done["failed"] += outcome["failed"]
            else:
                bar.update(len(group))
            if evaluate_new:
                new = [run for run in group if is_trained(study_dir, run) and not is_evaluated(run_dir(study_dir, run))]
                evaluate(new, [run_dir(study_dir, run) for run in new], settings.test_data, settings.grid_level)
                done["evaluated"] += new
                report(study_dir)
    if done["failed"]:
        raise StudyError(f"{len(done['failed'])} run(s) failed (rerun the same command to retry):\n\n"
                         + "\n\n".join(done["failed"]))
    return done


def report(study_dir: Path) -> Dict:
    """Summary tables and figures from every evaluated run of the study; returns the summary."""
    study_dir = Path(study_dir)
    frozen_settings(study_dir)  # refuse a directory that is not a study
    directories = sorted(d for d in (study_dir / "runs").glob("*") if is_evaluated(d))
    results = [load_evaluation(d) for d in directories]
    summary = write_summary(study_dir, results)
    if not results:
        return summary
    figures = study_dir / "plots"
    figures.mkdir(exist_ok=True)
    plots.learning_curves(summary["means"], figures / "learning_curves.png")
    plots.saturation(summary["means"], figures / "saturation.png")
    # feature norms: the first seed of every (lmax_h, lmax_o) at the largest training-set size
    n_max = max(r["n_train"] for r in results)
    first_seed = min(r["seed"] for r in results)
    (figures / "feature_norms").mkdir(exist_ok=True)
    for stale in (figures / "feature_norms").glob("*.png"):
        stale.unlink()
    probed = [(result, directory / "feature_norms.csv") for result, directory in zip(results, directories)
              if result["n_train"] == n_max and result["seed"] == first_seed
              and (directory / "feature_norms.csv").exists()]
    for result, norms in probed:
        plots.feature_norms(norms, figures / "feature_norms" / f"{result['run']}.png",
                            f"lmax_h = {result['lmax_h']}, lmax_o = {result['lmax_o']}, n_train = {n_max}")
    write_emergence(study_dir, probed)
    return summary
