"""FITS frame series: one 2-D image per file (AIA level 1, the synthetic writer, ...).

Headers are read eagerly with astropy (about 1.5 ms per file, so 596 AIA files take about
a second); the pixel data are read lazily, one dask task per file.
"""

from __future__ import annotations

import glob
import os
import warnings
from pathlib import Path

import numpy as np
import xarray as xr
from astropy.io import fits
from astropy.time import Time

from specfit.config import InputConfig
from specfit.errors import InputError

from ._base import (
    LazyFrames,
    assemble,
    check_data_size,
    parse_time,
    series_field,
)

__all__ = [
    "FITS_SUFFIXES",
    "list_files",
    "open_fits_series",
    "header_time",
    "find_image_hdu",
    "frame_geometry",
]

FITS_SUFFIXES = (".fits", ".fits.gz", ".fts", ".fit", ".fts.gz", ".fit.gz")


def list_files(cfg: InputConfig, suffixes: tuple[str, ...] | None = None) -> list[str]:
    """Files named by ``cfg.path`` (a folder + ``cfg.pattern``, a glob, or one file), sorted.

    Raises
    ------
    InputError
        When the folder does not exist or nothing matches.
    """
    if not cfg.path:
        raise InputError("input.path is not set; give a folder, a glob or a file")
    path = cfg.path
    if any(ch in path for ch in "*?["):
        files = sorted(glob.glob(path))
        where = f"glob {path!r}"
    elif os.path.isdir(path):
        files = sorted(glob.glob(os.path.join(path, cfg.pattern)))
        where = f"folder {path} with input.pattern {cfg.pattern!r}"
    elif os.path.isfile(path):
        files = [path]
        where = f"file {path}"
    else:
        raise InputError(
            f"input.path {path} does not exist; fix the path (relative paths are resolved "
            "from the config file's folder)"
        )
    files = [f for f in files if os.path.isfile(f)]
    if suffixes is not None:
        files = [f for f in files if f.lower().endswith(suffixes)]
    if not files:
        kinds = ", ".join(suffixes) if suffixes else "any"
        raise InputError(
            f"no input files in {where} (looking for {kinds}); fix input.path or input.pattern"
        )
    return files


def find_image_hdu(hdul: fits.HDUList, hdu: int | None, path: str) -> int:
    """Index of the HDU holding the image: ``hdu`` if given, else the first with data."""
    if hdu is not None:
        if hdu >= len(hdul):
            raise InputError(f"{path}: input.hdu={hdu} but the file has {len(hdul)} HDUs")
        return hdu
    for i, h in enumerate(hdul):
        if h.is_image and h.header.get("NAXIS", 0) >= 2:
            return i
    raise InputError(f"{path}: no image HDU with data; set input.hdu to the HDU to read")


def header_time(header: fits.Header, keys: list[str], path: str) -> tuple[Time, str]:
    """The frame time from the first of ``keys`` present in ``header``, and the key used."""
    for k in keys:
        v = header.get(k)
        if v not in (None, ""):
            return parse_time(v, f"{path}: header key {k}"), k
    raise InputError(
        f"{path}: none of the time keys {keys} is in the header; set input.time_key to the "
        "key holding the frame time (e.g. [DATE-OBS])"
    )


def _read_frame(paths: list[str], start: int, stop: int, hdu: int = 0) -> np.ndarray:
    """Raw data of files ``paths[start:stop]`` stacked as (k, ny, nx)."""
    out = []
    for p in paths[start:stop]:
        # do_not_scale keeps integers raw so BLANK can be compared exactly; BSCALE/BZERO are
        # applied by hand below.
        with fits.open(p, memmap=False, do_not_scale_image_data=True) as hdul:
            h = hdul[hdu]
            data = np.asarray(h.data)
            bscale = h.header.get("BSCALE", 1.0)
            bzero = h.header.get("BZERO", 0.0)
            if data.ndim > 2:
                data = data.reshape(data.shape[-2:])
            if bscale != 1.0 or bzero != 0.0:
                data = data * np.float64(bscale) + np.float64(bzero)
                blank = h.header.get("BLANK") if np.issubdtype(h.data.dtype, np.integer) else None
                if blank is not None:
                    data[np.asarray(h.data).reshape(data.shape) == blank] = np.nan
            out.append(data)
    return np.stack(out)


