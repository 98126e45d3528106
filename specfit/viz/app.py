"""The results explorer: a panel app (the successor of specVis), also usable in a notebook.

Layout: controls on the left (map, masks, colour clipping, power-map period/band); the
selected map with its histogram; for the tapped pixel its spectrum with every fitted model and
its components, the residuals, the parameter table and its time series; the mean intensity,
a power map and the spectral-density image of the box-selected region.

The wiring here is thin: what each view shows comes from plain functions in
:mod:`specfit.viz.data` (``pixel_spectrum`` and friends) and :func:`spectrum_elements`, which
are tested without a browser.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import holoviews as hv
import numpy as np
import panel as pn
import xarray as xr

from specfit.viz.data import (
    AxisInfo,
    PixelSpectrum,
    axis_info,
    clip_limits,
    default_map_name,
    load_models,
    map_catalog,
    map_title,
    map_values,
    open_cube,
    open_store,
    pixel_index,
    pixel_origin,
    pixel_spectrum,
    pixel_timeseries,
    power_map,
    region_from_bounds,
    spectral_density,
)
from specfit.viz.maps import (
    CODE_COLOURS,
    NAN_COLOUR,
    NAN_ON_GREY,
    flag_legend,
    histogram_element,
    image_element,
)

__all__ = [
    "ExplorerParts",
    "build_explorer",
    "explorer",
    "serve",
    "spectrum_elements",
    "parameter_table",
]

# Maps with more pixels than this are rasterised by datashader to the screen's resolution.
RASTERIZE_ABOVE = 512 * 512
# ten distinct colours (matplotlib's tab10 without its grey): the shipped seven-model config
# drew two pairs of models alike with five
_MODEL_COLOURS = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b",
    "#e377c2", "#bcbd22", "#17becf", "#ff7f0e", "#393b79",
]  # fmt: skip
# a model's additive parts in the order it declares them: one dash style each
_COMPONENT_DASHES = ("dashed", "dotted", "dashdot", "dotdash", "dashed")


def _ensure_extension() -> None:
    """Load holoviews' bokeh backend and panel's extension once (idempotent)."""
    import holoviews.plotting.bokeh  # noqa: F401

    if "bokeh" not in hv.Store.loaded_backends() or hv.Store.current_backend != "bokeh":
        hv.extension("bokeh", logo=False)
    pn.extension()


def spectrum_elements(ps: PixelSpectrum) -> tuple[hv.Overlay, hv.Overlay]:
    """The spectrum overlay (data, each model, its components) and the residual overlay.

    Curves are labelled ``data``, ``<alias> <model name>`` and ``<alias> <component>``; each
    holds exactly the arrays of ``ps`` (the stored spectrum and the model evaluated from the
    stored parameters), with non-positive values dropped for the log axes.
    """
    _ensure_extension()
    fdim = hv.Dimension("frequency", label="frequency", unit="Hz")
    pdim = hv.Dimension("power", label="power", unit=ps.units or None)
    rdim = hv.Dimension("ratio", label="data / model")

    def curve(y: np.ndarray, label: str, **opts) -> hv.Curve:
        ok = np.isfinite(y) & (y > 0) & (ps.freq > 0)
        return hv.Curve((ps.freq[ok], y[ok]), fdim, pdim, label=label).opts(
            tools=["hover"], framewise=True, backend="bokeh", **opts
        )

    spec = []
    if ps.sigma is not None:
        # power +- sigma as a grey band; the lower edge is kept positive for the log axis.
        ok = np.isfinite(ps.power) & np.isfinite(ps.sigma) & (ps.power > 0)
        lo = np.maximum(ps.power - ps.sigma, 0.01 * ps.power)
        spec.append(
            hv.Area(
                (ps.freq[ok], lo[ok], (ps.power + ps.sigma)[ok]),
                fdim,
                [pdim, hv.Dimension("power_upper")],
                label="data \u00b1 sigma",
            ).opts(color="lightgrey", line_alpha=0, framewise=True, backend="bokeh")
        )
    spec.append(curve(ps.power, "data", color="black", line_width=1.5))
    resid = []
    for i, (alias, mc) in enumerate(ps.models.items()):
        colour = _MODEL_COLOURS[i % len(_MODEL_COLOURS)]
        if mc.model is None:
            continue
        name = f"{alias} {mc.name}" if mc.name else alias
        spec.append(curve(mc.model, name, color=colour, line_width=2))
        for k, (comp, values) in enumerate(mc.components.items()):
            dash = _COMPONENT_DASHES[k % len(_COMPONENT_DASHES)]
            spec.append(
                curve(values, f"{alias} {comp}", color=colour, line_dash=dash, line_width=1)
            )
        if mc.residual is not None:
            ok = np.isfinite(mc.residual)
            resid.append(
                hv.Curve((ps.freq[ok], mc.residual[ok]), fdim, rdim, label=name).opts(
                    color=colour, framewise=True
                )
            )
    # The y range follows the data (a decade of room below): a component far below the
    # spectrum, such as a tiny tail, must not squash the data into the top of the plot.
    good = ps.power[np.isfinite(ps.power) & (ps.power > 0)]
    ylim = (float(good.min()) / 10.0, float(good.max()) * 3.0) if good.size else (None, None)
    # at most 12 legend rows in the 360 px plot: the seven-model config's 25 entries ran up
    # over the map beside it and took its clicks (a probe)
    cols = max(1, -(-len(spec) // 12))
    spectrum = hv.Overlay(spec).opts(
        title=ps.title, legend_position="right", legend_cols=cols, responsive=True,
        height=360, logx=True, logy=True, ylim=ylim, framewise=True, backend="bokeh",
    )  # fmt: skip
    residuals = hv.Overlay([*resid, hv.HLine(1.0).opts(color="grey", line_dash="dotted")]).opts(
        title="residuals (data / model)", responsive=True, height=200, logx=True,
        show_legend=False, xlabel="frequency (Hz)", ylabel="data / model", framewise=True,
        backend="bokeh",
    )  # fmt: skip
    return spectrum, residuals


def _fmt(v: float) -> str:
    if v is None or not np.isfinite(v):
        return "NaN"
    a = abs(v)
    return f"{v:.4g}" if (a == 0 or 1e-3 <= a < 1e5) else f"{v:.3e}"


def parameter_table(ps: PixelSpectrum) -> str:
    """Markdown: each model's parameters ± errors, its status and statistics, and the
    model-comparison figures at the pixel."""
    lines = [f"### {html.escape(ps.title)}", ""]
    for alias, mc in ps.models.items():
        lines.append(f"**{alias}** `{mc.name}` — status {mc.status}: {mc.status_text}")
        if mc.error:
            lines.append(f"<br>*{html.escape(mc.error)}*")
        if mc.intervals:  # fit.intervals: the profile-likelihood interval beside the error
            lines += ["", "| parameter | value | ± error | 68 % profile interval | units |"]
            lines.append("|---|---|---|---|---|")
        else:
            lines += ["", "| parameter | value | ± error | units |", "|---|---|---|---|"]
        for p, (val, err, units) in mc.params.items():
            if mc.intervals:
                lo, hi = mc.intervals.get(p, (None, None))
                iv = f"{_fmt(lo)} – {_fmt(hi)}" if lo is not None else ""
                lines.append(f"| {p} | {_fmt(val)} | {_fmt(err)} | {iv} | {units} |")
            else:
                lines.append(f"| {p} | {_fmt(val)} | {_fmt(err)} | {units} |")
        if mc.stats:
            lines.append("")
            lines.append(
                ", ".join(
                    f"{k} = {_fmt(v)}" + (f" {mc.stat_units[k]}" if k in mc.stat_units else "")
                    for k, v in mc.stats.items()
                )
            )
        lines.append("")
    if ps.comparison:
        lines.append(
            "**model comparison**: "
            + ", ".join(
                f"{k} = {ps.extra[k]}" if k in ps.extra else f"{k} = {_fmt(v)}"
                for k, v in ps.comparison.items()
            )
        )
    return "\n".join(lines)


def _span(ds: xr.Dataset, dim: str, bounds: tuple[int, int]) -> str:
    """Positions [a, b) along ``dim`` as pixel numbers (:func:`pixel_origin`), a:b."""
    o = pixel_origin(ds, dim)
    return f"{o + bounds[0]}:{o + bounds[1]}"


def _timeseries_element(ds: xr.Dataset, cube: xr.Dataset | None, iy: int, ix: int):
    ts = pixel_timeseries(ds, iy, ix, cube=cube) if cube is not None else None
    if ts is None:
        return pn.pane.Markdown(
            "*No cube kept with this run (`output.keep_cube`): no time series.*"
        )
    t, v = ts
    x, y = pixel_origin(ds, "x") + ix, pixel_origin(ds, "y") + iy  # as the spectrum's title
    units = str(ds["mean_intensity"].attrs.get("units", "")) if "mean_intensity" in ds else ""
    vdim = hv.Dimension("intensity", unit=units or None)
    box = int(ds.attrs.get("box", 1) or 1)
    # the spectrum averages a box: the series is its centre pixel's alone (a probe)
    note = f" (the centre of the {box} x {box} box the spectrum averages)" if box > 1 else ""
    return hv.Curve((t, v), hv.Dimension("time", unit="s"), vdim).opts(
        title=f"time series x={x}, y={y}{note}", responsive=True, height=200, color="black"
    )


def _maybe_rasterize(obj, n_pixels: int, threshold: int = RASTERIZE_ABOVE, aggregator="mean"):
    if n_pixels <= threshold:
        return obj
    from holoviews.operation.datashader import rasterize

    return rasterize(obj, aggregator=aggregator)


@dataclass
class ExplorerParts:
    """The explorer's pieces, for tests and for notebooks that want to rearrange them.

    ``tap`` (x, y in axis units) and ``box`` (bounds) are the holoviews streams that drive the
    pixel and region views; ``pixel`` holds the (iy, ix) currently shown.
    """

    layout: pn.layout.Panel
    heatmap: Any
    histogram: hv.DynamicMap
    spectrum: hv.DynamicMap
    residuals: hv.DynamicMap
    table: pn.pane.Markdown
    power: Any
    density: hv.DynamicMap
    tap: hv.streams.Tap
    box: hv.streams.BoundsXY
    widgets: dict[str, pn.widgets.Widget]
    axes: AxisInfo
    pixel: dict[str, tuple[int, int]] = field(default_factory=dict)
    mean: Any = None  # the mean-intensity image (None: the store has no mean_intensity)


def build_explorer(
    ds: xr.Dataset | str | Path,
    rasterize_above: int = RASTERIZE_ABOVE,
    solar: bool = True,
) -> ExplorerParts:
    """Build the explorer and return its parts (``.layout`` is what :func:`explorer` returns).

    See :func:`explorer` for the parameters.
    """
    _ensure_extension()
    ds = open_store(ds)
    axes = axis_info(ds, solar=solar)
    catalog = map_catalog(ds)
    if not catalog:
        raise ValueError("the results store holds no (y, x) maps; is it a specfit results.zarr?")
    specs = {s.name: s for s in catalog}
    cube = open_cube(ds)
    n_pixels = axes.nx * axes.ny
    large = n_pixels > rasterize_above
    width = 560
    aspect = axes.ny * abs(axes.dy) / (axes.nx * abs(axes.dx))
    height = max(240, min(700, int(width * aspect)))

    # -- controls -------------------------------------------------------------------------
    default_map = default_map_name(ds, catalog)
    w_map = pn.widgets.Select(
        label="map", options={f"{s.label} ({s.name})": s.name for s in catalog}, value=default_map
    )
    w_p = pn.widgets.FloatSlider(
        label="p-value mask (richer models shown where p \u2264; 1 = no mask)",
        start=0.001,
        end=1.0,
        step=0.001,
        value=1.0,
    )
    # Which control the p-value mask applies: per pixel (p), field-wide FDR (q) or the
    # field-wide global level (the slider is then unused); only those the store holds.
    has_field = any(str(v).endswith("_qvalue") for v in ds.data_vars)
    w_sig = pn.widgets.Select(
        label="significance mask of the richer models",
        options=["pixel", "fdr", "global", "none"] if has_field else ["pixel", "none"],
        value="pixel",
    )

    def _follow_mode(event) -> None:
        # The slider is the p-value (pixel) or the q-value (fdr) threshold; selecting fdr
        # sets it to the run's fit.fdr_q, 1 shows every pixel in both; global has none.
        w_p.disabled = event.new in ("global", "none")
        if event.new == "fdr":
            q = [
                float(ds[v].attrs.get("fdr_q", 0.05)) for v in ds.data_vars if v.endswith("_qvalue")
            ]
            w_p.value = q[0] if q else 0.05
        w_p.name = (
            "q-value mask (richer models shown where the field-wide q \u2264; 1 = no mask)"
            if event.new == "fdr"
            else "p-value mask (richer models shown where p \u2264; 1 = no mask)"
        )

    w_sig.param.watch(_follow_mode, "value")
    w_status = pn.widgets.Checkbox(label="hide pixels whose fit did not converge", value=True)
    w_clip = pn.widgets.RangeSlider(
        label="colour clip (percentiles)", start=0.0, end=100.0, value=(1.0, 99.0), step=0.5
    )
    freq = np.asarray(ds["freq"].values, dtype=float)
    periods = 1.0 / freq[freq > 0] / 60.0
    pmin, pmax = float(periods.min()), float(periods.max())
    w_mode = pn.widgets.RadioButtonGroup(
        label="power map", options=["period", "band"], value="period"
    )
    w_period = pn.widgets.FloatInput(
        label="period (min)", value=float(np.clip(5.0, pmin, pmax)), start=pmin, end=pmax, step=0.5
    )
    w_band = pn.widgets.RangeSlider(
        label="band (min)",
        start=pmin,
        end=pmax,
        value=(float(np.clip(3.0, pmin, pmax)), float(np.clip(7.0, pmin, pmax))),
        step=0.1,
    )
    # A power map reads every stored spectrum: on a large store only on request.
    w_power_go = pn.widgets.Button(label="compute power map", color="primary")

    # -- the selected map ---------------------------------------------------------------
    map_cache: dict[tuple, xr.DataArray] = {}

    def current_map(name: str, pthr: float, mask: bool, sig: str = "pixel") -> xr.DataArray:
        # The image, its colour limits and its histogram share one read of the selected map
        # (at most one map is held: 64 MB for 4096 x 4096 float32); datashader then works
        # on memory, which is far faster than re-reading dask chunks on every zoom.
        # The slider at 1 shows everything in pixel and fdr mode (the docs' "1 = no mask";
        # selecting fdr moves it to the run's fit.fdr_q); global has no threshold.
        thr = None if pthr >= 1.0 or sig == "global" else pthr
        if sig in ("pixel", "fdr") and thr is None:
            sig = "none"
        key = (name, thr, bool(mask), sig)
        if key not in map_cache:
            map_cache.clear()
            map_cache[key] = map_values(
                ds, name, pvalue_threshold=thr, mask_status=mask, significance=sig
            ).load()
        return map_cache[key]

    titles: dict[str, str] = {}  # per map, read once (a log map's count of zeros)

    def image_for(name: str, pthr: float, mask: bool, sig: str = "pixel") -> hv.Image:
        # The colour bar is drawn once and would keep the first map's name: the map's name
        # and unit are in the title, which follows the selection.
        if name not in titles:
            titles[name] = map_title(ds, name)
        shown = current_map(name, pthr, mask, sig)
        legend = ""
        if specs[name].categorical:
            # integer codes (status, best model) name the meanings of those the map shows
            codes = np.unique(np.asarray(shown.values, dtype=float))
            codes = [int(c) for c in codes[np.isfinite(codes)]]
            legend = flag_legend(ds[specs[name].source], max_flags=6, present=codes)
        note = "click a pixel; box-select a region"
        if sig in ("fdr", "global") and not ds.attrs.get("complete", True):
            if not np.isfinite(np.asarray(shown.values, dtype=float)).any():
                # q-values and the global level are made from the whole field at the end
                note = f"the {sig} mask needs the finished run (use 'pixel' until then)"
        return image_element(shown, axes).opts(title=f"{titles[name]}{legend}: {note}")

    def clim_for(name: str, pthr: float, mask: bool, clip: tuple[float, float], sig="pixel"):
        da = current_map(name, pthr, mask, sig)
        if specs[name].categorical:
            # every code present, from the whole map (a strided sample of a large one missed
            # rare ones: fit_failed pixels drawn in the colour of converged ones)
            codes = np.asarray(da.values, dtype=float)
            if not np.isfinite(codes).any():
                return (0.0, 1.0)
            return (float(np.nanmin(codes)) - 0.5, float(np.nanmax(codes)) + 0.5)
        lim = clip_limits(da, tuple(clip))
        return lim if np.all(np.isfinite(lim)) else (0.0, 1.0)

    def cmap_for(name: str, pthr: float, mask: bool, sig="pixel"):
        # code maps (status, best model) in distinct colours, as specfit plot draws them: on
        # viridis at_bound (7) and stalled (8) were two yellows (a probe)
        if specs[name].categorical:
            lo, hi = clim_for(name, pthr, mask, (0.0, 100.0), sig)
            n = int(round(hi - lo))
            if 1 <= n <= len(CODE_COLOURS):
                return list(CODE_COLOURS[:n])
        return "viridis"

    bound_image = pn.bind(image_for, name=w_map, pthr=w_p, mask=w_status, sig=w_sig)
    bound_clim = pn.bind(clim_for, name=w_map, pthr=w_p, mask=w_status, clip=w_clip, sig=w_sig)
    bound_cmap = pn.bind(cmap_for, name=w_map, pthr=w_p, mask=w_status, sig=w_sig)
    # "first": every screen cell shows one stored pixel's value. A mean mixed status and
    # best-model codes into values that are no code (1.65 for codes 0, 1, 7), and zoomed in it
    # blended neighbours, so the hover disagreed with the clicked pixel's spectrum (a probe)
    heat = _maybe_rasterize(hv.DynamicMap(bound_image), n_pixels, rasterize_above, "first")
    heat = heat.apply.opts(clim=bound_clim, cmap=bound_cmap).opts(
        colorbar=True,
        clipping_colors={"NaN": NAN_COLOUR},
        tools=["hover", "tap", "box_select"],
        width=width,
        height=height,
        clabel=" ",  # the colour bar is drawn once: the title names the map
        xlabel=axes.xlabel,
        ylabel=axes.ylabel,
    )

    def hist_for(name: str, pthr: float, mask: bool, clip: tuple[float, float], sig="pixel"):
        spec = specs[name]
        lim = clim_for(name, pthr, mask, clip, sig)
        unit = spec.units if spec.units not in ("", "1") else None  # no "()" on a code's axis
        vdim = hv.Dimension(name, label=spec.label, unit=unit)
        return histogram_element(current_map(name, pthr, mask, sig), lim, vdim).opts(
            width=320, height=260, title="histogram", color="#4c72b0", framewise=True
        )

    hist = hv.DynamicMap(
        pn.bind(hist_for, name=w_map, pthr=w_p, mask=w_status, clip=w_clip, sig=w_sig)
    )

    # -- the tapped pixel -----------------------------------------------------------------
    cx, cy = axes.x_coords()[axes.nx // 2], axes.y_coords()[axes.ny // 2]
    tap = hv.streams.Tap(source=heat, x=float(cx), y=float(cy))
    box = hv.streams.BoundsXY(source=heat, bounds=None)
    state: dict[str, tuple[int, int]] = {"pixel": (axes.ny // 2, axes.nx // 2)}
    cache: dict[tuple[int, int], PixelSpectrum] = {}

    def spectrum_at(x: float, y: float) -> PixelSpectrum:
        idx = pixel_index(axes, x, y)
        if idx is not None:  # a tap outside the map keeps the current pixel
            state["pixel"] = idx
        key = state["pixel"]
        if key not in cache:
            # Four views update per tap: read the pixel once, keep only the latest.
            cache.clear()
            cache[key] = pixel_spectrum(ds, *key)
        return cache[key]

    spectrum = hv.DynamicMap(lambda x, y: spectrum_elements(spectrum_at(x, y))[0], streams=[tap])
    residuals = hv.DynamicMap(lambda x, y: spectrum_elements(spectrum_at(x, y))[1], streams=[tap])
    table = pn.pane.Markdown(
        pn.bind(lambda x, y: parameter_table(spectrum_at(x, y)), x=tap.param.x, y=tap.param.y),
        css_classes=["specfit-pixel"],
        width=420,
    )

    def ts_plot(x, y):
        ps = spectrum_at(x, y)
        return _timeseries_element(ds, cube, ps.iy, ps.ix)

    ts_pane = pn.panel(pn.bind(ts_plot, x=tap.param.x, y=tap.param.y), sizing_mode="stretch_width")

    # -- mean intensity, power map, spectral density ------------------------------------
    side = dict(width=420, height=max(200, int(420 * aspect)), colorbar=True)
    side["height"] = min(side["height"], 600)
    mean_view = None
    if "mean_intensity" in ds:
        mi = map_values(ds, "mean_intensity").load()  # one map, read once
        lim = clip_limits(mi, (1.0, 99.0))
        mean_view = _maybe_rasterize(image_element(mi, axes), n_pixels, rasterize_above)
        mean_view = mean_view.opts(
            cmap="gray",
            # missing pixels (masked, off-limb, tiles not yet written) were drawn white, the
            # colour of the brightest: a colour the grey scale does not have
            clipping_colors={"NaN": NAN_ON_GREY},
            clim=lim if np.all(np.isfinite(lim)) else (0, 1),
            title="mean intensity",
            xlabel=axes.xlabel,
            ylabel=axes.ylabel,
            **side,
        )

    def power_for(mode: str, period: float, band: tuple[float, float], clicks: int) -> hv.Image:
        if large and clicks == 0:
            return image_element(_blank_map(axes), axes).opts(
                title="power map: press 'compute power map'"
            )
        try:
            if mode == "period":
                pm = power_map(ds, period_min=period)
            else:
                pm = power_map(ds, band_min=band)
        except ValueError as exc:
            return image_element(_blank_map(axes), axes).opts(title=str(exc))
        logp = np.log10(pm.where(pm > 0))
        logp.attrs = {"label": f"log10 {pm.attrs['label']}", "units": pm.attrs.get("units", "")}
        logp.name = "log10_power"
        units = pm.attrs.get("units", "")
        return image_element(logp, axes).opts(
            title=f"log10 {pm.attrs['label']}" + (f" [{units}]" if units else "")
        )

    power = _maybe_rasterize(
        hv.DynamicMap(
            pn.bind(
                power_for, mode=w_mode, period=w_period, band=w_band, clicks=w_power_go.param.clicks
            )
        ),
        n_pixels,
        rasterize_above,
    ).opts(
        cmap="inferno",
        clipping_colors={"NaN": NAN_COLOUR},  # as the main map (white read as the highest)
        framewise=True,
        xlabel=axes.xlabel,
        ylabel=axes.ylabel,
        clabel=" ",  # drawn once: the title names the period
        **side,
    )

    power_units = str(ds["power"].attrs.get("units", "")) if "power" in ds else ""

    def density_for(bounds):
        region = region_from_bounds(axes, bounds)
        if region is None:
            region = _default_region(axes)
        y, x = region
        counts, f_edges, p_edges, n = spectral_density(ds, y=y, x=x)
        with np.errstate(divide="ignore"):
            shown = np.where(counts > 0, np.log10(counts), np.nan)
        return hv.QuadMesh(
            (f_edges, p_edges, shown),
            [
                hv.Dimension("log10_f", label="log10 frequency (Hz)"),
                hv.Dimension("log10_p", label="log10 power", unit=power_units or None),
            ],
            [hv.Dimension("log10_count", label="log10 spectra per bin")],
        ).opts(
            title=f"density of {n} spectra, x {_span(ds, 'x', x)}, y {_span(ds, 'y', y)}",
            cmap="viridis",
            colorbar=True,
            width=420,
            height=320,
            framewise=True,
        )

    density = hv.DynamicMap(density_for, streams=[box])

    controls = pn.Column(
        pn.pane.Markdown(
            f"## specfit explorer\n{axes.ny} \u00d7 {axes.nx} px, {freq.size} frequencies"
        ),
        w_map,
        w_sig,
        w_p,
        w_status,
        w_clip,
        pn.pane.Markdown("**power map**"),
        w_mode,
        w_period,
        w_band,
        *([w_power_go] if large else []),
        width=300,
    )

    def marker(x, y):
        # A ring on the pixel whose spectrum is shown (follows the tap; stays on bad taps).
        iy, ix = spectrum_at(x, y).iy, spectrum_at(x, y).ix
        px, py = axes.x0 + axes.dx * ix, axes.y0 + axes.dy * iy
        return hv.Points([(px, py)]).opts(
            marker="circle", size=14, fill_alpha=0, line_color="red", line_width=2
        )

    heat_view = heat * hv.DynamicMap(marker, streams=[tap])
    maps_row = pn.Row(
        pn.pane.HoloViews(heat_view, name="heatmap", css_classes=["specfit-heatmap"]),
        pn.pane.HoloViews(hist),
    )
    pixel_col = pn.Column(
        pn.pane.HoloViews(
            spectrum, sizing_mode="stretch_width", name="spectrum", css_classes=["specfit-spectrum"]
        ),
        pn.pane.HoloViews(residuals, sizing_mode="stretch_width"),
        ts_pane,
        sizing_mode="stretch_width",
    )
    lower = pn.Row(
        *([pn.pane.HoloViews(mean_view)] if mean_view is not None else []),
        pn.pane.HoloViews(power),
        pn.pane.HoloViews(density),
    )
    layout = pn.Row(
        controls, pn.Column(maps_row, pn.Row(pn.Column(pixel_col, width=620), table), lower)
    )
    widgets = {
        "map": w_map,
        "pvalue": w_p,
        "significance": w_sig,
        "status": w_status,
        "clip": w_clip,
        "power_mode": w_mode,
        "period": w_period,
        "band": w_band,
        "power_go": w_power_go,
    }
    return ExplorerParts(
        layout,
        heat,
        hist,
        spectrum,
        residuals,
        table,
        power,
        density,
        tap,
        box,
        widgets,
        axes,
        state,
        mean_view,
    )


def _blank_map(axes: AxisInfo) -> xr.DataArray:
    """An all-NaN 2 x 2 placeholder spanning the map's corners."""
    da = xr.DataArray(np.full((2, 2), np.nan, np.float32), dims=("y", "x"), name="log10_power")
    da.attrs = {"label": "log10 power", "units": ""}
    return da


