"""Each lazy stage on deliberately uneven dask chunks equals its serial kernel on the whole array."""

from __future__ import annotations

import re

import numpy as np
import pytest
import xarray as xr

from specfit import stages
from specfit.config import DEFAULTS
from specfit.errors import ConfigError, InputError
from specfit.kernels import periodogram as pg
from specfit.kernels import resample as rs
from specfit.kernels.periodogram import window_rho, window_vif
from specfit.kernels.tile import bin_rho


def _cube(nt=160, ny=13, nx=11, seed=0, irregular=True):
    rng = np.random.default_rng(seed)
    t = np.arange(nt) * 10.0
    if irregular:
        t = t + rng.uniform(-1.5, 1.5, nt)
        t[0] = 0.0
        t = np.delete(t, [40, 41, 90])  # a gap
    vals = rng.standard_normal((t.size, ny, nx)).cumsum(axis=0).astype(np.float32) + 100
    vals[5, 2, 3] = np.nan  # a missing sample
    vals[:, 7, 1] = np.nan  # a dead pixel
    return xr.DataArray(
        vals, dims=("time", "y", "x"), coords={"time": t, "y": np.arange(ny), "x": np.arange(nx)}
    )


def test_resample_uneven_chunks_equals_serial_kernel():
    arr = _cube()
    lazy = stages.resample(arr.chunk({"time": 37, "y": 5, "x": 4}))  # per-frame-ish chunks
    got = lazy.values
    t = arr["time"].values
    tn = rs.uniform_times(t)
    rows = arr.values.reshape(t.size, -1).T
    ref = rs.interp_linear(t, rows, tn).T.reshape(tn.size, *arr.shape[1:])
    np.testing.assert_array_equal(got, ref)
    # And against np.interp directly on one ordinary pixel.
    np.testing.assert_allclose(got[:, 4, 4], np.interp(tn, t, arr.values[:, 4, 4]), rtol=1e-6)
    assert np.isnan(got[:, 7, 1]).all()
    assert lazy.attrs["gaps"], "the 3-frame gap must be reported"


@pytest.mark.parametrize("box", [1, 3])
def test_power_spectra_uneven_chunks_equal_serial(box):
    arr = stages.resample(_cube(irregular=False)).compute()
    lazy = stages.power_spectra(
        arr.chunk({"y": 4, "x": 3}),
        segments=2,
        window="hann",
        detrend="linear",
        box=box,
        box_dof="nominal",  # the dof asserted below count every pixel (auto estimates N_eff)
    )
    got = lazy.values
    dt = float(arr["time"][1] - arr["time"][0])
    rows = arr.values.reshape(arr.sizes["time"], -1).T
    f, p, meta = pg.periodogram(
        rows, dt, segments=2, overlap=0.0, window="hann", detrend="linear", normalisation="density"
    )
    full = p.T.reshape(f.size, *arr.shape[1:])
    if box > 1:
        full, _, count = pg.box_average(full, box)
        assert lazy["dof"].values[0, 0] == meta["dof"] * count[0, 0]  # corner: 4 of 9 pixels
    np.testing.assert_allclose(got, full, rtol=2e-6, equal_nan=True)
    np.testing.assert_allclose(lazy["freq"].values, f)
    assert lazy.attrs["segments"] == 2 and lazy.attrs["box"] == box


def test_a_strided_resampled_series_is_named_by_its_stale_cadence():
    """Every other frame of a resampled series is uniform: the message said to call
    specfit.resample first, as if it were not; it names the cadence attr now."""
    arr = stages.resample(_cube(irregular=False))
    with pytest.raises(InputError, match=r"uniform at 20 s but its cadence attr says 10 s"):
        stages.power_spectra(arr.isel(time=slice(0, None, 2)))


def test_a_segment_shorter_than_three_samples_is_refused():
    """A Welch segment of 10 s at a 10 s cadence was raised to 4 samples (40 s segments, one
    frequency) without a word (spectra reviewer); it is refused with the shortest that works."""
    arr = stages.resample(_cube(irregular=False))
    with pytest.raises(ConfigError, match=r"10 s is 1 samples at the 10 s cadence.*at least 30 s"):
        stages.power_spectra(arr, segment_length=10.0)
    power = stages.power_spectra(arr, segment_length=30.0)
    assert power.sizes["freq"] == 1 and power.attrs["segment_length"] == 3  # samples


