"""FITS frame series: one 2-D image per file (AIA level 1, the synthetic writer, ...).

Headers are read eagerly, once per file: plain files (one uncompressed image in the primary
HDU, standard cards - AIA level 1 cutouts, the synthetic writer) by :mod:`._fitshead`, which
parses only the keys the reader uses and records where the data are (~0.1 ms a file); any
other file by astropy (about 1.5-4 ms a file). The pixel data are read lazily, one dask task
per few consecutive frames (up to 16, about 16 MB): plain files with one read at the
recorded offset, after checking that the header on disk is byte for byte the one scanned;
other files (or a plain file changed since) by astropy. A read error names the file at fault.
"""

from __future__ import annotations

import math
import os
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

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
    check_size,
    cube_time_chunk,
    flagged_frames,
    header_scale,
    header_time_text,
    input_names,
    input_path_set,
    parse_time,
    read_failure,
    reference_frame,
    series_field,
    strict_time,
)
from ._fitshead import NotPlain, PlainLayout, read_plain, scan_plain

__all__ = [
    "FITS_SUFFIXES",
    "list_files",
    "open_fits_series",
    "header_time",
    "find_image_hdu",
    "inherited_header",
    "refuse_cut_short",
    "frame_geometry",
    "check_one_channel",
    "check_one_grid",
]

FITS_SUFFIXES = (".fits", ".fits.gz", ".fts", ".fit", ".fts.gz", ".fit.gz")


def list_files(cfg: InputConfig, suffixes: tuple[str, ...] | None = None) -> list[str]:
    """Files named by ``cfg.path`` (a folder + ``cfg.pattern``, a glob, or one file), sorted.

    Raises
    ------
    InputError
        When the folder does not exist or nothing matches.
    """
    input_path_set(cfg.path)
    # A folder (or file) that exists as written is never a glob: "AIA [1600]".
    files, where = input_names(cfg.path, cfg.pattern, suffixes)
    if suffixes is not None:
        files = [f for f in files if f.lower().endswith(suffixes)]
    if not files:
        kinds = ", ".join(suffixes) if suffixes else "any"
        raise InputError(
            f"no input files in {where} (looking for {kinds}); fix input.path or input.pattern"
        )
    return files


def find_image_hdu(hdul: fits.HDUList, hdu: int | None, path: str) -> int:
    """Index of the HDU holding the image: ``hdu`` if given, else the first image HDU, unless
    a later one has more than 4x its pixels (then the largest, the first of equals): a small
    preview image in the primary HDU before the frame in an extension is passed over, and a
    frame followed by a larger mask or map is still the frame.

    A file cut short inside an HDU (astropy then drops that HDU, often the compressed image
    after an empty primary one) is named as truncated, not as lacking the HDU."""
    if hdu is not None:
        if hdu >= len(hdul):
            refuse_cut_short(path)
            raise InputError(f"{path}: input.hdu={hdu} but the file has {len(hdul)} HDUs")
        return hdu
    images = []
    for i, h in enumerate(hdul):
        naxis = h.header.get("NAXIS", 0) if h.is_image else 0
        if naxis >= 2:
            size = math.prod(int(h.header.get(f"NAXIS{k}", 0)) for k in range(1, naxis + 1))
            images.append((i, size))
    if images:
        largest = max(images, key=lambda found: found[1])  # the first of equals
        return largest[0] if largest[1] > 4 * images[0][1] else images[0][0]
    refuse_cut_short(path)
    raise InputError(f"{path}: no image HDU with data; set input.hdu to the HDU to read")


# Cards of the primary header that describe the primary HDU itself, never inherited
_OWN_CARDS = ("SIMPLE", "BITPIX", "EXTEND", "XTENSION", "PCOUNT", "GCOUNT", "COMMENT", "HISTORY")


def inherited_header(hdul: fits.HDUList, index: int) -> fits.Header:
    """A copy of HDU ``index``'s header; for an extension with ``INHERIT = T`` (the FITS
    convention for keywords kept in the primary header), with the primary header's cards it
    does not have itself (its time, exposure and pointing keys)."""
    header = hdul[index].header.copy()
    if index > 0 and header.get("INHERIT") is True:
        for card in hdul[0].header.cards:
            key = card.keyword
            if key and key not in header and key not in _OWN_CARDS and not key.startswith("NAXIS"):
                header.append(card)
    return header


