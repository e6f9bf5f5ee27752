"""Pure functions on density coefficients (e3nn layout, atomic units) + geometry (Å) + basis.

rho(r) = sum_atoms sum_functions C * chi(r - R), chi the auxiliary basis functions; rho in
electrons/Bohr^3 unless a function says otherwise.

**Partition.** The density is split by the atom whose basis functions carry it: the atomic
charge is q_i = Z_i - ∫rho_i. Molecules are groups of atom indices (for water:
:func:`ase_density.validation.find_waters`). The dipole of molecule w is taken about its own
centre of nuclear charge o_w = Σ Z_i R_i / Σ Z_i,

    mu_w = Σ_{i in w} [ Z_i (R_i - o_w) - ∫ (r - o_w) rho_i(r) dr ],

which is origin-independent even when the partition leaves a molecule slightly charged.

**Electron-count correction.** A model's coefficients c integrate to N' = Σ_atoms q_Z·c_atom, not
exactly to N. :func:`correct_electron_count` applies the smallest change Δc, measured in the
block-diagonal one-centre Coulomb metric (each atom's own J_Z = (P|Q),
:meth:`ase_density.basis.AuxBasis.coulomb_metric`), that restores N:

    minimise Σ_atoms Δc_a^T J_Z Δc_a   subject to   Σ_atoms q_Z·(c_a + Δc_a) = N
    =>  Δc_a = λ J_Z^{-1} q_Z,   λ = (N - N') / Σ_atoms q_Z^T J_Z^{-1} q_Z

q_Z (the integral of each function) is non-zero only for s functions, and a one-centre J_Z does
not couple different l or m, so the correction changes only scalar coefficients: it keeps
rotation and permutation equivariance and costs O(n_atoms). (The full multi-centre Coulomb metric
would cost a dense solve over all auxiliary functions of the system.)
"""

from __future__ import annotations

import os

import numpy as np
from ase.units import Bohr, Debye

from .basis import AuxBasis, build_mole
from .validation import check_cube_grid, check_grid_level, validate_points

#: bytes of basis-function values evaluated at once on a block of points
_BLOCK_BYTES = 2e8


def _check(atoms, coefficients, basis: AuxBasis) -> np.ndarray:
    coefficients = np.asarray(coefficients, dtype=float)
    if coefficients.shape != (len(atoms), basis.width):
        raise ValueError(f"coefficients of shape {coefficients.shape} do not match {len(atoms)} atoms "
                         f"× width {basis.width} of basis {basis.name!r}")
    mask = basis.mask(atoms.get_chemical_symbols())
    if not np.all(np.isfinite(coefficients[mask])):
        raise ValueError("coefficients contain NaN/inf where the basis has functions")
    return coefficients


def pyscf_coefficients(atoms, coefficients, basis: AuxBasis):
    """(aux ``Mole``, flat PySCF-ordered coefficients) for evaluating with PySCF."""
    coefficients = _check(atoms, coefficients, basis)
    symbols = atoms.get_chemical_symbols()
    return basis.aux_mole(symbols, atoms.get_positions()), basis.e3nn_to_pyscf(symbols, coefficients)


