"""DensityCalculator on an AOTInductor-compiled model (``nequip-compile``: minutes on a busy CPU)."""

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

TINY_MODEL = Path(__file__).parent / "data" / "tiny_water.nequip.zip"


@pytest.mark.slow
def test_compiled_model_matches_the_packaged_one(tmp_path, small_data):
    from ase_density.calculator import DensityCalculator

    if shutil.which("nequip-compile") is None:
        pytest.skip("nequip-compile not on PATH")
    compiled = tmp_path / "tiny.nequip.pt2"
    subprocess.run(["nequip-compile", str(TINY_MODEL), str(compiled), "--mode", "aotinductor", "--device", "cpu",
                    "--input-fields", "pos", "edge_index", "atom_types", "--output-fields", "density_coefficients"],
                   check=True, capture_output=True)
    got, expected = DensityCalculator(model=compiled, trust_model=True), DensityCalculator(model=TINY_MODEL, trust_model=True)
    for i in (0, 3, 6):
        atoms = small_data[i]
        np.testing.assert_allclose(got.get_density_coefficients(atoms.copy()), expected.get_density_coefficients(atoms.copy()),
                                   atol=1e-6, equal_nan=True)
        np.testing.assert_allclose(got.get_property("dipole", atoms.copy()), expected.get_property("dipole", atoms.copy()),
                                   atol=1e-6)
