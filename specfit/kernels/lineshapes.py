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

__all__ = ["power_law", "constant", "lorentzian_bump", "lognormal_bump", "SHAPES"]


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


SHAPES = (power_law, constant, lorentzian_bump, lognormal_bump)
