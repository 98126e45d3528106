# ruff: noqa: F401, F811  (pytest fixtures imported from conftest_viz, re-used as arguments)
"""The data side of the viz layer and the explorer callbacks, without a browser.

References are independent of the code under test: the model formulas written out in
``conftest_viz``, numpy percentiles/histograms, and brute-force loops over pixels.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

from conftest_viz import (
    CONVERGED,
    MODELS,
    ref_model,
    viz_store,
    viz_store_plain,
)
from specfit.store import open_results
from specfit.viz import data as D


@pytest.fixture()
def ds(viz_store):
    return open_results(viz_store)


@pytest.fixture()
def ds_plain(viz_store_plain):
    return open_results(viz_store_plain)


def _stored_params(ds: xr.Dataset, alias: str, iy: int, ix: int) -> dict[str, float]:
    return {p: float(ds[f"{alias}_{p}"].values[iy, ix]) for p in MODELS[alias]["params"]}


def test_catalog_lists_every_map_with_units(ds):
    specs = {s.name: s for s in D.map_catalog(ds)}
    yx_vars = {str(v) for v in ds.data_vars if ds[v].dims == ("y", "x")}
    # Every stored (y, x) variable is reachable, and nothing 3-D sneaks in.
    assert yx_vars <= {s.source for s in specs.values()}
    assert "power" not in specs
    assert specs["m2_bump_period"].units == "min"
    assert specs["m1_amplitude"].transform == "log10"
    assert specs["m1_status"].categorical and specs["best_model"].categorical
    assert specs["m1_tail"].units == "(DN/s)^2/Hz"
    # Parameters come before their errors, and m1's before m2's.
    names = [s.name for s in D.map_catalog(ds)]
    assert names.index("m1_index") < names.index("m1_index_err") < names.index("m2_index")


def test_bump_period_derived_when_not_stored(ds):
    ds2 = ds.drop_vars("m2_bump_period")
    spec = next(s for s in D.map_catalog(ds2) if s.name == "m2_bump_period")
    assert spec.transform == "derived" and spec.units == "min"
    got = D.map_values(ds2, "m2_bump_period", mask_status=False).values
    want = 1.0 / np.exp(ds["m2_bump_center"].values) / 60.0
    np.testing.assert_allclose(got, want, rtol=1e-5)
    # The store's own derived map agrees with the derivation (same truth).
    np.testing.assert_allclose(got, ds["m2_bump_period"].values, rtol=1e-5)


def test_map_values_masks_and_transforms(ds):
    status = ds["m2_status"].values
    lrt = ds["lrt_pvalue"].values
    raw = ds["m2_amplitude"].values.astype(float)
    got = D.map_values(ds, "m2_amplitude", pvalue_threshold=0.05, mask_status=True).values
    keep = np.isin(status, CONVERGED) & (lrt <= 0.05)
    np.testing.assert_allclose(got[keep], np.log10(raw[keep]), rtol=1e-6)
    assert np.all(np.isnan(got[~keep]))
    # The p-value mask leaves the base model (first alias) alone.
    m1 = D.map_values(ds, "m1_index", pvalue_threshold=0.05, mask_status=False).values
    np.testing.assert_array_equal(np.isnan(m1), np.isnan(ds["m1_index"].values))
    # Without masks, the failed pixel is still NaN (its stored value) and the rest is data.
    nomask = D.map_values(ds, "m2_index", mask_status=False).values
    assert np.isfinite(nomask).sum() == nomask.size - 1


def test_test_maps_of_several_pairs_are_never_masked(ds):
    """With three models each pair's test maps carry the bigger model's alias (m3_lrt_pvalue):
    they were masked by that model's status and by their own significance (`plot --pvalue`
    showed 6 of 92 p-values; export reviewer), where a two-model store's lrt_pvalue never is."""
    models = json.loads(ds.attrs["models"])
    models["m3"] = models["m2"]
    three = ds.copy()
    three.attrs["models"] = json.dumps(models)
    for v in list(ds.data_vars):
        if str(v).startswith("m2_"):
            three["m3_" + str(v)[3:]] = ds[v]
    three["m3_status"] = xr.full_like(ds["m2_status"], 99)  # no m3 fit converged
    three["lrt_stat"] = -2 * np.log(ds["lrt_pvalue"])  # (this fixture stores no statistic)
    for t in ("lrt_pvalue", "lrt_stat", "ftest_pvalue"):
        three[f"m2_{t}"] = three[f"m3_{t}"] = three[t]
        three = three.drop_vars(t)
    three["best_model"].attrs["nested_pairs"] = "m1:m2 m1:m3"
    names = {spec.name: spec for spec in D.map_catalog(three)}
    finite = np.isfinite(ds["lrt_pvalue"].values)
    for var in ("m2_lrt_pvalue", "m3_lrt_pvalue", "m3_lrt_stat", "m3_ftest_pvalue"):
        assert names[var].alias is None
        assert names[var].label.startswith(f"{var[:2]} vs m1: ")
        got = D.map_values(three, var, pvalue_threshold=0.05, mask_status=True).values
        np.testing.assert_array_equal(np.isfinite(got), finite)
    # the model's own maps stay masked by its status
    assert np.isnan(D.map_values(three, "m3_index", mask_status=True).values).all()


