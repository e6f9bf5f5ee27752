"""The NequIP extension in-process: model builder, layout and masks, equivariance, dataset, metrics."""

from pathlib import Path

import numpy as np
import pytest
import torch


from e3nn import o3
from nequip.data import AtomicDataDict, deregister_fields, register_fields
from nequip.data.transforms import ChemicalSpeciesToAtomTypeMapper, NeighborListTransform
from nequip.nn import GraphModuleMixin
from nequip.utils.global_state import set_global_state
from nequip.utils.test import assert_AtomicData_equivariant

from ase_density.basis import AuxBasis
from ase_density.dataset import DatasetError, ReferenceData, split_indices
from nequip_plugin.data import CoefficientStatisticsManager, DensityDataset
from nequip_plugin.inference import aux_basis_from_metadata
from nequip_plugin.metrics import CoefficientSelection, CoulombError, DensityLoss
from nequip_plugin.model import DensityModel

FIXTURE = Path(__file__).parent / "data" / "small_water.h5"
BASIS = "def2-universal-jfit-decontract"
TYPES = ["H", "O"]
R_MAX = 4.0
KEY = "density_coefficients"


@pytest.fixture(scope="module")
def basis():
    return AuxBasis.load(BASIS, symbols=TYPES)


def transforms():
    return [ChemicalSpeciesToAtomTypeMapper(TYPES, {s: s for s in TYPES}), NeighborListTransform(r_max=R_MAX)]


@pytest.fixture(scope="module")
def dataset():
    set_global_state()
    return DensityDataset(str(FIXTURE), transforms=transforms())


@pytest.fixture(scope="module")
def trimer(dataset):
    """A labelled structure with three waters, without its labels."""
    data = next(d for d in dataset if len(d[AtomicDataDict.POSITIONS_KEY]) == 9)
    return {k: v for k, v in data.items() if k != KEY}


@pytest.fixture(scope="module")
def statistics(dataset):
    loader = torch.utils.data.DataLoader(dataset, batch_size=5, collate_fn=AtomicDataDict.batched_from_list)
    return CoefficientStatisticsManager(TYPES).get_statistics(loader)


def build(**kwargs):
    set_global_state()
    args = dict(seed=0, model_dtype="float64", type_names=TYPES, r_max=R_MAX, basis=BASIS, lmax_h=1, lmax_o=4,
                num_layers=2, num_features=4, avg_num_neighbors=4.0)
    args.update(kwargs)
    return DensityModel(**args)


def columns_of(basis, symbol, l):
    return np.flatnonzero(basis.element(symbol).function_l() == l)


# --- builder: configuration errors ---

@pytest.mark.parametrize("kwargs, message", [
    ({"lmax_h": 5}, "lmax_h"),
    ({"lmax_o": -1}, "lmax_o"),
    ({"num_layers": 0}, "num_layers"),
    ({"num_features": [4, 4, 4]}, "num_features"),
    ({"type_names": ["H", "Xx"]}, "Xx"),
    ({"coefficient_mean": {"H": [0.0] * 16, "O": [0.0] * 70}}, "both"),
])
def test_bad_configuration_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build(**kwargs)


def test_statistics_of_another_basis_are_refused(statistics):
    short = {name: values[:-1] for name, values in statistics["coefficient_mean"].items()}
    with pytest.raises(ValueError, match="another basis"):
        build(coefficient_mean=short, coefficient_std=statistics["coefficient_std"])


def test_basis_not_covering_type_names_is_refused(tmp_path):
    only_h = tmp_path / "h_only.nw"
    only_h.write_text("H    S\n      1.0   1.0\nEND\n")
    with pytest.raises(ValueError, match="for element O"):
        build(basis=str(only_h))


# --- outputs: layout, masks, high l ---

def test_readout_predicts_l_above_lmax_h(trimer, basis):
    out = build(lmax_h=1, lmax_o=4)(dict(trimer))[KEY].detach().numpy()
    oxygens = trimer[AtomicDataDict.ATOM_TYPE_KEY].numpy() == TYPES.index("O")
    for l in (2, 3, 4):
        assert np.abs(out[np.ix_(oxygens, columns_of(basis, "O", l))]).min(axis=1).max() > 1e-6, l


