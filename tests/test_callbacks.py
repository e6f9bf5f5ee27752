"""FeatureNormMonitor in-process: per-irrep norms, hooks on every convolution, the CSV it writes.
(A real ``nequip-train`` run with the callback is part of tests/test_study_quick.py.)"""

import csv
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch


from e3nn import o3
from nequip.data.transforms import ChemicalSpeciesToAtomTypeMapper, NeighborListTransform
from nequip.utils.global_state import set_global_state

from nequip_plugin.callbacks import FEATURE_NORM_COLUMNS, FeatureNormMonitor, irrep_norms
from nequip_plugin.data import DensityDataset
from nequip_plugin.model import DensityModel

FIXTURE = Path(__file__).parent / "data" / "small_water.h5"
TYPES = ["H", "O"]


def test_irrep_norms_by_hand():
    irreps = o3.Irreps("2x0e+1x1o+1x0e")
    # atom 0: scalars 3, -4, 0 ; vector (3, 4, 0); atom 1: all zero
    features = torch.tensor([[3.0, -4.0, 3.0, 4.0, 0.0, 0.0], [0.0] * 6])
    norms = irrep_norms(features, irreps)
    assert list(norms) == [(0, 1), (1, -1)]
    assert norms[(0, 1)] == (3, pytest.approx((3 + 4 + 0) / 6))  # 0e listed twice: merged, 3 channels x 2 atoms
    assert norms[(1, -1)] == (1, pytest.approx(5 / 2))


def test_monitor_records_every_layer_and_irrep(tmp_path):
    set_global_state()
    transforms = [ChemicalSpeciesToAtomTypeMapper(TYPES, {s: s for s in TYPES}), NeighborListTransform(r_max=4.0)]
    dataset = DensityDataset(str(FIXTURE), transforms=transforms)
    model = DensityModel(seed=0, model_dtype="float32", type_names=TYPES, r_max=4.0, lmax_h=2, lmax_o=1,
                         num_layers=2, num_features=3, avg_num_neighbors=4.0)
    pl_module = SimpleNamespace(model=torch.nn.ModuleDict({"sole_model": model}), device=torch.device("cpu"))
    trainer = SimpleNamespace(datamodule=SimpleNamespace(train_dataset=[dataset]), global_step=0, current_epoch=0)
    path = tmp_path / "sub" / "norms.csv"
    monitor = FeatureNormMonitor(str(path), num_structures=3, every_n_steps=2)

    monitor.on_train_start(trainer, pl_module)
    for step in (1, 2, 3, 4):
        trainer.global_step = step
        monitor.on_train_batch_end(trainer, pl_module, None, None, step)

    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == FEATURE_NORM_COLUMNS
    assert sorted({int(r["step"]) for r in rows}) == [0, 2, 4]
    irreps = {(int(r["layer"]), int(r["l"]), int(r["parity"])) for r in rows}
    # each convolution keeps only the irreps its inputs can reach (0o needs a third one)
    assert {(l, p) for layer, l, p in irreps if layer == 0} == {(0, 1), (1, -1), (2, 1)}
    assert {(l, p) for layer, l, p in irreps if layer == 1} == {(0, 1), (1, -1), (2, 1), (1, 1), (2, -1)}
    assert all(float(r["mean_norm"]) > 0 and int(r["multiplicity"]) == 3 for r in rows)
    # no forward hooks left behind on the model
    assert all(not m._forward_hooks for m in model.modules())


def test_monitor_rejects_bad_arguments():
    with pytest.raises(ValueError, match="every_n_steps"):
        FeatureNormMonitor("x.csv", every_n_steps=0)
