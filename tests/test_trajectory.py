"""Trajectory analysis (``ase-density analyze``) with the tiny packaged model: a real short MD run
end to end, resume after interruption (in-process and SIGKILL), clear errors that keep the frames
before them, the molecular-dipole partition."""

import functools
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import ase.io
import h5py
import numpy as np
import pytest
from ase.units import Debye

from ase_density import density
from ase_density.basis import AuxBasis
from ase_density.analysis_file import read_analysis
from ase_density.errors import ModelError, TrajectoryError
from ase_density.properties import density_properties
from ase_density.trajectory import analyze_trajectory
from ase_density.validation import find_waters

TINY_MODEL = Path(__file__).parent / "data" / "tiny_water.nequip.zip"


@pytest.fixture(autouse=True, scope="module")
def cached_model_load():
    """Load the tiny model once for the module (each analysis would reload it)."""
    import nequip_plugin.inference as inference

    original = inference.load_density_model
    inference.load_density_model = functools.lru_cache(maxsize=2)(original)
    yield
    inference.load_density_model = original


@pytest.fixture(scope="module")
def frames(small_data):
    """24 frames of a water trimer jiggled about its reference geometry, 0.5 fs apart."""
    base = small_data[0]
    rng = np.random.default_rng(3)
    out = []
    for k in range(24):
        atoms = ase.Atoms(base.numbers, base.positions + rng.normal(0, 0.03, base.positions.shape))
        atoms.info["time"] = 0.5 * k
        out.append(atoms)
    return out


def _thermalize(atoms, temperature_K, rng):
    try:
        from ase.md.velocitydistribution import thermalize_momenta  # ASE >= 3.29
    except ImportError:
        from ase.md.velocitydistribution import MaxwellBoltzmannDistribution as thermalize_momenta
    thermalize_momenta(atoms, temperature_K=temperature_K, rng=rng)


def _analyze(traj, out, **kwargs):
    kwargs.setdefault("batch_size", 4)
    return analyze_trajectory(traj, out, model=TINY_MODEL, progress=False, trust_model=True, **kwargs)


def _contents(path) -> dict:
    out = {}
    with h5py.File(path, "r", libver="latest", swmr=True) as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
        out["attrs"] = dict(f.attrs)
    return out


def _assert_same_file(a, b):
    ca, cb = _contents(a), _contents(b)
    assert ca.keys() == cb.keys()
    for name in ca:
        if name == "attrs":
            assert ca[name].keys() == cb[name].keys() and all(ca[name][k] == cb[name][k] for k in ca[name])
        elif ca[name].dtype.kind == "f":
            np.testing.assert_array_equal(ca[name], cb[name], err_msg=name)
        else:
            assert np.array_equal(ca[name], cb[name]), name


def test_md_run_analysed_end_to_end(tmp_path, small_data):
    """Velocity-Verlet MD of a flexible-water trimer with DensityCalculator attached, written with
    times, then `ase-density analyze` with plots, cubes and coefficients."""
    from ase import units
    from ase.io.trajectory import Trajectory
    from ase.md.verlet import VelocityVerlet

    from ase_density.calculator import DensityCalculator
    from ase_density.cli import main
    from ase_density.clusters import FlexibleTIP3P

    atoms = small_data[0]
    atoms = ase.Atoms(atoms.numbers, atoms.positions)
    atoms.calc = DensityCalculator(model=TINY_MODEL, base=FlexibleTIP3P(), trust_model=True)
    _thermalize(atoms, 150, np.random.default_rng(0))
    dyn = VelocityVerlet(atoms, timestep=0.5 * units.fs)
    traj = Trajectory(tmp_path / "md.traj", "w", atoms)

    def write():
        atoms.info["time"] = dyn.get_time() / units.fs
        traj.write(atoms)

    dyn.attach(write, interval=2)
    dyn.run(30)
    traj.close()

    h5 = tmp_path / "md.h5"
    rc = main(["analyze", str(tmp_path / "md.traj"), "-o", str(h5), "--model", str(TINY_MODEL), "--trust-model", "--plots",
               str(tmp_path / "plots"), "--cubes", str(tmp_path / "cubes"), "--cube-every", "10",
               "--save-coefficients", "-q"])
    assert rc == 0
    data = read_analysis(h5)
    written = ase.io.read(tmp_path / "md.traj", ":")
    assert len(data["index"]) == len(written) == 16 and list(data["index"]) == list(range(16))
    np.testing.assert_allclose(data["time"], np.arange(16) * 1.0, atol=1e-9)
    # the analysis reproduces the calculator's dipoles (corrected density: origin-independent)
    np.testing.assert_allclose(data["dipole"], [a.get_dipole_moment() for a in written], atol=2e-4)
    assert np.all(np.abs(data["charge"]) < 1e-9) and np.all(data["n_waters"] == 3)
    assert np.all(np.abs(data["n_electrons"] - 30) < 0.5) and np.all(data["n_electrons_expected"] == 30)
    assert data["summary"]["ir"]["timestep_fs"] == 1.0 and len(data["ir_wavenumber"]) > 10
    assert data["water_dipole_counts"].sum() == 48 and data["charge_H_counts"].sum() == 96
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["dipole_vs_time.png", "distributions.png",
                                                                     "ir_spectrum.png"]
    assert sorted(p.name for p in (tmp_path / "cubes").iterdir()) == ["frame_000000.cube", "frame_000010.cube"]
    with h5py.File(h5) as f:  # the stored coefficients rebuild the stored dipole
        c, pos, basis = f["atoms/coefficients"][:9], f["atoms/positions"][:9], AuxBasis.from_json(f.attrs["auxbasis"])
    np.testing.assert_allclose(density.dipole_moment(ase.Atoms(written[0].numbers, pos), c, basis),
                               data["dipole"][0], atol=1e-10)


