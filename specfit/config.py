"""The run configuration: a YAML file validated by pydantic.

Sections: ``input``, ``prep``, ``resample``, ``spectra``, ``fit``, ``output``, ``cluster``.
Every key has a default, so an empty section (or a missing one) is valid. Unknown keys,
wrong types and impossible values are errors that name the key and say what is allowed.

Command-line overrides use dotted keys: ``--set spectra.segments=2``; values are parsed
as YAML scalars/lists (``--set fit.models='{m1: powerlaw_tail}'`` works too).
"""

from __future__ import annotations

import copy
import datetime
import math
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from specfit.errors import ConfigError

__all__ = [
    "Config",
    "load_config",
    "apply_overrides",
    "config_diff",
    "SCIENCE_SECTIONS",
    "DEFAULTS",
    "MIN_WORKER_MEMORY",
    "memory_limit_bytes",
    "worker_memory_too_small",
]


def _numeric_only(annotation: Any) -> bool:
    """True for an int or float field (or such | None) that takes no bool of its own."""
    import types
    import typing

    if annotation in (int, float):
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return bool(args) and all(a in (int, float) for a in args)
    return False


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, value: Any, info: Any) -> Any:
        annotation = cls.model_fields[info.field_name].annotation
        # pydantic takes true as 1 and false as 0: `segments: true` would run with 1 segment
        if isinstance(value, bool) and _numeric_only(annotation):
            raise ValueError(f"{str(value).lower()} is not a number")
        # a section whose keys are all commented out (`spectra:` alone) reads as None in
        # YAML: empty, so every key keeps its default (it was refused as "not a dictionary")
        if value is None and isinstance(annotation, type) and issubclass(annotation, _Section):
            return {}
        return value


class CutoutConfig(_Section):
    """A rectangular box, inclusive of x1/y1 and exclusive of x2/y2 for pixels."""

    x1: float
    x2: float
    y1: float
    y2: float
    units: Literal["arcsec", "pixel"] = "arcsec"

    @model_validator(mode="after")
    def _ordered(self) -> CutoutConfig:
        if not (self.x2 > self.x1 and self.y2 > self.y1):
            raise ValueError("needs x2 > x1 and y2 > y1")
        return self


class SyntheticConfig(_Section):
    """Built-in synthetic frames (``input.kind: synthetic``), made once in ``input.path``."""

    shape: tuple[Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)]] = (48, 64)
    n_frames: int = Field(600, ge=16)
    # at most a day: far longer cadences overflow the generator (its Poisson counts, its times)
    cadence: float = Field(12.0, gt=0, le=86400.0, allow_inf_nan=False)
    seed: int = Field(0, ge=0)


# The bits of SDO/AIA level-1 QUALITY whose frames are not an image of the Sun as usual:
# 12 not in science pointing, 13 eclipse, 14 no Sun presence, 15 safe mode, 16 dark image,
# 17 image-stabilisation loop open, 20 focus out of range, 31 image not available. Not in it:
# 0-4 (missing calibration records), 8-11 (missing values somewhere in the full frame; a
# cutout's own are NaN), 18 (a non-standard sequence), 21 (a register flag), 30 (quick-look
# data): frames that carry these are images as usual. Other instruments number their QUALITY
# bits otherwise (SOHO/MDI's bit 16 is a minor telemetry dropout; HMI's observables have their
# own list): by default they are applied to AIA frames only (TELESCOP SDO/AIA or INSTRUME AIA_n).
AIA_BAD_QUALITY_BITS = (12, 13, 14, 15, 16, 17, 20, 31)


