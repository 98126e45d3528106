"""Fit speed on ONE core: what ``specfit run`` does per pixel, the bare kernel, and peers.

Two sections per frequency grid (``--bins``, default 300 and 1800 bins: 2 h and 12 h at
12 s, the second the seed's job), in one process on one core (``NUMBA_NUM_THREADS=1``,
``OMP_NUM_THREADS=1`` set before any import):

**product defaults**: per pixel, what ``specfit run`` does at the config defaults: M1 + M2
(``fit.models``), ``fit.method`` (whittle), ``fit.multistart`` starts and whatever global
search the engine runs, ``fit.max_iter``, ``fit.tol``, ``fit.best_model`` (lrt, with the
simulated LRT reference), through the very function the tile chain calls
(:func:`specfit.kernels.tile.fit_maps`) on a block of simulated spectra (half with a bump).
The LRT reference is built once per run and dof value (the pipeline shares it through its work
folder): it is paid in a warm-up, timed and printed apart. The same with ``fit.method: lsq``
(the peers' objective). Peers doing the same work, timed on a subset of the pixels: a Python
loop of ``scipy.optimize.curve_fit`` (lm, analytic jacobian), ``xarray.DataArray.curvefit``
and ``ndoptimize.least_squares`` (a numba batched Levenberg-Marquardt): M1 then M2 per pixel,
each from ``fit.multistart`` starts with the best kept, and the LRT statistic and p-value.
All start from specfit's data-driven starts (the models' public guesses; M2's candidates
seeded from the peer's own M1 fit and ranked by the peer's objective at the start).

**bare kernel**: M1 alone, one start, :func:`specfit.kernels.fitting.fit_block` on M1-only
spectra, whittle and lsq; the same peers fitting M1 from the same single start.

ndoptimize fits the same least-squares objective as specfit's ``lsq`` (unweighted squares
of the power residuals), with specfit's bounds, ``max_iter`` and ``tol``; its convergence
test is on the chi-square decrease, so it gets a per-pixel noise variance (from differences
of neighbouring bins) that makes its tolerance mean what specfit's does (the last step
below ~1e-4 standard errors).

Times are CPU time of this process (``time.process_time``), best of 3 runs per method: the
machine is shared, and the ratios within one run are the figures to read. Numba compilation
is excluded (warm-up). Pixel rates are extrapolated from the subsets (per-pixel loops).
Quality columns, against the curve_fit loop on the subset: median |delta index| of M1 and,
for the least-squares methods, the share of pixels whose M2 (bare: M1) sum of squares is no
worse than curve_fit's (x (1 + 1e-6)), among the pixels where curve_fit's answer lies inside
specfit's bounds (its lm method has none).

Run::

    python benchmarks/fit_speed.py                 # 300 and 1800 bins
    python benchmarks/fit_speed.py --bins 300      # one grid
    python benchmarks/fit_speed.py --quick         # a tiny end-to-end check

Prints a table per grid and one README-ready line per comparison (with the issue's target
and whether it is met).
"""

from __future__ import annotations

import os

# one core: must be set before numpy/numba/dask are imported
for _var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import inspect  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from specfit.config import DEFAULTS  # noqa: E402
from specfit.kernels import fitting, lineshapes  # noqa: E402
from specfit.kernels.tile import fit_maps  # noqa: E402
from specfit.pipeline import fit_options  # noqa: E402
from specfit.stages import resolve_models  # noqa: E402

CADENCE = 12.0  # s: the seed's cadence
REPEATS = 3
# the product's solver options, exactly as `specfit run` hands them to the tile chain
PRODUCT = fit_options(DEFAULTS)
NSTART = PRODUCT["multistart"]
# the bare kernel: one start per pixel
BARE = {**PRODUCT, "multistart": 1}

TARGETS = {"product_x_curve_fit": 25.0, "bare_m1_fits_s_300": 40_000.0, "x_ndoptimize": 4.0}


def frequencies(nbins: int) -> np.ndarray:
    """The rfft grid (DC and Nyquist dropped) of a 2 * nbins + 2 frame series at CADENCE."""
    return np.arange(1, nbins + 1) / ((2 * nbins + 2) * CADENCE)


