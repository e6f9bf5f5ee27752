"""``ase-density`` command line: sample | label | info | predict | evaluate | analyze.

The commands parse arguments and print; the work is done by library functions. Errors a user can
cause (:class:`ase_density.errors.AseDensityError`) are printed as one line on stderr,
``ase-density <command>: error: <message>``, without a traceback.

Exit codes: 0 success; 1 the run finished but some structures failed (recorded in the output) or
``info`` found problems; 2 an input, option, model or output error (also argparse's usage errors);
130 interrupted (Ctrl-C). A run stopped by an error keeps what it stored before the error, and a
rerun continues from there.
"""

from __future__ import annotations

import argparse
import os
import sys

from .errors import AseDensityError

EXIT_OK, EXIT_PARTIAL, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130


def _ranged(kind, lo=None, hi=None, what="a number"):
    """An argparse type: ``kind`` within [lo, hi]."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if (lo is not None and value < lo) or (hi is not None and value > hi) or value != value:
            bounds = f">= {lo}" if hi is None else f"in {lo}..{hi}"
            raise argparse.ArgumentTypeError(f"{text} is out of range: must be {bounds}")
        return value
    return parse


POSITIVE = _ranged(int, 1, what="an integer")
NON_NEGATIVE = _ranged(int, 0, what="an integer")
POSITIVE_FLOAT = _ranged(float, 1e-300, what="a number")
GRID_LEVEL = _ranged(int, 0, 9, what="an integer")  # PySCF's DFT grid levels


def _sample(args):
    from .clusters import sample_file

    new = sample_file(args.output, args.n, args.waters, seed=args.seed, relax_steps=args.relax_steps,
                      resume=args.resume)
    print(f"{args.output}: {new} new clusters, {args.n} in all")
    return EXIT_OK


def _label(args):
    import ase.io

    from .errors import DatasetError, InputError, OptionError
    from .h5io import check_not_input
    from .labelling import label_structures
    from .reference import ReferenceSettings

    check_not_input(args.output, [args.structures], DatasetError)
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e6
    if not args.dask and args.max_memory > ram:
        raise OptionError(f"--max-memory {args.max_memory:g} MB is more than this machine's {ram:.0f} MB of memory")
    try:
        structures = ase.io.read(args.structures, index=":")
    except Exception as exc:  # ASE raises many kinds for unreadable files
        raise InputError(f"cannot read structures from {args.structures}: {type(exc).__name__}: {exc}") from exc
    settings = ReferenceSettings(xc=args.xc, basis=args.basis, auxbasis=args.auxbasis, grid_level=args.grid_level,
                                 conv_tol=args.conv_tol, density_fit_scf=args.density_fit_scf)
    summary = label_structures(structures, args.output, settings, workers=args.workers, dask_address=args.dask,
                               save_density_matrix=args.save_dm, fit_error=not args.no_fit_error,
                               retry_failed=args.retry_failed, guess=args.guess, model=args.model,
                               trust_model=args.trust_model, allow_non_water=args.allow_non_water,
                               max_memory=args.max_memory, scratch=args.scratch)
    restarted = f" ({summary['restarted']} SCFs continued from checkpoints)" if summary["restarted"] else ""
    print(f"{args.output}: {summary['done']} labelled{restarted}, {summary['skipped']} already done or failed "
          f"before, {len(summary['failed'])} failed")
    for key, reason in summary["failed"]:
        print(f"  FAILED {key}: {reason.splitlines()[0] if reason else ''}")
    return EXIT_PARTIAL if summary["failed"] else EXIT_OK


def _info(args):
    import json

    import numpy as np

    from .dataset import ReferenceData

    data = ReferenceData(args.data)
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
        return EXIT_PARTIAL if summary["problems"] else EXIT_OK
    sizes = f" ({summary['waters_min']}–{summary['waters_max']} waters)" if summary["structures"] else ""
    print(f"{args.data}: {summary['structures']} structures{sizes}, "
          f"{summary['failures']} failures, {summary['density_matrices']} with density matrices")
    print("  " + ", ".join(f"{k}={v}" for k, v in data.settings.items()))
    if summary["fit_error_mean_percent"] is not None:
        print(f"  fit floor (eps of the fit vs the full density): mean {summary['fit_error_mean_percent']:.3f} %, "
              f"max {summary['fit_error_max_percent']:.3f} %")
    for problem in summary["problems"]:
        print(f"  PROBLEM {problem}")
    for key, reason in data.failures:
        print(f"  FAILED {key}: {reason.splitlines()[0] if reason else ''}")
    return EXIT_PARTIAL if summary["problems"] else EXIT_OK


def _analyze(args):
    from .trajectory import analyze_trajectory

    summary = analyze_trajectory(
        args.trajectory, args.output, model=args.model, every=args.every, start=args.start, stop=args.stop,
        timestep=args.timestep, batch_size=args.batch_size, save_coefficients=args.save_coefficients,
        correct_electron_count=not args.no_electron_count_correction, cubes=args.cubes,
        cube_every=args.cube_every, plots=args.plots, device=args.device, overwrite=args.overwrite,
        progress=not args.quiet, max_lag_fs=args.max_lag, threads=args.threads, trust_model=args.trust_model,
        allow_non_water=args.allow_non_water)
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
    return EXIT_OK


def _add_trust_model(p):
    p.add_argument("--trust-model", action="store_true",
                   help="load a --model other than the shipped one: loading a model file runs code from it "
                        "(see docs/model_files.md; or list its sha256 in $ASE_DENSITY_TRUSTED_MODELS)")


def _add_allow_non_water(p):
    p.add_argument("--allow-non-water", action="store_true",
                   help="also predict for structures that are not water clusters (H2, O2, OH, ...): outside "
                        "the models' domain, so the results are not to be trusted")


def _add_analyze(sub):
    p = sub.add_parser("analyze", help="density analysis along an MD trajectory: dipoles, charges, IR spectrum")
    p.add_argument("trajectory", help="any trajectory ASE reads (.traj, extxyz, ...), streamed frame by frame")
    p.add_argument("-o", "--output", required=True, help="HDF5 file (created, or resumed with the same settings)")
    p.add_argument("--model", help="density model (.nequip.zip/.ckpt); default: the shipped model")
    _add_trust_model(p)
    p.add_argument("--every", type=POSITIVE, default=1, metavar="K", help="analyse every K-th frame")
    p.add_argument("--start", type=NON_NEGATIVE, default=0, help="first frame (>= 0)")
    p.add_argument("--stop", type=NON_NEGATIVE, help="stop before this frame (default: the end)")
    p.add_argument("--timestep", type=POSITIVE_FLOAT, metavar="FS",
                   help="time between trajectory frames in fs (default: atoms.info['time'] when stored)")
    p.add_argument("--batch-size", type=POSITIVE, default=16, help="frames per forward pass")
    p.add_argument("--save-coefficients", action="store_true", help="also store positions and coefficients")
    _add_allow_non_water(p)
    p.add_argument("--no-electron-count-correction", action="store_true",
                   help="analyse the raw coefficients instead of those corrected to the exact electron count")
    p.add_argument("--plots", metavar="DIR", help="write PNG plots here")
    p.add_argument("--cubes", metavar="DIR", help="write density cube files of analysed frames here")
    p.add_argument("--cube-every", type=POSITIVE, default=1, metavar="N", help="a cube file for every N-th analysed frame")
    p.add_argument("--max-lag", type=POSITIVE_FLOAT, metavar="FS", help="IR correlation window (default: half the run)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=POSITIVE, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--overwrite", action="store_true",
                   help="start the output file afresh (the old one is replaced only when the run succeeds)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_analyze)


def _predict(args):
    from .calculator import DensityCalculator
    from .predictions import predict_file

    calc = DensityCalculator(model=args.model, device=args.device, trust_model=args.trust_model,
                             allow_non_water=args.allow_non_water)
    summary = predict_file(args.structures, args.output, calc, batch_size=args.batch_size,
                           skip_invalid=args.skip_invalid, cubes=args.cube, cube_spacing=args.cube_spacing,
                           cube_margin=args.cube_margin, overwrite=args.overwrite, progress=not args.quiet)
    print(f"{args.output}: predictions for {summary['done']} new frames, {summary['skipped']} stored before, "
          f"{len(summary['failed'])} failed" + (f"; cube files in {args.cube}" if args.cube else ""))
    for frame, reason in summary["failed"]:
        print(f"  FAILED frame {frame}: {reason}")
    return EXIT_PARTIAL if summary["failed"] else EXIT_OK


def _evaluate(args):
    import json

    from .calculator import DensityCalculator
    from .dataset import ReferenceData
    from .evaluation import evaluate, format_report

    data = ReferenceData(args.data)
    calc = DensityCalculator(model=args.model, device=args.device, trust_model=args.trust_model)
    indices = range(min(args.limit, len(data))) if args.limit else None
    report = evaluate(calc, data, indices=indices, grid_level=args.grid_level, batch_size=args.batch_size,
                      full_density=not args.no_full_density, progress=True)
    print(format_report(report))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=1)
        print(f"written {args.json}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    from .basis import DEFAULT_AUXBASIS
    from .reference import DEFAULT_MAX_MEMORY, MIN_MAX_MEMORY
    from .scf_guess import GUESSES

    from . import __version__

    parser = argparse.ArgumentParser(prog="ase-density", description="Machine-learned electron densities for water clusters.",
                                     epilog="exit codes: 0 success; 1 some structures failed (recorded) or info found "
                                            "problems; 2 input, option, model or output error; 130 interrupted")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("sample", help="sample water-cluster geometries (extxyz)")
    p.add_argument("-n", type=POSITIVE, required=True, help="number of clusters")
    p.add_argument("--waters", type=POSITIVE, nargs=2, metavar=("MIN", "MAX"), required=True, help="water count range")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--relax-steps", type=NON_NEGATIVE, default=300, help="TIP3P FIRE steps before thermal variety")
    p.add_argument("--no-resume", dest="resume", action="store_false",
                   help="replace the file (once all clusters are made) instead of continuing it; a continued file "
                        "must have been sampled with the same --seed, --waters and --relax-steps")
    p.add_argument("-o", "--output", required=True)
    p.set_defaults(func=_sample)

    p = sub.add_parser("label", help="DFT reference densities fitted onto the auxiliary basis, into HDF5")
    p.add_argument("structures", help="any ASE-readable file with one or more frames")
    p.add_argument("-o", "--output", required=True, help="HDF5 file (created, or resumed)")
    p.add_argument("--xc", default="PBE0", help="functional, or HF")
    p.add_argument("--basis", default="def2-SVP", help="orbital basis")
    p.add_argument("--auxbasis", default=DEFAULT_AUXBASIS, help="aux basis name, '<name>-decontract', or a basis file")
    p.add_argument("--grid-level", type=GRID_LEVEL, default=3, help="PySCF DFT grid level, 0..9")
    p.add_argument("--conv-tol", type=POSITIVE_FLOAT, default=1e-9)
    p.add_argument("--density-fit-scf", action="store_true", help="density-fitted (RI-JK) SCF")
    p.add_argument("--max-memory", type=_ranged(float, MIN_MAX_MEMORY, what="a number of MB"),
                   default=DEFAULT_MAX_MEMORY, metavar="MB",
                   help=f"memory budget of the SCFs in MB, shared by --workers (default {DEFAULT_MAX_MEMORY}); "
                        "an RI-JK tensor larger than it goes to --scratch")
    p.add_argument("--scratch", metavar="DIR",
                   help="directory for SCF checkpoints (a rerun continues an interrupted SCF) and out-of-core "
                        "RI-JK tensors; default OUTPUT.scratch, removed when empty")
    p.add_argument("--workers", type=POSITIVE, default=1, help="local worker processes")
    p.add_argument("--dask", metavar="ADDRESS", help="Dask scheduler address (tcp://host:port)")
    p.add_argument("--save-dm", action="store_true", help="also store the AO density matrix per structure")
    p.add_argument("--no-fit-error", action="store_true", help="skip eps of the fit against the full density")
    p.add_argument("--retry-failed", action="store_true", help="retry structures recorded as failures")
    p.add_argument("--guess", default="minao", choices=GUESSES,
                   help="SCF initial guess (same stored results, fewer cycles); model: from the density model")
    p.add_argument("--model", help="density model for --guess model (default: the shipped model)")
    _add_trust_model(p)
    _add_allow_non_water(p)
    p.set_defaults(func=_label)

    p = sub.add_parser("info", help="summarise a reference file: size, settings, fit floor, problems")
    p.add_argument("data", help="HDF5 reference file")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_info)

    p = sub.add_parser("predict", help="predicted densities, charges and dipoles for structures, into HDF5")
    p.add_argument("structures", help="any ASE-readable file with one or more frames")
    p.add_argument("--model", help="model file (.nequip.zip or .nequip.pt2); default: the shipped model")
    _add_trust_model(p)
    p.add_argument("-o", "--output", default="predictions.h5",
                   help="HDF5 file (created, or continued when made by the same model from the same frames)")
    p.add_argument("--overwrite", action="store_true",
                   help="start the output file afresh (the old one is replaced only when the run succeeds)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("--cube", metavar="DIR", help="also write one cube file per frame into DIR")
    p.add_argument("--cube-spacing", type=POSITIVE_FLOAT, default=0.2, help="cube grid spacing (Å)")
    p.add_argument("--cube-margin", type=_ranged(float, 0.0), default=3.0, help="cube box margin beyond the atoms (Å)")
    p.add_argument("--device", default="cpu", help="torch device: cpu or cuda")
    p.add_argument("--batch-size", type=POSITIVE, default=16, help="frames per forward pass")
    p.add_argument("--skip-invalid", action="store_true",
                   help="record invalid frames as failures and go on (default: stop at the first one)")
    _add_allow_non_water(p)
    p.set_defaults(func=_predict)

    p = sub.add_parser("evaluate", help="accuracy of a model on a labelled reference HDF5 file")
    p.add_argument("data", help="reference HDF5 file (ase-density label)")
    p.add_argument("--model", help="model file (.nequip.zip or .nequip.pt2); default: the shipped model")
    _add_trust_model(p)
    p.add_argument("--json", metavar="FILE", help="also write the full report (per structure) as JSON")
    p.add_argument("--grid-level", type=GRID_LEVEL, default=3, help="PySCF grid level for eps_rho, 0..9")
    p.add_argument("--limit", type=POSITIVE, help="only the first N structures")
    p.add_argument("--no-full-density", action="store_true", help="skip eps against stored DFT density matrices")
    p.add_argument("--device", default="cpu", help="torch device: cpu or cuda")
    p.add_argument("--batch-size", type=POSITIVE, default=16, help="structures per forward pass")
    p.set_defaults(func=_evaluate)
    _add_analyze(sub)
    return parser


def main(argv=None) -> int:
    """Run the command line; returns the exit code (module docstring)."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except AseDensityError as exc:
        message = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        print(f"ase-density {args.command}: error: {message}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"ase-density {args.command}: interrupted; what was stored so far is kept (rerun to continue)",
              file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
