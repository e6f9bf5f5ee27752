"""SCF iterations and wall time from PySCF's initial guesses and from the density model's
(``ase_density.scf_guess``), with conventional and density-fitted (RI-JK) SCF, at the level of
theory of a labelled reference file.

Per structure, per SCF case (``--scf``: ``conventional``, ``density-fit``, the latter with
PySCF's def2-universal-jkfit like ``ase-density label --density-fit-scf``), one SCF per guess
(``--guesses``): PySCF's ``minao`` (the baseline, always run), ``atom``, ``huckel``,
``mod_huckel``, ``sap``, ``vsap`` (DFT only); ``model``: ``model_guess`` at its defaults (the
construction it picks from the SCF's settings) with ``--model`` (default the shipped model);
``model-k`` / ``model-no-k``: the same with / without the hybrid's exact-exchange step;
``fitted``: from the file's fitted reference density (what a perfect model would give: the
ceiling of the construction).

Every SCF first builds the integrals it keeps (the DF tensor, or the ERIs when they fit in
memory: ``integrals_s``), so the guesses that reuse them are not charged for them and all
guesses pay them alike. Then the guess (``guess_s``, model load excluded: once per process) and
the SCF; ``wall_s`` is the sum of all three. Every case must reach the ``minao`` energy (1e-6 Eh).

    python benchmarks/scf_guess.py [tests/data/small_water.h5 data/test.h5 ...] [--limit N]
        [--scf conventional density-fit] [--guesses minao atom huckel sap vsap model]
        [--model M] [--guess-grid-level 0] [--threads 1] [-o benchmarks/results/scf_guess_cases.json]

The JSON is rewritten after every structure; rerunning the same command resumes after the
structures already measured (same data, model, guesses, cases, guess grid and threads); results
of other settings are never overwritten: give them their own ``-o``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace

import numpy as np

from common import write_results

HERE = os.path.dirname(os.path.abspath(__file__))
BUILTIN = ("minao", "atom", "huckel", "mod_huckel", "sap", "vsap")
GUESSES = BUILTIN + ("model", "model-k", "model-no-k", "fitted")
DEFAULT_GUESSES = ("minao", "atom", "huckel", "sap", "vsap", "model")
CASES = {"conventional": False, "density-fit": True}


def _keep_integrals(mf):
    """Build the integrals ``mf`` keeps through its cycles, as its first cycle would."""
    if getattr(mf, "with_df", None) is not None:
        mf.with_df.build()
    elif mf._is_mem_enough():
        mf._eri = mf.mol.intor("int2e", aosym="s8")


def _scf(mol, settings, guess):
    """One timed SCF from ``guess(mf)`` (None: minao): cycles, times (s), energy (Ha)."""
    from ase_density.reference import run_scf

    times = {}

    def timed_guess(mf):
        t0 = time.perf_counter()
        _keep_integrals(mf)
        t1 = time.perf_counter()
        dm0 = guess(mf) if guess else None
        times.update(integrals_s=t1 - t0, guess_s=time.perf_counter() - t1)
        return dm0

    t0 = time.perf_counter()
    mf = run_scf(mol, settings, dm0=timed_guess)
    if not mf.converged:
        raise RuntimeError("SCF did not converge")
    return {"cycles": int(mf.n_cycles), "wall_s": time.perf_counter() - t0, **times, "energy": float(mf.e_tot)}


def _builders(atoms, data, calc, args):
    """{guess name: callable(mf) -> dm0} for one structure."""
    from ase_density.scf_guess import density_guess, initial_guess, model_guess

    def fitted(mf):
        return density_guess(mf.mol, atoms.arrays["density_coefficients"], data.basis, xc=data.settings["xc"],
                             grid_level=args.guess_grid_level, mf=mf)

    out = {g: (lambda mf, g=g: initial_guess(mf, g)) for g in BUILTIN if g != "minao"}
    out["fitted"] = fitted
    for name, exchange in (("model", None), ("model-k", True), ("model-no-k", False)):
        out[name] = (lambda mf, k=exchange: model_guess(mf, calc, exact_exchange=k, grid_level=args.guess_grid_level))
    return out


def _warm_up(settings, cases, calc):
    """One water per SCF case, from minao and (with a model) the model guess, unmeasured: the
    process's one-off costs (library set-up, first grid, first forward pass) would otherwise
    count against whichever guess runs first."""
    from ase.build import molecule

    from ase_density.basis import build_mole
    from ase_density.scf_guess import model_guess

    water = molecule("H2O")
    mol = build_mole(water.get_chemical_symbols(), water.positions, settings.basis)
    for case in cases:
        for guess in [None] + ([lambda mf: model_guess(mf, calc)] if calc else []):
            _scf(mol, replace(settings, density_fit_scf=CASES[case]), guess)


def main(argv=None):
    from ase_density.basis import build_mole
    from ase_density.calculator import DEFAULT_MODEL
    from ase_density.dataset import ReferenceData
    from ase_density.reference import ReferenceSettings
    from ase_density.scf_guess import density_calculator

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="*", default=[os.path.join(HERE, "..", "tests", "data", "small_water.h5")],
                        help="labelled reference files (ase-density label)")
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="density model for the model guesses")
    parser.add_argument("--limit", type=int, help="at most N structures per file")
    parser.add_argument("--scf", nargs="+", choices=CASES, default=list(CASES), help="SCF cases")
    parser.add_argument("--guesses", nargs="+", choices=GUESSES, default=list(DEFAULT_GUESSES),
                        help="initial guesses compared (minao is always the baseline)")
    parser.add_argument("--guess-grid-level", type=int, default=0, choices=range(10),
                        help="PySCF grid level of the density guesses' V_xc")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("-o", "--output", default=os.path.join(HERE, "results", "scf_guess_cases.json"))
    args = parser.parse_args(argv)

    from pyscf import lib

    lib.num_threads(args.threads)
    guesses = ["minao"] + [g for g in args.guesses if g != "minao"]
    calc = density_calculator(args.model) if any(g.startswith("model") for g in guesses) else None
    header = {"data": [os.path.relpath(p) for p in args.data], "model": os.path.basename(args.model) if calc else None,
              "guesses": guesses, "scf": args.scf, "guess_grid_level": args.guess_grid_level, "threads": args.threads}
    rows = _previous_rows(args.output, header)
    done = {(r["file"], r["key"]) for r in rows}
    if rows:
        print(f"resuming: {len(rows)} structure(s) already measured in {args.output}")
    warm = False
    for path in args.data:
        data = ReferenceData(path)
        settings = ReferenceSettings(**data.settings)
        if not warm:
            _warm_up(settings, args.scf, calc)
            warm = True
        for i in range(min(len(data), args.limit or len(data))):
            if (os.path.basename(path), data.keys[i]) in done:
                continue
            atoms = data[i]
            mol = build_mole(atoms.get_chemical_symbols(), atoms.get_positions(), settings.basis, max_memory=8000)
            builders = _builders(atoms, data, calc, args)
            row = {"file": os.path.basename(path), "key": data.keys[i], "n_atoms": len(atoms)}
            for case in args.scf:
                case_settings = replace(settings, density_fit_scf=CASES[case])
                row[case] = {g: _scf(mol, case_settings, builders.get(g)) for g in guesses
                             if not (g == "vsap" and settings.is_hartree_fock)}
                for g, r in row[case].items():  # every guess must reach the same SCF solution
                    assert abs(r["energy"] - row[case]["minao"]["energy"]) < 1e-6, (row["key"], case, g)
                print(f"{row['file'][:12]}:{row['key'][:13]} {len(atoms)} atoms, {case}: " + ", ".join(
                    f"{g} {r['cycles']} it {r['wall_s']:.1f} s" for g, r in row[case].items()), flush=True)
            rows.append(row)
            # after every structure, so that an interrupted run keeps what it measured
            write_results(args.output, args.threads, {**header, "level_of_theory": settings.as_dict(),
                                                      "summary": _summary(rows, args.scf), "rows": rows})
    print()
    for case, table in _summary(rows, args.scf).items():
        for g, s in table.items():
            print(f"{case:<13}{g:<12} mean cycles {s['mean_cycles']:6.2f} ({s['cycle_reduction_percent']:+6.1f} % "
                  f"fewer)  wall {s['total_wall_s']:8.1f} s ({s['wall_reduction_percent']:+6.1f} % less), guess "
                  f"{s['mean_guess_s']:.2f} s = {s['guess_per_cycle']:.2f} minao cycles")


def _previous_rows(output: str, header: dict) -> list:
    """Rows of an earlier run with the same ``header`` settings at ``output`` (resume); refuses to
    overwrite the results of a run with other settings."""
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


def _summary(rows: list, cases: list) -> dict:
    """Per case and guess: mean cycles, total wall time, reductions against ``minao`` (%), mean
    guess time in seconds and in units of one ``minao`` cycle (its SCF time over its cycles)."""
    out = {}
    for case in cases:
        base = [r[case]["minao"] for r in rows]
        base_cycles = sum(b["cycles"] for b in base)
        base_wall = sum(b["wall_s"] for b in base)
        cycle_s = sum(b["wall_s"] - b["integrals_s"] - b["guess_s"] for b in base) / base_cycles
        out[case] = {}
        for g in rows[0][case]:
            cycles = np.array([r[case][g]["cycles"] for r in rows])
            wall = np.array([r[case][g]["wall_s"] for r in rows])
            guess_s = float(np.mean([r[case][g]["guess_s"] for r in rows]))
            out[case][g] = {"mean_cycles": float(cycles.mean()), "total_wall_s": float(wall.sum()),
                            "cycle_reduction_percent": float(100 * (1 - cycles.sum() / base_cycles)),
                            "wall_reduction_percent": float(100 * (1 - wall.sum() / base_wall)),
                            "mean_guess_s": guess_s, "guess_per_cycle": guess_s / cycle_s,
                            "energies": [r[case][g]["energy"] for r in rows]}
    return out


if __name__ == "__main__":
    main()