def refuse_cut_short(path: str) -> None:
    """Refuse a (not gzipped) FITS file whose size is not a whole number of 2880-byte blocks."""
    if str(path).lower().endswith(".gz"):
        return
    size = os.path.getsize(path)
    if size % 2880:
        raise InputError(
            f"{path}: the file is truncated ({size} bytes, not a whole number of 2880-byte FITS "
            "blocks); copy or download it again, or remove it / narrow input.pattern"
        )


def header_time(header: fits.Header, keys: list[str], path: str) -> tuple[Time, str]:
    """The frame time from the first of ``keys`` present in ``header``, and the key used.

    A ``DATE-OBS`` (or ``DATE_OBS``) holding a date only is joined with the header's
    ``TIME-OBS`` (old-style headers; see :func:`header_time_text`).
    """
    for k in keys:
        found = header_time_text(header, k)
        if found is not None:
            text, used = found
            scale = header_scale(header, str(path))  # TIMESYS: TAI times were read as UTC
            return parse_time(text, f"{path}: header key {used}", scale), k
    raise InputError(
        f"{path}: none of the time keys {keys} is in the header; set input.time_key to the "
        "key holding the frame time (e.g. [DATE-OBS])"
    )


def _scale(
    raw: np.ndarray, bscale: float, bzero: float, blank: float | None, shape: tuple[int, int]
) -> np.ndarray:
    """One file's raw data as (ny, nx): scaled by BSCALE/BZERO (then float64, with integer
    BLANK values NaN) when the header asks for it, else the raw values unchanged."""
    data = raw.reshape(shape) if raw.ndim > 2 else raw
    if bscale != 1.0 or bzero != 0.0:
        data = data * np.float64(bscale) + np.float64(bzero)
        if blank is not None and np.issubdtype(raw.dtype, np.integer):
            data[raw.reshape(data.shape) == blank] = np.nan
    return data


def _read_frame(paths: list[str], start: int, stop: int, hdu: int = 0) -> np.ndarray:
    """Raw data of files ``paths[start:stop]`` stacked as (k, ny, nx), read by astropy."""
    return np.stack([_read_astropy(p, hdu) for p in paths[start:stop]])