def _default_region(axes: AxisInfo, side: int = 256) -> tuple[tuple[int, int], tuple[int, int]]:
    """The whole map if small, else a central ``side`` x ``side`` box (bounded read)."""
    hy, hx = min(axes.ny, side), min(axes.nx, side)
    y0, x0 = (axes.ny - hy) // 2, (axes.nx - hx) // 2
    return (y0, y0 + hy), (x0, x0 + hx)


def explorer(
    ds: xr.Dataset | str | Path,
    rasterize_above: int = RASTERIZE_ABOVE,
    solar: bool = True,
) -> pn.layout.Panel:
    """Build the explorer for a results store (use in a notebook, or serve with :func:`serve`).

    Parameters
    ----------
    ds
        Results Dataset (ideally lazy, from ``specfit.open_results``) or store path.
    rasterize_above
        Maps with more pixels are rasterised with datashader to the plot's resolution, so a
        4096 x 4096 map streams only what the screen shows.
    solar
        Helioprojective arcsec on the map axes where the store has them.

    Returns
    -------
    panel.layout.Row
        The whole app; display it in a notebook or ``.servable()`` it.
    """
    return build_explorer(ds, rasterize_above=rasterize_above, solar=solar).layout


def _free_to_bind(address: str, port: int) -> int:
    """``port`` (0: a free one) after checking that the server can listen there, so that a
    wrong address or a port in use is one line before anything is printed or served."""
    import socket

    from specfit.errors import ConfigError

    if not (isinstance(port, int) and 0 <= port <= 65535):
        raise ConfigError(f"--port {port!r}: a TCP port is a number from 0 to 65535 (0: any)")
    try:
        family = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((address, port))
            return s.getsockname()[1]
    except OSError as exc:  # in use, not an address of this machine, not an address at all
        raise ConfigError(
            f"cannot listen on {address}:{port} ({exc.strerror or exc}); choose another --port "
            "(or --port 0 for any free one) or --address"
        ) from None


