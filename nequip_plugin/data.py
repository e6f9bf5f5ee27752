"""The project's HDF5 reference files in nequip's data pipeline, and the training-data statistics
that the density model needs (``${training_data_stats:...}`` in the config)."""

import os
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from nequip.data import AtomicDataDict, DataStatisticsManager, Mean, NumNeighbors, from_dict
from nequip.data.dataset import AtomicDataset
from nequip.scripts._workflow_utils import get_workflow_state

from ase_density.basis import AuxBasis
from ase_density.dataset import DatasetError, ReferenceData, split_indices
from ase_density.electrostatics import hirshfeld_population_matrix
from ase_density.validation import check_grid_level

from .nn import COEFFICIENTS_KEY, HIRSHFELD_KEY
SPLITS = ("train", "val", "test", "all")


class DensityDataset(AtomicDataset):
    """Structures of an ase-density reference file (HDF5) as ``AtomicDataDict``s with the node
    field ``density_coefficients`` (n_atoms, width), a.u., e3nn layout, NaN-padded.

    The file is split at random (``ase_density.dataset.split_indices`` with ``seed``) into
    ``n_test`` test, ``n_val`` validation and the remaining training structures; ``split`` picks
    one part (``all``: the whole file, unsplit). ``n_train`` keeps the first ``n_train`` of the
    seeded training part, so growing training sets are nested (learning curves).
    ``extra_train_files``: further reference files (e.g. larger clusters) whose complete
    structures all join the ``train`` split; the validation and test splits stay those of
    ``file_path`` alone, so runs with and without them are judged on the same structures.

    Args:
        file_path: reference file written by ``ase-density label``
        split: ``train``, ``val``, ``test`` or ``all``
        n_val, n_test: sizes of the validation and test parts
        seed: seed of the split
        n_train: number of training structures (default: all remaining)
        basis: if given, refuse a file whose auxiliary basis differs from this one (PySCF name,
            ``<name>-decontract`` or basis file)
        transforms: nequip data transforms (type mapper, neighbour list)
        extra_train_files: reference files added whole to the ``train`` split (refused unless
            in the main file's basis); ignored by the other splits
        hirshfeld_grid_level: if given (0-9), every structure also carries the node field
            ``hirshfeld_population_matrix`` (its Hirshfeld population matrix on a PySCF grid of
            this level, zero-padded to the largest structure of the split), which the ``hirshfeld``
            losses and metrics of :mod:`nequip_plugin.metrics` need; ~1 s of CPU per 12-water
            structure at level 1, computed when the dataset is made (not under ``nequip-package``)
    """

    def __init__(
        self,
        file_path: str,
        split: str = "all",
        n_val: int = 0,
        n_test: int = 0,
        seed: int = 0,
        n_train: Optional[int] = None,
        basis: Optional[str] = None,
        transforms: Optional[List] = None,
        extra_train_files: Optional[List[str]] = None,
        hirshfeld_grid_level: Optional[int] = None,
    ):
        super().__init__(transforms=transforms or [])
        if split not in SPLITS:
            raise ValueError(f"`split` must be one of {SPLITS}, got {split!r}")
        reference = ReferenceData(file_path)
        if basis is not None:
            _check_basis(reference, basis)
        if split == "all":
            indices = np.arange(len(reference))
        else:
            train, val, test = split_indices(len(reference), n_val, n_test, seed=seed, n_train=n_train)
            indices = {"train": train, "val": val, "test": test}[split]
        if len(indices) == 0:
            raise DatasetError(f"{file_path}: the {split} split is empty ({len(reference)} structures, "
                               f"n_val={n_val}, n_test={n_test}, n_train={n_train})")
        if hirshfeld_grid_level is not None:
            hirshfeld_grid_level = check_grid_level(hirshfeld_grid_level, "hirshfeld_grid_level")
        self.keys = [reference.keys[i] for i in indices]
        structures = [reference[int(i)] for i in indices]
        for path in (extra_train_files or []) if split == "train" else []:
            extra = ReferenceData(path)
            # the main file passed the ``basis`` check above: an extra file must match it
            if extra.basis.elements != reference.basis.elements:
                raise DatasetError(f"{path}: its auxiliary basis {extra.basis.name!r} differs from that of "
                                   f"{file_path} ({reference.basis.name!r})")
            if len(extra) == 0:
                raise DatasetError(f"{path}: holds no complete structure to add to the training split")
            self.keys += [f"{os.path.basename(extra.path)}:{key}" for key in extra.keys]
            structures += list(extra)
        self.data_list = [_to_data(atoms) for atoms in structures]
        # a training-only field: `nequip-package` rebuilds the datasets for the model's example input,
        # which neither needs the matrices nor should carry them into the model file
        if hirshfeld_grid_level is not None and get_workflow_state() != "package":
            max_atoms = max(len(atoms) for atoms in structures)
            for atoms, data in zip(tqdm(structures, desc=f"Hirshfeld matrices ({split})", unit="structure"),
                                   self.data_list):
                matrix = _hirshfeld_matrix(atoms, reference.basis, hirshfeld_grid_level)
                data[HIRSHFELD_KEY] = torch.as_tensor(np.pad(matrix, ((0, 0), (0, max_atoms - len(atoms)), (0, 0))),
                                                      dtype=data[COEFFICIENTS_KEY].dtype)

    def __len__(self) -> int:
        return len(self.data_list)

    def _get_data_list(self, indices) -> List[AtomicDataDict.Type]:
        if isinstance(indices, slice):
            return self.data_list[indices]
        return [self.data_list[int(i)] for i in indices]


