import numpy as np
import pytest

from ase_density.spectra import C_CM_PER_FS, dipole_autocorrelation, hann_decay, ir_spectrum, uniform_timestep


def _peaks(x, y, threshold=0.05):
    inner = (y[1:-1] > y[:-2]) & (y[1:-1] >= y[2:]) & (y[1:-1] > threshold * y.max())
    return x[1:-1][inner], y[1:-1][inner]


def test_ir_spectrum_of_known_frequencies():
    """A dipole made of cosines at 1650 and 3400 cm^-1 (plus a slow drift and noise) peaks there,
    and the w^2 factor weighs the two lines as (w1/w2)^2 for equal amplitudes."""
    dt, n = 0.5, 8000  # fs; 4 ps
    t = dt * np.arange(n)
    rng = np.random.default_rng(0)
    mu = np.zeros((n, 3))
    mu[:, 0] = 0.1 * np.cos(2 * np.pi * 1650 * C_CM_PER_FS * t)
    mu[:, 1] = 0.1 * np.cos(2 * np.pi * 3400 * C_CM_PER_FS * t + 0.7)
    mu[:, 2] = 1.5 + 0.002 * rng.normal(size=n)  # static dipole + noise
    wavenumber, intensity, acf = ir_spectrum(mu, dt)
    assert wavenumber[0] == 0 and wavenumber[-1] <= 5000 and intensity.max() == pytest.approx(1.0)
    peaks, heights = _peaks(wavenumber, intensity)
    resolution = 1 / (dt * (len(acf) - 1) * C_CM_PER_FS)  # ~17 cm^-1 for 2 ps of lags
    assert len(peaks) == 2
    assert abs(peaks[0] - 1650) < resolution / 2 and abs(peaks[1] - 3400) < resolution / 2
    assert heights[0] / heights[1] == pytest.approx((1650 / 3400) ** 2, rel=0.05)
    # the ACF at lag 0 is the variance: (0.1^2 / 2) per cosine + the noise
    assert acf[0] == pytest.approx(0.01 + 0.002**2, rel=0.02)


def test_autocorrelation_is_unbiased_and_checks_input():
    x = np.ones((10, 3))
    assert np.allclose(dipole_autocorrelation(x, subtract_mean=False), 3.0)
    alternating = np.array([1.0, -1.0] * 8)
    assert np.allclose(dipole_autocorrelation(alternating, max_lag=4), [1, -1, 1, -1, 1])
    assert hann_decay(5)[0] == 1 and hann_decay(5)[-1] == pytest.approx(0)
    with pytest.raises(ValueError, match="at least 2"):
        dipole_autocorrelation(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="NaN"):
        dipole_autocorrelation(np.full((5, 3), np.nan))
    with pytest.raises(ValueError, match="max_lag"):
        dipole_autocorrelation(np.zeros((5, 3)), max_lag=5)
    with pytest.raises(ValueError, match="fixed positive timestep"):
        ir_spectrum(np.zeros((5, 3)), float("nan"))


def test_uniform_timestep():
    assert uniform_timestep([0, 2, 4, 6.0]) == 2.0
    with pytest.raises(ValueError, match="--timestep"):
        uniform_timestep([np.nan, np.nan])
    with pytest.raises(ValueError, match="not evenly spaced"):
        uniform_timestep([0, 1, 3])
