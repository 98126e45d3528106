"""Spectral models built from components: parameters, line shapes, ``+``, the registry.

A :class:`Parameter` is declared once (name, unit, bounds, default, log-scaled,
description). A :class:`Component` is a line shape from :mod:`specfit.kernels.lineshapes`
(value and analytic derivatives written once) with its parameters. Components add up to a
:class:`Model`; the fused numba kernel and the solver that fits it are generated from the
components (:mod:`specfit.kernels.compile`). A model also declares its derived outputs
(:class:`Derived`, e.g. the bump period in minutes) and, for the likelihood-ratio test, how
to draw truths of its null spectra. Everything downstream (fit results, viz, summary) reads
this metadata. A shipped model is one line::

    powerlaw_tail_lorentzian = register_model((powerlaw_tail + LORENTZIAN_BUMP).named(
        "powerlaw_tail_lorentzian"))

Adding a component to a named model makes that model its ``base`` (the nested smaller model
of the LRT and F tests). A user's own shape is a function ``shape(lnf, *params) -> (value,
d/dp1, ...)`` written with numpy arithmetic that numba can compile, wrapped in a Component.
User model files are imported here and nowhere else (:func:`load_user_models`).

Units: :data:`SPECTRUM_UNIT` is a role, "the unit of the spectra" (resolved into a real
unit such as ``(DN/s)^2/Hz`` when results are written); a parameter with that unit must
scale the model linearly, as the solver normalises every pixel to unit mean power.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import math
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from specfit._version import __version__
from specfit.kernels import fitting as _fitting
from specfit.kernels import guesses, lineshapes
from specfit.kernels.compile import CompiledModel, compiled

__all__ = [
    "SPECTRUM_UNIT",
    "Parameter",
    "Derived",
    "Component",
    "Model",
    "POWER_LAW",
    "TAIL",
    "LORENTZIAN_BUMP",
    "LOGNORMAL_BUMP",
    "powerlaw_tail",
    "powerlaw_tail_lorentzian",
    "powerlaw_tail_lognormal",
    "KNEE",
    "BROKEN_POWER_LAW",
    "KAPPA",
    "knee_tail",
    "knee_tail_lorentzian",
    "broken_tail",
    "kappa_tail",
    "kappa_tail_lorentzian",
    "register_model",
    "get_model",
    "available_models",
    "load_user_models",
    "check_bounds_on",
    "check_output",
    "frequencies_needed",
    "stored_metadata",
]

INF = math.inf
SPECTRUM_UNIT = "power"
"""Unit role of amplitude-like parameters: the unit of the fitted spectra."""


@dataclass(frozen=True)
class Parameter:
    """One model parameter, declared once.

    Attributes
    ----------
    name
        Name in configs and results (``<alias>_<name>``).
    unit
        A real unit (``"1"``, ``"ln(Hz)"``) or :data:`SPECTRUM_UNIT`.
    bounds
        (low, high) in natural units; ``-inf``/``inf`` for none.
    default
        A typical value: the starting value when the model has no guess function (for
        :data:`SPECTRUM_UNIT` parameters, times the pixel's mean power) and the truth the
        registry-driven tests simulate (in absolute units, on a solar p-mode frequency grid).
    log_scaled
        Strictly positive scale parameter the solver works on as ln(p) (reported values
        and errors stay in natural units).
    description
        Human-readable name (``long_name`` of the result maps).
    role
        Optional tag readers use instead of the name, e.g. ``"index"`` (the spectral
        slope that summaries and the explorer show first).
    grid
        Position-like parameter (a bump centre or width, a knee): the fit profiles the
        objective over this many values spanning its bounds (log-spaced for a positive
        range) before polishing, so that it finds the global optimum in it. 0: not searched.
    """

    name: str
    unit: str = "1"
    bounds: tuple[float, float] = (-INF, INF)
    default: float = 1.0
    log_scaled: bool = False
    description: str = ""
    role: str = ""
    grid: int = 0

    def __post_init__(self) -> None:
        if not (isinstance(self.name, str) and self.name.isidentifier()):
            raise ValueError(
                f"Parameter {self.name!r}: a name must be a Python identifier (it names the "
                "shape's argument and the result maps <alias>_<name>)"
            )
        try:
            low, high = (float(b) for b in self.bounds)
        except (TypeError, ValueError):
            raise ValueError(
                f"Parameter {self.name!r}: bounds must be (low, high), got {self.bounds!r}"
            ) from None
        if not low < high:  # NaN included
            raise ValueError(
                f"Parameter {self.name!r}: bounds need low < high (-inf / inf for none), got "
                f"{self.bounds!r}; every fit would end on a bound"
            )

    @property
    def long_name(self) -> str:
        """The description, or the name with spaces."""
        return self.description or self.name.replace("_", " ")


@dataclass(frozen=True)
class Derived:
    """An output computed from the fitted parameters, stored as ``<alias>_<name>``.

    Attributes
    ----------
    name
        Name suffix, e.g. ``"bump_period"``.
    unit, long_name
        Attrs of the stored map.
    func
        ``func(params) -> array`` with ``params`` a mapping parameter name -> (npix,) array.
    role
        Optional tag for readers, e.g. ``"period"``.
    source
        The parameter this output re-expresses (the explorer shows it in that place).
    """

    name: str
    unit: str
    long_name: str
    func: Callable[[Mapping[str, np.ndarray]], np.ndarray] = field(repr=False, compare=False)
    role: str = ""
    source: str | None = None


@dataclass(frozen=True)
class Component:
    """A line shape and its parameters; components add up to a :class:`Model`.

    Attributes
    ----------
    label
        Name of the part in plots (``"power law"``, ``"tail"``, ``"bump"``).
    shape
        ``shape(lnf, *params) -> (value, d/dp1, ...)``, numpy- and numba-compatible.
    params
        One :class:`Parameter` per argument after ``lnf``, in order.
    derived
        Outputs computed from this component's parameters.
    data_bounds
        Optional ``data_bounds(f) -> {param: (low, high)}``: bounds that depend on the
        frequency grid (a bump centre inside the fitted range).
    seed
        Optional ``seed(f, power, base_values, nseeds) -> [(col, ...), ...]``: candidate
        starts of this component's parameters from the residual against the base model.
    """

    label: str
    shape: Callable = field(repr=False)
    params: tuple[Parameter, ...]
    derived: tuple[Derived, ...] = ()
    data_bounds: Callable | None = field(default=None, repr=False, compare=False)
    seed: Callable | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        args = list(inspect.signature(self.shape).parameters)[1:]
        names = [p.name for p in self.params]
        if args != names:
            raise ValueError(
                f"component {self.label!r}: shape {self.shape.__name__}{tuple(args)} does not "
                f"match its parameters {tuple(names)}; declare one Parameter per argument"
            )

    @property
    def formula(self) -> str:
        """The shape's one-line formula (first docstring line)."""
        return (inspect.getdoc(self.shape) or self.shape.__name__).strip().splitlines()[0]

    def __add__(self, other: Component | Model) -> Model:
        return Model(name="", components=(self,)) + other

    def named(self, name: str, **kwargs) -> Model:
        """A one-component model (see :meth:`Model.named`)."""
        return Model(name="", components=(self,)).named(name, **kwargs)


@dataclass(frozen=True)
class Model:
    """A sum of components: parameters, formula, guesses, derived outputs, compiled kernel.

    Build one with ``+`` and :meth:`named`, not by hand.

    Attributes
    ----------
    name
        Registry name used in configs (``fit.models``).
    components
        The additive parts, in parameter order.
    parameters
        All parameters (the components' records; :meth:`with_bounds` replaces bounds).
    base
        Name of the smaller model this one extends (its first parameters, and this model
        reduces to it with the extra amplitude on its bound): enables the nested tests.
    formula
        One-line formula.
    guess_func
        ``guess_func(f, power, dof, base, nstart=1)`` -> (npix, npar) or candidate starts
        (npix, ncand, npar) in natural units; ``base`` holds the base model's fitted
        parameters or None.
    null
        ``null(f, rng, nsim) -> (nsim, npar)`` truths of spectra simulated under this model
        for the LRT reference when it is the smaller model of a nested pair (None: the LRT
        p-value falls back to chi-square).
    """

    name: str
    components: tuple[Component, ...]
    parameters: tuple[Parameter, ...] = ()
    base: str | None = None
    formula: str = ""
    guess_func: Callable | None = field(default=None, repr=False, compare=False)
    null: Callable | None = field(default=None, repr=False, compare=False)
    base_model: Model | None = field(default=None, repr=False, compare=False)
    independent: str = "lnf"

    def __post_init__(self) -> None:
        if not self.parameters:
            object.__setattr__(
                self, "parameters", tuple(p for c in self.components for p in c.params)
            )
        names = [p.name for p in self.parameters]
        if self.components and not names:
            who = self.name or "of " + " + ".join(repr(c.label) for c in self.components)
            raise ValueError(
                f"model {who}: no parameters; a model needs at least one "
                "free parameter (a fixed level is a Parameter with tight bounds)"
            )
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"model {self.name or '(unnamed)'}: parameter names repeat: {dup}")
        if not self.formula:
            terms = " + ".join(c.formula for c in self.components)
            object.__setattr__(self, "formula", f"P(f) = {terms}")

    # ---- composition
    def __add__(self, other: Component | Model) -> Model:
        extra = (other,) if isinstance(other, Component) else tuple(other.components)
        more = other.params if isinstance(other, Component) else other.parameters
        base = self if self.name else None
        return Model(
            name="",
            components=self.components + extra,
            # the parameters as declared here: bounds set by with_bounds stay set
            parameters=self.parameters + tuple(more),
            base=base.name if base else None,
            base_model=base,
        )

    def named(
        self,
        name: str,
        *,
        guess: Callable | None = None,
        null: Callable | None = None,
        formula: str | None = None,
    ) -> Model:
        """This sum of components under a registry name, with optional guess and null."""
        return replace(
            self,
            name=name,
            guess_func=guess or self.guess_func or self._composed_guess(),
            null=null or self.null,
            formula=formula or self.formula,
        )

    # ---- metadata
    @property
    def npar(self) -> int:
        """Number of parameters."""
        return len(self.parameters)

    @property
    def param_names(self) -> tuple[str, ...]:
        """Parameter names, in order."""
        return tuple(p.name for p in self.parameters)

    @property
    def units(self) -> tuple[str, ...]:
        """Parameter units (real units or SPECTRUM_UNIT)."""
        return tuple(p.unit for p in self.parameters)

    @property
    def long_names(self) -> tuple[str, ...]:
        """Parameter descriptions."""
        return tuple(p.long_name for p in self.parameters)

    @property
    def bounds(self) -> tuple[tuple[float, float], ...]:
        """(low, high) per parameter, natural units."""
        return tuple((float(p.bounds[0]), float(p.bounds[1])) for p in self.parameters)

    @property
    def log_params(self) -> tuple[str, ...]:
        """Parameters the solver works on as ln(p)."""
        return tuple(p.name for p in self.parameters if p.log_scaled)

    @property
    def derived(self) -> tuple[Derived, ...]:
        """Derived outputs of all components, in order."""
        return tuple(d for c in self.components for d in c.derived)

    @property
    def power_params(self) -> np.ndarray:
        """Boolean mask of the parameters in the spectra's unit (scaled per pixel)."""
        return np.array([p.unit == SPECTRUM_UNIT for p in self.parameters])

    def search_grid(self, f: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """Position-like parameters and their search values on this frequency grid.

        ``[(parameter index, values), ...]`` for every parameter declaring ``grid`` > 0:
        values span its bounds (static and data bounds), log-spaced when both are positive.
        """
        lo, hi = self.bounds_for(f)
        out = []
        for i, p in enumerate(self.parameters):
            if p.grid <= 0 or not (np.isfinite(lo[i]) and np.isfinite(hi[i])):
                continue
            if lo[i] > 0:
                out.append((i, np.geomspace(lo[i], hi[i], p.grid)))
            else:
                out.append((i, np.linspace(lo[i], hi[i], p.grid)))
        return out

    def param_with_role(self, role: str) -> str | None:
        """Name of the first parameter tagged ``role`` (e.g. ``"index"``), or None."""
        return next((p.name for p in self.parameters if p.role == role), None)

    def metadata(self) -> dict:
        """What readers need, JSON-serialisable: roles, display scales and derived outputs.

        ``{"roles": {param: role}, "spectrum_unit_params": [...], "derived": [{"name",
        "unit", "long_name", "role", "source"}], "components": [labels]}``.
        """
        return {
            "roles": {p.name: p.role for p in self.parameters if p.role},
            "spectrum_unit_params": [p.name for p in self.parameters if p.unit == SPECTRUM_UNIT],
            "derived": [
                {
                    "name": d.name,
                    "unit": d.unit,
                    "long_name": d.long_name,
                    "role": d.role,
                    "source": d.source,
                }
                for d in self.derived
            ],
            "components": [c.label for c in self.components],
        }

    # ---- numerics
    def abscissa(self, f: np.ndarray) -> np.ndarray:
        """The independent variable of every model at frequencies ``f`` Hz: ln f (float64)."""
        return np.log(np.asarray(f, dtype=np.float64))

    def _columns(self, f, p):
        p = _as_params(p, self.npar)
        x = self.abscissa(f)[None, :]
        return p, x, [p[:, i : i + 1] for i in range(self.npar)]

    def _parts(self, f, p):
        """Per component: (values, derivatives...) arrays broadcast over (npix, nf)."""
        p, x, cols = self._columns(f, p)
        out, j = [], 0
        for c in self.components:
            n = len(c.params)
            out.append(c.shape(x, *cols[j : j + n]))
            j += n
        return p, x, out

    def evaluate(self, f: np.ndarray, p: np.ndarray) -> np.ndarray:
        """Model power at frequencies ``f`` (nf,) Hz for parameters ``p`` (npix, npar).

        Returns
        -------
        numpy.ndarray
            (npix, nf) float64.
        """
        p, x, parts = self._parts(f, p)
        total = parts[0][0]
        for part in parts[1:]:
            total = total + part[0]  # left to right, as the compiled kernel sums
        full = (p.shape[0], x.shape[1])
        if len(parts) > 1 and total.shape == full and total.dtype == np.float64:
            return total  # already a new (npix, nf) array: a copy would cost ~10 % of a fit
        return np.broadcast_to(total, full).astype(np.float64)

    def jacobian(self, f: np.ndarray, p: np.ndarray) -> np.ndarray:
        """Analytic derivatives with respect to each parameter, (npix, nf, npar)."""
        p, x, parts = self._parts(f, p)
        npix, nf = p.shape[0], x.shape[1]
        out = np.empty((npix, nf, self.npar))
        j = 0
        for part in parts:
            for d in part[1:]:
                out[:, :, j] = np.broadcast_to(d, (npix, nf))
                j += 1
        return out

    def components_values(self, f: np.ndarray, p: np.ndarray) -> dict[str, np.ndarray]:
        """The model's additive parts for plots, label -> (npix, nf)."""
        p, x, parts = self._parts(f, p)
        out: dict[str, np.ndarray] = {}
        for c, part in zip(self.components, parts, strict=True):
            v = np.broadcast_to(part[0], (p.shape[0], x.shape[1])).astype(float)
            out[c.label] = out[c.label] + v if c.label in out else v
        return out

    def derived_values(self, params: np.ndarray) -> dict[str, np.ndarray]:
        """``{derived name: (npix,)}`` from fitted parameters (npix, npar)."""
        cols = {n: params[:, i] for i, n in enumerate(self.param_names)}
        return {d.name: d.func(cols) for d in self.derived}

    def compiled(self) -> CompiledModel:
        """The generated numba kernel and block solver for this model's components."""
        return compiled(
            [c.shape for c in self.components], [len(c.params) for c in self.components]
        )

    def code_digest(self) -> str:
        """sha256 (hex) of the code behind this model's values: its generated kernel (which
        names each line shape by a hash of its source), the sources of its guess and null
        functions, and its base model's. Part of the LRT reference's cache key, so that an
        edited user model never reuses a reference simulated with the old one."""
        from specfit.kernels.compile import captured_values

        h = hashlib.sha256(self.compiled().source.encode())
        for fn in (self.guess_func, self.null):
            try:
                src = inspect.getsource(fn) if fn is not None else ""
            except (OSError, TypeError):  # defined interactively: this process only
                src = f"{getattr(fn, '__qualname__', '?')}@{id(fn)}"
            # the values a closure or module constant gives it (where they can be written)
            src += f"\n{captured_values(fn)}" if fn is not None else ""
            h.update(b"\0" + src.encode())
        if self.base_model is not None:
            h.update(self.base_model.code_digest().encode())
        return h.hexdigest()

    def guess(
        self,
        f: np.ndarray,
        power: np.ndarray,
        dof: float | np.ndarray = 2.0,
        base: np.ndarray | None = None,
    ) -> np.ndarray:
        """Data-driven starting values, (npix, npar) in natural units (the best candidate)."""
        power = np.atleast_2d(np.asarray(power, dtype=np.float64))
        g = np.asarray(self.guess_func(np.asarray(f, np.float64), power, dof, base), np.float64)
        if g.ndim == 3:  # candidate starts, best-ranked first: the first is the guess
            g = g[:, 0, :]
        return g.reshape(power.shape[0], self.npar)

    def with_bounds(self, overrides: Mapping[str, Sequence[float]]) -> Model:
        """A copy with some bounds replaced, e.g. ``{"index": (0.5, 4.0)}`` (natural units)."""
        params = list(self.parameters)
        for pname, b in overrides.items():
            if pname not in self.param_names:
                raise ValueError(
                    f"fit.bounds.{self.name}: unknown parameter {pname!r}; "
                    f"parameters are {', '.join(self.param_names)}"
                )
            try:
                lo, hi = (float(v) for v in b)
            except (TypeError, ValueError):
                raise ValueError(
                    f"fit.bounds.{self.name}.{pname}: give [low, high] (numbers), got {b!r}"
                ) from None
            if not lo < hi:
                raise ValueError(f"fit.bounds.{self.name}.{pname}: needs low < high, got {b}")
            i = self.param_names.index(pname)
            params[i] = replace(params[i], bounds=(lo, hi))
        out = replace(self, parameters=tuple(params))
        for pname in overrides:
            out._check_defined_at_bounds(pname)
        return out

    def _check_defined_at_bounds(self, pname: str) -> None:
        """Refuse a finite bound of ``pname`` where the model loses the finite values or
        derivatives it has at its defaults (a bump width or kappa of 0: a division by zero).
        The solver clamps a parameter onto its bound, so every pixel reached it and lost
        every model's fit (status 9, blaming the data). Checked on 1e-4..0.1 Hz (periods of
        10 s to 3 h), the other parameters at their defaults inside their bounds; points
        where the model is not finite at its defaults are not judged."""
        f = np.geomspace(1e-4, 0.1, 48)
        i = self.param_names.index(pname)
        p0 = np.array(
            [min(max(q.default, q.bounds[0]), q.bounds[1]) for q in self.parameters], float
        )

        def finite(p: np.ndarray) -> np.ndarray:
            try:
                with np.errstate(all="ignore"):
                    v = np.isfinite(self.evaluate(f, p[None, :]))[0]
                    return v & np.isfinite(self.jacobian(f, p[None, :]))[0].all(axis=1)
            except (ArithmeticError, ValueError):
                return np.zeros(f.size, bool)

        base = finite(p0)
        for end, v in zip(("low", "high"), self.parameters[i].bounds, strict=True):
            if not np.isfinite(v):
                continue
            p = p0.copy()
            p[i] = v
            if (base & ~finite(p)).any():
                raise ValueError(
                    f"fit.bounds.{self.name}.{pname}: the model has no finite value at "
                    f"{pname} = {v:g} (its {end} bound), where the fit may end; choose a bound "
                    f"inside where it is defined (declared: {self._declared_bounds(i)})"
                )

    def _declared_bounds(self, i: int) -> str:
        """The bounds parameter ``i``'s component declares (before any ``with_bounds``)."""
        for c in self.components:
            for q in c.params:
                if q.name == self.param_names[i]:
                    return f"[{q.bounds[0]:g}, {q.bounds[1]:g}]"
        return "see the component"

    def with_grid(self, grids: Mapping[str, int]) -> Model:
        """A copy with some parameters' search grids replaced, e.g. ``{"knee": 0}``.

        A bigger model built on a searched base starts from the base's fitted position, so
        it need not search it again: its own grid then multiplies with the new part's.
        """
        params = list(self.parameters)
        for pname, n in grids.items():
            i = self.param_names.index(pname)
            params[i] = replace(params[i], grid=int(n))
        return replace(self, parameters=tuple(params))

    def bounds_for(self, f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(low, high) arrays of the bounds on this frequency grid (static ∩ data bounds)."""
        lo = np.array([b[0] for b in self.bounds], dtype=np.float64)
        hi = np.array([b[1] for b in self.bounds], dtype=np.float64)
        for c in self.components:
            if c.data_bounds is None:
                continue
            for pname, (dlo, dhi) in c.data_bounds(np.asarray(f, np.float64)).items():
                i = self.param_names.index(pname)
                lo[i] = max(lo[i], dlo)
                hi[i] = min(hi[i], dhi)
        return lo, hi

    # ---- guesses composed from the parts
    def _composed_guess(self) -> Callable:
        extra = self.components[len(self.base_model.components) :] if self.base_model else ()
        if self.base_model is not None and len(extra) == 1 and extra[0].seed is not None:
            return _extend_guess(self.base_model, extra[0])
        if self.base_model is not None and extra:
            return _extend_defaults(self.base_model, extra)
        return _default_guess(
            np.array([p.default for p in self.parameters], float), self.power_params
        )


def _as_params(p: np.ndarray, npar: int) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    if p.ndim == 1:
        p = p[None, :]
    if p.shape[-1] != npar:
        raise ValueError(f"expected {npar} parameters per pixel, got array of shape {p.shape}")
    return p


def _default_guess(defaults: np.ndarray, is_power: np.ndarray) -> Callable:
    def guess(f, power, dof, base):
        scale = np.nanmean(power, axis=1, keepdims=True)
        g = np.broadcast_to(defaults, (power.shape[0], defaults.size)).copy()
        g[:, is_power] *= scale
        return g

    return guess


def _extend_defaults(base_model: Model, extra: Sequence[Component]) -> Callable:
    """Candidate starts for a bigger model whose new components declare no seeds: the base
    model's start (fitted and guessed) with the new parameters at their defaults (those in
    the spectra's unit times the pixel's mean power). The fitted base is also the background
    the global search profiles the new part against."""
    params = [p for c in extra for p in c.params]
    defaults = _default_guess(
        np.array([p.default for p in params], float),
        np.array([p.unit == SPECTRUM_UNIT for p in params]),
    )

    def guess(f, power, dof=2.0, base=None):
        power = np.atleast_2d(np.asarray(power, np.float64))
        new = defaults(f, power, dof, None)
        sets = [base_model.guess(f, power, dof)]
        if base is not None:
            sets.insert(0, np.asarray(base, np.float64)[:, : base_model.npar])
        return np.stack([np.column_stack([bp, new]) for bp in sets], axis=1)

    return guess


def _extend_guess(base_model: Model, comp: Component) -> Callable:
    """Candidate starts: the base model's start (fitted and guessed) plus the component's
    seeds from the residual against it."""

    def guess(f, power, dof=2.0, base=None, nstart=1):
        """Candidate starts (npix, ncand, npar): the extra part at the strongest residual peaks.

        Residuals are taken against the fitted base model (``base``) and against its guess:
        a strong bump drags the base fit (flatter index) so that its residual peak can sit
        at the wrong end, while the guess is not dragged. The solver ranks all candidates by
        their objective and iterates from the best ``multistart`` of them.
        """
        power = np.atleast_2d(np.asarray(power, np.float64))
        sets = [base_model.guess(f, power, dof)]
        if base is not None:
            sets.insert(0, np.asarray(base, np.float64)[:, : base_model.npar])
        starts = []
        for bp in sets:
            values = base_model.evaluate(f, bp)
            for cols in comp.seed(f, power, values, max(2, nstart)):
                starts.append(np.column_stack([bp, *cols]))
        return np.stack(starts, axis=1)

    return guess


# --------------------------------------------------------------------------------------
# Shipped components and models.

_BUMP_WIDTH = (0.05, 2.0)


def _bump_seed(f, power, base_values, nseeds):
    lnf = np.log(np.asarray(f, np.float64))
    width = guesses.bump_width_seed(lnf, *_BUMP_WIDTH)
    full = np.full(power.shape[0], width)
    return [(a, c, full) for a, c in guesses.bump_seeds(f, power, base_values, width, nseeds)]


def _bump_data_bounds(f: np.ndarray) -> dict[str, tuple[float, float]]:
    # a bump centred outside the fitted range is a power law in disguise
    return {"bump_center": (float(np.log(f[0])), float(np.log(f[-1])))}


def _bump_period(p: Mapping[str, np.ndarray]) -> np.ndarray:
    return np.exp(-p["bump_center"]) / 60.0


_BUMP_PARAMS = (
    Parameter("bump_amplitude", SPECTRUM_UNIT, (0.0, INF), 1.0, description="bump amplitude alpha"),
    Parameter(
        "bump_center",
        "ln(Hz)",
        default=math.log(1 / 300),  # 5-minute oscillations
        description="bump centre beta (ln of frequency in Hz)",
        role="center",
        grid=16,
    ),
    Parameter(
        "bump_width",
        "1",  # a width in ln f: a ratio of frequencies, no unit
        _BUMP_WIDTH,
        0.3,
        description="bump width sigma (in ln f)",
        grid=4,
    ),
)
_BUMP_DERIVED = (
    Derived(
        "bump_period",
        "min",
        "bump period exp(-bump_center)/60",
        _bump_period,
        "period",
        "bump_center",
    ),
)

POWER_LAW = Component(
    "power law",
    lineshapes.power_law,
    (
        Parameter(
            "amplitude",
            SPECTRUM_UNIT,
            (0.0, INF),
            1e-6,
            log_scaled=True,
            description="power-law amplitude A (power at 1 Hz)",
        ),
        Parameter("index", "1", (-1.0, 10.0), 2.0, description="power-law index n", role="index"),
    ),
)
TAIL = Component(
    "tail",
    lineshapes.constant,
    (
        Parameter(
            "tail",
            SPECTRUM_UNIT,
            (0.0, INF),
            1.0,
            description="constant tail C (white-noise level)",
        ),
    ),
)
LORENTZIAN_BUMP = Component(
    "bump", lineshapes.lorentzian_bump, _BUMP_PARAMS, _BUMP_DERIVED, _bump_data_bounds, _bump_seed
)
LOGNORMAL_BUMP = Component(
    "bump", lineshapes.lognormal_bump, _BUMP_PARAMS, _BUMP_DERIVED, _bump_data_bounds, _bump_seed
)


def _range_bounds(name: str) -> Callable:
    """Data bounds keeping a position-like parameter inside the fitted range (in ln f)."""

    def bounds(f: np.ndarray) -> dict[str, tuple[float, float]]:
        # outside the range, a knee or break is not seen: the shape is one power law there
        # and the position trades off against the amplitude
        return {name: (float(np.log(f[0])), float(np.log(f[-1])))}

    return bounds


def _period(name: str) -> Callable:
    def period(p: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.exp(-p[name]) / 60.0

    return period


_CURVED_AMPLITUDE = dict(unit=SPECTRUM_UNIT, bounds=(0.0, INF), log_scaled=True)

KNEE = Component(
    "knee",
    lineshapes.bending_power_law,
    (
        Parameter(
            "amplitude",
            default=100.0,
            description="bending power law amplitude A (power below the knee)",
            **_CURVED_AMPLITUDE,
        ),
        Parameter(
            "index",
            "1",
            (0.05, 10.0),
            3.0,
            description="index n above the knee",
            role="index",
        ),
        Parameter(
            "knee",
            "ln(Hz)",
            default=math.log(4e-4),
            description="knee frequency f_b (ln of frequency in Hz)",
            role="knee",
            grid=16,
        ),
    ),
    (Derived("knee_period", "min", "knee period exp(-knee)/60", _period("knee"), "", "knee"),),
    _range_bounds("knee"),
)
BROKEN_POWER_LAW = Component(
    "broken power law",
    lineshapes.broken_power_law,
    (
        Parameter(
            "amplitude",
            default=20.0,
            description="broken power law amplitude A (power at the break)",
            **_CURVED_AMPLITUDE,
        ),
        Parameter(
            "index",
            "1",
            (-1.0, 10.0),
            1.0,
            description="index n1 below the break",
            role="index",
        ),
        Parameter("index_high", "1", (-1.0, 10.0), 3.0, description="index n2 above the break"),
        Parameter(
            "break_freq",
            "ln(Hz)",
            default=math.log(1e-3),
            description="break frequency f_b (ln of frequency in Hz)",
            role="knee",
            grid=16,
        ),
    ),
    (
        Derived(
            "break_period",
            "min",
            "break period exp(-break_freq)/60",
            _period("break_freq"),
            "",
            "break_freq",
        ),
    ),
    _range_bounds("break_freq"),
)
KAPPA = Component(
    "kappa",
    lineshapes.kappa_function,
    (
        Parameter(
            "amplitude",
            default=100.0,
            description="kappa function amplitude A (power at f = 0)",
            **_CURVED_AMPLITUDE,
        ),
        Parameter(
            "kappa",
            "1",
            (0.05, 50.0),
            2.0,
            description="kappa (the high-frequency index is kappa + 1)",
            role="index",
        ),
        Parameter(
            "kappa_rho",
            "ln(Hz)",
            default=math.log(3e-4),
            description="kappa function width rho (ln of frequency in Hz)",
            role="knee",
            grid=16,
        ),
    ),
    (
        Derived(
            "kappa_slope",
            "1",
            "high-frequency index kappa + 1",
            lambda p: p["kappa"] + 1.0,
            "",
            "kappa",
        ),
    ),
    _range_bounds("kappa_rho"),
)

_REGISTRY: dict[str, Model] = {}
_SHIPPED: dict[str, Model] = {}


def register_model(model: Model) -> Model:
    """Make ``model`` available by name (``fit.models`` in configs, :func:`get_model`).

    Re-registering a user model under the same name replaces it; shipped names are reserved.

    Returns
    -------
    Model
        ``model``, so that a declaration can be one line.
    """
    if not isinstance(model, Model):
        raise TypeError(f"register_model expects a Model (components + .named), got {type(model)}")
    if not model.name:
        raise ValueError("register_model: give the model a name with .named('my_model')")
    if model.name in _SHIPPED and _SHIPPED[model.name] is not model:
        raise ValueError(f"model name {model.name!r} is a shipped model; choose another name")
    _REGISTRY[model.name] = model
    return model


def _ship(model: Model) -> Model:
    _SHIPPED[model.name] = model
    return register_model(model)


# The shipped models: one declaration each.
powerlaw_tail = _ship(
    (POWER_LAW + TAIL).named(
        "powerlaw_tail", guess=guesses.powerlaw_tail_starts, null=guesses.powerlaw_tail_null
    )
)
powerlaw_tail_lorentzian = _ship(
    (powerlaw_tail + LORENTZIAN_BUMP).named("powerlaw_tail_lorentzian")
)
powerlaw_tail_lognormal = _ship((powerlaw_tail + LOGNORMAL_BUMP).named("powerlaw_tail_lognormal"))

# Curved backgrounds (the AIA spectra steepen with frequency): a bending power law (knee,
# Vaughan 2010), a broken power law and the kappa function (Auchere et al. 2016), each with
# the tail. The knee and kappa models also come with the Lorentzian bump of
# powerlaw_tail_lorentzian nested on them (the LRT applies); the bump variants start from
# the fitted base's knee / width and search only the bump's position (searching both would
# multiply the two grids). No broken + bump model: its rounded corner with two free indices
# imitates a bump (on simulated broken + bump spectra at dof 18, 55-67 % of fits put a
# parameter on a bound, at likelihoods better than the truth's: not identifiable).
knee_tail = _ship(
    (KNEE + TAIL).named("knee_tail", guess=guesses.guess_knee_tail, null=guesses.knee_tail_null)
)
knee_tail_lorentzian = _ship(
    (knee_tail + LORENTZIAN_BUMP).with_grid({"knee": 0}).named("knee_tail_lorentzian")
)
broken_tail = _ship(
    (BROKEN_POWER_LAW + TAIL).named(
        "broken_tail", guess=guesses.guess_broken_tail, null=guesses.broken_tail_null
    )
)
kappa_tail = _ship(
    (KAPPA + TAIL).named("kappa_tail", guess=guesses.guess_kappa_tail, null=guesses.kappa_tail_null)
)
kappa_tail_lorentzian = _ship(
    (kappa_tail + LORENTZIAN_BUMP).with_grid({"kappa_rho": 0}).named("kappa_tail_lorentzian")
)


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


_fitting.set_model_lookup(get_model)
_fitting.set_version(__version__)


def frequencies_needed(models: Iterable[Model]) -> int:
    """The fewest frequencies a run fits ``models`` on: more than the most parameters + 1
    (a run's planner refuses fewer, and ``specfit init`` a series that would give fewer)."""
    return max(m.npar for m in models) + 2


def available_models() -> list[str]:
    """Names of all registered models."""
    return sorted(_REGISTRY)


def is_shipped(model: Model) -> bool:
    """Whether ``model`` is one of specfit's own (tested) models."""
    return _SHIPPED.get(model.name) is model


def stored_metadata(info: Mapping) -> dict:
    """Reader metadata of a fitted model from a store's ``models`` attr entry.

    Uses what the store recorded (:meth:`Model.metadata` keys); for older stores, the
    metadata of the registered model of that name if this session has it (never imports
    anything); else empty roles and no derived outputs.
    """
    keys = ("roles", "spectrum_unit_params", "derived", "components")
    if all(k in info for k in keys):
        return {k: info[k] for k in keys}
    model = _REGISTRY.get(str(info.get("name")))
    if model is not None:
        return model.metadata()
    return {"roles": {}, "spectrum_unit_params": [], "derived": [], "components": []}


def user_models_digest(specs: Sequence[str]) -> dict[str, str | None]:
    """sha256 (hex, 16) of each ``fit.user_models`` entry's source file (a ``.py`` path, or
    the file an importable module name comes from; None where there is none): part of a run's
    identity, so that a resume never mixes tiles fitted with an edited model file."""
    out: dict[str, str | None] = {}
    for spec in specs:
        path = Path(spec).expanduser() if spec.endswith(".py") else None
        if path is None:
            try:
                found = importlib.util.find_spec(spec)
            except (ImportError, ValueError):
                found = None
            origin = getattr(found, "origin", None)
            path = Path(origin) if origin and origin not in ("built-in", "frozen") else None
        try:
            out[spec] = hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path else None
        except OSError:
            out[spec] = None
    return out


def load_user_models(specs: Sequence[str]) -> list[str]:
    """Import user model files or modules and register the models they define.

    The only place specfit imports user code. Each entry is a path to a ``.py`` file or an
    importable module name. A module may call :func:`register_model` itself; any named
    :class:`Model` left at its top level is registered too.

    Returns
    -------
    list of str
        Names of the models the modules registered or defined.
    """
    names: list[str] = []
    origin: dict[str, str] = {}  # which entry defined each name
    for spec in dict.fromkeys(specs):  # an entry given twice is loaded once
        before = dict(_REGISTRY)
        if spec.endswith(".py"):
            path = Path(spec).expanduser()
            if not path.is_file():
                from specfit.errors import NotFoundError

                raise NotFoundError(
                    f"fit.user_models: {spec} does not exist; give a .py file path or a module name"
                )
            # named by content, stable across processes: the kernels generated for its shapes
            # (keyed by module and source) are then compiled once and reused from the cache
            digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
            modname = f"specfit_user_models_{path.stem}_{digest}"
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
            except Exception as exc:  # the module itself raises while it is imported
                raise ImportError(
                    f"fit.user_models: error while importing module {spec!r}: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
        for obj in vars(module).values():
            if isinstance(obj, Model) and obj.name and _REGISTRY.get(obj.name) is not obj:
                if obj.name in _SHIPPED:  # (the shipped model itself, imported, is skipped)
                    raise ValueError(
                        f"fit.user_models: {spec} defines a model named {obj.name!r}, a "
                        "shipped model's name (the shipped one would be fitted): choose "
                        "another name"
                    )
                register_model(obj)
        new = [n for n, m in _REGISTRY.items() if before.get(n) is not m]
        for obj in vars(module).values():
            if (
                isinstance(obj, Model)
                and obj.name
                and obj.name not in new
                and obj.name not in _SHIPPED
            ):
                new.append(obj.name)
        if not new:
            raise ValueError(
                f"fit.user_models: {spec} defines no model; declare one, e.g. "
                "register_model((POWER_LAW + TAIL + MY_BUMP).named('my_model'))"
            )
        for n in new:
            if n in origin:
                raise ValueError(
                    f"fit.user_models: a model named {n!r} is defined in {origin[n]} and in "
                    f"{spec} (the last would be fitted): rename one"
                )
            origin[n] = spec
        names.extend(n for n in new if n not in names)
    return names


def _check_derivatives(c: Component, x: np.ndarray, p: np.ndarray, out: tuple, where: str):
    """Raise ValueError if a shape's derivatives disagree with central differences of its
    values at ``p`` (a sign or a factor wrong would make the solver walk the wrong way and
    stop with garbage that looks converged)."""
    val = np.broadcast_to(np.asarray(out[0], dtype=np.float64), x.shape)
    for k, par in enumerate(c.params):
        h = 1e-6 * max(1.0, abs(float(p[k])))
        up, down = p.copy(), p.copy()
        up[k] += h
        down[k] -= h
        with np.errstate(all="ignore"):
            vu = np.broadcast_to(np.asarray(c.shape(x, *up)[0], float), x.shape)
            vd = np.broadcast_to(np.asarray(c.shape(x, *down)[0], float), x.shape)
            num = (vu - vd) / (2 * h)
            ana = np.broadcast_to(np.asarray(out[k + 1], dtype=np.float64), x.shape)
            # compared where the values and both derivatives are finite (a shape may overflow
            # at the checked point on part of the grid; the fits mark such pixels)
            ok = np.isfinite(num) & np.isfinite(ana) & np.isfinite(val)
            if not ok.any():
                continue
            # at a kink on a bin (a break at the point checked) the derivative is one side's:
            # it may match the forward or the backward difference instead of the central one
            off = np.minimum(
                np.abs(ana - num),
                np.minimum(np.abs(ana - (vu - val) / h), np.abs(ana - (val - vd) / h)),
            )
            err = np.max(off[ok])
            scale = max(np.max(np.abs(num[ok])), np.max(np.abs(ana[ok])))
            # central differences lose ~1e-10 |value| / |p| to rounding: far below this floor
            floor = 1e-6 * np.max(np.abs(val[ok])) / max(1.0, abs(float(p[k])))
        if err > 1e-3 * scale + floor:
            raise ValueError(
                f"{where}: its derivative with respect to {par.name} disagrees with its values "
                f"(largest difference from a central difference {err:.3g}, against derivatives "
                f"up to {scale:.3g}, at {', '.join(f'{q.name}={v:.4g}' for q, v in zip(c.params, p, strict=True))}); "
                "fix that derivative (a sign or a factor)"
            )


def check_bounds_on(model: Model, f: np.ndarray) -> None:
    """Refuse declared bounds that leave a parameter no value on this frequency grid: a
    bump centre bounded outside the fitted band (its data bounds) was clamped onto one of
    them, and stored beyond the bounds the user declared.

    Raises
    ------
    ValueError
        Naming the model, the parameter, its declared bounds and the band's.
    """
    lo, hi = model.bounds_for(f)
    for i, name in enumerate(model.param_names):
        if lo[i] > hi[i]:
            declared = model.bounds[i]
            raise ValueError(
                f"{model.name}: {name} is bounded to [{declared[0]:g}, {declared[1]:g}], but "
                f"on these spectra (frequencies {f[0]:.4g}-{f[-1]:.4g} Hz) it can only lie in "
                f"[{_band(model, f, i)}]: widen its bounds or "
                "fit another band (spectra.fmin / fmax)"
            )


def _band(model: Model, f: np.ndarray, i: int) -> str:
    """The data bounds of parameter ``i`` on grid ``f``, as text."""
    lo, hi = -INF, INF
    for c in model.components:
        if c.data_bounds is not None:
            b = c.data_bounds(np.asarray(f, np.float64)).get(model.param_names[i])
            if b is not None:
                lo, hi = max(lo, b[0]), min(hi, b[1])
    return f"{lo:.4g}, {hi:.4g}"


def check_output(model: Model, f: np.ndarray) -> None:
    """Check that a user model's shapes give one value per frequency and one derivative
    per parameter on this grid, and that the derivatives agree with the values (central
    differences at one admissible point).

    A shape returning a scalar (it ignores ``lnf``) or an array of another length would
    otherwise be broadcast into finite nonsense, or fail inside every tile. Shipped models
    are not checked (their tests cover them).

    Raises
    ------
    ValueError
        Naming the model, the file that defines the shape and what it returned.
    """
    if is_shipped(model):
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
    x = model.abscissa(f)
    j = 0
    for c in model.components:
        n = len(c.params)
        code = getattr(c.shape, "__code__", None)
        where = f"model {model.name!r}" + (f" (defined in {code.co_filename})" if code else "")
        where += f": shape {getattr(c.shape, '__name__', c.label)}"
        try:
            out = c.shape(x, *p[j : j + n])
        except Exception as exc:
            raise ValueError(
                f"{where} fails on the frequency grid ({type(exc).__name__}: {exc}); fix the shape"
            ) from None
        j += n
        if not isinstance(out, tuple) or len(out) != n + 1:
            raise ValueError(
                f"{where} must return a tuple (value, one derivative per parameter) of "
                f"{n + 1} items; got {type(out).__name__}"
            )
        val = np.asarray(out[0])
        if val.shape != x.shape:
            got = "a scalar" if val.ndim == 0 else f"an array of shape {val.shape}"
            raise ValueError(
                f"{where} returned {got} for {x.size} frequencies; it must return one value per "
                "frequency, the shape of its first argument (write a constant as c + 0.0 * lnf)"
            )
        if not np.isfinite(val).any():
            at = ", ".join(f"{q.name}={v:.4g}" for q, v in zip(c.params, p[j - n : j], strict=True))
            raise ValueError(
                f"{where} returns no finite value on the frequency grid at {at or 'its'} "
                "(inside its bounds); a shape must be finite wherever its bounds allow: fix "
                "the shape or narrow the bounds"
            )
        for par, der in zip(c.params, out[1:], strict=True):
            shape = np.shape(der)
            if shape not in ((), x.shape):
                raise ValueError(
                    f"{where} returned its derivative with respect to {par.name} with shape "
                    f"{shape} for {x.size} frequencies; it must have the shape of the first "
                    "argument (or be a number)"
                )
        _check_derivatives(c, x, p[j - n : j], out, where)
    # numba compiles the shapes into the solver: a shape numba cannot compile (a scipy call, a
    # Python object) would pass the checks above and then fail in every tile
    xs = np.ascontiguousarray(x, dtype=np.float64)
    m = np.empty(xs.size)
    J = np.empty((xs.size, model.npar))
    try:
        model.compiled().kernel(xs, np.ascontiguousarray(p, dtype=np.float64), m, J, True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        first = first.replace("\x1b[1m", "").replace("\x1b[0m", "")
        raise ValueError(
            f"model {model.name!r}: numba cannot compile or run its shapes ({type(exc).__name__}:"
            f" {first[:200]}); a shape may use numpy and math functions that numba supports "
            "(not scipy), see docs/fitting.md 'Adding a model'"
        ) from None
