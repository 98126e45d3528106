"""config -> ingest -> cube.zarr -> (resample -> spectra -> fit) per tile -> results.zarr.

Two passes over the data:

1. **ingest**: frames are read lazily (a few per task), preprocessed, and written once to
   ``cube.zarr`` with chunks ``(time_chunk, tile, tile)``: the per-frame to per-tile rechunk,
   staged so that one task never holds more than ``time_chunk`` frames.
2. **tiles**: one task per spatial tile reads its whole time series (plus a halo of
   ``box // 2`` px for box averaging) from ``cube.zarr``, runs THE tile chain
   (:func:`specfit.kernels.tile.run_tile`), and writes every result variable for that tile into
   ``results.zarr`` (its own Zarr chunks), marking the tile done last. Memory per task is
   set by the tile size, never by the cube size; a killed run resumes with the tiles not
   yet marked done (``--resume``), and the store is marked complete only when all are in.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import sys
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from specfit._version import __version__
from specfit.config import SCIENCE_SECTIONS, Config, OutputConfig, config_diff, load_config
from specfit.errors import ConfigError, InputError, RunError, StoreError, disk_full
from specfit.store import (
    StoreLayout,
    code_sha256,
    config_hash,
    done_tiles,
    finalise_store,
    is_complete,
    open_results,
    plots_folder,
    prepare_store,
    store_attrs,
    write_tile,
)
from specfit.workspace import (
    check_paths,
    check_report_path,
    default_cube_path,
    describe_change,
    discard_new_work_dir,
    first_missing,
    foreign_entries,
    glob_base,
    input_fingerprint,
    is_empty_dir,
    is_specfit_cube,
    lrt_cache_dir,
    refuse_foreign_entries,
    refuse_foreign_store,
    remove_specfit_cube,
    remove_specfit_tree,
    work_dir_for,
)

__all__ = ["run", "RunPlan", "plan_run", "cube_path_for"]

log = logging.getLogger("specfit")


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cube_path_for(cfg: Config) -> Path:
    """Where the uniform-tiled cube goes: ``output.cube_path``, or ``cube.zarr`` in the work
    folder specfit owns beside the results (``<output.path>.specfit-work/cube.zarr``), so that
    it can never land on a file of the user's."""
    if cfg.output.cube_path:
        return Path(cfg.output.cube_path)
    return default_cube_path(cfg.output.path)


def _science(cfg: Config) -> dict:
    """The config sections results depend on, and the code of its user model files: a store
    is reused (resumed, or found finished) only for the same."""
    from specfit.models import user_models_digest

    d = cfg.model_dump(mode="json")
    science = {k: d[k] for k in SCIENCE_SECTIONS}
    if cfg.fit.user_models:  # under fit, where config_diff names it when it changed
        science["fit"]["user_models_sha256"] = user_models_digest(cfg.fit.user_models)
    return science


# ----------------------------------------------------------------------------- planning
@dataclass(frozen=True)
class RunPlan:
    """What planning found, before anything is written: :func:`plan_run`'s result.

    Attributes
    ----------
    arr
        The lazy preprocessed (time, y, x) cube.
    times, new_times, dt
        Frame times, the uniform grid and its cadence (s).
    gaps
        (start, end) times of gaps longer than ``resample.max_gap`` cadences.
    nyquist_keep
        :func:`specfit.kernels.resample.interpolation_nyquist_gain` of the grid.
    freq
        The frequency grid of the spectra (Hz).
    meta
        The periodogram's ``segments``, ``segment_length`` (samples), ``dof``, ``window``.
    spectra
        The periodogram's keyword arguments (``segment_length`` in samples).
    models
        alias -> model, bounds applied.
    """

    arr: Any
    times: np.ndarray
    new_times: np.ndarray
    dt: float
    gaps: list
    nyquist_keep: float
    freq: np.ndarray
    meta: dict
    spectra: dict
    models: dict

    @property
    def shape(self) -> tuple[int, int, int]:
        """(frames, y, x) of the cube."""
        return self.arr.sizes["time"], self.arr.sizes["y"], self.arr.sizes["x"]


@dataclass
class TilePlan:
    """Everything a tile task needs besides its indices (picklable; sent to every worker).

    The models travel by name (and user files, bounds) and are resolved once per worker
    process into the tile chain's :class:`specfit.kernels.tile.TileSpec`.
    """

    cube_path: str
    results_path: str
    ny: int
    nx: int
    tile: int
    times: np.ndarray
    new_times: np.ndarray
    dt: float
    spectra: dict
    box: int
    models: dict[str, str]
    user_models: list[str]
    bounds: dict
    method: str
    fit_options: dict
    run_key: str | None = None
    box_dof: str = "auto"


def _check_store_target(
    cfg: Config, overwrite: bool, resume: bool, fingerprint: dict | None = None
) -> str:
    """Decide what to do with an existing results store: 'new', 'resume' or 'done'.

    Raises if unsafe: a folder that is not a specfit store is never replaced (not even with
    ``--overwrite``), and a finished or unfinished store is reused only for the same science
    config and unchanged inputs (``fingerprint``, see :func:`specfit.workspace.input_fingerprint`).
    """
    path = Path(cfg.output.path)
    if not path.exists() or is_empty_dir(path):
        return "new"
    refuse_foreign_store(path)
    if overwrite:
        refuse_foreign_entries(path, "--overwrite")  # before any work: it would delete them
        return "new"
    names = _array_names(path)
    if not is_complete(path) and not {"tiles_done", "blocks_done"} & names:
        # cut off while being created (killed, disk full): no tile can have been written,
        # so there is nothing to resume or lose; made anew (its user files still refused)
        refuse_foreign_entries(path, "output.path")
        log.warning("%s was cut off while it was being created; making it anew", path)
        return "new"
    attrs = store_attrs(path)
    old = json.loads(attrs.get("config_json", "{}"))
    diff = config_diff(old, _science(cfg))
    old_fp = json.loads(attrs["input_fingerprint"]) if attrs.get("input_fingerprint") else None
    changed = describe_change(old_fp, fingerprint) if fingerprint else None
    if is_complete(path):
        if resume and not diff and not changed:
            return "done"
        raise StoreError(
            f"{path} already holds a finished run; pass --overwrite to replace it"
            + (f" (its config differs: {'; '.join(diff)})" if diff else "")
            + (f" ({changed} since it was written)" if changed else "")
        )
    if not resume:
        if diff or changed:  # --resume would be refused too: say why, and what will do
            why = f"its config differs: {'; '.join(diff)}" if diff else f"{changed} since"
            raise StoreError(
                f"{path} holds an unfinished run of other settings or data ({why}); "
                "--resume finishes it only with the config and inputs that started it: pass "
                "--overwrite to start again with these, or choose another output.path"
            )
        raise StoreError(
            f"{path} holds an unfinished run; pass --resume to finish it or --overwrite to "
            "start again"
        )
    if diff:
        versions = any("another specfit version" in d for d in diff)
        raise StoreError(
            f"refusing to resume {path}: it was started with a different configuration "
            f"({'; '.join(diff)}). "
            + (
                "Finish it with the specfit that started it, or start again with --overwrite"
                if versions
                else "Use the same config, or --overwrite"
            )
        )
    if old_fp is None or "tiles_run" not in names:
        raise StoreError(
            f"refusing to resume {path}: it has no record of its inputs (an earlier specfit "
            "wrote it); start again with --overwrite"
        )
    if attrs.get("specfit_code_sha256") != code_sha256():
        # its finished tiles were computed by other code: finishing it with this one would
        # give maps whose tiles differ in how they were made
        was = str(attrs.get("specfit_code_sha256") or "not recorded")[:12]
        raise StoreError(
            f"refusing to resume {path}: it was started by other specfit code (specfit "
            f"{attrs.get('specfit_version', '?')}, sources {was}; these are "
            f"{code_sha256()[:12]}); finish it with the specfit that started it, or start "
            "again with --overwrite"
        )
    if changed:
        # Its finished tiles describe the old inputs: mixing them with new ones would give
        # maps of neither. Redoing everything is --overwrite's job, said explicitly.
        raise StoreError(
            f"refusing to resume {path}: {changed} since it was started, so its finished tiles "
            "describe other data; start again with --overwrite"
        )
    return "resume"


