"""Pieces shared by every reader: the error type, lazy frame stacks, times, WCS coordinates.

Each reader gathers cheap metadata eagerly (file names, headers, times, exposures) so that
bad input fails before any compute, then hands a :class:`LazyFrames` object to
:func:`assemble`, which wraps it in a dask array (one task per chunk of frames) and an
``xarray.DataArray`` that follows the data model in DESIGN.md.
"""

from __future__ import annotations

import glob
import os
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
from astropy.io import fits
from astropy.time import Time

from specfit.errors import InputError, TimeOfDayError, missing_input

__all__ = [
    "GLOB_CHARS",
    "literal_glob",
    "input_names",
    "header_time_text",
    "cube_time_chunk",
    "whole_frames",
    "load_times",
    "check_finite_times",
    "LazyFrames",
    "assemble",
    "assemble_array",
    "parse_time",
    "pointing_jump",
    "header_scale",
    "seconds_per",
    "read_failure",
    "relative_seconds",
    "hpc_coords",
    "celestial_header",
    "check_data_size",
    "check_size",
    "clean_frames",
    "flagged_frames",
    "instrument_attrs",
    "series_field",
    "reference_frame",
]


# Characters that make input.path a glob, unless a path with them exists as written.
GLOB_CHARS = "*?["


def literal_glob(path: str) -> list[str]:
    """The names matching the glob ``path``, sorted; its leading components that exist as
    written are taken literally (a folder named ``AIA [1600]`` is that folder, not a set of
    characters), the rest as a glob.

    Parameters
    ----------
    path
        A glob such as ``AIA [1600]/*.fits`` or ``frames_[0-9]/*.fits``.

    Returns
    -------
    list of str
        The matching names (files and folders), sorted; a path that exists as written is
        the only match.
    """
    if os.path.exists(path):
        return [path]
    parts = Path(path).parts
    for i in range(len(parts) - 1, 0, -1):
        head = os.path.join(*parts[:i])
        if os.path.exists(head):
            return sorted(glob.glob(os.path.join(glob.escape(head), *parts[i:])))
    return sorted(glob.glob(path))


def input_path_set(path: str | None) -> str:
    """``input.path`` itself, or an InputError saying it is not set (every reader and the
    run's early check say it in these words)."""
    if not path:
        raise InputError("input.path is not set; give a folder, a glob or a file")
    return path


def input_names(
    path: str, pattern: str, frames: tuple[str, ...] | None = None
) -> tuple[list[str], str]:
    """The files that ``input.path`` names, sorted, and how to name them in a message.

    A path that exists as written is a file or a folder, never a glob (a folder named
    ``AIA [1600]``): a folder gives its files matching ``pattern`` (the folder's name taken
    literally), a file itself; otherwise ``path`` is a glob (see :func:`literal_glob`).

    With ``frames`` (the frame files' suffixes), a name with such a suffix that is a link
    whose target is missing (an archive disk not mounted) is an error: the frame would
    otherwise be left out without a word.

    Raises
    ------
    InputError
        When ``path`` does not exist and is no glob, or names broken links to frames.
    """
    if os.path.isdir(path):
        if not os.access(path, os.R_OK | os.X_OK):  # else it looks empty ("no FITS files")
            raise InputError(
                f"input.path: cannot list the folder {path} (no read permission); fix its "
                "permissions (chmod u+rx) or copy the frames where you can read them"
            )
        names = glob.glob(os.path.join(glob.escape(path), pattern))
        where = f"folder {path} with input.pattern {pattern!r}"
    elif os.path.exists(path):
        names, where = [path], f"file {path}"
    elif any(ch in path for ch in GLOB_CHARS):
        names, where = literal_glob(path), f"glob {path!r}"
    else:
        raise missing_input("input.path", path)
    if frames:
        broken = sorted(
            n
            for n in names
            if n.lower().endswith(frames) and os.path.islink(n) and not os.path.exists(n)
        )
        if broken:
            more = f" and {len(broken) - 1} more" if len(broken) > 1 else ""
            raise InputError(
                f"input.path: {len(broken)} frame(s) in {where} are links whose target is "
                f"missing: {broken[0]} -> {os.readlink(broken[0])}{more}; mount or restore "
                "their targets (or remove the links to run without those frames)"
            )
    return sorted(n for n in names if os.path.isfile(n)), where


_DATE_ONLY = re.compile(r"\d{4}-\d\d-\d\d$")
_OLD_DATE = re.compile(r"(\d\d)/(\d\d)/(\d\d)$")  # DD/MM/YY, 19YY (FITS before 1997)


