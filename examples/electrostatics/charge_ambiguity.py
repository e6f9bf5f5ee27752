"""How well-defined are the auxiliary-basis atom and water charges?

    python examples/electrostatics/charge_ambiguity.py [--data data/test.h5] [--limit 10]

For the first ``--limit`` clusters of a reference file made with ``--save-dm``, the stored DFT
density matrix is refitted in ways that are all valid density fits, and the atom charges
q_A = Z_A - (electrons on atom A's s functions) and the water net charges of every fit are
compared with those of the stored reference fit:

- ``refit``: the project's fit again (a check: must agree to ~1e-10 e);
- ``tikhonov_<lam>``: the same basis, Coulomb metric J + lam·1 (lam in Hartree);
- ``<basis>``: another auxiliary basis, same constrained Coulomb fit;
- ``shift_O0_<delta>``, ``shift_H1_<delta>``, ``shift_water0_<delta>``: the stored fit plus the
  change that puts ``delta`` more electrons on atom 0 (an O), atom 1 (an H) or water 0 at the least
  cost in Coulomb error, the total kept (``--shifts``, ``--water-shifts``);
- ``random_waters_<mae>`` / ``random_atoms_<mae>_waters_<mae>``: the stored fit plus the change
  of least Coulomb cost that moves random charges between all waters (and also within them) at
  once, with mean |change| per water and per atom ``--collective`` (default: the v2 model's
  test errors).

Each fit is scored by eps_rho against the full DFT density and against the stored fit (the
project's definition, :func:`ase_density.density.density_errors`, on the same level-3 grid) and
by its dipole against DFT. Two partitions of the density on the grid serve as basis-independent
references: Becke (PySCF's grid weights) and Hirshfeld (spherical free-atom densities of PySCF's
atomic guess).

The Coulomb stiffness of the partition: moving delta electrons onto atom A (or water W), keeping
the total, raises the fit's Coulomb residual (rho - rho~|rho - rho~) by at least delta² k_A, k_A
the least cost per electron²; the report gives, per atom and per water, the delta that raises it
by 10 %.

Writes ``results/electrostatics/charge_ambiguity.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import scipy.linalg
import scipy.optimize
from ase.units import Debye
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[2]
#: the v2 model's errors on the 40 test clusters (``ase-density evaluate data/test.h5``, level-3 grid)
MODEL_V2 = ROOT / "results" / "model_v2" / "hirshfeld" / "test_eval.json"


def even_tempered_basis(orbital_basis: str, beta: float):
    """PySCF's even-tempered auxiliary basis (``pyscf.df.aug_etb``) for H and O as an AuxBasis."""
    from pyscf.df.addons import aug_etb

    from ase_density.basis import AuxBasis, ElementBasis, Shell, build_mole

    mol = build_mole(["O", "H", "H"], [[0, 0, 0], [0, 0.76, 0.58], [0, -0.76, 0.58]], orbital_basis)
    shells = aug_etb(mol, beta)
    elements = {s: ElementBasis(s, tuple(sorted((Shell.from_pyscf(e) for e in shells[s]), key=lambda x: x.l)))
                for s in ("H", "O")}
    return AuxBasis(f"etb-{beta}", elements)


def cheapest_change(metric, factor, integrals, owner, groups, deltas) -> tuple:
    """The change dc (PySCF order) of least Coulomb norm dc^T J dc that puts ``deltas[k]`` more
    electrons on the functions of the atoms in ``groups[k]`` (``owner``: the atom of each
    function) and keeps the total; ``factor``: ``cho_factor(metric)``. Returns (dc, its Coulomb
    norm in Hartree)."""
    columns = [np.where(np.isin(owner, g), integrals, 0.0) for g in groups]
    targets = list(deltas)
    rest = ~np.isin(owner, np.concatenate([np.ravel(g) for g in groups]))
    if rest.any():  # the other atoms give what the groups take
        columns.append(np.where(rest, integrals, 0.0))
        targets.append(-sum(deltas))
    elif abs(sum(deltas)) > 1e-12:
        raise ValueError("changes on groups that cover every atom must sum to zero")
    constraints = np.stack(columns, axis=1)
    inv = scipy.linalg.cho_solve(factor, constraints)
    dc = inv @ np.linalg.solve(constraints.T @ inv, targets)
    return dc, float(dc @ metric @ dc)


