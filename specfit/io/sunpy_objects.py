"""sunpy objects already in memory: a ``MapSequence``, a list of Maps, or an ``NDCube``.

What Fido/JSOC downloads end up as can come in without being written back to files:

- ``sunpy.map.MapSequence`` or a list/tuple of ``sunpy.map.GenericMap``: one frame per Map;
  each frame's time, exposure, observer and pointing come from its ``meta`` (the FITS header
  sunpy read), through the same header functions as the FITS readers, so the same frames
  give the same cube whether they come from files or from Maps;
- ``ndcube.NDCube`` with a time axis: times from the cube's world coordinates along that
  axis, the helioprojective WCS from its celestial part, the exposure from ``meta``.

Dask-backed data (e.g. Maps made with dask arrays) stay lazy: the frames are stacked as dask
arrays and cleaned per chunk; numpy-backed frames become one dask chunk each, without a copy.
"""

from __future__ import annotations

from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
from astropy.time import Time, TimeDelta

from specfit.config import InputConfig
from specfit.errors import InputError

from ._base import (
    assemble_array,
    celestial_header,
    clean_frames,
    flagged_frames,
    hpc_coords,
    instrument_attrs,
    reference_frame,
    relative_seconds,
    series_field,
)
from .fits_series import frame_geometry, header_time

__all__ = ["is_sunpy_object", "open_sunpy"]


def is_sunpy_object(obj: Any) -> bool:
    """True for a MapSequence, a non-empty list/tuple of Maps, or an NDCube-like cube."""
    mod = type(obj).__module__ or ""
    # NDCube subclasses of other packages (irispy, sunraster) share its axis API.
    if mod.startswith(("sunpy.map", "ndcube")) or hasattr(obj, "array_axis_physical_types"):
        return True
    if isinstance(obj, list | tuple) and obj:
        return all((type(m).__module__ or "").startswith("sunpy.map") for m in obj)
    return False


def open_sunpy(obj: Any, cfg: InputConfig | None = None) -> xr.DataArray:
    """Open in-memory sunpy data as the standard lazy (time, y, x) "intensity" DataArray.

    Parameters
    ----------
    obj
        A ``sunpy.map.MapSequence``, a list of ``sunpy.map`` Maps, or an ``ndcube.NDCube``
        whose array has a time axis and two helioprojective axes.
    cfg
        The ``input`` section: ``time_key``, ``exposure_key``, ``normalise_exposure``,
        ``missing_below`` and ``max_frames`` apply as for files; ``path``/``pattern`` are
        not used.

    Returns
    -------
    xarray.DataArray
        As :func:`specfit.io.open_input`; ``attrs["kind"]`` is "memory" and
        ``attrs["input_token"]`` a name that changes with the data, times and scaling.

    Raises
    ------
    InputError
        An object of another type, Maps of different shapes, missing times, duplicate times
        or a missing exposure when normalising.
    """
    cfg = cfg or InputConfig()
    if type(obj).__name__ == "MapSequence" or isinstance(obj, list | tuple):
        maps = list(obj.maps if hasattr(obj, "maps") else obj)
        return _open_maps(maps, cfg, type(obj).__name__)
    if type(obj).__name__ == "NDCube" or hasattr(obj, "array_axis_physical_types"):
        return _open_ndcube(obj, cfg)
    raise InputError(
        f"data= got a {type(obj).__name__}; pass a sunpy.map.MapSequence, a list of sunpy "
        "Maps or an ndcube.NDCube with a time axis"
    )


def _map_date(m: Any, index: int, why: Exception) -> Time:
    """sunpy's own time of a Map (its choice of keys for the instrument), where the keys
    ``input.time_key`` names do not give one. sunpy falls back to the current time, with a
    warning, when the Map's metadata holds no time it reads (none, or DATE-OBS with a UTC
    offset): that is refused, naming the Map, not taken as the frame's time."""
    import warnings

    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        date = m.date
    if any("observation time" in str(w.message) for w in said):
        raise InputError(
            f"data= Map {index}: no observation time sunpy can read in its metadata ({why}); "
            "set meta['DATE-OBS'] to an ISO time in UTC without an offset (e.g. "
            "2012-06-06T06:01:24.5), or name the key with input.time_key"
        )
    return Time(date)


