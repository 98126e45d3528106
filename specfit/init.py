"""``specfit init FOLDER``: look at a data set and write a commented config ready to run.

Only metadata is read: FITS headers, image headers, file names, EXIF. The readers of
:mod:`specfit.io` do that work (their ``open_*`` functions read every header eagerly and no
pixel), so what ``init`` reports is exactly what ``specfit run`` will see: the kind, frames,
times and gaps, exposure, units, WCS and observer, image size and instrument. From that it
suggests the settings that depend on the data (cadence, gap threshold, segments, box,
derotation), each with its reason as a YAML comment, and validates the written file with
:func:`specfit.config.load_config`.
"""

from __future__ import annotations

import glob
import math
import os
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from specfit.config import InputConfig, load_config
from specfit.errors import ConfigError, InputError
from specfit.io import ROTATION_ARCSEC_PER_H, detect_kind, open_input, pointing_jump
from specfit.workspace import glob_base

__all__ = [
    "Inspection",
    "inspect_input",
    "render_config",
    "init_config",
    "guess_time_pattern",
    "check_out",
]

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
_FITS_SUFFIXES = (".fits", ".fits.gz", ".fts", ".fit", ".fts.gz", ".fit.gz")


@dataclass
class Inspection:
    """What ``init`` found in a data set (metadata only) and the settings it suggests.

    ``input`` holds the ``input`` section that opens the data; ``settings`` maps
    ``section.key`` to ``(value, reason)`` for everything else ``init`` chose; ``report``
    lists the findings as lines of text; ``notes`` are warnings for the user.
    """

    path: str
    input: dict[str, Any]
    input_reasons: dict[str, str]
    settings: dict[str, tuple[Any, str]]
    report: list[str]
    notes: list[str] = field(default_factory=list)
    gaps: list[str] = field(default_factory=list)


def guess_time_pattern(names: list[str]) -> str | None:
    """A strptime pattern that reads a date and time from every file name, or None.

    Looks for ``YYYY?MM?DD?hh?mm?ss`` (separators ``-``, ``_``, ``T``, ``:``, ``.`` or none,
    optional fractional seconds) in the first name and keeps the rest of the name literal;
    the pattern is returned only if it parses every name to distinct times.
    """
    from specfit.io.images import filename_time

    if not names:
        return None
    rx = re.compile(
        r"(?P<Y>(?:19|20)\d\d)(?P<a>[-_.]?)(?P<m>[01]\d)(?P<b>[-_.]?)(?P<d>[0-3]\d)"
        r"(?P<c>[-_Tt .]?)(?P<H>[0-2]\d)(?P<e>[-_:.]?)(?P<M>[0-5]\d)(?P<f>[-_:.]?)(?P<S>[0-6]\d)"
        r"(?:(?P<g>[._])(?P<F>\d{1,6}))?"
    )
    name = os.path.basename(names[0])
    m = rx.search(name)
    if m is None:
        return None

    def lit(text: str) -> str:
        return text.replace("%", "%%")

    g = m.groupdict()
    codes = f"%Y{lit(g['a'])}%m{lit(g['b'])}%d{lit(g['c'])}%H{lit(g['e'])}%M{lit(g['f'])}%S" + (
        f"{lit(g['g'])}%f" if g["F"] else ""
    )
    pattern = lit(name[: m.start()]) + codes + lit(name[m.end() :])
    # Names that differ in their literal parts (other prefixes) do not match: then the
    # pattern is not general enough to use.
    try:
        times = [filename_time(n, pattern) for n in names]
    except InputError:
        return None
    if len({t.isot for t in times}) != len(times):
        return None
    return pattern


def _frames(folder: str, pattern: str = "*") -> tuple[list[str], list[str]]:
    """The FITS files and the image files in ``folder`` matching ``pattern``, sorted, from one
    listing of the folder (its name is literal, "AIA [1600]"; only the pattern is a glob)."""
    files = sorted(
        f for f in glob.glob(os.path.join(glob.escape(folder), pattern)) if os.path.isfile(f)
    )
    return (
        [f for f in files if f.lower().endswith(_FITS_SUFFIXES)],
        [f for f in files if f.lower().endswith(_IMAGE_SUFFIXES)],
    )


def _suffix_pattern(files: list[str]) -> tuple[str, str]:
    """(input.pattern, how to say it) for frames of one kind: ``*.fits`` when they share one
    suffix (in the case the files use: a glob is case-sensitive), else ``*``, which the reader
    narrows to the kind's suffixes, so that no frame is left out (a folder of half ``.fits``,
    half ``.fits.gz`` frames lost one half before, and which half varied between runs)."""
    known = _FITS_SUFFIXES + _IMAGE_SUFFIXES
    found = set()
    for f in files:
        suffix = next((s for s in known if f.lower().endswith(s)), "")
        found.add(f[len(f) - len(suffix) :])  # as the file spells it
    suffixes = sorted(found)
    if len(suffixes) == 1:
        return "*" + suffixes[0], "*" + suffixes[0]
    return "*", ", ".join("*" + s for s in suffixes)


