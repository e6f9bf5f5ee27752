"""Electrostatics of fitted densities (numpy) and the training losses that see them (torch)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from ase.build import molecule
from ase.units import Debye
from e3nn import o3
from nequip.data import AtomicDataDict, from_dict
from nequip.data.transforms import ChemicalSpeciesToAtomTypeMapper
from nequip.utils.global_state import set_global_state
from scipy.spatial.transform import Rotation

from ase_density import density, electrostatics
from ase_density.dataset import ReferenceData
from ase_density.reference import compute_reference
from nequip_plugin.metrics import (AtomicPopulation, DensityLoss, DensityMetrics, StructureCoulombError,
                                   StructureDipole, WaterCharge)
from nequip_plugin.nn import HIRSHFELD_KEY

FIXTURE = Path(__file__).parent / "data" / "small_water.h5"
BASIS = "def2-universal-jfit-decontract"
TYPES = ["H", "O"]
KEY = "density_coefficients"


@pytest.fixture(scope="module")
def dimer_reference(aux_basis):
    """PBE0/def2-SVP water dimer and its constrained Coulomb fit (a real density)."""
    atoms = molecule("H2O")
    other = molecule("H2O")
    other.rotate(120, "z")
    other.translate([2.9, 0.3, 0.2])
    atoms += other
    return atoms, compute_reference(atoms, basis=aux_basis, save_density_matrix=True)


@pytest.fixture(scope="module")
def labelled():
    """Structures of the test fixture with their fitted coefficients (3-water and larger first)."""
    data = ReferenceData(FIXTURE)
    frames = sorted((data[i] for i in range(len(data))), key=len, reverse=True)
    return data.basis, frames[:3]


# --- numpy: the physics on real densities ---

def test_s_coulomb_matrix_is_pyscf_int2c2e(labelled):
    basis, frames = labelled
    atoms = frames[0]
    matrix, index = electrostatics.s_coulomb_matrix(atoms, basis)
    auxmol = basis.aux_mole(atoms.get_chemical_symbols(), atoms.get_positions())
    offsets = np.cumsum([0] + [basis.element(s).size for s in atoms.get_chemical_symbols()])
    flat = [offsets[a] + j for a, j in index]
    np.testing.assert_allclose(matrix, auxmol.intor("int2c2e")[np.ix_(flat, flat)], atol=1e-7, rtol=1e-7)


def test_dipole_components_add_up_to_the_dft_dipole(dimer_reference, aux_basis):
    atoms, reference = dimer_reference
    parts = electrostatics.dipole_components(atoms, reference.coefficients, aux_basis)
    total = sum(parts.values())
    # the fit is neutral, so its dipole does not depend on the origin of dipole_moment
    np.testing.assert_allclose(total, density.dipole_moment(atoms, reference.coefficients, aux_basis), atol=1e-10)
    # ... and it is the DFT dipole up to the aux-basis fit (0.03-0.05 D measured)
    assert np.linalg.norm(total - reference.dipole) / Debye < 0.1
    # each part is a real, non-trivial piece of a water dimer's ~2.5 D dipole
    assert all(np.linalg.norm(v) / Debye > 0.01 for v in parts.values())


def test_water_charges_are_the_real_charge_transfer(dimer_reference, aux_basis):
    atoms, reference = dimer_reference
    q = electrostatics.water_charges(atoms, reference.coefficients, aux_basis)
    assert abs(q.sum()) < 1e-10  # neutral fit
    assert 1e-4 < abs(q[0]) < 0.05  # a hydrogen-bonded dimer moves a few hundredths of an electron


@pytest.fixture(scope="module")
def dimer_grid(dimer_reference, aux_basis):
    """The dimer's DFT density and its fit on one level-3 grid."""
    atoms, reference = dimer_reference
    grid = density.densities_on_grid(atoms, reference.coefficients, aux_basis,
                                     reference_coefficients=reference.coefficients,
                                     density_matrix=reference.density_matrix, orbital_basis="def2-svp")
    return atoms, reference, grid