def simulate(f: np.ndarray, n: int, dof: float, bump_fraction: float, seed: int) -> np.ndarray:
    """Gamma spectra (shape dof/2) around per-pixel truths: M1 everywhere, a Lorentzian bump
    (3-10 min) on ``bump_fraction`` of the pixels."""
    rng = np.random.default_rng(seed)
    lnf = np.log(f)[None, :]
    amp = 10 ** rng.uniform(-6.5, -5.0, n)[:, None]
    index = rng.uniform(1.5, 2.5, n)[:, None]
    tail = 10 ** rng.uniform(-0.2, 0.2, n)[:, None]
    model = amp * np.exp(-index * lnf) + tail
    has = rng.random(n) < bump_fraction
    ba = rng.uniform(1.0, 4.0, n)[:, None]
    bc = rng.uniform(np.log(1 / 600), np.log(1 / 180), n)[:, None]
    bw = rng.uniform(0.15, 0.4, n)[:, None]
    model = model + np.where(has[:, None], ba / (1 + ((lnf - bc) / bw) ** 2), 0.0)
    k = dof / 2
    return model * rng.gamma(k, 1 / k, size=model.shape)


# ----------------------------------------------------------------------------- peers' model
def m1_func(x, amplitude, index, tail):
    return amplitude * np.exp(-index * x) + tail


def m1_jac(x, amplitude, index, tail):
    e = np.exp(-index * x)
    return np.stack([e, -amplitude * x * e, np.ones_like(x)], axis=1)


def m2_func(x, amplitude, index, tail, bump_amplitude, bump_center, bump_width):
    u = (x - bump_center) / bump_width
    return amplitude * np.exp(-index * x) + tail + bump_amplitude / (1 + u * u)


def m2_jac(x, amplitude, index, tail, bump_amplitude, bump_center, bump_width):
    d = (
        *lineshapes.power_law(x, amplitude, index)[1:],
        *lineshapes.constant(x, tail)[1:],
        *lineshapes.lorentzian_bump(x, bump_amplitude, bump_center, bump_width)[1:],
    )
    return np.stack([np.broadcast_to(v, x.shape) for v in d], axis=1)


FUNCS = {3: (m1_func, m1_jac), 6: (m2_func, m2_jac)}


def ssr(model, f, y, p) -> np.ndarray:
    """Sum of squared power residuals per pixel (inf where not finite)."""
    with np.errstate(all="ignore"):
        r = np.sum((y - model.evaluate(f, p)) ** 2, axis=-1)
    return np.where(np.isfinite(r), r, np.inf)


