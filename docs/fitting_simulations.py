"""The simulations docs/fitting.md quotes: finite-sample bias, model choice on pure-M1 pixels,
and why there is no broken + bump model (issue 12 item 5).

    python docs/fitting_simulations.py [--only bias,selection,broken_bump]
                                       [--json docs/fitting_simulations.json]

Whittle fits through ``specfit.kernels.fitting.fit_block`` at the default fit options, on
Gamma-noise periodograms of known truth at 300 bins (a 2-hour series at 24 s: f = k / 7200 s,
k = 1..300); a few minutes on one core. ``--only`` re-runs some parts and keeps the others'
entries in the JSON.

- ``bias``: 10,000 pixels of M1 (A = 1e-5, n = 2, C = 1) at dof 2, 18 and 72, M1 fitted alone.
  Printed: the mean index minus the truth, in units of the index's scatter and of the mean's
  standard error.
- ``selection``: 2,000 pure-M1 pixels (the same truth) at dof 2 and 18, M1 + M2 fitted. Printed:
  the share where each rule would choose M2: ``lrt`` (the simulated reference, p < 0.05), the
  naive chi^2_3 reference for the same statistic, ``ftest`` at 5 %, ``aic``, ``chi2`` (lower
  reduced chi^2).
- ``broken_bump``: 1,000 pixels at dof 18 of a broken power law + tail + Lorentzian bump (two
  truths: the bump above and below the break), fitted with ``broken_tail`` and with
  ``broken_tail`` + Lorentzian bump (a model specfit does not ship). Printed: the share of the
  bump model's fits that end with a parameter on a bound, and the share of those whose
  log-likelihood is above the truth's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from figure_stamp import run_parts  # docs/, beside this script
from scipy import special, stats

from specfit.config import DEFAULTS
from specfit.kernels.fitting import fit_block
from specfit.models import LORENTZIAN_BUMP, get_model
from specfit.pipeline import fit_options
from specfit.stages import resolve_models

ROOT = Path(__file__).resolve().parents[1]
FREQ = np.arange(1, 301) / 7200.0
M1_TRUTH = np.array([1e-5, 2.0, 1.0])  # amplitude, index, tail


def _fit(power, models, dof):
    opts = fit_options(DEFAULTS)  # what `specfit run` hands the solver
    return fit_block(FREQ, power, models, method="whittle", dof=dof, bin_rho=(), **opts)


def _noisy(model, truth, npix, dof, seed):
    m = model.evaluate(FREQ, np.broadcast_to(truth, (npix, truth.size)).copy())
    k = dof / 2.0
    return m, m * np.random.default_rng(seed).gamma(k, 1.0 / k, size=m.shape)


def _loglike(y, m, dof):
    """Whittle (Gamma) log-likelihood of each row of ``y`` under the model values ``m``."""
    k = dof / 2.0
    return np.sum(
        k * np.log(k / m) + (k - 1.0) * np.log(y) - k * y / m - special.gammaln(k), axis=1
    )


def bias(npix: int = 10_000) -> dict:
    m1 = get_model("powerlaw_tail")
    out = {}
    for i, dof in enumerate((2.0, 18.0, 72.0)):
        _, y = _noisy(m1, M1_TRUTH, npix, dof, seed=100 + i)
        r = _fit(y, {"m1": m1}, dof)
        ok = r["m1_status"] == 0
        index = r["m1_index"][ok].astype(float)
        d = index.mean() - M1_TRUTH[1]
        sd = index.std()
        out[f"dof {dof:g}"] = {
            "pixels": int(ok.sum()),
            "bias": float(d),
            "bias_in_scatter": float(d / sd),
            "bias_in_standard_errors": float(d / (sd / np.sqrt(ok.sum()))),
        }
    return out


def selection(npix: int = 2000) -> dict:
    models = resolve_models(dict(DEFAULTS.fit.models))
    out = {}
    for i, dof in enumerate((2.0, 18.0)):
        _, y = _noisy(models["m1"], M1_TRUTH, npix, dof, seed=200 + i)
        r = _fit(y, models, dof)
        ok = np.isfinite(r["lrt_stat"])
        out[f"dof {dof:g}"] = {
            "pixels": int(ok.sum()),
            "lrt": float(np.mean(r["lrt_pvalue"][ok] < 0.05)),
            "naive_chi2_3": float(np.mean(stats.chi2.sf(r["lrt_stat"][ok], 3) < 0.05)),
            "ftest": float(np.mean(r["ftest_pvalue"][ok] < 0.05)),
            "aic": float(np.mean(r["m2_aic"][ok] < r["m1_aic"][ok])),
            "chi2": float(np.mean(r["m2_chi2red"][ok] < r["m1_chi2red"][ok])),
        }
    return out


def broken_bump(npix: int = 1000, dof: float = 18.0) -> dict:
    broken = get_model("broken_tail")
    bumped = (broken + LORENTZIAN_BUMP).named("broken_tail_lorentzian")
    lnfb = -6.0  # break at 2.5 mHz; index 1.5 below, 3 above; power law 100x the tail there
    base = np.array([100.0, 1.5, 3.0, lnfb, 1.0])  # the amplitude is the power at the break
    out = {}
    for label, centre in (("bump above the break", -5.0), ("bump below the break", -7.0)):
        level = broken.evaluate(np.exp([centre]), base[None, :])[0, 0]
        truth = np.concatenate([base, [level, centre, 0.2]])  # bump as high as the background
        m, y = _noisy(bumped, truth, npix, dof, seed=300 + int(-centre))
        r = _fit(y, {"b1": broken, "b2": bumped}, dof)
        ok = np.isfinite(r["b2_loglike"])
        at_bound = r["b2_status"] == 7
        better = r["b2_loglike"] > _loglike(y, m, dof)
        lo, hi = bumped.bounds_for(FREQ)
        which = {}  # of the fits at a bound, the share with each parameter on one
        for j, name in enumerate(bumped.param_names):
            v = r[f"b2_{name}"][ok & at_bound].astype(float)
            on = (v <= lo[j] + 1e-9 * max(1.0, abs(lo[j]))) | (v >= hi[j] - 1e-9 * abs(hi[j]))
            which[name] = float(on.mean()) if v.size else 0.0
        out[label] = {
            "truth": [float(v) for v in truth],
            "pixels": int(ok.sum()),
            "at_bound": float(np.mean(at_bound[ok])),
            "at_bound_and_above_truth": float(np.mean((at_bound & better)[ok])),
            "parameter_on_a_bound": which,
        }
    return out


PARTS = {"bias": bias, "selection": selection, "broken_bump": broken_bump}


def main(argv: list[str] | None = None) -> dict:
    return run_parts(PARTS, "docs/fitting_simulations.py", __doc__, argv)


if __name__ == "__main__":
    main()
