"""Cost of a density prediction against cluster size: model forward time and peak memory (CPU by
default), the full ``DensityCalculator`` step (validation, correction, charges, dipole), and the
PySCF PBE0/def2-SVP reference (SCF + fit) where it runs; speed-up and fitted scaling exponents.
Each size runs in a fresh process (peak RSS is per process).

    python benchmarks/inference.py [--sizes 1 2 5 10 20 50 100 200 500 1000] [--max-dft-waters 20]
        [--model M] [--baseline B --trust-model] [--device cpu] [--threads 2] [-o benchmarks/results/inference.json]

``--baseline B`` also times model ``B`` at every size, in the same run, and reports the forward-time
ratio model / baseline (e.g. a new default model against the one it replaces), in wall time and
in process CPU time (the best of five calls each); on a machine busy with other jobs, with
``--threads 1``, the CPU-time ratio is the fair one. Model files other
than the shipped one load only with ``--trust-model`` (they run code: docs/model_files.md).

Clusters: the project's sampler (``sample_cluster(n, seed, relax_steps=0)``) up to 20 waters,
above that ``water_droplet`` (liquid-density lattice droplets, built in seconds).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from common import run_child, write_results

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

_CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[6])
from inference import build_cluster
kind, n, model, device, threads = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
trust_model = sys.argv[7] == "1"
import torch
torch.set_num_threads(threads)
atoms, builder = build_cluster(n)
def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
if kind == "model":
    from ase_density.calculator import DensityCalculator
    from nequip_plugin.inference import predict_coefficients
    calc = DensityCalculator(model=model, device=device, trust_model=trust_model)
    predict_coefficients(calc.model, atoms)  # warm-up
    before = peak_mb()
    times, cpu_times = [], []
    for _ in range(5):
        t0, c0 = time.perf_counter(), time.process_time()
        predict_coefficients(calc.model, atoms)
        times.append(time.perf_counter() - t0); cpu_times.append(time.process_time() - c0)
    t0 = time.perf_counter(); calc.get_dipole_moment(atoms); full = time.perf_counter() - t0
    out = {"forward_s": min(times), "forward_cpu_s": min(cpu_times), "calculator_s": full, "peak_rss_mb": peak_mb(),
           "rss_before_forward_mb": before}
else:
    from pyscf import lib
    from ase_density.reference import compute_reference
    lib.num_threads(threads)
    t0 = time.perf_counter()
    r = compute_reference(atoms, fit_error=False)
    out = {"dft_s": time.perf_counter() - t0, "scf_cycles": r.scf_cycles, "dft_peak_rss_mb": peak_mb()}
out.update(waters=n, atoms=len(atoms), builder=builder)
print(json.dumps(out))
"""

def build_cluster(n_waters: int, seed: int = 2026, max_sampler_waters: int = 20):
    """(Atoms, builder name) of an n-water cluster (module docstring)."""
    from ase_density.clusters import sample_cluster, water_droplet

    if n_waters <= max_sampler_waters:
        return sample_cluster(n_waters, seed=[seed, n_waters], relax_steps=0), "sample_cluster"
    return water_droplet(n_waters, seed=[seed, n_waters]), "water_droplet"


def scaling_exponent(atoms, seconds, min_atoms: int = 30):
    """Slope of log(time) against log(n_atoms) over sizes with at least ``min_atoms`` atoms
    (fewer than two such sizes: all sizes); None with fewer than two points."""
    atoms, seconds = np.asarray(atoms, float), np.asarray(seconds, float)
    keep = atoms >= min_atoms if np.sum(atoms >= min_atoms) >= 2 else np.ones(len(atoms), bool)
    if keep.sum() < 2:
        return None
    return float(np.polyfit(np.log(atoms[keep]), np.log(seconds[keep]), 1)[0])


def main(argv=None):
    from ase_density.calculator import DEFAULT_MODEL

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 5, 10, 20, 50, 100, 200, 500, 1000])
    parser.add_argument("--max-dft-waters", type=int, default=20, help="largest cluster for the PySCF reference")
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--baseline", help="another model timed beside --model (forward-time ratio)")
    parser.add_argument("--trust-model", action="store_true", help="load model files other than the shipped one")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("-o", "--output", default=os.path.join(HERE, "results", "inference.json"))
    args = parser.parse_args(argv)

    rows = []
    print(f"{'waters':>6} {'atoms':>6} {'forward ms':>11} {'calc ms':>9} {'peak MB':>8} {'DFT s':>9} {'speed-up':>9}"
          + (f" {'/ baseline':>10}" if args.baseline else ""))
    for n in args.sizes:
        trust = int(args.trust_model)
        row = run_child(_CHILD, "model", n, args.model, args.device, args.threads, HERE, trust)
        if args.baseline:
            baseline = run_child(_CHILD, "model", n, args.baseline, args.device, args.threads, HERE, trust)
            row.update(baseline_forward_s=baseline["forward_s"], forward_ratio=row["forward_s"] / baseline["forward_s"],
                       forward_cpu_ratio=row["forward_cpu_s"] / baseline["forward_cpu_s"])
        if n <= args.max_dft_waters:
            row.update(run_child(_CHILD, "dft", n, args.model, args.device, args.threads, HERE, trust))
            row["speedup"] = row["dft_s"] / row["forward_s"]
        rows.append(row)
        dft = f"{row['dft_s']:>9.1f} {row['speedup']:>9.0f}" if "dft_s" in row else f"{'-':>9} {'-':>9}"
        print(f"{n:>6} {row['atoms']:>6} {1e3 * row['forward_s']:>11.1f} {1e3 * row['calculator_s']:>9.1f} "
              f"{row['peak_rss_mb']:>8.0f} {dft}" + (f" {row['forward_ratio']:>10.2f}" if args.baseline else ""),
              flush=True)
    with_dft = [r for r in rows if "dft_s" in r]
    exponents = {"forward": scaling_exponent([r["atoms"] for r in rows], [r["forward_s"] for r in rows]),
                 "forward_100_atoms_up": scaling_exponent([r["atoms"] for r in rows], [r["forward_s"] for r in rows],
                                                          min_atoms=100),
                 "dft": scaling_exponent([r["atoms"] for r in with_dft], [r["dft_s"] for r in with_dft], min_atoms=9)}
    fmt = {k: "n/a" if v is None else f"{v:.2f}" for k, v in exponents.items()}
    print(f"scaling exponent (time ~ n_atoms^k): model forward {fmt['forward']} (from 100 atoms: "
          f"{fmt['forward_100_atoms_up']}), PySCF reference {fmt['dft']}")
    ratio = {"baseline": args.baseline,
             "forward_ratio_mean": float(np.mean([r["forward_ratio"] for r in rows])),
             "forward_cpu_ratio_mean": float(np.mean([r["forward_cpu_ratio"] for r in rows]))} if args.baseline else {}
    if ratio:
        print(f"forward time / baseline's: {ratio['forward_ratio_mean']:.2f} wall, "
              f"{ratio['forward_cpu_ratio_mean']:.2f} CPU (mean over sizes; with --threads 1 on a busy machine "
              "the CPU-time ratio is the one to read)")
    write_results(args.output, args.threads, {
        "model": args.model, **ratio, "reference": "PBE0/def2-SVP, grid level 3, SCF + fit",
        "scaling_exponents": exponents, "rows": rows}, device=args.device)


if __name__ == "__main__":
    main()
