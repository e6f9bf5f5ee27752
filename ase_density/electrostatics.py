"""Electrostatics of a density in the auxiliary basis: where its charge sits, and why a dipole is wrong.

Plain functions on plain arrays (positions in Å, coefficients in atomic units, e3nn layout):

- :func:`s_primitives`: the s functions of an element as Gaussian charges (exponent, charge per
  unit coefficient); they carry all of a density's charge, and their Coulomb interaction between
  any two centres is analytic, erf(sqrt(a b / (a + b)) R) / R per unit charges.
- :func:`s_coulomb_matrix`: the exact multi-centre Coulomb metric (P|1/r12|Q) (Hartree per
  coefficient²) between all s functions of a structure.
- :func:`water_charges`: net charge of each water molecule (e), found by connectivity.
- :func:`dipole_components`: the dipole split into (a) net charges of molecules at their centres,
  (b) charge flow within molecules and (c) the atomic l = 1 moments; the three add up to the dipole.
- :func:`electrostatic_errors`: the per-structure electrostatic metrics of a predicted density
  against a reference (charges, water net charges, the dipole error and its split).
- :func:`hirshfeld_charges` (:func:`density_hirshfeld_charges` for aux-basis coefficients,
  :func:`hirshfeld_population_matrix` as a linear map of them, what training uses): atom
  charges (e) of any density given on an integration grid, shared
  out in proportion to spherical free-atom densities. Unlike the basis-function partition of
  :func:`ase_density.density.atomic_charges` they do not depend on how the density is expanded:
  equally good fits of one density can differ by 0.2 e per atom in the basis partition and agree
  to 0.002 e in this one (docs/electrostatics.md).
"""

from __future__ import annotations

import functools
import math

import numpy as np
from ase.units import Bohr, Debye
from scipy.special import erf

from . import density
from .basis import build_mole
from .validation import StructureError, find_waters, validate_atoms

#: orbital basis of the free atoms whose spherical densities define the Hirshfeld partition
FREE_ATOM_BASIS = "def2-svp"
#: radii (Bohr) on which free-atom densities are tabulated; beyond the last one they count as zero
_FREE_ATOM_RADII = np.geomspace(1e-5, 40.0, 4000)
#: grid points per block of the Hirshfeld weights (memory 8 bytes × block × n_atoms)
_HIRSHFELD_BLOCK = 4096

#: keys of :func:`hirshfeld_errors` (e)
HIRSHFELD_FIELDS = ("hirshfeld_charge_mae", "hirshfeld_charge_mae_fit", "hirshfeld_water_charge_mae",
                    "hirshfeld_water_charge_mae_fit", "hirshfeld_water_charge_reference_mean_abs")

#: keys of :func:`electrostatic_errors` (Debye for dipoles, e for charges)
ELECTROSTATIC_FIELDS = ("charge_mae", "water_charge_mae", "water_charge_reference_mean_abs",
                        "dipole_error_net_charges", "dipole_error_charge_flow", "dipole_error_atomic_moments")


def s_primitives(basis, symbol: str) -> tuple:
    """The s functions of ``symbol`` as primitive Gaussian charges: (exponents (1/Bohr²),
    charges (e per unit coefficient), columns (the e3nn layout column each primitive belongs
    to)), each of shape (n_primitives,). A coefficient c on column j puts charge c·charges[k]
    on every primitive k of that column; summed over a column's primitives the charges are the
    function's integral (:meth:`AuxBasis.moments`)."""
    mol = basis.aux_mole([symbol], np.zeros((1, 3)))
    exponents, charges, columns = [], [], []
    column = 0
    for ib in range(mol.nbas):
        if mol.bas_angular(ib) != 0:
            break  # shells are sorted by l: the s functions are the first columns, in PySCF order
        a = mol.bas_exp(ib)
        c = mol._libcint_ctr_coeff(ib)  # (nprim, nctr), normalisation included
        for k in range(c.shape[1]):
            exponents += list(a)
            charges += list(c[:, k] * (np.pi / a) ** 1.5 / (2 * math.sqrt(math.pi)))
            columns += [column] * len(a)
            column += 1
    exponents, charges, columns = np.array(exponents), np.array(charges), np.array(columns, dtype=int)
    integrals = basis.moments(symbol)[0]
    if not np.allclose(np.bincount(columns, weights=charges, minlength=column), integrals[:column], rtol=1e-10):
        raise ValueError(f"s functions of {symbol} in basis {basis.name!r} do not match the layout's integrals")
    return exponents, charges, columns


