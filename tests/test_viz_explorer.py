# ruff: noqa: F401, F811  (pytest fixtures imported from conftest_viz, re-used as arguments)
"""The explorer's callbacks, driven through its holoviews streams and panel widgets.

A tap at (x, y) must show that pixel's stored spectrum and each model evaluated from its
stored parameters (checked against the formulas in conftest_viz, not against specfit code).
"""

from __future__ import annotations

import holoviews as hv
import numpy as np
import pytest

from conftest_viz import CONVERGED, MODELS, ref_model, viz_store, viz_store_plain
from specfit.store import open_results
from specfit.viz.app import build_explorer, explorer


@pytest.fixture()
def parts(viz_store):
    return build_explorer(open_results(viz_store))


def _curves(overlay: hv.Overlay) -> dict[str, hv.Curve]:
    return {c.label: c for c in overlay if isinstance(c, hv.Curve)}


@pytest.mark.parametrize("iy, ix", [(3, 5), (10, 1)])
def test_tap_shows_stored_spectrum_and_models(parts, viz_store, iy, ix):
    ds = open_results(viz_store)
    x, y = float(ds["hpc_x"].values[iy, ix]), float(ds["hpc_y"].values[iy, ix])
    # Tap a little off the pixel centre, as a mouse would.
    parts.tap.event(x=x + 0.2, y=y - 0.2)
    assert parts.pixel["pixel"] == (iy, ix)
    curves = _curves(parts.spectrum[()])
    f = ds["freq"].values
    data = curves["data"]
    np.testing.assert_array_equal(data.dimension_values(0), f)
    np.testing.assert_array_equal(data.dimension_values(1), ds["power"].values[:, iy, ix])
    for alias, info in MODELS.items():
        params = {p: float(ds[f"{alias}_{p}"].values[iy, ix]) for p in info["params"]}
        c = curves[f"{alias} {info['name']}"]
        np.testing.assert_allclose(
            c.dimension_values(1), ref_model(info["name"], f, params), rtol=1e-6
        )
    assert {"m2 power law", "m2 tail", "m2 bump", "m1 power law", "m1 tail"} <= set(curves)
    title = parts.spectrum[()].opts.get().kwargs["title"]
    assert f"x={ix}, y={iy}" in title
    md = parts.table.object
    assert f"x={ix}, y={iy}" in md and "bump_center" in md and "lrt_pvalue" in md
    # Residual curves are data / model.
    res = [e for e in parts.residuals[()] if isinstance(e, hv.Curve)]
    params = {p: float(ds[f"m2_{p}"].values[iy, ix]) for p in MODELS["m2"]["params"]}
    want = ds["power"].values[:, iy, ix] / ref_model("powerlaw_tail_lorentzian", f, params)
    np.testing.assert_allclose(res[-1].dimension_values(1), want, rtol=1e-5)


def test_tap_outside_keeps_current_pixel(parts):
    before = parts.pixel["pixel"]
    parts.tap.event(x=1e6, y=1e6)
    assert parts.pixel["pixel"] == before


def test_widgets_mask_the_heatmap(parts, viz_store):
    ds = open_results(viz_store)
    parts.widgets["map"].value = "m2_index"
    stored = ds["m2_index"].values.astype(float)
    vals = parts.heatmap[()].dimension_values(2, flat=False)  # (y, x) as stored
    ok = np.isin(ds["m2_status"].values, CONVERGED)
    np.testing.assert_array_equal(np.isfinite(vals), ok & np.isfinite(stored))
    np.testing.assert_allclose(vals[ok], stored[ok], rtol=1e-6)
    parts.widgets["pvalue"].value = 0.05
    vals = parts.heatmap[()].dimension_values(2, flat=False)
    keep = ok & (ds["lrt_pvalue"].values <= 0.05)
    np.testing.assert_array_equal(np.isfinite(vals), keep)
    np.testing.assert_allclose(vals[keep], stored[keep], rtol=1e-6)
    # The colour limits follow the percentile slider.
    parts.widgets["clip"].value = (10.0, 90.0)
    clim = parts.heatmap[()].opts.get().kwargs["clim"]
    np.testing.assert_allclose(clim, np.percentile(stored[keep], [10, 90]), rtol=1e-6)