def test_map_values_unknown_name_is_clear(ds):
    with pytest.raises(KeyError, match="no map 'm3_index'.*available: .*m1_index"):
        D.map_values(ds, "m3_index")


def test_clip_limits_match_numpy(ds):
    da = D.map_values(ds, "m1_index", mask_status=False)
    lo, hi = D.clip_limits(da, (2.0, 98.0))
    want = np.nanpercentile(ds["m1_index"].values, [2.0, 98.0])
    np.testing.assert_allclose([lo, hi], want, rtol=1e-6)
    # Constant maps still get a usable range; all-NaN maps say so with NaN.
    assert D.clip_limits(np.ones((3, 3))) == (0.5, 1.5)
    assert all(np.isnan(D.clip_limits(np.full((3, 3), np.nan))))


def test_axis_info_and_pixel_index_roundtrip(ds, ds_plain):
    axes = D.axis_info(ds)
    assert axes.solar and "arcsec" in axes.xlabel
    hx, hy = ds["hpc_x"].values, ds["hpc_y"].values
    for iy in range(ds.sizes["y"]):
        for ix in range(ds.sizes["x"]):
            assert D.pixel_index(axes, hx[iy, ix], hy[iy, ix]) == (iy, ix)
            # Anywhere inside the pixel (less than half a pixel off) maps to it too.
            assert D.pixel_index(axes, hx[iy, ix] + 0.29, hy[iy, ix] - 0.29) == (iy, ix)
    assert D.pixel_index(axes, hx[0, 0] - 5.0, hy[0, 0]) is None
    plain = D.axis_info(ds_plain)
    assert not plain.solar and D.pixel_index(plain, 3.4, 2.6) == (3, 3)
    # A rotated grid is not separable: fall back to pixel axes rather than mislabel.
    rot = ds.assign_coords(hpc_x=ds["hpc_x"] + 0.3 * ds["y"], hpc_y=ds["hpc_y"])
    assert not D.axis_info(rot).solar
    # A small roll (AIA's: < 0.1 px across the map) keeps the solar axes.
    roll = ds.assign_coords(
        hpc_x=ds["hpc_x"] + 0.004 * ds["y"], hpc_y=ds["hpc_y"] - 0.003 * ds["x"]
    )
    assert D.axis_info(roll).solar


def test_region_from_bounds(ds):
    axes = D.axis_info(ds)
    hx, hy = ds["hpc_x"].values, ds["hpc_y"].values
    # A box from the centre of pixel (2, 3) to just past the centre of (5, 8).
    region = D.region_from_bounds(axes, (hx[2, 3], hy[2, 3], hx[5, 8] + 0.1, hy[5, 8] + 0.1))
    assert region == ((2, 6), (3, 9))
    assert (
        D.region_from_bounds(axes, (hx[0, 0] + 0.1, hy[0, 0] + 0.1, hx[0, 0] + 0.2, hy[0, 0] + 0.2))
        is None
    )
    assert D.region_from_bounds(axes, None) is None


