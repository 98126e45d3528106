"""The original specFit's own optimiser, pixel by pixel: ``fit.optimizer: original``.

The original specFit (``specFit.py`` of github.com/bgallag6/specFit at 8e2f9aa, the code that
wrote the ``param.npy`` in ``../shared/data/aia1600_20120606/original_specfit/``) fitted each
pixel with scipy's ``curve_fit``, sigma = delta log10 f, no starting values (scipy then
starts at the middle of the bounds), in its own power units (``2 |X_k / N|^2 / var``, which
is specfit's ``variance`` power divided by ``dt N``: :func:`original_unit`):

- M1, ``powerlaw_tail`` ``A f^-n + C``: one bounded 'dogbox' fit (scipy's evaluation limit);
- M2, ``powerlaw_tail_lorentzian`` (M1 + a Lorentzian in ln f): 'dogbox' with at most 3000
  evaluations, then 'trf' (at most 3000) from its result.

Each model is fitted on its own (M2 does not start from M1). Those single local searches are
why the original kept M1 on 3.3 % of its field with its raw chi-square rule: where M2's fit
stopped in a local minimum above M1's chi-square (docs/legacy.md). specfit's own solver
finds M2's global optimum, which is never worse than M1's, so only this procedure reproduces
the original's choice.

One departure, for "a pixel's result depends only on its spectrum, the config and the
version": where a call raises (scipy's evaluation limit reached, or non-finite residuals) the
original kept the previous pixel's values, so its result there depended on the order it
visited pixels; here that model gets NaN and status 10 (``optimizer_raised``) on that pixel.

Pure numpy and scipy, no numba: a Python loop over pixels (about 20 ms per pixel, scipy's
own overhead), the one place where specfit fits pixel by pixel, on purpose.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from specfit.models import Model

__all__ = [
    "OPTIMIZERS",
    "ORIGINAL_MODELS",
    "ORIGINAL_STEPS",
    "RAISED",
    "original_unit",
    "check_original",
    "curve_fit_step",
    "fit_spectrum",
    "fit_rows",
]

#: ``fit.optimizer``: specfit's solver (global search, batched) or the original's procedure.
OPTIMIZERS = ("specfit", "original")

#: The status code of a model whose curve_fit call raised (see fitting.STATUS_CODES).
RAISED = 10


def powerlaw_tail(f, a, n, c):
    """The original's M1: A f^-n + C."""
    return a * f**-n + c


def powerlaw_tail_lorentzian(f, a, n, c, p, fp, fw):
    """The original's M2: M1 + P / (1 + ((ln f - fp) / fw)^2)."""
    return a * f**-n + c + p / (1.0 + ((np.log(f) - fp) / fw) ** 2)


#: model name -> the function the original fitted (its own formula, evaluated as it did).
ORIGINAL_MODELS = {
    "powerlaw_tail": powerlaw_tail,
    "powerlaw_tail_lorentzian": powerlaw_tail_lorentzian,
}

#: model name -> its curve_fit calls ``(method, max_nfev)``; each starts from the previous
#: call's result, the first from the middle of the bounds.
ORIGINAL_STEPS: dict[str, tuple[tuple[str, int | None], ...]] = {
    "powerlaw_tail": (("dogbox", None),),
    "powerlaw_tail_lorentzian": (("dogbox", 3000), ("trf", 3000)),
}


def original_unit(normalisation: str, dt: float, segment_length: int) -> float:
    """The original's power unit in the spectra's units: ``dt x segment samples``.

    The original stored ``2 |X_k / N|^2 / var`` per segment; specfit's ``variance`` power is
    that times ``dt N`` (24 s x 300 = 7200 for the AIA example). Its procedure runs in its own
    units because scipy's stopping rules (``gtol``, the trust region's size) are not
    invariant to the data's scale.
    """
    if normalisation != "variance":
        raise ValueError(
            "fit.optimizer=original fits in the original specFit's power units, which need "
            f"spectra.normalisation=variance (got {normalisation!r})"
        )
    unit = float(dt) * int(segment_length)
    if not (np.isfinite(unit) and unit > 0):
        raise ValueError(f"the original's power unit dt x N must be positive; got {unit}")
    return unit


def check_original(models: Mapping[str, Model], method: str, weights: str, f: np.ndarray) -> None:
    """Raise ValueError (naming the config key and the fix) unless the original's procedure
    applies: its models, ``fit.method=lsq``, ``fit.weights=dlogf`` and finite bounds on the
    frequency grid ``f`` (its fits start at their middle)."""
    if method != "lsq":
        raise ValueError(
            f"fit.optimizer=original is the original specFit's least squares: set fit.method=lsq "
            f"(got {method!r})"
        )
    if weights != "dlogf":
        raise ValueError(
            "fit.optimizer=original weights by delta log10 f as the original did: set "
            f"fit.weights=dlogf (got {weights!r})"
        )
    for alias, m in models.items():
        if m.name not in ORIGINAL_MODELS:
            raise ValueError(
                f"fit.optimizer=original fits only the original specFit's models "
                f"({', '.join(ORIGINAL_MODELS)}); fit.models.{alias} is {m.name!r}"
            )
        lo, hi = m.bounds_for(np.asarray(f, dtype=np.float64))
        bad = [n for n, a, b in zip(m.param_names, lo, hi, strict=True) if not np.isfinite(a + b)]
        if bad:
            raise ValueError(
                "fit.optimizer=original starts every fit at the middle of the bounds (no "
                f"starting values, as the original): give fit.bounds.{m.name} finite bounds "
                f"for {', '.join(bad)}"
            )


