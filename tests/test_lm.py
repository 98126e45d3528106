"""The batched Levenberg–Marquardt solver against scipy on the same objectives."""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest
from scipy.optimize import OptimizeWarning, curve_fit, minimize

from conftest import KERNEL_FIT
from specfit import models as M
from specfit.kernels.fitting import fit_block as kernel_fit_block
from specfit.kernels.stats import log_bias

fit_block = functools.partial(kernel_fit_block, **KERNEL_FIT)

F = np.arange(1, 301) / 14400.0  # 300 bins
LNF = np.log(F)
M1 = M.get_model("powerlaw_tail")
M2 = M.get_model("powerlaw_tail_lorentzian")


def _m1(x, a, n, c):
    return a * np.exp(-n * x) + c


def _m1_jac(x, a, n, c):
    e = np.exp(-n * x)
    return np.stack([e, -a * x * e, np.ones_like(x)], axis=1)


def _m2(x, a, n, c, al, be, si):
    u = (x - be) / si
    return a * np.exp(-n * x) + c + al / (1 + u * u)


def _m2_jac(x, *p):
    return M2.jacobian(F, np.array(p))[0]


def _simulate(model, truth, npix, dof, seed):
    rng = np.random.default_rng(seed)
    p = np.tile(truth, (npix, 1))
    k = dof / 2
    return model.evaluate(F, p) * rng.gamma(k, 1 / k, size=(npix, F.size))


def _agreement(ours, ref, ok):
    rel = np.abs(ours[ok] - ref[ok]) / np.maximum(np.abs(ref[ok]), 1e-300)
    return np.mean(np.all(rel < 1e-4, axis=1)), ok.sum()


def _curve_fit_rows(fn, jac, y, starts, sigma=None, absolute_sigma=True, x=LNF):
    out = np.full(starts.shape, np.nan)
    for i in range(y.shape[0]):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizeWarning)
            try:
                out[i], _ = curve_fit(
                    fn,
                    x,
                    y[i],
                    p0=starts[i],
                    jac=jac,
                    method="lm",
                    sigma=None if sigma is None else sigma[i],
                    absolute_sigma=absolute_sigma,
                    maxfev=4000,
                    # MINPACK's default ftol (1.5e-8) stops before 1e-4 relative agreement
                    # in the amplitude-index valley; the reference must be converged
                    ftol=1e-14,
                    xtol=1e-14,
                )
            except RuntimeError:
                pass
    return out


@pytest.mark.parametrize("weighted", [False, True])
def test_lsq_matches_curve_fit_m1(weighted):
    npix = 150
    # unweighted least squares hardly sees a tail under a steep power law: use a flat one
    truth = [1e-5, 2.0, 1.0] if weighted else [1e-3, 1.0, 5.0]
    y = _simulate(M1, truth, npix, dof=18.0, seed=1)
    sigma = M1.evaluate(F, np.tile(truth, (npix, 1))) / 3.0 if weighted else None
    # tol is in standard errors squared (stop when the Newton step < sqrt(tol) sigma); the
    # default 1e-8 stops at ~1e-3 sigma, which can be >1e-4 relative for a loose amplitude
    out = fit_block(F, y, {"m1": M1}, method="lsq", sigma=sigma, tol=1e-12)
    ours = np.column_stack([out[f"m1_{p}"] for p in M1.param_names]).astype(float)
    ok_ours = out["m1_status"] == 0
    # curve_fit (method lm, analytic jacobian) from the same data-driven start
    starts = M1.guess(F, y, 18.0)
    ref = _curve_fit_rows(_m1, _m1_jac, y, starts, sigma)
    ok = ok_ours & np.isfinite(ref).all(axis=1)
    frac, n = _agreement(ours, ref, ok)
    assert n > 0.9 * npix
    assert frac >= 0.99


def _fit64(y, method, sigma=None, model=M1, dof=18.0):
    """Our fit with float64 parameters (fit_block rounds results to float32)."""
    from specfit.kernels import fitting

    fits, _, _ = fitting._fit_models(
        F, y, {"a": model}, method, np.full(y.shape[0], dof), sigma, 200, 1e-12, 1
    )
    return fits["a"]["params"]