def test_free_atoms_hold_their_electrons():
    r = electrostatics._FREE_ATOM_RADII
    for symbol, z in (("H", 1), ("O", 8)):
        rho = electrostatics.free_atom_density(symbol)
        assert np.trapezoid(4 * np.pi * r ** 2 * rho, r) == pytest.approx(z, abs=1e-3)
        assert np.all(np.diff(rho[r > 0.1]) <= 1e-12)  # spherical atoms decay outward


def test_hirshfeld_charges_of_a_real_density(dimer_grid, aux_basis):
    atoms, reference, grid = dimer_grid
    q = electrostatics.hirshfeld_charges(atoms, grid["coords"], grid["weights"], grid["full"])
    assert abs(q.sum()) < 2e-3  # neutral, up to the grid's integration error
    o, h = q[[0, 3]], q[[1, 2, 4, 5]]
    assert np.all((-0.45 < o) & (o < -0.2)) and np.all((0.08 < h) & (h < 0.25))  # Hirshfeld water: O ≈ -0.3
    # the fit changes the density by ~1 %, its Hirshfeld charges by far less than its basis charges
    both = electrostatics.hirshfeld_charges(atoms, grid["coords"], grid["weights"],
                                            np.stack([grid["fit"], grid["full"]], axis=1))
    np.testing.assert_allclose(both[:, 1], q, atol=1e-12)
    assert np.max(np.abs(both[:, 0] - q)) < 3e-3
    # the same density, rotated with its grid, has the same charges
    rotation = Rotation.from_euler("xyz", [0.3, -1.1, 2.0]).as_matrix()
    turned = atoms.copy()
    turned.positions = atoms.positions @ rotation.T
    q_turned = electrostatics.hirshfeld_charges(turned, grid["coords"] @ rotation.T, grid["weights"], grid["full"])
    np.testing.assert_allclose(q_turned, q, atol=1e-10)
    # every water's charge is the charge transfer a hydrogen bond makes: a few hundredths of an electron
    waters = q.reshape(2, 3).sum(axis=1)
    assert 0.005 < abs(waters[0]) < 0.08


def test_hirshfeld_errors_are_zero_against_the_same_density(dimer_grid):
    atoms, _, grid = dimer_grid
    same = {**grid, "model": grid["full"]}
    errors = electrostatics.hirshfeld_errors(atoms, same)
    assert errors["hirshfeld_charge_mae"] < 1e-12 and errors["hirshfeld_water_charge_mae"] < 1e-12
    assert 0 < errors["hirshfeld_charge_mae_fit"] < 3e-3
    no_dft = {k: v for k, v in grid.items() if k != "full"}
    assert all(v is None for v in electrostatics.hirshfeld_errors(atoms, no_dft).values())


def test_hirshfeld_charges_refuse_bad_grids(dimer_grid):
    atoms, _, grid = dimer_grid
    coords, weights, rho = grid["coords"], grid["weights"], grid["full"]
    with pytest.raises(ValueError, match="as many weights"):
        electrostatics.hirshfeld_charges(atoms, coords, weights[:-1], rho)
    with pytest.raises(ValueError, match="NaN"):
        electrostatics.hirshfeld_charges(atoms, coords, weights, np.where(rho > 1, np.nan, rho))
    with pytest.raises(ValueError, match=r"\(n, 3\)"):
        electrostatics.hirshfeld_charges(atoms, coords[:, :2], weights, rho)
    with pytest.raises(ValueError, match="no atoms"):
        electrostatics.hirshfeld_charges(atoms[:0], coords, weights, rho)


