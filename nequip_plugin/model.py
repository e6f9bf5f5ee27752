"""``DensityModel``: a NequIP network that predicts auxiliary-basis density coefficients per atom.

type embedding -> spherical-harmonic edge attributes + Bessel radial encoding -> ``num_layers``
NequIP convolutions with hidden irreps up to ``lmax_h`` -> one readout convolution (tensor
product with edge spherical harmonics) to the coefficient irreps up to ``lmax_o`` -> per-element
layout (exact zeros for padding and for l > ``lmax_o``) -> per-element shift and scale of the
scalar coefficients from training-data statistics.
"""

from typing import Dict, List, Optional, Sequence, Union

from e3nn import o3
from nequip.model import model_builder
from nequip.nn import ConvNetLayer, InteractionBlock, SequentialGraphNetwork
from nequip.nn.embedding import (
    BesselEdgeLengthEncoding,
    EdgeLengthNormalizer,
    NodeTypeEmbed,
    PolynomialCutoff,
    SphericalHarmonicEdgeAttrs,
)

from ase_density.basis import DEFAULT_AUXBASIS, AuxBasis

from .nn import ChargeEquilibration, PerTypeLayout, PerTypeScalarScaleShift

#: node field of the softness that :class:`ChargeEquilibration` reads
SOFTNESS_KEY = "charge_softness"

LMAX_RANGE = range(0, 5)


def output_multiplicities(basis: AuxBasis, type_names: Sequence[str], lmax: int) -> Dict[int, int]:
    """{l: multiplicity} that covers every element's functions with l <= ``lmax``."""
    out: Dict[int, int] = {}
    for name in type_names:
        for l, m in basis.element(name).multiplicities.items():
            if l <= lmax:
                out[l] = max(out.get(l, 0), m)
    return out


def layout_columns(basis: AuxBasis, type_names: Sequence[str], lmax: int) -> List[List[int]]:
    """Per type, the column of the shared irreps (:func:`output_multiplicities`) that fills each padded
    output column, or -1 (padding, or l > ``lmax``)."""
    shared = output_multiplicities(basis, type_names, lmax)
    offsets, start = {}, 0
    for l, m in sorted(shared.items()):
        offsets[l] = start
        start += m * (2 * l + 1)
    columns = []
    for name in type_names:
        row = []
        for l, m in sorted(basis.element(name).multiplicities.items()):
            n = m * (2 * l + 1)
            row += list(range(offsets[l], offsets[l] + n)) if l <= lmax else [-1] * n
        columns.append(row + [-1] * (basis.width - len(row)))
    return columns


def _scalar_statistics(basis, type_names, coefficient_mean, coefficient_std):
    """({type: l=0 columns}, {type: scales}, {type: shifts}) from per-element column statistics."""
    columns, scales, shifts = {}, {}, {}
    for name in type_names:
        element = basis.element(name)
        for label, stats in (("coefficient_mean", coefficient_mean), ("coefficient_std", coefficient_std)):
            if name not in stats:
                raise ValueError(f"`{label}` has no entry for type {name}")
            if len(stats[name]) != element.size:
                raise ValueError(f"`{label}` for {name} has {len(stats[name])} columns, but the auxiliary basis "
                                 f"{basis.name!r} has {element.size} functions for {name}: the training data "
                                 f"was made with another basis")
        cols = [j for j, l in enumerate(element.function_l()) if l == 0]
        std = [float(coefficient_std[name][j]) for j in cols]
        if not all(s > 0 for s in std):
            raise ValueError(f"`coefficient_std` of {name} has non-positive scalar entries {std}: too little training data")
        columns[name] = cols
        scales[name] = std
        shifts[name] = [float(coefficient_mean[name][j]) for j in cols]
    return columns, scales, shifts