def test_power_map_and_density_views(parts, viz_store):
    ds = open_results(viz_store)
    f = ds["freq"].values
    parts.widgets["period"].value = 4.2
    img = parts.power[()]
    k = np.argmin(np.abs(1.0 / f / 60.0 - 4.2))  # nearest stored period (4.29 min)
    want = np.log10(ds["power"].values[k].astype(float))
    np.testing.assert_allclose(img.dimension_values(2, flat=False), want, rtol=1e-5)
    assert "4.29 min" in img.opts.get().kwargs["title"]
    parts.widgets["power_mode"].value = "band"
    parts.widgets["band"].value = (3.0, 6.0)
    per = 1.0 / f / 60.0
    sel = (per >= 3.0) & (per <= 6.0)
    want = np.log10(ds["power"].values[sel].astype(float).mean(axis=0))
    np.testing.assert_allclose(parts.power[()].dimension_values(2, flat=False), want, rtol=1e-5)
    hx, hy = ds["hpc_x"].values, ds["hpc_y"].values
    parts.box.event(bounds=(hx[1, 2] - 0.1, hy[1, 2] - 0.1, hx[4, 6] + 0.1, hy[4, 6] + 0.1))
    title = parts.density[()].opts.get().kwargs["title"]
    assert "20 spectra" in title and "x 2:7, y 1:5" in title


def test_explorer_without_hpc_or_cube(viz_store_plain):
    app = explorer(open_results(viz_store_plain))
    text = repr(app)
    assert "specfit-heatmap" in repr(app.objects[1].objects[0].objects[0].css_classes)
    assert "Markdown" in text


def test_power_sigma_band_and_cube_grid_guard(viz_store):
    from specfit.viz.app import spectrum_elements
    from specfit.viz.data import pixel_spectrum, pixel_timeseries

    ds = open_results(viz_store)
    ds = ds.assign(power_sigma=0.5 * ds["power"])
    ps = pixel_spectrum(ds, 2, 3)
    np.testing.assert_array_equal(ps.sigma, 0.5 * ds["power"].values[:, 2, 3])
    band = next(e for e in spectrum_elements(ps)[0] if isinstance(e, hv.Area))
    np.testing.assert_allclose(band.dimension_values(1), 0.5 * ps.power, rtol=1e-6)
    np.testing.assert_allclose(band.dimension_values(2), 1.5 * ps.power, rtol=1e-6)
    # A cube on another pixel grid gives no time series rather than a wrong one.
    small = ds.isel(y=slice(0, 5))
    assert pixel_timeseries(small, 1, 1) is None


def test_rasterized_explorer_taps_and_defers_power_map(viz_store):
    """The large-store path (datashader rasterize, power map on request) on a small store."""
    ds = open_results(viz_store)
    parts = build_explorer(ds, rasterize_above=10)
    assert parts.widgets["power_go"].clicks == 0
    assert "press" in parts.power[()].opts.get().kwargs["title"]
    parts.widgets["power_go"].clicks += 1
    assert "min" in parts.power[()].opts.get().kwargs["title"]
    x, y = float(ds["hpc_x"].values[7, 9]), float(ds["hpc_y"].values[7, 9])
    parts.tap.event(x=x, y=y)
    data = next(c for c in parts.spectrum[()] if c.label == "data")
    np.testing.assert_array_equal(data.dimension_values(1), ds["power"].values[:, 7, 9])
    # The rasterised map holds the stored values (nearest-pixel at this size).
    img = parts.heatmap[()]
    vals = img.dimension_values(2)
    assert np.nanmax(vals) <= np.nanmax(ds["m1_index"].values) + 1e-6
    assert np.nanmin(vals) >= np.nanmin(ds["m1_index"].values) - 1e-6


def test_serve_refuses_what_it_cannot_listen_on_in_one_line(viz_store, tmp_path):
    """A port in use, out of range or an address that is not one, and a --models file that
    does not import: a ConfigError before anything is printed or served (tracebacks before)."""
    import socket

    from specfit.errors import ConfigError
    from specfit.viz.app import serve

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(ConfigError, match=rf"cannot listen on 127.0.0.1:{port}"):
            serve(viz_store, port=port)
    for kw, match in (
        ({"port": -1}, "from 0 to 65535"),
        ({"port": 70000}, "from 0 to 65535"),
        ({"address": "999.1.1.1"}, "cannot listen on 999.1.1.1"),
    ):
        with pytest.raises(ConfigError, match=match):
            serve(viz_store, **kw)
    bad = tmp_path / "bad.py"
    bad.write_text("def (\n")
    with pytest.raises(ConfigError, match=r"--models .*bad.py: .*invalid syntax"):
        serve(viz_store, models=[str(bad)])


def test_the_package_gives_the_explorer_function_in_any_order():
    """`specfit.viz.explorer` and `from specfit.viz import explorer` are the function whatever
    was imported before (the function's module was a submodule named `explorer`, which became
    the package's attribute once imported: the docs' notebook example failed with 'module'
    object is not callable after `serve` or `build_explorer` had been used)."""
    import subprocess
    import sys

    check = "assert callable(e) and e.__name__ == 'explorer', e\n"
    orders = [
        "import specfit.viz as v; e = v.explorer; e = v.explorer\n",
        "import specfit.viz as v; v.serve; e = v.explorer\n",
        "from specfit.viz.app import build_explorer\nfrom specfit.viz import explorer as e\n",
        "from specfit.viz import build_explorer, serve\nfrom specfit.viz import explorer as e\n",
    ]
    for code in orders:
        r = subprocess.run(
            [sys.executable, "-c", code + check], capture_output=True, text=True, timeout=300
        )
        assert r.returncode == 0, (code, r.stderr[-500:])