def _choose_input(path: str) -> tuple[dict[str, Any], dict[str, str], list[str]]:
    """The ``input`` section that opens ``path``, its reasons, and notes (other inputs)."""
    p = path.rstrip("/") or path
    notes: list[str] = []
    reasons: dict[str, str] = {}
    given = None  # the file-name pattern of a glob (frames/*_1600_*.fits): input.pattern
    folder, name = os.path.split(p)
    if not os.path.exists(p) and glob.has_magic(name) and os.path.isdir(folder or "."):
        p, given = folder or ".", name
    elif not os.path.exists(p):
        raise InputError(f"{p} does not exist; give a folder of frames or a cube file")
    if os.path.isdir(p):
        fits_files, img_files = _frames(p, given or "*")
        if given and not fits_files and not img_files:
            raise InputError(
                f"{path}: no FITS or image file in {p} matches {given!r}; give a glob of "
                "frames, e.g. 'frames/*_1600_*.fits'"
            )
        if not fits_files and not img_files:
            try:
                zarr_store = detect_kind(InputConfig(path=p, pattern="*")) == "zarr"
            except InputError:
                zarr_store = False
            if zarr_store:
                reasons["kind"] = "a Zarr store (an xarray dataset with a time coordinate)"
                return {"kind": "zarr", "path": p}, reasons, notes
            inside = []  # a parent folder given by mistake: name the folders of frames
            for sub in sorted(glob.glob(os.path.join(glob.escape(p), "*"))):
                if os.path.isdir(sub):
                    n = sum(len(found) for found in _frames(sub))
                    if n:
                        inside.append(f"{os.path.basename(sub)}/ ({n} files)")
            hint = f"; its subfolders {', '.join(inside[:5])} do: give one" if inside else ""
            raise InputError(
                f"{p} holds no FITS or image files (.fits, .fts, .jpg, .png, .tif){hint}; give "
                "the folder of frames (or a cube file)"
            )
        if len(fits_files) >= len(img_files):
            first_kind = detect_kind(InputConfig(path=fits_files[0]))
            if first_kind == "fits_cube":
                cubes = [f for f in fits_files if detect_kind(InputConfig(path=f)) == "fits_cube"]
                if len(cubes) > 1:
                    notes.append(
                        f"{len(cubes)} FITS cubes in the folder; this config reads the first. "
                        "One cube per run: run `specfit init` on another cube file for it: "
                        + ", ".join(os.path.basename(c) for c in cubes[1:])
                    )
                p = cubes[0]
            else:
                pattern, said = _suffix_pattern(fits_files)
                if given:
                    pattern, said = given, f"matching {given}"
                reasons["kind"] = f"{len(fits_files)} single-frame FITS files ({said})"
                return (
                    {"kind": "fits_series", "path": p, "pattern": pattern},
                    reasons,
                    notes,
                )
        else:
            pattern, said = _suffix_pattern(img_files)
            if given:
                pattern, said = given, f"matching {given}"
            files = img_files
            reasons["kind"] = f"{len(files)} images ({said}; no FITS header)"
            section: dict[str, Any] = {"kind": "images", "path": p, "pattern": pattern}
            tp = guess_time_pattern(files)
            if tp is not None:
                section.update(time_source="filename", time_pattern=tp)
                reasons["time_pattern"] = "date and time read from every file name (UTC)"
            else:
                from specfit.io.images import exif_time

                if exif_time(files[0]) is not None:
                    section["time_source"] = "exif"
                    reasons["time_source"] = "EXIF DateTimeOriginal (read as UTC)"
                elif os.path.isfile(os.path.join(p, "times.csv")):
                    section.update(time_source="csv", times_csv=os.path.join(p, "times.csv"))
                    reasons["times_csv"] = "frame times listed beside the images"
                else:
                    raise InputError(
                        f"{p}: no frame times in the file names or EXIF; write "
                        f"{os.path.join(p, 'times.csv')} (columns file,time; ISO 8601 or "
                        "seconds) and run specfit init again"
                    )
            return section, reasons, notes
    kind = detect_kind(InputConfig(path=p))
    if kind == "fits_cube":
        reasons["kind"] = "one FITS file holding a (t, y, x) cube"
        return {"kind": "fits_cube", "path": p}, reasons, notes
    return {"kind": kind, "path": p}, reasons, notes


