"""``fit.optimizer: original`` (specfit.kernels.original): every pixel fitted by the original
specFit's own curve_fit procedure inside the normal fit, on small synthetic spectra.

The reference is scipy's ``curve_fit`` called here as the original's ``specFit.py`` called it
(its formulas, its units, no starting values, sigma = delta log10 f), independent of
specfit's code; the tolerances are float32 storage (rtol 1e-6)."""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest
from scipy.optimize import OptimizeWarning, curve_fit

from conftest import KERNEL_FIT, tiny_config
from specfit import models as M
from specfit.errors import ConfigError
from specfit.kernels import original
from specfit.kernels.fitting import STATUS_CODES
from specfit.kernels.fitting import fit_block as kernel_fit_block

UNIT = 7200.0  # the AIA example's dt N: specfit's variance power / the original's
F = np.arange(1, 150) / UNIT
# the original's bounds (its units); M1's amplitude kept >= 0 as in configs/legacy.yaml
B1 = ([0.0, 0.3, -0.01], [0.002, 6.0, 0.01])
B2 = ([0.0, 0.3, -0.01, 1e-5, -6.5, 0.05], [0.002, 6.0, 0.01, 0.2, -4.6, 0.8])
POWER = np.array([True, False, True, True, False, False])  # parameters in power units


def _model(name, b):
    """The registered model with the original's bounds in specfit's variance units."""
    m = M.get_model(name)
    lo, hi = (np.asarray(v) * np.where(POWER[: m.npar], UNIT, 1.0) for v in b)
    return m.with_bounds({n: (lo[i], hi[i]) for i, n in enumerate(m.param_names)})


MODELS = {"m1": _model("powerlaw_tail", B1), "m2": _model("powerlaw_tail_lorentzian", B2)}
FIT = {**KERNEL_FIT, "method": "lsq", "weights": "dlogf", "best_model": "chi2sum"}
fit_block = functools.partial(
    kernel_fit_block, **{**FIT, "optimizer": "original", "original_unit": UNIT}
)


def _spectra(npix: int, seed: int) -> np.ndarray:
    """(npix, 149) in specfit's variance units: power law + tail (+ a bump on every other
    pixel) with 5 % multiplicative noise, around the AIA example's levels."""
    rng = np.random.default_rng(seed)
    n = rng.uniform(1.0, 2.0, npix)[:, None]
    a = 10 ** rng.uniform(-6.5, -5.5, npix)[:, None]
    c = rng.uniform(5e-5, 2e-4, npix)[:, None]
    bump = np.where(np.arange(npix) % 2 == 0, 3e-3, 0.0)[:, None]
    lor = bump / (1.0 + ((np.log(F) - np.log(1 / 270.0)) / 0.2) ** 2)
    p = (a * F**-n + c + lor) * (1 + 0.05 * rng.standard_normal((npix, F.size)))
    return p * UNIT


def _reference(s):
    """The original's two fits of one spectrum (its units), straight from scipy."""
    d = np.diff(np.log10(F))
    sigma = np.append(d, d[-1])

    def m1(f, a, n, c):
        return a * f**-n + c

    def m2(f, a, n, c, p, fp, fw):
        return a * f**-n + c + p / (1.0 + ((np.log(f) - fp) / fw) ** 2)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OptimizeWarning)
        q1, c1 = curve_fit(m1, F, s, bounds=B1, sigma=sigma, method="dogbox")
        q2, _ = curve_fit(m2, F, s, bounds=B2, sigma=sigma, method="dogbox", max_nfev=3000)
        q2, c2 = curve_fit(m2, F, s, p0=q2, bounds=B2, sigma=sigma, max_nfev=3000)
    chi1 = float((((s - m1(F, *q1)) / sigma) ** 2).sum())
    chi2 = float((((s - m2(F, *q2)) / sigma) ** 2).sum())
    return (q1, c1, chi1), (q2, c2, chi2)


