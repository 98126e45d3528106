"""The whole pipeline end to end on small synthetic frames, and its refusals."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import xarray as xr

from conftest import tiny_config
from specfit.errors import ConfigError, StoreError
from specfit.pipeline import run
from specfit.store import open_results, tile_status


def test_results_contract(demo_store):
    ds = xr.open_zarr(demo_store)  # plain xarray opens it
    models = json.loads(ds.attrs["models"])
    assert set(models) == {"m1", "m2"}
    for alias, info in models.items():
        for p in info["params"]:
            for name in (f"{alias}_{p}", f"{alias}_{p}_err"):
                assert ds[name].dims == ("y", "x") and ds[name].dtype == np.float32
                assert "units" in ds[name].attrs and "long_name" in ds[name].attrs
        for s in ("status", "loglike", "chi2red", "aic", "bic", "nfev"):
            assert f"{alias}_{s}" in ds
        assert ds[f"{alias}_status"].dtype == np.int8
    for name in ("best_model", "lrt_pvalue", "power", "mean_intensity", "m2_bump_period"):
        assert name in ds
    assert ds["power"].dims == ("freq", "y", "x")
    assert "hpc_x" in ds.coords or "hpc_x" in ds  # synthetic frames carry a WCS
    assert "fit:" in ds.attrs["config"] and ds.attrs["specfit_version"]
    assert ds.attrs["complete"] is True
    t = ds.attrs["timings"]  # seconds per stage of the run, for the user and the benchmarks
    assert t["tiles_run"] == tile_status(demo_store)[1]
    assert 0 <= t["cube_s"] < t["total_s"] and 0 < t["tiles_s"] < t["total_s"]
    # Every pixel has a result; the synthetic data are clean, so nearly all converge.
    assert float((ds["m1_status"] == 0).mean()) > 0.95


def test_store_spectra_equal_independent_reference(demo_store, tmp_path):
    """power in the store == scipy.signal.periodogram of np.interp-resampled frames."""
    from astropy.io import fits
    from scipy.signal import periodogram

    ds = open_results(demo_store)
    frames = sorted((demo_store.parent / "synthetic" / "frames").glob("synth_*.fits"))
    from astropy.time import Time

    t, pix = [], []
    for f in frames:
        with fits.open(f) as h:
            t.append(Time(h[0].header["DATE-OBS"]).unix)
            pix.append(h[0].data[5, 7] / h[0].header["EXPTIME"])
    t = np.array(t) - t[0]
    dt = float(ds.attrs["cadence"])
    assert dt == 12.0  # resample.cadence of the tiny config
    tn = np.arange(0, t[-1] + 1e-9, dt)
    tn = tn[tn <= t[-1]]
    series = np.interp(tn, t, np.array(pix))
    f, p = periodogram(series, fs=1 / dt, window="boxcar", detrend="constant")
    np.testing.assert_allclose(ds["freq"].values, f[1 : 1 + ds.sizes["freq"]], rtol=1e-9)
    np.testing.assert_allclose(ds["power"].values[:, 5, 7], p[1 : 1 + ds.sizes["freq"]], rtol=2e-3)
    np.testing.assert_allclose(float(ds["mean_intensity"][5, 7]), np.mean(pix), rtol=1e-5)


def test_finished_store_needs_overwrite_and_resume_refuses_other_config(demo_store, tmp_path):
    cfg = tiny_config(demo_store.parent)
    with pytest.raises(StoreError, match="--overwrite"):
        run(cfg)
    # Resuming a finished run with the same config is a no-op.
    ds = run(cfg, resume=True)
    assert ds.attrs["complete"]


def test_resume_refuses_a_different_config(tmp_path):
    cfg = tiny_config(tmp_path)
    run(cfg)
    # Pretend the run was interrupted.
    import zarr

    root = zarr.open_group(str(tmp_path / "results.zarr"), mode="r+")
    root["tiles_done"][0, 0] = 0
    root.attrs["complete"] = False
    with pytest.raises(StoreError, match="unfinished run; pass --resume"):
        run(cfg)
    # with other settings it did not send the user to --resume, which refuses them
    with pytest.raises(
        StoreError, match=r"other settings .*spectra\.segments: 1 != 2.*--overwrite"
    ):
        run(cfg, ["spectra.segments=2"])
    with pytest.raises(StoreError, match=r"spectra\.segments: 1 != 2"):
        run(cfg, ["spectra.segments=2"], resume=True)
    before = xr.open_zarr(tmp_path / "results.zarr")["m1_index"].values
    ds = run(cfg, resume=True)
    assert tile_status(tmp_path / "results.zarr")[0] == tile_status(tmp_path / "results.zarr")[1]
    np.testing.assert_array_equal(ds["m1_index"].values, before)


def test_bad_inputs_fail_before_work_with_clear_messages(tmp_path):
    cfg = tiny_config(tmp_path, input={"kind": "auto", "path": str(tmp_path / "missing")})
    with pytest.raises(Exception, match="does not exist"):
        run(cfg)
    assert not (tmp_path / "results.zarr").exists()
    with pytest.raises(ConfigError, match="spectra.box"):
        run(tiny_config(tmp_path), ["fit.method=lsq"])
    with pytest.raises(ConfigError, match="frequencies remain.* Use fewer or longer segments$"):
        run(tiny_config(tmp_path), ["spectra.segments=60"])
    # one segment and no range: only a longer series helps (it said "fewer segments or a
    # wider frequency range", neither possible; the config reviewer)
    with pytest.raises(ConfigError, match=r"remain .*Use a longer series: \d+ samples at 12 s"):
        run(tiny_config(tmp_path), ["input.max_frames=12", "input.path=" + str(tmp_path / "s12")])
    with pytest.raises(ConfigError, match="fit.models"):
        run(tiny_config(tmp_path), ["fit.models={m1: no_such_model}"])


def test_bad_pixels_become_nan_and_status_not_a_crash(tmp_path):
    """Dead and saturated pixels in the frames: the run finishes, they get a status code."""
    from astropy.io import fits

    from specfit.synthetic import make_synthetic

    data = make_synthetic(tmp_path / "synthetic", shape=(16, 16), n_frames=200, seed=2)
    for f in sorted(data.frames.glob("*.fits")):
        with fits.open(f, mode="update") as h:
            h[0].data[3, 4] = np.nan  # dead
            h[0].data[10, 10] = 0.0  # all zero
    cfg = tiny_config(tmp_path, input={"kind": "fits_series", "path": str(data.frames)})
    ds = run(cfg)
    assert np.isnan(ds["m1_index"].values[3, 4]) and ds["m1_status"].values[3, 4] != 0
    assert ds["m1_status"].values[10, 10] != 0
    good = ds["m1_status"].values == 0
    assert good.sum() >= 16 * 16 - 10


@pytest.mark.parametrize(
    ("use_client", "tile", "time_chunk", "source", "columns"),
    [
        (True, 8, 7, (1, 20, 30), False),  # one frame per chunk, as the FITS readers give
        (False, 8, 7, (1, 20, 30), False),
        (True, 64, 80, (1, 20, 30), False),
        # a Zarr cube's blocks, time chunks longer than the slabs: columns of 10 x 10 px
        (True, 5, 7, (25, 10, 10), True),
        (False, 5, 7, (25, 10, 10), True),
        # an in-memory (numpy-backed) input: no chunks to follow
        (True, 8, 7, None, False),
        (False, 8, 7, None, False),
    ],
)
def test_cube_written_in_slabs_equals_the_input(
    tmp_path, use_client, tile, time_chunk, source, columns
):
    """The staged per-frame -> per-tile rewrite (time slabs or, for a spatially chunked
    input, columns of blocks; a few in flight) loses nothing, with slab and tile edges that
    do not divide the cube, or sizes beyond the cube's."""
    import dask
    import dask.array as da
    import zarr
    from distributed import Client

    from specfit.pipeline import _column_block, _write_cube

    rng = np.random.default_rng(3)
    values = rng.normal(size=(50, 20, 30)).astype(np.float32)
    chunks = None if source is None else da.from_array(values, chunks=source).chunks
    assert (_column_block(chunks, tile, 50, time_chunk, 20, 30) is not None) == columns
    arr = xr.DataArray(
        values if source is None else da.from_array(values, chunks=source),
        dims=("time", "y", "x"),
        coords={"time": np.arange(50) * 12.0},
        name="intensity",
    )
    science = {"input": {"path": "x"}, "prep": {}}
    path = tmp_path / "cube.zarr"
    if use_client:
        with Client(
            processes=False, n_workers=1, threads_per_worker=2, dashboard_address=":0"
        ) as c:
            _write_cube(arr, path, tile, time_chunk, c, science)
    else:  # as specfit's synchronous cluster kind sets it
        with dask.config.set({"scheduler": "synchronous", "array.rechunk.method": "tasks"}):
            _write_cube(arr, path, tile, time_chunk, None, science)
    z = zarr.open_group(str(path), mode="r")["intensity"]
    assert z.chunks == (min(time_chunk, 50), min(tile, 20), min(tile, 30))
    np.testing.assert_array_equal(z[:], values)
    assert not path.with_name("cube.zarr.partial").exists()


