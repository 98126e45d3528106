"""Independent references for the recovery tests: the Whittle likelihood's expected
information and the first-order bias of its maximum-likelihood estimates.

Everything here is computed from ``Model.evaluate`` by central finite differences: no
analytic derivative, no solver, no starting value of specfit's is used. Parameters are on the
solver's scale (``ln p`` for log-scaled ones, see :func:`solver_scale`), where specfit's
errors are its inverse-information errors.

The bias is Cox & Snell's (1968, JRSS B 30, 248) first-order bias of a maximum-likelihood
estimate. For independent periodogram values y_i ~ mu_i(theta) Gamma(k, 1/k) (the Whittle
likelihood with k = dof/2) their formula reduces to the one of nonlinear regression (Box
1971): with J = d mu / d theta, W = diag(k / mu^2), the information K = J^T W J and H_i the
Hessian of mu_i,

    b = K^-1 J^T W xi,   xi_i = -tr(K^-1 H_i) / 2,

which is O(1/dof): the estimator's own bias, which a correct fit shows and which a mean over
many pixels resolves (``b / sd`` grows as ``1/sqrt(dof)``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["solver_scale", "natural", "fd_jacobian", "expected_errors", "whittle_bias"]


def _logp(model) -> np.ndarray:
    return np.array([p.log_scaled for p in model.parameters])


def solver_scale(model, p: np.ndarray) -> np.ndarray:
    """Natural parameters (..., npar) -> the solver's scale (ln p for log-scaled ones)."""
    t = np.array(p, dtype=np.float64)
    lp = _logp(model)
    t[..., lp] = np.log(t[..., lp])
    return t


def natural(model, theta: np.ndarray) -> np.ndarray:
    """The solver's scale -> natural parameters."""
    p = np.array(theta, dtype=np.float64)
    lp = _logp(model)
    p[..., lp] = np.exp(p[..., lp])
    return p


def _steps(theta: np.ndarray, rel: float) -> np.ndarray:
    return rel * np.maximum(1.0, np.abs(theta))


def fd_jacobian(model, f: np.ndarray, theta: np.ndarray, rel: float = 1e-6) -> np.ndarray:
    """d model / d theta (nf, npar) by central differences of ``Model.evaluate``."""
    n = theta.size
    h = _steps(theta, rel)
    rows = np.concatenate([theta + np.diag(h), theta - np.diag(h)])
    m = model.evaluate(f, natural(model, rows))
    return ((m[:n] - m[n:]) / (2 * h[:, None])).T


def _fd_hessians(model, f: np.ndarray, theta: np.ndarray, rel: float = 1e-4) -> np.ndarray:
    """d2 model / d theta_a d theta_b (nf, npar, npar), four-point central differences."""
    n = theta.size
    h = _steps(theta, rel)
    E = np.diag(h)
    rows, index = [], []
    for a in range(n):
        for b in range(a, n):
            for sa, sb in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
                rows.append(theta + sa * E[a] + sb * E[b])
            index.append((a, b))
    m = model.evaluate(f, natural(model, np.array(rows))).reshape(len(index), 4, f.size)
    H = np.empty((f.size, n, n))
    for q, (a, b) in enumerate(index):
        d = (m[q, 0] - m[q, 1] - m[q, 2] + m[q, 3]) / (4 * h[a] * h[b])
        H[:, a, b] = H[:, b, a] = d
    return H


def _information(model, f, theta, dof):
    J = fd_jacobian(model, f, theta)
    mu = model.evaluate(f, natural(model, theta)[None])[0]
    W = (dof / 2.0) / mu**2
    return J, W, J.T @ (W[:, None] * J)


def expected_errors(model, f: np.ndarray, theta: np.ndarray, dof: float) -> np.ndarray:
    """sqrt(diag(K^-1)): the inverse expected information's errors at ``theta`` (npar,)."""
    _, _, K = _information(model, f, theta, dof)
    return np.sqrt(np.diag(np.linalg.inv(K)))


def whittle_bias(model, f: np.ndarray, theta: np.ndarray, dof: float) -> np.ndarray:
    """Cox-Snell first-order bias of the Whittle estimates at the truth ``theta`` (npar,)."""
    J, W, K = _information(model, f, theta, dof)
    Ki = np.linalg.inv(K)
    xi = -0.5 * np.einsum("ab,iba->i", Ki, _fd_hessians(model, f, theta))
    return Ki @ (J.T @ (W * xi))


def whittle_nll(model, f: np.ndarray, y: np.ndarray, theta: np.ndarray, dof: float) -> float:
    """The Whittle negative log-likelihood k sum(ln mu + y / mu) (up to a constant)."""
    mu = model.evaluate(f, natural(model, theta)[None])[0]
    if not (np.all(np.isfinite(mu)) and np.all(mu > 0)):
        return np.inf
    return float((dof / 2.0) * np.sum(np.log(mu) + y / mu))


def scipy_fit(model, f, y, dof, starts, pin=None) -> tuple[np.ndarray, float]:
    """The best of scipy L-BFGS-B runs of :func:`whittle_nll` from every start (solver scale),
    gradient by central differences: (theta, nll). ``pin`` ``(j, value)``: parameter ``j``
    held at ``value`` (solver scale), the others fitted: a point of its profile likelihood."""
    from scipy.optimize import minimize

    lo, hi = model.bounds_for(f)
    lp = _logp(model)
    with np.errstate(divide="ignore", invalid="ignore"):  # ln of the unused branch
        lo = np.where(lp, np.where(lo > 0, np.log(np.maximum(lo, 1e-300)), -np.inf), lo)
        hi = np.where(lp, np.log(hi), hi)
    free = np.array([k != (None if pin is None else pin[0]) for k in range(lo.size)])
    finite = [(a if np.isfinite(a) else None, b if np.isfinite(b) else None) for a, b in
              zip(lo[free], hi[free], strict=True)]  # fmt: skip

    def full(u):
        t = np.empty(lo.size)
        t[free] = u
        if pin is not None:
            t[pin[0]] = pin[1]
        return t

    def fun(u):
        t = full(u)
        v = whittle_nll(model, f, y, t, dof)
        if not np.isfinite(v):
            return 1e300, np.zeros_like(u)
        mu = model.evaluate(f, natural(model, t)[None])[0]
        g = (dof / 2.0) * ((1.0 / mu - y / mu**2) @ fd_jacobian(model, f, t))
        return v, g[free]

    best = (None, np.inf)
    for s in starts:
        s = np.clip(np.asarray(s, np.float64), lo, hi)
        r = minimize(fun, s[free], jac=True, method="L-BFGS-B", bounds=finite,
                     options={"maxiter": 3000, "ftol": 1e-14, "gtol": 1e-9})  # fmt: skip
        if r.fun < best[1]:
            best = (full(r.x), float(r.fun))
    return best
