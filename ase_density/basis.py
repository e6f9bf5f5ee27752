"""The auxiliary (density-fitting) basis: the single source of truth for coefficient layouts.

Coefficients live, per atom, in e3nn irreps order: shells sorted by l (stable), each shell's
contractions multiplicity-major, each function of a given l in e3nn's real spherical harmonic
order.  PySCF's order for the *same sorted shells* differs only for l >= 2 by the fixed orthogonal
matrix D^l(P) of the cyclic axis permutation P (checked by rotating real fits in
tests/test_basis.py); l = 0, 1 are identical.
Atoms are padded with NaN to the widest element.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field

import numpy as np

from .errors import BasisError

DECONTRACT_SUFFIX = "-decontract"
DEFAULT_AUXBASIS = "def2-universal-jfit-decontract"

#: cyclic axis permutation P: e3nn's real spherical harmonics of l >= 2 are D^l(P) times PySCF's
#: (checked by rotating real fits, tests/test_basis.py)
_AXIS_PERMUTATION = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])



@dataclass(frozen=True)
class Shell:
    """One shell: angular momentum ``l``, primitive exponents (1/Bohr^2) and contraction matrix
    ``coefficients`` of shape (n_primitives, n_contractions), unnormalised as in basis files."""

    l: int
    exponents: tuple
    coefficients: tuple  # rows: primitives; columns: contractions

    @property
    def n_contractions(self) -> int:
        return len(self.coefficients[0])

    def to_pyscf(self) -> list:
        """This shell in PySCF's internal basis format ``[l, [a, c1, c2, ...], ...]``."""
        return [self.l] + [[a, *c] for a, c in zip(self.exponents, self.coefficients)]

    @classmethod
    def from_pyscf(cls, entry) -> "Shell":
        l = int(entry[0])
        prims = entry[1:]
        if prims and not isinstance(prims[0], (list, tuple)):  # [l, kappa, [a, c], ...]
            prims = prims[1:]
        return cls(l, tuple(float(p[0]) for p in prims), tuple(tuple(float(x) for x in p[1:]) for p in prims))


def _irreps_string(multiplicities: dict) -> str:
    return "+".join(f"{m}x{l}{'e' if l % 2 == 0 else 'o'}" for l, m in sorted(multiplicities.items()) if m)


@dataclass(frozen=True)
class ElementBasis:
    """The auxiliary shells of one element, sorted by l (stable)."""

    symbol: str
    shells: tuple

    @property
    def size(self) -> int:
        """Number of basis functions."""
        return sum(s.n_contractions * (2 * s.l + 1) for s in self.shells)

    @property
    def multiplicities(self) -> dict:
        """{l: number of functions of that l divided by 2l+1}."""
        out: dict = {}
        for s in self.shells:
            out[s.l] = out.get(s.l, 0) + s.n_contractions
        return out

    @property
    def irreps(self) -> str:
        """e3nn Irreps string, e.g. ``12x0e+5x1o+4x2e+2x3o+1x4e``."""
        return _irreps_string(self.multiplicities)

    @property
    def lmax(self) -> int:
        return max(s.l for s in self.shells)

    def function_l(self) -> np.ndarray:
        """Angular momentum of every function, in layout order (same for PySCF and e3nn)."""
        return np.concatenate([np.full(s.n_contractions * (2 * s.l + 1), s.l) for s in self.shells])

    def to_pyscf(self) -> list:
        return [s.to_pyscf() for s in self.shells]


def _nwchem_element_lines(text: str, symbol: str) -> str:
    """The shell blocks of ``symbol`` in an NWChem-format basis file (PySCF's own search only
    finds elements separated by '#BASIS SET' comments)."""
    keep, current = [], None
    for line in text.splitlines():
        tokens = line.split()
        if not tokens or tokens[0].startswith("#") or tokens[0].upper() in ("BASIS", "END"):
            continue
        if tokens[0][0].isalpha():
            current = tokens[0].capitalize()
        if current == symbol:
            keep.append(line)
    if not keep:
        raise BasisError(f"no shells for element {symbol} in the NWChem-format file")
    return "\n".join(keep)


def _load_element(spec: str, symbol: str) -> list:
    from pyscf import gto
    from pyscf.gto.basis import parse_gaussian, parse_nwchem

    decontract = False
    name = spec
    if not os.path.isfile(spec) and spec.lower().endswith(DECONTRACT_SUFFIX):
        name, decontract = spec[: -len(DECONTRACT_SUFFIX)], True
    try:
        if os.path.isfile(name):
            with open(name) as fh:
                text = fh.read()
            if "****" in text:  # Gaussian94: one block per element, load only this element's block
                shells = parse_gaussian.load(name, symbol)
            else:
                shells = parse_nwchem.parse(_nwchem_element_lines(text, symbol), symbol)
        else:
            shells = gto.basis.load(name, symbol)
    except Exception as exc:  # PySCF raises a zoo of types for unknown names and unreadable files
        raise BasisError(f"cannot load auxiliary basis {spec!r} for element {symbol}: {exc}") from exc
    if not shells:
        raise BasisError(f"auxiliary basis {spec!r} has no functions for element {symbol}")
    if decontract:
        shells = gto.uncontract(shells)
    return shells


