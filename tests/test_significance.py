"""Field-wide significance (BH q-values, Sidak global level): the kernel against independent
references, the maps a run writes (the same for any tiling), and the false-detection rate on
fields without any signal.

Tolerances are stated in each test; binomial standard errors are sqrt(r (1 - r) / n).
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from scipy.stats import false_discovery_control

import specfit.synthetic as synthetic
from conftest import assert_docs_quote, tiny_config
from specfit.config import DEFAULTS, load_config
from specfit.errors import ConfigError
from specfit.kernels.fitting import fit_block
from specfit.kernels.significance import BHTable, bh_qvalues, sidak_threshold
from specfit.models import get_model
from specfit.pipeline import fit_options, run
from specfit.store import field_variables, open_results


# ----------------------------------------------------------------------------- the kernel
@pytest.mark.parametrize("n", [1, 2, 7, 1000, 20_000])
def test_bh_qvalues_match_scipy(n):
    # scipy.stats.false_discovery_control (method "bh") is the independent reference; ties
    # and NaN (untested pixels: left out of N) included.
    rng = np.random.default_rng(n)
    p = rng.random(n) ** 3
    p[::5] = p[0]  # ties
    p[1::11] = 1.0
    nan = np.zeros(n, bool)
    nan[3::17] = True
    p_in = np.where(nan, np.nan, p)
    q = bh_qvalues(p_in)
    ref = false_discovery_control(p[~nan], method="bh")
    assert np.all(np.isnan(q[nan]))
    np.testing.assert_allclose(q[~nan], ref, rtol=1e-12, atol=0)
    # the table counts discoveries as q <= level, as a direct count of the q-values does
    table = BHTable(p_in)
    for level in (0.01, 0.05, 0.2):
        assert table.count_at(level) == int(np.sum(ref <= level))


def test_bh_table_maps_a_field_read_in_pieces():
    # q-values of a field read band by band (as finalise does) equal those of the whole array
    rng = np.random.default_rng(3)
    p = rng.random((50, 40)).astype(np.float32) ** 4
    table = BHTable(p)
    pieces = np.concatenate([table.qvalues(p[i : i + 8]) for i in range(0, 50, 8)])
    np.testing.assert_array_equal(pieces, bh_qvalues(p))
    assert table.n == p.size


def test_bh_with_no_tests():
    assert np.all(np.isnan(bh_qvalues(np.full((3, 3), np.nan))))


@pytest.mark.parametrize("n", [1, 480, 2_560_000])
def test_sidak_threshold(n):
    thr = sidak_threshold(0.999, n)
    # (1 - thr)^n = level, checked in logs (exact where 1 - thr rounds in double precision)
    assert n * np.log1p(-thr) == pytest.approx(np.log(0.999), rel=1e-12)
    # and the Bonferroni bound (1 - level) / n from above, tight for large n
    assert thr >= 0.001 / n
    assert thr == pytest.approx(0.001 / n, rel=1e-3 if n > 1 else 1e-15)
    assert np.isnan(sidak_threshold(0.99, 0))
    with pytest.raises(ValueError, match="global level"):
        sidak_threshold(1.0, 10)


# ----------------------------------------------------------------------------- config
@pytest.mark.parametrize("key", ["fdr_q", "global_level"])
@pytest.mark.parametrize("value", [0, 1, 1.5, -0.1])
def test_config_rejects_levels_outside_0_1(key, value):
    with pytest.raises(ConfigError) as e:
        load_config({"fit": {key: value}})
    line = [s for s in str(e.value).splitlines() if f"fit.{key}" in s]
    assert len(line) == 1 and ("greater than 0" in line[0] or "less than 1" in line[0])


def test_config_defaults():
    cfg = load_config({})
    assert (cfg.fit.fdr_q, cfg.fit.global_level) == (0.05, 0.999)


def test_field_variables_follow_every_declared_test():
    # Every <stem>_pvalue map the contract declares gets q-values and a global map (not the
    # goodness-of-fit p-values); the choice map reads the rule's tests and their model pair.
    f32, i8 = np.dtype("float32"), np.dtype("int8")
    pair = {"null_model": "m1", "alternative_model": "m3"}
    variables = {
        "m1_gof_pvalue": {"dtype": f32, "attrs": {}},
        "best_model": {"dtype": i8, "attrs": {"flag_values": [-1, 0, 1, 2]}},
        "lrt_pvalue": {"dtype": f32, "attrs": {"test": "lrt", **pair}},
        "lrt_m1_m3_pvalue": {"dtype": f32, "attrs": {"test": "lrt", **pair}},
        "ftest_pvalue": {"dtype": f32, "attrs": {"test": "ftest", **pair}},
    }
    out = field_variables(variables, "lrt", 0.05, 0.1, 0.99)
    assert set(out) == {
        "lrt_qvalue",
        "lrt_global",
        "lrt_m1_m3_qvalue",
        "lrt_m1_m3_global",
        "ftest_qvalue",
        "ftest_global",
        "best_model_fdr",
    }
    assert out["best_model_fdr"]["attrs"]["tests"] == ["lrt_qvalue", "lrt_m1_m3_qvalue"]
    assert out["lrt_global"]["attrs"]["global_level"] == 0.99
    # a rule that is not a test (aic) has no field-wide choice map
    assert "best_model_fdr" not in field_variables(variables, "aic", 0.05, 0.1, 0.99)


# ----------------------------------------------------------------------------- null fields
def _calibration_fits(n: int, seed: int, truths: str = "field"):
    """LRT p-values of ``n`` spectra simulated under M1 (no bump), fitted as a run does.

    Truths ``field``: the first rows of specfit's synthetic field (index 1.3-2.3, power law
    ~40x the tail at 1 mHz); ``null``: drawn (from ``seed``) from M1's declared null, the
    truths the LRT reference simulates (guesses.powerlaw_tail_null). One segment of 128
    samples at 12 s (dof 2); the LRT reference is the fit's own.
    """
    m1 = get_model("powerlaw_tail")
    f = np.fft.rfftfreq(128, 12.0)[1:]
    rng = np.random.default_rng(seed)
    if truths == "null":
        params = m1.null(f, rng, n)
    else:
        truth = synthetic.synthetic_maps((8, 32), 12.0, 2.9)
        params = np.stack([truth[k].ravel() for k in m1.param_names], axis=1)
        params = np.resize(params, (n, 3))
    y = m1.evaluate(f, params) * rng.gamma(1.0, 1.0, size=(n, f.size))
    return _fit_defaults(f, y, {"m1": "powerlaw_tail", "m2": "powerlaw_tail_lorentzian"})


def _fit_defaults(f, y, models):
    """fit_block with a run's default solver options (Whittle, dof 2, best_model lrt)."""
    assert DEFAULTS.fit.best_model == "lrt"
    return fit_block(f, y, models, method="whittle", dof=2.0, bin_rho=(), **fit_options(DEFAULTS))


