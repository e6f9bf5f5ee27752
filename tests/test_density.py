import ase.io
from ase.io.cube import read_cube_data
import numpy as np
import pytest
from ase.units import Bohr

from ase_density import density


def test_density_functions_on_a_real_fit(water, water_reference, aux_basis):
    c = water_reference.coefficients
    assert abs(density.electron_count(water, c, aux_basis) - 10) < 1e-10
    q = density.atomic_charges(water, c, aux_basis)
    assert abs(q.sum()) < 1e-10 and q[0] < -0.1 and (q[1:] > 0.05).all()  # O negative, H positive
    # analytic dipole = numerical first moment of the fitted density on a fine grid
    coords, weights = density.integration_grid(water, level=5)
    rho = density.density_on_points(water, c, aux_basis, coords * Bohr)
    numeric = (water.numbers @ (water.positions / Bohr) - (weights * rho) @ coords) * Bohr
    assert np.abs(numeric - density.dipole_moment(water, c, aux_basis)).max() < 1e-4
    # the same molecule displaced: dipole of a neutral system does not depend on the origin
    moved = water.copy()
    moved.translate([3.0, -2.0, 7.0])
    assert np.allclose(density.dipole_moment(moved, c, aux_basis), density.dipole_moment(water, c, aux_basis), atol=1e-10)


def test_density_error(water, water_reference, aux_basis):
    c = water_reference.coefficients
    assert density.density_error(water, c, aux_basis, reference_coefficients=c) == 0.0
    eps_full = density.density_error(water, c, aux_basis, density_matrix=water_reference.density_matrix,
                                     orbital_basis="def2-SVP")
    # independently: PySCF's own grid, orbital density (numint.eval_rho) and aux functions, unblocked
    from pyscf import dft, gto

    mol = gto.M(atom=[[s, p] for s, p in zip(water.get_chemical_symbols(), water.positions)], basis="def2-SVP",
                unit="Angstrom", verbose=0)
    grids = dft.gen_grid.Grids(mol)
    grids.level = 3
    grids.build()
    rho_full = dft.numint.eval_rho(mol, mol.eval_gto("GTOval_sph", grids.coords), water_reference.density_matrix)
    auxmol = aux_basis.aux_mole(water.get_chemical_symbols(), water.positions)
    rho_fit = auxmol.eval_gto("GTOval_sph", grids.coords) @ aux_basis.e3nn_to_pyscf(water.get_chemical_symbols(), c)
    independent = 100 * np.sum(grids.weights * np.abs(rho_fit - rho_full)) / np.sum(grids.weights * rho_full)
    assert eps_full == pytest.approx(independent, rel=1e-3) and 0.5 < eps_full < 2.0
    scaled = c * 1.01
    assert abs(density.density_error(water, scaled, aux_basis, reference_coefficients=c) - 1.0) < 1e-6
    with pytest.raises(ValueError, match="exactly one reference"):
        density.density_error(water, c, aux_basis)
    with pytest.raises(ValueError, match="AOs"):
        density.density_error(water, c, aux_basis, density_matrix=np.eye(3), orbital_basis="def2-SVP")
    # both references on one grid: the same numbers as one at a time
    both = density.density_errors(water, scaled, aux_basis, reference_coefficients=c,
                                  density_matrix=water_reference.density_matrix, orbital_basis="def2-SVP")
    assert both["fit"] == pytest.approx(1.0, abs=1e-6)
    assert both["full"] == pytest.approx(density.density_error(
        water, scaled, aux_basis, density_matrix=water_reference.density_matrix, orbital_basis="def2-SVP"), rel=1e-12)
    with pytest.raises(ValueError, match="give a reference"):
        density.density_errors(water, c, aux_basis)
    with pytest.raises(ValueError, match="orbital_basis"):
        density.density_errors(water, c, aux_basis, density_matrix=water_reference.density_matrix)


def test_cube_round_trip(tmp_path, water, water_reference, aux_basis):
    path = tmp_path / "w.cube"
    values = density.write_cube(path, water, water_reference.coefficients, aux_basis, spacing=0.25, margin=2.5)
    data, atoms = read_cube_data(path)
    assert np.allclose(ase.io.read(path).positions, water.positions, atol=1e-5)
    assert data.shape == values.shape and np.allclose(data, values, rtol=1e-5, atol=1e-12)
    assert np.allclose(atoms.positions, water.positions, atol=1e-5)
    with open(path) as fh:
        lines = fh.readlines()
    origin = np.array(lines[2].split()[1:4], float) * Bohr
    step = np.array(lines[3].split()[1:4], float) * Bohr
    assert np.allclose(origin, water.positions.min(axis=0) - 2.5, atol=1e-5) and np.allclose(step, [0.25, 0, 0], atol=1e-5)
    # the value at voxel (i, j, k) is the density at origin + spacing * (i, j, k)
    i, j, k = np.unravel_index(np.argmax(values), values.shape)
    point = origin + 0.25 * np.array([i, j, k])
    assert np.isclose(density.density_on_points(water, water_reference.coefficients, aux_basis, point[None])[0], data[i, j, k], rtol=1e-5)
    # integrates to ~10 electrons on this coarse grid
    assert abs(values.sum() * (0.25 / Bohr) ** 3 - 10) < 0.5


def test_bad_coefficients(water, aux_basis):
    with pytest.raises(ValueError, match="do not match"):
        density.electron_count(water, np.zeros((2, aux_basis.width)), aux_basis)
    c = np.full((3, aux_basis.width), np.nan)
    with pytest.raises(ValueError, match="NaN"):
        density.electron_count(water, c, aux_basis)
    with pytest.raises(ValueError, match="unit"):
        density.dipole_moment(water, np.nan_to_num(c), aux_basis, unit="furlong")
