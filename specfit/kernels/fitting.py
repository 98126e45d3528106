"""Fit spectral models to a block of spectra: the numeric core of ``specfit.fit``.

:func:`fit_block` takes ``(npix, nf)`` power and returns one ``(npix,)`` array per result
variable, with exactly the names and dtypes of :func:`output_dtypes`, so that the dask
wrapper can declare its outputs before computing anything.

Per model alias ``m`` and parameter ``p``: ``m_p``, ``m_p_err`` (1-sigma from the Fisher
matrix), ``m_status``, ``m_loglike``, ``m_chi2red``, ``m_aic``, ``m_bic``, ``m_nfev``,
``m_gof_pvalue`` (maps derived from the parameters, declared by each model as
:attr:`specfit.models.Model.derived`, e.g. a bump's period, are added after them). Across models:
``best_model`` and, per nested pair (a model whose ``base`` is another fitted model, e.g. M1
inside M2), the LRT statistic, its p-value and the F-test p-value: ``lrt_stat``,
``lrt_pvalue`` and ``ftest_pvalue`` when there is one pair, ``<big>_lrt_stat``,
``<big>_lrt_pvalue`` and ``<big>_ftest_pvalue`` (prefixed by the bigger model's alias) when
there are several (:func:`pair_variables`).

Models are :class:`specfit.models.Model` objects (names are looked up in its registry);
each is fitted by the block solver generated from its components
(:mod:`specfit.kernels.compile`).
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import math
import os
import sys
import threading
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numba
import numpy as np

from . import guesses, lm, original
from . import stats as st

if TYPE_CHECKING:  # the Model type lives in specfit.models; kernels only use its attributes
    from specfit.models import Model

__all__ = [
    "FIT_STATISTICS",
    "STATUS_CODES",
    "fit_block",
    "output_dtypes",
    "nested_pair",
    "nested_pairs",
    "pair_variables",
    "lrt_reference",
    "choose_model",
]

STATUS_CODES: dict[int, str] = {
    0: "converged",
    1: "max_iter: not converged within max_iter steps; values are the last iterate",
    2: "nonfinite_input: NaN or inf in the spectrum (or sigma); not fitted",
    3: "constant_input: the spectrum is constant (e.g. all zero); not fitted",
    4: "invalid_input: negative power (whittle, lsq_log), zero power (lsq_log), sigma <= 0 (lsq), a dof that is not a positive number, or (float64 spectra) a mean power beyond what float32 maps hold (above 3.4e35 or below 1.2e-36); not fitted",
    5: "too_few_bins: fewer frequency bins than parameters + 1; not fitted",
    6: "singular_curvature: converged but the Fisher matrix is singular; errors are NaN",
    7: "at_bound: converged with a parameter on a bound (that parameter's error is NaN)",
    8: "stalled: no step lowered the objective before convergence; values are the best found",
    9: "fit_failed: the model was not finite and positive at any start, or a kernel could "
    "not take the spectrum (e.g. power exactly zero over its lowest and highest bins); not fitted",
    10: "optimizer_raised: fit.optimizer=original only: a curve_fit call of the original "
    "specFit's procedure raised (evaluation limit, non-finite residuals); not fitted",
}
_STATUS_NAMES = {k: v.split(":")[0] for k, v in STATUS_CODES.items()}
METHODS = ("whittle", "lsq_log", "lsq")
BEST_RULES = ("lrt", "aic", "bic", "ftest", "chi2", "chi2sum")
# lrt / ftest choose inside each family of nested models; between families (models that do
# not nest, e.g. a knee and a power law) the lowest of this criterion wins
NONNESTED_RULES = ("bic", "aic")
# lsq weights: the given sigma (absolute, e.g. the box spread) or the original specFit's
# validation weights, sigma = delta log10 f between neighbouring bins (relative: the noise
# level is estimated from the residuals, as scipy's curve_fit does by default)
WEIGHTS = ("sigma", "dlogf")
_NOT_FITTED = (2, 3, 4, 5, 9, original.RAISED)
# the mean power a fitted pixel may have (status 4 beyond): float32's range with 1e3 / 1e2 of
# room for amplitudes and errors above the data and for a tail below its mean
_POWER_MAX = float(np.finfo(np.float32).max) * 1e-3
_POWER_MIN = float(np.finfo(np.float32).tiny) * 1e2

# LRT calibration: simulated pure-small-model spectra per (grid, dof, models, settings)
_LRT_NSIM = 2000
_LRT_SEED = 20240603
# Cached: one reference costs _LRT_NSIM simulated fits, and every tile of a run asks for it.
_LRT_CACHE: dict[str, st.NullReference] = {}
_LRT_LOCK = threading.RLock()


def _resolve(models: Mapping[str, Model | str]) -> dict[str, Model]:
    if not models:
        raise ValueError("fit.models: needs at least one model, e.g. {m1: powerlaw_tail}")
    return {alias: _get_model(m) for alias, m in models.items()}


# Model names are looked up in the registry of specfit.models, which installs its lookup here
# when it is imported (``import specfit`` does): kernels import nothing of specfit above them.
_MODEL_LOOKUP: list[Callable[[str], Any]] = []


def set_model_lookup(lookup: Callable[[str], Any]) -> None:
    """Install the function that turns a registered model name into a Model."""
    _MODEL_LOOKUP[:] = [lookup]


# specfit's version, a part of every LRT reference's key, installed with the lookup (above).
_VERSION: list[str] = ["unknown"]


def set_version(version: str) -> None:
    """Install specfit's version (part of the key of every LRT reference)."""
    _VERSION[0] = str(version)


def _get_model(m):
    """A Model object unchanged; a name looked up in the registry of specfit.models."""
    if not isinstance(m, str):
        return m
    if not _MODEL_LOOKUP:
        raise ValueError(f"model {m!r} given by name, but no model registry is loaded")
    return _MODEL_LOOKUP[0](m)


def _base_of(model):
    """The nested smaller model of ``model`` (declared with it, else by registry name)."""
    return model.base_model if model.base_model is not None else _get_model(model.base)


def nested_pairs(models: Mapping[str, Model]) -> list[tuple[str, str]]:
    """Every (smaller, bigger) alias pair where the bigger model nests the smaller, in the
    order of the bigger aliases (one pair per bigger alias: its base's first alias)."""
    out = []
    for b in models:
        for a in models:
            if a != b and models[b].base == models[a].name:
                small, big = models[a].param_names, models[b].param_names
                if big[: len(small)] != small or len(big) <= len(small):
                    # the tests compare the two fits as nested: a model that only says so
                    # would get LRT p-values against a model it does not contain
                    raise ValueError(
                        f"model {models[b].name!r} declares {models[a].name!r} as its base but "
                        f"does not extend its parameters {list(small)} (it has {list(big)}): "
                        "build it as the base model + a component"
                    )
                out.append((a, b))
                break
    return out


def nested_pair(models: dict[str, Model]) -> tuple[str, str] | None:
    """The first (smaller, bigger) alias pair where the bigger model nests the smaller."""
    pairs = nested_pairs(models)
    return pairs[0] if pairs else None


def pair_variables(models: Mapping[str, Model]) -> dict[tuple[str, str], dict[str, str]]:
    """Names of each nested pair's result maps: ``{(a, b): {"lrt_stat": name, "lrt_pvalue":
    name, "ftest_pvalue": name}}``.

    One pair keeps the plain names (``lrt_pvalue``); with several, each is prefixed by the
    bigger model's alias (``m2_lrt_pvalue``), which is unique per pair.
    """
    pairs = nested_pairs(models)
    keys = ("lrt_stat", "lrt_pvalue", "ftest_pvalue")
    if len(pairs) == 1:
        return {pairs[0]: {k: k for k in keys}}
    return {(a, b): {k: f"{b}_{k}" for k in keys} for a, b in pairs}


#: Every model's own statistics maps (``<alias>_<name>``), in the order stored: name ->
#: (dtype, units, long name; ``{method}`` is the fit's). The results contract
#: (:func:`specfit.store.fit_variables`) takes their attrs from here too.
FIT_STATISTICS: dict[str, tuple[np.dtype, str, str]] = {
    "status": (np.dtype("int8"), "1", "fit status code"),
    "loglike": (np.dtype("float64"), "1", "log-likelihood ({method})"),
    # each bin's Pearson term uses its marginal dof (the ``dof`` coordinate), not the
    # likelihood's dof / window_vif: ~1 for a model that fits, with or without a window
    "chi2red": (
        np.dtype("float32"), "1", "Pearson chi-square (marginal dof per bin) / (n_bins - n_params)"
    ),
    "aic": (np.dtype("float64"), "1", "AIC"),
    "bic": (np.dtype("float64"), "1", "BIC"),
    "nfev": (np.dtype("int32"), "1", "model evaluations"),
    "gof_pvalue": (
        np.dtype("float32"), "1", "goodness-of-fit p-value (Pearson; for correlated bins)"
    ),
}  # fmt: skip


def output_dtypes(
    models: Mapping[str, Model | str],
    method: str,
    best_model: str,
    intervals: Sequence[str],
) -> dict[str, np.dtype]:
    """Names and dtypes of everything :func:`fit_block` returns, in the same order.

    Their attrs (units, long names) are the results contract's, declared in
    :mod:`specfit.store`. ``intervals``: parameter names whose profile-likelihood interval
    is returned (``<alias>_<name>_lower``, ``_upper``) by every model that has them.
    """
    models = _resolve(models)
    _check_method(method, best_model)
    check_intervals(models, intervals)
    f32 = np.dtype("float32")
    out: dict[str, np.dtype] = {}
    owner: dict[str, tuple[str, str]] = {}

    def put(alias: str, end: str, dtype: np.dtype | None, what: str) -> None:
        # Two aliases can name one map (a's bump_amplitude, a_bump's amplitude), and so can
        # two outputs of one model (a parameter called bic, a derived output named like a
        # parameter): one's values would overwrite the other's without a word. dtype None: a
        # name the store derives (a model's derived outputs), not returned here but not to
        # be shared either.
        name = f"{alias}_{end}"
        other = owner.setdefault(name, (alias, what))
        if other[0] != alias:
            raise ValueError(
                f"fit.models: aliases {other[0]!r} and {alias!r} would both write the map "
                f"{name!r} (one model's values lost): rename one alias"
            )
        if other[1] != what:
            raise ValueError(
                f"model {models[alias].name!r}: its {other[1]} and its {what} would both be "
                f"stored as {name!r} (one's values lost): rename the parameter or the derived "
                "output"
            )
        if dtype is not None:
            out[name] = dtype

    for alias, m in models.items():
        for pname in m.param_names:
            put(alias, pname, f32, f"parameter {pname!r}")
            put(alias, f"{pname}_err", f32, f"error of {pname!r}")
            if pname in intervals:
                put(alias, f"{pname}_lower", f32, f"interval of {pname!r}")
                put(alias, f"{pname}_upper", f32, f"interval of {pname!r}")
        for stat, (dtype, _, _) in FIT_STATISTICS.items():
            put(alias, stat, dtype, f"fit statistic {stat!r}")
        for d in m.derived:
            put(alias, d.name, None, f"derived output {d.name!r}")
    out["best_model"] = np.dtype("int8")
    for names in pair_variables(models).values():
        for name in names.values():
            if name in out:  # a parameter called e.g. lrt_stat would be overwritten
                raise ValueError(
                    f"fit.models: result name {name!r} is both a model output and a "
                    "nested-pair test; rename the parameter or the alias"
                )
            out[name] = f32
    return out


