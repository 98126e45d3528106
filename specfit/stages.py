"""The dask/xarray face of each kernel: lazy stages on labelled arrays.

Each public function takes and returns dask-backed ``xarray`` objects and adds no numerics of
its own: the work is done per block by the pure kernels in :mod:`specfit.kernels`. Chunk
rules: the time (or frequency) axis is one chunk, space is tiled; a stage that needs
time-contiguous chunks rechunks (and says so) when given per-frame chunks.

The per-block pieces are those of THE tile chain, :mod:`specfit.kernels.tile`, which
:mod:`specfit.pipeline` runs tile by tile with resumable writes: both ways of running give
bit-identical maps, with the variables, dtypes and attrs of the results contract
(:mod:`specfit.store`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Iterator, Mapping
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

from specfit.config import DEFAULTS
from specfit.kernels import periodogram as _pg
from specfit.kernels import resample as _rs
from specfit.kernels import tile as _tile

__all__ = [
    "ingest",
    "resample",
    "power_spectra",
    "fit",
    "field_significance",
    "resolve_models",
    "check_grid_size",
]

log = logging.getLogger("specfit")


# ----------------------------------------------------------------------------- ingest
def ingest(
    source: Any, prep: Any = None, *, data: Any = None, check_pointing: bool = True
) -> xr.DataArray:
    """Open image frames lazily as a (time, y, x) ``intensity`` DataArray, then preprocess.

    Parameters
    ----------
    source
        A :class:`specfit.config.InputConfig`, a mapping of its keys, a path (folder, glob or
        file; the kind is detected), a full :class:`specfit.config.Config`, or sunpy data in
        memory: a ``sunpy.map.MapSequence``, a list of Maps or an ``ndcube.NDCube`` with a
        time axis (read with the default ``input`` settings).
    prep
        A :class:`specfit.config.PrepConfig` (or mapping); defaults to the Config's own, or none.
    data
        sunpy data in memory (as above) read with the ``input`` settings of ``source``
        (exposure key, normalisation, missing values); ``input.path`` must then be unset.
    check_pointing
        Without derotation (``prep.derotate``), log a warning when the frames' pointing
        jumps far beyond solar rotation between two frames (two fields in one series,
        :func:`pointing_jump_message`). ``specfit run`` refuses such input itself.

    Raises
    ------
    InputError
        Bad input (the message names the file or Map and the fix), or ``data`` given
        together with an ``input.path``.
    """
    from specfit.config import Config, InputConfig, PrepConfig
    from specfit.errors import InputError
    from specfit.io import open_input
    from specfit.io.sunpy_objects import is_sunpy_object, open_sunpy

    if data is None and is_sunpy_object(source):
        source, data = InputConfig(kind="memory"), source
    if isinstance(source, Config):
        prep = source.prep if prep is None else prep
        source = source.input
    if source is None:
        source = InputConfig(kind="memory")
    if isinstance(source, str | bytes) or hasattr(source, "__fspath__"):
        source = InputConfig(path=str(source))
    elif isinstance(source, Mapping):
        source = InputConfig.model_validate(dict(source))
    if not isinstance(source, InputConfig):
        held = f"{type(source).__name__} {getattr(source, 'shape', '')}".rstrip()
        raise InputError(
            "specfit.ingest reads frames from files (a path or an input config) or sunpy data; "
            f"got {held}. Frames already in an array skip it: give a (time, y, x) DataArray "
            "with a time coordinate in seconds to specfit.resample"
        )
    if data is not None:
        if source.path or source.kind not in ("auto", "memory"):
            raise InputError(
                f"input.path {source.path!r} / input.kind {source.kind!r} given together with "
                "data=; the frames come from one place: drop input.path (kind auto or memory)"
            )
        arr = open_sunpy(data, source)
    else:
        arr = open_input(source)
    if prep is not None:
        prep = prep if isinstance(prep, PrepConfig) else PrepConfig.model_validate(dict(prep))
        # Nothing to do means no import of the solar stack (sunpy is slow to import).
        if prep != PrepConfig():
            from specfit.prep import apply_prep

            arr = apply_prep(arr, prep)
    if check_pointing and (prep is None or not prep.derotate):
        jump = pointing_jump_message(arr)
        if jump is not None:
            log.warning(
                f"{jump}; keep one field's frames, or ingest with prep derotate: true to "
                "align the frames by their WCS"
            )
    return arr


def pointing_jump_message(arr: xr.DataArray) -> str | None:
    """What is wrong when the pointing of ``arr``'s frames jumps far beyond solar rotation
    between two frames (:func:`specfit.io.pointing_jump`), naming the frames (and their
    files where known); None when it does not. Read at fixed pixel positions, such frames
    mix two fields in one pixel's series."""
    from specfit.io import pointing_jump

    found = pointing_jump(arr)
    if found is None:
        return None
    k, size = found
    files = list(arr.attrs.get("files") or [])
    named = f" ({files[k]} and {files[k + 1]})" if len(files) == arr.sizes["time"] else ""
    return (
        f"input: the pointing jumps {size:.0f} px between frames {k} and {k + 1}{named}, far "
        "beyond solar rotation: the frames show different fields (a re-pointing, or another "
        "data set in the folder), so a pixel's series would mix them"
    )


# A frame's exposure is "other" when it differs from the series' median by more than this factor.
EXPOSURE_STEP = 1.5


def exposure_offsets(exposure: np.ndarray) -> tuple[float, np.ndarray] | None:
    """(the median exposure, each frame's ``|ln(exposure / median)|``, NaN where the exposure
    is unknown or not positive); None with fewer than two usable exposures. A frame is of
    another exposure where the offset exceeds ``ln(EXPOSURE_STEP)``."""
    exposure = np.asarray(exposure, dtype=float)
    ok = np.isfinite(exposure) & (exposure > 0)
    if ok.sum() < 2:
        return None
    typical = float(np.median(exposure[ok]))
    step = np.full(exposure.shape, np.nan)
    step[ok] = np.abs(np.log(exposure[ok] / typical))
    return typical, step


def exposure_mismatches(arr: xr.DataArray, limit: int = 20) -> list[dict]:
    """Frames whose exposure times the data contradict, read before any work.

    A frame whose exposure (the ``exposure`` coordinate) differs from the series' median by
    more than :data:`EXPOSURE_STEP` is compared with the nearest frame of the usual exposure
    (within 10 % of the median): if the exposure were right, the ratio of their raw levels
    (median over finite pixels, times the exposure where the reader divided by it) would
    follow the ratio of their exposures on a steady scene; a frame is named when that level
    ratio is far nearer 1 than the exposure ratio (four times nearer, in ln), i.e. the frame
    holds the counts of a usual exposure and normalising by its listed one scales it by the
    exposure ratio (IRIS Si IV frames under automatic exposure control, docs/data.md). A real
    brightening that the exposure control followed moves the level too, and is not named.

    Only the first ``limit`` frames of another exposure are read (two medians each). Returns
    one dict per frame checked: ``frame``, ``reference`` (indices), ``exposure_ratio`` (the
    frame's exposure over the reference's), ``level_ratio`` (their raw levels'; NaN where
    either frame has no finite pixel) and ``contradicted`` (the frame is named).
    """
    if "exposure" not in arr.coords or "time" not in arr.dims:
        return []
    exposure = np.asarray(arr["exposure"].values, dtype=float)
    offsets = exposure_offsets(exposure)
    if offsets is None:
        return []
    step = offsets[1]
    with np.errstate(invalid="ignore"):
        usual = np.flatnonzero(step < np.log(1.1))
        other = np.flatnonzero(step > np.log(EXPOSURE_STEP))[:limit]
    if other.size == 0 or usual.size == 0:
        return []
    scaled = bool(arr.attrs.get("exposure_normalised"))
    levels: dict[int, float] = {}

    def level(k: int) -> float:
        if k not in levels:
            frame = np.asarray(arr.isel(time=k).values, dtype=float)
            finite = frame[np.isfinite(frame)]
            med = float(np.median(finite)) if finite.size else math.nan
            levels[k] = med * exposure[k] if scaled else med
        return levels[k]

    checked = []
    for i in other:
        ref = int(usual[np.argmin(np.abs(usual - i))])
        q = exposure[i] / exposure[ref]
        with np.errstate(divide="ignore", invalid="ignore"):
            r = level(int(i)) / level(ref)
        checked.append(
            {
                "frame": int(i),
                "reference": ref,
                "exposure_ratio": float(q),
                "level_ratio": float(r),
                "contradicted": bool(r > 0 and abs(math.log(r)) * 4 < abs(math.log(r / q))),
            }
        )
    return checked