#: Hirshfeld population matrices computed in this process, by (basis, grid level, structure):
#: nequip-train builds each dataset more than once per run (statistics, fit, validation)
_HIRSHFELD_MATRICES: Dict[tuple, np.ndarray] = {}


def _hirshfeld_matrix(atoms, basis: AuxBasis, grid_level: int) -> np.ndarray:
    key = (basis.to_json(), grid_level, atoms.numbers.tobytes(), atoms.positions.tobytes())
    if key not in _HIRSHFELD_MATRICES:
        _HIRSHFELD_MATRICES[key] = hirshfeld_population_matrix(atoms, basis, grid_level)
    return _HIRSHFELD_MATRICES[key]


def _to_data(atoms) -> AtomicDataDict.Type:
    return from_dict({
        AtomicDataDict.POSITIONS_KEY: atoms.get_positions(),
        AtomicDataDict.ATOMIC_NUMBERS_KEY: atoms.get_atomic_numbers(),
        AtomicDataDict.PBC_KEY: False,
        COEFFICIENTS_KEY: atoms.arrays[COEFFICIENTS_KEY],
    })


def _check_basis(reference: ReferenceData, basis: str):
    expected = AuxBasis.load(basis, symbols=reference.basis.symbols)
    if expected.elements != reference.basis.elements:
        raise DatasetError(f"{reference.path}: coefficients are in auxiliary basis {reference.basis.name!r}, "
                           f"which differs from the configured basis {basis!r}")


class CoefficientStatisticsManager(DataStatisticsManager):
    """Training-data statistics for :func:`nequip_plugin.model.DensityModel`:

    - ``num_neighbors_mean``, ``per_type_num_neighbors_mean`` (as nequip's managers), and
    - ``coefficient_mean``, ``coefficient_std``: {type name: per-column mean / standard deviation
      (ddof 0) of ``density_coefficients`` over all atoms of that type}, one entry per basis
      function of the element (its NaN padding dropped), a.u.

    Args:
        type_names: model type names (element symbols)
        dataloader_kwargs: ``DataLoader`` options for the statistics pass (e.g. ``batch_size``)
    """

    def __init__(self, type_names: List[str], dataloader_kwargs: Optional[Dict[str, Any]] = None):
        metrics = [
            {"name": "num_neighbors_mean", "field": NumNeighbors(), "metric": Mean()},
            {"name": "per_type_num_neighbors_mean", "field": NumNeighbors(), "metric": Mean(), "per_type": True},
        ]
        super().__init__(metrics, dataloader_kwargs, type_names)
        self._reset_moments()

    def _reset_moments(self):
        self._count = self._sum = self._sum_squares = None

    def forward(self, data: AtomicDataDict.Type):
        super().forward(data)
        x = data[COEFFICIENTS_KEY].detach().to("cpu", torch.float64)  # accumulated on the CPU, wherever the batch is
        if self._count is None:
            shape = (len(self.type_names), x.shape[1])
            self._count = torch.zeros(shape, dtype=torch.long)
            self._sum = torch.zeros(shape, dtype=torch.float64)
            self._sum_squares = torch.zeros(shape, dtype=torch.float64)
        types = data[AtomicDataDict.ATOM_TYPE_KEY].view(-1).cpu()
        for t in range(len(self.type_names)):
            xt = x[types == t]
            self._count[t] += (~torch.isnan(xt)).sum(0)
            self._sum[t] += torch.nansum(xt, 0)
            self._sum_squares[t] += torch.nansum(xt * xt, 0)

    def compute(self):
        stats = super().compute()
        if self._count is None:
            raise RuntimeError("no training data seen")
        means, stds = {}, {}
        for t, name in enumerate(self.type_names):
            count = self._count[t]
            n_atoms = int(count.max())
            size = int((count > 0).sum())
            if n_atoms == 0:
                raise RuntimeError(f"the training data holds no atom of type {name}")
            if not torch.all(count[:size] == n_atoms):
                raise RuntimeError(f"`{COEFFICIENTS_KEY}` of type {name} has NaN inside its basis columns, "
                                   f"or padding that is not a NaN suffix")
            mean = self._sum[t, :size] / n_atoms
            variance = (self._sum_squares[t, :size] / n_atoms - mean * mean).clamp(min=0)
            means[name] = mean.tolist()
            stds[name] = variance.sqrt().tolist()
        stats.update(coefficient_mean=means, coefficient_std=stds)
        return stats

    def reset(self):
        super().reset()
        self._reset_moments()
