"""Tests of specfit.kernels.resample against np.interp and hand-checked grids."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from specfit.kernels.resample import (
    choose_cadence,
    find_gaps,
    frame_jumps,
    interp_linear,
    interpolation_nyquist_gain,
    longest_gaps,
    uniform_times,
)


def _reference(times, values, new_times):
    """np.interp per row over its finite samples, NaN outside them (the documented contract)."""
    out = np.full((values.shape[0], new_times.size), np.nan)
    for p, row in enumerate(values):
        ok = np.isfinite(row)
        if ok.sum() < 2:
            continue
        t, v = times[ok], row[ok]
        r = np.interp(new_times, t, v)
        r[(new_times < t[0]) | (new_times > t[-1])] = np.nan
        out[p] = r
    return out


def _irregular_times(rng, nt, cadence=24.0):
    """Jittered cadence with a 2-frame and a 4-frame gap, like the AIA 1600 example."""
    steps = cadence * (1 + 0.05 * rng.uniform(-1, 1, nt - 1))
    steps[nt // 3] = 2 * cadence
    steps[2 * nt // 3] = 4 * cadence
    return 3.5 + np.concatenate([[0.0], np.cumsum(steps)])


def test_uniform_times_median_cadence_and_no_extrapolation():
    t = np.array([0.0, 24.0, 48.0, 96.0, 120.0, 130.0])  # median spacing 24
    grid = uniform_times(t)
    np.testing.assert_allclose(grid, [0, 24, 48, 72, 96, 120])
    grid = uniform_times(t + 1000.0, cadence=50.0)
    np.testing.assert_allclose(grid, [1000, 1050, 1100])
    assert grid[-1] <= t[-1] + 1000.0


@pytest.mark.parametrize("seed", [2, 4, 5, 8])
def test_default_cadence_is_the_grid_closest_to_jittered_frames(seed):
    """Frames jittered by +-1 % about 12 s with ~3 % dropped: their median spacing rounds to
    12.01 s (for these seeds), a grid that drifts a full cadence against the frames over the
    series and keeps ~1/3 of the Nyquist white-noise power (measured: 0.32-0.36). The default
    (cadence None) must pick the 12 s grid, which stays on the frames (kept > 0.95)."""
    rng = np.random.default_rng(seed)
    t = np.arange(600) * 12.0 + rng.uniform(-0.12, 0.12, 600)
    t = t[rng.random(600) > 0.03]
    median = float(f"{np.median(np.diff(t)):.4g}")
    assert median == 12.01
    assert interpolation_nyquist_gain(t, uniform_times(t, median)) < 0.4
    cadence, gain = choose_cadence(t)
    assert cadence == 12.0 and gain > 0.95
    np.testing.assert_array_equal(uniform_times(t), uniform_times(t, 12.0))
    assert gain == pytest.approx(interpolation_nyquist_gain(t, uniform_times(t)))


@pytest.mark.parametrize("step", [0.05, 0.25, 0.033, 0.002])
def test_sub_second_cadences_keep_every_frame(step):
    """Frames 50 ms apart got a 0.1 s grid (the most common step, in 0.1 s bins, was 0.1 s;
    its grid lands on every other frame, so it tied with 0.05 s at gain 1 and won): half the
    frames unused and 5-10 Hz folded into the band (spectra reviewer). The bins scale with
    the cadence below 1 s."""
    t = np.arange(400) * step
    cadence, gain = choose_cadence(t)
    assert cadence == pytest.approx(step, rel=1e-3) and gain > 0.999
    assert uniform_times(t).size == 400


@pytest.mark.parametrize("seed", [3, 6, 13])
def test_a_jittered_one_second_cadence_keeps_its_round_candidate(seed):
    """Steps of 1 s +- 0.03 with a median just under 1 s: the finer bins' mode alone (1.02 s,
    0.95 s: noise) lost the 0.1 s bins' 1.0 s and its better grid (gain 0.34 against 0.40;
    diff reviewer). Both modes are candidates; the choice is never worse than 1.0 s."""
    rng = np.random.default_rng(seed)
    d = 1.0 + rng.uniform(-0.03, 0.03, 999)
    d -= max(0.0, np.median(d) - 0.9995)
    t = np.cumsum(np.r_[0.0, d])
    cadence, gain = choose_cadence(t)
    assert round(gain, 3) >= round(interpolation_nyquist_gain(t, uniform_times(t, 1.0)), 3)


def test_uniform_times_exact_multiple_keeps_last_point():
    # 0.1 * k accumulates rounding; the last frame time is an exact multiple of the cadence.
    t = np.arange(301) * 0.1
    grid = uniform_times(t, cadence=0.1)
    assert grid.size == 301
    assert grid[-1] <= t[-1]
    np.testing.assert_allclose(np.diff(grid), 0.1, rtol=1e-9)


def test_find_gaps():
    t = np.array([0.0, 24.0, 48.0, 96.0, 120.0, 216.0, 240.0])
    assert find_gaps(t, 24.0, 1.5) == [(48.0, 96.0), (120.0, 216.0)]
    assert find_gaps(t, 24.0, 3.0) == [(120.0, 216.0)]
    assert find_gaps(t, 24.0, 4.0) == []


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_interp_linear_matches_np_interp_with_nan_masks(dtype):
    rng = np.random.default_rng(42)
    nt, npix = 80, 60
    t = _irregular_times(rng, nt)
    v = rng.normal(size=(npix, nt)).astype(dtype)
    # Rows 0-19 complete (fast path); others with random missing samples, including at the
    # ends (so the valid range shrinks), a row with one sample, and an all-NaN row.
    for p in range(20, npix):
        v[p, rng.random(nt) < rng.uniform(0.05, 0.6)] = np.nan
    v[20, :5] = np.nan
    v[21, -7:] = np.nan
    v[22, :] = np.nan
    v[22, 10] = 1.0
    v[23, :] = np.nan
    v[24, 3] = np.inf
    new = uniform_times(t, 24.0)
    # t[10] is row 22's only sample: still NaN, a single sample is not a series.
    new_ext = np.concatenate([[t[0] - 10.0], new, [t[10], t[-1], t[-1] + 5.0]])
    got = interp_linear(t, v, new_ext)
    assert got.dtype == np.float32 and got.shape == (npix, new_ext.size)
    ref = _reference(t, v.astype(np.float64), new_ext)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    np.testing.assert_allclose(got, ref, rtol=2e-6, atol=2e-6, equal_nan=True)
    assert np.isnan(got[22]).all() and np.isnan(got[23]).all()
    assert np.isnan(got[:, 0]).all() and np.isnan(got[:, -1]).all()


def test_longest_gaps_is_the_longest_step_between_a_pixels_finite_samples():
    """longest_gaps against np.diff over each pixel's own finite sample times, on random
    masks (the frames' own gaps included), and the NaN of a pixel with fewer than 2."""
    rng = np.random.default_rng(7)
    nt = 90
    t = _irregular_times(rng, nt)
    v = rng.normal(size=(nt, 6, 7)).astype(np.float32)
    for y in range(1, 6):
        for x in range(7):
            v[rng.random(nt) < rng.uniform(0.05, 0.7), y, x] = np.nan
    v[30:70, 2, 3] = np.nan  # a long stretch of one pixel
    v[:, 4, 4] = np.nan
    v[11, 4, 4] = 2.0  # one sample: nothing is bridged, nothing is a series
    v[:, 5, 5] = np.inf
    got = longest_gaps(t, v)
    assert got.dtype == np.float32 and got.shape == (6, 7)
    for y in range(6):
        for x in range(7):
            ok = np.isfinite(v[:, y, x])
            ref = np.diff(t[ok]).max() if ok.sum() >= 2 else np.nan
            np.testing.assert_allclose(got[y, x], ref, rtol=1e-6, equal_nan=True)
    assert got[2, 3] >= t[70] - t[29] - 1e-3
    # complete pixels: the longest frame spacing (the 4-frame gap of _irregular_times)
    np.testing.assert_allclose(got[0], np.diff(t).max(), rtol=1e-6)
    with pytest.raises(ValueError, match="same frames"):
        longest_gaps(t, v[:-1])


def test_interp_linear_at_sample_times_returns_samples():
    rng = np.random.default_rng(1)
    t = _irregular_times(rng, 30)
    v = rng.normal(size=(4, 30))
    v[1, ::3] = np.nan
    got = interp_linear(t, v, t)
    ok = np.isfinite(v)
    np.testing.assert_allclose(got[ok], v[ok].astype(np.float32))
    # Row 1 starts with a missing sample, so its first query is outside its finite range.
    assert np.isnan(got[1, 0])


def test_interp_linear_unsorted_query_times():
    rng = np.random.default_rng(2)
    t = _irregular_times(rng, 40)
    v = rng.normal(size=(3, 40))
    v[2, rng.random(40) < 0.3] = np.nan
    q = rng.uniform(t[0] - 20, t[-1] + 20, 25)
    q[5] = np.nan
    np.testing.assert_allclose(
        interp_linear(t, v, q), _reference(t, v, q), rtol=1e-6, atol=1e-6, equal_nan=True
    )


def test_interp_linear_bad_input_messages():
    t = np.array([0.0, 1.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="strictly increasing"):
        interp_linear(t, np.zeros((2, 4)), np.array([0.5]))
    with pytest.raises(ValueError, match="same frames"):
        interp_linear(np.arange(4.0), np.zeros((2, 5)), np.array([0.5]))
    with pytest.raises(ValueError, match="2-D"):
        interp_linear(np.arange(4.0), np.zeros(4), np.array([0.5]))
    with pytest.raises(ValueError, match="cadence"):
        uniform_times(np.arange(4.0), cadence=-1.0)


def test_interp_linear_empty_block():
    out = interp_linear(np.arange(5.0), np.zeros((0, 5)), np.arange(3.0))
    assert out.shape == (0, 3) and out.dtype == np.float32


@pytest.mark.realdata
def test_aia_1600_times_grid_gaps_and_spectra(shared_data):
    """The AIA 1600 series: 596 frames at 24 s with a 48 s and a 96 s gap (data README)."""
    from astropy.io import fits
    from astropy.time import Time

    from conftest import KERNEL_PERIODOGRAM
    from specfit.kernels.periodogram import periodogram as kernel_periodogram

    periodogram = functools.partial(kernel_periodogram, **KERNEL_PERIODOGRAM)

    files = sorted((shared_data / "aia1600_20120606" / "fits").glob("*.fits"))
    if len(files) != 596:
        pytest.skip(f"expected 596 AIA FITS files, found {len(files)}")
    stamps, patch = [], []
    for f in files:
        with fits.open(f) as hdul:
            hdu = hdul[0]
            stamps.append(hdu.header["T_OBS"].rstrip("Z"))
            patch.append(np.asarray(hdu.section[70:78, 130:138], dtype=np.float64))
    t = Time(stamps, format="isot", scale="utc")
    sec = (t - t[0]).sec
    grid = uniform_times(sec)
    # 4 h at 24 s: 599 cadences end to end (the 48 s and 96 s gaps add 1 + 3 missing frames);
    # the span is 14375.99999 s in floating point and must still give its last grid point.
    assert grid.size == 600 and grid[-1] <= sec[-1]
    gaps = find_gaps(sec, 24.0, 1.5)
    assert [round(b - a) for a, b in gaps] == [48, 96]
    rows = np.stack(patch).reshape(len(files), -1).T
    uni = interp_linear(sec, rows, grid)
    assert np.isfinite(uni).all()
    freq, power, meta = periodogram(uni, 24.0, segments=2)
    np.testing.assert_allclose(freq, np.arange(1, 150) / 7200.0)
    assert np.isfinite(power).all() and (power > 0).all()
    # Solar 1600 A spectra are red: far more power at 5-30 min periods than at 1-1.2 min.
    # (Measured ~270 on this patch; white noise would give ~1.)
    assert np.median(power[:, :10]) > 10 * np.median(power[:, -25:])


def test_frame_jumps_against_a_numpy_reference():
    """frame_jumps against a plain numpy version of its rule (residual from the mean of the
    neighbouring finite samples, 10x the robust scatter of every 4th residual, the largest of
    three), on noise with a damaged frame, a spiky pixel and missing samples; sound frames
    get (almost) no jumps."""
    rng = np.random.default_rng(3)
    nt, npix = 200, 300
    v = 50.0 + rng.normal(0.0, 2.0, (npix, nt))
    v[:150, 80] = 0.0  # half a frame zeroed
    v[7, 30] += 500.0  # a cosmic ray
    v[rng.random((npix, nt)) < 0.05] = np.nan
    v[5, :196] = np.nan  # 4 samples: counted finite only
    own = np.ones(npix, bool)
    own[-10:] = False  # a halo
    finite, jumps = frame_jumps(v.astype(np.float32), own)
    ref_f = np.zeros(nt, np.int64)
    ref_j = np.zeros(nt, np.int64)
    w = v.astype(np.float32).astype(np.float64)
    for p in np.flatnonzero(own):
        idx = np.flatnonzero(np.isfinite(w[p]))
        ref_f[idx] += 1
        if idx.size < 5:
            continue
        x = w[p, idx]
        r = np.abs(x - np.concatenate([[x[1]], 0.5 * (x[:-2] + x[2:]), [x[-2]]]))
        step = max(1, min(4, idx.size // 16))
        lim = 10.0 * 1.4826 * np.median(r[::step])
        left = np.concatenate([[-np.inf], r[:-1]])
        right = np.concatenate([r[1:], [-np.inf]])
        hit = (r > lim) & (r >= left) & (r >= right)
        ref_j[idx[hit]] += 1
    np.testing.assert_array_equal(finite, ref_f)
    np.testing.assert_array_equal(jumps, ref_j)
    share = jumps / finite
    assert share[80] > 0.4 and np.delete(share, 80).max() < 0.02