def header_time_text(header: Any, key: str) -> tuple[str, str] | None:
    """The frame time that header ``key`` gives, as ISO 8601 text, and the key(s) it is from;
    None when the key is absent or empty.

    Old-style headers split the time: ``DATE-OBS`` (or ``DATE_OBS``) holds the date only
    (``2012-06-06``, or ``06/06/12`` before 1997) and ``TIME-OBS`` the time of day; such a
    date is joined with the header's ``TIME-OBS`` (``2012-06-06T05:00:12.3``, from
    "DATE-OBS + TIME-OBS"). A trailing ``Z`` is dropped.
    """
    value = header.get(key)
    if value in (None, ""):
        return None
    text, used = str(value).strip(), key
    if key.upper() in ("DATE-OBS", "DATE_OBS"):
        old = _OLD_DATE.match(text)
        if old is not None:
            text = f"19{old[3]}-{old[2]}-{old[1]}"
        if _DATE_ONLY.match(text):
            tod = header.get("TIME-OBS")
            if tod not in (None, ""):
                text, used = f"{text}T{str(tod).strip()}", f"{key} + TIME-OBS"
    return (text[:-1] if text.endswith("Z") else text), used


# A reader function takes (source, index, missing_below, scale) and returns one float32
# frame or a (k, ny, nx) block; it must be a module-level function so graphs pickle.
FrameReader = Callable[..., np.ndarray]


@dataclass
class LazyFrames:
    """An indexable (time, y, x) stack that reads frames only when sliced.

    ``dask.array.from_array`` stores this object once in the graph; every chunk task slices
    it, so a chunk of one frame reads exactly one file (or one slab of a cube).

    Parameters
    ----------
    read
        ``read(source, start, stop) -> ndarray (stop-start, ny, nx)`` of raw values.
    source
        Whatever ``read`` needs: a list of paths, a single path, ...
    shape
        (nt, ny, nx) of the whole stack.
    order
        Frame order: position i of the stack is raw frame ``order[i]`` (sorted by time).
    scale
        Per-frame multiplier (1 / exposure when normalising), length nt, or None.
    missing_below
        Raw values below this become NaN (sentinels), or None.
    blank
        Per-frame integer BLANK value of FITS integer data, or None.
    zero_is_missing
        A frame that is zero wherever it is finite is a dropout (observations: FITS, images);
        False for arrays a user computed (a base difference has an all-zero first frame).
    """

    read: Callable[[Any, int, int], np.ndarray]
    source: Any
    shape: tuple[int, int, int]
    order: np.ndarray
    scale: np.ndarray | None = None
    missing_below: float | None = None
    blank: Sequence[float | None] | None = None
    zero_is_missing: bool = True
    dtype: np.dtype = field(default_factory=lambda: np.dtype("float32"))

    @property
    def ndim(self) -> int:
        return 3

    def _frames(self, idx: np.ndarray) -> np.ndarray:
        """Read raw frames ``idx`` (stack positions), grouping runs of consecutive raw frames."""
        raw = self.order[idx]
        out = []
        start = 0
        # Consecutive raw indices are read as one slab (cubes read a slab in one call).
        for k in range(1, len(raw) + 1):
            if k == len(raw) or raw[k] != raw[k - 1] + 1:
                out.append(self._read_checked(int(raw[start]), int(raw[k - 1]) + 1))
                start = k
        if not out:
            return np.empty((0,) + self.shape[1:], dtype=self.dtype)
        return np.concatenate(out, axis=0)

    def _where(self, start: int, stop: int) -> str:
        """The file(s) holding raw frames [start, stop), for messages."""
        if isinstance(self.source, str | Path):
            return f"{self.source} (frames {start}-{stop - 1})"
        names = [str(p) for p in list(self.source)[start:stop]]
        return names[0] if len(names) == 1 else f"{names[0]} .. {names[-1]}"

    def _read_checked(self, start: int, stop: int) -> np.ndarray:
        """Raw frames [start, stop); any failure becomes an InputError naming the file.

        This runs inside dask tasks (on workers), where a bare reshape or decompression
        error would reach the user as a traceback without saying which file is bad.
        """
        want = (stop - start, *self.shape[1:])
        try:
            with warnings.catch_warnings():
                # astropy warns before failing on a short file; the error below says it all.
                warnings.filterwarnings("ignore", message="File may have been truncated")
                block = np.asarray(self.read(self.source, start, stop))
        except InputError:
            raise
        except Exception as exc:
            raise read_failure(self._where(start, stop), exc) from None
        if block.shape != want:
            raise InputError(
                f"{self._where(start, stop)}: read {block.shape} values but the header says "
                f"{want}; the file is damaged or was replaced: replace it, or remove it"
            )
        return block

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        key = key + (slice(None),) * (3 - len(key))
        tkey, ykey, xkey = key
        idx = np.arange(self.shape[0])[tkey]
        scalar_t = np.ndim(idx) == 0
        idx = np.atleast_1d(idx)
        frames = self._frames(idx)
        blank = None if self.blank is None else [self.blank[int(self.order[i])] for i in idx]
        scale = None if self.scale is None else self.scale[idx]
        block = clean_frames(frames, blank, self.missing_below, scale, self.zero_is_missing)
        block = block[:, ykey, xkey]
        return block[0] if scalar_t else block