def test_resume_after_interruption_gives_the_same_file(tmp_path, frames, monkeypatch):
    import nequip_plugin.inference as inference

    traj = tmp_path / "t.extxyz"
    ase.io.write(traj, frames)
    _analyze(traj, tmp_path / "full.h5")

    # 1. interrupted in-process (Ctrl-C) during the third batch, then rerun
    original, calls = inference.predict_coefficients_batch, []

    def interrupting(model, batch):
        calls.append(len(batch))
        if calls.count(4) == 3:  # the third batch of 4 frames (loading the model runs a 1-frame probe)
            raise KeyboardInterrupt
        return original(model, batch)

    monkeypatch.setattr(inference, "predict_coefficients_batch", interrupting)
    with pytest.raises(KeyboardInterrupt):
        _analyze(traj, tmp_path / "ctrl_c.h5")
    monkeypatch.setattr(inference, "predict_coefficients_batch", original)
    assert len(read_analysis(tmp_path / "ctrl_c.h5")["index"]) == 8
    summary = _analyze(traj, tmp_path / "ctrl_c.h5")
    assert summary["n_frames"] == 24 and summary["n_frames_new"] == 16
    _assert_same_file(tmp_path / "full.h5", tmp_path / "ctrl_c.h5")

    # 2. a writer SIGKILLed in SWMR mode after writing the rows of frames 12-23 but indexing only 0-11
    killed = tmp_path / "killed.h5"
    shutil.copy(tmp_path / "full.h5", killed)
    script = ("import h5py, os, signal, sys\n"
              "f = h5py.File(sys.argv[1], 'a', libver='latest'); f.swmr_mode = True\n"
              "f['frames/index'].resize((12,)); f['frames/dipole'][12:] = 0.0; f.flush()\n"
              "os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", script, str(killed)])
    assert proc.returncode == -signal.SIGKILL
    with pytest.raises(OSError):
        h5py.File(killed, "a", libver="latest")  # flagged open by the killed writer
    assert len(read_analysis(killed)["index"]) == 12
    assert _analyze(traj, killed)["n_frames_new"] == 12
    _assert_same_file(tmp_path / "full.h5", killed)
    assert not os.path.exists(str(killed) + ".lock") and not os.path.exists(str(killed) + ".repair")

    # 3. other settings are refused, with the difference named
    with pytest.raises(TrajectoryError, match=r"other settings(.|\n)*every: file 1, requested 2"):
        _analyze(traj, tmp_path / "full.h5", every=2)