def test_lsq_log_matches_curve_fit_on_log_power():
    npix = 150
    dof = 2.0
    y = _simulate(M1, [1e-5, 2.0, 1.0], npix, dof=dof, seed=2)
    ours = _fit64(y, "lsq_log", dof=dof)
    b = float(log_bias(dof))
    starts = M1.guess(F, y, dof)

    def logm(x, a, n, c):
        with np.errstate(invalid="ignore"):  # curve_fit may try a negative tail
            return np.log(_m1(x, a, n, c)) + b

    def logm_jac(x, a, n, c):
        return _m1_jac(x, a, n, c) / _m1(x, a, n, c)[:, None]

    ref = _curve_fit_rows(logm, logm_jac, np.log(y), starts)
    ok = np.isfinite(ref).all(axis=1) & np.isfinite(ours).all(axis=1) & (ref[:, 2] > 0)
    frac, n = _agreement(ours, ref, ok)
    assert n > 0.9 * npix and frac >= 0.99


def test_whittle_matches_scipy_minimize():
    npix = 12
    y = _simulate(M1, [1e-5, 2.0, 1.0], npix, dof=2.0, seed=3)
    ours = _fit64(y, "whittle", dof=2.0)
    for i in range(npix):
        s = y[i].mean()

        def nll(q, yi=y[i] / s):
            # log-parametrised amplitude/tail: an independent route to the same optimum
            m = np.exp(q[0] - q[1] * LNF) + np.exp(q[2])
            return np.sum(np.log(m) + yi / m)

        q0 = [np.log(ours[i, 0] / s) + 0.3, ours[i, 1] + 0.1, np.log(ours[i, 2] / s) - 0.2]
        r = minimize(
            nll,
            q0,
            method="Nelder-Mead",
            options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 20000},
        )
        ref = np.array([np.exp(r.x[0]) * s, r.x[1], np.exp(r.x[2]) * s])
        np.testing.assert_allclose(ours[i], ref, rtol=2e-4)


def test_m2_lsq_matches_curve_fit_with_strong_bump():
    npix = 100
    truth = [1e-5, 2.0, 1.0, 6.0, np.log(1 / 300), 0.25]
    y = _simulate(M2, truth, npix, dof=50.0, seed=4)
    sigma = M2.evaluate(F, np.tile(truth, (npix, 1))) / 5.0
    out = fit_block(F, y, {"m1": M1, "m2": M2}, method="lsq", sigma=sigma, tol=1e-12)
    ours = np.column_stack([out[f"m2_{p}"] for p in M2.param_names]).astype(float)
    # M2 has several local optima; curve_fit starts 1 % away from ours, so agreement shows
    # that our point is the optimum of the same objective (curve_fit would walk away)
    ref = _curve_fit_rows(_m2, _m2_jac, y, ours * (1 + 0.01), sigma)
    ok = (out["m2_status"] == 0) & np.isfinite(ref).all(axis=1)
    frac, n = _agreement(ours, ref, ok)
    assert n > 0.6 * npix and frac >= 0.99
    # and our seeds find the true bump (centre within 0.1 in ln f) in most pixels
    assert np.mean(np.abs(ours[:, 4] - truth[4]) < 0.1) > 0.6


def test_bounds_status_and_errors():
    # a spectrum with no tail at all: the tail sits on its lower bound 0
    rng = np.random.default_rng(6)
    p = np.tile([1e-6, 2.0, 0.0], (50, 1))
    y = M1.evaluate(F, p) * rng.gamma(50, 1 / 50, size=(50, F.size))
    out = fit_block(F, y, {"m1": M1}, dof=100.0)
    at = out["m1_status"] == 7
    assert at.mean() > 0.3  # about half of the noisy fits want a negative tail
    assert np.all(out["m1_tail"][at] == 0) and np.all(np.isnan(out["m1_tail_err"][at]))
    assert np.all(np.isfinite(out["m1_index_err"][at]))
    assert np.all(out["m1_tail"] >= 0)