def read_failure(where: str, exc: BaseException) -> InputError:
    """The error for data that could not be read from ``where`` (a file, or files), saying
    what happened and the fix."""
    if isinstance(exc, FileNotFoundError):
        return InputError(
            f"{where}: the file no longer exists (moved or deleted after the input was "
            "opened); put it back, or open the input again"
        )
    return InputError(
        f"{where}: cannot read the data ({type(exc).__name__}: {exc}); the file is damaged or "
        "truncated: replace it, or remove it / narrow input.pattern to exclude it"
    )


def flagged_frames(headers: Sequence[Any], cfg: Any, names: Sequence[str]) -> np.ndarray:
    """Which frames to leave out for their quality word: True where header key
    ``cfg.quality_key`` holds an integer with a bit of ``cfg.quality_bits`` set (None: AIA's
    :data:`specfit.config.AIA_BAD_QUALITY_BITS`, on frames whose ``TELESCOP`` is SDO/AIA only;
    frames without the key, or with another value, are kept). Leaving frames out is said in
    one warning naming the bits, how many frames carry each and the first such frame
    (``names``: the frames' names, in header order).

    Raises
    ------
    InputError
        Fewer than 2 frames are left (the message names the bits and the key that keeps them).
    """
    from specfit.config import AIA_BAD_QUALITY_BITS

    n = len(headers)
    drop = np.zeros(n, dtype=bool)
    if not cfg.quality_key or cfg.quality_bits == []:
        return drop
    words = np.zeros(n, dtype=np.int64)
    masks = np.zeros(n, dtype=np.int64)
    given = sum(1 << b for b in cfg.quality_bits or ())
    aia = sum(1 << b for b in AIA_BAD_QUALITY_BITS)
    for i, h in enumerate(headers):
        try:
            v = h.get(cfg.quality_key)
        except Exception:  # an unparsable card: not a quality word
            continue
        if not isinstance(v, int | np.integer) or isinstance(v, bool):
            continue
        words[i] = int(v) & 0xFFFFFFFF  # a signed 32-bit word: bit 31 makes it negative
        masks[i] = given if cfg.quality_bits is not None else (aia if _is_aia(h) else 0)
        drop[i] = bool(words[i] & masks[i])
    if not drop.any():
        return drop
    flagged = words[drop] & masks[drop]
    counts = {b: int(((flagged >> b) & 1).sum()) for b in range(32)}
    bits = ", ".join(f"bit {b} ({c})" for b, c in counts.items() if c)
    first = names[int(np.flatnonzero(drop)[0])]
    which = "input.quality_bits" if cfg.quality_bits is not None else "AIA's bad-frame bits"
    if n - int(drop.sum()) < 2:
        raise InputError(
            f"{int(drop.sum())} of the {n} frames have {cfg.quality_key} {bits} set "
            f"({which}; first: {first}), leaving fewer than 2: no usable series; choose another "
            "time range, or set input.quality_bits to the bits that should leave a frame out "
            "([] keeps every frame)"
        )
    warnings.warn(
        f"left out {int(drop.sum())} of {n} frames whose {cfg.quality_key} has {bits} set "
        f"({which}; first: {first}); the series goes on without them (resample interpolates "
        "across a gap they leave); input.quality_bits: [] keeps them",
        stacklevel=3,
    )
    return drop


def _is_aia(h: Any) -> bool:
    """Whether a header is an SDO/AIA frame's (TELESCOP SDO/AIA, or INSTRUME AIA_n)."""
    try:
        telescope = str(h.get("TELESCOP", "") or "").strip().upper()
        instrument = str(h.get("INSTRUME", "") or "").strip().upper()
    except Exception:  # an unparsable card: not known to be AIA's
        return False
    return telescope.startswith("SDO/AIA") or instrument.startswith("AIA")


