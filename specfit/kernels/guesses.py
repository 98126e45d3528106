"""Data-driven starting values and null-model truths for the shipped line shapes.

Pure numpy/numba on (npix, nf) blocks: the power-law + tail start (a log-log line where the
power law rules, a tail from the top bins), bump seeds from the peaks of the residual ratio
against a base model, and the parameter truths the LRT calibration simulates under
``powerlaw_tail``. :mod:`specfit.models` attaches them to the models that use them.
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = [
    "guess_powerlaw_tail",
    "powerlaw_tail_starts",
    "coarse_groups",
    "group_means",
    "bump_seeds",
    "bump_width_seed",
    "powerlaw_tail_null",
    "guess_knee_tail",
    "guess_broken_tail",
    "guess_kappa_tail",
    "knee_tail_null",
    "broken_tail_null",
    "kappa_tail_null",
]


def _njit_cached(fn):
    return numba.njit(cache=True, nogil=True)(fn)


def _log_bias(dof: float | np.ndarray) -> np.ndarray:
    """E[ln(chi2_nu / nu)] = psi(nu/2) - ln(nu/2): the mean offset of log periodogram values."""
    from scipy.special import digamma

    k = np.asarray(dof, dtype=np.float64) / 2.0
    return digamma(k) - np.log(k)


def guess_powerlaw_tail(
    f: np.ndarray, power: np.ndarray, dof: float | np.ndarray = 2.0, base=None
) -> np.ndarray:
    """M1 start: tail from the top 15 % of bins, then a log-log line where the power law rules.

    The tail is the mean power of the highest frequencies. The straight line in log-log
    space is fitted to ln(power) over the bins whose 5-bin smoothed power exceeds three times
    that tail (the power-law range; at least the lowest 5 % of bins), with the mean offset of
    log chi-square values for ``dof`` removed, then refitted three times after removing the tail's
    share ln(1 + C / A f^-n). Finally the tail is lowered by what the power law still
    contributes at the top.
    """
    power = np.atleast_2d(np.asarray(power, np.float64))
    lnf = np.log(np.asarray(f, np.float64))
    bias = np.broadcast_to(_log_bias(np.asarray(dof, np.float64)), (power.shape[0],))
    out = np.empty((power.shape[0], 3))
    _guess_m1_rows(lnf, np.ascontiguousarray(power), np.ascontiguousarray(bias, np.float64), out)
    return out


@_njit_cached
def _guess_m1_rows(lnf, power, bias, out):
    """Per-pixel body of :func:`guess_powerlaw_tail` (numba: no (npix, nf) temporaries)."""
    npix, nf = power.shape
    nhi = max(int(round(0.15 * nf)), 2)
    nmin = min(max(int(0.05 * nf), 3), nf)
    xhi = 0.0
    for i in range(nf - nhi, nf):
        xhi += lnf[i]
    xhi /= nhi
    for r in range(npix):
        y = power[r]
        high = 0.0
        for i in range(nf - nhi, nf):
            high += y[i]
        high /= nhi
        # a prefix of bins, not every bin above the threshold: picking single bins by their
        # noisy values would favour upward fluctuations near the crossover and flatten the
        # slope; the 5-bin running mean tames the chi-square scatter for the threshold
        nsel = nmin
        for i in range(nf):
            acc = 0.0
            for j in range(i - 2, i + 3):
                acc += y[min(max(j, 0), nf - 1)]
            if acc / 5.0 > 3.0 * high:
                nsel = max(nsel, i + 1)
            else:
                break
        floor = 1e-12 * max(high, 1e-300)  # zero bins of a raw periodogram
        xm = 0.0
        for i in range(nsel):
            xm += lnf[i]
        xm /= nsel
        sxx = 0.0
        for i in range(nsel):
            sxx += (lnf[i] - xm) ** 2
        sxx = max(sxx, 1e-300)
        index = 0.0
        lnA = 0.0
        ly = np.empty(nsel)
        for i in range(nsel):
            ly[i] = np.log(max(y[i], floor)) - bias[r]
        for it in range(4):
            # later passes: remove the tail's share ln(1 + C / A f^-n) in the selected bins
            zm = 0.0
            sxy = 0.0
            for i in range(nsel):
                z = ly[i]
                if it > 0:
                    pl = np.exp(min(max(lnA - index * lnf[i], -700.0), 700.0))
                    z -= np.log1p(high / max(pl, 1e-300))
                zm += z
                sxy += (lnf[i] - xm) * z
            zm /= nsel
            index = -sxy / sxx
            lnA = zm + index * xm
        pl_high = np.exp(min(max(lnA - index * xhi, -700.0), 700.0))
        tail = max(high - pl_high, 0.1 * high)
        if index < _RISING_INDEX:
            # The line says the spectrum does not fall: on a short or noisy prefix (3-6
            # chi-square values, slope error ~1) that is noise as often as not, and a start
            # with a rising power law sits in the basin of the degenerate fit (ln A -> -inf,
            # index on its lower bound: a constant), where the amplitude's gradient vanishes
            # and no solver step leads back. Choose the index by the Whittle profile instead.
            lnA, index, tail = _profile_index(lnf, y, nsel, high, lnA, index, tail)
        out[r, 0] = np.exp(min(max(lnA, -700.0), 700.0))
        out[r, 1] = index
        out[r, 2] = tail


def powerlaw_tail_starts(
    f: np.ndarray, power: np.ndarray, dof: float | np.ndarray = 2.0, base=None, nstart: int = 1
) -> np.ndarray:
    """M1 candidate starts (npix, max(nstart, 3), 3): the data-driven start
    (:func:`guess_powerlaw_tail`), then the best point of a Whittle profile over the index in
    each of the objective's two basins (:func:`_basin_starts`), then (nstart > 3) +/- 25 %
    spreads of the first.

    On short noisy spectra the M1 objective has two basins: a power law over the lowest
    bins (any index) and a steep one (index >= :data:`_STEEP_INDEX`, up to the bound) that
    only carries the first bin or two, with the tail carrying the rest. The data-driven
    start lies in one of them and the solver does not cross from one to the other; a start
    in each, from a profile over the index with the amplitude and tail solved, makes the
    fit reach the better one. With ``nstart`` 3 (the default) these three are the starts;
    with fewer the solver runs the best-ranked ``nstart`` of them.
    """
    power = np.atleast_2d(np.asarray(power, np.float64))
    first = guess_powerlaw_tail(f, power, dof)
    f = np.asarray(f, np.float64)
    lnf, y, count = np.log(f), np.ascontiguousarray(power), np.ones(f.size)
    # Where the fit itself runs coarse-to-fine (long spectra), the profile that only picks a
    # start in each basin runs on bins grouped over 0.1 in ln f, the group's count as
    # weight: the lowest bins, where the steep basin lives, stay single, and the profile's
    # cost stops growing with the number of bins. A band cut narrow (fmin/fmax: ~2 in ln f)
    # has too few such groups: there the profile takes the bins themselves.
    groups = coarse_groups(f, max_span=0.1) if coarse_groups(f) is not None else None
    if groups is not None:
        fc, y = group_means(f, power, groups)
        lnf, count = np.log(fc), groups[1]
    basins = np.empty((power.shape[0], 2, 3))
    _basin_starts(lnf, y, count, basins)
    out = [first, basins[:, 0], basins[:, 1]]
    for s in range(1, nstart - 2):
        # deterministic spread around the data-driven start: alternate +/- 25 % steps
        sign = np.where(np.arange(3) % 2 == s % 2, 1.0, -1.0)
        out.append(first * (1.0 + 0.25 * ((s + 1) // 2) * sign))
    return np.stack(out, axis=1)


def coarse_groups(f: np.ndarray, max_span: float = 0.03, max_size: int = 1 << 30):
    """Consecutive-bin groups spanning at most ``max_span`` in ln f (at most ``max_size``
    bins): (start indices, counts), or None when grouping would not save much.

    The span, not a bin count, bounds the error of a group's mean against its bins (the
    model varies with ln f), so the number of groups grows only with ln(number of bins);
    0.03 keeps a narrowest bump (width 0.05 in ln f) over two groups or more."""
    lnf = np.log(f)
    starts, counts = [], []
    i = 0
    while i < lnf.size:
        j = i + 1
        while j < lnf.size and j - i < max_size and lnf[j] - lnf[i] <= max_span:
            j += 1
        starts.append(i)
        counts.append(j - i)
        i = j
    out = None
    if len(starts) * 2 <= lnf.size and len(starts) >= 20:
        out = (np.array(starts), np.array(counts, dtype=np.float64))
    return out


def group_means(f: np.ndarray, y: np.ndarray, groups) -> tuple[np.ndarray, np.ndarray]:
    """The groups' mean frequencies (ngroups,) and mean powers (npix, ngroups), C-contiguous,
    for ``groups`` = (start indices, counts) of :func:`coarse_groups`."""
    start, count = groups
    fc = np.add.reduceat(f, start) / count
    return fc, np.ascontiguousarray(np.add.reduceat(y, start, axis=1) / count)


# The M1 objective's basins: index below / at or above this (see powerlaw_tail_starts).
_STEEP_INDEX = 4.0
# Index values of the basins' profile (the model's index bounds are -1, 10).
_BASIN_INDEX = np.array(
    [-1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0, 8.0, 10.0]
)


@_njit_cached
def _basin_starts(lnf, power, count, out):
    """Per pixel, the best point (A, index, C) of the Whittle profile over
    :data:`_BASIN_INDEX` with index < :data:`_STEEP_INDEX` (``out[:, 0]``) and with index >=
    it (``out[:, 1]``); A and C solved at each index as in :func:`_profile_index` (moment
    match over the lowest 5 % of bins, at least 3, then Fisher scoring). ``count``: each
    bin's weight (a group's number of bins; ones for single bins)."""
    npix, nf = power.shape
    nhi = max(int(round(0.15 * nf)), 2)
    nsel = min(max(int(0.05 * nf), 3), nf)
    ng = _BASIN_INDEX.shape[0]
    # (f / f0)^-n at every grid index: the same for every pixel, so made once
    table = np.empty((ng, nf))
    for k in range(ng):
        _fill_u(lnf, _BASIN_INDEX[k], table[k])
    for r in range(npix):
        y = power[r]
        high = 0.0
        whigh = 0.0
        for i in range(nf - nhi, nf):
            high += count[i] * y[i]
            whigh += count[i]
        high /= whigh
        best_F = np.full(2, math.inf)
        seen = np.zeros(2, dtype=np.bool_)
        for k in range(ng):
            n = _BASIN_INDEX[k]
            lnA, c = _solve_amplitudes(lnf, y, count, nsel, high, n, table[k])
            # the objective from the same table (m = a u + c equals A f^-n + C to rounding;
            # F only ranks the grid points)
            F = _whittle_u(y, count, math.exp(lnA - n * lnf[0]), c, table[k])
            b = 1 if n >= _STEEP_INDEX else 0
            if F < best_F[b] or not seen[b]:
                seen[b] = True
                best_F[b] = F
                out[r, b, 0] = math.exp(min(max(lnA, -700.0), 700.0))
                out[r, b, 1] = n
                out[r, b, 2] = c


@_njit_cached
def _fill_u(lnf, n, u):
    """u = (f / f0)^-n, so that a = A f0^-n is the power law at the first bin (O(power))."""
    for i in range(lnf.shape[0]):
        u[i] = math.exp(-n * (lnf[i] - lnf[0]))


@_njit_cached
def _solve_amplitudes(lnf, y, count, nsel, high, n, u):
    """(ln A, C) of m = A f^-n + C at a fixed index ``n``: a moment match (the tail at the
    top bins' mean ``high``, the power law carrying the rest of the first ``nsel`` bins' mean)
    and :data:`_PROFILE_STEPS` Fisher-scoring steps on the Whittle objective, each bin
    weighted by ``count`` (ones: single bins; products by 1.0 change no bit). ``u``: (f /
    f0)^-n from :func:`_fill_u`."""
    nf = y.shape[0]
    ylo = 0.0
    wlo = 0.0
    for i in range(nsel):
        ylo += count[i] * y[i]
        wlo += count[i]
    ylo /= wlo
    ulo = 0.0
    for i in range(nsel):
        ulo += count[i] * u[i]
    ulo /= wlo
    c = high
    a = max(ylo - c, 0.1 * ylo) / ulo
    for _ in range(_PROFILE_STEPS):
        # Fisher scoring on (a, c): H = sum [u 1]^T [u 1] / m^2, g = sum (y - m) [u 1] / m^2
        h11 = 0.0
        h12 = 0.0
        h22 = 0.0
        g1 = 0.0
        g2 = 0.0
        degenerate = False
        for i in range(nf):
            m = a * u[i] + c
            if not m > 0.0:  # all-zero bins at both ends (a = c = 0): no scoring step
                degenerate = True
                break
            w = count[i] / (m * m)
            e = (y[i] - m) * w
            h11 += u[i] * u[i] * w
            h12 += u[i] * w
            h22 += w
            g1 += e * u[i]
            g2 += e
        det = h11 * h22 - h12 * h12
        if degenerate or not det > 1e-12 * h11 * h22:
            break
        da = (h22 * g1 - h12 * g2) / det
        dc = (h11 * g2 - h12 * g1) / det
        # stay positive: at most a tenfold fall per step for a, c on its bound at 0
        a = max(a + da, 0.1 * a)
        c = max(c + dc, 0.0)
    return math.log(a) + n * lnf[0], c


# Below this index the log-log line of the M1 guess is not trusted (see _profile_index).
_RISING_INDEX = 0.0
# Index values of that profile (the model's index bounds are -1, 10) and scoring steps per value.
_PROFILE_INDEX = np.arange(-1.0, 6.01, 0.5)
_PROFILE_STEPS = 6


@_njit_cached
def _profile_index(lnf, y, nsel, high, lnA0, index0, tail0):
    """(ln A, index, tail) minimising the Whittle objective sum ln m + y / m over a grid of
    indices (:data:`_PROFILE_INDEX` and ``index0``), with A and C (which enter m = A f^-n + C
    linearly) solved at each by a few Fisher-scoring steps from a moment match: the tail at
    the top bins' mean, the power law carrying the rest of the first ``nsel`` bins' mean.

    The start (``lnA0``, ``index0``, ``tail0``) is kept unless some grid point does better.
    """
    nf = y.shape[0]
    ng = _PROFILE_INDEX.shape[0]
    u = np.empty(nf)
    one = np.ones(nf)
    best_F = _whittle_m1(lnf, y, one, lnA0, index0, tail0)
    best = (lnA0, index0, tail0)
    for k in range(ng + 1):
        n = index0 if k == ng else _PROFILE_INDEX[k]
        _fill_u(lnf, n, u)
        lnA, c = _solve_amplitudes(lnf, y, one, nsel, high, n, u)
        F = _whittle_m1(lnf, y, one, lnA, n, c)
        if F < best_F:
            best_F = F
            best = (lnA, n, c)
    return best


@_njit_cached
def _whittle_u(y, count, a, c, u):
    """sum count (ln m + y / m) for m = a u + c (inf where m is not positive and finite)."""
    F = 0.0
    for i in range(y.shape[0]):
        m = a * u[i] + c
        if not (m > 0.0 and math.isfinite(m)):
            return math.inf
        F += count[i] * (math.log(m) + y[i] / m)
    return F


@_njit_cached
def _whittle_m1(lnf, y, count, lnA, index, tail):
    """sum count (ln m + y / m) for m = A f^-n + C (inf where m is not positive and finite)."""
    F = 0.0
    for i in range(y.shape[0]):
        m = math.exp(min(max(lnA - index * lnf[i], -700.0), 700.0)) + tail
        if not (m > 0.0 and math.isfinite(m)):
            return math.inf
        F += count[i] * (math.log(m) + y[i] / m)
    return F


def _bump_grid(lnf: np.ndarray, width: float, ngrid: int = 32) -> tuple[np.ndarray, np.ndarray]:
    centres = np.linspace(lnf[0], lnf[-1], ngrid)
    w = np.exp(-0.5 * ((lnf[None, :] - centres[:, None]) / width) ** 2)
    w /= w.sum(axis=1, keepdims=True)
    return centres, w


@_njit_cached
def _rows_dot(a, w):
    """``a @ w.T`` with each entry summed sequentially over the last axis.

    Four rows of ``w`` at a time: four independent running sums per pass over the bins (the
    processor overlaps them), each still summed in bin order, so the same sums bit for bit
    as one loop over the bins per entry, ~3.5x faster."""
    npix, nf = a.shape
    ng = w.shape[0]
    out = np.zeros((npix, ng))
    for r in range(npix):
        g = 0
        while g + 4 <= ng:
            a0 = 0.0
            a1 = 0.0
            a2 = 0.0
            a3 = 0.0
            for i in range(nf):
                v = a[r, i]
                a0 += v * w[g, i]
                a1 += v * w[g + 1, i]
                a2 += v * w[g + 2, i]
                a3 += v * w[g + 3, i]
            out[r, g] = a0
            out[r, g + 1] = a1
            out[r, g + 2] = a2
            out[r, g + 3] = a3
            g += 4
        while g < ng:
            acc = 0.0
            for i in range(nf):
                acc += a[r, i] * w[g, i]
            out[r, g] = acc
            g += 1
    return out


def bump_seeds(
    f: np.ndarray,
    power: np.ndarray,
    m1: np.ndarray,
    width: float,
    nseeds: int = 1,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Bump seeds from the peaks of the M1 residual ratio smoothed over a grid in ln f.

    Parameters
    ----------
    f, power
        (nf,) Hz and (npix, nf) power.
    m1
        (npix, nf) the fitted (or guessed) M1 model.
    width
        Smoothing width in ln f (also the seed bump width).
    nseeds
        Number of distinct peaks returned (best first), for multistart.

    Returns
    -------
    list of (amplitude, centre) pairs, each (npix,).
    """
    lnf = np.log(np.asarray(f, np.float64))
    centres, w = _bump_grid(lnf, width)
    with np.errstate(divide="ignore", invalid="ignore"):
        excess = power / m1 - 1.0
    excess = np.where(np.isfinite(excess), excess, 0.0)
    # (npix, ngrid): mean relative excess near each centre. Summed row by row in bin order,
    # not with a BLAS matmul, whose summation order depends on the block's number of rows and
    # on BLAS threads: a pixel's seed (so its fit) must not depend on its tile or machine.
    mean_excess = _rows_dot(np.ascontiguousarray(excess), np.ascontiguousarray(w))
    # choose by significance, not by size: near the low-f end few bins fall in a window
    # (uniform f is sparse in ln f) and their mean is noisy
    sc = mean_excess / np.sqrt((w * w).sum(axis=1))[None, :]
    out = []
    rows = np.arange(power.shape[0])
    # exclude neighbours of a chosen peak so that later seeds try another place
    excl = max(1, int(np.ceil(width / max(centres[1] - centres[0], 1e-12))))
    for _ in range(nseeds):
        j = np.argmax(sc, axis=1)
        c = centres[j]
        m1c = _interp_rows(c, lnf, m1)
        amp = np.maximum(mean_excess[rows, j], 0.1) * m1c
        out.append((amp, c))
        for d in range(-excl, excl + 1):
            jj = np.clip(j + d, 0, len(centres) - 1)
            sc[rows, jj] = -np.inf
    return out