def test_max_iter_status():
    y = _simulate(M1, [1e-5, 2.0, 1.0], 20, dof=2.0, seed=7)
    out = fit_block(F, y, {"m1": M1}, max_iter=1)
    assert np.all(out["m1_status"] == 1)
    assert np.all(np.isfinite(out["m1_index"]))


def _compiled_call(intrinsic):
    """A compiled function calling ``intrinsic`` (usable from compiled code only)."""
    import numba

    @numba.njit
    def call(*args):
        intrinsic(*args)

    return call


@pytest.mark.parametrize("obj", [0, 1, 2])
@pytest.mark.parametrize("use_w", [False, True])
def test_generated_accum_is_bit_identical_to_the_generic_sums(obj, use_w):
    """The generated sums (ACCUM_F's objective, then HPASS's H and g in SIMD lanes on the
    ln-parametrised jacobian) give exactly the bits of lm._chain_log then lm._accum, with and
    without the jacobian, for each objective (the solver's results must not change)."""
    import sys

    from specfit.kernels import lm

    rng = np.random.default_rng(3)
    for model in (M1, M2):
        cm = model.compiled()
        gen = sys.modules[cm.solve_block.py_func.__module__]
        npar = model.npar
        logp = np.array([n in model.log_params for n in model.param_names])
        pn = np.array([3e-6, 2.1, 0.7, 1.5, np.log(1 / 300), 0.2][:npar])
        m = np.empty(F.size)
        J = np.empty((F.size, npar))
        gen.EVAL(0, LNF, pn, m, J, True)
        y = m * rng.gamma(1.0, 1.0, F.size)
        if obj == 1:
            y = np.log(y)
        w = rng.uniform(0.5, 2.0, F.size) if use_w else np.ones(1)
        ab, aeb = np.empty(F.size), np.empty(F.size)
        for want in (True, False):
            J1 = J.copy()
            H1, g1 = np.full((npar, npar), 7.0), np.full(npar, 7.0)
            lm._chain_log(logp, pn, J1, npar, want)
            ref = lm._accum(y, w, use_w, obj, m, J1, npar, H1, g1, want)
            got = gen.ACCUM_F(y, w, use_w, obj, m, ab, aeb)
            assert got == ref  # exact: same operations in the same order
            assert np.isfinite(got[0])
            if want:
                # H and g summed in SIMD lanes (vectors of 4 and 8 for these models)
                H3, g3 = np.full((npar, npar), 7.0), np.full(npar, 7.0)
                _compiled_call(gen.HPASS)(ab, aeb, J, np.where(logp, pn, 1.0), H3, g3)
                assert np.array_equal(H1, H3) and np.array_equal(g1, g3)
        # an invalid model value gives inf in both
        mb = m.copy()
        mb[5] = np.nan
        H1, g1 = np.empty((npar, npar)), np.empty(npar)
        assert gen.ACCUM_F(y, w, use_w, obj, mb, ab, aeb)[0] == np.inf
        assert lm._accum(y, w, use_w, obj, mb, J, npar, H1, g1, True)[0] == np.inf