@pytest.mark.parametrize("codec", ["lz4", "zstd", "none"])
def test_cube_codec_is_the_configured_one_and_keeps_values(tmp_path, codec):
    """``output.cube_codec`` picks cube.zarr's compressor; the values are the same bytes."""
    import dask
    import dask.array as da
    import zarr

    from specfit.pipeline import _write_cube

    values = np.random.default_rng(5).normal(size=(30, 16, 16)).astype(np.float32)
    arr = xr.DataArray(
        da.from_array(values, chunks=(10, 16, 16)),
        dims=("time", "y", "x"),
        coords={"time": np.arange(30) * 12.0},
        name="intensity",
    )
    path = tmp_path / "cube.zarr"
    with dask.config.set({"scheduler": "synchronous", "array.rechunk.method": "tasks"}):
        _write_cube(arr, path, 8, 16, None, {"input": {}, "prep": {}}, codec=codec)
    z = zarr.open_group(str(path), mode="r")["intensity"]
    names = [type(c).__name__ for c in z.compressors]
    assert names == {"lz4": ["BloscCodec"], "zstd": ["ZstdCodec"], "none": []}[codec]
    if codec == "lz4":
        assert z.compressors[0].cname.value == "lz4"
    np.testing.assert_array_equal(z[:], values)


