"""Model files load only when trusted (ase_density.trust): harmless payload files prove that no code
runs without opt-in, through the Python API and the real CLI processes."""

import os
import pathlib
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import ase.io
import pytest
import torch
from ase.build import molecule

from ase_density.calculator import DEFAULT_MODEL, DensityCalculator, ModelError
from ase_density.h5io import file_sha256
from ase_density.trust import ALLOW_LIST_ENV, card_path, check_model_file, trusted_hashes
from nequip_plugin.inference import load_density_model

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
TINY_MODEL = DATA / "tiny_water.nequip.zip"


class _TouchOnLoad:
    """Unpickling this object creates the file ``marker`` (and nothing else)."""

    def __init__(self, marker):
        self.marker = pathlib.Path(marker)

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


def _evil_checkpoint(path, marker) -> Path:
    torch.save({"state_dict": {}, "hyper_parameters": {"payload": _TouchOnLoad(marker)}}, path)
    return Path(path)


@pytest.fixture(autouse=True)
def no_user_allow_list(tmp_path, monkeypatch):
    """The user's own allow-list must not decide these tests."""
    monkeypatch.delenv(ALLOW_LIST_ENV, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


def _cli(tmp_path, *args, env=None):
    """``ase-density ARGS`` in a fresh process (this checkout's code, no user allow-list)."""
    env = {k: v for k, v in os.environ.items() if k != ALLOW_LIST_ENV}
    env.update(PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               XDG_CONFIG_HOME=str(tmp_path / "config"), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "ase_density.cli", *map(str, args)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)


def test_the_payload_is_real(tmp_path):
    """Control: the payload does run when unpickled without weights_only, so its absence below
    proves that nothing unpickled it."""
    marker = tmp_path / "control-marker"
    evil = _evil_checkpoint(tmp_path / "evil.ckpt", marker)
    torch.load(evil, weights_only=False)
    assert marker.exists()


def test_pickle_payload_never_runs_through_the_python_api(tmp_path):
    marker = tmp_path / "marker"
    evil = _evil_checkpoint(tmp_path / "evil.ckpt", marker)
    with pytest.raises(ModelError, match=r"refusing to load .*evil.ckpt.*a \.ckpt is a pickle.*--trust-model"):
        DensityCalculator(model=evil)
    with pytest.raises(ModelError, match="refusing to load"):
        load_density_model(str(evil))
    # trusted, the pickle still has to pass torch.load(weights_only=True): refused, nothing ran
    with pytest.raises(ModelError, match="not a plain nequip checkpoint.*getattr"):
        DensityCalculator(model=evil, trust_model=True)
    # an unknown suffix never reaches torch.load, trusted or not
    unknown = shutil.copy(evil, tmp_path / "evil.pt")
    with pytest.raises(ModelError, match="unknown model file type"):
        DensityCalculator(model=unknown, trust_model=True)
    assert not marker.exists()


def test_pickle_payload_never_runs_through_the_cli(tmp_path, small_data):
    marker = tmp_path / "marker"
    evil = _evil_checkpoint(tmp_path / "evil.ckpt", marker)
    ase.io.write(tmp_path / "w.xyz", molecule("H2O"))
    ase.io.write(tmp_path / "md.traj", [molecule("H2O")] * 2)
    for args in (["predict", "w.xyz", "--model", evil, "-o", "p.h5"],
                 ["analyze", "md.traj", "--model", evil, "-o", "a.h5", "-q"],
                 ["evaluate", small_data.path, "--model", evil, "--limit", "1"]):
        result = _cli(tmp_path, *args)
        assert result.returncode != 0, args
        assert "refusing to load" in result.stderr and "--trust-model" in result.stderr, (args, result.stderr[-2000:])
        assert not marker.exists(), args
        assert not (tmp_path / "p.h5").exists() and not (tmp_path / "a.h5").exists()


def test_other_packages_need_opt_in(tmp_path, monkeypatch):
    copy = Path(shutil.copy(TINY_MODEL, tmp_path / "copy.nequip.zip"))
    with pytest.raises(ModelError, match=r"a \.nequip\.zip is a torch\.package whose bundled Python modules"):
        DensityCalculator(model=copy)
    compiled = tmp_path / "m.nequip.pt2"
    compiled.write_bytes(b"not a library")
    with pytest.raises(ModelError, match="AOTInductor shared library"):
        check_model_file(compiled)
    # opt-in 1: an allow-list file named by the environment variable (sha256sum output)
    listed = tmp_path / "trusted.txt"
    listed.write_text(f"# models we made\n{file_sha256(copy)}  copy.nequip.zip\n")
    monkeypatch.setenv(ALLOW_LIST_ENV, str(listed))
    assert DensityCalculator(model=copy).model_path == str(copy)
    # opt-in 2: the per-user configuration file
    monkeypatch.delenv(ALLOW_LIST_ENV)
    config = tmp_path / "config" / "ase-density" / "trusted_models.txt"
    config.parent.mkdir(parents=True)
    config.write_text(file_sha256(copy).upper() + "\n")
    assert check_model_file(copy) == ".nequip.zip"
    config.write_text("deadbeef\n")
    with pytest.raises(ModelError, match=r"trusted_models.txt, line 1: 'deadbeef' is not a sha256"):
        check_model_file(copy)
    monkeypatch.setenv(ALLOW_LIST_ENV, str(tmp_path / "missing.txt"))
    with pytest.raises(ModelError, match="missing.txt: no such file"):
        trusted_hashes()


def test_cli_loads_a_package_only_with_trust_model(tmp_path):
    copy = shutil.copy(TINY_MODEL, tmp_path / "copy.nequip.zip")
    ase.io.write(tmp_path / "w.xyz", molecule("H2O"))
    refused = _cli(tmp_path, "predict", "w.xyz", "--model", copy, "-o", "p.h5")
    assert refused.returncode != 0 and "refusing to load" in refused.stderr and not (tmp_path / "p.h5").exists()
    trusted = _cli(tmp_path, "predict", "w.xyz", "--model", copy, "--trust-model", "-o", "p.h5")
    assert trusted.returncode == 0, trusted.stderr[-2000:]
    assert "predictions for 1 new frames" in trusted.stdout


def test_shipped_model_is_verified_against_its_card(tmp_path, monkeypatch):
    from ase_density import calculator

    model, basis = load_density_model(str(DEFAULT_MODEL))  # as shipped: no opt-in needed
    assert basis.name and model.metadata["type_names"].split() == ["H", "O"]
    # a copy with one byte changed, beside a copy of its card: refused, even with trust_model
    shipped = tmp_path / "default.nequip.zip"
    data = bytearray(DEFAULT_MODEL.read_bytes())
    data[len(data) // 2] ^= 0x01
    shipped.write_bytes(bytes(data))
    shutil.copy(card_path(DEFAULT_MODEL), card_path(shipped))
    for trust in (False, True):
        with pytest.raises(ModelError, match="shipped model .* card default.json records .*damaged or was modified"):
            load_density_model(str(shipped), trust_model=trust, default_model=shipped)
    monkeypatch.setattr(calculator, "DEFAULT_MODEL", shipped)
    with pytest.raises(ModelError, match="damaged or was modified"):
        DensityCalculator()
    card_path(shipped).unlink()
    with pytest.raises(ModelError, match="cannot verify the shipped model"):
        DensityCalculator()
    assert DEFAULT_MODEL.read_bytes() != bytes(data)  # the shipped file itself was never touched