def _read_astropy(path: str, hdu: int) -> np.ndarray:
    # do_not_scale keeps integers raw so BLANK can be compared exactly; BSCALE/BZERO are
    # applied by hand in _scale.
    with fits.open(path, memmap=False, do_not_scale_image_data=True) as hdul:
        h = hdul[hdu]
        raw = np.asarray(h.data)
        hd = h.header
        return _scale(
            raw, hd.get("BSCALE", 1.0), hd.get("BZERO", 0.0), hd.get("BLANK"), raw.shape[-2:]
        )


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
        "intensity", float32, sorted by time, one dask chunk per few frames (up to 16,
        about 16 MB; see :func:`cube_time_chunk`); coords ``time``
        (s from the first frame), ``exposure`` (s), ``y``, ``x`` and, if the headers carry a
        helioprojective WCS, ``hpc_x``/``hpc_y`` of the middle (reference) frame.

    Raises
    ------
    InputError
        Missing folder, no files, an unreadable header, frames of different shapes, a
        missing time or exposure key: the message names the file and the fix.
    """
    files = list_files(cfg, FITS_SUFFIXES)
    keys = _frame_keys(cfg)
    headers: list[Any] = []  # per file: a _Keys of the keys used, or astropy's whole Header
    hdus: list[int] = []
    layouts: list[PlainLayout | None] = []
    for f in files:
        h, i, layout = _scan(f, cfg.hdu, keys)
        headers.append(h)
        hdus.append(i)
        layouts.append(layout)
    # Each file is read from its own image HDU: a folder may mix plain frames (HDU 0) with
    # JSOC's RICE-compressed ones (HDU 1; it was refused, and no input.hdu reads both)
    drop = flagged_frames(headers, cfg, [os.path.basename(f) for f in files])
    if drop.any():
        keep = np.flatnonzero(~drop)
        files = [files[i] for i in keep]
        headers = [headers[i] for i in keep]
        layouts = [layouts[i] for i in keep]
        hdus = [hdus[i] for i in keep]
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
    check_one_channel(files, headers)
    check_one_grid(files, headers, ref_shape)
    times, used_keys = _header_times(files, headers, list(cfg.time_key))
    order = np.argsort(
        times.tai.jd1 - times.tai.jd1[0] + (times.tai.jd2 - times.tai.jd2[0]), kind="stable"
    )
    times = times[order]
    rel = (times[1:] - times[:-1]).to_value("s") if len(times) > 1 else np.array([])
    if np.any(rel <= 0):
        j = int(np.argmin(rel))
        _refuse_date_only(files[order[j]], headers[order[j]], list(cfg.time_key))
        raise InputError(
            f"{files[order[j]]} and {files[order[j + 1]]} have the same time "
            f"{times[j].isot}; remove the duplicate frame"
        )
    exposure = None
    if cfg.exposure_key:
        read = [_number(h, cfg.exposure_key) for h in headers]
        exp = np.array([v for v, _ in read], dtype=float)
        bad = ~(np.isfinite(exp) & (exp > 0))
        if np.any(bad) and cfg.normalise_exposure:
            j = int(np.flatnonzero(bad)[0])
            raise InputError(
                f"{files[j]}: header key {cfg.exposure_key} is missing, not a number or not "
                f"positive ({read[j][1]}); set input.exposure_key to the exposure key, or "
                "input.normalise_exposure: false"
                + (f" ({int(bad.sum())} of {len(files)} files)" if bad.sum() > 1 else "")
            )
        exposure = exp[order] if not np.all(bad) else None
        if cfg.normalise_exposure:
            _warn_odd_exposures(exp, files, cfg.exposure_key)
    scale = 1.0 / exposure if (cfg.normalise_exposure and exposure is not None) else None

    blank = []
    for h in headers:
        b = h.get("BLANK") if h.get("BITPIX", -32) > 0 else None
        # Scaled data have BLANK handled in _read_frame (after scaling, NaN already).
        scaled = h.get("BSCALE", 1.0) != 1.0 or h.get("BZERO", 0.0) != 0.0
        blank.append(None if scaled else b)
    ny, nx = ref_shape
    reader = _ReadSeries(hdus, layouts, (ny, nx))
    for i, h in enumerate(headers):
        scaling = (h.get("BSCALE", 1.0), h.get("BZERO", 0.0), h.get("BLANK"))
        if layouts[i] is not None and scaling[:2] != (1.0, 0.0):
            reader.scaling[i] = scaling
    frames = LazyFrames(
        read=reader,
        source=list(files),
        shape=(len(files), ny, nx),
        order=order,
        scale=scale,
        missing_below=cfg.missing_below,
        blank=blank if any(b is not None for b in blank) else None,
    )
    sorted_headers = [headers[i] for i in order]
    # series_field reads the first and the middle (reference) frame's whole header.
    for j in {0, reference_frame(len(order), cfg.max_frames)}:
        if isinstance(sorted_headers[j], _Keys):
            sorted_headers[j] = _scan(files[order[j]], cfg.hdu, keys, whole=True)[0]
    cel, hpc, field = series_field(
        sorted_headers, times, ny, nx, scale is not None, max_frames=cfg.max_frames
    )
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
        # A few frames per task (up to 16, ~16 MB): one task per small frame made the
        # per-task overhead of dask, not the reading, the cost of ingesting 3600 frames.
        time_chunk=cube_time_chunk(len(files), ny, nx),
        attrs=attrs,
        hpc=hpc,
        max_frames=cfg.max_frames,
        time_coords=(
            frame_geometry(sorted_headers, [os.path.basename(files[i]) for i in order])
            if cel is not None
            else None
        ),
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


def frame_geometry(
    headers: list[fits.Header], names: list[str] | None = None
) -> dict[str, tuple[np.ndarray, dict]]:
    """Per-frame observer/pointing keys present in every header, as time coordinates.

    A key that some frames carry and others lack (or hold as a non-number) is dropped for all
    (derotation then takes the reference frame's value for every frame) with a warning naming
    the first frame without it (``names``: the frames' names in header order).
    """
    out, partial = {}, []
    for name, (key, unit) in GEOMETRY_KEYS.items():
        vals = [h.get(key) for h in headers]
        ok = [isinstance(v, int | float) and np.isfinite(v) for v in vals]
        if all(ok):
            out[name] = (np.asarray(vals, dtype=np.float64), {"units": unit, "fits_key": key})
        elif any(ok):
            partial.append((key, ok.index(False), len(ok) - sum(ok)))
    if partial:
        first = min(j for _, j, _ in partial)
        which = names[first] if names is not None else f"frame {first}"
        keys = ", ".join(f"{k} ({n})" for k, _, n in partial)
        warnings.warn(
            f"frames without a number for {keys} of {len(headers)} frames, first {which}: "
            "derotation (prep.derotate) takes the reference frame's value for every frame "
            "there, so those frames' own pointing or observer position is not followed; "
            "check or remove the frames",
            stacklevel=3,
        )
    return out


# Exposures this far from the series' median are named in a warning: automatic exposure
# control changes them by a few (AIA in flares; IRIS's SJI 0.7-8 s), not by this much.
ODD_EXPOSURE_FACTOR = 30.0


def _warn_odd_exposures(exp: np.ndarray, files: list[str], key: str) -> None:
    """Warn, naming the files, of exposures more than :data:`ODD_EXPOSURE_FACTOR` times
    from the median: each frame is divided by its exposure, so one wrong value scales that
    frame by the same factor, which the spectra of every pixel then carry."""
    med = float(np.median(exp))
    ratio = np.maximum(exp / med, med / exp)
    odd = np.flatnonzero(ratio > ODD_EXPOSURE_FACTOR)
    if odd.size == 0:
        return
    shown = ", ".join(f"{os.path.basename(files[j])} ({exp[j]:g} s)" for j in odd[:3])
    more = f" and {odd.size - 3} more" if odd.size > 3 else ""
    warnings.warn(
        f"{key} of {shown}{more} is more than {ODD_EXPOSURE_FACTOR:g} times from the "
        f"series' median {med:g} s. Each frame is divided by its exposure, so a wrong value "
        "scales its frame by that factor in every pixel's series: check those headers and "
        "remove a frame whose exposure is wrong (a real exposure needs nothing)",
        stacklevel=4,
    )


class _Keys(dict):
    """The header keys a plain file was scanned for (upper case), looked up as astropy's
    ``Header.get`` does: case-insensitively, absent keys giving the default."""

    def get(self, key: str, default: Any = None) -> Any:
        return dict.get(self, key.upper(), default)


def _number(h, key: str) -> tuple[float, str]:
    """(value of header ``key`` as a float, NaN if it is missing, not a number or its card
    cannot be parsed; what the header holds, for messages)."""
    try:
        v = h.get(key)
    except Exception as exc:  # astropy's VerifyError for a card it cannot parse
        return math.nan, f"unreadable card: {exc}"
    if v is None:
        return math.nan, "missing"
    try:
        return float(v), repr(v)
    except (TypeError, ValueError):
        return math.nan, repr(v)


def _frame_keys(cfg: InputConfig) -> tuple[str, ...]:
    """Every header key :func:`open_fits_series` looks up in every frame (upper case)."""
    keys = ["BSCALE", "BZERO", "BLANK", *cfg.time_key, "TIMESYS"]  # TIMESYS: the times' scale
    if any(k.upper() in ("DATE-OBS", "DATE_OBS") for k in cfg.time_key):
        keys.append("TIME-OBS")  # the time of day where DATE-OBS holds a date only
    if cfg.exposure_key:
        keys.append(cfg.exposure_key)
    keys += [k for k, _ in GEOMETRY_KEYS.values()]
    keys.append("WAVELNTH")  # one channel per series (check_one_channel)
    keys += list(_GRID_KEYS)  # one pixel grid per series (check_one_grid)
    keys += ["TELESCOP", "INSTRUME"]  # one instrument per series (check_one_channel)
    if cfg.quality_key:
        # frames flagged bad are left out (flagged_frames; AIA's bits on AIA frames)
        keys += [cfg.quality_key]
    return tuple(dict.fromkeys(k.upper() for k in keys))


def check_one_channel(files: list, headers: list) -> None:
    """Refuse a series whose frames carry different ``WAVELNTH``, ``TELESCOP`` or
    ``INSTRUME`` values (e.g. one 304 A frame among 1600 A ones, or an HMI frame among AIA
    ones, from a shared download folder), or lack one most others have, naming the odd files."""
    for key in ("WAVELNTH", "TELESCOP", "INSTRUME"):
        _check_one_value(files, headers, key)


def _check_one_value(files: list, headers: list, key: str) -> None:
    values = []
    for h in headers:
        try:
            v = h.get(key)
        except Exception:  # an unparsable card: not ours to judge here
            v = None
        values.append(v.strip() if isinstance(v, str) else v)
    seen = [v for v in values if v is not None]
    counts = Counter(seen)
    if not counts:
        return
    main = counts.most_common(1)[0][0]  # the value of most frames (first seen on a tie)

    def same(v) -> bool:  # numbers within 1e-4 of each other: one channel (6563.02, 6563.03)
        try:
            a, b = float(v), float(main)
        except (TypeError, ValueError):
            return v == main
        return abs(a - b) <= 1e-4 * max(abs(a), abs(b))

    # a frame without the label is odd where most frames carry it (else not judged)
    unlabelled_odd = 2 * len(seen) > len(values)
    odd = [
        (f, v)
        for f, v in zip(files, values, strict=True)
        if (v is None and unlabelled_odd) or (v is not None and not same(v))
    ]
    if not odd:
        return
    shown = ", ".join(
        f"{Path(f).name} ({key} {v})" if v is not None else f"{Path(f).name} (no {key})"
        for f, v in odd[:5]
    )
    more = f" and {len(odd) - 5} more" if len(odd) > 5 else ""
    what = {"WAVELNTH": "channel", "TELESCOP": "telescope", "INSTRUME": "instrument"}[key]
    raise InputError(
        f"{odd[0][0]}: frames of another {what} (or without its label) in the series: "
        f"{shown}{more}, "
        f"beside {len(files) - len(odd)} frames with {key} {main}; a series is one channel of "
        "one instrument: remove those files or narrow input.pattern (specfit init: give a "
        "quoted glob of one channel's files, 'FOLDER/*_1600_*.fits')"
    )


def check_one_grid(files: list, headers: list, shape: tuple) -> None:
    """Refuse a series whose frames' pixel grids differ by more than 0.1 px at the field's
    corner from the series' median grid, in scale or roll (e.g. level-1 and level-1.5
    (aia_prep) AIA frames mixed): specfit registers frames by their pointing only, so such
    frames would put other places of the Sun on one pixel. Each frame's grid is its linear
    pixel-to-sky matrix in arcsec (``CDi_j``, or ``CDELTi`` with ``PCi_j`` or ``CROTA2``, in
    ``CUNITi``), so one grid written two ways is one grid; frames without one are not compared."""
    mats = [_grid_matrix(h) for h in headers]
    seen = [m for m in mats if m is not None]
    if len(seen) < 2:
        return
    ref = np.median(np.stack(seen), axis=0)
    try:
        inv = np.linalg.inv(ref)
    except np.linalg.LinAlgError:
        return
    ny, nx = (int(shape[0] or 1), int(shape[1] or 1))
    corners = np.array([[nx, ny], [nx, -ny]], dtype=float).T / 2.0  # (x, y) from the centre

    def offset(m: np.ndarray) -> float:  # px by which m's grid departs from ref's at a corner
        shift = (inv @ m - np.eye(2)) @ corners  # (x, y) by corner
        return float(np.hypot(shift[0], shift[1]).max())

    odd = [(f, m) for f, m in zip(files, mats, strict=True) if m is not None and offset(m) > 0.1]
    if not odd:
        return
    f, m = odd[0]

    def describe(g: np.ndarray) -> str:
        det = float(np.linalg.det(g))
        scale = math.sqrt(abs(det))
        flip = -1.0 if det < 0 else 1.0  # a mirrored axis (CDELT1 < 0): the roll of the rest
        roll = math.degrees(math.atan2(flip * float(g[1, 0]), flip * float(g[0, 0])))
        return f"{scale:.6g} arcsec/px, roll {roll:.4g} deg"

    raise InputError(
        f"{f}: its pixel grid ({describe(m)}) departs from the series' ({describe(ref)}, the "
        f"median of {len(seen)} frames) by {offset(m):.2g} px at the field's corner ({len(odd)} "
        f"such frame{'s' if len(odd) > 1 else ''}); frames of one series must share one grid, "
        "e.g. not level-1 and level-1.5 (aia_prep) frames mixed: use one processing level for all"
    )


_ARCSEC = {"deg": 3600.0, "degree": 3600.0, "degrees": 3600.0, "arcsec": 1.0, "arcmin": 60.0}
_ARCSEC.update({"mas": 1e-3, "rad": 3600.0 * 180.0 / math.pi})
_GRID_KEYS = (
    *(f"{k}{i}" for k in ("CDELT", "CUNIT") for i in (1, 2)),
    "CROTA2",
    *(f"{k}{i}_{j}" for k in ("PC", "CD") for i in (1, 2) for j in (1, 2)),
)


def _grid_matrix(h: Any) -> np.ndarray | None:
    """A frame's linear pixel-to-sky matrix in arcsec ((world 1, 2) by (pixel x, y)), or None
    where its header gives none (or gives it in an unknown unit)."""
    try:
        v = {k: h.get(k) for k in _GRID_KEYS}
        rows = []
        for i in (1, 2):
            unit = str(v[f"CUNIT{i}"] or "deg").strip().lower()
            if unit not in _ARCSEC:
                return None
            rows.append(_ARCSEC[unit])
        has_pc = any(v[f"PC{i}_{j}"] is not None for i in (1, 2) for j in (1, 2))
        has_cd = any(v[f"CD{i}_{j}"] is not None for i in (1, 2) for j in (1, 2))
        cdelt = v["CDELT1"] is not None and v["CDELT2"] is not None
        if cdelt and (has_pc or not has_cd):  # PC before CD, as wcslib and sunpy take them
            c = np.array([float(v["CDELT1"]), float(v["CDELT2"])])
            if has_pc:  # an element not given is the identity's
                pc = [[v[f"PC{i}_{j}"] if v[f"PC{i}_{j}"] is not None else float(i == j)
                       for j in (1, 2)] for i in (1, 2)]  # fmt: skip
                m = c[:, None] * np.array(pc, dtype=float)
            else:
                t = math.radians(float(v["CROTA2"] or 0.0))
                m = np.array([[c[0] * math.cos(t), -c[1] * math.sin(t)],
                              [c[0] * math.sin(t), c[1] * math.cos(t)]])  # fmt: skip
        elif has_cd:
            m = np.array([[float(v[f"CD{i}_{j}"] or 0.0) for j in (1, 2)] for i in (1, 2)])
        else:
            return None
    except Exception:  # a value that is no number, or a card astropy cannot parse: not compared
        return None
    m = m * np.array(rows)[:, None]
    return m if np.all(np.isfinite(m)) and abs(np.linalg.det(m)) > 0 else None


def _scan(
    path: str, hdu: int | None, keys: tuple[str, ...], whole: bool = False
) -> tuple[Any, int, PlainLayout | None]:
    """One file's header (a :class:`_Keys` of ``keys`` for a plain file, else astropy's whole
    Header), its image HDU and, for a plain file, where its data are. ``whole``: always
    astropy's whole Header (and no layout).

    Raises
    ------
    InputError
        The file is truncated, has no image HDU, or its header cannot be read; the message
        names the file and the fix.
    """
    try:
        if not whole and hdu in (None, 0):
            try:
                values, layout, size = scan_plain(path, keys)
            except NotPlain:
                pass
            else:
                check_size(path, size, layout.size_needed)
                return _Keys(values), 0, layout
        with warnings.catch_warnings():
            # astropy's own truncation warning; check_data_size reports it as an error.
            warnings.filterwarnings("ignore", message="File may have been truncated")
            # and its note on a file cut inside a header: find_image_hdu names it truncated
            warnings.filterwarnings("ignore", message="Error validating header for HDU")
            with fits.open(path, memmap=False, lazy_load_hdus=True) as hdul:
                i = find_image_hdu(hdul, hdu, path)
                header = inherited_header(hdul, i)
                check_data_size(hdul, i, path)
        return header, i, None
    except InputError:
        raise
    except Exception as exc:
        raise InputError(
            f"{path}: cannot read the FITS header ({type(exc).__name__}: {exc}); remove or "
            "replace the file, or narrow input.pattern to exclude it"
        ) from None


def _header_times(files: list[str], headers: list[Any], keys: list[str]) -> tuple[Time, set]:
    """Every frame's time (in file order) and the set of time keys used.

    The ISO strings are parsed together (one Time of many strings costs about what one
    scalar does); if that fails, or a value is not plain ``isot``, each is parsed on its own
    with :func:`header_time`, which names the file at fault. Both give the same times.
    """
    texts, used, which = [], set(), []
    for h in headers:
        which.append(None)  # no time key: named by header_time below
        for k in keys:
            found = header_time_text(h, k)  # DATE-OBS holding a date only: + TIME-OBS
            if found is not None:
                texts.append(found[0])
                used.add(k)
                which[-1] = k
                break
    if len(used) > 1:
        # e.g. a frame without T_OBS takes DATE-OBS: AIA's T_OBS is mid-exposure, DATE-OBS its
        # start, and a frame whose keys disagree more than that lands elsewhere in time
        first = next(k for k in keys if k in used)
        odd = [f for f, k in zip(files, which, strict=True) if k is not None and k != first]
        warnings.warn(
            f"{len(odd)} of {len(headers)} frames have no {first} and take their time from "
            f"{' / '.join(k for k in keys if k in used and k != first)} (first: "
            f"{os.path.basename(odd[0])}); the keys can differ (AIA: T_OBS is mid-exposure, "
            "DATE-OBS its start): check those frames, or set input.time_key to one key",
            stacklevel=3,
        )
    scales = {header_scale(h, str(f)) for f, h in zip(files, headers, strict=True)}
    if len(texts) == len(headers) and all("T" in t for t in texts) and len(scales) == 1:
        try:
            return strict_time(texts, scale=scales.pop(), format="isot").utc, used
        except Exception:
            pass  # one of them is not a time (or past the end of its minute): named below
    # Frame by frame, in file order: the first file without a time, or with a bad one, is
    # named (as header_time always did).
    times = [header_time(h, keys, f)[0] for f, h in zip(files, headers, strict=True)]
    return Time(times), used


def _refuse_date_only(path: str, header: Any, keys: list[str]) -> None:
    """Two frames have the same time: if it came from a key that holds a date without a time
    of day (and no TIME-OBS completes it), say so, rather than call the frames duplicates."""
    for k in keys:
        found = header_time_text(header, k)
        if found is None:
            continue
        if "T" not in found[0] and " " not in found[0]:
            dated = k.upper() in ("DATE-OBS", "DATE_OBS")  # else TIME-OBS is not looked at
            no_tod = " and the header has no TIME-OBS" if dated else ""
            raise InputError(
                f"{path}: header key {k} holds a date without a time of day "
                f"({header.get(k)!r})"
                f"{no_tod}, so the frames of one day share one time; set input.time_key to "
                "the key holding each frame's time"
            )
        return


class _ReadSeries:
    """Picklable reader of a series' files (dask ships it to workers once).

    ``hdu``: the image HDU of every file (one index), or per file in file order.
    ``layouts`` (per file, in file order): where a plain file's data are, or None for a file
    astropy reads; the layouts travel as small arrays.
    """

    def __init__(
        self,
        hdu: int | list[int],
        layouts: list[PlainLayout | None] | None = None,
        shape: tuple[int, int] | None = None,
    ) -> None:
        self.hdu = np.asarray(hdu, dtype=np.int16)
        self.shape = shape
        layouts = layouts or []
        self.offset = np.array([lay.offset if lay else -1 for lay in layouts], dtype=np.int64)
        self.nbytes = np.array([lay.nbytes if lay else 0 for lay in layouts], dtype=np.int64)
        self.bitpix = np.array([lay.bitpix if lay else 0 for lay in layouts], dtype=np.int16)
        self.digest = np.array([lay.digest if lay else b"" for lay in layouts], dtype="S16")
        # BSCALE / BZERO / BLANK of plain files, as their headers say (the digest check at
        # read time makes sure they still do).
        self.scaling: dict[int, tuple[float, float, float | None]] = {}

    def _layout(self, i: int) -> PlainLayout | None:
        if i >= self.offset.size or self.offset[i] < 0:
            return None
        return PlainLayout(
            int(self.offset[i]), int(self.nbytes[i]), int(self.bitpix[i]), bytes(self.digest[i])
        )

    def __call__(self, paths: list[str], start: int, stop: int) -> np.ndarray:
        out = []
        for i in range(start, stop):
            try:
                out.append(self._one(paths[i], i))
            except InputError:
                raise
            except Exception as exc:  # a chunk holds several files: name the one at fault
                raise read_failure(str(paths[i]), exc) from None
        return np.stack(out)

    def _one(self, path: str, i: int) -> np.ndarray:
        layout = self._layout(i)
        raw = None if layout is None else read_plain(path, layout, self.shape)
        if raw is None:  # not plain, or changed since the scan: astropy reads it
            return _read_astropy(path, int(self.hdu if self.hdu.ndim == 0 else self.hdu[i]))
        bscale, bzero, blank = self.scaling.get(i, (1.0, 0.0, None))
        return _scale(raw, bscale, bzero, blank, self.shape)