def test_cube_codec_rejects_an_unknown_name():
    from specfit.config import load_config

    with pytest.raises(Exception, match="cube_codec"):
        load_config({"input": {"path": "x"}, "output": {"cube_codec": "gzip"}})


def test_store_with_block_names_opens_and_refuses_resume(tmp_path, demo_store):
    """A store written before the unit of work was named a tile (``blocks_done``) still
    opens; resuming it is refused with the way out (--overwrite)."""
    import shutil

    import zarr

    old = tmp_path / "results.zarr"
    shutil.copytree(demo_store, old)
    for new_name, old_name in (("tiles_done", "blocks_done"), ("tiles_run", "blocks_run")):
        (old / new_name).rename(old / old_name)
    root = zarr.open_group(str(old), mode="r+", use_consolidated=False)
    attrs = dict(root.attrs)
    root.attrs["block_size"] = attrs.pop("tile_size")
    zarr.consolidate_metadata(str(old))
    ds = open_results(old)
    assert "m1_index" in ds and "tiles_done" not in ds
    assert tile_status(old) == (9, 9)
    root.attrs["complete"] = False
    cfg = tiny_config(demo_store.parent)  # the config that wrote it
    cfg["output"]["path"] = str(old)
    with pytest.raises(StoreError, match="no record of its inputs.*--overwrite"):
        run(cfg, resume=True)