def _per_frame(arr: Any, name: str, default: float) -> np.ndarray:
    """A per-frame header value carried as a time coordinate, or ``default`` for every frame."""
    if name in arr.coords:
        return np.asarray(arr[name].values, dtype=float)
    return np.full(arr.sizes["time"], default)


def _exposure_steps(exp: np.ndarray, kind: str = "fits_series") -> list[str]:
    """A note (header-only) on the frames whose exposure is more than
    :data:`specfit.stages.EXPOSURE_STEP` times off the series' median: automatic exposure
    control, or a table the data contradict (IRIS Si IV, docs/data.md). The run reads their
    data and refuses the contradicted ones before any work."""
    from specfit.stages import EXPOSURE_STEP, exposure_offsets

    offsets = exposure_offsets(exp)
    if offsets is None:
        return []
    med, step = offsets
    with np.errstate(invalid="ignore"):
        off = np.flatnonzero(step > np.log(EXPOSURE_STEP))
    if off.size == 0:
        return []
    first, last = int(off[0]), int(off[-1])
    where = f"frame {first}" if off.size == 1 else f"frames {first}-{last}"
    if last == exp.size - 1 and off.size == last - first + 1:  # the series' last frames
        how = f"input.max_frames: {first} leaves them out"
    elif kind == "fits_series":
        how = "to leave them out, move those files out of the folder or narrow input.pattern"
    else:  # one file: input.max_frames cuts only its end
        how = "input.max_frames cannot leave them out: they are not the last frames"
    return [
        f"              {off.size} frame(s) ({where}) have an exposure over {EXPOSURE_STEP:g}x "
        f"from the median {med:.4g} s: the run checks them against their data before any work "
        f"and refuses those the data contradict ({how})"
    ]


