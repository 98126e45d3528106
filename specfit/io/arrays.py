"""Plain arrays: a .npy cube (t, y, x) or a Zarr store, with frame times given separately.

- ``.npy``: memory-mapped, read a few frames per dask chunk; times from ``input.times``
  (a .npy of seconds from the first frame, or of datetime64).
- Zarr: an xarray dataset (``intensity`` or the only 3-D variable, dims (time, y, x)) whose
  ``time`` coordinate is seconds (with ``attrs["start_time"]``) or datetime64 — e.g. a
  ``cube.zarr`` written by specfit — or a bare 3-D Zarr array with ``input.times``.
"""

from __future__ import annotations

import os
from pathlib import Path

import dask.array as da
import numpy as np
import xarray as xr
from astropy.time import Time, TimeDelta

from specfit.config import InputConfig
from specfit.errors import InputError, missing_input

from ._base import CHUNK_BYTES, LazyFrames, assemble, cube_time_chunk, load_times, parse_time

__all__ = ["open_array"]

# Relative times with no absolute start get this nominal epoch, stated in attrs["time_note"].
_NOMINAL_START = "2000-01-01T00:00:00"


class _ReadNpy:
    def __call__(self, path: str, start: int, stop: int) -> np.ndarray:
        return np.asarray(np.load(path, mmap_mode="r")[start:stop])


def open_array(cfg: InputConfig, kind: str) -> xr.DataArray:
    """Open a .npy cube (``kind="array"``) or a Zarr store (``kind="zarr"``) lazily.

    Raises
    ------
    InputError
        Missing file, wrong dimensionality, missing or mismatched times.
    """
    path = cfg.path
    if not path or not os.path.exists(path):
        raise missing_input("input.path", path)
    if kind == "zarr":
        return _open_zarr(cfg)
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:
        raise InputError(f"{path}: not a readable .npy array ({exc})") from None
    if arr.ndim != 3:
        raise InputError(f"{path}: needs a 3-D (time, y, x) array, got shape {arr.shape}")
    _check_real(arr.dtype, path)
    if not cfg.times:
        raise InputError(
            f"{path}: a .npy cube has no frame times; give input.times (a .npy of seconds)"
        )
    nt, ny, nx = arr.shape
    times = _as_time(load_times(cfg.times, nt))
    order = np.argsort((times - times[0]).to_value("s"), kind="stable")
    _check_increasing(times[order], cfg.times)
    frames = LazyFrames(
        read=_ReadNpy(),
        source=str(Path(path).resolve()),
        shape=(nt, ny, nx),
        order=order,
        missing_below=cfg.missing_below,
        zero_is_missing=False,  # a computed array (e.g. a base difference) keeps its zeros
    )
    attrs = _plain_attrs(path, "array", isinstance(load_times(cfg.times, nt), Time))
    return assemble(
        frames,
        times=times[order],
        exposure=None,
        time_chunk=cube_time_chunk(nt, ny, nx),
        attrs=attrs,
        max_frames=cfg.max_frames,
    )


def _as_time(t: np.ndarray | Time) -> Time:
    if isinstance(t, Time):
        return t
    return Time(_NOMINAL_START, scale="utc") + TimeDelta(t - t[0], format="sec")


def _check_real(dtype, path: str) -> None:
    """Intensities are real numbers: complex or boolean arrays are refused, not cast."""
    if np.dtype(dtype).kind not in "fiu":
        raise InputError(
            f"{path}: the intensities are {np.dtype(dtype)}, not real numbers (int or float); "
            "store the image values themselves (e.g. the modulus of complex data)"
        )


def _check_increasing(times: Time, where: str) -> None:
    d = np.diff((times - times[0]).to_value("s"))
    if np.any(d <= 0):
        raise InputError(f"{where}: two frames have the same time; give distinct frame times")


def _plain_attrs(path: str, kind: str, absolute: bool) -> dict:
    attrs = {
        "source": str(Path(path).resolve()),
        "kind": kind,
        "bunit": "",
        "exposure_normalised": False,
    }
    if not absolute:
        attrs["time_note"] = f"relative times only; start_time is nominal ({_NOMINAL_START})"
    return attrs


