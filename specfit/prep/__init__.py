"""Preprocessing of the (time, y, x) frames before the cube is written.

:func:`apply_prep` chains, lazily and in this order: despike -> derotate -> coalign -> cutout.
The cutout is always trimmed to the pixels that every frame covers after derotation and
co-alignment, so no pixel of the result is ever outside the field of view.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import xarray as xr

from specfit.config import CutoutConfig, PrepConfig
from specfit.errors import InputError

from .coalign import coalign, estimate_shift, measure_shifts, shift_frame, smooth_shifts
from .derotate import derotate, plan_derotation, reference_index, valid_box
from .despike import despike, despike_frame

__all__ = [
    "apply_prep",
    "cutout_box",
    "despike",
    "despike_frame",
    "derotate",
    "plan_derotation",
    "valid_box",
    "coalign",
    "estimate_shift",
    "shift_frame",
    "measure_shifts",
    "smooth_shifts",
]


def _enabled(cfg: PrepConfig) -> bool:
    return bool(cfg.despike or cfg.derotate or cfg.coalign or cfg.cutout is not None)


def cutout_box(
    arr: xr.DataArray,
    cutout: CutoutConfig,
    hpc: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) positional index box (exclusive ends) of ``cutout`` in ``arr``.

    Pixel boxes refer to the ``y``/``x`` coordinate values (original pixel indices, x1/y1
    inclusive, x2/y2 exclusive); arcsec boxes select the columns whose ``hpc_x`` (along the
    middle row) and rows whose ``hpc_y`` (along the middle column) lie in [x1, x2], [y1, y2].
    ``hpc`` overrides the array's own ``hpc_x``/``hpc_y`` (e.g. the derotation reference).

    Raises
    ------
    InputError
        An arcsec box without ``hpc_x``/``hpc_y``, or a box that misses the field.
    """
    if cutout.units == "pixel":
        xs, ys = np.asarray(arr["x"].values), np.asarray(arr["y"].values)
        cols = np.flatnonzero((xs >= cutout.x1) & (xs < cutout.x2))
        rows = np.flatnonzero((ys >= cutout.y1) & (ys < cutout.y2))
        extent = f"x {xs.min()}..{xs.max()}, y {ys.min()}..{ys.max()} px"
    else:
        if hpc is None:
            if "hpc_x" not in arr.coords or "hpc_y" not in arr.coords:
                raise InputError(
                    "prep.cutout has units arcsec but the input has no helioprojective WCS "
                    "(no hpc_x/hpc_y); give the box in pixels with prep.cutout.units: pixel"
                )
            hpc = (np.asarray(arr["hpc_x"].values), np.asarray(arr["hpc_y"].values))
        ny, nx = hpc[0].shape
        hx = hpc[0][ny // 2, :]
        hy = hpc[1][:, nx // 2]
        cols = np.flatnonzero((hx >= cutout.x1) & (hx <= cutout.x2))
        rows = np.flatnonzero((hy >= cutout.y1) & (hy <= cutout.y2))
        extent = (
            f"x {np.nanmin(hx):.1f}..{np.nanmax(hx):.1f}, y {np.nanmin(hy):.1f}.."
            f"{np.nanmax(hy):.1f} arcsec"
        )
    if cols.size == 0 or rows.size == 0:
        raise InputError(
            f"prep.cutout {cutout.model_dump()} does not overlap the field ({extent}); fix "
            "x1/x2/y1/y2 (or units)"
        )
    if cutout.units == "pixel":
        lo_x, hi_x, lo_y, hi_y = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    else:  # the field's edges: half a pixel beyond the outer pixel centres
        px, py = 0.5 * np.nanmedian(np.abs(np.diff(hx))), 0.5 * np.nanmedian(np.abs(np.diff(hy)))
        lo_x, hi_x = np.nanmin(hx) - px, np.nanmax(hx) + px
        lo_y, hi_y = np.nanmin(hy) - py, np.nanmax(hy) + py
    if cutout.x1 < lo_x or cutout.x2 > hi_x or cutout.y1 < lo_y or cutout.y2 > hi_y:
        warnings.warn(
            f"prep.cutout x {cutout.x1:g}..{cutout.x2:g}, y {cutout.y1:g}..{cutout.y2:g} "
            f"{'px' if cutout.units == 'pixel' else 'arcsec'} reaches past the field ({extent}): "
            f"the maps cover its {int(rows.size)} x {int(cols.size)} px (y by x) inside it",
            stacklevel=3,
        )
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _intersect(box, want, cutout: CutoutConfig) -> tuple[int, int, int, int]:
    got = (max(want[0], box[0]), min(want[1], box[1]), max(want[2], box[2]), min(want[3], box[3]))
    if got[0] >= got[1] or got[2] >= got[3]:
        raise InputError(
            f"prep.cutout {cutout.model_dump()} lies outside the region every frame covers "
            f"(rows {box[0]}..{box[1]}, columns {box[2]}..{box[3]}); move the box inwards"
        )
    if got != tuple(want):
        warnings.warn(
            f"prep.cutout trimmed from rows {want[0]}:{want[1]}, cols {want[2]}:{want[3]} to "
            f"{got[0]}:{got[1]}, {got[2]}:{got[3]} so that every frame covers it",
            stacklevel=3,
        )
    return got


def apply_prep(da: xr.DataArray, cfg: PrepConfig) -> xr.DataArray:
    """Apply the configured preprocessing lazily: despike -> derotate -> coalign -> cutout.

    Parameters
    ----------
    da
        (time, y, x) intensity from :func:`specfit.io.open_input`.
    cfg
        The ``prep`` section (``despike``, ``despike_size``, ``despike_sigma``, ``derotate``,
        ``derotate_method``, ``reference_time``, ``interpolation_order``, ``coalign``,
        ``coalign_max_shift``, ``coalign_smooth``, ``cutout``).

    Everything stays lazy except ``coalign_smooth``, which measures all co-alignment shifts
    in one pass before returning.

    Returns
    -------
    xarray.DataArray
        The input itself when nothing is enabled; otherwise a lazy DataArray trimmed to the
        pixels every frame covers, with ``hpc_x``/``hpc_y`` of the kept pixels and attrs
        ``prep_box`` ([y0, y1, x0, x1] in input pixel positions) and ``prep_steps``.

    Raises
    ------
    InputError
        Derotation without a WCS/absolute times, an off-disk field, or a cutout that misses
        the field (all detected before any pixel is read).
    """
    if not _enabled(cfg):
        return da
    nt, ny, nx = da.sizes["time"], da.sizes["y"], da.sizes["x"]
    out = da
    steps: list[str] = []
    smooth = cfg.coalign and cfg.coalign_smooth is not None
    m = math.ceil(cfg.coalign_max_shift) if cfg.coalign else 0
    # With measured (smoothed) shifts the margin is known only after measuring them; until
    # then keep everything every frame covers.
    margin = float(cfg.coalign_max_shift) if (cfg.coalign and not smooth) else 0.0
    ref = None
    want = None  # the cutout, in positions of the input grid
    if cfg.despike:
        out = despike(out, cfg.despike_size, cfg.despike_sigma)
        steps.append("despike")
    if cfg.derotate:
        from specfit.io import hpc_coords

        from .derotate import frame_header

        plan = plan_derotation(out, cfg.reference_time)
        ref = plan.ref_index
        box = valid_box(plan, ny, nx, margin=margin, names=out.attrs.get("files"))
        if cfg.cutout is not None:
            ref_hpc = hpc_coords(frame_header(out, ref, plan.ref_time), ny, nx)
            want = cutout_box(out, cfg.cutout, ref_hpc)
    else:
        if cfg.coalign and not smooth and 2 * m >= min(ny, nx):
            raise InputError(
                f"prep.coalign_max_shift {cfg.coalign_max_shift} px leaves no pixels of a "
                f"{ny} x {nx} frame; make it smaller"
            )
        box = (m, ny - m, m, nx - m) if margin else (0, ny, 0, nx)
        if cfg.cutout is not None:
            want = cutout_box(out, cfg.cutout)
    if want is not None and not smooth:
        box = _intersect(box, want, cfg.cutout)
    # Only this region (the kept box plus the co-alignment margin) is ever computed, so a
    # small cutout of a large frame costs what its pixels cost.
    area = box if (want is None or not smooth) else _overlap(box, _grow(want, m, ny, nx))
    region = area if smooth else _grow(area, m, ny, nx)
    if cfg.derotate:
        out = derotate(
            out,
            method=cfg.derotate_method,
            order=cfg.interpolation_order,
            plan=plan,
            region=region,
        )
        steps.append("derotate")
    elif region != (0, ny, 0, nx):
        out = out.isel(y=slice(region[0], region[1]), x=slice(region[2], region[3]))
    origin = (region[0], region[2])
    if cfg.coalign:
        if ref is None:
            ref = reference_index(out, cfg.reference_time) if cfg.reference_time else nt // 2
        shifts = None
        if smooth:
            measured = measure_shifts(out, ref)
            shifts = smooth_shifts(out["time"].values, measured, int(cfg.coalign_smooth))
            shifts = np.clip(shifts, -cfg.coalign_max_shift, cfg.coalign_max_shift)
            # Output pixel y reads frame i at y + dy_i: keep rows whose sources stay inside.
            lo = np.ceil(np.maximum(0.0, -shifts.min(axis=0)) - 1e-6).astype(int)
            hi = np.ceil(np.maximum(0.0, shifts.max(axis=0)) - 1e-6).astype(int)
            box = (box[0] + lo[0], box[1] - hi[0], box[2] + lo[1], box[3] - hi[1])
            if box[0] >= box[1] or box[2] >= box[3]:
                raise InputError(
                    "co-alignment shifts exceed the field; lower prep.coalign_max_shift"
                )
            if want is not None:
                box = _intersect(box, want, cfg.cutout)
        out = coalign(out, ref, cfg.coalign_max_shift, cfg.interpolation_order, shifts=shifts)
        steps.append("coalign")
    if want is not None:
        steps.append("cutout")
    rel = (box[0] - origin[0], box[1] - origin[0], box[2] - origin[1], box[3] - origin[1])
    if rel != (0, out.sizes["y"], 0, out.sizes["x"]):
        out = out.isel(y=slice(rel[0], rel[1]), x=slice(rel[2], rel[3]))
    out.attrs["prep_box"] = [int(v) for v in box]
    out.attrs["prep_steps"] = steps
    return out


def _grow(box, m: int, ny: int, nx: int) -> tuple[int, int, int, int]:
    return (max(0, box[0] - m), min(ny, box[1] + m), max(0, box[2] - m), min(nx, box[3] + m))


def _overlap(a, b) -> tuple[int, int, int, int]:
    return (max(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), min(a[3], b[3]))