def _interp_rows(x: np.ndarray, grid: np.ndarray, values: np.ndarray) -> np.ndarray:
    """values[i] interpolated at x[i] on the common grid, vectorised over rows."""
    j = np.clip(np.searchsorted(grid, x) - 1, 0, grid.size - 2)
    t = np.clip((x - grid[j]) / (grid[j + 1] - grid[j]), 0.0, 1.0)
    rows = np.arange(values.shape[0])
    return values[rows, j] * (1 - t) + values[rows, j + 1] * t


def bump_width_seed(lnf: np.ndarray, lo: float, hi: float) -> float:
    """Seed bump width: 8 % of the fitted range in ln f, inside the width bounds."""
    return float(np.clip(0.08 * (lnf[-1] - lnf[0]), lo, hi))


def powerlaw_tail_null(f: np.ndarray, rng: np.random.Generator, nsim: int) -> np.ndarray:
    """Truths (nsim, 3) of ``powerlaw_tail`` spectra for the LRT null simulation.

    Index U(1, 3) and a power-law/tail crossover frequency log-uniform over the middle 60 %
    of the fitted range, tail 1 (so A fc^-n = C = 1 at the crossover).
    """
    lnf = np.log(np.asarray(f, np.float64))
    span = lnf[-1] - lnf[0]
    index = rng.uniform(1.0, 3.0, nsim)
    lnfc = rng.uniform(lnf[0] + 0.2 * span, lnf[-1] - 0.2 * span, nsim)
    tail = np.ones(nsim)
    amp = np.exp(index * lnfc)
    return np.column_stack([amp, index, tail])