def gaussian_charge_coulomb(exponents_a, exponents_b, distances) -> np.ndarray:
    """Coulomb energy (Hartree) of two unit Gaussian charges (a/π)^{3/2} exp(-a r²) at
    ``distances`` (Bohr): erf(sqrt(p) R) / R with p = a b / (a + b), and 2 sqrt(p/π) at R = 0.
    Arguments broadcast."""
    p = exponents_a * exponents_b / (exponents_a + exponents_b)
    r = np.asarray(distances, dtype=float)
    safe = np.where(r > 1e-12, r, 1.0)
    return np.where(r > 1e-12, erf(np.sqrt(p) * safe) / safe, 2.0 * np.sqrt(p / np.pi))


def s_coulomb_matrix(atoms, basis) -> tuple:
    """The exact Coulomb metric (P|1/r12|Q) (Hartree per coefficient²) between all s functions of
    ``atoms``, across atoms. Returns (matrix (n_s, n_s), index (n_s, 2) of (atom, e3nn column))."""
    primitives = {sym: s_primitives(basis, sym) for sym in set(atoms.get_chemical_symbols())}
    exps, charges, owner, centres, index = [], [], [], [], []
    positions = atoms.get_positions() / Bohr
    for i, sym in enumerate(atoms.get_chemical_symbols()):
        a, q, col = primitives[sym]
        exps.append(a)
        charges.append(q)
        owner.append(col + len(index))
        centres.append(np.repeat(positions[i:i + 1], len(a), axis=0))
        index += [(i, j) for j in range(col.max() + 1)]
    exps, charges, owner, centres = map(np.concatenate, (exps, charges, owner, centres))
    r = np.linalg.norm(centres[:, None] - centres[None], axis=-1)
    primitive = charges[:, None] * charges[None] * gaussian_charge_coulomb(exps[:, None], exps[None], r)
    n = len(index)
    fold = np.zeros((n, len(owner)))
    fold[owner, np.arange(len(owner))] = 1.0
    return fold @ primitive @ fold.T, np.array(index, dtype=int)


def water_charges(atoms, coefficients, basis, waters=None) -> np.ndarray:
    """Net charge (e) of each water molecule, shape (n_waters,); ``waters`` (n, 3) atom indices
    (default: found by O–H connectivity, :func:`ase_density.validation.find_waters`)."""
    waters = find_waters(atoms) if waters is None else np.asarray(waters, dtype=int).reshape(-1, 3)
    return density.molecular_charges(atoms, coefficients, basis, waters)


def dipole_components(atoms, coefficients, basis, molecules=None, origin=None) -> dict:
    """The dipole (e·Å) about ``origin`` (Å; default the structure's centre of nuclear charge) as
    the sum of three vectors, each (3,):

    - ``net_charges``: Σ_M Q_M (R_M - o), the net charge of each molecule M at its centre of
      nuclear charge R_M;
    - ``charge_flow``: Σ_M Σ_{A∈M} q_A (R_A - R_M), charge moved between the atoms of a molecule;
    - ``atomic_moments``: -Σ_A ∫(r - R_A) rho_A dr, the l = 1 moments of each atom's functions.

    ``molecules``: a list of atom-index arrays covering every atom once (default: the waters
    found by connectivity)."""
    molecules = list(find_waters(atoms)) if molecules is None else [np.asarray(m, dtype=int) for m in molecules]
    covered = np.sort(np.concatenate(molecules)) if molecules else np.zeros(0, dtype=int)
    if not np.array_equal(covered, np.arange(len(atoms))):
        raise StructureError("the molecules must cover every atom exactly once")
    pos = atoms.get_positions()
    o = density.centre_of_nuclear_charge(atoms) if origin is None else np.asarray(origin, dtype=float)
    charges = density.atomic_charges(atoms, coefficients, basis)
    centre = density.molecular_centres(atoms, molecules)
    # each atom's term about its own nucleus: the l = 1 moment of its functions
    atomic = density.atomic_dipole_contributions(atoms, coefficients, basis, origin=pos)
    return {"net_charges": charges @ (centre - o), "charge_flow": charges @ (pos - centre),
            "atomic_moments": atomic.sum(axis=0)}


