"""Domain checks: structures that are not water clusters, charged or periodic systems, non-finite
density points, cube grids larger than memory and out-of-range reference settings are refused
with clear messages."""

from pathlib import Path

import ase.io
from ase.io.cube import read_cube_data
import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule

from ase_density.calculator import DensityCalculator
from ase_density.cli import main
from ase_density.dataset import ReferenceData
from ase_density.reference import ReferenceSettings
from ase_density.trajectory import TrajectoryError, analyze_trajectory
from ase_density.validation import (CUBE_BYTES_PER_POINT, StructureError, check_cube_grid, molecules,
                                    validate_atoms)

TINY_MODEL = Path(__file__).parent / "data" / "tiny_water.nequip.zip"


def _dimer():
    a, b = molecule("H2O"), molecule("H2O")
    b.translate([0.0, 0.0, 3.0])
    return a + b


def _plain(name):
    """ASE's g2 molecule without its initial magnetic moments (O2 and OH carry them)."""
    atoms = molecule(name)
    return Atoms(atoms.get_chemical_symbols(), positions=atoms.positions)


def _hydronium_hydroxide():
    """A neutral, closed-shell H3O+ ... OH- ion pair, 2.6 Å O–O."""
    return Atoms("OHHHOH", positions=[[0, 0, 0], [0.97, 0, 0.3], [-0.49, 0.84, 0.3], [-0.49, -0.84, 0.3],
                                      [0, 0, -2.6], [0.9, 0, -2.9]])


@pytest.fixture(scope="module")
def calc():
    return DensityCalculator(model=TINY_MODEL, trust_model=True)


NOT_WATER = [
    (lambda: _plain("H2"), r"atoms \[0, 1\] form H2, not H2O"),
    (lambda: Atoms("O2", positions=[[0, 0, 0], [0, 0, 1.21]]), r"atoms \[0, 1\] form O2, not H2O"),
    (lambda: Atoms("O"), r"atoms \[0\] form O, not H2O"),
    (lambda: _plain("H2O2"), r"atoms \[0, 1, 2, 3\] form H2O2, not H2O"),
    (_hydronium_hydroxide, r"atoms \[0, 1, 2, 3\] form H3O, not H2O \(and 1 more molecule"),
    (lambda: _dimer() + Atoms("H2", positions=[[5, 0, 0], [5, 0, 0.74]]), r"atoms \[6, 7\] form H2, not H2O"),
]


@pytest.mark.parametrize("make,message", NOT_WATER)
def test_non_water_is_refused_naming_the_atoms(make, message):
    with pytest.raises(StructureError, match=f"frame 4: {message}.*--allow-non-water"):
        validate_atoms(make(), label="frame 4")
    validate_atoms(make(), allow_non_water=True)  # nothing else is wrong with them


def test_molecules_by_connectivity():
    assert [m.tolist() for m in molecules(_dimer())] == [[0, 1, 2], [3, 4, 5]]
    validate_atoms(_dimer())
    assert [m.tolist() for m in molecules(_hydronium_hydroxide())] == [[0, 1, 2, 3], [4, 5]]


def test_charged_magnetic_and_periodic_systems_are_refused():
    water = molecule("H2O")
    water.set_initial_charges([1, 0, 0])
    with pytest.raises(StructureError, match=r"total charge \+1 e \(initial charges\); only neutral"):
        validate_atoms(water, allow_non_water=True)
    hydroxide = _plain("OH")
    hydroxide.set_initial_charges([-1, 0])  # OH-: ten electrons, closed shell, but charged
    with pytest.raises(StructureError, match="total charge -1 e"):
        validate_atoms(hydroxide)
    with pytest.raises(StructureError, match=r"initial magnetic moments on atom\(s\) \[0, 1\]"):
        validate_atoms(molecule("O2"), allow_non_water=True)  # ASE's O2 is the triplet
    box = _dimer()
    box.set_cell([6.0, 6.0, 8.0])
    box.set_pbc(True)
    with pytest.raises(StructureError, match="periodic boundary conditions are not supported"):
        validate_atoms(box)


def test_calculator_refuses_non_water_unless_allowed(calc):
    h2 = _plain("H2")
    h2.calc = calc
    with pytest.raises(StructureError, match="form H2, not H2O"):
        h2.get_dipole_moment()
    h2.calc = DensityCalculator(model=TINY_MODEL, trust_model=True, allow_non_water=True)
    assert h2.calc.get_electron_count(h2) == pytest.approx(2.0, abs=1e-8)  # corrected, at the user's request