@pytest.fixture(scope="module")
def null_pvalues():
    return _calibration_fits(2000, seed=2026)["lrt_pvalue"].astype(np.float64)


def test_bh_and_sidak_rates_on_uniform_null_fields():
    """The controls' nominal rates where the p-values are exactly uniform (every null true,
    independent tests): 4000 fields of 50 pixels. BH at q makes a discovery in a field with
    probability exactly q (Simes); the Sidak global level x with probability 1 - x; per pixel
    alpha flags alpha of the pixels. Tolerance: 3 binomial SE (fields 0.0034, pixels 0.0004)."""
    rng = np.random.default_rng(11)
    fields = rng.random((4000, 50))
    bh_any = np.mean(np.any(np.stack([bh_qvalues(f) for f in fields]) <= 0.05, axis=1))
    sidak_any = np.mean(np.any(fields <= sidak_threshold(0.95, 50), axis=1))
    for rate in (bh_any, sidak_any):
        assert abs(rate - 0.05) <= 3 * np.sqrt(0.05 * 0.95 / 4000), (bh_any, sidak_any)
    assert abs(np.mean(fields < 0.05) - 0.05) <= 3 * np.sqrt(0.05 * 0.95 / fields.size)
    assert_docs_quote(
        "significance.md",
        f"BH makes a discovery in {100 * bh_any:.1f} % of the fields and Šidák in "
        f"{100 * sidak_any:.1f} %",
    )


@pytest.fixture(scope="module")
def pooled_null_pvalues(null_pvalues):
    """The LRT p-values of 10,000 null spectra: the module's 2000 and four more seeds."""
    more = [_calibration_fits(2000, seed=s)["lrt_pvalue"] for s in (2027, 2028, 2029, 2030)]
    return np.concatenate([null_pvalues, *(m.astype(np.float64) for m in more)])


@pytest.fixture(scope="module")
def prior_null_pvalues():
    """LRT p-values of 10,000 null spectra whose truths come from M1's declared null."""
    return _calibration_fits(10_000, seed=2031, truths="null")["lrt_pvalue"].astype(np.float64)


def _rate_se(alpha: float, n: int) -> float:
    """SE of a rejection rate at ``alpha`` over ``n`` nulls referred to one reference of
    N_ref = fitting._LRT_NSIM statistics, whose own sampling error moves every pixel's
    p-value together: variance alpha (1 - alpha) (1/n + 1/N_ref)."""
    from specfit.kernels.fitting import _LRT_NSIM

    return float(np.sqrt(alpha * (1 - alpha) * (1 / n + 1 / _LRT_NSIM)))


def test_fit_lrt_pvalues_are_calibrated_per_pixel(prior_null_pvalues):
    """What the LRT reference promises: spectra whose truths are drawn as the reference
    draws its own (M1's declared null: index U(1, 3), crossover of power law and tail
    log-uniform over the middle 60 % of ln f), fitted as a run does, are flagged at per-pixel
    alpha = 0.01, 0.05, 0.2 and 0.5 in that share. Tolerance 3 SE of _rate_se with n =
    10,000 (0.73, 1.60, 2.94, 3.67 points). Measured with the current reference draw: 1.07 /
    5.78 / 21.32 / 50.13 %; referred to 20 independent reference draws (``_LRT_SEED``
    varied) the same 10,000 nulls stay inside the tolerance at every alpha in all 20.

    The statistic is not pivotal (docs/lrt_calibration.py): how far a bump fits noise
    depends on where the power law meets the tail, so the reference is calibrated on
    average over its truths, not for any one truth; see the next test."""
    p = prior_null_pvalues
    assert p.size == 10_000 and np.isfinite(p).all()
    for alpha in (0.01, 0.05, 0.2, 0.5):
        se = _rate_se(alpha, p.size)
        assert abs(np.mean(p < alpha) - alpha) <= 3 * se, (alpha, np.mean(p < alpha))


def test_fit_lrt_pvalues_on_the_synthetic_field(pooled_null_pvalues):
    """The synthetic field's truths (index 1.3-2.3, crossover at 0.47-0.84 of the ln f
    range, the upper part of the reference's 0.2-0.8): 10,000 null spectra (5 seeds of
    2000), per-pixel alpha 0.01 and 0.05 flag that share within 3 SE of _rate_se (0.73, 1.60
    points). Measured with the current reference draw: 1.24 / 6.38 %; over 20 reference
    draws none is outside at either alpha.

    Not checked, and why: at alpha 0.2 and 0.5 these truths are rejected more often than
    nominal, systematically (docs/lrt_calibration.py, 2026-12-03, 6 reference draws: 21.68
    +- 0.23 and 52.64 +- 0.67 %, the same on 20,000 fresh nulls: 21.08 / 52.06 %; 5 and 6 of
    20 draws fall outside 3 SE). The cause is the truths, not the fits or the p-value
    convention: a reference simulated from this field's own truths gives 20.44 / 49.95 %,
    nulls drawn from the declared null give 19.68 / 49.31 % against the declared reference, fit_block
    on the reference's spectra gives its statistics one for one (next test), no statistic is
    0 or dropped. The LRT statistic's null distribution depends on the crossover position:
    share above the reference's median 44-45 % for crossovers at 0.2-0.35 of the range or no
    tail at all, 51-53 % at 0.5-0.8 (at its 95 % quantile: 4.1-6.1 %).

    One seed alone is not enough: seed 2026 gives 2.0 / 7.65 %, the other four 0.9-1.2 / 5.15-6.75 %. Before M1 started
    in both index basins (guesses.powerlaw_tail_starts) seed 2028 had one M1 fit stuck in
    the wrong basin (LRT statistic 436, p = 0)."""
    p = pooled_null_pvalues
    assert p.size == 10_000 and np.isfinite(p).all()
    for alpha in (0.01, 0.05):
        se = _rate_se(alpha, p.size)
        assert abs(np.mean(p < alpha) - alpha) <= 3 * se, (alpha, np.mean(p < alpha))


