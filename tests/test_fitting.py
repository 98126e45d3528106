"""fit_block: output contract, robustness to bad pixels, scale invariance, model choice."""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest

from conftest import KERNEL_FIT
from specfit import models as M
from specfit.kernels.fitting import STATUS_CODES, output_dtypes
from specfit.kernels.fitting import fit_block as kernel_fit_block
from specfit.store import fit_variables, models_attr

fit_block = functools.partial(kernel_fit_block, **KERNEL_FIT)

F = np.arange(1, 151) / 7200.0
MODELS = {"m1": "powerlaw_tail", "m2": "powerlaw_tail_lorentzian"}
M1 = M.get_model("powerlaw_tail")
M2 = M.get_model("powerlaw_tail_lorentzian")


def _spectra(n, seed, dof=18.0, bump=True):
    rng = np.random.default_rng(seed)
    truth = np.column_stack(
        [
            10 ** rng.uniform(-6.5, -5.0, n),
            rng.uniform(1.5, 2.5, n),
            np.ones(n),
            np.where(rng.random(n) < 0.5, 3.0, 0.0) if bump else np.zeros(n),
            np.full(n, np.log(1 / 300)),
            np.full(n, 0.25),
        ]
    )
    k = dof / 2
    return M2.evaluate(F, truth) * rng.gamma(k, 1 / k, size=(n, F.size)), truth


@pytest.mark.parametrize("method", ["whittle", "lsq_log", "lsq"])
@pytest.mark.parametrize(
    "models",
    [
        {"m1": "powerlaw_tail"},
        MODELS,
        {"a": "powerlaw_tail_lognormal", "b": "powerlaw_tail"},
    ],
)
def test_keys_order_dtypes_match_the_contract(method, models):
    y, _ = _spectra(6, 0)
    dtypes = output_dtypes(models, method=method, best_model="lrt", intervals=())
    mods = {a: M.get_model(m) for a, m in models.items()}
    out = fit_block(F, y, models, method=method, dof=18.0)
    spec = fit_variables(mods, method, "lrt", "(DN)^2/Hz")
    assert list(out)[: len(dtypes)] == list(dtypes)  # the kernel's own outputs first, in order
    assert set(out) == set(spec)  # then the derived maps: all of them the contract's
    for name, meta in spec.items():
        assert out[name].dtype == meta["dtype"], name
        assert out[name].shape == (6,)
        assert "units" in meta["attrs"] and "long_name" in meta["attrs"]
    alias = next(iter(models))
    attrs = spec[f"{alias}_status"]["attrs"]
    assert attrs["flag_values"] == list(STATUS_CODES)
    assert "converged" in attrs["flag_meanings"] and "at_bound" in attrs["flag_meanings"]
    for a, model in mods.items():
        for p in model.param_names:
            assert spec[f"{a}_{p}"]["dtype"] == np.float32
        assert ("bump_center" in model.param_names) == (f"{a}_bump_period" in spec)
        if f"{a}_bump_period" in out:
            c = out[f"{a}_bump_center"].astype(float)
            np.testing.assert_allclose(out[f"{a}_bump_period"], np.exp(-c) / 60, rtol=1e-6)
    assert ("lrt_pvalue" in spec) == (len(models) == 2)


def test_models_attr():
    import json

    attrs = json.loads(models_attr({a: M.get_model(m) for a, m in MODELS.items()}, "(DN)^2/Hz"))
    assert list(attrs) == ["m1", "m2"]
    assert attrs["m2"]["name"] == "powerlaw_tail_lorentzian"
    assert attrs["m1"]["formula"] == "P(f) = A f^-n + C"
    assert attrs["m1"]["params"] == ["amplitude", "index", "tail"]
    assert attrs["m1"]["units"] == ["(DN)^2/Hz", "1", "(DN)^2/Hz"]