@pytest.mark.parametrize("iy, ix", [(3, 5), (0, 0), (11, 15)])
def test_pixel_spectrum_equals_store_and_reference_model(ds, iy, ix):
    ps = D.pixel_spectrum(ds, iy, ix)
    f = ds["freq"].values
    np.testing.assert_array_equal(ps.power, ds["power"].values[:, iy, ix].astype(float))
    np.testing.assert_array_equal(ps.freq, f)
    for alias, info in MODELS.items():
        mc = ps.models[alias]
        params = _stored_params(ds, alias, iy, ix)
        want = ref_model(info["name"], f, params)
        np.testing.assert_allclose(mc.model, want, rtol=1e-6)
        # Components add up to the model; the bump exists only for m2.
        np.testing.assert_allclose(sum(mc.components.values()), want, rtol=1e-6)
        assert ("bump" in mc.components) == (alias == "m2")
        np.testing.assert_allclose(mc.residual, ps.power / want, rtol=1e-6)
        for p, (val, err, _units) in mc.params.items():
            assert val == pytest.approx(params[p])
            assert err == pytest.approx(float(ds[f"{alias}_{p}_err"].values[iy, ix]))
    assert ps.comparison["lrt_pvalue"] == pytest.approx(float(ds["lrt_pvalue"].values[iy, ix]))
    assert f"x={ix}, y={iy}" in ps.title


def test_pixel_spectrum_failed_and_unknown_models_do_not_raise(ds, tmp_path):
    nx = ds.sizes["x"]
    ps = D.pixel_spectrum(ds, 0, nx - 1)  # the failed-fit pixel: NaN parameters, status 2
    for mc in ps.models.values():
        assert mc.model is None and "NaN" in mc.error
        assert mc.status == 2 and mc.status_text == "invalid input (NaN spectrum)"
    bad = ds.copy()
    info = json.loads(ds.attrs["models"])
    info["m2"]["name"] = "no_such_model"
    bad.attrs = {**ds.attrs, "models": json.dumps(info)}
    ps = D.pixel_spectrum(bad, 2, 2)
    assert ps.models["m2"].model is None and "no_such_model" in ps.models["m2"].error
    assert ps.models["m1"].model is not None
    with pytest.raises(IndexError, match="outside"):
        D.pixel_spectrum(ds, 99, 0)
    # a pixel of a tile an incomplete store has not saved yet reads status -1 (the fill
    # value): said so, not "unknown" (explorer reviewer)
    unsaved = ds.copy()
    for alias in ("m1", "m2"):
        unsaved[f"{alias}_status"] = unsaved[f"{alias}_status"].copy(
            data=np.full(ds[f"{alias}_status"].shape, -1, ds[f"{alias}_status"].dtype)
        )
    ps = D.pixel_spectrum(unsaved, 2, 2)
    assert ps.models["m1"].status_text.startswith("not written yet"), ps.models["m1"].status_text


def test_pixel_timeseries_from_cube(ds, ds_plain):
    t, v = D.pixel_timeseries(ds, 4, 7)
    cube = xr.open_zarr(ds.attrs["cube_path"])
    np.testing.assert_array_equal(v, cube["intensity"].values[:, 4, 7].astype(float))
    np.testing.assert_array_equal(t, cube["time"].values)
    assert D.pixel_timeseries(ds_plain, 1, 1) is None


def test_a_cube_rewritten_for_another_store_gives_no_time_series(demo_store):
    """A cube shared through output.cube_path and rewritten by a run on another store (other
    inputs, or other prep on the same inputs) holds none of this store's series: the
    explorer showed the other run's input as this pixel's (a reviewer's finding)."""
    import json

    ds = open_results(demo_store)
    assert D.pixel_timeseries(ds, 4, 7) is not None  # the run's own cube
    other_inputs = ds.copy()
    fp = json.loads(ds.attrs["input_fingerprint"])
    other_inputs.attrs["input_fingerprint"] = json.dumps({**fp, "hash": "0" * 16})
    assert D.pixel_timeseries(other_inputs, 4, 7) is None
    other_prep = ds.copy()
    science = json.loads(ds.attrs["config_json"])
    science["prep"] = {**science["prep"], "despike": not science["prep"].get("despike")}
    other_prep.attrs["config_json"] = json.dumps(science)
    assert D.pixel_timeseries(other_prep, 4, 7) is None


