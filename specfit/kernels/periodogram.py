"""Windowed, segment-averaged power spectra of ``(npix, n)`` uniform series, and box averaging.

Each row is cut into segments (Bartlett: ``K`` back-to-back segments; Welch: fixed-length
segments with a fractional overlap), each segment is detrended and windowed, and the
one-sided power of its real FFT is averaged over segments. The DC and Nyquist bins are
dropped because, unlike every other bin, their power follows chi^2 with 1 degree of freedom,
which would break the chi^2_2K statistics the Whittle fit relies on. See ``docs/spectra.md``.
Pure numpy/scipy/numba: no dask, no xarray, no I/O.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.fft
from numba import njit

__all__ = [
    "periodogram",
    "box_average",
    "box_members",
    "box_neff",
    "segment_layout",
    "segment_step",
    "segment_samples",
    "welch_dof",
    "window_rho",
    "window_vif",
]

WINDOWS = ("none", "hann")
DETRENDS = ("none", "mean", "linear")
NORMALISATIONS = ("density", "variance", "raw")


def _window(name: str, length: int) -> np.ndarray:
    if name == "none":
        return np.ones(length)
    # The periodic ("DFT-even") Hann window, as scipy.signal.get_window("hann", L) returns and
    # scipy.signal.periodogram/welch use: its overlap-add is flat at 50 % overlap.
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(length) / length)


@njit(cache=True, nogil=True)
def _detrend_window(x, start, w, tc, mode, out, var):  # pragma: no cover - compiled
    """out[p] = w * (x[p, start:start+L] - trend); var[p] = mean square of the detrended segment.

    mode 0: no detrend, 1: mean, 2: least-squares line. ``tc`` is centred, so the slope is
    sum(tc x) / sum(tc^2) independently of the mean. Sums are float64 whatever x's dtype.
    """
    npix = x.shape[0]
    length = w.size
    tc2 = 0.0
    for j in range(length):
        tc2 += tc[j] * tc[j]
    for p in range(npix):
        a = 0.0
        b = 0.0
        if mode >= 1:
            sx = 0.0
            stx = 0.0
            x0 = np.float64(x[p, start])
            flat = True
            for j in range(length):
                v = np.float64(x[p, start + j])
                sx += v
                stx += tc[j] * v
                flat = flat and v == x0
            a = sx / length
            if mode == 2:
                b = stx / tc2
            if flat:
                # exactly zero: the rounded mean of a constant segment left ~1e-13 that a
                # window spread into bin 1 (3.9e-22), fitted as if it were a spectrum
                a = x0
                b = 0.0
        ss = 0.0
        for j in range(length):
            d = np.float64(x[p, start + j]) - a - b * tc[j]
            ss += d * d
            out[p, j] = d * w[j]
        var[p] = ss / length
    return out


@njit(cache=True, nogil=True)
def _accumulate(spec, k_lo, var, by_variance, acc):  # pragma: no cover - compiled
    """acc[p, k] += |spec[p, k_lo + k]|^2, divided by var[p] when by_variance."""
    npix, nf = acc.shape
    for p in range(npix):
        scale = 1.0
        if by_variance:
            # A constant segment has no variance to normalise by: its power is undefined.
            scale = 1.0 / var[p] if var[p] > 0 else np.nan
        for k in range(nf):
            c = spec[p, k_lo + k]
            re = np.float64(c.real)
            im = np.float64(c.imag)
            acc[p, k] += (re * re + im * im) * scale
    return acc


def window_vif(window: str, segment_length: int, overlap: float = 0.0, segments: int = 1) -> float:
    """Variance inflation of a sum over frequency bins caused by the bins' correlation.

    A taper makes neighbouring periodogram bins correlated, and so do overlapping Welch
    segments (with or without a taper): for white noise the powers at bins k and k+j
    correlate ``rho_j`` (:func:`window_rho`; Hann: rho_1 = 0.444, rho_2 = 0.028). A
    likelihood that treats the bins as independent then under-states parameter errors by
    ``sqrt(vif)`` with ``vif = 1 + 2 sum_j rho_j`` (1 for no window and no overlap, 1.94 for
    Hann; at 50 % overlap over 5 segments 1.99 for Hann and 1.29 for no window).
    Dividing the Whittle log-likelihood by ``vif`` (a composite-likelihood correction)
    restores calibrated errors and likelihood-ratio tests.
    """
    return float(1.0 + 2.0 * window_rho(window, segment_length, overlap, segments).sum())


def window_rho(
    window: str, segment_length: int, overlap: float = 0.0, segments: int = 1
) -> np.ndarray:
    """Correlation of white-noise powers ``j = 1, 2, ...`` bins apart (lags ``1 .. L/2 - 1``)
    of the average of ``segments`` windowed periodograms whose segments start every
    ``L - floor(overlap L)`` samples (:func:`segment_layout`).

    Segments ``a`` and ``b`` that share samples (``d = |b - a| step < L`` apart) have DFT
    values at bins k and k+j with covariance ``|C_d(j)| = |sum_n w_n w_(n-d) exp(2 pi i j n /
    L)|`` (n over the shared samples), so for complex Gaussian values ``rho_j = sum_(a,b)
    |C_d(j)|^2 / sum_(a,b) |C_d(0)|^2``. One segment's (no overlap): ``|sum w^2 exp(-2 pi i
    j n / L)|^2 / (sum w^2)^2``, all 0 for no window, Hann 0.444, 0.028, then ~0. At 50 %
    overlap Hann gives 0.456, 0.037 and no window 0.116, 0, 0.013 at lags 1-3 for 5
    segments (20,000 simulated Welch averages of 200 samples, ``tests/test_significance.py``:
    0.456, 0.037 / 0.117, 0.000, 0.012).
    :func:`window_vif` is ``1 + 2 sum rho_j``; the fit's goodness-of-fit test needs the lags
    themselves (:func:`specfit.kernels.stats.pearson_vif`).
    """
    length = int(segment_length)
    w = _window(window, length)
    step = segment_step(length, overlap)
    shared = [m for m in range(1, int(segments)) if m * step < length]
    if not shared:  # one segment's formula as it always was (the sum below rounds otherwise)
        c = np.fft.fft(w * w)
        return np.abs(c[1 : length // 2]) ** 2 / np.abs(c[0]) ** 2
    acc = float(segments) * np.abs(np.fft.fft(w * w)) ** 2
    for m in shared:
        d = m * step
        v = np.zeros(length)
        v[d:] = w[d:] * w[: length - d]
        # (K - m) pairs m segments apart, each way round
        acc += 2.0 * (int(segments) - m) * np.abs(np.fft.fft(v)) ** 2
    return acc[1 : length // 2] / acc[0]


def segment_samples(segment_length: float | None, dt: float) -> int | None:
    """Welch segment length in samples from seconds (``spectra.segment_length``), or None."""
    if segment_length is None:
        return None
    n = int(round(segment_length / dt))
    if n < 3:  # raised to 4 before, without a word: 12 s at a 12 s cadence gave 48 s segments
        raise ValueError(
            f"segment_length of {segment_length:g} s is {n} samples at the {dt:g} s cadence; "
            f"a segment needs at least 3 (one frequency): use at least {3 * dt:g} s"
        )
    return n


def segment_step(length: int, overlap: float) -> int:
    """Samples between the starts of Welch segments of ``length`` samples overlapping by the
    fraction ``overlap``: ``L - floor(overlap L)`` (``L``: no sample shared)."""
    return int(length) - int(np.floor(overlap * int(length)))


def segment_layout(
    n: int, segments: int = 1, segment_length: int | None = None, overlap: float = 0.0
) -> tuple[int, int, int]:
    """Segment length, step and count for a series of ``n`` samples.

    Parameters
    ----------
    n
        Samples per series.
    segments
        Bartlett: number ``K`` of back-to-back segments of ``n // K`` samples (the remainder
        at the end is dropped). Ignored when ``segment_length`` is given.
    segment_length
        Welch: samples per segment; segments start every ``L - floor(overlap * L)`` samples
        and as many as fit are used.
    overlap
        Welch overlap fraction in ``[0, 1)``; must be 0 unless ``segment_length`` is given.

    Returns
    -------
    (L, step, K)
        Segment length, samples between segment starts, number of segments.
    """
    if not (0.0 <= overlap < 1.0):
        raise ValueError(f"spectra.overlap must be in [0, 1), got {overlap!r}")
    if segment_length is None:
        if overlap != 0.0:
            raise ValueError(
                "spectra.overlap > 0 needs spectra.segment_length (Welch averaging); "
                "`segments` always cuts back-to-back segments"
            )
        if int(segments) != segments or segments < 1:
            raise ValueError(f"spectra.segments must be a positive integer, got {segments!r}")
        k = int(segments)
        length = n // k
        if length < 3:
            raise ValueError(
                f"{n} samples cut into spectra.segments={k} leaves {length} per segment; "
                "at least 3 are needed for one frequency: use fewer segments"
            )
        return length, length, k
    if int(segment_length) != segment_length:
        raise ValueError(
            f"segment_length must be a whole number of samples, got {segment_length!r}"
        )
    length = int(segment_length)
    if length < 3:
        raise ValueError(f"segment_length must be at least 3 samples, got {length}")
    if length > n:
        raise ValueError(
            f"segment_length of {length} samples is longer than the series ({n} samples); "
            "shorten spectra.segment_length"
        )
    step = segment_step(length, overlap)
    k = 1 + (n - length) // step
    return length, step, k


def welch_dof(window: str, segment_length: int, step: int, segments: int) -> float:
    """Equivalent chi^2 degrees of freedom of a segment-averaged periodogram.

    Welch (1967), Percival & Walden (1993, eq. 292b) for white noise:
    ``nu = 2K / (1 + 2 sum_{m=1}^{K-1} (1 - m/K) rho(m))`` with
    ``rho(m) = (sum_t w_t w_{t+mS})^2 / (sum_t w_t^2)^2``, the squared correlation of the
    windows of segments ``m`` steps apart. Without overlap every ``rho`` is 0 and ``nu = 2K``.

    Parameters
    ----------
    window
        ``"none"`` or ``"hann"``.
    segment_length
        Samples per segment ``L``.
    step
        Samples between segment starts ``S``.
    segments
        Number of segments ``K``.

    Returns
    -------
    float
        The equivalent degrees of freedom ``nu``.
    """
    w = _window(window, segment_length)
    norm = np.dot(w, w) ** 2
    denom = 1.0
    for m in range(1, segments):
        lag = m * step
        if lag >= segment_length:
            break
        rho = np.dot(w[: segment_length - lag], w[lag:]) ** 2 / norm
        denom += 2.0 * (1.0 - m / segments) * rho
    return 2.0 * segments / denom


def periodogram(
    values: np.ndarray,
    dt: float,
    *,
    segments: int,
    segment_length: int | None = None,
    overlap: float,
    window: str,
    detrend: str,
    normalisation: str,
    fmin: float | None = None,
    fmax: float | None = None,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Segment-averaged one-sided power spectrum of every row.

    Parameters
    ----------
    values
        ``(npix, n)`` series sampled every ``dt`` seconds. A row with any NaN/inf gets NaN
        power (after resampling, NaN means a bad pixel).
    dt
        Cadence in seconds.
    segments
        Bartlett averaging: ``K`` back-to-back segments of ``L = n // K`` samples.
    segment_length
        Welch averaging: ``L`` samples per segment (overrides ``segments``).
    overlap
        Welch overlap fraction (0.5 typical); needs ``segment_length``.
    window
        ``"hann"`` (periodic Hann, as scipy's) or ``"none"``.
    detrend
        Per segment: ``"linear"`` (least-squares line removed), ``"mean"`` or ``"none"``.
    normalisation
        ``"density"``: one-sided PSD in units^2/Hz, ``2 dt |X_k|^2 / sum(w^2)``, equal to
        ``scipy.signal.welch(..., scaling="density")``; ``"variance"``: each segment's density
        divided by that segment's variance (mean square of the detrended, unwindowed segment)
        before averaging, units 1/Hz; ``"raw"``: ``|X_k|^2`` with ``X = rfft(w * detrended)``.
    fmin, fmax
        Keep only frequencies in ``[fmin, fmax]`` Hz.

    Returns
    -------
    freq : numpy.ndarray
        ``(nf,)`` float64, ``k / (L dt)`` for ``k = 1 .. ceil(L/2) - 1`` (DC and Nyquist
        excluded), restricted to ``[fmin, fmax]``.
    power : numpy.ndarray
        ``(npix, nf)`` float32.
    meta : dict
        ``segments`` K, ``segment_length`` L, ``step``, ``dof`` (equivalent chi^2 degrees of
        freedom of each power value: 2K without overlap), ``window``, ``detrend``,
        ``normalisation``, ``overlap``, ``dt``.
    """
    x = np.asarray(values)
    if x.ndim != 2:
        raise ValueError(f"values must be 2-D (npix, n), got shape {x.shape}")
    dt = float(dt)
    if not (np.isfinite(dt) and dt > 0):
        raise ValueError(f"dt must be a positive cadence in seconds, got {dt!r}")
    if window not in WINDOWS:
        raise ValueError(f"spectra.window must be one of {WINDOWS}, got {window!r}")
    if detrend not in DETRENDS:
        raise ValueError(f"spectra.detrend must be one of {DETRENDS}, got {detrend!r}")
    if normalisation not in NORMALISATIONS:
        raise ValueError(
            f"spectra.normalisation must be one of {NORMALISATIONS}, got {normalisation!r}"
        )
    npix, n = x.shape
    length, step, nseg = segment_layout(n, segments, segment_length, overlap)

    kmax = (length + 1) // 2 - 1  # ceil(L/2) - 1: the last bin below Nyquist
    freq = np.arange(1, kmax + 1, dtype=np.float64) / (length * dt)
    keep = np.ones(kmax, dtype=bool)
    if fmin is not None:
        keep &= freq >= fmin
    if fmax is not None:
        keep &= freq <= fmax
    if not keep.any():
        raise ValueError(
            f"no frequency of {freq[0]:.4g}..{freq[-1]:.4g} Hz lies in spectra.fmin={fmin!r}, "
            f"fmax={fmax!r}; widen the range"
        )
    k_lo = int(np.argmax(keep)) + 1
    # `keep` is contiguous, so the kept bins are rfft bins k_lo .. k_lo + nf - 1.
    freq = freq[keep]

    meta = {
        "segments": nseg,
        "segment_length": length,
        "step": step,
        "dof": float(welch_dof(window, length, step, nseg)),
        "window": window,
        "detrend": detrend,
        "normalisation": normalisation,
        "overlap": float(overlap),
        "dt": dt,
    }
    power = np.full((npix, freq.size), np.nan, dtype=np.float32)
    if npix == 0:
        return freq, power, meta

    good = np.isfinite(x).all(axis=1)
    xg = x[good] if not good.all() else x
    if xg.dtype not in (np.float32, np.float64):
        xg = xg.astype(np.float64)
    # float32 input is transformed in single precision (twice as fast, half the memory). The
    # detrend sums are float64 and the FFT sees only the fluctuation, so its rounding is below
    # the float32 quantisation of the input itself (eps * mean level); measured: error < 1e-3
    # of the local spectrum level where that level is 1e8 below the peak (tests).
    work = np.float32 if xg.dtype == np.float32 else np.float64
    w = _window(window, length)
    tc = np.arange(length, dtype=np.float64) - 0.5 * (length - 1)
    mode = DETRENDS.index(detrend)

    acc = np.zeros((xg.shape[0], freq.size), dtype=np.float64)
    # One segment at a time keeps the temporaries at (npix, L) whatever K is.
    buf = np.empty((xg.shape[0], length), dtype=work)
    var = np.empty(xg.shape[0], dtype=np.float64)
    for s in range(nseg):
        _detrend_window(xg, s * step, w, tc, mode, buf, var)
        spec = scipy.fft.rfft(buf, axis=1, overwrite_x=True)
        _accumulate(spec, k_lo, var, normalisation == "variance", acc)
    acc *= 1.0 / nseg
    if normalisation in ("density", "variance"):
        acc *= 2.0 * dt / np.dot(w, w)
    with np.errstate(over="ignore"):  # beyond float32: inf, then status nonfinite_input
        power[good] = acc
    return freq, power, meta


