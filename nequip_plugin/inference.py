"""Using a trained density model: load it (``.nequip.zip`` needs no plugin, ``.ckpt`` does), learn
its auxiliary basis from its metadata, predict coefficients for ``ase.Atoms``."""

from typing import Dict, Tuple

import numpy as np
import torch
from ase import Atoms

from nequip.data import AtomicDataDict, from_dict
from nequip.data.transforms import ChemicalSpeciesToAtomTypeMapper, NeighborListTransform

from ase_density.basis import AuxBasis

from .nn import AUX_BASIS_METADATA_KEY, COEFFICIENTS_KEY


def aux_basis_from_metadata(metadata: Dict[str, str]) -> AuxBasis:
    """The auxiliary basis that defines a density model's output layout, from ``model.metadata``."""
    if AUX_BASIS_METADATA_KEY not in metadata:
        raise ValueError(f"model metadata has no `{AUX_BASIS_METADATA_KEY}` entry: not a density model "
                         f"(keys: {', '.join(sorted(metadata))})")
    return AuxBasis.from_json(metadata[AUX_BASIS_METADATA_KEY])


def load_density_model(path: str, device: str = "cpu") -> Tuple[torch.nn.Module, AuxBasis]:
    """(model in eval mode on ``device``, its auxiliary basis) from a ``.nequip.zip`` or ``.ckpt``."""
    from nequip.model.saved_models.load_utils import load_saved_model
    from nequip.utils.global_state import set_global_state

    set_global_state()  # as nequip's own integrations do: float64 default dtype for data
    model = load_saved_model(path).to(device).eval()
    return model, aux_basis_from_metadata(model.metadata)


def predict_coefficients(model: torch.nn.Module, atoms: Atoms) -> np.ndarray:
    """Coefficients (n_atoms, width), a.u., e3nn layout, NaN-padded like the reference files, for
    ``atoms`` (positions in Å); functions above the model's ``lmax_o`` come out as 0."""
    metadata = model.metadata
    type_names = metadata["type_names"].split()
    symbols = atoms.get_chemical_symbols()
    unknown = sorted(set(symbols) - set(type_names))
    if unknown:
        raise ValueError(f"the model knows elements {type_names}, not {unknown}")
    data = from_dict({AtomicDataDict.POSITIONS_KEY: atoms.get_positions(), AtomicDataDict.CELL_KEY: atoms.get_cell()[:],
                      AtomicDataDict.PBC_KEY: atoms.get_pbc(), AtomicDataDict.ATOMIC_NUMBERS_KEY: atoms.numbers})
    data = ChemicalSpeciesToAtomTypeMapper(type_names, {s: s for s in type_names})(data)
    data = NeighborListTransform(r_max=float(metadata["r_max"]))(data)
    device = next(model.parameters()).device
    with torch.no_grad():
        out = model(AtomicDataDict.to_(data, device))[COEFFICIENTS_KEY]
    coefficients = out.detach().cpu().numpy().astype(np.float64)
    mask = aux_basis_from_metadata(metadata).mask(symbols)
    return np.where(mask, coefficients, np.nan)