def test_cube_zarr_keeps_exposure_and_hpc_coordinates(tmp_path):
    """cube.zarr's small coordinates are written, not left NaN: they were dask-backed and
    deferred by to_zarr(compute=False) into a write that never ran (issue 12 item 6)."""
    from astropy.io import fits
    from astropy.time import Time, TimeDelta

    from specfit.config import Config
    from specfit.stages import ingest

    folder = tmp_path / "frames"
    folder.mkdir()
    rng = np.random.default_rng(5)
    t0 = Time("2020-01-01T00:00:00", scale="utc")
    exps = rng.uniform(1.5, 2.5, 16)
    for i in range(16):
        h = fits.Header()
        h["DATE-OBS"] = (t0 + TimeDelta(12.0 * i, format="sec")).isot
        h["EXPTIME"] = float(exps[i])
        h["CTYPE1"], h["CTYPE2"] = "HPLN-TAN", "HPLT-TAN"
        h["CUNIT1"], h["CUNIT2"] = "arcsec", "arcsec"
        h["CDELT1"], h["CDELT2"] = 0.5, 0.5
        h["CRPIX1"], h["CRPIX2"] = 3.0, 2.0
        h["CRVAL1"], h["CRVAL2"] = 100.0, -50.0
        h["DSUN_OBS"], h["HGLN_OBS"], h["HGLT_OBS"] = 1.5e11, 0.0, 1.0
        data = rng.normal(100, 10, (6, 9)).astype(np.float32)
        fits.PrimaryHDU(data, header=h).writeto(folder / f"f{i:03d}.fits")
    cfg = tiny_config(tmp_path, fit={"models": {"m1": "powerlaw_tail"}, "multistart": 1})
    cfg["input"] = {"path": str(folder), "pattern": "*.fits"}
    run(cfg)
    ref = ingest(Config.model_validate(cfg).input)
    cube = xr.open_zarr(tmp_path / "results.zarr.specfit-work" / "cube.zarr")
    for name in ("exposure", "hpc_x", "hpc_y"):
        assert name in ref.coords, name
        got = np.asarray(cube[name].values)
        assert np.isfinite(got).all(), f"{name} has NaN in cube.zarr"
        np.testing.assert_allclose(got, np.asarray(ref[name].values), rtol=1e-12, err_msg=name)


def test_lsq_with_dlogf_weights_runs_without_a_box(tmp_path):
    """fit.weights=dlogf (the original's validation weights) needs no box spread; the default
    lsq weights still do, and say so naming the keys."""
    fit = {"method": "lsq", "weights": "dlogf", "best_model": "chi2sum", "multistart": 1}
    ds = run(tiny_config(tmp_path, fit=fit))
    assert ds["best_model"].attrs["rule"] == "chi2sum"
    assert np.isfinite(ds["m2_chi2red"].values).mean() > 0.9
    assert "power_sigma" not in ds
    bad = tiny_config(tmp_path / "b", fit={"method": "lsq"})
    with pytest.raises(ConfigError, match="spectra.box.*fit.weights=dlogf"):
        run(bad)


def test_differing_variables_names_what_differs(tmp_path, demo_store):
    """Two copies of a store agree; a changed value, a changed NaN and a dropped variable are
    each named (the check behind the cluster-kind and resume tests)."""
    import shutil

    import zarr

    from specfit.store import differing_variables

    other = tmp_path / "other.zarr"
    shutil.copytree(demo_store, other)
    assert differing_variables(other, demo_store) == []
    root = zarr.open_group(str(other), mode="r+", use_consolidated=False)
    a = root["m1_index"]
    v = a[:]
    v[0, 0] = np.nextafter(v[0, 0], np.inf)  # one ulp
    a[:] = v
    b = root["m1_tail"]
    w = b[:]
    w[1, 1] = np.nan
    b[:] = w
    assert differing_variables(other, demo_store) == ["m1_index", "m1_tail"]
    assert differing_variables(other, demo_store, ignore=("m1_index",)) == ["m1_tail"]
    del root["m2_index"]
    zarr.consolidate_metadata(str(other))
    assert differing_variables(other, demo_store) == ["m1_index", "m1_tail", "m2_index"]
    # ignore spares the values, not the variable: one store without it still differs
    assert "m2_index" in differing_variables(other, demo_store, ignore=("m2_index",))


