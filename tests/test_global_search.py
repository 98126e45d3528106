"""specfit's bump fits are at the global optimum: checked against an independent slow search.

The reference is scipy's L-BFGS-B on the same objective (Whittle: sum ln m + y/m; lsq with
the legacy dlogf weights: chi^2), started from a dense grid of bump centres x widths
(:data:`NC` x :data:`NW`, each run :data:`SCREEN_ITER` iterations, the best
:data:`REF_KEEP` of them to convergence) and from specfit's own answer, on simulated
periodograms (dof 2 and 4, with and without bumps) and on real AIA 1600 spectra (a cutout
of ../shared/data: Whittle with the aia1600 config's spectra, and lsq with the legacy
config's spectra, weights and bounds; skipped without the data).

Tolerances (issue 11), on 200 px per case (the slow tests; 99.5 % means at most 1 miss):
- Whittle: specfit's M2 log-likelihood within 0.1 of the reference's on >= 99.5 % of pixels;
- lsq (legacy settings): M2 chi^2 within 1e-4 relative of the reference's on >= 99.5 %;
- nesting: M2's log-likelihood >= M1's on every pixel (to 1e-6, the rounding of the sums).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize

from specfit.kernels.fitting import dlogf_sigma, fit_block
from specfit.models import get_model

M1, M2 = get_model("powerlaw_tail"), get_model("powerlaw_tail_lorentzian")
PRODUCT = dict(
    max_iter=200,
    tol=1e-8,
    multistart=3,
    best_model="aic",
    alpha=0.05,
    nonnested="bic",
    bin_rho=(),
    optimizer="specfit",
    intervals=(),
)
NC, NW = 12, 4  # reference grid: bump centres x widths
SCREEN_ITER, REF_KEEP = 15, 4  # reference: short runs from the grid, the best to convergence
NPIX = 200  # per case: 99.5 % then allows at most one pixel short
_LEGACY = {"amplitude": (0.0, 14.4), "index": (0.3, 6.0), "tail": (-72.0, 72.0)}
L1 = M1.with_bounds(_LEGACY)
L2 = M2.with_bounds(
    {
        **_LEGACY,
        "bump_amplitude": (0.072, 1440.0),
        "bump_center": (-6.5, -4.6),
        "bump_width": (0.05, 0.8),
    }
)


@pytest.fixture(autouse=True)
def _small_lrt_reference(monkeypatch):
    """fit_block simulates an LRT reference per dof; its p-values are not checked here."""
    from specfit.kernels import fitting

    monkeypatch.setattr(fitting, "_LRT_NSIM", 60)


def _objective(model, x, y, w, method):
    """(value, gradient) of the objective in the reference's variables (amplitude as ln):
    power law + tail + the model's bump shape, written out here, not specfit's kernel."""
    bump = model.components[2].shape

    def fun(q):
        amp = np.exp(q[0])
        e = np.exp(-q[1] * x)
        pl = amp * e
        b, db_a, db_c, db_w = bump(x, q[3], q[4], q[5])
        m = pl + q[2] + b
        D = np.array([pl, -x * pl, np.ones_like(x), db_a, db_c, db_w])
        if method == "whittle":
            if not np.all(m > 0):
                return 1e300, np.zeros_like(q)
            return float(np.sum(np.log(m) + y / m)), D @ (1.0 / m - y / (m * m))
        r = y - m
        return float(0.5 * np.sum(w * r * r)), -(D @ (w * r))

    return fun


def _reference(f, y, w, method, lo, hi, m1p, own):
    """Best objective over L-BFGS-B runs from the grid and from specfit's answer ``own``."""
    x = np.log(f)
    fun = _objective(M2, x, y, w, method)
    qlo, qhi = lo.copy(), hi.copy()
    qlo[0] = np.log(lo[0]) if lo[0] > 0 else -50.0
    qhi[0] = np.log(hi[0]) if np.isfinite(hi[0]) else 50.0
    bounds = [
        (a if np.isfinite(a) else None, b if np.isfinite(b) else None)
        for a, b in zip(qlo, qhi, strict=True)
    ]
    m1 = M1.evaluate(f, m1p)[0]
    runs = []
    for c in np.linspace(lo[4], hi[4], NC):
        for wd in np.geomspace(lo[5], hi[5], NW):
            near = np.abs(x - c) < max(wd, 0.05)
            amp = max(float(np.mean((y - m1)[near])) if near.any() else 0.0, 0.05)
            s = np.clip([np.log(max(m1p[0], 1e-300)), m1p[1], m1p[2], amp, c, wd], qlo, qhi)
            opts = {"maxiter": SCREEN_ITER}
            r = minimize(fun, s, jac=True, method="L-BFGS-B", bounds=bounds, options=opts)
            runs.append((float(r.fun), r.x))
    o = np.clip(np.r_[np.log(max(own[0], 1e-300)), own[1:]], qlo, qhi)
    runs.sort(key=lambda t: t[0])
    best = fun(o)[0]
    for s in [o] + [q for _, q in runs[:REF_KEEP]]:
        r = minimize(fun, s, jac=True, method="L-BFGS-B", bounds=bounds)
        best = min(best, float(r.fun))
    return best