def clean_frames(
    frames: np.ndarray,
    blank: Sequence[float | None] | None,
    missing_below: float | None,
    scale: np.ndarray | None,
    zero_is_missing: bool = True,
) -> np.ndarray:
    """Raw (k, ny, nx) frames -> float32 with missing values NaN, times a per-frame scale.

    Every reader of whole frames turns raw values into intensities through this one function
    (integer BLANK values, values below ``missing_below``, non-finite values and, with
    ``zero_is_missing`` (observed frames), every value of a frame that is zero wherever it is
    finite become NaN; then each frame is multiplied by its ``scale``, 1 / exposure when
    normalising), so that the same frames give bit-identical cubes whichever way they came in.
    """
    with np.errstate(over="ignore"):  # beyond float32's range: inf, made NaN below
        block = np.asarray(frames).astype(np.float32, copy=True)
    if blank is not None:
        for j, b in enumerate(blank):
            if b is not None:
                block[j][np.asarray(frames[j]) == b] = np.nan
    if missing_below is not None:
        with np.errstate(invalid="ignore"):
            block[block < missing_below] = np.nan
    block[~np.isfinite(block)] = np.nan
    # A frame that is zero wherever it has a value is a dropout (a readout or transfer
    # failure, a zero-filled missing frame), not a dark Sun: it is missing, like an all-NaN one.
    if zero_is_missing and block.ndim == 3 and block.shape[0]:
        block[np.all((block == 0) | np.isnan(block), axis=(1, 2))] = np.nan
    if scale is not None:
        with np.errstate(over="ignore"):
            block *= np.asarray(scale).astype(np.float32)[:, None, None]
        # a value the scale pushed beyond float32's range is missing too, as one read there
        block[np.isinf(block)] = np.nan
    return block


def assemble(
    frames: LazyFrames,
    *,
    times: Time,
    exposure: np.ndarray | None,
    time_chunk: int,
    attrs: dict[str, Any],
    hpc: tuple[np.ndarray, np.ndarray] | None = None,
    max_frames: int | None = None,
    time_coords: dict[str, tuple[np.ndarray, dict]] | None = None,
) -> xr.DataArray:
    """Wrap a :class:`LazyFrames` stack into the standard lazy "intensity" DataArray.

    ``times`` must already be in stack order (sorted). ``max_frames`` keeps the first N.
    ``time_coords`` are extra per-frame coordinates (values in stack order, attrs), e.g. the
    observer position and pointing that derotation needs.
    """
    nt, ny, nx = frames.shape
    # The name must change with anything that changes the values: the files themselves
    # (with their sizes and modification times), order, scaling and masking.
    token = da.core.tokenize(
        _file_stamps(frames.source),
        frames.shape,
        frames.order.tobytes(),
        None if frames.scale is None else frames.scale.tobytes(),
        frames.missing_below,
        None if frames.blank is None else list(frames.blank),
        type(frames.read).__name__,
        time_chunk,  # a key (name, i, 0, 0) means other frames under another chunking
    )
    arr = da.from_array(
        frames,
        chunks=(time_chunk, ny, nx),
        name=f"read-{attrs.get('kind', 'input')}-{token}",
        asarray=False,
        meta=np.empty((0, 0, 0), dtype=np.float32),
    )
    return assemble_array(
        arr,
        times=times,
        exposure=exposure,
        attrs=attrs,
        hpc=hpc,
        max_frames=max_frames,
        time_coords=time_coords,
    )


def assemble_array(
    arr: da.Array,
    *,
    times: Time,
    exposure: np.ndarray | None,
    attrs: dict[str, Any],
    hpc: tuple[np.ndarray, np.ndarray] | None = None,
    max_frames: int | None = None,
    time_coords: dict[str, tuple[np.ndarray, dict]] | None = None,
) -> xr.DataArray:
    """Label a lazy float32 (time, y, x) dask array as the standard "intensity" DataArray.

    Arguments as :func:`assemble`; ``arr`` is already cleaned (NaN for missing, scaled).
    """
    nt, ny, nx = arr.shape
    t_rel = relative_seconds(times)
    coords: dict[str, Any] = {
        "time": ("time", t_rel, {"units": "s", "long_name": "time since the first frame"}),
        "y": ("y", np.arange(ny, dtype=np.int64), {"units": "pixel"}),
        "x": ("x", np.arange(nx, dtype=np.int64), {"units": "pixel"}),
    }
    if exposure is not None:
        coords["exposure"] = ("time", np.asarray(exposure, dtype=np.float64), {"units": "s"})
    for name, (values, cattrs) in (time_coords or {}).items():
        coords[name] = ("time", np.asarray(values), cattrs)
    if hpc is not None:
        hx, hy = hpc
        coords["hpc_x"] = (("y", "x"), hx, {"units": "arcsec", "long_name": "helioprojective x"})
        coords["hpc_y"] = (("y", "x"), hy, {"units": "arcsec", "long_name": "helioprojective y"})
    attrs = dict(attrs)
    attrs["start_time"] = times[0].utc.isot + "Z"
    out = xr.DataArray(arr, dims=("time", "y", "x"), coords=coords, name="intensity", attrs=attrs)
    if max_frames is not None and max_frames < nt:
        out = out.isel(time=slice(0, max_frames))
    return out


