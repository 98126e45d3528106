"""Uniform-cadence resampling of ``(npix, nt)`` time series.

Frames of a real series are not evenly spaced (missed frames, irregular instrument
cadences), but the periodogram needs one cadence. These kernels build the uniform grid,
report the gaps it bridges, and linearly interpolate every pixel over its own finite samples.
Pure numpy/numba: no dask, no xarray, no I/O.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = [
    "check_times",
    "uniform_times",
    "choose_cadence",
    "interpolation_nyquist_gain",
    "find_gaps",
    "interp_linear",
    "longest_gaps",
    "frame_jumps",
]


def check_times(times: np.ndarray, name: str = "times") -> np.ndarray:
    """Return ``times`` as a 1-D float64 array, or raise a ValueError saying what is wrong."""
    t = np.asarray(times, dtype=np.float64)
    if t.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one time per frame), got shape {t.shape}")
    if t.size < 2:
        raise ValueError(f"{name} needs at least 2 frames to resample, got {t.size}")
    if not np.all(np.isfinite(t)):
        bad = np.flatnonzero(~np.isfinite(t))[:5].tolist()
        raise ValueError(f"{name} has non-finite values at frames {bad}; fix or drop those frames")
    d = np.diff(t)
    if np.any(d <= 0):
        i = int(np.flatnonzero(d <= 0)[0])
        raise ValueError(
            f"{name} must be strictly increasing: frame {i + 1} (t={float(t[i + 1]):g} s) is not "
            f"after frame {i} (t={float(t[i]):g} s); sort the frames and drop duplicates"
        )
    return t


def uniform_times(times: np.ndarray, cadence: float | None = None) -> np.ndarray:
    """The uniform time grid that covers a series without extrapolating.

    Parameters
    ----------
    times
        ``(nt,)`` frame times in seconds, strictly increasing.
    cadence
        Grid spacing in seconds (config ``resample.cadence``); None uses
        :func:`choose_cadence`.

    Returns
    -------
    numpy.ndarray
        ``t0 + k * cadence`` for ``k = 0 .. floor((t_end - t0) / cadence)``, float64. The last
        point never lies after the last frame.
    """
    t = check_times(times)
    if cadence is None:
        cadence = choose_cadence(t)[0]
    cadence = float(cadence)
    if not (np.isfinite(cadence) and cadence > 0):
        raise ValueError(f"resample.cadence must be a positive number of seconds, got {cadence!r}")
    span = t[-1] - t[0]
    # The relative slack absorbs rounding in span/cadence (e.g. 596 frames at 24 s whose
    # span is 14303.999999 s), so an exact multiple still gets its last grid point.
    nk = int(np.floor(span / cadence * (1.0 + 1e-12) + 1e-9)) + 1
    grid = t[0] + cadence * np.arange(nk, dtype=np.float64)
    # That slack may push the last point a hair past t_end; clamp so it is never extrapolated.
    np.minimum(grid, t[-1], out=grid)
    return grid


def interpolation_nyquist_gain(times: np.ndarray, new_times: np.ndarray) -> float:
    """Fraction of white-noise power that linear interpolation keeps at the Nyquist frequency.

    A grid point a fraction ``w`` of the way between two frames is ``(1-w) a + w b``; at the
    Nyquist frequency that filter's power gain is ``(1 - 2w)^2``. Averaged over the grid it
    says how much of the high-frequency tail the resampling removes (1 = none: the grid sits on
    the frames). A grid whose cadence drifts against the frames (e.g. the median spacing of
    jittered times) can keep only ~1/3.

    Grid points inside a gap (frames more than 1.5 cadences apart) are left out: across a
    gap every weight occurs, which also averages to 1/3, and the gap is reported on its own.
    Returns 1 when every point is in a gap.
    """
    i = np.clip(np.searchsorted(times, new_times, side="right") - 1, 0, times.size - 2)
    span = times[i + 1] - times[i]
    w = (new_times - times[i]) / span
    w = np.clip(w, 0.0, 1.0)
    dt = (new_times[-1] - new_times[0]) / max(1, new_times.size - 1)
    on_frames = span <= 1.5 * dt
    if not np.any(on_frames):
        return 1.0
    return float(np.mean((1.0 - 2.0 * w[on_frames]) ** 2))


def choose_cadence(times: np.ndarray) -> tuple[float, float]:
    """The grid spacing for frames at ``times`` when none is configured, and its Nyquist gain.

    Candidates: the most common spacing (in bins of a tenth of the median's leading decimal
    below a median of 1 s, then in 0.1 s bins; a median can land on a long step when the
    observing pattern alternates), the median spacing, and the mean of the regular steps
    (jittered cadences, e.g. IRIS 2796 at 18.53-18.91 s, sit best on their mean), each to four
    significant digits (readable at any cadence, ms cameras included). The one whose grid stays
    closest to the frames (largest :func:`interpolation_nyquist_gain`, to 3 decimals; ties: the
    earlier, rounder one) wins: a grid that drifts against the frames smooths the high
    frequencies (a median of 12.01 s on frames jittered about 12 s keeps ~half the Nyquist
    power, and its roll-off is then fitted as a broad "bump").

    Returns
    -------
    (cadence, gain)
        Seconds, and the fraction of Nyquist white-noise power its grid keeps.
    """
    t = check_times(times)
    d = np.diff(t)
    candidates = []
    for digits in sorted({1, max(1, 1 - int(np.floor(np.log10(np.median(d)))))}, reverse=True):
        # 0.1 s bins put 0.05 s steps at 0.1 s, whose grid takes every other frame (Nyquist
        # gain 1, a tie): below a median of 1 s the finer bins' mode comes first; the 0.1 s
        # one stays (jittered ~1 s steps: their finer mode is noise, 1.02 s or 0.95 s)
        values, counts = np.unique(np.round(d, digits), return_counts=True)
        candidates.append(float(values[np.argmax(counts)]))
    regular = d[d < 1.5 * np.median(d)]
    candidates.append(float(np.median(d)))
    if regular.size:
        candidates.append(float(regular.mean()))
    candidates = [float(f"{c:.4g}") for c in candidates if c > 0]
    gains = [interpolation_nyquist_gain(t, uniform_times(t, c)) for c in candidates]
    best = int(np.argmax(np.round(gains, 3)))
    return candidates[best], gains[best]


def find_gaps(times: np.ndarray, cadence: float, max_gap: float) -> list[tuple[float, float]]:
    """Spacings between consecutive frames longer than ``max_gap`` cadences.

    Parameters
    ----------
    times
        ``(nt,)`` frame times in seconds, strictly increasing.
    cadence
        The uniform cadence in seconds.
    max_gap
        Threshold in cadences (config ``resample.max_gap``); a spacing ``> max_gap * cadence``
        is a gap.

    Returns
    -------
    list of (float, float)
        ``(start, end)`` times of the frames on either side of each gap, in time order.
    """
    t = check_times(times)
    if not (np.isfinite(cadence) and cadence > 0):
        raise ValueError(f"cadence must be a positive number of seconds, got {cadence!r}")
    if not (np.isfinite(max_gap) and max_gap > 0):
        raise ValueError(f"resample.max_gap must be a positive number of cadences, got {max_gap!r}")
    d = np.diff(t)
    idx = np.flatnonzero(d > max_gap * cadence)
    return [(float(t[i]), float(t[i + 1])) for i in idx]


@njit(cache=True, nogil=True)
def _interp_rows(t, v, tn, idx, w, inside, out):  # pragma: no cover - compiled
    npix, nt = v.shape
    m = tn.size
    # Per-row compacted finite samples (contiguous, so the walk below streams through memory).
    tt = np.empty(nt, dtype=np.float64)
    vv = np.empty(nt, dtype=np.float64)
    nan = np.float32(np.nan)
    for p in range(npix):
        row = v[p]
        nok = 0
        for j in range(nt):
            if np.isfinite(row[j]):
                tt[nok] = t[j]
                vv[nok] = row[j]
                nok += 1
        if nok == nt:
            # Fast path: a complete row reuses the shared indices and weights.
            for k in range(m):
                if inside[k]:
                    i = idx[k]
                    a = vv[i]
                    out[p, k] = a + w[k] * (vv[i + 1] - a)
                else:
                    out[p, k] = nan
        elif nok < 2:
            for k in range(m):
                out[p, k] = nan
        else:
            lo = tt[0]
            hi = tt[nok - 1]
            q = 0
            # new_times is sorted, so one forward walk over the finite samples suffices.
            for k in range(m):
                x = tn[k]
                if not (x >= lo and x <= hi):
                    out[p, k] = nan
                    continue
                while q < nok - 2 and tt[q + 1] <= x:
                    q += 1
                t0 = tt[q]
                a = vv[q]
                if x == t0:
                    out[p, k] = a
                else:
                    out[p, k] = a + (x - t0) / (tt[q + 1] - t0) * (vv[q + 1] - a)
    return out


def interp_linear(times: np.ndarray, values: np.ndarray, new_times: np.ndarray) -> np.ndarray:
    """Linear interpolation of every row over its own finite samples.

    Row ``p`` of the result equals ``np.interp(new_times, times[ok], values[p, ok])`` with
    ``ok = np.isfinite(values[p])``, except that points outside ``[times[ok][0],
    times[ok][-1]]`` are NaN (no extrapolation) and rows with fewer than 2 finite samples are
    all NaN.

    Parameters
    ----------
    times
        ``(nt,)`` frame times in seconds, strictly increasing.
    values
        ``(npix, nt)`` float32/float64 samples, one row per pixel; NaN/inf mark missing samples.
    new_times
        ``(m,)`` times in seconds to interpolate at (any order; NaN gives NaN).

    Returns
    -------
    numpy.ndarray
        ``(npix, m)`` float32.
    """
    t = check_times(times)
    v = np.asarray(values)
    if v.ndim != 2:
        raise ValueError(f"values must be 2-D (npix, nt), got shape {v.shape}")
    if v.shape[1] != t.size:
        raise ValueError(
            f"values has {v.shape[1]} samples per row but times has {t.size} frames; "
            "they must describe the same frames"
        )
    if v.dtype not in (np.float32, np.float64):
        v = v.astype(np.float64)
    v = np.ascontiguousarray(v)
    tn = np.asarray(new_times, dtype=np.float64)
    if tn.ndim != 1:
        raise ValueError(f"new_times must be 1-D, got shape {tn.shape}")

    # The row walk needs sorted query times; sort once and undo at the end if needed.
    order = None
    if tn.size > 1 and not np.all(tn[1:] >= tn[:-1]):
        order = np.argsort(tn, kind="stable")
        tn = tn[order]
    tn = np.ascontiguousarray(tn)

    # Shared indices/weights for rows without missing samples.
    inside = (tn >= t[0]) & (tn <= t[-1])
    idx = np.clip(np.searchsorted(t, tn, side="right") - 1, 0, t.size - 2).astype(np.int64)
    with np.errstate(invalid="ignore"):
        w = (tn - t[idx]) / (t[idx + 1] - t[idx])

    out = np.empty((v.shape[0], tn.size), dtype=np.float32)
    _interp_rows(t, v, tn, idx, w, inside, out)
    if order is not None:
        unsorted = np.empty_like(out)
        unsorted[:, order] = out
        out = unsorted
    return out


@njit(cache=True, nogil=True)
def _longest_gaps(t, v, last, out):  # pragma: no cover - compiled
    nt, npix = v.shape
    for p in range(npix):
        last[p] = np.nan
        out[p] = np.nan
    # time outside, pixels inside: the frames are read in memory order
    for j in range(nt):
        tj = t[j]
        row = v[j]
        for p in range(npix):
            if np.isfinite(row[p]):
                lp = last[p]
                if lp == lp:  # not NaN: a previous finite sample exists
                    d = tj - lp
                    if not d <= out[p]:  # also replaces the initial NaN
                        out[p] = d
                last[p] = tj
    return out


def longest_gaps(times: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The longest stretch of each pixel's series that :func:`interp_linear` bridges.

    Per pixel, the longest time between two consecutive finite samples: the frame spacing
    (at least one cadence, or a gap of the whole series) where the pixel is complete, more
    where the pixel's own samples are missing (NaN) over a stretch. Interpolation makes
    such a stretch a straight line, which has no power at high frequencies.

    Parameters
    ----------
    times
        ``(nt,)`` frame times in seconds, strictly increasing.
    values
        ``(nt, ...)`` samples, time first (a tile's frames ``(nt, ny, nx)``); NaN/inf mark
        missing samples.

    Returns
    -------
    numpy.ndarray
        ``values.shape[1:]`` float32 seconds; NaN where a pixel has fewer than 2 finite
        samples.
    """
    t = check_times(times)
    v = np.asarray(values)
    if v.ndim < 1 or v.shape[0] != t.size:
        raise ValueError(
            f"values has {v.shape[0] if v.ndim else 0} frames but times has {t.size}; "
            "they must describe the same frames"
        )
    if v.dtype not in (np.float32, np.float64):
        v = v.astype(np.float64)
    rows = np.ascontiguousarray(v.reshape(t.size, -1))
    npix = rows.shape[1]
    out = np.empty(npix, dtype=np.float64)
    _longest_gaps(t, rows, np.empty(npix, dtype=np.float64), out)
    return out.astype(np.float32).reshape(v.shape[1:])