def _check(f, power, dof, method, weights, m1=M1, m2=M2):
    """Per fitted pixel: how far specfit's M2 is short of the reference, and M2 - M1."""
    res = fit_block(
        f, power, {"m1": m1, "m2": m2}, method=method, dof=dof, weights=weights, **PRODUCT
    )
    lo, hi = m2.bounds_for(f)
    ok = np.flatnonzero(np.isfinite(res["m2_loglike"]))
    gaps, nested = [], []
    w = 1.0 / dlogf_sigma(f) ** 2 if method == "lsq" else None
    for i in ok:
        s = power[i].mean()
        y = power[i] / s
        p2 = np.array([res[f"m2_{n}"][i] for n in m2.param_names], np.float64)
        p1 = np.array([res[f"m1_{n}"][i] for n in m1.param_names], np.float64)
        L, H = lo.copy(), hi.copy()
        for j, pw in enumerate(m2.power_params):
            if pw:
                p2[j] /= s
                L[j] /= s
                H[j] /= s
        p1[[0, 2]] /= s
        own = _objective(m2, np.log(f), y, w, method)(np.r_[np.log(p2[0]), p2[1:]])[0]
        ref = _reference(f, y, w, method, L, H, p1, p2)
        if method == "whittle":
            gaps.append((dof / 2.0) * (own - ref))  # log-likelihood short of the reference
        else:
            gaps.append((own - ref) / max(ref, 1e-300))  # relative chi^2 excess
        nested.append(res["m2_loglike"][i] - res["m1_loglike"][i])
    return np.array(gaps), np.array(nested), res


def _simulated(dof, bumps, npix=NPIX, seed=0):
    rng = np.random.default_rng(seed + 10 * dof + bumps)
    f = np.arange(1, 300) / 7200.0
    lnf = np.log(f)
    index = rng.uniform(1.0, 3.0, npix)
    lnfc = rng.uniform(lnf[0] + 1.0, lnf[-1] - 1.0, npix)
    p = np.column_stack([np.exp(index * lnfc), index, np.ones(npix)])
    m = M1.evaluate(f, p)
    if bumps:
        c = rng.uniform(np.log(1 / 400), np.log(1 / 150), npix)
        wd = rng.uniform(0.1, 0.5, npix)
        amp = rng.uniform(0.5, 4.0, npix) * np.diag(M1.evaluate(np.exp(c), p))
        m = m + M2.components[2].shape(lnf[None, :], amp[:, None], c[:, None], wd[:, None])[0]
    k = dof / 2.0
    return f, m * rng.gamma(k, 1.0 / k, size=m.shape)


def _assert_global(gaps, nested, tol):
    miss = np.flatnonzero(gaps > tol)
    assert np.mean(gaps <= tol) >= 0.995, (f"{miss.size} of {gaps.size} short", gaps.max(), miss)
    if nested is not None:
        assert np.all(nested >= -1e-6), nested.min()


# Measured (issue 11 asks <= 1 of 200 short): before the global search 42 % / 18 % / 37 % /
# 10 % of the simulated cases short (60 px), AIA 39 %. Now at most 1 of 200 in every
# simulated case and on the legacy lsq cutout. The AIA cutout missed 3 of 200 (worst 5.5:
# narrow bumps a third of a declared centre step from the point found, dropped as not
# distinct, and one misordered on the grouped bins); none since the search keeps points half
# a step apart and the 8 best coarse results are ranked at full resolution.
CASES = [(2, False), (2, True), (4, False), (4, True)]


