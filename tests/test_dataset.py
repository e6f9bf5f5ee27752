import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule

from ase_density.basis import AuxBasis
from ase_density.dataset import DatasetError, ReferenceData, ReferenceWriter, split_indices, structure_key
from ase_density.labelling import label_structures
from ase_density.reference import ReferenceSettings

HF = ReferenceSettings(xc="HF", basis="sto-3g", conv_tol=1e-8)


def waters(n, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        a = molecule("H2O")
        a.rotate(rng.uniform(0, 360), rng.normal(size=3))
        a.positions[1] += rng.normal(0, 0.03, 3)
        out.append(a)
    return out


def test_label_write_read_round_trip(tmp_path, aux_basis):
    structures = waters(3)
    path = tmp_path / "w.h5"
    summary = label_structures(structures, path, HF, save_density_matrix=True, progress=False)
    assert summary["done"] == 3 and not summary["failed"]
    data = ReferenceData(path)
    assert len(data) == 3 and data.validate() == []
    assert data.settings == HF.as_dict() and data.basis.irreps("O") == aux_basis.irreps("O")
    by_key = {a.info["key"]: a for a in data}
    for i, s in enumerate(structures):
        a = by_key[structure_key(i, s)]
        assert np.array_equal(a.positions, s.positions) and np.array_equal(a.numbers, s.numbers)
        c = a.arrays["density_coefficients"]
        assert np.isnan(c[1:, 16:]).all() and np.isfinite(c[0]).all() and abs(a.info["n_electrons_fit"] - 10) < 1e-9
        j = data.keys.index(a.info["key"])
        dm = data.density_matrix(j)
        assert dm.shape == (7, 7) and np.allclose(dm, dm.T) and abs(np.trace(dm @ _overlap(s)) - 10) < 1e-8
    with h5py.File(path) as f:
        assert f.attrs["format"] == "ase-density-reference" and "pyscf" in f.attrs["versions"]
        assert "eV" in f.attrs["units"]
    # running again does nothing; a new structure is added without duplicating
    again = label_structures(structures + waters(1, seed=9), path, HF, progress=False)
    assert again == {"done": 1, "skipped": 3, "restarted": 0, "failed": []}
    assert len(ReferenceData(path)) == 4 and len(set(ReferenceData(path).keys)) == 4


def _overlap(atoms):
    from ase_density.basis import build_mole

    return build_mole(atoms.get_chemical_symbols(), atoms.positions, "sto-3g").intor("int1e_ovlp")


def test_failures_are_recorded_and_batch_goes_on(tmp_path):
    bad = Atoms("OH2", positions=[[0, 0, 0], [0.2, 0, 0], [0, 1, 0]])
    summary = label_structures([waters(1)[0], bad, molecule("CH4")], tmp_path / "f.h5", HF, progress=False)
    assert summary["done"] == 1 and len(summary["failed"]) == 2
    data = ReferenceData(tmp_path / "f.h5")
    reasons = dict(data.failures)
    assert "overlapping" in reasons[structure_key(1, bad)] and "unsupported element" in reasons[structure_key(2, molecule("CH4"))]
    assert len(data) == 1


def test_other_settings_refuse_to_append(tmp_path):
    path = tmp_path / "s.h5"
    label_structures(waters(1), path, HF, progress=False)
    before = open(path, "rb").read()
    with pytest.raises(DatasetError, match="other settings"):
        label_structures(waters(1), path, ReferenceSettings(xc="HF", basis="6-31g"), progress=False)
    with pytest.raises(DatasetError, match="other auxbasis"):
        ReferenceWriter(path, HF.as_dict(), AuxBasis.load("def2-universal-jkfit"))
    assert open(path, "rb").read() == before and len(ReferenceData(path)) == 1


def test_not_ours_truncated_and_missing_files(tmp_path):
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = 1
    with pytest.raises(DatasetError, match="not an ase-density"):
        ReferenceData(tmp_path / "other.h5")
    (tmp_path / "text.h5").write_text("hello")
    with pytest.raises(DatasetError, match="truncated or corrupt"):
        ReferenceData(tmp_path / "text.h5")
    path = tmp_path / "t.h5"
    label_structures(waters(2), path, HF, progress=False)
    data = open(path, "rb").read()
    (tmp_path / "cut.h5").write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError):
        ReferenceData(tmp_path / "cut.h5")
    with pytest.raises(DatasetError, match="no such file"):
        ReferenceData(tmp_path / "missing.h5")


def test_validate_reports_inconsistent_records(tmp_path):
    path = tmp_path / "v.h5"
    label_structures(waters(2), path, HF, progress=False)
    with h5py.File(path, "a") as f:
        f["atoms/coefficients"][0, 3] = np.nan  # a hole where O has a function
        f["atoms/coefficients"][1, 40] = 1.0  # a number in H's padding
    problems = ReferenceData(path).validate()
    assert any("missing (NaN)" in p for p in problems) and any("padding" in p for p in problems)


def test_sigkill_then_resume(tmp_path):
    """Kill the labelling process hard; rerunning completes with no duplicates or damage."""
    import ase.io

    structures = waters(24, seed=4)  # enough work that the kill lands mid-run on a fast machine too
    ase.io.write(tmp_path / "in.xyz", structures)
    cmd = [sys.executable, "-m", "ase_density.cli", "label", str(tmp_path / "in.xyz"), "-o", str(tmp_path / "k.h5"),
           "--xc", "HF", "--basis", "def2-SVP", "--no-fit-error"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    n = 0
    while time.time() < deadline and n < 2:
        time.sleep(0.2)
        try:
            n = len(ReferenceData(tmp_path / "k.h5"))
        except DatasetError:
            n = 0
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 2 <= len(ReferenceData(tmp_path / "k.h5")) < 24, "the kill should land mid-run"
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    data = ReferenceData(tmp_path / "k.h5")
    assert len(data) == 24 and sorted(data.keys) == sorted(structure_key(i, s) for i, s in enumerate(structures))
    assert data.validate() == []


def test_split_indices():
    train, val, test = split_indices(20, 4, 3, seed=1)
    assert len(train) == 13 and len(set(train) | set(val) | set(test)) == 20
    again = split_indices(20, 4, 3, seed=1)
    assert all(np.array_equal(x, y) for x, y in zip((train, val, test), again))
    assert not np.array_equal(split_indices(20, 4, 3, seed=2)[0], train)
    assert np.array_equal(split_indices(20, 4, 3, seed=1, n_train=5)[0], train[:5])
    with pytest.raises(ValueError):
        split_indices(5, 4, 3)
