"""The writer discipline of every output file, with real processes: a SIGKILLed ``predict``
resumes to the file an uninterrupted run writes; a second writer, an output that is the input or
a file of another format are refused with one line on stderr and leave the file byte-identical;
resumes onto changed inputs or other settings are refused."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import ase.io
import h5py
import numpy as np
import pytest

from ase_density.analysis_file import read_analysis
from ase_density.cli import main
from ase_density.predictions import PredictionData, PredictionWriter

ROOT = Path(__file__).parent.parent
DATA = Path(__file__).parent / "data"
TINY_MODEL = str(DATA / "tiny_water.nequip.zip")
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _cli(*args, **kwargs):
    """``ase-density ARGS`` in a fresh process: (exit code, stderr lines)."""
    proc = subprocess.run([sys.executable, "-m", "ase_density.cli", *map(str, args)], env=ENV, capture_output=True,
                          text=True, **kwargs)
    return proc.returncode, proc.stderr.strip().splitlines()


def _contents(path) -> dict:
    out = {}
    with h5py.File(path, "r", libver="latest", swmr=True) as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
        out["attrs"] = {k: v for k, v in f.attrs.items()}
    return out


def _assert_same_file(a, b):
    ca, cb = _contents(a), _contents(b)
    assert ca.keys() == cb.keys()
    assert ca["attrs"].keys() == cb["attrs"].keys() and all(ca["attrs"][k] == cb["attrs"][k] for k in ca["attrs"])
    for name in ca:
        if name != "attrs":
            assert ca[name].dtype == cb[name].dtype and np.array_equal(ca[name], cb[name], equal_nan=ca[name].dtype.kind == "f"), name


@pytest.fixture(scope="module")
def frames(small_data):
    """160 frames of a water trimer jiggled about its reference geometry."""
    base = small_data[0]
    rng = np.random.default_rng(7)
    return [ase.Atoms(base.numbers, base.positions + rng.normal(0, 0.03, base.positions.shape)) for _ in range(160)]


def _one_error_line(err, command):
    assert len(err) == 1, err
    assert err[0].startswith(f"ase-density {command}: error:") and "Traceback" not in err[0]


def test_sigkilled_predict_resumes_to_the_uninterrupted_file(tmp_path, frames):
    structures = tmp_path / "in.xyz"
    ase.io.write(structures, frames)
    assert main(["predict", str(structures), "--model", TINY_MODEL, "--trust-model", "-o", str(tmp_path / "full.h5"), "--batch-size", "2",
                 "-q"]) == 0
    killed = tmp_path / "killed.h5"
    proc = subprocess.Popen([sys.executable, "-m", "ase_density.cli", "predict", str(structures), "--model", TINY_MODEL, "--trust-model",
                             "-o", str(killed), "--batch-size", "2", "-q"], env=ENV)
    n = 0
    try:
        deadline = time.time() + 300
        while n < 20 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.02)
            if killed.exists():
                try:
                    n = len(PredictionData(killed))
                except Exception:  # the file is being created
                    n = 0
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "predict finished before it could be killed"
    stored = len(PredictionData(killed))
    assert 20 <= stored < len(frames)
    rc, err = _cli("predict", structures, "--model", TINY_MODEL, "--trust-model", "-o", killed, "--batch-size", "2", "-q")
    assert rc == 0, err
    _assert_same_file(tmp_path / "full.h5", killed)
    assert not os.path.exists(f"{killed}.lock") and not os.path.exists(f"{killed}.repair")


def test_predict_refuses_a_file_that_label_is_writing(tmp_path, frames):
    reference = tmp_path / "reference.h5"
    reference.write_bytes((DATA / "small_water.h5").read_bytes())
    ase.io.write(tmp_path / "w.xyz", frames[:2])
    # a real reference writer (as `ase-density label` holds it) in another process
    holder = subprocess.Popen([sys.executable, "-c", (
        "import json, sys, time\n"
        "from ase_density.basis import AuxBasis\n"
        "from ase_density.dataset import ReferenceData, ReferenceWriter\n"
        "data = ReferenceData(sys.argv[1])\n"
        "with ReferenceWriter(sys.argv[1], data.settings, data.basis):\n"
        "    print('writing', flush=True)\n"
        "    time.sleep(120)\n"), str(reference)], env=ENV, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "writing"
        before = reference.read_bytes()
        rc, err = _cli("predict", tmp_path / "w.xyz", "--model", TINY_MODEL, "--trust-model", "-o", reference, "-q")
        assert rc == 2
        _one_error_line(err, "predict")
        assert "another process is writing" in err[0]
        rc, err = _cli("predict", tmp_path / "w.xyz", "--model", TINY_MODEL, "--trust-model", "-o", reference, "--overwrite", "-q")
        assert rc == 2 and "another process is writing" in err[0]
        assert reference.read_bytes() == before
    finally:
        holder.kill()
        holder.wait()


def test_outputs_that_are_inputs_or_of_another_format_are_refused(tmp_path, frames):
    reference = tmp_path / "reference.h5"
    reference.write_bytes((DATA / "small_water.h5").read_bytes())
    structures = tmp_path / "w.xyz"
    ase.io.write(structures, frames[:4])
    traj = tmp_path / "t.traj"
    ase.io.write(traj, frames[:4])
    kept = {p: p.read_bytes() for p in (reference, structures, traj)}
    for args, command, message in [
            (("predict", structures, "-o", reference), "predict", "not an ase-density prediction file"),
            (("predict", structures, "-o", reference, "--overwrite"), "predict", "not an ase-density prediction file"),
            (("predict", structures, "-o", structures), "predict", "the output is the input"),
            (("analyze", traj, "-o", traj, "--overwrite"), "analyze", "the output is the input"),
            (("analyze", traj, "-o", reference), "analyze", "not an ase-density trajectory analysis")]:
        rc, err = _cli(*args, "--model", TINY_MODEL, "--trust-model", "-q")
        assert rc == 2, (args, err)
        _one_error_line(err, command)
        assert message in err[0], err
    for path, content in kept.items():
        assert path.read_bytes() == content, path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reference.h5", "t.traj", "w.xyz"]  # no lock or temp left


def test_overwrite_replaces_only_after_success(tmp_path, frames):
    structures = tmp_path / "w.xyz"
    ase.io.write(structures, frames[:4])
    out = tmp_path / "p.h5"
    assert main(["predict", str(structures), "--model", TINY_MODEL, "--trust-model", "-o", str(out), "-q"]) == 0
    before = out.read_bytes()
    ase.io.write(tmp_path / "bad.xyz", frames[:2] + [ase.Atoms("CH4", positions=np.eye(5, 3) * 1.1)])
    assert main(["predict", str(tmp_path / "bad.xyz"), "--model", TINY_MODEL, "--trust-model", "-o", str(out), "--overwrite", "-q"]) == 2
    assert out.read_bytes() == before and not os.path.exists(f"{out}.tmp")
    ase.io.write(structures, frames[4:7])  # changed input: refused on resume, replaced with --overwrite
    assert main(["predict", str(structures), "--model", TINY_MODEL, "--trust-model", "-o", str(out), "-q"]) == 2
    assert main(["predict", str(structures), "--model", TINY_MODEL, "--trust-model", "-o", str(out), "--overwrite", "-q"]) == 0
    pred = PredictionData(out)
    assert len(pred) == 3 and np.allclose(pred[0].positions, frames[4].positions)


def test_analyze_refuses_to_resume_onto_a_changed_trajectory(tmp_path, frames, capsys):
    traj = tmp_path / "t.extxyz"
    ase.io.write(traj, frames[:8])
    out = tmp_path / "a.h5"
    assert main(["analyze", str(traj), "-o", str(out), "--model", TINY_MODEL, "--trust-model", "--stop", "4", "-q"]) == 0
    changed = [a.copy() for a in frames[:8]]
    changed[2].positions[0, 0] += 0.01  # same first frame, a later frame rewritten
    ase.io.write(traj, changed)
    before = _contents(out)
    capsys.readouterr()
    assert main(["analyze", str(traj), "-o", str(out), "--model", TINY_MODEL, "--trust-model", "--stop", "4", "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    _one_error_line(err, "analyze")
    assert "frame 2 differs" in err[0]
    assert _contents(out).keys() == before.keys() and len(read_analysis(out)["index"]) == 4
    # the original frames again: the stored ones check out and nothing is redone
    ase.io.write(traj, frames[:8])
    assert main(["analyze", str(traj), "-o", str(out), "--model", TINY_MODEL, "--trust-model", "--stop", "4", "-q"]) == 0
    assert "4 frames (0 new)" in capsys.readouterr().out


def test_sample_refuses_other_settings_and_bad_counts(tmp_path):
    out = tmp_path / "c.xyz"
    assert main(["sample", "-n", "2", "--waters", "1", "2", "--relax-steps", "0", "--seed", "3", "-o", str(out)]) == 0
    first = out.read_bytes()
    for other in (["--seed", "4"], ["--waters", "1", "3"], ["--relax-steps", "5"]):
        args = {"--seed": "3", "--relax-steps": "0", **dict(zip(other[::2], other[1::2]))}
        waters = other[1:] if other[0] == "--waters" else ["1", "2"]
        argv = ["sample", "-n", "3", "--waters", *waters, "--relax-steps", args["--relax-steps"], "--seed",
                args["--seed"], "-o", str(out)]
        assert main(argv) == 2, other
        assert out.read_bytes() == first
    assert main(["sample", "-n", "3", "--waters", "1", "2", "--relax-steps", "0", "--seed", "3", "-o", str(out)]) == 0
    clusters = ase.io.read(out, ":")
    assert [a.info["index"] for a in clusters] == [0, 1, 2] and out.read_bytes().startswith(first)
    for n in ("0", "-2"):
        rc, err = _cli("sample", "-n", n, "--waters", "1", "2", "-o", tmp_path / "n.xyz")
        assert rc == 2 and "must be >= 1" in err[-1] and not (tmp_path / "n.xyz").exists()


@pytest.mark.parametrize("args, message", [
    (("predict", "MISSING", "--batch-size", "0"), "--batch-size: 0 is out of range"),
    (("label", "MISSING", "-o", "x.h5", "--grid-level", "-3"), "--grid-level: -3 is out of range"),
    (("evaluate", "MISSING", "--limit", "0"), "--limit: 0 is out of range"),
    (("analyze", "MISSING", "-o", "x.h5", "--every", "0"), "--every: 0 is out of range"),
])
def test_option_ranges_are_checked_before_any_work(tmp_path, args, message):
    rc, err = _cli(*args, cwd=tmp_path, timeout=120)
    assert rc == 2 and message in err[-1] and list(tmp_path.iterdir()) == []


def test_user_errors_are_one_line(tmp_path):
    (tmp_path / "empty.traj").write_bytes(b"")
    for args, command, message in [
            (("predict", tmp_path / "missing.xyz", "--model", TINY_MODEL, "--trust-model", "-o", tmp_path / "p.h5"), "predict",
             "missing.xyz: no such file"),
            (("analyze", tmp_path / "empty.traj", "-o", tmp_path / "a.h5", "--model", TINY_MODEL), "analyze", "no frames"),
            (("info", tmp_path / "empty.traj"), "info", "not a readable HDF5 file")]:
        rc, err = _cli(*args)
        assert rc == 2
        _one_error_line(err, command)
        assert message in err[0]
    rc, err = _cli("--version")
    assert rc == 0


def test_writer_lock_is_exclusive_in_process(tmp_path):
    from ase_density.errors import OutputError
    from ase_density.h5io import WriterLock

    first = WriterLock(tmp_path / "x.h5")
    with pytest.raises(OutputError, match="another process is writing"):
        WriterLock(tmp_path / "x.h5")
    first.release()
    WriterLock(tmp_path / "x.h5").release()
    assert list(tmp_path.iterdir()) == []


def test_prediction_file_records_no_machine_paths(tmp_path, frames):
    ase.io.write(tmp_path / "w.xyz", frames[:2])
    assert main(["predict", str(tmp_path / "w.xyz"), "--model", TINY_MODEL, "--trust-model", "-o", str(tmp_path / "p.h5"), "-q"]) == 0
    attrs = PredictionData(tmp_path / "p.h5").attrs
    assert attrs["model"] == "tiny_water.nequip.zip" and attrs["source"] == "w.xyz"
    assert str(tmp_path) not in json.dumps({k: str(v) for k, v in attrs.items()})
    assert PredictionWriter.FORMAT == attrs["format"]


def test_sample_resumes_a_file_written_before_settings_were_stored(tmp_path):
    """tests/data/small_clusters.xyz holds only seed and index, as the shipped data files do."""
    legacy = tmp_path / "legacy.xyz"
    legacy.write_bytes((DATA / "small_clusters.xyz").read_bytes())
    n = len(ase.io.read(legacy, index=":"))
    waters = [len(a) // 3 for a in ase.io.read(legacy, index=":")]
    before = legacy.read_bytes()
    assert main(["sample", "-n", str(n), "--waters", str(min(waters)), str(max(waters)), "--seed", "11",
                 "-o", str(legacy)]) == 0
    assert legacy.read_bytes() == before  # complete: nothing appended
    assert main(["sample", "-n", str(n), "--waters", str(min(waters)), str(max(waters)), "--seed", "12",
                 "-o", str(legacy)]) == 2  # another seed
    assert main(["sample", "-n", str(n), "--waters", str(max(waters) + 1), str(max(waters) + 2), "--seed", "11",
                 "-o", str(legacy)]) == 2  # water counts outside the requested range
    assert legacy.read_bytes() == before