# --------------------------------------------------------------------------------------
# Curved backgrounds: the bending (knee) and broken power laws and the kappa function.
# Their starts are built from the power-law + tail start (a straight line where the power
# law rules): the curved shape is matched to that line, the position-like parameter (knee,
# break, width) is then searched by the fit over its declared grid.


def _plateau(power: np.ndarray, tail: np.ndarray) -> np.ndarray:
    """Low-frequency level: mean power of the lowest 3 bins less the tail (at least 10 %)."""
    low = np.mean(power[:, :3], axis=1)
    return np.maximum(low - tail, 0.1 * low)


def guess_knee_tail(
    f: np.ndarray, power: np.ndarray, dof: float | np.ndarray = 2.0, base=None
) -> np.ndarray:
    """``knee_tail`` start (A, n, ln f_b, C): plateau from the lowest bins, index and tail
    from the power-law + tail start, knee where A meets that power law."""
    power = np.atleast_2d(np.asarray(power, np.float64))
    lnf = np.log(np.asarray(f, np.float64))
    a1, n, c = guess_powerlaw_tail(f, power, dof).T
    n = np.clip(n, 0.5, 9.0)
    amp = _plateau(power, c)
    knee = np.clip((np.log(a1) - np.log(amp)) / n, lnf[0], lnf[-1])
    return np.column_stack([amp, n, knee, c])


