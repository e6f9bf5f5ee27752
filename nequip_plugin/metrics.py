"""Losses and metrics on density coefficients for nequip's ``MetricsManager``.

- :class:`CoefficientSelection`: a field modifier keeping the coefficients of some l (and element),
  NaN elsewhere, so ``ignore_nan`` metrics see only those.
- :class:`CoulombError`: error in density space, mean over atoms of Δcᵀ J_Z Δc (Hartree), with
  J_Z the one-centre Coulomb metric (P|1/r12|Q) of the atom's element.
- :func:`DensityLoss`, :func:`DensityMetrics`: ready ``MetricsManager``s for the config.
"""

import functools
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from nequip.data import AtomicDataDict, BaseModifier
from nequip.data.stats import _MeanX
from nequip.train import MeanAbsoluteError, MeanSquaredError, MetricsManager, RootMeanSquaredError

from ase_density.basis import AuxBasis

from .nn import COEFFICIENTS_KEY


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


def coulomb_blocks(basis: AuxBasis, type_names: Sequence[str], l_max: Optional[int] = None) -> torch.Tensor:
    """(num_types, width, width) one-centre Coulomb metric (P|1/r12|Q) of each element in e3nn
    layout (Hartree per coefficient²); zero on padding and on functions with l > ``l_max``."""
    blocks = np.zeros((len(type_names), basis.width, basis.width))
    for t, name in enumerate(type_names):
        keep = basis.element(name).function_l() <= (l_max if l_max is not None else basis.lmax)
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

    def __init__(self, basis: str, type_names: Sequence[str], l_max: Optional[int] = None, **kwargs):
        super().__init__(**kwargs)
        self.register_buffer("blocks", coulomb_blocks(_load_basis(basis, tuple(type_names)), type_names, l_max),
                             persistent=False)

    def update(self, preds: AtomicDataDict.Type, target: AtomicDataDict.Type) -> None:
        y = target[COEFFICIENTS_KEY]
        delta = torch.where(torch.isnan(y), torch.zeros_like(y), preds[COEFFICIENTS_KEY] - y)
        J = self.blocks.to(delta.dtype)[target[AtomicDataDict.ATOM_TYPE_KEY].view(-1)]
        super().update(torch.einsum("ni,nij,nj->n", delta, J, delta))

    def __str__(self) -> str:
        return "coulomb"


def DensityLoss(basis: str, type_names: List[str], l_max: Optional[int] = None, mse: float = 1.0,
                coulomb: Optional[float] = None):
    """Loss ``MetricsManager``: ``coeff_mse`` (MSE over all labelled coefficients with l <= ``l_max``,
    a.u.²) with weight ``mse``, plus ``coulomb`` (:class:`CoulombError`) with weight ``coulomb``
    if given. Set ``l_max`` to the model's ``lmax_o``."""
    metrics = []
    if mse:
        metrics.append({"name": "coeff_mse", "field": CoefficientSelection(basis, type_names, l_max=l_max),
                        "metric": MeanSquaredError(), "coeff": mse, "ignore_nan": True})
    if coulomb:
        metrics.append({"name": "coulomb", "field": None, "metric": CoulombError(basis, type_names, l_max),
                        "coeff": coulomb})
    if not metrics:
        raise ValueError("the loss needs a positive `mse` or `coulomb` weight")
    return MetricsManager(metrics, type_names=type_names)


def DensityMetrics(basis: str, type_names: List[str], l_max: Optional[int] = None, coulomb: bool = True,
                   extra_metrics: Optional[List[Dict[str, Any]]] = None):
    """Monitoring ``MetricsManager``: coefficient RMSE and MAE (a.u.) per element over l <= ``l_max``
    (``coeff_rmse_H``, ...; their mean ``coeff_rmse`` is the ``weighted_sum`` that checkpoints
    monitor), RMSE and MAE per element and per l over *all* l of the basis (``coeff_O_l3_rmse``;
    for l > ``l_max`` the error of predicting zero), and :class:`CoulombError` if ``coulomb``."""
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
    return MetricsManager(metrics + list(extra_metrics or []), type_names=type_names)
