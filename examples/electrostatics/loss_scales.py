"""Size of every loss term at a trained model's errors: the basis for the loss weights.

    python examples/electrostatics/loss_scales.py [--model M] [--data data/test.h5] [--limit 8]

Prints each term of ``nequip_plugin.metrics.DensityLoss`` (all weights 1) for the raw model output
on the first ``--limit`` structures, and the weight that would make each term as large as the
coefficient MSE. A weight of that size gives a term the MSE's say in the gradient.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model file (default: the shipped model)")
    parser.add_argument("--trust-model", action="store_true", help="load a model file that is not the shipped one")
    parser.add_argument("--data", default=str(ROOT / "data" / "test.h5"))
    parser.add_argument("--limit", type=int, default=8)
    args = parser.parse_args(argv)
    if args.limit < 1:
        parser.error("--limit must be >= 1")

    from nequip.utils.global_state import set_global_state

    set_global_state()
    from nequip.data import AtomicDataDict, from_dict
    from nequip.data.transforms import ChemicalSpeciesToAtomTypeMapper

    from ase_density.calculator import DEFAULT_MODEL
    from ase_density.dataset import ReferenceData
    from nequip_plugin.inference import load_density_model, predict_coefficients_batch
    from nequip_plugin.metrics import DensityLoss

    model, basis = load_density_model(args.model or str(DEFAULT_MODEL), trust_model=args.trust_model)
    type_names = model.metadata["type_names"].split()
    data = ReferenceData(args.data)
    frames = [data[i] for i in range(min(args.limit, len(data)))]
    predictions = predict_coefficients_batch(model, frames)
    mapper = ChemicalSpeciesToAtomTypeMapper(type_names, {s: s for s in type_names})

    def batch(coefficients):
        return AtomicDataDict.batched_from_list([mapper(from_dict({
            AtomicDataDict.POSITIONS_KEY: a.get_positions(), AtomicDataDict.ATOMIC_NUMBERS_KEY: a.get_atomic_numbers(),
            AtomicDataDict.PBC_KEY: False, "density_coefficients": c})) for a, c in zip(frames, coefficients)])

    target = batch([a.arrays["density_coefficients"] for a in frames])
    pred = batch([np.nan_to_num(c) for c in predictions])
    lmax_o = max(basis.lmax, 0)
    terms = DensityLoss(basis.name, type_names, l_max=lmax_o, mse=1.0, coulomb=1.0, structure_coulomb=1.0,
                        population=1.0, dipole=1.0)(pred, target)
    mse = float(terms["coeff_mse"])
    print(f"{len(frames)} structures of {args.data}, model {args.model or DEFAULT_MODEL.name}")
    print(f"{'term':<20}{'value':>12}{'weight = mse/value':>22}")
    for name, value in terms.items():
        if name != "weighted_sum":
            value = float(value) if isinstance(value, torch.Tensor) else value
            print(f"{name:<20}{value:>12.3e}{mse / value:>22.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