def _open_maps(maps: list, cfg: InputConfig, label: str) -> xr.DataArray:
    if len(maps) < 2:
        raise InputError(f"data=: {len(maps)} Map(s); a time series needs at least 2")
    drop = flagged_frames([m.meta for m in maps], cfg, [f"data= Map {i}" for i in range(len(maps))])
    number = np.flatnonzero(~drop)  # each Map's index in what the user gave
    maps = [maps[i] for i in number]
    # flagged Maps (a dark or calibration image may have another size) are left out first
    shape = tuple(maps[0].data.shape)
    for i, m in enumerate(maps):
        if tuple(m.data.shape) != shape or len(shape) != 2:
            raise InputError(
                f"data=: Map {number[i]} has shape {tuple(m.data.shape)} but Map {number[0]} "
                f"has {shape}; all "
                "Maps must be 2-D and of one size (submap or resample them first)"
            )
    metas = [m.meta for m in maps]
    from specfit.io.fits_series import check_one_channel, check_one_grid

    # the checks a folder of the same frames as FITS files gets (one channel, one grid)
    names = [f"data= Map {number[i]}" for i in range(len(maps))]
    check_one_channel(names, metas)
    check_one_grid(names, metas, shape)
    times_list, used = [], set()
    for i, (m, meta) in enumerate(zip(maps, metas, strict=True)):
        try:
            t, k = header_time(meta, list(cfg.time_key), f"data= Map {number[i]}")
        except InputError as exc:
            t, k = _map_date(m, number[i], exc), "Map.date"
        times_list.append(t)
        used.add(k)
    times = Time(times_list)
    rel = relative_seconds(times)
    order = np.argsort(rel, kind="stable")
    _check_increasing(rel[order], number[order])
    times = times[order]
    exposure = None
    if cfg.exposure_key:
        exp = np.array([_exposure(m, cfg.exposure_key) for m in maps], dtype=float)
        bad = ~(np.isfinite(exp) & (exp > 0))
        if np.any(bad) and cfg.normalise_exposure:
            j = int(np.flatnonzero(bad)[0])
            raise InputError(
                f"data= Map {number[j]}: no positive exposure (meta {cfg.exposure_key} or "
                "Map.exposure_time); set input.exposure_key, or input.normalise_exposure: false"
            )
        exposure = exp[order] if not np.all(bad) else None
    scale = 1.0 / exposure if (cfg.normalise_exposure and exposure is not None) else None
    # Integer frames mark missing pixels with BLANK, as in the FITS files they came from.
    blank = [
        meta.get("BLANK") if np.issubdtype(m.data.dtype, np.integer) else None
        for m, meta in zip(maps, metas, strict=True)
    ]
    raw = da.stack([_as_dask(maps[i].data) for i in order])
    blank_sorted = [blank[i] for i in order]
    data = _cleaned(raw, blank_sorted, cfg.missing_below, scale)
    ny, nx = shape
    cel, hpc, field = series_field(
        [metas[i] for i in order], times, ny, nx, scale is not None, max_frames=cfg.max_frames
    )
    attrs: dict[str, Any] = {
        "source": f"in-memory {label} of {len(maps)} Maps",
        "kind": "memory",
        "time_key": ",".join(sorted(used)),
        **field,
    }
    attrs["input_token"] = da.core.tokenize(data.name, rel[order])
    return assemble_array(
        data,
        times=times,
        exposure=exposure,
        attrs=attrs,
        hpc=hpc,
        max_frames=cfg.max_frames,
        time_coords=(
            frame_geometry([metas[i] for i in order], [f"data= Map {number[i]}" for i in order])
            if cel is not None
            else None
        ),
    )