def test_power_map_period_and_band(ds):
    f = ds["freq"].values
    power = ds["power"].values
    pm = D.power_map(ds, period_min=5.0).values
    k = np.argmin(np.abs(1.0 / f / 60.0 - 5.0))  # nearest stored period, by brute force
    np.testing.assert_array_equal(pm, power[k])
    band = D.power_map(ds, band_min=(7.0, 3.0)).values
    per = 1.0 / f / 60.0
    sel = (per >= 3.0) & (per <= 7.0)
    np.testing.assert_allclose(band, power[sel].mean(axis=0), rtol=1e-6)
    with pytest.raises(ValueError, match="no stored frequency in the band"):
        D.power_map(ds, band_min=(1000.0, 2000.0))
    with pytest.raises(ValueError, match="exactly one"):
        D.power_map(ds)


def test_spectral_density_counts_every_spectrum_bin(ds):
    counts, f_edges, p_edges, n = D.spectral_density(ds, y=(2, 7), x=(1, 9), bins=20)
    f = ds["freq"].values
    spectra = ds["power"].values[:, 2:7, 1:9].reshape(f.size, -1).T
    assert n == spectra.shape[0] == 40
    # Brute force: drop one spectrum at a time into the grid.
    want = np.zeros_like(counts)
    for s in spectra:
        h, _, _ = np.histogram2d(np.log10(s), np.log10(f), bins=[p_edges, f_edges])
        want += h
    np.testing.assert_array_equal(counts, want)
    # Nearly every point lands inside (the power range clips only 0.1 % tails).
    assert counts.sum() >= 0.99 * spectra.size
    # The failed pixel's NaN spectrum is skipped, not counted.
    _, _, _, n_all = D.spectral_density(ds)
    assert n_all == ds.sizes["y"] * ds.sizes["x"] - 1


def test_spectral_density_has_no_empty_frequency_columns(demo_store):
    """Evenly spaced frequencies are sparse in log f at the low end: equal log bins left empty
    columns there (stripes, the helper's finding). Every frequency bin now holds a frequency,
    and each is at least 1/bins of the log range wide except the last."""
    from specfit.store import open_results

    ds = open_results(demo_store)
    f = ds["freq"].values
    counts, f_edges, _, _ = D.spectral_density(ds, bins=80)
    assert f.size > 80
    per_bin = np.histogram(np.log10(f), bins=f_edges)[0]
    assert (per_bin > 0).all(), per_bin
    assert (np.diff(f_edges)[:-1] >= (f_edges[-1] - f_edges[0]) / 80 - 1e-12).all()
    assert (counts.sum(axis=0) > 0).all()


def test_map_histogram_counts_values_inside_limits():
    rng = np.random.default_rng(3)
    vals = rng.normal(size=(40, 50))
    vals[0, :5] = np.nan
    counts, edges = D.map_histogram(vals, (-1.0, 1.0), bins=10)
    finite = vals[np.isfinite(vals)]
    inside = finite[(finite >= -1.0) & (finite <= 1.0)]
    assert counts.sum() == inside.size
    np.testing.assert_array_equal(counts, np.histogram(inside, bins=10, range=(-1, 1))[0])
    np.testing.assert_allclose(edges, np.linspace(-1, 1, 11))


def test_pixel_titles_use_the_stores_coordinates(viz_store):
    """After a cutout the store's x/y are the frames' pixels: the explorer's titles name a
    pixel by them (it said the array position, which ds.sel would read as another pixel)."""
    from specfit.viz.data import pixel_spectrum

    ds = open_results(viz_store)
    ds = ds.assign_coords(x=ds["x"] + 100, y=ds["y"] + 60)  # as a cutout's store has them
    assert pixel_spectrum(ds, 2, 3).title.startswith("pixel x=103, y=62")


def test_model_comparison_names_the_preferred_model(demo_store):
    """The explorer's comparison line names the preferred model (it showed the bare code,
    'best_model = 1')."""
    from specfit.viz.app import parameter_table
    from specfit.viz.data import pixel_spectrum

    ds = open_results(demo_store)
    aliases = ds["best_model"].attrs["flag_meanings"].split()
    ps = pixel_spectrum(ds, 2, 3)
    code = int(ds["best_model"].values[2, 3])
    assert ps.extra["best_model"] == aliases[code + 1]  # flag_values start at -1 (none)
    assert f"best_model = {aliases[code + 1]}" in parameter_table(ps)