def test_bad_pixels_get_status_and_do_not_touch_good_ones():
    good, _ = _spectra(30, 1)
    clean = fit_block(F, good, MODELS, dof=18.0)
    bad = np.empty((7, F.size))
    bad[0] = np.nan
    bad[1] = good[0]
    bad[1, 10] = np.inf
    bad[2] = 0.0
    bad[3] = 4.2  # constant
    bad[4] = good[1]
    bad[4, 3] = -1.0  # negative power
    bad[5] = good[2] * 1e15  # wildly out of range but valid
    bad[6] = good[3] * 1e-12
    mixed = np.concatenate([bad[:3], good[:15], bad[3:], good[15:]])
    out = fit_block(F, mixed, MODELS, dof=18.0)
    gi = np.r_[3:18, 22:37]
    for name in clean:
        a, b = clean[name], out[name][gi]
        np.testing.assert_array_equal(a, b, err_msg=name)
    for alias in ("m1", "m2"):
        st = out[f"{alias}_status"]
        assert list(st[[0, 1, 2, 18, 19]]) == [2, 2, 3, 3, 4]
        assert np.all(np.isnan(out[f"{alias}_index"][[0, 1, 2, 18, 19]]))
        assert np.all(out[f"{alias}_nfev"][[0, 1, 2, 18, 19]] == 0)
    assert np.all(out["best_model"][[0, 1, 2, 18, 19]] == -1)
    assert np.all(np.isnan(out["lrt_pvalue"][[0, 1, 2, 18, 19]]))
    # the rescaled pixels give the same shape parameters as their originals
    np.testing.assert_allclose(out["m1_index"][20], clean["m1_index"][2], rtol=1e-5)
    np.testing.assert_allclose(out["m1_index"][21], clean["m1_index"][3], rtol=1e-5)
    np.testing.assert_allclose(out["m1_tail"][20], clean["m1_tail"][2] * 1e15, rtol=1e-5)
    np.testing.assert_allclose(out["m1_amplitude"][21], clean["m1_amplitude"][3] * 1e-12, rtol=1e-5)
    assert out["m1_status"][20] in (0, 7) and out["m1_status"][21] in (0, 7)


def test_scale_invariance_over_18_decades():
    y, _ = _spectra(20, 2)
    ref = fit_block(F, y, {"m1": M1}, dof=18.0)
    for s in (1e-6, 1e12):
        out = fit_block(F, y * s, {"m1": M1}, dof=18.0)
        np.testing.assert_allclose(out["m1_index"], ref["m1_index"], rtol=1e-5)
        np.testing.assert_allclose(out["m1_tail"], ref["m1_tail"] * s, rtol=1e-5)
        np.testing.assert_allclose(out["m1_tail_err"], ref["m1_tail_err"] * s, rtol=1e-4)
        np.testing.assert_array_equal(out["m1_status"], ref["m1_status"])
        # log-likelihoods shift by -n ln s per pixel (density of a rescaled variable)
        np.testing.assert_allclose(
            out["m1_loglike"], ref["m1_loglike"] - F.size * np.log(s), rtol=1e-9, atol=1e-6
        )


def test_too_few_bins_and_input_errors():
    y, _ = _spectra(3, 3)
    out = fit_block(F[:5], y[:, :5], MODELS, dof=18.0)
    assert np.all(out["m2_status"] == 5) and np.all(np.isnan(out["m2_index"]))
    assert np.all(out["m1_status"] != 5)
    with pytest.raises(ValueError, match="positive"):
        fit_block(np.r_[0.0, F[1:]], y, MODELS)
    with pytest.raises(ValueError, match="increasing"):
        fit_block(F[::-1], y, MODELS)
    with pytest.raises(ValueError, match=r"\(npix, 150\)"):
        fit_block(F, y[:, :10], MODELS)
    with pytest.raises(ValueError, match="fit.method"):
        fit_block(F, y, MODELS, method="ml")
    with pytest.raises(ValueError, match="fit.best_model"):
        fit_block(F, y, MODELS, best_model="vote")
    with pytest.raises(ValueError, match="dof"):
        fit_block(F, y, MODELS, dof=0.0)
    # a bad dof for one pixel only makes that pixel invalid
    out = fit_block(F, y, {"m1": M1}, dof=np.array([18.0, np.nan, 18.0]))
    assert list(out["m1_status"] == 4) == [False, True, False]
    ref = fit_block(F, y[[0, 2]], {"m1": M1}, dof=18.0)
    np.testing.assert_array_equal(out["m1_index"][[0, 2]], ref["m1_index"])
    with pytest.raises(KeyError, match="available"):
        fit_block(F, y, {"m1": "nope"})


