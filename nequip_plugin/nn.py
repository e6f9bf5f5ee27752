"""Graph modules of the density model.

Only ``torch`` and ``nequip.nn``/``nequip.data`` are imported here, so that ``nequip-package``
can bundle these modules into a ``.nequip.zip`` that loads without this plugin installed.

Output layout: every atom's row holds its element's coefficients in e3nn order (the element's own
irreps, l ascending, multiplicity-major), padded with exact zeros to the widest element; the
columns of a row therefore mean different things for different elements (see
``ase_density.basis``).
"""

from typing import Dict, List, Sequence

import torch

from nequip.data import AtomicDataDict
from nequip.nn import GraphModuleMixin

#: the per-atom field of density coefficients (registered in ``nequip_plugin/__init__.py``)
COEFFICIENTS_KEY = "density_coefficients"
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
    """

    def __init__(
        self,
        columns: Sequence[Sequence[int]],
        aux_basis_json: str,
        field: str = AtomicDataDict.NODE_FEATURES_KEY,
        out_field: str = COEFFICIENTS_KEY,
        irreps_in=None,
    ):
        super().__init__()
        widths = {len(c) for c in columns}
        if len(widths) != 1:
            raise ValueError(f"every type needs the same number of output columns, got {sorted(widths)}")
        self.field = field
        self.out_field = out_field
        self._init_irreps(irreps_in=irreps_in, required_irreps_in=[field], irreps_out={out_field: None})
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
