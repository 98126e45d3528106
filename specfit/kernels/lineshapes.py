"""Line-shape components: each a pure function giving its value and analytic derivatives.

Every component is written once, as ``shape(x, *params) -> (value, d/dp1, d/dp2, ...)`` with
``x`` the natural log of frequency in Hz. The same function serves numpy (broadcast arrays,
for :meth:`specfit.models.Model.evaluate` and plots) and numba (scalars inside the fused
kernel that :mod:`specfit.kernels.compile` generates), so the value, the derivatives and the
compiled kernel cannot drift apart. Amplitude-like parameters must scale the shape linearly:
the solver normalises every pixel to unit mean power.

The arithmetic of each shape is written in the order the solver has always used, so fits
are bit-identical to the hand-written kernels these functions replace.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "power_law",
    "constant",
    "lorentzian_bump",
    "lognormal_bump",
    "bending_power_law",
    "broken_power_law",
    "kappa_function",
    "SHAPES",
]


def power_law(lnf, amplitude, index):
    """A f^-n"""
    e = np.exp(-index * lnf)
    return amplitude * e, e, -amplitude * lnf * e


def constant(lnf, tail):
    """C"""
    # ``0.0 * lnf`` gives the value the shape of ``lnf`` under numpy; a no-op for scalars
    return tail + 0.0 * lnf, 1.0 + 0.0 * lnf


def lorentzian_bump(lnf, bump_amplitude, bump_center, bump_width):
    """alpha / (1 + ((ln f - beta) / sigma)^2)"""
    u = (lnf - bump_center) / bump_width
    q = 1.0 / (1.0 + u * u)
    # d/du of alpha q = -2 alpha u q^2; du/dbeta = -1/sigma; du/dsigma = -u/sigma
    dq = 2.0 * bump_amplitude * u * q * q / bump_width
    return bump_amplitude * q, q, dq, dq * u


def lognormal_bump(lnf, bump_amplitude, bump_center, bump_width):
    """alpha exp(-(ln f - beta)^2 / (2 sigma^2))"""
    u = (lnf - bump_center) / bump_width
    g = np.exp(-0.5 * u * u)
    # d/dbeta = alpha g u / sigma; d/dsigma = alpha g u^2 / sigma
    dc = bump_amplitude * g * u / bump_width
    return bump_amplitude * g, g, dc, dc * u


# The shapes below need ln(1 + e^s) without overflow. It is written out in each shape as
# 0.5 (s + |s|) + ln(1 + e^-|s|) = max(s, 0) + ln(1 + e^-|s|): a shape is compiled by numba
# on its own source, so it cannot call a helper, and its source (the compile cache's key)
# must hold every constant it uses.


def bending_power_law(lnf, amplitude, index, knee):
    """A / (1 + (f / f_b)^n)"""
    # s = n ln(f / f_b); q = 1 / (1 + e^s) = exp(-softplus(s)) and q (1 - q) =
    # exp(s - 2 softplus(s)): neither overflows nor loses its small values far from the knee
    x = lnf - knee
    s = index * x
    sp = 0.5 * (s + np.abs(s)) + np.log1p(np.exp(-np.abs(s)))
    q = np.exp(-sp)
    qq = q * np.exp(s - sp)
    # d/dn of A q = -A q (1 - q) ln(f/f_b); d/d ln f_b = A q (1 - q) n
    return amplitude * q, q, -amplitude * qq * x, amplitude * qq * index


def broken_power_law(lnf, amplitude, index, index_high, break_freq):
    """A (f/f_b)^-n1 ((1 + (f/f_b)^(1/w)) / 2)^(-(n2 - n1) w), w = 0.1"""
    # ln P = ln A - n1 x - (n2 - n1) w [softplus(x / w) - ln 2] with x = ln(f / f_b) and
    # w = 0.1: a broken power law whose kink is rounded over ~w in ln f, so that the
    # derivatives exist everywhere (a sharp kink has none in f_b at a bin); A = P(f_b)
    x = lnf - break_freq
    z = x / 0.1
    sp = 0.5 * (z + np.abs(z)) + np.log1p(np.exp(-np.abs(z)))
    g = 0.1 * (sp - 0.6931471805599453)
    e = np.exp(-index * x - (index_high - index) * g)
    v = amplitude * e
    sig = np.exp(z - sp)  # logistic(z) = d softplus / dz
    return v, e, v * (g - x), -v * g, v * (index + (index_high - index) * sig)


def kappa_function(lnf, amplitude, kappa, kappa_rho):
    """A (1 + f^2 / (kappa rho^2))^(-(kappa + 1) / 2)"""
    # t = ln(f^2 / (kappa rho^2)) = 2 (ln f - ln rho) - ln kappa; P = A exp(-(k + 1)/2 sp(t))
    t = 2.0 * (lnf - kappa_rho) - np.log(kappa)
    sp = 0.5 * (t + np.abs(t)) + np.log1p(np.exp(-np.abs(t)))
    e = np.exp(-0.5 * (kappa + 1.0) * sp)
    v = amplitude * e
    sig = np.exp(t - sp)
    # d/dkappa: -sp/2 - (k + 1)/2 sig dt/dk with dt/dk = -1/k; d/d ln rho: (k + 1) sig
    return v, e, v * (-0.5 * sp + 0.5 * (kappa + 1.0) * sig / kappa), v * (kappa + 1.0) * sig


SHAPES = (
    power_law,
    constant,
    lorentzian_bump,
    lognormal_bump,
    bending_power_law,
    broken_power_law,
    kappa_function,
)