def _fmt_time(iso: str) -> str:
    return iso.replace("T", " ").rstrip("Z")[:22]


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h{(s % 3600) // 60:02d}m{s % 60:02d}s"


def inspect_input(
    path: str | Path, longest_period: float = 1800.0, times: str | Path | None = None
) -> Inspection:
    """Read the metadata of a data set and suggest settings for it.

    Parameters
    ----------
    path
        A folder of FITS frames or images, a folder of FITS cubes, or one file.
    longest_period
        The longest period of interest in seconds; it sets the number of segments (each
        segment must hold at least four such periods).
    times
        The frame times of a ``.npy`` cube (``input.times``: a ``.npy`` of seconds, or
        datetime64), which has none of its own.

    Returns
    -------
    Inspection

    Raises
    ------
    InputError
        When the path holds nothing specfit can read (the message says what to give).
    """
    from specfit.io import frame_times
    from specfit.kernels.resample import choose_cadence, find_gaps, uniform_times
    from specfit.stages import check_grid_size

    section, reasons, notes = _choose_input(str(path))
    if section["kind"] == "array":
        if times is None:
            raise InputError(
                f"{path}: a .npy cube has no frame times; give them: specfit init "
                f"{shlex.quote(str(path))} --times TIMES.npy (seconds, timedelta64 or datetime64, one per "
                "frame)"
            )
        section["times"] = str(times)
        reasons["times"] = "the frame times given (--times)"
    elif times is not None:
        raise InputError(f"--times is for a .npy cube, which has no times; {path} has its own")
    cfg = InputConfig.model_validate(section)
    arr = open_input(cfg)  # headers, names and EXIF only: the pixels stay on disk
    attrs = arr.attrs
    kind = str(attrs.get("kind", section["kind"]))
    nt, ny, nx = arr.sizes["time"], arr.sizes["y"], arr.sizes["x"]
    times = np.asarray(arr["time"].values, dtype=float)
    abs_times = frame_times(arr)
    span = float(times[-1] - times[0]) if nt > 1 else 0.0
    report = [f"specfit init: {Path(str(path)).resolve()}"]
    what = {
        "fits_series": "single-frame FITS files",
        "fits_cube": "frames in one FITS cube",
        "images": "image files",
        "zarr": "frames in a Zarr store",
        "array": "frames in a .npy cube",
    }.get(kind, kind)
    shown = ""

    def matched(listed: list[str]) -> str:  # the glob given (init 'dir/*_06t05_*.fits'), else
        pattern, said = _suffix_pattern(listed)  # the files' suffixes
        return f" ({cfg.pattern if cfg.pattern and cfg.pattern not in (pattern, '*') else said})"

    if kind == "images":
        from specfit.io.fits_series import list_files
        from specfit.io.images import IMAGE_SUFFIXES

        shown = matched(list_files(cfg, IMAGE_SUFFIXES))
    if kind == "fits_series":
        from specfit.io.fits_series import FITS_SUFFIXES, list_files

        listed = list_files(cfg, FITS_SUFFIXES)
        shown = matched(listed)
        left_out = len(listed) - nt
        if left_out > 0:  # by their quality word (the warning above names them)
            shown += f", {left_out} more left out for their {cfg.quality_key}"
    report.append(f"  input       {kind}: {nt} {what}{shown}")
    report.append(f"  image       {ny} x {nx} px (y by x)")
    inst = attrs.get("instrument")
    if inst or attrs.get("wavelength") is not None:
        wl = attrs.get("wavelength")
        wl_text = f", {wl:g} {attrs.get('wavelength_unit', '')}".rstrip() if wl is not None else ""
        report.append(f"  instrument  {inst or '?'}{wl_text}")
    else:
        report.append("  instrument  not given (no TELESCOP/INSTRUME keys)")

    # --- times, cadence, gaps
    t_source = (
        attrs.get("time_key")
        or attrs.get("time_source")
        or (Path(section["times"]).name if section.get("times") else None)
        or "the cube's time coordinate"
    )
    report.append(
        f"  times       from {t_source}: {_fmt_time(str(abs_times[0]))} .. "
        f"{_fmt_time(str(abs_times[-1]))} UTC ({_hms(span)})"
    )
    if attrs.get("time_note"):
        notes.append(str(attrs["time_note"]))
    settings: dict[str, tuple[Any, str]] = {}
    if nt < 8:
        raise InputError(
            f"{path}: only {nt} frames; specfit needs at least 8 (more than 100 for useful spectra)"
        )
    check_grid_size(times, None, attrs.get("files"))  # before any grid: a frame far off
    d = np.diff(times)
    cadence, gain = choose_cadence(times)  # the grid closest to the frames
    report.append(
        f"  cadence     {cadence:g} s (median spacing {np.median(d):.4g} s, min {d.min():.4g} s, "
        f"max {d.max():.4g} s; the grid keeps {100 * gain:.0f} % of the Nyquist power)"
    )
    long_steps = d > 1.5 * cadence
    max_gap = 1.5
    gap_reason = "report every spacing longer than 1.5 cadences"
    where = np.flatnonzero(long_steps)
    every = np.diff(where)
    # regular: one distance between long steps for most of them (IRIS 1400: every 3rd step);
    # frames missing at random (geometric distances) are gaps, each reported
    regular = every.size >= 2 and np.bincount(every).max() >= 0.75 * every.size
    if long_steps.mean() > 0.1 and not regular:
        gap_reason = (
            f"{100 * long_steps.mean():.0f} % of the spacings are long steps at irregular "
            "places (frames missing, not an observing pattern): every one is a gap"
        )
    elif long_steps.mean() > 0.1:
        # A regular pattern of long steps is the observing sequence, not a gap worth a
        # warning each time: report only steps longer than the usual long step.
        usual = float(np.percentile(d[long_steps], 90)) / cadence
        max_gap = max(round((usual + 0.5) * 2) / 2, math.ceil(usual * 2 + 0.01) / 2)
        gap_reason = (
            f"{100 * long_steps.mean():.0f} % of the spacings are long steps of up to "
            f"{usual:.1f} cadences (the observing pattern); report only longer gaps"
        )
    gaps = find_gaps(times, cadence, max_gap)
    gap_lines = []
    for a, b in gaps:
        i = int(np.searchsorted(times, a))
        gap_lines.append(
            f"{b - a:.0f} s ({(b - a) / cadence:.1f} cadences) after "
            f"{_fmt_time(str(abs_times[i]))} (frame {i})"
        )
    report.append(f"  gaps        {len(gaps)} longer than {max_gap:g} cadences")
    if len(gap_lines) > 12:  # frames missing at random: the longest, in time order
        longest = sorted(np.argsort([a - b for a, b in gaps], kind="stable")[:9])
        gap_lines = [gap_lines[i] for i in longest] + [
            f"... and {len(gap_lines) - 9} more, none longer"
        ]
    report.extend(f"                {g}" for g in gap_lines)
    from specfit.stages import gap_share_warning

    much = gap_share_warning(gaps, float(times[-1] - times[0]) if times.size > 1 else 0.0)
    if much:  # as the run would say it, before the config is used (a probe)
        notes.append(much.replace("the gaps above", "the gaps"))
    grid = uniform_times(times, cadence)
    cad_reason = (
        "of the most common, median and mean regular spacing, the grid closest to the frames; "
        "gaps are interpolated linearly"
    )
    if gain < 0.9:
        cad_reason += (
            f" (the frames drift against each of these grids: interpolation keeps {100 * gain:.0f} "
            "% of the Nyquist power; use the instrument's nominal cadence if you know it)"
        )
    settings["resample.cadence"] = (cadence, cad_reason)
    settings["resample.max_gap"] = (max_gap, gap_reason)

    # --- exposure and units
    input_out = dict(section)
    if kind == "images":
        report.append("  exposure    none (image files carry no exposure); values are image levels")
        report.append("  units       none: power is in relative units")
        input_out["normalise_exposure"] = False
        input_out["exposure_key"] = None
        reasons["normalise_exposure"] = "no exposure time in image files"
    else:
        if kind == "fits_series":
            key = str(attrs.get("time_key", "T_OBS"))
            if "," in key:  # frames differ in which key they carry: keep the usual order
                input_out["time_key"] = list(cfg.time_key)
                reasons["time_key"] = f"frames carry different keys ({key})"
            else:
                input_out["time_key"] = [key] + [k for k in cfg.time_key if k != key]
                reasons["time_key"] = f"{key} is in every header"
        exp = arr["exposure"].values if "exposure" in arr.coords else None
        bunit = str(attrs.get("bunit", ""))
        # a Zarr cube may hold rates already (a specfit cube): the reader then leaves it as is
        stored_rate = bool(
            kind == "zarr"
            and attrs.get("exposure_normalised")
            and open_input(cfg.model_copy(update={"normalise_exposure": False})).attrs.get(
                "exposure_normalised"
            )
        )
        divided = attrs.get("exposure_normalised") and not stored_rate
        raw_unit = bunit[:-4] if divided and bunit.endswith(" / s") else bunit
        if exp is not None:
            src = "EXPTIMES column" if kind == "fits_cube" and exp.std() > 0 else cfg.exposure_key
            report.append(f"  exposure    {src}: {np.nanmin(exp):.4g} .. {np.nanmax(exp):.4g} s")
            # a note: in the config too (the report alone was lost once the config was saved)
            notes += [line.strip() for line in _exposure_steps(np.asarray(exp, float), kind)]
            input_out["exposure_key"] = cfg.exposure_key
            input_out["normalise_exposure"] = True
            reasons["normalise_exposure"] = (
                f"the store holds rates ({bunit or '1 / s'}), already divided by the exposures: "
                "the run does not divide again"
                if stored_rate
                else f"values / exposure: {raw_unit or 'counts'} -> {bunit}"
                + (" (exposures vary by frame)" if np.nanmax(exp) > 1.01 * np.nanmin(exp) else "")
            )
        else:
            report.append(f"  exposure    not found (no {cfg.exposure_key} key)")
            input_out["exposure_key"] = None
            input_out["normalise_exposure"] = False
            reasons["normalise_exposure"] = "no exposure key found"
        report.append(f"  units       {raw_unit or 'not given (no BUNIT/PIXLUNIT)'}")
        if attrs.get("missing_below") is not None:
            input_out["missing_below"] = float(attrs["missing_below"])
            reasons["missing_below"] = "the instrument's missing-pixel sentinel (values below)"

    # --- WCS, observer, pointing -> derotation
    derotate, why = False, "no helioprojective WCS: derotation needs one"
    if "wcs_header" in attrs:
        from astropy.io import fits

        h = fits.Header.fromstring(str(attrs["wcs_header"]), sep="\n")
        scale = abs(float(h.get("CDELT1", 1.0)))
        cx = float(np.asarray(arr["hpc_x"].values)[ny // 2, nx // 2])
        cy = float(np.asarray(arr["hpc_y"].values)[ny // 2, nx // 2])
        report.append(
            f'  WCS         {h.get("CTYPE1")}/{h.get("CTYPE2")}, {scale:.4g}"/px, field '
            f'centre ({cx:.1f}", {cy:.1f}") at the middle frame'
        )
        obs = []
        if h.get("DSUN_OBS"):
            obs.append(f"DSUN_OBS {float(h['DSUN_OBS']) / 1.495978707e11:.4f} AU")
        for k in ("HGLN_OBS", "HGLT_OBS"):
            if h.get(k) is not None:
                obs.append(f"{k} {float(h[k]):.3f} deg")
        report.append("  observer    " + (", ".join(obs) if obs else "not given (Earth assumed)"))
        drift_px = ROTATION_ARCSEC_PER_H * span / 3600.0 / scale
        # Where the field centre points in each frame (x only; rotation moves features in x):
        # CRVAL1 + (centre - CRPIX1) * CDELT1 with each frame's own CRVAL1/CRPIX1 where the
        # reader carries them (AIA/JSOC cutouts that track change CRPIX, IRIS changes CRVAL).
        crval = _per_frame(arr, "wcs_crval1", float(h.get("CRVAL1", 0.0)))
        crpix = _per_frame(arr, "wcs_crpix1", float(h.get("CRPIX1", 0.0)))
        centre = crval + ((nx + 1) / 2.0 - crpix) * float(h.get("CDELT1", 1.0))
        moved = float(abs(centre[-1] - centre[0])) / scale
        # Solar rotation moves a tracked field smoothly (~0.15"/min): a step between two
        # frames far beyond it is a re-pointing or another field among the frames, not
        # tracking (a folder of two fields was read as "tracks solar rotation")
        found = pointing_jump(arr)
        if attrs.get("derotated_to"):
            derotate = False
            why = f"already derotated (to {attrs['derotated_to']}): a specfit cube"
            report.append(f"  pointing    already derotated to {attrs['derotated_to']}")
        elif found is not None:
            jump, size = found
            derotate = True
            files = list(attrs.get("files") or [])
            named = (
                f" ({Path(files[jump]).name} -> {Path(files[jump + 1]).name})"
                if len(files) == arr.sizes["time"]
                else ""
            )
            why = (
                f"the pointing jumps {size:.0f} px between frames {jump} and "
                f"{jump + 1}{named}, far beyond solar rotation: derotation aligns the frames "
                "by their WCS and refuses a frame that shows another field"
            )
            report.append(
                f"  pointing    JUMPS {size:.0f} px between frames {jump} and {jump + 1}"
                f"{named}: not solar rotation (the frames may show different fields)"
            )
            notes.append(
                f"the field centre jumps {size:.0f} px between two frames{named}: check "
                "that every frame shows the same field (a re-pointing, or another data set "
                "in the folder)"
            )
        elif moved > 0.5 * drift_px and drift_px > 1:
            derotate = False
            why = (
                f"the pointing follows the Sun (field centre moves {moved:.0f} px over "
                f"{_hms(span)}, as solar rotation does): frames are already aligned"
            )
            report.append("  pointing    tracks solar rotation")
        elif drift_px < 1:
            why = f"solar rotation moves features < 1 px over {_hms(span)}"
            report.append("  pointing    fixed; rotation drift below one pixel")
        else:
            derotate = True
            why = (
                f"fixed pointing over {_hms(span)}: solar rotation moves features up to "
                f"~{drift_px:.0f} px; derotate to the middle frame's time"
            )
            report.append(f"  pointing    fixed; rotation drift up to ~{drift_px:.0f} px")
    else:
        report.append("  WCS         none: maps in pixels only (no arcsec, no derotation)")
        if kind == "images":
            notes.append(
                "no WCS: if the field drifts (solar rotation), co-align it: prep.coalign: "
                "true, coalign_smooth: 1 and coalign_max_shift above the drift in px "
                "(see the shipped aia1600_jpg config)"
            )
    settings["prep.derotate"] = (derotate, why)

    # --- segments and box from the span and the longest period of interest
    n = grid.size
    # 2 % slack: a "4 h" series spans 3 h 59 min from first to last frame.
    wanted = max(1, int(1.02 * span / (4.0 * longest_period)))
    k = max(1, min(wanted, n // 64))
    seg = n // k
    nfreq = (seg - 1) // 2  # the run drops the DC bin and (seg even) the Nyquist bin
    from specfit.config import DEFAULTS
    from specfit.models import frequencies_needed, get_model

    need = frequencies_needed(get_model(m) for m in DEFAULTS.fit.models.values())
    if nfreq < need:  # the run would refuse the config init wrote
        raise InputError(
            f"{path}: {n} samples at {cadence:g} s give {nfreq} frequencies, and the default "
            f"models need more than {need - 1}: at least {2 * need + 1} samples (about "
            f"{_hms(2 * need * cadence)} of frames); more than 100 for useful spectra"
        )
    tail = (
        f"lowest frequency {1e3 / (seg * cadence):.3g} mHz, {nfreq} frequencies, {2 * k} dof each"
    )
    if 1.02 * span < 4.0 * longest_period:
        why_k = (
            f"one segment: the {_hms(span)} span holds fewer than 4 periods of the longest "
            f"period of interest ({longest_period / 60:g} min, --longest-period); {tail}"
        )
    else:
        held = seg * cadence / longest_period  # 3.9 within the 2 % slack for the span
        cap = f" (not {wanted}: at least 64 samples per segment)" if k < wanted else ""
        why_k = (
            f"{k} x {_hms(seg * cadence)}{cap}: each holds {held:.3g} periods of the longest "
            f"period of interest ({longest_period / 60:g} min, --longest-period); {tail}"
        )
    settings["spectra.segments"] = (k, why_k)
    box = 3 if nfreq < 50 else 1
    settings["spectra.box"] = (
        box,
        f"only {nfreq} frequencies per spectrum: 3 x 3 px averaged to steady them (neighbours "
        "are correlated, so check <model>_chi2red)"
        if box == 3
        else f"{nfreq} frequencies per spectrum are enough per pixel",
    )
    report.append(
        f"  spectra     {n} samples at {cadence:g} s -> {k} segment(s), {nfreq} frequencies "
        f"({1e3 / (seg * cadence):.3g}-{1e3 * nfreq / (seg * cadence):.3g} mHz), box {box}"
    )
    return Inspection(
        path=str(path),
        input=input_out,
        input_reasons=reasons,
        settings=settings,
        report=report,
        notes=notes,
        gaps=gap_lines,
    )


def _v(value: Any) -> str:
    """One YAML scalar or flow list, as yaml itself writes it."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
    return text[:-4].strip() if text.endswith("\n...") else text.removesuffix("...").strip()


def _line(key: str, value: Any, reason: str | None = None, indent: int = 2) -> str:
    text = f"{' ' * indent}{key}: {_v(value)}"
    if reason:
        text = f"{text:<40} # {reason}"
    return text


def _results_path(insp: Inspection, base: Path, stem: str, rel: Callable) -> tuple[str, str]:
    """(output.path, its comment): ``<stem>-results/results.zarr`` beside the config, or
    beside the input folder where the config's folder is (inside) the input, because a run
    never writes inside its input."""
    out = base / f"{stem}-results"
    src = Path(glob_base(str(insp.input["path"]))).resolve()
    if src.is_dir() and (out == src or src in out.parents):
        return rel(str(src.parent / f"{stem}-results" / "results.zarr")), (
            "outside the input folder; relative to this file"
        )
    return f"{stem}-results/results.zarr", "relative to this file"


def render_config(insp: Inspection, config_path: str | Path | None = None) -> str:
    """The commented YAML config for an :class:`Inspection`.

    ``input.path`` and ``output.path`` are written relative to the config file's folder
    (specfit resolves them from there), so the folder can be moved together. Without
    ``config_path`` (the config is printed, to be saved anywhere) the input is absolute.
    """
    base = Path(config_path).resolve().parent if config_path else Path.cwd()
    stem = Path(config_path).stem if config_path else "specfit"

    def rel(p: str) -> str:
        if config_path is None:  # relative to the current folder it would break elsewhere
            return str(Path(p).resolve())
        try:
            r = os.path.relpath(Path(p).resolve(), base)
        except ValueError:  # another drive (Windows)
            return str(Path(p).resolve())
        # Far-away data are clearer as an absolute path.
        return str(Path(p).resolve()) if r.startswith(("../../..", "..\\..\\..")) else r

    s = insp.settings
    out = [
        f"# specfit config written by `specfit init {Path(insp.path).resolve()}`.",
        "# Every value that depends on the data says why it was chosen; check them, then:",
        f"#   specfit run {shlex.quote(Path(config_path).name) if config_path else 'CONFIG.yaml'}",
    ]
    out += [f"# NOTE: {n}" for n in insp.notes]
    out.append("input:")
    r = insp.input_reasons
    for key, value in insp.input.items():
        paths = ("path", "times_csv", "times")
        out.append(_line(key, rel(value) if key in paths else value, r.get(key)))
    out.append("prep:")
    out.append(_line("derotate", s["prep.derotate"][0], s["prep.derotate"][1]))
    if s["prep.derotate"][0]:
        out.append(_line("reference_time", None, "null = the middle frame"))
    out.append("resample:")
    out.append(_line("cadence", s["resample.cadence"][0], s["resample.cadence"][1]))
    out.append(_line("max_gap", s["resample.max_gap"][0], s["resample.max_gap"][1]))
    out += [f"  # gap: {g}" for g in insp.gaps]
    out.append("spectra:")
    out.append(_line("segments", s["spectra.segments"][0], s["spectra.segments"][1]))
    out.append(_line("window", "none", "defaults measured on synthetic truth (docs/spectra.md)"))
    out.append(_line("detrend", "mean"))
    out.append(_line("normalisation", "density"))
    out.append(_line("box", s["spectra.box"][0], s["spectra.box"][1]))
    out.append("fit:")
    out.append("  models:")
    out.append(_line("m1", "powerlaw_tail", "A f^-n + C", indent=4))
    out.append(_line("m2", "powerlaw_tail_lorentzian", "M1 + a Lorentzian bump in ln f", indent=4))
    out.append(_line("method", "whittle", "the likelihood of periodograms"))
    out.append(_line("best_model", "lrt"))
    out.append("output:")
    out.append(_line("path", *_results_path(insp, base, stem, rel)))
    return "\n".join(out) + "\n"


def init_config(
    path: str | Path,
    out: str | Path | None = None,
    *,
    longest_period: float = 1800.0,
    force: bool = False,
    times: str | Path | None = None,
) -> tuple[str, str]:
    """Inspect ``path``, write the config to ``out`` (if given) and validate it.

    Returns
    -------
    (report, yaml_text)
        The findings as text and the config as written.

    Raises
    ------
    InputError
        Nothing readable at ``path``.
    ConfigError
        ``out`` exists (and not ``force``), is a folder, an input file or a data file (even
        with ``force``; see :func:`check_out`), cannot be written, or the written config
        does not load.
    """
    if out is not None:
        check_out(out, force)
    insp = inspect_input(path, longest_period=longest_period, times=times)
    text = render_config(insp, out)
    cfg = load_config(yaml.safe_load(text))  # the schema, before anything is written
    if out is not None:
        _refuse_input_file(out, insp)
        try:
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            Path(out).write_text(text)
        except OSError as exc:
            raise ConfigError(
                f"--out {out}: cannot write the config ({exc.strerror or exc}); choose a file "
                "in a folder you can write to"
            ) from None
        try:
            cfg = load_config(out)  # the file as a user will run it (paths resolved from it)
        except ConfigError:
            Path(out).unlink()  # written just now by this call: never leave a broken config
            raise
    if cfg.input.kind != insp.input["kind"]:
        raise ConfigError(f"{out or 'the config'}: input.kind did not survive the round trip")
    report = "\n".join(insp.report + [f"  note        {n}" for n in insp.notes])
    return report, text


# Names of data, never of a config: --out is refused on them, even with --force (a YAML
# config written over a frame destroys it; one written as a new .fits file beside the frames
# joins the series).
_DATA_SUFFIXES = (
    *_FITS_SUFFIXES,
    *_IMAGE_SUFFIXES,
    ".gz",
    ".bz2",
    ".zip",
    ".npy",
    ".npz",
    ".zarr",
    ".h5",
    ".hdf5",
    ".nc",
    ".csv",
    ".sav",
)
# Names an existing config may have: --force replaces such a file if it holds text.
_CONFIG_SUFFIXES = ("", ".yaml", ".yml", ".txt", ".cfg", ".conf", ".config")


def _holds_text(path: Path) -> bool:
    """True when the file's first bytes are text (no NUL byte, not a FITS header)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8192)
    except OSError:
        return False
    return b"\0" not in head and not head.startswith(b"SIMPLE  =")


def check_out(out: str | Path, force: bool = False) -> None:
    """Refuse an ``--out`` that ``specfit init`` must not write its config to.

    A folder, a name of data (a FITS, image, .npy, .zarr, .gz, ... name), a file inside a
    specfit store, cube or work folder, or an existing file that is not a text config is
    refused even with ``force``; another existing file without ``force``.

    Raises
    ------
    ConfigError
        Naming ``--out`` and what to give instead.
    """
    p = Path(out)
    if p.is_dir():
        raise ConfigError(
            f"--out {out} is a folder; give the config's file name, e.g. --out {p / 'specfit.yaml'}"
        )
    low = p.name.lower()
    if low.endswith(_DATA_SUFFIXES):
        what = "an existing data file" if p.exists() else "a data file's name"
        raise ConfigError(
            f"--out {out} is {what}, not a config (--force replaces only a YAML config); give "
            f"a .yaml file name, e.g. --out {p.with_name(p.name.split('.')[0] + '.yaml')}"
        )
    from specfit.workspace import refuse_inside_specfit_folder

    refuse_inside_specfit_folder(p, "--out")
    if not p.exists() and not p.is_symlink():
        return
    if not p.is_file() or p.suffix.lower() not in _CONFIG_SUFFIXES or not _holds_text(p):
        raise ConfigError(
            f"--out {out} exists and is not a YAML config (--force replaces only a config); "
            "give another --out, e.g. a new .yaml file"
        )
    if not force:
        raise ConfigError(f"{out} exists; choose another --out or pass --force to replace it")


def _refuse_input_file(out: str | Path, insp: Inspection) -> None:
    """Refuse an ``--out`` that is one of the files the inspected input reads (or lies
    inside its Zarr store), even with ``--force``."""
    target = Path(os.path.abspath(out)).resolve()
    section = insp.input
    src = Path(os.path.abspath(str(section["path"]))).resolve()
    inputs = [Path(str(section[k])) for k in ("times_csv", "times") if section.get(k)]
    if section["kind"] in ("fits_series", "images") and src.is_dir():
        from specfit.io.fits_series import list_files

        cfg = InputConfig(path=str(section["path"]), pattern=section.get("pattern", "*"))
        inputs += [Path(f) for f in list_files(cfg)]
    elif src.is_dir():  # a Zarr store: every file in it
        if target == src or src in target.parents:
            raise ConfigError(
                f"--out {out} lies inside the input {section['path']}; write the config "
                "outside it, e.g. --out specfit.yaml"
            )
    else:
        inputs.append(src)
    if any(Path(os.path.abspath(f)).resolve() == target for f in inputs):
        raise ConfigError(
            f"--out {out} is one of the input files of {section['path']}; write the config "
            "to another file, e.g. --out specfit.yaml"
        )
