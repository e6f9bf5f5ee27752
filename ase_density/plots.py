"""PNG plots of a trajectory-analysis file: the total dipole against time, the distributions of
molecular dipoles and atomic charges, and the infrared spectrum."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ase.units import Debye

from .analysis_file import read_analysis


def make_plots(path, directory, title: str | None = None) -> list:
    """PNG plots of an analysis file into ``directory``: total dipole against time, molecular
    dipole and O/H charge distributions, IR spectrum (when the file has one). Returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = read_analysis(path)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    title = title or data["trajectory"] or Path(path).name
    paths = []

    def save(fig, name):
        fig.suptitle(title, fontsize=9)
        fig.tight_layout()
        p = directory / name
        tmp = directory / f".{name}.tmp.png"  # a killed run leaves no half-written plot under the real name
        fig.savefig(tmp, dpi=110)
        plt.close(fig)
        tmp.replace(p)
        paths.append(p)

    mu = data["dipole"] / Debye
    t = data["time"]
    known = np.all(np.isfinite(t)) and len(t)
    x, xlabel = (t / 1000, "time (ps)") if known else (data["index"], "frame")
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for k, c in enumerate("xyz"):
        ax.plot(x, mu[:, k], lw=0.8, label=f"$\\mu_{c}$")
    ax.plot(x, np.linalg.norm(mu, axis=1), lw=1.2, color="k", label="$|\\mu|$")
    ax.set(xlabel=xlabel, ylabel="dipole (D)", title="total dipole")
    ax.legend(fontsize=8, ncol=4)
    save(fig, "dipole_vs_time.png")

    fig, axes = plt.subplots(1, 3, figsize=(10, 3.4))
    panels = (("water_dipole", "|molecular dipole| (D)", "water dipoles", "tab:green"),
              ("charge_O", "charge (e)", "O charges", "tab:red"), ("charge_H", "charge (e)", "H charges", "tab:blue"))
    for ax, (name, xlabel, label, color) in zip(axes, panels):
        e, c = data[f"{name}_edges"], data[f"{name}_counts"]
        if len(c):
            ax.stairs(c / max(c.sum() * np.diff(e)[0], 1e-300), e, fill=True, alpha=0.7, color=color)
        ax.set(xlabel=xlabel, ylabel="probability density", title=label)
        ax.locator_params(axis="x", nbins=4)
    save(fig, "distributions.png")

    if len(data["ir_wavenumber"]):
        fig, ax = plt.subplots(figsize=(6.4, 3.4))
        ax.plot(data["ir_wavenumber"], data["ir_intensity"], lw=1)
        ax.set(xlabel="wavenumber (cm$^{-1}$)", ylabel="intensity (arb. units)",
               title="IR spectrum: $\\omega^2\\,$FT$\\langle\\mu(0)\\cdot\\mu(t)\\rangle$, Hann window, harmonic QCF")
        ax.set_xlim(0, data["ir_wavenumber"].max())
        save(fig, "ir_spectrum.png")
    return paths