def open_fits_series(cfg: InputConfig) -> xr.DataArray:
    """Open a folder or glob of single-frame FITS files as a lazy (time, y, x) DataArray.

    Parameters
    ----------
    cfg
        ``path`` (+ ``pattern``), ``hdu``, ``time_key``, ``exposure_key``,
        ``normalise_exposure``, ``missing_below``, ``max_frames`` are used.

    Returns
    -------
    xarray.DataArray
        "intensity", float32, sorted by time, one dask chunk per file; coords ``time``
        (s from the first frame), ``exposure`` (s), ``y``, ``x`` and, if the headers carry a
        helioprojective WCS, ``hpc_x``/``hpc_y`` of the middle (reference) frame.

    Raises
    ------
    InputError
        Missing folder, no files, an unreadable header, frames of different shapes, a
        missing time or exposure key: the message names the file and the fix.
    """
    files = list_files(cfg, FITS_SUFFIXES)
    headers: list[fits.Header] = []
    hdus: list[int] = []
    for f in files:
        try:
            with warnings.catch_warnings():
                # astropy's own truncation warning; check_data_size reports it as an error.
                warnings.filterwarnings("ignore", message="File may have been truncated")
                with fits.open(f, memmap=False, lazy_load_hdus=True) as hdul:
                    i = find_image_hdu(hdul, cfg.hdu, f)
                    headers.append(hdul[i].header.copy())
                    hdus.append(i)
                    check_data_size(hdul, i, f)
        except InputError:
            raise
        except Exception as exc:
            raise InputError(
                f"{f}: cannot read the FITS header ({type(exc).__name__}: {exc}); remove or "
                "replace the file, or narrow input.pattern to exclude it"
            ) from None
    if len(set(hdus)) > 1:
        raise InputError(
            f"{files[0]}: the image is in different HDUs across files ({sorted(set(hdus))}); "
            "set input.hdu"
        )
    shapes = [(h.get("NAXIS2"), h.get("NAXIS1")) for h in headers]
    ref_shape = shapes[0]
    for f, s, h in zip(files, shapes, headers, strict=True):
        extra = [h.get(f"NAXIS{k}", 1) for k in range(3, h.get("NAXIS", 2) + 1)]
        if any(e != 1 for e in extra):
            raise InputError(
                f"{f}: holds a {h.get('NAXIS')}-D array, not one frame; use input.kind: "
                "fits_cube for a cube file"
            )
        if s != ref_shape:
            raise InputError(
                f"{f}: frame shape {s} differs from {ref_shape} of {files[0]}; all frames of a "
                "series must have the same size (remove the odd file or narrow input.pattern)"
            )
    times_list = []
    used_keys = set()
    for f, h in zip(files, headers, strict=True):
        t, k = header_time(h, list(cfg.time_key), f)
        times_list.append(t)
        used_keys.add(k)
    times = Time(times_list)
    order = np.argsort(
        times.tai.jd1 - times.tai.jd1[0] + (times.tai.jd2 - times.tai.jd2[0]), kind="stable"
    )
    times = times[order]
    rel = (times[1:] - times[:-1]).to_value("s") if len(times) > 1 else np.array([])
    if np.any(rel <= 0):
        j = int(np.argmin(rel))
        raise InputError(
            f"{files[order[j]]} and {files[order[j + 1]]} have the same time "
            f"{times[j].isot}; remove the duplicate frame"
        )
    exposure = None
    if cfg.exposure_key:
        exp = np.array([h.get(cfg.exposure_key, np.nan) for h in headers], dtype=float)
        bad = ~(np.isfinite(exp) & (exp > 0))
        if np.any(bad) and cfg.normalise_exposure:
            j = int(np.flatnonzero(bad)[0])
            raise InputError(
                f"{files[j]}: header key {cfg.exposure_key} is missing or not positive "
                f"({headers[j].get(cfg.exposure_key)!r}); set input.exposure_key to the "
                "exposure key, or input.normalise_exposure: false"
            )
        exposure = exp[order] if not np.all(bad) else None
    scale = 1.0 / exposure if (cfg.normalise_exposure and exposure is not None) else None

    blank = []
    for h in headers:
        b = h.get("BLANK") if h.get("BITPIX", -32) > 0 else None
        # Scaled data have BLANK handled in _read_frame (after scaling, NaN already).
        scaled = h.get("BSCALE", 1.0) != 1.0 or h.get("BZERO", 0.0) != 0.0
        blank.append(None if scaled else b)
    ny, nx = ref_shape
    frames = LazyFrames(
        read=_ReadSeries(hdus[0]),
        source=list(files),
        shape=(len(files), ny, nx),
        order=order,
        scale=scale,
        missing_below=cfg.missing_below,
        blank=blank if any(b is not None for b in blank) else None,
    )
    cel, hpc, field = series_field([headers[i] for i in order], times, ny, nx, scale is not None)
    attrs = {
        "source": str(Path(cfg.path).resolve()) if cfg.path else "",
        "kind": "fits_series",
        "time_key": sorted(used_keys)[0] if len(used_keys) == 1 else ",".join(sorted(used_keys)),
        "files": [os.path.basename(files[i]) for i in order],
        **field,
    }
    return assemble(
        frames,
        times=times,
        exposure=exposure,
        time_chunk=1,
        attrs=attrs,
        hpc=hpc,
        max_frames=cfg.max_frames,
        time_coords=frame_geometry([headers[i] for i in order]) if cel is not None else None,
    )


# Per-frame observer position and pointing, carried as time coordinates so that derotation
# can rebuild each frame's WCS; names are the lower-case FITS keys with a prefix.
GEOMETRY_KEYS = {
    "obs_hgln": ("HGLN_OBS", "deg"),
    "obs_hglt": ("HGLT_OBS", "deg"),
    "obs_dsun": ("DSUN_OBS", "m"),
    "wcs_crpix1": ("CRPIX1", "pixel"),
    "wcs_crpix2": ("CRPIX2", "pixel"),
    "wcs_crval1": ("CRVAL1", "arcsec"),
    "wcs_crval2": ("CRVAL2", "arcsec"),
}


def frame_geometry(headers: list[fits.Header]) -> dict[str, tuple[np.ndarray, dict]]:
    """Per-frame observer/pointing keys present in every header, as time coordinates."""
    out = {}
    for name, (key, unit) in GEOMETRY_KEYS.items():
        vals = [h.get(key) for h in headers]
        if all(isinstance(v, int | float) and np.isfinite(v) for v in vals):
            out[name] = (np.asarray(vals, dtype=np.float64), {"units": unit, "fits_key": key})
    return out


class _ReadSeries:
    """Picklable reader bound to one HDU index (dask ships it to workers once)."""

    def __init__(self, hdu: int) -> None:
        self.hdu = hdu

    def __call__(self, paths: list[str], start: int, stop: int) -> np.ndarray:
        return _read_frame(paths, start, stop, self.hdu)
