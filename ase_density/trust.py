"""Which model files ase-density loads. Loading a model file runs code that came with the file:

- ``.nequip.zip``: a ``torch.package``; its bundled Python modules are imported;
- ``.ckpt``: a pickle, and nequip builds the model by instantiating the hydra ``_target_``
  classes named in its hyper-parameters (nequip 0.19 loads it with ``weights_only=False``);
- ``.nequip.pt2``: an AOTInductor shared library, ``.nequip.pth``: a TorchScript program.

So a model file is loaded only when it is trusted:

- the shipped default model, after its sha256 matched the ``model_sha256`` of its card
  (``default.json`` beside it);
- any file with ``trust_model=True`` (CLI ``--trust-model``);
- any file whose sha256 is listed in an allow-list: the file named by the environment variable
  ``ASE_DENSITY_TRUSTED_MODELS`` and ``$XDG_CONFIG_HOME/ase-density/trusted_models.txt``
  (default ``~/.config/ase-density/trusted_models.txt``), one hash per line, ``sha256sum``
  output accepted, ``#`` starts a comment.

Other suffixes are refused. A trusted ``.ckpt`` must also pass ``torch.load(weights_only=True)``
(every nequip checkpoint does), so its pickle cannot call arbitrary functions.
See docs/model_files.md.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from .calculator import DEFAULT_MODEL
from .errors import ModelError
from .h5io import file_sha256

#: what loading each model file type executes
EXECUTES = {
    ".nequip.zip": "a .nequip.zip is a torch.package whose bundled Python modules are imported",
    ".ckpt": "a .ckpt is a pickle whose hydra _target_ classes nequip instantiates",
    ".nequip.pt2": "a .nequip.pt2 is an AOTInductor shared library",
    ".nequip.pth": "a .nequip.pth is a TorchScript program",
}
#: environment variable naming an allow-list file of sha256 hashes
ALLOW_LIST_ENV = "ASE_DENSITY_TRUSTED_MODELS"
_SHA256 = re.compile(r"[0-9a-f]{64}")


def model_kind(path) -> str:
    """The model file type of ``path`` (a key of :data:`EXECUTES`); :class:`ModelError` for any
    other suffix (such files are never handed to ``torch.load``)."""
    name = Path(path).name.lower()
    for suffix in EXECUTES:
        if name.endswith(suffix):
            return suffix
    raise ModelError(f"{path}: unknown model file type; ase-density loads {', '.join(EXECUTES)} files")


def card_path(model_path) -> Path:
    """The model card (JSON with ``model_sha256``) of a packaged model: ``x.nequip.zip`` -> ``x.json``."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.name[:-len(".nequip.zip")] + ".json")


def card_sha256(default_model=DEFAULT_MODEL) -> str:
    """The sha256 that the card of ``default_model`` records; :class:`ModelError` if unreadable."""
    card = card_path(default_model)
    try:
        digest = json.loads(card.read_text())["model_sha256"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"cannot verify the shipped model {default_model}: its card {card} is missing or has "
                         f"no model_sha256 ({type(exc).__name__}: {exc})") from exc
    if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
        raise ModelError(f"cannot verify the shipped model {default_model}: model_sha256 in {card} is not a sha256")
    return digest


def allow_list_files() -> list:
    """The allow-list files that exist: ``$ASE_DENSITY_TRUSTED_MODELS`` (an error if set but
    missing) and ``$XDG_CONFIG_HOME/ase-density/trusted_models.txt`` (default ``~/.config``)."""
    files = []
    named = os.environ.get(ALLOW_LIST_ENV)
    if named:
        if not Path(named).is_file():
            raise ModelError(f"{ALLOW_LIST_ENV}={named}: no such file (it should list trusted model sha256 hashes)")
        files.append(Path(named))
    config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "ase-density" / "trusted_models.txt"
    if config.is_file():
        files.append(config)
    return files


def trusted_hashes(files=None) -> set:
    """The sha256 hashes listed in ``files`` (default :func:`allow_list_files`): the first word of
    each line, lower case; blank lines and ``#`` comments are skipped. :class:`ModelError` names a
    line that is not a sha256."""
    hashes = set()
    for path in allow_list_files() if files is None else files:
        for number, line in enumerate(Path(path).read_text().splitlines(), 1):
            words = line.split("#", 1)[0].split()
            if not words:
                continue
            if not _SHA256.fullmatch(words[0].lower()):
                raise ModelError(f"{path}, line {number}: {words[0][:70]!r} is not a sha256 hash")
            hashes.add(words[0].lower())
    return hashes


def check_model_file(path, trust_model: bool = False, default_model=DEFAULT_MODEL) -> str:
    """Raise :class:`ModelError` unless the model file ``path`` may be loaded (see the module
    docstring); ``default_model``: the path of the shipped model, verified against its card.
    Returns the file type (a key of :data:`EXECUTES`)."""
    path = Path(path)
    kind = model_kind(path)
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist")
    digest = file_sha256(path)
    default_model = Path(default_model)
    if default_model.exists() and path.resolve() == default_model.resolve():
        expected = card_sha256(default_model)
        if digest != expected:
            raise ModelError(f"the shipped model {path} has sha256 {digest[:16]}…, its card {card_path(default_model).name} "
                             f"records {expected[:16]}…: the file is damaged or was modified; reinstall ase-density")
        return kind
    if trust_model or digest in trusted_hashes():
        return kind
    raise ModelError(f"refusing to load {path} (sha256 {digest}): loading a model file executes code "
                     f"({EXECUTES[kind]}) and only the shipped model is trusted; if you trust this file, pass "
                     f"--trust-model (Python: trust_model=True) or add its sha256 to ${ALLOW_LIST_ENV} or "
                     f"~/.config/ase-density/trusted_models.txt (see docs/model_files.md)")


def check_checkpoint_pickle(path) -> None:
    """Raise :class:`ModelError` unless the ``.ckpt`` at ``path`` unpickles with
    ``torch.load(weights_only=True)``, which runs no code: tensors and plain data only."""
    import pickle
    import zipfile

    import torch

    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"WeightsUnpickler error: ([^\n]*?)(?: was not an allowed global.*)?$", str(exc), re.M)
        reason = found.group(1) if found else str(exc).strip().split("\n")[0]
        raise ModelError(f"{path}: not a plain nequip checkpoint: its pickle calls code, torch.load(weights_only=True) "
                         f"refused it ({reason[:200]})") from exc
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as exc:
        raise ModelError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {str(exc)[:200]})") from exc