@model_builder
def DensityModel(
    r_max: float,
    type_names: Sequence[str],
    basis: str = DEFAULT_AUXBASIS,
    lmax_h: int = 2,
    lmax_o: int = 4,
    num_layers: int = 3,
    num_features: Union[int, List[int]] = 32,
    type_embed_num_features: Optional[int] = None,
    radial_mlp_depth: int = 1,
    radial_mlp_width: int = 64,
    num_bessels: int = 8,
    polynomial_cutoff_p: int = 6,
    avg_num_neighbors: Optional[float] = None,
    coefficient_mean: Optional[Dict[str, List[float]]] = None,
    coefficient_std: Optional[Dict[str, List[float]]] = None,
    charge_equilibration: bool = False,
):
    """Per-atom density coefficients ``density_coefficients`` (n_atoms, width), e3nn layout.

    Args:
        r_max: cutoff radius (Å)
        type_names: element symbols, in the model's type order
        basis: auxiliary basis: PySCF name, ``<name>-decontract``, or basis file
        lmax_h: highest l of the hidden features (0-4), both parities
        lmax_o: highest l predicted (0-4); functions of higher l are held at exactly 0
        num_layers: number of hidden convolutions (>= 1)
        num_features: multiplicity of hidden irreps, one int or one per l = 0..lmax_h
        type_embed_num_features: width of the type embedding (default: ``num_features`` of l = 0)
        radial_mlp_depth, radial_mlp_width: radial network of every convolution
        num_bessels: number of Bessel functions encoding edge lengths
        polynomial_cutoff_p: exponent p of the polynomial cutoff envelope
        avg_num_neighbors: normalisation of neighbour sums (``${training_data_stats:num_neighbors_mean}``)
        coefficient_mean, coefficient_std: {element: per-column mean / std of its coefficients over the
            training set (a.u.)} from :class:`~nequip_plugin.data.CoefficientStatisticsManager`; the l = 0
            entries shift and scale the scalar outputs. ``None`` (both): no shift and scale.
        charge_equilibration: end with :class:`~nequip_plugin.nn.ChargeEquilibration`: the readout
            also predicts a softness per atom, and the missing electrons of each structure are
            shared out by softness, so the output carries the exact electron count
    """
    for label, value in (("lmax_h", lmax_h), ("lmax_o", lmax_o)):
        if value not in LMAX_RANGE:
            raise ValueError(f"`{label}` must be an integer in 0..4, got {value!r}")
    if num_layers < 1:
        raise ValueError(f"`num_layers` must be at least 1, got {num_layers}")
    if isinstance(num_features, int):
        num_features = [num_features] * (lmax_h + 1)
    if len(num_features) != lmax_h + 1:
        raise ValueError(f"`num_features` needs lmax_h + 1 = {lmax_h + 1} entries, got {num_features}")
    if (coefficient_mean is None) != (coefficient_std is None):
        raise ValueError("give both `coefficient_mean` and `coefficient_std`, or neither")
    aux = AuxBasis.load(basis, symbols=type_names)

    # === embeddings ===
    type_embed = NodeTypeEmbed(type_names=type_names, num_features=type_embed_num_features or num_features[0])
    spharm = SphericalHarmonicEdgeAttrs(irreps_edge_sh=max(lmax_h, lmax_o), irreps_in=type_embed.irreps_out)
    edge_norm = EdgeLengthNormalizer(r_max=r_max, type_names=type_names, irreps_in=spharm.irreps_out)
    bessel = BesselEdgeLengthEncoding(cutoff=PolynomialCutoff(polynomial_cutoff_p), num_bessels=num_bessels,
                                      irreps_in=edge_norm.irreps_out)
    modules = {"type_embed": type_embed, "spharm": spharm, "edge_norm": edge_norm, "bessel_encode": bessel}

    # === hidden convolutions (irreps that cannot arise are dropped by ConvNetLayer) ===
    hidden = o3.Irreps([(num_features[l], (l, p)) for l in range(lmax_h + 1) for p in (1, -1)])
    conv_kwargs = {"radial_mlp_depth": radial_mlp_depth, "radial_mlp_width": radial_mlp_width,
                   "avg_num_neighbors": avg_num_neighbors, "type_names": type_names}
    irreps = bessel.irreps_out
    for i in range(num_layers):
        layer = ConvNetLayer(irreps_in=irreps, feature_irreps_hidden=hidden,
                             convolution_kwargs={**conv_kwargs, "use_sc": i > 0, "is_first_layer": i == 0})
        modules[f"layer{i}_convnet"] = layer
        irreps = layer.irreps_out

    # === readout convolution to the coefficient irreps, then per-element layout ===
    shared = output_multiplicities(aux, type_names, lmax_o)
    coefficient_irreps = o3.Irreps([(m, (l, (-1) ** l)) for l, m in sorted(shared.items())])
    softness = {"scalar_column": coefficient_irreps.dim, "scalar_field": SOFTNESS_KEY} if charge_equilibration else {}
    readout_irreps = coefficient_irreps + o3.Irreps("1x0e") if charge_equilibration else coefficient_irreps
    readout = InteractionBlock(irreps_in=irreps, irreps_out=readout_irreps, **conv_kwargs)
    layout = PerTypeLayout(columns=layout_columns(aux, type_names, lmax_o), aux_basis_json=aux.to_json(),
                           irreps_in=readout.irreps_out, **softness)
    modules.update(readout=readout, layout=layout)
    if coefficient_mean is not None:
        columns, scales, shifts = _scalar_statistics(aux, type_names, coefficient_mean, coefficient_std)
        modules["scalar_scale_shift"] = PerTypeScalarScaleShift(
            type_names=type_names, columns=columns, scales=scales, shifts=shifts, width=aux.width,
            irreps_in=layout.irreps_out)
    if charge_equilibration:
        modules["charge_equilibration"] = _charge_equilibration(aux, type_names, modules[next(reversed(modules))].irreps_out)
    return SequentialGraphNetwork(modules)


def _charge_equilibration(aux: AuxBasis, type_names: Sequence[str], irreps_in) -> ChargeEquilibration:
    """:class:`ChargeEquilibration` for ``aux``: electrons go along the direction of the exact
    electron-count correction (the one-centre Coulomb metric's, ``correction_directions``)."""
    from ase.data import atomic_numbers

    from ase_density.density import correction_directions

    directions = correction_directions(aux)
    integrals = {name: aux.moments(name)[0].tolist() for name in type_names}
    normalised = {name: (directions[name] / (aux.moments(name)[0] @ directions[name])).tolist() for name in type_names}
    return ChargeEquilibration(type_names=type_names, numbers=[float(atomic_numbers[n]) for n in type_names],
                               integrals=integrals, directions=normalised, width=aux.width, irreps_in=irreps_in)