def check_intervals(
    models: Mapping[str, Model], intervals: Sequence[str], optimizer: str = "specfit"
) -> None:
    """ValueError naming ``fit.intervals`` unless every name is a parameter of some model."""
    if intervals and optimizer == "original":
        raise ValueError("fit.intervals needs fit.optimizer=specfit (the original has none)")
    if isinstance(intervals, str) or not isinstance(intervals, Sequence):
        raise ValueError(f"fit.intervals must be a list of parameter names; got {intervals!r}")
    have = {n for m in models.values() for n in m.param_names}
    unknown = [n for n in intervals if n not in have]
    if unknown:
        listed = "; ".join(f"{a}: {', '.join(m.param_names)}" for a, m in models.items())
        raise ValueError(
            f"fit.intervals: {', '.join(map(repr, unknown))} is not a parameter of any of the "
            f"models ({listed})"
        )


def dlogf_sigma(f: np.ndarray) -> np.ndarray:
    """The original specFit's fit weights: sigma = delta log10 f between neighbouring bins.

    The last bin repeats the one before, so every part of the spectrum weighs by its extent
    in log frequency ("equal weight to all parts of the curve").
    """
    d = np.diff(np.log10(np.asarray(f, dtype=np.float64)))
    return np.append(d, d[-1])


def _check_method(method: str, best_model: str) -> None:
    if method not in METHODS:
        raise ValueError(f"fit.method must be one of {', '.join(METHODS)}; got {method!r}")
    if best_model not in BEST_RULES:
        raise ValueError(
            f"fit.best_model must be one of {', '.join(BEST_RULES)}; got {best_model!r}"
        )


@numba.njit(cache=True, nogil=True)
def _scan_rows(power, mode, pn):
    """One pass per row: input status, scale (mean |power|), sum ln(power > 0), and the
    normalised spectrum into ``pn`` (1.0 for rows that will not be fitted).

    mode: 0 lsq, 1 lsq_log, 2 whittle (which values are invalid depends on it).
    """
    npix, nf = power.shape
    status = np.zeros(npix, dtype=np.int8)
    scale = np.ones(npix)
    sum_ln_y = np.zeros(npix)
    for r in range(npix):
        y = power[r]
        finite = True
        invalid = False
        first = y[0]
        constant = True
        acc = 0.0
        sl = 0.0
        prod = 1.0
        cnt = 0
        for i in range(nf):
            v = y[i]
            if not math.isfinite(v):
                finite = False
                break
            if v != first:
                constant = False
            if (mode == 2 and v < 0.0) or (mode == 1 and v <= 0.0):
                invalid = True
            acc += abs(v)
            # sum of logs through products of 8 values (8x fewer log calls)
            if 1e-30 < v < 1e30:
                prod *= v
                cnt += 1
                if cnt == 8:
                    sl += math.log(prod)
                    prod = 1.0
                    cnt = 0
            elif v > 0.0:
                sl += math.log(v)
        if cnt > 0:
            sl += math.log(prod)
        if not finite:
            status[r] = 2
        elif constant:
            status[r] = 3
        elif invalid:
            status[r] = 4
        if status[r] == 0 and acc > 0.0:
            s = acc / nf
            scale[r] = s
            sum_ln_y[r] = sl
            for i in range(nf):
                pn[r, i] = y[i] / s
        else:
            for i in range(nf):
                pn[r, i] = 1.0
    return status, scale, sum_ln_y