def check_data_size(hdul: fits.HDUList, index: int, path: str) -> None:
    """Refuse a FITS file shorter than the data its header declares (a cut-short copy).

    Cheap: the header is already read, and the file size comes from ``os.stat``. Gzipped
    files are not checked here (their size says nothing about the data); their read errors
    are reported at compute time, naming the file. For tile-compressed images the check
    allows for the final block's padding, which some writers omit.

    Raises
    ------
    InputError
        Naming the file, the sizes and the fix.
    """
    import os

    if str(path).lower().endswith(".gz"):
        return
    info = hdul.fileinfo(index)
    if not info:
        return
    hdu = hdul[index]
    if isinstance(hdu, fits.CompImageHDU):
        need = info["datLoc"] + max(0, info["datSpan"] - 2879)
    else:
        h = hdu.header
        naxes = [int(h.get(f"NAXIS{k}", 0)) for k in range(1, int(h.get("NAXIS", 0)) + 1)]
        nbytes = abs(int(h.get("BITPIX", 8))) // 8 * int(np.prod(naxes)) if naxes else 0
        need = info["datLoc"] + nbytes
    check_size(path, os.path.getsize(path), need)


def check_size(path: str, size: int, need: int) -> None:
    """Refuse a file of ``size`` bytes whose header declares data up to byte ``need``."""
    if size < need:
        raise InputError(
            f"{path}: the file is truncated ({size} bytes, but its header declares data up to "
            f"byte {need}); copy or download it again, or remove it / narrow input.pattern"
        )


def _file_stamps(source: Any) -> list:
    """(path, size, mtime) of each file in ``source`` (a path or a list of paths)."""
    import os

    paths = [source] if isinstance(source, str) else list(source)
    out = []
    for p in paths:
        try:
            st = os.stat(p)
            out.append((str(p), st.st_size, st.st_mtime_ns))
        except OSError:
            out.append((str(p), None, None))
    return out