def test_lrt_reference_statistics_are_those_fit_block_gives_its_spectra():
    """The reference is the null distribution of the statistic a run computes only if it is
    simulated with the run's own fitting path. fit_block on the reference's own simulated
    spectra (the same draw: truths from powerlaw_tail_null, dof 2, default fit settings)
    gives the reference's statistics one for one. Tolerance: the float32 rounding of the
    stored statistic (rtol 1e-6; measured max |diff| 4.8e-7 for statistics up to ~20). A
    different fit path (dof, multistart, the nested start, the log-likelihood's constants)
    moves the statistics by far more."""
    from specfit.kernels import fitting

    f = np.fft.rfftfreq(128, 12.0)[1:]
    cfg = load_config({}).fit
    m1, m2 = get_model("powerlaw_tail"), get_model("powerlaw_tail_lorentzian")
    args = (f, 2.0, m1, m2, "whittle", cfg.max_iter, cfg.tol, cfg.multistart)
    nsim = fitting._LRT_NSIM
    ref = fitting.lrt_reference(*args)
    _, sim = fitting._lrt_null_spectra(fitting._lrt_draw_key(*args, nsim), f, 2.0, m1, nsim)
    out = _fit_defaults(f, sim, {"m1": m1, "m2": m2})
    stat = out["lrt_stat"].astype(np.float64)
    assert np.isfinite(stat).all() and ref.n == nsim
    np.testing.assert_allclose(np.sort(stat), ref.null, rtol=1e-6, atol=1e-6)


