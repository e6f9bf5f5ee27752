"""DensityCalculator on the tiny packaged model: ASE contract, symmetry, exact electron count,
cube files, MD with a base calculator, invalid input."""

from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule
from ase.calculators.calculator import PropertyNotImplementedError
from ase.units import Bohr

from ase_density import density

TINY_MODEL = Path(__file__).parent / "data" / "tiny_water.nequip.zip"


@pytest.fixture(scope="module")
def calc():
    from ase_density.calculator import DensityCalculator

    return DensityCalculator(model=TINY_MODEL, trust_model=True)


@pytest.fixture
def trimer(small_data):
    atoms = small_data[0]
    del atoms.arrays["density_coefficients"]
    atoms.info.clear()
    return atoms


def _predict(calc, atoms):
    atoms = atoms.copy()
    atoms.calc = calc
    return atoms.calc.get_density_coefficients(atoms), atoms.get_dipole_moment(), atoms.get_charges()


def _wigner(basis, symbol, R):
    import torch
    from e3nn import o3

    return o3.Irreps(basis.irreps(symbol)).D_from_matrix(torch.tensor(R)).numpy()


def test_rotation_equivariance(calc, trimer):
    from scipy.spatial.transform import Rotation

    R = Rotation.random(random_state=7).as_matrix()
    c, mu, q = _predict(calc, trimer)
    rotated = trimer.copy()
    rotated.positions = trimer.positions @ R.T
    c_rot, mu_rot, q_rot = _predict(calc, rotated)
    for i, sym in enumerate(trimer.get_chemical_symbols()):
        n = calc.basis.element(sym).size
        np.testing.assert_allclose(c_rot[i, :n], _wigner(calc.basis, sym, R) @ c[i, :n], atol=2e-5 * np.abs(c[i, :n]).max())
        assert np.all(np.isnan(c_rot[i, n:]))
    np.testing.assert_allclose(mu_rot, R @ mu, atol=1e-5)
    np.testing.assert_allclose(q_rot, q, atol=1e-5)


def test_permutation_invariance(calc, trimer):
    perm = np.random.default_rng(3).permutation(len(trimer))
    c, mu, q = _predict(calc, trimer)
    c_p, mu_p, q_p = _predict(calc, trimer[perm])
    np.testing.assert_allclose(c_p, c[perm], atol=1e-5, equal_nan=True)
    np.testing.assert_allclose(q_p, q[perm], atol=1e-6)
    np.testing.assert_allclose(mu_p, mu, atol=1e-6)


def test_exact_electron_count_by_minimal_scalar_correction(calc, trimer):
    atoms = trimer.copy()
    atoms.calc = calc
    n = atoms.get_atomic_numbers().sum()
    assert calc.get_electron_count(atoms) == pytest.approx(n, abs=1e-6)
    raw = calc.get_density_coefficients(atoms, corrected=False)
    corrected = calc.get_density_coefficients(atoms)
    assert abs(calc.get_electron_count(atoms, corrected=False) - n) > 1e-6  # the model alone misses N
    assert np.sum(atoms.get_charges()) == pytest.approx(0.0, abs=1e-6)
    # only scalar (l = 0) coefficients change, in the direction J_Z^-1 q_Z of each element
    for i, sym in enumerate(atoms.get_chemical_symbols()):
        el = calc.basis.element(sym)
        delta = (corrected - raw)[i, :el.size]
        assert np.all(delta[el.function_l() > 0] == 0)
        u = density.correction_directions(calc.basis)[sym]
        np.testing.assert_allclose(delta, (delta @ u) / (u @ u) * u, atol=1e-12)


def _attached(calc, atoms):
    """A copy of ``atoms`` with ``calc`` (reset) attached."""
    atoms = atoms.copy()
    atoms.calc = calc
    calc.reset()
    return atoms


