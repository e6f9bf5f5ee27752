"""Labelling large clusters within a memory budget: the RI-JK tensor out of core, and SCFs that
continue from their checkpoint after a kill (real PySCF, real HDF5, a real SIGKILL)."""

import os
import signal
import subprocess
import sys
import time

import ase.io
import h5py
import numpy as np
import pytest
from ase.build import molecule

from ase_density.basis import build_mole
from ase_density.cli import main
from ase_density.dataset import ReferenceData
from ase_density.reference import (ReferenceSettings, aux_function_integrals, compute_reference, df_tensor_bytes,
                                   fit_coefficients, run_scf)

def dimer(shift=0.0):
    pair = molecule("H2O") + molecule("H2O")
    pair.positions[3:] += [2.9 + shift, 0.0, 0.3]
    return pair


def _mole(atoms, max_memory):
    return build_mole(atoms.get_chemical_symbols(), atoms.positions, "def2-SVP", max_memory=max_memory)


def _fit(atoms, mol, mf, aux_basis):
    symbols = atoms.get_chemical_symbols()
    return fit_coefficients(mol, aux_basis.aux_mole(symbols, atoms.positions), mf.make_rdm1(),
                            aux_function_integrals(aux_basis, symbols), mol.nelectron)


def test_out_of_core_ri_tensor_gives_the_in_core_result(tmp_path, aux_basis):
    water = molecule("H2O")
    seen = {}

    path = tmp_path / "water.cderi.h5"
    mol_in, mol_out = _mole(water, 4000), _mole(water, 100)  # 100 MB: less than the process holds already
    settings = ReferenceSettings(xc="HF", density_fit_scf=True, conv_tol=1e-12)
    in_core = run_scf(mol_in, settings, df_file=path)

    def spy(mf):  # runs inside the SCF, after the tensor is built: where does it live?
        seen["cderi"] = mf.with_df._cderi
        seen["bytes"] = os.path.getsize(mf.with_df._cderi) if isinstance(mf.with_df._cderi, str) else 0
        # start at the in-core solution: a few cycles of tiny streamed blocks (slow) suffice, and any
        # error in the streamed J/K would move the SCF away from it
        return in_core.make_rdm1()

    out_of_core = run_scf(mol_out, settings, dm0=spy, df_file=path)
    assert not in_core.df_on_disk and isinstance(in_core.with_df._cderi, np.ndarray)
    assert out_of_core.df_on_disk and seen["cderi"] == str(path)
    assert seen["bytes"] >= df_tensor_bytes(mol_out) == 8 * 113 * (24 * 25 // 2)  # naux 113 (jkfit O+2H), 24 AOs
    assert not path.exists()  # deleted when the SCF ended
    assert in_core.converged and out_of_core.converged
    assert abs(in_core.e_tot - out_of_core.e_tot) < 1e-8
    c_in, c_out = _fit(water, mol_in, in_core, aux_basis), _fit(water, mol_out, out_of_core, aux_basis)
    assert np.abs(c_in - c_out).max() < 1e-8


def test_out_of_core_tensor_is_deleted_when_the_scf_fails(tmp_path):
    path = tmp_path / "t.cderi.h5"
    mf = run_scf(_mole(molecule("H2O"), 100), ReferenceSettings(xc="HF", density_fit_scf=True, max_cycle=1),
                 df_file=path)
    assert mf.df_on_disk and not mf.converged and not path.exists()

    def crash(mf):
        assert os.path.exists(path)
        raise RuntimeError("killed in the guess")

    with pytest.raises(RuntimeError, match="killed in the guess"):
        run_scf(_mole(molecule("H2O"), 100), ReferenceSettings(xc="HF", density_fit_scf=True), dm0=crash,
                df_file=path)
    assert not path.exists()


def test_checkpoint_restart_continues_the_scf(tmp_path):
    pair, chk = dimer(), tmp_path / "pair.chk"
    settings = ReferenceSettings(xc="HF", conv_tol=1e-10)
    fresh = run_scf(_mole(pair, 4000), settings)
    stopped = run_scf(_mole(pair, 4000), ReferenceSettings(xc="HF", conv_tol=1e-10, max_cycle=4), checkpoint=chk)
    assert not stopped.converged and not stopped.restarted
    with h5py.File(chk) as f:  # a PySCF chkfile as well: mol and scf groups
        assert f["scf/mo_coeff"].shape == (48, 48) and f["ase_density/cycles"][()] == 4
    resumed = run_scf(_mole(pair, 4000), settings, checkpoint=chk)  # max_cycle may differ
    assert resumed.restarted and resumed.converged and fresh.converged
    assert resumed.n_cycles < fresh.n_cycles - 1  # it continued, it did not start again
    assert abs(resumed.e_tot - fresh.e_tot) < 1e-9
    assert np.abs(resumed.make_rdm1() - fresh.make_rdm1()).max() < 1e-5
    # another functional is another SCF state: that checkpoint is not used
    with pytest.warns(UserWarning, match="other settings"):
        pbe = run_scf(_mole(pair, 4000), ReferenceSettings(xc="PBE", grid_level=0), checkpoint=chk)
    assert not pbe.restarted and pbe.converged


def test_foreign_or_damaged_checkpoints_are_ignored(tmp_path):
    settings = ReferenceSettings(xc="HF", conv_tol=1e-10)
    chk = tmp_path / "x.chk"
    fresh = run_scf(_mole(dimer(), 4000), settings)
    run_scf(_mole(dimer(shift=0.4), 4000), settings, checkpoint=chk)  # a converged SCF of another geometry
    assert chk.exists()
    with pytest.warns(UserWarning, match="another geometry"):
        other = run_scf(_mole(dimer(), 4000), settings, checkpoint=chk)
    assert not other.restarted and other.n_cycles == fresh.n_cycles and abs(other.e_tot - fresh.e_tot) < 1e-9
    with h5py.File(chk) as f:  # replaced by this geometry's own checkpoint
        assert np.allclose(f["ase_density/coords_bohr"][()], _mole(dimer(), 4000).atom_coords())
    for damage in (b"not an HDF5 file", b""):
        chk.write_bytes(damage)
        with pytest.warns(UserWarning, match="unreadable"):
            again = run_scf(_mole(dimer(), 4000), settings, checkpoint=chk)
        assert not again.restarted and abs(again.e_tot - fresh.e_tot) < 1e-9


def _cycles_in(chk):
    try:
        with h5py.File(chk, "r") as f:
            return int(f["ase_density/cycles"][()])
    except (OSError, KeyError):  # not there yet
        return 0


@pytest.mark.slow
def test_sigkill_during_the_scf_then_rerun_continues_it(tmp_path, aux_basis):
    """A label run killed inside an out-of-core RI-JK SCF: the rerun continues that SCF from its
    checkpoint and stores what an uninterrupted run stores; nothing is left in the scratch dir."""
    pair = dimer()
    xyz, h5, scratch = tmp_path / "pair.xyz", tmp_path / "pair.h5", tmp_path / "scratch"
    ase.io.write(xyz, [pair])
    options = ["--xc", "PBE0", "--grid-level", "0", "--conv-tol", "1e-10", "--density-fit-scf",
               "--max-memory", "100", "--scratch", str(scratch), "--no-fit-error"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    command = [sys.executable, "-m", "ase_density.cli", "label", str(xyz), "-o", str(h5), *options]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    checkpoints = lambda: list(scratch.glob("*.chk")) if scratch.exists() else []  # noqa: E731
    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline:
        if any(_cycles_in(c) >= 3 for c in checkpoints()):
            break
        time.sleep(0.02)
    assert proc.poll() is None, f"the SCF ended before it could be killed: {proc.communicate()}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(checkpoints()) == 1 and list(scratch.glob("*.cderi.h5"))  # what the kill left behind
    assert len(ReferenceData(h5)) == 0

    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert "1 labelled (1 SCFs continued from checkpoints)" in rerun.stdout
    assert list(scratch.iterdir()) == []  # checkpoint and the killed run's tensor are gone

    settings = ReferenceSettings(xc="PBE0", grid_level=0, conv_tol=1e-10, density_fit_scf=True)
    uninterrupted = compute_reference(pair, settings, basis=aux_basis, fit_error=False)
    stored = ReferenceData(h5)[0].info
    assert stored["scf_cycles"] < uninterrupted.scf_cycles  # it continued, it did not start again
    assert abs(stored["energy"] - uninterrupted.energy) < 1e-10 * 27.2114 * 10
    assert np.abs(stored["dipole"] - uninterrupted.dipole).max() < 1e-5
    coefficients = ReferenceData(h5)[0].arrays["density_coefficients"]
    assert np.nanmax(np.abs(coefficients - uninterrupted.coefficients)) < 1e-5


def test_label_max_memory_and_scratch_options(tmp_path, capsys):
    xyz = tmp_path / "w.xyz"
    ase.io.write(xyz, [molecule("H2O")])
    base = ["label", str(xyz), "-o", str(tmp_path / "w.h5"), "--xc", "HF", "--basis", "sto-3g"]
    for bad in ("50", "-1", "nan", "lots"):
        with pytest.raises(SystemExit) as exc:
            main(base + ["--max-memory", bad])
        assert exc.value.code == 2
        assert "--max-memory" in capsys.readouterr().err
    assert main(base + ["--max-memory", "1e12"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "more than this machine's" in err
    assert main(base + ["--max-memory", "150", "--workers", "2"]) == 2
    assert "75 MB each" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    assert main(base + ["--scratch", str(tmp_path / "file")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert not (tmp_path / "w.h5").exists()  # options are checked before the output is made
    assert main(base) == 0
    assert not (tmp_path / "w.h5.scratch").exists()  # the default scratch dir is removed when empty


def test_each_scf_cycle_is_reported_with_its_energy(tmp_path, capsys):
    seen = []
    mf = run_scf(_mole(molecule("H2O"), 500), ReferenceSettings(xc="HF"), on_cycle=lambda *c: seen.append(c))
    assert [n for n, _ in seen] == list(range(1, mf.n_cycles + 1)) and abs(seen[-1][1] - mf.e_tot) < 1e-9
    # `label` with one worker shows them on its progress bar
    xyz = tmp_path / "w.xyz"
    ase.io.write(xyz, molecule("H2O"))
    assert main(["label", str(xyz), "-o", str(tmp_path / "w.h5"), "--xc", "HF", "--basis", "sto-3g"]) == 0
    assert "SCF cycle" in capsys.readouterr().err