def electrostatic_errors(atoms, coefficients, reference_coefficients, basis) -> dict:
    """Per-structure electrostatic errors of a density against a reference density (both
    coefficient arrays on ``atoms``): ``charge_mae`` (e, per atom), ``water_charge_mae`` (e, per
    water molecule; None if ``atoms`` is not whole waters), ``water_charge_reference_mean_abs``
    (e, the reference's own mean |water net charge|: the real charge transfer), and the norm
    (Debye) of each part of the dipole error (:func:`dipole_components` of the difference,
    about the centre of nuclear charge)."""
    dq = density.atomic_charges(atoms, coefficients, basis) - density.atomic_charges(atoms, reference_coefficients, basis)
    out = {"charge_mae": float(np.mean(np.abs(dq)))}
    try:
        waters = find_waters(atoms)
    except StructureError:
        return {**out, **{k: None for k in ELECTROSTATIC_FIELDS if k not in out}}
    ref_water = water_charges(atoms, reference_coefficients, basis, waters)
    out["water_charge_mae"] = float(np.mean(np.abs(water_charges(atoms, coefficients, basis, waters) - ref_water)))
    out["water_charge_reference_mean_abs"] = float(np.mean(np.abs(ref_water)))
    pred = dipole_components(atoms, coefficients, basis, list(waters))
    ref = dipole_components(atoms, reference_coefficients, basis, list(waters))
    for name in pred:
        out[f"dipole_error_{name}"] = float(np.linalg.norm(pred[name] - ref[name]) / Debye)
    return out


@functools.lru_cache(maxsize=None)
def free_atom_density(symbol: str, orbital_basis: str = FREE_ATOM_BASIS) -> np.ndarray:
    """Spherical density (e/Bohr³) of the free neutral atom ``symbol`` at the radii
    ``_FREE_ATOM_RADII`` (Bohr): PySCF's spherically averaged atomic Hartree–Fock density
    (``init_guess_by_atom``, fractional occupations) in ``orbital_basis``."""
    from pyscf import scf

    mol = build_mole([symbol], np.zeros((1, 3)), orbital_basis, closed_shell=False)
    points = np.stack([_FREE_ATOM_RADII, 0 * _FREE_ATOM_RADII, 0 * _FREE_ATOM_RADII], axis=1)
    values = density.full_density_on_grid(mol, scf.hf.init_guess_by_atom(mol), points)
    values.setflags(write=False)  # cached: shared by every caller
    return values


def _check_grid(coords_bohr, weights) -> tuple:
    coords_bohr, weights = np.asarray(coords_bohr, dtype=float), np.asarray(weights, dtype=float)
    if coords_bohr.ndim != 2 or coords_bohr.shape[1] != 3 or not np.isfinite(coords_bohr).all():
        raise ValueError(f"grid points must be a finite (n, 3) array, got shape {coords_bohr.shape}")
    if weights.shape != (len(coords_bohr),) or not np.isfinite(weights).all():
        raise ValueError(f"{len(coords_bohr)} grid points need as many weights, all finite, got shape {weights.shape}")
    return coords_bohr, weights


def hirshfeld_weights(atoms, coords_bohr, free_atom_basis: str = FREE_ATOM_BASIS) -> np.ndarray:
    """Hirshfeld's share w_A(r) = rho_A^free(r) / Σ_B rho_B^free(r) of every atom of ``atoms`` (Å)
    at the points ``coords_bohr`` (n_points, 3; Bohr): shape (n_points, n_atoms), rows summing to
    1, zero where every free atom vanishes (beyond 40 Bohr). Free atoms:
    :func:`free_atom_density` in ``free_atom_basis``. Memory O(n_points · n_atoms): pass blocks."""
    if len(atoms) == 0:
        raise StructureError("no atoms to share the density among")
    symbols, positions = atoms.get_chemical_symbols(), atoms.get_positions() / Bohr
    free = np.stack([np.interp(np.linalg.norm(coords_bohr - positions[i], axis=1), _FREE_ATOM_RADII,
                               free_atom_density(symbols[i], free_atom_basis), right=0.0)
                     for i in range(len(atoms))], axis=1)
    promolecule = free.sum(axis=1, keepdims=True)
    return np.where(promolecule > 1e-30, free / np.where(promolecule > 1e-30, promolecule, 1.0), 0.0)


def hirshfeld_charges(atoms, coords_bohr, weights, rho, free_atom_basis: str = FREE_ATOM_BASIS) -> np.ndarray:
    """Hirshfeld atom charges (e) of a density ``rho`` (e/Bohr³; shape (n_points,) or
    (n_points, k) for k densities at once) given at the points ``coords_bohr`` (n_points, 3) of an
    integration grid with ``weights`` (Bohr³) for ``atoms`` (Å): q_A = Z_A − ∫ rho w_A dr with
    w_A the share of :func:`hirshfeld_weights`. Returns (n_atoms,) or (n_atoms, k)."""
    coords_bohr, weights = _check_grid(coords_bohr, weights)
    rho = np.asarray(rho, dtype=float)
    if len(rho) != len(coords_bohr) or rho.ndim > 2:
        raise ValueError(f"{len(coords_bohr)} grid points need as many density values, got densities {rho.shape}")
    if not np.isfinite(rho).all():
        raise ValueError("grid densities contain NaN/inf")
    if len(atoms) == 0:
        raise StructureError("no atoms to share the density among")
    columns = weights[:, None] * rho.reshape(len(rho), -1)
    populations = np.zeros((len(atoms), columns.shape[1]))
    for start in range(0, len(coords_bohr), _HIRSHFELD_BLOCK):
        rows = slice(start, start + _HIRSHFELD_BLOCK)
        populations += hirshfeld_weights(atoms, coords_bohr[rows], free_atom_basis).T @ columns[rows]
    charges = atoms.get_atomic_numbers()[:, None] - populations
    return charges[:, 0] if rho.ndim == 1 else charges


