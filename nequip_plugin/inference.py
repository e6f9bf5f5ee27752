"""Using a trained density model: load it (``.nequip.zip`` needs no plugin, ``.ckpt`` does), learn
its auxiliary basis from its metadata, predict coefficients for ``ase.Atoms``."""

from typing import Dict, List, Sequence, Tuple

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


class CompiledDensityModel(torch.nn.Module):
    """A ``nequip-compile``d model (``.nequip.pt2``/``.nequip.pth``) with the string ``metadata``
    and the ``device`` attribute that :func:`predict_coefficients_batch` reads."""

    def __init__(self, model: torch.nn.Module, metadata: Dict, device: str):
        super().__init__()
        self.model = model
        self.device = torch.device(device)
        self.metadata = {k: " ".join(v) if isinstance(v, list) else str(v) for k, v in metadata.items()}

    def forward(self, data):
        return self.model(data)


def load_density_model(path: str, device: str = "cpu", trust_model: bool = False,
                       default_model=None) -> Tuple[torch.nn.Module, AuxBasis]:
    """(model in eval mode on ``device``, its auxiliary basis) from a ``.nequip.zip``, ``.ckpt``
    or compiled ``.nequip.pt2`` (``nequip-compile --mode aotinductor``, compiled for ``device``).
    Loading runs code from the file: only the shipped model (``default_model``, verified against
    its card), allow-listed files or ``trust_model=True`` load (:mod:`ase_density.trust`)."""
    from nequip.utils.global_state import set_global_state

    from ase_density.trust import DEFAULT_MODEL, check_checkpoint_pickle, check_model_file

    kind = check_model_file(path, trust_model, default_model if default_model is not None else DEFAULT_MODEL)
    set_global_state()  # as nequip's own integrations do: float64 default dtype for data
    if kind in (".nequip.pt2", ".nequip.pth"):
        from nequip.model.inference_models import load_compiled_model

        model = CompiledDensityModel(*load_compiled_model(str(path), device), device)
    else:
        from nequip.model.saved_models.load_utils import load_saved_model

        if kind == ".ckpt":
            check_checkpoint_pickle(path)
        model = load_saved_model(path).to(device).eval()
    return model, aux_basis_from_metadata(model.metadata)


def _graph(atoms: Atoms, type_names, r_max: float) -> Dict[str, torch.Tensor]:
    data = from_dict({AtomicDataDict.POSITIONS_KEY: atoms.get_positions(), AtomicDataDict.CELL_KEY: atoms.get_cell()[:],
                      AtomicDataDict.PBC_KEY: atoms.get_pbc(), AtomicDataDict.ATOMIC_NUMBERS_KEY: atoms.numbers})
    data = ChemicalSpeciesToAtomTypeMapper(type_names, {s: s for s in type_names})(data)
    return NeighborListTransform(r_max=r_max)(data)


def predict_coefficients_batch(model: torch.nn.Module, frames: Sequence[Atoms]) -> List[np.ndarray]:
    """Coefficients for several structures in one forward pass: a list of (n_atoms_i, width)
    arrays, a.u., e3nn layout, NaN-padded like the reference files (positions in Å); functions
    above the model's ``lmax_o`` come out as 0."""
    metadata = model.metadata
    type_names = metadata["type_names"].split()
    for k, atoms in enumerate(frames):
        unknown = sorted(set(atoms.get_chemical_symbols()) - set(type_names))
        if unknown:
            raise ValueError(f"frame {k}: the model knows elements {type_names}, not {unknown}")
    if not frames:
        return []
    batch = AtomicDataDict.batched_from_list([_graph(a, type_names, float(metadata["r_max"])) for a in frames])
    device = getattr(model, "device", None) or next(model.parameters()).device
    with torch.no_grad():
        out = model(AtomicDataDict.to_(batch, device))[COEFFICIENTS_KEY].detach().cpu().numpy().astype(np.float64)
    basis = aux_basis_from_metadata(metadata)
    results, start = [], 0
    for atoms in frames:
        block = out[start:start + len(atoms)]
        results.append(np.where(basis.mask(atoms.get_chemical_symbols()), block, np.nan))
        start += len(atoms)
    return results


def predict_coefficients(model: torch.nn.Module, atoms: Atoms) -> np.ndarray:
    """Coefficients (n_atoms, width) of one structure: see :func:`predict_coefficients_batch`."""
    return predict_coefficients_batch(model, [atoms])[0]