def _count_calls(monkeypatch, module, name) -> list:
    """Wrap ``module.name`` so that every call appends to the returned list."""
    calls, original = [], getattr(module, name)
    monkeypatch.setattr(module, name, lambda *a, **k: calls.append(1) or original(*a, **k))
    return calls


def test_caching_and_recompute_on_change(calc, trimer, monkeypatch):
    import nequip_plugin.inference as inference

    atoms = _attached(calc, trimer)
    calls = _count_calls(monkeypatch, inference, "predict_coefficients_batch")
    mu = atoms.get_dipole_moment()
    atoms.get_charges()
    calc.get_property("density_coefficients", atoms)
    assert len(calls) == 1
    atoms.positions[0, 0] += 0.05
    assert not np.allclose(atoms.get_dipole_moment(), mu)
    assert len(calls) == 2


def test_batch_matches_single(calc, small_data):
    from ase_density.prediction import predict_frames

    frames = [small_data[i] for i in (0, 4, 8)]
    batch = list(predict_frames(calc.model, frames, batch_size=3, basis=calc.basis))
    assert [f.label for f in batch] == [0, 1, 2]
    for atoms, res in zip(frames, batch):
        c, mu, q = _predict(calc, atoms)
        np.testing.assert_allclose(res.coefficients, c, atol=1e-5, equal_nan=True)
        np.testing.assert_allclose(density.dipole_moment(atoms, res.coefficients, calc.basis), mu, atol=1e-6)


def test_layouts_units_and_density(calc):
    atoms = molecule("H2O")
    atoms.calc = calc
    flat = calc.get_density_coefficients(atoms, layout="pyscf")
    np.testing.assert_allclose(calc.basis.pyscf_to_e3nn(atoms.get_chemical_symbols(), flat),
                               calc.get_density_coefficients(atoms), atol=1e-12, equal_nan=True)
    points = [[0.0, 0.0, 0.0], [0.0, 0.5, 0.3]]
    np.testing.assert_allclose(calc.get_density(points), calc.get_density(points, unit="e/Bohr^3") / Bohr**3)
    with pytest.raises(ValueError, match="unit"):
        calc.get_density(points, unit="bogus")
    with pytest.raises(PropertyNotImplementedError):
        calc.get_property("magmom", atoms)


def test_cube_round_trip(calc, tmp_path):
    import ase.io
    from ase.io.cube import read_cube_data

    atoms = molecule("H2O")
    atoms.calc = calc
    values = calc.write_cube(tmp_path / "w.cube", spacing=0.25, margin=2.0)
    back = ase.io.read(tmp_path / "w.cube")
    data, _ = read_cube_data(str(tmp_path / "w.cube"))
    assert back.get_chemical_symbols() == atoms.get_chemical_symbols()
    np.testing.assert_allclose(data, values, rtol=1e-4)
    np.testing.assert_allclose(back.positions - back.positions[0], atoms.positions - atoms.positions[0], atol=1e-4)


def test_without_base_energy_and_forces_are_not_implemented(calc):
    atoms = molecule("H2O")
    atoms.calc = calc
    for getter in (atoms.get_potential_energy, atoms.get_forces, atoms.get_stress):
        with pytest.raises(PropertyNotImplementedError):
            getter()