def _check_cube_target(cfg: Config, fingerprint: dict | None) -> None:
    """Before any work: specfit's cube may be rewritten (out of date) or removed at the end
    (``output.keep_cube: false``), but not while it holds files specfit did not write."""
    cube = cube_path_for(cfg)
    for c in (cube, cube.with_name(cube.name + ".partial")):
        if not (is_specfit_cube(c) and foreign_entries(c)):
            continue
        current = c == cube and _cube_is_current(c, _science(cfg), fingerprint)[0]
        if not current or not cfg.output.keep_cube:
            refuse_foreign_entries(c, "output.cube_path" if cfg.output.cube_path else "output.path")


def _array_names(path: Path) -> set[str]:
    return {p.name for p in path.iterdir() if (p / "zarr.json").exists()}


def _prepare_input(cfg: Config) -> Config:
    """Make built-in synthetic frames when asked, and point the reader at them."""
    if cfg.input.kind != "synthetic":
        return cfg
    from specfit.synthetic import make_synthetic

    if not cfg.input.path:
        raise ConfigError("input.path: a folder where the synthetic frames are written is needed")
    s = cfg.input.synthetic
    try:
        data = make_synthetic(
            cfg.input.path,
            shape=tuple(s.shape),
            n_frames=s.n_frames,
            cadence=s.cadence,
            seed=s.seed,
        )
    except FileExistsError as exc:
        raise ConfigError(f"input.path: {exc}") from None
    cfg = cfg.model_copy(deep=True)
    cfg.input.kind = "fits_series"
    cfg.input.path = str(data.frames)
    cfg.input.pattern = "synth_*.fits"
    return cfg


def _check_input_named(cfg: Config) -> None:
    """input.path set and naming something that exists, checked before the results store:
    an unset or mistyped path was reported as a config that differs from a finished store's
    (``input.path: '/data/aia' != None``). Raises InputError naming the key."""
    from specfit.errors import missing_input
    from specfit.io import input_path_set

    path = cfg.input.path
    if cfg.input.kind == "synthetic" or (path and "://" in path):
        return
    input_path_set(path)
    if not Path(glob_base(path)).expanduser().exists():
        raise missing_input("input.path", glob_base(path))


def _check_fit_settings(cfg: Config) -> dict:
    """The fit section's checks that need no data (model names, user models, intervals, lsq
    weights); returns the resolved models. Raises ConfigError naming the key."""
    from specfit.kernels.fitting import check_intervals, output_dtypes
    from specfit.stages import resolve_models

    try:
        models = resolve_models(cfg.fit.models, cfg.fit.user_models, cfg.fit.bounds)
    except (KeyError, ImportError, FileNotFoundError, ValueError) as exc:
        msg = str(exc)  # a message that names its key already is not prefixed again
        raise ConfigError(
            msg if msg.startswith("fit.") else f"fit.models / fit.user_models: {msg}"
        ) from exc
    try:
        check_intervals(models, cfg.fit.intervals, cfg.fit.optimizer)
        # every map name once (two aliases could name one map), as the store will name them
        output_dtypes(models, cfg.fit.method, cfg.fit.best_model, cfg.fit.intervals)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if cfg.fit.weights == "dlogf" and cfg.fit.method != "lsq":
        # found by the first tile's fit, after the cube was written (config reviewer)
        raise ConfigError(
            f"fit.weights=dlogf weights least squares, but fit.method is {cfg.fit.method}: set "
            "fit.method=lsq, or drop fit.weights"
        )
    if cfg.fit.method == "lsq" and cfg.fit.weights == "sigma" and cfg.spectra.box < 2:
        raise ConfigError(
            "fit.method=lsq weights by the spread across the box: set spectra.box to 3 or more "
            "(or use fit.method=whittle, or fit.weights=dlogf)"
        )
    return models


def _refuse_pointing_jump(arr: Any) -> None:
    """Without derotation every pixel's series is read at fixed pixel positions: frames
    whose pointing jumps far beyond solar rotation (another field, a re-pointing) would be
    fitted as one series (a folder of two fields ran to the end without a word)."""
    from specfit.stages import pointing_jump_message

    msg = pointing_jump_message(arr)
    if msg is not None:
        raise InputError(
            f"{msg}; keep one field's frames (input.pattern, input.max_frames), or set "
            "prep.derotate: true to align the frames by their WCS"
        )


def plan_run(cfg: Config, data: Any = None) -> RunPlan:
    """Validate everything that can be checked before work starts; returns the :class:`RunPlan`.

    ``data``: sunpy objects in memory read instead of ``input.path`` (see :func:`run`).
    Raises a clear error naming the config key on any inconsistency.
    """
    from specfit.kernels import periodogram as pg
    from specfit.kernels import resample as rs
    from specfit.kernels.periodogram import segment_samples
    from specfit.stages import check_float32_range, ingest, uniform_grid

    models = _check_fit_settings(cfg)
    arr = ingest(cfg, data=data, check_pointing=False)  # refused below, after max_frames
    if cfg.input.max_frames:
        arr = arr.isel(time=slice(0, cfg.input.max_frames))
    n_read = arr.sizes["time"]
    arr, end_frames = _trim_empty_ends(arr)
    if not cfg.prep.derotate:
        _refuse_pointing_jump(arr)
    times = np.asarray(arr["time"].values, dtype=float)
    if times.size < 8:
        cut = (
            f" (input.max_frames={cfg.input.max_frames} keeps the first {n_read})"
            if cfg.input.max_frames
            else ""
        )
        if times.size < n_read:
            cut += (
                f" (of {n_read} frames, {n_read - times.size} at the ends of the series hold no "
                "finite pixel)"
            )
        raise ConfigError(
            f"input: only {times.size} frame{'' if times.size == 1 else 's'} found{cut}; at "
            "least 8 are needed"
        )
    _, ny, nx = arr.shape
    if cfg.spectra.box > min(ny, nx):
        edge = min(ny, nx)
        raise ConfigError(
            f"spectra.box={cfg.spectra.box} is larger than the image ({ny} x {nx} px): every "
            f"box would hold the whole field; choose a box of at most {edge - (edge + 1) % 2} px"
        )
    new_times = uniform_grid(times, cfg.resample.cadence, arr.attrs.get("files"))
    dt = float(new_times[1] - new_times[0])
    if cfg.spectra.normalisation != "variance":
        for which, frame in zip(("first", "last"), end_frames, strict=True):
            check_float32_range(frame, dt, new_times.size, which)
    gaps = rs.find_gaps(times, dt, cfg.resample.max_gap)
    nyquist_keep = rs.interpolation_nyquist_gain(times, new_times)
    sp = cfg.spectra
    try:
        spectra_kw = dict(
            segments=sp.segments,
            segment_length=segment_samples(sp.segment_length, dt),
            overlap=sp.overlap,
            window=sp.window,
            detrend=sp.detrend,
            normalisation=sp.normalisation,
            fmin=sp.fmin,
            fmax=sp.fmax,
        )
        freq, _, meta = pg.periodogram(np.zeros((1, new_times.size)), dt, **spectra_kw)
    except ValueError as exc:
        raise ConfigError(f"spectra: {exc}") from exc
    _warn_unused_samples(new_times.size, dt, spectra_kw)
    from specfit.models import check_bounds_on, check_output, frequencies_needed

    for alias, model in models.items():
        try:
            check_bounds_on(model, freq)
            check_output(model, freq)
        except ValueError as exc:
            raise ConfigError(f"fit.models.{alias}: {exc}") from None
    if cfg.fit.optimizer == "original":
        from specfit.kernels.original import check_original, original_unit

        try:
            check_original(models, cfg.fit.method, cfg.fit.weights, freq)
            original_unit(sp.normalisation, dt, meta["segment_length"])
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    need = frequencies_needed(models.values())
    if freq.size < need:
        # only advice that applies: one whole segment and no range left the series itself
        fixes = []
        if sp.segments > 1 or sp.segment_length:
            fixes.append("fewer or longer segments")
        whole = {**spectra_kw, "fmin": None, "fmax": None}
        unclipped, _, _ = pg.periodogram(np.zeros((1, new_times.size)), dt, **whole)
        if unclipped.size > freq.size:  # the range cut some: a wider one gives them back
            fixes.append("a wider frequency range (spectra.fmin, spectra.fmax)")
        if times.size > 1 and dt > 1.5 * float(np.median(np.diff(times))):
            fixes.append(f"a finer resample.cadence than {dt:.6g} s (the frames' is finer)")
        if not fixes:
            cut = " (input.max_frames cuts it)" if cfg.input.max_frames else ""
            fixes.append(
                f"a longer series: {new_times.size} samples at {dt:.6g} s give "
                f"{freq.size} frequencies{cut}"
            )
        raise ConfigError(
            f"spectra: only {freq.size} frequencies remain (segments={sp.segments}, "
            f"fmin={sp.fmin}, fmax={sp.fmax}); the models need more than {need - 1}. Use "
            + " or ".join(fixes)
        )
    return RunPlan(
        arr=arr,
        times=times,
        new_times=new_times,
        dt=dt,
        gaps=gaps,
        nyquist_keep=nyquist_keep,
        freq=freq,
        meta=meta,
        spectra=spectra_kw,
        models=models,
    )