@njit(cache=True, nogil=True)
def _frame_jumps(v, own, k, finite, jumps):  # pragma: no cover - compiled
    npix, nt = v.shape
    idx = np.empty(nt, dtype=np.int64)
    r = np.empty(nt, dtype=np.float64)
    a = np.empty(nt, dtype=np.float64)
    for p in range(npix):
        if not own[p]:
            continue
        row = v[p]
        n = 0
        for j in range(nt):
            if np.isfinite(row[j]):
                idx[n] = j
                n += 1
                finite[j] += 1
        if n < 5:
            continue
        # each sample against the mean of its neighbours in the pixel's own series
        for q in range(n):
            x = np.float64(row[idx[q]])
            if q == 0:
                d = x - row[idx[1]]
            elif q == n - 1:
                d = x - row[idx[n - 2]]
            else:
                d = x - 0.5 * (np.float64(row[idx[q - 1]]) + np.float64(row[idx[q + 1]]))
            r[q] = abs(d)
        # the noise from every 4th residual (>= 16 of them): a quarter of the sorting
        step = max(1, min(4, n // 16))
        m = 0
        for q in range(0, n, step):
            a[m] = r[q]
            m += 1
        sigma = 1.4826 * np.median(a[:m])
        if not sigma > 0.0:
            continue
        lim = k * sigma
        for q in range(n):
            # a jump at one sample also moves its neighbours' residuals (by half): count the
            # sample whose residual is the largest of the three
            if r[q] > lim and (q == 0 or r[q] >= r[q - 1]) and (q == n - 1 or r[q] >= r[q + 1]):
                jumps[idx[q]] += 1
    return finite, jumps


def frame_jumps(
    rows: np.ndarray, own: np.ndarray | None = None, k: float = 10.0
) -> tuple[np.ndarray, np.ndarray]:
    """Per frame: how many pixels are finite, and how many jump away from both neighbours.

    A pixel's sample jumps when it differs from the mean of its neighbouring samples (in the
    pixel's own finite series) by more than ``k`` times the pixel's robust noise of that
    difference (1.4826 x its median absolute value) and by more than its neighbours do. In a
    sound series that is a cosmic ray or a sudden event in a few pixels; a frame in which a
    large share of the pixels jump is damaged (garbled bytes, a part filled with zeros) or
    holds a field-wide event.

    Parameters
    ----------
    rows
        ``(npix, nt)`` samples, one row per pixel (:func:`specfit.kernels.layout.pixel_rows`);
        NaN/inf mark missing samples.
    own
        ``(npix,)`` bool: the pixels to count (a tile's own, not its halo); default all.
    k
        The threshold in robust standard deviations (10: never reached by Gaussian or
        Poisson noise).

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        ``(nt,)`` int64 counts of finite pixels and of jumping pixels per frame (pixels with
        fewer than 5 finite samples are counted as finite only).
    """
    v = np.asarray(rows)
    if v.ndim != 2:
        raise ValueError(f"rows must be 2-D (npix, nt), got shape {v.shape}")
    if v.dtype not in (np.float32, np.float64):
        v = v.astype(np.float64)
    v = np.ascontiguousarray(v)
    npix, nt = v.shape
    own = np.ones(npix, dtype=np.bool_) if own is None else np.asarray(own, dtype=np.bool_)
    finite = np.zeros(nt, dtype=np.int64)
    jumps = np.zeros(nt, dtype=np.int64)
    _frame_jumps(v, own.reshape(-1), float(k), finite, jumps)
    return finite, jumps
