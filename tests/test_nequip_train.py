"""End to end through nequip's command-line tools: ``nequip-train`` on the fixture with the example
config, ``nequip-package`` to a file that loads without this plugin, ``nequip-compile``."""

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch



from ase_density.basis import AuxBasis
from ase_density.dataset import ReferenceData
from nequip_plugin.inference import aux_basis_from_metadata, load_density_model, predict_coefficients, predict_coefficients_batch

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "data" / "small_water.h5"
LMAX_O = 3
KEY = "density_coefficients"

# loads a packaged model with nequip_plugin and ase_density hidden and the extension entry point
# gone, runs it on a saved input dict, saves the coefficients
WITHOUT_PLUGIN = """
import importlib.abc, importlib.metadata as md, sys
class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("nequip_plugin", "ase_density"):
            raise ImportError("hidden: " + name)
sys.meta_path.insert(0, Hide())
entry_points = md.entry_points
md.entry_points = lambda **kw: [] if kw.get("group") == "nequip.extension" else entry_points(**kw)
import numpy, torch
from nequip.model.saved_models.load_utils import load_saved_model
model = load_saved_model(sys.argv[1]).eval()
out = model(torch.load(sys.argv[2]))["density_coefficients"]
numpy.save(sys.argv[3], out.detach().numpy())
assert "nequip_plugin" not in sys.modules
"""


def run(args, cwd):
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env={**os.environ, "HYDRA_FULL_ERROR": "1"})
    assert result.returncode == 0, f"{args[0]} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained for 2 epochs on the fixture, with the MSE + Coulomb + Hirshfeld
    water-charge loss."""
    workdir = tmp_path_factory.mktemp("train")
    run(["nequip-train", "-cp", str(ROOT / "examples"), "-cn", "train_water", f"hydra.run.dir={workdir}",
         f"data_file={FIXTURE}", "n_val=3", "lmax_h=1", f"lmax_o={LMAX_O}", "trainer.max_epochs=2",
         "training_module.model.num_features=4", "training_module.model.num_layers=1",
         "training_module.loss.coulomb=0.1", "hirshfeld_grid_level=0",
         "training_module.loss.hirshfeld_water_charge=1.0"], cwd=workdir)
    return workdir


@pytest.fixture(scope="module")
def packaged(trained):
    path = trained / "model.nequip.zip"
    run(["nequip-package", "build", str(trained / "best.ckpt"), str(path)], cwd=trained)
    return path


@pytest.fixture(scope="module")
def example_input():
    """A water trimer from the fixture as model input (float64 positions, neighbour list)."""
    from nequip.data import compute_neighborlist_, from_dict
    from nequip.utils.global_state import set_global_state

    set_global_state()
    atoms = next(a for a in ReferenceData(FIXTURE) if len(a) == 9)
    data = from_dict({"pos": atoms.positions, "atom_types": (atoms.numbers == 8).astype(np.int64), "pbc": False})
    return atoms, compute_neighborlist_(data, r_max=4.0)


def test_training_logs_finite_losses_and_metrics(trained):
    rows = list(csv.DictReader(open(trained / "metrics" / "version_0" / "metrics.csv")))
    last = {k: float(v) for row in rows for k, v in row.items() if v}
    for name in ["train_loss_epoch/coeff_mse", "train_loss_epoch/coulomb", "val0_epoch/coeff_rmse_O",
                 "val0_epoch/coeff_H_l2_mae", "val0_epoch/coeff_O_l4_rmse", "val0_epoch/coulomb",
                 "train_loss_epoch/hirshfeld_water_charge_mse", "val0_epoch/hirshfeld_water_charge_mae",
                 "val0_epoch/hirshfeld_population_mae"]:
        assert name in last and math.isfinite(last[name]) and last[name] > 0, name
    assert sorted(int(r["epoch"]) for r in rows if r["train_loss_epoch/weighted_sum"]) == [0, 1]
    assert (trained / "best.ckpt").exists()


def test_package_loads_without_plugin_and_matches_checkpoint(trained, packaged, example_input, tmp_path):
    atoms, data = example_input
    torch.save(data, tmp_path / "input.pt")
    run([sys.executable, "-c", WITHOUT_PLUGIN, str(packaged), str(tmp_path / "input.pt"), str(tmp_path / "out.npy")],
        cwd=tmp_path)
    from_package = np.load(tmp_path / "out.npy")

    model, basis = load_density_model(str(trained / "best.ckpt"), trust_model=True)
    with torch.no_grad():
        from_checkpoint = model(dict(data))[KEY].numpy()
    np.testing.assert_array_equal(from_package, from_checkpoint)
    # the padding and l > lmax_o are held at exactly zero; everything else is predicted
    oxygen = AuxBasis.load("def2-universal-jfit-decontract", ["H", "O"]).element("O").function_l()
    o_rows = from_package[atoms.numbers == 8]
    assert np.all(o_rows[:, oxygen > LMAX_O] == 0.0) and np.all(o_rows[:, oxygen <= LMAX_O] != 0.0)
    assert np.all(from_package[atoms.numbers == 1, 16:] == 0.0)


def test_packaged_model_metadata_and_ase_prediction(packaged, example_input):
    atoms, _ = example_input
    model, basis = load_density_model(str(packaged), trust_model=True)
    assert basis == ReferenceData(FIXTURE).basis
    coefficients = predict_coefficients(model, atoms)
    assert coefficients.shape == (9, basis.width)
    assert np.array_equal(np.isnan(coefficients), ~basis.mask(atoms.get_chemical_symbols()))
    # a sensible scale after two epochs: the shifted scalars are close to the reference ones
    reference = atoms.arrays[KEY]
    assert np.nanmax(np.abs(coefficients[:, :5] - reference[:, :5])) < 0.5
    # one batched forward pass over several structures equals one pass each
    frames = [ReferenceData(FIXTURE)[i] for i in range(4)]
    batched = predict_coefficients_batch(model, frames)
    for frame, together in zip(frames, batched):
        np.testing.assert_allclose(together, predict_coefficients(model, frame), rtol=1e-5, atol=1e-7)  # float32 model


@pytest.mark.slow
def test_aotinductor_compile_matches_package(packaged, example_input, tmp_path):
    from nequip.model.inference_models import load_compiled_model

    compiled = tmp_path / "model.nequip.pt2"
    run(["nequip-compile", str(packaged), str(compiled), "--mode", "aotinductor", "--device", "cpu",
         "--input-fields", "pos", "edge_index", "atom_types", "--output-fields", KEY], cwd=tmp_path)
    _, data = example_input
    compiled_model, metadata = load_compiled_model(str(compiled), "cpu")
    assert aux_basis_from_metadata(metadata) == ReferenceData(FIXTURE).basis
    model, _ = load_density_model(str(packaged), trust_model=True)
    with torch.no_grad():
        np.testing.assert_allclose(compiled_model(dict(data))[KEY].numpy(), model(dict(data))[KEY].numpy(), atol=1e-5)
