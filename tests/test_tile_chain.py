"""`specfit.run` and the lazy stage chain run THE tile chain: bit-identical maps, one contract.

The same frames go through ``specfit.run`` (tile tasks reading cube.zarr) and through
``ingest -> resample -> power_spectra -> fit`` on deliberately other chunks; every variable the
fit returns must be equal bit for bit, with the names, dtypes and attrs the store holds. A refit
of the stored spectra (``specfit.fit(open_results(p)["power"])``) must give the stored maps.
"""

from __future__ import annotations

import numpy as np
import pytest

import specfit
from conftest import tiny_config
from specfit import stages
from specfit.config import load_config

# TINY as is, with a box and a tapered window (the halo and the window correction), and with
# overlapping Welch segments fitted by lsq_log (the overlap's bin correlations reach the fit
# the same way on every path).
CASES = {
    "tiny": {},
    "box3_hann": {
        "spectra": {"segments": 1, "window": "hann", "detrend": "mean", "box": 3},
        # not the default models or options: a bare refit must still be the run's
        "fit": {
            "models": {"m1": "powerlaw_tail", "m2": "powerlaw_tail_lognormal"},
            "multistart": 2,
            "best_model": "aic",
        },
    },
    "welch_lsq_log": {
        "spectra": {"segment_length": 1200.0, "overlap": 0.5, "window": "none", "detrend": "mean"},
        "fit": {"method": "lsq_log"},
    },
}


