"""THE per-tile chain: a tile's frames (+ halo) and a frozen spec -> every result variable.

``specfit run`` calls :func:`run_tile` once per tile; the lazy stage API
(:mod:`specfit.stages`) calls its pieces (:func:`resample_values`, :func:`periodograms`,
:func:`box_spectra`, :func:`power_dof`, :func:`fit_dof`, :func:`fit_maps`) through
``map_blocks``/``map_overlap``/``blockwise``. Every number of a results store comes from these
functions, so both ways of running give bit-identical maps. Pure numpy: no dask, no xarray,
no I/O.

Arrays here are blocks in (time or freq, y, x) order; the kernels below them work on pixel
rows ``(npix, n)``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import layout, original
from . import periodogram as pg
from . import resample as rs
from .fitting import fit_block

__all__ = [
    "TileSpec",
    "run_tile",
    "resample_values",
    "periodograms",
    "box_spectra",
    "bridged",
    "power_dof",
    "box_dof",
    "quantise_neff",
    "BOX_DOF_MODES",
    "fit_dof",
    "fit_dof_rule",
    "bin_layout",
    "bin_rho",
    "fit_maps",
    "with_original_unit",
    "mean_intensity",
]


@dataclass(frozen=True)
class TileSpec:
    """Everything the chain needs besides the tile's values; the same for every tile.

    Attributes
    ----------
    times, new_times
        Frame times and the uniform grid (s).
    dt
        The grid's cadence (s).
    spectra
        Keyword arguments of :func:`specfit.kernels.periodogram.periodogram` (``segments``,
        ``segment_length`` in samples, ``overlap``, ``window``, ``detrend``,
        ``normalisation``, ``fmin``, ``fmax``).
    box
        Box-average width in pixels (1 = none); the halo a tile needs is ``box // 2``.
    models
        alias -> model (bounds applied), in output order.
    method
        ``whittle``, ``lsq_log`` or ``lsq`` (``lsq`` weights by the spread across the box).
    fit_options
        ``max_iter``, ``tol``, ``multistart``, ``best_model``, ``alpha``, ``weights``,
        ``nonnested``, ``optimizer`` (and ``lrt_cache``).
    box_dof
        ``auto`` (the box's effective number of independent spectra, estimated from the data:
        :func:`box_dof`) or ``nominal`` (every finite pixel of the box counts as independent).
    """

    times: np.ndarray
    new_times: np.ndarray
    dt: float
    spectra: Mapping[str, Any]
    box: int
    models: Mapping[str, Any]
    method: str
    fit_options: Mapping[str, Any]
    box_dof: str = "auto"

    @property
    def halo(self) -> int:
        return self.box // 2


def resample_values(
    values: np.ndarray,
    times: np.ndarray,
    new_times: np.ndarray,
    rows: np.ndarray | None = None,
) -> np.ndarray:
    """Interpolate a (nt, ny, nx) block onto ``new_times``: (len(new_times), ny, nx).

    The result is a frames view of the interpolated pixel rows (not C-contiguous), so that
    :func:`periodograms` takes those rows as they are instead of transposing twice. ``rows``:
    the block's :func:`specfit.kernels.layout.pixel_rows`, where the caller has them already.
    """
    _, ny, nx = values.shape
    rows = layout.pixel_rows(values) if rows is None else rows
    out = rs.interp_linear(times, rows, new_times)
    return layout.frames_view(out, ny, nx)


def periodograms(
    values: np.ndarray, dt: float, spectra: Mapping[str, Any]
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Periodograms of every pixel of a uniform (nt, ny, nx) block: ``freq, (nf, ny, nx), meta``."""
    _, ny, nx = values.shape
    freq, power, meta = pg.periodogram(layout.pixel_rows(values), dt, **spectra)
    return freq, layout.frames(power, ny, nx), meta


