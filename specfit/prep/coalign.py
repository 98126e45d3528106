"""Co-alignment by cross-correlation against a reference frame, and the shift estimator that
the derotation test uses to measure residual drifts.

Each frame's shift is estimated in its own dask task (the reference frame is a shared
dependency), clipped to ``prep.coalign_max_shift`` px, and undone by a spline shift.

With ``prep.coalign_smooth`` set, all shifts are measured first (one eager pass over the
frames, :func:`measure_shifts`), a polynomial in time is fitted to them
(:func:`smooth_shifts`, with outlier rejection) and the fitted shifts are applied lazily;
the kept field is then trimmed by the actual shifts instead of the maximum on every side.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import xarray as xr
from scipy import ndimage

from specfit.config import DEFAULTS
from specfit.errors import ConfigError
from specfit.io import whole_frames

__all__ = ["estimate_shift", "coalign", "shift_frame", "measure_shifts", "smooth_shifts"]


def _fill(img: np.ndarray) -> np.ndarray:
    """Mean-free, NaN-free (NaN -> 0, i.e. the mean) float64 copy."""
    a = np.asarray(img, dtype=np.float64)
    good = np.isfinite(a)
    if not good.any():
        return np.zeros_like(a)
    return np.where(good, a - a[good].mean(), 0.0)


def _taper(a: np.ndarray) -> np.ndarray:
    """Hann taper, so that the image edges do not dominate the correlation peak."""
    wy = np.hanning(a.shape[0]) if a.shape[0] > 2 else np.ones(a.shape[0])
    wx = np.hanning(a.shape[1]) if a.shape[1] > 2 else np.ones(a.shape[1])
    return a * wy[:, None] * wx[None, :]


def estimate_shift(
    image: np.ndarray, reference: np.ndarray, iterations: int = 2
) -> tuple[float, float]:
    """(dy, dx) such that ``image[y, x] ~ reference[y - dy, x - dx]`` (features moved by +d).

    FFT cross-correlation of the tapered, mean-free images; the integer peak is refined by a
    parabola through its neighbours in each axis. The taper pulls that estimate towards zero
    (by ~2 % of the shift) and the parabola is biased between integer offsets, so the image
    is then Fourier-shifted back by the estimate, tapered again, and the (near-zero, hence
    unbiased) residual shift is added: ``iterations`` passes in all. NaNs count as the mean.
    Returns (nan, nan) when an image has no finite pixel.
    """
    a, b = _fill(image), _fill(reference)
    if not a.any() or not b.any():
        return float("nan"), float("nan")
    tb = _taper(b)
    dy, dx = _peak_shift(_taper(a), tb)
    for _ in range(iterations - 1):
        back = np.fft.ifft2(ndimage.fourier_shift(np.fft.fft2(a), (-dy, -dx))).real
        ry, rx = _peak_shift(_taper(back), tb)
        dy, dx = dy + ry, dx + rx
    return float(dy), float(dx)


def _peak_shift(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """One cross-correlation pass on prepared images."""
    if not a.any() or not b.any():
        return float("nan"), float("nan")
    ny, nx = a.shape
    fa = np.fft.rfft2(a, s=(2 * ny, 2 * nx))  # zero padding: no wrap-around correlation
    fb = np.fft.rfft2(b, s=(2 * ny, 2 * nx))
    cc = np.fft.irfft2(fa * np.conj(fb), s=(2 * ny, 2 * nx))
    iy, ix = np.unravel_index(int(np.argmax(cc)), cc.shape)

    def refine(c_m: float, c_0: float, c_p: float) -> float:
        den = c_m - 2 * c_0 + c_p
        return 0.0 if den == 0 else 0.5 * (c_m - c_p) / den

    dy = refine(cc[iy - 1, ix], cc[iy, ix], cc[(iy + 1) % cc.shape[0], ix])
    dx = refine(cc[iy, ix - 1], cc[iy, ix], cc[iy, (ix + 1) % cc.shape[1]])
    sy = iy if iy < ny else iy - 2 * ny
    sx = ix if ix < nx else ix - 2 * nx
    return float(sy + dy), float(sx + dx)


def shift_frame(
    frame: np.ndarray, dy: float, dx: float, order: int = DEFAULTS.prep.interpolation_order
) -> np.ndarray:
    """``frame`` moved by (dy, dx) px with a spline; uncovered pixels and NaN spread are NaN."""
    bad = ~np.isfinite(frame)
    filled = np.where(bad, np.nanmedian(frame) if (~bad).any() else 0.0, frame)
    out = ndimage.shift(
        filled.astype(np.float64), (dy, dx), order=order, mode="constant", cval=np.nan
    )
    if bad.any():
        spread = ndimage.shift(bad.astype(float), (dy, dx), order=1, cval=1.0)
        out[spread > 1e-3] = np.nan
    return out.astype(np.float32)


def _coalign_block(block: np.ndarray, ref: np.ndarray, max_shift: float, order: int) -> np.ndarray:
    out = np.empty(block.shape, np.float32)
    for k in range(block.shape[0]):
        dy, dx = estimate_shift(block[k], ref[0])
        if not (np.isfinite(dy) and np.isfinite(dx)):
            out[k] = block[k]
            continue
        dy = float(np.clip(dy, -max_shift, max_shift))
        dx = float(np.clip(dx, -max_shift, max_shift))
        out[k] = shift_frame(block[k], -dy, -dx, order)
    return out


def _apply_block(block: np.ndarray, shifts: np.ndarray, order: int, block_info=None) -> np.ndarray:
    t0 = block_info[0]["array-location"][0][0]
    out = np.empty(block.shape, np.float32)
    for k in range(block.shape[0]):
        dy, dx = shifts[t0 + k]
        out[k] = shift_frame(block[k], -dy, -dx, order)
    return out


def _shift_block(block: np.ndarray, ref: np.ndarray) -> np.ndarray:
    return np.array([estimate_shift(b, ref[0]) for b in block], dtype=np.float64).reshape(-1, 2)


def _frames(arr: xr.DataArray) -> da.Array:
    return whole_frames(arr.data)


def measure_shifts(arr: xr.DataArray, ref_index: int) -> np.ndarray:
    """(nt, 2) shifts (dy, dx) of every frame against frame ``ref_index`` (computes now).

    One task per time chunk, run by the current dask scheduler (a distributed client if
    one is active). NaN rows for frames without finite pixels.
    """
    data = _frames(arr)
    ref = data[ref_index : ref_index + 1].rechunk({0: 1})
    shifts = da.map_blocks(
        _shift_block,
        data,
        ref,
        drop_axis=2,
        chunks=(data.chunks[0], (2,)),
        dtype=np.float64,
        meta=np.empty((0, 0), np.float64),
    )
    return np.asarray(shifts.compute(), dtype=np.float64)


def smooth_shifts(times: np.ndarray, shifts: np.ndarray, degree: int) -> np.ndarray:
    """Polynomial (in time) fit to each column of ``shifts``, ignoring outliers.

    Three passes: fit, drop points more than 4 robust deviations (1.4826 MAD) from the fit,
    refit. NaN shifts are ignored. Returns the fitted shifts at every time.
    """
    t = np.asarray(times, dtype=float)
    t = (t - t.mean()) / max(np.ptp(t), 1e-9)  # scaled time: a well-conditioned fit
    out = np.empty_like(np.asarray(shifts, dtype=float))
    for a in range(shifts.shape[1]):
        y = np.asarray(shifts[:, a], dtype=float)
        use = np.isfinite(y)
        if use.sum() <= degree:
            raise ValueError(
                f"prep.coalign_smooth {degree}: only {int(use.sum())} frames gave a shift; "
                "lower the degree or check the frames"
            )
        for _ in range(3):
            c = np.polyfit(t[use], y[use], degree)
            r = y - np.polyval(c, t)
            scale = 1.4826 * np.median(np.abs(r[use]))
            if not scale > 0:
                break
            use = np.isfinite(y) & (np.abs(r) <= 4.0 * scale)
        out[:, a] = np.polyval(c, t)
    return out


def coalign(
    arr: xr.DataArray,
    ref_index: int | None = None,
    max_shift: float = DEFAULTS.prep.coalign_max_shift,
    order: int = DEFAULTS.prep.interpolation_order,
    shifts: np.ndarray | None = None,
) -> xr.DataArray:
    """Lazily shift every frame onto the reference frame (cross-correlation, sub-pixel).

    Parameters
    ----------
    arr
        (time, y, x) DataArray.
    ref_index
        Frame to align to; None = ``attrs["reference_index"]`` or the middle frame.
    max_shift
        Shifts are clipped to this many pixels (a bad correlation cannot move a frame far);
        :func:`specfit.prep.apply_prep` trims this margin from the cutout.
    order
        Spline order of the shift.
    shifts
        (nt, 2) shifts (dy, dx) to undo, e.g. from :func:`smooth_shifts`; None = estimate
        each frame's shift in its own task. They are clipped to ``max_shift`` too and stored
        as coords ``coalign_dy``/``coalign_dx``.
    """
    nt, ny, nx = arr.shape
    if ref_index is None:
        ref_index = int(arr.attrs.get("reference_index", nt // 2))
        if not 0 <= ref_index < nt:  # the attr of a longer series this one was cut from
            ref_index = nt // 2
    elif not 0 <= ref_index < nt:
        raise ConfigError(f"coalign: ref_index {ref_index} is not a frame of these {nt} frames")
    data = _frames(arr)
    meta = np.empty((0, 0, 0), np.float32)
    if shifts is None:
        ref = data[ref_index : ref_index + 1].rechunk({0: 1})
        out = da.map_blocks(
            _coalign_block, data, ref, max_shift, order, dtype=np.float32, meta=meta
        )
        res = arr.copy(data=out)
    else:
        shifts = np.clip(np.nan_to_num(np.asarray(shifts, float)), -max_shift, max_shift)
        out = data.map_blocks(_apply_block, shifts, order, dtype=np.float32, meta=meta)
        res = arr.copy(data=out).assign_coords(
            coalign_dy=("time", shifts[:, 0], {"units": "pixel"}),
            coalign_dx=("time", shifts[:, 1], {"units": "pixel"}),
        )
    res.attrs.update(coalign_reference_index=int(ref_index), coalign_max_shift=float(max_shift))
    return res
