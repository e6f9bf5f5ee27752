import numpy as np

from ase_density.clusters import cluster_problem, sample_cluster, sample_clusters
from ase_density.validation import find_waters, validate_atoms


def test_sampling_is_deterministic_and_seeded():
    a = list(sample_clusters(3, (2, 4), seed=5))
    b = list(sample_clusters(3, (2, 4), seed=5))
    c = list(sample_clusters(3, (2, 4), seed=6))
    assert all(np.array_equal(x.positions, y.positions) for x, y in zip(a, b))
    assert not all(len(x) == len(y) and np.allclose(x.positions, y.positions) for x, y in zip(a, c))
    # resuming at cluster k gives the same cluster k
    assert np.array_equal(next(sample_clusters(3, (2, 4), seed=5, start=2)).positions, a[2].positions)
    assert all(2 <= len(x) // 3 <= 4 for x in a)


def test_clusters_are_whole_physical_and_flexible():
    atoms = sample_cluster(8, seed=1)
    validate_atoms(atoms, require_waters=True)
    assert cluster_problem(atoms.positions) is None
    waters = find_waters(atoms)
    pos = atoms.positions
    r_oh = np.linalg.norm(pos[waters[:, 1:]] - pos[waters[:, :1]], axis=-1).ravel()
    v1, v2 = pos[waters[:, 1]] - pos[waters[:, 0]], pos[waters[:, 2]] - pos[waters[:, 0]]
    angles = np.degrees(np.arccos(np.sum(v1 * v2, 1) / np.linalg.norm(v1, axis=1) / np.linalg.norm(v2, axis=1)))
    assert 0.88 < r_oh.min() and r_oh.max() < 1.07
    assert r_oh.std() > 0.01 and angles.std() > 1.0  # not one rigid geometry
    assert 89 < angles.min() and angles.max() < 120


def test_cluster_problems_are_detected():
    atoms = sample_cluster(3, seed=2)
    far = atoms.positions.copy()
    far[6:9] += [20.0, 0, 0]
    assert "fragments" in cluster_problem(far)
    close = atoms.positions.copy()
    close[3:6] = close[0:3] + [1.0, 0, 0]
    assert "too close" in cluster_problem(close)


def test_large_droplets_are_fast_whole_and_clash_free():
    from ase_density.clusters import water_droplet

    atoms = water_droplet(200, seed=3)
    assert len(atoms) == 600 and np.array_equal(atoms.positions, water_droplet(200, seed=3).positions)
    validate_atoms(atoms, require_waters=True)
    assert cluster_problem(atoms.positions) is None
    # liquid density: the droplet radius is close to that of 200 waters at 30 Å^3 each
    radius = np.linalg.norm(atoms.positions[::3], axis=1).max()
    assert 10.0 < radius < 14.0