def screened_blocks(mol, coords_bohr):
    """Yield (rows, AO values (n_rows, nao), shell mask) over blocks of ``coords_bohr`` (Bohr) of at
    most ~200 MB of values, evaluating only the shells of PySCF ``mol`` that do not vanish on each
    sub-block of points (PySCF's screening; effective on spatially sorted points, as PySCF grids are)."""
    from pyscf.dft import gen_grid

    block = max(1, int(_BLOCK_BYTES / (8 * max(mol.nao, 1))) // gen_grid.BLKSIZE) * gen_grid.BLKSIZE
    for i in range(0, len(coords_bohr), block):
        points = np.ascontiguousarray(coords_bohr[i:i + block])
        mask = gen_grid.make_mask(mol, points)
        yield slice(i, i + len(points)), mol.eval_gto("GTOval_sph", points, non0tab=mask), mask


def aux_density_values(auxmol, flat, coords_bohr) -> np.ndarray:
    """Densities (e/Bohr^3) of aux-basis coefficients ``flat`` (PySCF order of ``auxmol``, a.u.) at
    ``coords_bohr`` (n, 3): shape (n,) for flat coefficients (nao,), (n, k) for k columns (nao, k),
    all columns in one pass over the screened aux functions."""
    from pyscf.dft import numint

    columns = np.asarray(flat, dtype=float).reshape(len(flat), -1)
    if len(columns) != auxmol.nao_nr():
        raise ValueError(f"{len(columns)} coefficients for an aux basis of {auxmol.nao_nr()} functions")
    coords_bohr = np.asarray(coords_bohr, dtype=float)
    if coords_bohr.ndim != 2 or coords_bohr.shape[1] != 3 or not np.isfinite(coords_bohr).all():
        raise ValueError(f"points must be a finite (n, 3) array, got shape {coords_bohr.shape}")
    out = np.empty((len(coords_bohr), columns.shape[1]))
    shells, ao_loc = (0, auxmol.nbas), auxmol.ao_loc_nr()
    for rows, ao, mask in screened_blocks(auxmol, coords_bohr):
        out[rows] = numint._dot_ao_dm(auxmol, ao, columns, mask, shells, ao_loc)
    return out.reshape((len(coords_bohr),) + np.shape(flat)[1:])


def density_on_points(atoms, coefficients, basis: AuxBasis, points) -> np.ndarray:
    """Electron density (e/Bohr^3) at ``points`` (Å, shape (n, 3))."""
    points = validate_points(points)
    auxmol, flat = pyscf_coefficients(atoms, coefficients, basis)
    return aux_density_values(auxmol, flat, points / Bohr)


def electron_count(atoms, coefficients, basis: AuxBasis) -> float:
    """Number of electrons, ∫rho dr, analytic."""
    return float(np.sum(atomic_populations(atoms, coefficients, basis)))


def atomic_populations(atoms, coefficients, basis: AuxBasis) -> np.ndarray:
    """Electrons carried by each atom's basis functions (analytic), shape (n_atoms,)."""
    coefficients = _check(atoms, coefficients, basis)
    out = np.zeros(len(atoms))
    for i, sym in enumerate(atoms.get_chemical_symbols()):
        integrals, _ = basis.moments(sym)
        out[i] = integrals @ coefficients[i, :len(integrals)]
    return out


def atomic_charges(atoms, coefficients, basis: AuxBasis) -> np.ndarray:
    """Per-atom charges (e): Z minus the electrons carried by that atom's functions."""
    return atoms.get_atomic_numbers() - atomic_populations(atoms, coefficients, basis)


def expected_electron_count(atoms) -> int:
    """Electrons of ``atoms``: Σ Z minus the total initial charge (e)."""
    return int(atoms.get_atomic_numbers().sum() - round(float(atoms.get_initial_charges().sum())))


def correction_directions(basis: AuxBasis) -> dict:
    """{symbol: u_Z = J_Z^{-1} q_Z} (e3nn layout, a.u.): the per-atom direction of the
    electron-count correction in the one-centre Coulomb metric (module docstring)."""
    out = {}
    for sym in basis.symbols:
        s = basis.element(sym).function_l() == 0  # q is zero off the s block, which J_Z does not couple to
        out[sym] = np.zeros(len(s))
        out[sym][s] = np.linalg.solve(basis.coulomb_metric(sym)[np.ix_(s, s)], basis.moments(sym)[0][s])
    return out


def correct_electron_count(atoms, coefficients, basis: AuxBasis, n_electrons=None, directions=None) -> np.ndarray:
    """Coefficients (n_atoms, width, a.u.) changed minimally in the one-centre Coulomb metric so
    that they integrate to ``n_electrons`` exactly (default :func:`expected_electron_count`);
    ``directions``: :func:`correction_directions` of ``basis``, if already computed."""
    directions = directions or correction_directions(basis)
    if n_electrons is None:
        n_electrons = expected_electron_count(atoms)
    symbols = atoms.get_chemical_symbols()
    missing = n_electrons - electron_count(atoms, coefficients, basis)
    capacity = sum(basis.moments(s)[0] @ directions[s] for s in symbols)
    corrected = np.array(coefficients, dtype=float)
    for i, sym in enumerate(symbols):
        u = directions[sym]
        corrected[i, :len(u)] += (missing / capacity) * u
    return corrected


def centre_of_nuclear_charge(atoms, indices=None) -> np.ndarray:
    """Σ Z_i R_i / Σ Z_i (Å) over atoms ``indices`` (default all)."""
    z, pos = atoms.numbers.astype(float), atoms.get_positions()
    if indices is not None:
        z, pos = z[indices], pos[indices]
    return z @ pos / z.sum()


def _molecule_indices(atoms, molecules) -> list:
    molecules = [np.asarray(m, dtype=int).ravel() for m in molecules]
    for m in molecules:
        if len(m) == 0 or m.min() < 0 or m.max() >= len(atoms):
            raise ValueError(f"molecule {m.tolist()}: atom indices must lie in 0..{len(atoms) - 1}")
    return molecules


def molecular_charges(atoms, coefficients, basis: AuxBasis, molecules) -> np.ndarray:
    """Net charge (e) of each molecule in ``molecules`` (a sequence of atom-index arrays, e.g.
    the (n, 3) rows of :func:`ase_density.validation.find_waters`), the density partitioned by atom."""
    charges = atomic_charges(atoms, coefficients, basis)
    return np.array([charges[m].sum() for m in _molecule_indices(atoms, molecules)])


def molecular_centres(atoms, molecules) -> np.ndarray:
    """(n_atoms, 3) centre of nuclear charge (Å) of the molecule each atom belongs to (zeros for
    atoms in none of ``molecules``, sequences of atom indices)."""
    centres = np.zeros((len(atoms), 3))
    for m in _molecule_indices(atoms, molecules):
        centres[m] = centre_of_nuclear_charge(atoms, m)
    return centres


def molecular_dipoles(atoms, coefficients, basis: AuxBasis, molecules) -> np.ndarray:
    """(n_molecules, 3) dipoles (e·Å) of ``molecules`` (sequences of atom indices), each about its
    own centre of nuclear charge, the density partitioned by atom (module docstring)."""
    molecules = _molecule_indices(atoms, molecules)
    if not molecules:
        return np.zeros((0, 3))
    contributions = atomic_dipole_contributions(atoms, coefficients, basis, origin=molecular_centres(atoms, molecules))
    return np.array([contributions[m].sum(axis=0) for m in molecules])


def atomic_dipole_contributions(atoms, coefficients, basis: AuxBasis, origin=None) -> np.ndarray:
    """Each atom's share of the dipole moment (e·Å), shape (n_atoms, 3), analytic:

        mu_i = Z_i (R_i - o) - ∫ (r - o) rho_i(r) dr,

    rho_i the density carried by atom i's basis functions (the partition of
    :func:`atomic_charges`). ``origin`` o (Å): None (the coordinate origin), one point (3,), or one
    point per atom (n_atoms, 3), e.g. the centre of nuclear charge of the molecule each atom belongs
    to. Summed over atoms: the dipole about o (:func:`dipole_moment`); summed over a molecule with o
    its own centre: that molecule's dipole."""
    coefficients = _check(atoms, coefficients, basis)
    pos = atoms.get_positions() / Bohr
    if origin is not None:
        pos = pos - np.broadcast_to(np.asarray(origin, dtype=float) / Bohr, pos.shape)
    mu = np.empty((len(atoms), 3))
    for i, sym in enumerate(atoms.get_chemical_symbols()):
        integrals, firsts = basis.moments(sym)
        c = coefficients[i, :len(integrals)]
        mu[i] = (atoms.numbers[i] - integrals @ c) * pos[i] - c @ firsts
    return mu * Bohr


def dipole_moment(atoms, coefficients, basis: AuxBasis, unit: str = "eA", origin=None) -> np.ndarray:
    """Dipole moment about ``origin`` (Å; default the coordinate origin, ASE's convention):
    Σ Z (R - o) - ∫ (r - o) rho(r) dr, analytic; the same for every origin when the density is
    neutral. ``unit``: ``"eA"`` (e·Å) or ``"debye"``."""
    if unit not in ("eA", "debye"):
        raise ValueError(f"unknown dipole unit {unit!r}: use 'eA' or 'debye'")
    mu = atomic_dipole_contributions(atoms, coefficients, basis, origin=origin).sum(axis=0)  # e·Å
    return mu if unit == "eA" else mu / Debye


def integration_grid(atoms, level: int = 3):
    """A PySCF DFT integration grid of ``level`` (0..9) for ``atoms``: (coords in Bohr, weights in Bohr^3)."""
    from pyscf.dft import gen_grid

    level = check_grid_level(level)
    mol = build_mole(atoms.get_chemical_symbols(), atoms.get_positions(), "sto-3g")
    grids = gen_grid.Grids(mol)
    grids.level = level
    grids.build(with_non0tab=False)
    return grids.coords, grids.weights


def full_density_on_grid(mol, density_matrix, coords_bohr) -> np.ndarray:
    """Density (e/Bohr^3) of an AO density matrix of PySCF ``mol`` at ``coords_bohr``, blocked.

    Uses D = sum_k w_k u_k u_k^T (eigenvectors of the symmetrised D, negligible w_k dropped), so
    rho = sum_k w_k (phi . u_k)^2 costs a matrix product with rank(D) (the occupied orbitals'
    count for an SCF density) columns instead of n_AO."""
    from pyscf.dft import numint

    weights, vectors = np.linalg.eigh(0.5 * (density_matrix + density_matrix.T))
    keep = np.abs(weights) > 1e-13 * np.abs(weights).max()
    weights, vectors = weights[keep], np.ascontiguousarray(vectors[:, keep])
    shells, ao_loc = (0, mol.nbas), mol.ao_loc_nr()
    out = np.empty(len(coords_bohr))
    for rows, ao, mask in screened_blocks(mol, coords_bohr):
        out[rows] = numint._dot_ao_dm(mol, ao, vectors, mask, shells, ao_loc) ** 2 @ weights
    return out


def densities_on_grid(atoms, coefficients, basis: AuxBasis, reference_coefficients=None, density_matrix=None,
                      orbital_basis=None, grid_level: int = 3, by_l: bool = False) -> dict:
    """A density and its references on one PySCF integration grid of ``grid_level``:
    ``{"coords": (n, 3) Bohr, "weights": (n,) Bohr³, "model": rho}`` plus ``"fit"`` (the density of
    ``reference_coefficients``) and/or ``"full"`` (of the AO ``density_matrix`` in
    ``orbital_basis``, a PySCF basis name), densities in e/Bohr³. ``by_l`` (with fitted
    coefficients) adds ``"fit_by_l"`` (n, basis.lmax + 1): rho_l − rho_l,ref of each
    angular-momentum channel alone. The aux functions are evaluated once for all columns."""
    if reference_coefficients is None and density_matrix is None:
        raise ValueError("give a reference: reference_coefficients and/or density_matrix")
    if density_matrix is not None:
        if orbital_basis is None:
            raise ValueError("a density_matrix reference needs its orbital_basis")
        mol = build_mole(atoms.get_chemical_symbols(), atoms.get_positions(), orbital_basis)
        if density_matrix.shape != (mol.nao, mol.nao):
            raise ValueError(f"density matrix of shape {density_matrix.shape} does not match {mol.nao} "
                             f"AOs of {orbital_basis!r}")
    coords, weights = integration_grid(atoms, grid_level)
    auxmol, flat = pyscf_coefficients(atoms, coefficients, basis)
    columns = [flat]
    if reference_coefficients is not None:
        reference = pyscf_coefficients(atoms, reference_coefficients, basis)[1]
        columns.append(reference)
        if by_l:
            function_l = np.concatenate([basis.element(s).function_l() for s in atoms.get_chemical_symbols()])
            columns += [np.where(function_l == l, flat - reference, 0.0) for l in range(basis.lmax + 1)]
    values = aux_density_values(auxmol, np.stack(columns, axis=1), coords)  # one pass over the aux functions
    grid = {"coords": coords, "weights": weights, "model": values[:, 0]}
    if reference_coefficients is not None:
        grid["fit"] = values[:, 1]
        if by_l:
            grid["fit_by_l"] = values[:, 2:]
    if density_matrix is not None:
        grid["full"] = full_density_on_grid(mol, density_matrix, coords)
    return grid


def grid_errors(grid: dict) -> dict:
    """eps_rho (%) = 100 ∫|rho - rho_ref| dr / ∫rho_ref dr of a :func:`densities_on_grid` result
    against each reference it holds (``"fit"``, ``"full"``), and ``"fit_by_l"`` [100 ∫|rho_l -
    rho_l,ref| dr / ∫rho_ref dr for each l] where it holds the channels."""
    weights, rho = grid["weights"], grid["model"]
    errors = {name: float(100.0 * np.sum(weights * np.abs(rho - grid[name])) / np.sum(weights * grid[name]))
              for name in ("fit", "full") if name in grid}
    if "fit_by_l" in grid:
        errors["fit_by_l"] = (100.0 * (weights @ np.abs(grid["fit_by_l"])) / np.sum(weights * grid["fit"])).tolist()
    return errors


def density_errors(atoms, coefficients, basis: AuxBasis, reference_coefficients=None,
                   density_matrix=None, orbital_basis=None, grid_level: int = 3, by_l: bool = False) -> dict:
    """eps_rho (%) = 100 ∫|rho - rho_ref| dr / ∫rho_ref dr on one PySCF grid, against each reference
    given: ``{"fit": ...}`` for fitted coefficients (``reference_coefficients``), ``{"full": ...}``
    for a full AO ``density_matrix`` in ``orbital_basis`` (PySCF basis name), or both (the grid and
    the predicted density are built once). ``by_l`` (with fitted coefficients) adds
    ``"fit_by_l"``: [100 ∫|rho_l - rho_l,ref| dr / ∫rho_ref dr for l = 0..basis.lmax], the error of
    each angular-momentum channel alone, on the same grid."""
    return grid_errors(densities_on_grid(atoms, coefficients, basis, reference_coefficients, density_matrix,
                                         orbital_basis, grid_level, by_l))


def density_error(atoms, coefficients, basis: AuxBasis, reference_coefficients=None,
                  density_matrix=None, orbital_basis=None, grid_level: int = 3) -> float:
    """eps_rho (%) against exactly one reference: fitted coefficients (``reference_coefficients``)
    or a full AO ``density_matrix`` in ``orbital_basis`` (see :func:`density_errors`)."""
    if (reference_coefficients is None) == (density_matrix is None):
        raise ValueError("give exactly one reference: reference_coefficients or density_matrix")
    errors = density_errors(atoms, coefficients, basis, reference_coefficients, density_matrix, orbital_basis,
                            grid_level)
    return next(iter(errors.values()))


def density_error_by_l(atoms, predictions, reference_coefficients, basis: AuxBasis, grid_level: int = 3) -> np.ndarray:
    """eps_rho (%) of several predictions against fitted reference coefficients, in total and per
    angular momentum, sharing one grid and one evaluation of the basis functions.

    Returns shape (n_predictions, 2 + basis.lmax): column 0 the total eps_rho, column 1 + l the
    error of the l-channel alone, 100 ∫|rho_l - rho_l,ref| dr / ∫rho_ref dr, where rho_l keeps only
    the functions of angular momentum l (the denominator is the whole reference density)."""
    symbols = atoms.get_chemical_symbols()
    reference = _check(atoms, reference_coefficients, basis)
    function_l = basis.function_l(symbols)
    columns = [basis.e3nn_to_pyscf(symbols, reference)]
    for prediction in predictions:
        delta = np.where(function_l >= 0, _check(atoms, prediction, basis) - reference, 0.0)
        columns.append(basis.e3nn_to_pyscf(symbols, delta))
        columns += [basis.e3nn_to_pyscf(symbols, np.where(function_l == l, delta, 0.0)) for l in range(basis.lmax + 1)]
    coords, weights = integration_grid(atoms, grid_level)
    rho = aux_density_values(basis.aux_mole(symbols, atoms.get_positions()), np.stack(columns, axis=1), coords)
    n_electrons = np.sum(weights * rho[:, 0])
    errors = 100.0 * (weights @ np.abs(rho[:, 1:])) / n_electrons
    return errors.reshape(len(predictions), basis.lmax + 2)


def write_cube(path, atoms, coefficients, basis: AuxBasis, spacing: float = 0.2, margin: float = 3.0):
    """Write the density as a Gaussian cube file (values e/Bohr^3) on a grid of ``spacing`` Å
    enclosing the atoms with ``margin`` Å; ``ase.io.read(path)`` reads it back. Returns the
    grid values, shape (nx, ny, nz)."""
    from ase.io.cube import write_cube as ase_write_cube

    if spacing <= 0 or margin < 0:
        raise ValueError(f"spacing must be > 0 and margin >= 0 (got {spacing}, {margin})")
    coefficients = _check(atoms, coefficients, basis)
    pos = atoms.get_positions()
    lo, hi = pos.min(axis=0) - margin, pos.max(axis=0) + margin
    n = np.maximum(np.ceil((hi - lo) / spacing).astype(int), 1)
    check_cube_grid(n, spacing, margin)
    axes = [lo[k] + spacing * np.arange(n[k]) for k in range(3)]
    points = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    values = density_on_points(atoms, coefficients, basis, points).reshape(*n)
    boxed = atoms.copy()
    boxed.set_cell(np.diag(n * spacing))
    boxed.set_pbc(False)
    tmp = f"{os.fspath(path)}.tmp"  # a killed run leaves no half-written cube under the real name
    with open(tmp, "w") as fh:
        ase_write_cube(fh, boxed, data=values, origin=lo)
    os.replace(tmp, path)
    return values
