"""The curved-background models (knee, broken power law, kappa) and model selection over
more than two models: parameter recovery with calibrated errors, the per-pair tests'
names, and the choice of the true model among four (two nested pairs).
"""

from __future__ import annotations

import functools
import zlib

import numpy as np
import pytest
import reference_fits as R
from scipy.stats import norm

from conftest import KERNEL_FIT, assert_docs_quote
from specfit import models as M
from specfit.kernels import fitting
from specfit.kernels.fitting import fit_block as kernel_fit_block
from specfit.store import fit_variables

fit_block = functools.partial(kernel_fit_block, **KERNEL_FIT)

F = np.arange(1, 151) / 7200.0  # 150 bins of a 2-hour segment (1.4e-4 .. 0.02 Hz)
LN3MIN = np.log(1 / 180)  # a 3-minute bump (bin 40)

# Truths of the recovery checks and, in RECOVERY, the dof and number of pixels of each.
#
# Bump-free backgrounds: the knee / break / width well inside the band (a position near the
# lowest bins is poorly determined and its estimate skewed).
#
# Bump variants: the bump must be clearly detectable, or the likelihood is not Gaussian and
# neither are the pulls. With the bump of the four-model field below (amplitude 30 on a knee
# background of 26 at 5 min, width 0.2) the bump amplitude's signal to noise (amplitude / its
# inverse-information error at the truth) is 2.5 at dof 16: on 1,000 pixels 25 % of the fits
# end on a bound and the others' centre pulls spread 5.4x, from fits that put the bump
# elsewhere (e.g. at the lowest bins with an amplitude ~400, imitating the knee) at
# likelihoods better than the truth's. Mostly the likelihood's optima, not the search's
# misses: specfit's objective is above scipy's from the truth on 10 of the 1,000 pixels (4
# of them status 0). Here the bump is a 3-minute oscillation (bin 40), width 0.3 (0.25 for
# M2), 4x (knee, kappa) or 20x (M2) the background at its centre; the knee / kappa width at
# 5e-4 Hz (a period of 33 min) and the background steep enough that the bump's wings stay
# below the tail at the top of the band: signal to noise 8.0 (knee), 7.9 (kappa), 9.2 (M2) at
# dof 16 and 4.6 (M2) at dof 4.
#
# Bias: Whittle estimates have a first-order bias of O(1/dof) (Cox & Snell 1968), e.g. +0.27
# standard deviations of one fit for kappa in kappa_tail_lorentzian at dof 16, +0.13 for the
# bump amplitudes: a mean over n pixels resolves it once n > (3 / that)^2 (~120 pixels for
# kappa). The check is the mean against the truth plus that predicted bias (reference_fits.py:
# finite differences of Model.evaluate alone), which a bias the fit adds or a wrong optimum
# fails. What remains is of higher order in 1/dof and small but resolved on 20,000 pixels
# per case (`pooled` in docs/recovery.py): -0.055 / +0.052 of one fit's standard deviation
# for M2's amplitude / index at dof 4 (~0.01 at dof 16), +0.052 for kappa of
# kappa_tail_lorentzian at dof 16 (~0.15 at dof 8), all others <= 0.022; the checked fits are
# the optimum scipy finds from the truth, so it is the estimator's. The check allows
# HIGHER_ORDER = 0.1 of one fit's standard deviation for it on top of the sampling tolerance:
# a bias beyond first order of ~0.2 standard deviations fails.
#
# Spread: the pulls' standard deviation (estimate - truth) / error must lie in 0.9-1.1 (issue
# 12). On those 20,000 pixels it is 0.99-1.07 (highest: M2's bump amplitude at dof 4 1.074,
# kappa_tail_lorentzian's bump width 1.063, broken_tail's break 1.054): the inverse
# information is only asymptotically the estimates' variance. A sample spread has a
# standard error s sqrt((kurtosis - 1) / 4n) (~0.04 on 300 pixels; pull kurtosis 3-5), so
# the earlier fixed band on 250-400 pixels failed at 6 of seeds 1-12 from sampling noise
# (measured on commit 19d9084). The check now fails when the spread's confidence interval
# lies outside 0.9-1.1: a spread of 1.1-1.18 (or 0.82-0.9) on 1,500 pixels is not reliably
# seen.
#
# Tolerances: every mean and spread check uses Z standard errors, Z set (Sidak) so that the
# 2 x 47 checks of one run together fail with probability <= ALPHA = 1 % when the kernel is
# right; each case draws its own noise (before, the dof-16 cases shared one draw and failed
# together). Errors 18 % too small (pulls x 1.22) or estimates shifted by +0.25 of their
# error fail every case, which the test asserts on its own fits (`_injected`); seeds 1-20
# pass. Measured: `python docs/recovery.py`.
#
# The bump-free knee and kappa backgrounds are checked at dof 4 (the AIA 1600 configs' dof)
# and 16. Measured, not checked here (docs/recovery.py's EXTRA, docs/models.md): the knee and
# kappa bump variants at dof 4, whose likelihood is not Gaussian there (5.6 % / 7.5 % of
# fits not status 0, heavy-tailed bump-centre pulls), and the broken power law below dof 32,
# whose break, upper index and amplitude at the break have pulls spreading 1.20-1.37 at dof
# 4 and 8: its corner (rounded over 0.1 in ln f) is sharper than the break's error there
# (0.2-0.3 in ln f), so the likelihood is not yet quadratic in it.
TRUTHS = {
    "knee_tail": [100.0, 3.0, np.log(2e-3), 1.0],
    "kappa_tail": [100.0, 2.0, np.log(1.5e-3), 1.0],
    "broken_tail": [10.0, 1.0, 3.0, np.log(3e-3), 1.0],
    "powerlaw_tail_lorentzian": [1e-6, 2.0, 1.0, 20.0, LN3MIN, 0.25],
    "knee_tail_lorentzian": [100.0, 3.0, np.log(5e-4), 1.0, 4.3, LN3MIN, 0.3],
    "kappa_tail_lorentzian": [300.0, 3.0, np.log(5e-4), 1.0, 4.7, LN3MIN, 0.3],
}
RECOVERY = {  # (model, dof): pixels
    ("knee_tail", 4.0): 1500,
    ("knee_tail", 16.0): 1500,
    ("kappa_tail", 4.0): 1500,
    ("kappa_tail", 16.0): 1500,
    ("broken_tail", 32.0): 1500,
    ("powerlaw_tail_lorentzian", 4.0): 1500,
    ("powerlaw_tail_lorentzian", 16.0): 1500,
    ("knee_tail_lorentzian", 16.0): 1500,
    ("kappa_tail_lorentzian", 16.0): 1500,
}
ALPHA = 0.01  # the recovery checks' family-wise false-failure rate per run
HIGHER_ORDER = 0.1  # bias allowed beyond the first order, in standard deviations of one fit
N_CHECKS = 2 * sum(len(M.get_model(name).param_names) for name, _ in RECOVERY)
Z = float(norm.isf((1 - (1 - ALPHA) ** (1 / N_CHECKS)) / 2))  # 3.87 for 94 checks


