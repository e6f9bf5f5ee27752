"""Infrared spectra from the dipole autocorrelation function of a classical trajectory.

Linear response gives the absorption coefficient times refractive index as

    alpha(w) n(w) = (pi w (1 - exp(-beta hbar w)) / (3 hbar c V eps0)) * C_qm(w),

with C_qm(w) the Fourier transform of the *quantum* dipole autocorrelation function. A classical
(or machine-learned-density-on-classical-nuclei) trajectory gives the classical C_cl(w) instead,
and a quantum correction factor Q(w) = C_qm / C_cl must be chosen. We use the **harmonic** one,

    Q_H(w) = beta hbar w / (1 - exp(-beta hbar w)),

exact for harmonic oscillators with linear dipoles and the usual choice for O–H stretches. With it the
temperature drops out of the line shape:

    alpha(w) n(w) ∝ w^2 C_cl(w),     C_cl(w) = ∫ <mu(0)·mu(t)> w_Hann(t) cos(w t) dt,

which is what :func:`ir_spectrum` returns (normalised to a maximum of 1, arbitrary units). It is
also the w^2 form obtained from the purely classical limit, and the same as the power spectrum of
the dipole *derivative*. Other factors (the "standard" Q = 2/(1 + exp(-beta hbar w)), Schofield's
exp(beta hbar w / 2)) would raise high-frequency bands further: multiply by Q/Q_H to switch.

The autocorrelation is computed with FFTs (Wiener–Khinchin, zero-padded, unbiased: lag k divided
by N - k) after removing the mean dipole (the static dipole only adds a line at w = 0), and
windowed with the decaying half of a Hann window, w(t) = cos^2(pi t / (2 t_max)), reaching zero at
the largest lag t_max (default half the trajectory) so that the noisy long-lag tail does not ring.
The resolution is about 1/t_max: 33 cm^-1 for t_max = 1 ps.
"""

from __future__ import annotations

import numpy as np

#: speed of light in cm/fs: wavenumber (cm^-1) = frequency (1/fs) / C_CM_PER_FS
C_CM_PER_FS = 2.99792458e-5


def dipole_autocorrelation(dipoles, max_lag: int | None = None, subtract_mean: bool = True) -> np.ndarray:
    """<mu(0)·mu(t)> for lags 0..max_lag (in frames) of an (n_frames, 3) (or (n_frames,)) series,
    unbiased (each lag averaged over the N - k pairs it has); default ``max_lag`` N // 2."""
    x = np.asarray(dipoles, dtype=float)
    if x.ndim == 1:
        x = x[:, None]
    n = len(x)
    if n < 2:
        raise ValueError(f"an autocorrelation needs at least 2 frames, got {n}")
    if not np.all(np.isfinite(x)):
        raise ValueError("the dipole series contains NaN/inf")
    max_lag = n // 2 if max_lag is None else int(max_lag)
    if not 1 <= max_lag < n:
        raise ValueError(f"max_lag must be between 1 and {n - 1} frames, got {max_lag}")
    if subtract_mean:
        x = x - x.mean(axis=0)
    n_fft = 1 << int(np.ceil(np.log2(2 * n)))
    f = np.fft.rfft(x, n_fft, axis=0)
    acf = np.fft.irfft(np.sum(np.abs(f) ** 2, axis=1), n_fft)[:max_lag + 1]
    return acf / (n - np.arange(max_lag + 1))


def hann_decay(n_lags: int) -> np.ndarray:
    """The decaying half of a Hann window over lags 0..n_lags-1: 1 at lag 0, 0 at the last."""
    if n_lags < 2:
        return np.ones(n_lags)
    return np.cos(0.5 * np.pi * np.arange(n_lags) / (n_lags - 1)) ** 2


def ir_spectrum(dipoles, timestep_fs: float, max_lag: int | None = None, pad: int = 4,
                max_wavenumber: float | None = 5000.0):
    """Infrared spectrum (harmonic quantum correction, see the module docstring) of a dipole
    series sampled every ``timestep_fs`` femtoseconds.

    Returns ``(wavenumber_cm1, intensity, acf)``: intensity ∝ w^2 C_cl(w), normalised to max 1,
    at wavenumbers up to ``max_wavenumber`` (None: up to the Nyquist limit 1 / (2 c dt)), and the
    un-windowed autocorrelation (e·Å)^2 (or the dipole unit squared) at lags 0..max_lag frames.
    ``pad``: zero padding factor of the cosine transform (finer, interpolated frequency grid)."""
    if not (timestep_fs and np.isfinite(timestep_fs) and timestep_fs > 0):
        raise ValueError(f"an IR spectrum needs a fixed positive timestep, got {timestep_fs!r} fs")
    acf = dipole_autocorrelation(dipoles, max_lag)
    windowed = acf * hann_decay(len(acf))
    n_fft = max(1, int(pad)) * (1 << int(np.ceil(np.log2(2 * len(acf)))))
    # cosine transform of the even extension: dt * (c0 + 2 sum_k c_k cos(w k dt))
    spectrum = timestep_fs * (2 * np.fft.rfft(windowed, n_fft).real - windowed[0])
    wavenumber = np.fft.rfftfreq(n_fft, d=timestep_fs) / C_CM_PER_FS
    intensity = wavenumber ** 2 * spectrum
    if max_wavenumber is not None:
        keep = wavenumber <= max_wavenumber
        wavenumber, intensity = wavenumber[keep], intensity[keep]
    peak = np.max(np.abs(intensity)) if len(intensity) else 0.0
    return wavenumber, (intensity / peak if peak > 0 else intensity), acf


def uniform_timestep(times_fs, rtol: float = 1e-6) -> float:
    """The common spacing (fs) of a series of frame times; raises ``ValueError`` with the reason
    when the times are unknown (NaN) or not evenly spaced."""
    t = np.asarray(times_fs, dtype=float)
    if len(t) < 2:
        raise ValueError(f"need at least 2 frames with times, got {len(t)}")
    if not np.all(np.isfinite(t)):
        raise ValueError("frame times are unknown: the trajectory stores no time per frame; pass the MD "
                         "timestep (--timestep FS) or write atoms.info['time'] (fs) with each frame")
    dt = np.diff(t)
    step = float(np.median(dt))
    if step <= 0 or np.max(np.abs(dt - step)) > rtol * abs(step) + 1e-9:
        raise ValueError(f"frame times are not evenly spaced (spacings from {dt.min():g} to {dt.max():g} fs): "
                         "an IR spectrum needs a fixed timestep")
    return step
