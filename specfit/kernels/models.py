"""Spectral models: pure line-shape functions under a thin declarative object.

A model is declared the lmfit way: a plain function whose first argument is the independent
variable and whose other arguments are the parameters, with a one-line formula docstring::

    def powerlaw_tail(lnf, amplitude, index, tail):
        "A f^-n + C"
        return amplitude * np.exp(-index * lnf) + tail

The first argument is named ``f`` (frequency in Hz) or ``lnf`` (its natural log, which the
engine precomputes once per block: power laws and bumps in ln f then cost one ``exp`` per
bin). :func:`define_model` turns such a function (plus units, bounds, an optional analytic
jacobian and an optional guess function) into a :class:`Model`; :func:`register_model` makes
it available by name to configs. The shipped models below are defined through exactly this
public mechanism.

Functions must be written with numpy arithmetic that works both on broadcast arrays (for
:meth:`Model.evaluate`) and inside numba (the solver compiles them with ``numba.njit``).
Parameters whose unit is ``"power"`` must scale the model linearly (doubling all of them
doubles the model): the solver relies on that to normalise every pixel to unit mean power.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

__all__ = [
    "Model",
    "define_model",
    "get_model",
    "register_model",
    "available_models",
    "load_user_models",
    "check_output",
    "powerlaw_tail",
    "powerlaw_tail_lorentzian",
    "powerlaw_tail_lognormal",
]

INF = math.inf


def _njit_cached(fn: Callable) -> Callable:
    import numba

    return numba.njit(cache=True, nogil=True)(fn)


@dataclass(frozen=True)
class Model:
    """A spectral model: formula, parameter names, units, bounds, guesses and jacobian.

    Build one with :func:`define_model` rather than by hand.

    Attributes
    ----------
    name
        Registry name used in configs (``fit.models``).
    param_names, units, long_names, bounds
        One entry per parameter, in the order of the function's arguments. Bounds are
        ``(low, high)`` in natural units; ``-inf``/``inf`` for none.
    formula
        One-line formula (the function's docstring by default).
    func
        ``func(x, *params)`` with ``x`` = f (Hz) or ln f depending on :attr:`independent`.
    jac
        Optional ``jac(x, *params)`` returning one derivative array (or scalar) per parameter;
        None means the solver uses central differences.
    guess_func
        ``guess_func(f, power, dof, base)`` returning ``(npix, npar)`` starting values in
        natural units, or ``(npix, ncand, npar)`` candidate starts (the solver ranks them by
        objective and iterates from the best ``multistart``); ``base`` is the fitted
        parameters of :attr:`base` (or None).
    components_spec
        ``(label, function)`` pairs; each function takes ``x`` and a subset of the parameters
        by name, for plots (``{"power law": ..., "tail": ..., "bump": ...}``).
    base
        Name of a smaller model whose parameters are this model's first parameters and which
        this model reduces to on a bound (e.g. M1 inside M2, with bump amplitude 0). Enables
        the nested comparisons (likelihood-ratio and F tests).
    data_bounds
        Optional ``data_bounds(f) -> {param: (low, high)}`` for bounds that depend on the
        frequency grid (a bump centre inside the fitted range); intersected with ``bounds``.
    independent
        ``"f"`` or ``"lnf"``: the name of ``func``'s first argument.
    kernel
        Optional fused numba-compilable ``kernel(x, p, m, J, want_jac)`` writing the model
        (nf,) and, if ``want_jac``, the jacobian (nf, npar) in place: a speed-up only (one
        pass, shared ``exp``); it must agree with ``func``/``jac`` (tests check the shipped
        ones). Without it the solver compiles a kernel from ``func`` and ``jac``.
    log_params
        Strictly positive scale parameters the solver works on as ln(p) (the power-law
        amplitude, which may have to move by decades between start and optimum). Reported
        values and errors stay in natural units.
    """

    name: str
    param_names: tuple[str, ...]
    units: tuple[str, ...]
    long_names: tuple[str, ...]
    bounds: tuple[tuple[float, float], ...]
    formula: str
    func: Callable = field(repr=False, compare=False, default=None)
    jac: Callable | None = field(repr=False, compare=False, default=None)
    guess_func: Callable | None = field(repr=False, compare=False, default=None)
    components_spec: tuple[tuple[str, Callable], ...] = field(repr=False, compare=False, default=())
    base: str | None = None
    data_bounds: Callable | None = field(repr=False, compare=False, default=None)
    independent: str = "f"
    kernel: Callable | None = field(repr=False, compare=False, default=None)
    log_params: tuple[str, ...] = ()

    @property
    def npar(self) -> int:
        """Number of parameters."""
        return len(self.param_names)

    def abscissa(self, f: np.ndarray) -> np.ndarray:
        """The model's independent variable at frequencies ``f`` Hz: ln f or f (float64)."""
        f = np.asarray(f, dtype=np.float64)
        return np.log(f) if self.independent == "lnf" else f

    def evaluate(self, f: np.ndarray, p: np.ndarray) -> np.ndarray:
        """Model power at frequencies ``f`` (nf,) Hz for parameters ``p`` (npix, npar).

        Returns
        -------
        numpy.ndarray
            (npix, nf) float64.
        """
        p = _as_params(p, self.npar)
        x = self.abscissa(f)[None, :]
        cols = [p[:, i : i + 1] for i in range(self.npar)]
        out = self.func(x, *cols)
        return np.broadcast_to(out, (p.shape[0], x.shape[1])).astype(np.float64)

    def jacobian(self, f: np.ndarray, p: np.ndarray) -> np.ndarray:
        """Derivatives of the model with respect to each parameter, (npix, nf, npar).

        Uses the analytic jacobian when the model has one, otherwise central differences.
        """
        p = _as_params(p, self.npar)
        x = self.abscissa(f)[None, :]
        npix, nf = p.shape[0], x.shape[1]
        out = np.empty((npix, nf, self.npar))
        if self.jac is not None:
            cols = [p[:, i : i + 1] for i in range(self.npar)]
            for j, d in enumerate(self.jac(x, *cols)):
                out[:, :, j] = np.broadcast_to(d, (npix, nf))
            return out
        for j in range(self.npar):
            h = _fd_step(p[:, j])
            hi, lo = p.copy(), p.copy()
            hi[:, j] += h
            lo[:, j] -= h
            out[:, :, j] = (self.evaluate(f, hi) - self.evaluate(f, lo)) / (2 * h[:, None])
        return out

    def guess(
        self,
        f: np.ndarray,
        power: np.ndarray,
        dof: float | np.ndarray = 2.0,
        base: np.ndarray | None = None,
    ) -> np.ndarray:
        """Data-driven starting values, (npix, npar) in natural units.

        Parameters
        ----------
        f
            (nf,) frequencies in Hz.
        power
            (npix, nf) power.
        dof
            Degrees of freedom of each power value (2 per segment and box pixel).
        base
            Fitted parameters of the nested :attr:`base` model, if known (better seeds).
        """
        power = np.atleast_2d(np.asarray(power, dtype=np.float64))
        if self.guess_func is None:
            raise ValueError(
                f"model {self.name!r} has no guess function; give define_model(guess=...)"
            )
        g = np.asarray(self.guess_func(np.asarray(f, np.float64), power, dof, base), np.float64)
        if g.ndim == 3:  # candidate starts, best-ranked first: the first is the guess
            g = g[:, 0, :]
        return g.reshape(power.shape[0], self.npar)

    def components(self, f: np.ndarray, p: np.ndarray) -> dict[str, np.ndarray]:
        """The model's additive parts for plots, each (npix, nf), e.g. power law, tail, bump."""
        p = _as_params(p, self.npar)
        x = self.abscissa(f)[None, :]
        out = {}
        for label, fn in self.components_spec:
            names = list(inspect.signature(fn).parameters)[1:]
            cols = [p[:, self.param_names.index(n)][:, None] for n in names]
            out[label] = np.broadcast_to(fn(x, *cols), (p.shape[0], x.shape[1])).astype(float)
        return out

    def with_bounds(self, overrides: Mapping[str, Sequence[float]]) -> Model:
        """A copy with some bounds replaced, e.g. ``{"index": (0.5, 4.0)}`` (natural units)."""
        bounds = list(self.bounds)
        for pname, b in overrides.items():
            if pname not in self.param_names:
                raise ValueError(
                    f"fit.bounds.{self.name}: unknown parameter {pname!r}; "
                    f"parameters are {', '.join(self.param_names)}"
                )
            lo, hi = (float(v) for v in b)
            if not lo < hi:
                raise ValueError(f"fit.bounds.{self.name}.{pname}: needs low < high, got {b}")
            bounds[self.param_names.index(pname)] = (lo, hi)
        return replace(self, bounds=tuple(bounds))

    def bounds_for(self, f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(low, high) arrays of the bounds on this frequency grid (static ∩ data bounds)."""
        lo = np.array([b[0] for b in self.bounds], dtype=np.float64)
        hi = np.array([b[1] for b in self.bounds], dtype=np.float64)
        if self.data_bounds is not None:
            for pname, (dlo, dhi) in self.data_bounds(np.asarray(f, np.float64)).items():
                i = self.param_names.index(pname)
                lo[i] = max(lo[i], dlo)
                hi[i] = min(hi[i], dhi)
        return lo, hi

    @property
    def power_params(self) -> np.ndarray:
        """Boolean mask of the parameters in power units (scaled per pixel by the solver)."""
        return np.array([u == "power" for u in self.units])


def _as_params(p: np.ndarray, npar: int) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    if p.ndim == 1:
        p = p[None, :]
    if p.shape[-1] != npar:
        raise ValueError(f"expected {npar} parameters per pixel, got array of shape {p.shape}")
    return p


def _fd_step(p: np.ndarray) -> np.ndarray:
    # cube root of machine epsilon balances truncation and rounding for central differences
    return 6e-6 * np.maximum(np.abs(p), 1e-6)


def define_model(
    func: Callable,
    *,
    name: str | None = None,
    units: Mapping[str, str],
    bounds: Mapping[str, Sequence[float]] | None = None,
    long_names: Mapping[str, str] | None = None,
    jac: Callable | None = None,
    guess: Callable | None = None,
    components: Mapping[str, Callable] | None = None,
    base: str | None = None,
    data_bounds: Callable | None = None,
    formula: str | None = None,
    kernel: Callable | None = None,
    log_params: Sequence[str] = (),
) -> Model:
    """Declare a model from a line-shape function.

    Parameters
    ----------
    func
        ``func(f, p1, p2, ...)`` or ``func(lnf, p1, ...)``: the parameter names are taken
        from the signature; the first line of the docstring is the formula.
    name
        Registry name (default: the function's name).
    units
        Parameter -> unit. Use ``"power"`` for parameters that scale the model linearly.
    bounds
        Parameter -> (low, high) in natural units; missing ones are unbounded.
    long_names
        Parameter -> human-readable name (default: the parameter name).
    jac
        Optional analytic jacobian with the same signature as ``func`` returning a tuple of
        derivatives (arrays or scalars), one per parameter, in order.
    guess
        ``guess(f, power, dof, base) -> (npix, npar)`` starting values in natural units.
        Without one, starting values are the parameters' ``default`` from the signature
        (power-unit defaults are multiplied by each pixel's mean power).
    components, base, data_bounds, formula, kernel, log_params
        See :class:`Model`.

    Returns
    -------
    Model
    """
    sig = inspect.signature(func)
    args = list(sig.parameters.values())
    if len(args) < 2:
        raise ValueError(f"model function {func.__name__} needs (f or lnf, *parameters)")
    independent = args[0].name
    if independent not in ("f", "lnf"):
        raise ValueError(
            f"model function {func.__name__}: first argument must be named 'f' (Hz) or 'lnf' "
            f"(ln Hz), got {independent!r}"
        )
    pnames = tuple(a.name for a in args[1:])
    bounds = dict(bounds or {})
    long_names = dict(long_names or {})
    missing = [p for p in pnames if p not in units]
    if missing:
        raise ValueError(f"model {name or func.__name__}: units missing for {missing}")
    for key in list(bounds) + list(long_names) + list(log_params):
        if key not in pnames:
            raise ValueError(f"model {name or func.__name__}: unknown parameter {key!r}")
    if guess is None:
        defaults = [a.default for a in args[1:]]
        if any(d is inspect.Parameter.empty for d in defaults):
            raise ValueError(
                f"model {name or func.__name__}: give guess=... or a default value for every "
                "parameter in the function signature"
            )
        guess = _default_guess(
            np.array(defaults, float), np.array([units[p] == "power" for p in pnames])
        )
    if formula is None:
        formula = (inspect.getdoc(func) or func.__name__).strip().splitlines()[0]
    comp = tuple((label, fn) for label, fn in (components or {}).items())
    return Model(
        name=name or func.__name__,
        param_names=pnames,
        units=tuple(units[p] for p in pnames),
        long_names=tuple(long_names.get(p, p.replace("_", " ")) for p in pnames),
        bounds=tuple(tuple(float(v) for v in bounds.get(p, (-INF, INF))) for p in pnames),
        formula=formula,
        func=func,
        jac=jac,
        guess_func=guess,
        components_spec=comp,
        base=base,
        data_bounds=data_bounds,
        independent=independent,
        kernel=kernel,
        log_params=tuple(log_params),
    )


def _default_guess(defaults: np.ndarray, is_power: np.ndarray) -> Callable:
    def guess(f, power, dof, base):
        scale = np.nanmean(power, axis=1, keepdims=True)
        g = np.broadcast_to(defaults, (power.shape[0], defaults.size)).copy()
        g[:, is_power] *= scale
        return g

    return guess


# --------------------------------------------------------------------------------------
# Shipped line shapes (pure functions; one-line formula docstrings).


def powerlaw_tail(lnf, amplitude, index, tail):
    """P(f) = A f^-n + C"""
    return amplitude * np.exp(-index * lnf) + tail


def powerlaw_tail_jac(lnf, amplitude, index, tail):
    """Analytic derivatives of ``powerlaw_tail``."""
    e = np.exp(-index * lnf)
    return e, -amplitude * lnf * e, 1.0 + 0.0 * lnf


def powerlaw_tail_lorentzian(lnf, amplitude, index, tail, bump_amplitude, bump_center, bump_width):
    """P(f) = A f^-n + C + alpha / (1 + ((ln f - beta) / sigma)^2)"""
    u = (lnf - bump_center) / bump_width
    return amplitude * np.exp(-index * lnf) + tail + bump_amplitude / (1.0 + u * u)


def powerlaw_tail_lorentzian_jac(
    lnf, amplitude, index, tail, bump_amplitude, bump_center, bump_width
):
    """Analytic derivatives of ``powerlaw_tail_lorentzian``."""
    e = np.exp(-index * lnf)
    u = (lnf - bump_center) / bump_width
    q = 1.0 / (1.0 + u * u)
    # d/du of alpha q = -2 alpha u q^2; du/dbeta = -1/sigma; du/dsigma = -u/sigma
    dq = 2.0 * bump_amplitude * u * q * q / bump_width
    return e, -amplitude * lnf * e, 1.0 + 0.0 * lnf, q, dq, dq * u


def powerlaw_tail_lognormal(lnf, amplitude, index, tail, bump_amplitude, bump_center, bump_width):
    """P(f) = A f^-n + C + alpha exp(-(ln f - beta)^2 / (2 sigma^2))"""
    u = (lnf - bump_center) / bump_width
    return amplitude * np.exp(-index * lnf) + tail + bump_amplitude * np.exp(-0.5 * u * u)


def powerlaw_tail_lognormal_jac(
    lnf, amplitude, index, tail, bump_amplitude, bump_center, bump_width
):
    """Analytic derivatives of ``powerlaw_tail_lognormal``."""
    e = np.exp(-index * lnf)
    u = (lnf - bump_center) / bump_width
    g = np.exp(-0.5 * u * u)
    # d/dbeta = alpha g u / sigma; d/dsigma = alpha g u^2 / sigma
    dc = bump_amplitude * g * u / bump_width
    return e, -amplitude * lnf * e, 1.0 + 0.0 * lnf, g, dc, dc * u


def _power_law_part(lnf, amplitude, index):
    """A f^-n"""
    return amplitude * np.exp(-index * lnf)


def _tail_part(lnf, tail):
    """C"""
    return tail + 0.0 * lnf


def _lorentzian_part(lnf, bump_amplitude, bump_center, bump_width):
    """alpha / (1 + ((ln f - beta) / sigma)^2)"""
    u = (lnf - bump_center) / bump_width
    return bump_amplitude / (1.0 + u * u)


def _lognormal_part(lnf, bump_amplitude, bump_center, bump_width):
    """alpha exp(-(ln f - beta)^2 / (2 sigma^2))"""
    u = (lnf - bump_center) / bump_width
    return bump_amplitude * np.exp(-0.5 * u * u)


def _log_bias(dof: float | np.ndarray) -> np.ndarray:
    """E[ln(chi2_nu / nu)] = psi(nu/2) - ln(nu/2): the mean offset of log periodogram values."""
    from scipy.special import digamma

    k = np.asarray(dof, dtype=np.float64) / 2.0
    return digamma(k) - np.log(k)


def guess_powerlaw_tail(
    f: np.ndarray, power: np.ndarray, dof: float | np.ndarray = 2.0, base=None
) -> np.ndarray:
    """M1 start: tail from the top 15 % of bins, then a log-log line where the power law rules.

    The tail is the mean power of the highest frequencies. The straight line in log-log
    space is fitted to ln(power) over the bins whose 5-bin smoothed power exceeds three times
    that tail (the power-law range; at least the lowest 5 % of bins), with the mean offset of
    log chi-square values for ``dof`` removed, then refitted three times after removing the tail's
    share ln(1 + C / A f^-n). Finally the tail is lowered by what the power law still
    contributes at the top.
    """
    power = np.atleast_2d(np.asarray(power, np.float64))
    lnf = np.log(np.asarray(f, np.float64))
    bias = np.broadcast_to(_log_bias(np.asarray(dof, np.float64)), (power.shape[0],))
    out = np.empty((power.shape[0], 3))
    _guess_m1_rows(lnf, np.ascontiguousarray(power), np.ascontiguousarray(bias, np.float64), out)
    return out


@_njit_cached
def _guess_m1_rows(lnf, power, bias, out):
    """Per-pixel body of :func:`guess_powerlaw_tail` (numba: no (npix, nf) temporaries)."""
    npix, nf = power.shape
    nhi = max(int(round(0.15 * nf)), 2)
    nmin = min(max(int(0.05 * nf), 3), nf)
    xhi = 0.0
    for i in range(nf - nhi, nf):
        xhi += lnf[i]
    xhi /= nhi
    for r in range(npix):
        y = power[r]
        high = 0.0
        for i in range(nf - nhi, nf):
            high += y[i]
        high /= nhi
        # a prefix of bins, not every bin above the threshold: picking single bins by their
        # noisy values would favour upward fluctuations near the crossover and flatten the
        # slope; the 5-bin running mean tames the chi-square scatter for the threshold
        nsel = nmin
        for i in range(nf):
            acc = 0.0
            for j in range(i - 2, i + 3):
                acc += y[min(max(j, 0), nf - 1)]
            if acc / 5.0 > 3.0 * high:
                nsel = max(nsel, i + 1)
            else:
                break
        floor = 1e-12 * max(high, 1e-300)  # zero bins of a raw periodogram
        xm = 0.0
        for i in range(nsel):
            xm += lnf[i]
        xm /= nsel
        sxx = 0.0
        for i in range(nsel):
            sxx += (lnf[i] - xm) ** 2
        sxx = max(sxx, 1e-300)
        index = 0.0
        lnA = 0.0
        ly = np.empty(nsel)
        for i in range(nsel):
            ly[i] = np.log(max(y[i], floor)) - bias[r]
        for it in range(4):
            # later passes: remove the tail's share ln(1 + C / A f^-n) in the selected bins
            zm = 0.0
            sxy = 0.0
            for i in range(nsel):
                z = ly[i]
                if it > 0:
                    pl = np.exp(min(max(lnA - index * lnf[i], -700.0), 700.0))
                    z -= np.log1p(high / max(pl, 1e-300))
                zm += z
                sxy += (lnf[i] - xm) * z
            zm /= nsel
            index = -sxy / sxx
            lnA = zm + index * xm
        pl_high = np.exp(min(max(lnA - index * xhi, -700.0), 700.0))
        out[r, 0] = np.exp(min(max(lnA, -700.0), 700.0))
        out[r, 1] = index
        out[r, 2] = max(high - pl_high, 0.1 * high)


def _bump_grid(lnf: np.ndarray, width: float, ngrid: int = 32) -> tuple[np.ndarray, np.ndarray]:
    centres = np.linspace(lnf[0], lnf[-1], ngrid)
    w = np.exp(-0.5 * ((lnf[None, :] - centres[:, None]) / width) ** 2)
    w /= w.sum(axis=1, keepdims=True)
    return centres, w


def bump_seeds(
    f: np.ndarray,
    power: np.ndarray,
    m1: np.ndarray,
    width: float,
    nseeds: int = 1,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Bump seeds from the peaks of the M1 residual ratio smoothed over a grid in ln f.

    Parameters
    ----------
    f, power
        (nf,) Hz and (npix, nf) power.
    m1
        (npix, nf) the fitted (or guessed) M1 model.
    width
        Smoothing width in ln f (also the seed bump width).
    nseeds
        Number of distinct peaks returned (best first), for multistart.

    Returns
    -------
    list of (amplitude, centre) pairs, each (npix,).
    """
    lnf = np.log(np.asarray(f, np.float64))
    centres, w = _bump_grid(lnf, width)
    with np.errstate(divide="ignore", invalid="ignore"):
        excess = power / m1 - 1.0
    excess = np.where(np.isfinite(excess), excess, 0.0)
    mean_excess = excess @ w.T  # (npix, ngrid): mean relative excess near each centre
    # choose by significance, not by size: near the low-f end few bins fall in a window
    # (uniform f is sparse in ln f) and their mean is noisy
    sc = mean_excess / np.sqrt((w * w).sum(axis=1))[None, :]
    out = []
    rows = np.arange(power.shape[0])
    # exclude neighbours of a chosen peak so that later seeds try another place
    excl = max(1, int(np.ceil(width / max(centres[1] - centres[0], 1e-12))))
    for _ in range(nseeds):
        j = np.argmax(sc, axis=1)
        c = centres[j]
        m1c = _interp_rows(c, lnf, m1)
        amp = np.maximum(mean_excess[rows, j], 0.1) * m1c
        out.append((amp, c))
        for d in range(-excl, excl + 1):
            jj = np.clip(j + d, 0, len(centres) - 1)
            sc[rows, jj] = -np.inf
    return out


def _interp_rows(x: np.ndarray, grid: np.ndarray, values: np.ndarray) -> np.ndarray:
    """values[i] interpolated at x[i] on the common grid, vectorised over rows."""
    j = np.clip(np.searchsorted(grid, x) - 1, 0, grid.size - 2)
    t = np.clip((x - grid[j]) / (grid[j + 1] - grid[j]), 0.0, 1.0)
    rows = np.arange(values.shape[0])
    return values[rows, j] * (1 - t) + values[rows, j + 1] * t


def _bump_width_seed(lnf: np.ndarray, lo: float, hi: float) -> float:
    return float(np.clip(0.08 * (lnf[-1] - lnf[0]), lo, hi))


def _make_bump_guess(bump_width_bounds: tuple[float, float]) -> Callable:
    def guess(f, power, dof=2.0, base=None, nstart=1):
        """Candidate starts (npix, ncand, npar): bumps at the strongest residual peaks.

        Residuals are taken against the fitted M1 (``base``) and against the M1 guess: a
        strong bump drags the M1 fit (flatter index) so that its residual peak can sit at
        the wrong end, while the guess (power law from the low end, tail from the top) is
        not dragged. The solver ranks all candidates by their objective and iterates from
        the best ``multistart`` of them.
        """
        power = np.atleast_2d(np.asarray(power, np.float64))
        lnf = np.log(np.asarray(f, np.float64))
        width = _bump_width_seed(lnf, *bump_width_bounds)
        m1_sets = [guess_powerlaw_tail(f, power, dof)]
        if base is not None:
            m1_sets.insert(0, np.asarray(base, np.float64)[:, :3])
        npeak = max(2, nstart)
        starts = []
        for m1p in m1_sets:
            m1 = M1.evaluate(f, m1p)
            for amp, centre in bump_seeds(f, power, m1, width, npeak):
                starts.append(np.column_stack([m1p, amp, centre, np.full(power.shape[0], width)]))
        return np.stack(starts, axis=1)

    return guess


def _bump_data_bounds(f: np.ndarray) -> dict[str, tuple[float, float]]:
    # a bump centred outside the fitted range is a power law in disguise
    return {"bump_center": (float(np.log(f[0])), float(np.log(f[-1])))}


@_njit_cached
def _powerlaw_tail_kernel(x, p, m, J, want_jac):
    """Fused A f^-n + C and its jacobian (one exp per bin)."""
    amp, index, tail = p[0], p[1], p[2]
    for i in range(x.shape[0]):
        e = np.exp(-index * x[i])
        m[i] = amp * e + tail
        if want_jac:
            J[i, 0] = e
            J[i, 1] = -amp * x[i] * e
            J[i, 2] = 1.0


@_njit_cached
def _lorentzian_kernel(x, p, m, J, want_jac):
    """Fused M1 + alpha / (1 + ((ln f - beta) / sigma)^2) and its jacobian."""
    amp, index, tail, alpha, beta, sigma = p[0], p[1], p[2], p[3], p[4], p[5]
    for i in range(x.shape[0]):
        e = np.exp(-index * x[i])
        u = (x[i] - beta) / sigma
        q = 1.0 / (1.0 + u * u)
        m[i] = amp * e + tail + alpha * q
        if want_jac:
            dq = 2.0 * alpha * u * q * q / sigma
            J[i, 0] = e
            J[i, 1] = -amp * x[i] * e
            J[i, 2] = 1.0
            J[i, 3] = q
            J[i, 4] = dq
            J[i, 5] = dq * u


@_njit_cached
def _lognormal_kernel(x, p, m, J, want_jac):
    """Fused M1 + alpha exp(-(ln f - beta)^2 / (2 sigma^2)) and its jacobian."""
    amp, index, tail, alpha, beta, sigma = p[0], p[1], p[2], p[3], p[4], p[5]
    for i in range(x.shape[0]):
        e = np.exp(-index * x[i])
        u = (x[i] - beta) / sigma
        g = np.exp(-0.5 * u * u)
        m[i] = amp * e + tail + alpha * g
        if want_jac:
            dc = alpha * g * u / sigma
            J[i, 0] = e
            J[i, 1] = -amp * x[i] * e
            J[i, 2] = 1.0
            J[i, 3] = g
            J[i, 4] = dc
            J[i, 5] = dc * u


@_njit_cached
def shipped_eval(kid, x, p, m, J, want_jac):
    """Evaluate shipped model ``kid`` (see ``SHIPPED_KERNEL_IDS``): lets the solver for the
    shipped models be compiled once and cached on disk (numba cannot cache a function that
    receives another compiled function as an argument)."""
    if kid == 0:
        _powerlaw_tail_kernel(x, p, m, J, want_jac)
    elif kid == 1:
        _lorentzian_kernel(x, p, m, J, want_jac)
    else:
        _lognormal_kernel(x, p, m, J, want_jac)


_M1_UNITS = {"amplitude": "power", "index": "1", "tail": "power"}
_M1_BOUNDS = {"amplitude": (0.0, INF), "index": (-1.0, 10.0), "tail": (0.0, INF)}
_M1_LONG = {
    "amplitude": "power-law amplitude A (power at 1 Hz)",
    "index": "power-law index n",
    "tail": "constant tail C (white-noise level)",
}
_BUMP_UNITS = {"bump_amplitude": "power", "bump_center": "ln(Hz)", "bump_width": "ln(Hz)"}
_BUMP_WIDTH = (0.05, 2.0)
_BUMP_BOUNDS = {"bump_amplitude": (0.0, INF), "bump_center": (-INF, INF), "bump_width": _BUMP_WIDTH}
_BUMP_LONG = {
    "bump_amplitude": "bump amplitude alpha",
    "bump_center": "bump centre beta (ln of frequency in Hz)",
    "bump_width": "bump width sigma (in ln f)",
}

M1 = define_model(
    powerlaw_tail,
    units=_M1_UNITS,
    bounds=_M1_BOUNDS,
    long_names=_M1_LONG,
    jac=powerlaw_tail_jac,
    guess=guess_powerlaw_tail,
    components={"power law": _power_law_part, "tail": _tail_part},
    kernel=_powerlaw_tail_kernel,
    log_params=("amplitude",),
)


def _bump_model(func, jac, bump_part, kernel) -> Model:
    """M1 plus a bump in ln f: the shipped M2 variants differ only in the bump's shape."""
    return define_model(
        func,
        units={**_M1_UNITS, **_BUMP_UNITS},
        bounds={**_M1_BOUNDS, **_BUMP_BOUNDS},
        long_names={**_M1_LONG, **_BUMP_LONG},
        jac=jac,
        guess=_make_bump_guess(_BUMP_WIDTH),
        components={"power law": _power_law_part, "tail": _tail_part, "bump": bump_part},
        base="powerlaw_tail",
        data_bounds=_bump_data_bounds,
        kernel=kernel,
        log_params=("amplitude",),
    )


M2_LORENTZIAN = _bump_model(
    powerlaw_tail_lorentzian, powerlaw_tail_lorentzian_jac, _lorentzian_part, _lorentzian_kernel
)
M2_LOGNORMAL = _bump_model(
    powerlaw_tail_lognormal, powerlaw_tail_lognormal_jac, _lognormal_part, _lognormal_kernel
)

_SHIPPED = {m.name: m for m in (M1, M2_LORENTZIAN, M2_LOGNORMAL)}
_REGISTRY: dict[str, Model] = dict(_SHIPPED)


def register_model(model: Model) -> None:
    """Make ``model`` available by name (``fit.models`` in configs, :func:`get_model`).

    Re-registering a user model under the same name replaces it; shipped names are reserved.
    """
    if not isinstance(model, Model):
        raise TypeError(f"register_model expects a Model (from define_model), got {type(model)}")
    if model.name in _SHIPPED and _SHIPPED[model.name] is not model:
        raise ValueError(f"model name {model.name!r} is a shipped model; choose another name")
    _REGISTRY[model.name] = model


def get_model(name: str | Model) -> Model:
    """The registered model called ``name`` (a Model is returned unchanged)."""
    if isinstance(name, Model):
        return name
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(
            f"unknown model {name!r}; available: {', '.join(available_models())}. "
            "Register your own with fit.user_models (a .py file or module)."
        ) from None


def available_models() -> list[str]:
    """Names of all registered models."""
    return sorted(_REGISTRY)


def load_user_models(specs: Sequence[str]) -> list[str]:
    """Import user model files or modules and register the models they define.

    Each entry is a path to a ``.py`` file or an importable module name. A module may call
    :func:`register_model` itself; any :class:`Model` left at its top level is registered too.

    Returns
    -------
    list of str
        Names of the models the modules registered or defined.
    """
    names: list[str] = []
    for spec in specs:
        before = dict(_REGISTRY)
        if spec.endswith(".py"):
            path = Path(spec).expanduser()
            if not path.is_file():
                raise FileNotFoundError(
                    f"fit.user_models: {spec} does not exist; give a .py file path or a module name"
                )
            modname = f"specfit_user_models_{path.stem}_{abs(hash(str(path.resolve())))}"
            ispec = importlib.util.spec_from_file_location(modname, path)
            module = importlib.util.module_from_spec(ispec)
            sys.modules[modname] = module
            try:
                ispec.loader.exec_module(module)
            except Exception as exc:
                raise ImportError(f"fit.user_models: error while importing {spec}: {exc}") from exc
        else:
            try:
                module = importlib.import_module(spec)
            except ImportError as exc:
                raise ImportError(
                    f"fit.user_models: cannot import module {spec!r} ({exc}); "
                    "give a .py file path or an importable module name"
                ) from exc
        for obj in vars(module).values():
            if isinstance(obj, Model) and _REGISTRY.get(obj.name) is not obj:
                if obj.name not in _SHIPPED:
                    register_model(obj)
        new = [n for n, m in _REGISTRY.items() if before.get(n) is not m]
        for obj in vars(module).values():
            if isinstance(obj, Model) and obj.name not in new and obj.name not in _SHIPPED:
                new.append(obj.name)
        if not new:
            raise ValueError(
                f"fit.user_models: {spec} defines no model; call register_model(define_model(...))"
            )
        names.extend(n for n in new if n not in names)
    return names


def check_output(model: Model, f: np.ndarray) -> None:
    """Check that a user model gives one finite-or-NaN value per frequency on this grid.

    A function returning a scalar (it ignores ``f``) or an array of another length would
    otherwise be broadcast into finite nonsense, or fail inside every tile. Shipped models
    are not checked (their tests cover them).

    Raises
    ------
    ValueError
        Naming the model, the file that defines it and what it returned.
    """
    if _SHIPPED.get(model.name) is not None:
        return
    f = np.asarray(f, dtype=np.float64)
    lo, hi = model.bounds_for(f)
    # Any admissible point will do: the middle of finite bounds, else next to a bound, else 1.
    with np.errstate(invalid="ignore"):  # inf - inf in the branches np.where discards
        p = np.where(
            np.isfinite(lo) & np.isfinite(hi),
            (lo + hi) / 2,
            np.where(np.isfinite(lo), lo + 1.0, np.where(np.isfinite(hi), hi - 1.0, 1.0)),
        )
    code = getattr(model.func, "__code__", None)
    where = f"model {model.name!r} (defined in {code.co_filename})" if code else repr(model.name)
    x = model.abscissa(f)
    try:
        out = np.asarray(model.func(x, *p))
    except Exception as exc:
        raise ValueError(
            f"{where} fails on the frequency grid ({type(exc).__name__}: {exc}); fix the function"
        ) from None
    if out.shape != x.shape:
        got = "a scalar" if out.ndim == 0 else f"an array of shape {out.shape}"
        raise ValueError(
            f"{where} returned {got} for {x.size} frequencies; it must return one value per "
            "frequency, the shape of its first argument (write a constant as c + 0 * f)"
        )


# --------------------------------------------------------------------------------------
# numba kernels: each model's function (and jacobian) compiled for the solver.

# Cached: numba compiles each model's kernel once per process (seconds, not per tile).
_KERNELS: dict[int, object] = {}


def numba_kernel(model: Model):
    """A numba function ``kernel(x, p, m, J, want_jac)`` filling m (nf,) and J (nf, npar).

    Generated from the model's own line-shape function (and jacobian, or central
    differences when it has none), compiled once per process and model.
    """
    key = id(model.func), id(model.jac), id(model.kernel)
    if key in _KERNELS:
        return _KERNELS[key][0]
    import numba

    if model.kernel is not None:
        k = model.kernel
        kernel = k if isinstance(k, numba.core.dispatcher.Dispatcher) else numba.njit(nogil=True)(k)
        _KERNELS[key] = (kernel, model)
        return kernel

    try:
        fn = numba.njit(nogil=True)(model.func)
        jac = numba.njit(nogil=True)(model.jac) if model.jac is not None else None
    except Exception as exc:  # pragma: no cover - numba raises at call time, not here
        raise TypeError(f"model {model.name}: cannot compile with numba: {exc}") from exc
    n = model.npar
    args = ", ".join(f"p[{i}]" for i in range(n))
    lines = ["def kernel(x, p, m, J, want_jac):", f"    m[:] = fn(x, {args})", "    if want_jac:"]
    if jac is not None:
        lines.append(f"        d = jac(x, {args})")
        lines += [f"        J[:, {j}] = d[{j}]" for j in range(n)]
    else:
        lines.append("        q = p.copy()")
        for j in range(n):
            lines += [
                f"        h = 6e-6 * max(abs(p[{j}]), 1e-6)",
                f"        q[{j}] = p[{j}] + h",
                "        up = fn(x, " + ", ".join(f"q[{i}]" for i in range(n)) + ")",
                f"        q[{j}] = p[{j}] - h",
                "        dn = fn(x, " + ", ".join(f"q[{i}]" for i in range(n)) + ")",
                f"        q[{j}] = p[{j}]",
                f"        J[:, {j}] = (up - dn) / (2.0 * h)",
            ]
    ns = {"fn": fn, "jac": jac, "np": np}
    exec("\n".join(lines), ns)  # noqa: S102 - generated from parameter count only
    kernel = numba.njit(nogil=True)(ns["kernel"])
    _KERNELS[key] = (kernel, model)  # keep model alive so id() keys stay unique
    return kernel


# the shipped kernels by id, for the solver's cached entry point (see shipped_eval)
SHIPPED_KERNEL_IDS = {
    id(_powerlaw_tail_kernel): 0,
    id(_lorentzian_kernel): 1,
    id(_lognormal_kernel): 2,
}
