"""``ase-density`` command line: sample | label | predict | evaluate | analyze."""

from __future__ import annotations

import argparse
import sys


def _sample(args):
    import ase.io
    from tqdm import tqdm

    from .clusters import sample_clusters

    start = 0
    try:
        start = len(ase.io.read(args.output, index=":")) if args.resume else 0
    except FileNotFoundError:
        start = 0
    if start >= args.n:
        print(f"{args.output} already holds {start} clusters")
        return 0
    mode = "a" if start else "w"
    with open(args.output, mode) as fh:
        for atoms in tqdm(sample_clusters(args.n, args.waters, args.seed, relax_steps=args.relax_steps, start=start),
                          total=args.n, initial=start, desc="sampling clusters", unit="cluster"):
            ase.io.write(fh, atoms, format="extxyz")
            fh.flush()
    return 0


def _label(args):
    import ase.io

    from .labelling import label_structures
    from .reference import ReferenceSettings

    try:
        structures = ase.io.read(args.structures, index=":")
    except Exception as exc:
        print(f"error: cannot read structures from {args.structures}: {exc}", file=sys.stderr)
        return 2
    settings = ReferenceSettings(xc=args.xc, basis=args.basis, auxbasis=args.auxbasis, grid_level=args.grid_level,
                                 conv_tol=args.conv_tol, density_fit_scf=args.density_fit_scf)
    try:
        summary = label_structures(structures, args.output, settings, workers=args.workers, dask_address=args.dask,
                                   save_density_matrix=args.save_dm, fit_error=not args.no_fit_error,
                                   retry_failed=args.retry_failed, guess=args.guess, model=args.model)
    except ValueError as exc:  # GuessError, ModelError, DatasetError: a guess or model that cannot be used, another file
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.output}: {summary['done']} labelled, {summary['skipped']} already done or failed before, "
          f"{len(summary['failed'])} failed")
    for key, reason in summary["failed"]:
        print(f"  FAILED {key}: {reason.splitlines()[0] if reason else ''}")
    return 1 if summary["failed"] else 0


