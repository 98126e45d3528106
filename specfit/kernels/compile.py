"""Fused numba kernels and the solver's dispatch, generated from a model's components.

A model is a sum of line shapes (:mod:`specfit.kernels.lineshapes` or a user's own, same
form: ``shape(x, *params) -> (value, d/dp1, ...)``). :func:`compiled` writes, for one list
of shapes, a small Python module holding

- ``kernel(x, p, m, J, want_jac)``: one loop over the bins calling each shape once and
  filling the model (nf,) and its jacobian (nf, npar) in place, and
- ``solve_block``: the batched Levenberg-Marquardt of :mod:`specfit.kernels.lm` with that
  kernel bound as its model evaluation,

and imports it. The module's name is a hash of the generated text (shape sources and the
solver's source included), written once into a cache folder, so numba's on-disk cache
(``cache=True``) keeps the compiled solver across processes and a changed shape or solver
can never pick up stale machine code. Nothing is hand-written per model and there is no
table to edit. Shapes whose source cannot be read (defined interactively) are compiled in
memory instead, without the disk cache.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import os
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from . import lm

__all__ = ["CompiledModel", "compiled", "cache_dir"]

# bump when the generated text changes shape in a way the hash of its parts would not see
_GENERATOR_VERSION = 5  # 5: no reference counting in the solver of shipped shapes
_SHIPPED = "specfit.kernels.lineshapes."  # the registry keys of specfit's own shapes
_SHAPES: dict[str, Callable] = {}  # key -> shape function, looked up by generated modules
_COMPILED: dict[tuple, CompiledModel] = {}
_LOCK = threading.Lock()


@dataclass(frozen=True)
class CompiledModel:
    """The generated, numba-compiled pieces for one sum of shapes.

    Attributes
    ----------
    kernel
        ``kernel(x, p, m, J, want_jac)``: model (nf,) and jacobian (nf, npar) in place.
    solve_block
        The block solver (signature of ``lm._lm_block``) evaluating this model.
    source
        The generated module text (for reading and debugging).
    """

    kernel: Callable
    solve_block: Callable
    source: str


def cache_dir() -> Path:
    """Folder of the generated modules: ``$SPECFIT_KERNEL_CACHE``, else the user cache."""
    env = os.environ.get("SPECFIT_KERNEL_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "specfit" / f"kernels-py{sys.version_info[0]}{sys.version_info[1]}"


def shape_function(key: str) -> Callable:
    """The numba-compiled shape registered under ``key`` (called by generated modules)."""
    import numba

    fn = _SHAPES[key]
    if isinstance(fn, numba.core.dispatcher.Dispatcher):
        return fn
    # A user's shape divides as numpy does (x / 0 -> inf or nan, which the solver rejects as
    # a step or marks per pixel), not as Python (ZeroDivisionError, which would fail a tile).
    # The shipped shapes keep the compiled code their figures were made with.
    shipped = key.startswith(_SHIPPED)
    jitted = numba.njit(nogil=True) if shipped else numba.njit(nogil=True, error_model="numpy")
    jitted = jitted(fn)
    _SHAPES[key] = jitted
    return jitted


def _shape_key(fn: Callable) -> tuple[str, str | None]:
    """(registry key, source or None): the key changes whenever the shape's source does, or
    a value its code reads from outside (a closure's cell, a module constant, a function it
    calls): numba compiles those in as constants, so two shapes of one source that read
    different values are different machine code. A shape reading a value that cannot be
    written down (any other object) has no source here: compiled per process, never cached,
    keyed by the function object itself."""
    try:
        src = inspect.getsource(fn)
    except (OSError, TypeError):
        src = None
    captured = captured_values(fn) if src is not None else None
    if captured is None:
        src = None
    ident = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
    text = f"{src}\n{captured}" if src is not None else f"id{id(fn)}"
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    return f"{ident}:{digest}", src


def _code_names(code) -> set[str]:
    """Global names a code object and the code nested in it (lambdas, comprehensions) read."""
    names = set(code.co_names)
    for const in code.co_consts:
        if inspect.iscode(const):
            names |= _code_names(const)
    return names


def captured_values(fn: Callable, _seen: tuple = ()) -> str | None:
    """Text of every outside value ``fn``'s code reads (closure cells, then globals), or None
    when one of them is not a number, string, array, tuple, module or plain function. A
    function met again below itself (recursion, or a global of the same name as an
    attribute it reads, ``lnf.shape`` in a module defining ``shape``) is named, not
    followed."""
    import numpy as np

    fn = getattr(fn, "py_func", fn)  # a numba dispatcher: its Python function
    code = getattr(fn, "__code__", None)
    if code is None or len(_seen) > 8:
        return None
    seen = (*_seen, fn)

    def text(v) -> str | None:
        if v is None or isinstance(v, bool | int | float | complex | str | bytes):
            return repr(v)
        if isinstance(v, np.generic):
            return f"{type(v).__name__}({v!r})"
        if isinstance(v, np.ndarray):
            data = np.ascontiguousarray(v)
            return f"array({data.dtype},{data.shape},{hashlib.sha256(data.tobytes()).hexdigest()})"
        if isinstance(v, tuple | list):
            items = [text(u) for u in v]
            return None if None in items else f"{type(v).__name__}({','.join(items)})"
        if inspect.ismodule(v):
            return f"module {v.__name__}"
        if inspect.isbuiltin(v) or isinstance(v, np.ufunc):
            return f"builtin {getattr(v, '__module__', '')}.{getattr(v, '__name__', repr(v))}"
        inner = getattr(v, "py_func", v)
        if inspect.isfunction(inner):
            if any(inner is f for f in seen):
                return f"function {inner.__qualname__} (above)"
            try:
                body = inspect.getsource(inner)
            except (OSError, TypeError):
                return None
            sub = captured_values(inner, seen)
            return None if sub is None else f"function {inner.__qualname__}\n{body}\n{sub}"
        return None

    parts = [text(tuple(fn.__defaults__ or ()))]
    if parts[0] is None:
        return None
    for name, cell in zip(code.co_freevars, fn.__closure__ or (), strict=True):
        try:
            value = cell.cell_contents
        except ValueError:  # an empty cell
            return None
        t = text(value)
        if t is None:
            return None
        parts.append(f"{name}={t}")
    g = fn.__globals__
    for name in sorted(_code_names(code)):
        if name in g:
            t = text(g[name])
            if t is None:
                return None
            parts.append(f"{name}={t}")
    return ";".join(parts)


def _generate(keys: Sequence[str], nparams: Sequence[int]) -> str:
    """Module text: shapes bound by key, the fused kernel, the solver bound to it."""
    lines = [
        "# Generated by specfit.kernels.compile from a model's components; do not edit.",
        "import math",
        "",
        "import numba",
        "import numpy as np",
        "",
        "from specfit.kernels.compile import shape_function",
        "from specfit.kernels.lm import (",
        "    _AT_BOUND, _CONVERGED, _FAILED, _MAX_ITER, _SINGULAR, _STALLED,",
        "    _chol_inv_diag, _chol_solve, _free_set, hess_pass,",
        ")",
        "",
    ]
    lines += [f"c{k} = shape_function({key!r})" for k, key in enumerate(keys)]
    lines += [
        "",
        "",
        "@numba.njit(nogil=True, cache=True, _nrt=False)",
        "def kernel(x, p, m, J, want_jac):",
    ]
    calls, jac, j = [], [], 0
    for k, n in enumerate(nparams):
        ds = [f"d{j + a}" for a in range(n)]
        args = ", ".join(f"p{j + a}" for a in range(n))
        calls.append((f"v{k}, {', '.join(ds)}", f"c{k}(xi, {args})"))
        jac += [f"            J[i, {j + a}] = d{j + a}" for a in range(n)]
        j += n
    # left to right, as the hand-written kernels summed: bit-identical results
    total = " + ".join(f"v{k}" for k in range(len(nparams)))
    # two loops: without the jacobian only the values are used, so the compiler drops the
    # derivative arithmetic (divisions included) from the value-only evaluations
    # parameters in locals: the compiler cannot prove that stores to m and J leave p alone,
    # so reading p[k] inside the loop would reload it on every bin
    lines += [f"    p{a} = p[{a}]" for a in range(j)]
    lines.append("    if want_jac:")
    lines.append("        for i in range(x.shape[0]):")
    lines.append("            xi = x[i]")
    lines += [f"            {lhs} = {rhs}" for lhs, rhs in calls]
    lines.append(f"            m[i] = {total}")
    lines += jac
    lines.append("    else:")
    lines.append("        for i in range(x.shape[0]):")
    lines.append("            xi = x[i]")
    lines += [f"            v{k} = {rhs}[0]" for k, (_, rhs) in enumerate(calls)]
    lines.append(f"            m[i] = {total}")
    lines += [
        "",
        "",
        "@numba.njit(nogil=True, cache=True, _nrt=False)",
        "def EVAL(kid, x, p, m, J, want_jac):",
        "    kernel(x, p, m, J, want_jac)",
        "",
    ]
    lines += _generate_accum_f()
    lines += ["", f"HPASS = hess_pass({j})"]
    for fn in lm.SOLVER_TEMPLATES:
        # the per-pixel solver allocates nothing: compiled without the runtime's reference
        # counting (atomic increments on every array passed or swapped in its loop)
        nrt = "" if fn.__name__ == "_lm_block" else ", _nrt=False"
        lines += [
            "",
            f"@numba.njit(nogil=True, cache=True{nrt})",
            inspect.getsource(fn).rstrip(),
            "",
        ]
    lines.append("solve_block = _lm_block")
    text = "\n".join(lines) + "\n"
    if not all(key.startswith(_SHIPPED) for key in keys):
        # a user's shape may allocate (np.where on a bin's scalar returns an array), which
        # needs the runtime: its model's kernel and solver keep reference counting
        text = text.replace(", _nrt=False", "")
    return text


# The objective's loop over the bins up to its sums F and s2 (``lm._accum``'s, operation for
# operation, so F and s2 are bit-identical to it; tests/test_lm.py checks)
_OBJECTIVE_LOOP = [
    "    F = 0.0",
    "    s2 = 0.0",
    "    prod = 1.0",
    "    cnt = 0",
    "    for i in range(y.shape[0]):",
    "        mi = m[i]",
    "        if not math.isfinite(mi):",
    "            return math.inf, math.inf",
    "        if obj == 0:",
    "            e = y[i] - mi",
    "            a_ = w[i] if use_w else 1.0",
    "            F += 0.5 * a_ * e * e",
    "        else:",
    "            if mi <= 0.0:",
    "                return math.inf, math.inf",
    "            inv = 1.0 / mi",
    "            a_ = inv * inv",
    "            if obj == 2 and use_w:",
    "                e = y[i] - mi",
    "                a_ *= w[i]",
    "                F += w[i] * (y[i] * inv + math.log(mi))",
    "            elif obj == 2:",
    "                e = y[i] - mi",
    "                F += y[i] * inv",
    "                if 1e-30 < mi < 1e30:",
    "                    prod *= mi",
    "                    cnt += 1",
    "                    if cnt == 8:",
    "                        F += math.log(prod)",
    "                        prod = 1.0",
    "                        cnt = 0",
    "                else:",
    "                    F += math.log(mi)",
    "            else:",
    "                r = y[i] - math.log(mi)",
    "                e = mi * r",
    "                if use_w:",
    "                    a_ *= w[i]",
    "                    F += 0.5 * w[i] * r * r",
    "                else:",
    "                    F += 0.5 * r * r",
    "        s2 += a_ * e * e",
]


def _generate_accum_f() -> list[str]:
    """``ACCUM_F``: the objective F and s2 of ``lm._accum`` from EVAL's model values, keeping
    each bin's ``a_`` and ``a_ e`` for ``HPASS`` (:func:`specfit.kernels.lm.hess_pass`), which
    then sums H and g (``lm._chain_log`` then ``lm._accum``'s sums, bit-identical). The model
    and its jacobian stay a separate pass (``EVAL``): fused into this loop, the shapes' exp()
    calls would spill every accumulator around each call (all float registers are
    caller-saved), which measured slower than two passes."""
    L = [
        "",
        "",
        "@numba.njit(nogil=True, cache=True, _nrt=False)",
        "def ACCUM_F(y, w, use_w, obj, m, abuf, aebuf):",
        '    """lm._accum\'s F and s2, and a_, a_ e per bin into abuf, aebuf."""',
    ]
    L += _OBJECTIVE_LOOP
    L += [
        "        abuf[i] = a_",
        "        aebuf[i] = a_ * e",
        "    if cnt > 0:",
        "        F += math.log(prod)",
        "    return F, s2",
        "",
    ]
    return L


