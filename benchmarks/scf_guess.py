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
the SCF; ``wall_s`` is the sum of all three. Each is also recorded as the process's CPU time
(``*_cpu_s``): with one thread that is what the SCF costs on a dedicated core, while wall time
also counts waiting for a core that other jobs share. Every case must reach the ``minao`` energy
(1e-6 Eh).

    python benchmarks/scf_guess.py [tests/data/small_water.h5 data/test.h5 ...] [--limit N]
        [--scf conventional density-fit] [--guesses minao atom huckel sap vsap model]
        [--model M] [--guess-grid-level 0] [--threads 1] [-o benchmarks/results/scf_guess_cases.json]

The JSON is rewritten after every SCF. Rerunning resumes cell by cell: each (structure,
SCF case, guess) already measured is kept, so a rerun with more ``--guesses``, a larger
``--limit`` or another ``--scf`` case measures only what is missing (same data, guess grid and
threads; the model guesses' cells record their model's SHA-256, and another model is refused).
Results of other settings are never overwritten: give them their own ``-o``.
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
MODEL_GUESSES = ("model", "model-k", "model-no-k")
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
        t0, c0 = time.perf_counter(), time.process_time()
        _keep_integrals(mf)
        t1, c1 = time.perf_counter(), time.process_time()
        dm0 = guess(mf) if guess else None
        times.update(integrals_s=t1 - t0, guess_s=time.perf_counter() - t1,
                     integrals_cpu_s=c1 - c0, guess_cpu_s=time.process_time() - c1)
        return dm0

    t0, c0 = time.perf_counter(), time.process_time()
    mf = run_scf(mol, settings, dm0=timed_guess)
    if not mf.converged:
        raise RuntimeError("SCF did not converge")
    return {"cycles": int(mf.n_cycles), "wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0,
            **times, "energy": float(mf.e_tot)}


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
    from ase_density.h5io import file_sha256
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
    model = {"model": os.path.basename(args.model), "model_sha256": file_sha256(args.model)} if calc else {}
    header = {"data": [os.path.relpath(p) for p in args.data], "guess_grid_level": args.guess_grid_level,
              "threads": args.threads}
    rows = _previous_rows(args.output, header, model)
    if rows:
        print(f"resuming: {len(rows)} structure(s) already measured in {args.output}")
    by_key = {(r["file"], r["key"]): r for r in rows}
    warm = False
    for path in args.data:
        data = ReferenceData(path)
        settings = ReferenceSettings(**data.settings)
        for i in range(min(len(data), args.limit or len(data))):
            row = by_key.get((os.path.basename(path), data.keys[i]))
            if row is None:
                row = {"file": os.path.basename(path), "key": data.keys[i]}
            todo = {case: [g for g in guesses if g not in row.get(case, {})
                           and not (g == "vsap" and settings.is_hartree_fock)] for case in args.scf}
            if not any(todo.values()):
                continue
            if not warm:
                _warm_up(settings, args.scf, calc)
                warm = True
            atoms = data[i]
            row["n_atoms"] = len(atoms)
            mol = build_mole(atoms.get_chemical_symbols(), atoms.get_positions(), settings.basis, max_memory=8000)
            builders = _builders(atoms, data, calc, args)
            for case, missing in todo.items():
                case_settings = replace(settings, density_fit_scf=CASES[case])
                cells = row.setdefault(case, {})
                for g in missing:
                    cells[g] = {**_scf(mol, case_settings, builders.get(g)), **(model if g in MODEL_GUESSES else {})}
                    # every guess must reach the minao SCF solution (measured first)
                    assert abs(cells[g]["energy"] - cells["minao"]["energy"]) < 1e-6, (row["key"], case, g)
                    if (row["file"], row["key"]) not in by_key:
                        by_key[row["file"], row["key"]] = row
                        rows.append(row)
                    # after every SCF, so that an interrupted run keeps what it measured
                    write_results(args.output, args.threads, {**header, "level_of_theory": settings.as_dict(),
                                                              "summary": _summary(rows), "rows": rows})
                print(f"{row['file'][:12]}:{row['key'][:13]} {len(atoms)} atoms, {case}: " + ", ".join(
                    f"{g} {cells[g]['cycles']} it {cells[g]['wall_s']:.1f} s" for g in missing), flush=True)
    print()
    for case, table in _summary(rows).items():
        for g, s in table.items():
            print(f"{case:<13}{g:<12} mean cycles {s['mean_cycles']:6.2f} ({s['cycle_reduction_percent']:+6.1f} % "
                  f"fewer)  wall {s['total_wall_s']:8.1f} s ({s['wall_reduction_percent']:+6.1f} % less), CPU "
                  f"{s['total_cpu_s']:8.1f} s ({s['cpu_reduction_percent']:+6.1f} % less), guess "
                  f"{s['mean_guess_cpu_s']:.2f} CPU s = {s['guess_per_cycle_cpu']:.2f} minao cycles")


def _previous_rows(output: str, header: dict, model: dict) -> list:
    """Rows of an earlier run with the same ``header`` settings at ``output`` (resume); refuses to
    overwrite the results of a run with other settings, or model-guess cells of another ``model``
    (``{"model": name, "model_sha256": ...}``)."""
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
    rows = previous.get("rows", [])
    other = {cell.get("model_sha256") for row in rows for case in CASES for g, cell in row.get(case, {}).items()
             if g in MODEL_GUESSES} - {None}
    if model and other - {model["model_sha256"]}:
        raise SystemExit(f"{output} holds model guesses of another model than {model['model']}: "
                         "pass another -o to keep them")
    return rows


def _summary(rows: list) -> dict:
    """Per SCF case and guess, over the structures measured with that guess (each against
    ``minao`` on the same structures): mean cycles, total wall and CPU time (s), their reductions
    against ``minao`` (%), mean guess time (s) and in units of one ``minao`` cycle (its SCF time
    over its cycles), on either clock."""
    out = {}
    for case in CASES:
        measured = [r[case] for r in rows if case in r]
        guesses = list(dict.fromkeys(g for cells in measured for g in cells))
        if guesses:
            out[case] = {}
        for g in guesses:
            pairs = [(cells["minao"], cells[g]) for cells in measured if g in cells]
            base_cycles = sum(b["cycles"] for b, _ in pairs)
            cycles = np.array([c["cycles"] for _, c in pairs])
            out[case][g] = {"structures": len(pairs), "mean_cycles": float(cycles.mean()),
                            "cycle_reduction_percent": float(100 * (1 - cycles.sum() / base_cycles)),
                            "energies": [c["energy"] for _, c in pairs]}
            for clock in ("wall", "cpu"):
                suffix = "_s" if clock == "wall" else "_cpu_s"
                total = sum(c[f"{clock}_s"] for _, c in pairs)
                base_total = sum(b[f"{clock}_s"] for b, _ in pairs)
                cycle_s = sum(b[f"{clock}_s"] - b[f"integrals{suffix}"] - b[f"guess{suffix}"] for b, _ in pairs) / base_cycles
                guess_s = float(np.mean([c[f"guess{suffix}"] for _, c in pairs]))
                out[case][g].update({f"total_{clock}_s": total,
                                     f"{clock}_reduction_percent": float(100 * (1 - total / base_total)),
                                     f"mean_guess{suffix}": guess_s, f"guess_per_cycle_{clock}": guess_s / cycle_s})
    return out


if __name__ == "__main__":
    main()
