"""Array sizes of labelling N-water clusters, without running an SCF: AOs, the RI-JK tensor
(def2-universal-jkfit), the fit's aux basis and Coulomb metric, the density matrix and the DFT grid.
Sizes depend on the composition only (the grid a little on the geometry: the project's
liquid-density lattice droplets, ``clusters.water_droplet``, here).

    python benchmarks/label_sizes.py [--waters 12 20 32 50] [--grid] [-o benchmarks/results/label_sizes.json]
"""

from __future__ import annotations

import argparse
import os

from common import write_results

from ase_density.basis import AuxBasis, build_mole
from ase_density.clusters import water_droplet
from ase_density.reference import SCF_AUXBASIS, ReferenceSettings, df_tensor_bytes


def sizes(n_waters: int, settings: ReferenceSettings, grid: bool) -> dict:
    from pyscf.df import addons

    atoms = water_droplet(n_waters, seed=n_waters)
    symbols = atoms.get_chemical_symbols()
    mol = build_mole(symbols, atoms.positions, settings.basis)
    fit_aux = AuxBasis.load(settings.auxbasis).aux_mole(symbols, atoms.positions)
    row = {"waters": n_waters, "nao": mol.nao, "naux_ri_jk": addons.make_auxmol(mol, SCF_AUXBASIS).nao,
           "ri_jk_tensor_gb": df_tensor_bytes(mol) / 1e9, "naux_fit": fit_aux.nao,
           "fit_metric_gb": 8 * fit_aux.nao ** 2 / 1e9, "density_matrix_gb": 8 * mol.nao ** 2 / 1e9,
           "int3c_per_aux_function_mb": 8 * mol.nao * (mol.nao + 1) / 2 / 1e6}
    if grid:
        from pyscf.dft import gen_grid

        grids = gen_grid.Grids(mol)
        grids.level = settings.grid_level
        grids.build(with_non0tab=False)
        row["grid_points"] = len(grids.weights)
        row["grid_coords_weights_gb"] = 32 * len(grids.weights) / 1e9
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--waters", type=int, nargs="+", default=[12, 20, 32, 50])
    parser.add_argument("--grid", action="store_true", help="also build the level-3 DFT grid (a minute at 50 waters)")
    parser.add_argument("-o", "--output", default=os.path.join(os.path.dirname(__file__), "results", "label_sizes.json"))
    args = parser.parse_args(argv)
    settings = ReferenceSettings()
    rows = [sizes(n, settings, args.grid) for n in args.waters]
    for row in rows:
        print("  ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    write_results(args.output, 1, {"level_of_theory": "PBE0/def2-SVP, RI-JK def2-universal-jkfit, fit aux "
                                                      f"{settings.auxbasis}, grid level {settings.grid_level}",
                                   "rows": rows})


if __name__ == "__main__":
    main()