def random_changes(rng, n, mae) -> np.ndarray:
    """``n`` random charge changes that sum to zero, scaled to mean |change| = ``mae``."""
    x = rng.standard_normal(n)
    x -= x.mean()
    return x * mae / np.mean(np.abs(x))


def random_atom_changes(rng, waters, n_atoms, atom_mae, water_mae) -> np.ndarray:
    """Random atom charge changes (e), total zero, whose water sums have mean |change| ``water_mae``
    and whose atoms have mean |change| ``atom_mae``: charge moved between waters plus charge
    moved within each water (the pattern of the model's errors, mostly within waters)."""
    between = np.zeros(n_atoms)
    for w, q in zip(waters, random_changes(rng, len(waters), water_mae)):
        between[w] = q / len(w)
    within = np.zeros(n_atoms)
    for w in waters:
        within[w] = rng.standard_normal(len(w))
        within[w] -= within[w].mean()
    scale = scipy.optimize.brentq(lambda s: np.mean(np.abs(between + s * within)) - atom_mae, 0.0,
                                  10 * atom_mae / np.mean(np.abs(within)))
    return between + scale * within


def partition_grid(atoms, level):
    """PySCF's DFT grid (Bohr, Bohr³) for ``atoms`` with the atom each point belongs to (its
    Becke cell): the grid of :func:`ase_density.density.integration_grid`."""
    from pyscf.dft import gen_grid

    from ase_density.basis import build_mole

    grids = gen_grid.Grids(build_mole(atoms.get_chemical_symbols(), atoms.get_positions(), "sto-3g"))
    grids.level = level
    grids.build(with_non0tab=False)  # sorted into spatial blocks, as integration_grid's
    real = grids.atm_idx >= 0  # not the zero-weight padding
    return grids.coords[real], grids.weights[real], grids.atm_idx[real]


def fits_on_grid(atoms, fits, coords_bohr) -> dict:
    """{name: density (e/Bohr³) at ``coords_bohr``} of ``fits`` {name: (basis, e3nn coefficients)},
    one pass over each basis's functions for all the fits in that basis."""
    from ase_density import density

    out = {}
    for basis in {id(b): b for b, _ in fits.values()}.values():
        names = [name for name, (b, _) in fits.items() if b is basis]
        auxmol, _ = density.pyscf_coefficients(atoms, fits[names[0]][1], basis)
        flat = np.stack([basis.e3nn_to_pyscf(atoms.get_chemical_symbols(), fits[n][1]) for n in names], axis=1)
        values = density.aux_density_values(auxmol, flat, coords_bohr)
        out.update({n: values[:, k] for k, n in enumerate(names)})
    return out


def grid_charges(atoms, rho, coords, weights, owner, free_atom_basis, waters) -> dict:
    """Becke and Hirshfeld atom charges (e) of a density on the grid, and their water sums."""
    from ase_density.electrostatics import hirshfeld_charges

    z = atoms.get_atomic_numbers()
    out = {"becke": z - np.bincount(owner, weights=weights * rho, minlength=len(atoms)),
           "hirshfeld": hirshfeld_charges(atoms, coords, weights, rho, free_atom_basis)}
    return {name: (q, q[waters].sum(axis=1)) for name, q in out.items()}


def eps(rho, reference, weights) -> float:
    """eps_rho (%) = 100 ∫|rho - rho_ref| / ∫rho_ref on the grid (as density.density_errors)."""
    return float(100 * np.sum(weights * np.abs(rho - reference)) / np.sum(weights * reference))


def differences(a, b) -> dict:
    d = np.abs(np.asarray(a) - np.asarray(b))
    return {"mae": float(d.mean()), "max": float(d.max())}