def test_code_maps_name_their_codes_and_have_no_empty_unit(viz_store):
    """The explorer drew best_model as bare numbers ('best model', the histogram's axis
    'm1 fit status ()'), where specfit plot's title names the codes (explorer reviewer)."""
    ds = open_results(viz_store)
    ds["best_model"].attrs.update(flag_values=[-1, 0, 1], flag_meanings="none m1 m2")
    parts = build_explorer(ds)
    parts.widgets["map"].value = "best_model"
    title = parts.heatmap[()].opts.get().kwargs["title"]
    # the codes the map shows (no pixel is -1 here)
    assert set(np.unique(ds["best_model"].values)) == {0, 1}
    assert title.startswith("best model (0 m1, 1 m2): click a pixel"), title
    parts.widgets["map"].value = "m1_status"
    axis = parts.histogram[()].kdims[0]
    assert axis.pprint_label == "m1 fit status", axis.pprint_label


def test_missing_pixels_are_not_drawn_as_the_brightest(viz_store):
    """The mean-intensity and power-map panels drew NaN pixels (masked, off-limb, tiles not
    yet written) white: the brightest value of the grey scale (an explorer helper's
    finding). They have the main map's NaN colour, and the grey image one it lacks."""
    from specfit.viz.maps import NAN_COLOUR, NAN_ON_GREY

    parts = build_explorer(open_results(viz_store))
    assert parts.mean.opts.get().kwargs["clipping_colors"] == {"NaN": NAN_ON_GREY}
    assert parts.power[()].opts.get().kwargs["clipping_colors"] == {"NaN": NAN_COLOUR}
    assert parts.heatmap[()].opts.get().kwargs["clipping_colors"] == {"NaN": NAN_COLOUR}


def test_field_wide_masks_of_an_unfinished_store_say_why_the_map_is_empty(demo_store):
    """On a store still being written, q-values and the global level do not exist yet (they
    are made from the whole field at the end): the fdr and global masks blanked every
    richer-model map with no word why (an explorer helper's finding)."""
    ds = open_results(demo_store).load()
    ds.attrs["complete"] = False
    for v in ds.data_vars:
        if v.endswith("_qvalue"):
            ds[v][:] = np.nan
        if v.endswith("_global"):
            ds[v][:] = -1
    parts = build_explorer(ds)
    parts.widgets["map"].value = "m2_index"
    for sig in ("fdr", "global"):
        parts.widgets["significance"].value = sig
        title = parts.heatmap[()].opts.get().kwargs["title"]
        assert f"the {sig} mask needs the finished run" in title, title
    parts.widgets["significance"].value = "pixel"
    assert "click a pixel" in parts.heatmap[()].opts.get().kwargs["title"]


def test_a_status_map_names_the_codes_it_shows(demo_store):
    """The status map declares 11 codes, more than a title can list, so it named none; it
    shows two or three (an explorer helper's finding): those are named now."""
    ds = open_results(demo_store)
    parts = build_explorer(ds)
    parts.widgets["map"].value = "m2_status"
    parts.widgets["status"].value = False  # show every code
    title = parts.heatmap[()].opts.get().kwargs["title"]
    codes = sorted(int(c) for c in np.unique(ds["m2_status"].values))
    attrs = ds["m2_status"].attrs
    names = dict(zip(attrs["flag_values"], attrs["flag_meanings"].split(), strict=True))
    assert 1 <= len(codes) <= 6
    assert "(" + ", ".join(f"{c} {names[c]}" for c in codes) + ")" in title, title