# ----------------------------------------------------------------------------- stage 1
def _write_cube(
    arr,
    path: Path,
    tile: int,
    time_chunk: int,
    client,
    science: dict,
    fingerprint: dict | None = None,
    codec: str = OutputConfig.model_fields["cube_codec"].default,
) -> None:
    """Write the preprocessed cube once, rechunked from per-frame to (time_chunk, tile, tile).

    xarray writes the metadata and coordinates; the data go in slabs, each a separate
    computation, so the progress bar counts slabs and a slab's chunks never share a Zarr chunk
    with another slab's. A slab is ``time_chunk`` whole frames, or, where the input is itself
    cut into spatial blocks (a Zarr cube), every frame of one column of blocks
    (:func:`_column_block`): each input chunk is then read by one slab only, where time slabs
    thinner than the input's own time chunks would read each of them again per slab. The
    cube's attrs mark it as specfit's (``specfit_kind``) and record its config hash and input fingerprint; an existing ``path``
    or ``.partial`` folder is replaced only if it is specfit's own cube or empty.
    """
    import dask
    import dask.array as da
    import xarray as xr
    import zarr

    from specfit.cluster import progress

    tmp = path.with_name(path.name + ".partial")
    for old in (tmp, path):
        if old.exists() and not (is_specfit_cube(old) or is_empty_dir(old)):
            raise StoreError(
                f"{old} exists and is not a cube written by specfit; it is left alone: choose "
                "another output.cube_path"
            )
        refuse_foreign_entries(old, "output.cube_path")
    if tmp.exists():
        remove_specfit_tree(tmp)  # specfit's own unfinished cube (checked just above)
    source_chunks = arr.chunks
    source = da.asarray(arr.data)  # the slabs are cut from it (an in-memory array: one chunk)
    # Task-based rechunk unless DASK_ARRAY__RECHUNK__METHOD says otherwise, not the p2p shuffle
    # dask picks on a cluster for big graphs: a slab already fits a worker's memory by
    # construction (auto_time_chunk, _column_block). benchmarks/cube_write.py (its section in
    # benchmarks/README.md): from a Zarr cube no slower than p2p; from FITS frames the two
    # trade places between runs.
    method = dask.config.get("array.rechunk.method", None) or "tasks"
    with dask.config.set({"array.rechunk.method": method}):
        arr = arr.astype("float32").chunk({"time": time_chunk, "y": tile, "x": tile})
    ds = xr.Dataset({"intensity": arr})
    # Small coordinates (exposure per frame, hpc_x/hpc_y per pixel) can be dask-backed: with
    # compute=False to_zarr would defer them into the delayed write that the slabs below
    # replace, leaving them NaN on disk. Computed now, they are written with the metadata.
    lazy = {k: c.compute() for k, c in ds.coords.items() if k != "intensity" and c.chunks}
    if lazy:
        ds = ds.assign_coords(lazy)
    ds.attrs = {k: v for k, v in arr.attrs.items() if isinstance(v, str | int | float | bool)}
    ds.attrs["config_hash"] = config_hash({k: science[k] for k in ("input", "prep")})
    # Written with the first metadata: from then on the folder is recognisably specfit's.
    ds.attrs["specfit_kind"] = "cube"
    ds.attrs["input_fingerprint"] = json.dumps(fingerprint or {})
    for v in ds.variables.values():
        v.encoding = {}
    ds["intensity"].encoding = {"compressors": cube_compressors(codec)}
    # Chunks align by construction; safe_chunks makes xarray refuse any misalignment. With
    # compute=False xarray creates every array and writes the in-memory coordinates now; the
    # returned delayed write of the data is replaced by the slab writes below.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr's note that consolidated metadata is not in v3
        ds.to_zarr(tmp, mode="w", compute=False, safe_chunks=True, consolidated=True)
    target = zarr.open_group(str(tmp), mode="r+")["intensity"]
    data = arr.data
    # The slabs below cut the array every time_chunk frames, bypassing xarray's own check: a
    # Zarr chunk shared by two dask chunks would lose data (see DESIGN.md).
    leading = tuple(c[0] for c in data.chunks)  # time_chunk and tile, capped at the sizes
    if tuple(target.chunks) != leading:
        raise RunError(f"{tmp}: Zarr chunks {target.chunks} do not match dask chunks {leading}")
    nt, ny, nx = data.shape
    block = _column_block(source_chunks, tile, nt, time_chunk, ny, nx)
    if block is None:
        regions = [
            (slice(t0, min(t0 + time_chunk, nt)), slice(None), slice(None))
            for t0 in range(0, nt, time_chunk)
        ]
    else:  # block is a multiple of tile: every region covers whole Zarr chunks
        regions = [
            (slice(None), slice(y0, min(y0 + block, ny)), slice(x0, min(x0 + block, nx)))
            for y0 in range(0, ny, block)
            for x0 in range(0, nx, block)
        ]

    # Built one at a time as they are submitted: the graph of every slab at once grows with
    # the cube and made the scheduler's memory grow with it (1.1 GiB at 1024² x 1200 frames).
    # Each slab is cut from the input before the rechunk (the same values): cut from the
    # rechunked cube instead, every submission carried the whole cube's rechunk graph, so the
    # client's cost per slab grew with the cube (the 1600² ingest waited on it).
    def store(r):
        cut = _slab(source, r, tuple(target.chunks), method)
        return da.store(cut, target, regions=r, lock=False, compute=False)

    slabs = (store(r) for r in regions)
    n_slabs = len(regions)
    if client is not None:
        done = progress(_windowed(client, slabs, 2), total=n_slabs, desc="ingest", unit="slab")
        for fut in done:
            fut.result()  # raise the first failure here, before the cube is renamed
    else:
        for slab in progress(slabs, total=n_slabs, desc="ingest", unit="slab"):
            dask.compute(slab)
    if path.exists():
        if not remove_specfit_cube(path):
            path.rmdir()  # empty (checked above); rmdir refuses anything else
    tmp.rename(path)  # the cube exists only once it is whole


def cube_compressors(codec: str):
    """Zarr compressors for ``cube.zarr`` by ``output.cube_codec`` name.

    ``lz4`` (the default) is Blosc lz4 at level 5 with byte shuffle. On noisy float32 frames
    (``benchmarks/cube_write.py`` on the headline's 256² x 3597 inputs, 2 workers) it wrote
    ``cube.zarr`` in 9-11 s where zarr's default zstd took 16-18 s, at 0.70 of the raw size
    against zstd's 0.50: for a cube written once and read once per run, time matters more.
    ``zstd`` is zarr's own default; ``none`` stores raw bytes.
    """
    from zarr.codecs import BloscCodec, ZstdCodec

    if codec == "lz4":
        return (BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),)
    if codec == "zstd":
        return (ZstdCodec(level=0),)
    if codec == "none":
        return None
    raise ValueError(f"output.cube_codec must be lz4, zstd or none, not {codec!r}")


def _column_block(source_chunks, tile: int, nt: int, time_chunk: int, ny: int, nx: int):
    """Side in px of the square column-of-blocks slabs for :func:`_write_cube`, or None for
    time slabs.

    Columns are used where the input is cut spatially (more than one chunk along y or x) and
    its time chunks are longer than ``time_chunk`` (so a time slab would read each of them
    again): a side that is a multiple of both ``tile`` and the input's spatial chunk, so that
    a column covers whole input chunks and whole ``cube.zarr`` chunks. None where that side
    would hold more than twice the frames x px of a time slab (the memory a slab may take).
    """
    if source_chunks is None:
        return None
    tch, ych, xch = (c[0] for c in source_chunks)
    if len(source_chunks[1]) == 1 and len(source_chunks[2]) == 1:
        return None  # whole frames: time slabs read each input chunk once already
    if tch <= time_chunk and time_chunk % tch == 0:
        return None  # time slabs aligned with the input's time chunks
    side = math.lcm(tile, ych, xch)
    if nt * side * side > 2 * time_chunk * ny * nx:
        return None
    return side