def analyse(data, index, bases, lambdas, shifts, water_shifts, collective, grid_level, seed) -> dict:
    """Every fit of structure ``index`` and its charges, eps_rho and dipole error."""
    from pyscf import scf

    from ase_density import density
    from ase_density.basis import build_mole
    from ase_density.reference import aux_function_integrals, constrained_coulomb_fit, coulomb_projection
    from ase_density.validation import find_waters

    atoms, basis, orbital_basis = data[index], data.basis, data.settings["basis"]
    symbols, waters = atoms.get_chemical_symbols(), find_waters(atoms)
    clock = time.process_time()
    dm = data.density_matrix(index)
    mol = build_mole(symbols, atoms.get_positions(), orbital_basis)
    n_electrons = mol.nelectron
    coords, weights, owner = partition_grid(atoms, grid_level)
    rho_full = density.full_density_on_grid(mol, dm, coords)
    dft_dipole = atoms.info["dipole"] / Debye
    reference = atoms.arrays["density_coefficients"]

    fits = {}  # name: (basis, e3nn coefficients)
    fits["reference"] = (basis, reference)
    auxmol = basis.aux_mole(symbols, atoms.get_positions())
    metric, b = auxmol.intor("int2c2e"), coulomb_projection(mol, auxmol, dm)
    integrals = aux_function_integrals(basis, symbols)
    fits["refit"] = (basis, basis.pyscf_to_e3nn(symbols, constrained_coulomb_fit(metric, b, integrals, n_electrons)))
    for lam in lambdas:
        flat = constrained_coulomb_fit(metric + lam * np.eye(len(b)), b, integrals, n_electrons)
        fits[f"tikhonov_{lam:g}"] = (basis, basis.pyscf_to_e3nn(symbols, flat))
    for other in bases:
        other_aux = other.aux_mole(symbols, atoms.get_positions())
        flat = constrained_coulomb_fit(other_aux.intor("int2c2e"), coulomb_projection(mol, other_aux, dm),
                                 aux_function_integrals(other, symbols), n_electrons)
        fits[other.name] = (other, other.pyscf_to_e3nn(symbols, flat))

    # Coulomb stiffness of the partition of the stored fit
    owner_of_function = np.repeat(np.arange(len(atoms)), [basis.element(s).size for s in symbols])
    ref_flat = basis.e3nn_to_pyscf(symbols, reference)
    self_repulsion = float(np.einsum("ij,ji->", dm, scf.hf.get_jk(mol, dm, with_k=False)[0]))  # (rho|rho)
    residual = self_repulsion - 2 * b @ ref_flat + ref_flat @ metric @ ref_flat
    factor = scipy.linalg.cho_factor(metric)
    stiffness = {"atom": [], "water": []}
    for kind, groups in (("atom", [[i] for i in range(len(atoms))]), ("water", waters)):
        for group in groups:
            cost = cheapest_change(metric, factor, integrals, owner_of_function, [group], [1.0])[1]
            stiffness[kind].append(float(np.sqrt(0.1 * residual / cost)))  # delta raising the residual by 10 %
    targets = [(f"{symbols[0]}0", [0], shifts), (f"{symbols[1]}1", [1], shifts), ("water0", waters[0], water_shifts)]
    for label, group, deltas in targets:
        for delta in deltas:
            dc = cheapest_change(metric, factor, integrals, owner_of_function, [group], [delta])[0]
            fits[f"shift_{label}_{delta:g}"] = (basis, basis.pyscf_to_e3nn(symbols, ref_flat + dc))
    rng = np.random.default_rng([seed, index])
    atom_mae, water_mae = collective
    for name, groups, changes in (
            (f"random_waters_{water_mae:g}", list(waters), random_changes(rng, len(waters), water_mae)),
            (f"random_atoms_{atom_mae:g}_waters_{water_mae:g}", [[i] for i in range(len(atoms))],
             random_atom_changes(rng, waters, len(atoms), atom_mae, water_mae))):
        dc = cheapest_change(metric, factor, integrals, owner_of_function, groups, changes)[0]
        fits[name] = (basis, basis.pyscf_to_e3nn(symbols, ref_flat + dc))

    ref_q = density.atomic_charges(atoms, reference, basis)
    ref_w = ref_q[waters].sum(axis=1)
    dft_grid = grid_charges(atoms, rho_full, coords, weights, owner, orbital_basis, waters)
    out = {"key": atoms.info["key"], "n_waters": len(waters), "cpu_s": None, "coulomb_residual_hartree": float(residual),
           "delta_for_10pct_residual": stiffness, "reference_water_charges": ref_w.tolist(),
           "dft_grid_charges": {k: {"atom": v[0].tolist(), "water": v[1].tolist()} for k, v in dft_grid.items()},
           "aux_vs_grid_partition": {k: {"atom": differences(ref_q, v[0]), "water": differences(ref_w, v[1])}
                                     for k, v in dft_grid.items()},
           "fits": {}}
    rhos = fits_on_grid(atoms, fits, coords)
    for name, (fit_basis, coefficients) in fits.items():
        rho = rhos[name]
        q = density.atomic_charges(atoms, coefficients, fit_basis)
        w = q[waters].sum(axis=1)
        grid = grid_charges(atoms, rho, coords, weights, owner, orbital_basis, waters)
        out["fits"][name] = {
            "basis": fit_basis.name, "n_functions": int(sum(fit_basis.element(s).size for s in symbols)),
            "eps_full": eps(rho, rho_full, weights), "eps_vs_reference": eps(rho, rhos["reference"], weights),
            "dipole_error_debye": float(np.linalg.norm(density.dipole_moment(atoms, coefficients, fit_basis, unit="debye")
                                                       - dft_dipole)),
            "atom_vs_reference": differences(q, ref_q), "water_vs_reference": differences(w, ref_w),
            **{f"{k}_vs_dft": {"atom": differences(v[0], dft_grid[k][0]), "water": differences(v[1], dft_grid[k][1])}
               for k, v in grid.items()},
        }
    out["cpu_s"] = time.process_time() - clock
    return out