@pytest.mark.slow
@pytest.mark.parametrize("dof, bumps", CASES)
def test_simulated_m2_at_global_optimum(dof, bumps):
    f, power = _simulated(dof, bumps)
    gaps, nested, _ = _check(f, power, float(dof), "whittle", "sigma")
    _assert_global(gaps, nested, 0.1)


def test_simulated_m2_at_global_optimum_small():
    """The fast variant: 24 px of dof 2 without bumps (the hardest case: bumps on noise).

    24 px cannot resolve 99.5 %; at most one pixel short (without the search: ~10 of 24)."""
    f, power = _simulated(2, False, npix=24, seed=3)
    gaps, nested, _ = _check(f, power, 2.0, "whittle", "sigma")
    assert np.sum(gaps > 0.1) <= 1, np.sort(gaps)[-3:]
    assert np.all(nested >= -1e-6), nested.min()


@pytest.fixture(scope="module")
def aia_cutout(shared_data):
    """200 px of the AIA 1600 frames (20 x 10 px, not derotated), resampled to 24 s."""
    from specfit import stages

    arr = stages.ingest(shared_data / "aia1600_20120606" / "fits")
    return stages.resample(arr.isel(y=slice(40, 50), x=slice(100, 120)), 24.0)


def _rows(power):
    power = power.compute()
    return power.freq.values, power.values.reshape(power.shape[0], -1).T.astype(np.float64)


@pytest.mark.slow
@pytest.mark.realdata
def test_aia1600_m2_at_global_optimum(aia_cutout):
    """Whittle with configs/aia1600.yaml's spectra (2 Hann segments, dof 4)."""
    from specfit import stages

    f, power = _rows(
        stages.power_spectra(
            aia_cutout, segments=2, window="hann", detrend="linear", normalisation="density"
        )
    )
    gaps, nested, _ = _check(f, power, 4.0, "whittle", "sigma")
    _assert_global(gaps, nested, 0.1)


@pytest.mark.slow
@pytest.mark.realdata
def test_legacy_lsq_m2_at_global_optimum(aia_cutout):
    """lsq on configs/legacy.yaml's spectra (2 plain segments, variance, 3 x 3 box), dlogf
    weights and bounds: chi^2 within 1e-4 relative of the reference."""
    from specfit import stages

    f, power = _rows(
        stages.power_spectra(
            aia_cutout, segments=2, window="none", detrend="mean", normalisation="variance", box=3
        )
    )
    gaps, _, _ = _check(f, power, 2.0, "lsq", "dlogf", L1, L2)
    # no nesting check: the legacy bounds keep the bump amplitude >= 0.072, so M2 does not
    # contain M1 there and may end below it
    _assert_global(gaps, None, 1e-4)


@pytest.mark.slow
def test_m2_never_below_m1_on_any_pixel():
    """The nested start guarantees it, also where the free fit would end elsewhere."""
    for dof, bumps in ((2, False), (4, True)):
        f, power = _simulated(dof, bumps, npix=40, seed=7)
        res = fit_block(
            f,
            power,
            {"m1": M1, "m2": M2},
            method="whittle",
            dof=float(dof),
            weights="sigma",
            **PRODUCT,
        )
        assert np.all(res["m2_loglike"] >= res["m1_loglike"] - 1e-6)


def test_profile_fallback_for_components_not_amplitude_times_shape(monkeypatch):
    """A searched component that is not one amplitude times a shape (a knee, a break) is
    profiled on the declared grid with the pinned solver: it runs and keeps M2 >= M1."""
    from specfit.kernels import fitting

    f, power = _simulated(4, True, npix=6, seed=5)
    monkeypatch.setattr(fitting, "_search_component", lambda model, grid: None)
    res = fit_block(
        f, power, {"m1": M1, "m2": M2}, method="whittle", dof=4.0, weights="sigma", **PRODUCT
    )
    assert np.all(np.isfinite(res["m2_loglike"]))
    assert np.all(res["m2_loglike"] >= res["m1_loglike"] - 1e-6)