def _slab(source, region, chunks: tuple[int, int, int], method: str):
    """One slab of the cube: ``source[region]`` as float32 in the Zarr array's ``chunks``.

    ``region`` starts at multiples of those chunks (time slabs or columns of whole tiles), so
    every dask chunk is one ``cube.zarr`` chunk; the graph holds the region's part of the
    rechunk only."""
    import dask

    with dask.config.set({"array.rechunk.method": method}):
        return source[region].astype("float32").rechunk(chunks)


def _windowed(client, delayeds, window: int):
    """Compute delayed objects on the cluster, at most ``window`` at a time; yield each
    finished future. The scheduler then holds the graphs of a few slabs, never the cube's."""
    from distributed import as_completed

    pending = as_completed()
    for d in delayeds:
        if pending.count() >= window:
            yield next(pending)
        pending.add(client.compute(d))
    yield from pending


def _cube_is_current(
    path: Path, science: dict, fingerprint: dict | None = None
) -> tuple[bool, str | None]:
    """(reusable, why not): a cube is reused only if specfit wrote it from the same input and
    prep settings and the same inputs (``fingerprint``)."""
    import zarr

    if not (path / "zarr.json").exists():
        return False, None
    try:
        attrs = dict(zarr.open_group(str(path), mode="r").attrs)
    except Exception:
        return False, "it cannot be read"
    if attrs.get("specfit_kind") != "cube":
        return False, "it has no specfit marker"
    if attrs.get("config_hash") != config_hash({k: science[k] for k in ("input", "prep")}):
        return False, "the input or prep settings changed"
    if fingerprint is not None:
        try:
            old = json.loads(attrs.get("input_fingerprint") or "null")
        except ValueError:
            old = None
        if not old:
            return False, "it has no record of its inputs"
        changed = describe_change(old, fingerprint)
        if changed:
            return False, changed
    return True, None


# ----------------------------------------------------------------------------- stage 2
# Cached: resolving anew per tile would reload user-model files and recompile their kernels.
_MODELS: dict[str, dict] = {}


def tile_spec(plan: TilePlan) -> Any:
    """The plan's :class:`specfit.kernels.tile.TileSpec`; its models are resolved once per
    process: loading a user-model file again for every tile would make new function objects,
    which the solver compiles anew."""
    from specfit.kernels.tile import TileSpec
    from specfit.models import user_models_digest
    from specfit.stages import resolve_models

    # the files' content too: a process that serves several runs (the synchronous scheduler,
    # an external cluster's workers) loads a user's edited model file again
    code = user_models_digest(plan.user_models) if plan.user_models else {}
    key = json.dumps([plan.models, plan.user_models, plan.bounds, code], sort_keys=True)
    if key not in _MODELS:
        _MODELS[key] = resolve_models(plan.models, plan.user_models, plan.bounds)
    models = _MODELS[key]
    return TileSpec(
        times=plan.times,
        new_times=plan.new_times,
        dt=plan.dt,
        spectra=plan.spectra,
        box=plan.box,
        models=models,
        method=plan.method,
        fit_options=plan.fit_options,
        box_dof=plan.box_dof,
    )


def process_tile(plan: TilePlan, ty: int, tx: int) -> np.ndarray:
    """Run THE tile chain (:func:`specfit.kernels.tile.run_tile`) on one tile read from
    ``cube.zarr`` with its halo, and write it to the results store.

    Returns, per frame, how many of the tile's own pixels are finite and how many jump away
    from their neighbouring samples ((2, nt) counts; :func:`specfit.kernels.resample.
    frame_jumps`), so that the client can name the frames that are empty or damaged
    everywhere, from data already read.
    """
    import zarr

    from specfit.kernels.tile import run_tile

    t, h = plan.tile, plan.box // 2
    y0, y1 = ty * t, min((ty + 1) * t, plan.ny)
    x0, x1 = tx * t, min((tx + 1) * t, plan.nx)
    ya, yb = max(0, y0 - h), min(plan.ny, y1 + h)
    xa, xb = max(0, x0 - h), min(plan.nx, x1 + h)
    cube = zarr.open_group(plan.cube_path, mode="r")["intensity"]
    vals = np.asarray(cube[:, ya:yb, xa:xb], dtype=np.float32)
    data = run_tile(vals, tile_spec(plan), halo=(y0 - ya, yb - y1, x0 - xa, xb - x1))
    counts = data.pop("frame_counts")
    write_tile(plan.results_path, ty, tx, t, data, run_key=plan.run_key)
    return counts


def _layout(
    cfg: Config,
    plan: RunPlan,
    tile: int,
    cube_path: Path,
    fingerprint: dict | None = None,
) -> StoreLayout:
    """The results store's layout, all of it from the contract in :mod:`specfit.store`."""
    from specfit.store import (
        DOF_ATTRS,
        NO_UNIT,
        field_variables,
        fit_attrs,
        fit_variables,
        power_units,
        spectra_attrs,
        spectral_variables,
    )

    arr = plan.arr
    _, ny, nx = plan.shape
    bunit = arr.attrs.get("bunit") or NO_UNIT  # the readers' unit of the values themselves
    pu = power_units(bunit, cfg.spectra.normalisation)
    variables = fit_variables(
        plan.models,
        cfg.fit.method,
        cfg.fit.best_model,
        pu,
        cfg.fit.nonnested,
        intervals=cfg.fit.intervals,
    )
    # Field-wide significance maps: declared now, written by finalise_store from the whole field
    f = cfg.fit
    variables.update(field_variables(variables, f.best_model, f.alpha, f.fdr_q, f.global_level))
    variables["dof"] = {"dtype": np.dtype("float32"), "attrs": dict(DOF_ATTRS)}
    variables["mean_intensity"] = {
        "dtype": np.dtype("float32"),
        "attrs": {"long_name": "mean intensity over time", "units": bunit},
    }
    variables["longest_gap"] = {
        "dtype": np.dtype("float32"),
        "attrs": {
            "long_name": "longest stretch of the pixel's series bridged by interpolation",
            "units": "s",
            "description": "the longest time between two consecutive finite samples of the "
            "pixel: the frame spacing where the pixel is complete, more where its own samples "
            "are missing; a straight line there has no power at high frequencies. With box "
            "averaging, the longest of the box's pixels that enter its mean; NaN where no "
            "spectrum enters",
        },
    }
    spectral = spectral_variables(pu, cfg.spectra.box)
    for v in spectral.values():
        v["attrs"]["coordinates"] = "dof"  # so that ds["power"] carries what a refit needs
    coords2d = {}
    for c in ("hpc_x", "hpc_y"):
        if c in arr.coords:
            coords2d[c] = np.asarray(arr[c].values, dtype=float)
    sp = cfg.spectra
    spectra = spectra_attrs(
        segments=plan.meta["segments"],
        segment_length=plan.meta["segment_length"],
        overlap=sp.overlap,
        window=sp.window,
        detrend=sp.detrend,
        normalisation=sp.normalisation,
        dof_per_spectrum=plan.meta["dof"],
        box=sp.box,
        cadence=plan.dt,
        box_dof=sp.box_dof,
    )
    for v in spectral.values():
        v["attrs"].update(spectra)
    science = _science(cfg)
    attrs = {
        "config": cfg.to_yaml(),
        "config_json": json.dumps(science),
        "config_hash": config_hash(science),
        "input_fingerprint": json.dumps(fingerprint or {}),
        "run_key": run_key(science, fingerprint),
        "specfit_version": __version__,
        "specfit_code_sha256": code_sha256(),
        **fit_attrs(plan.models, cfg.fit.method, pu, spectra, cfg.fit.model_dump()),
        "cube_path": str(cube_path) if cfg.output.keep_cube else "",
        "start_time": str(arr.attrs.get("start_time", "")),
        "n_frames": int(plan.times.size),
        "gaps": json.dumps([list(g) for g in plan.gaps]),
        "interpolation_nyquist_gain": round(plan.nyquist_keep, 4),
        "source": str(arr.attrs.get("source", cfg.input.path)),
    }
    if arr.attrs.get("time_note"):
        # relative times only: start_time is nominal, and the store says so (info, export)
        attrs["time_note"] = str(arr.attrs["time_note"])
    from specfit.export import field_wcs_header, wcs_origin

    wcs_header = field_wcs_header(arr)
    if wcs_header is not None:
        # The WCS of the results grid (derotation reference frame and time), so that maps go
        # back to FITS and sunpy (specfit export, specfit.to_map), also from a slice of them.
        attrs["wcs_header"] = wcs_header
        attrs["wcs_origin"] = wcs_origin(arr)
    return StoreLayout(
        ny, nx, plan.freq, tile, variables, spectral, coords2d, attrs,
        ys=arr["y"].values, xs=arr["x"].values,
    )  # fmt: skip


