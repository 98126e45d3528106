"""Despiking: replace isolated outliers (cosmic-ray hits, hot pixels) by the local median.

Per frame: ``m = median_filter(frame, size)``; the residual ``r = frame - m`` gets a robust
scale ``s``: start from ``1.4826 * MAD(r)``, then iterate ``s = std(r[|r| < 4 s])``. (The MAD
alone is too small: a median-filter residual of Gaussian noise has heavy tails, and a
5-MAD cut replaces ~2 % of clean pixels; the clipped std gives ~0.005 %.) The scale is taken
per brightness class (the pixels between consecutive eighths of ``m``; one class below
:data:`_CLASS_PIXELS` pixels a class): photon noise grows with brightness, and one scale per
frame replaced 1.5 % of the clean pixels of a Poisson image, nearly all in its bright part.
A class whose residuals are mostly exactly 0 (a dark or flat background) takes the frame's.
Pixels with ``|r| > sigma * s`` are replaced by ``m``. Spatial only, so each frame is its own
dask task (time chunks are kept).
"""

from __future__ import annotations

import numpy as np
import xarray as xr
from scipy import ndimage

from specfit.config import DEFAULTS
from specfit.io import whole_frames

__all__ = ["despike_frame", "despike"]

_CLIP_ITER = 5
_CLASSES = 8  # brightness classes per frame, each with its own scale
_CLASS_PIXELS = 1000  # fewer classes where a frame has fewer than this many pixels a class


def _clipped_scale(r: np.ndarray) -> float:
    """Robust standard deviation of ``r``: 1.4826 MAD, refined by a 4-sigma clipped std."""
    scale = 1.4826 * np.median(np.abs(r - np.median(r))) if r.size else 0.0
    for _ in range(_CLIP_ITER):
        if not scale > 0:
            break
        scale = float(np.std(r[np.abs(r) < 4.0 * scale]))
    return scale


def despike_frame(
    frame: np.ndarray,
    size: int = DEFAULTS.prep.despike_size,
    sigma: float = DEFAULTS.prep.despike_sigma,
) -> np.ndarray:
    """One frame with outliers beyond ``sigma`` robust deviations replaced by the median.

    NaN pixels stay NaN and do not enter the medians of their neighbours as values (they
    are filled with the frame median first, which a median filter all but ignores).
    """
    f = np.asarray(frame, dtype=np.float32)
    bad = ~np.isfinite(f)
    if bad.all():
        return f.copy()
    filled = np.where(bad, np.nanmedian(f), f)
    med = ndimage.median_filter(filled, size=size, mode="reflect")
    r = filled - med
    good = ~bad
    n = max(1, min(_CLASSES, int(good.sum()) // _CLASS_PIXELS))
    edges = np.quantile(med[good], np.linspace(0.0, 1.0, n + 1)[1:-1])
    cls = np.searchsorted(edges, med, side="right")  # 0 .. n-1
    scale = np.array([_clipped_scale(r[good & (cls == k)]) for k in range(n)])
    # a class without noise of its own (a dark, flat or quantised background: residuals
    # mostly exactly 0) takes the frame's scale, which still catches its spikes; a frame
    # without noise at all is kept as it is
    whole = _clipped_scale(r[good]) if n > 1 else scale[0]
    scale = np.where(scale > 0, scale, whole)
    limit = np.where(scale > 0, sigma * scale, np.inf)[cls]
    spike = (np.abs(r) > limit) & good
    return np.where(spike, med, f).astype(np.float32)


def _despike_block(block: np.ndarray, size: int, sigma: float) -> np.ndarray:
    return np.stack([despike_frame(b, size, sigma) for b in block]) if len(block) else block


def despike(
    arr: xr.DataArray,
    size: int = DEFAULTS.prep.despike_size,
    sigma: float = DEFAULTS.prep.despike_sigma,
) -> xr.DataArray:
    """Lazily despike every frame of a (time, y, x) DataArray (see the module docstring)."""
    # Whole frames per chunk so that the robust scale is per frame, not per tile.
    data = whole_frames(arr.data)
    out = data.map_blocks(
        _despike_block, size, sigma, dtype=np.float32, meta=np.empty((0, 0, 0), np.float32)
    )
    res = arr.copy(data=out)
    res.attrs.update(despike_size=int(size), despike_sigma=float(sigma))
    return res