def test_hirshfeld_population_matrix_is_the_grid_partition(labelled):
    basis, frames = labelled
    atoms = frames[0]
    c = atoms.arrays[KEY]
    matrix = electrostatics.hirshfeld_population_matrix(atoms, basis, grid_level=1)
    assert matrix.shape == (len(atoms), len(atoms), basis.width)
    # contracted with coefficients it gives the Hirshfeld charges of their density on the same grid
    charges = atoms.numbers - np.einsum("abj,bj->a", matrix, np.nan_to_num(c))
    np.testing.assert_allclose(charges, electrostatics.density_hirshfeld_charges(atoms, c, basis, grid_level=1),
                               atol=1e-10)
    # the shares sum to one: summed over atoms, each column is its function's integral (grid error)
    integrals = np.stack([np.pad(basis.moments(s)[0], (0, basis.width - basis.element(s).size))
                          for s in atoms.get_chemical_symbols()])
    np.testing.assert_allclose(matrix.sum(axis=0), integrals, rtol=1e-3, atol=5e-3)
    assert np.all(matrix[:, ~basis.mask(atoms.get_chemical_symbols())] == 0)  # padding
    with pytest.raises(electrostatics.StructureError, match="unsupported element"):
        electrostatics.hirshfeld_population_matrix(molecule("CH4"), basis)


def test_electrostatic_errors_measure_moved_charge(labelled):
    basis, frames = labelled
    atoms = frames[0]
    ref = atoms.arrays[KEY]
    zero = electrostatics.electrostatic_errors(atoms, ref, ref, basis)
    assert all(v == 0 for k, v in zero.items() if k != "water_charge_reference_mean_abs")
    # move delta electrons from the first water's O to the second water's O through their first s function
    waters = electrostatics.find_waters(atoms)
    n0 = basis.moments("O")[0][0]
    delta = 0.01
    moved = ref.copy()
    moved[waters[0][0], 0] -= delta / n0
    moved[waters[1][0], 0] += delta / n0
    errors = electrostatics.electrostatic_errors(atoms, moved, ref, basis)
    np.testing.assert_allclose(errors["water_charge_mae"], 2 * delta / len(waters), rtol=1e-10)
    z, pos = atoms.numbers, atoms.positions
    centre = [z[w] @ pos[w] / z[w].sum() for w in waters[:2]]
    o0, o1 = pos[waters[0][0]], pos[waters[1][0]]
    np.testing.assert_allclose(errors["dipole_error_net_charges"],
                               np.linalg.norm(delta * (centre[0] - centre[1])) / Debye, rtol=1e-8)
    np.testing.assert_allclose(errors["dipole_error_charge_flow"],
                               np.linalg.norm(delta * ((o0 - centre[0]) - (o1 - centre[1]))) / Debye, rtol=1e-8)
    assert errors["dipole_error_atomic_moments"] < 1e-12


def test_dipole_components_refuse_molecules_that_do_not_cover_the_atoms(labelled):
    basis, frames = labelled
    atoms = frames[0]
    with pytest.raises(ValueError, match="cover every atom"):
        electrostatics.dipole_components(atoms, atoms.arrays[KEY], basis, molecules=[[0, 1, 2]])


# --- torch: the losses ---

def _batch(frames, coefficients, matrices=None):
    """A nequip batch of ``frames`` carrying ``coefficients`` (and the Hirshfeld population
    ``matrices``, zero-padded as ``DensityDataset`` pads them)."""
    set_global_state()
    mapper = ChemicalSpeciesToAtomTypeMapper(TYPES, {s: s for s in TYPES})
    data = []
    width = max(len(a) for a in frames) + 1  # padding beyond the largest structure, as in a dataset
    for k, (atoms, c) in enumerate(zip(frames, coefficients)):
        fields = {AtomicDataDict.POSITIONS_KEY: atoms.get_positions(),
                  AtomicDataDict.ATOMIC_NUMBERS_KEY: atoms.get_atomic_numbers(),
                  AtomicDataDict.PBC_KEY: False, KEY: c}
        if matrices is not None:
            fields[HIRSHFELD_KEY] = np.pad(matrices[k], ((0, 0), (0, width - len(atoms)), (0, 0)))
        data.append(mapper(from_dict(fields)))
    return AtomicDataDict.batched_from_list(data)


@pytest.fixture(scope="module")
def hirshfeld_matrices(labelled):
    basis, frames = labelled
    return [electrostatics.hirshfeld_population_matrix(a, basis, grid_level=1) for a in frames]


def _noisy(frames, scale=2e-3, seed=0):
    rng = np.random.default_rng(seed)
    return [np.where(np.isnan(a.arrays[KEY]), 0.0, a.arrays[KEY] + scale * rng.normal(size=a.arrays[KEY].shape))
            for a in frames]