def test_power_spectra_refuses_irregular_times():
    with pytest.raises(ValueError, match="resample"):
        stages.power_spectra(_cube())


def test_fit_uneven_chunks_equal_kernel_on_all_pixels():
    from specfit.kernels.fitting import fit_block
    from specfit.models import get_model
    from specfit.synthetic import synthetic_series

    t, counts, exptime, truth = synthetic_series((9, 10), 300, 12.0, seed=5)
    arr = xr.DataArray(counts / exptime[:, None, None], dims=("time", "y", "x"), coords={"time": t})
    power = stages.power_spectra(stages.resample(arr), window="hann").compute()
    models = {"m1": "powerlaw_tail", "m2": "powerlaw_tail_lorentzian"}
    res = stages.fit(power.chunk({"y": 4, "x": 3}), models=models).compute()
    rows = power.values.reshape(power.sizes["freq"], -1).T.astype(float)
    ref = fit_block(
        power["freq"].values,
        rows,
        {k: get_model(v) for k, v in models.items()},
        # Hann-tapered bins are correlated: the Whittle fit gets dof / vif (composite likelihood).
        dof=power["dof"].values.ravel() / window_vif("hann", power.attrs["segment_length"]),
        bin_rho=window_rho("hann", power.attrs["segment_length"]),
        # The API's defaults, from the config.
        method=DEFAULTS.fit.method,
        **{k: getattr(DEFAULTS.fit, k) for k in stages.FIT_OPTION_KEYS},
    )
    for name, v in ref.items():
        got, want = res[name].values.ravel(), np.asarray(v).astype(res[name].dtype)
        if name.endswith("_nfev"):  # the iteration count follows the same tolerance
            assert np.mean(got == want) > 0.95, name
        elif got.dtype.kind == "f":
            # Sums over bins may differ in the last bit, and a few M2 fits stop at a slightly
            # different point within the solver's convergence tolerance (seen: 2.6e-5 relative
            # on 2 of 90 pixels), so the agreement asked is 1e-4 relative.
            np.testing.assert_allclose(got, want, rtol=1e-4, equal_nan=True, err_msg=name)
        else:
            np.testing.assert_array_equal(got, want, err_msg=name)
    assert res["m1_index"].attrs.get("units") is not None


def test_a_given_dof_means_what_the_coordinate_does_and_is_matched_by_label():
    """fit(power, dof=power.dof) skipped the window's variance inflation that fit(power)
    applies (errors 30 % too small, LRT p-values off, on Hann spectra), and a dof map was
    matched by position: a flipped map was used without a word."""

    arr = _cube(nt=200, ny=8, nx=6, irregular=False)
    power = stages.power_spectra(stages.resample(arr), window="hann", segments=2).compute()
    m1 = {"m1": "powerlaw_tail"}
    a = stages.fit(power, models=m1).compute()
    b = stages.fit(power, models=m1, dof=power["dof"]).compute()
    c = stages.fit(power, models=m1, dof=float(power["dof"].values.flat[0])).compute()
    for name in a.data_vars:
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)
        # a number is float64 where the coordinate is float32: equal to float32 rounding
        np.testing.assert_allclose(c[name].values, a[name].values, rtol=1e-6, err_msg=name)
    flipped = power["dof"].isel(y=slice(None, None, -1))
    with pytest.raises(ConfigError, match="dof's y coordinate differs from the spectra's"):
        stages.fit(power, models=m1, dof=flipped)