def guess_broken_tail(
    f: np.ndarray, power: np.ndarray, dof: float | np.ndarray = 2.0, base=None
) -> np.ndarray:
    """``broken_tail`` start (A, n1, n2, ln f_b, C): the power-law + tail start with both
    indices equal and the break mid-range (the break is then searched)."""
    power = np.atleast_2d(np.asarray(power, np.float64))
    lnf = np.log(np.asarray(f, np.float64))
    a1, n, c = guess_powerlaw_tail(f, power, dof).T
    n = np.clip(n, -0.9, 9.0)
    brk = np.full(power.shape[0], 0.5 * (lnf[0] + lnf[-1]))
    amp = a1 * np.exp(-n * brk)
    return np.column_stack([amp, n, n, brk, c])


def guess_kappa_tail(
    f: np.ndarray, power: np.ndarray, dof: float | np.ndarray = 2.0, base=None
) -> np.ndarray:
    """``kappa_tail`` start (A, kappa, ln rho, C): plateau from the lowest bins, kappa + 1 =
    the power-law start's index, rho where the kappa function's asymptote meets that law."""
    power = np.atleast_2d(np.asarray(power, np.float64))
    lnf = np.log(np.asarray(f, np.float64))
    a1, n, c = guess_powerlaw_tail(f, power, dof).T
    kappa = np.clip(n - 1.0, 0.2, 20.0)
    amp = _plateau(power, c)
    # A (kappa rho^2)^((k+1)/2) f^-(k+1) = A1 f^-n with n = k + 1
    rho = (np.log(a1) - np.log(amp)) / (kappa + 1.0) - 0.5 * np.log(kappa)
    rho = np.clip(rho, lnf[0], lnf[-1])
    return np.column_stack([amp, kappa, rho, c])


