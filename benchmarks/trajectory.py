"""Speed and memory of trajectory analysis (``ase-density analyze``): frames per second and peak
memory for water clusters of several sizes on CPU. Each measurement runs in a fresh process on a
synthetic trajectory (one random packing of rigid waters, jiggled per frame; unrelaxed, since
relaxing 100 waters takes minutes and does not change the cost), written to a temporary .traj.

    python benchmarks/trajectory.py [--sizes 20 100] [--frames 64] [--batch-size 16] [--threads 2]
                                    [--model M] [-o benchmarks/results/trajectory.json]
    python benchmarks/trajectory.py --runs 20x1000 20x10000 100x200   # the table of docs/benchmarks.md

``--frames 200 2000`` measures each size at two lengths: peak memory should not grow with the
number of frames. ``--runs WATERSxFRAMES ...`` picks the (size, length) pairs instead of all
combinations of ``--sizes`` and ``--frames``. Frames/s counts the analysis loop only (reading, prediction, per-frame
properties, HDF5 writes; not the model load or the final products).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from common import run_child, write_results

_CHILD = r"""
import json, resource, sys, tempfile, time, os
import numpy as np
import torch
n_waters, n_frames, batch, threads, model = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
torch.set_num_threads(threads)
from ase.io.trajectory import Trajectory
from ase import Atoms
from ase_density.clusters import _pack
from ase_density.trajectory import analyze_trajectory
rng = np.random.default_rng([2026, n_waters])
base = Atoms("OH2" * n_waters, positions=_pack(n_waters, rng))  # random non-overlapping packing, no relaxation
with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "t.traj")
    with Trajectory(path, "w") as traj:
        for k in range(n_frames):
            atoms = base.copy()
            atoms.positions += rng.normal(0, 0.02, atoms.positions.shape)
            traj.write(atoms)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    summary = analyze_trajectory(path, os.path.join(tmp, "a.h5"), model=model, batch_size=batch, timestep=1.0,
                                 progress=False)
    total = time.perf_counter() - t0
    loop, load = summary["timings"]["frames_s"], summary["timings"]["model_load_s"]
    size = os.path.getsize(os.path.join(tmp, "a.h5"))
print(json.dumps({"waters": n_waters, "atoms": 3 * n_waters, "frames": n_frames, "batch_size": batch, "threads": threads,
                  "frames_per_s": n_frames / loop, "loop_s": loop, "total_s": total, "model_load_s": load,
                  "output_mb": size / 1e6,
                  "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
                  "rss_before_analysis_gb": rss_before / 1024**2}))
"""


def _run_spec(text: str) -> tuple:
    """'20x10000' -> (20, 10000)."""
    try:
        waters, frames = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected WATERSxFRAMES, e.g. 20x10000") from None
    if waters < 1 or frames < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: waters and frames must be positive")
    return waters, frames


def main(argv=None):
    here = Path(__file__).resolve().parent
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20, 100], help="waters per cluster")
    parser.add_argument("--frames", type=int, nargs="+", default=[64], help="trajectory lengths")
    parser.add_argument("--runs", type=_run_spec, nargs="+", metavar="WATERSxFRAMES",
                        help="(size, length) pairs, e.g. 20x10000, instead of --sizes x --frames")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--model", help="density model; default: the shipped one, else the tiny test model")
    parser.add_argument("-o", "--output", default=str(here / "results" / "trajectory.json"))
    args = parser.parse_args(argv)

    from ase_density.calculator import DEFAULT_MODEL

    model = args.model or (str(DEFAULT_MODEL) if DEFAULT_MODEL.exists() else str(here.parent / "tests" / "data" / "tiny_water.nequip.zip"))
    print(f"model: {model}")
    print(f"{'waters':>6} {'frames':>7} {'frames/s':>9} {'loop s':>8} {'load s':>7} {'peak GB':>8} {'file MB':>8}")
    rows = []
    for n, frames in args.runs or [(n, frames) for n in args.sizes for frames in args.frames]:
        try:
            row = run_child(_CHILD, n, frames, args.batch_size, args.threads, model)
        except RuntimeError as exc:
            print(f"{n:>6} {frames:>7} FAILED: {str(exc).strip().splitlines()[-1]}")
            continue
        rows.append(row)
        print(f"{n:>6} {frames:>7} {row['frames_per_s']:>9.2f} {row['loop_s']:>8.1f} {row['model_load_s']:>7.1f} "
              f"{row['peak_rss_gb']:>8.2f} {row['output_mb']:>8.2f}")
    write_results(args.output, args.threads, {"model": model, "rows": rows})


if __name__ == "__main__":
    main()