def test_profile_intervals_are_stored_and_a_refit_gives_them_again(tmp_path):
    """fit.intervals: every model with the parameter stores its interval's ends, with the
    parameter's unit, bracketing the estimate; specfit.fit on the store's spectra gives the
    same values bit for bit; a name no model has is refused before anything is written."""
    from specfit import fit, open_results

    ds = run(tiny_config(tmp_path, fit={"intervals": ["bump_center"]}))
    names = [v for v in ds.data_vars if v.endswith(("_lower", "_upper"))]
    assert names == ["m2_bump_center_lower", "m2_bump_center_upper"]
    lo, c, hi = (ds[f"m2_bump_center{s}"].values for s in ("_lower", "", "_upper"))
    ok = ds["m2_status"].values == 0
    assert ok.sum() > 100 and np.isfinite(lo[ok]).all() and np.isfinite(hi[ok]).all()
    assert np.all(lo[ok] <= c[ok]) and np.all(c[ok] <= hi[ok])
    assert ds["m2_bump_center_lower"].attrs["units"] == ds["m2_bump_center"].attrs["units"]
    assert "profile-likelihood" in ds["m2_bump_center_upper"].attrs["long_name"]
    from specfit.viz.data import map_catalog

    labels = {m.name: m.label for m in map_catalog(ds)}
    assert labels["m2_bump_center_upper"] == "m2 bump center 68% interval, upper end"
    from specfit.viz.app import parameter_table
    from specfit.viz.data import pixel_spectrum

    iy, ix = np.argwhere(ok)[0]
    ps = pixel_spectrum(ds, int(iy), int(ix))
    assert ps.models["m2"].intervals == {"bump_center": (float(lo[iy, ix]), float(hi[iy, ix]))}
    assert not ps.models["m1"].intervals
    assert "68 % profile interval" in parameter_table(ps)
    again = fit(open_results(tmp_path / "results.zarr")["power"], intervals=["bump_center"])
    for name in names:
        np.testing.assert_array_equal(again[name].values, ds[name].values, err_msg=name)
    # other models: the run's intervals (of a parameter M1 lacks) are not taken over
    m1 = fit(open_results(tmp_path / "results.zarr")["power"], models={"m1": "powerlaw_tail"})
    assert not any(v.endswith(("_lower", "_upper")) for v in m1.data_vars)
    # refused when called, not when computed
    power = open_results(tmp_path / "results.zarr")["power"]
    with pytest.raises(ValueError, match="fit.intervals needs fit.optimizer=specfit"):
        fit(power, intervals=["bump_center"], optimizer="original")
    with pytest.raises(ValueError, match="fit.intervals must be a list"):
        fit(power, intervals=None)
    bad = tiny_config(tmp_path / "b", fit={"intervals": ["bump_centre"]})
    with pytest.raises(ConfigError, match="fit.intervals: 'bump_centre'"):
        run(bad)
    assert not (tmp_path / "b" / "results.zarr").exists()


def test_a_cube_slab_graph_does_not_grow_with_the_cube():
    """Each slab of the cube is cut from the input before the rechunk, so its graph holds its
    own part of the rechunk: the same size for a 128² and a 1024² cube (cut from the
    rechunked cube, the slab carried the whole cube's rechunk, which made the client's cost
    per slab grow with the cube)."""
    import dask.array as da

    from specfit.pipeline import _slab

    def rechunk_tasks(side: int) -> int:
        source = da.zeros((240, side, side), chunks=(120, 64, 64), dtype="float64")
        cut = _slab(source, (slice(None), slice(64, 128), slice(0, 64)), (52, 32, 32), "tasks")
        assert cut.dtype == np.float32 and cut.chunks == ((52, 52, 52, 52, 32), (32, 32), (32, 32))
        layers = cut.__dask_graph__().layers
        return sum(len(v) for k, v in layers.items() if k.startswith("rechunk"))

    assert rechunk_tasks(128) == rechunk_tasks(1024) > 0


def test_fit_weights_dlogf_needs_lsq_before_any_work_and_output_plots_plots(tmp_path, caplog):
    """`fit.weights: dlogf` with the default whittle was found by each tile's fit after the
    cube was written (a traceback per tile, and the advice to resume could not be followed);
    `output.plots: true` was accepted and did nothing (the config reviewer)."""
    from specfit.errors import ConfigError
    from specfit.pipeline import run

    cfg = tiny_config(tmp_path, fit={"weights": "dlogf"})
    with pytest.raises(ConfigError, match=r"fit.weights=dlogf .* fit.method is whittle"):
        run(cfg)
    assert not (tmp_path / "results.zarr").exists()
    assert not (tmp_path / "results.zarr.specfit-work").exists()
    cfg = tiny_config(tmp_path, output={"plots": True})
    run(cfg)
    plots = tmp_path / "results_plots"
    assert (plots / "maps.html").is_file() and (plots / "m1_index.png").is_file()
    # asked for on a finished store (--resume --set output.plots=true): drawn, not "nothing to
    # do" in silence (a probe's finding); drawn again only if the folder is gone
    import shutil

    shutil.rmtree(plots)
    run(cfg, resume=True)
    assert (plots / "maps.html").is_file()
    # a store not named .zarr keeps its whole name (res.v1, res.v2: one folder each), and a
    # plot that cannot be made is a warning: the run is complete (it raised after finishing)
    mine = tmp_path / "res.v1_plots"
    mine.mkdir()
    (mine / "m1_index.png").write_text("the user's own file")
    cfg["output"]["path"] = str(tmp_path / "res.v1")
    with caplog.at_level(logging.WARNING, logger="specfit"):
        ds = run(cfg)
    assert ds.attrs["complete"] and (mine / "m1_index.png").read_text() == "the user's own file"
    assert "output.plots: no plots" in caplog.text and "specfit plot" in caplog.text
    assert not (tmp_path / "res_plots").exists()