def run_key(science: dict, fingerprint: dict | None) -> str:
    """What a tile is written under: the science config and the inputs' fingerprint."""
    return config_hash({"science": science, "inputs": (fingerprint or {}).get("hash")})


def fit_options(cfg: Config) -> dict:
    """The solver options a run hands to :func:`specfit.kernels.fitting.fit_block`."""
    from specfit.stages import FIT_OPTION_KEYS  # the one list of solver options

    return {k: getattr(cfg.fit, k) for k in FIT_OPTION_KEYS}


def _choose_sizes(cfg: Config, plan: RunPlan, client) -> tuple[int, int]:
    from specfit.cluster import auto_tile, auto_time_chunk, total_threads, worker_memory_bytes

    arr = plan.arr
    nt, ny, nx = plan.shape
    mem = worker_memory_bytes(client)
    tile = cfg.output.tile or auto_tile(
        ny,
        nx,
        max(nt, plan.new_times.size),
        mem,
        len(plan.models),
        min_tasks=2 * total_threads(client),
    )
    # a tile larger than the field is the field: larger, each (tile, tile) chunk of the store
    # (power: nf x tile x tile) would be allocated whole (tile 100000 asked for 37 GiB)
    tile = min(tile, max(ny, nx))
    tchunks = arr.chunksizes.get("time", ()) if arr.chunks is not None else ()
    source_chunk = int(tchunks[0]) if len(tchunks) > 1 else None
    time_chunk = cfg.output.time_chunk or auto_time_chunk(
        ny, nx, mem, nt=nt, source_chunk=source_chunk
    )
    return tile, time_chunk


# ----------------------------------------------------------------------------- run
def run(
    config: Any = None,
    overrides: list[str] | None = None,
    *,
    overwrite: bool = False,
    resume: bool = False,
    cluster: str | None = None,
    report: str | None = None,
    data: Any = None,
):
    """Run the whole pipeline and return the results Dataset (lazy, from ``results.zarr``).

    Parameters
    ----------
    config
        A YAML path, a mapping or a :class:`specfit.config.Config`.
    overrides
        ``section.key=value`` strings (as ``--set``).
    overwrite
        Replace an existing results store (only a specfit store or an empty folder is ever
        replaced).
    resume
        Continue an unfinished run with the same science config and unchanged input files
        (only missing tiles run).
    cluster
        ``local``, ``mpi``, ``synchronous``, ``tcp://host:port`` or a scheduler file; overrides
        the config's ``cluster`` section.
    report
        Write dask's performance report (HTML) here.
    data
        Frames already in memory: a ``sunpy.map.MapSequence``, a list of Maps or an
        ``ndcube.NDCube`` with a time axis, read with the config's ``input`` settings
        (exposure key, normalisation, missing values) instead of ``input.path``, which must
        be unset. The stored config records ``input.kind: memory``; the cube and a resume
        are reused only for the same data (their ``input_fingerprint``).

    Raises
    ------
    ConfigError
        Before any cluster starts or anything is written, for outputs that would touch an
        input or a folder specfit did not make, or cannot be created.
    StoreError
        If another run holds the store's lock, or the store cannot be used as asked (finished,
        unfinished, other config or other inputs).
    """
    from specfit.cluster import (
        check_reachable,
        cluster_config_from_flag,
        refuse_in_worker_start,
        start_mpi,
    )
    from specfit.store import StoreLock

    refuse_in_worker_start()  # a script without a __main__ guard, re-imported by a worker
    cfg = load_config(config, overrides)
    if data is not None:
        if cfg.input.path or cfg.input.kind not in ("auto", "memory"):
            raise ConfigError(
                f"input.path {cfg.input.path!r} / input.kind {cfg.input.kind!r} given together "
                "with data=; the frames come from one place: drop input.path from the config"
            )
        # The config stays plain YAML (it is stored with the results); the objects ride beside.
        cfg.input.kind = "memory"
    if cluster:
        cfg.cluster = cluster_config_from_flag(cluster, cfg.cluster)
    # Under mpiexec only rank 1 (the client) goes on from here: the scheduler and worker ranks
    # serve inside this call, so no rank but one ever writes inputs or reads every header.
    start_mpi(cfg.cluster)
    check_reachable(cfg.cluster)  # a wrong scheduler address fails now, not after the inputs
    # Every output path against every input, before any cluster starts or anything is written.
    check_paths(cfg, cube_path_for(cfg))
    check_report_path(cfg, report or cfg.cluster.report)
    fingerprint = input_fingerprint(cfg, data)
    # One writer per store: the lock is taken before the store is looked at or written. A cube
    # of the user's choosing may be shared by runs on other stores: it gets a lock of its own.
    cube_lock = (
        StoreLock(
            cfg.output.cube_path, "output.cube_path ", "is in use (written, or read for a fit)"
        )
        if cfg.output.cube_path
        else contextlib.nullcontext()
    )
    # Folders this call creates (work folders and their parents): removed again if the run is
    # refused before it writes anything (and only then; see discard_new_work_dir)
    targets = [cfg.output.path] + ([cfg.output.cube_path] if cfg.output.cube_path else [])
    created = [(t, first_missing(work_dir_for(t))) for t in targets]
    held = False  # only a run that held the store's lock tidies up (never another run's folder)
    try:
        with StoreLock(cfg.output.path):
            # held from here: a refusal at a shared cube's lock (another run uses the cube)
            # removes the work folder this run made for its store (a reviewer found it left)
            held = True
            from specfit.store import InputFolderLock

            synthetic = (
                InputFolderLock(cfg.input.path)
                if cfg.input.kind == "synthetic" and cfg.input.path
                else contextlib.nullcontext()
            )
            with cube_lock, synthetic, warnings.catch_warnings():
                if data is not None:
                    # frames in memory travel inside the task graph by design: dask's advice
                    # to scatter them or load them in the tasks ("Sending large graph of size
                    # ...") is not for the user, who gave them as objects
                    warnings.filterwarnings("ignore", "Sending large graph", UserWarning)
                return _run_locked(cfg, fingerprint, overwrite, resume, report, data)
    except BaseException:
        if held:
            for t, made in created:
                discard_new_work_dir(t, made)
        raise


def _run_locked(
    cfg: Config, fingerprint: dict, overwrite: bool, resume: bool, report, data: Any = None
):
    """The body of :func:`run`, under the store's lock: plan -> cube -> tiles -> finalise."""
    from specfit.cluster import connect, performance_report

    results_path = Path(cfg.output.path)
    t_start = time.perf_counter()
    # Everything that can be checked is checked before any cluster starts or data is read: a
    # mistyped model first, so that it is not reported as a config that differs from the store's
    _check_fit_settings(cfg)
    if data is None:
        _check_input_named(cfg)
    action = _check_store_target(cfg, overwrite, resume, fingerprint)
    _check_cube_target(cfg, fingerprint)
    if action == "done":
        _say(f"{results_path} is already complete; nothing to do")
        if cfg.output.plots and not plots_folder(results_path).exists():
            _plot(results_path)  # asked for now (not a science setting): it was said nowhere
        return open_results(results_path)
    plan = plan_run(_prepare_input(cfg), data=data)
    _describe_plan(cfg, plan)
    # An empty folder the user made for output.cube_path stays when the cube is dropped. A
    # note in the cube's work folder keeps that fact for a resumed run (the folder then
    # holds the cube the interrupted run began).
    user_dir = False
    if cfg.output.cube_path:
        note = _user_folder_note(cfg)
        if is_empty_dir(cube_path_for(cfg)):
            note.write_text("output.cube_path was an empty folder before specfit wrote the cube\n")
        user_dir = note.exists()
    with connect(cfg.cluster) as client, performance_report(report or cfg.cluster.report):
        tile, time_chunk = _choose_sizes(cfg, plan, client)
        if action == "resume":
            stored = int(store_attrs(results_path).get("tile_size", tile))
            if cfg.output.tile and cfg.output.tile != stored:
                log.warning(
                    "output.tile=%d is not used: a resumed store keeps the tiles it was started "
                    "with (%d px); start again with --overwrite to change them",
                    cfg.output.tile,
                    stored,
                )
            tile = stored
        t_cube = _cube(cfg, plan, tile, time_chunk, client, fingerprint)
        tiles_s, todo, _ = _tiles(cfg, plan, tile, action, client, fingerprint)
    _report_pixel_gaps(results_path, plan, cfg.resample.max_gap)
    timings = {"cube_s": t_cube, "tiles_s": tiles_s, "tiles_run": todo}
    _finalise(cfg, timings, t_start, keep_folder=user_dir)
    if cfg.output.plots:
        _plot(results_path)
    return open_results(results_path)