def summarise(per_structure) -> dict:
    """Means over structures of every per-fit number (max: the largest over structures)."""
    names = per_structure[0]["fits"]
    summary = {}
    for name in names:
        rows = [s["fits"][name] for s in per_structure]
        entry = {"eps_full": float(np.mean([r["eps_full"] for r in rows])),
                 "eps_vs_reference": float(np.mean([r["eps_vs_reference"] for r in rows])),
                 "dipole_error_debye": float(np.mean([r["dipole_error_debye"] for r in rows]))}
        for key in ("atom_vs_reference", "water_vs_reference"):
            entry[key] = {"mae": float(np.mean([r[key]["mae"] for r in rows])), "max": float(np.max([r[key]["max"] for r in rows]))}
        for key in ("becke_vs_dft", "hirshfeld_vs_dft"):
            entry[key] = {part: float(np.mean([r[key][part]["mae"] for r in rows])) for part in ("atom", "water")}
        summary[name] = entry
    summary["partition_vs_aux_reference"] = {
        k: {part: {"mae": float(np.mean([s["aux_vs_grid_partition"][k][part]["mae"] for s in per_structure])),
                   "max": float(np.max([s["aux_vs_grid_partition"][k][part]["max"] for s in per_structure]))}
            for part in ("atom", "water")} for k in ("becke", "hirshfeld")}
    stiff = {kind: np.concatenate([s["delta_for_10pct_residual"][kind] for s in per_structure]) for kind in ("atom", "water")}
    summary["delta_for_10pct_residual"] = {kind: {"median": float(np.median(v)), "min": float(v.min()), "max": float(v.max())}
                                           for kind, v in stiff.items()}
    pooled = {k: np.concatenate([s["dft_grid_charges"][k]["water"] for s in per_structure]) for k in ("becke", "hirshfeld")}
    aux = np.concatenate([s["reference_water_charges"] for s in per_structure])
    summary["water_charge_correlation_aux_vs"] = {k: float(np.corrcoef(aux, v)[0, 1]) for k, v in pooled.items()}
    summary["hirshfeld_water_charge_mean_abs"] = float(np.mean(np.abs(pooled["hirshfeld"])))
    summary["reference_water_charge_mean_abs"] = float(np.mean(np.abs(np.concatenate(
        [s["reference_water_charges"] for s in per_structure]))))
    return summary