def _starts(
    model: Model,
    f: np.ndarray,
    power: np.ndarray,
    dof: np.ndarray,
    base: np.ndarray | None,
    nstart: int,
) -> np.ndarray:
    """(npix, nstart, npar) starting points in natural units."""
    g = model.guess_func
    try:
        takes_nstart = "nstart" in inspect.signature(g).parameters
    except (TypeError, ValueError):
        takes_nstart = False
    if takes_nstart:
        out = np.asarray(g(f, power, dof, base, nstart=nstart), dtype=np.float64)
    else:
        out = np.asarray(g(f, power, dof, base), dtype=np.float64)
    npix = power.shape[0]
    if not (out.ndim in (2, 3) and out.shape[0] == npix and out.shape[-1] == model.npar):
        raise ValueError(
            f"model {model.name}: its guess function {getattr(g, '__qualname__', g)} returned "
            f"shape {out.shape}; it must return ({npix}, {model.npar}) starts (one row per "
            f"spectrum, one column per parameter: {', '.join(model.param_names)}) or "
            f"({npix}, candidates, {model.npar})"
        )
    out = _usable_starts(model, out, power)
    if out.ndim == 3:  # candidate starts: the solver ranks them and runs the best nstart
        return out
    out = out[:, None, :]
    if nstart > 1:
        # deterministic spread around the data-driven start: alternate +/- 25 % steps
        extra = []
        for s in range(1, nstart):
            sign = np.where(np.arange(model.npar) % 2 == s % 2, 1.0, -1.0)
            extra.append(out[:, 0, :] * (1.0 + 0.25 * ((s + 1) // 2) * sign))
        out = np.concatenate([out, np.stack(extra, axis=1)], axis=1)
    return out


def _usable_starts(model: Model, starts: np.ndarray, power: np.ndarray) -> np.ndarray:
    """``starts`` with each value the solver cannot start from (not finite, or not above 0 for
    a parameter solved as ln p) replaced by the parameter's default (those in the spectra's
    unit times the pixel's mean power, as a model without a guess starts), inside its bounds.
    A user's guess of 0 for an amplitude (``np.maximum(estimate, 0)`` on a noisy pixel) gave
    that pixel a fit that stopped where it began, reported as converged."""
    logp = np.array([n in model.log_params for n in model.param_names])
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(starts) | (logp & ~(starts > 0))
    if not bad.any():
        return starts
    fallback = np.repeat(
        np.array([q.default for q in model.parameters], float)[None, :], power.shape[0], axis=0
    )
    with np.errstate(invalid="ignore"):
        fallback[:, model.power_params] *= np.nanmean(power, axis=1, keepdims=True)
    lo, hi = (np.array(b, float) for b in zip(*model.bounds, strict=True))
    fallback = np.clip(fallback, lo, hi)
    if starts.ndim == 3:
        fallback = fallback[:, None, :]
    return np.where(bad, fallback, starts)


def _solver_bounds(model: Model, f: np.ndarray, scale: np.ndarray):
    """(LO, HI, logp): the model's bounds per pixel (npix, npar) in the solver's normalised
    units (power-like parameters divided by the pixel's ``scale``) and which parameters the
    solver takes as ln p."""
    npix = scale.shape[0]
    lo, hi = model.bounds_for(f)
    LO = np.broadcast_to(lo, (npix, model.npar)).copy()
    HI = np.broadcast_to(hi, (npix, model.npar)).copy()
    inv = np.where(scale > 0, 1.0 / scale, 1.0)
    pw = model.power_params
    LO[:, pw] *= inv[:, None]
    HI[:, pw] *= inv[:, None]
    return LO, HI, np.array([n in model.log_params for n in model.param_names])


def _fit_one(
    model: Model,
    f: np.ndarray,
    power: np.ndarray,
    scale: np.ndarray,
    weights: np.ndarray | None,
    y: np.ndarray,
    c: np.ndarray,
    active: np.ndarray,
    starts: np.ndarray,
    method: str,
    max_iter: int,
    tol: float,
    nrun: int | None = None,
    search: bool = True,
) -> dict:
    """Fit one model on the active pixels; returns natural-unit params/errors and summaries.

    Coarse to fine: the candidate starts are iterated on ln-f-grouped bins
    (:func:`specfit.kernels.guesses.coarse_groups`); the best :data:`_POLISH_KEEP` per pixel
    are ranked on the full spectrum and the best :data:`_POLISH_RUN` of them polished there, so most evaluations
    cost the number of groups, not of bins. With
    ``search`` and position-like parameters declared (``Parameter.grid``), the best points of
    a global search over them (:func:`_search`) join the candidate starts.
    """
    npix = power.shape[0]
    pw = model.power_params
    LO, HI, logp = _solver_bounds(model, f, scale)
    S = starts.copy()
    S[:, :, pw] *= np.where(scale > 0, 1.0 / scale, 1.0)[:, None, None]
    # a start must be finite; a non-finite guess for a pixel falls back to the bounds' clip
    S = np.where(np.isfinite(S), S, 0.0)
    kernel = model.compiled().solve_block
    nrun = S.shape[1] if nrun is None else min(max(1, nrun), S.shape[1])
    groups = guesses.coarse_groups(f)
    coarse = _grouped(model, f, y, weights, groups, method) if groups is not None else None
    grid = model.search_grid(f) if search else []
    nfev = np.zeros(npix, dtype=np.int64)
    # the data's own first start: for a nested model the smaller model's optimum (plus a seed)
    first = S[:, 0, :].copy()
    if nrun < S.shape[1]:  # candidate starts: the best nrun by their objective
        rx, ry, rw = coarse if coarse is not None else (f, y, weights)
        S = _rank_starts(
            kernel, model.abscissa(rx), ry, rw, S, LO, HI, method, c, active, logp, nrun
        )
    if grid:
        data = coarse if coarse is not None else (f, y, weights)
        top = _search(model, data, first, method, grid, LO, HI, logp)
        if top is None:  # the grid's parameters are not an amplitude's shape: pinned profile
            top, nfev_grid = _profile(
                model, kernel, data, c, active, first, LO, HI, method, logp, grid
            )
            nfev += nfev_grid
        # the data-driven starts ranked best first, then the search's candidates
        S = np.concatenate([S[:, :nrun], top], axis=1)
        nrun = S.shape[1]
    if coarse is not None:
        # every candidate is iterated on the grouped bins; the best few go to the polish
        fc, yc, wc = coarse
        xc = model.abscissa(fc)

        def run_each(starts, steps):
            """Each start alone on the grouped bins: (objectives, end points), inf / the start
            where the solver ended non-finite."""
            Fs = np.full(starts.shape[:2], np.inf)
            Ps = np.empty(starts.shape)
            for k in range(starts.shape[1]):
                rc = lm.solve(
                    kernel, xc, yc, starts[:, k : k + 1], LO, HI, method, c, active, wc,
                    steps, max(tol, _COARSE_TOL), 1, logp, secant=True,
                )  # fmt: skip
                ok = np.isfinite(rc["F"]) & np.isfinite(rc["params"]).all(axis=1)
                Fs[:, k] = np.where(ok, rc["F"], np.inf)
                Ps[:, k] = np.where(ok[:, None], rc["params"], starts[:, k])
                nfev[:] += rc["nfev"]
            return Fs, Ps

        if _COARSE_PRUNE is not None and nrun > _COARSE_PRUNE_KEEP:
            # a few steps for every candidate, then only the best go on (_COARSE_PRUNE)
            F0, P0 = run_each(S[:, :nrun], _COARSE_PRUNE)
            order = np.argsort(F0, axis=1, kind="stable")[:, :_COARSE_PRUNE_KEEP]
            S = np.take_along_axis(P0, order[:, :, None], axis=1)
            nrun = _COARSE_PRUNE_KEEP
        coarse_iter = max_iter if _COARSE_ITER is None else min(max_iter, _COARSE_ITER)
        Fs, Ps = run_each(S[:, :nrun], coarse_iter)
        keep = min(_POLISH_KEEP, nrun)
        order = np.argsort(Fs, axis=1, kind="stable")[:, :keep]
        S = np.take_along_axis(Ps, order[:, :, None], axis=1)
        # the solver ranks them by their full-resolution objective and polishes the best
        nrun = min(_POLISH_RUN, keep)
    res = lm.solve(
        kernel, model.abscissa(f), y, S, LO, HI, method, c, active, weights,
        max_iter, tol, nrun, logp, secant=True, same=_POLISH_SAME,
    )  # fmt: skip
    res["nfev"] = (res["nfev"] + nfev).astype(np.int32)
    P, E = res["params"], res["errors"]
    P[:, pw] *= scale[:, None]
    E[:, pw] *= scale[:, None]
    return {
        "params": P,
        "errors": E,
        "F": res["F"],
        "s2": res["s2"],
        "c_eff": res["c_eff"],
        "status": res["status"],
        "nfev": res["nfev"],
    }


_COARSE_TOL = 1e-2  # the coarse stage's tolerance: candidates stop when the remaining step
# is below 0.1 standard errors (their objective is then within ~0.005 of their optimum's, far
# below the gaps that rank them; the polish at full resolution converges to ``tol``). 1e-3
# cost 20 % more at 300 bins and missed the reference search's optimum more often (the
# samples of tests/test_global_search.py at 300 bins, 1,200 px, and the simulated ones at
# 1800 bins, 400 px: 4 misses by > 0.1, 2 with 1e-2); 5e-2 missed more (7). 1e-6 cost more full-resolution steps on M2's many candidates than it
# saved on M1. The coarse stage steps with the secant correction too (lm.solve's ``secant``):
# 18 % fewer evaluations of M2's candidates at 1800 bins, no more misses.
_COARSE_ITER = None  # a cap on the coarse stage's solver steps per candidate (None: max_iter).
# Capping is not taken: unweighted lsq's optimum on simulated dof-2 spectra is often a narrow
# bump on the lowest bins that the coarse stage reaches only after 100-200 steps; a cap of 80
# left 17 and 24 of 800 px more than 0.1 worse (benchmarks/README.md: engine_constants.py).
_COARSE_PRUNE = None  # solver steps every coarse candidate takes before only the
_COARSE_PRUNE_KEEP = 4  # best this many (on the grouped objective) go on; None: all go on.
# Not taken: after 2-4 steps the best candidates are not yet the ones that end best; keeping
# 4-7 of 11 was 1.3-1.6x faster but left 105-223 of 10,600 pixels more than 0.1 worse
# (benchmarks/README.md: engine_constants.py).
_POLISH_RUN = 2  # of them polished to convergence, the second only where it is a different
_POLISH_SAME = 1.0  # basin: its start not within this many standard errors of the first's
# optimum in every parameter (lm.solve's ``same``). On simulated spectra at 1800 bins (dof 2
# and 4, 256 px each) 55-81 % of M2's second polishes were the first's basin (M1 94-100 %); of
# those the second gained > 1e-3 in log-likelihood on 1 pixel (0.021), never > 0.1
# (benchmarks/README.md).
_POLISH_KEEP = 8  # best coarse results per pixel ranked on the full spectrum (one
# evaluation each; the grouped bins can misorder narrow bumps near the top of the band)
_PROFILE_ITER = 12  # solver steps per pinned profile point (only the others move)


def _rank_starts(kernel, x, y, w, S, LO, HI, method, c, active, logp, nrun):
    """The ``nrun`` starts with the lowest objective (one evaluation each), best first."""
    npix, ns, npar = S.shape
    F = np.full((npix, ns), np.inf)
    for k in range(ns):
        r = lm.solve(kernel, x, y, S[:, k : k + 1], LO, HI, method, c, active, w, 0, 1.0, 1, logp)
        F[:, k] = np.where(np.isfinite(r["F"]), r["F"], np.inf)
    order = np.argsort(F, axis=1, kind="stable")[:, :nrun]
    return np.take_along_axis(S, order[:, :, None], axis=1)


def _grouped(model, f, y, weights, groups, method):
    """(group frequencies, group data, group weights) for the coarse stages.

    Whittle and lsq_log: the group mean with the group's count as weight; lsq: the weighted
    mean with the summed weights. Each equals the full objective up to a constant where the
    model is flat across a group.
    """
    start, count = groups
    if method == "lsq":
        fc = np.add.reduceat(f, start) / count
        w = np.ones_like(y) if weights is None else weights
        wc = np.add.reduceat(w, start, axis=1)
        yc = np.ascontiguousarray(np.add.reduceat(w * y, start, axis=1) / wc)
    else:
        fc, yc = guesses.group_means(f, y, groups)
        wc = np.broadcast_to(count.astype(np.float64), yc.shape)
    return fc, yc, np.ascontiguousarray(wc)


def _profile(model, kernel, data, c, active, start, LO, HI, method, logp, grid):
    """Profile the objective over the declared grid of position-like parameters: the
    generic global search for components that are not an amplitude times a shape.

    At each grid point the position-like parameters are pinned (bounds low = high) and the
    others are solved by a short run of the same solver from ``start``. Returns the best
    point per pixel as a start (npix, 1, npar), normalised units, and the evaluations spent.
    """
    idx = [i for i, _ in grid]
    mesh = np.stack(np.meshgrid(*[v for _, v in grid], indexing="ij"), axis=-1)
    mesh = mesh.reshape(-1, len(idx))
    npix, npar = start.shape
    nfev = np.zeros(npix, dtype=np.int64)
    ff, yy, ww = data
    xx = model.abscissa(ff)
    Fs = np.full((npix, len(mesh)), np.inf)
    Ps = np.empty((npix, len(mesh), npar))
    for g, point in enumerate(mesh):
        lo, hi, s = LO.copy(), HI.copy(), start.copy()
        lo[:, idx] = point
        hi[:, idx] = point
        s[:, idx] = point
        r = lm.solve(
            kernel, xx, yy, s[:, None, :], lo, hi, method, c, active, ww,
            _PROFILE_ITER, 1e-3, 1, logp,
        )  # fmt: skip
        Fs[:, g] = np.where(np.isfinite(r["F"]), r["F"], np.inf)
        Ps[:, g] = np.where(np.isfinite(r["params"]), r["params"], s)
        nfev += r["nfev"]
    order = np.argsort(Fs, axis=1, kind="stable")[:, :1]
    return np.take_along_axis(Ps, order[:, :, None], axis=1), nfev


_SEARCH_FINE = 8  # the search's linear (centre-like) grids are this many times finer
_SEARCH_KEEP = 8  # distinct best search points per pixel handed to the solver as starts
_SEARCH_SEP = 0.5  # distinct: this many declared linear grid steps apart (half: narrow
# bumps a third of a step from the best point are separate optima on real spectra)


def _search_component(model, grid):
    """(first parameter index, amplitude index) of the component that holds every searched
    parameter and is its one amplitude (a parameter in the spectra's unit) times a shape of
    them; None otherwise."""
    idx = {i for i, _ in grid}
    j0 = 0
    for cpt in model.components:
        n = len(cpt.params)
        own = set(range(j0, j0 + n))
        if idx <= own:
            amp = [j for j in own - idx if model.power_params[j]]
            if len(amp) == 1 and own == idx | {amp[0]} and not cpt.params[amp[0] - j0].log_scaled:
                return cpt, j0, amp[0]
            return None
        j0 += n
    return None


def _search(model, data, start, method, grid, LO, HI, logp):
    """Global search over the position-like parameters: the best distinct points per pixel.

    The component holding them is an amplitude times a shape (a bump: amplitude x shape of
    centre and width). With every other parameter at ``start`` (the nested model's optimum)
    and that amplitude at 0, each point of a fine grid (the declared linear grids
    :data:`_SEARCH_FINE` times finer) is scored by the objective's decrease of one Newton
    step in the amplitude *and* the other free parameters (the score statistic with the
    nuisance parameters profiled: ``g^2 / (h - k^T H^-1 k)``), computed for all points at
    once per pixel (:func:`_score_points`). The :data:`_SEARCH_KEEP` best points that are
    apart by at least :data:`_SEARCH_SEP` declared grid steps are returned as starts
    (npix, keep, npar), normalised units, with the amplitude and the other parameters at that Newton step.
    None when no such component holds the searched parameters.
    """
    found = _search_component(model, grid)
    if found is None:
        return None
    cpt, j0, amp = found
    idx = [i for i, _ in grid]
    values, sep = [], []
    for _, v in grid:
        if v[0] > 0 or v.size < 2:  # log-spaced (a width): the declared values
            values.append(v)
            sep.append(0.0)
        else:
            values.append(np.linspace(v[0], v[-1], _SEARCH_FINE * (v.size - 1) + 1))
            sep.append(0.999 * _SEARCH_SEP * (v[-1] - v[0]) / (v.size - 1))
    fine = np.stack(np.meshgrid(*values, indexing="ij"), axis=-1).reshape(-1, len(idx))
    ff, yy, ww = data
    x = model.abscissa(ff)
    args = [
        1.0 if j0 + a == amp else fine[:, idx.index(j0 + a)][:, None]
        for a in range(len(cpt.params))
    ]
    B = np.broadcast_to(cpt.shape(x[None, :], *args)[0], (len(fine), x.size))
    BT = np.ascontiguousarray(B.T)
    npix, npar = start.shape
    nuis = np.array([j for j in range(npar) if j != amp and j not in idx], dtype=np.int64)
    s0 = start.copy()
    s0[:, amp] = 0.0
    m0 = model.evaluate(ff, s0)
    J = model.jacobian(ff, s0)[:, :, nuis]
    J[:, :, logp[nuis]] *= s0[:, None, nuis[logp[nuis]]]  # d/d ln p for ln-solved ones
    mode = {"lsq": 0, "lsq_log": 1, "whittle": 2}[method]
    w = np.ones((1, 1)) if ww is None else np.ascontiguousarray(ww, dtype=np.float64)
    free = (s0[:, nuis] > LO[:, nuis]) & (s0[:, nuis] < HI[:, nuis])
    keep = min(_SEARCH_KEEP, len(fine))
    best, alpha, dth = _score_points(
        np.ascontiguousarray(yy, dtype=np.float64),
        w,
        ww is not None,
        mode,
        np.ascontiguousarray(m0),
        np.ascontiguousarray(J),
        np.ascontiguousarray(free),
        BT,
        np.ascontiguousarray(fine[:, [k for k, s in enumerate(sep) if s > 0]]),
        np.array([s for s in sep if s > 0]),
        keep,
    )
    out = np.repeat(s0[:, None, :], keep, axis=1)
    ok = best >= 0
    pts = fine[np.where(ok, best, 0)]  # (npix, keep, ngrid)
    out[:, :, idx] = np.where(ok[:, :, None], pts, out[:, :, idx])
    out[:, :, amp] = np.where(ok, alpha, 0.0)
    step = np.where(ok[:, :, None], dth, 0.0)
    for t, j in enumerate(nuis):
        if logp[j]:
            out[:, :, j] *= np.exp(np.clip(step[:, :, t], -5.0, 5.0))
        else:
            out[:, :, j] += step[:, :, t]
    return np.clip(out, LO[:, None, :], HI[:, None, :])


@numba.njit(cache=True, nogil=True)
def _score_points(y, w, use_w, mode, m0, J, free, BT, lin, sep, keep):
    """Per pixel: score every candidate shape (columns of BT) and pick ``keep`` distinct best.

    Returns the chosen candidate indices (npix, keep; -1 none), the Newton-step amplitude
    and the nuisance parameters' step (npix, keep, nnuis). A pixel only uses its own row.
    """
    npix, nb = y.shape
    nc = BT.shape[1]
    nt = J.shape[2]
    best = np.full((npix, keep), -1, dtype=np.int64)
    alpha = np.zeros((npix, keep))
    dth = np.zeros((npix, keep, nt))
    g = np.empty(nc)
    h = np.empty(nc)
    K = np.empty((nt, nc))
    H = np.empty((nt, nt))
    L = np.zeros((nt, nt))
    gain = np.empty(nc)
    z = np.empty(nt)
    v = np.empty(nt)
    for r in range(npix):
        g[:] = 0.0
        h[:] = 0.0
        K[:, :] = 0.0
        H[:, :] = 0.0
        for i in range(nb):
            mi = m0[r, i]
            wi = w[r, i] if use_w else 1.0
            if mode == 0:
                a = wi
                e = y[r, i] - mi
            elif mi > 0.0:
                a = wi / (mi * mi)
                e = y[r, i] - mi if mode == 2 else mi * (y[r, i] - math.log(mi))
            else:
                continue
            if not (math.isfinite(a) and math.isfinite(e)):
                continue
            ae = a * e
            for t in range(nt):
                v[t] = a * J[r, i, t] if free[r, t] else 0.0
            for t in range(nt):
                for u in range(nt):
                    H[t, u] += v[t] * J[r, i, u]
            for c in range(nc):
                b = BT[i, c]
                g[c] += ae * b
                h[c] += a * b * b
            for t in range(nt):
                vt = v[t]
                if vt != 0.0:
                    for c in range(nc):
                        K[t, c] += vt * BT[i, c]
        # Cholesky of the nuisance block on its free, informative part
        for t in range(nt):
            for u in range(nt):
                L[t, u] = 0.0
        ok = np.zeros(nt, dtype=np.bool_)
        for t in range(nt):
            if not (free[r, t] and H[t, t] > 0.0):
                continue
            s = H[t, t]
            for k in range(t):
                if ok[k]:
                    s -= L[t, k] * L[t, k]
            if s <= 1e-12 * H[t, t]:
                continue
            ok[t] = True
            L[t, t] = math.sqrt(s)
            for u in range(t + 1, nt):
                q = H[u, t]
                for k in range(t):
                    if ok[k]:
                        q -= L[u, k] * L[t, k]
                L[u, t] = q / L[t, t]
        for c in range(nc):
            gain[c] = -1.0
            if not (g[c] > 0.0 and h[c] > 0.0):
                continue
            # z = H^-1 k by forward and back substitution on the free part
            for t in range(nt):
                q = K[t, c] if ok[t] else 0.0
                if ok[t]:
                    for k in range(t):
                        if ok[k]:
                            q -= L[t, k] * v[k]
                    q /= L[t, t]
                v[t] = q
            heff = h[c]
            for t in range(nt):
                heff -= v[t] * v[t]
            if heff > 1e-12 * h[c]:
                gain[c] = g[c] * g[c] / heff
        order = np.argsort(-gain)
        n = 0
        for j in range(nc):
            c = order[j]
            if gain[c] < 0.0 or n == keep:
                break
            distinct = True
            for q in range(n):
                d = best[r, q]
                far = lin.shape[1] == 0
                for q2 in range(lin.shape[1]):
                    if abs(lin[c, q2] - lin[d, q2]) >= sep[q2]:
                        far = True
                if not far:
                    distinct = False
                    break
            if not distinct:
                continue
            best[r, n] = c
            hc = h[c]
            # the Newton step of (amplitude, nuisance): a = g / heff, theta = -H^-1 k a
            for t in range(nt):
                q = K[t, c] if ok[t] else 0.0
                if ok[t]:
                    for k in range(t):
                        if ok[k]:
                            q -= L[t, k] * v[k]
                    q /= L[t, t]
                v[t] = q
            for t in range(nt):
                hc -= v[t] * v[t]
            a_ = g[c] / hc
            alpha[r, n] = a_
            for t in range(nt - 1, -1, -1):
                q = v[t]
                if ok[t]:
                    for k in range(t + 1, nt):
                        if ok[k]:
                            q -= L[k, t] * z[k]
                    z[t] = q / L[t, t]
                else:
                    z[t] = 0.0
            for t in range(nt):
                dth[r, n, t] = -z[t] * a_
            n += 1
    return best, alpha, dth


def _prepare(power, sigma, method, dof, absolute_sigma=True, wide=False):
    """Input status, per-pixel scale, sum ln(power), normalised data, weights and the factor
    c turning the curvature into an inverse covariance (negative: estimated from the fit).
    ``wide``: the caller's spectra were float64, whose level may lie beyond what the float32
    maps hold (status 4 there); float32 spectra are in range by construction."""
    npix, nf = power.shape
    k = dof / 2.0
    pn = np.empty((npix, nf))
    status, scale, sum_ln_y = _scan_rows(power, {"lsq": 0, "lsq_log": 1, "whittle": 2}[method], pn)
    if wide:
        # Parameters and errors are stored as float32 and scale with the power: a pixel
        # whose level float32 cannot hold would store amplitudes of 0 or inf with status 0
        # (stages.check_power_range refuses such spectra from the first 32 x 32 px only)
        status[(status == 0) & ((scale > _POWER_MAX) | (scale < _POWER_MIN))] = 4
    if sigma is not None:
        with np.errstate(invalid="ignore"):
            bad_sigma = ~np.isfinite(sigma).all(axis=1)
            nonpos = (sigma <= 0).any(axis=1)
        status[(status == 0) & nonpos] = 4
        status[bad_sigma] = 2
    good = status == 0
    weights = None
    if method == "whittle":
        y = pn
        c = k.copy()
    elif method == "lsq_log":
        y = np.log(pn) - st.log_bias(dof)[:, None]
        c = 1.0 / st.log_variance(dof)
    else:
        y = pn
        if sigma is not None:
            sn = np.where(good[:, None], sigma / scale[:, None], 1.0)
            weights = 1.0 / (sn * sn)
            c = np.ones(npix) if absolute_sigma else -np.ones(npix)
        else:
            c = -np.ones(npix)
    return status, scale, sum_ln_y, y, weights, c


def _fit_models(
    f: np.ndarray,
    power: np.ndarray,
    models: dict[str, Model],
    method: str,
    dof: np.ndarray,
    sigma: np.ndarray | None,
    max_iter: int,
    tol: float,
    multistart: int,
    absolute_sigma: bool = True,
    intervals: Sequence[str] = (),
    rho: np.ndarray | Sequence[float] = (),
    wide: bool = False,
) -> tuple[dict, np.ndarray, np.ndarray]:
    """Fit every model; returns per-alias raw results, input status and per-pixel scale.

    ``intervals``: parameter names whose profile-likelihood interval each model that has
    them adds to its result (``r["intervals"][name] = (lower, upper)``, natural units).
    ``rho``: the bins' power correlations (a window's, Welch overlap's); ``lsq_log``, whose
    objective treats the log powers as independent, then widens each error by the sandwich
    estimate of its variance with the log powers' correlation (:func:`_log_sandwich`), and
    divides the profile intervals' likelihood by the same factor, as ``whittle`` divides its
    dof by the bins' vif; the fits, objectives and statistics are the uncorrected ones."""
    npix, nf = power.shape
    status_in, scale, sum_ln_y, y, weights, c = _prepare(
        power, sigma, method, dof, absolute_sigma, wide
    )
    rho = _trim_lags(np.asarray(rho, dtype=np.float64).ravel())  # Hann: 2 lags, then ~1e-33
    lags = None
    if method == "lsq_log" and rho.size:
        dofs, which = np.unique(np.asarray(dof, dtype=np.float64), return_inverse=True)
        lags = (st.log_power_rho(rho[None, :], dofs[:, None]), which.ravel())
    fits: dict[str, dict] = {}
    by_name: dict[str, str] = {}
    # nested base models first, whatever the requested order: their fits seed the bumps
    bases = {m.base for m in models.values() if m.base}
    order = sorted(models, key=lambda a: 0 if models[a].name in bases else 1)
    for alias in order:
        model = models[alias]
        active = status_in == 0
        too_few = nf < model.npar + 1
        if too_few:
            active = np.zeros(npix, dtype=bool)
        base_alias = by_name.get(model.base) if model.base else None
        base = None
        if base_alias is not None:
            base = fits[base_alias]["params"]
            base = np.where(np.isfinite(base), base, np.nan)
        elif model.base is not None and not too_few:
            # the nested model is not requested: fit it anyway, its residuals seed the bump
            bm = _base_of(model)
            hidden, _, _ = _fit_models(
                f, power, {"_base": bm}, method, dof, sigma, max_iter, tol, 1, absolute_sigma,
                wide=wide,
            )  # fmt: skip
            base = hidden["_base"]["params"]
        # guesses are only computed on pixels we fit, with harmless stand-ins elsewhere
        pg = np.where(active[:, None], power, 1.0 + np.arange(nf)[None, ::-1])
        if base is not None:
            bad = ~np.isfinite(base).all(axis=1)
            if bad.any():
                base = base.copy()
                base[bad] = _starts(_base_of(model), f, pg[bad], dof[bad], None, 1)[:, 0, :]
        starts = _starts(model, f, pg, dof, base, multistart)
        r = _fit_one(
            model, f, power, scale, weights, y, c, active, starts, method, max_iter, tol, multistart
        )
        if base_alias is not None:
            _ensure_nested(
                r,
                fits[base_alias],
                model,
                f,
                power,
                scale,
                weights,
                y,
                c,
                starts,
                method,
                max_iter,
                tol,
            )
        inflate = None
        if lags is not None:
            inflate = _log_sandwich(model, f, r["params"], r["errors"], *lags)
        r["intervals"] = _intervals(
            model, f, y, weights, c, scale, method, active, r, intervals, max_iter, tol, inflate
        )
        _settle(r, active, status_in, too_few, sum_ln_y)
        r["inflate"] = inflate
        fits[alias] = r
        by_name.setdefault(model.name, alias)
    # widened last: a bigger model that keeps its nested model's answer (_ensure_nested)
    # copies that model's errors, which must not be widened twice
    for r in fits.values():
        inflate = r.pop("inflate")
        if inflate is not None:
            r["errors"] *= np.sqrt(inflate)
    return {a: fits[a] for a in models}, status_in, scale


def _log_sandwich(model, f, params, errors, lag_table, which, rows: int = 256) -> np.ndarray:
    """(npix, npar) factors by which ``lsq_log``'s parameter variances grow when the log
    powers of bins ``j`` apart correlate ``lag_table[which[p], j-1]`` (from the powers'
    correlation by :func:`specfit.kernels.stats.log_power_rho`, per distinct dof): the
    sandwich ``A J^T R J A`` over ``A``, with ``J`` the derivatives of ``ln m`` on the
    parameters with an error, ``A = (J^T J)^-1`` and ``R`` the log powers' correlation
    matrix, diagonal by diagonal. It depends on where the model learns its parameters: for
    M1 on 149 Hann bins, 2 segments, the index's variance grows 1.3-1.7x, the tail's
    1.7-1.8x (5-95 %), where a scalar ``1 + 2 sum rho_log`` (1.79) would over-correct the
    index. With Welch overlap the average is not Kibble's bivariate Gamma and the log
    correlation an approximation (reviewers' simulations of 50-75 % overlap: index pulls
    0.93-1.05, against 1.07-1.38 uncorrected). 1 where a pixel or parameter has no error or
    the system is singular."""
    npix, npar = params.shape
    out = np.ones((npix, npar))
    for lo in range(0, npix, rows):
        sl = slice(lo, min(lo + rows, npix))
        free = np.isfinite(errors[sl]) & (errors[sl] > 0)
        ok = free.any(axis=1) & np.isfinite(params[sl]).all(axis=1)
        if not ok.any():
            continue
        P = np.where(ok[:, None], params[sl], 0.0)
        P[~ok] = params[sl][ok][0]  # any fitted pixel's parameters: finite placeholders
        with np.errstate(all="ignore"):
            J = model.jacobian(f, P) / model.evaluate(f, P)[:, :, None]
        J = np.where(free[:, None, :] & np.isfinite(J), J, 0.0)
        lag = lag_table[which[sl]]
        RJ = J.copy()
        for j in range(lag.shape[1]):
            w = lag[:, j][:, None, None]
            RJ[:, j + 1 :] += w * J[:, : -j - 1]
            RJ[:, : -j - 1] += w * J[:, j + 1 :]
        H = np.einsum("pia,pib->pab", J, J) + np.eye(npar)[None] * ~free[:, None, :]
        H = np.where(ok[:, None, None], H, np.eye(npar))
        M = np.einsum("pia,pib->pab", J, RJ)
        with np.errstate(all="ignore"):
            A = _inverses(H)
            S = np.einsum("pab,pbc,pcd->pad", A, M, A)
            ratio = np.diagonal(S, axis1=1, axis2=2) / np.diagonal(A, axis1=1, axis2=2)
        good = ok[:, None] & free & np.isfinite(ratio) & (ratio > 0)
        out[sl] = np.where(good, ratio, 1.0)
    return out


def _inverses(H: np.ndarray) -> np.ndarray:
    """Inverses of a stack of matrices; NaN for any that is singular."""
    try:
        return np.linalg.inv(H)
    except np.linalg.LinAlgError:
        out = np.full(H.shape, np.nan)
        for i, h in enumerate(H):
            with contextlib.suppress(np.linalg.LinAlgError):
                out[i] = np.linalg.inv(h)
        return out


def _intervals(
    model, f, y, weights, c, scale, method, active, r, names, max_iter, tol, inflate=None
):
    """{name: (lower, upper)} profile-likelihood intervals (natural units) of the requested
    parameters the model has; NaN where it was not fitted. ``inflate``: (npix, npar) variance
    factors (:func:`_log_sandwich`); parameter ``j``'s profile divides the likelihood by
    ``inflate[:, j]``."""
    out = {}
    pw = np.asarray(model.power_params, dtype=bool)
    ok = active & ~np.isin(r["status"], _NOT_FITTED)
    P, E = r["params"].copy(), r["errors"].copy()
    P[:, pw] /= scale[:, None]
    E[:, pw] /= scale[:, None]
    for name in names:
        if name not in model.param_names:
            continue
        j = model.param_names.index(name)
        cj = c if inflate is None else c / inflate[:, j]
        lo, hi = profile_interval(
            model, f, y, weights, cj, scale, method, ok, P, E, j, max_iter, tol
        )
        if pw[j]:
            lo, hi = lo * scale, hi * scale
        out[name] = (np.where(ok, lo, np.nan), np.where(ok, hi, np.nan))
    return out


def _settle(r, active, status_in, too_few, sum_ln_y):
    """A model's result, final: its own status where it was fitted, the input's status (or
    too_few_bins) where not; NaN parameters and errors where not fitted; the data's sum ln y."""
    st_ = r["status"]
    st_[:] = np.where(active, st_, status_in if not too_few else 5)
    if too_few:
        st_[status_in != 0] = status_in[status_in != 0]
    notfit = np.isin(st_, _NOT_FITTED)
    r["params"][notfit] = np.nan
    r["errors"][notfit] = np.nan
    r["sum_ln_y"] = sum_ln_y


_INTERVAL_LEVEL = 0.5  # the profile log-likelihood's drop at a 68.3 % interval's ends (chi2_1)
_INTERVAL_STEPS = 20  # root-finding steps per end (most ends take 3-5; a kinked profile more)
_INTERVAL_TOL = 1e-3  # an end is found when sqrt(2 drop) is within this of 1
_INTERVAL_REACH = 30.0  # an open side's search: 30 in ln p (e^-30), 30x the error or value


def profile_interval(
    model, f, y, weights, c, scale, method, active, params, errors, j, max_iter, tol
):
    """The 68.3 % profile-likelihood interval of parameter ``j`` per pixel: where the
    log-likelihood maximised over every other parameter falls :data:`_INTERVAL_LEVEL` below
    the fit's (Wilks: chi-square with one dof). Unlike ``estimate +- error`` (the curvature
    at the optimum) it follows a skewed or flat likelihood.

    ``y``, ``weights``, ``c`` as the solver gets them (:func:`_prepare`, normalised units;
    ``c <= 0``: the noise level is profiled too, as with ``dlogf`` weights, and the drop is
    ``n/2 ln(F/F0)``); ``scale`` the per-pixel normalisation; ``params``, ``errors`` the
    fit's (npix, npar), normalised units (power-like ones divided by ``scale``). Each
    end is found by the secant method on ``sqrt(2 drop)`` (linear in the distance where the
    likelihood is Gaussian) in the solver's scale (ln p for log-scaled parameters), every
    step a fit with the parameter pinned, warm-started from the step before. An end the
    profile does not reach before the parameter's bound is that bound; NaN where the fit
    failed or the steps did not converge. Returns (lower, upper), normalised natural units.
    """
    npix = params.shape[0]
    LO, HI, logp = _solver_bounds(model, f, scale)
    P = np.clip(params, LO, HI)
    kernel = model.compiled().solve_block
    x = model.abscissa(f)
    lo_j, hi_j = LO[:, j], HI[:, j]
    with np.errstate(divide="ignore", invalid="ignore"):
        if logp[j]:
            t0, sig = np.log(P[:, j]), errors[:, j] / P[:, j]
            tlo = np.where(lo_j > 0, np.log(np.maximum(lo_j, 1e-300)), -np.inf)
            thi = np.log(hi_j)
        else:
            t0, sig, tlo, thi = P[:, j], errors[:, j], lo_j, hi_j
    # no error (a parameter on its bound has none): a first step of a tenth of its size
    sig = np.where(np.isfinite(sig) & (sig > 0), sig, 0.1 * np.maximum(np.abs(t0), 0.01))
    # an open side (ln of a lower bound 0, or an infinite bound) is searched this far; an
    # end not reached there is the bound itself (0 or inf)
    reach = _INTERVAL_REACH * (1.0 if logp[j] else np.maximum(sig, np.abs(t0)))
    tlo = np.where(np.isfinite(tlo), tlo, t0 - reach)
    thi = np.where(np.isfinite(thi), thi, t0 + reach)
    ok = active & np.isfinite(P).all(axis=1) & np.isfinite(t0)
    r0 = lm.solve(kernel, x, y, P[:, None, :], LO, HI, method, c, ok, weights, 0, 1.0, 1, logp)
    F0 = r0["F"]
    ok &= np.isfinite(F0)
    n = float(y.shape[1])
    ends = []
    for side in (-1.0, 1.0):
        room = np.maximum(np.where(side < 0, t0 - tlo, thi - t0), 0.0)
        room = np.where(np.isnan(room), 0.0, room)
        end = np.full(npix, np.nan)
        at_bound = ok & (room <= 0)  # the estimate is on this side's bound
        todo = ok & (room > 0)
        d = np.where(todo, np.minimum(sig, room), 0.0)
        d_prev = np.zeros(npix)
        s_prev = np.zeros(npix)
        below = np.zeros(npix)  # the bracket: the profile is below the level at d = below,
        above = np.full(npix, np.inf)  # above it at d = above
        retried = np.zeros(npix, dtype=bool)
        start = P.copy()
        for _ in range(_INTERVAL_STEPS):
            if not todo.any():
                break
            v = t0 + side * d
            pinned = np.exp(v) if logp[j] else v
            lo, hi, st = LO.copy(), HI.copy(), start.copy()
            for a in (lo, hi, st):
                a[:, j] = np.where(todo, pinned, a[:, j])
            r = lm.solve(
                kernel, x, y, st[:, None, :], lo, hi, method, c, todo, weights,
                max_iter, tol, 1, logp, secant=True,
            )  # fmt: skip
            with np.errstate(divide="ignore", invalid="ignore"):
                drop = np.where(c > 0, c * (r["F"] - F0), 0.5 * n * np.log(r["F"] / F0))
            good = todo & np.isfinite(drop) & np.isfinite(r["params"]).all(axis=1)
            s = np.sqrt(np.maximum(np.where(good, drop, 0.0), 0.0) / _INTERVAL_LEVEL)
            # continuation: the next step starts from the solution at the bracket's inner
            # end, so the profile follows the estimate's own branch of the likelihood (a start
            # from beyond the level can sit in a worse basin and fake a crossing)
            inner = good & (s < 1.0) & (d > below)
            start = np.where(inner[:, None], r["params"], start)
            below = np.where(good & (s < 1.0), np.maximum(below, d), below)
            above = np.where(good & (s >= 1.0), np.minimum(above, d), above)
            # the bracket closed without the level: the profile jumps there. Once, the point
            # above is solved again from the inner end's solution (its first solve may have
            # started in a worse basin); if it is still above, the end is at the jump
            closed = good & (above - below < _INTERVAL_TOL * above)
            again = closed & ~retried
            retried |= again
            done = good & ~again & ((np.abs(s - 1.0) < _INTERVAL_TOL) | closed)
            wall = good & ~done & (d >= room) & (s < 1.0)  # the bound comes first
            end = np.where(done, t0 + side * np.where(closed, above, d), end)
            at_bound |= wall
            todo &= good & ~done & ~wall
            # secant on s(d) through the last two points (the first through s(0) = 0), kept
            # inside the bracket (else its middle; 4x further while nothing is above)
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                nxt = d + (1.0 - s) * (d - d_prev) / (s - s_prev)
                mid = np.where(np.isfinite(above), 0.5 * (below + above), 4.0 * d)
            inside = np.isfinite(nxt) & (nxt > below) & (nxt < above)
            d_prev, s_prev = d, s
            d = np.where(todo, np.minimum(np.where(inside, nxt, mid), room), d)
            d = np.where(again, above, d)
            above = np.where(again, np.inf, above)
        with np.errstate(over="ignore"):
            end = np.exp(end) if logp[j] else end
        ends.append(np.where(at_bound, lo_j if side < 0 else hi_j, end))
    return ends[0], ends[1]


def _fit_models_original(f, power, models, method, dof, sigma, unit, wide=False):
    """:func:`_fit_models` with the original specFit's procedure (``fit.optimizer=original``):
    the same input screening and result fields, each model fitted pixel by pixel by
    :func:`specfit.kernels.original.fit_rows` (no nested restart: the original's choice
    compares its own local fits)."""
    npix, nf = power.shape
    status_in, scale, sum_ln_y, _, _, _ = _prepare(power, sigma, method, dof, False, wide)
    fits = {}
    for alias, model in models.items():
        too_few = nf < model.npar + 1
        active = (status_in == 0) & (not too_few)
        r = original.fit_rows(f, power, sigma[0], model, unit, active)
        _settle(r, active, status_in, too_few, sum_ln_y)
        fits[alias] = r
    return fits, status_in, scale


def _ensure_nested(r, rb, model, f, power, scale, weights, y, c, starts, method, max_iter, tol):
    """Where the bigger model ended worse than the model nested in it, restart it from the
    nested solution (extra amplitude on its bound): a nested model can always do as well."""
    nb = rb["params"].shape[1]
    worse = np.isfinite(rb["F"]) & ~(r["F"] <= rb["F"] + 1e-9 * np.abs(rb["F"]))
    if not worse.any():
        return
    lo, _ = model.bounds_for(f)
    s = starts[worse, :1, :].copy()
    s[:, 0, :nb] = rb["params"][worse]
    s[:, 0, nb] = lo[nb]
    sub = _fit_one(
        model,
        f,
        power[worse],
        scale[worse],
        None if weights is None else weights[worse],
        y[worse],
        c[worse],
        np.ones(int(worse.sum()), dtype=bool),
        s,
        method,
        max_iter,
        tol,
        search=False,
    )
    better = ~(r["F"][worse] <= sub["F"])
    idx = np.flatnonzero(worse)[better]
    for key in ("params", "errors", "F", "s2", "c_eff", "status"):
        r[key][idx] = sub[key][better]
    r["nfev"][np.flatnonzero(worse)] += sub["nfev"]
    # The guarantee: where even that restart ended worse (its coarse stage can wander off),
    # the nested solution itself is the bigger model's answer, extra amplitude on its bound.
    # Exact only when that bound is 0 (the bigger model then equals the smaller one).
    still = np.isfinite(rb["F"]) & ~(r["F"] <= rb["F"])
    if lo[nb] == 0.0 and still.any():
        r["params"][still, :nb] = rb["params"][still]
        r["params"][still, nb] = 0.0
        r["errors"][still] = np.nan
        r["errors"][still, :nb] = rb["errors"][still]
        for key in ("F", "s2", "c_eff"):
            r[key][still] = rb[key][still]
        r["status"][still] = 7  # at_bound: the extra amplitude sits on its bound


def lrt_reference(
    f: np.ndarray,
    dof: float,
    small: Model,
    big: Model,
    method: str,
    max_iter: int,
    tol: float,
    multistart: int,
    nsim: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    bin_rho: np.ndarray | Sequence[float] = (),
) -> st.NullReference:
    """Null distribution of the LRT statistic for ``small`` inside ``big`` by simulation.

    Spectra are simulated under ``small`` with this frequency grid and fitted with both models
    exactly as :func:`fit_block` fits the data, with the likelihood's ``dof``. Their noise is
    the data's: Gamma-distributed with mean 1 and each bin's marginal dof (``dof``, or
    ``dof x vif`` for ``whittle`` with correlated bins, :func:`fit_dof`), and with
    ``bin_rho`` (the correlations a taper or Welch overlap makes,
    :func:`specfit.kernels.periodogram.window_rho`) the
    bins ``j`` apart correlated by ``bin_rho[j-1]`` (:func:`_correlated_gamma`); without it
    the bins are independent. The truths come from the smaller model's declared
    ``null(f, rng, nsim)`` (for ``powerlaw_tail``:
    :func:`specfit.kernels.guesses.powerlaw_tail_null`).

    The reference depends only on its key: (frequency grid, dof, models and their bounds,
    fit settings, nsim, specfit version and fitting source). The random generator is seeded
    from a hash of that key without the version and source, never from global state or call
    order, so every process, block and resume builds the same one, and a new solver refits
    the same simulated spectra. It is cached per key in this process and, with ``cache_dir``, on disk as
    ``<cache_dir>/lrt-<key hash>.npy``, written under a temporary name and renamed, so that
    concurrent workers share one simulation instead of each running it.
    """
    f = np.asarray(f, dtype=np.float64)
    nsim = _LRT_NSIM if nsim is None else int(nsim)
    lags = _noise_lags(bin_rho)
    draw = _lrt_draw_key(f, dof, small, big, method, max_iter, tol, multistart, nsim, lags)
    key = _lrt_key(draw, small, big)
    with _LRT_LOCK:  # threads of one worker share the reference instead of each simulating it
        ref = _LRT_CACHE.get(key)
        if ref is None:
            ref = _lrt_reference_cached(
                key, draw, f, dof, small, big, method, max_iter, tol, multistart, nsim,
                cache_dir, lags,
            )  # fmt: skip
            _LRT_CACHE[key] = ref
        return ref


def _lrt_key(draw: str, small: Model, big: Model) -> str:
    """sha256 of everything an LRT reference depends on (hex): its draw key
    (:func:`_lrt_draw_key`) plus the specfit version, the fitting code's source hash and the
    two models' code (``Model.code_digest``), so that a changed solver or an edited model
    (a user's file: same name, other code) never reuses a cached reference made by the old."""
    h = hashlib.sha256()
    parts = [draw, _VERSION[0], _solver_source_hash(), small.code_digest(), big.code_digest()]
    h.update("\0".join(parts).encode())
    return h.hexdigest()


def _noise_lags(bin_rho) -> np.ndarray:
    """The bin correlations the reference's noise reproduces: ``bin_rho`` rounded to 6
    decimals, up to the last lag at or above :data:`_LAG_FLOOR` (Hann: 0.444444, 0.027778;
    the later lags are zero up to rounding); empty for independent bins. Without a window,
    Welch overlap's correlations fall off only as 1/j^2 (0.116, 0, 0.013, 0, 0.005, ... at
    50 %): the floor keeps ~17 of them, not hundreds of tiny Gamma parts (12x the
    reference's cost), and leaves out ~0.3 % of the vif. A window's power correlations are
    ``|.|^2``, never negative: a negative one is refused, not simulated as 0."""
    rho = np.round(np.asarray(bin_rho, dtype=np.float64).ravel(), 6)
    if np.any(rho < 0.0) or not np.all(np.isfinite(rho)):
        raise ValueError(f"bin_rho must be finite correlations >= 0, got {rho[:4]} ...")
    return _trim_lags(rho)


_LAG_FLOOR = 1e-4  # bin correlations below this are left out of simulations and sandwiches


def _trim_lags(rho: np.ndarray) -> np.ndarray:
    """``rho`` up to its last lag at or above :data:`_LAG_FLOOR` (empty if none is)."""
    keep = np.flatnonzero(rho >= _LAG_FLOOR)
    return rho[: keep[-1] + 1] if keep.size else np.zeros(0)


def _lrt_draw_key(f, dof, small, big, method, max_iter, tol, multistart, nsim, lags=()) -> str:
    """sha256 (hex) of what the reference's definition is, without the code that fits it: the
    random spectra are drawn from a generator seeded by this, so an edit to the solver refits
    the same simulated spectra instead of drawing new ones (which would move every p-value
    by the reference's sampling error, ~1 point at the median for nsim 2000). The noise's bin
    correlations (:func:`_noise_lags`) are part of it when there are any; a reference of
    independent bins has the key it had before they were."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(f, dtype="<f8").tobytes())
    parts = [
        repr(round(float(dof), 6)),
        small.name,
        repr(small.bounds),
        big.name,
        repr(big.bounds),
        method,
        repr(int(max_iter)),
        repr(float(tol)),
        repr(int(multistart)),
        repr(int(nsim)),
    ]
    if len(lags):
        parts.append("bin_rho " + repr([float(r) for r in lags]))
    h.update("\0".join(parts).encode())
    return h.hexdigest()


def _solver_source_hash() -> str:
    """sha256 of the fitting code's own source files (this module, the solver, the starting
    guesses, the kernel generator): part of every LRT reference's key, so that a changed
    solver between two releases (a development install) never reuses a stale reference."""
    if not _SOURCE_HASH:
        from . import compile as _compile
        from . import guesses as _guesses

        h = hashlib.sha256()
        for mod in (sys.modules[__name__], lm, _guesses, _compile, st):
            h.update(Path(inspect.getfile(mod)).read_bytes())
        _SOURCE_HASH.append(h.hexdigest())
    return _SOURCE_HASH[0]


_SOURCE_HASH: list[str] = []


def _lrt_reference_cached(
    key, draw, f, dof, small, big, method, max_iter, tol, multistart, nsim, cache_dir, lags
):
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"lrt-{key[:32]}.npy"
        try:
            return st.NullReference(np.load(path, allow_pickle=False))
        except (OSError, ValueError):  # absent, or unreadable: simulate (and rewrite) it
            pass
    null = _lrt_simulate(draw, f, dof, small, big, method, max_iter, tol, multistart, nsim, lags)
    ref = st.NullReference(null)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.stem}.{os.getpid()}.{threading.get_ident()}.tmp.npy")
            np.save(tmp, ref.null, allow_pickle=False)
            os.replace(tmp, path)  # atomic: a reader sees no file or a whole one
        except OSError:  # a read-only cache costs time, never results
            pass
    return ref


def _lrt_simulate(
    draw, f, dof, small, big, method, max_iter, tol, multistart, nsim, lags=()
) -> np.ndarray:
    if small.null is None:
        raise NotImplementedError(
            f"LRT calibration: model {small.name!r} declares no null (Model.named(null=...))"
        )
    if method not in ("lsq_log", "whittle"):  # pragma: no cover - lsq uses the chi2 reference
        raise ValueError("lsq has no simulated reference")
    dof = round(float(dof), 6)
    _, sim = _lrt_null_spectra(draw, f, dof, small, nsim, lags, method)
    dofs = np.full(nsim, float(dof))
    fits, _, _ = _fit_models(
        f, sim, {"a": small, "b": big}, method, dofs, None, max_iter, tol, multistart
    )
    ll_a = _loglike_from_fit(fits["a"], method, sim, dofs, np.log(np.mean(sim, axis=1)), None)
    ll_b = _loglike_from_fit(fits["b"], method, sim, dofs, np.log(np.mean(sim, axis=1)), None)
    stat = 2.0 * (ll_b - ll_a)
    return stat[np.isfinite(stat)]


def _lrt_null_spectra(
    draw, f, dof, small, nsim, lags=(), method="whittle"
) -> tuple[np.ndarray, np.ndarray]:
    """The reference's truths (nsim, npar) and simulated spectra (nsim, nf): truths from
    ``small.null``, Gamma noise of mean 1 from the generator seeded by ``_LRT_SEED`` and the
    draw key (:func:`_lrt_draw_key`). Independent bins (no ``lags``): shape dof/2. Correlated
    bins: each bin's marginal shape (``dof x vif / 2`` for ``whittle``, whose likelihood
    counts ``dof / vif``; ``dof / 2`` for ``lsq_log``) and correlation ``lags[j-1]`` between
    bins ``j`` apart (:func:`_correlated_gamma`)."""
    rng = np.random.default_rng([_LRT_SEED, *(int(draw[i : i + 8], 16) for i in range(0, 32, 8))])
    truth = small.null(f, rng, nsim)
    m = small.evaluate(f, truth)
    k = round(float(dof), 6) / 2.0
    if not len(lags):
        return truth, m * rng.gamma(k, 1.0 / k, size=m.shape)
    lags = np.asarray(lags, dtype=np.float64)
    if method == "whittle":
        k = k * (1.0 + 2.0 * float(lags.sum()))
    return truth, m * _correlated_gamma(rng, k, lags, m.shape)


def _correlated_gamma(rng, k: float, lags: np.ndarray, shape) -> np.ndarray:
    """(nsim, nf) Gamma(k) values of mean 1 whose bins ``j`` apart have correlation
    ``lags[j-1]``, a tapered or Welch-overlapped periodogram's noise (white noise through a
    window: Hann 0.444 at lag 1, 0.028 at lag 2). Each value is a sum of independent Gamma
    parts (shapes add): one of its own, of shape ``k (1 - 2 sum(lags))``, and for each lag
    ``j`` one shared with the bin ``j`` below and one with the bin ``j`` above, of shape ``k
    lags[j-1]``; the sum has shape ``k`` and two bins share exactly ``k lags[j-1]`` of it.
    Correlations summing to 0.5 or more (Hann with Welch overlap above ~50 %) leave no own
    part: then each part spans consecutive bins instead (:func:`_spanning_gamma`). Bins at
    the ends share parts with bins beyond the grid, so every bin has the same law. Marginal
    law and bin correlations are those of the data; the periodogram's higher joint moments
    are not, which the LRT's distribution hardly depends on (its score is linear in the
    powers)."""
    own = 1.0 - 2.0 * float(lags.sum())
    if own <= 0.0:
        return _spanning_gamma(rng, k, lags, shape)
    nsim, nf = shape
    x = rng.gamma(k * own, 1.0, size=shape)
    for j, r in enumerate(lags, start=1):
        if r <= 0.0:
            continue
        part = rng.gamma(k * r, 1.0, size=(nsim, nf + j))  # part c is shared by bins c-j and c
        x += part[:, :nf] + part[:, j:]
    return x / k


def _spanning_gamma(rng, k: float, lags: np.ndarray, shape) -> np.ndarray:
    """:func:`_correlated_gamma` for correlations summing to 0.5 or more: lag 2's share comes
    from parts that span three consecutive bins (shape ``k lags[1]``; they add ``2 lags[1]``
    to lag 1 and ``lags[1]`` to lag 2), the rest of lag 1 and every further lag from parts
    shared by two bins as there, so that each bin's own part keeps ``k (1 - 2 lags[0] +
    lags[1] - 2 sum(lags[2:]))`` (Hann at 75 % overlap, 9 segments: 0.07 k, where two-bin
    parts alone would need -0.07 k). Refused (ValueError) where that is not positive."""
    r1 = float(lags[0]) - 2.0 * float(lags[1]) if len(lags) > 1 else float(lags[0])
    r2 = float(lags[1]) if len(lags) > 1 else 0.0
    rest = np.asarray(lags[2:], dtype=np.float64)
    own = 1.0 - 2.0 * r1 - 3.0 * r2 - 2.0 * float(rest.sum())
    if own <= 0.0 or r1 < 0.0:
        raise ValueError(
            f"bin correlations {np.round(lags[:3], 4)} ... cannot be simulated as Gamma parts "
            "shared by neighbouring bins; use less Welch overlap (spectra.overlap)"
        )
    nsim, nf = shape
    x = rng.gamma(k * own, 1.0, size=shape)
    if r2 > 0.0:
        span = rng.gamma(k * r2, 1.0, size=(nsim, nf + 2))  # part c spans bins c-2 .. c
        x += span[:, :nf] + span[:, 1 : nf + 1] + span[:, 2:]
    two_bin = [(1, r1)] + [(j, float(r)) for j, r in enumerate(rest, start=3)]
    for j, r in two_bin:
        if r <= 0.0:
            continue
        part = rng.gamma(k * r, 1.0, size=(nsim, nf + j))  # part c is shared by bins c-j and c
        x += part[:, :nf] + part[:, j:]
    return x / k


def _loglike_from_fit(r, method, power, dof, ln_scale, sigma):
    n = power.shape[1]
    sum_ln_y = r["sum_ln_y"]
    sls = np.log(sigma).sum(axis=1) if sigma is not None else None
    return st.loglike(method, r["F"], n, dof / 2.0, ln_scale, sum_ln_y, sls)


def fit_block(
    freq: np.ndarray,
    power: np.ndarray,
    models: Mapping[str, Model | str],
    *,
    method: str,
    dof: float | np.ndarray = 2.0,
    bin_rho: np.ndarray | Sequence[float],
    sigma: np.ndarray | None = None,
    max_iter: int,
    tol: float,
    multistart: int,
    best_model: str,
    alpha: float,
    weights: str,
    nonnested: str,
    optimizer: str,
    intervals: Sequence[str],
    original_unit: float | None = None,
    lrt_cache: str | os.PathLike | None = None,
    wide_input: bool | None = None,
) -> dict[str, np.ndarray]:
    """Fit every model to every pixel of a block of spectra.

    Parameters
    ----------
    freq
        (nf,) frequencies in Hz, positive and increasing.
    power
        (npix, nf) power. Bad pixels (NaN, inf, constant, negative) get NaN and a status.
    models
        Alias -> :class:`~specfit.models.Model` or registered name, in output order.
    method
        ``whittle`` (default; Gamma likelihood with shape dof/2), ``lsq_log`` (least squares
        on ln power with the log bias for ``dof`` removed) or ``lsq`` (linear, 1/sigma^2).
    dof
        chi-square degrees of freedom of each power value as the likelihood counts them,
        scalar or (npix,): ``2 K B`` (segments x box pixels), for ``whittle`` divided by
        the bins' variance inflation ``vif = 1 + 2 sum(bin_rho)``
        (:func:`specfit.kernels.tile.fit_dof`).
    bin_rho
        Correlation of the powers of bins ``1, 2, ...`` apart made by the window or by
        Welch overlap
        (:func:`specfit.kernels.periodogram.window_rho`; empty for independent bins). The
        fits themselves do not use it (for ``whittle`` ``dof`` carries the correction;
        ``lsq_log`` widens its errors and intervals by a sandwich estimate with the log
        powers' correlation, :func:`_log_sandwich`); the statistics do:
        ``<m>_chi2red`` is the Pearson chi-square with each bin's marginal dof (``dof x vif``
        for ``whittle``), over ``n - p`` (~1 for a model that fits, with or without a
        window), ``<m>_gof_pvalue`` accounts for the correlation of its terms
        (:func:`specfit.kernels.stats.pearson_vif`), and the LRT reference simulates bins
        with these correlations (:func:`lrt_reference`).
    sigma
        (npix, nf) uncertainties for ``lsq`` (None: unit weights, variance estimated).
    max_iter, tol
        Per start: maximum trial steps; convergence when the remaining Newton step is below
        ``sqrt(tol)`` standard errors.
    multistart
        Starting points per pixel and model; the lowest objective wins.
    best_model
        Rule for ``best_model``: ``lrt`` / ``ftest`` (bigger nested model if its p-value is
        below ``alpha``; between families of models that do not nest, ``nonnested``),
        ``aic``, ``bic`` (lowest), ``chi2`` (lowest reduced chi-square) or ``chi2sum``
        (lowest raw chi-square sum: the original specFit's rule).
    alpha
        Significance level for ``lrt`` and ``ftest``.
    weights
        ``lsq`` only: ``sigma`` (the ``sigma`` argument, absolute) or ``dlogf`` (sigma =
        delta log10 f, see :func:`dlogf_sigma`; ``sigma`` must then be None, the noise level is
        estimated from the residuals and ``<m>_chi2red`` is the weighted sum / (n - p) as the
        original specFit reported it; no goodness-of-fit p-value).
    optimizer
        ``specfit`` (the batched solver with its global search) or ``original``: every pixel
        fitted by the original specFit's own procedure, scipy ``curve_fit`` from the middle
        of the bounds (:mod:`specfit.kernels.original`; its models, ``lsq``, ``dlogf`` and
        finite bounds only). ``max_iter``, ``tol`` and ``multistart`` are then unused.
    original_unit
        ``optimizer=original`` only: the original's power unit in the spectra's units
        (:func:`specfit.kernels.original.original_unit`, ``dt x segment samples`` for
        ``variance`` spectra); its procedure fits ``power / original_unit``.
    lrt_cache
        Folder where LRT null references are cached on disk and shared between processes
        (see :func:`lrt_reference`); None: cached in this process only. Values never depend
        on it.
    wide_input
        The spectra were float64 before any cast (None: ``power``'s own dtype says): pixels
        whose mean power lies beyond what the float32 maps hold are then not fitted (status
        4); float32 spectra are in range by construction.
    intervals
        Parameter names (e.g. ``["bump_center"]``) whose 68.3 % profile-likelihood interval
        is returned as ``<alias>_<name>_lower`` / ``_upper`` by every model that has them
        (:func:`profile_interval`; ~15-40 evaluations per pixel and parameter).
        ``optimizer=specfit`` only.
    nonnested
        ``bic`` (the config's default; AFINO compares its models by BIC) or ``aic``: with
        ``lrt``/``ftest``, the criterion that chooses between the winners of families of
        models that do not nest (e.g. ``knee_tail`` and ``powerlaw_tail``). Unused with one
        family.

    Returns
    -------
    dict
        ``name -> (npix,) array``, exactly the keys (and order, dtypes) of
        :func:`output_dtypes`, then each model's declared derived maps
        (``<alias>_<name>`` of ``Model.derived``, float32, from full-precision parameters).
    """
    kw = dict(
        method=method, dof=dof, bin_rho=bin_rho, sigma=sigma, max_iter=max_iter, tol=tol,
        multistart=multistart, best_model=best_model, alpha=alpha, weights=weights,
        nonnested=nonnested, optimizer=optimizer, intervals=intervals,
        original_unit=original_unit, lrt_cache=lrt_cache, wide_input=wide_input,
    )  # fmt: skip
    try:
        return _fit_block(freq, power, models, **kw)
    except ArithmeticError:
        # A spectrum a kernel cannot take (a division by zero in numba code, e.g. power exactly
        # zero over the lowest and the highest bins) must not cost the block: the block is
        # split until that pixel stands alone, which gets fit_failed. Every other pixel's
        # result is the same as in the whole block (a pixel depends only on its spectrum).
        return _fit_split(freq, power, models, kw)


def _fit_split(freq, power, models, kw) -> dict[str, np.ndarray]:
    """fit_block on the two halves of the block (one pixel: not fitted, status 9)."""
    power = np.atleast_2d(np.asarray(power))
    npix = power.shape[0]
    if npix == 1:
        res = _fit_block(freq, np.full_like(power, np.nan, dtype=np.float64), models, **kw)
        for alias in _resolve(models):
            res[f"{alias}_status"][:] = 9
        return res
    parts = []
    for rows in (slice(0, npix // 2), slice(npix // 2, npix)):
        part = dict(kw)
        if np.ndim(kw["dof"]) == 1:
            part["dof"] = np.asarray(kw["dof"])[rows]
        if kw["sigma"] is not None:
            part["sigma"] = np.asarray(kw["sigma"])[rows]
        parts.append(fit_block(freq, power[rows], models, **part))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _fit_block(
    freq,
    power,
    models,
    *,
    method,
    dof,
    bin_rho,
    sigma,
    max_iter,
    tol,
    multistart,
    best_model,
    alpha,
    weights,
    nonnested,
    optimizer,
    intervals,
    original_unit,
    lrt_cache,
    wide_input,
) -> dict[str, np.ndarray]:
    """The body of :func:`fit_block`."""
    models = _resolve(models)
    _check_method(method, best_model)
    if nonnested not in NONNESTED_RULES:
        raise ValueError(
            f"fit.nonnested must be one of {', '.join(NONNESTED_RULES)}; got {nonnested!r}"
        )
    rho = np.asarray(bin_rho, dtype=np.float64).ravel()
    if not (np.all(np.isfinite(rho)) and np.all(rho >= 0) and np.all(rho < 1)):
        raise ValueError("bin_rho must be correlations in [0, 1) (periodogram.window_rho)")
    vif = 1.0 + 2.0 * float(rho.sum())
    f = np.asarray(freq, dtype=np.float64)
    if f.ndim != 1 or f.size < 2 or not np.all(np.isfinite(f)) or np.any(f <= 0):
        raise ValueError("freq must be a 1-D array of positive finite frequencies in Hz (drop f=0)")
    if np.any(np.diff(f) <= 0):
        raise ValueError("freq must be strictly increasing")
    power = np.asarray(power)
    wide = (
        power.dtype.kind == "f" and power.dtype.itemsize > 4 if wide_input is None else wide_input
    )
    power = np.asarray(power, dtype=np.float64)
    if power.ndim != 2 or power.shape[1] != f.size:
        raise ValueError(f"power must be (npix, {f.size}) to match freq; got {power.shape}")
    npix, nf = power.shape
    dof_in = np.asarray(dof, dtype=np.float64)
    if dof_in.ndim == 0 and not (np.isfinite(dof_in) and dof_in > 0):
        raise ValueError("dof must be positive (2 x segments x box pixels), scalar or (npix,)")
    if dof_in.ndim > 0 and dof_in.shape != (npix,):
        raise ValueError(f"dof must be a scalar or have shape ({npix},); got {dof_in.shape}")
    dof = np.broadcast_to(dof_in, (npix,)).copy()
    # a bad dof for one pixel makes that pixel invalid, not the whole block
    bad_dof = ~(np.isfinite(dof) & (dof > 0))
    if bad_dof.any():
        if method != "lsq":  # lsq does not use dof
            power = power.copy()
            # a non-constant negative row: invalid_input (status 4) in the screening below
            power[bad_dof] = -np.arange(1.0, nf + 1.0)
        dof[bad_dof] = 2.0
    if weights not in WEIGHTS:
        raise ValueError(f"fit.weights must be one of {', '.join(WEIGHTS)}; got {weights!r}")
    relative = weights == "dlogf"
    if relative:
        if method != "lsq":
            raise ValueError("fit.weights=dlogf weights least squares: set fit.method=lsq")
        if sigma is not None:
            raise ValueError("fit.weights=dlogf builds sigma from the frequencies; pass no sigma")
        sigma = np.broadcast_to(dlogf_sigma(f), power.shape)
    if sigma is not None:
        if method != "lsq":
            raise ValueError("sigma is only used by method='lsq'")
        sigma = np.asarray(sigma, dtype=np.float64)
        if sigma.shape != power.shape:
            raise ValueError(f"sigma must have the shape of power {power.shape}; got {sigma.shape}")

    if optimizer not in original.OPTIMIZERS:
        raise ValueError(
            f"fit.optimizer must be one of {', '.join(original.OPTIMIZERS)}; got {optimizer!r}"
        )
    check_intervals(models, intervals, optimizer)
    intervals = tuple(intervals)
    if optimizer == "original":
        original.check_original(models, method, weights, f)
        if original_unit is None or not (np.isfinite(original_unit) and original_unit > 0):
            raise ValueError(
                "fit.optimizer=original needs original_unit, the original's power unit "
                "(specfit.kernels.original.original_unit)"
            )
        fits, status_in, scale = _fit_models_original(
            f, power, models, method, dof, sigma, float(original_unit), wide
        )
    else:
        fits, status_in, scale = _fit_models(
            f, power, models, method, dof, sigma, max_iter, tol, multistart, not relative,
            intervals, rho, wide,
        )  # fmt: skip
    spec = output_dtypes(models, method, best_model, intervals)
    out: dict[str, np.ndarray] = {}
    ln_scale = np.log(scale)
    summary: dict[str, dict] = {}
    for alias, model in models.items():
        r = fits[alias]
        fitted = ~np.isin(r["status"], _NOT_FITTED)
        ll = _loglike_from_fit(r, method, power, dof, ln_scale, sigma)
        if relative:
            # Gaussian with sigma_i = s * dlogf_i and s profiled out (s^2 = chi2 / n): so the
            # LRT is n ln(chi2_small / chi2_big) and AIC/BIC compare like with like
            with np.errstate(divide="ignore", invalid="ignore"):
                ll = -0.5 * nf * (np.log(2 * np.pi * r["s2"] / nf) + 1.0)
            ll = ll - np.log(sigma).sum(axis=1)
        ll = np.where(fitted, ll, np.nan)
        nu = nf - model.npar
        # relative weights: the raw weighted sum (c_eff would rescale it to n - p)
        chi2 = r["s2"] if relative else r["c_eff"] * r["s2"]
        if method == "whittle":
            # c_eff is the likelihood's dof / 2, reduced by vif for correlated bins; each
            # Pearson term is scaled by one bin's marginal dof / 2 (mean 1 for a fitting model)
            chi2 = chi2 * vif
        if method == "lsq" and sigma is None:
            chi2 = np.full(npix, np.nan)  # no noise level to compare with
        chi2 = np.where(fitted, chi2, np.nan)
        aic, bic = st.information_criteria(ll, model.npar, nf)
        k_marg = dof * vif / 2.0 if method == "whittle" else dof / 2.0
        gof = st.pearson_pvalue(chi2, nf, model.npar, method, k_marg, rho)
        for j, pname in enumerate(model.param_names):
            out[f"{alias}_{pname}"] = r["params"][:, j]
            out[f"{alias}_{pname}_err"] = r["errors"][:, j]
            if pname in intervals:
                out[f"{alias}_{pname}_lower"], out[f"{alias}_{pname}_upper"] = r["intervals"][pname]
        out[f"{alias}_status"] = r["status"]
        out[f"{alias}_loglike"] = ll
        out[f"{alias}_chi2red"] = chi2 / max(nu, 1)
        out[f"{alias}_aic"] = aic
        out[f"{alias}_bic"] = bic
        out[f"{alias}_nfev"] = r["nfev"]
        out[f"{alias}_gof_pvalue"] = np.where(fitted & (not relative), gof, np.nan)
        summary[alias] = {
            "ll": ll,
            "chi2": chi2,
            "chi2red": chi2 / max(nu, 1),
            "aic": aic,
            "bic": bic,
            "fitted": fitted,
            "npar": model.npar,
        }

    pvals: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    names = pair_variables(models)
    for a, b in names:
        lrt = np.maximum(2.0 * (summary[b]["ll"] - summary[a]["ll"]), 0.0)
        both = summary[a]["fitted"] & summary[b]["fitted"]
        lrt = np.where(both, lrt, np.nan)
        if method == "lsq":
            from scipy.stats import chi2 as chi2_dist

            p_lrt = chi2_dist.sf(lrt, models[b].npar - models[a].npar)
        else:
            p_lrt = np.full(npix, np.nan)
            # one reference per dof value (box edges, NaN neighbours and weighting give a few):
            # a pixel's p-value must not depend on which other pixels share its block
            kk = np.round(dof[both], 6)
            uniq = np.unique(kk)
            idx = np.flatnonzero(both)
            for u in uniq:
                sel = idx[kk == u]
                if models[a].null is None:
                    from scipy.stats import chi2 as chi2_dist

                    warnings.warn(
                        f"LRT of {a} inside {b}: base model {models[a].name!r} declares no "
                        f"null to simulate; using chi2 with {models[b].npar - models[a].npar} "
                        "dof (approximate)",
                        stacklevel=2,
                    )
                    p_lrt[sel] = chi2_dist.sf(lrt[sel], models[b].npar - models[a].npar)
                    continue
                ref = lrt_reference(
                    f,
                    float(u),
                    models[a],
                    models[b],
                    method,
                    max_iter,
                    tol,
                    multistart,
                    cache_dir=lrt_cache,
                    bin_rho=rho,
                )
                p_lrt[sel] = ref.pvalue(lrt[sel])
        _, p_f = st.ftest(
            summary[a]["chi2"], summary[b]["chi2"], models[a].npar, models[b].npar, nf
        )
        pvals[(a, b)] = {"lrt": p_lrt, "ftest": np.where(both, p_f, np.nan)}
        out[names[(a, b)]["lrt_stat"]] = lrt
        out[names[(a, b)]["lrt_pvalue"]] = p_lrt
        out[names[(a, b)]["ftest_pvalue"]] = pvals[(a, b)]["ftest"]
    out["best_model"] = _best(models, summary, list(names), pvals, best_model, alpha, nonnested)

    # enforce the declared contract: same keys, same order, declared dtypes. A value beyond
    # float32's range is stored as inf without a warning: in practice the error of a parameter
    # the data do not constrain (an index with the power law fitted to nothing: ~1e40-1e110)
    with np.errstate(over="ignore"):
        res = {
            name: np.asarray(out[name]).astype(dtype, copy=False) for name, dtype in spec.items()
        }
    for alias, model in models.items():
        for name, values in model.derived_values(fits[alias]["params"]).items():
            res[f"{alias}_{name}"] = np.asarray(values).astype(np.float32)
    return res


def _best(models, summary, pairs, pvals, rule, alpha, nonnested="bic") -> np.ndarray:
    """Index of the preferred model per pixel (-1: none fitted).

    aic / bic / chi2 / chi2sum: the lowest over all models. lrt / ftest: inside each family
    of nested models, start from its smallest model and step to a bigger one nesting it
    where the test rejects the smaller at ``alpha`` (several such: the best likelihood);
    then, when there are several families, the family winner with the lowest ``nonnested``
    criterion (aic or bic). With one nested pair this is the pair's test alone.
    """
    aliases = list(models)
    npix = next(iter(summary.values()))["ll"].shape[0]
    fitted = np.stack([summary[a]["fitted"] for a in aliases], axis=1)
    if rule in ("aic", "bic", "chi2", "chi2sum"):
        key = {"chi2": "chi2red", "chi2sum": "chi2"}.get(rule, rule)
        vals = np.stack([summary[a][key] for a in aliases], axis=1).astype(np.float64)
        vals = np.where(fitted & np.isfinite(vals), vals, np.inf)
        best = np.argmin(vals, axis=1).astype(np.int8)
        best[~np.isfinite(vals).any(axis=1)] = -1
        return best
    if nonnested not in NONNESTED_RULES:
        raise ValueError(
            f"fit.nonnested must be one of {', '.join(NONNESTED_RULES)}; got {nonnested!r}"
        )
    # families: the connected groups of the nesting relation, each walked from its root
    children: dict[str, list[str]] = {a: [] for a in aliases}
    bigger = set()
    for a, b in pairs:
        children[a].append(b)
        bigger.add(b)
    roots = [a for a in aliases if a not in bigger]
    winners = []
    for root in roots:
        cur = np.full(npix, aliases.index(root), dtype=np.int64)
        ok = summary[root]["fitted"].copy()
        frontier = [root]
        while frontier:
            nxt = []
            for a in frontier:
                here = cur == aliases.index(a)
                if not children[a]:
                    continue
                # among the bigger models the test prefers, the one with the best likelihood
                gain = np.full(npix, -np.inf)
                pick = np.full(npix, -1, dtype=np.int64)
                for b in children[a]:
                    fb = summary[b]["fitted"]
                    p = pvals[(a, b)][rule]
                    # the smaller model not fitted: its fitted bigger model stands in for it
                    step = here & fb & (~ok | (p < alpha))
                    ll = np.where(np.isfinite(summary[b]["ll"]), summary[b]["ll"], -np.inf)
                    better = step & ((pick < 0) | (ll > gain))
                    gain = np.where(better, ll, gain)
                    pick = np.where(better, aliases.index(b), pick)
                    nxt.append(b)
                moved = pick >= 0
                cur[moved] = pick[moved]
                ok |= moved
            frontier = nxt
        winners.append(np.where(ok, cur, -1))
    win = np.stack(winners, axis=1)
    if win.shape[1] == 1:
        return win[:, 0].astype(np.int8)
    crit = np.stack([summary[a][nonnested] for a in aliases], axis=1).astype(np.float64)
    rows = np.arange(npix)[:, None]
    vals = np.where(win >= 0, crit[rows, np.maximum(win, 0)], np.inf)
    vals = np.where(np.isfinite(vals), vals, np.inf)
    j = np.argmin(vals, axis=1)
    best = win[np.arange(npix), j]
    best[~np.isfinite(vals).any(axis=1)] = -1
    return best.astype(np.int8)


def choose_model(aliases, summary, pairs, pvals, rule, alpha, nonnested) -> np.ndarray:
    """The fit's choice rule on stored results (the field-wide ``best_model_fdr`` uses it).

    ``summary[alias]`` holds ``status``, ``ll`` and the ``nonnested`` criterion per pixel
    (1-D); ``pvals[(small, big)][rule]`` the test's p-values (or q-values) per pixel.
    Returns the index of the preferred alias per pixel, -1 where none was fitted.
    """
    full = {
        a: {**summary[a], "fitted": ~np.isin(summary[a]["status"], _NOT_FITTED)} for a in aliases
    }
    return _best(dict.fromkeys(aliases), full, pairs, pvals, rule, alpha, nonnested)