def recovery_fit(name: str, dof: float, n: int, truth=None, seed: int = 11):
    """Simulate n Whittle spectra of ``name`` (at ``truth``, default its TRUTHS entry) with
    ``dof`` and fit them.

    Returns (model, truth, estimates (n, npar), errors (n, npar), status (n,), power (n, nf)),
    parameters on the solver's scale: ln p and err / p for log-scaled ones.
    """
    model = M.get_model(name)
    truth = np.asarray(TRUTHS[name] if truth is None else truth, np.float64)
    # each case its own noise: the seed and the case's name and dof
    rng = np.random.default_rng([seed, zlib.crc32(f"{name}/{dof:g}".encode())])
    power = model.evaluate(F, truth[None]) * rng.gamma(dof / 2, 2 / dof, size=(n, F.size))
    out = fit_block(F, power, {"m": model}, dof=dof)
    est = np.column_stack([out[f"m_{p}"] for p in model.param_names]).astype(np.float64)
    err = np.column_stack([out[f"m_{p}_err"] for p in model.param_names]).astype(np.float64)
    lp = np.array([p.log_scaled for p in model.parameters])
    err[:, lp] /= est[:, lp]
    t, est = R.solver_scale(model, truth), R.solver_scale(model, est)
    return model, t, est, err, out["m_status"], power