def test_unweighted_lsq_polish_reaches_the_optimum_at_1800_bins():
    """Large residuals (Gamma spectra, 1800 bins, unweighted least squares) make
    Gauss-Newton converge linearly; the polish's secant correction must still end where an
    independent reference does. Reference: scipy L-BFGS-B (ftol 1e-16, gtol 1e-12, analytic
    gradient, the same bounds, ln amplitude) from our answer and from the truth. Tolerance:
    the objective's excess over the reference, in the solver's own units 2 c_eff excess
    (the squared remaining step in standard errors), below 10 tol (the solver stops at
    tol = 1e-8: a step below 1e-4 standard errors) on every pixel. The solver without the
    secant correction fails this (one of these pixels stopped at 2 c_eff excess 2e-7)."""
    from specfit.kernels import fitting

    f = np.arange(1, 1801) / (3602 * 12.0)
    x = np.log(f)
    rng = np.random.default_rng(11)
    n = 40
    truth = np.column_stack(
        [
            10 ** rng.uniform(-6.5, -5.0, n),
            rng.uniform(1.5, 2.5, n),
            10 ** rng.uniform(-0.2, 0.2, n),
        ]
    )
    y = M1.evaluate(f, truth) * rng.gamma(1.0, 1.0, size=(n, f.size))
    fits, _, scale = fitting._fit_models(
        f, y, {"m": M1}, "lsq", np.full(n, 2.0), None, 200, 1e-8, 1, True
    )
    r = fits["m"]
    lo, hi = M1.bounds_for(f)
    for i in range(n):
        s = scale[i]
        yn = y[i] / s

        def obj(q, yn=yn):
            a, idx, c = np.exp(q[0]), q[1], q[2]
            e = np.exp(-idx * x)
            res = yn - (a * e + c)
            jac = np.stack([a * e, -a * x * e, np.ones_like(x)], 1)
            return 0.5 * np.sum(res * res), -jac.T @ res

        bnds = [(None, None), (lo[1], hi[1]), (lo[2] / s, None)]
        best = np.inf
        for p in (r["params"][i], truth[i]):
            q0 = np.array([np.log(p[0] / s), p[1], p[2] / s])
            q0 = np.clip(q0, [-np.inf, lo[1], lo[2] / s], [np.inf, hi[1], np.inf])
            ref = minimize(
                obj, q0, jac=True, method="L-BFGS-B", bounds=bnds,
                options={"ftol": 1e-16, "gtol": 1e-12, "maxiter": 20000},
            )  # fmt: skip
            best = min(best, ref.fun)
        excess = r["F"][i] - best
        assert 2.0 * r["c_eff"][i] * excess < 10 * 1e-8, (i, excess, r["status"][i])


def test_a_second_start_in_the_first_optimum_basin_is_not_run_again():
    """lm.solve's ``same``: with two starts to run, the second is skipped where it lies
    within ``same`` standard errors of the first's optimum in every parameter (it would end
    there: same answer, fewer evaluations), and run where it lies farther away. Reference:
    the same solver with ``same`` 0 (both run): equal F to 1e-9 relative (a decrement of
    tol = 1e-8 leaves ~1e-9 of an F of ~300)."""
    from specfit.kernels import lm

    n = 30
    truth = np.array([1e-5, 2.0, 1.0])
    y = _simulate(M1, truth, n, dof=2.0, seed=21)
    kernel = M1.compiled().solve_block
    x = M1.abscissa(F)
    lo, hi = M1.bounds_for(F)
    LO, HI = np.tile(lo, (n, 1)), np.tile(hi, (n, 1))
    logp = np.array([p in M1.log_params for p in M1.param_names])
    c, act = np.ones(n), np.ones(n, dtype=bool)

    def solve(starts, same):
        return lm.solve(
            kernel, x, y, starts, LO, HI, "whittle", c, act, None, 200, 1e-8, 2, logp,
            secant=True, same=same,
        )  # fmt: skip

    one = solve(np.tile(truth, (n, 1, 1)), 0.0)
    p, e = one["params"], one["errors"]
    inside = np.isfinite(e).all(axis=1)
    assert inside.sum() >= 20
    # the optimum itself, and a point 0.3 standard errors away (ln scale for the amplitude)
    near = p.copy()
    near[:, 0] = p[:, 0] * np.exp(0.3 * e[:, 0] / p[:, 0])
    near[:, 1:] += 0.3 * e[:, 1:]
    far = p.copy()
    far[:, 1:] += 4.0 * e[:, 1:]
    for other, skipped in ((near, True), (far, False)):
        starts = np.stack([p, other], axis=1)
        both = solve(starts, 0.0)
        dedup = solve(starts, 1.0)
        np.testing.assert_allclose(dedup["F"][inside], both["F"][inside], rtol=1e-9)
        if skipped:
            assert np.all(dedup["nfev"][inside] < both["nfev"][inside])
        else:
            assert np.array_equal(dedup["nfev"][inside], both["nfev"][inside])