def test_pixel_axes_follow_the_stores_coordinates(viz_store):
    """Without helioprojective axes the maps' axes are the store's x/y (the frames' pixels
    after a cutout), and a click at (x, y) picks the pixel with those coordinates."""
    from specfit.viz.data import axis_info, pixel_index

    ds = open_results(viz_store)
    ds = ds.assign_coords(x=ds["x"] + 100, y=ds["y"] + 60)
    axes = axis_info(ds, solar=False)
    assert (axes.x0, axes.y0, axes.dx, axes.dy) == (100.0, 60.0, 1.0, 1.0)
    assert pixel_index(axes, 103.2, 61.9) == (2, 3)
    assert pixel_index(axes, 3, 2) is None  # an array position is not a coordinate


def test_titles_and_axes_agree_when_coordinates_are_not_pixel_runs(viz_store):
    """Coordinates that are not consecutive integers (a user's DataArray with its own x/y)
    leave axes, clicks and titles in array positions alike (the title said x=106 where the
    axes and a click said 3)."""
    from specfit.viz.data import axis_info, pixel_index, pixel_spectrum

    ds = open_results(viz_store)
    ds = ds.assign_coords(x=ds["x"] * 2 + 100, y=ds["y"] - 0.5)
    axes = axis_info(ds, solar=False)
    assert pixel_index(axes, 3, 2) == (2, 3)
    assert pixel_spectrum(ds, 2, 3).title.startswith("pixel x=3, y=2")


def test_a_field_rotated_against_hpc_gets_pixel_axes_that_say_so():
    """IRIS's roll makes hpc_x/hpc_y a rotated grid: the maps get pixel axes, and the label
    says why (the docs promised helioprojective axes whenever the store has hpc_x/hpc_y)."""
    import numpy as np
    import xarray as xr

    from specfit.viz.data import axis_info

    iy, ix = np.mgrid[0:109, 0:110].astype(float)
    roll = np.deg2rad(0.65)
    hx = 400 + 0.166 * (ix * np.cos(roll) - iy * np.sin(roll))
    hy = 200 + 0.166 * (ix * np.sin(roll) + iy * np.cos(roll))
    ds = xr.Dataset(coords={"hpc_x": (("y", "x"), hx), "hpc_y": (("y", "x"), hy)})
    ds["m"] = (("y", "x"), np.zeros((109, 110)))
    axes = axis_info(ds)
    assert not axes.solar and axes.xlabel == "x (px; hpc_x/hpc_y not along the pixel axes)"
    straight = ds.assign_coords(
        hpc_x=(("y", "x"), 400 + 0.166 * ix), hpc_y=(("y", "x"), 200 + 0.166 * iy)
    )
    assert axis_info(straight).solar


def test_every_global_flag_map_is_categorical(demo_store):
    """lrt_global came from the fixed list of maps without the suffix rule, so it was drawn
    with a continuous colour scale while ftest_global (the same kind of map) was categorical."""
    from specfit.store import open_results
    from specfit.viz.data import map_catalog

    specs = {s.name: s for s in map_catalog(open_results(demo_store))}
    flags = [n for n in specs if n.endswith(("_global", "_status")) or n.startswith("best_model")]
    assert "lrt_global" in flags and "ftest_global" in flags
    assert all(specs[n].categorical for n in flags), [n for n in flags if not specs[n].categorical]


def test_log_maps_say_how_many_pixels_hold_zero(demo_store):
    """A tail on its bound 0 (89 % of AIA 1600's M1 fits) cannot be drawn on a log scale and
    looked like a masked pixel: the map's title now says how many pixels hold 0."""
    from specfit.store import open_results
    from specfit.viz.data import map_catalog, map_title

    ds = open_results(demo_store).load()
    specs = {s.name: s for s in map_catalog(ds)}
    assert map_title(ds, "m1_index") == specs["m1_index"].label  # not a log map, no unit
    ds["m1_tail"][:] = np.where(np.arange(ds.sizes["x"]) < 16, 0.0, 1.0)
    share = 100 * 16 / ds.sizes["x"]
    assert map_title(ds, "m1_tail") == (
        f"{specs['m1_tail'].label} [{specs['m1_tail'].units}]"
        f"; 0 in {share:.0f} % of pixels ({16 * ds.sizes['y']}), not drawn on a log scale"
    )