def test_fit_lsq_with_dlogf_weights_needs_no_sigma():
    """fit(method='lsq', weights='dlogf') builds the original's sigma from the frequencies
    (no box spread needed) and equals the kernel; best_model='chi2sum' passes through."""
    from specfit.kernels.fitting import fit_block
    from specfit.synthetic import synthetic_series

    t, counts, exptime, _ = synthetic_series((4, 5), 300, 12.0, seed=6)
    arr = xr.DataArray(counts / exptime[:, None, None], dims=("time", "y", "x"), coords={"time": t})
    power = stages.power_spectra(stages.resample(arr)).compute()
    models = {"m1": "powerlaw_tail", "m2": "powerlaw_tail_lorentzian"}
    opts = {"weights": "dlogf", "best_model": "chi2sum", "multistart": 1}
    res = stages.fit(power.chunk({"y": 3}), models=models, method="lsq", **opts).compute()
    rows = power.values.reshape(power.sizes["freq"], -1).T.astype(float)
    full = {**{k: getattr(DEFAULTS.fit, k) for k in stages.FIT_OPTION_KEYS}, **opts}
    rho = bin_rho(power.attrs["window"], power.attrs["segment_length"])
    ref = fit_block(power["freq"].values, rows, models, method="lsq", bin_rho=rho, **full)
    for name in ("m1_index", "m2_index", "m2_chi2red", "best_model"):
        np.testing.assert_allclose(
            res[name].values.ravel(), np.asarray(ref[name]), rtol=1e-5, err_msg=name
        )
    assert res["best_model"].attrs["rule"] == "chi2sum"
    with pytest.raises(ValueError, match="sigma"):
        stages.fit(power, models=models, method="lsq")  # the default weights need sigma


def test_fit_checks_its_arguments_when_called():
    """What a config would refuse is refused by specfit.fit when called (it ran to statuses
    8/1/4 on every pixel, or failed inside a tile at compute time)."""
    import specfit
    from specfit.errors import ConfigError

    f = np.arange(1, 40) / 7200.0
    pw = xr.DataArray(np.ones((39, 2, 2)), dims=("freq", "y", "x"), coords={"freq": f})
    for kw, match in (
        ({"alpha": 5}, "alpha=5"),
        ({"tol": -1}, "tol=-1"),
        ({"max_iter": -1}, "max_iter=-1"),
        ({"dof": 0.0}, "dof=0.0 must be a positive number"),
        ({"method": "bogus"}, "method='bogus'"),
    ):
        with pytest.raises(ConfigError, match=match):
            specfit.fit(pw, **kw)
    with pytest.raises(ConfigError, match="strictly increasing"):
        specfit.fit(pw.isel(freq=slice(None, None, -1)))
    with pytest.raises(ConfigError, match="needs an xarray.DataArray with dims"):
        specfit.fit(pw.values)
    with pytest.raises(ValueError, match=r"fit.models must map an alias to a model"):
        specfit.fit(pw, models=["powerlaw_tail"])  # an AttributeError before


def test_resample_reads_datetime_times_and_refuses_none(tmp_path):
    """A datetime64 time coordinate (ms here) is converted, not read as seconds (a cadence of
    12000 s and frequencies 1000x too low); no time coordinate, or too long a cadence, is one
    line before any work."""
    import specfit
    from specfit.errors import ConfigError, InputError
    from specfit.synthetic import make_synthetic

    frames = make_synthetic(tmp_path / "s", shape=(4, 4), n_frames=64, seed=1).frames
    fr = specfit.ingest(str(frames))
    t = np.datetime64("2024-01-01T00:00:00", "ms") + (fr.time.values * 1e3).astype(
        "timedelta64[ms]"
    )
    a = specfit.resample(fr.assign_coords(time=t))
    b = specfit.resample(fr)
    assert a.attrs["cadence"] == b.attrs["cadence"] == 12.0
    # the same series to the times' millisecond rounding
    np.testing.assert_allclose(a.values, b.values, rtol=1e-3)
    with pytest.raises(InputError, match="needs a time coordinate"):
        specfit.resample(fr.drop_vars("time"))
    with pytest.raises(ConfigError, match=r"cadence=1e\+06 s gives 1 sample"):
        specfit.resample(fr, cadence=1e6)


def test_stages_take_dims_in_any_order_and_refuse_other_arrays():
    """resample and power_spectra work on (time, y, x) in any axis order: a (time, x, y) cube
    gives the same labelled spectra (its y and x were swapped before, silently, on a
    non-square field), a (y, x, time) one the same values (it failed at compute); an array
    without those dims or a plain ndarray is one line naming what came and the fix."""
    from specfit.errors import InputError

    cube = stages.resample(_cube()).compute()
    assert cube.sizes["y"] != cube.sizes["x"]  # so a swap cannot go unseen
    ref = stages.power_spectra(cube).compute()
    for order in (("time", "x", "y"), ("y", "x", "time")):
        got = stages.power_spectra(cube.transpose(*order)).compute()
        assert got.dims == ("freq", "y", "x")
        xr.testing.assert_identical(got, ref)
        res = stages.resample(_cube().transpose(*order)).compute()
        xr.testing.assert_identical(res, cube)
    with pytest.raises(InputError, match=r"needs a \(time, y, x\) xarray.DataArray.*ndarray"):
        stages.power_spectra(cube.values)
    with pytest.raises(InputError, match=r"needs dims \(time, y, x\), got \('time', 'x'\)"):
        stages.power_spectra(cube.isel(y=0))
    with pytest.raises(InputError, match="needs a time coordinate"):
        stages.power_spectra(cube.drop_vars("time"))
    with pytest.raises(InputError, match=r"reads frames from files .* got DataArray \(160"):
        stages.ingest(cube)  # an AttributeError ('kind') before


