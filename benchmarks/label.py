"""Cost of reference labelling: wall time and peak memory per structure against cluster size,
conventional vs density-fitted (RI-JK) SCF. Each measurement runs in a fresh process.

    python benchmarks/label.py [--sizes 1 3 6 10 20] [--threads 2] [-o benchmarks/results/label.json]
"""

from __future__ import annotations

import argparse
import os

from common import run_child, write_results

_CHILD = r"""
import json, resource, sys, time
from ase_density.clusters import sample_cluster
from ase_density.reference import ReferenceSettings, compute_reference
from pyscf import lib
n, density_fit, threads = int(sys.argv[1]), sys.argv[2] == "1", int(sys.argv[3])
lib.num_threads(threads)
atoms = sample_cluster(n, seed=[2026, n])
t0 = time.perf_counter()
r = compute_reference(atoms, ReferenceSettings(density_fit_scf=density_fit), fit_error=False)
wall = time.perf_counter() - t0
print(json.dumps({"waters": n, "density_fit_scf": density_fit, "wall_s": wall, "scf_s": r.timings["scf"],
                  "fit_s": r.timings["fit"], "scf_cycles": r.scf_cycles,
                  "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2}))
"""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 3, 6, 10, 15, 20])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("-o", "--output", default=os.path.join(os.path.dirname(__file__), "results", "label.json"))
    args = parser.parse_args(argv)
    rows = []
    print(f"{'waters':>6} {'SCF':>5} {'wall s':>9} {'SCF s':>9} {'fit s':>7} {'cycles':>6} {'peak GB':>8}")
    for n in args.sizes:
        for density_fit in (False, True):
            row = run_child(_CHILD, n, int(density_fit), args.threads)
            rows.append(row)
            print(f"{n:>6} {'RI' if density_fit else 'conv':>5} {row['wall_s']:>9.1f} {row['scf_s']:>9.1f} "
                  f"{row['fit_s']:>7.2f} {row['scf_cycles']:>6} {row['peak_rss_gb']:>8.2f}")
    write_results(args.output, args.threads, {
        "level_of_theory": "PBE0/def2-SVP, grid level 3, aux def2-universal-jfit-decontract", "rows": rows})


if __name__ == "__main__":
    main()