def test_each_pixel_is_scipys_curve_fit_from_the_middle_of_the_bounds_in_its_units():
    power = _spectra(6, 1)
    out = fit_block(F, power, MODELS, dof=36.0)
    for i in range(power.shape[0]):
        (q1, c1, chi1), (q2, c2, chi2) = _reference(power[i] / UNIT)
        for alias, q, cov, chi in (("m1", q1, c1, chi1), ("m2", q2, c2, chi2)):
            m = MODELS[alias]
            conv = np.where(POWER[: m.npar], UNIT, 1.0)
            got = np.array([out[f"{alias}_{n}"][i] for n in m.param_names], float)
            np.testing.assert_allclose(got, q * conv, rtol=1e-6, err_msg=f"{alias} px {i}")
            err = np.array([out[f"{alias}_{n}_err"][i] for n in m.param_names], float)
            lo, hi = (np.asarray(b) for b in (B1 if alias == "m1" else B2))
            inside = (lo < q) & (q < hi)
            want = np.where(inside, np.sqrt(np.diag(cov)) * conv, np.nan)
            np.testing.assert_allclose(err, want, rtol=1e-6, err_msg=f"{alias} err px {i}")
            assert out[f"{alias}_status"][i] == (0 if inside.all() else 7)
            # the raw chi-square sum in the spectra's units, over n - p as the original's
            red = chi * UNIT**2 / (F.size - m.npar)
            assert out[f"{alias}_chi2red"][i] == pytest.approx(red, rel=1e-6)
        assert out["best_model"][i] == (1 if chi1 > chi2 else 0)


def _raising_on(monkeypatch, target: np.ndarray, name: str):
    """Make the original's curve_fit of model ``name`` raise on one spectrum, as scipy does at
    its evaluation limit."""
    real = original.curve_fit_step

    def step(n, f, s, *args, **kw):
        if n == name and np.array_equal(s, target / UNIT):
            raise RuntimeError("Optimal parameters not found: max_nfev reached")
        return real(n, f, s, *args, **kw)

    monkeypatch.setattr(original, "curve_fit_step", step)


@pytest.mark.parametrize(
    "name, alias, kept", [("powerlaw_tail", "m1", 1), ("powerlaw_tail_lorentzian", "m2", 0)]
)
def test_a_raised_call_is_nan_and_status_10_there_and_never_the_neighbours_values(
    monkeypatch, name, alias, kept
):
    """The original kept the previous pixel's values where a call raised; here that model is
    NaN with status 10 on that pixel alone, the other model is kept, and every pixel's
    result is the same alone, in a block, and in reverse order."""
    power = _spectra(4, 2)
    alone = [fit_block(F, power[i : i + 1], MODELS, dof=36.0) for i in range(4)]
    _raising_on(monkeypatch, power[1], name)
    block = fit_block(F, power, MODELS, dof=36.0)
    rev = fit_block(F, power[::-1].copy(), MODELS, dof=36.0)
    assert block[f"{alias}_status"][1] == original.RAISED
    assert "original" in STATUS_CODES[original.RAISED]
    assert np.isnan(block[f"{alias}_index"][1]) and np.isnan(block[f"{alias}_chi2red"][1])
    assert block["best_model"][1] == kept
    for i in (0, 2, 3):
        for k, v in alone[i].items():
            np.testing.assert_array_equal(block[k][i], v[0], err_msg=f"{k} px {i}")
            np.testing.assert_array_equal(rev[k][3 - i], v[0], err_msg=f"{k} px {i} reversed")
    np.testing.assert_array_equal(rev[f"{alias}_status"][2], original.RAISED)


def test_bad_pixels_keep_their_status_and_too_few_bins_are_status_5():
    power = _spectra(3, 3)
    power[1, 5] = np.nan
    power[2] = 0.0
    out = fit_block(F, power, MODELS, dof=36.0)
    assert out["m1_status"].tolist()[1:] == [2, 3] and out["m2_status"].tolist()[1:] == [2, 3]
    assert out["best_model"].tolist()[1:] == [-1, -1]
    short = fit_block(F[:6], power[:1, :6], MODELS, dof=36.0)
    assert short["m2_status"][0] == 5 and short["m1_status"][0] in (0, 7)


