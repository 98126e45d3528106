"""Heatmaps of every parameter, uncertainty and statistic (holoviews), and their exports.

``heatmap`` builds one map with its histogram for either backend; ``plot_results`` writes a
PNG per map (matplotlib backend) and one self-contained HTML page holding all maps (bokeh).
"""

from __future__ import annotations

import html
import json
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import holoviews as hv
import numpy as np
import xarray as xr

from specfit.viz.data import (
    AxisInfo,
    axis_info,
    clip_limits,
    map_catalog,
    map_histogram,
    map_spec,
    map_title,
    map_values,
    open_store,
    sample_step,
)

__all__ = ["image_element", "histogram_element", "heatmap", "plot_results", "decimate"]

_CMAP = "viridis"
# Masked / failed pixels: light grey, so they read as "no value", not as a colour.
NAN_COLOUR = "#dddddd"  # missing pixels on the colour maps (no colour of viridis or inferno)
NAN_ON_GREY = "#6a8fc7"  # missing pixels on a grey-scale image (a colour it does not have)
# One distinct colour per integer code (status, best model).
CODE_COLOURS = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
]  # fmt: skip


def decimate(
    da: xr.DataArray, max_pixels: int | None, categorical: bool = False
) -> tuple[xr.DataArray, int]:
    """Shrink a map so neither side exceeds ``max_pixels``; lazy.

    Values are block-averaged (NaN-aware); integer codes (``categorical``) are subsampled
    instead (each block's centre pixel), since the mean of two status codes means nothing. Returns the map and the
    integer factor used (1 = untouched). Exported pages and PNGs use this so a 4096 x 4096
    run does not embed 16 M values per map.
    """
    if max_pixels is None:
        return da, 1
    factor = int(np.ceil(max(da.sizes["y"], da.sizes["x"]) / max_pixels))
    if factor <= 1:
        return da, 1
    ny, nx = (da.sizes["y"] // factor) * factor, (da.sizes["x"] // factor) * factor
    if categorical:
        # The code at each block's centre pixel (image_element places the block at its
        # centre: the first pixel was drawn (factor - 1) / 2 px off; a probe)
        c = factor // 2
        return da.isel(y=slice(c, ny, factor), x=slice(c, nx, factor)), factor
    # coarsen's mean skips NaN for floats: a block with one good pixel keeps its value.
    return da.coarsen(y=factor, x=factor, boundary="trim").mean(), factor


def image_element(
    da: xr.DataArray, axes: AxisInfo, factor: int = 1, label: str | None = None
) -> hv.Image:
    """An ``hv.Image`` of a (y, x) map on the store's axes (arcsec where known, else px).

    ``factor`` is the decimation already applied to ``da`` so its centres land on the
    right axis positions.
    """
    ny, nx = da.sizes["y"], da.sizes["x"]
    # Centre of each block of `factor` original pixels.
    xs = axes.x0 + axes.dx * (np.arange(nx) * factor + (factor - 1) / 2.0)
    ys = axes.y0 + axes.dy * (np.arange(ny) * factor + (factor - 1) / 2.0)
    da = da.assign_coords(x=xs, y=ys)
    if axes.dx < 0:
        da = da.isel(x=slice(None, None, -1))
    if axes.dy < 0:
        da = da.isel(y=slice(None, None, -1))
    vname = str(da.name or "value")
    units = da.attrs.get("units", "")
    units = "" if units == "1" else units  # dimensionless: no "(1)" on the axis
    vdim = hv.Dimension(vname, label=label or da.attrs.get("label", vname), unit=units or None)
    # The bounds from the pixel size: holoviews infers them from the centres' spacing, which
    # a single row or column does not have (a 1 x N store failed with 'cannot convert float
    # NaN to integer').
    hx, hy = abs(axes.dx) * factor / 2.0, abs(axes.dy) * factor / 2.0
    bounds = (xs.min() - hx, ys.min() - hy, xs.max() + hx, ys.max() + hy)
    return hv.Image(
        da,
        kdims=[hv.Dimension("x", label=axes.xlabel), hv.Dimension("y", label=axes.ylabel)],
        vdims=[vdim],
        bounds=tuple(float(b) for b in bounds),
    )


def histogram_element(
    values: xr.DataArray | np.ndarray, lim: tuple[float, float], vdim: hv.Dimension, bins: int = 50
) -> hv.Histogram:
    """Histogram of a map's finite values inside the colour limits (outside ones left out).
    A large map is counted on a regular sample (:func:`specfit.viz.data.map_histogram`): the
    axis says so (its counts read as pixels before; a probe)."""
    counts, edges = map_histogram(values, lim, bins)
    step = sample_step(values)
    label = f"count (1 px in {step} along y and x)" if step > 1 else "count"
    return hv.Histogram((edges, counts), kdims=[vdim], vdims=[hv.Dimension("count", label=label)])


def heatmap(
    ds: xr.Dataset | str | Path,
    name: str,
    pvalue_threshold: float | None = None,
    mask_status: bool = True,
    percentiles: tuple[float, float] = (1.0, 99.0),
    max_pixels: int | None = 1024,
    backend: str = "bokeh",
    significance: str | None = None,
    solar: bool = True,
) -> hv.Layout:
    """One map as a colour-barred heatmap beside its histogram.

    Parameters
    ----------
    ds
        Results Dataset or store path.
    name
        A map name from :func:`specfit.viz.data.map_catalog` (e.g. ``m1_index``).
    pvalue_threshold, mask_status, significance
        Masks, as in :func:`specfit.viz.data.map_values`.
    percentiles
        Colour limits clip the values at these percentiles (ignored for status/best model).
    max_pixels
        Decimate larger maps to at most this many pixels per side (None: full resolution).
    backend
        ``"bokeh"`` or ``"matplotlib"``: which backend's options to set.
    solar
        Put helioprojective arcsec on the axes when the store has them.
    """
    _load_backend(backend)
    ds = open_store(ds)
    spec = map_spec(ds, name)  # an unknown name: a KeyError listing the maps (was StopIteration)
    da = map_values(
        ds,
        name,
        pvalue_threshold=pvalue_threshold,
        mask_status=mask_status,
        significance=significance,
    )
    axes = axis_info(ds, solar=solar)
    small, factor = decimate(da, max_pixels, categorical=spec.categorical)
    small = small.compute()
    values = np.asarray(small.values)
    if spec.categorical:
        finite = values[np.isfinite(values)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        n = int(hi - lo) + 1
        if n > len(CODE_COLOURS):  # too many codes for distinct colours: a plain ramp
            cmap, levels = _CMAP, {}
        else:
            cmap, levels = CODE_COLOURS[:n], {"color_levels": n}
        lim = (lo - 0.5, hi + 0.5)
        codes = list(range(int(lo), int(hi) + 1))  # ticks on the codes, not 0.5, 1.0, 1.5
    else:
        lim = clip_limits(values, percentiles)
        cmap = _CMAP
        levels = {}
        codes = None
    if not np.all(np.isfinite(lim)):
        lim = (0.0, 1.0)
    small.attrs = da.attrs
    img = image_element(small, axes, factor)
    hist = histogram_element(values, lim, img.vdims[0])
    title = map_title(ds, name) + (flag_legend(ds[spec.source]) if spec.categorical else "")
    if backend == "bokeh":
        img = img.opts(
            backend="bokeh", cmap=cmap, clim=lim, colorbar=True, title=title, tools=["hover"],
            width=520, height=max(200, int(520 * axes.ny / max(axes.nx, 1))),
            data_aspect=1, clabel=spec.units if spec.units not in ("", "1") else " ", **levels,
            clipping_colors={"NaN": NAN_COLOUR},
        )  # fmt: skip
        hist = hist.opts(backend="bokeh", width=300, height=260, title=f"{spec.label} histogram")
    else:
        import textwrap

        title = textwrap.fill(title, 52)  # a long title ran over the histogram beside it
        if codes is not None:
            levels = {**levels, "cbar_ticks": codes}
        img = img.opts(
            backend="matplotlib", cmap=cmap, clim=lim, colorbar=True, title=title,
            aspect="equal", fig_inches=5, clabel=spec.units if spec.units not in ("", "1") else " ", **levels,
            xrotation=30, clipping_colors={"NaN": NAN_COLOUR},
        )  # fmt: skip
        hist = hist.opts(backend="matplotlib", aspect=1.2, fig_inches=3.5, title="histogram")
    layout = (img + hist).opts(backend=backend, shared_axes=False)
    if backend == "matplotlib":
        layout = layout.opts(backend=backend, sublabel_format="")
    return layout


def flag_legend(da: xr.DataArray, max_flags: int = 4, present=None) -> str:
    """' (0 m1, 1 m2)' from CF flag attrs when there are few flags, else ''. ``present``:
    the codes a map holds; only those are named (a status map declares 11 codes, of which a
    map shows two or three)."""
    values = da.attrs.get("flag_values")
    meanings = str(da.attrs.get("flag_meanings", "")).split()
    if values is None or len(meanings) != len(values):
        return ""
    pairs = list(zip(values, meanings, strict=True))
    if present is not None:
        pairs = [(v, m) for v, m in pairs if v in set(present)]
    if not pairs or len(pairs) > max_flags:
        return ""
    return " (" + ", ".join(f"{v} {m}" for v, m in pairs) + ")"


def _load_backend(backend: str) -> None:
    """Import a holoviews plotting backend so its options and renderer are registered."""
    if backend == "bokeh":
        import holoviews.plotting.bokeh  # noqa: F401
    elif backend == "matplotlib":
        import matplotlib

        # Only pick a non-interactive backend if pyplot has not been set up by the user.
        if "matplotlib.pyplot" not in __import__("sys").modules:
            matplotlib.use("Agg")
        import holoviews.plotting.mpl  # noqa: F401
    else:
        raise ValueError(f"backend must be 'bokeh' or 'matplotlib', got {backend!r}")


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def plot_results(
    path_or_ds: str | Path | xr.Dataset,
    out_dir: str | Path,
    maps: Sequence[str] | None = None,
    pvalue_threshold: float | None = None,
    mask_status: bool = True,
    percentiles: tuple[float, float] = (1.0, 99.0),
    max_pixels: int | None = 1024,
    png: bool = True,
    html_page: bool = True,
    dpi: int = 100,
    significance: str | None = None,
) -> list[Path]:
    """Write a PNG per map and one self-contained HTML page with all maps.

    Parameters
    ----------
    path_or_ds
        Results store path or Dataset.
    out_dir
        Created if missing. PNGs are named ``<map>.png``; the page is ``maps.html`` (bokeh,
        JavaScript inlined, so it opens without a server or network).
    maps
        Map names to draw (default: all of :func:`specfit.viz.data.map_catalog`).
    pvalue_threshold, mask_status, percentiles, max_pixels, significance
        As in :func:`heatmap` (``significance``: ``none``, ``pixel``, ``fdr`` or ``global``,
        see :func:`specfit.viz.data.map_values`).

    Returns
    -------
    list of Path
        The files written, PNGs first, then the HTML page.
    """
    _load_backend("matplotlib")
    import matplotlib.pyplot as plt

    ds = open_store(path_or_ds)
    catalog = map_catalog(ds)
    names = [s.name for s in catalog] if maps is None else list(maps)
    known = {s.name for s in catalog}
    unknown = [n for n in names if n not in known]
    if unknown:
        from specfit.errors import ConfigError

        raise ConfigError(f"unknown map(s) {unknown}; available: {', '.join(sorted(known))}")
    from specfit.workspace import check_product_folder

    out = Path(out_dir)
    check_product_folder(out, ds, "--out")
    targets = [out / f"{_safe_name(n)}.png" for n in names] if png else []
    targets += [out / "maps.html"] if html_page else []
    ours = _check_plot_folder(out, targets)
    out.mkdir(parents=True, exist_ok=True)
    marker = out / PLOT_MARKER
    # the names about to be written go into the marker first: an interrupted plot leaves a
    # marker that lets the same command replace what it had written
    ours.update({t.name: None for t in targets})
    marker.write_text(json.dumps(ours, indent=0, sort_keys=True) + "\n")
    written: list[Path] = []
    kwargs = dict(
        pvalue_threshold=pvalue_threshold,
        significance=significance,
        mask_status=mask_status,
        percentiles=percentiles,
        max_pixels=max_pixels,
    )
    with warnings.catch_warnings():
        # a map without one finite value (e.g. every tail on its bound: no error) is drawn
        # empty; numpy's note on it from inside the plotting library says nothing more
        warnings.filterwarnings("ignore", "All-NaN slice encountered", RuntimeWarning)
        if png:
            renderer = hv.renderer("matplotlib").instance(dpi=dpi)
            for name in names:
                layout = heatmap(ds, name, backend="matplotlib", **kwargs)
                target = out / f"{_safe_name(name)}.png"
                renderer.save(layout, str(target.with_suffix("")), fmt="png")
                written.append(target)
                plt.close("all")
        if html_page:
            written.append(_write_html(ds, names, out / "maps.html", kwargs))
    # each file as written (size, mtime): one replaced since by someone else is not ours
    ours.update({t.name: _stamp(t) for t in written})
    marker.write_text(json.dumps(ours, indent=0, sort_keys=True) + "\n")
    _warn_earlier_pngs(out, ours, {t.name for t in written})
    return written


def _warn_earlier_pngs(out: Path, ours: dict, now: set[str]) -> None:
    """Name the PNGs an earlier plot wrote into ``out`` that this one did not redraw (maps
    the store no longer has, or of another store): they stay, beside maps they may not
    belong with (a probe found m2 maps of a replaced run beside the new run's m1 maps)."""
    import logging

    left = sorted(
        n
        for n in ours
        if n.endswith(".png")
        and n not in now
        and (out / n).is_file()
        and ours[n] is not None
        and list(ours[n]) == _stamp(out / n)  # as specfit wrote it, not the user's since
    )
    if left:
        shown = ", ".join(left[:4]) + (f" and {len(left) - 4} more" if len(left) > 4 else "")
        logging.getLogger("specfit").warning(
            "%s also holds %d PNG(s) an earlier specfit plot wrote that this one did not draw "
            "(%s): they may belong to another run or store; they stay: remove them, or plot "
            "into an empty folder",
            out,
            len(left),
            shown,
        )


PLOT_MARKER = ".specfit-plots.json"  # the files specfit plot wrote in a folder (it may replace)


def _stamp(path: Path) -> list:
    """A written file's size and content hash (not its time: a copy of the folder keeps
    specfit's files specfit's)."""
    import hashlib

    return [path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest()[:32]]


def _check_plot_folder(out: Path, targets: list[Path]) -> dict[str, list[int] | None]:
    """The files specfit plot wrote in ``out`` before (its marker: name -> size and content
    hash as written, None while being written); raise a StoreError naming the files it would
    overwrite that it did not write, or that were replaced since (specfit never overwrites
    those)."""
    from specfit.errors import StoreError

    if out.exists() and not out.is_dir():
        raise StoreError(f"plot output {out} is a file, not a folder; choose another --out")
    try:
        raw = json.loads((out / PLOT_MARKER).read_text())
        ours = dict(raw) if isinstance(raw, dict) else dict.fromkeys(raw)  # a list: names only
    except (OSError, ValueError, TypeError):
        ours = {}

    def not_ours(t: Path) -> bool:
        if not t.exists():
            return False
        if t.name not in ours:
            return True
        return ours[t.name] is not None and list(ours[t.name]) != _stamp(t)

    theirs = [t.name for t in targets if not_ours(t)]
    if theirs:
        shown = ", ".join(theirs[:5]) + (f" and {len(theirs) - 5} more" if len(theirs) > 5 else "")
        raise StoreError(
            f"{out} already holds {shown}, not written by specfit plot (or changed since it "
            "wrote them); specfit never overwrites files it did not write: choose another "
            "--out or move them"
        )
    return ours


def _mask_text(kwargs: dict) -> str:
    """The significance mask in words, e.g. ``fdr (the run's level)`` or ``pixel at 0.01``."""
    thr = kwargs["pvalue_threshold"]
    mode = kwargs["significance"] or ("pixel" if thr is not None else "none")
    if mode == "none":
        return "none"
    return f"{mode} at {thr}" if thr is not None else f"{mode} (the run's level)"


def _write_html(ds: xr.Dataset, names: list[str], target: Path, kwargs: dict) -> Path:
    _load_backend("bokeh")
    from bokeh.embed import file_html
    from bokeh.layouts import column, row
    from bokeh.models import Div
    from bokeh.resources import INLINE

    specs = {s.name: s for s in map_catalog(ds)}
    blocks = []
    version = html.escape(str(ds.attrs.get("specfit_version", "")))
    blocks.append(
        Div(
            text=f"<h1>specfit results</h1><p>specfit {version}; {ds.sizes['y']} x "
            f"{ds.sizes['x']} px; {len(names)} maps. Colour limits at percentiles "
            f"{kwargs['percentiles']}; significance mask: {_mask_text(kwargs)}; "
            f"status mask: {kwargs['mask_status']}.</p>"
        )
    )
    for name in names:
        layout = heatmap(ds, name, backend="bokeh", **kwargs)
        spec = specs[name]
        blocks.append(
            Div(
                text=f'<h2 id="{html.escape(name)}">{html.escape(spec.label)} ({html.escape(name)})</h2>'
            )
        )
        img, hist = layout
        blocks.append(row(hv.render(img, backend="bokeh"), hv.render(hist, backend="bokeh")))
    page = file_html(column(*blocks), INLINE, title="specfit results")
    # Importing panel adds a module-shim <script src="static/..."> that only a panel server
    # can serve; the page's plots are plain bokeh (inlined), so drop the dangling reference.
    page = re.sub(r'<script[^>]*src="static/[^"]*"[^>]*>\s*</script>', "", page)
    target.write_text(page, encoding="utf-8")
    return target