LOSS_TERMS = {"structure_coulomb": 1.0, "population": 1.0, "dipole": 1.0, "hirshfeld_population": 1.0,
              "hirshfeld_water_charge": 1.0}
LOSS_NAMES = ("structure_coulomb", "population_mse", "dipole_mse", "hirshfeld_population_mse",
              "hirshfeld_water_charge_mse")


def _loss_values(frames, predictions, matrices):
    target = _batch(frames, [a.arrays[KEY] for a in frames], matrices)
    pred = _batch(frames, predictions, matrices)
    manager = DensityLoss(BASIS, TYPES, l_max=4, mse=None, **LOSS_TERMS)
    out = manager(pred, target)
    return {k: out[k].item() for k in LOSS_NAMES}


def test_losses_vanish_at_the_reference_only(labelled, hirshfeld_matrices):
    _, frames = labelled
    exact = _loss_values(frames, [np.nan_to_num(a.arrays[KEY]) for a in frames], hirshfeld_matrices)
    assert all(v == 0 for v in exact.values())
    assert all(v > 0 for v in _loss_values(frames, _noisy(frames), hirshfeld_matrices).values())


def test_losses_match_the_numpy_physics(labelled, hirshfeld_matrices):
    basis, frames = labelled
    predictions = _noisy(frames)
    values = _loss_values(frames, predictions, hirshfeld_matrices)
    dq, dmu, coulomb, dq_hirshfeld, dq_water = [], [], [], [], []
    for atoms, c in zip(frames, predictions):
        ref = atoms.arrays[KEY]
        dq.append(density.atomic_charges(atoms, c, basis) - density.atomic_charges(atoms, ref, basis))
        hirshfeld = [electrostatics.density_hirshfeld_charges(atoms, x, basis, grid_level=1) for x in (c, ref)]
        dq_hirshfeld.append(hirshfeld[0] - hirshfeld[1])
        dq_water.append(dq_hirshfeld[-1][electrostatics.find_waters(atoms)].sum(axis=1))
        origin = atoms.numbers @ atoms.positions / atoms.numbers.sum()
        mu = [density.atomic_dipole_contributions(atoms, x, basis, origin=origin).sum(0) for x in (c, ref)]
        dmu.append(mu[0] - mu[1])
        delta = np.where(np.isnan(ref), 0.0, c - ref)
        matrix, index = electrostatics.s_coulomb_matrix(atoms, basis)
        s = np.array([delta[a, j] for a, j in index])
        energy = s @ matrix @ s
        for i, sym in enumerate(atoms.get_chemical_symbols()):
            ls = basis.element(sym).function_l()
            d = basis.e3nn_to_pyscf([sym], np.where(np.arange(basis.width) < len(ls), delta[i], np.nan)[None])
            d = np.where(ls >= 1, d, 0.0)  # l is the same per column in both layouts
            energy += d @ basis.aux_mole([sym], np.zeros((1, 3))).intor("int2c2e") @ d
        coulomb.append(energy / len(atoms))
    np.testing.assert_allclose(values["population_mse"], np.mean(np.concatenate(dq) ** 2), rtol=1e-10)
    np.testing.assert_allclose(values["dipole_mse"], np.mean(np.concatenate(dmu) ** 2), rtol=1e-10)
    np.testing.assert_allclose(values["structure_coulomb"], np.mean(coulomb), rtol=1e-8)
    np.testing.assert_allclose(values["hirshfeld_population_mse"], np.mean(np.concatenate(dq_hirshfeld) ** 2), rtol=1e-8)
    np.testing.assert_allclose(values["hirshfeld_water_charge_mse"], np.mean(np.concatenate(dq_water) ** 2), rtol=1e-8)