def test_dof_per_pixel_scales_errors():
    y, _ = _spectra(10, 4)
    one = fit_block(F, y, {"m1": M1}, dof=18.0)
    per = fit_block(F, y, {"m1": M1}, dof=np.r_[np.full(5, 18.0), np.full(5, 72.0)])
    # whittle estimates do not depend on dof (up to the stopping rule, which is in units of
    # the standard error); errors scale as 1/sqrt(dof)
    assert np.all(np.abs(per["m1_index"] - one["m1_index"]) < 0.01 * one["m1_index_err"])
    np.testing.assert_allclose(per["m1_index_err"][5:], one["m1_index_err"][5:] / 2, rtol=1e-5)


@pytest.mark.parametrize("rule", ["aic", "bic", "chi2", "ftest", "lrt"])
def test_best_model_rules(rule):
    y, truth = _spectra(200, 5)
    out = fit_block(F, y, MODELS, dof=18.0, best_model=rule)
    best = out["best_model"]
    assert set(np.unique(best)) <= {-1, 0, 1}
    if rule in ("aic", "bic"):
        expect = np.where(out[f"m2_{rule}"] < out[f"m1_{rule}"], 1, 0)
        np.testing.assert_array_equal(best, expect)
    elif rule == "chi2":
        expect = np.where(out["m2_chi2red"] < out["m1_chi2red"], 1, 0)
        np.testing.assert_array_equal(best, expect)
    else:
        p = out[f"{rule}_pvalue"]
        np.testing.assert_array_equal(best, np.where(p < 0.05, 1, 0))
    has_bump = truth[:, 3] > 0
    # a strong bump is found by every rule; LRT keeps M1 on most bump-free pixels
    assert np.mean(best[has_bump] == 1) > 0.8
    if rule in ("lrt", "bic"):
        assert np.mean(best[~has_bump] == 0) > 0.85


def test_nested_guarantee_m2_never_worse_than_m1():
    y, _ = _spectra(300, 6, bump=False)
    out = fit_block(F, y, MODELS, dof=2.0)
    both = np.isfinite(out["m1_loglike"]) & np.isfinite(out["m2_loglike"])
    assert np.all(out["m2_loglike"][both] >= out["m1_loglike"][both] - 1e-6)
    assert np.all(out["lrt_stat"][both] >= 0)


def test_lsq_with_sigma_and_multistart():
    y, truth = _spectra(40, 7)
    sigma = M2.evaluate(F, truth) / 3.0
    out = fit_block(F, y, MODELS, method="lsq", sigma=sigma, multistart=3)
    ok = out["m1_status"] == 0
    assert ok.mean() > 0.8
    assert np.all(np.isfinite(out["m1_chi2red"][ok]))
    with pytest.raises(ValueError, match="sigma"):
        fit_block(F, y, MODELS, method="whittle", sigma=sigma)