def curve_fit_step(
    name: str,
    f: np.ndarray,
    s: np.ndarray,
    sigma: np.ndarray,
    bounds: tuple[Any, Any],
    method: str,
    max_nfev: int | None,
    p0: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """One of the original's ``curve_fit`` calls: ``(popt, pcov, nfev)``.

    Raises what scipy raises (RuntimeError at the evaluation limit, ValueError for
    non-finite residuals at the start); ``p0=None`` starts at the middle of the bounds.
    """
    from scipy.optimize import OptimizeWarning, curve_fit

    with warnings.catch_warnings():
        # a covariance that cannot be estimated is inf: NaN errors, status 6 below
        warnings.simplefilter("ignore", OptimizeWarning)
        popt, pcov, info, _, _ = curve_fit(
            ORIGINAL_MODELS[name],
            f,
            s,
            p0=p0,
            sigma=sigma,
            bounds=bounds,
            method=method,
            max_nfev=max_nfev,
            full_output=True,
        )
    return popt, pcov, int(info["nfev"])


def fit_spectrum(
    name: str, f: np.ndarray, s: np.ndarray, sigma: np.ndarray, bounds: tuple[Any, Any]
) -> tuple[np.ndarray | None, np.ndarray | None, int]:
    """The original's fit of model ``name`` to one spectrum ``s`` (its units):
    ``(popt, pcov, nfev)``, or ``(None, None, nfev)`` where one of its calls raised (``nfev``
    counts the calls that returned)."""
    p, cov, nfev = None, None, 0
    for method, max_nfev in ORIGINAL_STEPS[name]:
        try:
            p, cov, n = curve_fit_step(name, f, s, sigma, bounds, method, max_nfev, p)
        except (RuntimeError, ValueError):
            return None, None, nfev
        nfev += n
    return p, cov, nfev


def fit_rows(
    f: np.ndarray,
    power: np.ndarray,
    sigma: np.ndarray,
    model: Model,
    unit: float,
    active: np.ndarray,
) -> dict[str, np.ndarray]:
    """Fit ``model`` to every active row of ``power`` (npix, nf) the original's way.

    Parameters
    ----------
    f, sigma
        (nf,) frequencies (Hz) and weights (delta log10 f).
    power
        (npix, nf) spectra in specfit's ``variance`` units; each is divided by ``unit``
        (:func:`original_unit`), like the bounds of the parameters in the spectra's unit.
    model
        One of :data:`ORIGINAL_MODELS` with finite bounds (:func:`check_original`).
    active
        (npix,) rows to fit; the others are left NaN with status 0 (the caller sets theirs).

    Returns
    -------
    dict
        ``params``, ``errors`` (npix, npar) in the spectra's units (errors from curve_fit's
        covariance, scaled by chi2 / (n - p) as the original's; NaN for a parameter on a
        bound and where scipy could not estimate it), ``s2`` (raw weighted chi-square in
        the spectra's units), ``F`` (s2 / 2), ``c_eff``, ``status`` (0 converged, 6 no
        covariance, 7 a parameter on a bound, 10 a call raised) and ``nfev``.
    """
    npix, nf = power.shape
    k = model.npar
    pw = model.power_params
    conv = np.where(pw, float(unit), 1.0)
    lo, hi = model.bounds_for(f)
    bounds = (lo / conv, hi / conv)
    P = np.full((npix, k), np.nan)
    E = np.full((npix, k), np.nan)
    s2 = np.full(npix, np.nan)
    status = np.zeros(npix, dtype=np.int8)
    nfev = np.zeros(npix, dtype=np.int32)
    func = ORIGINAL_MODELS[model.name]
    for i in np.flatnonzero(active):
        s = power[i] / unit
        p, cov, nfev[i] = fit_spectrum(model.name, f, s, sigma, bounds)
        if p is None:
            status[i] = RAISED
            continue
        # the original's chi-square (its units), in the spectra's units
        s2[i] = float((((s - func(f, *p)) / sigma) ** 2).sum()) * unit * unit
        with np.errstate(invalid="ignore"):
            err = np.sqrt(np.diag(cov))
        inside = (bounds[0] < p) & (p < bounds[1])
        err = np.where(inside & np.isfinite(err), err, np.nan)
        P[i] = p * conv
        E[i] = err * conv
        if not inside.all():
            status[i] = 7
        elif not np.isfinite(err).all():
            status[i] = 6
    with np.errstate(divide="ignore", invalid="ignore"):
        c_eff = (nf - k) / s2
    return {
        "params": P,
        "errors": E,
        "F": 0.5 * s2,
        "s2": s2,
        "c_eff": c_eff,
        "status": status,
        "nfev": nfev,
    }