def hirshfeld_population_matrix(atoms, basis, grid_level: int = 1,
                                free_atom_basis: str = FREE_ATOM_BASIS) -> np.ndarray:
    """The linear map from aux-basis coefficients to Hirshfeld populations on ``atoms`` (Å):
    M[A, B, j] = ∫ w_A(r) χ_Bj(r) dr (electrons per unit coefficient), shape (n_atoms, n_atoms,
    basis.width), e3nn layout, zero on padding, integrated on a PySCF grid of ``grid_level`` (0–9).
    The Hirshfeld charge of atom A of coefficients c (a.u., e3nn layout) is
    Z_A − Σ_Bj M[A, B, j] c[B, j], as :func:`density_hirshfeld_charges` at the same grid level."""
    validate_atoms(atoms, elements=tuple(basis.symbols), allow_non_water=True)
    coords, weights = density.integration_grid(atoms, grid_level)
    symbols = atoms.get_chemical_symbols()
    auxmol = basis.aux_mole(symbols, atoms.get_positions())
    flat = np.zeros((len(atoms), auxmol.nao_nr()))
    for rows, ao, _ in density.screened_blocks(auxmol, coords):  # the shares take n_atoms/nao of ao's memory
        flat += (hirshfeld_weights(atoms, coords[rows], free_atom_basis) * weights[rows, None]).T @ ao
    # c_pyscf = R^T c_e3nn per atom, so a row w of the PySCF map is R w in e3nn layout
    return np.stack([np.nan_to_num(basis.pyscf_to_e3nn(symbols, row)) for row in flat]).reshape(
        len(atoms), len(atoms), basis.width)


def hirshfeld_errors(atoms, grid: dict, free_atom_basis: str = FREE_ATOM_BASIS) -> dict:
    """Hirshfeld charge errors (e) of the densities in ``grid`` (a
    :func:`ase_density.density.densities_on_grid` result) against the full DFT density in it:
    ``hirshfeld_charge_mae`` (per atom) and ``hirshfeld_water_charge_mae`` (per water) of the
    model density, the same two of the fitted reference (``..._fit``: what the basis itself
    loses), and ``hirshfeld_water_charge_reference_mean_abs`` (the DFT density's own mean |water
    charge|). Values are None when ``grid`` has no full density (or fit), water values when
    ``atoms`` are not whole waters."""
    out = dict.fromkeys(HIRSHFELD_FIELDS)
    if "full" not in grid:
        return out
    names = [name for name in ("model", "fit") if name in grid]
    charges = hirshfeld_charges(atoms, grid["coords"], grid["weights"],
                                np.stack([grid[name] for name in names] + [grid["full"]], axis=1), free_atom_basis)
    try:
        waters = find_waters(atoms)
    except StructureError:
        waters = None
    for k, name in enumerate(names):
        suffix = "" if name == "model" else "_fit"
        out[f"hirshfeld_charge_mae{suffix}"] = float(np.mean(np.abs(charges[:, k] - charges[:, -1])))
        if waters is not None:
            error = charges[waters, k].sum(axis=1) - charges[waters, -1].sum(axis=1)
            out[f"hirshfeld_water_charge_mae{suffix}"] = float(np.mean(np.abs(error)))
    if waters is not None:
        out["hirshfeld_water_charge_reference_mean_abs"] = float(np.mean(np.abs(charges[waters, -1].sum(axis=1))))
    return out


def density_hirshfeld_charges(atoms, coefficients, basis, grid_level: int = 3,
                              free_atom_basis: str = FREE_ATOM_BASIS) -> np.ndarray:
    """Hirshfeld atom charges (e), shape (n_atoms,), of the density of aux-basis ``coefficients``
    (a.u., e3nn layout) on ``atoms`` (Å), integrated on a PySCF grid of ``grid_level`` (0–9)."""
    coords, weights = density.integration_grid(atoms, grid_level)
    auxmol, flat = density.pyscf_coefficients(atoms, coefficients, basis)
    return hirshfeld_charges(atoms, coords, weights, density.aux_density_values(auxmol, flat, coords), free_atom_basis)