def _info(args):
    import json

    import numpy as np

    from .dataset import DatasetError, ReferenceData

    try:
        data = ReferenceData(args.data)
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    waters = np.array([len(a) // 3 for a in data])
    fit = np.array([a.info["fit_error"] for a in data])
    summary = {"file": args.data, "structures": len(data), "failures": len(data.failures),
               "waters_min": int(waters.min()) if len(data) else None, "waters_max": int(waters.max()) if len(data) else None,
               "fit_error_mean_percent": float(np.nanmean(fit)) if np.isfinite(fit).any() else None,
               "fit_error_max_percent": float(np.nanmax(fit)) if np.isfinite(fit).any() else None,
               "density_matrices": int(sum(data.has_density_matrix(i) for i in range(len(data)))),
               "problems": data.validate(), "settings": data.settings}
    if args.json:
        print(json.dumps(summary, indent=1))
        return 0
    print(f"{args.data}: {summary['structures']} structures ({summary['waters_min']}–{summary['waters_max']} waters), "
          f"{summary['failures']} failures, {summary['density_matrices']} with density matrices")
    print("  " + ", ".join(f"{k}={v}" for k, v in data.settings.items()))
    if summary["fit_error_mean_percent"] is not None:
        print(f"  fit floor (eps of the fit vs the full density): mean {summary['fit_error_mean_percent']:.3f} %, "
              f"max {summary['fit_error_max_percent']:.3f} %")
    for problem in summary["problems"]:
        print(f"  PROBLEM {problem}")
    for key, reason in data.failures:
        print(f"  FAILED {key}: {reason.splitlines()[0] if reason else ''}")
    return 1 if summary["problems"] else 0


def _analyze(args):
    from .trajectory import TrajectoryError, analyze_trajectory

    try:
        summary = analyze_trajectory(
            args.trajectory, args.output, model=args.model, every=args.every, start=args.start, stop=args.stop,
            timestep=args.timestep, batch_size=args.batch_size, save_coefficients=args.save_coefficients,
            correct_electron_count=not args.no_electron_count_correction, cubes=args.cubes,
            cube_every=args.cube_every, plots=args.plots, device=args.device, overwrite=args.overwrite,
            progress=not args.quiet, max_lag_fs=args.max_lag, threads=args.threads)
    except (TrajectoryError, ValueError) as exc:  # unreadable input, bad frames, other settings, bad model
        print(f"error: {exc}", file=sys.stderr)
        return 1
    water, ne = summary["water_dipole_debye"], summary["electron_count_error"]
    print(f"{args.output}: {summary['n_frames']} frames ({summary['n_frames_new']} new); mean |dipole| "
          f"{summary['dipole_debye_mean']:.3f} D; water dipoles {water.get('mean', float('nan')):.3f} ± "
          f"{water.get('std', float('nan')):.3f} D; electron-count error of the raw prediction: mean "
          f"{ne['mean']:+.2e}, max |{ne['max_abs']:.2e}|")
    if summary["frames_without_whole_waters"]:
        print(f"  {summary['frames_without_whole_waters']} frames are not whole waters: no molecular dipoles for them")
    ir = summary["ir"]
    print(f"  IR spectrum: skipped: {ir['skipped']}" if "skipped" in ir else
          f"  IR spectrum: timestep {ir['timestep_fs']:g} fs, correlation window {ir['max_lag_fs']:g} fs")
    for path in summary.get("plots", []):
        print(f"  plot: {path}")
    return 0


def _add_analyze(sub):
    p = sub.add_parser("analyze", help="density analysis along an MD trajectory: dipoles, charges, IR spectrum")
    p.add_argument("trajectory", help="any trajectory ASE reads (.traj, extxyz, ...), streamed frame by frame")
    p.add_argument("-o", "--output", required=True, help="HDF5 file (created, or resumed with the same settings)")
    p.add_argument("--model", help="density model (.nequip.zip/.ckpt); default: the shipped model")
    p.add_argument("--every", type=int, default=1, metavar="K", help="analyse every K-th frame")
    p.add_argument("--start", type=int, default=0, help="first frame (>= 0)")
    p.add_argument("--stop", type=int, help="stop before this frame (default: the end)")
    p.add_argument("--timestep", type=float, metavar="FS",
                   help="time between trajectory frames in fs (default: atoms.info['time'] when stored)")
    p.add_argument("--batch-size", type=int, default=16, help="frames per forward pass")
    p.add_argument("--save-coefficients", action="store_true", help="also store positions and coefficients")
    p.add_argument("--no-electron-count-correction", action="store_true",
                   help="analyse the raw coefficients instead of those corrected to the exact electron count")
    p.add_argument("--plots", metavar="DIR", help="write PNG plots here")
    p.add_argument("--cubes", metavar="DIR", help="write density cube files of analysed frames here")
    p.add_argument("--cube-every", type=int, default=1, metavar="N", help="a cube file for every N-th analysed frame")
    p.add_argument("--max-lag", type=float, metavar="FS", help="IR correlation window (default: half the run)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--overwrite", action="store_true", help="start the output file afresh")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_analyze)


def _predict(args):
    import itertools
    import os

    import ase.io
    from tqdm import tqdm

    from .calculator import DensityCalculator
    from .density import write_cube
    from .predictions import PredictionWriter
    from .validation import StructureError, validate_atoms

    calc = DensityCalculator(model=args.model, device=args.device)
    if args.cube:
        os.makedirs(args.cube, exist_ok=True)
    frames = enumerate(ase.io.iread(args.structures, index=":"))
    n_read, n_done, status = 0, 0, 0
    with PredictionWriter(args.output, calc, source=args.structures) as writer, \
            tqdm(desc="predicting", unit="frame") as bar:
        while True:
            try:
                batch = list(itertools.islice(frames, args.batch_size))
            except Exception as exc:  # unreadable frame: keep what was written
                print(f"error: reading {args.structures} failed after {n_read} frames: {exc}", file=sys.stderr)
                status = 2
                batch = []
            good = []
            for index, atoms in batch:
                try:
                    validate_atoms(atoms, elements=calc.elements, label=f"frame {index}")
                except StructureError as exc:
                    if not args.skip_invalid:
                        print(f"error: {exc}", file=sys.stderr)
                        status = 1
                        break
                    writer.write_failure(index, str(exc))
                    continue
                good.append((index, atoms))
            if good:
                indices, atoms_list = zip(*good)
                results = calc.compute_batch(atoms_list)
                writer.write(indices, atoms_list, results)
                for index, atoms, res in zip(indices, atoms_list, results) if args.cube else ():
                    write_cube(os.path.join(args.cube, f"frame_{index:06d}.cube"), atoms, res["density_coefficients"],
                               calc.basis, spacing=args.cube_spacing, margin=args.cube_margin)
                n_done += len(good)
            n_read += len(batch)
            bar.update(len(batch))
            if status or len(batch) < args.batch_size:
                break
    print(f"{args.output}: predictions for {n_done} frames" + (f", cube files in {args.cube}" if args.cube else ""))
    return status


def _evaluate(args):
    import json

    from .calculator import DensityCalculator
    from .dataset import ReferenceData
    from .evaluation import evaluate, format_report

    calc = DensityCalculator(model=args.model, device=args.device)
    data = ReferenceData(args.data)
    indices = range(min(args.limit, len(data))) if args.limit else None
    report = evaluate(calc, data, indices=indices, grid_level=args.grid_level, batch_size=args.batch_size,
                      full_density=not args.no_full_density, progress=True)
    print(format_report(report))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=1)
        print(f"written {args.json}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .basis import DEFAULT_AUXBASIS
    from .scf_guess import GUESSES

    parser = argparse.ArgumentParser(prog="ase-density", description="Machine-learned electron densities for water clusters.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("sample", help="sample water-cluster geometries (extxyz)")
    p.add_argument("-n", type=int, required=True, help="number of clusters")
    p.add_argument("--waters", type=int, nargs=2, metavar=("MIN", "MAX"), required=True, help="water count range")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--relax-steps", type=int, default=300, help="TIP3P FIRE steps before thermal variety")
    p.add_argument("--no-resume", dest="resume", action="store_false", help="overwrite instead of continuing a file")
    p.add_argument("-o", "--output", required=True)
    p.set_defaults(func=_sample)

    p = sub.add_parser("label", help="DFT reference densities fitted onto the auxiliary basis, into HDF5")
    p.add_argument("structures", help="any ASE-readable file with one or more frames")
    p.add_argument("-o", "--output", required=True, help="HDF5 file (created, or resumed)")
    p.add_argument("--xc", default="PBE0", help="functional, or HF")
    p.add_argument("--basis", default="def2-SVP", help="orbital basis")
    p.add_argument("--auxbasis", default=DEFAULT_AUXBASIS, help="aux basis name, '<name>-decontract', or a basis file")
    p.add_argument("--grid-level", type=int, default=3)
    p.add_argument("--conv-tol", type=float, default=1e-9)
    p.add_argument("--density-fit-scf", action="store_true", help="density-fitted (RI-JK) SCF")
    p.add_argument("--workers", type=int, default=1, help="local worker processes")
    p.add_argument("--dask", metavar="ADDRESS", help="Dask scheduler address (tcp://host:port)")
    p.add_argument("--save-dm", action="store_true", help="also store the AO density matrix per structure")
    p.add_argument("--no-fit-error", action="store_true", help="skip eps of the fit against the full density")
    p.add_argument("--retry-failed", action="store_true", help="retry structures recorded as failures")
    p.add_argument("--guess", default="minao", choices=GUESSES,
                   help="SCF initial guess (same stored results, fewer cycles); model: from the density model")
    p.add_argument("--model", help="density model for --guess model (default: the shipped model)")
    p.set_defaults(func=_label)

    p = sub.add_parser("info", help="summarise a reference file: size, settings, fit floor, problems")
    p.add_argument("data", help="HDF5 reference file")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_info)

    p = sub.add_parser("predict", help="predicted densities, charges and dipoles for structures, into HDF5")
    p.add_argument("structures", help="any ASE-readable file with one or more frames")
    p.add_argument("--model", help="model file (.nequip.zip or .nequip.pt2); default: the shipped model")
    p.add_argument("-o", "--output", default="predictions.h5", help="HDF5 file (overwritten)")
    p.add_argument("--cube", metavar="DIR", help="also write one cube file per frame into DIR")
    p.add_argument("--cube-spacing", type=float, default=0.2, help="cube grid spacing (Å)")
    p.add_argument("--cube-margin", type=float, default=3.0, help="cube box margin beyond the atoms (Å)")
    p.add_argument("--device", default="cpu", help="torch device: cpu or cuda")
    p.add_argument("--batch-size", type=int, default=16, help="frames per forward pass")
    p.add_argument("--skip-invalid", action="store_true",
                   help="record invalid frames as failures and go on (default: stop at the first one)")
    p.set_defaults(func=_predict)

    p = sub.add_parser("evaluate", help="accuracy of a model on a labelled reference HDF5 file")
    p.add_argument("data", help="reference HDF5 file (ase-density label)")
    p.add_argument("--model", help="model file (.nequip.zip or .nequip.pt2); default: the shipped model")
    p.add_argument("--json", metavar="FILE", help="also write the full report (per structure) as JSON")
    p.add_argument("--grid-level", type=int, default=3, help="PySCF grid level for eps_rho")
    p.add_argument("--limit", type=int, help="only the first N structures")
    p.add_argument("--no-full-density", action="store_true", help="skip eps against stored DFT density matrices")
    p.add_argument("--device", default="cpu", help="torch device: cpu or cuda")
    p.add_argument("--batch-size", type=int, default=16, help="structures per forward pass")
    p.set_defaults(func=_evaluate)
    _add_analyze(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