def test_stage_arguments_are_checked_when_called_as_specfit_errors():
    """Bad stage arguments are a SpecfitError (ConfigError, a ValueError) naming the argument
    when the call is made; they were builtin ValueError/KeyError, and box=2 passed the call
    and failed inside dask at compute."""
    import specfit
    from specfit.errors import ConfigError, NotFoundError, SpecfitError

    cube = stages.resample(_cube())
    power = stages.power_spectra(cube)
    cases = [
        (lambda: stages.resample(_cube(), cadence=-1), r"specfit.resample: cadence=-1"),
        (lambda: stages.resample(_cube(), cadence="24s"), r"cadence='24s'"),
        (lambda: stages.power_spectra(cube, box=2), r"box=2: must be odd"),
        (lambda: stages.power_spectra(cube, window="hamming"), r"window='hamming'"),
        (lambda: stages.power_spectra(cube, segments=100), r"specfit.power_spectra: .*segments"),
        (lambda: stages.fit(power, models={"m1": "nosuch"}), r"fit.models.m1: unknown model 'no"),
    ]
    for call, match in cases:
        with pytest.raises(ConfigError, match=match):
            call()
    with pytest.raises(NotFoundError, match="does not exist") as err:
        specfit.open_results("/nonexistent/results.zarr")
    assert isinstance(err.value, SpecfitError) and isinstance(err.value, FileNotFoundError)


