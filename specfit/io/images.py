"""Generic image sequences: JPG/PNG/TIFF frames (colour becomes grey), no FITS header.

Frame times (``input.time_source``; "auto" tries them in this order):

- ``filename``: ``input.time_pattern`` (strptime) matched against each file name, e.g.
  ``1600_%Y%m%d_%H_%M_%S.jpg``;
- ``csv``: ``input.times_csv`` with columns ``file,time`` (ISO 8601, or seconds);
- ``exif``: EXIF DateTimeOriginal (+ SubSecTimeOriginal), read as UTC.

Colour frames become luminance Y = 0.299 R + 0.587 G + 0.114 B (ITU-R BT.601), in the
image's own units (0-255 for 8-bit). There is no exposure, so nothing is normalised.
"""

from __future__ import annotations

import csv
import os
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import xarray as xr
from astropy.time import Time, TimeDelta

from specfit.config import InputConfig
from specfit.errors import InputError

from ._base import LazyFrames, assemble, parse_time
from .fits_series import list_files

__all__ = ["open_images", "IMAGE_SUFFIXES", "to_grey", "exif_time", "filename_time"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def to_grey(arr: np.ndarray) -> np.ndarray:
    """(ny, nx) float32 from a grey, grey+alpha, RGB or RGBA array (alpha dropped)."""
    a = np.asarray(arr)
    if a.ndim == 2:
        return a.astype(np.float32)
    if a.ndim == 3 and a.shape[2] in (1, 2):
        return a[..., 0].astype(np.float32)
    if a.ndim == 3 and a.shape[2] >= 3:
        return a[..., :3].astype(np.float32) @ _LUMA
    raise ValueError(f"unsupported image array shape {a.shape}")


# What a complete file ends with: PNG's IEND chunk (its length, type and CRC); JPEG's EOI
# marker, which cannot occur inside entropy-coded data (0xFF there is followed by 0x00 or a
# restart marker), within the last 64 KiB (cameras may append data after it).
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"
_JPEG_TAIL = 1 << 16


def _looks_complete(path: str) -> bool:
    """True if the file ends as a complete PNG / JPEG does (from its last bytes) or holds
    every byte its TIFF directory points to (:func:`_tiff_complete`). A cheap check before any
    work; a False is confirmed by decoding."""
    suffix = os.path.splitext(path)[1].lower()
    if suffix in (".tif", ".tiff"):
        return _tiff_complete(path)
    if suffix not in (".png", ".jpg", ".jpeg"):
        return True
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        n = len(_PNG_END) if suffix == ".png" else _JPEG_TAIL
        fh.seek(max(size - n, 0))
        tail = fh.read()
    return tail.endswith(_PNG_END) if suffix == ".png" else b"\xff\xd9" in tail


# TIFF tags: the offsets and byte counts of the image's strips (or tiles)
_TIFF_PARTS = ((273, 279), (324, 325))


def _tiff_complete(path: str) -> bool:
    """True if the first image's strips (or tiles), as its directory lists them, all end
    within the file; False if one does not or the directory is unreadable or lists none."""
    from PIL import Image

    size = os.path.getsize(path)
    try:
        with Image.open(path) as im:
            tags = im.tag_v2
            for offsets, counts in _TIFF_PARTS:
                if offsets in tags and counts in tags:
                    ends = [o + c for o, c in zip(tags[offsets], tags[counts], strict=False)]
                    return bool(ends) and max(ends) <= size
    except Exception:
        return False
    return False


# PIL modes whose array is grey (+ alpha) or R, G, B (+ alpha) as to_grey reads it (the
# integer and float greys I, I;16..., F keep their full range), and those converted to RGB
# first: palette images, so that the grey levels are real; CMYK and YCbCr, whose bands are
# not R, G, B (CMYK read as RGB inverts the intensities). Others (LAB, HSV) are refused.
_DIRECT_MODES = ("1", "L", "LA", "RGB", "RGBA", "F")
_TO_RGB_MODES = ("P", "PA", "CMYK", "YCbCr", "RGBX", "RGBa", "La")


def _mode_error(mode: str) -> str | None:
    """Why an image of PIL ``mode`` cannot be read as intensities, or None."""
    if mode in _DIRECT_MODES or mode in _TO_RGB_MODES or mode.startswith("I"):
        return None
    return f"its colour mode {mode} has no grey level here; save it as grey or RGB"


def _bit_depth(im, path: str) -> int:
    """Bits per sample the file holds (PNG's header, TIFF's BitsPerSample), else what PIL's
    mode gives: PIL reads 16-bit RGB(A) PNG and TIFF as 8 bits."""
    depth = None
    if im.format == "PNG":
        with open(path, "rb") as fh:
            head = fh.read(26)
        if len(head) == 26 and head[12:16] == b"IHDR":
            depth = head[24]
    elif im.format == "TIFF":
        bits = getattr(im, "tag_v2", {}).get(258)
        if bits is not None:
            depth = max(bits) if isinstance(bits, tuple | list) else int(bits)
    if depth is None:
        depth = {"1": 1, "F": 32, "I": 32}.get(im.mode, 16 if im.mode.startswith("I;16") else 8)
    return int(depth)


def _decoded_depth(mode: str) -> int:
    """Bits per sample of PIL's array for ``mode``."""
    if mode in ("F", "I"):
        return 32
    return 16 if mode.startswith("I;16") else 8


def _read_image(path: str) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        if im.mode in _TO_RGB_MODES:
            im = im.convert("RGB")
        return to_grey(np.asarray(im))


class _ReadImages:
    def __call__(self, paths: list[str], start: int, stop: int) -> np.ndarray:
        return np.stack([_read_image(p) for p in paths[start:stop]])


def exif_time(path: str) -> Time | None:
    """EXIF DateTimeOriginal (with sub-seconds) as UTC, or None if the file has none."""
    from PIL import Image

    with Image.open(path) as im:
        exif = im.getexif()
        sub = exif.get_ifd(0x8769)  # the Exif IFD holds DateTimeOriginal
        text = sub.get(36867) or exif.get(36867) or exif.get(306)  # 306 = DateTime
        frac = sub.get(37521)  # SubSecTimeOriginal
    if not text:
        return None
    dt = datetime.strptime(str(text).strip(), "%Y:%m:%d %H:%M:%S")
    t = Time(dt.replace(tzinfo=UTC).strftime("%Y-%m-%dT%H:%M:%S"), scale="utc")
    if frac:
        digits = "".join(ch for ch in str(frac) if ch.isdigit())
        if digits:
            t = t + TimeDelta(float("0." + digits), format="sec")
    return t


def filename_time(path: str, pattern: str) -> Time:
    """The time in a file name, parsed with the strptime ``pattern`` (UTC).

    Raises
    ------
    InputError
        Naming the file and the pattern when they do not match.
    """
    name = os.path.basename(path)
    try:
        dt = datetime.strptime(name, pattern)
    except ValueError:
        # Allow the pattern to match the name without its extension too.
        try:
            dt = datetime.strptime(os.path.splitext(name)[0], pattern)
        except ValueError:
            raise InputError(
                f"{path}: file name does not match input.time_pattern {pattern!r}; fix the "
                "pattern (strptime codes, e.g. '1600_%Y%m%d_%H_%M_%S.jpg') or narrow "
                "input.pattern to exclude the file"
            ) from None
    if dt.tzinfo is not None:  # %z / %Z in the pattern: the name's offset, to UTC
        dt = dt.astimezone(UTC)
    return Time(dt.strftime("%Y-%m-%dT%H:%M:%S.%f"), scale="utc")


def _csv_times(files: list[str], csv_path: str) -> tuple[Time, bool]:
    """The frames' times from ``input.times_csv`` and whether they are absolute (ISO text)
    or relative (plain seconds, from a nominal start)."""
    if not os.path.isfile(csv_path):
        raise InputError(f"input.times_csv {csv_path} does not exist; fix the path")
    table: dict[str, str] = {}
    with open(csv_path, newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is not None:  # "file, time": the spaces are not part of the names
            reader.fieldnames = [str(n).strip() for n in reader.fieldnames]
        if reader.fieldnames is None or not {"file", "time"} <= set(reader.fieldnames):
            raise InputError(
                f"input.times_csv {csv_path}: needs a header row with columns file,time "
                f"(got {reader.fieldnames})"
            )
        for line, row in enumerate(reader, start=2):
            name = os.path.basename((row["file"] or "").strip())
            if name in table:  # the last row won, silently
                raise InputError(
                    f"input.times_csv {csv_path}: {name} is listed twice (row {line} and "
                    "before; rows are matched by the file's name, without its folder); give "
                    "each frame one row"
                )
            table[name] = (row["time"] or "").strip()
    values = []
    for f in files:
        v = table.get(os.path.basename(f))
        if v is None:
            raise InputError(
                f"{f}: not listed in input.times_csv {csv_path}; add a row '{os.path.basename(f)},"
                "<time>' or narrow input.pattern"
            )
        values.append(v)
    try:
        secs = np.array([float(v) for v in values])
    except ValueError:
        times = [
            parse_time(
                v, f"{csv_path}: time of {f}", fix="fix its row of input.times_csv (UTC times)"
            )
            for v, f in zip(values, files, strict=True)
        ]
        return Time(times), True
    if not np.all(np.isfinite(secs)):
        f = files[int(np.flatnonzero(~np.isfinite(secs))[0])]
        raise InputError(
            f"input.times_csv {csv_path}: the time of {os.path.basename(f)} is not a finite "
            "number; give every frame a time in seconds (or ISO 8601)"
        )
    # Plain numbers are seconds; the absolute start is then nominal (whatever its year: a
    # real observation from 2000 given in ISO text is absolute).
    start = Time("2000-01-01T00:00:00", scale="utc")
    return start + TimeDelta(secs - secs.min(), format="sec"), False


def open_images(cfg: InputConfig) -> xr.DataArray:
    """Open a JPG/PNG/TIFF sequence lazily, one dask task per file.

    Raises
    ------
    InputError
        No files, unreadable or differently sized images, or no usable times (the message
        says which of input.time_pattern / times_csv to set).
    """
    from PIL import Image

    files = list_files(cfg, IMAGE_SUFFIXES)
    shape = depth0 = None
    for f in files:
        try:
            with Image.open(f) as im:
                size = (im.size[1], im.size[0])  # PIL gives (width, height)
                mode = im.mode
                depth = _bit_depth(im, f)
            if not _looks_complete(f):
                # a file cut short (an interrupted copy) would otherwise fail only when the
                # cube is written, after the frames before it: decode it now to be sure
                _read_image(f)
        except Exception as exc:
            raise InputError(
                f"{f}: cannot read the image ({type(exc).__name__}: {exc}); remove the file or "
                "narrow input.pattern"
            ) from None
        if _mode_error(mode):
            raise InputError(f"{f}: {_mode_error(mode)}, or narrow input.pattern")
        if depth > _decoded_depth(mode) and mode not in ("1", "P", "PA"):
            raise InputError(
                f"{f}: its {depth}-bit {mode} samples would be read as "
                f"{_decoded_depth(mode)} bits (PIL reads colour images of more than 8 bits "
                "so); save the frames as 16-bit grey PNG or TIFF, or as FITS"
            )
        if depth0 is None:
            depth0 = depth
        elif depth != depth0:
            raise InputError(
                f"{f}: {depth}-bit samples, where {files[0]} has {depth0}-bit ones; the levels "
                "of one series must be on one scale: convert the frames to one bit depth"
            )
        if shape is None:
            shape = size
        elif size != shape:
            raise InputError(
                f"{f}: image size {size} differs from {shape} of {files[0]}; all frames must "
                "have the same size"
            )
    source = cfg.time_source
    if source == "auto":
        source = "filename" if cfg.time_pattern else ("csv" if cfg.times_csv else "exif")
    absolute = True
    if source == "filename":
        if not cfg.time_pattern:
            raise InputError("input.time_source is filename but input.time_pattern is not set")
        times = Time([filename_time(f, cfg.time_pattern) for f in files])
    elif source == "csv":
        if not cfg.times_csv:
            raise InputError("input.time_source is csv but input.times_csv is not set")
        times, absolute = _csv_times(files, cfg.times_csv)
    elif source == "exif":
        ts = []
        for f in files:
            t = exif_time(f)
            if t is None:
                raise InputError(
                    f"{f}: no EXIF DateTimeOriginal; give times with input.time_pattern "
                    "(from file names) or input.times_csv"
                )
            ts.append(t)
        times = Time(ts)
    else:
        raise InputError(
            f"input.time_source {source!r} does not apply to images; use filename, csv or exif"
        )
    rel = (times - times[0]).to_value("s")
    order = np.argsort(rel, kind="stable")
    d = np.diff(rel[order])
    if np.any(d <= 0):
        j = int(np.argmin(d))
        raise InputError(
            f"{files[order[j]]} and {files[order[j + 1]]} have the same time; remove one or "
            "fix the times"
        )
    ny, nx = shape
    frames = LazyFrames(
        read=_ReadImages(),
        source=list(files),
        shape=(len(files), ny, nx),
        order=order,
        missing_below=cfg.missing_below,
    )
    attrs = {
        "source": str(Path(cfg.path).resolve()),
        "kind": "images",
        "bunit": "",
        "exposure_normalised": False,
        "time_source": source,
        "files": [os.path.basename(files[i]) for i in order],
    }
    if not absolute:
        attrs["time_note"] = "relative times only; start_time is nominal (2000-01-01T00:00:00)"
    return assemble(
        frames,
        times=times[order],
        exposure=None,
        time_chunk=1,
        attrs=attrs,
        max_frames=cfg.max_frames,
    )
