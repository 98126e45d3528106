"""The engine's constants against alternatives: fit time and pixels that end worse (diagnostic).

Each argument is one alternative, a comma-separated list of ``NAME=value`` overrides of
``specfit.kernels.fitting``'s module constants (e.g. ``_SEARCH_KEEP=6,_POLISH_KEEP=8``). On
the samples of ``tests/test_global_search.py`` made larger (simulated M1 and M1 + bump
periodograms at dof 2 and 4, 800 px at 300 bins and 300 px at 1800 bins; with
``../shared/data``, 2,000 px of the AIA 1600 frames as Whittle with the aia1600 config's
spectra and as lsq with the legacy config's), M1 + M2 are fitted at the product's solver
options (one core, CPU time) with the current constants and with each alternative. Printed
per sample: the CPU time ratio (current / alternative) and the pixels whose M2
log-likelihood ends more than 0.1 (and 1e-3) below the current constants' answer. The
current constants are at the optimum of the reference search on these samples' smaller
versions (the slow tests), so "worse" is the proxy for a miss. Run:
``OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1 python benchmarks/engine_constants.py
_SEARCH_KEEP=6 _SEARCH_KEEP=8,_POLISH_KEEP=5``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import test_global_search as T  # noqa: E402

from specfit.kernels import fitting  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "aia1600_20120606" / "fits"


def _simulated(dof, bumps, npix, nbins, seed=11):
    """test_global_search's simulated periodograms, at ``nbins`` bins of a 2-hour segment."""
    rng = np.random.default_rng(seed + 10 * dof + bumps)
    f = np.arange(1, nbins) / (nbins * 24.0)
    lnf = np.log(f)
    index = rng.uniform(1.0, 3.0, npix)
    lnfc = rng.uniform(lnf[0] + 1.0, lnf[-1] - 1.0, npix)
    p = np.column_stack([np.exp(index * lnfc), index, np.ones(npix)])
    m = T.M1.evaluate(f, p)
    if bumps:
        c = rng.uniform(np.log(1 / 400), np.log(1 / 150), npix)
        wd = rng.uniform(0.1, 0.5, npix)
        amp = rng.uniform(0.5, 4.0, npix) * np.diag(T.M1.evaluate(np.exp(c), p))
        bump = T.M2.components[2].shape(lnf[None, :], amp[:, None], c[:, None], wd[:, None])[0]
        m = m + bump
    k = dof / 2.0
    return f, m * rng.gamma(k, 1.0 / k, size=m.shape)


def samples(only: str | None = None, scale: float = 1.0) -> dict:
    """The samples whose name contains ``only`` (all: None), simulated ones with ``scale``
    times their pixels."""
    out = {}
    for nbins, npix in ((300, 800), (1800, 300)):
        for dof, bumps in T.CASES:
            key = f"sim{nbins}_dof{dof}_{'bump' if bumps else 'nobump'}"
            # dof 2 also as unweighted least squares (fit.method lsq at box 1)
            for name, method in ((key, "whittle"), (key + "_lsq", "lsq")):
                if (only is None or only in name) and (method == "whittle" or dof == 2):
                    f, p = _simulated(dof, bumps, max(1, int(scale * npix)), nbins)
                    out[name] = (f, p, float(dof), method, "sigma", T.M1, T.M2)
    if DATA.is_dir() and (only is None or only in "aia_whittle aia_legacy_lsq"):
        from specfit import stages

        arr = stages.ingest(DATA)
        cut = stages.resample(arr.isel(y=slice(60, 100), x=slice(60, 110)), 24.0)
        kw = dict(segments=2, window="hann", detrend="linear", normalisation="density")
        f, p = T._rows(stages.power_spectra(cut, **kw))
        out["aia_whittle"] = (f, p, 4.0, "whittle", "sigma", T.M1, T.M2)
        kw = dict(segments=2, window="none", detrend="mean", normalisation="variance", box=3)
        f, p = T._rows(stages.power_spectra(cut, **kw))
        out["aia_legacy_lsq"] = (f, p, 2.0, "lsq", "dlogf", T.L1, T.L2)
    return out


def _fit(sample, overrides):
    f, p, dof, method, weights, m1, m2 = sample
    saved = {k: getattr(fitting, k) for k in overrides}
    try:
        for k, v in overrides.items():
            setattr(fitting, k, v)
        t0 = time.process_time()
        r = fitting.fit_block(
            f, p, {"m1": m1, "m2": m2}, method=method, dof=dof, weights=weights, **T.PRODUCT
        )
        return time.process_time() - t0, r["m2_loglike"]
    finally:
        for k, v in saved.items():
            setattr(fitting, k, v)


def _parse(arg: str) -> dict:
    out = {}
    for item in arg.split(","):
        name, value = item.split("=")
        if not hasattr(fitting, name):
            raise SystemExit(f"specfit.kernels.fitting has no constant {name!r}")
        cur = getattr(fitting, name)
        out[name] = int(float(value)) if cur is None else type(cur)(float(value))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("alternatives", nargs="+", help="NAME=value[,NAME=value...] each")
    ap.add_argument("--only", default=None, help="samples whose name contains this")
    ap.add_argument("--scale", type=float, default=1.0, help="x the simulated samples' pixels")
    args = ap.parse_args()
    fitting._LRT_NSIM = 60  # the LRT reference is not what is compared
    alts = [_parse(a) for a in args.alternatives]
    todo = samples(args.only, args.scale)
    warm = next(iter(todo.values()))
    _fit((warm[0], warm[1][:16], *warm[2:]), {})
    print("| sample | alternative | CPU s (current) | x current | worse > 0.1 | worse > 1e-3 |")
    print("|---|---|---|---|---|---|")
    for name, sample in todo.items():
        t_ref, ll_ref = _fit(sample, {})
        for arg, alt in zip(args.alternatives, alts, strict=True):
            t, ll = _fit(sample, alt)
            d = ll - ll_ref
            print(f"| {name} ({len(ll)} px) | {arg} | {t:.2f} ({t_ref:.2f}) | {t_ref / t:.2f} "
                  f"| {np.sum(d < -0.1)} | {np.sum(d < -1e-3)} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