def print_table(summary, model):
    print(f"{'fit':<34}{'eps_full %':>11}{'eps_ref %':>10}{'dip err D':>10}{'atom MAE':>10}{'atom max':>10}{'water MAE':>10}"
          f"{'water max':>10}{'Hirsh. atom':>12}{'Hirsh. water':>13}")
    for name, e in summary.items():
        if not isinstance(e, dict) or "eps_full" not in e:
            continue
        print(f"{name:<34}{e['eps_full']:>11.3f}{e['eps_vs_reference']:>10.3f}{e['dipole_error_debye']:>10.3f}{e['atom_vs_reference']['mae']:>10.4f}"
              f"{e['atom_vs_reference']['max']:>10.4f}{e['water_vs_reference']['mae']:>10.4f}"
              f"{e['water_vs_reference']['max']:>10.4f}{e['hirshfeld_vs_dft']['atom']:>12.4f}{e['hirshfeld_vs_dft']['water']:>13.4f}")
    if model:
        print(f"{'model v2 (40 clusters)':<34}{model['eps_full']:>11.3f}{model['eps_fit']:>10.3f}{model['dipole_error']:>10.3f}"
              f"{model['charge_mae']:>10.4f}{model['charge_max_error']:>10.4f}{model['water_charge_mae']:>10.4f}{'':>10}"
              f"{model['hirshfeld_charge_mae']:>12.4f}{model['hirshfeld_water_charge_mae']:>13.4f}")
    for k, v in summary["partition_vs_aux_reference"].items():
        print(f"{k} (DFT) vs aux charges of the reference fit: atom MAE {v['atom']['mae']:.3f} e, "
              f"water MAE {v['water']['mae']:.4f} e")
    for kind, v in summary["delta_for_10pct_residual"].items():
        print(f"charge moved onto one {kind} for +10 % Coulomb residual: median {v['median']:.4f} e "
              f"(min {v['min']:.4f}, max {v['max']:.4f})")
    print(f"mean |water net charge|: reference fit {summary['reference_water_charge_mean_abs']:.4f} e, "
          f"Hirshfeld of DFT {summary['hirshfeld_water_charge_mean_abs']:.4f} e; correlation of the two "
          f"{summary['water_charge_correlation_aux_vs']['hirshfeld']:.2f} (Becke {summary['water_charge_correlation_aux_vs']['becke']:.2f})")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="data/test.h5", help="reference file with density matrices (--save-dm)")
    parser.add_argument("--limit", type=int, default=10, help="number of clusters (the first ones)")
    parser.add_argument("--lambdas", type=float, nargs="+", default=[1e-6, 1e-5, 1e-4, 1e-3],
                        help="Tikhonov strengths (Hartree) added to the Coulomb metric")
    parser.add_argument("--bases", nargs="+", default=["def2-universal-jfit", "def2-universal-jkfit", "etb-2.0"],
                        help="other auxiliary bases (PySCF names, or etb-<beta> for pyscf.df.aug_etb)")
    parser.add_argument("--shifts", type=float, nargs="+", default=[0.015, 0.05, 0.15],
                        help="electrons (e) moved onto atom 0 and onto atom 1 at the least Coulomb cost")
    parser.add_argument("--water-shifts", type=float, nargs="+", default=[0.005, 0.015, 0.05],
                        help="electrons (e) moved onto water 0 at the least Coulomb cost")
    parser.add_argument("--collective", type=float, nargs=2, default=[0.041, 0.015], metavar=("ATOM", "WATER"),
                        help="mean |change| (e) of random charge changes on every atom / every water at the least "
                             "Coulomb cost (default: the v2 model's test errors)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random charge changes")
    parser.add_argument("--grid-level", type=int, default=3)
    parser.add_argument("--output", default="results/electrostatics/charge_ambiguity.json")
    args = parser.parse_args(argv)
    if args.limit < 1:
        parser.error("--limit must be >= 1")

    from ase_density.basis import AuxBasis
    from ase_density.dataset import ReferenceData
    from ase_density.h5io import file_sha256, versions

    data = ReferenceData(args.data)
    bases = [even_tempered_basis(data.settings["basis"], float(name[4:])) if name.startswith("etb-")
             else AuxBasis.load(name) for name in args.bases]
    t0 = time.perf_counter()
    per_structure = [analyse(data, i, bases, args.lambdas, args.shifts, args.water_shifts,
                             args.collective, args.grid_level, args.seed)
                     for i in tqdm(range(min(args.limit, len(data))), desc="clusters")]
    summary = summarise(per_structure)
    model = json.loads(MODEL_V2.read_text())["mean"]
    result = {"command": "python examples/electrostatics/charge_ambiguity.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "settings": {k: v for k, v in vars(args).items() if k != "output"},
              "data_sha256": file_sha256(args.data), "versions": versions(),
              "wall_s": time.perf_counter() - t0, "model_v2_test": model, "summary": summary,
              "structures": per_structure}
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print_table(summary, model)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