def test_errors_keep_the_frames_before_them(tmp_path, frames, capsys):
    from ase_density.cli import main

    garbage = tmp_path / "garbage.traj"
    garbage.write_bytes(os.urandom(2000))
    with pytest.raises(TrajectoryError, match="garbage.traj: cannot read frame 0"):
        _analyze(garbage, tmp_path / "g.h5")
    (tmp_path / "empty.xyz").write_text("")
    with pytest.raises(TrajectoryError, match="no frames"):
        _analyze(tmp_path / "empty.xyz", tmp_path / "e.h5")
    with pytest.raises(TrajectoryError, match="no such file"):
        _analyze(tmp_path / "missing.traj", tmp_path / "m.h5")
    # an unsupported element in frame 5: frames 0-4 are stored, and the error names the frame
    bad = [a.copy() for a in frames[:8]]
    bad[5].symbols[0] = "N"
    ase.io.write(tmp_path / "bad.extxyz", bad)
    with pytest.raises(ModelError, match="nope.nequip.zip does not exist"):
        analyze_trajectory(tmp_path / "bad.extxyz", tmp_path / "n.h5", model=tmp_path / "nope.nequip.zip")
    rc = main(["analyze", str(tmp_path / "bad.extxyz"), "-o", str(tmp_path / "bad.h5"), "--model", str(TINY_MODEL), "--trust-model",
               "--batch-size", "4", "-q"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and err.startswith("ase-density analyze: error:") and "frame 5" in err and "unsupported element(s) N" in err and "5 frames before it" in err
    assert list(read_analysis(tmp_path / "bad.h5")["index"]) == [0, 1, 2, 3, 4]

    # a trajectory cut off inside frame 6 (a killed MD run): frames 0-5 are kept
    ase.io.write(tmp_path / "cut.extxyz", frames[:8])
    text = (tmp_path / "cut.extxyz").read_text().splitlines(keepends=True)
    per_frame = len(frames[0]) + 2
    (tmp_path / "cut.extxyz").write_text("".join(text[:6 * per_frame + 4]))
    with pytest.raises(TrajectoryError, match="cannot read frame 6") as info:
        _analyze(tmp_path / "cut.extxyz", tmp_path / "cut.h5")
    assert info.value.n_done == 6 and list(read_analysis(tmp_path / "cut.h5")["index"]) == list(range(6))


def test_ir_needs_a_fixed_timestep(tmp_path, frames):
    untimed = [ase.Atoms(a.numbers, a.positions) for a in frames[:12]]
    ase.io.write(tmp_path / "u.traj", untimed)
    summary = _analyze(tmp_path / "u.traj", tmp_path / "u.h5", every=2)
    assert "--timestep" in summary["ir"]["skipped"] and len(read_analysis(tmp_path / "u.h5")["ir_wavenumber"]) == 0
    summary = _analyze(tmp_path / "u.traj", tmp_path / "t.h5", every=2, timestep=0.5)
    data = read_analysis(tmp_path / "t.h5")
    assert summary["ir"]["timestep_fs"] == 1.0 and np.allclose(data["time"], [0, 1, 2, 3, 4, 5])
    assert list(data["index"]) == [0, 2, 4, 6, 8, 10]


def test_molecular_dipole_partition(small_data):
    """Atomic dipole terms sum to density.dipole_moment; water dipoles add up to the total dipole
    once each water's net charge is placed at its centre; a lone water's dipole is its dipole."""
    trimer = small_data[0]
    basis = small_data.basis
    c = trimer.arrays["density_coefficients"]
    terms = density.atomic_dipole_contributions(trimer, c, basis)
    np.testing.assert_allclose(terms.sum(axis=0), density.dipole_moment(trimer, c, basis), atol=1e-12)
    p = density_properties(trimer, c, basis)
    assert abs(p["n_electrons"] - 30) < 1e-8 and len(p["water_atoms"]) == 3
    np.testing.assert_allclose(p["dipole"], density.dipole_moment(trimer, c, basis), atol=1e-8)  # neutral fit
    z, pos = trimer.numbers, trimer.positions
    np.testing.assert_allclose(p["water_charges"], [p["charges"][w].sum() for w in p["water_atoms"]], atol=1e-14)
    total = sum(p["water_dipoles"][k] + p["water_charges"][k] * (z[w] @ pos[w] / z[w].sum() - z @ pos / z.sum())
                for k, w in enumerate(p["water_atoms"]))
    np.testing.assert_allclose(total, p["dipole"], atol=1e-10)
    moved = trimer.copy()
    moved.translate([5.0, -3.0, 2.0])
    np.testing.assert_allclose(density.molecular_dipoles(moved, c, basis, p["water_atoms"]), p["water_dipoles"], atol=1e-10)
    lone = small_data[6]
    mu = density.molecular_dipoles(lone, lone.arrays["density_coefficients"], basis, find_waters(lone))[0]
    np.testing.assert_allclose(mu, density.dipole_moment(lone, lone.arrays["density_coefficients"], basis), atol=1e-8)
    assert 1.5 < np.linalg.norm(mu) / Debye < 2.5  # a gas-phase water: ~1.9 D
