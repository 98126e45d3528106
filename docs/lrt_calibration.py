"""Is the LRT p-value calibrated per pixel, and for which truths? (docs/significance.md)

The LRT of M1 (powerlaw_tail) inside M2 (+ Lorentzian bump), Whittle, dof 2, the grid of the
calibration test in tests/test_significance.py (128 samples at 12 s, 64 bins). The p-value
of a pixel comes from one simulated reference of fitting._LRT_NSIM statistics whose truths
are drawn from the small model's declared null (guesses.powerlaw_tail_null: index U(1, 3),
crossover of the power law and the tail log-uniform over the middle 60 % of ln f).

Printed and written to docs/lrt_calibration.json:

1. Rejection rates at alpha 0.01 / 0.05 / 0.2 / 0.5 of three sets of null spectra, each
   referred to several independent reference draws (``_LRT_SEED`` varied, nsim as a run):
   - ``field``: the calibration test's 10,000 nulls (synthetic-field truths, seeds 2026-2030);
   - ``field_fresh``: more synthetic-field nulls (other seeds);
   - ``prior``: nulls whose truths come from the reference's own null (other seeds).
   Also the references simulated from the synthetic-field truths instead of the declared null.
2. The statistic's dependence on the truth: for fixed crossover positions (0 = lowest bin,
   1 = highest; "pure" = no tail) the share of statistics above the pooled reference's 50 /
   80 / 95 / 99 % quantiles (0.5 / 0.2 / 0.05 / 0.01 if the statistic were pivotal).
3. The same rates with the reference split into 6 strata of the fitted M1 crossover (a
   measured proposal, not what specfit does).

    PYTHONPATH=. python docs/lrt_calibration.py [--draws 6] [--out docs/lrt_calibration.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import specfit.synthetic as synthetic
from specfit.config import DEFAULTS
from specfit.kernels import fitting
from specfit.kernels.stats import NullReference
from specfit.models import get_model
from specfit.pipeline import fit_options

ALPHAS = (0.01, 0.05, 0.2, 0.5)
F = np.fft.rfftfreq(128, 12.0)[1:]
LNF = np.log(F)
CFG = DEFAULTS.fit
M1 = get_model("powerlaw_tail")
M2 = get_model("powerlaw_tail_lorentzian")


def field_truths(n: int) -> np.ndarray:
    """The calibration test's truths (tests/test_significance.py::_calibration_fits)."""
    truth = synthetic.synthetic_maps((8, 32), 12.0, 2.9)
    params = np.stack([truth[k].ravel() for k in M1.param_names], axis=1)
    return np.resize(params, (n, 3))