@pytest.mark.parametrize(("name", "dof"), sorted(RECOVERY), ids=lambda v: str(v))
def test_models_recover_their_parameters_with_calibrated_errors(name, dof):
    model, t, est, err, status, power = recovery_fit(name, dof, RECOVERY[(name, dof)])
    ok = status == 0
    assert ok.mean() > 0.95, np.bincount(status)
    est, err, power = est[ok], err[ok], power[ok]
    for r in range(20):
        # the fit is at least as good as scipy's from the truth (the optimum the truth is in;
        # tolerance in log-likelihood units, far above the solver's convergence)
        _, nll = R.scipy_fit(model, F, power[r], dof, [t])
        assert R.whittle_nll(model, F, power[r], est[r], dof) <= nll + 1e-4, f"pixel {r}"
        # its errors are the inverse expected information at the estimate
        ref = R.expected_errors(model, F, est[r], dof)
        np.testing.assert_allclose(err[r], ref, rtol=2e-3, err_msg=f"pixel {r}")
    bad = recovery_failures(model, t, est, err, dof)
    assert not bad, bad
    # the checks are sharp enough to see errors 18 % too small and a shift of a quarter error
    for how in ("errors x 0.82", "estimates + 0.25 errors"):
        assert recovery_failures(model, t, *_injected(est, err, how), dof), how


def recovery_failures(model, t, est, err, dof) -> list[str]:
    """The statistical checks on converged fits (solver scale), per parameter: the mean within
    Z standard errors of the mean (+ HIGHER_ORDER standard deviations) of truth + first-order
    bias; the pulls' spread not significantly (Z standard errors) outside 0.9-1.1. Returns
    the failures."""
    bias = R.whittle_bias(model, F, t, dof)
    n, bad = len(est), []
    for j, prm in enumerate(model.parameters):
        sd = np.std(est[:, j])
        off = est[:, j].mean() - t[j] - bias[j]
        if abs(off) > Z * sd / np.sqrt(n) + HIGHER_ORDER * sd:
            bad.append(f"{prm.name}: mean - truth - bias {off:+.3g} = {off / sd:+.3f} sd, "
                       f"{off / sd * np.sqrt(n):+.2f} SE")  # fmt: skip
        pull = (est[:, j] - t[j]) / err[:, j]
        s = np.std(pull)
        kurt = np.mean((pull - pull.mean()) ** 4) / s**4
        se = s * np.sqrt((kurt - 1) / (4 * n))
        if s - Z * se > 1.1 or s + Z * se < 0.9:
            bad.append(f"{prm.name}: pull spread {s:.3f} +- {se:.3f}")
    return bad


def _injected(est, err, how):
    """Fits with a known defect, to show the checks see it."""
    if how == "errors x 0.82":
        return est, err * 0.82
    return est + 0.25 * err, err


def _four_model_field(dof: float, n: int, seed: int = 5):
    """n pixels from each of powerlaw_tail, + bump, knee_tail, + bump (truth index 0-3)."""
    rng = np.random.default_rng(seed)
    bump = [6.0, np.log(1 / 300), 0.2]
    truths = [
        ("powerlaw_tail", [1e-6, 2.0, 1.0]),
        ("powerlaw_tail_lorentzian", [1e-6, 2.0, 1.0, *bump]),
        ("knee_tail", [300.0, 3.0, np.log(1.5e-3), 1.0]),
        # the same relative bump height: the knee's power at the bump is ~28
        ("knee_tail_lorentzian", [300.0, 3.0, np.log(1.5e-3), 1.0, 30.0, *bump[1:]]),
    ]
    rows, label = [], []
    for k, (name, p) in enumerate(truths):
        m = M.get_model(name).evaluate(F, np.tile(p, (n, 1)))
        rows.append(m * rng.gamma(dof / 2, 2 / dof, size=m.shape))
        label += [k] * n
    return np.concatenate(rows), np.array(label)


