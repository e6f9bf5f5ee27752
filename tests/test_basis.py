import numpy as np
import pytest
from ase.build import molecule

from ase_density.basis import AuxBasis, BasisError
from ase_density.density import integration_grid
from ase_density.reference import ReferenceSettings, compute_reference


@pytest.mark.parametrize("name, o_irreps, h_irreps", [
    ("def2-universal-jfit", "6x0e+4x1o+3x2e+1x3o+1x4e", "3x0e+1x1o+1x2e"),
    ("def2-universal-jkfit", "10x0e+8x1o+4x2e+2x3o+1x4e", "2x0e+2x1o+2x2e"),
    ("def2-universal-jfit-decontract", "12x0e+5x1o+4x2e+2x3o+1x4e", "5x0e+2x1o+1x2e"),
])
def test_irreps_of_pyscf_bases(name, o_irreps, h_irreps):
    b = AuxBasis.load(name)
    assert b.irreps("O") == o_irreps and b.irreps("H") == h_irreps
    assert b.width == b.element("O").size


def test_layout_round_trip_is_exact(aux_basis):
    symbols = ["O", "H", "H", "O", "H", "H"]
    flat = np.random.default_rng(0).normal(size=sum(aux_basis.element(s).size for s in symbols))
    e3nn = aux_basis.pyscf_to_e3nn(symbols, flat)
    assert np.isnan(e3nn[1, 16:]).all() and np.isfinite(e3nn[0]).all()
    np.testing.assert_allclose(aux_basis.e3nn_to_pyscf(symbols, e3nn), flat, rtol=0, atol=1e-13)  # R orthogonal
    # l = 0, 1 are the same in both layouts; l >= 2 are mixed
    l = aux_basis.element("O").function_l()
    assert np.array_equal(e3nn[0, l <= 1], flat[:70][l <= 1])
    assert not np.allclose(e3nn[0, l >= 2], flat[:70][l >= 2])


def test_json_round_trip(aux_basis):
    again = AuxBasis.from_json(aux_basis.to_json())
    assert again.irreps("O") == aux_basis.irreps("O") and again.elements == aux_basis.elements


def test_bad_basis_inputs(tmp_path):
    with pytest.raises(BasisError, match="no-such-basis"):
        AuxBasis.load("no-such-basis")
    bad = tmp_path / "garbage.nw"
    bad.write_text("this is not a basis file\n")
    with pytest.raises(BasisError, match="garbage.nw"):
        AuxBasis.load(str(bad))
    with pytest.raises(BasisError, match="element C"):
        AuxBasis.load().element("C")


def _nwchem_text(basis):
    lines = ["BASIS \"aux\" SPHERICAL"]
    for sym, el in basis.elements.items():
        for shell in el.shells:
            lines.append(f"{sym}    {'SPDFGH'[shell.l]}")
            lines += ["  " + "  ".join(f"{x:.10f}" for x in (a, *c)) for a, c in zip(shell.exponents, shell.coefficients)]
    return "\n".join(lines + ["END"]) + "\n"


def _gaussian94_text(basis):
    lines = []
    for sym, el in basis.elements.items():
        lines.append(f"{sym}     0")
        for shell in el.shells:
            lines.append(f"{'SPDFGH'[shell.l]}   {len(shell.exponents)}   1.00")
            lines += [f"  {a:.10f}  {c[0]:.10f}" for a, c in zip(shell.exponents, shell.coefficients)]
        lines.append("****")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("writer, suffix", [(_nwchem_text, ".nw"), (_gaussian94_text, ".gbs")])
def test_basis_files(tmp_path, writer, suffix):
    ref = AuxBasis.load("def2-universal-jfit")
    path = tmp_path / f"aux{suffix}"
    path.write_text(writer(ref))
    loaded = AuxBasis.load(str(path))
    for sym in ("H", "O"):  # each element gets its own shells only (the Gaussian94 trap)
        assert loaded.irreps(sym) == ref.irreps(sym)
        assert np.allclose(np.concatenate([s.exponents for s in loaded.element(sym).shells]),
                           np.concatenate([s.exponents for s in ref.element(sym).shells]))


def test_moments_match_grid_integration(aux_basis):
    atoms = molecule("H2O")
    coords, weights = integration_grid(atoms, level=5)
    for i, sym in enumerate(atoms.get_chemical_symbols()):
        mol = aux_basis.aux_mole([sym], atoms.positions[i:i + 1])
        chi = mol.eval_gto("GTOval_sph", coords) @ aux_basis.rotation(sym).T  # e3nn layout
        integrals, firsts = aux_basis.moments(sym)
        centre = atoms.positions[i] / 0.529177210903
        num_int = weights @ chi
        num_first = ((coords - centre) * weights[:, None]).T @ chi
        assert np.abs(num_int - integrals).max() < 1e-4 * max(1, np.abs(integrals).max())
        assert np.abs(num_first.T - firsts).max() < 1e-4 * max(1, np.abs(firsts).max())


def _fit(atoms, basis):
    return compute_reference(atoms, ReferenceSettings(xc="HF", conv_tol=1e-11), basis=basis, fit_error=False).coefficients


@pytest.mark.parametrize("improper", [False, True])
def test_fitted_coefficients_are_equivariant(small_data, aux_basis, improper):
    from e3nn import o3
    import torch

    trimer = next(a for a in small_data if len(a) == 9)
    del trimer.arrays["density_coefficients"]
    torch.manual_seed(3)
    R = o3.rand_matrix().double().numpy() * (-1 if improper else 1)
    rotated = trimer.copy()
    rotated.positions = trimer.positions @ R.T
    c, c_rot = _fit(trimer, aux_basis), _fit(rotated, aux_basis)
    err = 0.0
    for i, sym in enumerate(trimer.get_chemical_symbols()):
        D = o3.Irreps(aux_basis.irreps(sym)).D_from_matrix(torch.tensor(R)).numpy()
        n = D.shape[0]
        err = max(err, np.abs(D @ c[i, :n] - c_rot[i, :n]).max())
    assert err < 1e-7
