"""Molecular dynamics with the electron density attached, then the density analysis of the run.

    python examples/md_density.py                      # defaults: 6 waters, 1 ps, a few minutes on 2 cores
    python examples/md_density.py --waters 10 --steps 4000 --model my.nequip.zip

1. builds a water cluster with the project's sampler (``ase_density.clusters.sample_cluster``);
2. equilibrates it with Langevin dynamics using a classical flexible water model
   (``ase_density.clusters.FlexibleTIP3P``: TIP3P + harmonic O–H/H–H springs);
3. runs velocity-Verlet (NVE) dynamics with ``DensityCalculator(base=FlexibleTIP3P())`` attached:
   forces come from the water model, and every step also predicts the density, so the written
   trajectory carries the predicted dipole and charges of each frame, and the time (fs) in
   ``atoms.info['time']``;
4. analyses the trajectory (what ``ase-density analyze md.traj -o md_analysis.h5 --plots DIR``
   does): total dipole against time, molecular-dipole and charge distributions, IR spectrum.

Without ``--model`` the model shipped in ``ase_density/models/`` is used; where none is installed
yet, the tiny model of the test suite (5 epochs on 12 structures: NOT physically meaningful) is
used instead and the figures say so.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from ase import units
from ase.io.trajectory import Trajectory
from ase.md.langevin import Langevin
from ase.md.verlet import VelocityVerlet

from ase_density.calculator import DEFAULT_MODEL, DensityCalculator
from ase_density.clusters import FlexibleTIP3P, sample_cluster
from ase_density.trajectory import analyze_trajectory

HERE = Path(__file__).resolve().parent
TINY_MODEL = HERE.parent / "tests" / "data" / "tiny_water.nequip.zip"


def thermalize(atoms, temperature_K, rng):
    try:
        from ase.md.velocitydistribution import thermalize_momenta  # ASE >= 3.29
    except ImportError:
        from ase.md.velocitydistribution import MaxwellBoltzmannDistribution as thermalize_momenta
    thermalize_momenta(atoms, temperature_K=temperature_K, rng=rng)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--waters", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--temperature", type=float, default=150.0, help="K (small clusters evaporate near 300 K)")
    p.add_argument("--dt", type=float, default=0.5, help="MD timestep, fs (flexible water needs ~0.5)")
    p.add_argument("--equilibrate", type=int, default=1000, help="Langevin steps before production (water model only)")
    p.add_argument("--steps", type=int, default=2000, help="production (NVE) steps with the density attached")
    p.add_argument("--interval", type=int, default=2, help="write every N-th production step")
    p.add_argument("--model", help="density model (.nequip.zip); default: the shipped one")
    p.add_argument("--out", default="md_output", help="directory for md.traj and md_analysis.h5")
    p.add_argument("--figures", default=None, help="directory for the PNG plots (default: OUT/figures)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1 is fastest for one small cluster per step, and on busy cores)")
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)

    model, title = args.model, None
    if model is None and not DEFAULT_MODEL.exists():
        model = TINY_MODEL
        title = "tiny TEST model (not physical): regenerate with the shipped model"
        print(f"no shipped model at {DEFAULT_MODEL}: using the tiny test model {TINY_MODEL}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    figures = Path(args.figures) if args.figures else out / "figures"
    rng = np.random.default_rng(args.seed)

    t0 = time.perf_counter()
    atoms = sample_cluster(args.waters, seed=args.seed)
    print(f"sampled a {args.waters}-water cluster ({time.perf_counter() - t0:.1f} s)")

    t0 = time.perf_counter()
    atoms.calc = FlexibleTIP3P()
    thermalize(atoms, args.temperature, rng)
    Langevin(atoms, timestep=args.dt * units.fs, temperature_K=args.temperature, friction=0.01 / units.fs,
             fixcm=False, rng=rng).run(args.equilibrate)
    print(f"equilibrated {args.equilibrate} Langevin steps at {args.temperature:g} K "
          f"({time.perf_counter() - t0:.1f} s)")

    t0 = time.perf_counter()
    atoms.calc = DensityCalculator(model=model, base=FlexibleTIP3P())
    traj_path = out / "md.traj"
    dyn = VelocityVerlet(atoms, timestep=args.dt * units.fs)
    with Trajectory(traj_path, "w", atoms) as traj:
        def write():
            atoms.info["time"] = dyn.get_time() / units.fs  # fs: the analysis reads it for the IR spectrum
            traj.write(atoms)

        dyn.attach(write, interval=args.interval)
        dyn.run(args.steps)
    temperature = atoms.get_temperature()
    print(f"{args.steps} NVE steps with DensityCalculator attached ({time.perf_counter() - t0:.1f} s), "
          f"final T {temperature:.0f} K, {traj_path}")

    t0 = time.perf_counter()
    command = f"ase-density analyze {traj_path} -o {out / 'md_analysis.h5'} --plots {figures}"
    if model is not None:
        command += f" --model {model}"
    print(f"analysing (same as: {command} --overwrite)")
    summary = analyze_trajectory(traj_path, out / "md_analysis.h5", model=model, plots=figures, overwrite=True,
                                 plot_title=title)
    print(f"analysis of {summary['n_frames']} frames ({time.perf_counter() - t0:.1f} s): mean |dipole| "
          f"{summary['dipole_debye_mean']:.2f} D, water dipoles {summary['water_dipole_debye']['mean']:.2f} D, "
          f"O charge {summary['charge_O']['mean']:+.3f} e, H charge {summary['charge_H']['mean']:+.3f} e")
    for path in summary["plots"]:
        print(f"  {path}")


if __name__ == "__main__":
    main()