def test_the_stage_functions_bad_arguments_are_specfit_errors():
    """README: every explainable error derives from SpecfitError, the stage functions' bad
    arguments included; these raised TypeError/ValueError (the helpers' findings)."""
    from specfit.errors import ConfigError, InputError
    from specfit.models import get_model

    cube = _cube(nt=60, irregular=False)
    for t in ([0.0, 12.0, 12.0], [0.0, 24.0, 12.0], [0.0, np.nan, 24.0]):
        bad = cube.isel(time=slice(0, 3)).assign_coords(time=t)
        with pytest.raises(InputError, match="specfit.resample: times"):
            stages.resample(bad)
    # Fewer than 8 frames: a finer cadence only interpolated between them (3 frames at 1.2 s
    # gave 21 samples and status-0 fits of straight lines; a helper's finding)
    for n in (2, 3, 7):
        with pytest.raises(InputError, match=f"specfit.resample: only {n} frames; at least 8"):
            stages.resample(cube.isel(time=slice(0, n)), cadence=1.2)
    stages.resample(cube.isel(time=slice(0, 8)))
    text = cube.assign_coords(time=np.array(["2020-01-01T00:00:00"] * cube.sizes["time"]))
    with pytest.raises(InputError, match="seconds or datetime64"):
        stages.resample(text)
    power = stages.power_spectra(stages.resample(cube), segments=1, window="none")
    _pl = get_model("powerlaw_tail")
    for kw, match in [
        ({"max_iters": 5}, "unknown fit option"),
        ({"intervals": ["bump_centre"]}, "fit.intervals"),
        ({"bounds": {"powerlaw_tail": {"indx": (0, 3)}}}, "indx"),
        ({"method": "lsq"}, "needs sigma"),
        ({"models": {}}, "at least one model"),
        ({"optimizer": "original"}, "fit.optimizer=original"),
        # malformed bounds: a traceback (TypeError) or no key named before (an API helper)
        ({"bounds": {"powerlaw_tail": {"index": 3}}}, r"bounds.powerlaw_tail.index: give \[low"),
        ({"bounds": {"powerlaw_tail": {"index": [3]}}}, r"powerlaw_tail.index: give \[low"),
        ({"bounds": {"powerlaw_tail": [0, 3]}}, r"fit.bounds.powerlaw_tail: give a mapping"),
        (
            {"bounds": {"powerlaw_tail_lorentzian": {"bump_width": [0, 5]}}},
            r"fit.bounds.powerlaw_tail_lorentzian.bump_width: the model has no finite value",
        ),
        # one model under two aliases: the copy was no nested partner of the bump model and
        # was weighed against it by BIC, overriding the LRT (a probe's finding)
        (
            {
                "models": {
                    "a": "powerlaw_tail",
                    "b": "powerlaw_tail",
                    "m2": "powerlaw_tail_lorentzian",
                }
            },
            "fit.models: a and b are both powerlaw_tail; give each model once",
        ),
        # the same model with other bounds: the message says how to fit both (named apart,
        # which runs: below)
        (
            {"models": {"a": _pl, "b": _pl.with_bounds({"tail": [0, 10]})}},
            r"name that copy apart, e.g. b: <model>.with_bounds\(...\).named\('powerlaw_tail_b'\)",
        ),
    ]:
        with pytest.raises(ConfigError, match=match):
            stages.fit(power, **kw)
    both = {"a": _pl, "b": _pl.with_bounds({"tail": [0, 10]}).named("powerlaw_tail_b")}
    out = stages.fit(power.isel(y=slice(0, 2), x=slice(0, 2)), models=both).compute()
    assert "a_index" in out and "b_index" in out and out["b_status"].attrs
    # the original's procedure on spectra without its attrs, or not variance-normalised:
    # plain ValueErrors before
    b = {"powerlaw_tail": {"amplitude": [0, 1], "index": [0, 5], "tail": [0, 10]}}
    kw = dict(models={"m1": "powerlaw_tail"}, method="lsq", weights="dlogf", bounds=b)
    bare = power.copy()
    bare.attrs = {}
    with pytest.raises(ConfigError, match="needs power.attrs"):
        stages.fit(bare, optimizer="original", **kw)
    with pytest.raises(ConfigError, match="normalisation"):
        stages.fit(power, optimizer="original", **kw)
    with pytest.raises(ConfigError, match="needs real power"):  # complex: imaginary dropped
        stages.fit(power.astype(np.complex64), models={"m1": "powerlaw_tail"})
    with pytest.raises(ConfigError, match="with_sigma=True needs box > 1"):
        stages.power_spectra(stages.resample(cube), with_sigma=True)


def test_a_gap_just_above_max_gap_is_not_printed_as_max_gap(caplog):
    """The demo's 24.014 s gap at 12 s cadence was printed "2.0 cadences" under "gaps > 2
    cadences" (a reviewer's finding): one decimal rounds it onto the threshold."""
    with caplog.at_level("WARNING", logger="specfit"):
        stages.report_gaps([(0.0, 24.014), (100.0, 148.0)], 12.0)
    a, b = (r.getMessage() for r in caplog.records)
    assert "(2.001 cadences)" in a and "(4.0 cadences)" in b, (a, b)


