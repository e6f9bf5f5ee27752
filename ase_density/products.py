"""Products of a trajectory analysis, computed from the analysis file in chunks (memory does not
grow with the trajectory): distributions of molecular dipoles and atomic charges, the infrared
spectrum, and the summary."""

from __future__ import annotations

import numpy as np
from ase.units import Debye

from .analysis_file import AnalysisWriter

_CHUNK = 1 << 16  # rows read at once


def _chunks(ds, n):
    for i in range(0, n, _CHUNK):
        yield ds[i:min(i + _CHUNK, n)]


def _histogram(chunks_fn, bins=60):
    """Histogram over a stream of 1-D chunks (two passes: range, then counts), plus mean/std."""
    lo, hi, n, s, s2 = np.inf, -np.inf, 0, 0.0, 0.0
    for x in chunks_fn():
        if len(x):
            lo, hi = min(lo, x.min()), max(hi, x.max())
            n, s, s2 = n + len(x), s + x.sum(), s2 + (x ** 2).sum()
    if n == 0:
        return np.zeros(0), np.zeros(0), {"n": 0}
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    counts = np.zeros(bins)
    for x in chunks_fn():
        counts += np.histogram(x, edges)[0]
    mean = s / n
    return edges, counts, {"n": int(n), "mean": float(mean), "std": float(np.sqrt(max(s2 / n - mean ** 2, 0.0)))}


def compute_products(f, max_lag_fs: float | None = None) -> dict:
    """Distributions and the IR spectrum from an open analysis file (``h5py.File``)."""
    from .spectra import ir_spectrum, uniform_timestep

    lengths = AnalysisWriter.complete_rows(f)
    n = lengths["frames"]
    out = {}

    def water_magnitudes():
        for d in _chunks(f["waters/dipole"], lengths["waters"]):
            yield np.linalg.norm(d, axis=1) / Debye

    def charges_of(z):
        def chunks():
            for i in range(0, lengths["atoms"], _CHUNK):
                j = min(i + _CHUNK, lengths["atoms"])
                numbers, q = f["atoms/numbers"][i:j], f["atoms/charges"][i:j]
                yield q[numbers == z]
        return chunks

    out["water_dipole_edges"], out["water_dipole_counts"], water_stats = _histogram(water_magnitudes)
    out["charge_O_edges"], out["charge_O_counts"], o_stats = _histogram(charges_of(8))
    out["charge_H_edges"], out["charge_H_counts"], h_stats = _histogram(charges_of(1))
    frames = f["frames"]
    dipoles, times = frames["dipole"][:n], frames["time"][:n]
    error = frames["n_electrons"][:n] - frames["n_electrons_expected"][:n]
    summary = {"n_frames": n, "n_waters_total": lengths["waters"],
               "frames_without_whole_waters": int(np.sum(frames["n_waters"][:n] == 0)),
               "water_dipole_debye": water_stats, "charge_O": o_stats, "charge_H": h_stats,
               "dipole_debye_mean": float(np.mean(np.linalg.norm(dipoles, axis=1)) / Debye) if n else None,
               "electron_count_error": {"mean": float(error.mean()), "max_abs": float(np.abs(error).max())} if n else None}
    try:
        dt = uniform_timestep(times)
        max_lag = None if max_lag_fs is None else max(1, min(n - 1, int(round(max_lag_fs / dt))))
        wavenumber, intensity, acf = ir_spectrum(dipoles, dt, max_lag=max_lag)
        out.update(ir_wavenumber=wavenumber, ir_intensity=intensity, ir_acf=acf)
        summary["ir"] = {"timestep_fs": dt, "max_lag_fs": (len(acf) - 1) * dt, "window": "hann (decaying half)",
                         "quantum_correction": "harmonic: intensity ∝ w^2 FT[<mu(0)·mu(t)>]"}
    except ValueError as exc:
        summary["ir"] = {"skipped": str(exc)}
    out["summary"] = summary
    return out