class InputConfig(_Section):
    """Where the frames are and how to read them."""

    # "memory": the frames are sunpy objects handed over in Python (specfit.run(cfg, data=...)).
    kind: Literal[
        "auto", "fits_series", "fits_cube", "images", "array", "zarr", "synthetic", "memory"
    ] = "auto"
    synthetic: SyntheticConfig = Field(default_factory=SyntheticConfig)
    path: str | None = Field(
        None, description="A folder, a glob, or a single file (cube, .npy, .zarr)."
    )
    pattern: str = Field("*", description="Glob of file names inside `path` when it is a folder.")
    hdu: int | None = Field(
        None,
        description=(
            "FITS HDU holding the image; None = the first image HDU (a later one with over "
            "4x its pixels if any)."
        ),
    )
    time_key: list[str] = Field(
        default_factory=lambda: ["T_OBS", "DATE-OBS"],
        description="FITS header keys tried in order for the frame time (one key: a list of "
        "one, or the key itself).",
    )
    exposure_key: str | None = Field("EXPTIME", description="Header key of the exposure time (s).")
    normalise_exposure: bool = True
    exposure_check: bool = Field(
        True,
        description="Refuse frames whose listed exposure their data contradict (they hold "
        "the raw level of the usual exposure: dividing by theirs makes a jump). false: warn "
        "and divide anyway, for a scene that really brightened as much as the exposure fell "
        "(a flare under automatic exposure control).",
    )
    time_source: Literal["auto", "header", "filename", "exif", "csv", "array"] = "auto"
    time_pattern: str | None = Field(
        None,
        description="strptime pattern matched against file names, e.g. '1600_%Y%m%d_%H_%M_%S.jpg'.",
    )
    times_csv: str | None = Field(
        None, description="CSV with columns file,time (ISO 8601 or seconds)."
    )
    times: str | None = Field(None, description="For .npy/.zarr cubes: a .npy file of times (s).")
    missing_below: float | None = Field(
        None,
        description=(
            "Values below this are missing (NaN). Unset: -50 for IRIS cubes (their -200 "
            "sentinel, blurred to -200..-60 at the field edges), none for other data."
        ),
    )
    max_frames: int | None = Field(None, ge=2, description="Use only the first N frames.")
    quality_key: str | None = Field(
        "QUALITY",
        description="Header key of a frame's quality word (SDO level 1: QUALITY); None: not read.",
    )
    quality_bits: list[int] | None = Field(
        None,
        description="Bits of the quality word that leave a frame out (the series goes on "
        "without it); None: AIA's off-pointing, eclipse, no Sun, safe mode, dark image, ISS loop "
        "open, focus out of range and image-not-available bits, on AIA frames only (TELESCOP "
        "SDO/AIA or INSTRUME AIA_n; other instruments number their bits otherwise); a list: "
        "those bits, on every frame; [] keeps every frame.",
    )

    @field_validator("time_key", mode="before")
    @classmethod
    def _one_key(cls, v: Any) -> Any:
        # `time_key: DATE-OBS` was refused ("should be a valid list"; a helper's finding)
        return [v] if isinstance(v, str) else v

    @field_validator("quality_bits")
    @classmethod
    def _bits(cls, v: list[int] | None) -> list[int] | None:
        if v is None:
            return v
        bad = [b for b in v if not 0 <= b <= 31]
        if bad:
            raise ValueError(f"bits are numbered 0-31 (a 32-bit quality word), got {bad}")
        return sorted(set(v))


class PrepConfig(_Section):
    """Preprocessing applied to the frames before the cube is written."""

    derotate: bool = False
    derotate_method: Literal["polynomial", "reproject"] = Field(
        "polynomial",
        description="polynomial: per-frame quadratic pixel map fitted to sunpy's differential "
        "rotation (fast); reproject: sunpy propagate_with_solar_surface + reproject (slow).",
    )
    interpolation_order: int = Field(
        3, ge=1, le=5, description="Spline order of the resampling in derotate/coalign."
    )
    reference_time: str | None = Field(None, description="ISO time; None = the middle frame.")

    @field_validator("reference_time", mode="before")
    @classmethod
    def _time_as_text(cls, value: Any) -> Any:
        # YAML reads an unquoted 2012-06-06T07:00:00 (the docs' own example) as a datetime
        if isinstance(value, datetime.datetime) and value.tzinfo is not None:
            # 2012-06-06T07:00:00Z: UTC without the offset astropy's ISO parser refuses
            value = value.astimezone(datetime.UTC).replace(tzinfo=None)
        if isinstance(value, datetime.date):
            return value.isoformat()
        return value

    cutout: CutoutConfig | None = None
    coalign: bool = False
    coalign_max_shift: float = Field(
        5.0,
        gt=0,
        allow_inf_nan=False,
        description="Largest co-alignment shift (px); the cutout is trimmed by it.",
    )
    coalign_smooth: int | None = Field(
        None,
        ge=0,
        le=5,
        description="Measure all shifts first and fit a polynomial of this degree in time "
        "(e.g. 3 for solar rotation in images without WCS); trims by the actual shifts. "
        "None = each frame's own shift, applied lazily.",
    )
    despike: bool = False
    despike_size: int = Field(3, ge=3, description="Median-filter width (odd) for despiking.")
    despike_sigma: float = Field(5.0, gt=0, allow_inf_nan=False)

    @field_validator("despike_size")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError("must be odd (3, 5, ...)")
        return v