def strict_time(value: Any, **kwargs: Any) -> Time:
    """``Time(value, **kwargs)``, but a time of day past the end of its minute (seconds of 60
    or more outside a leap second, e.g. 06:29:99) raises :class:`TimeOfDayError`: astropy
    only warns (ERFA's "time is after end of day") and carries the excess into the next
    minute, which moves the frame in time without a word."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t = Time(value, **kwargs)
    for w in caught:
        if "end of day" in str(w.message):
            raise TimeOfDayError("its seconds run past the end of the minute")
        warnings.warn(w.message, w.category, stacklevel=2)
    return t


# The time scales a header's TIMESYS may name that specfit converts to UTC (astropy's names).
_TIME_SCALES = ("utc", "tai", "tt", "tdb", "tcg", "tcb", "ut1")


def header_scale(header: Any, where: str) -> str:
    """The time scale of a header's times: its ``TIMESYS`` (FITS; none: UTC), lower case.

    Raises
    ------
    InputError
        Naming ``where`` for a TIMESYS that is not one of :data:`_TIME_SCALES`.
    """
    value = header.get("TIMESYS") if hasattr(header, "get") else None
    scale = str(value or "").strip().lower()
    if scale in ("", "utc"):
        return "utc"
    if scale in _TIME_SCALES:
        return scale
    raise InputError(
        f"{where}: header key TIMESYS = {value!r} is not a time scale specfit reads "
        f"({', '.join(s.upper() for s in _TIME_SCALES)}); fix the header"
    )


_HEADER_FIX = "fix the header or choose another key with input.time_key"


def parse_time(value: Any, where: str, scale: str = "utc", fix: str = _HEADER_FIX) -> Time:
    """Parse one ISO 8601 time string (a trailing Z is allowed) in ``scale`` (a header's
    TIMESYS, :func:`header_scale`), returned in UTC. ``fix``: what the message tells the
    user to do (a header's by default; a CSV's or a store's attribute where they are read).

    Raises
    ------
    InputError
        Naming ``where`` (file and key) when the value is not a time, or its seconds run past
        the end of the minute (06:29:99, or :60 on a day without a leap second).
    """
    text = str(value).strip()
    if text.endswith("Z"):
        text = text[:-1]
    try:
        return strict_time(text, scale=scale, format="isot" if "T" in text else None).utc
    except TimeOfDayError:
        raise InputError(
            f"{where}: {value!r} has seconds past the end of its minute (60 or more, and no "
            f"leap second then); {fix}"
        ) from None
    except Exception:  # astropy raises several types, listing every format it tried
        raise InputError(
            f"{where}: {value!r} is not an ISO 8601 time in UTC such as 2012-06-06T05:00:18.57 "
            f"(no offset); {fix}"
        ) from None


def seconds_per(unit: Any, where: str) -> float:
    """Seconds in one ``unit`` of a time axis (FITS ``CUNITn``, a coordinate's ``units``):
    1 for none or seconds, 60 for ``min``, 1e-3 for ``ms``... (astropy's unit names).

    Raises
    ------
    InputError
        Naming ``where`` when the unit is not a unit of time: the numbers cannot be read as
        seconds without a word (a cadence of 0.4 s for 0.4 min).
    """
    import astropy.units as u

    text = str(unit if unit is not None else "").strip()
    text = text.split(" since ")[0].strip()  # CF: "seconds since 2012-06-06" is in seconds
    aliases = {
        **dict.fromkeys(("sec", "secs", "second", "seconds"), "s"),
        **dict.fromkeys(("minute", "minutes", "mins"), "min"),
        **dict.fromkeys(("hour", "hours", "hr", "hrs"), "h"),
        **dict.fromkeys(("day", "days"), "d"),
        **dict.fromkeys(("millisecond", "milliseconds", "msec"), "ms"),
    }  # CF's and everyday names of the units the message lists
    text = aliases.get(text.lower(), text)
    if text in ("", "s"):
        return 1.0
    try:
        return float(u.Unit(text).to(u.s))
    except Exception:
        raise InputError(
            f"{where}: the time axis' unit {text!r} is not a unit of time that specfit knows "
            "(s, ms, min, h, d); give the times in seconds"
        ) from None


# Solar rotation seen at disk centre: ~13.2 deg/day synodic at the equator on a ~960" disk
# gives ~9"/h; features elsewhere move less, so this is the largest drift to expect.
ROTATION_ARCSEC_PER_H = 9.2


def pointing_jump(arr: xr.DataArray) -> tuple[int, float] | None:
    """The largest step of the field's pointing between two consecutive frames, ``(k, px)``
    for frames k and k + 1, when it is far beyond what solar rotation moves a tracked field
    (10x, and at least 5 px): a re-pointing, or frames of another field among the series.
    None without per-frame WCS (``wcs_crval1`` / ``wcs_crpix1`` coordinates) or a jump.

    The step is that of CRVAL1 - CRPIX1 * CDELT1 (the sky position of a fixed pixel), so a
    cutout (which shifts every frame's CRPIX alike) does not change it.
    """
    if "wcs_header" not in arr.attrs or arr.sizes.get("time", 0) < 2:
        return None
    if "wcs_crval1" not in arr.coords and "wcs_crpix1" not in arr.coords:
        return None
    h = fits.Header.fromstring(str(arr.attrs["wcs_header"]), sep="\n")
    cdelt = float(h.get("CDELT1", 1.0))
    scale = abs(cdelt) or 1.0
    nt = arr.sizes["time"]
    crval = (
        np.asarray(arr["wcs_crval1"].values, float)
        if "wcs_crval1" in arr.coords
        else np.full(nt, float(h.get("CRVAL1", 0.0)))
    )
    crpix = (
        np.asarray(arr["wcs_crpix1"].values, float)
        if "wcs_crpix1" in arr.coords
        else np.full(nt, float(h.get("CRPIX1", 0.0)))
    )
    steps = np.abs(np.diff(crval - crpix * cdelt)) / scale
    t = np.asarray(arr["time"].values, dtype=float)
    dt_step = float(t[-1] - t[0]) / max(nt - 1, 1)
    limit = max(5.0, 10.0 * ROTATION_ARCSEC_PER_H * dt_step / 3600.0 / scale)
    finite = np.where(np.isfinite(steps), steps, 0.0)
    k = int(np.argmax(finite))
    return (k, float(finite[k])) if finite[k] > limit else None


def relative_seconds(times: Time) -> np.ndarray:
    """Seconds (float64) from the first element, computed in TAI so leap seconds count."""
    tai = times.tai
    # jd1/jd2 differences keep microsecond precision over days, unlike a single float JD.
    d = (tai.jd1 - tai.jd1[0]) + (tai.jd2 - tai.jd2[0])
    return np.asarray(d * 86400.0, dtype=np.float64)


_WCS_KEYS = (
    "WCSAXES",
    "CTYPE1",
    "CTYPE2",
    "CUNIT1",
    "CUNIT2",
    "CRPIX1",
    "CRPIX2",
    "CRVAL1",
    "CRVAL2",
    "CDELT1",
    "CDELT2",
    "CROTA2",
    "PC1_1",
    "PC1_2",
    "PC2_1",
    "PC2_2",
    "CD1_1",
    "CD1_2",
    "CD2_1",
    "CD2_2",
    "LONPOLE",
    "LATPOLE",
    "DATE-OBS",
    "DATE_OBS",
    "T_OBS",
    "MJD-OBS",
    "DSUN_OBS",
    "HGLN_OBS",
    "HGLT_OBS",
    "CRLN_OBS",
    "CRLT_OBS",
    "RSUN_REF",
    "RSUN_OBS",
    "TELESCOP",
    "INSTRUME",
    "WAVELNTH",
    "WAVEUNIT",
    "EXPTIME",
)


def celestial_header(header: fits.Header, obs_time: Time | None = None) -> fits.Header | None:
    """The 2-D helioprojective WCS (plus observer keys) of a header, or None if it has none.

    For a 3-D cube header the spatial axes 1 and 2 are kept. ``obs_time`` sets DATE-OBS, so
    that sunpy places the observer at the right time.
    """
    c1 = str(header.get("CTYPE1", "")).upper()
    c2 = str(header.get("CTYPE2", "")).upper()
    if not (c1.startswith("HPLN") and c2.startswith("HPLT")):
        return None
    out = fits.Header()
    out["NAXIS"] = 2
    out["NAXIS1"] = header.get("NAXIS1")
    out["NAXIS2"] = header.get("NAXIS2")
    for k in _WCS_KEYS:
        if k in header and header[k] is not None:
            out[k] = header[k]
    if "WAVELNTH" not in out and header.get("TWAVE1") is not None:
        # IRIS gives the wavelength as TWAVE1 (Angstrom): as WAVELNTH, the one key every
        # reader of a map knows (sunpy's IRIS map fails without either)
        out["WAVELNTH"] = header["TWAVE1"]
        out.setdefault("WAVEUNIT", "Angstrom")
    out["WCSAXES"] = 2
    if obs_time is not None:
        out["DATE-OBS"] = obs_time.utc.isot
        for k in ("T_OBS", "DATE_OBS", "MJD-OBS"):
            out.pop(k, None)
    return out


def hpc_coords(header: fits.Header, ny: int, nx: int) -> tuple[np.ndarray, np.ndarray]:
    """Helioprojective (x, y) in arcsec of every pixel centre, from a 2-D celestial header."""
    from astropy.wcs import WCS, FITSFixedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        w = WCS(header, naxis=2)
    yy, xx = np.mgrid[0:ny, 0:nx]
    lon, lat = w.wcs_pix2world(xx.astype(float), yy.astype(float), 0)
    # wcslib returns degrees; helioprojective longitudes near 360 are small negatives.
    lon = (np.asarray(lon) + 180.0) % 360.0 - 180.0
    return (lon * 3600.0).astype(np.float64), (np.asarray(lat) * 3600.0).astype(np.float64)


def instrument_attrs(h: Any, attrs: dict) -> None:
    """Copy instrument / wavelength from common header keys (any mapping), where present."""
    inst = " ".join(str(h.get(k, "")).strip() for k in ("TELESCOP", "INSTRUME") if h.get(k))
    if inst:
        attrs["instrument"] = inst
    for k in ("WAVELNTH", "TWAVE1"):
        if h.get(k) not in (None, ""):
            attrs["wavelength"] = float(h[k])
            attrs["wavelength_unit"] = str(h.get("WAVEUNIT", "angstrom")).strip()
            break


def reference_frame(nt: int, max_frames: int | None = None) -> int:
    """The reference (middle) frame of a series of ``nt`` frames of which ``input.max_frames``
    keeps the first: the middle of the frames kept, so that a run with ``max_frames`` has the
    reference (WCS, ``hpc_x``/``hpc_y``, coalignment) of a run on those frames alone."""
    return (min(nt, max_frames) if max_frames else nt) // 2


def series_field(
    headers: Sequence[Any],
    times: np.ndarray,
    ny: int,
    nx: int,
    normalised: bool,
    max_frames: int | None = None,
) -> tuple[fits.Header | None, tuple[np.ndarray, np.ndarray] | None, dict]:
    """What a time-sorted series of frame headers (any mappings) says about its field.

    The middle frame (of the first ``max_frames``, :func:`reference_frame`) is the
    reference: its celestial WCS (at its time) gives the helioprojective coordinates; the
    first frame's unit (``/ s`` once normalised by exposure) and instrument keys go in the
    attrs. Returns ``(celestial header or None, (hpc_x, hpc_y) or None, attrs)``.
    """
    ref = reference_frame(len(headers), max_frames)
    cel = celestial_header(headers[ref], times[ref])
    hpc = hpc_coords(cel, ny, nx) if cel is not None else None
    h0 = headers[0]
    bunit = str(h0.get("BUNIT", h0.get("PIXLUNIT", "")) or "").strip()
    attrs: dict[str, Any] = {
        "bunit": (f"{bunit} / s" if bunit else "1 / s") if normalised else bunit,
        "exposure_normalised": normalised,
        "reference_index": ref,
    }
    if cel is not None:
        attrs["wcs_header"] = cel.tostring(sep="\n")
    instrument_attrs(h0, attrs)
    return cel, hpc, attrs


CHUNK_BYTES = 16 * 2**20  # about this many bytes of float32 per dask chunk of a cube


def cube_time_chunk(nt: int, ny: int, nx: int, target_bytes: int = CHUNK_BYTES) -> int:
    """Frames per dask chunk for a cube: about ``target_bytes`` of float32, at most 16 frames."""
    per = max(1, target_bytes // max(1, ny * nx * 4))
    return int(max(1, min(nt, per, 16)))


def whole_frames(data):
    """``data`` ((time, y, x): a dask array, or any array, taken one frame per chunk) as a
    dask array of whole frames, with time chunks no longer than :func:`cube_time_chunk` (a
    cube read in spatial blocks of many frames would otherwise become chunks of many whole
    frames)."""
    nt, ny, nx = data.shape
    if not isinstance(data, da.Array):
        data = da.from_array(np.asarray(data), chunks=(1, ny, nx))
    tc = cube_time_chunk(nt, ny, nx)
    if max(data.chunks[0]) > tc:
        data = data.rechunk({0: tc})
    return data.rechunk({1: ny, 2: nx})


def check_finite_times(secs: np.ndarray, what: str, fix: str) -> None:
    """Refuse frame times that are not all finite: ``{what} ... frame(s) [..] ...; {fix}``."""
    finite = np.isfinite(secs) if secs.dtype.kind != "M" else ~np.isnat(secs)
    if not np.all(finite):
        bad = np.flatnonzero(~finite)
        raise InputError(
            f"{what} at frame(s) {bad[:5].tolist()}{' ...' if bad.size > 5 else ''} (of "
            f"{secs.size}); {fix}"
        )


def load_times(
    path: str, nt: int | None = None, shape: tuple[int, ...] | None = None
) -> np.ndarray | Time:
    """Frame times from a .npy: float seconds or timedelta64 durations (returned as ndarray of
    seconds) or datetime64 (as Time).

    Raises
    ------
    InputError
        If the file is missing, not 1-D, or has not exactly ``nt`` times (one per frame; the
        cube's ``shape``, where given, is named, and an axis of that length other than the
        first suggests a cube stored with its time axis elsewhere).
    """
    if not Path(path).is_file():
        raise InputError(f"input.times {path} does not exist; give a .npy of frame times (s)")
    try:
        t = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise InputError(f"input.times {path}: not a readable .npy ({exc})") from None
    if t.ndim != 1:
        raise InputError(f"input.times {path}: must be 1-D (one time per frame), got {t.shape}")
    if nt is not None and t.shape[0] != nt:
        cube = f" (cube shape {tuple(shape)})" if shape is not None else ""
        hint = "give one time per frame"
        if shape is not None and t.shape[0] in shape[1:]:
            axis = 1 + list(shape[1:]).index(t.shape[0])
            hint = (
                f"the cube's axis {axis} has {t.shape[0]}: store it as (time, y, x), e.g. "
                f"np.moveaxis(cube, {axis}, 0), or give one time per frame"
            )
        raise InputError(
            f"input.times {path} has {t.shape[0]} times but the cube has {nt} frames{cube}; {hint}"
        )
    if np.issubdtype(t.dtype, np.datetime64):
        check_finite_times(t, f"input.times {path}: no time (NaT)", "give every frame a time")
        return Time(t.astype("datetime64[ns]").astype(str), scale="utc", format="isot")
    if np.issubdtype(t.dtype, np.timedelta64):
        # durations (numpy counts them in their own unit: ns read as s was 1e9 x the times)
        secs = t / np.timedelta64(1, "s")  # NaT -> NaN
        check_finite_times(secs, f"input.times {path}: no time (NaT)", "give every frame a time")
        return secs
    if not np.issubdtype(t.dtype, np.number) or not np.all(np.isfinite(t)):
        raise InputError(f"input.times {path}: must hold finite numbers (seconds) or datetime64")
    return np.asarray(t, dtype=float)