def _plot(results_path: Path) -> None:
    """``output.plots``: the maps as ``specfit plot`` draws them, beside the store (the key
    was accepted and did nothing)."""
    out = plots_folder(results_path)
    try:
        from specfit.viz import plot_results

        files = plot_results(results_path, out)
    except Exception as exc:  # the results are complete: a plot failure does not undo them
        log.warning(
            "output.plots: no plots (%s); the results are complete: draw them with "
            "`specfit plot %s --out DIR`",
            exc,
            results_path,
        )
        return
    _say(f"output.plots: {len(files)} files in {out}")


def _describe_plan(cfg: Config, plan: RunPlan) -> None:
    """Say what will run, and warn about what would bias the results."""
    from specfit.stages import report_gaps

    nt, ny, nx = plan.shape
    _say(
        f"specfit {__version__}: {nt} frames of {ny} x {nx} px (y by x) from "
        f"{plan.arr.attrs.get('source', '?')}"
    )
    _say(
        f"  cadence {plan.dt:.3g} s -> {plan.new_times.size} samples; "
        f"{plan.freq.size} frequencies {plan.freq[0]:.3g}-{plan.freq[-1]:.3g} Hz; "
        f"{len(plan.gaps)} gap(s) > {cfg.resample.max_gap:g} cadences"
    )
    report_gaps(plan.gaps, plan.dt)
    from specfit.stages import gap_share_warning

    span = float(plan.new_times[-1] - plan.new_times[0]) if plan.new_times.size > 1 else 0.0
    much = gap_share_warning(plan.gaps, span)
    if much:
        log.warning(much)
    if cfg.spectra.box > 1 and cfg.fit.method != "lsq" and cfg.spectra.box_dof == "nominal":
        log.warning(
            "spectra.box=%d with spectra.box_dof=nominal: the dof assume the %d pixels of a box "
            "are independent; on real images neighbours are correlated (AIA 1600, box 3: about "
            "4 of 9 independent), so %s errors are too small and model tests too liberal. "
            "Use spectra.box_dof=auto (the default)",
            cfg.spectra.box,
            cfg.spectra.box**2,
            cfg.fit.method,
        )
    from specfit.kernels.tile import bin_layout, bin_rho

    if cfg.fit.method == "lsq" and bin_rho(*bin_layout(plan.meta)).size:
        log.warning(
            "fit.method=lsq with correlated frequency bins (spectra.window=%s, overlap %g): "
            "lsq's parameter errors treat the bins as independent and come out too small; "
            "fit.method=whittle (the default) or lsq_log account for the correlation",
            cfg.spectra.window,
            cfg.spectra.overlap,
        )
    _refuse_exposure_mismatches(plan.arr, cfg.input.exposure_check)
    from specfit.stages import coarse_cadence_warning

    coarse = coarse_cadence_warning(plan.times, plan.dt, chosen=cfg.resample.cadence is None)
    if coarse:
        log.warning(coarse)
    if plan.nyquist_keep < 0.9:
        steps = np.diff(plan.times)
        long_step = float(np.percentile(steps, 90)) if steps.size else plan.dt
        advice = "set resample.cadence to the instrument's nominal cadence"
        if long_step > 1.3 * plan.dt:
            # frames whose spacing alternates (IRIS SJI: 18.7 and 37.5 s) have no single
            # cadence: only the frequencies below the long steps' Nyquist are free of it
            advice = (
                f"{advice}, or, where the frames' spacing alternates (here up to "
                f"{long_step:.3g} s), keep the frequencies below its Nyquist frequency with "
                f"spectra.fmax: {0.5 / long_step:.3g}"
            )
        log.warning(
            "linear interpolation onto a %.4g s grid keeps only %.0f%% of white-noise power at the "
            "Nyquist frequency (the grid drifts against the frame times), which biases the fitted "
            "tail low; %s",
            plan.dt,
            100 * plan.nyquist_keep,
            advice,
        )


def _cube(
    cfg: Config, plan: RunPlan, tile: int, time_chunk: int, client, fingerprint: dict
) -> float:
    """Stage 1: write ``cube.zarr`` (or reuse a current one); returns the seconds it took."""
    t0 = time.perf_counter()
    cube_path = cube_path_for(cfg)
    science = _science(cfg)
    current, why = _cube_is_current(cube_path, science, fingerprint)
    if current:
        _say(f"  reusing {cube_path}")
    else:
        if why:
            _say(f"  {cube_path} is out of date ({why}); writing it again")
        _say(f"  writing {cube_path} (chunks {time_chunk} frames x {tile} x {tile} px)")
        _write_cube(
            plan.arr,
            cube_path,
            tile,
            time_chunk,
            client,
            science,
            fingerprint,
            codec=cfg.output.cube_codec,
        )
    return time.perf_counter() - t0


def _tiles(
    cfg: Config, plan: RunPlan, tile: int, action: str, client, fingerprint: dict
) -> tuple[float, int, int]:
    """Stage 2: run every tile not yet done; returns (seconds, tiles run, tiles in all).

    Raises :class:`RunError` if a tile failed (the others are written and kept).
    """
    from specfit.cluster import progress

    t0 = time.perf_counter()
    results_path = Path(cfg.output.path)
    cube_path = cube_path_for(cfg)
    layout = _layout(cfg, plan, tile, cube_path, fingerprint)
    if action == "new":
        prepare_store(results_path, layout)
    done = done_tiles(results_path)
    todo = [
        (ty, tx) for ty in range(done.shape[0]) for tx in range(done.shape[1]) if not done[ty, tx]
    ]
    _say(
        f"  fitting {len(plan.models)} model(s) by {cfg.fit.method} in "
        f"{done.size} tile(s) of {tile} px ({done.size - len(todo)} already done)"
    )
    _, ny, nx = plan.shape
    tplan = TilePlan(
        cube_path=str(cube_path),
        results_path=str(results_path),
        ny=ny,
        nx=nx,
        tile=tile,
        times=plan.times,
        new_times=plan.new_times,
        dt=plan.dt,
        spectra=plan.spectra,
        box=cfg.spectra.box,
        models=dict(cfg.fit.models),
        user_models=list(cfg.fit.user_models),
        bounds={k: dict(v) for k, v in cfg.fit.bounds.items()},
        method=cfg.fit.method,
        # LRT references are shared through the work folder (not science: values never depend
        # on where they are cached)
        fit_options={**fit_options(cfg), "lrt_cache": str(lrt_cache_dir(results_path))},
        run_key=layout.attrs["run_key"],
        box_dof=cfg.spectra.box_dof,
    )
    failures, counts = _run_tiles(tplan, todo, client, progress)
    if not failures and len(todo) == done.size:
        # Only a run of every tile sees whole frames (a resumed one sees some tiles).
        _report_empty_frames(np.flatnonzero(counts[0] == 0), plan.arr)
        _report_jumping_frames(counts, plan.arr, plan.gaps)
    if failures:
        ty, tx, err = failures[0]
        full = next(filter(None, (disk_full(e) for _, _, e in failures)), None)
        if full is not None:
            # a full disk while tiles are written: the cause and the fix once, naming the file
            where = f" writing {full.filename}" if full.filename else ""
            raise RunError(
                f"{len(failures)} of {len(todo)} tile(s) failed: {full.strerror or full}{where}. "
                f"Everything else is saved in {results_path}; free space (or raise the limit), "
                "then run again with --resume"
            )
        raise RunError(
            f"{len(failures)} of {len(todo)} tile(s) failed (first: tile ({ty}, {tx}): "
            f"{err!r}). Everything else is saved in {results_path}; fix the cause and run "
            "again with --resume"
        )
    return time.perf_counter() - t0, len(todo), done.size