def serve(
    path: str | Path | xr.Dataset,
    port: int = 5006,
    address: str = "127.0.0.1",
    show: bool = False,
    models: Sequence[str] = (),
    allow_incomplete: bool = False,
) -> None:
    """Serve the explorer over HTTP (blocking until interrupted).

    Binds to 127.0.0.1 unless ``address`` says otherwise; the store is opened once (lazily)
    and each browser session builds its own explorer on it. ``models`` are user model files
    (or modules) to load for the spectrum view: files named inside the store are never
    imported, so its user models show as unavailable unless given here.
    ``allow_incomplete``: a run still being written is shown as far as it has got (its
    other pixels missing; the field-wide masks wait for the finished run).
    """
    from specfit.errors import ConfigError

    if models:
        try:
            load_models(models)
        except (ImportError, SyntaxError, OSError, ValueError, KeyError) as exc:
            raise ConfigError(f"--models {' '.join(map(str, models))}: {exc}") from None
    ds = open_store(path, allow_incomplete=allow_incomplete)
    port = _free_to_bind(address, port)
    origins = [f"{address}:{port}", f"localhost:{port}", f"127.0.0.1:{port}"]
    print(f"specfit explorer: http://{address}:{port}/", flush=True)
    pn.serve(
        {"/": lambda: explorer(ds)},
        port=port,
        address=address,
        show=show,
        websocket_origin=origins,
        title="specfit explorer",
        threaded=False,
    )