def fit(power: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """LRT statistic and fitted M1 crossover position of spectra (n, nf), fitted as a run."""
    assert CFG.best_model == "lrt"  # a run's default solver options, its LRT included
    out = fitting.fit_block(
        F,
        power,
        {"m1": M1, "m2": M2},
        method="whittle",
        dof=2.0,
        bin_rho=(),
        **fit_options(DEFAULTS),
    )
    a, n, c = (out[f"m1_{k}"].astype(np.float64) for k in M1.param_names)
    return out["lrt_stat"].astype(np.float64), crossover(a, n, c)


def crossover(a, n, c) -> np.ndarray:
    """(ln f where A f^-n = C - ln f_1) / span of ln f; no tail (C = 0): 2."""
    with np.errstate(all="ignore"):
        x = (np.log(a / c) / n - LNF[0]) / (LNF[-1] - LNF[0])
    return np.clip(np.where(np.isfinite(x), x, 2.0), -0.5, 2.0)


def nulls(kind: str, seeds) -> tuple[np.ndarray, np.ndarray]:
    stats, xs = [], []
    for s in seeds:
        rng = np.random.default_rng(s)
        truth = field_truths(2000) if kind == "field" else M1.null(F, rng, 2000)
        t, x = fit(M1.evaluate(F, truth) * rng.gamma(1.0, 1.0, size=(2000, F.size)))
        stats.append(t)
        xs.append(x)
    return np.concatenate(stats), np.concatenate(xs)


def reference(seed: int, truths: str) -> tuple[np.ndarray, np.ndarray]:
    """A reference draw as fitting.lrt_reference simulates it, with _LRT_SEED = seed; with
    truths "field" the declared null's truths are replaced by the synthetic field's."""
    nsim = fitting._LRT_NSIM
    args = (F, 2.0, M1, M2, "whittle", CFG.max_iter, CFG.tol, CFG.multistart, nsim)
    saved = fitting._LRT_SEED
    fitting._LRT_SEED = seed
    try:
        truth, sim = fitting._lrt_null_spectra(fitting._lrt_draw_key(*args), F, 2.0, M1, nsim)
    finally:
        fitting._LRT_SEED = saved
    if truths == "field":  # the same noise on the synthetic field's truths
        sim = sim / M1.evaluate(F, truth) * M1.evaluate(F, field_truths(nsim))
    return fit(sim)


def rates(null: np.ndarray, stat: np.ndarray) -> list[float]:
    p = NullReference(null).pvalue(stat)
    return [float(np.mean(p < a)) for a in ALPHAS]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draws", type=int, default=6, help="reference draws per truth kind")
    ap.add_argument("--out", default=str(Path(__file__).with_name("lrt_calibration.json")))
    args = ap.parse_args()
    t0 = time.perf_counter()
    data = {
        "field": nulls("field", range(2026, 2031)),
        "field_fresh": nulls("field", range(3000, 3010)),
        "prior": nulls("prior", range(4000, 4010)),
    }
    seeds = [fitting._LRT_SEED, *range(1, args.draws)]
    refs = {kind: [reference(s, kind) for s in seeds] for kind in ("null", "field")}
    res: dict = {"alphas": ALPHAS, "nsim": fitting._LRT_NSIM, "seeds": seeds, "rates": {}}
    res["n"] = {k: int(v[0].size) for k, v in data.items()}
    print(f"rejection rates (%) at alpha {ALPHAS}; references of {fitting._LRT_NSIM} statistics")
    for kind, rr in refs.items():
        for name, (stat, _) in data.items():
            table = np.array([rates(r[0], stat) for r in rr])
            mean = table.mean(0)
            se = table.std(0, ddof=1) / np.sqrt(len(rr))
            pooled = rates(np.concatenate([r[0] for r in rr]), stat)
            res["rates"][f"{name}|ref_{kind}"] = {
                "per_draw": table.tolist(),
                "mean": mean.tolist(),
                "se_over_draws": se.tolist(),
                "pooled_reference": pooled,
            }
            print(f"\ndata {name} (n = {stat.size}), reference truths: {kind}")
            for s, row in zip(seeds, table, strict=True):
                print(f"  seed {s:>9}: " + " ".join(f"{100 * v:6.2f}" for v in row))
            print("  mean       : " + " ".join(f"{100 * v:6.2f}" for v in mean))
            print("  SE (draws) : " + " ".join(f"{100 * v:6.2f}" for v in se))
            print("  pooled ref : " + " ".join(f"{100 * v:6.2f}" for v in pooled))

    # 2. dependence on the crossover position (truths fixed, index U(1, 3))
    pooled = np.concatenate([r[0] for r in refs["null"]])
    q = np.quantile(pooled, [0.5, 0.8, 0.95, 0.99])
    res["position"] = {}
    print("\nshare (%) above the pooled reference's 50/80/95/99 % quantiles, by true crossover")
    for pos in (0.0, 0.2, 0.35, 0.5, 0.65, 0.8, 1.0, "pure"):
        rng = np.random.default_rng([77, 0 if pos == "pure" else int(1000 * pos)])
        n = rng.uniform(1.0, 3.0, 2000)
        lnfc = LNF[0] + (2.0 if pos == "pure" else pos) * (LNF[-1] - LNF[0])
        truth = np.column_stack([np.exp(n * lnfc), n, np.full(2000, 0.0 if pos == "pure" else 1.0)])
        if pos == "pure":
            truth[:, 0] = 1.0
        stat, _ = fit(M1.evaluate(F, truth) * rng.gamma(1.0, 1.0, size=(2000, F.size)))
        share = [float(np.mean(stat > v)) for v in q]
        res["position"][str(pos)] = share
        print(f"  {pos!s:>5}: " + " ".join(f"{100 * v:6.2f}" for v in share))

    # 3. the reference split by the fitted crossover (a proposal)
    xr = np.concatenate([r[1] for r in refs["null"]])
    edges = np.quantile(xr, np.linspace(0, 1, 7))
    edges[0], edges[-1] = -np.inf, np.inf
    strata = [
        NullReference(pooled[(xr >= a) & (xr < b)])
        for a, b in zip(edges[:-1], edges[1:], strict=True)
    ]
    res["stratified"] = {}
    print("\npooled reference split in 6 strata of the fitted M1 crossover: marginal | strata")
    for name, (stat, x) in data.items():
        k = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(strata) - 1)
        p = np.empty_like(stat)
        for i, ref in enumerate(strata):
            p[k == i] = ref.pvalue(stat[k == i])
        cond = [float(np.mean(p < a)) for a in ALPHAS]
        marg = rates(pooled, stat)
        res["stratified"][name] = {"marginal": marg, "strata": cond}
        print(
            f"  {name:>11}: "
            + " ".join(f"{100 * v:6.2f}" for v in marg)
            + " | "
            + " ".join(f"{100 * v:6.2f}" for v in cond)
        )
    every = np.concatenate([d[0] for d in data.values()] + [r[0] for v in refs.values() for r in v])
    res["statistics"] = {
        "n": int(every.size),
        "not_finite": int(np.sum(~np.isfinite(every))),
        "min": float(np.nanmin(every)),
    }
    t = field_truths(256)
    x = crossover(t[:, 0], t[:, 1], t[:, 2])
    res["field_crossover"] = [float(x.min()), float(x.max())]
    print(
        f"\nall {every.size} statistics: {res['statistics']['not_finite']} not finite, smallest "
        f"{res['statistics']['min']:.3f}; synthetic-field crossovers {x.min():.2f}-{x.max():.2f}"
    )
    res["seconds"] = round(time.perf_counter() - t0, 1)
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    print(f"\n{res['seconds']} s; wrote {args.out}")


if __name__ == "__main__":
    main()