def test_md_with_tip3p_base_records_charges_and_dipoles(trimer, tmp_path):
    from ase.calculators.tip3p import TIP3P
    from ase.io.trajectory import Trajectory
    from ase.md.verlet import VelocityVerlet
    from ase.units import fs

    from ase_density.calculator import DensityCalculator

    atoms = trimer.copy()
    atoms.calc = DensityCalculator(model=TINY_MODEL, base=TIP3P(rc=20.0), trust_model=True)
    assert atoms.get_potential_energy() == pytest.approx(TIP3P(rc=20.0).get_potential_energy(trimer.copy()))
    with pytest.raises(PropertyNotImplementedError):
        atoms.get_stress()  # TIP3P has no stress
    with Trajectory(tmp_path / "md.traj", "w", atoms) as traj:
        dyn = VelocityVerlet(atoms, timestep=0.5 * fs)
        dyn.attach(traj.write, interval=1)
        dyn.run(3)
    frames = Trajectory(tmp_path / "md.traj")
    assert len(frames) == 4
    for frame in frames:
        charges, dipole = frame.get_charges(), frame.get_dipole_moment()  # stored results
        fresh = frame.copy()
        fresh.calc = DensityCalculator(model=TINY_MODEL, trust_model=True)
        np.testing.assert_allclose(charges, fresh.get_charges(), atol=1e-6)
        np.testing.assert_allclose(dipole, fresh.get_dipole_moment(), atol=1e-6)
    assert not np.allclose(frames[0].positions, frames[-1].positions)


def test_hirshfeld_charges_on_request(calc, trimer, monkeypatch):
    from ase_density import electrostatics
    from ase_density.calculator import DensityCalculator

    atoms = _attached(calc, trimer)
    calls = _count_calls(monkeypatch, electrostatics, "hirshfeld_charges")
    atoms.get_charges()
    assert calls == [] and "hirshfeld_charges" not in calc.results  # only computed when asked for
    q = calc.get_property("hirshfeld_charges", atoms)
    np.testing.assert_array_equal(calc.get_property("hirshfeld_charges", atoms), q)
    assert calls == [1]  # once per geometry
    assert q.shape == (len(atoms),) and abs(q.sum()) < 5e-3  # the corrected density is neutral
    symbols = np.array(atoms.get_chemical_symbols())
    assert np.all(q[symbols == "O"] < 0) and np.all(q[symbols == "H"] > 0)
    rotated = atoms.copy()
    rotated.rotate(70, "x", center="COM")
    rotated.calc = calc
    # Hirshfeld integration on a rotated PySCF grid: the same charges up to the grid's error
    np.testing.assert_allclose(calc.get_property("hirshfeld_charges", rotated), q, atol=2e-4)
    with pytest.raises(ValueError, match="hirshfeld_grid_level"):
        DensityCalculator(model=TINY_MODEL, trust_model=True, hirshfeld_grid_level=12)


@pytest.mark.parametrize("make, message", [
    (lambda: molecule("CH4"), "unsupported element"),
    (lambda: Atoms("OHH", positions=[[0, 0, 0], [np.nan, 0, 0], [0, 1, 0]]), "non-finite"),
    (lambda: Atoms("OHH", positions=[[0, 0, 0], [0.1, 0, 0], [0, 1, 0]]), "overlapping"),
    (lambda: Atoms("OHH", positions=[[0, 0, 0], [1, 0, 0], [0, 1, 0]], cell=[5, 5, 5], pbc=True), "periodic"),
    (lambda: Atoms(), "empty"),
    (lambda: Atoms("OH", positions=[[0, 0, 0], [1, 0, 0]]), "odd number of electrons"),
])
def test_invalid_input(calc, make, message):
    from ase_density.validation import StructureError

    atoms = make()
    atoms.calc = calc
    with pytest.raises(StructureError, match=message):
        atoms.get_dipole_moment()


def test_missing_default_model_and_mismatched_layout(calc, tmp_path, monkeypatch):
    from ase_density import calculator
    from ase_density.basis import AuxBasis

    monkeypatch.setattr(calculator, "DEFAULT_MODEL", tmp_path / "default.nequip.zip")
    with pytest.raises(calculator.ModelError, match="model="):
        calculator.DensityCalculator()
    with pytest.raises(calculator.ModelError, match="does not exist"):
        calculator.DensityCalculator(model=tmp_path / "nope.nequip.zip")
    with pytest.raises(calculator.ModelError, match="aux basis"):
        calculator.check_model_layout(calc.model, AuxBasis.load("def2-universal-jfit"))