def box_spectra(power: np.ndarray, box: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Box-average (nf, ny, nx) spectra: ``mean, spread (None for box 1), count (ny, nx)``.

    ``count`` is how many spectra each average holds (finite and not constant,
    :func:`specfit.kernels.periodogram.box_members`; box 1: 1 or 0 finite); the box is
    truncated at the block's edge, so a tile passes its neighbours in a halo of ``box // 2``.
    """
    if box > 1:
        return pg.box_average(power, box)
    return power, None, np.isfinite(power).all(axis=0).astype(np.int32)


def bridged(gap: np.ndarray, used: np.ndarray, box: int) -> np.ndarray:
    """The longest stretch bridged by interpolation in the series behind each pixel's spectrum.

    ``gap`` is each pixel's own longest gap (:func:`specfit.kernels.resample.longest_gaps`),
    ``used`` whether its periodogram is finite (it enters the spectra); with box averaging
    the largest over the box's pixels that enter its mean (truncated at the block's edge, as
    :func:`box_spectra`). NaN where no spectrum enters (float32).
    """
    g = np.where(used, gap, -np.inf)
    if box > 1:
        from scipy.ndimage import maximum_filter

        g = maximum_filter(g, size=box, mode="constant", cval=-np.inf)
    return np.where(np.isfinite(g), g, np.nan).astype(np.float32)


def power_dof(count: np.ndarray, dof_per_spectrum: float) -> np.ndarray:
    """chi-square dof of each box-averaged power value (float32; at least one spectrum's)."""
    return (dof_per_spectrum * np.maximum(count, 1)).astype(np.float32)


#: ``spectra.box_dof``: how a box-averaged spectrum's dof are counted.
BOX_DOF_MODES = ("auto", "nominal")

# N_eff is rounded to quarter octaves: a pixel's LRT p-value needs a simulated null reference
# per distinct dof value, so a continuous N_eff would need one per pixel. Quarter octaves
# give 13 steps from 1 to 8 for box 3, capped at a box's count (9, or fewer at the image's
# edges and beside bad pixels), with a rounding error of at most 9 % in the dof
# (4.5 % in the errors), below the estimate's own scatter (~11 %).
_NEFF_STEPS_PER_OCTAVE = 4


def quantise_neff(neff: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Round N_eff to quarter octaves (``2^(j/4)``), within ``[1, count]`` (float64)."""
    q = float(_NEFF_STEPS_PER_OCTAVE)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.exp2(np.round(q * np.log2(np.maximum(neff, 1.0))) / q)
    return np.minimum(np.where(np.isfinite(r), r, 1.0), np.maximum(count, 1)).astype(np.float64)


def box_dof(
    power: np.ndarray, count: np.ndarray, box: int, dof_per_spectrum: float, mode: str
) -> np.ndarray:
    """chi^2 dof of each box-averaged power value (float32, (ny, nx)).

    Parameters
    ----------
    power
        ``(nf, ny, nx)`` single-pixel spectra before box averaging (the block with its halo).
    count
        ``(ny, nx)`` finite spectra per box (from :func:`box_spectra`).
    box
        Box width (1: no averaging, one spectrum's dof).
    dof_per_spectrum
        One spectrum's equivalent dof (Welch's, with the window and overlap).
    mode
        ``auto``: ``dof_per_spectrum x N_eff``, with N_eff the box's effective number of
        independent spectra estimated from their scatter
        (:func:`specfit.kernels.periodogram.box_neff`), rounded by :func:`quantise_neff`;
        ``nominal``: ``dof_per_spectrum x count`` (independent pixels).
    """
    if mode not in BOX_DOF_MODES:
        raise ValueError(f"spectra.box_dof must be one of {BOX_DOF_MODES}, got {mode!r}")
    if box == 1 or mode == "nominal":
        return power_dof(count, dof_per_spectrum)
    neff = quantise_neff(pg.box_neff(power, box), count)
    return (dof_per_spectrum * neff).astype(np.float32)


def fit_dof(
    dof: Any,
    method: str,
    window: str,
    segment_length: int,
    overlap: float = 0.0,
    segments: int = 1,
) -> Any:
    """The dof a fit uses: the marginal chi^2 dof, divided for ``whittle`` by the bins'
    variance inflation from the window and overlapping segments
    (:func:`specfit.kernels.periodogram.window_vif`; 1 for neither), so that errors and
    likelihood-ratio tests stay calibrated with tapers and Welch overlap."""
    if method != "whittle" or not _correlated(window, segment_length, overlap, segments):
        return dof
    return dof / pg.window_vif(window, int(segment_length), overlap, segments)


def fit_dof_rule(
    method: str, window: str, segment_length: int = 0, overlap: float = 0.0, segments: int = 1
) -> str:
    """:func:`fit_dof` in words, for the results' attrs."""
    if method != "whittle" or not _correlated(window, segment_length, overlap, segments):
        return "dof"
    return "dof / window_vif"


def _correlated(window: str, segment_length: int, overlap: float, segments: int) -> bool:
    """Whether the bins correlate: a taper, or segments that share samples."""
    length = int(segment_length)
    return window != "none" or (segments > 1 and pg.segment_step(length, overlap) < length)


def bin_layout(attrs: Mapping[str, Any]) -> tuple[str, int, float, int]:
    """(window, segment_length, overlap, segments) from spectra's attrs or a periodogram's
    meta: what sets the bins' correlation (:func:`fit_dof`, :func:`bin_rho`); spectra
    without them count as one segment without a window."""
    return (
        str(attrs.get("window", "none")),
        int(attrs.get("segment_length", 0)),
        float(attrs.get("overlap", 0.0)),
        int(attrs.get("segments", 1)),
    )


def bin_rho(
    window: str, segment_length: int, overlap: float = 0.0, segments: int = 1
) -> np.ndarray:
    """Correlation of neighbouring bins made by the window and by overlapping Welch segments
    (the ``segments`` averaged, starting every ``L - floor(overlap L)`` samples), for the
    fit's goodness of fit, its LRT reference and lsq_log's errors
    (:func:`specfit.kernels.periodogram.window_rho`; empty for independent bins: no window
    and no overlap). Exact for white noise, as :func:`fit_dof`'s vif."""
    if not _correlated(window, segment_length, overlap, segments):
        return np.zeros(0)
    return pg.window_rho(window, int(segment_length), overlap, segments)


def fit_maps(
    freq: np.ndarray,
    power: np.ndarray,
    dof: np.ndarray | float,
    sigma: np.ndarray | None,
    models: Mapping[str, Any],
    method: str,
    options: Mapping[str, Any],
    rho: np.ndarray,
) -> dict[str, np.ndarray]:
    """Fit a (nf, ny, nx) block; returns ``{variable: (ny, nx)}`` with each model's derived
    maps after the fit's own (the kernel on pixel rows). ``dof`` is the likelihood's
    (:func:`fit_dof`), ``rho`` the bins' correlation (:func:`bin_rho`)."""
    nf, ny, nx = power.shape
    rows = layout.pixel_rows(power, np.float64)
    srows = None
    if sigma is not None:
        srows = layout.pixel_rows(sigma, np.float64)
    d = np.broadcast_to(np.asarray(dof, dtype=float), (ny, nx)).reshape(-1)
    res = fit_block(
        freq, rows, models, method=method, dof=d, bin_rho=rho, sigma=srows,
        wide_input=power.dtype.itemsize > 4, **options,
    )  # fmt: skip
    return {k: np.asarray(v).reshape(ny, nx) for k, v in res.items()}


def with_original_unit(
    options: Mapping[str, Any], normalisation: str, dt: float, meta: Mapping[str, Any]
) -> Mapping[str, Any]:
    """The fit options, plus the original specFit's power unit (``dt x segment samples``,
    :func:`specfit.kernels.original.original_unit`) where ``fit.optimizer`` is ``original``."""
    if options.get("optimizer") != "original":
        return options
    unit = original.original_unit(normalisation, dt, int(meta["segment_length"]))
    return {**options, "original_unit": unit}


def mean_intensity(values: np.ndarray) -> np.ndarray:
    """The time mean of each pixel of a (nt, ny, nx) block, ignoring NaN (float32)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels: NaN mean, no warning
        return np.nanmean(values, axis=0).astype(np.float32)


def run_tile(
    values: np.ndarray, spec: TileSpec, halo: tuple[int, int, int, int] = (0, 0, 0, 0)
) -> dict[str, np.ndarray]:
    """Every result variable of one tile, from its frames and its halo.

    Parameters
    ----------
    values
        (nt, ny + halo, nx + halo) frames on ``spec.times``: the tile and the neighbours its box
        averages need (fewer at the image edge).
    spec
        The run's :class:`TileSpec`.
    halo
        (top, bottom, left, right) rows/columns of neighbours in ``values``; trimmed from every
        output.

    Returns
    -------
    dict
        The fit maps (y, x), ``power`` (and ``power_sigma`` with box > 1) (freq, y, x),
        ``dof``, ``mean_intensity`` and ``longest_gap`` (y, x; :func:`specfit.kernels.resample.
        longest_gaps`), and ``frame_counts`` (2, nt) int64: per frame, how many of the tile's
        own pixels are finite and how many jump away from their neighbouring samples
        (:func:`specfit.kernels.resample.frame_jumps`).
    """
    _, ny, nx = values.shape
    t, b, left, r = halo
    ys, xs = slice(t, ny - b), slice(left, nx - r)
    rows = layout.pixel_rows(values)  # once, for the resampling and the frame check
    uniform = resample_values(values, spec.times, spec.new_times, rows)
    freq, power, meta = periodograms(uniform, spec.dt, spec.spectra)
    single = power
    power, spread, count = box_spectra(single, spec.box)
    dof = box_dof(single, count, spec.box, meta["dof"], spec.box_dof)[ys, xs]
    used = pg.box_members(single) if spec.box > 1 else np.isfinite(single).all(axis=0)
    gap = bridged(rs.longest_gaps(spec.times, values), used, spec.box)
    del single
    # Spectra are stored (and fitted) as float32; the spread weights an lsq fit at full
    # precision, as the stage API's power_sigma does before it is stored.
    power = power[:, ys, xs].astype(np.float32)
    spread = None if spread is None else spread[:, ys, xs]
    bins = bin_layout(meta)
    fdof = fit_dof(dof, spec.method, *bins)
    # lsq weights by the box spread unless the fit weights by delta log10 f (fit.weights=dlogf)
    weighted = spec.method == "lsq" and spec.fit_options.get("weights", "sigma") == "sigma"
    sigma = spread if weighted else None
    rho = bin_rho(*bins)
    options = with_original_unit(spec.fit_options, spec.spectra["normalisation"], spec.dt, meta)
    out = fit_maps(freq, power, fdof, sigma, spec.models, spec.method, options, rho)
    inner = values[:, ys, xs]
    out["power"] = power
    if spread is not None:
        out["power_sigma"] = spread.astype(np.float32)
    out["dof"] = dof
    out["mean_intensity"] = mean_intensity(inner)
    out["longest_gap"] = gap[ys, xs]
    own = np.zeros((ny, nx), dtype=bool)
    own[ys, xs] = True
    out["frame_counts"] = np.stack(rs.frame_jumps(rows, own.reshape(-1)))
    return out