class ResampleConfig(_Section):
    """Interpolation onto a uniform time grid."""

    cadence: float | None = Field(
        None,
        gt=0,
        allow_inf_nan=False,
        description=(
            "Seconds; None = of the most common, median and mean regular frame spacing, the "
            "one whose grid stays closest to the frames."
        ),
    )
    method: Literal["linear"] = "linear"
    max_gap: float = Field(
        3.0,
        gt=0,
        allow_inf_nan=False,
        description="Gaps longer than this many cadences are reported.",
    )


class SpectraConfig(_Section):
    """Periodograms per pixel."""

    segments: int = Field(1, ge=1, description="K non-overlapping segments averaged (Bartlett).")
    segment_length: float | None = Field(
        None,
        gt=0,
        allow_inf_nan=False,
        description="Seconds per segment for Welch averaging; overrides `segments`.",
    )
    overlap: float = Field(0.0, ge=0.0, lt=1.0, description="Welch overlap fraction (0.5 typical).")
    # Defaults measured on synthetic truth (docs/spectra.md): no taper keeps the bins
    # independent; a linear detrend removes red-noise power and biases the index low.
    window: Literal["none", "hann"] = "none"
    detrend: Literal["none", "mean", "linear"] = "mean"
    normalisation: Literal["density", "variance", "raw"] = "density"
    box: int = Field(1, ge=1, description="Spatial box (odd) whose spectra are averaged.")
    # Neighbouring pixels of real images are correlated, so a box mean holds fewer independent
    # spectra than pixels (AIA 1600, box 3: ~4 of 9); `nominal` counts every pixel.
    box_dof: Literal["auto", "nominal"] = Field(
        "auto",
        description="dof of box-averaged spectra: auto = one spectrum's x the box's effective "
        "number of independent pixels, estimated per box from the data; nominal = x the pixels.",
    )
    fmin: float | None = Field(None, ge=0, description="Hz; lowest frequency kept.")
    fmax: float | None = Field(None, gt=0, description="Hz; highest frequency kept.")

    @field_validator("box")
    @classmethod
    def _odd_box(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError("must be odd (1, 3, 5, ...)")
        return v

    @model_validator(mode="after")
    def _range(self) -> SpectraConfig:
        if self.fmin is not None and self.fmax is not None and self.fmax <= self.fmin:
            raise ValueError("fmax must be greater than fmin")
        return self


class FitConfig(_Section):
    """Spectral models and how they are fitted."""

    models: dict[str, str] = Field(
        default_factory=lambda: {"m1": "powerlaw_tail", "m2": "powerlaw_tail_lorentzian"},
        description="Alias -> model name. Aliases become result prefixes (m1_index, ...).",
    )
    method: Literal["whittle", "lsq_log", "lsq"] = "whittle"
    user_models: list[str] = Field(
        default_factory=list,
        description="Python files or importable modules that register extra models.",
    )
    bounds: dict[str, dict[str, tuple[float, float]]] = Field(
        default_factory=dict, description="model name -> parameter -> [low, high] overrides."
    )
    max_iter: int = Field(200, ge=1)
    tol: float = Field(1e-8, gt=0, allow_inf_nan=False)
    # Beside the global search's starts (kernels.fitting._search), 3 data-driven starts:
    # with 1, 7 of 200 legacy-lsq AIA pixels end short of the best chi^2 (1e-4 relative),
    # with 3 one does (tests/test_global_search.py); they cost ~10-15 % more fit time.
    multistart: int = Field(
        3,
        ge=1,
        description="Data-driven starting points per pixel beside the global search (best kept).",
    )
    weights: Literal["sigma", "dlogf"] = Field(
        "sigma",
        description="lsq weights: sigma = the spread across the box (spectra.box >= 3), or "
        "dlogf = delta log10 f between bins with the noise level estimated from the residuals "
        "(the original specFit's validation run).",
    )
    best_model: Literal["lrt", "aic", "bic", "ftest", "chi2", "chi2sum"] = Field(
        "lrt",
        description="lrt/ftest: the nested test at alpha; aic/bic: lowest; chi2: lowest "
        "reduced chi-square; chi2sum: lowest raw chi-square sum (the original specFit's rule).",
    )
    alpha: float = Field(0.05, gt=0, lt=1, description="Significance level for lrt/ftest.")
    # Field-wide significance (docs/significance.md): per-pixel alpha flags ~alpha of the
    # pixels of a field without any signal; these two controls hold over the whole field.
    fdr_q: float = Field(
        0.05,
        gt=0,
        lt=1,
        description="False-discovery rate of the field-wide Benjamini-Hochberg maps "
        "(<test>_qvalue, best_model_fdr): significant where q <= fdr_q.",
    )
    global_level: float = Field(
        0.999,
        gt=0,
        lt=1,
        description="Global confidence level of the <test>_global maps: the chance that no "
        "pixel of a field without signal passes (per-test threshold 1 - level^(1/N), Sidak).",
    )
    # The original specFit kept M1 where its single local fit of M2 stopped above M1's
    # chi-square (docs/legacy.md): reproducing its choice needs its optimiser, not only its rule.
    optimizer: Literal["specfit", "original"] = Field(
        "specfit",
        description="specfit: the batched solver with a global search of the bump (M2 never "
        "ends worse than the M1 nested in it); original: every pixel fitted by the original "
        "specFit's own procedure (scipy curve_fit from the middle of the bounds: M1 one "
        "'dogbox' fit, M2 'dogbox' then 'trf'; ~20 ms per pixel), for its models "
        "powerlaw_tail and powerlaw_tail_lorentzian with method lsq, weights dlogf, "
        "spectra.normalisation variance and finite fit.bounds (configs/legacy.yaml).",
    )
    # Profile-likelihood intervals (docs/models.md): at low dof the likelihood of a bump's
    # centre is skewed and heavy-tailed, so estimate +- error under-covers; the profile does not.
    intervals: list[str] = Field(
        default_factory=list,
        description="Parameter names (e.g. [bump_center]) whose 68.3 % profile-likelihood "
        "interval every model that has them also stores (<alias>_<name>_lower, _upper): where "
        "the log-likelihood, maximised over the other parameters, falls 0.5 below the fit's. "
        "Each costs ~15-40 model evaluations per pixel (the fits ~100-300).",
    )
    nonnested: Literal["bic", "aic"] = Field(
        "bic",
        description="With lrt/ftest and several families of nested models (e.g. powerlaw_tail "
        "and knee_tail, each with its bump model): the criterion that chooses between the "
        "families' winners (lowest wins).",
    )

    @field_validator("models")
    @classmethod
    def _aliases(cls, v: dict[str, str]) -> dict[str, str]:
        if not v:
            raise ValueError("needs at least one model, e.g. {m1: powerlaw_tail}")
        for alias in v:
            if not alias.isidentifier():
                raise ValueError(f"alias {alias!r} must be a plain identifier like m1")
        return v


class OutputConfig(_Section):
    """Where results go and how they are chunked."""

    path: str = "results.zarr"
    cube_path: str | None = Field(
        None,
        description="Where cube.zarr goes (a new or empty folder, or a cube specfit wrote); "
        "None = <path>.specfit-work/cube.zarr, specfit's work folder beside the results.",
    )
    keep_cube: bool = Field(
        True, description="Keep the cube after the run (only a cube specfit wrote is removed)."
    )
    tile: int | None = Field(
        None, ge=8, description="Spatial tile (px) per task; None = chosen from worker memory."
    )
    time_chunk: int | None = Field(
        None, ge=1, description="Frames per cube.zarr chunk; None = chosen from frame size."
    )
    cube_codec: Literal["lz4", "zstd", "none"] = Field(
        "lz4",
        description="Compression of cube.zarr: lz4 (Blosc lz4 with byte shuffle: fast to write "
        "and read), zstd (zarr's default: smaller, slower to write), none. The values are the "
        "same whichever is chosen.",
    )
    plots: bool = Field(
        False,
        description="After the run, write a PNG per map and one HTML page (as `specfit plot`) "
        "to <path without .zarr>_plots; needs the viz extras (a failure is a warning: the "
        "results stand).",
    )


# The least memory a worker may be given (cluster.memory_limit), in bytes. Measured (2 cores,
# 23 GiB, Python 3.11, dask/distributed 2026.8, numba cache in a fresh NUMBA_CACHE_DIR or
# warm): the RSS of a LocalCluster worker process, polled every 50 ms during `specfit run`
# of the demo config with 1 worker x 1 thread, is 62 MiB bare, 231 MiB once numpy, scipy,
# numba and specfit.kernels.tile are imported, a peak of 310 MiB on 16 x 16 px x 200
# frames with the compiled kernels in numba's cache, and 480-490 MiB when they compile
# (whittle, and lsq with spectra.box 3), 556 MiB on the 48 x 64 x 600 demo. dask pauses a
# worker at 80 % of its limit and restarts it at 95 %: at 300 MB the imports alone keep it
# paused (the run hangs), at 150 MB it restarts for ever. 1 GB (954 MiB) keeps the compiling
# worker near 50 % (below dask's 60 % spill target too), with ~270 MiB to the pause for data.
MIN_WORKER_MEMORY = 10**9


def memory_limit_bytes(value: str | None) -> int | None:
    """The bytes per worker that a ``cluster.memory_limit`` names, as dask reads it.

    Parameters
    ----------
    value
        ``"auto"`` or None (this machine's memory shared between the workers), a number of
        bytes with or without a unit (``"4GB"``, ``"4 GiB"``, ``"4e9"``), a fraction of the
        machine's memory (``"0.5"``: a number up to 1) or ``"0"`` (no limit).

    Returns
    -------
    int or None
        The bytes; None where they depend on the machine the workers run on (auto, a
        fraction) or there is no limit (0).

    Raises
    ------
    ValueError
        For anything else (``"4 gigs"``, a negative or infinite size), naming what is allowed.
    """
    if value is None or value.strip().lower() == "auto":
        return None
    text = value.strip()
    example = "give bytes with a unit like 4GB or '4 GiB', a fraction like 0.5, or auto"
    try:
        number: float | None = float(text)
    except ValueError:
        number = None
    if number is None:
        from dask.utils import parse_bytes

        try:
            number = float(parse_bytes(text))
        except (ValueError, OverflowError):
            raise ValueError(f"{text!r} is not a memory size; {example}") from None
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{text!r} is not a memory size; {example}")
    if number <= 1:  # dask: 0 is no limit, up to 1 a fraction of the machine's memory
        return None
    return int(number)


def worker_memory_too_small(what: str, size: int, fix: str | None = None) -> str:
    """The message for a worker memory ``size`` (bytes) below :data:`MIN_WORKER_MEMORY`.

    Parameters
    ----------
    what
        What gives that size, e.g. ``"'300MB'"``.
    size
        The bytes per worker.
    fix
        What to change; None: a size in bytes at least the floor, or auto.

    Returns
    -------
    str
        One line: the size, the floor, why, and the fix.
    """
    from dask.utils import format_bytes

    fix = fix or f"give at least {MIN_WORKER_MEMORY / 1e9:g}GB, e.g. 4GB, or auto"
    return (
        f"{what} ({format_bytes(size)} per worker) is below the {MIN_WORKER_MEMORY / 1e9:g} GB "
        "a specfit worker needs (its imports and compiled kernels take ~0.5 GB and dask "
        f"pauses a worker at 80 % of its limit: the run would hang); {fix}"
    )


class ClusterConfig(_Section):
    """Which dask cluster runs the work."""

    kind: Literal["local", "mpi", "address", "synchronous"] = "local"
    address: str | None = Field(None, description="tcp://host:port or a scheduler JSON file.")
    n_workers: int | None = Field(None, ge=1)
    threads_per_worker: int | None = Field(None, ge=1)
    memory_limit: str | None = Field(
        "auto",
        description="Per worker: bytes with a unit ('4GiB', '4 GB'), a fraction of the "
        "machine's memory (0.5), 0 (no limit) or 'auto' (the machine's memory shared between "
        "the workers); at least 1 GB.",
    )
    interface: str | None = Field(None, description="Network interface for mpi, e.g. 'lo'.")
    dashboard: bool = True
    dashboard_address: str = Field(
        "127.0.0.1:8787",
        description="host:port of the dask dashboard (local and mpi clusters). 127.0.0.1 keeps "
        "it on this machine (reach it from elsewhere with an SSH tunnel, see docs/cluster.md); "
        "':8787' listens on every interface. A port in use is replaced by a free one.",
    )
    report: str | None = Field(None, description="Write dask's performance report HTML here.")

    @field_validator("memory_limit", mode="before")
    @classmethod
    def _memory_limit(cls, value: Any) -> Any:
        # a number of bytes or a fraction, as YAML reads it (4000000000, 0.5), is kept as text
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = repr(value)
        if not isinstance(value, str):
            return value  # pydantic says it must be a string
        size = memory_limit_bytes(value)
        if size is not None and size < MIN_WORKER_MEMORY:
            raise ValueError(worker_memory_too_small(f"{value!r}", size))
        return value

    @model_validator(mode="after")
    def _address(self) -> ClusterConfig:
        if self.kind == "address" and not self.address:
            raise ValueError("kind 'address' needs cluster.address (tcp://host:port or a file)")
        return self


class Config(_Section):
    """A whole specfit run."""

    input: InputConfig = Field(default_factory=InputConfig)
    prep: PrepConfig = Field(default_factory=PrepConfig)
    resample: ResampleConfig = Field(default_factory=ResampleConfig)
    spectra: SpectraConfig = Field(default_factory=SpectraConfig)
    fit: FitConfig = Field(default_factory=FitConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


# The default of every setting: functions outside this module that offer a setting as a
# keyword take its default from here (kernels take none), so a default is written once.
DEFAULTS = Config()

# Sections whose values change the numbers in a results store: a resumed run must match them.
SCIENCE_SECTIONS = ("input", "prep", "resample", "spectra", "fit")


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            section_path = [str(p) for p in e["loc"][:-1]]
            allowed = _allowed_keys(section_path)
            msg = f"unknown key; allowed keys here: {', '.join(allowed)}"
        elif e["type"] == "literal_error":
            msg = msg.replace("Input should be", "must be one of")
        lines.append(f"  {key}: {msg} (got {e.get('input')!r})")
    return "\n".join(lines)


def _allowed_keys(section_path: list[str]) -> list[str]:
    model: type[BaseModel] = Config
    for part in section_path:
        field = model.model_fields.get(part)
        if field is None:
            break
        ann = field.annotation
        # Optional[Section] -> Section
        candidates = getattr(ann, "__args__", (ann,))
        sub = next(
            (c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None
        )
        if sub is None:
            break
        model = sub
    return sorted(model.model_fields)


def _yaml_problem(exc: Exception, text: str) -> str:
    """One line for a YAML error in ``text``, after the file's name: where (line and column
    in the file) and what, the construct it was in first with that one's line (PyYAML's own
    text spans 4-8 lines, quoting the source)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    position = getattr(exc, "position", None)
    if (mark is None or not problem) and isinstance(position, int):  # a reader error
        line = text.count("\n", 0, position) + 1
        column = position - (text.rfind("\n", 0, position) + 1) + 1
        reason = getattr(exc, "reason", None) or " ".join(str(exc).split())
        char = getattr(exc, "character", None)
        if isinstance(char, int):
            char = f"#x{char:04x}"
        what = f"{reason}: {char}" if char is not None else reason
        return f", line {line}, column {column}: not valid YAML: {what}"
    if mark is None or not problem:
        return " is not valid YAML: " + " ".join(str(exc).split())
    context = getattr(exc, "context", None)
    where = getattr(exc, "context_mark", None)
    what = problem
    if context:
        at = f" (line {where.line + 1})" if where is not None and where.line != mark.line else ""
        what = f"{context}{at}: {problem}"
    if "'\\t'" in what:  # PyYAML names a tab as its repr
        what += "; indent with spaces, not tabs"
    return f", line {mark.line + 1}, column {mark.column + 1}: not valid YAML: {what}"


def _check_unique_keys(text: str, lines: bool = True) -> None:
    """Refuse a key given twice in one mapping of a YAML text (YAML would keep the last one
    silently: a second ``fit:`` section would replace the first). Checked on the composed
    node tree, before merge keys (``<<``) are expanded, so an override of a merged key is
    not a repetition."""
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    todo, seen_nodes = [root], set()
    while todo:
        node = todo.pop()
        if node is None or id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            found: dict = {}
            for key, value in node.value:
                todo.append(value)
                if key.tag == "tag:yaml.org,2002:merge" or not isinstance(key, yaml.ScalarNode):
                    continue
                k = (key.tag, key.value)
                if k in found:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"key {key.value!r} is given twice"
                        + (f" (lines {found[k]} and {key.start_mark.line + 1})" if lines else "")
                        + "; YAML would keep only the last: merge them",
                        key.start_mark,
                    )
                found[k] = key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            todo.extend(node.value)


def _parse_value(text: str, item: str) -> Any:
    """An override's value as YAML reads it (text that is not YAML stays text); a mapping
    that gives a key twice is refused, as in a config file (YAML keeps the last)."""
    try:
        _check_unique_keys(text, lines=False)
    except yaml.constructor.ConstructorError as exc:
        raise ConfigError(f"--set {item!r}: {exc.problem}") from None
    except yaml.YAMLError:
        return text
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _override_items(overrides: str | list[str] | None) -> list[str]:
    """The ``section.key=value`` overrides as a list (one may come as a plain string:
    iterating it would give one character per override)."""
    return [overrides] if isinstance(overrides, str) else list(overrides or [])


def apply_overrides(data: dict, overrides: list[str] | None) -> dict:
    """Apply ``section.key=value`` overrides to a raw config mapping (returns a copy); one
    override may come as a plain string."""
    data = copy.deepcopy(data) if data else {}
    for item in _override_items(overrides):
        if "=" not in item:
            raise ConfigError(
                f"--set {item!r}: expected section.key=value, e.g. spectra.segments=2"
            )
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        if "" in parts:
            # spectra..segments or fit.models. would otherwise be read as another key
            raise ConfigError(
                f"--set {item!r}: the key {key.strip()!r} has an empty part; write "
                "section.key=value, e.g. spectra.segments=2"
            )
        if len(parts) < 2:
            raise ConfigError(f"--set {item!r}: the key must name a section, e.g. fit.method=lsq")
        node = data
        for p in parts[:-1]:
            if node.get(p) is None:
                node[p] = {}
            if not isinstance(node[p], dict):
                raise ConfigError(f"--set {item!r}: {p} is not a section")
            node = node[p]
        node[parts[-1]] = _parse_value(value, item)
    return data


def load_config(
    source: str | Path | dict | Config | None = None,
    overrides: list[str] | None = None,
) -> Config:
    """Read and validate a configuration.

    Parameters
    ----------
    source
        A YAML file path, a mapping, an existing :class:`Config`, or None for all defaults.
        Relative paths in ``input``/``output`` are resolved against the YAML file's folder;
        symbolic links in ``output.path``/``output.cube_path`` are resolved from any source.
    overrides
        ``section.key=value`` strings applied on top (as ``--set`` on the command line).

    Raises
    ------
    ConfigError
        With one line per bad key, naming it and what is allowed.
    """
    base_dir: Path | None = None
    label = "configuration"
    if isinstance(source, Config):
        data = source.model_dump(mode="json")
    elif source is None:
        data = {}
    elif isinstance(source, dict):
        data = source
    else:
        path = Path(source)
        label = str(path)
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist{_shipped_hint(path)}")
        if path.is_dir():
            raise ConfigError(
                f"{path} is a folder, not a config file; a run takes a YAML config: "
                f"`specfit init {path} --out my.yaml` writes one for the frames in it"
            )
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError(
                f"{path} is not a text (YAML) config file (a FITS or image file?); a run takes "
                "a config: `specfit init FOLDER --out my.yaml` writes one for a folder of frames"
            ) from None
        try:
            _check_unique_keys(text)
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}{_yaml_problem(exc, text)}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
        base_dir = path.resolve().parent
    data = apply_overrides(data, overrides)
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, label)) from None
    given = {item.split("=", 1)[0].strip() for item in _override_items(overrides)}
    _resolve_paths(cfg, base_dir, given)
    for key in ("path", "cube_path"):
        value = getattr(cfg.output, key)
        if value and "://" not in value:
            where = Path(os.path.abspath(os.path.expanduser(value)))
            if where.parent == where:  # "/": a store needs a name (its work folder is beside it)
                raise ConfigError(
                    f"output.{key}: {where} is the filesystem's root; give a store's path, "
                    f"e.g. {where / ('results.zarr' if key == 'path' else 'cube.zarr')}"
                )
    return cfg


def _shipped_hint(path: Path) -> str:
    """For a missing config named like a shipped one (``legacy``, ``aia1600.yaml``, or the
    README's ``configs/aia1600.yaml`` outside a clone): how to get a copy of it."""
    from specfit.examples import list_configs

    name = path.name.removesuffix(".yaml").removesuffix(".yml")
    if path.parent not in (Path("."), Path("configs")) or name not in list_configs():
        return ""
    clone = " (`configs/` is a folder of the clone)" if path.parent == Path("configs") else ""
    return (
        f"; {name!r} is a shipped config{clone}: `specfit config copy {name} .` puts a copy "
        f"here (then `specfit run {name}.yaml`)"
    )


def _no_link_loop(p: str | Path, key: str) -> None:
    """Refuse a path whose symbolic links point at each other (every later step failed on it
    with a RuntimeError traceback)."""
    import errno

    try:  # stat follows every link on the way (resolve() stopped raising on loops in 3.13)
        os.stat(os.path.abspath(os.path.expanduser(str(p))))
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ConfigError(
                f"{key}: {p} is a loop of symbolic links ({exc.strerror}); point it at a real "
                "file or folder"
            ) from None  # a path that does not exist (yet) is the later checks' business


def _resolve_paths(cfg: Config, base: Path | None, given: set[str] = frozenset()) -> None:
    """Make relative paths relative to the config file, so configs work from any cwd; a
    path set on the command line (``given``: the dotted keys of ``--set``) is relative to the
    current directory, where it was typed. ``base`` None: no config file (a mapping or a
    :class:`Config`), whose relative paths stay as given (relative to the current folder).

    ``output.path`` and ``output.cube_path`` are also freed of symbolic links, from any
    source: every later step (the work folder beside the store, its lock, a replacement with
    ``--overwrite``) then sees the real folder, not a link that points at it. The input
    paths (absolute, or relative to a config file) are freed of links in their folders, and
    a link to a folder is followed: the same input given through a link and by its real
    path is one configuration (a resume or a finished store was refused as "input.path
    differs" and "the input changed"). A link to a file keeps its own name, which says the
    file's kind (a content-addressed cache, DVC's or git-annex's, names its files by hash)."""

    def fix(p: str | None, key: str) -> str | None:
        if p is None or "://" in p:
            return p
        q = Path(p).expanduser()
        if not q.is_absolute():
            if base is None:
                _no_link_loop(p, key)  # relative to the current folder, as used
                return p
            q = (Path.cwd() if key in given else base) / q
        _no_link_loop(q, key)
        q = q.parent.resolve() / q.name
        return str(q.resolve() if q.is_dir() else q)

    def real(p: str | None, key: str) -> str | None:
        p = fix(p, key)
        if p is None or "://" in p:
            return p
        if Path(p).is_absolute():
            return str(Path(p).resolve())
        # relative, with no config file: made absolute only where a link is on the way
        return os.path.realpath(p) if os.path.realpath(p) != os.path.abspath(p) else p

    cfg.input.path = fix(cfg.input.path, "input.path")
    cfg.input.times_csv = fix(cfg.input.times_csv, "input.times_csv")
    cfg.input.times = fix(cfg.input.times, "input.times")
    models = cfg.fit.user_models
    cfg.fit.user_models = [fix(m, "fit.user_models") if m.endswith(".py") else m for m in models]
    cfg.output.path = real(cfg.output.path, "output.path")
    cfg.output.cube_path = real(cfg.output.cube_path, "output.cube_path")


def config_diff(a: dict, b: dict, sections: tuple[str, ...] = SCIENCE_SECTIONS) -> list[str]:
    """Dotted keys whose values differ between a stored config ``a`` and a given one ``b``
    (only ``sections``), as ``key: a's value != b's``; a key that only one of them has (a
    setting another specfit version did not have) is said so instead of shown as None."""
    out: list[str] = []
    absent = object()

    def walk(x: Any, y: Any, prefix: str) -> None:
        if isinstance(x, dict) and isinstance(y, dict):
            for k in sorted(set(x) | set(y)):
                walk(x.get(k, absent), y.get(k, absent), f"{prefix}.{k}" if prefix else k)
        elif x is absent:
            out.append(f"{prefix}: not in the stored config (another specfit version), now {y!r}")
        elif y is absent:
            out.append(f"{prefix}: only in the stored config (another specfit version), {x!r}")
        elif x != y:
            out.append(f"{prefix}: {x!r} != {y!r}")

    for s in sections:
        walk(a.get(s, {}), b.get(s, {}), s)
    return out
