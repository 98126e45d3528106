"""Readers: every input kind becomes the same lazy (time, y, x) "intensity" DataArray.

Kinds (``input.kind``; "auto" picks one from ``input.path``):

- ``fits_series``: a folder or glob of single-frame FITS files (AIA, synthetic, ...);
- ``fits_cube``: one FITS file with a 3-D cube and per-frame times in a table (IRIS SJI);
- ``images``: JPG/PNG/TIFF sequences with times from EXIF, file names or a CSV;
- ``array``: a .npy cube with a .npy of times (``input.times``);
- ``zarr``: a Zarr store (an xarray dataset with a time coordinate, or an array + times);
- ``memory``: sunpy objects in Python (a MapSequence, a list of Maps, an NDCube), read by
  :func:`specfit.io.sunpy_objects.open_sunpy` (``specfit.ingest(maps)``,
  ``specfit.run(config, data=maps)``).

All metadata is read and validated eagerly (so bad input fails before any compute, with an
:class:`InputError` naming the file and the fix); pixel data are read lazily, one dask task
per few frames (a FITS series: up to 16 files a task; images: one file a task).
"""

from __future__ import annotations

import os

import numpy as np
import xarray as xr

from specfit.config import InputConfig
from specfit.errors import InputError

from ._base import (
    ROTATION_ARCSEC_PER_H,
    hpc_coords,
    input_names,
    input_path_set,
    literal_glob,
    pointing_jump,
    relative_seconds,
    whole_frames,
)
from .fits_series import FITS_SUFFIXES
from .images import IMAGE_SUFFIXES

__all__ = [
    "open_input",
    "detect_kind",
    "frame_times",
    "relative_seconds",
    "hpc_coords",
    "whole_frames",
    "input_names",
    "input_path_set",
    "literal_glob",
    "pointing_jump",
    "ROTATION_ARCSEC_PER_H",
]


def detect_kind(cfg: InputConfig) -> str:
    """The reader kind for ``cfg``: ``cfg.kind`` unless it is "auto", else guessed from the path.

    Raises
    ------
    InputError
        When the path does not exist or its contents match no reader.
    """
    if cfg.kind != "auto":
        return cfg.kind
    p = input_path_set(cfg.path).rstrip("/")
    low = p.lower()
    if low.endswith(".zarr") or (os.path.isdir(p) and _looks_like_zarr(p)):
        return "zarr"
    if low.endswith(".npy"):
        return "array"
    if os.path.isfile(p):
        if low.endswith(FITS_SUFFIXES):
            return _fits_file_kind(p)
        if low.endswith(IMAGE_SUFFIXES):
            return "images"
        raise InputError(
            f"input.path {p}: cannot tell the kind from the name; set input.kind "
            "(fits_series, fits_cube, images, array, zarr)"
        )
    # A folder (or file) that exists as written is never a glob: "AIA [1600]".
    names, _ = input_names(p, cfg.pattern, FITS_SUFFIXES + IMAGE_SUFFIXES)
    n_fits = sum(n.lower().endswith(FITS_SUFFIXES) for n in names)
    n_img = sum(n.lower().endswith(IMAGE_SUFFIXES) for n in names)
    if n_fits == 0 and n_img == 0:
        raise InputError(
            f"input.path {p} (pattern {cfg.pattern!r}) holds no FITS or image files; fix "
            "input.path/input.pattern or set input.kind"
        )
    if n_fits >= n_img:
        if n_fits == 1:
            return _fits_file_kind(next(n for n in names if n.lower().endswith(FITS_SUFFIXES)))
        return "fits_series"
    return "images"


def _looks_like_zarr(p: str) -> bool:
    return any(os.path.exists(os.path.join(p, m)) for m in ("zarr.json", ".zgroup", ".zarray"))


def _fits_file_kind(path: str) -> str:
    """'fits_cube' for a file whose image HDU is 3-D (more than one frame), else 'fits_series'."""
    from astropy.io import fits

    try:
        with fits.open(path, memmap=False, lazy_load_hdus=True) as hdul:
            for h in hdul:
                if h.is_image and h.header.get("NAXIS", 0) >= 2:
                    if h.header.get("NAXIS", 0) >= 3 and h.header.get("NAXIS3", 1) > 1:
                        return "fits_cube"
                    return "fits_series"
    except Exception as exc:
        raise InputError(
            f"{path}: cannot read the FITS header ({type(exc).__name__}: {exc}); replace the file"
        ) from None
    from specfit.io.fits_series import refuse_cut_short

    refuse_cut_short(path)
    raise InputError(f"{path}: no image HDU with data; set input.hdu or input.kind")


def open_input(cfg: InputConfig) -> xr.DataArray:
    """Open the configured input as a lazy dask-backed (time, y, x) DataArray.

    Parameters
    ----------
    cfg
        The ``input`` section of the configuration.

    Returns
    -------
    xarray.DataArray
        Named "intensity", float32, sorted by time. Coords: ``time`` (float64 s from the
        first frame; ``attrs["start_time"]`` is frame 0 in ISO 8601 UTC), ``exposure`` (s,
        where known), ``y``/``x`` (pixel indices), ``hpc_x``/``hpc_y`` (arcsec, where a WCS
        exists). Attrs: ``source``, ``kind``, ``bunit``, ``instrument``/``wavelength`` if
        known. Values divided by the exposure when ``cfg.normalise_exposure`` and the
        exposure is known; missing pixels are NaN.

    Raises
    ------
    InputError
        Before any compute, for a missing path, no matching files, unreadable headers,
        inconsistent shapes or missing time keys; the message names the file and the fix.
    """
    kind = detect_kind(cfg)
    if kind == "fits_series":
        from .fits_series import open_fits_series

        return open_fits_series(cfg)
    if kind == "fits_cube":
        from .fits_cube import open_fits_cube

        return open_fits_cube(cfg)
    if kind == "images":
        from .images import open_images

        return open_images(cfg)
    if kind in ("array", "zarr"):
        from .arrays import open_array

        return open_array(cfg, kind)
    if kind == "memory":
        raise InputError(
            "input.kind memory: the frames are sunpy objects given in Python; pass them with "
            "specfit.run(config, data=maps) or specfit.ingest(maps)"
        )
    if kind == "synthetic":
        raise InputError(
            "input.kind synthetic: the frames are made by specfit.pipeline (or "
            "specfit.make_synthetic) first; open the written folder with kind fits_series"
        )
    raise InputError(f"input.kind {kind!r} is not known")


def frame_times(da: xr.DataArray) -> np.ndarray:
    """Absolute frame times as numpy datetime64[ns] (UTC) from ``time`` + ``start_time``."""
    start = np.datetime64(str(da.attrs["start_time"]).rstrip("Z"), "ns")
    return start + (np.asarray(da["time"].values) * 1e9).round().astype("timedelta64[ns]")
