"""The dask/xarray face of each kernel: lazy stages on labelled arrays.

Each public function takes and returns dask-backed ``xarray`` objects and adds no numerics of
its own: the work is done per block by the pure kernels in :mod:`specfit.kernels`. Chunk
rules: the time (or frequency) axis is one chunk, space is tiled; a stage that needs
time-contiguous chunks rechunks (and says so) when given per-frame chunks.

The ``*_block`` functions are the same per-block chains, on numpy, shared with
:mod:`specfit.pipeline` (which runs them tile by tile with resumable writes).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

from specfit.kernels import periodogram as _pg
from specfit.kernels import resample as _rs

__all__ = [
    "ingest",
    "resample",
    "power_spectra",
    "fit",
    "resolve_models",
    "spectra_block",
    "fit_block_maps",
]

log = logging.getLogger("specfit")


# ----------------------------------------------------------------------------- ingest
def ingest(source: Any, prep: Any = None, *, data: Any = None) -> xr.DataArray:
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

    Raises
    ------
    InputError
        Bad input (the message names the file or Map and the fix), or ``data`` given
        together with an ``input.path``.
    """
    from specfit.config import Config, InputConfig, PrepConfig
    from specfit.io import InputError, open_input
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
    return arr


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
def resample(
    arr: xr.DataArray, cadence: float | None = None, max_gap: float = 3.0, tile: int | None = None
) -> xr.DataArray:
    """Linearly interpolate every pixel's series onto one uniform cadence.

    Parameters
    ----------
    arr
        (time, y, x) with a ``time`` coordinate in seconds (irregular is fine; NaNs allowed).
    cadence
        Seconds; None = the median frame spacing.
    max_gap
        Gaps longer than this many cadences are logged and listed in ``attrs["gaps"]``.

    Returns
    -------
    xarray.DataArray
        (time, y, x) float32 on ``t0 + k * cadence``; ``attrs["cadence"]`` and ``attrs["gaps"]``.
    """
    times = np.asarray(arr["time"].values, dtype=float)
    new_times = _rs.uniform_times(times, cadence)
    dt = float(new_times[1] - new_times[0])
    gaps = _rs.find_gaps(times, dt, max_gap)
    report_gaps(gaps, dt)
    arr = _time_contiguous(arr, tile)
    data = arr.data
    out = da.map_blocks(
        resample_block,
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
    """Log each long gap (the series is interpolated across it)."""
    for a, b in gaps:
        log.warning(
            "gap of %.0f s (%.1f cadences) between t=%.0f s and t=%.0f s: interpolated linearly",
            b - a,
            (b - a) / dt,
            a,
            b,
        )


def resample_block(block: np.ndarray, times: np.ndarray, new_times: np.ndarray) -> np.ndarray:
    """Interpolate a (nt, ny, nx) block onto ``new_times``: (len(new_times), ny, nx) float32."""
    nt, ny, nx = block.shape
    rows = np.ascontiguousarray(block.reshape(nt, ny * nx).T)
    out = _rs.interp_linear(times, rows, new_times)
    return np.ascontiguousarray(out.T).reshape(new_times.size, ny, nx)


# ----------------------------------------------------------------------------- spectra
def _segment_samples(segment_length: float | None, dt: float) -> int | None:
    """Welch segment length in samples from seconds (config) or None."""
    if segment_length is None:
        return None
    return max(4, int(round(segment_length / dt)))


def periodogram_block(values: np.ndarray, dt: float, **kw) -> tuple[np.ndarray, np.ndarray, dict]:
    """Periodograms of every pixel of a (nt, ny, nx) block: ``freq, power (nf, ny, nx), meta``."""
    nt, ny, nx = values.shape
    rows = np.ascontiguousarray(values.reshape(nt, ny * nx).T)
    freq, power, meta = _pg.periodogram(rows, dt, **kw)
    return freq, np.ascontiguousarray(power.T).reshape(freq.size, ny, nx), meta


def spectra_block(
    values: np.ndarray,
    dt: float,
    box: int = 1,
    halo: tuple[int, int, int, int] = (0, 0, 0, 0),
    **kw,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray, dict]:
    """Power spectra of one uniformly sampled (nt, ny, nx) block, box-averaged, halo trimmed.

    ``halo`` = (top, bottom, left, right) pixels of neighbours included in ``values`` so that
    box averages at the block edge see their full box; they are trimmed from the outputs.

    Returns ``freq, power (nf, ny', nx'), spread or None, dof (ny', nx'), meta``.
    """
    _, ny, nx = values.shape
    freq, power, meta = periodogram_block(values, dt, **kw)
    if box > 1:
        power, spread, count = _pg.box_average(power, box)
    else:
        spread = None
        count = np.isfinite(power).all(axis=0).astype(np.int32)
    t, b, left, r = halo
    ys = slice(t, ny - b)
    xs = slice(left, nx - r)
    power = power[:, ys, xs]
    spread = None if spread is None else spread[:, ys, xs]
    dof = (meta["dof"] * np.maximum(count[ys, xs], 1)).astype(np.float32)
    return freq, power.astype(np.float32), spread, dof, meta


def power_spectra(
    arr: xr.DataArray,
    segments: int = 1,
    segment_length: float | None = None,
    overlap: float = 0.0,
    window: str = "none",
    detrend: str = "mean",
    normalisation: str = "density",
    box: int = 1,
    fmin: float | None = None,
    fmax: float | None = None,
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
        (freq, y, x) float32; ``attrs`` hold ``segments``, ``box``, ``dof`` (chi^2 degrees of
        freedom of one spectrum before box averaging: ``2 K`` or Welch's equivalent) and the
        settings. A per-pixel ``dof`` coordinate (y, x) gives the value after box averaging.
    """
    times = np.asarray(arr["time"].values, dtype=float)
    dt = float(np.median(np.diff(times)))
    if not np.allclose(np.diff(times), dt, rtol=1e-6, atol=1e-9):
        raise ValueError("power_spectra needs a uniform cadence: call specfit.resample first")
    kw = dict(
        segments=segments,
        segment_length=_segment_samples(segment_length, dt),
        overlap=overlap,
        window=window,
        detrend=detrend,
        normalisation=normalisation,
        fmin=fmin,
        fmax=fmax,
    )
    freq, _, meta = _pg.periodogram(np.zeros((1, times.size)), dt, **kw)
    arr = _time_contiguous(arr)
    data = arr.data
    nf = freq.size
    h = box // 2

    def raw(block: np.ndarray) -> np.ndarray:
        return periodogram_block(block, dt, **kw)[1]

    pw = da.map_blocks(
        raw, data, chunks=((nf,), *data.chunks[1:]), dtype=np.float32, meta=np.array((), np.float32)
    )
    sigma = None
    if box > 1:
        # Box averaging needs neighbours: an overlap of box//2 px, truncated at the image edge.
        def boxed(block: np.ndarray, which: int) -> np.ndarray:
            mean, spread, count = _pg.box_average(block, box)
            if which == 0:
                return mean
            if which == 1:
                return spread
            return np.broadcast_to(count[None].astype(np.float32), block.shape).copy()

        parts = [
            da.map_overlap(
                boxed,
                pw,
                depth={0: 0, 1: h, 2: h},
                boundary="none",
                dtype=np.float32,
                meta=np.array((), np.float32),
                which=i,
            )
            for i in range(3)
        ]
        pw, sigma, count = parts
        count2d = count[0]
    else:
        count2d = da.isfinite(pw).all(axis=0).astype(np.float32)
    dof = (count2d.clip(1, None) * meta["dof"]).astype(np.float32)
    coords = {k: v for k, v in arr.coords.items() if "time" not in v.dims}
    coords["freq"] = ("freq", freq, {"units": "Hz"})
    coords["dof"] = (("y", "x"), dof, {"long_name": "chi-square dof of each power value"})
    attrs = {
        **{k: v for k, v in arr.attrs.items() if k not in ("gaps",)},
        **{k: meta[k] for k in meta if k in ("segments", "segment_length", "dof", "dt")},
        "window": window,
        "detrend": detrend,
        "normalisation": normalisation,
        "box": box,
        "units": _power_units(arr.attrs.get("bunit"), normalisation),
    }
    dims = ("freq", "y", "x")
    power = xr.DataArray(pw, dims=dims, coords=coords, name="power", attrs=attrs)
    if not with_sigma:
        return power
    if sigma is None:
        raise ValueError("with_sigma=True needs box > 1 (the spread is taken across the box)")
    sig = xr.DataArray(sigma, dims=dims, coords=coords, name="power_sigma", attrs=attrs)
    return power, sig


def _power_units(bunit: str | None, normalisation: str) -> str:
    b = bunit or "intensity"
    return {"density": f"({b})^2/Hz", "variance": "1/Hz", "raw": f"({b})^2"}[normalisation]


# ----------------------------------------------------------------------------- fit
def resolve_models(models: Mapping[str, Any] | None, user_models=(), bounds=None) -> dict[str, Any]:
    """alias -> Model from names (or Model objects), after loading user model files."""
    from specfit import models as M

    if user_models:
        M.load_user_models(list(user_models))
    if models is None:
        models = {"m1": "powerlaw_tail", "m2": "powerlaw_tail_lorentzian"}
    out = {}
    for alias, m in models.items():
        model = M.get_model(m) if isinstance(m, str) else m
        if bounds and model.name in bounds:
            model = model.with_bounds(dict(bounds[model.name]))
        out[alias] = model
    return out


def models_attr(models: Mapping[str, Any]) -> str:
    """The ``models`` attr of a results store: JSON {alias: {name, formula, params, units, ...}}."""
    from specfit.kernels.fitting import model_attrs

    info = model_attrs(models)["models"]
    return json.dumps({a: {**m, "params": m["param_names"]} for a, m in info.items()})


def likelihood_dof(dof, method: str, window: str, segment_length: int):
    """The dof handed to the fit: the marginal chi^2 dof, divided for ``whittle`` by the
    window's bin-correlation variance inflation (see ``kernels.periodogram.window_vif``), so
    that errors and likelihood-ratio tests stay calibrated with tapered windows."""
    if method != "whittle" or window == "none":
        return dof
    return dof / _pg.window_vif(window, int(segment_length))


def fit_block_maps(
    freq: np.ndarray,
    power: np.ndarray,
    models: Mapping[str, Any],
    method: str,
    dof: np.ndarray | float,
    sigma: np.ndarray | None,
    options: Mapping[str, Any],
) -> dict[str, np.ndarray]:
    """Fit a (nf, ny, nx) block; returns {variable: (ny, nx)} maps (the kernel on pixel rows)."""
    from specfit.kernels.fitting import fit_block

    nf, ny, nx = power.shape
    rows = np.ascontiguousarray(power.reshape(nf, ny * nx).T, dtype=np.float64)
    srows = None
    if sigma is not None:
        srows = np.ascontiguousarray(sigma.reshape(nf, ny * nx).T, dtype=np.float64)
    d = np.broadcast_to(np.asarray(dof, dtype=float), (ny, nx)).reshape(-1)
    res = fit_block(freq, rows, models, method=method, dof=d, sigma=srows, **options)
    return {k: np.asarray(v).reshape(ny, nx) for k, v in res.items()}


FIT_OPTION_KEYS = ("max_iter", "tol", "multistart", "best_model", "alpha")


def fit(
    power: xr.DataArray,
    models: Mapping[str, Any] | None = None,
    method: str = "whittle",
    dof: float | xr.DataArray | None = None,
    sigma: xr.DataArray | None = None,
    user_models: list[str] | tuple = (),
    bounds: Mapping[str, Mapping[str, tuple[float, float]]] | None = None,
    **options: Any,
) -> xr.Dataset:
    """Fit spectral models to every pixel's spectrum, lazily, tile by tile.

    Parameters
    ----------
    power
        (freq, y, x) power from :func:`power_spectra` (any chunking; frequency is made one chunk).
    models
        alias -> model name (or :class:`specfit.models.Model`); default
        ``{"m1": "powerlaw_tail", "m2": "powerlaw_tail_lorentzian"}``.
    method
        ``whittle`` (default), ``lsq_log`` or ``lsq`` (needs ``sigma``).
    dof
        chi^2 degrees of freedom of each power value; default the ``dof`` coordinate of
        ``power`` (set by :func:`power_spectra`), else ``power.attrs["dof"]``, else 2.
    **options
        ``max_iter``, ``tol``, ``multistart``, ``best_model`` (lrt|aic|bic|ftest|chi2), ``alpha``.

    Returns
    -------
    xarray.Dataset
        The results-contract variables (``m1_index``, ``m1_index_err``, ``m1_status``, ...).
    """
    from specfit.config import FitConfig
    from specfit.kernels.fitting import STATUS_CODES, result_variables

    bad = set(options) - set(FIT_OPTION_KEYS)
    if bad:
        raise TypeError(f"unknown fit option(s) {sorted(bad)}; allowed: {FIT_OPTION_KEYS}")
    defaults = FitConfig()  # one set of defaults for the config and the Python API
    options = {**{k: getattr(defaults, k) for k in FIT_OPTION_KEYS}, **options}
    mods = resolve_models(models, user_models, bounds)
    if method == "lsq" and sigma is None:
        raise ValueError(
            "method='lsq' needs sigma (e.g. power_spectra(..., box=3, with_sigma=True))"
        )
    spec = result_variables(mods, method=method, best_model=options.get("best_model", "lrt"))
    names = list(spec)
    freq = np.asarray(power["freq"].values, dtype=float)
    from specfit.models import check_output

    for m in mods.values():
        check_output(m, freq)  # a wrong-shaped user model fails here, not in every tile
    pw = power.transpose("freq", "y", "x").chunk({"freq": -1})
    if dof is None:
        dof = power.coords["dof"] if "dof" in power.coords else float(power.attrs.get("dof", 2.0))
        if "window" in power.attrs and "segment_length" in power.attrs:
            dof = likelihood_dof(dof, method, power.attrs["window"], power.attrs["segment_length"])
    dof_arr = (
        dof.transpose("y", "x").chunk(dict(zip(("y", "x"), pw.chunks[1:], strict=True))).data
        if isinstance(dof, xr.DataArray)
        else da.full(pw.shape[1:], float(dof), chunks=pw.chunks[1:])
    )
    args = [pw.data, dof_arr]
    if sigma is not None:
        args.append(sigma.transpose("freq", "y", "x").chunk(pw.chunks).data)

    def kernel(p, d, s=None):
        maps = fit_block_maps(freq, p, mods, method, d, s, options)
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
    out.attrs["models"] = models_attr(mods)
    out.attrs["status_codes"] = json.dumps({str(k): v for k, v in STATUS_CODES.items()})
    out.attrs["method"] = method
    if "wcs_header" in power.attrs:
        from specfit.export import field_wcs_header

        # The WCS of this (y, x) grid, so the maps go to FITS and sunpy as a store's do.
        wcs_header = field_wcs_header(power)
        if wcs_header is not None:
            out.attrs["wcs_header"] = wcs_header
    return out