def _open_zarr(cfg: InputConfig) -> xr.DataArray:
    path = cfg.path
    ds = None
    try:
        ds = xr.open_zarr(path, consolidated=_consolidated(path))
    except Exception:
        ds = None
    if ds is not None and len(ds.data_vars):
        name = "intensity" if "intensity" in ds else None
        if name is None:
            cands = [v for v in ds.data_vars if ds[v].ndim == 3]
            if len(cands) != 1:
                raise InputError(
                    f"{path}: expected a variable 'intensity' (or exactly one 3-D variable), "
                    f"found {list(ds.data_vars)}; rename the variable to 'intensity'"
                )
            name = cands[0]
        var = ds[name]
        if var.dims != ("time", "y", "x"):
            raise InputError(f"{path}: variable {name} has dims {var.dims}, need (time, y, x)")
        if "time" not in var.coords and not cfg.times:
            raise InputError(f"{path}: no time coordinate; give input.times (a .npy of seconds)")
        nt = var.sizes["time"]
        if cfg.times:
            times = _as_time(load_times(cfg.times, nt))
            absolute = isinstance(load_times(cfg.times, nt), Time)
        elif np.issubdtype(var["time"].dtype, np.datetime64):
            times = Time(var["time"].values.astype("datetime64[ns]").astype(str), scale="utc")
            absolute = True
        else:
            secs = np.asarray(var["time"].values, dtype=float)
            if not np.all(np.isfinite(secs)):
                bad = np.flatnonzero(~np.isfinite(secs))
                raise InputError(
                    f"{path}: the time coordinate is not a finite number at frame(s) "
                    f"{bad[:5].tolist()}{' ...' if bad.size > 5 else ''} (of {secs.size}); "
                    "give every frame a time, or drop those frames from the store"
                )
            start = var.attrs.get("start_time") or ds.attrs.get("start_time")
            absolute = bool(start)
            t0 = parse_time(start, f"{path}: attrs start_time") if start else None
            times = (
                t0 + TimeDelta(secs - secs[0], format="sec") if t0 is not None else _as_time(secs)
            )
        data = var.data
        attrs = {k: v for k, v in var.attrs.items() if k not in ("start_time",)}
        attrs.update(_plain_attrs(path, "zarr", absolute))
        for k in ("bunit", "instrument", "wavelength", "wcs_header", "exposure_normalised"):
            if k in var.attrs:
                attrs[k] = var.attrs[k]
        extra = {c: var[c].values for c in ("hpc_x", "hpc_y") if c in var.coords}
        exposure = var["exposure"].values if "exposure" in var.coords else None
    else:
        import zarr

        try:
            z = zarr.open_array(path, mode="r")
        except Exception as exc:
            raise InputError(
                f"{path}: neither an xarray dataset nor a Zarr array ({exc}); fix input.path"
            ) from None
        if z.ndim != 3:
            raise InputError(f"{path}: needs a 3-D (time, y, x) array, got shape {z.shape}")
        if not cfg.times:
            raise InputError(f"{path}: a bare Zarr array has no times; give input.times")
        nt = z.shape[0]
        lt = load_times(cfg.times, nt)
        times, absolute = _as_time(lt), isinstance(lt, Time)
        data = da.from_zarr(z)
        attrs = _plain_attrs(path, "zarr", absolute)
        extra, exposure = {}, None
    order = np.argsort((times - times[0]).to_value("s"), kind="stable")
    _check_increasing(times[order], path)
    if np.any(order != np.arange(nt)):
        data = data[order]
        exposure = exposure[order] if exposure is not None else None
    _check_real(data.dtype, path)
    data = data.astype(np.float32)
    if cfg.missing_below is not None:
        data = da.where(data < cfg.missing_below, np.float32(np.nan), data)
    data = da.where(da.isfinite(data), data, np.float32(np.nan))
    # The store's own chunks are kept unless one holds more than ~16 MB: a cube stored in
    # spatial blocks of many frames (120 x 128 x 128) is then read once per block, where
    # splitting it into single frames made every slab of the cube stage decode the blocks
    # again. Steps that need whole frames (prep) cut them themselves (whole_frames).
    tc, cy, cx = (c[0] for c in data.chunks)
    if tc * cy * cx * 4 > CHUNK_BYTES:
        data = data.rechunk({0: max(1, CHUNK_BYTES // (cy * cx * 4))})
    times = times[order]
    out = xr.DataArray(
        data,
        dims=("time", "y", "x"),
        coords={
            "time": ("time", (times - times[0]).to_value("s").astype(np.float64), {"units": "s"}),
            "y": ("y", np.arange(data.shape[1], dtype=np.int64), {"units": "pixel"}),
            "x": ("x", np.arange(data.shape[2], dtype=np.int64), {"units": "pixel"}),
        },
        name="intensity",
        attrs=attrs,
    )
    if exposure is not None:
        out = out.assign_coords(exposure=("time", np.asarray(exposure, float), {"units": "s"}))
    for c, v in extra.items():
        out = out.assign_coords({c: (("y", "x"), v, {"units": "arcsec"})})
    out.attrs["start_time"] = times[0].utc.isot + "Z"
    if cfg.max_frames is not None:
        out = out.isel(time=slice(0, cfg.max_frames))
    return out


def _consolidated(path: str) -> bool | None:
    """True when the store has consolidated metadata (v2 .zmetadata or v3 in zarr.json)."""
    if os.path.exists(os.path.join(path, ".zmetadata")):
        return True
    meta = os.path.join(path, "zarr.json")
    if os.path.exists(meta):
        import json

        with open(meta) as fh:
            return bool(json.load(fh).get("consolidated_metadata"))
    return None