def test_options_the_original_procedure_cannot_honour_are_errors():
    power = _spectra(1, 4)
    with pytest.raises(ValueError, match="fit.method=lsq"):
        fit_block(F, power, MODELS, dof=36.0, method="whittle", weights="sigma")
    with pytest.raises(ValueError, match="fit.weights=dlogf"):
        fit_block(F, power, MODELS, dof=36.0, weights="sigma", sigma=np.ones_like(power))
    with pytest.raises(ValueError, match="fit.models.m2 is 'powerlaw_tail_lognormal'"):
        fit_block(F, power, {"m2": "powerlaw_tail_lognormal"}, dof=36.0)
    with pytest.raises(ValueError, match="finite bounds for amplitude, tail"):
        fit_block(F, power, {"m1": "powerlaw_tail"}, dof=36.0)
    with pytest.raises(ValueError, match="original_unit"):
        fit_block(F, power, MODELS, dof=36.0, original_unit=None)
    with pytest.raises(ValueError, match="fit.optimizer must be one of specfit, original"):
        fit_block(F, power, MODELS, dof=36.0, optimizer="scipy")
    with pytest.raises(ValueError, match="spectra.normalisation=variance"):
        original.original_unit("density", 24.0, 300)
    assert original.original_unit("variance", 24.0, 300) == UNIT


LEGACY_BOUNDS = {
    "powerlaw_tail": {"amplitude": [0.0, 1.0], "index": [0.3, 6.0], "tail": [-10.0, 10.0]},
    "powerlaw_tail_lorentzian": {
        "amplitude": [0.0, 1.0],
        "index": [0.3, 6.0],
        "tail": [-10.0, 10.0],
        "bump_amplitude": [1e-3, 100.0],
        "bump_center": [-5.5, -3.5],
        "bump_width": [0.05, 0.8],
    },
}
ORIGINAL_FIT = {
    "method": "lsq",
    "weights": "dlogf",
    "best_model": "chi2sum",
    "optimizer": "original",
    "bounds": LEGACY_BOUNDS,
}


def test_a_run_with_the_original_optimizer_is_the_stage_fit_and_fails_early_when_unfit(
    tmp_path,
):
    """specfit run and specfit.fit give the same maps (tiles of 8 px on 8 x 10 px); a config
    the original procedure cannot run stops before any work with the key to change."""
    import xarray as xr

    from specfit import stages
    from specfit.pipeline import run

    base = {"input": {"synthetic": {"shape": [8, 10], "n_frames": 300, "cadence": 12.0}}}
    cfg = tiny_config(tmp_path, fit=ORIGINAL_FIT, spectra={"normalisation": "variance"})
    cfg["input"]["synthetic"].update(base["input"]["synthetic"])
    ds = run(cfg)
    assert ds.attrs["config"].count("optimizer: original") == 1
    st = ds["m2_status"].values
    assert set(np.unique(st)) <= set(STATUS_CODES) and (st == 0).mean() > 0.5
    assert np.isfinite(ds["m2_index"].values[st == 0]).all()
    opts = {k: ORIGINAL_FIT[k] for k in ("weights", "best_model", "optimizer")}
    lazy = stages.fit(
        xr.open_zarr(tmp_path / "results.zarr")["power"].chunk({"y": 3, "x": 4}),
        models=cfg["fit"]["models"],
        method="lsq",
        bounds=LEGACY_BOUNDS,
        **opts,
    ).compute()
    for name in lazy.data_vars:
        np.testing.assert_array_equal(lazy[name].values, ds[name].values, err_msg=name)

    for change, key in (
        ({"spectra": {"normalisation": "density"}}, "spectra.normalisation=variance"),
        ({"fit": {"method": "whittle"}}, "fit.method=lsq"),
        ({"fit": {"bounds": {}}}, "finite bounds"),
    ):
        c = tiny_config(
            tmp_path / "bad", fit=dict(ORIGINAL_FIT), spectra={"normalisation": "variance"}
        )
        for section, values in change.items():
            c[section].update(values)
        with pytest.raises(ConfigError, match=key):
            run(c)
        assert not (tmp_path / "bad" / "results.zarr").exists()


def test_the_optimizer_key_is_validated():
    from specfit.config import load_config

    assert load_config().fit.optimizer == "specfit"
    with pytest.raises(ConfigError, match="fit.optimizer: must be one of 'specfit' or 'original'"):
        load_config({"fit": {"optimizer": "scipy"}})