def _rotate(atoms, coefficients, matrix, basis, rotation):
    """(rotated atoms carrying rotated reference coefficients, rotated ``coefficients``, the
    Hirshfeld population ``matrix`` of the rotated atoms). The matrix's columns are functions, so
    they turn as the coefficients do (the exact matrix; one recomputed on the rotated atoms differs
    by the grid's orientation error)."""
    wigner = {sym: o3.Irreps(basis.irreps(sym)).D_from_matrix(torch.as_tensor(rotation)).numpy()
              for sym in set(atoms.get_chemical_symbols())}

    def turn(c):  # (..., n_atoms, width): every atom's functions turned
        out = np.array(c, dtype=float)
        for i, sym in enumerate(atoms.get_chemical_symbols()):
            n = basis.element(sym).size
            out[..., i, :n] = c[..., i, :n] @ wigner[sym].T
        return out

    rotated = atoms.copy()
    rotated.positions = atoms.positions @ rotation.T
    rotated.arrays[KEY] = turn(atoms.arrays[KEY])
    return rotated, turn(coefficients), turn(matrix)


def test_losses_are_invariant_under_rotation_and_permutation(labelled, hirshfeld_matrices):
    basis, frames = labelled
    predictions = _noisy(frames)
    values = _loss_values(frames, predictions, hirshfeld_matrices)
    from scipy.spatial.transform import Rotation

    rotation = Rotation.random(random_state=3).as_matrix()
    rotated, rotated_predictions, rotated_matrices = zip(
        *(_rotate(a, c, m, basis, rotation) for a, c, m in zip(frames, predictions, hirshfeld_matrices)))
    for name, value in _loss_values(list(rotated), list(rotated_predictions), list(rotated_matrices)).items():
        np.testing.assert_allclose(value, values[name], rtol=1e-9, err_msg=name)
    order = [np.random.default_rng(1).permutation(len(a)) for a in frames]
    permuted = [a[o] for a, o in zip(frames, order)]
    permuted_matrices = [m[np.ix_(o, o)] for m, o in zip(hirshfeld_matrices, order)]
    for name, value in _loss_values(permuted, [c[o] for c, o in zip(predictions, order)], permuted_matrices).items():
        np.testing.assert_allclose(value, values[name], rtol=1e-10, err_msg=name)
    # the matrix recomputed on the rotated atoms gives the same charges to the grid's error
    recomputed = electrostatics.hirshfeld_population_matrix(rotated[0], basis, grid_level=1)
    c = np.nan_to_num(rotated[0].arrays[KEY])
    assert np.abs(np.einsum("abj,bj->a", recomputed - rotated_matrices[0], c)).max() < 1e-3


def test_loss_gradients_are_exact(labelled, hirshfeld_matrices):
    _, frames = labelled
    frames = frames[:2]
    target = _batch(frames, [a.arrays[KEY] for a in frames], hirshfeld_matrices[:2])
    start = torch.as_tensor(np.concatenate(_noisy(frames)))
    for name in LOSS_TERMS:
        manager = DensityLoss(BASIS, TYPES, l_max=4, mse=None, **{name: 1.0})

        def loss(x):
            manager.reset()
            pred = dict(target)
            pred[KEY] = x
            return manager(pred, target)["weighted_sum"]

        x = start.clone().requires_grad_(True)
        assert torch.autograd.gradcheck(loss, (x,), eps=1e-6, atol=1e-7, nondet_tol=1e-12), name