def test_functions_above_lmax_o_and_padding_are_exactly_zero(trimer, basis, statistics):
    model = build(lmax_h=2, lmax_o=1, coefficient_mean=statistics["coefficient_mean"],
                  coefficient_std=statistics["coefficient_std"])
    out = model(dict(trimer))[KEY].detach().numpy()
    types = trimer[AtomicDataDict.ATOM_TYPE_KEY].numpy()
    for t, name in enumerate(TYPES):
        rows = out[types == t]
        ls = basis.element(name).function_l()
        predicted = ls <= 1
        assert np.all(rows[:, len(ls):] == 0.0), f"{name} padding"
        assert np.all(rows[:, :len(ls)][:, ~predicted] == 0.0), f"{name} l > lmax_o"
        assert np.all(np.abs(rows[:, :len(ls)][:, predicted]) > 0), f"{name} predicted functions"


def test_scalar_shift_and_scale_come_from_training_statistics(trimer, basis, statistics, dataset):
    # the statistics are the per-element column means / stds of the data
    labels = np.concatenate([d[KEY].numpy() for d in dataset])
    types = np.concatenate([d[AtomicDataDict.ATOM_TYPE_KEY].numpy() for d in dataset])
    for t, name in enumerate(TYPES):
        size = basis.element(name).size
        np.testing.assert_allclose(statistics["coefficient_mean"][name], labels[types == t, :size].mean(0), rtol=1e-10)
        np.testing.assert_allclose(statistics["coefficient_std"][name], labels[types == t, :size].std(0), rtol=1e-6)
    # with a silent readout, the output is the mean on scalar columns and zero elsewhere
    model = build(coefficient_mean=statistics["coefficient_mean"], coefficient_std=statistics["coefficient_std"])
    with torch.no_grad():
        for p in model.model.readout.parameters():
            p.zero_()
    out = model(dict(trimer))[KEY].detach().numpy()
    types = trimer[AtomicDataDict.ATOM_TYPE_KEY].numpy()
    for t, name in enumerate(TYPES):
        expected = np.zeros(basis.width)
        scalars = columns_of(basis, name, 0)
        expected[scalars] = np.asarray(statistics["coefficient_mean"][name])[scalars]
        np.testing.assert_array_equal(out[types == t], np.broadcast_to(expected, out[types == t].shape))


def test_metadata_carries_the_basis(basis):
    assert aux_basis_from_metadata(build().metadata) == basis
    with pytest.raises(ValueError, match="not a density model"):
        aux_basis_from_metadata({"r_max": "4.0"})


# --- equivariance (nequip's helper on one field per element) ---

class PerElementFields(GraphModuleMixin, torch.nn.Module):
    """Each element's coefficient block as its own field, with that element's irreps (zero rows
    for atoms of other elements), so nequip's equivariance test can rotate it."""

    def __init__(self, model, basis):
        super().__init__()
        self.model = model
        self.sizes = [basis.element(name).size for name in TYPES]
        self._init_irreps(irreps_in=model.irreps_in,
                          irreps_out={f"test_{name}_coefficients": basis.irreps(name) for name in TYPES})

    def forward(self, data):
        out = self.model(data)[KEY]
        types = data[AtomicDataDict.ATOM_TYPE_KEY].view(-1)
        return {f"test_{name}_coefficients": out[:, :size] * (types == t).unsqueeze(-1).to(out.dtype)
                for t, (name, size) in enumerate(zip(TYPES, self.sizes))}


@pytest.fixture
def per_element_fields():
    names = [f"test_{name}_coefficients" for name in TYPES]
    register_fields(node_fields=names)
    yield
    deregister_fields(*names)


@pytest.mark.parametrize("lmax_h, lmax_o", [(1, 4), (2, 2)])
def test_equivariance(trimer, basis, statistics, per_element_fields, lmax_h, lmax_o):
    model = build(lmax_h=lmax_h, lmax_o=lmax_o, coefficient_mean=statistics["coefficient_mean"],
                  coefficient_std=statistics["coefficient_std"])
    data = {k: v for k, v in trimer.items() if k != AtomicDataDict.ATOMIC_NUMBERS_KEY}
    assert_AtomicData_equivariant(PerElementFields(model, basis), data)