def compiled(shapes: Sequence[Callable], nparams: Sequence[int]) -> CompiledModel:
    """The fused kernel and solver for the sum of ``shapes`` (``nparams`` parameters each).

    Compiled once per process; the machine code is cached on disk by numba when every
    shape's source is readable.
    """
    keyed = [_shape_key(fn) for fn in shapes]
    memo = tuple((k, n) for (k, _), n in zip(keyed, nparams, strict=True))
    with _LOCK:
        if memo in _COMPILED:
            return _COMPILED[memo]
        for (key, _), fn in zip(keyed, shapes, strict=True):
            _SHAPES.setdefault(key, fn)
        source = _generate([k for k, _ in keyed], nparams)
        # the solver's helpers (lm's _accum, _chol_solve, ...) are compiled into the module's
        # machine code but numba's cache only checks the module's own file: lm's whole source
        # is part of the name, so a changed helper can never run as stale cached code
        text = f"{_GENERATOR_VERSION}\n{source}\n{inspect.getsource(lm)}"
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        modname = f"specfit_generated_{digest}"
        cacheable = all(src is not None for _, src in keyed)
        module = sys.modules.get(modname)
        if module is None:
            path = _write(modname, source) if cacheable else None
            module = _load(modname, source, path)
        out = CompiledModel(kernel=module.kernel, solve_block=module.solve_block, source=source)
        _COMPILED[memo] = out
        return out


def _write(modname: str, source: str) -> Path | None:
    """Write the module once (an existing file is never rewritten: its time stamp keys
    numba's cache); None when no cache folder is writable."""
    for folder in (cache_dir(), Path(tempfile.gettempdir()) / "specfit-kernels"):
        path = folder / f"{modname}.py"
        try:
            if path.is_file() and path.read_text() == source:
                return path
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f".{modname}.{os.getpid()}.{threading.get_ident()}.tmp"
            tmp.write_text(source)
            os.replace(tmp, path)  # atomic: concurrent workers write the same text
            return path
        except OSError:
            continue
    return None


def _load(modname: str, source: str, path: Path | None):
    if path is not None:
        spec = importlib.util.spec_from_file_location(modname, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[modname] = module
        spec.loader.exec_module(module)
        return module
    # in memory: numba cannot cache functions without a source file, so disable it
    import types

    module = types.ModuleType(modname)
    module.__file__ = f"<{modname}>"
    code = source.replace("cache=True", "cache=False")
    sys.modules[modname] = module
    exec(compile(code, module.__file__, "exec"), module.__dict__)  # noqa: S102 - generated
    return module