def test_validation_metrics_report_electrostatics(labelled, hirshfeld_matrices):
    basis, frames = labelled
    predictions = _noisy(frames)
    metrics = DensityMetrics(BASIS, TYPES, l_max=4, hirshfeld_grid_level=1)
    out = metrics(_batch(frames, predictions, hirshfeld_matrices),
                  _batch(frames, [a.arrays[KEY] for a in frames], hirshfeld_matrices))
    dq = np.concatenate([np.abs(electrostatics.water_charges(a, c, basis) - electrostatics.water_charges(a, a.arrays[KEY], basis))
                         for a, c in zip(frames, predictions)])
    np.testing.assert_allclose(out["water_charge_mae"].item(), dq.mean(), rtol=1e-10)
    errors = []
    for a, c in zip(frames, predictions):
        centre = a.numbers @ a.positions / a.numbers.sum()  # the noise is not neutral: a fixed origin
        mu = [density.atomic_dipole_contributions(a, x, basis, origin=centre).sum(0) for x in (c, a.arrays[KEY])]
        errors.append(np.linalg.norm(mu[0] - mu[1]) / Debye)
    np.testing.assert_allclose(out["dipole_error_debye"].item(), np.mean(errors), rtol=1e-10)
    assert {"charge_mae_H", "charge_mae_O", "structure_coulomb"} <= set(out)
    dq = [np.abs(np.einsum("abj,bj->a", m, c - np.nan_to_num(a.arrays[KEY]))[electrostatics.find_waters(a)].sum(axis=1))
          for a, c, m in zip(frames, predictions, hirshfeld_matrices)]
    np.testing.assert_allclose(out["hirshfeld_water_charge_mae"].item(), np.concatenate(dq).mean(), rtol=1e-10)
    with pytest.raises(KeyError, match="hirshfeld_grid_level"):  # a dataset without the matrices
        metrics(_batch(frames, predictions), _batch(frames, [a.arrays[KEY] for a in frames]))


def test_modifiers_refuse_types_that_are_not_elements():
    with pytest.raises(ValueError, match="not element symbols"):
        AtomicPopulation(BASIS, ["H", "Ow"])
    with pytest.raises(ValueError, match="H and O"):
        WaterCharge(BASIS, ["H"])
    with pytest.raises(ValueError, match=">= 0"):
        DensityLoss(BASIS, TYPES, population=-1.0)
    with pytest.raises(ValueError, match="partition"):
        AtomicPopulation(BASIS, TYPES, partition="mulliken")
    assert StructureDipole(BASIS, TYPES) is not None and StructureCoulombError(BASIS, TYPES) is not None


# --- the charge-equilibration readout ---

def test_charge_equilibration_gives_the_exact_electron_count_per_structure(labelled):
    from nequip.data.transforms import NeighborListTransform

    from nequip_plugin.model import DensityModel

    basis, frames = labelled
    set_global_state()
    model = DensityModel(seed=0, model_dtype="float64", type_names=TYPES, r_max=4.0, lmax_h=1, lmax_o=2,
                         num_layers=1, num_features=4, avg_num_neighbors=4.0, charge_equilibration=True)
    batch = _batch(frames, [a.arrays[KEY] for a in frames])
    batch = AtomicDataDict.batched_from_list([NeighborListTransform(r_max=4.0)(AtomicDataDict.frame_from_batched(batch, i))
                                              for i in range(len(frames))])
    out = model(batch)[KEY].detach().numpy()
    starts = np.cumsum([0] + [len(a) for a in frames])
    for atoms, start in zip(frames, starts):
        c = np.where(np.isnan(atoms.arrays[KEY]), np.nan, out[start:start + len(atoms)])
        assert abs(density.electron_count(atoms, c, basis) - atoms.numbers.sum()) < 1e-10
    # the softness shares differ between atoms of one element: learned, not uniform
    plain = DensityModel(seed=0, model_dtype="float64", type_names=TYPES, r_max=4.0, lmax_h=1, lmax_o=2,
                         num_layers=1, num_features=4, avg_num_neighbors=4.0)
    assert plain(dict(batch))[KEY].shape == out.shape


def test_l_resolved_eps_sees_only_the_perturbed_channel(labelled):
    basis, frames = labelled
    atoms = frames[0]
    ref = atoms.arrays[KEY]
    moved = ref.copy()
    o = [i for i, s in enumerate(atoms.get_chemical_symbols()) if s == "O"][0]
    moved[o, np.flatnonzero(basis.element("O").function_l() == 2)[0]] += 0.01
    errors = density.density_errors(atoms, moved, basis, reference_coefficients=ref, grid_level=2, by_l=True)
    by_l = errors["fit_by_l"]
    assert len(by_l) == basis.lmax + 1 and by_l[2] > 0
    assert all(e == 0 for l, e in enumerate(by_l) if l != 2)
    assert by_l[2] == pytest.approx(errors["fit"], rel=1e-12)  # the whole error is the l = 2 channel's
