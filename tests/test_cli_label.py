import subprocess
import sys

import ase.io
import numpy as np

from ase_density.cli import main
from ase_density.dataset import ReferenceData


def test_sample_then_label_with_workers(tmp_path, capsys):
    xyz, h5 = tmp_path / "c.xyz", tmp_path / "c.h5"
    assert main(["sample", "-n", "3", "--waters", "1", "2", "--seed", "4", "-o", str(xyz)]) == 0
    frames = ase.io.read(xyz, index=":")
    assert len(frames) == 3
    # sampling again resumes: nothing new is written
    assert main(["sample", "-n", "3", "--waters", "1", "2", "--seed", "4", "-o", str(xyz)]) == 0
    assert len(ase.io.read(xyz, index=":")) == 3
    assert main(["label", str(xyz), "-o", str(h5), "--xc", "HF", "--basis", "sto-3g", "--workers", "2", "--save-dm"]) == 0
    data = ReferenceData(h5)
    assert len(data) == 3 and all(data.has_density_matrix(i) for i in range(3)) and np.isfinite([a.info["fit_error"] for a in data]).all()
    assert "3 labelled" in capsys.readouterr().out


def test_label_reports_failures_and_exit_code(tmp_path, capsys):
    from ase import Atoms
    from ase.build import molecule

    xyz = tmp_path / "bad.xyz"
    ase.io.write(xyz, [molecule("H2O"), Atoms("OH2", positions=[[0, 0, 0], [0.1, 0, 0], [0, 1, 0]])])
    assert main(["label", str(xyz), "-o", str(tmp_path / "b.h5"), "--xc", "HF", "--basis", "sto-3g"]) == 1
    out = capsys.readouterr().out
    assert "1 labelled" in out and "FAILED 000001" in out and "overlapping" in out


def test_label_on_a_dask_cluster(tmp_path):
    from dask import distributed  # the test extra installs dask
    from ase.build import molecule

    xyz, h5 = tmp_path / "w.xyz", tmp_path / "w.h5"
    frames = [molecule("H2O"), molecule("H2O")]
    frames[1].positions[1] += [0.05, 0, 0]
    ase.io.write(xyz, frames)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        assert main(["label", str(xyz), "-o", str(h5), "--xc", "HF", "--basis", "sto-3g", "--dask", cluster.scheduler_address]) == 0
    assert len(ReferenceData(h5)) == 2


def test_console_script_runs():
    from importlib.metadata import version

    out = subprocess.run([sys.executable, "-m", "ase_density.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == f"ase-density {version('ase-density')}"
    out = subprocess.run([sys.executable, "-m", "ase_density.cli", "label"], capture_output=True, text=True)
    assert out.returncode == 2 and "the following arguments are required" in out.stderr


def test_info_reports_size_fit_floor_and_problems(tmp_path, capsys):
    import json
    import shutil

    import h5py

    from conftest import SMALL_H5

    assert main(["info", str(SMALL_H5), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    data = ReferenceData(SMALL_H5)
    assert summary["structures"] == len(data) == 12 and summary["density_matrices"] == 12
    assert np.isclose(summary["fit_error_mean_percent"], np.mean([a.info["fit_error"] for a in data]))
    damaged = tmp_path / "damaged.h5"
    shutil.copy(SMALL_H5, damaged)
    with h5py.File(damaged, "a") as f:
        f["atoms/coefficients"][0, 0] = np.nan
    assert main(["info", str(damaged)]) == 1
    assert "PROBLEM" in capsys.readouterr().out
    assert main(["info", str(tmp_path / "missing.h5")]) == 2