def test_two_aliases_that_would_name_one_map_are_refused_before_any_work(tmp_path, demo_store):
    """fit.models {a: powerlaw_tail_lorentzian, a_bump: powerlaw_tail}: a's bump_amplitude and
    a_bump's amplitude were both stored as a_bump_amplitude, one lost without a word (the
    config reviewer), in runs and in specfit.fit. Aliases that only look alike are fine."""
    import specfit
    from specfit.errors import ConfigError
    from specfit.pipeline import run

    clash = ["fit.models={a: powerlaw_tail_lorentzian, a_bump: powerlaw_tail}"]
    with pytest.raises(ConfigError, match=r"aliases 'a' and 'a_bump' would both write the map"):
        run(tiny_config(tmp_path), clash)
    assert not (tmp_path / "results.zarr").exists()
    power = specfit.open_results(demo_store)["power"]
    with pytest.raises(ConfigError, match=r"'a_bump_amplitude'"):
        specfit.fit(power, models={"a": "powerlaw_tail_lorentzian", "a_bump": "powerlaw_tail"})
    with pytest.raises(ConfigError, match=r"weights='dlogf' weights least squares"):
        specfit.fit(power, weights="dlogf")
    ds = specfit.fit(power, models={"pl": "powerlaw_tail", "pl_2": "powerlaw_tail_lorentzian"})
    assert {"pl_index", "pl_2_index", "pl_2_bump_amplitude"} <= set(ds.data_vars)


def test_lsq_with_correlated_bins_warns_that_its_errors_are_too_small(tmp_path, caplog):
    """lsq treats the bins as independent; a taper or overlapping Welch segments correlate
    them and its errors come out too small (M1 index pulls spread 1.21 on simulated 2-segment
    Hann spectra with the true sigma, 1.02 without a window). The run warns before work,
    naming the fix; lsq without a window or overlap, and whittle / lsq_log (which account
    for the correlation) with one, do not."""
    from specfit.pipeline import run

    cases = (
        ("lsq", {"window": "hann", "box": 3}, True),
        ("lsq", {"segment_length": 1200.0, "overlap": 0.5, "box": 3}, True),
        ("lsq", {"box": 3}, False),
        ("whittle", {"window": "hann"}, False),
        ("lsq_log", {"segment_length": 1200.0, "overlap": 0.5}, False),
    )
    for i, (method, spectra, warned) in enumerate(cases):
        caplog.clear()
        cfg = tiny_config(
            tmp_path / str(i),
            spectra=spectra,
            fit={"method": method},
            cluster={"kind": "synchronous"},
        )
        with caplog.at_level(logging.WARNING, logger="specfit"):
            run(cfg)
        said = "lsq's parameter errors treat the bins as independent" in caplog.text
        assert said == warned, (method, spectra, caplog.text)


def test_a_disk_that_fills_while_tiles_are_written_is_said_once(tmp_path, monkeypatch, caplog):
    """A full disk while tiles were written gave a traceback per tile and a RunError quoting
    OSError(28, ...) (the config reviewer; the README promises one line naming the file).
    Now one line per tile and one message with the file, the fix and --resume."""
    import errno
    import logging

    import specfit.pipeline as pipeline
    from specfit.errors import RunError

    def full(plan, ty, tx):
        raise OSError(errno.ENOSPC, "No space left on device", f"/full/c/{ty}/{tx}")

    monkeypatch.setattr(pipeline, "process_tile", full)
    with caplog.at_level(logging.ERROR, logger="specfit"):
        with pytest.raises(RunError) as info:
            pipeline.run(tiny_config(tmp_path))
    msg = str(info.value)
    assert "tile(s) failed: No space left on device writing /full/c/0/0" in msg, msg
    assert "free space (or raise the limit), then run again with --resume" in msg
    assert "Traceback" not in caplog.text and "OSError(" not in msg
    assert "tile (0, 1) failed: [Errno 28] No space left on device" in caplog.text