@njit(cache=True, nogil=True)
def _box_stats(p, valid, r, mean, spread):
    """Mean and spread (ddof=1) over the finite pixels of each (2r+1)^2 box, per frequency.

    Each output sums its own box directly, neighbours in a fixed order, so a pixel's value
    does not depend on where the block it is computed in starts (running sums or a centring
    on the block's mean would make it depend on the tiling in the last bits). Two passes:
    the mean, then squared deviations from it (no cancellation for large power).
    """
    nf, ny, nx = p.shape
    for k in range(nf):
        for y in range(ny):
            y0, y1 = max(y - r, 0), min(y + r + 1, ny)
            for x in range(nx):
                x0, x1 = max(x - r, 0), min(x + r + 1, nx)
                n = 0
                s1 = 0.0
                for yy in range(y0, y1):
                    for xx in range(x0, x1):
                        if valid[yy, xx]:
                            s1 += p[k, yy, xx]
                            n += 1
                if n == 0:
                    mean[k, y, x] = np.nan
                    spread[k, y, x] = np.nan
                    continue
                m = s1 / n
                s2 = 0.0
                for yy in range(y0, y1):
                    for xx in range(x0, x1):
                        if valid[yy, xx]:
                            d = p[k, yy, xx] - m
                            s2 += d * d
                mean[k, y, x] = m
                spread[k, y, x] = math.sqrt(s2 / (n - 1)) if n > 1 else np.nan