@contextlib.contextmanager
def _specfit_errors(prefix: str = "", input_error: bool = False) -> Iterator[None]:
    """A kernel's ValueError raised as a SpecfitError, as the stage functions promise: a
    :class:`~specfit.errors.ConfigError` (the settings), or an
    :class:`~specfit.errors.InputError` (the data), its message after ``prefix``. An error
    that is a SpecfitError already (it names its key) passes as it is."""
    from specfit.errors import ConfigError, InputError, SpecfitError

    try:
        yield
    except ValueError as exc:
        if isinstance(exc, SpecfitError):
            raise
        raise (InputError if input_error else ConfigError)(f"{prefix}{exc}") from None


def _time_contiguous(arr: xr.DataArray, tile: int | None = None) -> xr.DataArray:
    """Rechunk to one chunk along time and spatial tiles (a no-op when already so)."""
    if arr.chunks is None:
        arr = arr.chunk()
    tchunks = arr.chunksizes.get("time", (arr.sizes["time"],))
    if len(tchunks) == 1:
        return arr
    tile = tile or 64
    log.info("rechunking to time-contiguous tiles of %d px", tile)
    return arr.chunk({"time": -1, "y": tile, "x": tile})


# ----------------------------------------------------------------------------- resample
def _frames(arr: Any, stage: str) -> xr.DataArray:
    """``arr`` as a (time, y, x) DataArray in that axis order (transposed when its dims come
    in another; the kernels take axis 0 for time), with a ``time`` coordinate.

    Raises
    ------
    InputError
        Not a DataArray, not dims {time, y, x}, or no time coordinate: one line naming what
        was given and the fix.
    """
    from specfit.errors import InputError

    fix = (
        "as specfit.ingest gives it; wrap an array as xarray.DataArray(a, dims=('time', 'y', "
        "'x'), coords={'time': seconds})"
    )
    if not isinstance(arr, xr.DataArray):
        shape = getattr(arr, "shape", "")
        raise InputError(
            f"specfit.{stage} needs a (time, y, x) xarray.DataArray with a time coordinate, "
            f"{fix}; got {type(arr).__name__} {shape}".rstrip()
        )
    if set(arr.dims) != {"time", "y", "x"}:
        raise InputError(
            f"specfit.{stage} needs dims (time, y, x), got {tuple(arr.dims)}; name the axes so "
            "(DataArray.rename; DataArray.expand_dims(y=1, x=1) for one pixel's series)"
        )
    if "time" not in arr.coords:
        raise InputError(
            f"specfit.{stage} needs a time coordinate (seconds, or datetime64), {fix}; without "
            "one the frame index would be taken for seconds"
        )
    return arr.transpose("time", "y", "x")


