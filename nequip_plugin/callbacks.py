"""Lightning callbacks for training density models.

:class:`FeatureNormMonitor` records how large the hidden features of every angular momentum are
during training, on a fixed probe batch: do features of different l grow in order, like the terms
of a multipole expansion? Configure it in the ``trainer.callbacks`` list of a ``nequip-train`` config::

    - _target_: nequip_plugin.callbacks.FeatureNormMonitor
      path: ${hydra:runtime.output_dir}/feature_norms.csv
      num_structures: 8
      every_n_steps: 10
"""

import csv
import functools
import os
from typing import Dict, List, Tuple

import torch
from lightning.pytorch.callbacks import Callback

from nequip.data import AtomicDataDict
from nequip.nn import ConvNetLayer

#: columns of the file written by :class:`FeatureNormMonitor`
FEATURE_NORM_COLUMNS = ("step", "epoch", "layer", "l", "parity", "multiplicity", "mean_norm")


def irrep_norms(features: torch.Tensor, irreps) -> Dict[Tuple[int, int], Tuple[int, float]]:
    """{(l, parity): (multiplicity, mean norm)} of node features (n_atoms, irreps.dim).

    The norm of one channel of one atom is the Euclidean norm over its 2l + 1 components; the mean
    runs over atoms and over all channels of that (l, parity) (irreps listed twice are merged).
    Same units as the features (the hidden features of NequIP are dimensionless)."""
    sums: Dict[Tuple[int, int], Tuple[float, int]] = {}
    for (mul, ir), sl in zip(irreps, irreps.slices()):
        block = features[:, sl].reshape(features.shape[0], mul, ir.dim)
        total, count = sums.get((ir.l, ir.p), (0.0, 0))
        sums[(ir.l, ir.p)] = (total + float(block.norm(dim=-1).sum()), count + mul)
    n_atoms = max(features.shape[0], 1)
    return {key: (count, total / (n_atoms * count)) for key, (total, count) in sorted(sums.items())}


class FeatureNormMonitor(Callback):
    """Mean norm of the hidden features per layer and per (l, parity), on a fixed probe batch of
    training structures, every ``every_n_steps`` optimizer steps (and before the first one).

    The probe is the first ``num_structures`` structures of the training set (fixed for the whole
    run); the features are the node features leaving every NequIP convolution (``ConvNetLayer``)
    of the model, with the current (not EMA-averaged) weights. One row per (step, layer, l,
    parity) is appended to ``path`` (CSV, columns :data:`FEATURE_NORM_COLUMNS`; ``parity`` is +1 or
    -1, ``layer`` counts convolutions from 0) and flushed at once, so a killed run keeps what it saw.

    Args:
        path: output CSV file (overwritten when training starts)
        num_structures: size of the probe batch (at most the training-set size)
        every_n_steps: recording interval in optimizer steps
    """

    def __init__(self, path: str, num_structures: int = 8, every_n_steps: int = 10):
        if num_structures < 1 or every_n_steps < 1:
            raise ValueError(f"num_structures and every_n_steps must be >= 1, got {num_structures}, {every_n_steps}")
        self.path = os.fspath(path)
        self.num_structures = num_structures
        self.every_n_steps = every_n_steps
        self._probe = None
        self._layers: List[ConvNetLayer] = []
        self._last_step = -1

    def on_train_start(self, trainer, pl_module):
        if not getattr(trainer, "is_global_zero", True):  # one writer under DDP
            return
        dataset = trainer.datamodule.train_dataset[0]
        count = min(self.num_structures, len(dataset))
        self._probe = AtomicDataDict.batched_from_list([dataset[i] for i in range(count)])
        self._layers = [m for m in pl_module.model.modules() if isinstance(m, ConvNetLayer)]
        if not self._layers:
            raise RuntimeError("FeatureNormMonitor: the model has no NequIP ConvNetLayer whose features it could record")
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        with open(self.path, "w", newline="") as fh:
            csv.writer(fh).writerow(FEATURE_NORM_COLUMNS)
        self._record(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self._probe is None:  # not the writing rank
            return
        # the step counter stands still over accumulated batches: record each step once
        if trainer.global_step % self.every_n_steps == 0 and trainer.global_step != self._last_step:
            self._record(trainer, pl_module)

    def _record(self, trainer, pl_module):
        self._last_step = trainer.global_step
        captured: Dict[int, torch.Tensor] = {}

        def hook(index, module, args, out):
            captured[index] = out[AtomicDataDict.NODE_FEATURES_KEY].detach()

        handles = [layer.register_forward_hook(functools.partial(hook, index)) for index, layer in enumerate(self._layers)]
        try:
            with torch.no_grad():
                probe = AtomicDataDict.to_(dict(self._probe), pl_module.device)
                for model in pl_module.model.values():
                    model(probe)
        finally:
            for handle in handles:
                handle.remove()
        rows = []
        for index, layer in enumerate(self._layers):
            irreps = layer.irreps_out[AtomicDataDict.NODE_FEATURES_KEY]
            for (l, parity), (mul, norm) in irrep_norms(captured[index], irreps).items():
                rows.append((trainer.global_step, trainer.current_epoch, index, l, parity, mul, f"{norm:.6g}"))
        with open(self.path, "a", newline="") as fh:
            csv.writer(fh).writerows(rows)