@pytest.fixture(scope="module", params=list(CASES))
def run_store(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(request.param)
    cfg = tiny_config(tmp, **CASES[request.param])
    ds = specfit.run(cfg)
    return load_config(cfg), tmp, ds


def _stage_chain(cfg, frames, chunks):
    """The four stages, on chunks of ``chunks = (y, x)`` pixels: a pixel's numbers depend
    only on its spectrum, not on the block it is fitted in."""
    sp = cfg.spectra
    arr = stages.ingest({"kind": "fits_series", "path": str(frames), "pattern": "synth_*.fits"})
    uni = stages.resample(arr, cadence=cfg.resample.cadence, max_gap=cfg.resample.max_gap)
    power = stages.power_spectra(
        uni.chunk({"y": chunks[0], "x": chunks[1]}),
        segments=sp.segments,
        segment_length=sp.segment_length,
        overlap=sp.overlap,
        window=sp.window,
        detrend=sp.detrend,
        normalisation=sp.normalisation,
        box=sp.box,
        fmin=sp.fmin,
        fmax=sp.fmax,
        box_dof=sp.box_dof,
    )
    f = cfg.fit
    res = stages.fit(
        power,
        models=dict(f.models),
        method=f.method,
        max_iter=f.max_iter,
        tol=f.tol,
        multistart=f.multistart,
        best_model=f.best_model,
        alpha=f.alpha,
    )
    return power.compute(), res.compute()  # once: .values per variable would refit each time


def _assert_same_maps(got, want, names):
    for name in names:
        a, b = got[name].values, want[name].values
        assert a.dtype == b.dtype, name
        np.testing.assert_array_equal(a, b, err_msg=name)


def test_run_and_stage_chain_bit_identical(run_store):
    cfg, tmp, ds = run_store
    # uneven 5 x 7 chunks against the run's 8 x 8 tiles (once 1 ulp apart in m2_loglike:
    # a BLAS matmul in the bump seeds summed in an order set by the block's rows)
    assert ds.attrs["tile_size"] == 8
    power, res = _stage_chain(cfg, tmp / "synthetic" / "frames", (5, 7))
    assert set(res.data_vars) < set(ds.data_vars)
    _assert_same_maps(res, ds, res.data_vars)
    np.testing.assert_array_equal(power.values, ds["power"].values)
    np.testing.assert_array_equal(power["dof"].values, ds["dof"].values)
    # One contract: every variable the stage fit returns has the store's dtype and attrs ...
    for name in res.data_vars:
        assert res[name].attrs == ds[name].attrs, name
    # ... and every Dataset attr it sets is the store's.
    for key, value in res.attrs.items():
        assert ds.attrs[key] == value, key
    assert power.attrs["units"] == ds["power"].attrs["units"]


def test_refit_of_stored_spectra_equals_stored_maps(run_store):
    cfg, _, ds = run_store
    f = cfg.fit
    refit = specfit.fit(
        ds["power"],
        models=dict(f.models),
        multistart=f.multistart,
        max_iter=f.max_iter,
        tol=f.tol,
        best_model=f.best_model,
    ).compute()
    _assert_same_maps(refit, ds, refit.data_vars)
    # with nothing but the spectra: the run's models and options come with them
    bare = specfit.fit(ds["power"]).compute()
    assert set(bare.data_vars) == set(refit.data_vars)
    _assert_same_maps(bare, ds, bare.data_vars)
    # what is given still wins (here: the default models' M2 instead of the run's)
    other = specfit.fit(ds["power"], models={"m2": "powerlaw_tail_lorentzian"})
    assert not any(v.startswith("m1_") for v in other.data_vars)
    assert "lorentzian" in other.attrs["models"] and "lognormal" not in other.attrs["models"]


def test_a_refit_states_the_window_vif_it_used(run_store):
    """A refit's attrs carry the vif its fit used, not what the spectra's attrs say (a store
    of an older version with Welch overlap said 1.0 where the fit now uses 1.27)."""
    _, _, ds = run_store
    p = ds["power"].copy()
    p.attrs["window_vif"] = 123.0
    out = specfit.fit(p)
    assert out.attrs["window_vif"] == ds.attrs["window_vif"] != 123.0


def test_store_records_what_a_refit_needs(run_store):
    cfg, _, ds = run_store
    p = ds["power"]
    assert "dof" in p.coords  # the per-pixel dof travels with the spectra
    for key in ("window", "segments", "segment_length", "window_vif", "dof_per_spectrum", "box"):
        assert p.attrs[key] == ds.attrs[key], key
    assert ds.attrs["window"] == cfg.spectra.window
    # a taper or overlapping segments correlate the bins: the Whittle fit divides by the vif
    correlated = cfg.spectra.window != "none" or (
        cfg.spectra.overlap > 0 and p.attrs["segments"] > 1
    )
    want_rule = "dof / window_vif" if correlated and cfg.fit.method == "whittle" else "dof"
    assert ds.attrs["fit_dof"] == want_rule
    assert (ds.attrs["window_vif"] > 1.01) == correlated  # Hann 1.94; 4 Welch segments 1.27
    box = cfg.spectra.box
    assert ds.attrs["box_dof"] == cfg.spectra.box_dof
    # dof = one spectrum's x N_eff: N_eff on the quarter-octave grid or the box's pixel count
    neff = ds["dof"].values / ds.attrs["dof_per_spectrum"]
    assert neff.min() >= 1 and neff.max() <= box * box
    if box > 1:
        on_grid = np.isclose(4 * np.log2(neff), np.round(4 * np.log2(neff)), atol=1e-4)
        assert (on_grid | np.isin(neff, np.arange(1, box * box + 1))).all()
        # the synthetic cube's pixels are independent: most full boxes count (nearly) all 9
        assert np.median(neff[1:-1, 1:-1]) >= 6.5


def test_real_units_on_parameters_errors_and_models_attr(run_store):
    import json

    from specfit.store import power_units

    _, _, ds = run_store
    pu = power_units(ds["mean_intensity"].attrs["units"], "density")
    assert ds["power"].attrs["units"] == pu
    assert "power" not in pu  # a real unit, never the role name
    for name in ("m1_amplitude", "m1_tail", "m2_bump_amplitude", "m2_tail_err"):
        assert ds[name].attrs["units"] == pu, name
    assert ds["m1_index"].attrs["units"] == "1"
    assert ds["m2_bump_center"].attrs["units"] == "ln(Hz)"
    models = json.loads(ds.attrs["models"])
    assert models["m1"]["units"] == [pu, "1", pu]
    assert models["m1"]["params"] == ["amplitude", "index", "tail"]
    assert "param_names" not in models["m1"]  # one key for one idea


def test_power_units_from_unit_and_normalisation():
    from specfit.store import fits_unit, power_units

    assert power_units("DN/s", "density") == "(DN/s)^2/Hz"
    assert power_units("DN/s", "raw") == "(DN/s)^2"
    assert power_units("DN/s", "variance") == "1/Hz"
    assert power_units(None, "density") == "(intensity)^2/Hz"
    with pytest.raises(ValueError, match="spectra.normalisation"):
        power_units("DN", "bogus")
    # One conversion serves results and FITS export: BUNIT in the FITS standard form.
    assert fits_unit("(W/m2)^2/Hz") == "W2 Hz-1 m-4"
    assert fits_unit("(DN/s)^2/Hz") == "DN2 / (Hz s2)"  # DN is not a FITS unit: kept readable
    assert fits_unit("ln(Hz)") == "ln(Hz)"


def test_store_keeps_a_cutouts_pixel_indices(tmp_path):
    """After a pixel cutout the store's y/x are the frames' pixel indices, as the cube's and
    the stage API's are (they were 0 .. n - 1: indexing the frames with them read other
    pixels); a refit of the stored spectra keeps them, and the maps' WCS still puts each
    pixel where its hpc_x/hpc_y say."""
    cfg = tiny_config(
        tmp_path, prep={"cutout": {"x1": 3, "x2": 11, "y1": 2, "y2": 9, "units": "pixel"}}
    )
    ds = specfit.run(cfg)
    loaded = load_config(cfg)
    source = {"kind": "fits_series", "path": str(tmp_path / "synthetic" / "frames")}
    frames = stages.ingest(source, loaded.prep)
    assert ds["x"].values.tolist() == frames["x"].values.tolist() == list(range(3, 11))
    assert ds["y"].values.tolist() == frames["y"].values.tolist() == list(range(2, 9))
    refit = specfit.fit(ds["power"]).compute()
    assert refit["x"].values.tolist() == list(range(3, 11))
    np.testing.assert_array_equal(refit["m1_index"].values, ds["m1_index"].values)
    import sunpy.coordinates  # noqa: F401  (helioprojective frames for astropy.wcs)
    from astropy.io import fits
    from astropy.wcs import WCS

    w = WCS(fits.Header.fromstring(ds.attrs["wcs_header"], sep="\n"))
    sky = w.pixel_to_world(np.arange(8), np.full(8, 3))  # array indices, not y/x values
    np.testing.assert_allclose(sky.Tx.to_value("arcsec"), ds["hpc_x"].values[3], atol=1e-6)
