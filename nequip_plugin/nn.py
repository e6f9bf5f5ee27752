"""Graph modules of the density model.

Only ``torch`` and ``nequip.nn``/``nequip.data`` are imported here, so that ``nequip-package``
can bundle these modules into a ``.nequip.zip`` that loads without this plugin installed.

Output layout: every atom's row holds its element's coefficients in e3nn order (the element's own
irreps, l ascending, multiplicity-major), padded with exact zeros to the widest element; the
columns of a row therefore mean different things for different elements (see
``ase_density.basis``).
"""

from typing import Dict, List, Optional, Sequence

import torch

from nequip.data import AtomicDataDict
from nequip.nn import GraphModuleMixin

#: the per-atom field of density coefficients (registered in ``nequip_plugin/__init__.py``)
COEFFICIENTS_KEY = "density_coefficients"
#: per-atom training field (n_atoms, max_atoms, width): row A of the structure's Hirshfeld population
#: matrix (:func:`ase_density.electrostatics.hirshfeld_population_matrix`), zero-padded to the
#: dataset's largest structure
HIRSHFELD_KEY = "hirshfeld_population_matrix"
#: the model-metadata key under which the auxiliary basis (``AuxBasis.to_json()``) is stored
AUX_BASIS_METADATA_KEY = "aux_basis"


class PerTypeLayout(GraphModuleMixin, torch.nn.Module):
    """Copy node features (irreps shared by all elements) into per-element coefficient layouts.

    ``columns[t][j]`` is the feature column that becomes output column ``j`` for atoms of type
    ``t``, or ``-1`` for an exact zero (padding, or functions the model does not predict). Whole
    irreps are copied, so the map is equivariant. The auxiliary basis that defines the layout is
    kept as JSON and reported in the model metadata under :data:`AUX_BASIS_METADATA_KEY`.

    Args:
        columns: per type, one feature index (or -1) for each of the ``width`` output columns
        aux_basis_json: the auxiliary basis, ``AuxBasis.to_json()``
        field: input node field (union irreps)
        out_field: output node field, shape (n_atoms, width)
        scalar_column, scalar_field: if given, feature column ``scalar_column`` (a scalar) is also
            written to the node field ``scalar_field``, shape (n_atoms, 1)
    """

    def __init__(
        self,
        columns: Sequence[Sequence[int]],
        aux_basis_json: str,
        field: str = AtomicDataDict.NODE_FEATURES_KEY,
        out_field: str = COEFFICIENTS_KEY,
        scalar_column: Optional[int] = None,
        scalar_field: Optional[str] = None,
        irreps_in=None,
    ):
        super().__init__()
        widths = {len(c) for c in columns}
        if len(widths) != 1:
            raise ValueError(f"every type needs the same number of output columns, got {sorted(widths)}")
        if (scalar_column is None) != (scalar_field is None):
            raise ValueError("give both scalar_column and scalar_field, or neither")
        self.field = field
        self.out_field = out_field
        self.scalar_column = -1 if scalar_column is None else scalar_column
        self.scalar_field = scalar_field or ""
        extra = {scalar_field: "0e"} if scalar_field is not None else {}
        self._init_irreps(irreps_in=irreps_in, required_irreps_in=[field], irreps_out={out_field: None, **extra})
        num_features = self.irreps_in[field].dim
        index = torch.as_tensor(columns, dtype=torch.long)
        if index.max() >= num_features or index.min() < -1:
            raise ValueError(f"column indices must lie in [-1, {num_features}), got [{index.min()}, {index.max()}]")
        # -1 -> an appended all-zero column
        self.register_buffer("index", torch.where(index < 0, num_features, index))
        self.aux_basis_json = aux_basis_json

    def forward(self, data: AtomicDataDict.Type) -> AtomicDataDict.Type:
        x = data[self.field]
        x = torch.cat([x, x.new_zeros(x.shape[0], 1)], dim=1)
        index = self.index[data[AtomicDataDict.ATOM_TYPE_KEY].view(-1)]
        data[self.out_field] = torch.gather(x, 1, index)
        if self.scalar_column >= 0:
            data[self.scalar_field] = x[:, self.scalar_column:self.scalar_column + 1]
        return data

    @torch.jit.unused
    def _get_metadata_contributions(self) -> Dict[str, str]:
        return {AUX_BASIS_METADATA_KEY: self.aux_basis_json}