def test_dlogf_weights_are_the_originals_relative_sigma():
    """weights='dlogf': sigma = delta log10 f (the original specFit's validation weights),
    noise level from the residuals as curve_fit's default; chi2 is the raw weighted sum."""
    from specfit.kernels.fitting import dlogf_sigma

    y, _ = _spectra(30, 11)
    s = dlogf_sigma(F)
    assert s.shape == F.shape and s[-1] == s[-2]
    np.testing.assert_allclose(s[:-1], np.log10(F[1:] / F[:-1]))
    # a tight tol: convergence is judged in standard errors, which differ between the two
    rel = fit_block(F, y, MODELS, method="lsq", weights="dlogf", tol=1e-14)
    ab = fit_block(F, y, MODELS, method="lsq", sigma=np.broadcast_to(s, y.shape), tol=1e-14)
    for alias, model in (("m1", M1), ("m2", M2)):
        ok = rel[f"{alias}_status"] == 0
        # the global search ends about half of these M2 fits at their global optimum with the
        # bump width on its bound (status 7, compared by test_global_search instead)
        assert ok.mean() >= 0.4
        p = np.column_stack([rel[f"{alias}_{n}"] for n in model.param_names]).astype(float)
        q = np.column_stack([ab[f"{alias}_{n}"] for n in model.param_names]).astype(float)
        np.testing.assert_allclose(p[ok], q[ok], rtol=1e-3)  # same minimum
        # the reported chi-square is the raw weighted sum of the fitted model's residuals
        resid = ((y - model.evaluate(F, p)) / s) ** 2
        chi2 = rel[f"{alias}_chi2red"].astype(float) * (F.size - model.npar)
        np.testing.assert_allclose(chi2[ok], resid[ok].sum(axis=1), rtol=1e-4)
        # errors scaled by the residual noise level, as curve_fit(absolute_sigma=False)
        e_rel = rel[f"{alias}_index_err"].astype(float)[ok]
        e_abs = ab[f"{alias}_index_err"].astype(float)[ok]
        red = rel[f"{alias}_chi2red"].astype(float)[ok]
        fin = np.isfinite(e_rel) & np.isfinite(e_abs)
        np.testing.assert_allclose(e_rel[fin], e_abs[fin] * np.sqrt(red[fin]), rtol=1e-3)
        assert np.isnan(rel[f"{alias}_gof_pvalue"]).all()
    with pytest.raises(ValueError, match="dlogf"):
        fit_block(F, y, MODELS, method="whittle", weights="dlogf")
    with pytest.raises(ValueError, match="weights"):
        fit_block(F, y, MODELS, method="lsq", weights="box")


def test_chi2sum_rule_compares_raw_sums_not_reduced():
    """best_model='chi2sum' keeps the bigger model where its raw chi-square sum is lower (the
    original's rule); 'chi2' compares reduced chi-square."""
    y, _ = _spectra(60, 12)
    raw = fit_block(F, y, MODELS, method="lsq", weights="dlogf", best_model="chi2sum")
    red = fit_block(F, y, MODELS, method="lsq", weights="dlogf", best_model="chi2")
    c1 = raw["m1_chi2red"].astype(float) * (F.size - M1.npar)
    c2 = raw["m2_chi2red"].astype(float) * (F.size - M2.npar)
    np.testing.assert_array_equal(raw["best_model"], np.where(c1 > c2, 1, 0))
    # with the noise level profiled out the LRT statistic is n ln(chi2_1 / chi2_2)
    np.testing.assert_allclose(
        raw["lrt_stat"], np.maximum(F.size * np.log(c1 / c2), 0), rtol=1e-4, atol=1e-3
    )
    r1, r2 = red["m1_chi2red"].astype(float), red["m2_chi2red"].astype(float)
    np.testing.assert_array_equal(red["best_model"], np.where(r1 > r2, 1, 0))


