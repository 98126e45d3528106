"""Derotation: resample every frame onto the reference frame's pixel grid so that each pixel
follows the same solar feature.

Two methods, chosen by ``prep.derotate_method``:

``polynomial`` (default)
    For a 7 x 7 grid of on-disk points of the reference frame, sunpy
    (``propagate_with_solar_surface``, Howard differential rotation, each frame's own observer
    position and pointing) gives where each point is seen in frame i. A least-squares
    quadratic map (row, col) -> (row', col') (12 numbers per frame) is fitted to those points
    and one ``scipy.ndimage.map_coordinates`` spline resampling per frame applies it. sunpy is
    called at ~24 knot frames and the map is interpolated in time (it is smooth); per-frame
    pointing offsets are added exactly. (Quadratic, not affine: the rotation's map across a
    field is curved; the quadratic map's worst residual is reported in
    ``attrs["derotate_max_residual_px"]``, and a test compares the result with ``reproject``.)
``reproject``
    sunpy Map + ``reproject_to`` inside ``propagate_with_solar_surface`` for every pixel of
    every frame: the reference method, much slower.

Both are lazy: each time chunk is resampled in its own task.
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr
from astropy.io import fits
from astropy.time import Time, TimeDelta
from scipy import ndimage

from specfit.config import DEFAULTS
from specfit.errors import InputError
from specfit.io import hpc_coords, whole_frames

__all__ = [
    "DerotationPlan",
    "plan_derotation",
    "derotate",
    "frame_header",
    "reference_index",
    "valid_box",
    "resample_frame",
]

_N_KNOTS = 24
_GRID = 7
_EDGE_TOL = 1e-3  # px
_PROPAGATE_LOCK = threading.Lock()


def _terms(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> list[np.ndarray]:
    """Quadratic terms in coordinates scaled to about [-1, 1] (well-conditioned fits)."""
    ny, nx = shape
    u = (np.asarray(rows, float) - (ny - 1) / 2.0) / max(ny / 2.0, 1.0)
    v = (np.asarray(cols, float) - (nx - 1) / 2.0) / max(nx / 2.0, 1.0)
    return [np.ones_like(u), u, v, u * u, u * v, v * v]


@dataclass
class DerotationPlan:
    """Per-frame quadratic maps from reference-grid (row, col) to frame (row, col).

    ``coef[i, a] @ terms(row, col)`` is coordinate a (0 = row, 1 = col) in frame i of the
    feature at reference pixel (row, col).
    """

    coef: np.ndarray  # (nt, 2, 6)
    shape: tuple[int, int]
    ref_index: int
    ref_time: Time
    max_residual_px: float

    def source_coords(self, i: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """(2, ...) frame-i (row, col) of reference pixels (rows, cols)."""
        terms = _terms(rows, cols, self.shape)
        return np.stack(
            [sum(c * t for c, t in zip(self.coef[i, a], terms, strict=True)) for a in range(2)]
        )


def _times(arr: xr.DataArray) -> Time:
    if "start_time" not in arr.attrs:
        raise InputError(
            "derotation needs absolute times: the data has no attrs['start_time']; open it with "
            "specfit.io.open_input or set prep.derotate: false"
        )
    t0 = Time(str(arr.attrs["start_time"]).rstrip("Z"), scale="utc")
    return t0 + TimeDelta(np.asarray(arr["time"].values, dtype=float), format="sec")


def reference_index(arr: xr.DataArray, reference_time: str | None) -> int:
    """Index of the reference frame: the middle frame, or the one nearest ``reference_time``."""
    nt = arr.sizes["time"]
    if reference_time is None:
        return nt // 2
    t = _times(arr)
    try:
        tref = Time(str(reference_time).rstrip("Z"), scale="utc")
    except Exception:
        raise InputError(
            f"prep.reference_time {reference_time!r} is not an ISO time (e.g. 2012-06-06T07:00:00)"
        ) from None
    d = np.abs((t - tref).to_value("s"))
    if d.min() > 0.5 * max(1.0, float(t[-1].unix - t[0].unix)):
        raise InputError(
            f"prep.reference_time {reference_time} is far outside the series "
            f"({t[0].isot} .. {t[-1].isot}); choose a time inside it"
        )
    return int(np.argmin(d))


def frame_header(arr: xr.DataArray, i: int, t: Time) -> fits.Header:
    """The 2-D celestial header of frame i: the reference WCS with frame i's time, observer
    and pointing (from the per-frame coords written by the readers, else Earth's position)."""
    if "wcs_header" not in arr.attrs:
        raise InputError(
            "derotation needs a helioprojective WCS, and this input has none (attrs "
            "'wcs_header' missing); use FITS input with HPLN/HPLT axes or prep.derotate: false"
        )
    h = fits.Header.fromstring(arr.attrs["wcs_header"], sep="\n")
    h["DATE-OBS"] = t.utc.isot
    for k in ("T_OBS", "DATE_OBS", "MJD-OBS"):
        h.pop(k, None)
    from specfit.io.fits_series import GEOMETRY_KEYS

    for name, (key, _unit) in GEOMETRY_KEYS.items():
        if name in arr.coords:
            h[key] = float(arr[name].values[i])
    if "obs_hglt" in arr.coords or "obs_hgln" in arr.coords:
        # The reference frame's Carrington observer keys would be stale for frame i, and
        # wcslib prefers CRLT_OBS to HGLT_OBS: drop them so HGLN/HGLT_OBS rule.
        h.pop("CRLN_OBS", None)
        h.pop("CRLT_OBS", None)
    if "HGLN_OBS" not in h or "HGLT_OBS" not in h:
        # IRIS-like headers lack the observer longitude/latitude: the observer is at Earth.
        from sunpy.coordinates import get_earth

        e = get_earth(t)
        h["HGLN_OBS"] = float(e.lon.to_value("deg"))
        h["HGLT_OBS"] = float(e.lat.to_value("deg"))
        if "DSUN_OBS" not in h:
            h["DSUN_OBS"] = float(e.radius.to_value("m"))
    return h


def _wcs(header: fits.Header):
    from astropy.wcs import WCS, FITSFixedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(header, naxis=2)


def _fit_map(
    src_rc: np.ndarray, dst_rc: np.ndarray, shape: tuple[int, int]
) -> tuple[np.ndarray, float]:
    """Least-squares quadratic dst = coef @ terms(src) over points (2, n); coef (2, 6)."""
    a = np.column_stack(_terms(src_rc[0], src_rc[1], shape))
    coef, *_ = np.linalg.lstsq(a, dst_rc.T, rcond=None)  # (6, 2)
    resid = a @ coef - dst_rc.T
    return coef.T.copy(), float(np.abs(resid).max())


def plan_derotation(arr: xr.DataArray, reference_time: str | None = None) -> DerotationPlan:
    """Compute the per-frame pixel maps (eager and cheap: no pixel data are read).

    Raises
    ------
    InputError
        No WCS or start time, a reference time outside the series, or a field that is not
        on the solar disk (off-limb features do not rotate with the surface).
    """
    from sunpy.coordinates import HeliographicStonyhurst, propagate_with_solar_surface

    if arr.attrs.get("derotated_to"):
        # a specfit cube read back: derotating it again moved the field by the rotation
        # between the two reference times (and shrank it to the overlap once more)
        raise InputError(
            f"input.path {arr.attrs.get('source', '')}: these frames are already derotated "
            f"(to {arr.attrs['derotated_to']}, a specfit cube); set prep.derotate: false"
        )
    nt, ny, nx = arr.sizes["time"], arr.sizes["y"], arr.sizes["x"]
    times = _times(arr)
    ref = reference_index(arr, reference_time)
    ref_header = frame_header(arr, ref, times[ref])
    w_ref = _wcs(ref_header)
    rows, cols = np.meshgrid(
        np.linspace(0, ny - 1, _GRID), np.linspace(0, nx - 1, _GRID), indexing="ij"
    )
    rows, cols = rows.ravel(), cols.ravel()
    world = w_ref.pixel_to_world(cols, rows)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hgs = world.transform_to(HeliographicStonyhurst(obstime=world.obstime))
    # Points off the limb have no surface position (NaN longitude): they cannot rotate.
    ok = np.isfinite(hgs.lon.value)
    if ok.sum() < 8:
        raise InputError(
            "derotation needs a field on the solar disk, but fewer than 8 of 49 grid points of "
            "the reference frame are on the disk; set prep.derotate: false for off-limb fields"
        )
    world = world[ok]
    src = np.vstack([rows[ok], cols[ok]])

    # Rotation at knot frames, with the reference pointing for every frame (so only solar
    # rotation and observer motion enter; per-frame pointing is added below).
    # The reference frame is a knot so that its map is the identity (to rounding).
    knots = np.round(np.linspace(0, nt - 1, min(nt, _N_KNOTS))).astype(int)
    knots = np.unique(np.append(knots, ref))
    kc = np.empty((len(knots), 2, 6))
    max_res = 0.0
    pointing_keys = ("CRPIX1", "CRPIX2", "CRVAL1", "CRVAL2")
    for j, i in enumerate(knots):
        h = frame_header(arr, int(i), times[i])
        for k in pointing_keys:
            if k in ref_header:
                h[k] = ref_header[k]
        with _PROPAGATE_LOCK, propagate_with_solar_surface(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            px, py = _wcs(h).world_to_pixel(world)
        dst = np.vstack([np.asarray(py), np.asarray(px)])
        good = np.isfinite(dst).all(axis=0)
        kc[j], res = _fit_map(src[:, good], dst[:, good], (ny, nx))
        max_res = max(max_res, res)
    tk = (times[knots] - times[0]).to_value("s")
    tt = (times - times[0]).to_value("s")
    if len(knots) >= 4:
        from scipy.interpolate import CubicSpline

        coef = CubicSpline(tk, kc, axis=0)(tt)
    elif len(knots) >= 2:
        coef = np.stack(
            [[np.interp(tt, tk, kc[:, a, b]) for b in range(6)] for a in range(2)]
        ).transpose(2, 0, 1)
    else:
        coef = np.repeat(kc, nt, axis=0)

    # Pointing: the same sky position lands on another pixel when CRPIX/CRVAL change.
    names = {"wcs_crpix1": "CRPIX1", "wcs_crpix2": "CRPIX2"}
    names.update({"wcs_crval1": "CRVAL1", "wcs_crval2": "CRVAL2"})
    if any(c in arr.coords for c in names):
        centre = w_ref.pixel_to_world((nx - 1) / 2.0, (ny - 1) / 2.0)
        base_x, base_y = w_ref.world_to_pixel(centre)
        for i in range(nt):
            h = ref_header.copy()
            for name, key in names.items():
                if name in arr.coords:
                    h[key] = float(arr[name].values[i])
            if all(h.get(k) == ref_header.get(k) for k in pointing_keys):
                continue
            px, py = _wcs(h).world_to_pixel(centre)
            coef[i, :, 0] += [float(py) - float(base_y), float(px) - float(base_x)]
    return DerotationPlan(coef, (ny, nx), ref, times[ref], max_res)


def valid_box(
    plan: DerotationPlan, ny: int, nx: int, margin: float = 0.0, names: Any = None
) -> tuple[int, int, int, int]:
    """Largest (y0, y1, x0, x1) box (exclusive ends) of reference pixels that every frame
    covers, with ``margin`` px to spare (e.g. for co-alignment shifts).

    Where no pixel is covered by every frame, the error names the frame whose position lies
    furthest from the frames' median (``names``: the frames' files in time order), the
    culprit when one frame's pointing is wrong.

    Frames larger than 1024 px are tested on a grid of every s-th pixel (plus the last), so
    that the grid has <= 1024 points a side; the box spans the valid grid points. Pixels
    between two valid grid points are valid because each frame's covered region is convex
    to within the maps' tiny curvature (they are nearly translations); up to s - 1 valid
    pixels outside the grid box are given up.
    """
    step = max(1, int(np.ceil(max(ny, nx) / 1024)))
    ys = np.arange(0, ny, step, dtype=float)
    xs = np.arange(0, nx, step, dtype=float)
    if ys[-1] != ny - 1:
        ys = np.append(ys, ny - 1)
    if xs[-1] != nx - 1:
        xs = np.append(xs, nx - 1)
    rows, cols = np.meshgrid(ys, xs, indexing="ij")
    ok = np.ones(rows.shape, bool)
    m = margin - _EDGE_TOL
    for i in range(plan.coef.shape[0]):
        r, c = plan.source_coords(i, rows, cols)
        ok &= (r >= m) & (r <= ny - 1 - m) & (c >= m) & (c <= nx - 1 - m)
    if not ok.any():
        # the frame whose shift lies furthest from the frames' median shift (the reference
        # frame itself when its own pointing is the wrong one)
        shift = plan.coef[:, :, 0]
        off = np.hypot(*(shift - np.median(shift, axis=0)).T)
        worst = int(np.argmax(off))
        names = list(names) if names is not None and len(names) == off.size else None
        which = f"frame {worst}" + (f" ({names[worst]})" if names else "")
        raise InputError(
            f"no pixel stays inside the field of view in every frame: {which} lies "
            f"{off[worst]:.0f} px from the frames' median position (the median frame "
            f"{float(np.median(off)):.1f} px); if its pointing (CRVAL/CRPIX) is wrong, remove "
            "it; else use a shorter series (input.max_frames), a larger field, or a smaller "
            "prep.coalign_max_shift"
        )
    gy0, gy1, gx0, gx1 = largest_rectangle(ok)
    return int(ys[gy0]), int(ys[gy1 - 1]) + 1, int(xs[gx0]), int(xs[gx1 - 1]) + 1


def largest_rectangle(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Largest all-True axis-aligned rectangle (y0, y1, x0, x1) of ``mask`` (O(ny nx))."""
    ny, nx = mask.shape
    heights = np.zeros(nx, int)
    best = (0, (0, 0, 0, 0))
    for y in range(ny):
        heights = np.where(mask[y], heights + 1, 0)
        stack: list[int] = []
        for x in range(nx + 1):
            h = heights[x] if x < nx else 0
            while stack and heights[stack[-1]] >= h:
                top = stack.pop()
                left = stack[-1] + 1 if stack else 0
                area = heights[top] * (x - left)
                if area > best[0]:
                    best = (area, (y - heights[top] + 1, y + 1, left, x))
            stack.append(x)
    if best[0] == 0:
        raise InputError(
            "no pixel stays inside the field of view in every frame; use a shorter series "
            "(input.max_frames), a larger field, or a smaller prep.coalign_max_shift"
        )
    return tuple(int(v) for v in best[1])


def resample_frame(frame: np.ndarray, coords: np.ndarray, order: int) -> np.ndarray:
    """``frame`` sampled at (row, col) ``coords`` (2, ny, nx) by a spline of ``order``.

    NaN pixels are filled with the frame median for the spline and masked again wherever they
    contribute; points outside the frame become NaN.
    """
    bad = ~np.isfinite(frame)
    if bad.all():
        return np.full(coords.shape[1:], np.nan, np.float32)
    filled = np.where(bad, np.nanmedian(frame), frame).astype(np.float64)
    # Rounding can put an edge pixel 1e-9 px outside the frame: pull such points in.
    ny, nx = frame.shape
    lim = np.array([ny - 1, nx - 1], float).reshape((2,) + (1,) * (coords.ndim - 1))
    near = (coords > -_EDGE_TOL) & (coords < lim + _EDGE_TOL)
    coords = np.where(near, np.clip(coords, 0.0, lim), coords)
    # mode "constant" gives cval only outside [0, n-1]; inside, the spline uses the edge
    # samples, so the valid region is exactly what valid_box() computes.
    out = ndimage.map_coordinates(filled, coords, order=order, mode="constant", cval=np.nan)
    if bad.any():
        spread = ndimage.map_coordinates(bad.astype(float), coords, order=1, cval=1.0)
        out[spread > 1e-3] = np.nan
    return out.astype(np.float32)


def _derotate_block(
    block: np.ndarray,
    plan: DerotationPlan,
    order: int,
    region: tuple[int, int, int, int],
    block_info=None,
) -> np.ndarray:
    t0 = block_info[0]["array-location"][0][0]
    y0, y1, x0, x1 = region
    rows, cols = np.mgrid[y0:y1, x0:x1].astype(float)
    out = np.empty((block.shape[0], y1 - y0, x1 - x0), np.float32)
    for k in range(block.shape[0]):
        out[k] = resample_frame(block[k], plan.source_coords(t0 + k, rows, cols), order)
    return out


def derotate(
    arr: xr.DataArray,
    reference_time: str | None = None,
    method: str = DEFAULTS.prep.derotate_method,
    order: int = DEFAULTS.prep.interpolation_order,
    plan: DerotationPlan | None = None,
    region: tuple[int, int, int, int] | None = None,
) -> xr.DataArray:
    """Lazily derotate a (time, y, x) DataArray onto its reference frame's grid.

    Parameters
    ----------
    arr
        From :func:`specfit.io.open_input`, with a helioprojective WCS and absolute times.
    reference_time
        ISO time of the reference frame (the nearest frame is used); None = middle frame.
    method
        "polynomial" (default) or "reproject" (see the module docstring).
    order
        Spline order of the resampling (3 keeps the noise level nearly constant as the
        sub-pixel phase drifts; 1 smooths by a phase-dependent amount).
    plan
        A precomputed :func:`plan_derotation` (reused by :func:`specfit.prep.apply_prep`).
    region
        (y0, y1, x0, x1) positions (exclusive ends) of the reference grid to produce; None =
        all. Only these pixels are computed, so a small cutout of a large frame is cheap.

    Returns
    -------
    xarray.DataArray
        The region of the reference grid; pixels not seen in a frame are NaN; ``hpc_x``/``hpc_y`` of the reference
        frame; attrs ``derotated_to`` (ISO time), ``derotate_method`` and
        ``derotate_max_residual_px``; the per-frame pointing/observer coords are dropped.
    """
    nt, ny, nx = arr.shape
    if plan is None:
        plan = plan_derotation(arr, reference_time)
    data = whole_frames(arr.data)
    region = (0, ny, 0, nx) if region is None else tuple(int(v) for v in region)
    y0, y1, x0, x1 = region
    if not (0 <= y0 < y1 <= ny and 0 <= x0 < x1 <= nx):
        raise ValueError(f"region {region} is not inside the {ny} x {nx} frame")
    meta = np.empty((0, 0, 0), np.float32)
    if method == "polynomial":
        out = data.map_blocks(
            _derotate_block,
            plan,
            order,
            region,
            chunks=(data.chunks[0], (y1 - y0,), (x1 - x0,)),
            dtype=np.float32,
            meta=meta,
        )
    elif method == "reproject":
        times = _times(arr)
        ref_h = frame_header(arr, plan.ref_index, times[plan.ref_index]).tostring(sep="\n")
        heads = [frame_header(arr, i, times[i]).tostring(sep="\n") for i in range(nt)]
        out = data.map_blocks(_reproject_block, heads, ref_h, dtype=np.float32, meta=meta)
        out = out[:, y0:y1, x0:x1]
    else:
        raise InputError(f"prep.derotate_method {method!r}: use polynomial or reproject")
    drop = [c for c in arr.coords if c.startswith(("wcs_crpix", "wcs_crval", "obs_"))]
    drop += [c for c in ("hpc_x", "hpc_y") if c in arr.coords]
    res = arr.drop_vars(drop).isel(y=slice(y0, y1), x=slice(x0, x1)).copy(data=out)
    ref_h = frame_header(arr, plan.ref_index, plan.ref_time)
    hx, hy = hpc_coords(ref_h, ny, nx)
    hx, hy = hx[y0:y1, x0:x1], hy[y0:y1, x0:x1]
    res = res.assign_coords(
        hpc_x=(("y", "x"), hx, {"units": "arcsec", "long_name": "helioprojective x"}),
        hpc_y=(("y", "x"), hy, {"units": "arcsec", "long_name": "helioprojective y"}),
    )
    res.attrs.update(
        derotated_to=plan.ref_time.utc.isot + "Z",
        derotate_method=method,
        derotate_max_residual_px=float(plan.max_residual_px),
        reference_index=int(plan.ref_index),
        wcs_header=ref_h.tostring(sep="\n"),
    )
    return res


def _reproject_block(block: np.ndarray, heads: list[str], ref: str, block_info=None) -> np.ndarray:
    """Reference method: sunpy Map.reproject_to inside propagate_with_solar_surface."""
    import sunpy.map
    from sunpy.coordinates import propagate_with_solar_surface

    t0 = block_info[0]["array-location"][0][0]
    ref_h = fits.Header.fromstring(ref, sep="\n")
    out = np.empty(block.shape, np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref_wcs = sunpy.map.Map(np.zeros(block.shape[1:], np.float32), ref_h).wcs
        for k in range(block.shape[0]):
            h = fits.Header.fromstring(heads[t0 + k], sep="\n")
            m = sunpy.map.Map(block[k].astype(np.float64), h)
            # propagate_with_solar_surface switches a process-wide transform on and off: two
            # threads of one worker would undo each other's, so frames take turns.
            with _PROPAGATE_LOCK, propagate_with_solar_surface():
                r = m.reproject_to(ref_wcs, algorithm="interpolation")
            out[k] = np.asarray(r.data, np.float32)
    return out