def _user_folder_note(cfg: Config) -> Path:
    """The note (in the cube's work folder) that ``output.cube_path`` was the user's empty
    folder before the cube was written into it: kept across a resume, read by _finalise."""
    return work_dir_for(cube_path_for(cfg)) / "cube-folder-was-the-users"


def _finalise(cfg: Config, timings: dict, t_start: float, keep_folder: bool = False) -> None:
    """Mark the store complete with this invocation's timings; drop a cube not to be kept
    (leaving its folder, empty, where ``keep_folder``: the user made it)."""
    results_path = Path(cfg.output.path)
    elapsed = time.perf_counter() - t_start
    # Seconds of this (last) invocation: a resumed run reports only its own share.
    timings = {**timings, "total_s": elapsed}
    finalise_store(
        results_path,
        {"elapsed_s": round(elapsed, 2), "timings": {k: round(v, 2) for k, v in timings.items()}},
    )
    if not cfg.output.keep_cube:
        # only ever a cube specfit wrote (its marker)
        if remove_specfit_cube(cube_path_for(cfg)) and keep_folder:
            cube_path_for(cfg).mkdir()
    if cfg.output.cube_path:
        _user_folder_note(cfg).unlink(missing_ok=True)
    _say(f"  wrote {results_path} in {time.perf_counter() - t_start:.1f} s")


def _the_plan(plan: TilePlan) -> TilePlan:
    """The task that holds the tile plan on the cluster (see :func:`_plan_on_cluster`)."""
    return plan


def _plan_on_cluster(client, plan: TilePlan):
    """The tile plan as a cluster task that every tile depends on.

    A task, not scattered data: if the worker holding the plan dies (killed, lost, out of
    memory), the scheduler recomputes it from the task itself, where scattered data would be
    lost for good and fail every tile still waiting for it.
    """
    return client.submit(_the_plan, plan, key=f"plan-{uuid.uuid4().hex}", pure=False)


def _run_tiles(plan: TilePlan, todo: list, client, progress) -> tuple[list, np.ndarray]:
    """Run every tile; a failing tile is reported and the others go on.

    Returns the failures and, per frame, the counts of finite and of jumping pixels summed
    over the tiles run ((2, nt), :func:`process_tile`).
    """
    failures = []
    counts = np.zeros((2, plan.times.size), dtype=np.int64)
    if not todo:
        return failures, counts
    if client is None:
        for ty, tx in progress(todo, total=len(todo), desc="tiles", unit="tile"):
            try:
                counts += process_tile(plan, ty, tx)
            except Exception as exc:  # a bug or I/O fault in one tile must not lose the rest
                full = disk_full(exc)
                if full is None:
                    log.exception("tile (%d, %d) failed", ty, tx)
                else:  # the same cause for every tile: the summary below says it once
                    log.error("tile (%d, %d) failed: %s", ty, tx, full)
                failures.append((ty, tx, exc.with_traceback(None)))  # not the tile's arrays
        return failures, counts
    plan_f = _plan_on_cluster(client, plan)
    futures = [
        client.submit(
            process_tile, plan_f, ty, tx, key=f"tile-{ty}-{tx}-{plan.results_path}", pure=False
        )
        for ty, tx in todo
    ]
    index = {f.key: (ty, tx) for f, (ty, tx) in zip(futures, todo, strict=True)}
    for fut in progress(futures, total=len(futures), desc="tiles", unit="tile"):
        if fut.status == "error":
            ty, tx = index[fut.key]
            failures.append((ty, tx, fut.exception()))
        else:
            counts += fut.result()
        fut.release()
    return failures, counts


# what a frame without one finite pixel is (clean_frames makes each of these NaN)
_EMPTY_FRAME = "all NaN, all zero, beyond float32's range or missing"


def _report_pixel_gaps(results_path: Path, plan: RunPlan, max_gap: float) -> None:
    """Warn about fitted pixels whose spectra bridge a longer stretch than the frames' own.

    Gaps between frames are reported before the run (:func:`_describe_plan`), frames empty
    everywhere after it (:func:`_report_empty_frames`); this is the rest: pixels missing over
    a stretch that the field's other pixels have. Read from the store's ``longest_gap`` map
    (absent in stores of earlier versions: no warning).
    """
    import zarr

    group = zarr.open_group(results_path, mode="r")
    if "longest_gap" not in group:
        return
    gap = np.asarray(group["longest_gap"][...], dtype=float)
    # longest_gap is NaN where no spectrum enters; a pixel not fitted for another reason
    # (nonfinite_input from its sigma: lsq with one pixel in its box) has nothing biased either
    from specfit.kernels.fitting import STATUS_CODES

    unfitted = next(k for k, v in STATUS_CODES.items() if v.startswith("nonfinite_input"))
    status = sorted(k for k in group.array_keys() if k.endswith("_status"))
    if status:
        gap[np.asarray(group[status[0]][...]) == unfitted] = np.nan
    if not np.isfinite(gap).any():
        return
    # what a complete pixel bridges: the longest spacing of the frames that hold data (a frame
    # empty everywhere is a gap of the field, reported on its own)
    field = float(np.nanmin(gap))
    limit = max(max_gap * plan.dt, field) * (1 + 1e-6)
    with np.errstate(invalid="ignore"):
        long = gap > limit
    n = int(long.sum())
    if n == 0:
        return
    iy, ix = np.unravel_index(int(np.nanargmax(np.where(long, gap, -np.inf))), gap.shape)
    y = int(group["y"][iy]) if "y" in group else int(iy)
    x = int(group["x"][ix]) if "x" in group else int(ix)
    log.warning(
        "%d pixel(s) miss samples of their own over more than %.1f cadences (longer than "
        "the frames' own longest spacing, %.0f s; longest %.0f s = %.0f cadences, at pixel "
        "y=%d, x=%d). "
        "Interpolation bridges those stretches with straight lines, which have no power at "
        "high frequencies, so those pixels' spectra and fits are biased there: see the map "
        "longest_gap (seconds) and mask where it is large",
        n,
        max(max_gap, field / plan.dt),
        field,
        gap[iy, ix],
        gap[iy, ix] / plan.dt,
        y,
        x,
    )


_EMPTY_ENDS_MAX = 20  # frames read one by one at each end of the series, looking for data
_EMPTY_ENDS_BLOCK = 64  # beyond them, frames checked per lazy reduction (bounded memory)


