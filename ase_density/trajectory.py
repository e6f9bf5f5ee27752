"""Density analysis along MD trajectories (``ase-density analyze``): stream frames, predict them
in batches (:func:`ase_density.prediction.predict_frames`), store the per-frame properties of
:mod:`ase_density.properties` in a crash-safe, resumable HDF5 file (:mod:`ase_density.analysis_file`),
then derive distributions and the infrared spectrum (:mod:`ase_density.products`) and plots
(:mod:`ase_density.plots`) from that file.

Frames are read one at a time (``ase.io.iread``), so memory does not grow with the trajectory.

**Time** (fs) of analysed frame i (its index in the trajectory): ``i * timestep`` when a timestep is
given, else ``atoms.info['time']`` (fs) when the trajectory stores it, else unknown (NaN).

**Dipoles.** The total dipole is taken about the frame's centre of nuclear charge; water dipoles
about each water's own centre (the partition of :mod:`ase_density.density`). With the
electron-count correction (the default) the density is exactly neutral, so the total dipole equals
ASE's / ``DensityCalculator``'s ``dipole``; without it, the choice removes the spurious
(predicted net charge) × (position of the cluster) term. A frame that is not made of whole waters
gets no molecular dipoles (``n_waters = 0``) and is counted in the summary.

**Electron-count check.** ``n_electrons`` is ∫rho of the *raw* prediction, ``n_electrons_expected``
= Σ Z; their difference is the model's electron-count error. By default the coefficients are then
corrected to the exact count (:func:`ase_density.density.correct_electron_count`) before charges,
dipoles and cubes are computed; ``correct_electron_count=False`` keeps the raw ones.

**Resume.** Each stored frame carries a hash of its content (numbers, positions, cell). A rerun
with the same settings checks the stored frames against the trajectory, refuses a trajectory that
changed, and continues after the last complete frame.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from . import density
from .analysis_file import AnalysisWriter, frame_key
from .errors import OptionError, StructureError, TrajectoryError
from .h5io import file_sha256
from .prediction import check_batch_size, predict_frames
from .products import compute_products


def frame_time(atoms, index: int, timestep: float | None) -> float:
    """Time (fs) of trajectory frame ``index``: see the module docstring."""
    if timestep is not None:
        return float(index * timestep)
    t = atoms.info.get("time")
    try:
        return float(t) if t is not None else float("nan")
    except (TypeError, ValueError):
        return float("nan")


def _frames(path, start: int, stop: int | None, every: int):
    """Yield (trajectory index, atoms), streaming; a read failure becomes :class:`TrajectoryError`."""
    import ase.io

    k = start
    try:
        for atoms in ase.io.iread(os.fspath(path), index=slice(start, stop, every)):
            yield k, atoms
            k += every
    except Exception as exc:  # ASE raises many kinds for unreadable/truncated files
        raise TrajectoryError(f"{path}: cannot read frame {k}: {type(exc).__name__}: {exc}") from exc


def _new_frames(path, start, stop, every, stored_keys):
    """Yield the frames after the ``stored_keys`` ones, checking that those are unchanged."""
    for n, (index, atoms) in enumerate(_frames(path, start, stop, every)):
        if n < len(stored_keys):
            if frame_key(atoms) != stored_keys[n]:
                raise TrajectoryError(f"{path}: frame {index} differs from the frame analysed before: the trajectory "
                                      "changed; refusing to resume (choose another output, or pass --overwrite)")
            continue
        yield index, atoms


def _count_frames(path) -> int | None:
    """Number of frames where that is cheap to know (ASE .traj), else None."""
    if str(path).endswith(".traj"):
        try:
            from ase.io.trajectory import Trajectory

            with Trajectory(os.fspath(path)) as t:
                return len(t)
        except Exception:
            return None
    return None


def _check_options(every, start, stop, batch_size, cube_every, timestep):
    check_batch_size(batch_size)
    if every < 1 or cube_every < 1 or start < 0 or (stop is not None and stop < 0):
        raise OptionError("every and cube_every must be >= 1; start and stop >= 0 (negative indices would need "
                          "the trajectory's length)")
    if timestep is not None and not timestep > 0:
        raise OptionError(f"timestep must be > 0 fs, got {timestep}")


def analyze_trajectory(trajectory, output, model=None, every: int = 1, start: int = 0, stop: int | None = None,
                       timestep: float | None = None, batch_size: int = 16, save_coefficients: bool = False,
                       correct_electron_count: bool = True, cubes=None, cube_every: int = 1,
                       cube_spacing: float = 0.2, plots=None, device: str = "cpu", overwrite: bool = False,
                       progress: bool = True, max_lag_fs: float | None = None, plot_title: str | None = None,
                       threads: int | None = None, trust_model: bool = False, allow_non_water: bool = False) -> dict:
    """Analyse frames ``start:stop:every`` of ``trajectory`` (anything ``ase.io`` reads) with the
    density ``model`` (a model path; default the shipped model) into the HDF5 file ``output``,
    resuming it if it was made with the same settings from the same frames. ``timestep``: MD
    timestep (fs) between trajectory frames. ``cubes``: directory for density cube files of every
    ``cube_every``-th analysed frame. ``plots``: directory for PNG plots. ``threads``: torch
    threads (None: torch's default). ``overwrite``: start afresh (the old file is replaced only when
    the run succeeds). ``trust_model``: load a model file other than the shipped one (see
    :mod:`ase_density.trust`). ``allow_non_water``: analyse frames that are not water clusters
    (refused by default). Returns the summary (also stored as /analysis/summary). Raises
    :class:`TrajectoryError` for unreadable, empty or changed trajectories or frames the model
    cannot handle, after storing every frame before them."""
    from .calculator import DensityCalculator
    from .plots import make_plots

    trajectory = os.fspath(trajectory)
    _check_options(every, start, stop, batch_size, cube_every, timestep)
    if not os.path.exists(trajectory):
        raise TrajectoryError(f"{trajectory}: no such file")
    if os.path.isfile(trajectory) and os.path.getsize(trajectory) == 0:
        raise TrajectoryError(f"{trajectory}: empty file, no frames")
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    t_load = time.perf_counter()
    calc = DensityCalculator(model=model, device=device, trust_model=trust_model, allow_non_water=allow_non_water)
    t_load = time.perf_counter() - t_load
    settings = {"model_sha256": file_sha256(calc.model_path), "start": start, "stop": stop, "every": every,
                "timestep_fs": timestep, "save_coefficients": save_coefficients,
                "correct_electron_count": correct_electron_count}
    with AnalysisWriter(output, settings, calc.basis, save_coefficients, source=trajectory,
                        overwrite=overwrite) as writer:
        n_before = writer.n_done
        total = _count_frames(trajectory)
        bar = _progress(progress, None if total is None else len(range(start, total if stop is None else min(total, stop), every)),
                        n_before)
        t_loop = time.perf_counter()
        frames = predict_frames(calc.model, _new_frames(trajectory, start, stop, every, writer.keys), batch_size,
                                basis=calc.basis, correct=correct_electron_count,
                                validation={"allow_non_water": allow_non_water})
        batch = []

        def store():
            writer.write(batch, [frame_time(f.atoms, f.label, timestep) for f in batch])
            for f in batch if cubes is not None else ():
                if (f.label - start) // every % cube_every == 0:
                    Path(cubes).mkdir(parents=True, exist_ok=True)
                    density.write_cube(Path(cubes) / f"frame_{f.label:06d}.cube", f.atoms, f.coefficients, calc.basis,
                                       spacing=cube_spacing)
            bar.update(len(batch))
            batch.clear()

        try:
            for frame in frames:
                batch.append(frame)
                if len(batch) == batch_size:
                    store()
            store()
        except (StructureError, TrajectoryError) as exc:
            store()
            raise TrajectoryError(f"{exc} ({writer.n_done} frames before it are stored in {output})",
                                  writer.n_done) from exc
        finally:
            bar.close()  # interrupted: the frames of the unfinished batch are redone by the next run
        if writer.n_done == 0:
            raise TrajectoryError(f"{trajectory}: no frames to analyse in [{start}:{stop}:{every}]")
        t_loop = time.perf_counter() - t_loop
        products = compute_products(writer.f, max_lag_fs=max_lag_fs)
        writer.write_products(products)
    # not stored (the file must not depend on how the run went): new frames, seconds spent
    products["summary"].update(n_frames_new=writer.n_done - n_before, timings={"model_load_s": t_load, "frames_s": t_loop})
    if plots is not None:
        products["summary"]["plots"] = [str(p) for p in make_plots(output, plots, title=plot_title)]
    return products["summary"]


def _progress(enabled, total, initial):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc="analysing frames", unit="frame", disable=not enabled)