def _hann_white_periodograms(rng, npix, length, segments):
    """Mean of ``segments`` Hann-windowed periodograms of unit white noise (mean removed),
    over their expectation, written out with numpy's FFT: bins 1 .. length/2 - 1."""
    w = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(length) / length)
    acc = np.zeros((npix, length // 2 - 1))
    for _ in range(segments):
        x = rng.standard_normal((npix, length))
        x -= x.mean(axis=1, keepdims=True)
        acc += np.abs(np.fft.rfft(x * w, axis=1)[:, 1 : length // 2]) ** 2 / (w * w).sum()
    return acc / segments


def _assert_index_pulls_calibrated(out, truth, m1):
    """M1's index pulls against the truth (status-0 fits, > 90 % of the pixels) spread
    0.9-1.1; returns the status-0 mask and their true indices."""
    ok = out["m1_status"] == 0
    assert ok.mean() > 0.9
    index = truth[ok, m1.param_names.index("index")]
    pull = (out["m1_index"][ok] - index) / out["m1_index_err"][ok]
    assert 0.9 <= np.std(pull) <= 1.1, np.std(pull)
    return ok, index


def _assert_lrt_calibrated(pvalues):
    """LRT p-values of null spectra (> 99 % finite) below 0.05 / 0.2 / 0.5 within 3.5 SE
    (:func:`_rate_se`) of the level."""
    p = np.asarray(pvalues, dtype=np.float64)
    assert np.isfinite(p).mean() > 0.99
    p = p[np.isfinite(p)]
    for alpha in (0.05, 0.2, 0.5):
        rate = np.mean(p < alpha)
        assert abs(rate - alpha) <= 3.5 * _rate_se(alpha, p.size), (alpha, rate)


@pytest.mark.parametrize("method", ["whittle", "lsq_log"])
def test_lrt_pvalue_is_calibrated_under_a_hann_taper(method):
    """A tapered periodogram's bins are correlated at their full dof (whittle's likelihood
    counts dof / vif; lsq_log's the full dof). The LRT reference must simulate that noise,
    not independent bins at the likelihood's dof. 3,000 M1 spectra (truths drawn as the
    reference draws them, 149 bins) times 2-segment Hann periodograms of white noise made with
    numpy's FFT, fitted as a run fits them: the share of p-values below 0.05 / 0.2 / 0.5
    within 3.5 SE (binomial over 3,000 pixels and the reference's own nsim 2000,
    :func:`_rate_se`: 2.2 / 4.0 / 5.1 points) of the level. Measured, whittle: 4.5 / 22.6 /
    54.2 %; lsq_log: 5.5 / 23.2 / 53.2 % (docs/spectra_simulations.py lrt_taper, 6,000 other
    pixels and a 16,000-statistic reference, is uniform within its KS test). The reference of
    independent bins, which specfit used before, gives these statistics 3.3 / 14.8 / 40.2 %
    (whittle: fails at 0.2 and 0.5) and 29.6 / 62.5 / 86.5 % (lsq_log: fails everywhere)."""
    from specfit.kernels import tile

    m1, m2 = get_model("powerlaw_tail"), get_model("powerlaw_tail_lorentzian")
    length, npix = 300, 3000
    f = np.arange(1, length // 2) / (length * 12.0)
    rng = np.random.default_rng(7)
    power = m1.evaluate(f, m1.null(f, rng, npix)) * _hann_white_periodograms(rng, npix, length, 2)
    dof = tile.fit_dof(4.0, method, "hann", length)
    opts = fit_options(DEFAULTS)
    out = fit_block(
        f, power, {"m1": m1, "m2": m2}, method=method, dof=dof,
        bin_rho=tile.bin_rho("hann", length), **opts,
    )  # fmt: skip
    _assert_lrt_calibrated(out["lrt_pvalue"])


def test_log_power_correlation_matches_simulated_hann_periodograms():
    """lsq_log's errors under a taper use the correlation of ln power between neighbouring
    bins (stats.log_power_rho, from Kibble's bivariate Gamma), not the powers' 0.444 / 0.028.
    Independent reference: 20,000 Hann periodograms of white noise (numpy's FFT, 1 and 2
    segments), the correlation of ln power at lags 1 and 2 averaged over 20 mid bins.
    Tolerance 0.01 (SE ~0.002-0.005: 20,000 pairs per bin, neighbouring bins' estimates
    correlated). Measured: 0.306 / 0.015 (1 segment; predicted 0.308 / 0.017) and 0.375 /
    0.021 (2 segments; predicted 0.375 / 0.022)."""
    from specfit.kernels import periodogram
    from specfit.kernels.stats import log_power_rho

    length = 300
    rho = periodogram.window_rho("hann", length)[:2]
    for segments in (1, 2):
        lp = np.log(_hann_white_periodograms(np.random.default_rng(21), 20_000, length, segments))
        want = log_power_rho(rho, 2.0 * segments)
        for j in (1, 2):
            got = np.mean([np.corrcoef(lp[:, i], lp[:, i + j])[0, 1] for i in range(20, 120, 5)])
            assert abs(got - want[j - 1]) < 0.01, (segments, j, got, want)
    assert log_power_rho(0.0, 2.0) == 0.0
    # k = 1: Li2(rho) / (pi^2 / 6), the dilogarithm (scipy.special.spence(1 - x) = Li2(x))
    from scipy.special import spence

    np.testing.assert_allclose(log_power_rho(0.9, 2.0), spence(0.1) / (np.pi**2 / 6), rtol=1e-9)


@pytest.mark.parametrize("segments", [1, 2])
def test_lsq_log_errors_are_calibrated_under_a_hann_taper(segments):
    """lsq_log treats the log powers as independent; under a Hann taper its index errors came
    out too small (pull spread 1.27 on docs/spectra_simulations.py's lrt_taper spectra). It
    now widens them by the sandwich with the log powers' correlation. 3,000 M1 spectra
    (truths as the reference draws them, 149 bins) times Hann periodograms of white noise:
    the standard deviation of the index pulls against the truth within 0.9-1.1 (its SE at
    3,000 pulls is ~0.013; whittle's own dof / vif correction gives 0.97 on such spectra),
    and the index's profile interval covering the truth on 68.3 % within 4 binomial SE (3.4
    points). Measured: pulls 0.93 / 1.02, coverage 69.8 / 68.0 % (1 / 2 segments); the
    errors without the correlation (the old code) give 1.13 / 1.28 and 61.7 / 56.4 %."""
    from specfit.kernels import tile

    m1 = get_model("powerlaw_tail")
    length, npix = 300, 3000
    f = np.arange(1, length // 2) / (length * 12.0)
    rng = np.random.default_rng(17 + segments)
    truth = m1.null(f, rng, npix)
    power = m1.evaluate(f, truth) * _hann_white_periodograms(rng, npix, length, segments)
    opts = {**fit_options(DEFAULTS), "best_model": "aic", "intervals": ["index"]}
    out = fit_block(
        f, power, {"m1": m1}, method="lsq_log", dof=2.0 * segments,
        bin_rho=tile.bin_rho("hann", length), **opts,
    )  # fmt: skip
    ok, index = _assert_index_pulls_calibrated(out, truth, m1)
    inside = (out["m1_index_lower"][ok] <= index) & (index <= out["m1_index_upper"][ok])
    assert abs(inside.mean() - 0.683) <= 4 * np.sqrt(0.683 * 0.317 / ok.sum()), inside.mean()


def _welch_white_periodograms(rng, npix, length, segments, overlap, hann):
    """Mean of ``segments`` periodograms of unit white noise whose segments start every
    ``length - floor(overlap length)`` samples (mean removed, Hann-windowed or not), over
    their expectation, written out with numpy's FFT: bins 1 .. length/2 - 1."""
    w = np.ones(length)
    if hann:
        w = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(length) / length)
    step = length - int(np.floor(overlap * length))
    x = rng.standard_normal((npix, length + (segments - 1) * step))
    acc = np.zeros((npix, length // 2 - 1))
    for a in range(segments):
        seg = x[:, a * step : a * step + length]
        seg = seg - seg.mean(axis=1, keepdims=True)
        acc += np.abs(np.fft.rfft(seg * w, axis=1)[:, 1 : length // 2]) ** 2 / (w * w).sum()
    return acc / segments


def test_welch_overlap_bin_correlations_match_simulated_averages():
    """Overlapping Welch segments correlate neighbouring bins, with or without a taper;
    specfit used one segment's correlations (none without a window). Independent reference:
    20,000 Welch averages of white noise (5 segments of 200 samples at 50 % overlap, and 9
    at 75 %; numpy's FFT), the powers' correlation at lags 1-3 averaged over 15 mid bins.
    Tolerance 0.01 (SE ~0.003). Measured (50 %): Hann 0.456 / 0.037 / -0.001 against 0.456
    / 0.037 / 0.001 predicted, no window 0.117 / 0.000 / 0.012 against 0.116 / 0 / 0.013;
    one segment's would be 0.444 / 0.028 / 0 and 0 / 0 / 0."""
    from specfit.kernels import tile

    for overlap, segments in ((0.5, 5), (0.75, 9)):
        for hann in (False, True):
            rng = np.random.default_rng(31)
            p = _welch_white_periodograms(rng, 20_000, 200, segments, overlap, hann)
            want = tile.bin_rho("hann" if hann else "none", 200, overlap, segments)[:3]
            for j in (1, 2, 3):
                got = np.mean([np.corrcoef(p[:, i], p[:, i + j])[0, 1] for i in range(20, 80, 4)])
                assert abs(got - want[j - 1]) < 0.01, (overlap, hann, j, got, want)
    # without overlap: one segment's, as before (none: no correlation at all)
    assert tile.bin_rho("none", 200, 0.0, 5).size == 0
    np.testing.assert_array_equal(tile.bin_rho("hann", 200, 0.0, 5), tile.bin_rho("hann", 200))


def test_lsq_log_nested_fallback_is_widened_once(monkeypatch):
    """Where the bigger model ends worse than the model nested in it, it takes that model's
    answer and errors (fitting._ensure_nested); under a taper those errors were widened by
    the sandwich and then widened again as the bigger model's. Forced here (the bigger
    model's fits made to fail): M2's index error is M1's, to the bit, on every pixel."""
    from specfit.kernels import fitting, tile

    m1, m2 = get_model("powerlaw_tail"), get_model("powerlaw_tail_lorentzian")
    f = np.arange(1, 150) / 3600.0
    rng = np.random.default_rng(2)
    power = m1.evaluate(f, m1.null(f, rng, 200)) * _hann_white_periodograms(rng, 200, 300, 2)
    real = fitting._fit_one

    def worse_for_m2(model, *args, **kw):
        r = real(model, *args, **kw)
        if model.npar == m2.npar:
            r["F"] = np.full_like(r["F"], np.inf)
        return r

    monkeypatch.setattr(fitting, "_fit_one", worse_for_m2)
    opts = {**fit_options(DEFAULTS), "best_model": "aic"}
    out = fit_block(
        f, power, {"m1": m1, "m2": m2}, method="lsq_log", dof=4.0,
        bin_rho=tile.bin_rho("hann", 300), **opts,
    )  # fmt: skip
    ok = np.isfinite(out["m1_index_err"])
    assert ok.mean() > 0.9 and (out["m2_status"][ok] == 7).all()
    np.testing.assert_array_equal(out["m2_index_err"][ok], out["m1_index_err"][ok])


def test_singular_sandwich_systems_give_nan_not_an_error():
    """One singular matrix in a block's stack does not fail the block's errors."""
    from specfit.kernels.fitting import _inverses

    H = np.stack([np.eye(2) * 2.0, np.zeros((2, 2)), np.array([[2.0, 1.0], [1.0, 2.0]])])
    inv = _inverses(H)
    np.testing.assert_allclose(inv[0], np.eye(2) / 2.0)
    assert np.isnan(inv[1]).all()
    np.testing.assert_allclose(inv[2] @ H[2], np.eye(2), atol=1e-12)


@pytest.mark.parametrize("hann,overlap,segments", [(False, 0.5, 5), (True, 0.75, 9)])
def test_whittle_is_calibrated_with_welch_overlap(hann, overlap, segments):
    """Welch overlap correlates the bins (no window, 50 %: 0.116 at lag 1, 0.013 at lag 3;
    Hann, 75 %: 0.486 / 0.047). specfit ignored that without a window (errors and LRT
    reference of independent bins), and with Hann used one segment's correlations, whose
    sum (0.47) left room for the reference's shared Gamma parts: at 75 % overlap the sum
    is 0.53 and the reference's noise needs parts spanning three bins
    (fitting._spanning_gamma). 3,000 M1 spectra (truths as the reference draws them, 149
    bins) times Welch averages of white noise (300-sample segments, numpy's FFT), fitted with
    the dof and bin correlations a run passes for the layout: M1's index pulls spread
    0.9-1.1 and the LRT flags M2 at 0.05 / 0.2 / 0.5 within 3.5 SE (_rate_se: 2.2 / 4.0 /
    5.1 points) of the level. Measured: no window 0.97, 4.8 / 18.2 / 48.0 % (with a
    16,000-statistic reference on 6,000 other spectra, docs/spectra_simulations.py
    welch_overlap: 4.8 / 18.9 / 47.9 %); the old dof and reference gave pulls 1.10 and 10.5
    / 32.7 / 64.2 % (fails). Hann at 75 %: 0.99, 4.7 / 19.5 / 50.6 %. That case guards the
    three-bin parts of the reference's noise, which a first version of the overlap's
    correlations lacked (it raised ValueError); the one-segment correlations used before give
    1.02, 6.3 / 22.2 / 54.3 %, inside the tolerance: it does not tell those apart."""
    from specfit.kernels import periodogram, tile

    m1, m2 = get_model("powerlaw_tail"), get_model("powerlaw_tail_lorentzian")
    length, npix = 300, 3000
    f = np.arange(1, length // 2) / (length * 12.0)
    rng = np.random.default_rng(5)
    truth = m1.null(f, rng, npix)
    noise = _welch_white_periodograms(rng, npix, length, segments, overlap, hann)
    power = m1.evaluate(f, truth) * noise
    window = "hann" if hann else "none"
    step = length - int(np.floor(overlap * length))
    dof = periodogram.welch_dof(window, length, step, segments)
    layout = (window, length, overlap, segments)
    out = fit_block(
        f, power, {"m1": m1, "m2": m2}, method="whittle", dof=tile.fit_dof(dof, "whittle", *layout),
        bin_rho=tile.bin_rho(*layout), **fit_options(DEFAULTS),
    )  # fmt: skip
    _assert_index_pulls_calibrated(out, truth, m1)
    _assert_lrt_calibrated(out["lrt_pvalue"])


def test_welch_overlap_that_shares_no_sample_is_no_overlap():
    """An overlap that rounds to no shared sample (floor(overlap L) = 0) correlates nothing:
    no bin correlations and the plain dof, as without overlap."""
    from specfit.kernels import tile

    assert tile.bin_rho("none", 300, 0.001, 5).size == 0
    assert tile.fit_dof_rule("whittle", "none", 300, 0.001, 5) == "dof"
    assert tile.fit_dof(4.0, "whittle", "none", 300, 0.001, 5) == 4.0
    assert tile.fit_dof_rule("whittle", "none", 300, 0.5, 5) == "dof / window_vif"


def test_correlated_gamma_has_the_windows_law():
    """The reference's tapered noise: Gamma(k) marginals of mean 1 (variance 1/k) and the
    window's bin correlations (Hann 0.444, 0.028, then 0), checked on 4,000 spectra of 200
    bins for a shape k of 1 and 2 (one and two Hann segments: the fit's dof x vif / 2), and
    Hann at 75 % Welch overlap (0.486, 0.047, 0.001, ...: summing to 0.53, built with parts
    spanning three bins) for k 1 and 4, end bins included. Tolerances: 0.01 on the mean and on each lag's correlation (SE ~0.002 for
    800,000 pairs), 3 % on the variance (SE ~0.5 %), 0.06 on each end bin's mean (SE 0.016
    at k = 1 over 4,000 values)."""
    from scipy import stats

    from specfit.kernels import fitting, periodogram

    hann = fitting._noise_lags(periodogram.window_rho("hann", 300))
    assert hann.size == 2
    # Hann at 75 % Welch overlap, 9 segments: lags sum to 0.53, three-bin parts needed
    welch = fitting._noise_lags(periodogram.window_rho("hann", 300, 0.75, 9))
    assert welch.sum() > 0.5
    for rho, k in ((hann, 1.0), (hann, 2.0), (welch, 1.0), (welch, 4.0)):
        x = fitting._correlated_gamma(np.random.default_rng(3), k, rho, (4000, 200))
        assert abs(x.mean() - 1.0) < 0.01 and abs(x.var() * k - 1.0) < 0.03
        for j, want in enumerate([*rho, 0.0], start=1):
            r = np.corrcoef(x[:, :-j].ravel(), x[:, j:].ravel())[0, 1]
            assert abs(r - want) < 0.01, (k, j, r, want)
        for end in (x[:, 0], x[:, -1]):
            assert abs(end.mean() - 1.0) < 0.06
        # marginal: Gamma(k, 1/k) (KS on one column, independent draws)
        assert stats.kstest(x[:, 100], stats.gamma(k, scale=1 / k).cdf).pvalue > 1e-3


def test_field_control_on_null_fields(pooled_null_pvalues):
    """The 10,000 null spectra of the synthetic field as 1000 fields of 10 pixels: BH at
    q = 0.05 and the Sidak global level 0.95 each make a discovery in at most 5 % of the
    fields. A field is flagged when its smallest p-value is below ~0.005 (Sidak: 1 - 0.95^0.1
    = 0.0051), where the one reference of N_ref = fitting._LRT_NSIM statistics estimates the
    tail with relative SE sqrt((1 - t) / (N_ref t)) = 0.31 and moves every field's chance
    together; tolerance 3 SE of binomial (1000 fields) and reference error combined:
    0.05 + 3 x 0.0170. Measured with the current reference draw: BH 6.9 %, Sidak 6.9 %;
    referred to 20 reference draws 3.3-7.7 % (SD 1.3 points, the reference's share). With
    seed 2026's 2000 spectra alone (200 fields, tolerance of the binomial SE only, as this
    test was until 2026-12-02) 4 of those 20 draws, the current one among them (BH 10 %),
    fail it; the other seeds' 2000 in none. Before M1 started in both index basins, collapsed
    M1 fits gave BH 10 % of the fields (16 of 2000 p-values below 0.001, against 2)."""
    from specfit.kernels.fitting import _LRT_NSIM

    fields = pooled_null_pvalues.reshape(1000, 10)
    bh_any = np.mean([bool(np.any(bh_qvalues(fp) <= 0.05)) for fp in fields])
    thr = sidak_threshold(0.95, 10)
    sidak_any = np.mean(np.any(fields <= thr, axis=1))
    rel = np.sqrt((1 - thr) / (_LRT_NSIM * thr))
    limit = 0.05 + 3 * np.sqrt(0.05 * 0.95 / fields.shape[0] + (0.05 * rel) ** 2)
    assert bh_any <= limit and sidak_any <= limit, (bh_any, sidak_any, limit)


def test_global_level_holds_on_null_fields(null_pvalues):
    """The Sidak global level on fields of many pixels, which needs the extreme tail of the
    p-values right, not only their bulk. (A single 2000-pixel field at level 0.95 fails with
    probability 5 % even with exact p-values, and every change of the fitting code redraws
    the LRT reference, keyed by its source hash: such a test flips by chance.)

    - 20 fields of 100 pixels at level 0.95 (threshold 5.1e-4): each has a false pass with
      probability <= 0.05, so at most 4 of the 20 may (false failure P(Bin(20, 0.05) >= 5)
      = 0.26 %). Measured: 3, 1 and 2 for seeds 2026-2028.
    - All 2000 pixels at level 0.999 (threshold 5e-7): none (false failure 0.1 %). A fit in
      a wrong basin fails it: before M1 started in both index basins seed 2028 had an M1
      fit stuck (LRT statistic 436, p = 0).
    """
    p = null_pvalues
    fields = p.reshape(20, 100)
    n_fields = int(np.sum(np.any(fields <= sidak_threshold(0.95, 100), axis=1)))
    assert n_fields <= 4, n_fields
    assert not np.any(p <= sidak_threshold(0.999, p.size)), np.sort(p)[:5]


def _no_bump(shape, cadence, exposure):
    maps = _real_synthetic_maps(shape, cadence, exposure)
    maps["has_bump"] = np.zeros(shape, bool)
    maps["bump_amplitude"] = np.zeros(shape)
    for k in ("bump_center", "bump_width", "bump_period"):
        maps[k] = np.full(shape, np.nan)
    return maps


_real_synthetic_maps = synthetic.synthetic_maps


@pytest.fixture(scope="module")
def null_runs(tmp_path_factory):
    """One pure power-law + noise field (specfit's synthetic generator with its bump disc
    removed) run twice, with tiles of 8 and of 16 px."""
    mp = pytest.MonkeyPatch()
    mp.setattr(synthetic, "synthetic_maps", _no_bump)
    tmp = tmp_path_factory.mktemp("null_field")
    out = []
    try:
        for tile in (8, 16):
            cfg = tiny_config(
                tmp,
                input={
                    "kind": "synthetic",
                    "path": str(tmp / "frames"),
                    "synthetic": {"shape": [16, 20], "n_frames": 160, "cadence": 12.0, "seed": 7},
                },
                output={"tile": tile, "path": str(tmp / f"results_{tile}.zarr")},
            )
            run(cfg)
            out.append(open_results(tmp / f"results_{tile}.zarr").load())
    finally:
        mp.undo()
    return out


def test_field_maps_do_not_depend_on_the_tiling(null_runs):
    a, b = null_runs
    assert a.attrs["tile_size"] != b.attrs["tile_size"]
    for name in ("lrt_pvalue", "lrt_qvalue", "lrt_global", "ftest_qvalue", "best_model_fdr"):
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)
    assert json.loads(a.attrs["field_significance"]) == json.loads(b.attrs["field_significance"])
    # the attr's text too: built from the arrays in name order, not the file system's listing
    # order (a reviewer found the order differing between identical runs)
    assert a.attrs["field_significance"] == b.attrs["field_significance"]
    # and they are the BH / Sidak of the stored p-values (scipy as the reference)
    p = a["lrt_pvalue"].values.astype(np.float64)
    ok = np.isfinite(p)
    np.testing.assert_allclose(
        a["lrt_qvalue"].values[ok], false_discovery_control(p[ok]).astype(np.float32), rtol=1e-6
    )
    thr = a["lrt_global"].attrs["per_test_threshold"]
    assert thr == sidak_threshold(0.999, int(ok.sum()))
    np.testing.assert_array_equal(a["lrt_global"].values[ok], (p[ok] <= thr).astype(np.int8))


def test_pure_noise_field_per_pixel_vs_field_wide(null_runs):
    """320 null pixels: per-pixel alpha = 0.05 flags ~16 (tolerance 3 binomial SE: 16 +- 12);
    under BH at q = 0.05 a discovery anywhere has probability <= 0.05 and at the global level
    0.999 <= 0.001, so this field (fixed seed) has none. The field-wide choice keeps M1."""
    ds = null_runs[0]
    info = json.loads(ds.attrs["field_significance"])["lrt_pvalue"]
    n = info["n_tested"]
    assert n >= 300
    assert abs(info["n_pixel"] - 0.05 * n) <= 3 * np.sqrt(0.05 * 0.95 * n), info
    assert info["n_fdr"] == 0 and info["n_global"] == 0, info
    assert int((ds["best_model"] == 1).sum()) == info["n_pixel"]
    assert int((ds["best_model_fdr"] == 1).sum()) == 0


def test_info_reports_each_control(null_runs, tmp_path):
    from specfit.summary import summarise

    text = summarise(null_runs[0])
    line = next(s for s in text.splitlines() if s.strip().startswith("lrt_pvalue:"))
    assert re.search(r"per pixel p < 0\.05: \d+", line), line
    assert "BH q <= 0.05: 0" in line and "global 0.999: 0" in line, line
    assert "best_model_fdr" in text


# ----------------------------------------------------------------------------- viz, CLI
def test_map_masks_by_each_control(null_runs):
    from specfit.viz.data import converged_codes, map_values

    ds = null_runs[0]
    stored = ds["m2_index"].values
    ok = np.isin(ds["m2_status"].values, converged_codes(ds, "m2")) & np.isfinite(stored)
    p, q = ds["lrt_pvalue"].values, ds["lrt_qvalue"].values

    def shown(**kw):
        return np.isfinite(map_values(ds, "m2_index", **kw).values)

    np.testing.assert_array_equal(shown(significance="none"), ok)
    np.testing.assert_array_equal(shown(pvalue_threshold=0.05), ok & (p <= 0.05))
    np.testing.assert_array_equal(shown(significance="pixel"), ok & (p <= 0.05))  # fit.alpha
    np.testing.assert_array_equal(shown(significance="fdr"), ok & (q <= 0.05))  # fit.fdr_q
    np.testing.assert_array_equal(shown(significance="fdr", pvalue_threshold=0.9), ok & (q <= 0.9))
    np.testing.assert_array_equal(shown(significance="global"), ok & (ds["lrt_global"] == 1))
    assert not shown(significance="global").any()  # a pure-noise field: nothing passes
    assert shown(significance="pixel").sum() > 0
    # the base model's maps are never masked by a test of the richer one
    m1 = np.isfinite(map_values(ds, "m1_index", significance="global", mask_status=False))
    np.testing.assert_array_equal(m1, np.isfinite(ds["m1_index"].values))


def test_field_masks_need_the_field_maps(null_runs):
    from specfit.errors import StoreError
    from specfit.viz.data import map_values

    old = null_runs[0].drop_vars(["lrt_qvalue", "lrt_global", "ftest_qvalue", "ftest_global"])
    with pytest.raises(StoreError, match="no lrt_qvalue map.*--overwrite"):
        map_values(old, "m2_index", significance="fdr")
    with pytest.raises(ValueError, match="give no p-value threshold"):
        map_values(null_runs[0], "m2_index", significance="global", pvalue_threshold=0.1)


def test_plot_cli_refuses_global_with_a_threshold(capsys):
    from specfit.cli import main

    assert main(["plot", "nowhere.zarr", "--mask", "global", "--pvalue", "0.01"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--mask global" in err[0] and "drop --pvalue" in err[0]


def test_explorer_significance_widget(null_runs):
    from specfit.viz.app import build_explorer

    ds = null_runs[0]
    parts = build_explorer(ds)
    parts.widgets["map"].value = "m2_index"
    before = np.isfinite(parts.heatmap[()].dimension_values(2, flat=False))
    parts.widgets["pvalue"].value = 0.05
    pixel = np.isfinite(parts.heatmap[()].dimension_values(2, flat=False))
    np.testing.assert_array_equal(pixel, before & (ds["lrt_pvalue"].values <= 0.05))
    assert pixel.sum() > 0
    parts.widgets["significance"].value = "global"
    glob = np.isfinite(parts.heatmap[()].dimension_values(2, flat=False))
    np.testing.assert_array_equal(glob, before & (ds["lrt_global"].values == 1))
    assert parts.widgets["pvalue"].disabled  # global has no threshold
    # fdr: the slider is the q threshold, moved to the run's fit.fdr_q; at 1 no mask (as the
    # docs say; it masked at the run's q, the helper's finding)
    parts.widgets["significance"].value = "fdr"
    q = float(ds["lrt_qvalue"].attrs["fdr_q"])
    assert parts.widgets["pvalue"].value == q and not parts.widgets["pvalue"].disabled
    fdr = np.isfinite(parts.heatmap[()].dimension_values(2, flat=False))
    np.testing.assert_array_equal(fdr, before & (ds["lrt_qvalue"].values <= q))
    parts.widgets["pvalue"].value = 1.0
    np.testing.assert_array_equal(
        np.isfinite(parts.heatmap[()].dimension_values(2, flat=False)), before
    )


def test_stage_api_gives_the_runs_field_maps(null_runs):
    # specfit.stages.field_significance on the run's own per-pixel maps (what a lazy
    # specfit.fit returns) gives the maps the run's finalise wrote
    from specfit import field_significance

    ds = null_runs[1]
    field = ["lrt_qvalue", "lrt_global", "ftest_qvalue", "ftest_global", "best_model_fdr"]
    got = field_significance(ds.drop_vars(field).chunk({"y": 5, "x": 7}))
    for name in field:
        np.testing.assert_array_equal(got[name].values, ds[name].values, err_msg=name)
        assert got[name].dtype == ds[name].dtype
        assert got[name].attrs == ds[name].attrs, name
    assert json.loads(got.attrs["field_significance"]) == json.loads(ds.attrs["field_significance"])


def test_stage_api_takes_the_runs_field_settings_and_checks_its_arguments(tmp_path):
    """field_significance used the config defaults whatever the run's fit.fdr_q,
    global_level and alpha (the API's maps then disagreed with the run's), accepted
    fdr_q=2 (every pixel a bump) and failed with numpy's errors on a DataArray."""
    from specfit import field_significance, fit
    from specfit.errors import ConfigError

    cfg = tiny_config(tmp_path, fit={"fdr_q": 0.3, "global_level": 0.6, "alpha": 0.2})
    run(cfg)
    ds = open_results(tmp_path / "results.zarr").load()
    field = ["lrt_qvalue", "lrt_global", "ftest_qvalue", "ftest_global", "best_model_fdr"]
    for got in (field_significance(fit(ds["power"])), field_significance(ds.drop_vars(field))):
        for name in field:
            np.testing.assert_array_equal(got[name].values, ds[name].values, err_msg=name)
            assert got[name].attrs == ds[name].attrs, name
        assert json.loads(got.attrs["field_significance"]) == json.loads(
            ds.attrs["field_significance"]
        )
    assert ds["lrt_global"].attrs["global_level"] == 0.6
    assert ds["lrt_qvalue"].attrs["fdr_q"] == 0.3
    # an argument given wins, and is checked as the config checks it
    other = field_significance(ds, global_level=0.999)
    assert other["lrt_global"].attrs["global_level"] == 0.999
    for bad in ({"fdr_q": 2}, {"fdr_q": float("nan")}, {"alpha": 0}, {"global_level": 1.5}):
        with pytest.raises(ConfigError, match=f"specfit.field_significance: {next(iter(bad))}="):
            field_significance(ds, **bad)
    with pytest.raises(ConfigError, match="needs the Dataset of a fit.*got DataArray"):
        field_significance(ds["power"])


def test_field_wide_choice_weighs_a_demoted_family_against_the_others_again():
    """best_model_fdr runs the fit's own rule on q-values: when BH demotes m2 to m1, m1 is
    compared with the other family's winner by BIC again (not kept just because it is m2's
    null). Pixel 0: m2 (p significant, q not) -> m1 loses to k1 on BIC -> k1. Pixel 1: q
    significant too -> m2 stays (its BIC beats k1's). Pixel 2: k1 not fitted -> m1."""
    from specfit.kernels.fitting import choose_model

    aliases = ["m1", "m2", "k1", "k2"]
    st = {a: np.zeros(3, dtype=np.int8) for a in aliases}
    st["k1"][2] = 9
    st["k2"][2] = 9
    bic = {"m1": [110.0, 110.0, 110.0], "m2": [90.0, 90.0, 90.0], "k1": [100.0] * 3}
    bic["k2"] = [105.0] * 3
    ll = {a: -np.asarray(bic[a]) / 2 for a in aliases}
    summary = {a: {"status": st[a], "ll": ll[a], "bic": np.asarray(bic[a])} for a in aliases}
    p = {("m1", "m2"): np.array([0.01, 0.001, 0.2]), ("k1", "k2"): np.array([0.5, 0.5, np.nan])}
    q = {("m1", "m2"): np.array([0.08, 0.004, 0.4]), ("k1", "k2"): np.array([0.6, 0.6, np.nan])}
    pairs = list(p)
    per_pixel = choose_model(
        aliases, summary, pairs, {k: {"lrt": v} for k, v in p.items()}, "lrt", 0.05, "bic"
    )
    field = choose_model(
        aliases,
        summary,
        pairs,
        {k: {"lrt": v} for k, v in q.items()},
        "lrt",
        np.nextafter(0.05, 1),
        "bic",
    )
    assert per_pixel.tolist() == [1, 1, 0]
    assert field.tolist() == [2, 1, 0]
