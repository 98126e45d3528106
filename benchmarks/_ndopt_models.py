"""specfit's M1 and M2 as ndoptimize models (for the peer rows of ``fit_speed.py``).

Kept in a file of their own: ndoptimize compiles a model at decoration and caches it on
disk, which needs a function defined at module level in a file; importing this module
needs ndoptimize, which the benchmark treats as optional.

x is ln f (one input column); the formulas and analytic derivatives are those of
``specfit.kernels.lineshapes`` (power law + constant, + Lorentzian bump in ln f).
"""

from __future__ import annotations

import math

import ndoptimize


@ndoptimize.model(parameters=("amplitude", "index", "tail"), inputs=("lnf",))
def m1(x, p, f, jac):  # pragma: no cover - compiled
    """A f^-n + C"""
    a, n, c = p[0], p[1], p[2]
    for i in range(x.shape[0]):
        e = math.exp(-n * x[i, 0])
        f[i] = a * e + c
        jac[i, 0] = e
        jac[i, 1] = -a * x[i, 0] * e
        jac[i, 2] = 1.0


@ndoptimize.model(
    parameters=("amplitude", "index", "tail", "bump_amplitude", "bump_center", "bump_width"),
    inputs=("lnf",),
)
def m2(x, p, f, jac):  # pragma: no cover - compiled
    """A f^-n + C + alpha / (1 + ((ln f - beta) / sigma)^2)"""
    a, n, c, b, mu, w = p[0], p[1], p[2], p[3], p[4], p[5]
    for i in range(x.shape[0]):
        e = math.exp(-n * x[i, 0])
        u = (x[i, 0] - mu) / w
        q = 1.0 / (1.0 + u * u)
        dq = 2.0 * b * u * q * q / w
        f[i] = a * e + c + b * q
        jac[i, 0] = e
        jac[i, 1] = -a * x[i, 0] * e
        jac[i, 2] = 1.0
        jac[i, 3] = q
        jac[i, 4] = dq
        jac[i, 5] = dq * u