FOUR = {
    "m1": "powerlaw_tail",
    "m2": "powerlaw_tail_lorentzian",
    "m3": "knee_tail",
    "m4": "knee_tail_lorentzian",
}


def test_four_models_two_nested_pairs_pick_the_true_model(monkeypatch):
    monkeypatch.setattr(fitting, "_LRT_NSIM", 300)  # a smaller LRT reference: fast enough
    power, label = _four_model_field(dof=36.0, n=60)
    out = fit_block(F, power, FOUR, dof=36.0)
    # one test per pair, named by the bigger alias; no unprefixed name to confuse readers
    for b in ("m2", "m4"):
        for v in ("lrt_stat", "lrt_pvalue", "ftest_pvalue"):
            assert f"{b}_{v}" in out
    assert "lrt_pvalue" not in out
    # a goodness-of-fit map for every model
    for a in FOUR:
        assert np.isfinite(out[f"{a}_gof_pvalue"]).mean() > 0.99
    best = out["best_model"]
    for k in range(4):
        assert np.mean(best[label == k] == k) >= 0.9, (k, np.bincount(best[label == k] + 1))
    # inside each family the LRT decided: the bigger model only where its test rejects
    fam2 = np.isin(best, [0, 1])
    np.testing.assert_array_equal(best[fam2] == 1, out["m2_lrt_pvalue"][fam2] < 0.05)
    # the store's contract names every output, with the aliases and the tests in attrs
    spec = fit_variables(
        {a: M.get_model(m) for a, m in FOUR.items()}, "whittle", "lrt", "(DN)^2/Hz"
    )
    assert set(spec) == set(out)
    attrs = spec["best_model"]["attrs"]
    assert attrs["flag_meanings"] == "none m1 m2 m3 m4"
    assert attrs["nested_pairs"] == "m1:m2 m3:m4" and attrs["nonnested"] == "bic"
    assert "m3 inside m4" in spec["m4_lrt_pvalue"]["attrs"]["long_name"]


def _summary(ll, npar, fitted=None):
    n = len(ll[0])
    out = {}
    for k, (v, p) in enumerate(zip(ll, npar, strict=True)):
        v = np.asarray(v, float)
        fit = np.ones(n, bool) if fitted is None else np.asarray(fitted[k])
        aic, bic = -2 * v + 2 * p, -2 * v + p * np.log(150)
        out[f"m{k + 1}"] = {"ll": v, "fitted": fit, "aic": aic, "bic": bic, "npar": p}
    return out


def test_best_walks_each_family_then_compares_families_by_the_criterion():
    models = {a: M.get_model(m) for a, m in FOUR.items()}
    pairs = [("m1", "m2"), ("m3", "m4")]
    # pixel 0: m2 rejects m1, but m3 (kept: m4's test fails) has the lower BIC; 1: m1 kept
    # (its test fails) and beats m3; 2: m4 rejects m3 and beats m2; 3: m1 not fitted, m2
    # stands in for it and beats m4; 4: nothing fitted
    ll = [  # per model (m1..m4), per pixel
        [0.0, 50.0, 0.0, 0.0, 0.0],
        [100.0, 60.0, 99.0, 99.0, 0.0],
        [120.0, 10.0, 40.0, 40.0, 0.0],
        [121.0, 12.0, 120.0, 50.0, 0.0],
    ]
    fitted = [
        [True, True, True, False, False],
        [True, True, True, True, False],
        [True, True, True, True, False],
        [True, True, True, True, False],
    ]
    s = _summary(ll, [3, 6, 4, 7], fitted)
    p12 = np.array([0.01, 0.5, 0.01, np.nan, np.nan])
    p34 = np.array([0.5, 0.5, 0.001, 0.001, np.nan])
    pv = {("m1", "m2"): {"lrt": p12}, ("m3", "m4"): {"lrt": p34}}
    best = fitting._best(models, s, pairs, pv, "lrt", 0.05, "bic")
    np.testing.assert_array_equal(best, [2, 0, 3, 1, -1])
    # one family: the pair's test alone, as with two models
    two = {"m1": models["m1"], "m2": models["m2"]}
    s2 = {k: s[k] for k in ("m1", "m2")}
    best2 = fitting._best(two, s2, [("m1", "m2")], pv, "lrt", 0.05, "bic")
    np.testing.assert_array_equal(best2, [1, 0, 1, 1, -1])
    with pytest.raises(ValueError, match="fit.nonnested"):
        fitting._best(models, s, pairs, pv, "lrt", 0.05, "hqc")


