"""SCF iterations and wall time from a density guess (``ase_density.scf_guess``) against PySCF's
default ``minao`` guess, at the level of theory of a labelled reference file.

Per structure one SCF per guess (``--guesses``, default all): ``minao``; ``fitted``, from the
file's fitted reference density (what a perfect model would give: the ceiling of the method);
``model``, from the model's predicted density (``--model``, default the shipped model, skipped when
it is missing); ``model-no-k``, the same without the exact-exchange step of a hybrid's guess
(cheaper to build). Wall times of the density guesses include building the guess.

    python benchmarks/scf_guess.py [tests/data/small_water.h5 data/test.h5 ...] [--model M] [--limit N]
        [--guesses minao model model-no-k] [--guess-grid-level 1] [--threads 2] [-o benchmarks/results/scf_guess.json]

``--guess-grid-level`` sets the PySCF grid level on which the density guesses evaluate V_xc (the
SCF itself uses the file's level of theory); comparing levels 1 and 3 measures what the cheap
default grid costs in cycles.

The JSON is rewritten after every structure; rerunning the same command resumes after the
structures already measured (same data, model, guesses, guess grid and threads); results of other
settings are never overwritten: give them their own ``-o``.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from common import write_results

HERE = os.path.dirname(os.path.abspath(__file__))
GUESSES = ("minao", "fitted", "model", "model-no-k")


def _scf(mol, settings, guess=None):
    from ase_density.reference import run_scf

    t0 = time.perf_counter()
    dm0 = guess() if guess else None
    t_guess = time.perf_counter() - t0
    mf = run_scf(mol, settings, dm0=dm0)
    if not mf.converged:
        raise RuntimeError("SCF did not converge")
    return {"cycles": int(mf.n_cycles), "wall_s": time.perf_counter() - t0, "guess_s": t_guess, "energy": mf.e_tot}


def main(argv=None):
    from ase_density.basis import build_mole
    from ase_density.calculator import DEFAULT_MODEL, DensityCalculator
    from ase_density.dataset import ReferenceData
    from ase_density.reference import ReferenceSettings
    from ase_density.scf_guess import density_guess

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="*", default=[os.path.join(HERE, "..", "tests", "data", "small_water.h5")],
                        help="labelled reference files (ase-density label)")
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="density model for the predicted guess")
    parser.add_argument("--pure-xc", default="PBE", help="pure functional of a hybrid's first guess step")
    parser.add_argument("--limit", type=int, help="at most N structures per file")
    parser.add_argument("--guesses", nargs="+", choices=GUESSES, default=list(GUESSES),
                        help="initial guesses compared (minao is always the baseline)")
    parser.add_argument("--guess-grid-level", type=int, default=1, choices=range(10),
                        help="PySCF grid level of the density guesses' V_xc")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("-o", "--output", default=os.path.join(HERE, "results", "scf_guess.json"))
    args = parser.parse_args(argv)

    from pyscf import lib

    lib.num_threads(args.threads)
    calc = DensityCalculator(model=args.model) if os.path.exists(args.model) else None
    guesses = ["minao"] + [g for g in args.guesses if g != "minao" and (calc or not g.startswith("model"))]
    if calc is None:
        print(f"no model at {args.model}: model guesses are not benchmarked")
    header = {"data": [os.path.abspath(p) for p in args.data], "model": args.model if calc else None,
              "pure_xc": args.pure_xc, "guess_grid_level": args.guess_grid_level, "guesses": guesses,
              "threads": args.threads}
    rows = _previous_rows(args.output, header)
    done = {(r["file"], r["key"]) for r in rows}
    if rows:
        print(f"resuming: {len(rows)} structure(s) already measured in {args.output}")
    print(f"{'structure':<26}{'atoms':>6}" + "".join(f"{g + ' it':>16}{g + ' s':>13}" for g in guesses))
    for path in args.data:
        data = ReferenceData(path)
        settings = ReferenceSettings(**data.settings)
        for i in range(min(len(data), args.limit or len(data))):
            if (os.path.basename(path), data.keys[i]) in done:
                continue
            atoms = data[i]
            mol = build_mole(atoms.get_chemical_symbols(), atoms.get_positions(), settings.basis, max_memory=8000)
            row = {"file": os.path.basename(path), "key": data.keys[i], "n_atoms": len(atoms)}

            def predicted(**options):
                return lambda: density_guess(mol, calc.reset() or calc.get_density_coefficients(atoms),
                                             calc.basis, xc=settings.xc, pure_xc=args.pure_xc,
                                             grid_level=args.guess_grid_level, **options)

            builders = {
                "fitted": lambda: density_guess(mol, atoms.arrays["density_coefficients"], data.basis,
                                                xc=settings.xc, pure_xc=args.pure_xc, grid_level=args.guess_grid_level),
                "model": predicted(),
                "model-no-k": predicted(exact_exchange=False),
            }
            for g in guesses:
                row[g] = _scf(mol, settings, builders.get(g))
            for g in guesses[1:]:  # every guess must reach the same SCF solution
                assert abs(row[g]["energy"] - row["minao"]["energy"]) < 1e-6, (row["key"], g)
            rows.append(row)
            print(f"{row['file'][:12] + ':' + row['key'][:13]:<26}{len(atoms):>6}" +
                  "".join(f"{row[g]['cycles']:>16}{row[g]['wall_s']:>13.2f}" for g in guesses), flush=True)
            # after every structure, so that an interrupted run keeps what it measured
            write_results(args.output, args.threads, {**header, "level_of_theory": settings.as_dict(),
                                                      "summary": _summary(rows, guesses), "rows": rows})
    print()
    for g, s in _summary(rows, guesses).items():
        print(f"{g:<11} mean cycles {s['mean_cycles']:6.2f} ({s['cycle_reduction_percent']:+6.1f} % fewer)  "
              f"wall {s['total_wall_s']:8.1f} s ({s['wall_reduction_percent']:+6.1f} % less, guess "
              f"{s['mean_guess_s']:.2f} s each)")


def _previous_rows(output: str, header: dict) -> list:
    """Rows of an earlier run with the same data, model, guesses, guess grid and threads at
    ``output`` (resume); refuses to overwrite the results of a run with other settings."""
    try:
        with open(output) as fh:
            previous = json.load(fh)
    except FileNotFoundError:
        return []
    except ValueError:
        raise SystemExit(f"{output} is not a JSON file of this benchmark: remove it or pass another -o")
    changed = [k for k, v in header.items() if previous.get(k) != v]
    if changed:
        raise SystemExit(f"{output} holds results measured with other {', '.join(changed)}: "
                         "pass another -o to keep them")
    return previous.get("rows", [])


def _summary(rows: list, guesses: list) -> dict:
    """Per guess: mean cycles, total wall time, reductions against ``minao`` (%), mean guess time."""
    out = {}
    base_cycles = sum(r["minao"]["cycles"] for r in rows)
    base_wall = sum(r["minao"]["wall_s"] for r in rows)
    for g in guesses:
        cycles = np.array([r[g]["cycles"] for r in rows])
        wall = np.array([r[g]["wall_s"] for r in rows])
        out[g] = {"mean_cycles": float(cycles.mean()), "total_wall_s": float(wall.sum()),
                  "cycle_reduction_percent": float(100 * (1 - cycles.sum() / base_cycles)),
                  "wall_reduction_percent": float(100 * (1 - wall.sum() / base_wall)),
                  "mean_guess_s": float(np.mean([r[g]["guess_s"] for r in rows]))}
    return out


if __name__ == "__main__":
    main()