def _seconds(arr: xr.DataArray) -> np.ndarray:
    """The frames' times in seconds from the ``time`` coordinate: seconds as specfit's readers
    give them, or datetime64 (converted; taking those as numbers would read nanoseconds or
    milliseconds as seconds)."""
    t = arr["time"].values
    if np.issubdtype(t.dtype, np.datetime64):
        return (t - t[0]).astype("timedelta64[ns]").astype(np.float64) / 1e9
    if np.issubdtype(t.dtype, np.timedelta64):
        return t.astype("timedelta64[ns]").astype(np.float64) / 1e9
    unit = str(arr["time"].attrs.get("units", "s")).strip()
    if (unit.split() or [""])[0] not in _SECONDS:  # "seconds since ...": offsets in seconds
        # numbers in another unit (ms, min) would be read as seconds: every frequency off
        raise ValueError(
            f"the time coordinate's units are {unit!r}; give seconds (or datetime64), e.g. "
            'arr.assign_coords(time=("time", arr.time.values / 1000, {"units": "s"})) for '
            "milliseconds"
        )
    try:
        return np.asarray(t, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(
            f"the time coordinate must be seconds or datetime64, got {t.dtype} values such as "
            f"{t[0]!s}; convert it, e.g. arr.assign_coords(time=arr.time.astype('datetime64[ns]'))"
        ) from None


# How a numeric coordinate may say seconds, or hertz (xarray's "units" attr; none: assumed)
_SECONDS = ("s", "sec", "second", "seconds", "")
_HERTZ = ("Hz", "hz", "1/s", "1 / s", "s-1", "s^-1", "s**-1", "")

# A uniform grid with more samples than this per frame is mostly interpolation: a frame's
# time far from the others, or a cadence far below the frames'.
MAX_SAMPLES_PER_FRAME = 10


def median_spacing(times: np.ndarray) -> float:
    """The median of the positive spacings of frame ``times`` (s); 0.0 without any."""
    d = np.diff(np.asarray(times, dtype=float))
    d = d[d > 0]
    return float(np.median(d)) if d.size else 0.0


def check_grid_size(times: np.ndarray, cadence: float | None = None, files: Any = None) -> None:
    """Refuse, before any grid is made, a uniform grid of more than
    :data:`MAX_SAMPLES_PER_FRAME` samples per frame, naming its cause.

    Parameters
    ----------
    times
        ``(nt,)`` frame times in seconds, increasing.
    cadence
        ``resample.cadence`` (None: the frames' median spacing stands for the cadence
        :func:`specfit.kernels.resample.choose_cadence` would choose).
    files
        The frames' file names in time order (``attrs["files"]``), to name the culprits.

    Raises
    ------
    InputError
        When the frames' own spacing already gives such a grid, i.e. gaps make up nearly all
        of the span: one frame far from the others (both frames named), or the largest gaps
        (named with their frames).
    ConfigError
        When ``resample.cadence`` is far below the frames' spacing.
    """
    from specfit.errors import ConfigError, InputError

    t = np.asarray(times, dtype=float)
    if t.size < 2:
        return
    d = np.diff(t)
    median = median_spacing(t)
    span = float(t[-1] - t[0])
    if not (median > 0 and math.isfinite(span)):
        return
    limit = MAX_SAMPLES_PER_FRAME * t.size
    names = list(files) if files is not None and len(files) == t.size else None

    def frame(k: int) -> str:
        return f"frame {k}" + (f" ({names[k]})" if names else "")

    own = span / median + 1  # the grid at the frames' own spacing
    if own > limit:
        i = int(np.argmax(d))
        if d[i] > 0.5 * span:
            raise InputError(
                f"{frame(i)} and {frame(i + 1)} are {d[i]:.6g} s apart, "
                f"{100 * d[i] / span:.1f} % of the series' span: a grid over it would hold "
                f"{own:.3g} samples for {t.size} frames. One frame's time is far from the "
                "others (check its DATE-OBS/T_OBS) or the frames come from separate "
                "observations: give the frames of one observation"
            )
        gaps = np.flatnonzero(d > 1.5 * median)
        biggest = gaps[np.argsort(d[gaps])[::-1][:3]]
        listed = "; ".join(f"{d[k]:.6g} s after {frame(k)}" for k in sorted(biggest))
        share = float(d[gaps].sum() - gaps.size * median) / span
        raise InputError(
            f"gaps make up {100 * share:.0f} % of the series' {span:.6g} s: a uniform grid at "
            f"the frames' spacing ({median:.6g} s) would hold {own:.3g} samples for {t.size} "
            f"frames, nearly all interpolated (largest gaps: {listed}). Give one continuous "
            "stretch of frames (e.g. a folder per observation)"
        )
    if cadence is None:
        return
    step = float(cadence)
    n = span / step + 1
    if step > 0 and math.isfinite(step) and n > limit:
        raise ConfigError(
            f"resample.cadence={step:g} s gives {n:.3g} samples for {t.size} frames (more than "
            f"{MAX_SAMPLES_PER_FRAME} per frame; the frames' median spacing is {median:.6g} s): "
            "choose a cadence near the frames' or leave resample.cadence unset"
        )


def check_samples(times: np.ndarray, new_times: np.ndarray, cadence: float | None) -> None:
    """Raise a :class:`specfit.errors.ConfigError` naming the cadence when the uniform grid
    ``new_times`` of frames at ``times`` (s) holds fewer than 8 samples (too few to take a
    spectrum of)."""
    if new_times.size >= 8:
        return
    from specfit.errors import ConfigError

    span = f"{new_times.size} sample(s) over the {times[-1] - times[0]:.6g} s the frames span"
    if cadence is None:
        step = float(new_times[1] - new_times[0]) if new_times.size > 1 else float("nan")
        raise ConfigError(
            f"the frames' own cadence ({step:.6g} s, resample.cadence unset) gives {span}; at "
            "least 8 are needed: set a shorter resample.cadence or give more frames"
        )
    raise ConfigError(
        f"resample.cadence={cadence:g} s gives {span}; at least 8 are needed: choose a shorter "
        "cadence (or leave it unset: the frames' own)"
    )


def gap_share_warning(gaps: list, span: float) -> str | None:
    """The warning for gaps that cover more than a tenth of the series (``gaps``: the
    reported (start, end) seconds, ``span``: the series' seconds), or None; said by the run
    and by ``specfit init`` alike."""
    share = sum(b - a for a, b in gaps) / span if span > 0 else 0.0
    if share <= 0.1:
        return None
    return (
        f"the gaps above cover {100 * share:.0f} % of the series: every pixel's spectrum is "
        "that much linear interpolation (which has no power at high frequencies), not data; "
        "fit a stretch without long gaps (input.pattern, input.max_frames) unless that is meant"
    )


def coarse_cadence_warning(times: np.ndarray, dt: float, chosen: bool = False) -> str | None:
    """The warning for a grid coarser than the frames (``dt`` over 1.5x their median
    spacing), or None: linear interpolation then skips frames, which are never used, and
    the power above the grid's Nyquist frequency folds into the band unfiltered. ``chosen``:
    ``dt`` is the cadence specfit chose (``resample.cadence: null``), not the user's."""
    median = median_spacing(times)
    if not (median > 0 and dt > 1.5 * median):
        return None
    what = (
        f"resample.cadence: null chose {dt:.4g} s (the grid closest to most frames), "
        if chosen
        else f"resample.cadence {dt:.4g} s is "
    )
    return (
        f"{what}{dt / median:.2g}x the frames' median spacing {median:.4g} s: the grid skips "
        f"frames (they are not used) and the power between its Nyquist frequency "
        f"{0.5 / dt:.3g} Hz and the frames' {0.5 / median:.3g} Hz folds into the band; set "
        f"resample.cadence: {median:.4g} to use them"
        + (
            " (the grid then interpolates across the longer steps)"
            if chosen
            else " (or null, the grid closest to the frames)"
        )
    )


def uniform_grid(times: np.ndarray, cadence: float | None, files: Any = None) -> np.ndarray:
    """The uniform time grid of frames at ``times`` (s), checked: refused before it is made
    when it would be mostly interpolation (:func:`check_grid_size`), and after when it holds
    too few samples for a spectrum (:func:`check_samples`). What ``specfit run`` and
    :func:`resample` both use."""
    check_grid_size(times, cadence, files)
    new_times = _rs.uniform_times(times, cadence)
    check_samples(times, new_times, cadence)
    return new_times


def resample(
    arr: xr.DataArray,
    cadence: float | None = DEFAULTS.resample.cadence,
    max_gap: float = DEFAULTS.resample.max_gap,
    tile: int | None = None,
) -> xr.DataArray:
    """Linearly interpolate every pixel's series onto one uniform cadence.

    Parameters
    ----------
    arr
        (time, y, x) with a ``time`` coordinate in seconds (irregular is fine; NaNs allowed).
    cadence
        Seconds; None = :func:`specfit.kernels.resample.choose_cadence` (the grid closest
        to the frames).
    max_gap
        Gaps longer than this many cadences are logged and listed in ``attrs["gaps"]``.

    Returns
    -------
    xarray.DataArray
        (time, y, x) float32 on ``t0 + k * cadence``; ``attrs["cadence"]`` and ``attrs["gaps"]``.
        The values are taken as float32 first, as ``specfit run`` stores them in ``cube.zarr``.
    """
    from specfit.config import ResampleConfig

    check_settings("resample", ResampleConfig, {"cadence": cadence, "max_gap": max_gap})
    arr = _frames(arr, "resample")
    # the time axis: duplicates, unsorted, NaN, one frame, text (resample.cadence's own
    # ConfigError passes as it is)
    with _specfit_errors("specfit.resample: ", input_error=True):
        times = _rs.check_times(_seconds(arr))
        if times.size < 8:  # as specfit run: a finer cadence would only interpolate them
            raise ValueError(  # (check_times has refused a single frame)
                f"only {times.size} frames; at least 8 are needed for a spectrum (a shorter "
                "cadence would only interpolate between them): give more frames"
            )
        new_times = uniform_grid(times, cadence, arr.attrs.get("files"))
        dt = float(new_times[1] - new_times[0])
        gaps = _rs.find_gaps(times, dt, max_gap)
    report_gaps(gaps, dt)
    coarse = coarse_cadence_warning(times, dt, chosen=cadence is None)
    if coarse:
        log.warning(coarse)
    arr = _time_contiguous(arr, tile)
    data = arr.data.astype(np.float32)
    out = da.map_blocks(
        _tile.resample_values,
        data,
        times,
        new_times,
        chunks=((new_times.size,), *data.chunks[1:]),
        dtype=np.float32,
        meta=np.array((), dtype=np.float32),
    )
    coords = {k: v for k, v in arr.coords.items() if "time" not in v.dims}
    coords["time"] = new_times
    attrs = {**arr.attrs, "cadence": dt, "gaps": [list(g) for g in gaps]}
    return xr.DataArray(out, dims=arr.dims, coords=coords, name=arr.name, attrs=attrs)


def report_gaps(gaps: list[tuple[float, float]], dt: float) -> None:
    """Log each long gap (the series is interpolated across it). The number of cadences
    gets three decimals where one would round it onto ``resample.max_gap`` (a gap of 24.01 s
    at 12 s is above a max_gap of 2: "2.001", not "2.0")."""
    for a, b in gaps:
        n = (b - a) / dt
        digits = 1 if abs(n - round(n, 1)) < 5e-4 else 3
        log.warning(
            "gap of %.0f s (%.*f cadences) between t=%.0f s and t=%.0f s: interpolated linearly",
            b - a,
            digits,
            n,
            a,
            b,
        )


# ----------------------------------------------------------------------------- spectra


_FLOAT32_MAX = float(np.finfo(np.float32).max)  # 3.4e38
_FLOAT32_TINY = float(np.finfo(np.float32).tiny)  # 1.2e-38, the smallest normal float32


def check_float32_range(frame: np.ndarray, dt: float, n: int, which: str = "first") -> None:
    """Before any work: refuse input whose spectra would leave float32's range.

    Spectra are stored and fitted as float32. From one ``frame`` of the series (``which``:
    the first or the last, both read anyway by :func:`_trim_empty_ends`): values up to
    ``big``
    (its 99th percentile of |value|) give powers up to about ``big^2 dt n``, beyond 3.4e38 they are inf; a fluctuation of
    1e-3 of the median level gives about ``(1e-3 med)^2 dt``, below 1.2e-38 float32 keeps
    few or no bits of it (a radio flux in W m^-2 Hz^-1, ~1e-22, squared). ``spectra.
    normalisation: variance`` divides the scale out and is not checked.
    """
    from specfit.errors import ConfigError

    frame = np.asarray(frame, dtype=np.float64)
    v = np.abs(frame[np.isfinite(frame)])
    if v.size == 0:
        return
    # the 99th percentile: a few wild pixels (a sentinel, a spike) are a status of their own
    big, med = float(np.percentile(v, 99)), float(np.median(v))
    high = big * big * dt * n > _FLOAT32_MAX
    low = med > 0 and (1e-3 * med) ** 2 * dt < _FLOAT32_TINY * 1e2
    if not (high or low):
        return
    level = f"values of {big:.3g} (99th percentile)" if high else f"a median level of {med:.3g}"
    k = int(np.floor(np.log10(big))) - 3 if high else int(np.ceil(-np.log10(med)))
    raise ConfigError(
        f"input: {level} ({which} frame) would give spectra {'above' if high else 'below'} "
        f"float32's range ({_FLOAT32_MAX:.1e} / {_FLOAT32_TINY:.1e}), in which specfit stores "
        f"and fits them: rescale the data by 1e{-k if high else k} first (other units; from "
        "Python, specfit.resample(specfit.ingest(...) * factor) and the stage functions), "
        "or set spectra.normalisation: variance"
    )


def check_power_range(power: xr.DataArray) -> None:
    """Before any work: refuse float64 spectra that float32 maps cannot hold.

    :func:`fit` stores every parameter and error as float32 (the results contract). Spectra
    given in float64 (the caller's own, not :func:`power_spectra`'s, which are checked from
    the series) whose level lies beyond float32's range gave amplitudes and tails of 0 or inf
    with status 0. From the spectra of the first 32 x 32 px (whatever the chunks, so that
    the answer depends on the data only): a 99th percentile above 3.4e38 / 1e3 (the
    fitted amplitude and errors exceed the data by up to that) or a median below 1.2e-38 * 1e2
    (the tail sits near the median) is refused, naming the factor to rescale by. Pixels in
    other tiles whose mean power is beyond that range are not fitted (status 4,
    ``fitting.fit_block``), so one out-of-range tile never stores 0 or inf as a fit. float32
    spectra (a results store's, power_spectra's) are in range by construction: not read.
    """
    from specfit.errors import ConfigError

    if power.dtype.itemsize <= 4 or power.dtype.kind != "f":
        return
    # the first 32 x 32 px, whatever the chunks (computing them once more): the first chunk
    # made the answer depend on the chunking (one odd pixel in a 1 x 1 px first chunk)
    first = power.isel(y=slice(0, 32), x=slice(0, 32))
    v = np.abs(np.asarray(first.values, dtype=np.float64))
    v = v[np.isfinite(v) & (v > 0)]
    if v.size == 0:
        return
    big, med = float(np.percentile(v, 99)), float(np.median(v))
    high = big > _FLOAT32_MAX * 1e-3
    if not (high or med < _FLOAT32_TINY * 1e2):
        return
    level = f"a 99th percentile of {big:.3g}" if high else f"a median of {med:.3g}"
    k = -int(round(np.log10(med)))  # brings the median to ~1
    raise ConfigError(
        f"specfit.fit: power with {level} (first 32 x 32 px) is too near float32's "
        f"{'largest' if high else 'smallest'} value ({_FLOAT32_MAX if high else _FLOAT32_TINY:.1e}"
        f"), in which specfit stores the fitted amplitudes and errors (it needs a median above "
        f"{_FLOAT32_TINY * 1e2:.1e} and a 99th percentile below {_FLOAT32_MAX * 1e-3:.1e}): "
        f"rescale the spectra first, e.g. specfit.fit(power * 1e{k}) (amplitudes and tails "
        "scale by the same factor)"
    )


def power_spectra(
    arr: xr.DataArray,
    segments: int = DEFAULTS.spectra.segments,
    segment_length: float | None = DEFAULTS.spectra.segment_length,
    overlap: float = DEFAULTS.spectra.overlap,
    window: str = DEFAULTS.spectra.window,
    detrend: str = DEFAULTS.spectra.detrend,
    normalisation: str = DEFAULTS.spectra.normalisation,
    box: int = DEFAULTS.spectra.box,
    fmin: float | None = DEFAULTS.spectra.fmin,
    fmax: float | None = DEFAULTS.spectra.fmax,
    box_dof: str = DEFAULTS.spectra.box_dof,
    with_sigma: bool = False,
) -> xr.DataArray | tuple[xr.DataArray, xr.DataArray]:
    """Per-pixel one-sided power spectra of a uniformly sampled (time, y, x) cube.

    Parameters mirror the ``spectra`` config section (``segment_length`` in seconds). DC and
    Nyquist bins are dropped. With ``box > 1`` each spectrum is the mean over a box of
    neighbouring pixels (truncated at the image edge) and ``with_sigma=True`` also returns the
    spread across the box (the original specFit's sigma for ``lsq`` fits).

    Returns
    -------
    power : xarray.DataArray
        (freq, y, x) float32 in real units; ``attrs`` hold the settings and what a fit needs
        (:func:`specfit.store.spectra_attrs`: ``segments``, ``segment_length``, ``window``,
        ``dof_per_spectrum``, the chi^2 dof of one spectrum before box averaging, ...). A
        per-pixel ``dof`` coordinate (y, x) gives the value after box averaging: one
        spectrum's dof x the box's effective number of independent pixels, estimated per box
        from the data with ``box_dof="auto"`` or every finite pixel with ``"nominal"``
        (:func:`specfit.kernels.tile.box_dof`), as ``specfit run`` stores it.
    """
    from specfit.config import SpectraConfig
    from specfit.errors import ConfigError, InputError

    settings = dict(segments=segments, segment_length=segment_length, overlap=overlap)
    settings.update(window=window, detrend=detrend, normalisation=normalisation, box=box)
    settings.update(fmin=fmin, fmax=fmax, box_dof=box_dof)
    check_settings("power_spectra", SpectraConfig, settings)
    if with_sigma and box == 1:
        raise ConfigError(
            "specfit.power_spectra: with_sigma=True needs box > 1 (the spread is taken across "
            "the box)"
        )
    arr = _frames(arr, "power_spectra")
    with _specfit_errors("specfit.power_spectra: ", input_error=True):
        times = _seconds(arr)
    # The grid's own cadence (set by resample), exactly as a run computes it.
    dt = float(arr.attrs.get("cadence") or np.median(np.diff(times)))
    if not np.allclose(np.diff(times), dt, rtol=1e-6, atol=1e-9):
        step = np.diff(times)
        if "cadence" in arr.attrs and step.size and np.allclose(step, step[0], rtol=1e-6):
            # e.g. every other frame of a resampled series: uniform, but not at the attr's step
            raise InputError(
                f"power_spectra: the series is uniform at {step[0]:g} s but its cadence attr "
                f"says {dt:g} s (a strided selection keeps the attr): resample the frames "
                f"to {step[0]:g} s instead, specfit.resample(frames, {step[0]:g})"
            )
        raise InputError("power_spectra needs a uniform cadence: call specfit.resample first")
    try:  # settings that do not fit this series (segments too short, fmin above fmax...)
        kw = dict(
            segments=segments,
            segment_length=_pg.segment_samples(segment_length, dt),
            overlap=overlap,
            window=window,
            detrend=detrend,
            normalisation=normalisation,
            fmin=fmin,
            fmax=fmax,
        )
        freq, _, meta = _pg.periodogram(np.zeros((1, times.size)), dt, **kw)
    except ValueError as exc:
        raise ConfigError(f"specfit.power_spectra: {exc}") from None
    if normalisation != "variance":  # as a run does, from the series' first frame
        first = arr.isel(time=0)
        if first.chunks:
            # a lazy series (resample's) is one chunk along time: reading its first frame
            # whole would compute every tile's series twice; its first tile's part will do
            ys, xs = first.chunks
            first = first.isel(y=slice(0, ys[0]), x=slice(0, xs[0]))
        check_float32_range(np.asarray(first.values), dt, times.size)
    arr = _time_contiguous(arr)
    data = arr.data
    nf = freq.size
    h = box // 2

    def raw(block: np.ndarray) -> np.ndarray:
        return _tile.periodograms(block, dt, kw)[1]

    # Declared float64: the periodograms are, and box averages are taken before the cast.
    pw = da.map_blocks(
        raw, data, chunks=((nf,), *data.chunks[1:]), dtype=np.float64, meta=np.array((), float)
    )

    def boxed(block: np.ndarray, which: int) -> np.ndarray:
        mean, spread, count = _tile.box_spectra(block, box)
        if which == 0:
            return mean.astype(np.float32)  # stored and fitted as float32, as in a run
        if which == 1:
            return spread  # full precision: it weights lsq fits
        dof = _tile.box_dof(block, count, box, meta["dof"], box_dof)
        return np.broadcast_to(dof[None], block.shape).copy()

    # Box averaging needs neighbours: an overlap of box//2 px, truncated at the image edge.
    parts = [
        da.map_overlap(
            boxed,
            pw,
            depth={0: 0, 1: h, 2: h},
            boundary="none",
            dtype=dtype,
            meta=np.array((), dtype),
            which=i,
        )
        for i, dtype in enumerate((np.float32, np.float64, np.float32))
        if box > 1 or i != 1
    ]
    pw, sigma, dof = (parts[0], parts[1], parts[2]) if box > 1 else (parts[0], None, parts[1])
    dof = dof[0]
    from specfit.store import DOF_ATTRS, power_units, spectra_attrs

    coords = {k: v for k, v in arr.coords.items() if "time" not in v.dims}
    coords["freq"] = ("freq", freq, {"units": "Hz"})
    coords["dof"] = (("y", "x"), dof, dict(DOF_ATTRS))
    attrs = {
        **{k: v for k, v in arr.attrs.items() if k not in ("gaps", "cadence")},
        **spectra_attrs(
            segments=meta["segments"],
            segment_length=meta["segment_length"],
            overlap=overlap,
            window=window,
            detrend=detrend,
            normalisation=normalisation,
            dof_per_spectrum=meta["dof"],
            box=box,
            cadence=dt,
            box_dof=box_dof,
        ),
        # the intensity's unit: specfit's own attr (FITS BUNIT), else xarray's convention
        "units": power_units(arr.attrs.get("bunit") or arr.attrs.get("units"), normalisation),
    }
    dims = ("freq", "y", "x")
    power = xr.DataArray(pw, dims=dims, coords=coords, name="power", attrs=attrs)
    if not with_sigma:
        return power
    if sigma is None:
        raise ValueError("with_sigma=True needs box > 1 (the spread is taken across the box)")
    sig = xr.DataArray(sigma, dims=dims, coords=coords, name="power_sigma", attrs=attrs)
    return power, sig


# ----------------------------------------------------------------------------- fit
def resolve_models(models: Mapping[str, Any] | None, user_models=(), bounds=None) -> dict[str, Any]:
    """alias -> Model from names (or Model objects), after loading user model files."""
    from specfit import models as M
    from specfit.errors import ConfigError, SpecfitError

    if isinstance(user_models, str) or hasattr(user_models, "__fspath__"):
        raise ConfigError(
            f"fit.user_models: give a list of files or modules, e.g. [{str(user_models)!r}]; "
            f"got the string {str(user_models)!r}"
        )
    if user_models:
        try:
            M.load_user_models(list(user_models))
        except (ImportError, FileNotFoundError, ValueError) as exc:
            if isinstance(exc, SpecfitError):
                raise
            msg = str(exc)  # a message that names its key already is not prefixed again
            raise ConfigError(
                msg if msg.startswith("fit.") else f"fit.user_models: {msg}"
            ) from None
    if models is None:
        models = dict(DEFAULTS.fit.models)
    if isinstance(models, Mapping) and not models:
        raise ConfigError("fit.models: needs at least one model, e.g. {m1: powerlaw_tail}")
    if not isinstance(models, Mapping):
        raise ConfigError(
            f"fit.models must map an alias to a model, e.g. {{'m1': 'powerlaw_tail'}}; got "
            f"{type(models).__name__} {models!r}"[:300]
        )
    out = {}
    for alias, m in models.items():
        if not isinstance(alias, str) or not alias:
            raise ConfigError(
                f"fit.models: the alias {alias!r} must be a name (text), e.g. {{'m1': ...}}: "
                "it prefixes the maps' names"
            )
        try:
            model = M.get_model(m) if isinstance(m, str) else m
        except KeyError as exc:  # its message, without the quotes str(KeyError) adds
            raise ConfigError(f"fit.models.{alias}: {exc.args[0]}") from None
        if not isinstance(model, M.Model) or not model.name:
            what = "a Component" if isinstance(model, M.Component) else type(model).__name__
            what = "an unnamed sum of components" if isinstance(model, M.Model) else what
            raise ConfigError(
                f"fit.models.{alias}: {what} is not a model; name a sum of components, e.g. "
                "(POWER_LAW + TAIL).named('my_model'), or give a registered model's name"
            )
        if bounds and model.name in bounds:
            given = bounds[model.name]
            if not isinstance(given, Mapping):
                raise ConfigError(
                    f"fit.bounds.{model.name}: give a mapping of parameter: [low, high], e.g. "
                    f"{{{model.param_names[0]!r}: [0, 1]}}; got {given!r}"
                )
            with _specfit_errors():
                model = model.with_bounds(dict(given))
        out[alias] = model
    seen: dict[str, str] = {}
    for alias, model in out.items():
        if model.name in seen:
            # the same fit twice; worse, the second copy is no nested partner of the bump
            # model and was weighed against it by BIC, overriding the LRT (a helper's finding)
            differ = model.bounds != out[seen[model.name]].bounds
            raise ConfigError(
                f"fit.models: {seen[model.name]} and {alias} are both {model.name}; "
                + (
                    f"to fit it with other bounds too, name that copy apart, e.g. "
                    f"{alias}: <model>.with_bounds(...).named('{model.name}_{alias}')"
                    if differ
                    else "give each model once"
                )
            )
        seen[model.name] = alias
    names = sorted(seen)
    stray = sorted(set(bounds or {}) - set(names))
    if stray:  # a misspelt model name would leave its bounds unused without a word
        raise ConfigError(
            f"fit.bounds: {', '.join(map(repr, stray))} is not a model of this fit; bounds are "
            f"keyed by model name: {', '.join(names)}"
        )
    return out


def _spread_over_cores(pw: xr.DataArray) -> xr.DataArray:
    """Split a (freq, y, x) array held in one spatial chunk (in memory, or read as one block)
    into square tiles, about four per core, so that dask's threaded scheduler runs the fit on
    every core (the kernels release the GIL). A chunking the caller chose is kept. Results do
    not depend on the tiling: every pixel is fitted on its own."""
    if len(pw.chunks[1]) * len(pw.chunks[2]) > 1:
        return pw
    from dask.system import CPU_COUNT

    ny, nx = pw.shape[1:]
    edge = max(16, math.ceil(math.sqrt(ny * nx / (4 * max(1, CPU_COUNT)))))
    if edge >= max(ny, nx):
        return pw
    return pw.chunk({"y": edge, "x": edge})


FIT_OPTION_KEYS = (
    "max_iter",
    "tol",
    "multistart",
    "best_model",
    "alpha",
    "weights",
    "nonnested",
    "optimizer",
    "intervals",
)


def check_settings(stage: str, section: Any, values: dict) -> Any:
    """Validate a stage's arguments as the config's ``section`` model validates its keys,
    when the call is made: a :class:`specfit.errors.ConfigError` naming each bad argument
    (``specfit.<stage>: name=value: why``), never a failure later inside a task. Returns
    the validated section (its values converted as a config's are: ``"3"`` -> 3)."""
    from pydantic import ValidationError

    from specfit.errors import ConfigError

    try:
        return section.model_validate(values)
    except ValidationError as exc:
        parts = []
        for e in exc.errors():
            msg = e["msg"].removeprefix("Value error, ")
            if e["loc"]:
                parts.append(f"{'.'.join(map(str, e['loc']))}={e.get('input')!r}: {msg}")
            else:  # a check across arguments (fmax above fmin): its message names them
                parts.append(msg)
        raise ConfigError(f"specfit.{stage}: {'; '.join(parts)}") from None


def _check_fit_settings(method: str, options: dict, power: xr.DataArray) -> None:
    """The checks a config gets, when the call is made (not when a tile computes): the fit's
    settings as :class:`specfit.config.FitConfig` validates them, and a frequency axis that
    is positive and increasing."""
    from specfit.config import FitConfig
    from specfit.errors import ConfigError

    values = {"method": method, **{k: v for k, v in options.items() if k != "intervals"}}
    checked = check_settings("fit", FitConfig, values)
    for k in values:
        # the numbers as a config reads them (multistart "3" or 3.0 -> 3): the raw value
        # failed later, inside a task
        v = getattr(checked, k, None)
        if k in options and isinstance(v, int | float) and not isinstance(v, bool):
            options[k] = v
    if "freq" not in power.coords:
        raise ConfigError("specfit.fit: power has no freq coordinate (Hz); give one")
    unit = str(power["freq"].attrs.get("units", "Hz")).strip()
    if unit not in _HERTZ:
        # mHz read as Hz would leave the index right and every amplitude and bump centre off
        raise ConfigError(f"specfit.fit: the freq coordinate's units are {unit!r}; give it in Hz")
    f = np.asarray(power["freq"].values, dtype=float)
    if f.size < 2 or not (np.all(np.isfinite(f)) and f[0] > 0 and np.all(np.diff(f) > 0)):
        raise ConfigError(
            "specfit.fit: power's freq must be positive and strictly increasing, with at least 2 "
            "values (DC dropped), as specfit.power_spectra gives it"
        )


_DOF_VALUES_WARN = 64  # distinct dof values above which specfit.fit warns (one LRT reference each)


def _attr_number(attrs: Mapping[str, Any], key: str, default: float) -> float:
    """A positive number from the spectra's attrs, or a ConfigError naming the attr."""
    from specfit.errors import ConfigError

    value = attrs.get(key, default)
    try:
        out = float(value)
    except (TypeError, ValueError):
        out = math.nan
    if not (math.isfinite(out) and out > 0):
        raise ConfigError(
            f"specfit.fit: power.attrs[{key!r}] = {value!r}; it must be a positive number"
        )
    return out


def _bin_layout_checked(attrs: Mapping[str, Any]) -> tuple[str, int, float, int]:
    """The spectra's window and segments (:func:`specfit.kernels.tile.bin_layout`), refused
    with the attr to fix where the fit would misread them (any window name but ``none`` was
    taken as Hann; Hann without a segment length failed inside a task)."""
    from specfit.errors import ConfigError
    from specfit.kernels.periodogram import WINDOWS

    window = attrs.get("window", "none")
    if window not in WINDOWS:
        raise ConfigError(
            f"specfit.fit: power.attrs['window'] = {window!r}; specfit knows "
            f"{', '.join(map(repr, WINDOWS))} (the taper the spectra were made with, which "
            "sets the bins' correlation)"
        )
    if window != "none":
        if "segment_length" not in attrs:
            raise ConfigError(
                f"specfit.fit: spectra made with window {window!r} need "
                "power.attrs['segment_length'] (samples per segment), which sets the bins' "
                "correlation"
            )
        _attr_number(attrs, "segment_length", 0)
    for key in ("segments", "overlap"):
        if key in attrs:
            try:
                float(attrs[key])
            except (TypeError, ValueError):
                raise ConfigError(
                    f"specfit.fit: power.attrs[{key!r}] = {attrs[key]!r}; give a number"
                ) from None
    return _tile.bin_layout(attrs)


def fit(
    power: xr.DataArray,
    models: Mapping[str, Any] | None = None,
    method: str | None = None,
    dof: float | xr.DataArray | None = None,
    sigma: xr.DataArray | None = None,
    user_models: list[str] | tuple | None = None,
    bounds: Mapping[str, Mapping[str, tuple[float, float]]] | None = None,
    **options: Any,
) -> xr.Dataset:
    """Fit spectral models to every pixel's spectrum, lazily, tile by tile.

    Parameters
    ----------
    power
        (freq, y, x) power from :func:`power_spectra` (any chunking; frequency is made one chunk).
    models
        alias -> model name (or :class:`specfit.models.Model`). Every fit setting not given
        here (``models``, ``method``, ``user_models``, ``bounds`` and the ``options``)
        defaults to the run's when ``power`` is a results store's (:func:`open_results` puts
        the run's ``fit`` section in ``power.attrs["fit_settings"]``; a bare refit loads the
        run's ``user_models`` files), else to the config defaults (``fit.models``: M1 and
        M2). With ``models`` given, the run's ``user_models`` and ``intervals`` are not
        inherited.
    method
        ``whittle`` (the config's default), ``lsq_log`` or ``lsq`` (needs ``sigma``, or
        ``weights='dlogf'``).
    dof
        chi^2 degrees of freedom of each power value (a number, or a (y, x) DataArray on the
        spectra's pixels). Default: the ``dof`` coordinate of ``power`` (set by
        :func:`power_spectra` and present on a results store's ``power``), else
        ``power.attrs["dof_per_spectrum"]``, else 2. Given or not, for ``whittle`` with
        correlated bins (a tapered ``window`` or overlapping Welch segments, read from
        ``power.attrs``: ``window``, ``segment_length``, ``overlap``, ``segments``) the fit
        divides it by their variance inflation (:func:`specfit.kernels.tile.fit_dof`), as
        ``specfit run`` does. So ``fit(open_results(path)["power"])`` refits a store's
        spectra as its run did. The bins' correlation (none without a window or overlap)
        calibrates ``<m>_chi2red``, ``<m>_gof_pvalue``, the LRT reference's simulated noise
        and ``lsq_log``'s errors (:func:`specfit.kernels.tile.bin_rho`). The LRT simulates
        one null reference per distinct dof value (about half a second each at 150 bins on
        one core, cached on disk): a dof map of continuous estimates would need one per
        pixel, so round it first, as ``specfit run`` rounds its box estimates to quarter
        octaves (:func:`specfit.kernels.tile.quantise_neff`); a warning says when a map
        holds more than 64 values.
    **options
        ``max_iter``, ``tol``, ``multistart``, ``best_model`` (lrt|aic|bic|ftest|chi2|chi2sum),
        ``alpha``, ``weights``, ``nonnested`` (bic|aic), ``optimizer`` (specfit|original),
        ``intervals`` (parameter names with profile-likelihood intervals); each defaults to
        the config's ``fit`` value. ``optimizer='original'`` reads the spectra's
        ``normalisation``, ``cadence`` and ``segment_length`` from ``power.attrs``.

    Returns
    -------
    xarray.Dataset
        The fit variables of the results contract (:func:`specfit.store.fit_variables`: the
        names, dtypes and attrs a results store holds for them) and its attrs
        (:func:`specfit.store.fit_attrs`).
    """
    from specfit.errors import ConfigError
    from specfit.models import check_bounds_on, check_output
    from specfit.store import (
        FIELD_KEYS,
        SPECTRA_KEYS,
        fit_attrs,
        fit_variables,
        power_units,
    )

    bad = set(options) - set(FIT_OPTION_KEYS)
    if bad:
        raise ConfigError(f"unknown fit option(s) {sorted(bad)}; allowed: {FIT_OPTION_KEYS}")
    if not isinstance(power, xr.DataArray) or set(power.dims) != {"freq", "y", "x"}:
        raise ConfigError(
            "specfit.fit needs an xarray.DataArray with dims (freq, y, x), e.g. from "
            f"specfit.power_spectra; got {type(power).__name__} "
            f"{getattr(power, 'dims', getattr(power, 'shape', ''))}"
        )
    if power.dtype.kind not in "fiu":  # complex: numpy would drop the imaginary part
        raise ConfigError(
            f"specfit.fit needs real power (|FFT|^2), got dtype {power.dtype}; take "
            "abs(x) ** 2 of a complex spectrum first"
        )
    # One set of defaults for the config and the Python API; a store's spectra bring the
    # settings of the run that fitted them.
    run = json.loads(power.attrs.get("fit_settings") or "{}")
    if models is not None:
        # other models than the run's: its user-model files and the intervals of its models'
        # parameters are not inherited (they may not exist here, or name no parameter)
        run = {k: v for k, v in run.items() if k not in ("user_models", "intervals")}
    models = run.get("models") if models is None else models
    method = run.get("method", DEFAULTS.fit.method) if method is None else method
    user_models = run.get("user_models", ()) if user_models is None else user_models
    if bounds is None and run.get("bounds"):
        # the run's bounds of the models fitted now (a refit of fewer models keeps its own)
        using = models if models is not None else DEFAULTS.fit.models
        using = using if isinstance(using, Mapping) else {}  # refused in resolve_models
        names = {m if isinstance(m, str) else getattr(m, "name", None) for m in using.values()}
        bounds = {k: v for k, v in run["bounds"].items() if k in names} or None
    options = {
        **{k: run.get(k, getattr(DEFAULTS.fit, k)) for k in FIT_OPTION_KEYS},
        **options,
    }
    _check_fit_settings(method, options, power)
    check_power_range(power)
    if dof is None and "dof" in power.coords and set(power.coords["dof"].dims) != {"y", "x"}:
        raise ConfigError(
            f"specfit.fit: power's dof coordinate has dims {power.coords['dof'].dims}; it must "
            "be a (y, x) map (as power_spectra sets it), or pass dof= a number"
        )
    if dof is not None and not isinstance(dof, xr.DataArray):
        try:
            number = float(dof) if np.ndim(dof) == 0 and not isinstance(dof, str) else math.nan
        except (TypeError, ValueError):
            number = math.nan
        if not (math.isfinite(number) and number > 0):
            what = f"an array of shape {np.shape(dof)}" if np.ndim(dof) else repr(dof)
            raise ConfigError(
                f"specfit.fit: dof={what} must be a positive number, or a DataArray with "
                "dims (y, x) for one value per pixel"
            )
    if isinstance(dof, xr.DataArray) and dict(dof.sizes) != {d: power.sizes[d] for d in ("y", "x")}:
        raise ConfigError(
            f"specfit.fit: dof must be a number or a DataArray with dims (y, x) of the "
            f"spectra's size {power.sizes['y']} x {power.sizes['x']}; got dims {dof.dims} "
            f"and shape {dof.shape}"
        )
    if isinstance(dof, xr.DataArray) and not isinstance(dof.data, da.Array):
        distinct = np.unique(np.asarray(dof.values, dtype=float)).size
        if distinct > _DOF_VALUES_WARN:
            log.warning(
                "specfit.fit: dof takes %d distinct values; the LRT simulates a null reference "
                "for each (about half a second each at 150 bins). Round the map first, e.g. "
                "to quarter octaves as specfit run does (specfit.kernels.tile.quantise_neff)",
                distinct,
            )
    for d in ("y", "x") if isinstance(dof, xr.DataArray) else ():
        # pixels are matched by their labels, not their positions (a flipped map was used)
        if d in dof.coords and d in power.coords and not np.array_equal(dof[d], power[d]):
            raise ConfigError(
                f"specfit.fit: dof's {d} coordinate differs from the spectra's; give dof on "
                f"the same pixels (e.g. dof.sel({d}=power.{d}))"
            )
    if sigma is not None and not (
        isinstance(sigma, xr.DataArray) and dict(sigma.sizes) == dict(power.sizes)
    ):
        raise ConfigError(
            "specfit.fit: sigma must be a DataArray with the spectra's dims and sizes "
            f"{dict(power.sizes)} (e.g. from power_spectra(..., with_sigma=True)); got "
            f"{type(sigma).__name__} {getattr(sigma, 'sizes', getattr(sigma, 'shape', ''))}"
        )
    for d in ("freq", "y", "x") if sigma is not None else ():
        # matched by labels, as dof is: a transposed, flipped or other-grid sigma was used
        if d in sigma.coords and d in power.coords and not np.array_equal(sigma[d], power[d]):
            raise ConfigError(
                f"specfit.fit: sigma's {d} coordinate differs from the spectra's; give sigma "
                f"on the same {'frequencies' if d == 'freq' else 'pixels'} (e.g. "
                f"sigma.sel({d}=power.{d}))"
            )
    if sigma is not None and options["weights"] == "dlogf":
        raise ConfigError(
            "specfit.fit: weights='dlogf' builds its weights from the frequencies; pass no "
            "sigma, or drop weights to weight by sigma"
        )
    if sigma is not None and method != "lsq":
        raise ConfigError(
            f"specfit.fit: sigma weights least squares, but method is {method!r}: pass "
            "method='lsq' with sigma, or drop sigma (whittle and lsq_log take their errors "
            "from the spectra's dof)"
        )
    mods = resolve_models(models, user_models, bounds)
    if options["weights"] == "dlogf" and method != "lsq":
        raise ConfigError(
            f"weights='dlogf' weights least squares, but method is {method!r}: pass "
            "method='lsq', or drop weights"
        )
    if method == "lsq" and sigma is None and options["weights"] != "dlogf":
        raise ConfigError(
            "method='lsq' needs sigma (e.g. power_spectra(..., box=3, with_sigma=True); a "
            "results store's is ds['power_sigma']) or weights='dlogf'"
        )
    pattrs = dict(power.attrs)
    power_unit = str(pattrs.get("units") or power_units(None, "density"))
    from specfit.kernels.fitting import check_intervals

    with _specfit_errors():
        check_intervals(mods, options["intervals"], options["optimizer"])  # before any work
    with _specfit_errors():  # e.g. two aliases naming one map
        spec = fit_variables(
            mods,
            method,
            options["best_model"],
            power_unit,
            options["nonnested"],
            intervals=options["intervals"],
        )
    names = list(spec)
    freq = np.asarray(power["freq"].values, dtype=float)

    for alias, m in mods.items():
        with _specfit_errors(f"fit.models.{alias}: "):
            check_bounds_on(m, freq)
            check_output(m, freq)  # a wrong-shaped user model fails here, not in every tile
    pw = _spread_over_cores(power.transpose("freq", "y", "x").chunk({"freq": -1}))
    if dof is None:
        if "dof" in power.coords:
            dof = power.coords["dof"]
        else:
            dof = _attr_number(pattrs, "dof_per_spectrum", 2.0)
    # given or not, dof means what the dof coordinate does (fit(power, dof=power.dof) is
    # fit(power)): the fit's own dof follow by the window's rule
    layout = _bin_layout_checked(pattrs)
    dof = _tile.fit_dof(dof, method, *layout)
    dof_arr = (
        dof.transpose("y", "x").chunk(dict(zip(("y", "x"), pw.chunks[1:], strict=True))).data
        if isinstance(dof, xr.DataArray)
        else da.full(pw.shape[1:], float(dof), chunks=pw.chunks[1:])
    )
    args = [pw.data, dof_arr]
    if sigma is not None:
        sig = sigma.transpose("freq", "y", "x")
        args.append(sig.chunk(dict(zip(sig.dims, pw.chunks, strict=True))).data)

    from specfit.workspace import lrt_cache_dir

    # LRT references are shared on disk between calls and processes (values never depend on it)
    kernel_options = {**options, "lrt_cache": str(lrt_cache_dir())}
    if options["optimizer"] == "original":
        # the original's procedure fits in its own power units, read from the spectra's attrs
        from specfit.kernels.original import check_original

        with _specfit_errors():
            check_original(mods, method, options["weights"], freq)
        need = [k for k in ("normalisation", "cadence", "segment_length") if k not in pattrs]
        if need:
            raise ConfigError(
                f"optimizer='original' needs power.attrs {need} (set by power_spectra and "
                "on a results store's power) to convert to the original's power units"
            )
        with _specfit_errors():
            kernel_options = _tile.with_original_unit(
                kernel_options, pattrs["normalisation"], float(pattrs["cadence"]), pattrs
            )
    # the bins' correlation (window, overlap) calibrates the goodness of fit (chi2red,
    # gof_pvalue), the LRT reference (its simulated noise has the same correlations) and
    # lsq_log's errors
    rho = _tile.bin_rho(*layout)

    def kernel(p, d, s=None):
        maps = _tile.fit_maps(freq, p, d, s, mods, method, kernel_options, rho)
        return np.stack([maps[n].astype(np.float64) for n in names])

    # One task per tile computes every variable; "f" is contracted away and "v" (the
    # variables) is new, so each output block is (nvars, tile_y, tile_x).
    pairs = []
    for a in args:
        pairs += [a, "fyx" if a.ndim == 3 else "yx"]
    stacked = da.blockwise(
        kernel,
        "vyx",
        *pairs,
        new_axes={"v": len(names)},
        concatenate=True,
        dtype=np.float64,
        meta=np.array((), np.float64),
    )
    coords = {k: v for k, v in pw.coords.items() if "freq" not in v.dims}
    out = xr.Dataset(coords=coords)
    for i, n in enumerate(names):
        out[n] = xr.DataArray(
            stacked[i].astype(spec[n]["dtype"]), dims=("y", "x"), attrs=dict(spec[n]["attrs"])
        )
    spectra = {k: pattrs[k] for k in SPECTRA_KEYS if k in pattrs}
    if "window_vif" in spectra:  # what this fit used (a store of an older version may differ)
        spectra["window_vif"] = float(_pg.window_vif(*layout))
    # the field-wide settings field_significance takes by default: the run's, for a store's
    # spectra (its fit_settings), else the config's; alpha as this fit used it
    field = {k: run.get(k, getattr(DEFAULTS.fit, k)) for k in FIELD_KEYS}
    field["alpha"] = options["alpha"]
    out.attrs.update(fit_attrs(mods, method, power_unit, spectra, field))
    if "wcs_header" in pattrs:
        from specfit.export import field_wcs_header, wcs_origin

        # The WCS of this (y, x) grid, so the maps go to FITS and sunpy as a store's do.
        wcs_header = field_wcs_header(power)
        if wcs_header is not None:
            out.attrs["wcs_header"] = wcs_header
            out.attrs["wcs_origin"] = wcs_origin(power)
    return out


# ----------------------------------------------------------------------------- field-wide
class _MapArray:
    """One in-memory (y, x) map with the zarr array interface the field-wide step uses."""

    def __init__(self, values: np.ndarray, attrs: dict) -> None:
        self.values, self.attrs, self.shape = values, attrs, values.shape

    def __getitem__(self, key):
        return self.values[key]

    def __setitem__(self, key, value) -> None:
        self.values[key] = value


class _MapGroup:
    """A Dataset's maps as the zarr group :func:`specfit.store.write_field_significance`
    reads and writes, so that the stage API and ``specfit run`` share one implementation."""

    def __init__(self, arrays: dict[str, _MapArray], attrs: dict) -> None:
        self.arrays, self.attrs = arrays, attrs

    def array_keys(self):
        return iter(self.arrays)

    def __getitem__(self, name: str) -> _MapArray:
        return self.arrays[name]


def _field_settings(results: xr.Dataset, given: dict) -> dict:
    """``alpha``, ``fdr_q``, ``global_level`` for :func:`field_significance`: those given,
    else those of the fit or store (its ``field_settings`` attr; a store of an older specfit:
    its run's config), else the config defaults; validated as the config's ``fit`` section
    validates them."""
    from specfit.config import FitConfig
    from specfit.store import FIELD_KEYS

    recorded = json.loads(results.attrs.get("field_settings") or "{}")
    if not recorded and results.attrs.get("config_json"):
        recorded = json.loads(results.attrs["config_json"]).get("fit", {})
    values = {
        k: given[k] if given[k] is not None else recorded.get(k, getattr(DEFAULTS.fit, k))
        for k in FIELD_KEYS
    }
    check_settings("field_significance", FitConfig, values)
    return values


def field_significance(
    results: xr.Dataset,
    *,
    alpha: float | None = None,
    fdr_q: float | None = None,
    global_level: float | None = None,
) -> xr.Dataset:
    """Add the field-wide significance maps to a fit's results (docs/significance.md).

    The maps ``specfit run`` writes once every tile is in (:func:`specfit.store.field_variables`:
    ``<test>_qvalue``, ``<test>_global``, ``best_model_fdr``), computed by the same code on
    the whole of ``results``: so ``field_significance(fit(power))`` over a run's field equals
    the run's maps. The field is what ``results`` holds: a cut-out gets its own q-values.

    Parameters
    ----------
    results
        A Dataset with the fit variables of the results contract (from :func:`fit` or a
        store); its p-value maps are read into memory.
    alpha, fdr_q, global_level
        As ``fit.alpha``, ``fit.fdr_q`` and ``fit.global_level``. Default: those of the fit
        (a refit of a store's spectra: its run's; ``alpha`` as the fit used it) or of the
        store's run, else the config's.

    Returns
    -------
    xarray.Dataset
        ``results`` with the field-wide maps added (in memory) and the ``field_significance``
        attr (JSON counts per control).
    """
    from specfit.errors import ConfigError
    from specfit.store import field_variables, write_field_significance

    if not isinstance(results, xr.Dataset):
        raise ConfigError(
            "specfit.field_significance needs the Dataset of a fit (specfit.fit or "
            f"specfit.open_results), got {type(results).__name__}"
        )
    given = {"alpha": alpha, "fdr_q": fdr_q, "global_level": global_level}
    alpha, fdr_q, global_level = _field_settings(results, given).values()
    rule = results["best_model"].attrs.get("rule", "") if "best_model" in results else ""
    maps = {str(n): v for n, v in results.data_vars.items() if v.dims == ("y", "x")}
    variables = {n: {"dtype": v.dtype, "attrs": dict(v.attrs)} for n, v in maps.items()}
    spec = field_variables(variables, rule, alpha, fdr_q, global_level)
    ny, nx = results.sizes["y"], results.sizes["x"]
    arrays = {"y": _MapArray(np.arange(ny), {}), "x": _MapArray(np.arange(nx), {})}
    # the maps the field-wide ones are computed from, in one compute (one pass of a lazy fit)
    needed = [s["attrs"]["source"] for s in spec.values()]
    if "best_model_fdr" in spec:  # the choice rule reads each model's status, ll, criterion
        crit = results["best_model"].attrs.get("nonnested", "bic")
        for a in json.loads(results.attrs.get("models", "{}")):
            needed += [f"{a}_status", f"{a}_loglike", f"{a}_{crit}"]
    sources = results[[n for n in dict.fromkeys(needed) if n in results]]
    for src, v in sources.compute().data_vars.items():
        arrays[str(src)] = _MapArray(np.array(v.values), dict(v.attrs))
    for name, s in spec.items():
        fill = np.nan if np.dtype(s["dtype"]).kind == "f" else -1
        arrays[name] = _MapArray(np.full((ny, nx), fill, dtype=s["dtype"]), dict(s["attrs"]))
    group = _MapGroup(arrays, {"models": results.attrs.get("models", "{}"), "tile_size": ny})
    summary = write_field_significance(group)
    out = results.copy()
    for name in spec:
        out[name] = xr.DataArray(arrays[name].values, dims=("y", "x"), attrs=arrays[name].attrs)
    out.attrs["field_significance"] = json.dumps(summary)
    return out