def _trim_empty_ends(arr) -> tuple[Any, tuple[np.ndarray, np.ndarray]]:
    """The series without the frames at its start and end that hold no finite pixel (a
    dropout: all NaN, or all zero, which the readers mark as missing), with a warning, and
    the values of the series' first and last frames (read here, and checked by
    :func:`specfit.stages.check_float32_range`).

    Inside the series such a frame is interpolated across, like a gap; at an end nothing
    lies beyond it, so every pixel's series would start (or end) with a missing sample and
    no pixel could be fitted. The first :data:`_EMPTY_ENDS_MAX` frames at each end are read
    one by one; where all of them are empty (a long dropout), the scan goes on in blocks of
    :data:`_EMPTY_ENDS_BLOCK` frames, each reduced lazily to one flag per frame. A series
    with no frame holding data is refused (InputError): there is nothing to fit.
    """
    nt = arr.sizes["time"]
    read: dict[int, np.ndarray] = {}

    def frame(k: int) -> np.ndarray:
        if k not in read:
            read[k] = np.asarray(arr.isel(time=k).values)
        return read[k]

    def empty(k: int) -> bool:
        return not np.isfinite(frame(k)).any()

    def leading(frames: range) -> int | None:
        """How many of ``frames`` are empty before the first with data (None if none has)."""
        for n, k in enumerate(frames[:_EMPTY_ENDS_MAX]):
            if not empty(k):
                return n
        for n in range(_EMPTY_ENDS_MAX, len(frames), _EMPTY_ENDS_BLOCK):
            block = frames[n : n + _EMPTY_ENDS_BLOCK]
            lo, hi = min(block[0], block[-1]), max(block[0], block[-1])
            has = np.asarray(np.isfinite(arr.isel(time=slice(lo, hi + 1))).any(("y", "x")))
            hits = np.flatnonzero(has if block.step > 0 else has[::-1])
            if hits.size:
                return n + int(hits[0])
        return None

    first = leading(range(nt))
    if first is None:  # no frame has data: nothing to fit, said before any work
        raise InputError(
            f"input: no frame of the {nt} has a finite pixel ({_EMPTY_FRAME}): there is "
            "nothing to fit; check the input files and input.missing_below (values below it "
            "are read as missing)"
        )
    last = nt - leading(range(nt - 1, first - 1, -1))  # frame ``first`` has data
    if first == 0 and last == nt:
        return arr, (frame(0), frame(nt - 1))
    dropped = np.r_[np.arange(first), np.arange(last, nt)]
    log.warning(
        f"%d frame(s) at the %s of the series have no finite pixel ({_EMPTY_FRAME}): %s. "
        "Nothing lies beyond them to interpolate from, so the series is taken to run from "
        "frame %d to frame %d",
        dropped.size,
        " and ".join(w for w, n in (("start", first), ("end", nt - last)) if n),
        _name_frames(dropped, arr, _frame_at),
        first,
        last - 1,
    )
    out = arr.isel(time=slice(first, last))
    files = list(arr.attrs.get("files", []))
    if len(files) == nt:  # per-frame names, indexed like the frames
        out.attrs = {**out.attrs, "files": files[first:last]}
    return out, (frame(first), frame(last - 1))


def _refuse_exposure_mismatches(arr, refuse: bool = True) -> None:
    """Before any work: refuse frames whose listed exposure the data contradict
    (:func:`specfit.stages.exposure_mismatches`) when the run divides by it. Dividing would
    scale them by the exposure ratio against their neighbours, a jump the data do not have,
    which the spectra would then fit as power (IRIS Si IV, docs/data.md)."""
    from specfit.stages import exposure_mismatches

    if not arr.attrs.get("exposure_normalised"):
        return
    found = [m for m in exposure_mismatches(arr) if m["contradicted"]]
    if not found:
        return
    by = {m["frame"]: m for m in found}
    frames = np.array(sorted(by))

    def name(i: int, t: float, file: str | None) -> str:
        m = by[i]
        where = f", {file}" if file else ""
        return (
            f"frame {i} (t={t:.0f} s{where}: exposure {m['exposure_ratio']:.2f}x frame "
            f"{m['reference']}'s, raw level {m['level_ratio']:.2f}x)"
        )

    scale = [1 / m["exposure_ratio"] for m in found]
    said = (
        f"{frames.size} frame(s) hold the raw level of the frames of the usual exposure near "
        f"them, not that of the exposure time listed for them: "
        f"{_name_frames(frames, arr, name, '; ')}. Dividing by the listed exposures "
        f"(input.normalise_exposure) scales them by {min(scale):.2g}-{max(scale):.2g}x "
        "against their neighbours, a jump the data do not have unless the scene brightened "
        "as much as the exposure fell"
    )
    if not refuse:
        log.warning("%s (input.exposure_check: false: divided as listed)", said)
        return
    raise InputError(
        f"{said}, and the spectra would fit it. Leave them out ({_how_to_leave_out(arr)}) or "
        "set input.normalise_exposure: false; where the scene did brighten so (a flare under "
        "automatic exposure control), set input.exposure_check: false"
    )


# A frame is reported when this share of its finite pixels jump (kernels.resample.frame_jumps)
_JUMP_SHARE = 0.05


def _report_jumping_frames(counts: np.ndarray, arr, gaps=()) -> None:
    """Warn about frames in which a large share of the pixels jump away from their
    neighbouring samples: a damaged frame (garbled bytes, a part filled with zeros, a wrong
    exposure) or an event over much of the field. They are fitted as they are. The frames on
    either side of a reported gap (``gaps``: (start, end) seconds) are not named: their
    neighbour across it is far in time, and the Sun changed in between (a probe: two sound
    frames beside a 2 h 40 min gap were called damaged)."""
    finite, jumps = counts
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(finite > 0, jumps / np.maximum(finite, 1), 0.0)
    times = np.asarray(arr["time"].values, dtype=float)
    beside = {int(np.searchsorted(times, t)) for gap in gaps for t in gap}
    bad = np.array(
        [i for i in np.flatnonzero(share >= _JUMP_SHARE) if int(i) not in beside], dtype=int
    )
    if bad.size == 0:
        return

    def name(i: int, t: float, file: str | None) -> str:
        where = f", {file}" if file else ""
        return f"frame {i} (t={t:.0f} s{where}: {100 * share[i]:.0f} %)"

    log.warning(
        "%d frame(s) differ sharply from the frames either side in a large share of their "
        "pixels (more than 10x each pixel's noise): %s. A damaged frame (garbled or "
        "zero-filled data, a wrong exposure) biases every pixel's spectrum: check it, and "
        "unless it shows a real event leave it out (%s)",
        bad.size,
        _name_frames(bad, arr, name, "; "),
        _how_to_leave_out(arr),
    )


def _warn_unused_samples(n: int, dt: float, spectra_kw: dict) -> None:
    """Warn when Welch segments (``spectra.segment_length``) leave a tenth or more of the
    series out: as many segments as fit are used, the rest of the series is in none (a
    probe: 1000 s segments of a 24-minute series used 42 of its 60 samples, silently)."""
    from specfit.kernels.periodogram import segment_layout

    if spectra_kw["segment_length"] is None:
        return  # back-to-back segments of n // K samples: under K samples are left out
    length, step, k = segment_layout(
        n, spectra_kw["segments"], spectra_kw["segment_length"], spectra_kw["overlap"]
    )
    unused = n - ((k - 1) * step + length)
    if unused >= 0.1 * n:
        log.warning(
            "spectra.segment_length: %d segment(s) of %d samples, %d apart, cover %d of the "
            "%d samples; the last %d (%.0f s, %.0f %% of the series) are in no segment. "
            "Choose a segment length that tiles the series (or spectra.segments for "
            "back-to-back segments)",
            k,
            length,
            step,
            n - unused,
            n,
            unused,
            unused * dt,
            100.0 * unused / n,
        )


def _how_to_leave_out(arr) -> str:
    """How the input's kind lets a user leave frames out, for the warnings that name them."""
    if arr.attrs.get("kind") in ("fits_series", "images"):
        return "move its file out of the folder, or narrow input.pattern"
    return (
        "input.max_frames keeps the first N frames; a frame inside one cube or array cannot "
        "be left out otherwise"
    )


def _frame_at(i: int, t: float, file: str | None) -> str:
    """'frame 12 at t=288 s (file.fits)': how the empty-frame warnings name a frame."""
    return f"frame {i} at t={t:.0f} s" + (f" ({file})" if file else "")


def _name_frames(frames: np.ndarray, arr, name, sep: str = ", ") -> str:
    """The first five of ``frames`` (indices) as ``name(index, time, file or None)`` joined
    by ``sep``, and how many more."""
    files = list(arr.attrs.get("files", []))
    times = np.asarray(arr["time"].values, dtype=float)
    known = len(files) >= times.size
    shown = sep.join(
        name(int(i), times[int(i)], files[int(i)] if known else None) for i in frames[:5]
    )
    return shown + (f" and {frames.size - 5} more" if frames.size > 5 else "")


def _report_empty_frames(empty: np.ndarray, arr) -> None:
    """Warn about frames with no finite pixel (all NaN, or masked as missing).

    The resampling treats such a frame as missing: every pixel is interpolated across it
    from the frames either side, as across a gap.
    """
    if empty.size == 0:
        return
    if empty.size == arr.sizes["time"]:
        log.warning(
            f"no frame has a finite pixel ({_EMPTY_FRAME}): there is nothing to fit, every "
            "pixel is NaN with a nonfinite_input status; check the input files and "
            "input.missing_below"
        )
        return

    log.warning(
        f"%d frame(s) have no finite pixel ({_EMPTY_FRAME}): %s. They are treated as "
        "missing: each pixel is interpolated across them from the neighbouring frames",
        empty.size,
        _name_frames(empty, arr, _frame_at),
    )
