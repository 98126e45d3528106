"""FITS cubes: one file holding (t, y, x), with per-frame times (IRIS slit-jaw layout).

Frame times, in order of preference:

1. an auxiliary image HDU whose header key ``TIME`` gives the column of per-frame seconds
   from ``STARTOBS`` (IRIS level 2; ``EXPTIMES`` likewise gives the exposure column). Test
   files may be truncated so the table has more rows than the cube has frames: the first
   n rows are used;
2. ``input.times``: a .npy of seconds (or datetime64) per frame;
3. a linear time axis 3 (``CTYPE3 = 'Time'``, ``CRVAL3``/``CDELT3``/``CRPIX3``) from
   ``DATE-OBS``/``STARTOBS``.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import xarray as xr
from astropy.io import fits
from astropy.time import Time, TimeDelta

from specfit.config import InputConfig
from specfit.errors import InputError

from ._base import (
    LazyFrames,
    assemble,
    celestial_header,
    check_data_size,
    check_finite_times,
    cube_time_chunk,
    header_scale,
    header_time_text,
    hpc_coords,
    instrument_attrs,
    load_times,
    parse_time,
    reference_frame,
    seconds_per,
)
from .fits_series import find_image_hdu, inherited_header, list_files

__all__ = ["open_fits_cube", "IRIS_MISSING_BELOW"]

IRIS_MISSING_BELOW = -50.0


class _ReadCube:
    """Picklable slab reader: frames [start, stop) of HDU ``hdu`` of one FITS file."""

    def __init__(self, hdu: int) -> None:
        self.hdu = hdu

    def __call__(self, path: str, start: int, stop: int) -> np.ndarray:
        # .section reads only the requested frames from disk (uncompressed HDUs); it applies
        # BSCALE/BZERO itself.
        with fits.open(path, memmap=False, lazy_load_hdus=True) as hdul:
            return np.asarray(hdul[self.hdu].section[start:stop])


def _aux_times(
    hdul: fits.HDUList, header: fits.Header, nt: int, path: str, time_keys: list[str]
) -> tuple[Time, np.ndarray | None] | None:
    """IRIS-style per-frame times (and exposures) from an auxiliary HDU, or None if absent."""
    for i, h in enumerate(hdul):
        if i == 0 or not h.is_image or "TIME" not in h.header or h.header.get("NAXIS") != 2:
            continue
        table = np.asarray(h.data, dtype=float)
        col = int(h.header["TIME"])
        if table.shape[0] < nt or col >= table.shape[1]:
            raise InputError(
                f"{path}: HDU {i} has {table.shape[0]} rows x {table.shape[1]} columns but the "
                f"cube has {nt} frames and TIME names column {col}; the file is damaged or "
                "truncated too far: give per-frame times with input.times"
            )
        start = next(
            filter(
                None, (header_time_text(header, k) for k in ("STARTOBS", *time_keys, "DATE_OBS"))
            ),
            None,
        )
        if start is None:
            raise InputError(
                f"{path}: the time table in HDU {i} is relative to STARTOBS, which is missing; "
                "add STARTOBS or set input.time_key to the key of the start time"
            )
        t0 = parse_time(start[0], f"{path}: header key {start[1]}", header_scale(header, path))
        secs = table[:nt, col]
        check_finite_times(
            secs,
            f"{path}: the time table in HDU {i} (column {col}) has no finite time",
            "the table is damaged: give per-frame times with input.times",
        )
        exposure = None
        if "EXPTIMES" in h.header:
            exposure = table[:nt, int(h.header["EXPTIMES"])].astype(float)
        # Per-exposure pointing: IRIS tracks solar rotation, and the primary header holds
        # only the observation average, so each frame's reference coordinate is XCEN/YCEN.
        pointing = {}
        for name, key in (("wcs_crval1", "XCENIX"), ("wcs_crval2", "YCENIX")):
            if key in h.header and int(h.header[key]) < table.shape[1]:
                vals = table[:nt, int(h.header[key])].astype(float)
                if np.all(np.isfinite(vals)):
                    pointing[name] = vals
        return t0 + TimeDelta(secs, format="sec"), exposure, pointing
    return None


def open_fits_cube(cfg: InputConfig) -> xr.DataArray:
    """Open one FITS cube (t, y, x) lazily, a few frames per dask chunk.

    Parameters
    ----------
    cfg
        ``path`` (a file, or a folder/glob matching exactly one FITS file), ``hdu``,
        ``times``, ``time_key``, ``exposure_key``, ``normalise_exposure``,
        ``missing_below`` (unset: -50 for IRIS, whose sentinel is -200), ``max_frames``.

    Returns
    -------
    xarray.DataArray
        As :func:`specfit.io.open_input`.

    Raises
    ------
    InputError
        For a missing file, a non-3-D image, or no usable per-frame times.
    """
    files = list_files(cfg, (".fits", ".fits.gz", ".fts", ".fit", ".fts.gz", ".fit.gz"))
    if len(files) != 1:
        raise InputError(
            f"input.path {cfg.path} matches {len(files)} FITS files but kind fits_cube reads one "
            "file; point input.path at the cube file (or use kind fits_series)"
        )
    path = files[0]
    try:
        with warnings.catch_warnings():
            # astropy's own truncation warning; check_data_size reports it as an error.
            warnings.filterwarnings("ignore", message="File may have been truncated")
            with fits.open(path, memmap=False, lazy_load_hdus=True) as hdul:
                hdu = find_image_hdu(hdul, cfg.hdu, path)
                header = inherited_header(hdul, hdu)
                check_data_size(hdul, hdu, path)
                if header.get("NAXIS") != 3:
                    raise InputError(
                        f"{path}: HDU {hdu} is {header.get('NAXIS')}-D, not a (t, y, x) cube; use "
                        "input.kind fits_series for single frames"
                    )
                for ax in (1, 2):
                    if str(header.get(f"CTYPE{ax}", "")).strip().upper().startswith("TIME"):
                        # time along another axis: its frames would be read as rows of pixels
                        raise InputError(
                            f"{path}: the time axis is FITS axis {ax} (CTYPE{ax} = "
                            f"{header[f'CTYPE{ax}']!r}); specfit reads a cube's frames along axis "
                            "3 (numpy axis 0): write it as (t, y, x), e.g. with "
                            f"np.moveaxis(data, {3 - ax}, 0) and the header's axes to match"
                        )
                nt, ny, nx = header["NAXIS3"], header["NAXIS2"], header["NAXIS1"]
                aux = None if cfg.times else _aux_times(hdul, header, nt, path, list(cfg.time_key))
    except InputError:
        raise
    except Exception as exc:
        raise InputError(
            f"{path}: cannot read the FITS header ({type(exc).__name__}: {exc}); replace the file"
        ) from None

    exposure: np.ndarray | None = None
    pointing: dict[str, np.ndarray] = {}
    if cfg.times:
        times = _times_from_npy(cfg.times, nt, header, path, list(cfg.time_key))
        time_source = f"input.times {cfg.times}"
    elif aux is not None:
        times, exposure, pointing = aux
        time_source = "auxiliary table (TIME column, seconds from STARTOBS)"
    elif str(header.get("CTYPE3", "")).strip().upper().startswith("TIME"):
        t0 = _start_time(header, path, list(cfg.time_key))
        k = np.arange(nt, dtype=float) + 1.0 - header.get("CRPIX3", 1.0)
        # in the axis' unit (CUNIT3: FITS' default for time is s; min or ms were read as s)
        per = seconds_per(header.get("CUNIT3"), f"{path}: header key CUNIT3")
        secs = (header.get("CRVAL3", 0.0) + k * header.get("CDELT3", 1.0)) * per
        times = t0 + TimeDelta(secs, format="sec")
        time_source = "linear time axis 3 (CRVAL3, CDELT3" + (", CUNIT3)" if per != 1 else ")")
    else:
        raise InputError(
            f"{path}: no per-frame times (no auxiliary TIME table, no CTYPE3='Time'); give a "
            ".npy of frame times in seconds with input.times"
        )
    if exposure is None and cfg.exposure_key and header.get(cfg.exposure_key):
        exposure = np.full(nt, float(header[cfg.exposure_key]))
    if exposure is not None and not np.all(np.isfinite(exposure) & (exposure > 0)):
        if cfg.normalise_exposure:
            raise InputError(
                f"{path}: some per-frame exposure times are missing or not positive; set "
                "input.normalise_exposure: false"
            )
    if cfg.normalise_exposure and exposure is None and cfg.exposure_key:
        raise InputError(
            f"{path}: no exposure time (header key {cfg.exposure_key} or an EXPTIMES column); "
            "set input.exposure_key, or input.normalise_exposure: false"
        )
    rel = (times - times[0]).to_value("s")
    order = np.argsort(rel, kind="stable")
    if np.any(np.diff(rel[order]) <= 0):
        raise InputError(f"{path}: two frames have the same time; the time table is damaged")
    times = times[order]
    if exposure is not None:
        exposure = exposure[order]
    scale = 1.0 / exposure if (cfg.normalise_exposure and exposure is not None) else None
    missing_below = cfg.missing_below
    if missing_below is None and str(header.get("TELESCOP", "")).strip().upper() == "IRIS":
        # IRIS level 2 stores missing pixels as -200, blurred to about -60 at the field
        # edges by the level-2 resampling; real data stay above about -20.
        missing_below = IRIS_MISSING_BELOW
    frames = LazyFrames(
        read=_ReadCube(hdu),
        source=path,
        shape=(nt, ny, nx),
        order=order,
        scale=scale,
        missing_below=missing_below,
    )
    ref = reference_frame(nt, cfg.max_frames)
    cel = celestial_header(header, times[ref])
    pointing = {k: v[order] for k, v in pointing.items()}
    if cel is not None:
        for name, key in (("wcs_crval1", "CRVAL1"), ("wcs_crval2", "CRVAL2")):
            if name in pointing:
                cel[key] = float(pointing[name][ref])
    hpc = hpc_coords(cel, ny, nx) if cel is not None else None
    bunit = str(header.get("BUNIT", "") or "").strip()
    attrs = {
        "source": str(Path(path).resolve()),
        "kind": "fits_cube",
        "bunit": (f"{bunit} / s" if bunit else "1 / s") if scale is not None else bunit,
        "exposure_normalised": scale is not None,
        "time_source": time_source,
        "files": [os.path.basename(path)],
        "reference_index": ref,
    }
    if cel is not None:
        attrs["wcs_header"] = cel.tostring(sep="\n")
    if missing_below is not None:
        attrs["missing_below"] = float(missing_below)
    instrument_attrs(header, attrs)
    return assemble(
        frames,
        times=times,
        exposure=exposure,
        time_chunk=cube_time_chunk(nt, ny, nx),
        attrs=attrs,
        hpc=hpc,
        max_frames=cfg.max_frames,
        time_coords={
            k: (
                v,
                {"units": str(header.get("CUNIT1", "arcsec")).strip(), "fits_key": k[4:].upper()},
            )
            for k, v in pointing.items()
        }
        if cel is not None
        else None,
    )


def _start_time(header: fits.Header, path: str, keys: list[str]) -> Time:
    for k in (*keys, "DATE_OBS", "STARTOBS"):
        found = header_time_text(header, k)  # DATE-OBS holding a date only: + TIME-OBS
        if found is not None:
            return parse_time(
                found[0], f"{path}: header key {found[1]}", header_scale(header, path)
            )
    raise InputError(
        f"{path}: no start time (tried {keys + ['DATE_OBS', 'STARTOBS']}); set input.time_key"
    )


def _times_from_npy(npy: str, nt: int, header: fits.Header, path: str, keys: list[str]) -> Time:
    """Times from a .npy: datetime64 values are absolute; numbers are seconds from the start."""
    t = load_times(npy, nt)
    if isinstance(t, Time):
        return t
    return _start_time(header, path, keys) + TimeDelta(t, format="sec")