def test_equivariance_check_catches_a_wrong_layout(trimer, basis, per_element_fields):
    """The check above fails if an element's columns are read with the wrong irreps."""
    model = build()
    wrong = PerElementFields(model, basis)
    wrong.irreps_out["test_H_coefficients"] = o3.Irreps("16x0e")  # H has 1o and 2e functions
    data = {k: v for k, v in trimer.items() if k != AtomicDataDict.ATOMIC_NUMBERS_KEY}
    with pytest.raises(AssertionError):
        assert_AtomicData_equivariant(wrong, data)


# --- dataset ---

def test_dataset_splits_follow_split_indices():
    n = len(ReferenceData(FIXTURE))
    train, val, test = split_indices(n, 3, 2, seed=7)
    keys = ReferenceData(FIXTURE).keys
    parts = {split: DensityDataset(str(FIXTURE), split=split, n_val=3, n_test=2, seed=7)
             for split in ("train", "val", "test")}
    for split, indices in zip(parts, (train, val, test)):
        assert parts[split].keys == [keys[i] for i in indices]
    first = DensityDataset(str(FIXTURE), split="train", n_val=3, n_test=2, seed=7, n_train=4)
    assert first.keys == parts["train"].keys[:4]
    assert DensityDataset(str(FIXTURE), split="val", n_val=3, seed=8).keys != parts["val"].keys
    data = parts["val"][0]
    assert data[KEY].shape == (len(data[AtomicDataDict.POSITIONS_KEY]), 70)


def test_extra_train_files_join_the_training_split_only(tmp_path):
    n = len(ReferenceData(FIXTURE))
    plain = {split: DensityDataset(str(FIXTURE), split=split, n_val=3, seed=7) for split in ("train", "val")}
    extra = {split: DensityDataset(str(FIXTURE), split=split, n_val=3, seed=7, extra_train_files=[str(FIXTURE)],
                                   basis="def2-universal-jfit-decontract") for split in ("train", "val")}
    assert extra["val"].keys == plain["val"].keys  # judged on the same structures
    assert extra["train"].keys == plain["train"].keys + [f"{FIXTURE.name}:{k}" for k in ReferenceData(FIXTURE).keys]
    assert len(extra["train"]) == len(plain["train"]) + n
    np.testing.assert_array_equal(extra["train"][len(plain["train"])][KEY], DensityDataset(str(FIXTURE))[0][KEY])
    fake = tmp_path / "large.h5"
    fake.write_text("not an HDF5 file")
    with pytest.raises(DatasetError, match="large.h5"):
        DensityDataset(str(FIXTURE), split="train", n_val=3, extra_train_files=[str(fake)])


def test_dataset_carries_hirshfeld_matrices_on_request():
    from ase_density.electrostatics import density_hirshfeld_charges
    from nequip_plugin.nn import HIRSHFELD_KEY

    set_global_state()  # float64, as in training
    val = DensityDataset(str(FIXTURE), split="val", n_val=3, seed=7, hirshfeld_grid_level=0)
    reference = ReferenceData(FIXTURE)
    largest = max(len(reference[reference.keys.index(k)]) for k in val.keys)
    for key, data in zip(val.keys, val):
        atoms = reference[reference.keys.index(key)]
        matrix = data[HIRSHFELD_KEY].numpy()
        assert matrix.shape == (len(atoms), largest, 70) and not matrix[:, len(atoms):].any()
        charges = atoms.numbers - np.einsum("abj,bj->a", matrix[:, :len(atoms)], np.nan_to_num(data[KEY].numpy()))
        np.testing.assert_allclose(charges, density_hirshfeld_charges(atoms, atoms.arrays[KEY], reference.basis, 0),
                                   atol=1e-10)
    assert HIRSHFELD_KEY not in DensityDataset(str(FIXTURE), split="val", n_val=3, seed=7)[0]
    from nequip.scripts._workflow_utils import set_workflow_state

    set_workflow_state("package")  # the model's example input carries no training-only field
    try:
        assert HIRSHFELD_KEY not in DensityDataset(str(FIXTURE), split="val", n_val=3, seed=7, hirshfeld_grid_level=0)[0]
    finally:
        set_workflow_state(None)
    with pytest.raises(ValueError, match="hirshfeld_grid_level"):
        DensityDataset(str(FIXTURE), split="val", n_val=3, hirshfeld_grid_level=12)


