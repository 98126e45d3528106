"""Plain arrays: a .npy cube (t, y, x) or a Zarr store, with frame times given separately.

- ``.npy``: memory-mapped, read a few frames per dask chunk; times from ``input.times``
  (a .npy of seconds from the first frame, or of datetime64).
- Zarr: an xarray dataset (``intensity`` or the only 3-D variable, dims (time, y, x)) whose
  ``time`` coordinate is seconds (with ``attrs["start_time"]``) or datetime64 — e.g. a
  ``cube.zarr`` written by specfit — or a bare 3-D Zarr array with ``input.times``.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
from astropy.time import Time, TimeDelta

from specfit.config import InputConfig
from specfit.errors import InputError, missing_input

from ._base import (
    CHUNK_BYTES,
    LazyFrames,
    assemble,
    check_finite_times,
    cube_time_chunk,
    load_times,
    parse_time,
    seconds_per,
)

__all__ = ["open_array", "missing_chunks"]

log = logging.getLogger("specfit")

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
    lt = load_times(cfg.times, nt, arr.shape)
    times = _as_time(lt)
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
    attrs = _plain_attrs(path, "array", isinstance(lt, Time))
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
    # the earliest time (not the first listed) is the nominal start the time_note names
    return Time(_NOMINAL_START, scale="utc") + TimeDelta(t - np.min(t), format="sec")


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


def _header_on_own_grid(text: str, var: xr.DataArray) -> str:
    """A cube's WCS header moved to the cube's own pixel grid. A specfit cube of a cutout
    keeps the frames' header with ``y``/``x`` = the frames' pixel indices (starting at the
    cutout's corner); the reader numbers the pixels from 0, so the reference pixel moves by
    that corner (else exported maps and derotation were off by it: 80 x 40 px on a cutout)."""
    from astropy.io import fits

    origin = []
    for dim in ("x", "y"):
        v = np.asarray(var[dim].values) if dim in var.coords else np.zeros(1)
        whole = v.dtype.kind in "iu" or (v.dtype.kind == "f" and np.all(v == np.round(v)))
        origin.append(int(v[0]) if v.size and whole and np.all(np.diff(v) == 1) else 0)
    if origin == [0, 0]:
        return text
    h = fits.Header.fromstring(str(text), sep="\n")
    h["CRPIX1"] = float(h.get("CRPIX1", 0.0)) - origin[0]
    h["CRPIX2"] = float(h.get("CRPIX2", 0.0)) - origin[1]
    return h.tostring(sep="\n")


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
        _warn_missing_chunks(
            os.path.join(path, name), f"{path}: array {name}", var.encoding.get("_FillValue")
        )
        if var.dims != ("time", "y", "x"):
            hint = (
                f"; store it transposed, e.g. ds[{name!r}].transpose('time', 'y', 'x')"
                if set(var.dims) == {"time", "y", "x"}
                else "; name its dims time, y and x"
            )
            raise InputError(
                f"{path}: variable {name} has dims {var.dims}, need (time, y, x){hint}"
            )
        if "time" not in var.coords and not cfg.times:
            raise InputError(f"{path}: no time coordinate; give input.times (a .npy of seconds)")
        nt = var.sizes["time"]
        if cfg.times:
            lt = load_times(cfg.times, nt, var.shape)
            times, absolute = _as_time(lt), isinstance(lt, Time)
        elif np.issubdtype(var["time"].dtype, np.datetime64):
            check_finite_times(
                var["time"].values,
                f"{path}: the time coordinate has no time (NaT)",
                "give every frame a time, or drop those frames from the store",
            )
            times = Time(var["time"].values.astype("datetime64[ns]").astype(str), scale="utc")
            absolute = True
        else:
            if np.issubdtype(var["time"].dtype, np.timedelta64):
                # durations (xarray decodes a coordinate in "hours"... as timedelta64[ns]:
                # read as numbers they were 1e9 x the seconds); NaT -> NaN
                secs = var["time"].values / np.timedelta64(1, "s")
            else:
                # in the coordinate's units (min or ms were read as seconds)
                per = seconds_per(var["time"].attrs.get("units"), f"{path}: time coordinate units")
                secs = np.asarray(var["time"].values, dtype=float) * per
            check_finite_times(
                secs,
                f"{path}: the time coordinate is not a finite number",
                "give every frame a time, or drop those frames from the store",
            )
            start = var.attrs.get("start_time") or ds.attrs.get("start_time")
            absolute = bool(start)
            t0 = (
                parse_time(start, f"{path}: attrs start_time", fix="fix the store's attribute")
                if start
                else None
            )
            # seconds since start_time (time 0): a time slice of a cube keeps its frames' times
            times = t0 + TimeDelta(secs, format="sec") if t0 is not None else _as_time(secs)
        # read through the lazily opened (CF-decoded) variable, each chunk checked
        lazy = xr.open_zarr(path, consolidated=_consolidated(path), chunks=None)[name].variable
        data = _checked_read(lazy, var.data.chunks, f"{path}: array {name}")
        attrs = {k: v for k, v in var.attrs.items() if k not in ("start_time",)}
        attrs.update(_plain_attrs(path, "zarr", absolute))
        keep = ("bunit", "instrument", "wavelength", "wcs_header", "exposure_normalised")
        for k in (*keep, "derotated_to"):  # derotated_to: a specfit cube, not derotated twice
            if k in var.attrs:
                attrs[k] = var.attrs[k]
        if "wcs_header" in attrs:
            attrs["wcs_header"] = _header_on_own_grid(attrs["wcs_header"], var)
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
        _warn_missing_chunks(path, f"{path}: array")
        if not cfg.times:
            raise InputError(f"{path}: a bare Zarr array has no times; give input.times")
        nt = z.shape[0]
        lt = load_times(cfg.times, nt, z.shape)
        times, absolute = _as_time(lt), isinstance(lt, Time)
        data = _checked_read(z, z.chunks, f"{path}: array")
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
    if exposure is not None and cfg.normalise_exposure and not attrs.get("exposure_normalised"):
        # per-frame exposures in the store: divided out as for FITS input (they were kept as a
        # coordinate only, the values left in counts per frame without a word)
        exp = np.asarray(exposure, dtype=float)
        if not np.all(np.isfinite(exp) & (exp > 0)):
            raise InputError(
                f"{path}: some values of the exposure coordinate are missing or not positive; "
                "set input.normalise_exposure: false"
            )
        data = data / exp.astype(np.float32)[:, None, None]
        unit = str(attrs.get("bunit") or "").strip()
        attrs = {**attrs, "exposure_normalised": True, "bunit": f"{unit} / s" if unit else "1 / s"}
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


class _CheckedChunks:
    """Picklable reader of a Zarr array, or of a lazily opened xarray variable of one, for
    ``da.from_array``: a chunk that cannot be decoded (a damaged or truncated chunk file) is
    an InputError naming the store and the frames, not a codec traceback from a worker."""

    def __init__(self, source: Any, where: str) -> None:
        self.source, self.where = source, where
        self.shape, self.dtype, self.ndim = tuple(source.shape), np.dtype(source.dtype), 3

    def __getitem__(self, key: Any) -> np.ndarray:
        try:
            block = self.source[key]
            return np.asarray(getattr(block, "values", block))
        except Exception as exc:
            t = key[0] if isinstance(key, tuple) and key else key
            frames = ""
            if isinstance(t, slice) and t.start is not None and t.stop is not None:
                frames = f" (frames {t.start}-{t.stop - 1})"
            raise InputError(
                f"{self.where}{frames}: cannot read the data ({type(exc).__name__}: {exc}); a "
                "chunk file of the store is damaged or truncated: copy the store again"
            ) from None


def _checked_read(source: Any, chunks: Any, where: str) -> da.Array:
    """``source`` as a dask array of ``chunks`` whose reads name the store on a failure."""
    from dask.base import tokenize

    name = "zarr-read-" + tokenize(where, tuple(source.shape), str(source.dtype), chunks)
    return da.from_array(_CheckedChunks(source, where), chunks=chunks, name=name)


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


# Chunk keys named in the warning about absent chunks.
_SHOWN_CHUNKS = 3


def missing_chunks(array_dir: str) -> tuple[int, int, list[str], object, str] | None:
    """The chunks of the Zarr array in folder ``array_dir`` that have no file on disk, from a
    listing of the folder (nothing is read but the array's metadata).

    Zarr v3 (``zarr.json``; chunk keys ``c/i/j/k`` by default, ``c.i.j.k`` or v2-style
    ``i.j.k`` by its ``chunk_key_encoding``) and v2 (``.zarray``; ``i.j.k``, or ``i/j/k``
    with ``dimension_separator`` "/") arrays on a regular chunk grid are compared.

    Returns
    -------
    tuple or None
        ``(missing, total, first keys, fill value, dtype)`` with the first few absent chunk
        keys in grid order; None where the folder holds no array in a layout compared here
        (another chunk grid, unreadable metadata).
    """
    try:
        v3 = os.path.join(array_dir, "zarr.json")
        v2 = os.path.join(array_dir, ".zarray")
        if os.path.isfile(v3):
            with open(v3) as fh:
                meta = json.load(fh)
            grid = meta.get("chunk_grid") or {}
            if meta.get("node_type") != "array" or grid.get("name") != "regular":
                return None
            chunks = grid["configuration"]["chunk_shape"]
            enc = meta.get("chunk_key_encoding") or {"name": "default"}
            default = enc.get("name", "default") == "default"
            sep = (enc.get("configuration") or {}).get("separator", "/" if default else ".")
            prefix = ["c"] if default else []
            fill, dtype = meta.get("fill_value"), str(meta.get("data_type"))
        elif os.path.isfile(v2):
            with open(v2) as fh:
                meta = json.load(fh)
            chunks, sep, prefix = meta["chunks"], meta.get("dimension_separator") or ".", []
            fill, dtype = meta.get("fill_value"), str(np.dtype(meta.get("dtype")))
        else:
            return None
        shape = [int(n) for n in meta["shape"]]
        grid_n = [math.ceil(n / int(c)) for n, c in zip(shape, chunks, strict=True)]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    total = math.prod(grid_n)
    if total == 0 or not grid_n:
        return None
    present: set[tuple[int, ...]] = set()

    def add(parts: list[str]) -> None:
        if len(parts) == len(grid_n) and all(p.isdigit() for p in parts):
            idx = tuple(int(p) for p in parts)
            if all(i < n for i, n in zip(idx, grid_n, strict=True)):
                present.add(idx)

    if sep == "/":
        root = os.path.join(array_dir, *prefix)
        for here, dirs, files in os.walk(root):
            rel = os.path.relpath(here, root)
            head = [] if rel == "." else rel.split(os.sep)
            if len(head) >= len(grid_n):
                dirs[:] = []
                continue
            for f in files:
                add([*head, f])
    else:
        lead = "".join(f"{p}{sep}" for p in prefix)
        for f in os.listdir(array_dir):
            if f.startswith(lead):
                add(f[len(lead) :].split(sep))
    missing = total - len(present)
    if missing == 0:
        return 0, total, [], fill, dtype
    first = []
    for idx in itertools.product(*(range(n) for n in grid_n)):
        if idx not in present:
            first.append(sep.join([*prefix, *(str(i) for i in idx)]))
            if len(first) == _SHOWN_CHUNKS:
                break
    return missing, total, first, fill, dtype


def _warn_missing_chunks(array_dir: str, what: str, masked: object = None) -> None:
    """Warn (one line) when chunk files of the intensity array are absent: zarr reads them as
    the array's fill value, and leaves such chunks out on purpose (a chunk holding nothing
    else), but an incomplete copy of the store loses chunks too, whose pixels then silently
    hold the fill value (zeros for integers). ``masked``: the value xarray decodes as missing
    (its ``_FillValue``), if any."""
    found = missing_chunks(array_dir)
    if found is None or found[0] == 0:
        return
    n, total, first, fill, dtype = found
    shown = ", ".join(first) + (", ..." if n > len(first) else "")

    def is_nan(v: object) -> bool:
        return (isinstance(v, str) and v.lower() == "nan") or (
            isinstance(v, float) and math.isnan(v)
        )

    if is_nan(fill) or (masked is not None and not is_nan(masked) and masked == fill):
        shown_fill = "NaN," if is_nan(fill) else f"{fill}, decoded as missing,"
        effect = f"the array's fill value {shown_fill} so they count as missing pixels"
    elif fill is None:
        effect = f"zeros ({dtype}; the array sets no fill value)"
    else:
        effect = f"the array's fill value {fill} ({dtype})"
    log.warning(
        "%s: %d of its %d chunks have no file on disk (%s) and are read as %s. Zarr leaves "
        "out a chunk that holds only the fill value, but an incomplete copy of a store loses "
        "chunks too: if this store was copied, copy it again",
        what,
        n,
        total,
        shown,
        effect,
    )