def _span(f: np.ndarray) -> tuple[float, float]:
    lnf = np.log(np.asarray(f, np.float64))
    return float(lnf[0]), float(lnf[-1] - lnf[0])


def knee_tail_null(f: np.ndarray, rng: np.random.Generator, nsim: int) -> np.ndarray:
    """Truths (nsim, 4) of ``knee_tail`` spectra for the LRT null simulation.

    Index U(1.5, 3.5), knee log-uniform over 10-50 % of the fitted range (in ln f), the
    power law meeting the tail 1 a further 20-40 % of the range above the knee.
    """
    lo, span = _span(f)
    n = rng.uniform(1.5, 3.5, nsim)
    knee = lo + rng.uniform(0.1, 0.5, nsim) * span
    cross = knee + rng.uniform(0.2, 0.4, nsim) * span
    return np.column_stack([np.exp(n * (cross - knee)), n, knee, np.ones(nsim)])


def broken_tail_null(f: np.ndarray, rng: np.random.Generator, nsim: int) -> np.ndarray:
    """Truths (nsim, 5) of ``broken_tail`` spectra for the LRT null simulation.

    Low index U(0.5, 1.5), high index 0.5-1.5 steeper, break over 20-50 % of the fitted
    range (in ln f), the high part meeting the tail 1 a further 20-40 % of the range above.
    """
    lo, span = _span(f)
    n1 = rng.uniform(0.5, 1.5, nsim)
    n2 = n1 + rng.uniform(0.5, 1.5, nsim)
    brk = lo + rng.uniform(0.2, 0.5, nsim) * span
    cross = brk + rng.uniform(0.2, 0.4, nsim) * span
    return np.column_stack([np.exp(n2 * (cross - brk)), n1, n2, brk, np.ones(nsim)])


def kappa_tail_null(f: np.ndarray, rng: np.random.Generator, nsim: int) -> np.ndarray:
    """Truths (nsim, 4) of ``kappa_tail`` spectra for the LRT null simulation.

    kappa U(0.5, 2.5), ln rho over 10-40 % of the fitted range, the asymptote
    A (kappa rho^2 / f^2)^((kappa+1)/2) meeting the tail 1 20-40 % of the range above the
    turnover rho sqrt(kappa).
    """
    lo, span = _span(f)
    kappa = rng.uniform(0.5, 2.5, nsim)
    rho = lo + rng.uniform(0.1, 0.4, nsim) * span
    turn = rho + 0.5 * np.log(kappa)
    cross = turn + rng.uniform(0.2, 0.4, nsim) * span
    amp = np.exp((kappa + 1.0) * (cross - turn))
    return np.column_stack([amp, kappa, rho, np.ones(nsim)])
