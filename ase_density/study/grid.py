"""The study's grid: which runs exist, their names, and the per-run ``nequip-train`` settings.

A run is one point (lmax_h, lmax_o, n_train, seed). Its directory name encodes exactly that point,
so growing the grid later (more sizes, more repeats) reuses every finished run. Settings that
change what a run means (data files, model size, training budget, template overrides) are frozen
in ``<study-dir>/study.json`` when the study is created and checked on every later call (the data
files by content, so a study can move between machines).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import os
from pathlib import Path
from typing import Dict, List, Sequence, Tuple, Union

from ase_density.dataset import ReferenceData

#: the grid of the published study (water clusters, training sizes in clusters)
FULL_GRID = {"lmax_h": (0, 1, 2, 3, 4), "lmax_o": (0, 1, 2, 4), "sizes": (8, 16, 32, 64, 128, 256), "repeats": 3}
#: ``--quick``: a reduced grid on tiny data that runs in minutes
QUICK_GRID = {"lmax_h": (0, 1), "lmax_o": (0, 1), "sizes": (4, 8), "repeats": 1}
#: the lmax values a model supports (hidden and output)
LMAX_VALUES = range(5)


class StudyError(ValueError):
    """An inconsistent study: settings that differ from the frozen ones, a grid that does not fit the data."""


@dataclasses.dataclass(frozen=True)
class Run:
    """One grid point. ``seed`` seeds model initialisation and batch order."""

    lmax_h: int
    lmax_o: int
    n_train: int
    seed: int

    @property
    def name(self) -> str:
        return f"n{self.n_train:04d}_o{self.lmax_o}_h{self.lmax_h}_s{self.seed}"


@dataclasses.dataclass(frozen=True)
class Settings:
    """What every run of one study shares (frozen in ``study.json``).

    Args:
        train_data: training pool (HDF5 reference file); validation and nested training sets are
            drawn from it with ``data_seed``
        test_data: test set (HDF5 reference file), used whole
        n_val: validation structures (early stopping, learning-rate schedule, best checkpoint)
        data_seed: seed of the pool's split
        max_steps: optimizer steps per run, the same at every training-set size
        patience_steps: early-stopping patience in optimizer steps (converted to validation checks per size)
        validation_steps: optimizer steps between validation checks, rounded up to whole epochs
            (1: every epoch). Small training sets have few steps per epoch; a larger value keeps
            their validation cost in proportion to training
        batch_size: training structures per step
        num_layers, cutoff_radius: model depth and neighbour cutoff (Å)
        num_features: multiplicity of every hidden irrep; one value, or five: one per
            lmax_h = 0..4 (e.g. chosen for equal parameter counts across lmax_h)
        grid_level: PySCF grid level of the eps_rho integrals
        overrides: further ``key=value`` overrides of the template, applied to every run
    """

    train_data: str
    test_data: str
    n_val: int = 30
    data_seed: int = 0
    max_steps: int = 1000
    patience_steps: int = 250
    validation_steps: int = 1
    batch_size: int = 4
    num_layers: int = 2
    num_features: Union[int, Tuple[int, ...]] = 8
    cutoff_radius: float = 4.0
    grid_level: int = 3
    overrides: Tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "train_data", str(Path(self.train_data).resolve()))
        object.__setattr__(self, "test_data", str(Path(self.test_data).resolve()))
        object.__setattr__(self, "overrides", tuple(self.overrides))
        if not isinstance(self.num_features, int):
            per_lmax_h = tuple(self.num_features)
            if len(per_lmax_h) not in (1, len(LMAX_VALUES)):
                raise StudyError(f"`num_features` takes one value or {len(LMAX_VALUES)} (one per lmax_h = 0..4), "
                                 f"got {list(per_lmax_h)}")
            object.__setattr__(self, "num_features", per_lmax_h[0] if len(per_lmax_h) == 1 else per_lmax_h)
        for override in self.overrides:
            if "=" not in override:
                raise StudyError(f"override {override!r} is not of the form key=value")
        for name in ("n_val", "max_steps", "patience_steps", "validation_steps", "batch_size", "num_layers",
                     "num_features"):
            value = getattr(self, name)
            if min((value,) if isinstance(value, int) else value) < 1:
                raise StudyError(f"`{name}` must be >= 1, got {getattr(self, name)}")

    def features(self, lmax_h: int) -> int:
        """Multiplicity of the hidden irreps of a model with hidden lmax ``lmax_h``."""
        return self.num_features if isinstance(self.num_features, int) else self.num_features[lmax_h]

    def train_overrides(self, run: Run) -> List[str]:
        """``nequip-train`` overrides of the template for ``run``.

        Patience and the validation interval are given in optimizer steps and converted to epochs
        of this training-set size, so small and large training sets get the same budget in steps
        (the learning-rate schedule steps once per validation check); recording the feature norms
        every ``max_steps / 100`` steps gives about 100 records per run."""
        steps_per_epoch = math.ceil(run.n_train / self.batch_size)
        val_every_epochs = math.ceil(self.validation_steps / steps_per_epoch)
        patience = max(3, math.ceil(self.patience_steps / (steps_per_epoch * val_every_epochs)))
        # studies frozen before the interval existed have templates without the key: every epoch
        interval = [f"val_every_epochs={val_every_epochs}"] if self.validation_steps > 1 else []
        return [
            f"data_file={self.train_data}", f"n_val={self.n_val}", f"data_seed={self.data_seed}",
            f"n_train={run.n_train}", f"seed={run.seed}", f"lmax_h={run.lmax_h}", f"lmax_o={run.lmax_o}",
            f"num_layers={self.num_layers}", f"num_features={self.features(run.lmax_h)}",
            f"cutoff_radius={self.cutoff_radius}", f"batch_size={self.batch_size}",
            f"max_steps={self.max_steps}", f"patience={patience}", f"lr_patience={max(1, patience // 3)}",
            f"feature_norm_every={max(1, self.max_steps // 100)}", *interval,
            *self.overrides,
        ]

    def to_json(self) -> Dict:
        return dataclasses.asdict(self)


def grid_runs(lmax_h: Sequence[int], lmax_o: Sequence[int], sizes: Sequence[int], repeats: int,
              seed: int = 0) -> List[Run]:
    """All runs of the grid, smallest training sets first (so results arrive size by size);
    repeat ``r`` uses seed ``seed + r``."""
    if repeats < 1:
        raise StudyError(f"`repeats` must be >= 1, got {repeats}")
    for label, values in (("lmax_h", lmax_h), ("lmax_o", lmax_o)):
        if not values or any(v not in LMAX_VALUES for v in values):
            raise StudyError(f"`{label}` needs values in 0..4, got {list(values)}")
    if not sizes or min(sizes) < 1:
        raise StudyError(f"training-set sizes must be >= 1, got {list(sizes)}")
    return [Run(h, o, n, seed + r) for n, o, h, r in
            itertools.product(sorted(set(sizes)), sorted(set(lmax_o)), sorted(set(lmax_h)), range(repeats))]


def data_fingerprint(path: str) -> str:
    """Identity of a reference file's content: SHA-1 of its basis and its structure keys (which hash
    each geometry). A pool that has grown since the study began gives another split, hence another
    fingerprint."""
    data = ReferenceData(path)
    return hashlib.sha1("\n".join([data.basis.to_json(), *data.keys]).encode()).hexdigest()


def _fingerprints(settings: Settings) -> Dict[str, str]:
    return {"train_data": data_fingerprint(settings.train_data), "test_data": data_fingerprint(settings.test_data)}


def load_or_freeze_settings(study_dir: Path, settings: Settings) -> Settings:
    """The study's settings, frozen in ``study.json`` on the first call and compared on every later
    one. The data files may move (another machine, another checkout) but their content may not:
    they are compared by :func:`data_fingerprint`; the paths last used are recorded."""
    path = study_dir / "study.json"
    fingerprints = _fingerprints(settings)
    if path.exists():
        record = json.loads(path.read_text())
        frozen = Settings(**record["settings"])
        moved = dataclasses.replace(frozen, train_data=settings.train_data, test_data=settings.test_data)
        changed = [f.name for f in dataclasses.fields(Settings) if getattr(moved, f.name) != getattr(settings, f.name)]
        changed += [f"{name} (content)" for name in fingerprints if fingerprints[name] != record["fingerprints"][name]]
        if changed:
            raise StudyError(f"{study_dir} was created with other settings ({', '.join(changed)} differ; see {path}): "
                             f"use a new study directory, or the same settings and data to resume")
    study_dir.mkdir(parents=True, exist_ok=True)
    # relative to the working directory (the repository root for the committed studies): no machine paths
    record = {**settings.to_json(), "train_data": os.path.relpath(settings.train_data),
              "test_data": os.path.relpath(settings.test_data)}
    path.write_text(json.dumps({"settings": record, "fingerprints": fingerprints}, indent=2) + "\n")
    return settings


def frozen_settings(study_dir: Path) -> Settings:
    """The settings of an existing study (with the data paths last used)."""
    path = study_dir / "study.json"
    if not path.exists():
        raise StudyError(f"{study_dir} is not a study directory (no study.json)")
    return Settings(**json.loads(path.read_text())["settings"])
