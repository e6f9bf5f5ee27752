"""Losses and metrics on density coefficients for nequip's ``MetricsManager``.

- :class:`CoefficientSelection`: a field modifier keeping the coefficients of some l (and element),
  NaN elsewhere, so ``ignore_nan`` metrics see only those.
- :class:`CoulombError`: error in density space, mean over atoms of Δcᵀ J_Z Δc (Hartree), with
  J_Z the one-centre Coulomb metric (P|1/r12|Q) of the atom's element.
- Electrostatics (they see charge that moves between atoms, which the one-centre metric cannot):
  :class:`AtomicPopulation` (electrons on each atom's functions, e), :class:`WaterCharge` (net
  charge of each water molecule, e), :class:`StructureDipole` (dipole of each structure, e·Å)
  as field modifiers for any nequip metric, and :class:`StructureCoulombError`, the Coulomb
  error of the whole structure's density with the exact cross-atom terms of the s functions.
- :func:`DensityLoss`, :func:`DensityMetrics`: ready ``MetricsManager``s for the config.

Every integral comes from :class:`ase_density.basis.AuxBasis` (``moments``) and
:mod:`ase_density.electrostatics` (``s_primitives``), as in the analysis code.
"""

import functools
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
from ase.data import atomic_numbers
from ase.units import Bohr, Debye

from nequip.data import AtomicDataDict, BaseModifier
from nequip.data.stats import _MeanX
from nequip.train import MeanAbsoluteError, MeanSquaredError, MetricsManager, RootMeanSquaredError

from ase_density.basis import AuxBasis
from ase_density.electrostatics import s_primitives

from .nn import COEFFICIENTS_KEY, HIRSHFELD_KEY


@functools.lru_cache(maxsize=8)
def _load_basis(basis: str, type_names: tuple) -> AuxBasis:
    return AuxBasis.load(basis, symbols=type_names)


def _function_l(basis: AuxBasis, type_names: Sequence[str]) -> torch.Tensor:
    """(num_types, width) angular momentum of every column, -1 on padding."""
    return torch.as_tensor(basis.function_l(type_names), dtype=torch.long)


class CoefficientSelection(BaseModifier):
    """``density_coefficients`` of the functions with ``l_min <= l <= l_max`` (of atoms of
    ``element`` only, if given); every other entry becomes NaN, so use it with ``ignore_nan``.

    Args:
        basis: auxiliary basis (PySCF name, ``<name>-decontract`` or file)
        type_names: model type names (element symbols)
        l_min, l_max: range of angular momenta kept (``l_max=None``: no upper limit)
        element: keep only atoms of this type
    """

    def __init__(self, basis: str, type_names: Sequence[str], l_min: int = 0, l_max: Optional[int] = None,
                 element: Optional[str] = None):
        super().__init__(COEFFICIENTS_KEY)
        if element is not None and element not in type_names:
            raise ValueError(f"element {element!r} is not one of the type names {list(type_names)}")
        self.l_min, self.l_max, self.element = l_min, l_max, element
        ls = _function_l(_load_basis(basis, tuple(type_names)), type_names)
        keep = (ls >= l_min) & (ls <= (l_max if l_max is not None else ls.max()))
        if element is not None:
            keep &= (torch.arange(len(type_names)) == type_names.index(element))[:, None]
        if not keep.any():
            raise ValueError(f"no function of {element or 'any element'} has {l_min} <= l <= {l_max}")
        self.keep = keep

    def _func(self, data: AtomicDataDict.Type) -> torch.Tensor:
        x = data[self.field]
        keep = self.keep.to(x.device)[data[AtomicDataDict.ATOM_TYPE_KEY].view(-1)]
        return torch.where(keep, x, torch.full_like(x, float("nan")))

    def __str__(self) -> str:
        if self.l_max is None:
            ls = f"l>={self.l_min}"
        elif self.l_min == self.l_max:
            ls = f"l{self.l_min}"
        else:
            ls = f"l{self.l_min}-{self.l_max}"
        return "_".join(filter(None, ["coeff", self.element, ls]))


