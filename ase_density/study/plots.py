"""Figures of the study (matplotlib, written as PNG):

- ``learning_curves.png``: test error vs training-set size (log-log), one column per lmax_o, one
  row per error channel (total eps_rho, then each output l up to lmax_o), one line per lmax_h;
- ``saturation.png``: error at the largest training-set size vs lmax_h, one line per lmax_o;
- ``feature_norms/<run>.png``: mean hidden-feature norm per (l, parity) vs training step, one
  panel per layer (from the run's ``feature_norms.csv``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

from .summary import CHANNELS, channel_l, read_feature_norms  # noqa: E402

LABELS = {"eps_total": "total eps_rho (%)", **{f"eps_l{l}": f"eps of l = {l} channel (%)" for l in range(5)}}


def _log_y(ax) -> None:
    """A log-scaled y axis with plain-number ticks at 1, 2 and 5 per decade."""
    ax.set_yscale("log")
    axis = ax.yaxis
    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:.3g}"))
    axis.set_minor_formatter(NullFormatter())


def _channels(means: Sequence[Dict]) -> List[str]:
    """The channels worth a row: total, and every l up to the largest lmax_o of the grid."""
    top = max(m["lmax_o"] for m in means)
    return [c for c in CHANNELS if c in means[0] and (channel_l(c) is None or channel_l(c) <= top)]


def _select(means, **fixed):
    return [m for m in means if all(m[k] == v for k, v in fixed.items())]


def learning_curves(means: Sequence[Dict], path: Path) -> None:
    channels = _channels(means)
    lmax_os = sorted({m["lmax_o"] for m in means})
    lmax_hs = sorted({m["lmax_h"] for m in means})
    sizes = sorted({m["n_train"] for m in means})
    fig, axes = plt.subplots(len(channels), len(lmax_os), figsize=(3.2 * len(lmax_os), 2.6 * len(channels)),
                             squeeze=False)
    for col, lmax_o in enumerate(lmax_os):
        for row, channel in enumerate(channels):
            ax = axes[row][col]
            l = channel_l(channel)
            if l is not None and l > lmax_o:
                ax.axis("off")
                continue
            for index, lmax_h in enumerate(lmax_hs):
                points = sorted(_select(means, lmax_o=lmax_o, lmax_h=lmax_h), key=lambda m: m["n_train"])
                if points:
                    ax.errorbar([p["n_train"] for p in points], [p[channel] for p in points],
                                yerr=[p[f"{channel}_std"] for p in points], marker="o", ms=3, capsize=2,
                                color=f"C{index}", label=f"lmax_h={lmax_h}")
            _log_y(ax)
            ax.set_xscale("log")
            ax.set_xticks(sizes, [str(n) for n in sizes])
            ax.xaxis.set_minor_formatter(NullFormatter())
            if row == 0:
                ax.set_title(f"lmax_o = {lmax_o}")
            if lmax_o == min(o for o in lmax_os if l is None or l <= o):
                ax.set_ylabel(LABELS[channel])
            if row == max(i for i, c in enumerate(channels) if channel_l(c) is None or channel_l(c) <= lmax_o):
                ax.set_xlabel("training clusters")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def saturation(means: Sequence[Dict], path: Path) -> None:
    channels = _channels(means)
    n_max = max(m["n_train"] for m in means)
    largest = _select(means, n_train=n_max)
    fig, axes = plt.subplots(1, len(channels), figsize=(3.2 * len(channels), 3.0), squeeze=False)
    for ax, channel in zip(axes[0], channels):
        l = channel_l(channel)
        for index, lmax_o in enumerate(sorted({m["lmax_o"] for m in largest})):
            if l is not None and l > lmax_o:
                continue
            points = sorted(_select(largest, lmax_o=lmax_o), key=lambda m: m["lmax_h"])
            ax.errorbar([p["lmax_h"] for p in points], [p[channel] for p in points],
                        yerr=[p[f"{channel}_std"] for p in points], marker="o", ms=3, capsize=2,
                        color=f"C{index}", label=f"lmax_o={lmax_o}")
        ax.set_xticks(sorted({m["lmax_h"] for m in largest}))
        _log_y(ax)
        ax.set_xlabel("lmax_h")
        ax.set_title(LABELS[channel], fontsize=9)
    axes[0][0].set_ylabel(f"test error at n_train = {n_max}")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def feature_norms(csv_path: Path, path: Path, title: str) -> None:
    norms = read_feature_norms(csv_path)
    fig, axes = plt.subplots(1, len(norms), figsize=(3.6 * len(norms), 3.0), squeeze=False, sharey=True)
    for ax, (layer, per_irrep) in zip(axes[0], sorted(norms.items())):
        for label, points in sorted(per_irrep.items()):
            steps, values = zip(*points)
            ax.plot(steps, values, label=label)
        _log_y(ax)
        ax.set_xlabel("optimizer step")
        ax.set_title(f"layer {layer}", fontsize=9)
    axes[0][0].set_ylabel("mean feature norm (probe batch)")
    axes[0][-1].legend(fontsize=7, ncol=2)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