def test_explore_shows_a_run_still_being_written_when_asked(demo_store, tmp_path, monkeypatch):
    """`specfit explore` refused a store still being written, pointing only at Python's
    allow_incomplete=True, while `specfit info` reads it (an explorer helper's finding):
    --allow-incomplete now serves what is there."""
    import shutil
    import subprocess
    import sys

    import zarr

    from specfit.viz import app

    store = tmp_path / "results.zarr"
    shutil.copytree(demo_store, store)
    root = zarr.open_group(str(store), mode="r+")
    root["tiles_done"][0, 0] = 0
    root.attrs["complete"] = False
    zarr.consolidate_metadata(str(store))
    r = subprocess.run(
        [sys.executable, "-m", "specfit", "explore", str(store), "--port", "0"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 2 and "specfit explore --allow-incomplete" in r.stderr, r.stderr
    served = {}
    monkeypatch.setattr(app.pn, "serve", lambda pages, **kw: served.update(page=pages["/"]))
    with pytest.warns(UserWarning, match="incomplete"):
        app.serve(store, port=0, allow_incomplete=True)
    assert "page" in served


def test_large_maps_show_stored_codes_and_every_code_in_the_colour_range(tmp_path):
    """Explorer probe: on a rasterised (large) map the status codes were averaged into values
    that are no code (1.65 of 0, 1, 7), and zoomed in neighbours were blended (the hover
    disagreed with the clicked pixel); the colour range of a code map came from a strided
    sample, which missed rare codes (fit_failed drawn in the colour of converged)."""
    import zarr

    from conftest_viz import make_large_store

    store = make_large_store(tmp_path / "big.zarr", n=1100, nfreq=8, chunk=550)
    status = np.zeros((1100, 1100), np.int8)
    status[::2, ::2] = 7  # half the pixels' codes differ from their neighbours'
    status[1, 1] = 9  # one rare code, off the sample's stride
    zarr.open_group(str(store), mode="r+")["m1_status"][:] = status
    parts = build_explorer(open_results(store))
    parts.widgets["map"].value = "m1_status"
    img = parts.heatmap[()]
    shown = img.dimension_values(2)
    assert set(np.unique(shown[np.isfinite(shown)])) <= {0.0, 7.0, 9.0}, np.unique(shown)[:8]
    lo, hi = img.opts.get().kwargs["clim"]
    assert lo <= 0 and hi >= 9, (lo, hi)
    # its histogram counts a sample, and says so (its counts read as pixels)
    axis = parts.histogram[()].vdims[0]
    assert axis.pprint_label == "count (1 px in 2 along y and x)", axis.pprint_label


def test_a_many_model_legend_fits_and_derived_values_carry_units(viz_store):
    """With many models the spectrum legend (25 entries for the shipped seven-model config)
    ran up over the map and took its clicks: it now wraps into columns of at most 12. The
    statistics line gave periods without their unit (minutes)."""
    from specfit.viz.app import parameter_table, spectrum_elements
    from specfit.viz.data import pixel_spectrum

    ds = open_results(viz_store)
    ps = pixel_spectrum(ds, 3, 4)
    spectrum, _ = spectrum_elements(ps)
    n = len(spectrum)
    assert spectrum.opts.get().kwargs["legend_cols"] == max(1, -(-n // 12))
    many = dict(ps.models)
    for i in range(6):  # the same curves under more aliases, as a many-model store has
        for alias, mc in ps.models.items():
            many[f"{alias}_{i}"] = mc
    ps.models = many
    spectrum, _ = spectrum_elements(ps)
    assert len(spectrum) > 24 and spectrum.opts.get().kwargs["legend_cols"] >= 3
    table = parameter_table(pixel_spectrum(ds, 3, 4))
    if "m2_bump_period" in ds:
        assert "bump_period = " in table and " min" in table.split("bump_period = ")[1][:20]


def test_python_m_specfit_viz_gives_one_line_errors(tmp_path):
    """python -m specfit.viz printed a traceback for a missing or unfinished store, where
    specfit explore prints one line."""
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-m", "specfit.viz", str(tmp_path / "none.zarr")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith("python -m specfit.viz: error: results store"), r.stderr


def test_the_time_series_of_a_box_averaged_store_says_it_is_the_centre_pixel(viz_store):
    """With box 3 the spectrum averages 9 pixels while the time series is the centre pixel
    alone; the panel did not say so (explorer probe)."""
    from specfit.viz.app import _ensure_extension, _timeseries_element
    from specfit.viz.data import open_cube

    _ensure_extension()
    ds = open_results(viz_store)
    cube = open_cube(ds)
    assert cube is not None
    plain = _timeseries_element(ds, cube, 4, 7).opts.get().kwargs["title"]
    assert "box" not in plain
    ds.attrs["box"] = 3
    boxed = _timeseries_element(ds, cube, 4, 7).opts.get().kwargs["title"]
    assert boxed.endswith("(the centre of the 3 x 3 box the spectrum averages)"), boxed


def test_code_maps_are_drawn_in_distinct_colours(viz_store):
    """The explorer drew status and best-model codes on viridis, where at_bound (7) and
    stalled (8) were two yellows (explorer probe); specfit plot used distinct colours."""
    from specfit.viz.maps import CODE_COLOURS

    parts = build_explorer(open_results(viz_store))
    parts.widgets["map"].value = "m1_status"
    opts = parts.heatmap[()].opts.get().kwargs
    lo, hi = opts["clim"]
    assert opts["cmap"] == list(CODE_COLOURS[: int(round(hi - lo))])
    parts.widgets["map"].value = "m1_index"
    assert parts.heatmap[()].opts.get().kwargs["cmap"] == "viridis"