def _open_ndcube(cube: Any, cfg: InputConfig) -> xr.DataArray:
    types = [tuple(t) for t in cube.array_axis_physical_types]
    if len(types) != 3:
        raise InputError(
            f"data=: the NDCube has {len(types)} array axes; specfit needs (time, y, x) - slice "
            "it to one time axis and two spatial axes"
        )
    t_axes = [i for i, t in enumerate(types) if any(s.startswith("time") for s in t)]
    if len(t_axes) != 1:
        raise InputError(
            f"data=: no single time axis in the NDCube (axis types {types}); give it a time "
            "axis (a WCS time axis or an extra coordinate 'time')"
        )
    ta = t_axes[0]
    world = cube.axis_world_coords(ta, wcs=cube.combined_wcs)
    tw = next((w for w in world if isinstance(w, Time)), None)
    meta = dict(cube.meta or {})
    if tw is None:
        # A time axis in seconds: relative to the WCS reference date or the header's start.
        secs = next(iter(world))
        start = cube.wcs.wcs.dateobs if hasattr(cube.wcs, "wcs") else ""
        start = start or _meta_get(meta, "DATE-OBS") or _meta_get(meta, "DATE_OBS")
        if not start:
            raise InputError(
                "data=: the NDCube's time axis is relative and no DATE-OBS says when it starts;"
                " add meta['DATE-OBS']"
            )
        tw = Time(start, scale="utc") + TimeDelta(np.asarray(secs.to_value("s")), format="sec")
    times = Time(tw).utc
    data = cube.data
    if ta != 0:
        data = (
            np.moveaxis(data, ta, 0) if not isinstance(data, da.Array) else da.moveaxis(data, ta, 0)
        )
    nt, ny, nx = data.shape
    rel = relative_seconds(times)
    order = np.argsort(rel, kind="stable")
    _check_increasing(rel[order], order)
    times = times[order]
    exposure = None
    if cfg.exposure_key and _meta_get(meta, cfg.exposure_key) is not None:
        exposure = np.full(nt, float(_meta_get(meta, cfg.exposure_key)))
    if cfg.normalise_exposure and cfg.exposure_key and exposure is None:
        raise InputError(
            f"data=: the NDCube's meta has no {cfg.exposure_key}; set input.exposure_key, or "
            "input.normalise_exposure: false"
        )
    scale = 1.0 / exposure if (cfg.normalise_exposure and exposure is not None) else None
    raw = _as_dask(data, frame_chunks=True)
    if not np.all(order == np.arange(nt)):
        raw = raw[order]
    cleaned = _cleaned(raw, None, cfg.missing_below, scale)
    cel = None
    try:
        cel_wcs = cube.wcs.celestial if hasattr(cube.wcs, "celestial") else None
        if cel_wcs is not None and cel_wcs.naxis == 2:
            h = cel_wcs.to_header()
            h["NAXIS1"], h["NAXIS2"] = nx, ny
            for k in ("DSUN_OBS", "HGLN_OBS", "HGLT_OBS", "RSUN_REF", "TELESCOP", "INSTRUME"):
                if _meta_get(meta, k) is not None:
                    h[k] = _meta_get(meta, k)
            cel = celestial_header(h, times[reference_frame(nt, cfg.max_frames)])
    except Exception:  # a WCS that astropy cannot express as FITS: no arcsec coordinates
        cel = None
    hpc = hpc_coords(cel, ny, nx) if cel is not None else None
    bunit = str(cube.unit or _meta_get(meta, "BUNIT") or "").strip()
    attrs: dict[str, Any] = {
        "source": f"in-memory NDCube {tuple(cube.data.shape)}",
        "kind": "memory",
        "bunit": (f"{bunit} / s" if bunit else "1 / s") if scale is not None else bunit,
        "exposure_normalised": scale is not None,
        "time_key": "NDCube time axis",
        "reference_index": reference_frame(nt, cfg.max_frames),
    }
    if cel is not None:
        attrs["wcs_header"] = cel.tostring(sep="\n")
    instrument_attrs({k.upper(): v for k, v in meta.items()}, attrs)
    attrs["input_token"] = da.core.tokenize(cleaned.name, rel[order])
    return assemble_array(
        cleaned, times=times, exposure=exposure, attrs=attrs, hpc=hpc, max_frames=cfg.max_frames
    )


def _meta_get(meta: dict, key: str) -> Any:
    for k in (key, key.lower(), key.upper()):
        if k in meta and meta[k] not in (None, ""):
            return meta[k]
    return None


def _exposure(m: Any, key: str) -> float:
    v = m.meta.get(key)
    if v is None and getattr(m, "exposure_time", None) is not None:
        return float(m.exposure_time.to_value("s"))
    try:
        return float(v)
    except (TypeError, ValueError):
        return np.nan


def _check_increasing(rel_sorted: np.ndarray, order: np.ndarray) -> None:
    d = np.diff(rel_sorted)
    if np.any(d <= 0):
        j = int(np.argmin(d))
        raise InputError(
            f"data=: frames {int(order[j])} and {int(order[j + 1])} have the same time; drop "
            "the duplicate"
        )


def _as_dask(a: Any, frame_chunks: bool = False) -> da.Array:
    """A dask view of ``a``: dask arrays as they are, numpy arrays without a copy."""
    if isinstance(a, da.Array):
        return a
    arr = np.asarray(a)
    if frame_chunks:  # one chunk per frame of a (t, y, x) cube, as the file readers give
        return da.from_array(arr, chunks=(1, *arr.shape[1:]))
    return da.from_array(arr, chunks=arr.shape)


class _Clean:
    """Picklable per-chunk ``clean_frames`` with the frames' BLANK values and scales."""

    def __init__(self, blank: list | None, missing_below: float | None, scale: Any) -> None:
        self.blank, self.missing_below, self.scale = blank, missing_below, scale

    def __call__(self, x: np.ndarray, block_info: dict | None = None) -> np.ndarray:
        t0, t1 = block_info[0]["array-location"][0]
        b = None if self.blank is None else self.blank[t0:t1]
        s = None if self.scale is None else self.scale[t0:t1]
        return clean_frames(x, b, self.missing_below, s)


def _cleaned(
    raw: da.Array,
    blank: list | None,
    missing_below: float | None,
    scale: np.ndarray | None,
) -> da.Array:
    """``clean_frames`` on every time chunk of ``raw`` (lazy), float32, with a name that
    changes with the data (the source arrays' names), the masking and the scaling."""
    raw = raw.rechunk({1: -1, 2: -1})  # whole frames per chunk, as the per-frame scale needs
    token = da.core.tokenize(
        raw.name, blank, missing_below, None if scale is None else np.asarray(scale).tobytes()
    )
    return raw.map_blocks(
        _Clean(blank, missing_below, scale),
        dtype=np.float32,
        meta=np.empty((0, 0, 0), np.float32),
        name=f"read-memory-{token}",
    )