@dataclass(frozen=True)
class AuxBasis:
    """An auxiliary basis over a set of elements, with the PySCF <-> e3nn coefficient maps."""

    name: str
    elements: dict  # symbol -> ElementBasis
    _rotations: dict = field(default_factory=dict, compare=False, repr=False)
    _moments: dict = field(default_factory=dict, compare=False, repr=False)
    _metrics: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def load(cls, spec: str = DEFAULT_AUXBASIS, symbols=("H", "O")) -> "AuxBasis":
        """Load a PySCF basis name, a name with ``-decontract`` (every primitive its own shell),
        or an NWChem / Gaussian94 basis file, for the given element symbols."""
        elements = {}
        for sym in sorted(set(symbols), key=_atomic_number):
            shells = [Shell.from_pyscf(e) for e in _load_element(spec, sym)]
            shells.sort(key=lambda s: s.l)
            elements[sym] = ElementBasis(sym, tuple(shells))
        return cls(spec, elements)

    # --- serialisation: enough to rebuild the layout without the original file ---
    def to_json(self) -> str:
        return json.dumps({"name": self.name, "elements": {s: e.to_pyscf() for s, e in self.elements.items()}})

    @classmethod
    def from_json(cls, text: str) -> "AuxBasis":
        data = json.loads(text)
        elements = {s: ElementBasis(s, tuple(Shell.from_pyscf(e) for e in shells)) for s, shells in data["elements"].items()}
        return cls(data["name"], elements)

    # --- layout ---
    @property
    def symbols(self) -> list:
        return list(self.elements)

    @property
    def width(self) -> int:
        """Padded per-atom coefficient width (the widest element)."""
        return max(e.size for e in self.elements.values())

    @property
    def lmax(self) -> int:
        return max(e.lmax for e in self.elements.values())

    def element(self, symbol: str) -> ElementBasis:
        try:
            return self.elements[symbol]
        except KeyError:
            raise BasisError(f"element {symbol} is not covered by auxiliary basis {self.name!r} "
                             f"(covers {', '.join(self.elements)})") from None

    def irreps(self, symbol: str) -> str:
        return self.element(symbol).irreps

    def pyscf_basis(self) -> dict:
        """{symbol: shells in PySCF's internal format}, shells sorted by l."""
        return {s: e.to_pyscf() for s, e in self.elements.items()}

    def aux_mole(self, symbols, positions):
        """The PySCF ``Mole`` of this auxiliary basis on atoms at ``positions`` (Å): its function
        order is the PySCF order that :meth:`pyscf_to_e3nn` expects."""
        return build_mole(symbols, positions, {s: self.element(s).to_pyscf() for s in set(symbols)}, closed_shell=False)

    def rotation(self, symbol: str) -> np.ndarray:
        """Orthogonal matrix R (size × size) with c_e3nn = R @ c_pyscf for one atom of ``symbol``:
        the identity on l = 0, 1 blocks, D^l(P) on each l >= 2 block (module docstring)."""
        if symbol not in self._rotations:
            from e3nn import o3
            import torch

            P = torch.tensor(_AXIS_PERMUTATION, dtype=torch.float64)
            blocks = []
            for shell in self.element(symbol).shells:
                D = o3.Irrep(shell.l, (-1) ** shell.l).D_from_matrix(P).numpy() if shell.l >= 2 else np.eye(2 * shell.l + 1)
                blocks += [D] * shell.n_contractions
            R = np.zeros((self.element(symbol).size,) * 2)
            i = 0
            for D in blocks:
                n = D.shape[0]
                R[i:i + n, i:i + n] = D
                i += n
            self._rotations[symbol] = R
        return self._rotations[symbol]

    def _atom_blocks(self, symbols):
        start = 0
        for sym in symbols:
            n = self.element(sym).size
            yield sym, slice(start, start + n)
            start += n

    def pyscf_to_e3nn(self, symbols, coefficients) -> np.ndarray:
        """Flat PySCF-ordered coefficients (auxmol built from :meth:`pyscf_basis`) ->
        (n_atoms, width) e3nn layout, NaN-padded."""
        coefficients = np.asarray(coefficients, dtype=float)
        expected = sum(self.element(s).size for s in symbols)
        if coefficients.shape != (expected,):
            raise ValueError(f"expected {expected} PySCF-ordered coefficients for {len(symbols)} atoms, got shape {coefficients.shape}")
        out = np.full((len(symbols), self.width), np.nan)
        for i, (sym, block) in enumerate(self._atom_blocks(symbols)):
            out[i, :block.stop - block.start] = self.rotation(sym) @ coefficients[block]
        return out

    def e3nn_to_pyscf(self, symbols, coefficients) -> np.ndarray:
        """(n_atoms, width) e3nn layout -> flat PySCF-ordered coefficients."""
        coefficients = np.asarray(coefficients, dtype=float)
        if coefficients.shape != (len(symbols), self.width):
            raise ValueError(f"expected coefficients of shape {(len(symbols), self.width)}, got {coefficients.shape}")
        parts = []
        for i, sym in enumerate(symbols):
            n = self.element(sym).size
            parts.append(self.rotation(sym).T @ coefficients[i, :n])
        return np.concatenate(parts) if parts else np.zeros(0)

    def mask(self, symbols) -> np.ndarray:
        """(n_atoms, width) boolean: True where an atom has a basis function."""
        m = np.zeros((len(symbols), self.width), dtype=bool)
        for i, sym in enumerate(symbols):
            m[i, :self.element(sym).size] = True
        return m

    def function_l(self, symbols) -> np.ndarray:
        """(len(symbols), width) integer table: the angular momentum of every coefficient column
        of atoms ``symbols`` (element symbols or model type names), -1 on padding."""
        table = np.full((len(symbols), self.width), -1, dtype=int)
        for i, sym in enumerate(symbols):
            ls = self.element(sym).function_l()
            table[i, :len(ls)] = ls
        return table

    # --- integrals (e3nn layout, atomic units) ---
    def coulomb_metric(self, symbol: str) -> np.ndarray:
        """One-centre Coulomb metric J_Z = (P|1/r12|Q) of the functions of one atom of ``symbol``
        in e3nn layout, shape (size, size), Hartree per coefficient² (a.u.)."""
        if symbol not in self._metrics:
            R = self.rotation(symbol)
            self._metrics[symbol] = R @ self.aux_mole([symbol], np.zeros((1, 3))).intor("int2c2e") @ R.T
        return self._metrics[symbol]

    def moments(self, symbol: str) -> tuple:
        """(integrals, first_moments) of each function of ``symbol`` in e3nn layout:
        integrals[i] = ∫ chi_i dr (Bohr^3 · Bohr^-3 = dimensionless per unit coefficient),
        first_moments[i] = ∫ (r - R_atom) chi_i dr (Bohr), shape (size,) and (size, 3)."""
        if symbol not in self._moments:
            mol = self.aux_mole([symbol], np.zeros((1, 3)))
            integrals, firsts = [], []
            for ib in range(mol.nbas):
                l, a = mol.bas_angular(ib), mol.bas_exp(ib)
                c = mol._libcint_ctr_coeff(ib)  # (nprim, nctr), normalisation included
                for k in range(c.shape[1]):
                    I = np.zeros(2 * l + 1)
                    M = np.zeros((2 * l + 1, 3))
                    if l == 0:
                        I[0] = np.sum(c[:, k] * (np.pi / a) ** 1.5) / (2 * math.sqrt(math.pi))
                    elif l == 1:  # real Y_1 = sqrt(3/4pi) (x, y, z)/r in PySCF and e3nn alike
                        M[:, :] = np.eye(3) * math.sqrt(3 / (4 * math.pi)) * np.sum(c[:, k] * (np.pi / a) ** 1.5 / (2 * a))
                    integrals.append(I)
                    firsts.append(M)
            R = self.rotation(symbol)
            self._moments[symbol] = (R @ np.concatenate(integrals), R @ np.concatenate(firsts))
        return self._moments[symbol]


def build_mole(symbols, positions, basis, max_memory=4000, closed_shell=True):
    """A neutral PySCF ``Mole`` for atoms ``symbols`` at ``positions`` (Å) in ``basis`` (a PySCF
    basis name or {symbol: shells}); Å -> Bohr conversion happens here only. ``closed_shell=False``
    for molecules that only carry basis functions (auxiliary basis, single atoms)."""
    from pyscf import gto

    atom = [[s, tuple(float(x) for x in p)] for s, p in zip(symbols, np.asarray(positions, dtype=float))]
    return gto.M(atom=atom, unit="Angstrom", basis=basis, charge=0, spin=0 if closed_shell else None,
                 verbose=0, max_memory=max_memory)


def _atomic_number(symbol: str) -> int:
    from ase.data import atomic_numbers

    try:
        return atomic_numbers[symbol]
    except KeyError:
        raise BasisError(f"unknown element symbol {symbol!r}") from None