def test_four_models_through_the_api_summary_and_maps(monkeypatch):
    """specfit.fit with two nested pairs: the summary names every alias, and the viz masks
    each bigger model's maps with its own pair's p-value."""
    import xarray as xr

    from specfit import stages
    from specfit.summary import summarise
    from specfit.viz.data import map_values

    monkeypatch.setattr(fitting, "_LRT_NSIM", 100)
    power, _ = _four_model_field(dof=36.0, n=6, seed=8)  # 24 pixels
    cube = xr.DataArray(
        power.T.reshape(F.size, 4, 6),
        dims=("freq", "y", "x"),
        coords={"freq": F},
        attrs={"dof_per_spectrum": 36.0, "units": "(DN)^2/Hz"},
    )
    res = stages.fit(cube, models=FOUR, multistart=1).compute()
    text = summarise(res)
    assert "best_model (lrt): m1 " in text and " m4 " in text
    masked = map_values(res, "m4_index", pvalue_threshold=0.05)
    keep = res["m4_lrt_pvalue"].values <= 0.05
    assert np.isnan(masked.values[~keep]).all()
    assert np.isfinite(masked.values[keep]).all() and keep.any() and (~keep).any()
    # m2's maps follow m2's own test, m3 (a family's smallest model) is not masked
    m2 = map_values(res, "m2_index", pvalue_threshold=0.05).values
    assert np.isnan(m2[res["m2_lrt_pvalue"].values > 0.05]).all()
    m3 = map_values(res, "m3_index", pvalue_threshold=0.05, mask_status=False).values
    assert np.isfinite(m3).all()


@pytest.mark.slow
def test_lrt_size_inside_the_curved_families():
    """The knee and kappa families' LRT (their declared nulls) holds its size on pure
    bump-free pixels whose truths are unlike the null's (steeper: index 2-6, kappa 1-6)."""
    lnf = np.log(F)
    span = lnf[-1] - lnf[0]
    n, dof = 1000, 4.0
    sizes = {}
    for fam in ("knee_tail", "kappa_tail"):
        rng = np.random.default_rng(42)
        slope = rng.uniform(2.0, 6.0, n) if fam == "knee_tail" else rng.uniform(1.0, 6.0, n)
        pos = lnf[0] + rng.uniform(0.15, 0.5, n) * span
        turn = pos if fam == "knee_tail" else pos + 0.5 * np.log(slope)
        cross = turn + rng.uniform(0.15, 0.35, n) * span
        amp = np.exp((slope if fam == "knee_tail" else slope + 1.0) * (cross - turn))
        truth = np.column_stack([amp, slope, pos, np.ones(n)])
        small, big = M.get_model(fam), M.get_model(fam + "_lorentzian")
        power = small.evaluate(F, truth) * rng.gamma(dof / 2, 2 / dof, size=(n, F.size))
        out = fit_block(F, power, {"a": small, "b": big}, dof=dof)
        p = out["lrt_pvalue"]
        ok = np.isfinite(p)
        assert ok.mean() > 0.98
        size = np.mean(p[ok] < 0.05)
        assert 0.03 <= size <= 0.07, (fam, size)
        sizes[fam] = 100 * size
    assert_docs_quote(
        "models.md",
        f"{sizes['knee_tail']:.1f} % for the knee family, {sizes['kappa_tail']:.1f} % for the "
        "kappa family",
    )