def test_explorer_panels_carry_the_stores_units(demo_store):
    """The spectrum's power axis and the spectral-density image named no unit although the
    store has them (the helper's finding)."""
    from specfit.store import open_results
    from specfit.viz.app import spectrum_elements
    from specfit.viz.data import pixel_spectrum

    ds = open_results(demo_store)
    ps = pixel_spectrum(ds, 3, 4)
    assert ps.units == ds["power"].attrs["units"] != ""
    spec, _ = spectrum_elements(ps)
    assert {str(c.vdims[0].unit) for c in spec} == {ps.units}


@pytest.mark.realdata
def test_iris_roll_quoted_in_explore_md(shared_data):
    """docs/explore.md's IRIS roll and what it moves at the corners, from the cube's own
    coordinates; with it the map gets pixel axes."""
    import math

    from conftest import assert_docs_quote
    from specfit.config import InputConfig
    from specfit.io import open_input

    cube = (
        shared_data / "iris_sji_20140329" / "iris_l2_20140329_140938_3860258481_SJI_1400_t000.fits"
    )
    arr = open_input(InputConfig(path=str(cube)))
    hx, hy = arr["hpc_x"].values, arr["hpc_y"].values
    roll = math.atan2(hy[0, -1] - hy[0, 0], hx[0, -1] - hx[0, 0])
    nx = arr.sizes["x"]
    moved = nx * abs(math.sin(roll))
    assert_docs_quote(
        "explore.md",
        f"(IRIS: a roll of {abs(math.degrees(roll)):.2f}°, about {moved:.0f} px at the corners of {nx} px)",
    )
    ds = arr.isel(time=0).to_dataset(name="m1_index")
    assert not D.axis_info(ds).solar


def test_an_unwritten_pixels_counts_are_not_shown_as_minus_one(demo_store):
    """A pixel of a tile not yet written showed "nfev = -1" in the explorer's table, the
    integer maps' fill value (an explorer helper's finding): a count that is not there."""
    ds = open_results(demo_store).load()
    nfev = ds["m1_nfev"].values.copy()
    nfev[0, 0] = -1
    ds["m1_nfev"].values = nfev
    assert np.isnan(D.pixel_spectrum(ds, 0, 0).models["m1"].stats["nfev"])
    assert D.pixel_spectrum(ds, 0, 1).models["m1"].stats["nfev"] == float(nfev[0, 1]) > 0


def test_an_unfinished_stores_unwritten_tiles_are_nan_in_every_map(demo_store):
    """`specfit explore --allow-incomplete`: an unwritten tile reads -1 in integer maps, which
    best_model's legend called "-1 none" (no model preferred) and the status maps an unknown
    code; they are NaN (not written) in every map now, and the written tiles are unchanged."""
    ds = open_results(demo_store).load()
    b = int(ds.attrs["tile_size"])
    assert ds.sizes["y"] > b and ds.sizes["x"] > b  # more than one tile
    part = ds.copy(deep=True)
    part.attrs["complete"] = False
    part["tiles_done"][0, 0] = 0
    for v in part.data_vars.values():  # tile (0, 0) as an unwritten one reads
        if {"y", "x"} <= set(v.dims):
            fill = -1 if v.dtype.kind == "i" else np.nan
            v[dict(y=slice(0, b), x=slice(0, b))] = fill
    written = np.ones((ds.sizes["y"], ds.sizes["x"]), bool)
    written[:b, :b] = False
    for name in ("best_model", "m1_status", "m1_index", "m2_bump_period"):
        got = D.map_values(part, name, mask_status=False).values
        want = D.map_values(ds, name, mask_status=False).values
        assert np.isnan(got[~written]).all(), name
        np.testing.assert_array_equal(got[written], want[written], err_msg=name)
    # a finished store (and a Dataset without tile bookkeeping) is as before
    bare = part.drop_vars("tiles_done")
    assert (D.map_values(bare, "best_model", mask_status=False).values[~written] == -1).all()
