"""Rewrite the absolute paths that nequip-train records in a checkpoint (the Hydra run directory,
the data file, the checkpoint callback's file names) relative to the repository, in place and
atomically, so that committed checkpoints hold no machine paths. Weights and optimizer state are
not touched (checked after writing).

    python examples/relative_checkpoint_paths.py results/model_v2/*.ckpt
"""

from __future__ import annotations

import argparse
import os

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def relative_paths(value, root: str = ROOT):
    """``value`` with every string (also inside dicts, lists, tuples) that starts with ``root/``
    made relative to ``root``; returns (new value, number of strings changed)."""
    prefix = root.rstrip(os.sep) + os.sep
    if isinstance(value, str):
        return (value[len(prefix):], 1) if value.startswith(prefix) else (value, 0)
    if isinstance(value, dict):
        items = [(relative_paths(k, root), relative_paths(v, root)) for k, v in value.items()]
        return type(value)((k, v) for (k, _), (v, _) in items), sum(a + b for (_, a), (_, b) in items)
    if isinstance(value, (list, tuple)):
        items = [relative_paths(v, root) for v in value]
        return type(value)(v for v, _ in items), sum(n for _, n in items)
    return value, 0


def rewrite_checkpoint(path: str) -> int:
    """Make the checkpoint at ``path`` free of ``ROOT``-absolute paths; returns how many strings
    changed (0: file left as it was). Raises ValueError if the weights would change."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    state = checkpoint.get("state_dict", {})
    rest, changed = relative_paths({k: v for k, v in checkpoint.items() if k != "state_dict"})
    if not changed:
        return 0
    tmp = f"{path}.tmp"
    torch.save({**rest, "state_dict": state}, tmp)
    reread = torch.load(tmp, map_location="cpu", weights_only=False)["state_dict"]
    if not _identical(reread, state):
        os.remove(tmp)
        raise ValueError(f"{path}: weights changed on rewriting; left as it was")
    os.replace(tmp, path)
    return changed


def _identical(a, b) -> bool:
    """Equal values, tensors compared exactly, recursing into dicts, lists and tuples."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_identical(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_identical(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", help="Lightning checkpoints (.ckpt) of nequip-train")
    args = parser.parse_args(argv)
    for path in args.checkpoints:
        try:
            changed = rewrite_checkpoint(path)
        except (OSError, ValueError, RuntimeError) as err:
            raise SystemExit(f"relative_checkpoint_paths: {err}")
        print(f"{path}: {changed} path(s) made repository-relative")


if __name__ == "__main__":
    main()
