"""``ase-density`` command line: sample | label (more subcommands join as they land)."""

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
    summary = label_structures(structures, args.output, settings, workers=args.workers, dask_address=args.dask,
                               save_density_matrix=args.save_dm, fit_error=not args.no_fit_error,
                               retry_failed=args.retry_failed)
    print(f"{args.output}: {summary['done']} labelled, {summary['skipped']} already done or failed before, "
          f"{len(summary['failed'])} failed")
    for key, reason in summary["failed"]:
        print(f"  FAILED {key}: {reason.splitlines()[0] if reason else ''}")
    return 1 if summary["failed"] else 0


def build_parser() -> argparse.ArgumentParser:
    from .basis import DEFAULT_AUXBASIS

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
    p.set_defaults(func=_label)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
