"""Continue a training run at another learning rate: rewrites the optimizer's learning rate (and
the ReduceLROnPlateau scheduler's record of it) in a Lightning checkpoint, in place and atomically,
so that the next ``bash examples/train_default.sh`` resumes from it at that rate.

    python examples/set_learning_rate.py outputs/v2/last.ckpt --lr 0.0015

Lightning restores the optimizer's state, learning rate included, when it resumes, so a changed
``training_module.optimizer.lr`` in the config alone would not take effect on a resumed run.
"""

from __future__ import annotations

import argparse
import os

import torch


def set_learning_rate(path: str, lr: float) -> float:
    """Set every parameter group's learning rate (and the plateau scheduler's last rate) in the
    checkpoint at ``path`` to ``lr``; returns the rate it had before."""
    if not lr > 0:
        raise ValueError(f"learning rate must be positive, got {lr}")
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    if not checkpoint.get("optimizer_states"):
        raise ValueError(f"{path} holds no optimizer state (not a training checkpoint)")
    before = checkpoint["optimizer_states"][0]["param_groups"][0]["lr"]
    for state in checkpoint["optimizer_states"]:
        for group in state["param_groups"]:
            group["lr"] = lr
    for scheduler in checkpoint.get("lr_schedulers", []):
        if "_last_lr" in scheduler:
            scheduler["_last_lr"] = [lr] * len(scheduler["_last_lr"])
        scheduler["num_bad_epochs"] = 0
    tmp = f"{path}.tmp"
    torch.save(checkpoint, tmp)
    os.replace(tmp, path)
    return before


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a Lightning checkpoint of nequip-train (e.g. RUN/last.ckpt)")
    parser.add_argument("--lr", type=float, required=True, help="the new learning rate")
    args = parser.parse_args(argv)
    try:
        before = set_learning_rate(args.checkpoint, args.lr)
    except (OSError, ValueError, RuntimeError) as err:
        raise SystemExit(f"set_learning_rate: {err}")
    print(f"{args.checkpoint}: learning rate {before:g} -> {args.lr:g}")


if __name__ == "__main__":
    main()