class PerTypeScalarScaleShift(GraphModuleMixin, torch.nn.Module):
    """``x[:, j] <- scale[t, j] * x[:, j] + shift[t, j]`` on the listed scalar (l = 0) columns of
    atoms of type ``t``; all other columns pass unchanged (so exact zeros stay zero).

    Args:
        type_names: atom type names
        columns: {type name: indices of its l = 0 columns}
        scales, shifts: {type name: one value per listed column}, same units as the field
        width: number of columns of the field
    """

    def __init__(
        self,
        type_names: Sequence[str],
        columns: Dict[str, List[int]],
        scales: Dict[str, List[float]],
        shifts: Dict[str, List[float]],
        width: int,
        field: str = COEFFICIENTS_KEY,
        irreps_in=None,
    ):
        super().__init__()
        self.field = field
        self._init_irreps(irreps_in=irreps_in, required_irreps_in=[field])
        scale = torch.ones(len(type_names), width)
        shift = torch.zeros(len(type_names), width)
        for t, name in enumerate(type_names):
            cols = torch.as_tensor(columns[name], dtype=torch.long)
            if not (len(cols) == len(scales[name]) == len(shifts[name])):
                raise ValueError(f"type {name}: {len(cols)} columns but {len(scales[name])} scales and {len(shifts[name])} shifts")
            scale[t, cols] = torch.as_tensor(scales[name], dtype=scale.dtype)
            shift[t, cols] = torch.as_tensor(shifts[name], dtype=shift.dtype)
        self.register_buffer("scale", scale)
        self.register_buffer("shift", shift)

    def forward(self, data: AtomicDataDict.Type) -> AtomicDataDict.Type:
        types = data[AtomicDataDict.ATOM_TYPE_KEY].view(-1)
        data[self.field] = data[self.field] * self.scale[types] + self.shift[types]
        return data


class ChargeEquilibration(GraphModuleMixin, torch.nn.Module):
    """Charge-equilibration readout: restore each structure's exact electron count inside the
    model, with learned per-atom softness.

    The coefficients c_A carry N' = Σ_A n_Z · c_A electrons; the structure needs N = Σ_A Z_A - Q
    (Q: the ``charge`` graph field if given, else 0). Atom A receives the share
    w_A / Σ_B w_B of the missing N - N' electrons along its element's direction d_Z (scalar
    functions only, n_Z · d_Z = 1), with softness w_A = softplus(s_A) > 0 from a scalar node
    feature s_A. This is the minimiser of Σ_A (q_A - q'_A)² / (2 w_A) under the exact total
    charge (charge equilibration with hardness 1 / w_A around the model's own charges q'_A), so
    charge flows where the network finds the structure soft, not uniformly, and the training
    losses see the electron-count-exact density. Only l = 0 columns change: equivariant.

    Args:
        type_names: atom type names
        numbers: nuclear charge of each type
        integrals: {type name: ∫χ of each of its functions (e3nn layout; zero for l > 0)}
        directions: {type name: d_Z, one entry per function, with integrals · d_Z = 1}
        width: number of columns of the coefficient field
        softness_field: node field with one scalar per atom (s_A)
    """

    def __init__(
        self,
        type_names: Sequence[str],
        numbers: Sequence[float],
        integrals: Dict[str, List[float]],
        directions: Dict[str, List[float]],
        width: int,
        softness_field: str = "charge_softness",
        field: str = COEFFICIENTS_KEY,
        irreps_in=None,
    ):
        super().__init__()
        self.field = field
        self.softness_field = softness_field
        self._init_irreps(irreps_in=irreps_in, required_irreps_in=[field, softness_field])
        table = {"integrals": torch.zeros(len(type_names), width), "directions": torch.zeros(len(type_names), width)}
        for t, name in enumerate(type_names):
            for key, values in (("integrals", integrals), ("directions", directions)):
                row = torch.as_tensor(values[name], dtype=table[key].dtype)
                table[key][t, :len(row)] = row
            dot = float(table["integrals"][t] @ table["directions"][t])
            if abs(dot - 1.0) > 1e-6:
                raise ValueError(f"type {name}: integrals · directions = {dot}, must be 1")
        self.register_buffer("integrals", table["integrals"])
        self.register_buffer("directions", table["directions"])
        self.register_buffer("numbers", torch.as_tensor(list(numbers), dtype=torch.get_default_dtype()))

    def forward(self, data: AtomicDataDict.Type) -> AtomicDataDict.Type:
        data = AtomicDataDict.with_batch_(data)
        c = data[self.field]
        types = data[AtomicDataDict.ATOM_TYPE_KEY].view(-1)
        batch = data[AtomicDataDict.BATCH_KEY]
        n_graphs = data[AtomicDataDict.NUM_NODES_KEY].shape[0]
        electrons = (c * self.integrals.to(c.dtype)[types]).sum(-1)
        missing = torch.zeros(n_graphs, dtype=c.dtype, device=c.device).index_add(
            0, batch, self.numbers.to(c.dtype)[types] - electrons)
        if AtomicDataDict.TOTAL_CHARGE_KEY in data:
            missing = missing - data[AtomicDataDict.TOTAL_CHARGE_KEY].view(-1).to(c.dtype)
        softness = torch.nn.functional.softplus(data[self.softness_field].view(-1).to(c.dtype))
        total = torch.zeros(n_graphs, dtype=c.dtype, device=c.device).index_add(0, batch, softness)
        share = missing[batch] * softness / total[batch]
        data[self.field] = c + share.unsqueeze(-1) * self.directions.to(c.dtype)[types]
        return data