def test_fit_argument_errors_are_specfit_errors(tmp_path, monkeypatch):
    """The README promises a SpecfitError naming the argument for every bad argument of the
    stage functions; the API reviewer found raw ImportError / ValueError / AttributeError /
    TypeError for these, one of them only at compute time."""
    from specfit.errors import ConfigError
    from specfit.models import POWER_LAW, TAIL

    rng = np.random.default_rng(0)
    power = xr.DataArray(
        rng.exponential(size=(40, 3, 4)) + 1.0,
        dims=("freq", "y", "x"),
        coords={"freq": np.arange(1, 41) / 960.0},
    )
    raising = tmp_path / "raising_models.py"
    raising.write_text("raise RuntimeError('my bug')\n")
    empty = tmp_path / "no_models.py"
    empty.write_text("X = 1\n")
    raising_module = "specfit_test_raises_on_import"
    (tmp_path / f"{raising_module}.py").write_text("raise RuntimeError('in the module')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    short = tmp_path / "short_models.py"
    short.write_text(
        "import numpy as np\n"
        "from specfit.models import SPECTRUM_UNIT, POWER_LAW, TAIL, Component, Parameter\n"
        "def sd(lnf, sd_amp):\n"
        '    """sd_amp exp(-lnf^2)"""\n'
        "    e = np.exp(-lnf ** 2)\n"
        "    return sd_amp * e, e[:-1]\n"
        "SD = Component('sd', sd, (Parameter('sd_amp', SPECTRUM_UNIT, (0, np.inf), 0.1),))\n"
        "MODEL = (POWER_LAW + TAIL + SD).named('short_derivative')\n"
    )
    cases = [
        ({"user_models": [str(raising)]}, r"fit.user_models: error while importing .*my bug"),
        ({"user_models": ["no_such_module_xyz"]}, r"fit.user_models"),
        ({"user_models": [str(empty)]}, r"fit.user_models: .*defines no model"),
        ({"models": {"a": POWER_LAW}}, r"fit.models.a: a Component is not a model"),
        ({"models": {"a": POWER_LAW + TAIL}}, r"fit.models.a: an unnamed sum of components"),
        ({"dof": xr.DataArray(np.full(3, 2.0), dims=("q",))}, r"dof must be .* dims \(y, x\)"),
        ({"method": "lsq", "sigma": np.ones((40, 3, 4))}, r"sigma must be a DataArray"),
        ({"method": "lsq", "sigma": power.isel(freq=slice(0, 39))}, r"sigma must be a DataArray"),
        # (code reviewer) an importable module that raises, a numpy dof array, a derivative
        # of another length: RuntimeError, numpy's "truth value is ambiguous", a broadcast error
        ({"user_models": [raising_module]}, r"error while importing module .*RuntimeError: in"),
        ({"dof": np.full((3, 4), 2.0)}, r"dof=an array of shape \(3, 4\) must be a positive"),
        (
            {"user_models": [str(short)], "models": {"a": "short_derivative"}},
            r"fit.models.a: .*shape sd returned its derivative with respect to sd_amp with shape",
        ),
    ]
    for kwargs, message in cases:
        with pytest.raises(ConfigError, match=message):
            stages.fit(power, **kwargs)


def test_a_check_across_stage_arguments_names_them_in_one_line():
    """power_spectra(fmin above fmax): the message was '={...every setting...}: Value error,
    fmax must be greater than fmin' (the API reviewer); now the check's own words."""
    from specfit.errors import ConfigError

    series = stages.resample(
        xr.DataArray(
            np.random.default_rng(0).random((64, 2, 2)) + 1.0,
            dims=("time", "y", "x"),
            coords={"time": np.arange(64) * 12.0},
        )
    )
    with pytest.raises(ConfigError) as e:
        stages.power_spectra(series, fmin=0.01, fmax=0.001)
    assert str(e.value) == "specfit.power_spectra: fmax must be greater than fmin"


def test_a_grid_coarser_than_the_frames_is_warned_about(tmp_path, caplog):
    """resample.cadence 2x the frames' spacing: the grid lands on every other frame, so no
    interpolation warning fired, half the frames went unused and the power above the grid's
    Nyquist folded into the band without a word (the first-user reviewer). The run and
    specfit.resample now warn, naming the frames' spacing to use."""
    import logging

    from conftest import tiny_config
    from specfit.pipeline import run

    times = np.arange(64) * 12.0
    arr = xr.DataArray(
        np.random.default_rng(0).random((64, 2, 2)) + 1.0,
        dims=("time", "y", "x"),
        coords={"time": times},
    )
    with caplog.at_level(logging.WARNING, logger="specfit"):
        stages.resample(arr)
        stages.resample(arr, cadence=15.0)  # 1.25x: interpolation, no frame skipped
        assert "skips frames" not in caplog.text
        stages.resample(arr, cadence=24.0)
        assert "resample.cadence 24 s is 2x the frames' median spacing 12 s" in caplog.text
        caplog.clear()
        cfg = tiny_config(tmp_path)
        cfg.setdefault("resample", {})["cadence"] = 2 * float(cfg["input"]["synthetic"]["cadence"])
        run(cfg)
        assert "the grid skips frames (they are not used)" in caplog.text
        caplog.clear()
        # a cadence specfit chose (bursts of 1-3 s steps between 10 s ones: it picks 10 s)
        # is named as its choice, not as the user's setting with "or null" as the fix (the
        # code reviewer: null was what had been used)
        rng = np.random.default_rng(2)
        steps = np.where(rng.random(300) < 0.55, rng.uniform(1, 3, 300), 10.0)
        bursts = xr.DataArray(
            rng.random((301, 2, 2)),
            dims=("time", "y", "x"),
            coords={"time": np.concatenate([[0.0], np.cumsum(steps)])},
        )
        stages.resample(bursts)
        assert "resample.cadence: null chose 10 s" in caplog.text
        assert "or null" not in caplog.text


def test_power_spectra_take_the_unit_from_xarrays_units_attr_too():
    """A DataArray in xarray's convention (attrs units, not specfit's bunit) got spectra in
    '(intensity)^2/Hz' (the API reviewer)."""
    arr = xr.DataArray(
        np.random.default_rng(0).random((64, 2, 2)) + 1.0,
        dims=("time", "y", "x"),
        coords={"time": np.arange(64) * 12.0},
        attrs={"units": "DN/s"},
    )
    assert stages.power_spectra(stages.resample(arr)).attrs["units"] == "(DN/s)^2/Hz"


def test_time_and_frequency_coordinates_in_other_units_are_refused():
    """A time coordinate in milliseconds was read as seconds (frequencies ~1e-7 Hz) and a freq
    coordinate in mHz as Hz (amplitudes and bump centres off), silently (the API reviewer).
    Where the coordinate says its unit (xarray's attrs), another unit is refused."""
    from specfit.errors import ConfigError, InputError

    values = np.random.default_rng(0).random((64, 2, 2)) + 1.0
    for unit, ok in (
        ("ms", False),
        ("min", False),
        ("s", True),
        ("seconds since 2012-06-06", True),
    ):
        arr = xr.DataArray(
            values,
            dims=("time", "y", "x"),
            coords={"time": ("time", np.arange(64) * 12.0, {"units": unit})},
        )
        if ok:
            stages.resample(arr)
        else:
            with pytest.raises(InputError, match=f"time coordinate's units are '{unit}'"):
                stages.resample(arr)
            # power_spectra says it too, as an InputError naming itself (was a bare ValueError)
            with pytest.raises(InputError, match=r"^specfit.power_spectra: the time coordinate"):
                stages.power_spectra(arr)
    # the message's own fix works (the code reviewer: xarray keeps the "ms" attr through
    # arithmetic, so the fix it used to suggest, time=arr.time / 1000, was refused again)
    ms = arr.assign_coords(time=("time", np.arange(64) * 12000.0, {"units": "ms"}))
    with pytest.raises(InputError) as e:
        stages.resample(ms)
    fix = re.search(r"e\.g\. (arr\.assign_coords\(.*\)) for milliseconds", str(e.value)).group(1)
    stages.resample(eval(fix, {"arr": ms}))
    power = stages.power_spectra(stages.resample(arr))
    milli = power.assign_coords(freq=("freq", power["freq"].values * 1e3, {"units": "mHz"}))
    with pytest.raises(ConfigError, match="freq coordinate's units are 'mHz'; give it in Hz"):
        stages.fit(milli)


def _gamma_power(ny=1, nx=3, dof=8.0, seed=0):
    """(freq, y, x) Gamma-noise spectra of 1e-5 f^-2 + 1 on 149 bins of a 24 s series."""
    f = np.arange(1, 150) / (2 * 149 * 24.0)
    truth = (1e-5 * f**-2 + 1.0)[:, None, None]
    noise = np.random.default_rng(seed).gamma(dof / 2, 2 / dof, (f.size, ny, nx))
    return xr.DataArray(
        truth * noise,
        dims=("freq", "y", "x"),
        coords={"freq": f, "y": np.arange(ny), "x": np.arange(nx)},
    )


def test_fit_refuses_what_it_would_misread_when_called():
    """API probe, 2026-12-07: each of these ran and gave other numbers than asked for (sigma
    matched by position, an unknown window read as Hann, a bump centre bounded outside the
    band stored outside its bounds, numbers given as text failing inside a task)."""
    import specfit

    power = _gamma_power()
    sigma = power * 0.5
    cases = [
        ({"method": "lsq", "sigma": sigma.isel(y=[0], x=[2, 1, 0])}, "sigma's x coordinate"),
        (
            {"method": "lsq", "sigma": sigma.assign_coords(freq=power.freq * 3)},
            "sigma's freq coordinate",
        ),
        ({"sigma": sigma}, "sigma weights least squares, but method is 'whittle'"),
        ({"method": "lsq", "sigma": sigma, "weights": "dlogf"}, "pass no sigma"),
        (
            {"bounds": {"powerlaw_tail_lorentzian": {"bump_center": [-3, -1]}}},
            r"bump_center is bounded to \[-3, -1\], but .* can only lie in \[-8.875, -3.871\]",
        ),
    ]
    # raw TypeErrors / xarray errors before, at call time
    cases += [
        ({"dof": "4"}, r"dof='4' must be a positive number"),
        ({"models": {1: "powerlaw_tail"}}, r"the alias 1 must be a name"),
        ({"user_models": "my_models.py"}, r"give a list of files or modules"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ConfigError, match=message):
            specfit.fit(power, **kwargs)
    along_freq = power.assign_coords(dof=("freq", np.full(power.sizes["freq"], 8.0)))
    with pytest.raises(ConfigError, match=r"dof coordinate has dims \('freq',\)"):
        specfit.fit(along_freq)
    for attrs, message in (
        ({"window": "hamming", "segment_length": 298}, r"attrs\['window'\] = 'hamming'"),
        ({"window": "hann"}, r"need power.attrs\['segment_length'\]"),
        ({"dof_per_spectrum": "x"}, r"attrs\['dof_per_spectrum'\] = 'x'"),
        ({"dof_per_spectrum": 0}, r"attrs\['dof_per_spectrum'\] = 0"),
    ):
        with pytest.raises(ConfigError, match=message):
            specfit.fit(power.assign_attrs(attrs))
    # numbers given as text are read as a config reads them, with the same results
    as_text = specfit.fit(power, multistart="3", tol="1e-8", alpha="0.05").compute()
    plain = specfit.fit(power, multistart=3, tol=1e-8, alpha=0.05).compute()
    for name in ("m1_index", "m2_index", "best_model"):
        np.testing.assert_array_equal(as_text[name].values, plain[name].values, err_msg=name)


def test_a_users_guess_the_solver_cannot_start_from_falls_back_to_the_defaults():
    """A user's guess with an amplitude (solved as ln p) of 0, or NaN, stopped where it
    began, reported as converged (status 6 / 7: 0 +- 0); it now starts from the declared
    defaults there, and reaches the optimum found from a good guess."""
    import specfit
    from specfit.models import POWER_LAW, TAIL

    power = _gamma_power(nx=4, dof=50.0, seed=2)

    def guess(f, p, dof, base):
        out = np.tile([1e-5, 2.0, 1.0], (p.shape[0], 1))
        out[1, 0] = 0.0  # np.maximum(estimate, 0) on a noisy pixel
        out[2] = np.nan
        out[3, 0] = -1e-5
        return out

    model = (POWER_LAW + TAIL).named("test_zero_guess", guess=guess)
    got = specfit.fit(power, models={"m": model}).compute()
    ref = specfit.fit(power, models={"m1": "powerlaw_tail"}).compute()
    assert (got["m_status"].values == 0).all(), got["m_status"].values
    np.testing.assert_allclose(got["m_loglike"].values, ref["m1_loglike"].values, atol=1e-6)
    np.testing.assert_allclose(got["m_amplitude"].values, ref["m1_amplitude"].values, rtol=1e-3)

    def wrong_shape(f, p, dof, base):
        return np.ones((p.shape[0], 2))

    bad = (POWER_LAW + TAIL).named("test_wrong_guess", guess=wrong_shape)
    with pytest.raises(Exception, match=r"guess function .*wrong_shape returned shape \(3, 2\)"):
        specfit.fit(_gamma_power(), models={"m": bad}).compute()


def test_a_dof_map_of_many_values_is_warned_about(caplog):
    """One LRT null reference per distinct dof value (a probe: 20 values took 8x as long as
    one): a continuous map is named before any work, with the rounding to use."""
    import specfit

    power = _gamma_power(nx=70)
    many = xr.DataArray(8.0 + np.arange(70)[None, :] / 100, dims=("y", "x"), coords={"x": power.x})
    with caplog.at_level("WARNING", logger="specfit"):
        specfit.fit(power, dof=many.assign_coords(y=power.y))  # lazy: nothing computed
        specfit.fit(power, dof=many.round(0).assign_coords(y=power.y))
    said = [r.getMessage() for r in caplog.records if "distinct values" in r.getMessage()]
    assert len(said) == 1 and "dof takes 70 distinct values" in said[0], said
    assert "quantise_neff" in said[0]