def peer_starts(model, f, y, dof, base, nstart) -> np.ndarray:
    """(npix, nstart, npar) starts from the model's public guess, as specfit gets them:
    a single guess spread deterministically (+/- 25 % steps), or the best ``nstart`` of the
    model's candidates ranked by the least-squares objective at the start."""
    g = model.guess_func
    try:
        takes = "nstart" in inspect.signature(g).parameters
    except (TypeError, ValueError):
        takes = False
    out = np.asarray(g(f, y, dof, base, nstart=nstart) if takes else g(f, y, dof, base), float)
    if out.ndim == 2:
        out = out[:, None, :]
        extra = []
        for s in range(1, nstart):
            sign = np.where(np.arange(model.npar) % 2 == s % 2, 1.0, -1.0)
            extra.append(out[:, 0, :] * (1.0 + 0.25 * ((s + 1) // 2) * sign))
        return np.concatenate([out, *[e[:, None, :] for e in extra]], axis=1)
    if out.shape[1] > nstart:
        score = np.stack([ssr(model, f, y, out[:, c]) for c in range(out.shape[1])], axis=1)
        order = np.argsort(score, axis=1, kind="stable")[:, :nstart]
        out = np.take_along_axis(out, order[:, :, None], axis=1)
    return out


def best_of_starts(model, f, y, fits: np.ndarray) -> np.ndarray:
    """(npix, nstart, npar) fits -> (npix, npar), the lowest sum of squares per pixel."""
    score = np.stack([ssr(model, f, y, fits[:, c]) for c in range(fits.shape[1])], axis=1)
    return fits[np.arange(fits.shape[0]), np.argmin(score, axis=1)]


def lrt(m1, m2, f, y, p1, p2) -> np.ndarray:
    """Gaussian LRT p-values of M1 inside M2 with the noise level profiled out."""
    from scipy.stats import chi2

    with np.errstate(all="ignore"):
        stat = np.maximum(f.size * np.log(ssr(m1, f, y, p1) / ssr(m2, f, y, p2)), 0.0)
    return chi2.sf(stat, m2.npar - m1.npar)


# ----------------------------------------------------------------------------- peer fitters
def fit_curve_fit(model, f, y, starts):
    from scipy.optimize import OptimizeWarning, curve_fit

    func, jac = FUNCS[model.npar]
    x = np.log(f)
    out = np.full(starts.shape, np.nan)
    for i in range(y.shape[0]):
        for c in range(starts.shape[1]):
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore", OptimizeWarning)
                warnings.simplefilter("ignore", RuntimeWarning)
                try:
                    out[i, c], _ = curve_fit(
                        func, x, y[i], p0=starts[i, c], jac=jac, method="lm", maxfev=2000
                    )
                except RuntimeError:
                    pass
    return out


def fit_xarray(model, f, y, starts):
    import xarray as xr

    func, jac = FUNCS[model.npar]
    names = list(model.param_names)
    da = xr.DataArray(y, dims=("pixel", "lnf"), coords={"lnf": np.log(f)})
    out = np.full(starts.shape, np.nan)
    for c in range(starts.shape[1]):
        p0 = {n: xr.DataArray(starts[:, c, j], dims="pixel") for j, n in enumerate(names)}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = da.curvefit(
                coords="lnf",
                func=func,
                p0=p0,
                errors="ignore",
                kwargs={"jac": jac, "method": "lm", "maxfev": 2000},
            )
        out[:, c] = res["curvefit_coefficients"].values
    return out


def fit_ndoptimize(model, f, y, starts):
    import _ndopt_models as nm
    import ndoptimize

    nd = nm.m1 if model.npar == 3 else nm.m2
    npix, ns, npar = starts.shape
    lo, hi = model.bounds_for(f)
    # the noise variance of each pixel from neighbouring-bin differences: the chi-square
    # tolerance then means what specfit's does (steps below ~1e-4 standard errors)
    var = np.mean(np.diff(y, axis=1) ** 2, axis=1) / 2.0
    data = np.repeat(y, ns, axis=0)
    res = ndoptimize.least_squares(
        nd,
        np.log(f)[:, None],
        data,
        np.repeat(var, ns)[:, None],
        starts.reshape(npix * ns, npar),
        lower=lo,
        upper=hi,
        max_iterations=PRODUCT["max_iter"],
        tolerance=PRODUCT["tol"],
    )
    return res.parameters.reshape(npix, ns, npar)


PEERS = {"curve_fit": fit_curve_fit, "xarray": fit_xarray, "ndoptimize": fit_ndoptimize}


def peer_same_work(fitter, m1, m2, f, y, dof, nstart):
    """M1 then M2 per pixel from ``nstart`` starts each (best kept), and the LRT."""
    t0 = time.process_time()
    s1 = peer_starts(m1, f, y, dof, None, nstart)
    p1 = best_of_starts(m1, f, y, fitter(m1, f, y, s1))
    base = np.where(np.isfinite(p1), p1, m1.guess(f, y, dof))
    s2 = peer_starts(m2, f, y, dof, base, nstart)
    p2 = best_of_starts(m2, f, y, fitter(m2, f, y, s2))
    p = lrt(m1, m2, f, y, p1, p2)
    return time.process_time() - t0, p1, p2, p


def best_of(fn, *args):
    """Run ``fn`` REPEATS times; keep the run with the smallest CPU time (its first item)."""
    best = None
    for _ in range(REPEATS):
        res = fn(*args)
        if best is None or res[0] < best[0]:
            best = res
    return best


# ----------------------------------------------------------------------------- specfit
def specfit_product(f, y, dof, method, models, lrt_cache, options=None):
    """The tile chain's fit (:func:`specfit.kernels.tile.fit_maps`) on a square block, at the
    product's options (``options``: overrides, e.g. ``intervals``)."""
    n = y.shape[0]
    side = int(np.sqrt(n))
    power = np.ascontiguousarray(y[: side * side].T.reshape(f.size, side, side), np.float32)
    opts = {**PRODUCT, "lrt_cache": lrt_cache, **(options or {})}
    t0 = time.process_time()
    out = fit_maps(
        f, power, dof, None, models, method, opts, np.zeros(0)
    )  # Gamma spectra: independent bins
    dt = time.process_time() - t0
    names = {a: list(m.param_names) for a, m in models.items()}
    p = {a: np.column_stack([out[f"{a}_{k}"].reshape(-1) for k in names[a]]) for a in models}
    return dt, p["m1"].astype(float), p["m2"].astype(float), out["lrt_pvalue"].reshape(-1)


def specfit_bare(f, y, dof, method, model):
    t0 = time.process_time()
    out = fitting.fit_block(f, y, {"m": model}, method=method, dof=dof, bin_rho=(), **BARE)
    dt = time.process_time() - t0
    p = np.column_stack([out[f"m_{k}"] for k in model.param_names]).astype(float)
    return dt, p, out["m_status"]


# ----------------------------------------------------------------------------- report
def med_dindex(p, ref) -> float:
    ok = np.isfinite(p[:, 1]) & np.isfinite(ref[:, 1])
    return float(np.median(np.abs(p[ok, 1] - ref[ok, 1]))) if ok.any() else float("nan")


def share_no_worse(model, f, y, p, ref) -> float:
    """Share of pixels whose sum of squares is no worse than the reference's, among those
    where the reference lies inside specfit's bounds (curve_fit's lm is unbounded)."""
    lo, hi = model.bounds_for(f)
    inside = np.all((ref >= lo) & (ref <= hi), axis=1)
    if not inside.any():
        return float("nan")
    a, b = ssr(model, f, y[inside], p[inside]), ssr(model, f, y[inside], ref[inside])
    return float(np.mean(a <= b * (1 + 1e-6)))


def run_grid(nbins: int, args, peers: list[str]) -> tuple[list, list[str]]:
    f = frequencies(nbins)
    dof = args.dof
    models = resolve_models(dict(DEFAULTS.fit.models))
    m1, m2 = models["m1"], models["m2"]
    scale = 300 / nbins  # peers' subsets shrink with the cost of a fit
    sub_n = max(8, int(args.subset * scale))
    sub_slow = max(4, int(args.subset_slow * scale))
    rows, lines = [], []
    # ---------------------------------------------------------------- product defaults
    n = args.size * args.size
    y = simulate(f, n, dof, 0.5, args.seed)
    rng = np.random.default_rng(args.seed + 1)
    sub = np.sort(rng.choice(n, size=min(sub_n, n), replace=False))
    with tempfile.TemporaryDirectory(prefix="specfit-lrt-") as cache:
        t0 = time.perf_counter()
        for method in ("whittle", "lsq"):
            specfit_product(f, y[:64], dof, method, models, cache)  # compile + LRT reference
        t_first = time.perf_counter() - t0
        res = {}
        for method in (DEFAULTS.fit.method, "lsq"):
            res[method] = best_of(specfit_product, f, y, dof, method, models, cache)
    cf = best_of(peer_same_work, fit_curve_fit, m1, m2, f, y[sub], dof, NSTART)
    cf_rate = sub.size / cf[0]
    label = f"M1 + M2, {NSTART} starts each, LRT"
    for method, r in res.items():
        rate = n / r[0]
        lsq = method == "lsq"
        rows.append(
            (
                f"specfit {method} at defaults ({n} px)",
                rate,
                rate / cf_rate,
                med_dindex(r[1][sub], cf[1]),
                share_no_worse(m2, f, y[sub], r[2][sub], cf[2]) if lsq else float("nan"),
            )
        )
        ok = rate / cf_rate >= TARGETS["product_x_curve_fit"]
        lines.append(
            f"{nbins} bins, one core, dof {dof:g}: specfit at its defaults ({label}; fit.method "
            f"{method}) {rate:,.0f} px/s = {rate / cf_rate:.1f}x a curve_fit loop doing the same "
            f"work ({cf_rate:,.1f} px/s) [target >= 25x: {'met' if ok else 'NOT met'}]"
        )
    rows.append((f"curve_fit loop, same work ({sub.size} px)", cf_rate, 1.0, 0.0, 1.0))
    prod_lsq = n / res["lsq"][0]
    prod_def = n / res[DEFAULTS.fit.method][0]
    for peer in peers:
        if peer == "astropy":
            continue
        # ndoptimize is batched but its M2 fits are slow: a larger subset than curve_fit's
        idx = (
            sub[:sub_slow]
            if peer == "xarray"
            else np.sort(rng.choice(n, size=min(4 * sub_n, n), replace=False))
        )
        idx = np.union1d(idx, sub) if peer == "ndoptimize" else idx
        r = best_of(peer_same_work, PEERS[peer], m1, m2, f, y[idx], dof, NSTART)
        rate = idx.size / r[0]
        sel = np.isin(sub, idx)
        cmp_idx = np.searchsorted(idx, sub[sel])
        rows.append(
            (
                f"{peer}, same work ({idx.size} px)",
                rate,
                rate / cf_rate,
                med_dindex(r[1][cmp_idx], cf[1][sel]),
                share_no_worse(m2, f, y[sub[sel]], r[2][cmp_idx], cf[2][sel]),
            )
        )
        if peer == "ndoptimize":
            ok = prod_lsq / rate >= TARGETS["x_ndoptimize"]
            lines.append(
                f"{nbins} bins, one core: specfit lsq at its defaults ({label}) {prod_lsq:,.0f} "
                f"px/s = {prod_lsq / rate:.1f}x ndoptimize {_version('ndoptimize')} doing the same "
                f"least-squares fits ({rate:,.0f} px/s) [target >= 4x: "
                f"{'met' if ok else 'NOT met'}]"
            )
        else:
            lines.append(
                f"{nbins} bins, one core: specfit at its defaults {prod_def:,.0f} px/s = "
                f"{prod_def / rate:.1f}x {peer} doing the same work ({rate:,.1f} px/s)"
            )
    rows.append(("", None, None, None, None))
    lines.append(
        f"{nbins} bins: first call (numba cache load + LRT reference for one dof, both "
        f"methods): {t_first:.1f} s wall, once per process"
    )
    # ---------------------------------------------------------------- bare kernel, M1
    nb = args.size_bare * args.size_bare
    yb = simulate(f, nb, dof, 0.0, args.seed + 2)
    for method in ("whittle", "lsq"):
        specfit_bare(f, yb[:64], dof, method, m1)
    subb = np.sort(rng.choice(nb, size=min(4 * sub_n, nb), replace=False))
    starts = m1.guess(f, yb[subb], dof)[:, None, :]

    def peer_bare(fitter, yy, ss):
        t0 = time.process_time()
        p = fitter(m1, f, yy, ss)[:, 0, :]
        return time.process_time() - t0, p

    cfb = best_of(peer_bare, fit_curve_fit, yb[subb], starts)
    cfb_rate = subb.size / cfb[0]
    bare = {}
    for method in ("whittle", "lsq"):
        dt, p, status = best_of(specfit_bare, f, yb, dof, method, m1)
        rate = nb / dt
        bare[method] = rate
        rows.append(
            (
                f"specfit bare M1 {method}, 1 start ({nb} px, {np.mean(status == 0):.0%} status 0)",
                rate,
                rate / cfb_rate,
                med_dindex(p[subb], cfb[1]),
                share_no_worse(m1, f, yb[subb], p[subb], cfb[1]) if method == "lsq" else np.nan,
            )
        )
    rows.append((f"curve_fit loop M1, 1 start ({subb.size} px)", cfb_rate, 1.0, 0.0, 1.0))
    target = TARGETS["bare_m1_fits_s_300"]
    note = f" [target >= 40,000 at 300 bins: {'met' if bare['whittle'] >= target else 'NOT met'}]"
    lines.append(
        f"{nbins} bins, one core: bare kernel M1 (fit_block, one start) {bare['whittle']:,.0f} "
        f"fits/s whittle, {bare['lsq']:,.0f} lsq = {bare['whittle'] / cfb_rate:.1f}x / "
        f"{bare['lsq'] / cfb_rate:.1f}x curve_fit ({cfb_rate:,.0f} fits/s)"
        + (note if nbins == 300 else "")
    )
    for peer in peers:
        if peer == "astropy":
            yy, ss = yb[subb[: 2 * sub_slow]], starts[: 2 * sub_slow]
            r = best_of(peer_bare_astropy, f, yy, ss[:, 0, :])
        elif peer == "xarray":
            yy, ss = yb[subb[: 2 * sub_slow]], starts[: 2 * sub_slow]
            r = best_of(peer_bare, fit_xarray, yy, ss)
        else:
            yy = yb
            ss = m1.guess(f, yb, dof)[:, None, :]
            r = best_of(peer_bare, fit_ndoptimize, yy, ss)
        rate = yy.shape[0] / r[0]
        k = min(yy.shape[0], subb.size)
        ref_rows = np.arange(k) if peer != "ndoptimize" else subb
        ref = cfb[1][:k] if peer != "ndoptimize" else cfb[1]
        yref = yb[subb[:k]] if peer != "ndoptimize" else yb[subb]
        rows.append(
            (
                f"{peer} M1, 1 start ({yy.shape[0]} px)",
                rate,
                rate / cfb_rate,
                med_dindex(r[1][ref_rows], ref),
                share_no_worse(m1, f, yref, r[1][ref_rows], ref),
            )
        )
        if peer == "ndoptimize":
            ok = bare["lsq"] / rate >= TARGETS["x_ndoptimize"]
            lines.append(
                f"{nbins} bins, one core: bare kernel M1 lsq {bare['lsq']:,.0f} fits/s = "
                f"{bare['lsq'] / rate:.1f}x ndoptimize ({rate:,.0f} fits/s, same objective, "
                f"starts, bounds, max_iter, tol) [target >= 4x: {'met' if ok else 'NOT met'}]"
            )
        else:
            lines.append(
                f"{nbins} bins, one core: bare kernel M1 whittle {bare['whittle']:,.0f} fits/s = "
                f"{bare['whittle'] / rate:.1f}x {peer} ({rate:,.0f} fits/s)"
            )
    return rows, lines


def peer_bare_astropy(f, y, starts):
    from astropy.modeling import custom_model
    from astropy.modeling import fitting as afit

    def m1_model(x, amplitude=1.0, index=2.0, tail=1.0):
        return m1_func(x, amplitude, index, tail)

    def m1_deriv(x, amplitude=1.0, index=2.0, tail=1.0):
        return list(m1_jac(x, amplitude, index, tail).T)

    names = ("amplitude", "index", "tail")
    model = custom_model(m1_model, fit_deriv=m1_deriv)(
        **{n: starts[:, j] for j, n in enumerate(names)}
    )
    t0 = time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitted = afit.parallel_fit_dask(
            model=model,
            fitter=afit.LMLSQFitter(calc_uncertainties=False),
            data=y,
            world=(np.log(f),),
            fitting_axes=1,
            scheduler="synchronous",
        )
    p = np.column_stack([np.asarray(getattr(fitted, n).value, dtype=float) for n in names])
    return time.process_time() - t0, p


def _version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "?"


def main(argv: list[str] | None = None) -> list[str]:
    global REPEATS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bins", type=int, nargs="+", default=[300, 1800])
    ap.add_argument("--dof", type=float, default=2.0, help="2: one segment, box 1 (the default)")
    ap.add_argument(
        "--size",
        type=int,
        default=32,
        help="product block: size x size px (the pipeline's tile at 256² x 3600 frames)",
    )
    ap.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    ap.add_argument("--size-bare", type=int, default=128, help="bare-kernel block: size^2 px")
    ap.add_argument("--subset", type=int, default=100, help="px for curve_fit at 300 bins")
    ap.add_argument("--subset-slow", type=int, default=40, help="px for xarray at 300 bins")
    ap.add_argument("--peers", default="xarray,ndoptimize", help="also: astropy (bare rows)")
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--quick", action="store_true", help="tiny check: 120 bins, 8x8 px")
    args = ap.parse_args(argv)
    REPEATS = args.repeats
    if args.quick:
        args.bins, args.size, args.size_bare, args.subset, args.subset_slow = [120], 8, 8, 8, 4
        REPEATS = 1
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # _ndopt_models
    peers = [p for p in args.peers.split(",") if p]
    if "ndoptimize" in peers:
        try:
            import ndoptimize  # noqa: F401
        except ImportError:
            print("ndoptimize is not installed (pip install ndoptimize): its rows are skipped")
            peers.remove("ndoptimize")
    print(
        f"one core (NUMBA_NUM_THREADS={os.environ['NUMBA_NUM_THREADS']}), CPU time best of "
        f"{REPEATS}, dof {args.dof:g}, solver options {PRODUCT}"
    )
    all_lines = []
    for nbins in args.bins:
        rows, lines = run_grid(nbins, args, peers)
        print(f"\n{nbins} bins ({nbins * 2 + 2} frames at {CADENCE:g} s)")
        print(f"{'method':60s} {'px or fits/s':>12s} {'x curve_fit':>12s} {'med|d index|':>13s} "
              f"{'M2/M1 SSR <= cf':>16s}")  # fmt: skip
        for label, rate, ratio, di, share in rows:
            if rate is None:
                print()
                continue
            print(f"{label:60s} {rate:12,.1f} {ratio:12.2f} {di:13.2e} {share:16.1%}")
        all_lines += lines
    print("\nREADME lines:")
    for s in all_lines:
        print("- " + s)
    return all_lines


if __name__ == "__main__":
    main()
