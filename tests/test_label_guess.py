"""``ase-density label --guess``: a model guess stores the same records as PySCF's minao guess,
resumes a minao-labelled file, and records the guesses used (real CLI subprocesses, real PySCF)."""

import json
import subprocess
import sys
from pathlib import Path

import ase.io
import h5py
import numpy as np
import pytest
from ase.units import Hartree

from ase_density.calculator import DEFAULT_MODEL
from ase_density.cli import main
from ase_density.dataset import ReferenceData
from ase_density.h5io import file_sha256

DATA = Path(__file__).parent / "data"
MODEL = DEFAULT_MODEL  # the shipped model: trusted without an opt-in


def _label(xyz, h5, *extra):
    out = subprocess.run([sys.executable, "-m", "ase_density.cli", "label", str(xyz), "-o", str(h5),
                          "--no-fit-error", *map(str, extra)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture(scope="module")
def structures(tmp_path_factory):
    """A water monomer and a dimer, and the same plus a second monomer."""
    frames = ase.io.read(DATA / "small_clusters.xyz", index=":")
    tmp = tmp_path_factory.mktemp("guess")
    two, three = tmp / "two.xyz", tmp / "three.xyz"
    monomers = [a for a in frames if len(a) == 3]
    dimer = next(a for a in frames if len(a) == 6)
    ase.io.write(two, [monomers[0], dimer])
    ase.io.write(three, [monomers[0], dimer, monomers[1]])
    return two, three


def test_label_with_the_model_guess_stores_the_minao_records(structures, tmp_path):
    two, three = structures
    minao, model = tmp_path / "minao.h5", tmp_path / "model.h5"
    _label(two, minao)
    assert "2 labelled" in _label(two, model, "--guess", "model", "--model", MODEL)
    a, b = ReferenceData(minao), ReferenceData(model)
    assert a.keys == b.keys and a.settings == b.settings  # the guess is no setting of the data
    for x, y in zip(a, b):
        assert y.info["energy"] / Hartree == pytest.approx(x.info["energy"] / Hartree, abs=1e-6)
        np.testing.assert_allclose(y.arrays["density_coefficients"], x.arrays["density_coefficients"], atol=1e-5)
        assert y.info["scf_cycles"] < x.info["scf_cycles"]
    with h5py.File(model) as f:
        recorded = json.loads(f.attrs["scf_guesses"])
    assert recorded == {"model": {"model": MODEL.name, "model_sha256": file_sha256(MODEL)}}

    # a minao-labelled file resumes with the model guess, and records both guesses
    assert "1 labelled, 2 already done" in _label(three, minao, "--guess", "model")  # default model
    with h5py.File(minao) as f:
        assert sorted(json.loads(f.attrs["scf_guesses"])) == ["minao", "model"]
    assert len(ReferenceData(minao)) == 3


def test_label_refuses_a_guess_it_cannot_use(structures, tmp_path, capsys):
    two, _ = structures
    h5 = tmp_path / "x.h5"
    assert main(["label", str(two), "-o", str(h5), "--xc", "HF", "--guess", "vsap"]) == 2
    assert "vsap guess needs a DFT functional" in capsys.readouterr().err
    assert main(["label", str(two), "-o", str(h5), "--guess", "model", "--model", str(tmp_path / "none.nequip.zip")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not h5.exists()  # refused before any file was made
