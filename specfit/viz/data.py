"""The data side of the viz layer: plain functions from a results Dataset to arrays.

Nothing here imports holoviews, panel or bokeh. The explorer's callbacks and the exporters are
thin wrappers around these functions, so what a click shows can be tested without a browser.
Every function reads lazily: on a dask-backed Dataset only the selected map, pixel or region
is computed.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

__all__ = [
    "AxisInfo",
    "MapSpec",
    "ModelCurves",
    "PixelSpectrum",
    "open_store",
    "model_info",
    "default_map_name",
    "status_codes",
    "map_catalog",
    "axis_info",
    "pixel_index",
    "pixel_origin",
    "map_values",
    "significance_mask",
    "SIGNIFICANCE_MASKS",
    "clip_limits",
    "pixel_spectrum",
    "load_models",
    "pixel_timeseries",
    "power_map",
    "spectral_density",
    "region_from_bounds",
    "map_histogram",
    "open_cube",
    "converged_codes",
]

# Statistics stored per model alias (DESIGN.md results contract) and how to label them.
_STATS = {
    "loglike": "log-likelihood",
    "chi2red": "reduced chi-square",
    "aic": "AIC",
    "bic": "BIC",
    "nfev": "function evaluations",
    "gof_pvalue": "goodness-of-fit p-value",
}
_CATEGORICAL_SUFFIXES = ("_status", "_global")
_CATEGORICAL = {"best_model", "best_model_fdr"}
_PVALUE_VARS = ("lrt_pvalue", "ftest_pvalue")


def _stat_value(v: xr.DataArray) -> float:
    """A pixel's statistic as a float; an integer map's fill -1 (a tile not written yet:
    counts such as nfev are never negative) as NaN, not as a count of -1."""
    value = float(v.values)
    return math.nan if v.dtype.kind in "iu" and value < 0 else value


def open_store(path_or_ds: str | Path | xr.Dataset, allow_incomplete: bool = False) -> xr.Dataset:
    """Open a results store lazily (or pass a Dataset through); ``allow_incomplete``: a run
    still being written too (its tiles not yet written read as missing).

    Raises
    ------
    NotFoundError
        If ``path_or_ds`` is a path that does not exist (a FileNotFoundError).
    """
    if isinstance(path_or_ds, xr.Dataset):
        return path_or_ds
    path = Path(path_or_ds)
    if not path.exists():
        from specfit.errors import NotFoundError

        raise NotFoundError(
            f"results store {path} does not exist; run `specfit run CONFIG` or `specfit demo` first"
        )
    try:
        from specfit.store import open_results  # the contract's own reader, when present
    except ImportError:
        return xr.open_zarr(path)
    return open_results(path, allow_incomplete=allow_incomplete)


def _json_attr(ds: xr.Dataset, key: str) -> dict:
    raw = ds.attrs.get(key)
    if raw is None:
        return {}
    if isinstance(raw, dict):
        return raw
    try:
        return json.loads(raw)
    except (TypeError, ValueError):
        return {}


def model_info(ds: xr.Dataset) -> dict[str, dict[str, Any]]:
    """Fitted models by alias: ``{alias: {"name", "formula", "params"}}``.

    Read from the ``models`` attr; if it is missing, aliases and parameter names are inferred
    from the ``<alias>_status`` and ``<alias>_<param>_err`` variables (names then unknown).
    """
    info = _json_attr(ds, "models")
    if info:
        return {a: dict(v) for a, v in info.items()}
    out: dict[str, dict[str, Any]] = {}
    for name in ds.data_vars:
        if str(name).endswith("_status"):
            alias = str(name)[: -len("_status")]
            params = [
                str(v)[len(alias) + 1 : -4]
                for v in ds.data_vars
                if str(v).startswith(alias + "_") and str(v).endswith("_err")
            ]
            out[alias] = {"name": None, "formula": "", "params": params}
    return out


def status_codes(ds: xr.Dataset, alias: str | None = None) -> dict[int, str]:
    """Status code -> meaning, from the store attrs (or the ``<alias>_status`` attrs)."""
    codes = _json_attr(ds, "status_codes")
    if not codes and alias is not None and f"{alias}_status" in ds:
        raw = ds[f"{alias}_status"].attrs.get("status_codes")
        if raw:
            try:
                codes = json.loads(raw) if isinstance(raw, str) else dict(raw)
            except ValueError:
                codes = {}
    out = {}
    for k, v in codes.items():
        try:
            out[int(k)] = str(v)
        except ValueError:
            continue
    return out


def converged_codes(ds: xr.Dataset, alias: str | None = None) -> list[int]:
    """Status codes whose fits converged: 0, and any code whose meaning says it converged
    (e.g. ``at_bound: converged with a parameter on a bound``) but not ``not converged``."""
    ok = {0}
    for code, text in status_codes(ds, alias).items():
        head = text.lower()
        if "converged" in head and "not converged" not in head:
            ok.add(code)
    return sorted(ok)


@dataclass(frozen=True)
class MapSpec:
    """How one (y, x) map is shown.

    Attributes
    ----------
    name
        The key used by the viz layer: a store variable, or a model's derived output
        (``m2_bump_period`` computed from ``m2_bump_center`` when the store lacks it).
    label
        Human-readable title, with the display transform (e.g. ``log10``).
    units
        Units of the displayed values.
    alias
        The model alias the map belongs to, or None for model-independent maps.
    transform
        ``"none"``, ``"log10"`` or ``"derived"`` (a model's derived output computed from
        the stored parameter ``source``, e.g. the bump period from the centre).
    source
        The store variable the values come from.
    categorical
        Integer codes (status, best model): no percentile clipping, discrete colours.
    """

    name: str
    label: str
    units: str
    alias: str | None
    transform: str
    source: str
    categorical: bool = False


def _units(da: xr.DataArray) -> str:
    return str(da.attrs.get("units", "") or "")


_TESTS = {  # a nested pair's test maps, in the order shown
    "lrt_pvalue": "likelihood-ratio test p-value",
    "lrt_qvalue": "likelihood-ratio test q-value (field-wide FDR)",
    "lrt_global": "likelihood-ratio test significant at the global level",
    "lrt_stat": "likelihood-ratio statistic",
    "ftest_pvalue": "F-test p-value",
    "ftest_qvalue": "F-test q-value (field-wide FDR)",
    "ftest_global": "F-test significant at the global level",
}


def map_catalog(ds: xr.Dataset) -> list[MapSpec]:
    """Every map the store holds, in a readable order, with labels and units.

    Order: for each model alias its parameters (bump centre shown as a period in minutes),
    their uncertainties, the statistics and the status; then model comparison, then the mean
    intensity and any other (y, x) variable.
    """
    specs: list[MapSpec] = []
    seen: set[str] = set()
    models = model_info(ds)

    def add(spec: MapSpec) -> None:
        if spec.name not in seen:
            specs.append(spec)
            seen.add(spec.name)
            seen.add(spec.source)

    from specfit.models import SPECTRUM_UNIT, stored_metadata

    power_units = _units(ds["power"]) if "power" in ds else None
    for alias, info in models.items():
        mname = info.get("name") or alias
        meta = stored_metadata(info)
        derived_by_source = {d["source"]: d for d in meta["derived"] if d.get("source")}
        # parameters in the spectra's unit span decades: shown as log10
        log_params = set(meta["spectrum_unit_params"]) or {
            p
            for p in info.get("params", [])
            if f"{alias}_{p}" in ds
            and _units(ds[f"{alias}_{p}"]) in {SPECTRUM_UNIT, power_units} - {None, ""}
        }
        for p in info.get("params", []):
            var = f"{alias}_{p}"
            if var not in ds:
                continue
            d = derived_by_source.get(p)
            if d is not None:
                # a derived output re-expressing this parameter (the bump period in minutes
                # for a centre in ln Hz) is shown first, computed from it if not stored
                dvar = f"{alias}_{d['name']}"
                label = f"{alias} {d['name'].replace('_', ' ')}"
                if dvar in ds:
                    add(MapSpec(dvar, label, _units(ds[dvar]) or d["unit"], alias, "none", dvar))
                elif _derived_func(info, d["name"]) is not None:
                    add(MapSpec(dvar, label, d["unit"], alias, "derived", var))
            if p in log_params:
                add(
                    MapSpec(
                        var,
                        f"{alias} log10 {p.replace('_', ' ')}",
                        _units(ds[var]),
                        alias,
                        "log10",
                        var,
                    )
                )
            else:
                add(
                    MapSpec(
                        var, f"{alias} {p.replace('_', ' ')}", _units(ds[var]), alias, "none", var
                    )
                )
        for p in info.get("params", []):
            for suffix, what in (("err", "uncertainty"), ("lower", "68% interval, lower end"),
                                 ("upper", "68% interval, upper end")):  # fmt: skip
                var = f"{alias}_{p}_{suffix}"
                if var in ds:
                    label = f"{alias} {p.replace('_', ' ')} {what}"
                    add(MapSpec(var, label, _units(ds[var]), alias, "none", var))
        for s, label in _STATS.items():
            var = f"{alias}_{s}"
            if var in ds and var not in seen:
                add(MapSpec(var, f"{alias} {label} ({mname})", _units(ds[var]), alias, "none", var))
        for d in meta["derived"]:
            var = f"{alias}_{d['name']}"
            if var in ds and var not in seen:
                label = f"{alias} {d['name'].replace('_', ' ')}"
                add(MapSpec(var, label, _units(ds[var]) or d["unit"], alias, "none", var))
        var = f"{alias}_status"
        if var in ds:
            add(MapSpec(var, f"{alias} fit status", "", alias, "none", var, categorical=True))
    # With several nested pairs each pair's test maps carry the bigger model's alias
    # (m2_lrt_pvalue): comparisons, never masked by that model's status or significance.
    smaller = {}
    if "best_model" in ds:
        for pair in str(ds["best_model"].attrs.get("nested_pairs", "")).split():
            a, _, b = pair.partition(":")
            smaller[b] = a
    tests = list(_TESTS.items())
    for big, small in smaller.items():
        tests += [(f"{big}_{var}", f"{big} vs {small}: {label}") for var, label in _TESTS.items()]
    for var, label in (
        ("best_model", "best model"),
        ("best_model_fdr", "best model, field-wide (FDR)"),
        *tests,
        ("mean_intensity", "mean intensity"),
        ("longest_gap", "longest stretch bridged by interpolation"),
    ):
        if var in ds:
            add(
                MapSpec(
                    var,
                    label,
                    _units(ds[var]),
                    None,
                    "none",
                    var,
                    categorical=var in _CATEGORICAL or var.endswith(_CATEGORICAL_SUFFIXES),
                )
            )
    for var in ds.data_vars:
        var = str(var)
        if var in seen or ds[var].dims != ("y", "x"):
            continue
        alias = next((a for a in models if var.startswith(a + "_")), None)
        cat = var in _CATEGORICAL or var.endswith(_CATEGORICAL_SUFFIXES)
        add(
            MapSpec(
                var, var.replace("_", " "), _units(ds[var]), alias, "none", var, categorical=cat
            )
        )
    return specs


def _derived_func(info: dict, name: str):
    """The function of a registered model's derived output ``name``, or None (the model is
    not loaded in this session: nothing is imported to get it)."""
    from specfit import models as registry

    if info.get("name") not in registry.available_models():
        return None
    model = registry.get_model(info["name"])
    return next((d.func for d in model.derived if d.name == name), None)


def default_map_name(ds: xr.Dataset, catalog: Sequence[MapSpec] | None = None) -> str:
    """The map shown first: the first model's parameter with role ``"index"`` (the spectral
    slope) if a model declares one, else the first map."""
    from specfit.models import stored_metadata

    catalog = map_catalog(ds) if catalog is None else catalog
    names = {s.name for s in catalog}
    for alias, info in model_info(ds).items():
        for p, role in stored_metadata(info)["roles"].items():
            if role == "index" and f"{alias}_{p}" in names:
                return f"{alias}_{p}"
    return catalog[0].name


def map_spec(ds: xr.Dataset, name: str) -> MapSpec:
    for s in map_catalog(ds):
        if s.name == name:
            return s
    names = ", ".join(s.name for s in map_catalog(ds))
    raise KeyError(f"no map {name!r} in the results store; available: {names}")


@dataclass(frozen=True)
class AxisInfo:
    """Axes of the maps: pixel indices or helioprojective arcsec (affine in the pixel index).

    ``X = x0 + dx * ix`` and ``Y = y0 + dy * iy``.
    """

    x0: float
    dx: float
    y0: float
    dy: float
    xlabel: str
    ylabel: str
    solar: bool
    nx: int
    ny: int

    def x_coords(self) -> np.ndarray:
        return self.x0 + self.dx * np.arange(self.nx)

    def y_coords(self) -> np.ndarray:
        return self.y0 + self.dy * np.arange(self.ny)


def pixel_origin(ds: xr.Dataset, dim: str) -> int:
    """The pixel number of position 0 along ``dim``: the store's coordinate (the frames'
    pixel, kept through a cutout) when the coordinates are consecutive integers, else 0 (the
    axes, the titles and a click then use array positions alike)."""
    if dim not in ds.coords:
        return 0
    v = np.asarray(ds[dim].values)
    if v.size and np.issubdtype(v.dtype, np.integer) and np.all(np.diff(v) == 1):
        return int(v[0])
    return 0


def axis_info(ds: xr.Dataset, solar: bool = True, tol_px: float = 0.25) -> AxisInfo:
    """Axis mapping for the maps.

    Uses ``hpc_x``/``hpc_y`` when the store has them and they are, to within ``tol_px``
    pixels, a separable affine function of the pixel index (the grid of a derotated
    field with a small roll angle; not IRIS's 0.65 degrees over 110 px). Only the first
    row/column and the far corners are read, so this is cheap on any map size. Otherwise
    pixel indices.
    """
    ny, nx = ds.sizes["y"], ds.sizes["x"]
    x0, y0 = (float(pixel_origin(ds, d)) for d in ("x", "y"))
    pixel = AxisInfo(x0, 1.0, y0, 1.0, "x (px)", "y (px)", False, nx, ny)
    if not solar or "hpc_x" not in ds.coords or "hpc_y" not in ds.coords:
        return pixel
    hx, hy = ds["hpc_x"], ds["hpc_y"]
    row = np.asarray(hx.isel(y=0).values, dtype=float)
    col = np.asarray(hy.isel(x=0).values, dtype=float)
    if nx < 2 or ny < 2 or not (np.all(np.isfinite(row)) and np.all(np.isfinite(col))):
        return pixel
    dx = (row[-1] - row[0]) / (nx - 1)
    dy = (col[-1] - col[0]) / (ny - 1)
    if dx == 0 or dy == 0:
        return pixel
    tol_x, tol_y = tol_px * abs(dx), tol_px * abs(dy)
    lin_x = np.max(np.abs(row - (row[0] + dx * np.arange(nx)))) <= tol_x
    lin_y = np.max(np.abs(col - (col[0] + dy * np.arange(ny)))) <= tol_y
    # A rotated grid would make hpc_x vary along y: check the opposite corner too.
    far_x = float(hx.isel(y=ny - 1, x=nx - 1).values)
    far_y = float(hy.isel(y=ny - 1, x=nx - 1).values)
    sep = abs(far_x - row[-1]) <= tol_x and abs(far_y - col[-1]) <= tol_y
    if not (lin_x and lin_y and sep):
        # e.g. IRIS's roll (0.65 deg moves a corner of 110 px by ~1 px): say why the axes
        # are pixels although the store has coordinates
        return dataclasses.replace(pixel, xlabel="x (px; hpc_x/hpc_y not along the pixel axes)")
    return AxisInfo(
        float(row[0]), float(dx), float(col[0]), float(dy),
        "helioprojective x (arcsec)", "helioprojective y (arcsec)", True, nx, ny,
    )  # fmt: skip


def pixel_index(axes: AxisInfo, X: float, Y: float) -> tuple[int, int] | None:
    """The (iy, ix) pixel under axis position (X, Y), or None outside the map."""
    if X is None or Y is None or not (np.isfinite(X) and np.isfinite(Y)):
        return None
    ix = int(np.floor((X - axes.x0) / axes.dx + 0.5))
    iy = int(np.floor((Y - axes.y0) / axes.dy + 0.5))
    if 0 <= ix < axes.nx and 0 <= iy < axes.ny:
        return iy, ix
    return None


def _pvalue_var(ds: xr.Dataset, alias: str | None = None) -> str | None:
    # with several nested pairs each bigger model has its own test, <alias>_lrt_pvalue
    if alias is not None:
        own = next((f"{alias}_{v}" for v in _PVALUE_VARS if f"{alias}_{v}" in ds), None)
        if own is not None:
            return own
    return next((v for v in _PVALUE_VARS if v in ds), None)


#: The significance masks of :func:`map_values` (``none``: no mask).
SIGNIFICANCE_MASKS = ("none", "pixel", "fdr", "global")


def _test_for(ds: xr.Dataset, alias: str) -> str | None:
    """The p-value map testing ``alias`` against a smaller model: the one whose attrs name it
    as ``alternative_model`` (the best-model rule's test first), else, for stores without
    those attrs, ``lrt_pvalue`` / ``ftest_pvalue`` for every alias but the first."""
    rule = ds["best_model"].attrs.get("rule") if "best_model" in ds else None
    tests = [
        str(v)
        for v in ds.data_vars
        if str(v).endswith("_pvalue") and ds[v].attrs.get("alternative_model") == alias
    ]
    if tests:
        return sorted(tests, key=lambda v: ds[v].attrs.get("test") != rule)[0]
    if any(ds[v].attrs.get("alternative_model") for v in ds.data_vars):
        return None  # the store says which maps test which model: none tests this one
    aliases = list(model_info(ds))
    return _pvalue_var(ds) if aliases and alias != aliases[0] else None


def significance_mask(
    ds: xr.Dataset, alias: str, mode: str, threshold: float | None = None
) -> xr.DataArray | None:
    """Where the richer model ``alias`` is significant under a control (lazy boolean map).

    Parameters
    ----------
    ds
        The results Dataset.
    alias
        A model alias; None is returned for a model no stored test has as its alternative.
    mode
        ``pixel``: its test's p-value <= ``threshold`` (default the run's ``fit.alpha``);
        ``fdr``: its Benjamini-Hochberg q-value (``<test>_qvalue``) <= ``threshold`` (default
        the run's ``fit.fdr_q``); ``global``: its ``<test>_global`` map is 1 (the run's
        ``fit.global_level``; ``threshold`` must be None); ``none``: None.

    Raises
    ------
    ValueError
        For an unknown mode, a threshold with ``global``, or one outside (0, 1].
    specfit.errors.StoreError
        For ``fdr``/``global`` on a store without field-wide maps.
    """
    if mode not in SIGNIFICANCE_MASKS:
        raise ValueError(f"significance mask must be one of {', '.join(SIGNIFICANCE_MASKS)}")
    if threshold is not None and not 0 < threshold <= 1:
        raise ValueError(
            f"the p-value (or q-value) threshold must be in (0, 1], e.g. 0.05; got {threshold}"
        )
    if mode == "none":
        return None
    test = _test_for(ds, alias)
    if test is None:
        return None
    stem = test[: -len("_pvalue")]
    if mode == "pixel":
        q = ds[f"{stem}_qvalue"].attrs if f"{stem}_qvalue" in ds else {}
        thr = float(q.get("alpha", 0.05)) if threshold is None else threshold
        return ds[test] <= thr
    field = f"{stem}_qvalue" if mode == "fdr" else f"{stem}_global"
    if field not in ds:
        from specfit.errors import StoreError

        raise StoreError(
            f"the results store has no {field} map (written by specfit runs since field-wide "
            "significance was added): run it again with --overwrite, or use the pixel mask"
        )
    if mode == "fdr":
        thr = float(ds[field].attrs.get("fdr_q", 0.05)) if threshold is None else threshold
        return ds[field] <= thr
    if threshold is not None:
        raise ValueError(
            f"the global mask uses the run's fit.global_level "
            f"({ds[field].attrs.get('global_level')}); give no p-value threshold with it"
        )
    return ds[field] == 1


def map_values(
    ds: xr.Dataset,
    name: str,
    pvalue_threshold: float | None = None,
    mask_status: bool = True,
    significance: str | None = None,
) -> xr.DataArray:
    """One map, lazily, transformed for display and masked.

    Parameters
    ----------
    ds
        The results Dataset.
    name
        A :func:`map_catalog` name.
    pvalue_threshold
        The threshold of the ``pixel`` or ``fdr`` significance mask (see
        :func:`significance_mask`); given alone, it selects the ``pixel`` mask: hide pixels
        whose model-comparison p-value is above it (the richer model is not significant
        there), as in paramPlot.
    mask_status
        Hide pixels whose fit did not converge (``<alias>_status`` not in
        :func:`converged_codes`).
    significance
        ``none``, ``pixel`` (per-pixel p-value), ``fdr`` (field-wide Benjamini-Hochberg
        q-value) or ``global`` (field-wide global confidence level): hide a richer model's
        maps where its test is not significant under that control. Applies to every model
        that a stored test has as its alternative (the bump models), not to the base model.

    Returns
    -------
    xarray.DataArray
        Float (y, x) with NaN where masked; ``attrs`` hold ``label`` and ``units``.
    """
    from specfit.store import written_pixels

    spec = map_spec(ds, name)
    da = ds[spec.source]
    if spec.categorical:
        out = da.astype("float32")
    elif spec.transform == "log10":
        out = np.log10(da.where(da > 0))
    elif spec.transform == "derived":
        info = model_info(ds)[spec.alias]
        pname = spec.source[len(spec.alias) + 1 :]
        out = _derived_func(info, spec.name[len(spec.alias) + 1 :])({pname: da})
    else:
        out = da.astype("float32") if da.dtype.kind in "iub" else da
    if spec.alias is not None and not spec.categorical:
        if mask_status and f"{spec.alias}_status" in ds:
            out = out.where(ds[f"{spec.alias}_status"].isin(converged_codes(ds, spec.alias)))
        mode = significance or ("pixel" if pvalue_threshold is not None else "none")
        keep = significance_mask(ds, spec.alias, mode, pvalue_threshold)
        if keep is not None:
            out = out.where(keep)
    written = written_pixels(ds)
    if written is not None and written.shape == out.shape:
        # an unfinished store's unwritten tiles: NaN in every map (integer maps read -1 there,
        # which best_model's legend named "none")
        out = out.where(xr.DataArray(written, dims=("y", "x")))
    out = out.drop_vars([c for c in out.coords if c not in ("y", "x")])
    out.name = spec.name
    out.attrs = {"label": spec.label, "units": spec.units}
    return out


def map_title(ds: xr.Dataset, name: str) -> str:
    """A map's title: its label, its unit in brackets, and for a map shown as log10 how many
    pixels hold exactly 0 (a parameter on its lower bound, e.g. the tail of AIA 1600's M1
    fits), which a log scale cannot draw and which would otherwise look like masked pixels.
    Reads the map once for that count (log10 maps only)."""
    spec = map_spec(ds, name)
    title = spec.label + (f" [{spec.units}]" if spec.units not in ("", "1") else "")
    if spec.transform != "log10":
        return title
    zeros = int((ds[spec.source] == 0).sum())
    if zeros == 0:
        return title
    share = 100.0 * zeros / (ds.sizes["y"] * ds.sizes["x"])
    return f"{title}; 0 in {share:.0f} % of pixels ({zeros}), not drawn on a log scale"


def sample_step(values: xr.DataArray | np.ndarray, max_samples: int = 1_000_000) -> int:
    """The stride in y and x at which a (y, x) DataArray is sampled for colour limits and
    histograms (1: every pixel; a numpy array is always read whole)."""
    if not isinstance(values, xr.DataArray):
        return 1
    ny, nx = values.sizes["y"], values.sizes["x"]
    return max(1, int(np.ceil(np.sqrt(ny * nx / max_samples))))


def _finite_sample(values: xr.DataArray | np.ndarray, max_samples: int) -> np.ndarray:
    """The finite values of a map; a lazy (y, x) map is read with a regular stride so that at
    most about ``max_samples`` values are read (one strided read, not the whole map)."""
    if isinstance(values, xr.DataArray):
        step = sample_step(values, max_samples)
        arr = np.asarray(values.isel(y=slice(None, None, step), x=slice(None, None, step)).values)
    else:
        arr = np.asarray(values)
    return arr[np.isfinite(arr)]


def clip_limits(
    values: xr.DataArray | np.ndarray,
    percentiles: tuple[float, float] = (1.0, 99.0),
    max_samples: int = 1_000_000,
) -> tuple[float, float]:
    """Colour limits at the given percentiles of the finite values.

    Large maps are subsampled with a regular stride (at most ``max_samples`` values) so the
    limits cost one strided read, not the whole map. Returns (nan, nan) for an all-NaN map.
    """
    arr = _finite_sample(values, max_samples)
    if arr.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.percentile(arr, percentiles)
    if lo == hi:  # a constant map still needs a non-empty colour range
        lo, hi = lo - 0.5, hi + 0.5
    return float(lo), float(hi)


@dataclass
class ModelCurves:
    """One fitted model at one pixel."""

    alias: str
    name: str | None
    model: np.ndarray | None
    components: dict[str, np.ndarray]
    residual: np.ndarray | None  # data / model
    params: dict[str, tuple[float, float, str]]  # name -> (value, error, units)
    status: int | None
    status_text: str
    stats: dict[str, float]
    error: str | None = None
    # name -> (lower, upper) ends of the 68.3 % profile-likelihood interval (fit.intervals)
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    # name -> units of the statistics and derived values that have one (periods in min)
    stat_units: dict[str, str] = field(default_factory=dict)


@dataclass
class PixelSpectrum:
    """What the explorer shows for one pixel."""

    iy: int
    ix: int
    freq: np.ndarray
    power: np.ndarray
    sigma: np.ndarray | None
    models: dict[str, ModelCurves]
    comparison: dict[str, float]
    hpc: tuple[float, float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # the store's y/x coordinates of the pixel (its row and column in the input frames,
    # kept through a cutout); None: the array positions iy/ix
    y: int | None = None
    x: int | None = None
    units: str = ""  # the spectra's unit (the store's power units attr)

    @property
    def title(self) -> str:
        """Title naming the pixel by the store's x/y, as shown above the spectrum panel."""
        x = self.ix if self.x is None else self.x
        y = self.iy if self.y is None else self.y
        t = f"pixel x={x}, y={y}"
        if self.hpc is not None:
            t += f" ({self.hpc[0]:.1f}\u2033, {self.hpc[1]:.1f}\u2033)"
        return t


def load_models(paths: Sequence[str]) -> list[str]:
    """Load the user model files (or modules) a store's curves need, by the caller's choice.

    Opening, summarising, plotting or exploring a store never imports code named in it (a
    store from someone else could run anything); its models that this session lacks are
    shown as unavailable until the user loads them here, or with ``specfit explore RESULTS
    --models FILE.py``.

    Parameters
    ----------
    paths
        ``.py`` files or importable module names that define the models.

    Returns
    -------
    list of str
        Names of the models the files defined.
    """
    from specfit import models as registry

    return registry.load_user_models([str(p) for p in paths])


def _unavailable(name: str, ds: xr.Dataset) -> str:
    """Why a model's curve is not drawn: it is not loaded, and how to load it."""
    import yaml

    try:
        cfg = yaml.safe_load(ds.attrs.get("config") or "") or {}
        named = [str(u) for u in (cfg.get("fit") or {}).get("user_models") or []]
    except yaml.YAMLError:
        named = []
    # The store's file names are only shown: importing them would run the store's code.
    hint = f" (the run loaded {', '.join(named)})" if named else ""
    return (
        f"model {name!r} is not loaded in this session, so its curve is unavailable; load the "
        f"file that defines it{hint} explicitly: specfit explore RESULTS --models FILE.py, or "
        "specfit.viz.load_models(['FILE.py'])"
    )


def pixel_spectrum(ds: xr.Dataset, iy: int, ix: int) -> PixelSpectrum:
    """The stored spectrum of pixel (iy, ix) and every fitted model evaluated there.

    Each model is evaluated from the stored parameters with
    ``specfit.models.get_model(name)`` (``evaluate`` and ``components_values``). A model that
    cannot be evaluated (not loaded in this session, NaN parameters of a failed fit) is
    reported in ``ModelCurves.error`` with ``model=None``; nothing raises for one bad pixel.
    User models named in the store are never imported from it (see :func:`load_models`).
    """
    from specfit import models as registry
    from specfit.models import stored_metadata

    ny, nx = ds.sizes["y"], ds.sizes["x"]
    if not (0 <= iy < ny and 0 <= ix < nx):
        raise IndexError(f"pixel (y={iy}, x={ix}) is outside the {ny} x {nx} map")
    # One compute for every (y, x) and (freq, y, x) variable of this pixel, not one each.
    wanted = [v for v in ds.data_vars if set(ds[v].dims) <= {"freq", "y", "x"}]
    wanted = [v for v in wanted if {"y", "x"} <= set(ds[v].dims)]
    pix = ds[wanted].isel(y=iy, x=ix).compute()
    freq = np.asarray(ds["freq"].values, dtype=float)
    power = np.asarray(pix["power"].values, dtype=float)
    sigma = np.asarray(pix["power_sigma"].values, dtype=float) if "power_sigma" in ds else None
    codes = status_codes(ds)
    models: dict[str, ModelCurves] = {}
    for alias, info in model_info(ds).items():
        params: dict[str, tuple[float, float, str]] = {}
        intervals: dict[str, tuple[float, float]] = {}
        for p in info.get("params", []):
            if f"{alias}_{p}" not in ds:
                continue
            val = float(pix[f"{alias}_{p}"].values)
            err_var = f"{alias}_{p}_err"
            err = float(pix[err_var].values) if err_var in ds else float("nan")
            params[p] = (val, err, _units(ds[f"{alias}_{p}"]))
            if f"{alias}_{p}_lower" in ds and f"{alias}_{p}_upper" in ds:
                ends = (pix[f"{alias}_{p}_lower"].values, pix[f"{alias}_{p}_upper"].values)
                intervals[p] = (float(ends[0]), float(ends[1]))
        status = int(pix[f"{alias}_status"].values) if f"{alias}_status" in ds else None
        names = [*_STATS, *(d["name"] for d in stored_metadata(info)["derived"])]
        stats = {s: _stat_value(pix[f"{alias}_{s}"]) for s in names if f"{alias}_{s}" in ds}
        stat_units = {s: _units(ds[f"{alias}_{s}"]) for s in stats}
        stat_units = {s: u for s, u in stat_units.items() if u not in ("", "1")}
        curves = ModelCurves(
            alias=alias,
            name=info.get("name"),
            model=None,
            components={},
            residual=None,
            params=params,
            status=status,
            status_text=(
                "not stored"
                if status is None
                else "not written yet: the run has not saved this pixel's tile (an incomplete store)"
                if status == -1 and status not in codes
                else codes.get(status, "unknown")
            ),
            stats=stats,
            intervals=intervals,
            stat_units=stat_units,
        )
        models[alias] = curves
        if info.get("name") not in registry.available_models():
            curves.error = _unavailable(str(info.get("name")), ds)
            continue
        try:
            model = registry.get_model(info["name"])
            order = list(model.param_names)
            missing = [p for p in order if p not in params]
            if missing:
                curves.error = f"store lacks parameters {missing} of model {info['name']}"
                continue
            p_row = np.array([[params[p][0] for p in order]])
            if not np.all(np.isfinite(p_row)):
                curves.error = "no fitted parameters at this pixel (NaN)"
                continue
            curves.model = np.asarray(model.evaluate(freq, p_row), dtype=float).reshape(-1)
            comps = model.components_values(freq, p_row)
            curves.components = {
                k: np.asarray(v, dtype=float).reshape(-1) for k, v in comps.items()
            }
            with np.errstate(divide="ignore", invalid="ignore"):
                curves.residual = power / curves.model
        except Exception as exc:  # a broken user model must not break the explorer
            curves.error = f"cannot evaluate model {info.get('name')!r}: {exc}"
    comparison = {
        v: float(pix[v].values) for v in ("best_model", "lrt_pvalue", "ftest_pvalue") if v in ds
    }
    for a in models:  # several nested pairs: each bigger model's own tests
        for v in (f"{a}_lrt_pvalue", f"{a}_ftest_pvalue"):
            if v in ds:
                comparison[v] = float(pix[v].values)
    extra: dict[str, Any] = {}
    if "best_model" in comparison:  # the code's name, from the variable's flag attrs
        attrs = ds["best_model"].attrs
        values, meanings = attrs.get("flag_values", []), str(attrs.get("flag_meanings", "")).split()
        names = dict(zip(values, meanings, strict=False)) if len(values) == len(meanings) else {}
        code = comparison["best_model"]
        if np.isfinite(code) and int(code) in names:
            extra["best_model"] = names[int(code)]
    hpc = None
    if "hpc_x" in ds.coords and "hpc_y" in ds.coords:
        hpc = (float(pix["hpc_x"].values), float(pix["hpc_y"].values))
    y, x = pixel_origin(ds, "y") + iy, pixel_origin(ds, "x") + ix
    units = str(ds["power"].attrs.get("units", "")) if "power" in ds else ""
    return PixelSpectrum(
        iy, ix, freq, power, sigma, models, comparison, hpc, extra, y=y, x=x, units=units
    )


def open_cube(ds: xr.Dataset) -> xr.Dataset | None:
    """The kept uniform cube named by the ``cube_path`` attr, or None if absent, unreadable,
    or written since for other inputs or prep settings (a cube shared through
    ``output.cube_path`` and rewritten by a run on another store: its series are not this
    store's)."""
    from specfit.store import config_hash

    path = ds.attrs.get("cube_path")
    if not path or not Path(path).exists():
        return None
    try:
        cube = xr.open_zarr(path)
    except Exception:  # a moved or partial cube only disables the time-series panel
        return None
    try:
        mine = json.loads(ds.attrs.get("input_fingerprint") or "null") or {}
        theirs = json.loads(cube.attrs.get("input_fingerprint") or "null") or {}
        science = json.loads(ds.attrs.get("config_json") or "null") or {}
    except ValueError:
        return None
    if mine.get("hash") != theirs.get("hash"):
        return None
    if science and cube.attrs.get("config_hash") != config_hash(
        {k: science.get(k) for k in ("input", "prep")}
    ):
        return None
    return cube


def pixel_timeseries(
    ds: xr.Dataset, iy: int, ix: int, cube: xr.Dataset | None = None
) -> tuple[np.ndarray, np.ndarray] | None:
    """(time in s, intensity) of one pixel from the kept cube, or None when there is no cube."""
    cube = open_cube(ds) if cube is None else cube
    if cube is None or "intensity" not in cube:
        return None
    if (cube.sizes.get("y"), cube.sizes.get("x")) != (ds.sizes["y"], ds.sizes["x"]):
        return None  # not the same pixel grid as the results: a series would be misplaced
    series = cube["intensity"].isel(y=iy, x=ix)
    t = np.asarray(cube["time"].values, dtype=float)
    return t, np.asarray(series.values, dtype=float)


def power_map(
    ds: xr.Dataset,
    period_min: float | None = None,
    band_min: tuple[float, float] | None = None,
) -> xr.DataArray:
    """Power at one period, or mean power over a band of periods, for every pixel (lazy).

    Parameters
    ----------
    period_min
        Period in minutes; the stored frequency nearest to 1/period is used.
    band_min
        (shortest, longest) period in minutes; power is averaged over the frequencies inside.

    Raises
    ------
    ValueError
        If neither or both are given, or the band holds no stored frequency.
    """
    freq = np.asarray(ds["freq"].values, dtype=float)
    if (period_min is None) == (band_min is None):
        raise ValueError("give exactly one of period_min or band_min")
    if period_min is not None:
        if period_min <= 0:
            raise ValueError(f"period_min must be positive, got {period_min}")
        k = int(np.argmin(np.abs(freq - 1.0 / (60.0 * period_min))))
        out = ds["power"].isel(freq=k)
        label = f"power at {1.0 / freq[k] / 60.0:.2f} min"
    else:
        lo, hi = sorted(band_min)
        if lo <= 0:
            raise ValueError(f"band periods must be positive, got {band_min}")
        sel = np.nonzero((freq >= 1.0 / (60.0 * hi)) & (freq <= 1.0 / (60.0 * lo)))[0]
        if sel.size == 0:
            raise ValueError(
                f"no stored frequency in the band {lo}-{hi} min; stored periods span "
                f"{1 / freq.max() / 60:.2f}-{1 / freq.min() / 60:.2f} min"
            )
        out = ds["power"].isel(freq=sel).mean("freq")
        label = f"mean power {lo:g}-{hi:g} min"
    out = out.drop_vars([c for c in out.coords if c not in ("y", "x")])
    out.name = "power_map"
    out.attrs = {"label": label, "units": _units(ds["power"])}
    return out


def spectral_density(
    ds: xr.Dataset,
    y: tuple[int, int] | None = None,
    x: tuple[int, int] | None = None,
    bins: int = 80,
    max_pixels: int = 250_000,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """2-D histogram of log10 power against log10 frequency over the spectra of a region.

    Each spectrum is binned onto the grid and the counts are summed, so thousands of spectra
    read as one picture.

    Parameters
    ----------
    y, x
        Half-open pixel ranges ``(start, stop)``; None means the whole axis.
    bins
        Number of power bins; frequency bins follow the stored frequencies: one per
        frequency, or, with more than ``bins`` frequencies, consecutive frequencies merged
        until a bin spans at least 1/``bins`` of the log-frequency range (none is empty).
    max_pixels
        Regions larger than this are thinned with a regular stride to bound the read.

    Returns
    -------
    counts, logf_edges, logp_edges, n_spectra
        ``counts`` has shape (n_power_bins, n_freq_bins).
    """
    y0, y1 = y if y is not None else (0, ds.sizes["y"])
    x0, x1 = x if x is not None else (0, ds.sizes["x"])
    y0, y1 = max(0, int(y0)), min(ds.sizes["y"], int(y1))
    x0, x1 = max(0, int(x0)), min(ds.sizes["x"], int(x1))
    if y1 <= y0 or x1 <= x0:
        raise ValueError(f"empty region y={y0}:{y1}, x={x0}:{x1}")
    freq = np.asarray(ds["freq"].values, dtype=float)
    region = ds["power"].isel(y=slice(y0, y1), x=slice(x0, x1))
    npix = (y1 - y0) * (x1 - x0)
    if npix > max_pixels:
        # Strided thinning keeps the read chunk-friendly and deterministic.
        step = int(np.ceil(np.sqrt(npix / max_pixels)))
        region = region.isel(y=slice(None, None, step), x=slice(None, None, step))
    spectra = np.asarray(region.values, dtype=float).reshape(freq.size, -1).T  # (npix, nfreq)
    good = np.all(np.isfinite(spectra) & (spectra > 0), axis=1)
    spectra = spectra[good]
    logf = np.log10(freq)
    nfb = min(bins, freq.size)
    if freq.size > 1:
        half = 0.5 * np.diff(logf)
        inner = logf[:-1] + half
        f_edges_full = np.concatenate([[logf[0] - half[0]], inner, [logf[-1] + half[-1]]])
    else:
        f_edges_full = np.array([logf[0] - 0.5, logf[0] + 0.5])
    f_edges = f_edges_full
    if nfb < freq.size:
        # bins at least 1/nfb of the log range wide, each from whole frequencies' own edges:
        # evenly spaced frequencies are sparse in log f at the low end, where equal log bins
        # were mostly empty (stripes); there each frequency keeps its own bin
        width = (f_edges_full[-1] - f_edges_full[0]) / nfb
        kept = [f_edges_full[0]]
        for e in f_edges_full[1:-1]:
            if e - kept[-1] >= width:
                kept.append(e)
        f_edges = np.array([*kept, f_edges_full[-1]])
    if spectra.size == 0:
        return np.zeros((bins, len(f_edges) - 1)), f_edges, np.linspace(0, 1, bins + 1), 0
    logp = np.log10(spectra)
    lo, hi = np.percentile(logp, [0.1, 99.9])
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    p_edges = np.linspace(lo, hi, bins + 1)
    ff = np.broadcast_to(logf, logp.shape)
    counts, _, _ = np.histogram2d(logp.ravel(), ff.ravel(), bins=[p_edges, f_edges])
    return counts, f_edges, p_edges, int(spectra.shape[0])


def region_from_bounds(
    axes: AxisInfo, bounds: tuple[float, float, float, float] | None
) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """Half-open pixel ranges ((y0, y1), (x0, x1)) of the pixels whose centres lie in a box.

    ``bounds`` is (left, bottom, right, top) in axis coordinates, as a box selection gives.
    Returns None when no pixel centre is inside.
    """
    if bounds is None or any(b is None for b in bounds):
        return None
    left, bottom, right, top = bounds

    def span(a: float, b: float, c0: float, d: float, n: int) -> tuple[int, int]:
        i0, i1 = sorted(((a - c0) / d, (b - c0) / d))
        # A centre on the box edge counts as inside, despite rounding in the axis affine.
        eps = 1e-6
        return max(0, int(np.ceil(i0 - eps))), min(n, int(np.floor(i1 + eps)) + 1)

    x = span(left, right, axes.x0, axes.dx, axes.nx)
    y = span(bottom, top, axes.y0, axes.dy, axes.ny)
    if x[1] <= x[0] or y[1] <= y[0]:
        return None
    return y, x


def map_histogram(
    values: xr.DataArray | np.ndarray,
    lim: tuple[float, float],
    bins: int = 50,
    max_samples: int = 1_000_000,
) -> tuple[np.ndarray, np.ndarray]:
    """(counts, edges) of the finite values inside ``lim`` (the colour range).

    Values outside are left out rather than piled into the end bins, where they would look
    like a real peak at the clip limits.

    Large maps are read with a regular stride (at most ``max_samples`` values).
    """
    arr = _finite_sample(values, max_samples)
    if arr.size == 0 or not np.all(np.isfinite(lim)):
        return np.zeros(bins), np.linspace(0.0, 1.0, bins + 1)
    counts, edges = np.histogram(arr, bins=bins, range=lim)
    return counts, edges