def test_cli_predict_and_analyze_refuse_non_water(tmp_path, capsys):
    frames = [molecule("H2O"), _dimer(), _plain("H2"), molecule("H2O")]
    ase.io.write(tmp_path / "in.xyz", frames)
    assert main(["predict", str(tmp_path / "in.xyz"), "--model", str(TINY_MODEL), "--trust-model",
                 "-o", str(tmp_path / "p.h5"), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "frame 2: atoms [0, 1] form H2, not H2O" in err[0]
    assert main(["predict", str(tmp_path / "in.xyz"), "--model", str(TINY_MODEL), "--trust-model", "--allow-non-water",
                 "-o", str(tmp_path / "q.h5")]) == 0
    assert "predictions for 4 new frames" in capsys.readouterr().out
    traj = tmp_path / "md.extxyz"
    ase.io.write(traj, [molecule("H2O"), molecule("H2O"), _plain("H2O2")])
    with pytest.raises(TrajectoryError, match=r"frame 2: atoms \[0, 1, 2, 3\] form H2O2"):
        analyze_trajectory(traj, tmp_path / "a.h5", model=TINY_MODEL, trust_model=True, progress=False)
    summary = analyze_trajectory(traj, tmp_path / "b.h5", model=TINY_MODEL, trust_model=True, progress=False,
                                 allow_non_water=True)
    assert summary["n_frames"] == 3 and summary["frames_without_whole_waters"] == 1


def test_density_at_non_finite_points_is_an_error(calc):
    water = molecule("H2O")
    rho = calc.get_density([[0.0, 0.0, 0.0], [0.0, 0.0, 0.5]], water)
    assert rho.shape == (2,) and np.all(rho > 0)
    for bad in ([[np.nan, 0, 0]], [[0, 0, 0], [0, np.inf, 0]]):
        with pytest.raises(ValueError, match=r"points \[\d\] are not finite"):
            calc.get_density(bad, water)
    with pytest.raises(ValueError, match=r"shape \(n, 3\)"):
        calc.get_density([[0.0, 0.0]], water)


def test_cube_grid_larger_than_memory_is_refused(calc, tmp_path):
    far = _dimer()
    far.positions[3:] += 200.0  # one water 200 Å away along each axis: ~1.1e9 points at 0.2 Å
    with pytest.raises(ValueError, match=r"cube grid of .* points .*spacing 0.2 Å, margin 3 Å.*GB"):
        calc.write_cube(tmp_path / "far.cube", atoms=far, spacing=0.2)
    assert not (tmp_path / "far.cube").exists()
    # the limit is half of the available memory
    check_cube_grid((100, 100, 100), 0.2, 3.0, available=2 * 10**6 * CUBE_BYTES_PER_POINT)
    with pytest.raises(ValueError, match="more than half"):
        check_cube_grid((100, 100, 101), 0.2, 3.0, available=2 * 10**6 * CUBE_BYTES_PER_POINT)
    values = calc.write_cube(tmp_path / "near.cube", atoms=_dimer(), spacing=0.4)
    assert np.allclose(read_cube_data(tmp_path / "near.cube")[0], values)


@pytest.mark.parametrize("field,value", [("grid_level", -3), ("grid_level", 10), ("grid_level", 2.5), ("conv_tol", 0.0),
                                         ("conv_tol", float("nan")), ("max_cycle", 0), ("xc", " "), ("basis", "")])
def test_reference_settings_out_of_range_are_refused(field, value):
    with pytest.raises(ValueError, match=f"^{field} must"):
        ReferenceSettings(**{field: value})


def test_label_refuses_a_bad_grid_level_and_resumes_with_the_functional_in_any_case(tmp_path, capsys):
    ase.io.write(tmp_path / "w.xyz", molecule("H2O"))
    out = tmp_path / "w.h5"
    args = ["label", str(tmp_path / "w.xyz"), "-o", str(out), "--basis", "sto-3g", "--no-fit-error"]
    with pytest.raises(SystemExit) as exit_info:
        main(args + ["--grid-level", "-3"])
    assert exit_info.value.code == 2 and "--grid-level: -3 is out of range" in capsys.readouterr().err
    assert not out.exists()
    assert main(args + ["--xc", "HF"]) == 0 and "1 labelled" in capsys.readouterr().out
    assert ReferenceSettings(xc="hf") == ReferenceSettings(xc="HF")
    assert main(args + ["--xc", "hf"]) == 0  # the same functional: resumed, nothing redone
    assert "0 labelled, 1 already done" in capsys.readouterr().out
    assert ReferenceData(out).settings["xc"] == "HF"


def test_label_records_non_water_as_failure_unless_allowed(tmp_path):
    """A real HF/STO-3G run: an H2 molecule is refused by default and labelled on request."""
    from ase_density.dataset import ReferenceData
    from ase_density.labelling import label_structures
    from ase_density.reference import ReferenceSettings

    h2 = _plain("H2")
    settings = ReferenceSettings(xc="HF", basis="sto-3g", grid_level=1)
    summary = label_structures([h2], tmp_path / "refused.h5", settings, progress=False)
    assert summary["done"] == 0 and "not H2O" in summary["failed"][0][1]
    summary = label_structures([h2], tmp_path / "allowed.h5", settings, progress=False, allow_non_water=True)
    assert summary["done"] == 1 and not summary["failed"]
    assert ReferenceData(tmp_path / "allowed.h5")[0].get_chemical_formula() == "H2"
