"""Tests of specfit.kernels.periodogram against scipy.signal, direct DFT sums, simulation and
brute-force loops."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import scipy.ndimage
import scipy.signal

from conftest import KERNEL_PERIODOGRAM
from specfit.kernels.periodogram import box_average, segment_layout, welch_dof
from specfit.kernels.periodogram import periodogram as kernel_periodogram

periodogram = functools.partial(kernel_periodogram, **KERNEL_PERIODOGRAM)

SCIPY_WINDOW = {"none": "boxcar", "hann": "hann"}
SCIPY_DETREND = {"none": False, "mean": "constant", "linear": "linear"}


def _series(rng, npix, n):
    """Red-ish noise plus a trend and offset, so detrending and windowing matter."""
    x = np.cumsum(rng.normal(size=(npix, n)), axis=1) * 0.3 + rng.normal(size=(npix, n))
    return x + 50.0 + 0.02 * np.arange(n)


@pytest.mark.parametrize("n", [300, 301])
@pytest.mark.parametrize("window", ["none", "hann"])
@pytest.mark.parametrize("detrend", ["none", "mean", "linear"])
def test_density_matches_scipy_periodogram(n, window, detrend):
    rng = np.random.default_rng(10)
    x = _series(rng, 7, n)
    dt = 24.0
    freq, power, meta = periodogram(x, dt, window=window, detrend=detrend)
    f_ref, p_ref = scipy.signal.periodogram(
        x, fs=1 / dt, window=SCIPY_WINDOW[window], detrend=SCIPY_DETREND[detrend], axis=-1
    )
    nf = (n + 1) // 2 - 1  # DC and (for even n) Nyquist dropped
    assert freq.shape == (nf,) and power.shape == (7, nf) and power.dtype == np.float32
    np.testing.assert_allclose(freq, f_ref[1 : nf + 1], rtol=1e-12)
    np.testing.assert_allclose(power, p_ref[:, 1 : nf + 1], rtol=2e-5)
    assert meta["segments"] == 1 and meta["segment_length"] == n and meta["dof"] == 2.0


def test_legacy_two_hour_segments_give_149_frequencies():
    x = np.random.default_rng(0).normal(size=(2, 600))
    freq, power, meta = periodogram(x, 24.0, segments=2)
    assert freq.size == 149 and power.shape == (2, 149)
    np.testing.assert_allclose(freq, np.arange(1, 150) / 7200.0)
    assert meta["segment_length"] == 300 and meta["dof"] == 4.0


@pytest.mark.parametrize("window", ["none", "hann"])
def test_bartlett_matches_scipy_welch_and_drops_remainder(window):
    rng = np.random.default_rng(11)
    x = _series(rng, 5, 607)  # 607 // 3 = 202, one sample dropped at the end
    freq, power, meta = periodogram(x, 12.0, segments=3, window=window, detrend="linear")
    f_ref, p_ref = scipy.signal.welch(
        x[:, :606],
        fs=1 / 12.0,
        window=SCIPY_WINDOW[window],
        nperseg=202,
        noverlap=0,
        detrend="linear",
        axis=-1,
    )
    np.testing.assert_allclose(freq, f_ref[1:101])
    np.testing.assert_allclose(power, p_ref[:, 1:101], rtol=2e-5)
    assert meta["segments"] == 3 and meta["dof"] == 6.0
    # The remainder really is ignored: changing it changes nothing.
    y = x.copy()
    y[:, -1] += 1e3
    np.testing.assert_array_equal(
        periodogram(y, 12.0, segments=3, window=window)[1],
        periodogram(x, 12.0, segments=3, window=window)[1],
    )


@pytest.mark.parametrize("length,overlap", [(128, 0.5), (101, 0.25), (64, 0.0)])
@pytest.mark.parametrize("detrend", ["mean", "linear"])
def test_welch_matches_scipy_welch(length, overlap, detrend):
    rng = np.random.default_rng(12)
    x = _series(rng, 4, 700)
    noverlap = int(np.floor(overlap * length))
    freq, power, meta = periodogram(
        x, 2.0, segment_length=length, overlap=overlap, window="hann", detrend=detrend
    )
    f_ref, p_ref = scipy.signal.welch(
        x,
        fs=0.5,
        window="hann",
        nperseg=length,
        noverlap=noverlap,
        detrend=SCIPY_DETREND[detrend],
        axis=-1,
    )
    nf = (length + 1) // 2 - 1
    np.testing.assert_allclose(freq, f_ref[1 : nf + 1])
    np.testing.assert_allclose(power, p_ref[:, 1 : nf + 1], rtol=2e-5)
    assert meta["segments"] == 1 + (700 - length) // (length - noverlap)


def test_raw_matches_direct_dft_sum():
    rng = np.random.default_rng(13)
    x = _series(rng, 3, 90)
    length, nseg = 45, 2
    freq, power, _ = periodogram(
        x, 1.0, segments=nseg, window="hann", detrend="linear", normalisation="raw"
    )
    t = np.arange(length)
    w = 0.5 - 0.5 * np.cos(2 * np.pi * t / length)
    ks = np.arange(1, 23)  # odd L = 45: bins 1..22, no Nyquist bin
    ref = np.zeros((3, ks.size))
    for s in range(nseg):
        seg = x[:, s * length : (s + 1) * length]
        # Independent detrend: least-squares line via polyfit on each row.
        trend = np.array([np.polyval(np.polyfit(t, row, 1), t) for row in seg])
        y = (seg - trend) * w
        dft = y @ np.exp(-2j * np.pi * np.outer(t, ks) / length)
        ref += np.abs(dft) ** 2 / nseg
    np.testing.assert_allclose(freq, ks / length)
    np.testing.assert_allclose(power, ref, rtol=1e-5)


def test_variance_normalisation_parseval_and_scale_invariance():
    rng = np.random.default_rng(14)
    x = _series(rng, 6, 3 * 201)  # odd L = 201: no Nyquist bin, so Parseval is exact
    dt = 24.0
    freq, power, _ = periodogram(
        x, dt, segments=3, window="none", detrend="mean", normalisation="variance"
    )
    df = 1.0 / (201 * dt)
    # Each segment's one-sided density integrates to its variance, so the normalised one to 1.
    np.testing.assert_allclose(power.sum(axis=1) * df, 1.0, rtol=1e-5)
    # Relative to the variance: multiplying the data by a constant changes nothing.
    _, p2, _ = periodogram(1e4 * x, dt, segments=3, normalisation="variance")
    _, p1, _ = periodogram(x, dt, segments=3, normalisation="variance")
    np.testing.assert_allclose(p2, p1, rtol=1e-5)
    # And it is per segment: the segment densities divided by their own variances, averaged.
    _, dens, _ = periodogram(x[:, :201], dt, window="hann", detrend="linear")
    _, pv, _ = periodogram(
        x[:, :201], dt, window="hann", detrend="linear", normalisation="variance"
    )
    tt = np.arange(201)
    resid = x[:, :201] - np.array([np.polyval(np.polyfit(tt, r, 1), tt) for r in x[:, :201]])
    np.testing.assert_allclose(pv, dens / resid.var(axis=1)[:, None], rtol=1e-5)


def test_variance_normalisation_divides_each_segment_before_averaging():
    rng = np.random.default_rng(24)
    x = rng.normal(size=(3, 3 * 128)) * np.repeat([1.0, 10.0, 0.1], 128)  # unequal segments
    _, pv, _ = periodogram(x, 2.0, segments=3, normalisation="variance", detrend="linear")
    ref = np.zeros_like(pv, dtype=np.float64)
    for s in range(3):
        seg = x[:, s * 128 : (s + 1) * 128]
        _, dens = scipy.signal.periodogram(seg, fs=0.5, window="hann", detrend="linear")
        resid = scipy.signal.detrend(seg, type="linear")
        ref += dens[:, 1:64] / resid.var(axis=1)[:, None] / 3
    np.testing.assert_allclose(pv, ref, rtol=1e-5)


def test_constant_row_variance_normalisation_is_nan_not_error():
    x = np.ones((2, 64))
    x[1] = np.random.default_rng(0).normal(size=64)
    _, p, _ = periodogram(x, 1.0, normalisation="variance")
    assert np.isnan(p[0]).all() and np.isfinite(p[1]).all()


def test_white_noise_mean_density_is_two_sigma_squared_dt():
    rng = np.random.default_rng(15)
    sigma, dt = 3.0, 24.0
    x = rng.normal(scale=sigma, size=(1500, 300))
    _, power, _ = periodogram(x, dt, window="hann", detrend="mean")
    expected = 2 * sigma**2 * dt
    # 1500 x 149 values, each exponential: the mean is good to well under 1 %.
    assert abs(power.mean() / expected - 1) < 0.02
    _, power, _ = periodogram(x, dt, window="none", detrend="none")
    assert abs(power.mean() / expected - 1) < 0.02


@pytest.mark.parametrize(
    "kwargs",
    [
        {"segments": 4},
        {"segment_length": 96, "overlap": 0.5},
        {"segment_length": 96, "overlap": 0.75},
    ],
)
def test_dof_matches_simulated_chi2(kwargs):
    rng = np.random.default_rng(16)
    x = rng.normal(size=(3000, 384))
    _, power, meta = periodogram(x, 1.0, window="hann", detrend="none", **kwargs)
    # Averaged white-noise power is E[P] * chi2_nu / nu, so var/mean^2 = 2/nu at every bin.
    p = power[:, 2:].astype(np.float64)  # skip the bins nearest DC, where the window leaks it
    nu_hat = 2 * np.mean(p.mean(axis=0) ** 2 / p.var(axis=0))
    assert abs(nu_hat / meta["dof"] - 1) < 0.05, (nu_hat, meta["dof"])


def test_welch_dof_known_values():
    # Without overlap the segments are independent: 2K.
    assert welch_dof("hann", 100, 100, 5) == 10.0
    # Hann at 50 % overlap: the window overlap correlation is 1/6 (Harris 1978: 16.7 %), so
    # rho(1) = 1/36 and segments two steps apart do not overlap.
    L = 1000
    w = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(L) / L)
    rho1 = np.dot(w[: L // 2], w[L // 2 :]) ** 2 / np.dot(w, w) ** 2
    assert abs(rho1 - 1 / 36) < 1e-3
    K = 9
    assert welch_dof("hann", L, L // 2, K) == pytest.approx(2 * K / (1 + 2 * (1 - 1 / K) * rho1))


def test_nan_rows_get_nan_power_and_do_not_touch_others():
    rng = np.random.default_rng(17)
    x = rng.normal(size=(6, 128))
    x[2, 50] = np.nan
    x[4, 0] = np.inf
    _, power, _ = periodogram(x, 1.0, segments=2)
    assert np.isnan(power[[2, 4]]).all()
    _, clean, _ = periodogram(x[[0, 1, 3, 5]], 1.0, segments=2)
    np.testing.assert_array_equal(power[[0, 1, 3, 5]], clean)


def test_fmin_fmax_select_a_band():
    x = np.random.default_rng(18).normal(size=(2, 300))
    f_all, p_all, _ = periodogram(x, 24.0)
    freq, power, _ = periodogram(x, 24.0, fmin=10 / 7200, fmax=20 / 7200)
    np.testing.assert_allclose(freq, np.arange(10, 21) / 7200)
    sel = (f_all >= 10 / 7200 - 1e-15) & (f_all <= 20 / 7200 + 1e-15)
    np.testing.assert_array_equal(power, p_all[:, sel])
    with pytest.raises(ValueError, match="fmin"):
        periodogram(x, 24.0, fmin=1.0)


def test_float32_input_keeps_precision_over_a_steep_spectrum():
    # f^-3 red noise on a large offset: the expected power falls by ~1e8 from the lowest to the
    # highest bin, the regime where a single-precision FFT could swamp the weak bins.
    rng = np.random.default_rng(19)
    n = 1200
    f = np.fft.rfftfreq(n)
    amp = np.zeros_like(f)
    amp[1:] = f[1:] ** -1.5
    coef = amp * (rng.normal(size=(4, f.size)) + 1j * rng.normal(size=(4, f.size)))
    y = np.fft.irfft(coef, n)
    x32 = (1000.0 + 5.0 * y / y.std()).astype(np.float32)
    freq, p32, _ = periodogram(x32, 24.0, window="hann", detrend="linear")
    _, p_ref = scipy.signal.periodogram(
        x32.astype(np.float64), fs=1 / 24.0, window="hann", detrend="linear"
    )
    p_ref = p_ref[:, 1 : freq.size + 1]
    # The local spectrum level (21-bin running mean): single bins scatter as chi^2_2 around it,
    # so an error small against the level is far below the statistical noise of every bin.
    level = scipy.ndimage.uniform_filter1d(p_ref, 21, axis=1)
    assert (level.max(axis=1) / level.min(axis=1) > 1e7).all()
    assert (np.abs(p32 - p_ref) / level).max() < 2e-3
    # Double precision input gets double precision arithmetic.
    _, p64, _ = periodogram(x32.astype(np.float64), 24.0, window="hann", detrend="linear")
    np.testing.assert_allclose(p64, p_ref, rtol=1e-5)


def test_empty_block_and_integer_input():
    freq, p0, _ = periodogram(np.zeros((0, 100)), 1.0)
    assert p0.shape == (0, freq.size)
    xi = np.random.default_rng(22).integers(0, 100, size=(2, 100))
    np.testing.assert_allclose(periodogram(xi, 1.0)[1], periodogram(xi.astype(float), 1.0)[1])


@pytest.mark.parametrize("detrend", ["mean", "linear"])
@pytest.mark.parametrize("window", ["none", "hann"])
def test_a_constant_series_has_exactly_zero_power(detrend, window):
    """A dead or saturated pixel's series: its rounded mean left ~1e-13 that a Hann window
    spread into bin 1 (3.9e-22 for 1000.1 in float64), so the 'spectrum' was fitted instead
    of being reported constant (status constant_input). Other rows are unchanged."""
    rng = np.random.default_rng(5)
    x = rng.normal(100.0, 3.0, (6, 301))
    x[0] = 1000.1
    x[1] = np.float32(1000.1)
    x[2] = 1e-7 / 3
    kw = dict(segments=1, overlap=0.0, window=window, detrend=detrend)
    _, p, _ = periodogram(x, 12.0, **kw)
    assert (p[:3] == 0).all()
    _, rest, _ = periodogram(x[3:], 12.0, **kw)
    np.testing.assert_array_equal(p[3:], rest)
    _, ref = scipy.signal.periodogram(
        x[3:], fs=1 / 12.0, window="hann" if window == "hann" else "boxcar",
        detrend="constant" if detrend == "mean" else "linear",
    )  # fmt: skip
    np.testing.assert_allclose(p[3:], ref[:, 1 : p.shape[1] + 1], rtol=1e-5)


def test_bad_arguments_name_the_key():
    x = np.zeros((2, 100))
    with pytest.raises(ValueError, match="segment_length"):
        periodogram(x, 1.0, segments=2, overlap=0.5)
    with pytest.raises(ValueError, match="spectra.segments"):
        periodogram(x, 1.0, segments=50)
    with pytest.raises(ValueError, match="spectra.window"):
        periodogram(x, 1.0, window="hamming")
    with pytest.raises(ValueError, match="spectra.detrend"):
        periodogram(x, 1.0, detrend="quadratic")
    with pytest.raises(ValueError, match="spectra.normalisation"):
        periodogram(x, 1.0, normalisation="power")
    with pytest.raises(ValueError, match="longer than the series"):
        periodogram(x, 1.0, segment_length=200)
    with pytest.raises(ValueError, match="dt"):
        periodogram(x, 0.0)
    assert segment_layout(100, segment_length=40, overlap=0.5) == (40, 20, 4)


def _box_brute(p, box):
    nf, ny, nx = p.shape
    r = box // 2
    valid = np.isfinite(p).all(axis=0)
    mean = np.full(p.shape, np.nan)
    spread = np.full(p.shape, np.nan)
    count = np.zeros((ny, nx), int)
    for y in range(ny):
        for x in range(nx):
            ys = slice(max(y - r, 0), min(y + r + 1, ny))
            xs = slice(max(x - r, 0), min(x + r + 1, nx))
            v = valid[ys, xs]
            count[y, x] = v.sum()
            vals = p[:, ys, xs][:, v]
            if vals.shape[1] >= 1:
                mean[:, y, x] = vals.mean(axis=1)
            if vals.shape[1] >= 2:
                spread[:, y, x] = vals.std(axis=1, ddof=1)
    return mean, spread, count


@pytest.mark.parametrize("box", [1, 3, 5])
def test_box_average_matches_brute_force(box):
    rng = np.random.default_rng(20)
    p = rng.exponential(size=(4, 9, 11)) * np.array([1e6, 1.0, 1e-3, 5.0])[:, None, None]
    p[:, 2, 3] = np.nan  # a bad pixel
    p[1, 6, 7] = np.nan  # NaN at one frequency only: the whole pixel counts as bad
    p[:, 0:3, 9:11] = np.nan  # a bad corner, so some boxes have < 2 pixels
    mean, spread, count = box_average(p.astype(np.float32), box)
    m_ref, s_ref, c_ref = _box_brute(p.astype(np.float32).astype(np.float64), box)
    assert mean.dtype == np.float32 and spread.dtype == np.float32
    np.testing.assert_array_equal(count, c_ref)
    np.testing.assert_allclose(mean, m_ref, rtol=1e-5, equal_nan=True)
    np.testing.assert_allclose(spread, s_ref, rtol=1e-4, atol=1e-12, equal_nan=True)
    if box == 1:
        ok = np.isfinite(p).all(axis=0)
        np.testing.assert_array_equal(mean[:, ok], p.astype(np.float32)[:, ok])
        assert np.isnan(spread).all()


def test_box_average_of_a_tile_with_halo_is_bit_identical_to_the_whole_image():
    # A pixel's box average depends only on its box: any tile (with a halo of box // 2)
    # gives the same bits as the whole image (running sums or centring on the block's
    # mean would not).
    rng = np.random.default_rng(23)
    p = (rng.exponential(size=(5, 17, 19)) * 1e6).astype(np.float32)
    p[:, 3, 3] = np.nan
    whole = box_average(p, 3)
    for y0, y1, x0, x1 in ((0, 5, 0, 7), (4, 11, 6, 19), (9, 17, 2, 13)):
        t, b = max(y0 - 1, 0), min(y1 + 1, 17)
        left, r = max(x0 - 1, 0), min(x1 + 1, 19)
        tile = box_average(p[:, t:b, left:r], 3)
        for g, w in zip(tile, whole, strict=True):
            inner = g[..., y0 - t : y0 - t + y1 - y0, x0 - left : x0 - left + x1 - x0]
            np.testing.assert_array_equal(inner, w[..., y0:y1, x0:x1])


def test_dead_pixels_are_left_out_of_box_means():
    """A constant series (a dead or saturated pixel) has a spectrum of exact zeros: alone it is
    not fitted (status constant_input), but box 3 averaged its zeros into every neighbour's
    mean (a third lower with two dead pixels among six; the results reviewer). It is left out
    of every box, as a NaN pixel is, in the means, the spreads, the counts and N_eff, through
    the stage API as in the tile chain."""
    import xarray as xr

    import specfit
    from specfit.kernels.periodogram import box_neff

    rng = np.random.default_rng(4)
    p = rng.exponential(size=(40, 6, 7))
    p[:, 0, 1] = 0.0  # dead
    p[:, 2, 4] = 0.0
    dead = np.zeros((6, 7), bool)
    dead[0, 1] = dead[2, 4] = True
    m_ref, s_ref, c_ref = _box_brute(np.where(dead, np.nan, p), 3)
    mean, spread, count = box_average(p, 3)
    np.testing.assert_array_equal(count, c_ref)
    np.testing.assert_allclose(mean, m_ref, rtol=1e-6)
    np.testing.assert_allclose(spread, s_ref, rtol=1e-5, equal_nan=True)
    np.testing.assert_array_equal(box_neff(p, 3), box_neff(np.where(dead, np.nan, p), 3))
    # box 1 keeps the zeros (the fit says constant_input)
    assert (box_average(p, 1)[0][:, 0, 1] == 0).all()
    # the same through the stage API from a series with a constant pixel
    values = np.cumsum(rng.normal(size=(256, 6, 7)), axis=0) + 50.0
    values[:, 0, 1] = 7.0
    series = xr.DataArray(values, dims=("time", "y", "x"), coords={"time": np.arange(256) * 12.0})
    boxed = specfit.power_spectra(series, box=3, box_dof="nominal")
    alone = specfit.power_spectra(series).values
    assert (alone[:, 0, 1] == 0).all()
    live = [(0, 0), (1, 0), (1, 1)]  # the corner's box without the dead (0, 1)
    np.testing.assert_allclose(
        boxed.values[:, 0, 0], np.mean([alone[:, y, x] for y, x in live], axis=0), rtol=1e-5
    )
    assert int(boxed["dof"].values[0, 0]) == 2 * len(live)


def test_box_average_large_offset_keeps_spread_precision():
    rng = np.random.default_rng(21)
    p = 1e8 + rng.normal(size=(2, 6, 6))  # std 1 on a mean of 1e8
    _, spread, _ = box_average(p, 3)
    _, s_ref, _ = _box_brute(p, 3)
    np.testing.assert_allclose(spread, s_ref, rtol=1e-3)


def test_box_average_rejects_even_box():
    with pytest.raises(ValueError, match="odd"):
        box_average(np.zeros((2, 3, 3)), 2)