def test_dataset_refuses_other_basis_and_bad_split():
    with pytest.raises(DatasetError, match="differs"):
        DensityDataset(str(FIXTURE), basis="def2-universal-jfit")
    with pytest.raises(ValueError, match="split"):
        DensityDataset(str(FIXTURE), split="training")
    with pytest.raises(ValueError, match="training structures"):
        DensityDataset(str(FIXTURE), split="train", n_val=2, n_train=11)


# --- losses and metrics ---

def test_coefficient_selection_keeps_one_element_and_l(trimer, basis):
    data = dict(trimer)
    data[KEY] = torch.ones(len(data[AtomicDataDict.POSITIONS_KEY]), basis.width)
    kept = ~torch.isnan(CoefficientSelection(BASIS, TYPES, l_min=2, l_max=2, element="O")(data))
    types = data[AtomicDataDict.ATOM_TYPE_KEY].view(-1)
    expected = torch.zeros_like(kept)
    expected[np.ix_((types == 1).numpy(), columns_of(basis, "O", 2))] = True
    assert torch.equal(kept, expected)


def test_loss_ignores_functions_above_l_max(trimer, basis):
    target = dict(trimer)
    n = len(target[AtomicDataDict.POSITIONS_KEY])
    target[KEY] = torch.randn(n, basis.width, generator=torch.Generator().manual_seed(0))
    pred = dict(target)
    pred[KEY] = torch.zeros(n, basis.width)

    def loss(changed_column=None):
        t = dict(target)
        t[KEY] = target[KEY].clone()
        if changed_column is not None:
            t[KEY][target[AtomicDataDict.ATOM_TYPE_KEY].view(-1) == 1, changed_column] += 1.0
        manager = DensityLoss(BASIS, TYPES, l_max=2, mse=1.0, coulomb=1.0)
        return manager(pred, t)["weighted_sum"].item()

    reference = loss()
    assert loss(columns_of(basis, "O", 3)[0]) == reference
    assert loss(columns_of(basis, "O", 2)[0]) != reference


def test_coulomb_error_is_the_coulomb_energy_of_the_density_error(basis):
    """Δcᵀ J Δc in e3nn layout equals ∫∫ Δρ(r) Δρ(r') / |r - r'| from PySCF's int2c2e in PySCF order."""
    rng = np.random.default_rng(1)
    symbols = ["O", "H"]
    deltas_pyscf = {s: rng.normal(size=basis.element(s).size) for s in symbols}
    expected = []
    for s in symbols:
        J = basis.aux_mole([s], [(0.0, 0.0, 0.0)]).intor("int2c2e")
        expected.append(deltas_pyscf[s] @ J @ deltas_pyscf[s])
    # one atom per element, far apart: the metric is one-centre, per atom
    e3nn_rows = np.concatenate([basis.pyscf_to_e3nn([s], deltas_pyscf[s]) for s in symbols])
    target = {KEY: torch.as_tensor(np.where(np.isnan(e3nn_rows), np.nan, 0.0)),
              AtomicDataDict.ATOM_TYPE_KEY: torch.tensor([TYPES.index(s) for s in symbols])}
    pred = {KEY: torch.as_tensor(np.nan_to_num(e3nn_rows, nan=123.0)),  # padding must not count
            AtomicDataDict.ATOM_TYPE_KEY: target[AtomicDataDict.ATOM_TYPE_KEY]}
    metric = CoulombError(BASIS, TYPES)
    np.testing.assert_allclose(metric(pred, target).item(), np.mean(expected), rtol=1e-12)
    assert all(e > 0 for e in expected)
