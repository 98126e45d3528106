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

from . import layout
from . import periodogram as pg
from . import resample as rs
from .fitting import fit_block

__all__ = [
    "TileSpec",
    "run_tile",
    "resample_values",
    "periodograms",
    "box_spectra",
    "power_dof",
    "fit_dof",
    "fit_dof_rule",
    "fit_maps",
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
        ``max_iter``, ``tol``, ``multistart``, ``best_model``, ``alpha``.
    """

    times: np.ndarray
    new_times: np.ndarray
    dt: float
    spectra: Mapping[str, Any]
    box: int
    models: Mapping[str, Any]
    method: str
    fit_options: Mapping[str, Any]

    @property
    def halo(self) -> int:
        return self.box // 2


def resample_values(values: np.ndarray, times: np.ndarray, new_times: np.ndarray) -> np.ndarray:
    """Interpolate a (nt, ny, nx) block onto ``new_times``: (len(new_times), ny, nx).

    The result is a frames view of the interpolated pixel rows (not C-contiguous), so that
    :func:`periodograms` takes those rows as they are instead of transposing twice.
    """
    _, ny, nx = values.shape
    out = rs.interp_linear(times, layout.pixel_rows(values), new_times)
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

    ``count`` is how many finite spectra each average holds (box 1: 1 or 0); the box is
    truncated at the block's edge, so a tile passes its neighbours in a halo of ``box // 2``.
    """
    if box > 1:
        return pg.box_average(power, box)
    return power, None, np.isfinite(power).all(axis=0).astype(np.int32)


def power_dof(count: np.ndarray, dof_per_spectrum: float) -> np.ndarray:
    """chi-square dof of each box-averaged power value (float32; at least one spectrum's)."""
    return (dof_per_spectrum * np.maximum(count, 1)).astype(np.float32)


def fit_dof(dof: Any, method: str, window: str, segment_length: int) -> Any:
    """The dof a fit uses: the marginal chi^2 dof, divided for ``whittle`` by the window's
    bin-correlation variance inflation (:func:`specfit.kernels.periodogram.window_vif`), so
    that errors and likelihood-ratio tests stay calibrated with tapered windows."""
    if method != "whittle" or window == "none":
        return dof
    return dof / pg.window_vif(window, int(segment_length))


def fit_dof_rule(method: str, window: str) -> str:
    """:func:`fit_dof` in words, for the results' attrs."""
    if method != "whittle" or window == "none":
        return "dof"
    return "dof / window_vif"


def fit_maps(
    freq: np.ndarray,
    power: np.ndarray,
    dof: np.ndarray | float,
    sigma: np.ndarray | None,
    models: Mapping[str, Any],
    method: str,
    options: Mapping[str, Any],
) -> dict[str, np.ndarray]:
    """Fit a (nf, ny, nx) block; returns ``{variable: (ny, nx)}`` with each model's derived
    maps after the fit's own (the kernel on pixel rows)."""
    nf, ny, nx = power.shape
    rows = layout.pixel_rows(power, np.float64)
    srows = None
    if sigma is not None:
        srows = layout.pixel_rows(sigma, np.float64)
    d = np.broadcast_to(np.asarray(dof, dtype=float), (ny, nx)).reshape(-1)
    res = fit_block(freq, rows, models, method=method, dof=d, sigma=srows, **options)
    return {k: np.asarray(v).reshape(ny, nx) for k, v in res.items()}


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
        ``dof`` and ``mean_intensity`` (y, x), and ``frame_finite`` (nt,): whether any of the
        tile's own pixels is finite in each frame.
    """
    _, ny, nx = values.shape
    t, b, left, r = halo
    ys, xs = slice(t, ny - b), slice(left, nx - r)
    uniform = resample_values(values, spec.times, spec.new_times)
    freq, power, meta = periodograms(uniform, spec.dt, spec.spectra)
    power, spread, count = box_spectra(power, spec.box)
    # Spectra are stored (and fitted) as float32; the spread weights an lsq fit at full
    # precision, as the stage API's power_sigma does before it is stored.
    power = power[:, ys, xs].astype(np.float32)
    spread = None if spread is None else spread[:, ys, xs]
    dof = power_dof(count[ys, xs], meta["dof"])
    fdof = fit_dof(dof, spec.method, meta["window"], meta["segment_length"])
    # lsq weights by the box spread unless the fit weights by delta log10 f (fit.weights=dlogf)
    weighted = spec.method == "lsq" and spec.fit_options.get("weights", "sigma") == "sigma"
    sigma = spread if weighted else None
    out = fit_maps(freq, power, fdof, sigma, spec.models, spec.method, spec.fit_options)
    inner = values[:, ys, xs]
    out["power"] = power
    if spread is not None:
        out["power_sigma"] = spread.astype(np.float32)
    out["dof"] = dof
    out["mean_intensity"] = mean_intensity(inner)
    out["frame_finite"] = np.isfinite(inner).any(axis=(1, 2))
    return out