def coulomb_blocks(basis: AuxBasis, type_names: Sequence[str], l_max: Optional[int] = None,
                   l_min: int = 0) -> torch.Tensor:
    """(num_types, width, width) one-centre Coulomb metric (P|1/r12|Q) of each element in e3nn
    layout (Hartree per coefficient²); zero on padding and on functions with l outside
    ``l_min``..``l_max``."""
    blocks = np.zeros((len(type_names), basis.width, basis.width))
    for t, name in enumerate(type_names):
        ls = basis.element(name).function_l()
        keep = (ls >= l_min) & (ls <= (l_max if l_max is not None else basis.lmax))
        n = len(keep)
        blocks[t, :n, :n] = basis.coulomb_metric(name) * np.outer(keep, keep)
    return torch.as_tensor(blocks)


class CoulombError(_MeanX):
    """Error of the predicted density in the Coulomb metric, mean over atoms of
    Δcᵀ J_Z Δc = ∫∫ Δρ_A(r) Δρ_A(r') / |r - r'| (Hartree), Δρ_A the atom's own density error.

    Takes whole prediction / target dicts (``field: null`` in ``MetricsManager``); entries whose
    target is NaN (padding, unlabelled) count as zero error.

    Args:
        basis: auxiliary basis (PySCF name, ``<name>-decontract`` or file)
        type_names: model type names (element symbols)
        l_max: ignore functions with l > ``l_max`` (those the model does not predict)
    """

    def __init__(self, basis: str, type_names: Sequence[str], l_max: Optional[int] = None, l_min: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.register_buffer("blocks", coulomb_blocks(_load_basis(basis, tuple(type_names)), type_names, l_max, l_min),
                             persistent=False)

    def _one_centre(self, preds: AtomicDataDict.Type, target: AtomicDataDict.Type):
        """(coefficient errors (n_atoms, width), atom types, one-centre energy of each atom's error)."""
        y = target[COEFFICIENTS_KEY]
        delta = torch.where(torch.isnan(y), torch.zeros_like(y), preds[COEFFICIENTS_KEY] - y)
        types = target[AtomicDataDict.ATOM_TYPE_KEY].view(-1)
        return delta, types, torch.einsum("ni,nij,nj->n", delta, self.blocks.to(delta.dtype)[types], delta)

    def update(self, preds: AtomicDataDict.Type, target: AtomicDataDict.Type) -> None:
        super().update(self._one_centre(preds, target)[2])

    def __str__(self) -> str:
        return "coulomb"


def _type_table(basis: AuxBasis, type_names: Sequence[str], values, trailing=()) -> torch.Tensor:
    """(num_types, width, *trailing) table of per-column ``values(symbol)`` (an array over the
    element's functions), zero on padding."""
    table = torch.zeros((len(type_names), basis.width) + tuple(trailing), dtype=torch.float64)
    for t, name in enumerate(type_names):
        v = torch.as_tensor(np.asarray(values(name)), dtype=torch.float64)
        table[t, :len(v)] = v
    return table


PARTITIONS = ("basis", "hirshfeld")


class ElectrostaticModifier(BaseModifier):
    """Base of the field modifiers that turn ``density_coefficients`` into charges and moments
    with the integrals of the auxiliary basis (:meth:`AuxBasis.moments`). NaN entries of the
    coefficients (padding) count as zero.

    Args:
        basis: auxiliary basis (PySCF name, ``<name>-decontract`` or file)
        type_names: model type names (element symbols)
        partition: how the density is shared among atoms for charges: ``basis`` (each atom's own
            functions) or ``hirshfeld`` (Hirshfeld's partition, from the data's
            ``hirshfeld_population_matrix``: ``DensityDataset(hirshfeld_grid_level=...)``)
    """

    def __init__(self, basis: str, type_names: Sequence[str], partition: str = "basis"):
        super().__init__(COEFFICIENTS_KEY)
        if partition not in PARTITIONS:
            raise ValueError(f"partition must be one of {PARTITIONS}, got {partition!r}")
        self.partition = partition
        unknown = [n for n in type_names if n not in atomic_numbers]
        if unknown:
            raise ValueError(f"type names {unknown} are not element symbols: charges need nuclear charges")
        aux = _load_basis(basis, tuple(type_names))
        self.integrals = _type_table(aux, type_names, lambda s: aux.moments(s)[0])  # (T, W), dimensionless
        self.first_moments = _type_table(aux, type_names, lambda s: aux.moments(s)[1], (3,))  # (T, W, 3), Bohr
        self.numbers = torch.tensor([float(atomic_numbers[n]) for n in type_names], dtype=torch.float64)

    def _coefficients(self, data: AtomicDataDict.Type):
        x = data[COEFFICIENTS_KEY]
        return torch.nan_to_num(x, nan=0.0), data[AtomicDataDict.ATOM_TYPE_KEY].view(-1)

    def populations(self, data: AtomicDataDict.Type) -> torch.Tensor:
        """(n_atoms,) electrons of each atom: on its own functions (``basis`` partition), or
        Σ_Bj M[A, B, j] c[B, j] with the structure's Hirshfeld population matrix M."""
        x, types = self._coefficients(data)
        if self.partition == "basis":
            return (x * self.integrals.to(x)[types]).sum(-1)
        if HIRSHFELD_KEY not in data:
            raise KeyError(f"the hirshfeld partition needs the field `{HIRSHFELD_KEY}` in the data: "
                           f"set `hirshfeld_grid_level` of the DensityDataset")
        matrix = data[HIRSHFELD_KEY]  # (n_atoms, max_atoms, width)
        data = AtomicDataDict.with_batch_(dict(data))
        batch, counts = data[AtomicDataDict.BATCH_KEY], data[AtomicDataDict.NUM_NODES_KEY].view(-1)
        n_graphs = len(counts)
        local = torch.arange(len(batch), device=x.device) - (torch.cumsum(counts, 0) - counts)[batch]  # atoms are contiguous per graph
        if int(local.max()) >= matrix.shape[1]:
            raise ValueError(f"`{HIRSHFELD_KEY}` covers {matrix.shape[1]} atoms per structure, fewer than the data holds")
        padded = torch.zeros((n_graphs, matrix.shape[1], x.shape[1]), dtype=x.dtype, device=x.device)
        padded[batch, local] = x  # each structure's coefficients, in its own atom order
        return torch.einsum("abj,abj->a", matrix.to(x), padded[batch])

    def charges(self, data: AtomicDataDict.Type) -> torch.Tensor:
        """(n_atoms,) atomic charges (e): nuclear charge minus :meth:`populations`."""
        types = data[AtomicDataDict.ATOM_TYPE_KEY].view(-1)
        populations = self.populations(data)
        return self.numbers.to(populations)[types] - populations


class AtomicPopulation(ElectrostaticModifier):
    """Field modifier: electrons on each atom (e), shape (n_atoms,), in the ``partition`` (on its
    own functions by default). Its error is the error of the atomic charges."""

    def _func(self, data: AtomicDataDict.Type) -> torch.Tensor:
        return self.populations(data)

    def __str__(self) -> str:
        return "population" if self.partition == "basis" else f"{self.partition}_population"


def _graph_index(data: AtomicDataDict.Type):
    """(batch index (n_atoms,), number of graphs)."""
    data = AtomicDataDict.with_batch_(dict(data))
    return data[AtomicDataDict.BATCH_KEY], len(data[AtomicDataDict.NUM_NODES_KEY])


class StructureDipole(ElectrostaticModifier):
    """Field modifier: dipole moment (e·Å) of each structure about its centre of nuclear charge,
    shape (n_graphs, 3): Σ_A q_A (R_A - o) - Σ_A ∫(r - R_A) rho_A dr (the raw model output
    need not be neutral, hence the fixed origin)."""

    def _func(self, data: AtomicDataDict.Type) -> torch.Tensor:
        x, types = self._coefficients(data)
        batch, n_graphs = _graph_index(data)
        pos = data[AtomicDataDict.POSITIONS_KEY].to(x.dtype)
        z = self.numbers.to(x)[types]
        centre = torch.zeros(n_graphs, 3, dtype=x.dtype, device=x.device).index_add_(0, batch, z[:, None] * pos)
        centre = centre / torch.zeros(n_graphs, dtype=x.dtype, device=x.device).index_add_(0, batch, z)[:, None]
        q = z - (x * self.integrals.to(x)[types]).sum(-1)
        atomic = q[:, None] * (pos - centre[batch]) - Bohr * torch.einsum("nw,nwk->nk", x, self.first_moments.to(x)[types])
        return torch.zeros(n_graphs, 3, dtype=x.dtype, device=x.device).index_add_(0, batch, atomic)

    def __str__(self) -> str:
        return "dipole"


class WaterCharge(ElectrostaticModifier):
    """Field modifier: net charge (e) of each water molecule, on its O atom, NaN on every other
    atom (use with ``ignore_nan``), shape (n_atoms,). Each H belongs to the nearest O of its
    structure, as :func:`ase_density.validation.find_waters` assigns them.

    Args:
        basis, type_names, partition: as :class:`ElectrostaticModifier`; ``type_names`` must
            contain H and O
    """

    def __init__(self, basis: str, type_names: Sequence[str], partition: str = "basis"):
        super().__init__(basis, type_names, partition)
        if "H" not in type_names or "O" not in type_names:
            raise ValueError(f"WaterCharge needs types H and O, got {list(type_names)}")
        self.h, self.o = type_names.index("H"), type_names.index("O")

    def _func(self, data: AtomicDataDict.Type) -> torch.Tensor:
        q = self.charges(data)
        types = data[AtomicDataDict.ATOM_TYPE_KEY].view(-1)
        batch, _ = _graph_index(data)
        pos = data[AtomicDataDict.POSITIONS_KEY].to(q.dtype)
        is_h, is_o = types == self.h, types == self.o
        distance = torch.cdist(pos[is_h], pos[is_o])
        distance = torch.where(batch[is_h][:, None] == batch[is_o][None, :], distance, torch.full_like(distance, float("inf")))
        owner = torch.nonzero(is_o).view(-1)[distance.argmin(dim=1)]
        water = torch.where(is_o, q, torch.zeros_like(q)).index_add(0, owner, q[is_h])
        return torch.where(is_o, water, torch.full_like(water, float("nan")))

    def __str__(self) -> str:
        return "water_charge" if self.partition == "basis" else f"{self.partition}_water_charge"


class HirshfeldChargeError(_MeanX):
    """Mean over atoms (or over water molecules, ``molecules=True``) of the squared (or, with
    ``squared=False``, absolute) error of Hirshfeld charges (e², e). Takes whole prediction /
    target dicts (``field: null`` in ``MetricsManager``): the predicted coefficients are shared out
    with the target's ``hirshfeld_population_matrix``, which a model's output does not carry.

    Args:
        basis, type_names: as :class:`ElectrostaticModifier`
        molecules: net charges of water molecules (:class:`WaterCharge`) instead of atoms
        squared: mean squared error (a loss) rather than mean absolute error (a metric)
    """

    def __init__(self, basis: str, type_names: Sequence[str], molecules: bool = False, squared: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.molecules, self.squared = molecules, squared
        self.charges = (WaterCharge if molecules else AtomicPopulation)(basis, type_names, "hirshfeld")

    def update(self, preds: AtomicDataDict.Type, target: AtomicDataDict.Type) -> None:
        reference = self.charges(target)
        error = self.charges({**target, COEFFICIENTS_KEY: preds[COEFFICIENTS_KEY]}) - reference
        error = error[~torch.isnan(reference)]  # water charges sit on the O atoms only
        super().update(error * error if self.squared else error.abs())

    def __str__(self) -> str:
        return f"hirshfeld_{'water_charge' if self.molecules else 'population'}_{'mse' if self.squared else 'mae'}"


class DipoleErrorNorm(_MeanX):
    """Mean over structures of |mu_pred - mu_ref|, in the field's units times ``factor``
    (``factor = 1 / ase.units.Debye`` turns e·Å into Debye)."""

    def __init__(self, factor: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        super().update(self.factor * torch.linalg.norm((preds - target).reshape(-1, 3), dim=-1))

    def __str__(self) -> str:
        return "norm_mae"


class StructureCoulombError(CoulombError):
    """Coulomb-metric error of each structure's whole density, per atom (Hartree), averaged over
    structures: (1/n_atoms) ∫∫ Δρ(r) Δρ(r') / |r - r'|, where the s functions of all atoms
    interact exactly across atoms (Gaussian charges: erf(sqrt(a b / (a + b)) R) / R) and the
    functions with l >= 1 through each atom's one-centre metric J_Z (as :class:`CoulombError`).
    The s functions carry all of a density's charge, so this error sees charge moving between
    atoms and molecules, which :class:`CoulombError` cannot. Positive definite; zero only at the
    reference. Arguments and NaN handling as :class:`CoulombError`.
    """

    def __init__(self, basis: str, type_names: Sequence[str], l_max: Optional[int] = None, **kwargs):
        super().__init__(basis, type_names, l_max, l_min=1, **kwargs)
        aux = _load_basis(basis, tuple(type_names))
        primitives = [s_primitives(aux, name) for name in type_names]
        width = max(len(a) for a, _, _ in primitives)
        exponents = torch.ones(len(type_names), width, dtype=torch.float64)  # padding: charge 0
        charges = torch.zeros(len(type_names), width, dtype=torch.float64)
        columns = torch.zeros(len(type_names), width, dtype=torch.long)
        for t, (a, q, col) in enumerate(primitives):
            exponents[t, :len(a)], charges[t, :len(a)], columns[t, :len(a)] = map(torch.as_tensor, (a, q, col))
        self.register_buffer("exponents", exponents, persistent=False)
        self.register_buffer("primitive_charges", charges, persistent=False)
        self.register_buffer("columns", columns, persistent=False)

    def update(self, preds: AtomicDataDict.Type, target: AtomicDataDict.Type) -> None:
        delta, types, one_centre = self._one_centre(preds, target)
        charge = self.primitive_charges.to(delta)[types] * torch.gather(delta, 1, self.columns[types])  # (n, P)
        exponent = self.exponents.to(delta)[types]
        pos = target[AtomicDataDict.POSITIONS_KEY].to(delta) / Bohr
        batch, n_graphs = _graph_index(target)
        values = []
        for g in range(n_graphs):
            atoms = batch == g
            q, a = charge[atoms].reshape(-1), exponent[atoms].reshape(-1)
            centres = pos[atoms].repeat_interleave(exponent.shape[1], dim=0)
            r = torch.cdist(centres, centres)
            p = a[:, None] * a[None, :] / (a[:, None] + a[None, :])
            safe = torch.where(r > 1e-10, r, torch.ones_like(r))
            kernel = torch.where(r > 1e-10, torch.erf(p.sqrt() * safe) / safe, 2.0 * (p / torch.pi).sqrt())
            values.append((q @ kernel @ q + one_centre[atoms].sum()) / atoms.sum())
        _MeanX.update(self, torch.stack(values))

    def __str__(self) -> str:
        return "structure_coulomb"


def DensityLoss(basis: str, type_names: List[str], l_max: Optional[int] = None, mse: float = 1.0,
                coulomb: Optional[float] = None, structure_coulomb: Optional[float] = None,
                population: Optional[float] = None, dipole: Optional[float] = None,
                hirshfeld_population: Optional[float] = None, hirshfeld_water_charge: Optional[float] = None):
    """Loss ``MetricsManager``, a weighted sum of the terms given a weight (``None`` or 0: off):

    - ``mse``: ``coeff_mse``, MSE over all labelled coefficients with l <= ``l_max`` (a.u.²);
    - ``coulomb``: :class:`CoulombError`, one-centre Coulomb error per atom (Hartree);
    - ``structure_coulomb``: :class:`StructureCoulombError`, the whole structure's Coulomb error
      per atom with exact cross-atom s terms (Hartree);
    - ``population``: MSE of the electrons on each atom (:class:`AtomicPopulation`, e²), i.e. of
      the atomic charges;
    - ``dipole``: MSE of the components of each structure's dipole (:class:`StructureDipole`, (e·Å)²);
    - ``hirshfeld_population``, ``hirshfeld_water_charge``: MSE of the Hirshfeld populations of
      the atoms and of the Hirshfeld net charges of the water molecules (e²); they need the
      dataset's ``hirshfeld_grid_level``.

    Set ``l_max`` to the model's ``lmax_o``."""
    metrics = []
    if mse:
        metrics.append({"name": "coeff_mse", "field": CoefficientSelection(basis, type_names, l_max=l_max),
                        "metric": MeanSquaredError(), "coeff": mse, "ignore_nan": True})
    if coulomb:
        metrics.append({"name": "coulomb", "field": None, "metric": CoulombError(basis, type_names, l_max),
                        "coeff": coulomb})
    if structure_coulomb:
        metrics.append({"name": "structure_coulomb", "field": None,
                        "metric": StructureCoulombError(basis, type_names, l_max), "coeff": structure_coulomb})
    if population:
        metrics.append({"name": "population_mse", "field": AtomicPopulation(basis, type_names),
                        "metric": MeanSquaredError(), "coeff": population})
    if dipole:
        metrics.append({"name": "dipole_mse", "field": StructureDipole(basis, type_names),
                        "metric": MeanSquaredError(), "coeff": dipole})
    for molecules, weight in ((False, hirshfeld_population), (True, hirshfeld_water_charge)):
        if weight:
            metric = HirshfeldChargeError(basis, type_names, molecules=molecules)
            metrics.append({"name": str(metric), "field": None, "metric": metric, "coeff": weight})
    weights = {"mse": mse, "coulomb": coulomb, "structure_coulomb": structure_coulomb, "population": population,
               "dipole": dipole, "hirshfeld_population": hirshfeld_population,
               "hirshfeld_water_charge": hirshfeld_water_charge}
    if not metrics:
        raise ValueError(f"the loss needs a positive weight: {', '.join(weights)}")
    for name, weight in weights.items():
        if weight is not None and weight < 0:
            raise ValueError(f"loss weight `{name}` must be >= 0, got {weight}")
    return MetricsManager(metrics, type_names=type_names)


def DensityMetrics(basis: str, type_names: List[str], l_max: Optional[int] = None, coulomb: bool = True,
                   electrostatics: bool = True, hirshfeld_grid_level: Optional[int] = None,
                   extra_metrics: Optional[List[Dict[str, Any]]] = None):
    """Monitoring ``MetricsManager``: coefficient RMSE and MAE (a.u.) per element over l <= ``l_max``
    (``coeff_rmse_H``, ...; their mean ``coeff_rmse`` is the ``weighted_sum`` that checkpoints
    monitor), RMSE and MAE per element and per l over *all* l of the basis (``coeff_O_l3_rmse``;
    for l > ``l_max`` the error of predicting zero), :class:`CoulombError` if ``coulomb``, and if
    ``electrostatics``: :class:`StructureCoulombError`, the atomic-charge MAE per element
    (``charge_mae_H``, e), the water net-charge MAE (``water_charge_mae``, e) and the mean dipole
    error (``dipole_error_debye``, Debye); given the dataset's ``hirshfeld_grid_level`` (its
    Hirshfeld population matrices), the Hirshfeld charge MAE of atoms and of water molecules
    (``hirshfeld_population_mae``, ``hirshfeld_water_charge_mae``, e). Every error is against the
    fitted reference. Only ``coeff_rmse`` enters the monitored sum."""
    aux = _load_basis(basis, tuple(type_names))
    metrics = [
        {"name": "coeff_rmse", "field": CoefficientSelection(basis, type_names, l_max=l_max),
         "metric": RootMeanSquaredError(), "per_type": True, "ignore_nan": True, "coeff": 1.0},
        {"name": "coeff_mae", "field": CoefficientSelection(basis, type_names, l_max=l_max),
         "metric": MeanAbsoluteError(), "per_type": True, "ignore_nan": True},
    ]
    for name in type_names:
        for l in sorted(aux.element(name).multiplicities):
            field = CoefficientSelection(basis, type_names, l_min=l, l_max=l, element=name)
            metrics += [{"name": f"{field}_rmse", "field": field, "metric": RootMeanSquaredError(), "ignore_nan": True},
                        {"name": f"{field}_mae", "field": field, "metric": MeanAbsoluteError(), "ignore_nan": True}]
    if coulomb:
        metrics.append({"name": "coulomb", "field": None, "metric": CoulombError(basis, type_names, l_max)})
    if electrostatics:
        metrics += [
            {"name": "structure_coulomb", "field": None, "metric": StructureCoulombError(basis, type_names, l_max)},
            {"name": "charge_mae", "field": AtomicPopulation(basis, type_names), "metric": MeanAbsoluteError(),
             "per_type": True},
            {"name": "water_charge_mae", "field": WaterCharge(basis, type_names), "metric": MeanAbsoluteError(),
             "ignore_nan": True},
            {"name": "dipole_error_debye", "field": StructureDipole(basis, type_names),
             "metric": DipoleErrorNorm(factor=1.0 / Debye)},
        ]
    if hirshfeld_grid_level is not None:
        for molecules in (False, True):
            metric = HirshfeldChargeError(basis, type_names, molecules=molecules, squared=False)
            metrics.append({"name": str(metric), "field": None, "metric": metric})
    return MetricsManager(metrics + list(extra_metrics or []), type_names=type_names)