def test_an_unconstrained_error_is_stored_as_inf_without_a_warning():
    # a white-looking 51-bin spectrum (from a synthetic run) on which M1's power law fits to
    # nothing (A ~ 1e-137, from 3 starts): the index's error, ~1e40 and beyond, exceeds float32's range
    f = np.arange(1, 52) / 2496.0
    y = [9.47, 0.12, 32.43, 0.34, 6.54, 16.92, 9.47, 12.86, 58.25, 53.26, 12.95, 46.72, 22.18,
         45.83, 13.66, 26.42, 10.97, 7.91, 14.07, 1.11, 24.38, 104.98, 52.06, 82.45, 19.42, 1.64,
         24.39, 7.5, 31.05, 15.0, 7.68, 68.43, 13.2, 11.89, 14.77, 23.72, 3.48, 69.6, 6.18,
         4.07, 21.98, 9.52, 23.87, 14.76, 21.19, 7.96, 6.92, 41.86, 1.07, 12.77, 28.42]  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = kernel_fit_block(
            f, np.array([y]), {"m1": "powerlaw_tail"}, **{**KERNEL_FIT, "multistart": 3}
        )
    assert r["m1_index_err"].dtype == np.float32
    assert np.isposinf(r["m1_index_err"][0])
    assert r["m1_amplitude"][0] < 1e-30 and np.isfinite(r["m1_tail_err"][0])


def test_a_spectrum_a_kernel_cannot_take_costs_only_its_own_pixel():
    """Power exactly zero over the lowest and the highest bins (float32 underflow of tiny
    values) or a single nonzero bin made the starting-value kernels divide by zero, and the
    whole block (a whole tile of a run) failed. Now such a pixel gets fit_failed (9) and NaN,
    and every other pixel's result is bit-identical to a block without it."""
    f = np.arange(1, 100) / 2400.0
    rng = np.random.default_rng(0)
    y = (1 / f**2) * rng.exponential(size=(6, f.size))
    y[1, :10] = 0.0
    y[1, -20:] = 0.0
    y[4] = 0.0
    y[4, 50] = 3.0
    models = {"m1": "powerlaw_tail", "m2": "powerlaw_tail_lorentzian"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        got = fit_block(f, y, models, bin_rho=())
    good = [0, 2, 3, 5]
    want = fit_block(f, y[good], models, bin_rho=())
    assert list(got) == list(want)
    for k in got:
        np.testing.assert_array_equal(got[k][good], want[k], err_msg=k)
    for alias in models:
        assert list(got[f"{alias}_status"][[1, 4]]) == [9, 9]
        assert np.isnan(got[f"{alias}_index"][[1, 4]]).all()
    assert STATUS_CODES[9].startswith("fit_failed")


def test_a_band_cut_narrow_by_fmin_fmax_fits_at_the_optimum():
    """fmin/fmax around the 2-15 min oscillations of a 4-h series (bins 16-120 of 1/14400 Hz,
    ~2 in ln f) crashed every fit (a reviewer's finding: TypeError in the start values, whose
    basin profile asked for groups over 0.1 in ln f that such a band does not have; every
    tile of a run failed). It now fits; checked against scipy L-BFGS-B from the truth (the
    Whittle likelihood, tolerance 1e-4 in log-likelihood, far above the solver's
    convergence) on 8 pixels."""
    import reference_fits as R

    m1 = M.get_model("powerlaw_tail")
    f = np.arange(16, 121) / 14400.0
    truth = np.array([1e-5, 2.0, 1.0])
    rng = np.random.default_rng(4)
    power = m1.evaluate(f, truth[None]) * rng.gamma(1.0, 1.0, size=(400, f.size))
    out = fit_block(f, power, {"m1": m1, "m2": "powerlaw_tail_lorentzian"}, dof=2.0)
    # converged everywhere; at dof 2 some tails end on their bound 0 (at_bound, 7)
    assert np.isin(out["m1_status"], (0, 7)).all(), np.bincount(out["m1_status"])
    ok = out["m1_status"] == 0
    assert ok.mean() > 0.8
    est = np.column_stack([out[f"m1_{p}"] for p in m1.param_names]).astype(np.float64)
    t = R.solver_scale(m1, truth)
    for r in np.flatnonzero(ok)[:8]:
        mine = R.whittle_nll(m1, f, power[r], R.solver_scale(m1, est[r]), 2.0)
        assert mine <= R.scipy_fit(m1, f, power[r], 2.0, [t])[1] + 1e-4
    assert np.all(out["m2_loglike"] >= out["m1_loglike"] - 1e-3)