@njit(cache=True, nogil=True)
def _box_count(valid, r):
    ny, nx = valid.shape
    count = np.zeros((ny, nx), dtype=np.int32)
    for y in range(ny):
        for x in range(nx):
            n = 0
            for yy in range(max(y - r, 0), min(y + r + 1, ny)):
                for xx in range(max(x - r, 0), min(x + r + 1, nx)):
                    if valid[yy, xx]:
                        n += 1
            count[y, x] = n
    return count


def box_members(power: np.ndarray) -> np.ndarray:
    """Which pixels' ``(nf, ny, nx)`` spectra enter box averages: ``(ny, nx)`` bool.

    Left out: a spectrum with any NaN/inf (a bad pixel), and one that is the same at every
    frequency, which a detrended constant series (a dead or saturated pixel) gives as exact
    zeros; alone (box 1) it is not fitted (status ``constant_input``), and in a box its zeros
    pulled the neighbours' means down (a third lower with two dead pixels of six).
    """
    p = np.asarray(power)
    members = np.isfinite(p).all(axis=0)
    if p.shape[0] > 1:
        members &= ~(p == p[:1]).all(axis=0)
    return members


def box_average(power: np.ndarray, box: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Average each pixel's spectrum with its neighbours in a ``box`` x ``box`` square.

    The box is centred on each pixel and truncated at the array edge. A pixel whose spectrum
    has any NaN/inf, or is constant (:func:`box_members`), is left out of every box, including
    its own; its output is the average of its neighbours, and ``count`` says how many there
    were.

    Parameters
    ----------
    power
        ``(nf, ny, nx)`` spectra.
    box
        Odd box width in pixels (config ``spectra.box``); 1 returns the input unchanged.

    Returns
    -------
    mean : numpy.ndarray
        ``(nf, ny, nx)`` float32 mean over the finite pixels in the box (NaN if none).
    spread : numpy.ndarray
        ``(nf, ny, nx)`` float32 standard deviation over those pixels (``ddof=1``; NaN where
        fewer than 2). The fit uses it as the per-frequency sigma of the box mean's pixels;
        the standard error of the mean is ``spread / sqrt(count)``.
    count : numpy.ndarray
        ``(ny, nx)`` int32 number of finite pixels in the box.
    """
    p = np.asarray(power)
    if p.ndim != 3:
        raise ValueError(f"power must be 3-D (nf, ny, nx), got shape {p.shape}")
    if int(box) != box or box < 1 or box % 2 == 0:
        raise ValueError(f"spectra.box must be an odd positive integer (1, 3, 5, ...), got {box!r}")
    r = int(box) // 2
    if r == 0:
        # Exactly the input (no rounding through the centring below); a constant spectrum
        # stays (the fit says constant_input).
        valid = np.isfinite(p).all(axis=0)
        mean = np.where(valid, p, np.nan).astype(np.float32)
        return mean, np.full(p.shape, np.nan, dtype=np.float32), valid.astype(np.int32)
    valid = box_members(p)
    count = _box_count(valid, r)
    mean = np.empty(p.shape, dtype=np.float32)
    spread = np.empty(p.shape, dtype=np.float32)
    _box_stats(np.ascontiguousarray(p), valid, r, mean, spread)  # float64 sums either way
    return mean, spread, count


@njit(cache=True, nogil=True)
def _box_neff(p, valid, r, out):  # pragma: no cover - compiled
    """out[y, x] = variance of a box member's noise / variance of the box mean's noise.

    The noise is isolated by second differences across frequency, ``p[k-1] - 2 p[k] + p[k+1]``,
    which cancel a spectrum that is locally linear in f, so no model of the spectrum is
    needed. Each bin is scaled by the box-mean level at bins k-3, k-2, k+2, k+3: outside the
    difference's own bins, so the scale's noise does not correlate with it (a scale from bins
    k-1..k+1 biases the ratio up by ~15 % at N_eff ~ 2). The scale is common to the members and
    the mean, so it only weights the bins. Sums run over the box in a fixed order, so a pixel's
    value depends only on its own box, not on the block it is computed in.
    """
    nf, ny, nx = p.shape
    m = np.empty(nf)
    for y in range(ny):
        y0, y1 = max(y - r, 0), min(y + r + 1, ny)
        for x in range(nx):
            x0, x1 = max(x - r, 0), min(x + r + 1, nx)
            n = 0
            for yy in range(y0, y1):
                for xx in range(x0, x1):
                    if valid[yy, xx]:
                        n += 1
            if n < 2 or nf < 3:
                out[y, x] = max(n, 1)
                continue
            for k in range(nf):
                s = 0.0
                for yy in range(y0, y1):
                    for xx in range(x0, x1):
                        if valid[yy, xx]:
                            s += p[k, yy, xx]
                m[k] = s / n
            num = 0.0
            den = 0.0
            for k in range(1, nf - 1):
                c = (
                    m[max(k - 3, 0)]
                    + m[max(k - 2, 0)]
                    + m[min(k + 2, nf - 1)]
                    + m[min(k + 3, nf - 1)]
                )
                if not c > 0:
                    continue
                s1 = 0.0
                s2 = 0.0
                for yy in range(y0, y1):
                    for xx in range(x0, x1):
                        if valid[yy, xx]:
                            d = p[k - 1, yy, xx] - 2.0 * p[k, yy, xx] + p[k + 1, yy, xx]
                            s1 += d
                            s2 += d * d
                w = 1.0 / (c * c)
                num += w * s2 / n
                den += w * (s1 / n) ** 2
            # independent members: num / den ~ n; identical members: 1
            neff = num / den if den > 0 else float(n)
            out[y, x] = min(max(neff, 1.0), float(n))


def box_neff(power: np.ndarray, box: int) -> np.ndarray:
    """Effective number of independent spectra in each pixel's box, estimated from the data.

    Neighbouring pixels of a real image are correlated (point-spread function, features larger
    than a pixel), so the mean of a box's ``N`` periodograms varies more than a mean of ``N``
    independent ones: by ``1 + rho (N - 1)`` for a mean pairwise correlation ``rho`` of the
    periodogram values. This returns ``N_eff = var(member) / var(box mean)`` of the periodogram
    noise, pooled over all frequencies (see :func:`_box_neff`): ``N`` for independent members,
    1 for identical ones, so the box mean's chi^2 dof are ``N_eff`` x one spectrum's. Measured
    on spatially correlated red noise: median within ~3 % of the truth, scatter ~11-15 % for
    150-300 frequencies, ~30 % for 35 (``docs/spectra.md``).

    Parameters
    ----------
    power
        ``(nf, ny, nx)`` spectra of single pixels (before box averaging). A pixel with any
        NaN/inf, or a constant spectrum, is left out of every box (:func:`box_members`).
    box
        Odd box width in pixels; the box is centred on each pixel and truncated at the edge.

    Returns
    -------
    numpy.ndarray
        ``(ny, nx)`` float64 in ``[1, count]`` (count: the box's finite spectra; 1 where it
        holds fewer than 2 or there are fewer than 3 frequencies).
    """
    p = np.asarray(power, dtype=np.float64)  # float32 and float64 input give the same value
    if p.ndim != 3:
        raise ValueError(f"power must be 3-D (nf, ny, nx), got shape {p.shape}")
    if int(box) != box or box < 1 or box % 2 == 0:
        raise ValueError(f"spectra.box must be an odd positive integer (1, 3, 5, ...), got {box!r}")
    valid = box_members(p)
    out = np.empty(p.shape[1:], dtype=np.float64)
    _box_neff(np.ascontiguousarray(p), valid, int(box) // 2, out)
    return out
