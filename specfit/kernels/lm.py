"""Batched Levenberg–Marquardt for (npix, nf) blocks: least squares and Whittle likelihood.

All three objectives are written in one iteratively-reweighted form, so one solver serves
them all. With model m(p), its jacobian J, data y and per-bin weights w:

=========  ==============================  =========  ==============================
method     objective F (minimised)         weight a   "residual" e
=========  ==============================  =========  ==============================
lsq        1/2 sum w (y - m)^2             w          y - m
lsq_log    1/2 sum (z - ln m)^2            1/m^2      m (z - ln m),  z = ln y - bias
whittle    sum ln m + y / m                1/m^2      y - m
=========  ==============================  =========  ==============================

so that the gradient is ``-g`` with ``g = sum a e J`` and the Gauss-Newton / Fisher-scoring
curvature is ``H = sum a J J^T`` (for Whittle, H is the expected information divided by the
Gamma shape k = dof/2). A step solves ``(H + lam diag H) d = g`` on the free parameters.

Details that matter:

- Per-pixel damping (Nielsen's update of lam) and a per-pixel loop compiled with numba:
  each pixel iterates only until it converges, so converged pixels leave the active set.
- Box bounds by projection, with parameters that sit on a bound and are pushed outward by
  the gradient removed from the system (projected Newton), and parameters that carry no
  information (zero column of J, e.g. a bump centre when the bump amplitude is 0) frozen.
- Convergence is statistical: stop when ``c g^T H^-1 g < tol``, i.e. the remaining Newton step
  is below ``sqrt(tol)`` standard errors (``c`` converts H into the inverse covariance:
  k for Whittle, 1 for weighted lsq, 1/psi1(k) for lsq_log, (n - p) / (2 F) for unweighted lsq).
- float64 everywhere; no allocation inside the iteration apart from what the model's own
  line-shape function allocates for its output.
"""

from __future__ import annotations

import math

import numba
import numpy as np

# The model evaluation the solver calls. ``_lm_pixel`` and ``_lm_block`` below are the
# solver's source: kernels.compile copies them into a module generated per model, where EVAL
# is that model's fused kernel, and compiles them there (cached on disk by numba).
EVAL = None
# The objective's sums from EVAL's output, lm._chain_log then lm._accum in two passes
# (generated with EVAL): ACCUM_F sums F and s2 and keeps each bin's weight a and a e; HPASS
# (:func:`hess_pass`) then sums H and g from them and J, in SIMD lanes. Every lane does
# _accum's scalar operations in _accum's order: bit-identical to those two.
ACCUM_F = None
HPASS = None

__all__ = ["solve", "OBJECTIVES", "LMResult", "SOLVER_TEMPLATES"]

OBJECTIVES = {"lsq": 0, "lsq_log": 1, "whittle": 2}

# status codes shared with fitting.STATUS_CODES (kept in one place there; numbers used here)
_CONVERGED, _MAX_ITER, _STALLED, _FAILED = 0, 1, 8, 9
_SINGULAR, _AT_BOUND = 6, 7


def hess_pass(npar: int):
    """A numba intrinsic ``HPASS(a, ae, J, fa, H, g)`` for ``npar`` parameters: with
    ``j = J[i] * fa`` per bin, ``g = sum ae[i] j`` and the lower triangle of
    ``H = sum (a[i] j) j^T`` (then mirrored), summed over the bins in order.

    ``lm._accum``'s sums on ``lm._chain_log``'s jacobian, operation for operation
    (``j{a} = J[i, a] * f{a}``, ``g{a} += ae * j{a}``, ``aj{a} = a_ * j{a}``,
    ``h{a}_{b} += aj{a} * j{b}``), with the parameters in the lanes of one vector per column
    of H instead of 27 scalar chains: each
    lane's operations and their order are the scalar code's, so the sums are bit-identical
    (numba compiles without fast-math: no contraction into FMAs, no reassociation)."""
    from numba.core import cgutils, types
    from numba.extending import intrinsic

    ir = cgutils.ir  # numba's own llvmlite IR module: an intrinsic's codegen is written in it

    width = 2
    while width < npar:
        width *= 2
    dbl = ir.DoubleType()
    vec = ir.VectorType(dbl, width)

    def splat(builder, v):
        one = builder.insert_element(ir.Constant(vec, None), v, ir.Constant(ir.IntType(32), 0))
        return builder.shuffle_vector(
            one,
            ir.Constant(vec, None),
            ir.Constant(ir.VectorType(ir.IntType(32), width), [0] * width),
        )

    def lane(k):
        return ir.Constant(ir.IntType(32), k)

    @intrinsic
    def _hpass(typingctx, a, ae, J, fa, H, g):
        arrays = (a, ae, J, fa, H, g)
        dims = (1, 1, 2, 1, 2, 1)
        if not all(
            isinstance(t, types.Array) and t.dtype == types.float64 and t.layout == "C"
            and t.ndim == n
            for t, n in zip(arrays, dims, strict=True)
        ):  # fmt: skip
            return None  # the codegen below indexes C-contiguous float64 buffers
        sig = types.void(a, ae, J, fa, H, g)

        def codegen(context, builder, signature, args):
            ta, tae, tJ, tfa, tH, tg = signature.args
            arr_a = context.make_array(ta)(context, builder, args[0])
            arr_ae = context.make_array(tae)(context, builder, args[1])
            arr_J = context.make_array(tJ)(context, builder, args[2])
            arr_fa = context.make_array(tfa)(context, builder, args[3])
            arr_H = context.make_array(tH)(context, builder, args[4])
            arr_g = context.make_array(tg)(context, builder, args[5])
            nf = cgutils.unpack_tuple(builder, arr_J.shape, 2)[0]
            zero = ir.Constant(vec, [0.0] * width)
            fv = zero
            for k in range(npar):
                fk = builder.load(builder.gep(arr_fa.data, [ir.Constant(ir.IntType(64), k)]))
                fv = builder.insert_element(fv, fk, lane(k))
            gacc = cgutils.alloca_once_value(builder, zero)
            cols = [cgutils.alloca_once_value(builder, zero) for _ in range(npar)]
            with cgutils.for_range(builder, nf) as loop:
                i = loop.index
                ai = builder.load(builder.gep(arr_a.data, [i]))
                aei = builder.load(builder.gep(arr_ae.data, [i]))
                row = builder.mul(i, ir.Constant(i.type, npar))
                jr = zero
                for k in range(npar):
                    idx = builder.add(row, ir.Constant(i.type, k))
                    jr = builder.insert_element(
                        jr, builder.load(builder.gep(arr_J.data, [idx])), lane(k)
                    )
                jv = builder.fmul(jr, fv)  # j{a} = J[i, a] * f{a}
                builder.store(  # g{a} += ae * j{a}
                    builder.fadd(builder.load(gacc), builder.fmul(splat(builder, aei), jv)), gacc
                )
                ajv = builder.fmul(splat(builder, ai), jv)  # aj{a} = a_ * j{a}
                for b in range(npar):  # h{a}_{b} += aj{a} * j{b} (lanes a >= b used)
                    jb = splat(builder, builder.extract_element(jv, lane(b)))
                    builder.store(
                        builder.fadd(builder.load(cols[b]), builder.fmul(ajv, jb)), cols[b]
                    )
            gv = builder.load(gacc)
            for k in range(npar):
                ptr = builder.gep(arr_g.data, [ir.Constant(ir.IntType(64), k)])
                builder.store(builder.extract_element(gv, lane(k)), ptr)
            for b in range(npar):
                cv = builder.load(cols[b])
                for k in range(b, npar):
                    v = builder.extract_element(cv, lane(k))
                    builder.store(
                        v, builder.gep(arr_H.data, [ir.Constant(ir.IntType(64), k * npar + b)])
                    )
                    if k != b:
                        builder.store(
                            v, builder.gep(arr_H.data, [ir.Constant(ir.IntType(64), b * npar + k)])
                        )
            return context.get_dummy_value()

        return sig, codegen

    return _hpass


@numba.njit(nogil=True, cache=True)
def _accum(y, w, use_w, obj, m, J, npar, H, g, want):
    """One pass over the bins: objective F, sum a e^2, and (if want) H and g. F=inf if invalid."""
    nf = y.shape[0]
    if want:
        for a in range(npar):
            g[a] = 0.0
            for b in range(npar):
                H[a, b] = 0.0
    F = 0.0
    s2 = 0.0
    prod = 1.0
    cnt = 0
    for i in range(nf):
        mi = m[i]
        if not math.isfinite(mi):
            return math.inf, math.inf
        if obj == 0:
            e = y[i] - mi
            a_ = w[i] if use_w else 1.0
            F += 0.5 * a_ * e * e
        else:
            if mi <= 0.0:
                return math.inf, math.inf
            inv = 1.0 / mi
            a_ = inv * inv
            if obj == 2 and use_w:
                # weighted Whittle: bin i stands for w[i] periodogram values (grouped bins)
                e = y[i] - mi
                a_ *= w[i]
                F += w[i] * (y[i] * inv + math.log(mi))
            elif obj == 2:
                e = y[i] - mi
                F += y[i] * inv
                # sum of logs through products of 8 values: ~8x fewer log() calls
                if 1e-30 < mi < 1e30:
                    prod *= mi
                    cnt += 1
                    if cnt == 8:
                        F += math.log(prod)
                        prod = 1.0
                        cnt = 0
                else:
                    F += math.log(mi)
            else:
                r = y[i] - math.log(mi)
                e = mi * r
                if use_w:  # grouped bins: bin i stands for w[i] values
                    a_ *= w[i]
                    F += 0.5 * w[i] * r * r
                else:
                    F += 0.5 * r * r
        s2 += a_ * e * e
        if want:
            ae = a_ * e
            for a in range(npar):
                ja = J[i, a]
                g[a] += ae * ja
                aj = a_ * ja
                for b in range(a + 1):
                    H[a, b] += aj * J[i, b]
    if cnt > 0:
        F += math.log(prod)
    if want:
        for a in range(npar):
            for b in range(a):
                H[b, a] = H[a, b]
    return F, s2


@numba.njit(nogil=True, cache=True, _nrt=False)
def _chol_solve(A, b, free, npar, L, out, damp, idx, work):
    """Solve (A + damp diag A)_ff x = b_f by Cholesky on the free set; x = 0 elsewhere.

    The matrix is Jacobi-scaled (unit diagonal) first, so parameters of wildly different
    magnitude (an amplitude of 1e-8 next to an index of 2) do not break the factorisation.
    Returns b_f^T x (the decrement) or -1.0 if the matrix is not positive definite.
    """
    dsq = work[0]  # scratch buffers: no allocation inside the iteration
    nfree = 0
    for a in range(npar):
        out[a] = 0.0
        if free[a] and A[a, a] > 0.0:
            idx[nfree] = a
            dsq[nfree] = math.sqrt(A[a, a])
            nfree += 1
    if nfree == 0:
        return 0.0
    for i in range(nfree):
        for j in range(i + 1):
            v = A[idx[i], idx[j]] / (dsq[i] * dsq[j])
            if i == j:
                v = 1.0 + damp
            for k in range(j):
                v -= L[i, k] * L[j, k]
            if i == j:
                if not v > 1e-13:
                    return -1.0
                L[i, i] = math.sqrt(v)
            else:
                L[i, j] = v / L[j, j]
    # forward then back substitution on the scaled system
    z = work[1]
    for i in range(nfree):
        v = b[idx[i]] / dsq[i]
        for k in range(i):
            v -= L[i, k] * z[k]
        z[i] = v / L[i, i]
    dec = 0.0
    for i in range(nfree):
        dec += z[i] * z[i]
    sol = work[2]
    for i in range(nfree - 1, -1, -1):
        v = z[i]
        for k in range(i + 1, nfree):
            v -= L[k, i] * sol[k]
        sol[i] = v / L[i, i]
    for i in range(nfree):
        out[idx[i]] = sol[i] / dsq[i]
    return dec


@numba.njit(nogil=True, cache=True, _nrt=False)
def _chol_inv_diag(A, free, npar, L, scale, out, idx, work):
    """sqrt(diag((scale A_ff)^-1)) into out (NaN where not free). False if not PD."""
    dsq = work[0]
    nfree = 0
    for a in range(npar):
        out[a] = math.nan
        if free[a] and A[a, a] > 0.0:
            idx[nfree] = a
            dsq[nfree] = math.sqrt(A[a, a] * scale)
            nfree += 1
    if nfree == 0:
        return True
    for i in range(nfree):
        for j in range(i + 1):
            v = A[idx[i], idx[j]] * scale / (dsq[i] * dsq[j])
            for k in range(j):
                v -= L[i, k] * L[j, k]
            if i == j:
                # a correlation matrix this close to singular has no usable inverse
                if not v > 1e-13:
                    return False
                L[i, i] = math.sqrt(v)
            else:
                L[i, j] = v / L[j, j]
    # diag(A^-1)_c = |L^-1 e_c|^2 since A^-1 = L^-T L^-1 (then undo the Jacobi scaling)
    z = work[1]
    for c in range(nfree):
        for i in range(nfree):
            v = 1.0 if i == c else 0.0
            for k in range(i):
                v -= L[i, k] * z[k]
            z[i] = v / L[i, i]
        var = 0.0
        for i in range(nfree):
            var += z[i] * z[i]
        if not (var > 0.0 and math.isfinite(var)):
            return False
        out[idx[c]] = math.sqrt(var) / dsq[c]
    return True


@numba.njit(nogil=True, cache=True)
def _chain_log(logp, pn, J, npar, want):
    """Jacobian columns of log-parametrised parameters: dm/dln(p) = p dm/dp."""
    if want:
        for a in range(npar):
            if logp[a]:
                for i in range(J.shape[0]):
                    J[i, a] *= pn[a]


@numba.njit(nogil=True, cache=True, _nrt=False)
def _free_set(p, lo, hi, H, g, npar, free):
    maxd = 0.0
    for a in range(npar):
        maxd = max(maxd, H[a, a])
    nfree = 0
    for a in range(npar):
        # only an exactly vanishing column carries no information (e.g. a bump centre
        # when the bump amplitude is 0); anything else is handled by the Jacobi scaling
        f = H[a, a] > 1e-280 * maxd and H[a, a] > 0.0
        if p[a] <= lo[a] and g[a] <= 0.0:
            f = False
        if p[a] >= hi[a] and g[a] >= 0.0:
            f = False
        free[a] = f
        if f:
            nfree += 1
    return nfree


def _lm_pixel(kid, x, y, w, use_w, obj, c, nfit, p, lo, hi, max_iter, tol, secant, bufs):
    """Fit one pixel in place (p holds the start); returns (F, s2, status, nfev, c_eff)."""
    m, J, mt, Jt, H, g, Ht, gt, L, d, pt, free, logp, pn, idx, work, B, A, d0, ab, aeb, fa = bufs
    npar = p.shape[0]
    for a in range(npar):
        p[a] = min(max(p[a], lo[a]), hi[a])
    for a in range(npar):
        pn[a] = math.exp(p[a]) if logp[a] else p[a]
    EVAL(kid, x, pn, m, J, True)
    F, s2 = ACCUM_F(y, w, use_w, obj, m, ab, aeb)
    nfev = 1
    if not math.isfinite(F):
        return F, s2, _FAILED, nfev, c
    for a in range(npar):
        fa[a] = pn[a] if logp[a] else 1.0
    HPASS(ab, aeb, J, fa, H, g)
    lam = 1e-3
    nu = 2.0
    prev_dec = -1.0
    status = _MAX_ITER
    # B: secant (SR1) estimate of observed minus expected curvature, learnt from the
    # gradient change over accepted steps; the step solves with H + B (H alone when B is 0
    # or H + B is not positive definite), the convergence test and errors use H alone
    nb = 0
    for a in range(npar):
        for b in range(npar):
            B[a, b] = 0.0
    # the undamped step on H (in d0, decrement dec0) is solved once per point: after a
    # rejected step p, H and g are unchanged and so would it be
    fresh = True
    dec0 = 0.0
    for _ in range(max_iter):
        ceff = c if c > 0 else (nfit - npar) / max(2.0 * F, 1e-300)
        if fresh:
            _free_set(p, lo, hi, H, g, npar, free)
            dec0 = _chol_solve(H, g, free, npar, L, d0, 0.0, idx, work)
            fresh = False
        dec = dec0
        for a in range(npar):
            d[a] = d0[a]
        if dec >= 0.0 and ceff * dec < tol:
            status = _CONVERGED
            break
        # Close enough that one undamped step lands within tol: take it and stop, saving the
        # confirming evaluation. "Close enough" extrapolates the contraction of the decrement
        # seen over the last step (at worst 1/16 per step assumed), so it adapts to how fast
        # scoring converges on this pixel.
        contraction = min(dec / prev_dec, 1.0) if prev_dec > 0.0 else 1.0
        final = dec >= 0.0 and ceff * dec * min(contraction, 1.0 / 16.0) < tol
        prev_dec = dec
        use_b = False
        if nb > 0:
            ok_a = True
            for a in range(npar):
                for b in range(npar):
                    A[a, b] = H[a, b] + B[a, b]
                if free[a] and not A[a, a] > 0.0:
                    ok_a = False
            if ok_a:
                dA = _chol_solve(A, g, free, npar, L, d, 0.0 if final else lam, idx, work)
                if dA >= 0.0:
                    use_b = True
                    dec = dA
            if not use_b:
                # H + B is not positive definite: forget B, back to the undamped H step
                nb = 0
                for a in range(npar):
                    for b in range(npar):
                        B[a, b] = 0.0
                dec = dec0
                for a in range(npar):
                    d[a] = d0[a]
        if not use_b and not final and lam > 1e-9:
            # damped step; Marquardt's scaling by diag(H) keeps it invariant to units
            # (with lam this small the undamped step already in d is the same)
            dec = _chol_solve(H, g, free, npar, L, d, lam, idx, work)
        if dec < 0.0:
            lam *= nu
            nu *= 2.0
            if lam > 1e16:
                status = _STALLED
                break
            continue
        pred = 0.0
        for a in range(npar):
            pt[a] = min(max(p[a] + d[a], lo[a]), hi[a])
            d[a] = pt[a] - p[a]
            pred += g[a] * d[a]
        for a in range(npar):
            for b in range(npar):
                hab = H[a, b] + B[a, b] if use_b else H[a, b]
                pred -= 0.5 * d[a] * hab * d[b]
        for a in range(npar):
            pn[a] = math.exp(pt[a]) if logp[a] else pt[a]
        EVAL(kid, x, pn, mt, Jt, True)
        # the objective first; H and g at the trial point only where the step is taken (the
        # same sums either way: _accum's F and s2 do not depend on ``want``)
        Ft, s2t = ACCUM_F(y, w, use_w, obj, mt, ab, aeb)
        nfev += 1
        if math.isfinite(Ft) and Ft < F:
            for a in range(npar):
                fa[a] = pn[a] if logp[a] else 1.0
            HPASS(ab, aeb, Jt, fa, Ht, gt)
            fresh = True
            rho = (F - Ft) / pred if pred > 0.0 else 0.0
            F, s2 = Ft, s2t
            for a in range(npar):
                p[a] = pt[a]
            m, mt = mt, m
            J, Jt = Jt, J
            H, Ht = Ht, H
            g, gt = gt, g
            # secant update: the gradient change y = g_old - g_new over the step d should
            # equal (H_new + B) d; SR1 correction of B along the residual v
            vs = 0.0
            vv = 0.0
            dd = 0.0
            for a in range(npar):
                v = gt[a] - g[a]
                for b in range(npar):
                    v -= (H[a, b] + B[a, b]) * d[b]
                work[0, a] = v
                vs += v * d[a]
                vv += v * v
                dd += d[a] * d[a]
            if secant and abs(vs) > 1e-8 * math.sqrt(vv * dd) and vv > 0.0:
                for a in range(npar):
                    for b in range(npar):
                        B[a, b] += work[0, a] * work[0, b] / vs
                nb += 1
            t = 2.0 * rho - 1.0
            lam *= max(1.0 / 3.0, 1.0 - t * t * t)
            lam = max(lam, 1e-12)
            nu = 2.0
            if final:
                status = _CONVERGED
                break
        elif final:
            status = _CONVERGED  # the undamped step could not improve: already there
            break
        else:
            lam *= nu
            nu *= 2.0
            nb = 0
            for a in range(npar):
                for b in range(npar):
                    B[a, b] = 0.0
            if lam > 1e16:
                status = _STALLED
                break
    ceff = c if c > 0 else (nfit - npar) / max(2.0 * F, 1e-300)
    # error bars: every parameter strictly inside its bounds and carrying information
    maxd = 0.0
    for a in range(npar):
        maxd = max(maxd, H[a, a])
    at_bound = False
    for a in range(npar):
        inside = lo[a] < p[a] < hi[a]
        if not inside:
            at_bound = True
        free[a] = inside and H[a, a] > 1e-280 * maxd and H[a, a] > 0.0
    ok = _chol_inv_diag(H, free, npar, L, ceff, d, idx, work)
    if status == _CONVERGED:
        if at_bound:
            status = _AT_BOUND
        elif not ok:
            status = _SINGULAR
        else:
            for a in range(npar):
                if not free[a]:
                    status = _SINGULAR
    if not ok:
        for a in range(npar):
            d[a] = math.nan
    # keep the error bars in pt's buffer slot for the caller
    for a in range(npar):
        pt[a] = d[a]
    return F, s2, status, nfev, ceff


def _lm_block(
    kid,
    x,
    Y,
    W,
    use_w,
    obj,
    C,
    NFIT,
    P0,
    LO,
    HI,
    active,
    max_iter,
    tol,
    secant,
    nrun,
    same,
    logp,
    P,
    ERR,
    F,
    S2,
    CEFF,
    STATUS,
    NFEV,
):
    npix, nstart, npar = P0.shape
    nf = x.shape[0]
    m = np.empty(nf)
    J = np.empty((nf, npar))
    mt = np.empty(nf)
    Jt = np.empty((nf, npar))
    H = np.empty((npar, npar))
    g = np.empty(npar)
    Ht = np.empty((npar, npar))
    gt = np.empty(npar)
    L = np.empty((npar, npar))
    d = np.empty(npar)
    pt = np.empty(npar)
    free = np.empty(npar, dtype=np.bool_)
    pn = np.empty(npar)
    idx = np.empty(npar, dtype=np.int64)
    work = np.empty((3, npar))
    B = np.empty((npar, npar))
    A = np.empty((npar, npar))
    d0 = np.empty(npar)
    ab = np.empty(nf)
    aeb = np.empty(nf)
    fa = np.empty(npar)
    bufs = (m, J, mt, Jt, H, g, Ht, gt, L, d, pt, free, logp, pn, idx, work, B, A, d0, ab, aeb, fa)
    p = np.empty(npar)
    w0 = np.ones(1)
    Fc = np.empty(nstart)
    for i in range(npix):
        if not active[i]:
            continue
        w = W[i] if use_w else w0
        best = math.inf
        tot = 0
        order = np.arange(nstart)
        if nrun < nstart:
            # rank candidate starts by their objective: one evaluation each, no jacobian
            for s in range(nstart):
                for a in range(npar):
                    p[a] = min(max(P0[i, s, a], LO[i, a]), HI[i, a])
                for a in range(npar):
                    pn[a] = math.exp(p[a]) if logp[a] else p[a]
                EVAL(kid, x, pn, m, J, False)
                Fc[s], _ = ACCUM_F(Y[i], w, use_w, obj, m, ab, aeb)
                tot += 1
            order = np.argsort(Fc)
        for r in range(min(nrun, nstart)):
            s = order[r]
            if r > 0 and same > 0.0:
                # a later start within ``same`` standard errors of the best result so far in
                # every parameter (one without an error: equal to it) is in the same basin
                # and would end where it did: not run again
                dup = True
                for a in range(npar):
                    q = P0[i, s, a] - P[i, a]
                    e = ERR[i, a]
                    if math.isfinite(e):
                        if not abs(q) <= same * e:
                            dup = False
                    elif not abs(q) <= 1e-9 * (1.0 + abs(P[i, a])):
                        dup = False
                if dup:
                    continue
            for a in range(npar):
                p[a] = P0[i, s, a]
            Fi, s2i, st, nfev, ce = _lm_pixel(
                kid,
                x,
                Y[i],
                w,
                use_w,
                obj,
                C[i],
                NFIT[i],
                p,
                LO[i],
                HI[i],
                max_iter,
                tol,
                secant,
                bufs,
            )
            tot += nfev
            if r == 0 or (math.isfinite(Fi) and Fi < best):
                best = Fi if math.isfinite(Fi) else math.inf
                F[i] = Fi
                S2[i] = s2i
                CEFF[i] = ce
                STATUS[i] = st
                for a in range(npar):
                    P[i, a] = p[a]
                    ERR[i, a] = pt[a]
        NFEV[i] = tot


# The solver's source for kernels.compile: copied into each generated module (with EVAL
# bound there), which is why these two are plain functions here, not compiled.
SOLVER_TEMPLATES = (_lm_pixel, _lm_block)


class LMResult(dict):
    """Solver output: params, errors (normalised units), F, s2, c_eff, status, nfev."""


def solve(
    solve_block,
    x: np.ndarray,
    y: np.ndarray,
    starts: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    method: str,
    c: np.ndarray,
    active: np.ndarray,
    weights: np.ndarray | None,
    max_iter: int,
    tol: float,
    nrun: int | None = None,
    log_params: np.ndarray | None = None,
    secant: bool = False,
    same: float = 0.0,
) -> LMResult:
    """Run the batched solver on a normalised block.

    Parameters
    ----------
    solve_block
        The model's compiled block solver, ``specfit.kernels.compile.compiled(...).solve_block``.
    x
        (nf,) independent variable (f or ln f, as the model declares).
    y
        (npix, nf) normalised power (for ``lsq_log``: ln power minus the log bias).
    starts
        (npix, nstart, npar) starting points; the best final objective is kept.
    lo, hi
        (npix, npar) bounds in normalised units.
    method
        ``"whittle"``, ``"lsq"`` or ``"lsq_log"``.
    c
        (npix,) factor turning H into the inverse covariance (<= 0: estimate from residuals).
    active
        (npix,) bool; inactive pixels are left NaN with status 0 (the caller sets theirs).
    weights
        (npix, nf) 1/sigma^2 for ``lsq`` (normalised), or None.
    max_iter, tol
        Iteration cap (trial steps per start) and convergence threshold (see module doc).
    nrun
        Iterate from the best ``nrun`` starts ranked by their initial objective (None: all).
    log_params
        (npar,) bool: parameters solved as ln(p) (strictly positive scale parameters);
        starts, bounds, results and errors are in natural units either way.
    secant
        Steps with the curvature H plus a secant (SR1) estimate of what H misses (the
        observed minus the expected information; for least squares the residuals'
        second-order term), learnt from the gradient change over accepted steps. Fisher
        scoring / Gauss-Newton converge only linearly when residuals are large (Gamma
        spectra); near the optimum this makes it close to Newton's. The stopping test and
        the error bars still use H alone, so "converged" means the same.
    same
        > 0: the second and later of the ``nrun`` starts are skipped where they lie within
        ``same`` standard errors of the best result so far in every parameter (in the solved
        scale: ln p for ``log_params``), i.e. in its basin; 0: every one runs.

    Returns
    -------
    LMResult
        ``params`` and ``errors`` (npix, npar), ``F``, ``s2``, ``c_eff`` (npix,), ``status``
        (int8), ``nfev`` (int32).
    """
    npix, nstart, npar = starts.shape
    # the compiled loops index by these shapes without bounds checks: a mismatch is refused
    # here, not read or written past a buffer
    if np.ndim(y) != 2 or np.shape(y) != (npix, np.shape(x)[0]):
        raise ValueError(
            f"lm.solve: y must be (npix, nf) = ({npix}, {np.shape(x)[0]}); got {np.shape(y)}"
        )
    if np.shape(lo) != (npix, npar) or np.shape(hi) != (npix, npar):
        raise ValueError(f"lm.solve: lo and hi must be (npix, npar) = ({npix}, {npar})")
    if weights is not None and np.shape(weights) != np.shape(y):
        raise ValueError("lm.solve: weights must have y's shape")
    logp = np.zeros(npar, dtype=np.bool_) if log_params is None else np.asarray(log_params, bool)
    if logp.any():
        # strictly positive scale parameters are solved in ln space: a power law that must
        # fall by decades is then a straight walk, not a crawl along the amplitude bound
        starts = starts.copy()
        lo = np.array(lo, dtype=np.float64)
        hi = np.array(hi, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            starts[..., logp] = np.log(np.maximum(starts[..., logp], 1e-300))
            lo[:, logp] = np.where(lo[:, logp] > 0, np.log(lo[:, logp]), -np.inf)
            hi[:, logp] = np.log(hi[:, logp])
    P = np.full((npix, npar), np.nan)
    ERR = np.full((npix, npar), np.nan)
    F = np.full(npix, np.nan)
    S2 = np.full(npix, np.nan)
    CE = np.full(npix, np.nan)
    ST = np.zeros(npix, dtype=np.int8)
    NF = np.zeros(npix, dtype=np.int32)
    use_w = weights is not None
    W = np.ascontiguousarray(weights, dtype=np.float64) if use_w else np.ones((1, 1))
    nfit = np.full(npix, float(x.shape[0]))
    solve_block(
        0,
        np.ascontiguousarray(x, dtype=np.float64),
        np.ascontiguousarray(y, dtype=np.float64),
        W,
        use_w,
        OBJECTIVES[method],
        np.ascontiguousarray(c, dtype=np.float64),
        nfit,
        np.ascontiguousarray(starts, dtype=np.float64),
        np.ascontiguousarray(lo, dtype=np.float64),
        np.ascontiguousarray(hi, dtype=np.float64),
        np.ascontiguousarray(active, dtype=np.bool_),
        int(max_iter),
        float(tol),
        bool(secant),
        int(nstart if nrun is None else max(1, nrun)),
        float(same),
        logp,
        P,
        ERR,
        F,
        S2,
        CE,
        ST,
        NF,
    )
    if logp.any():
        P[:, logp] = np.exp(P[:, logp])
        ERR[:, logp] *= P[:, logp]  # delta method: sigma_p = p sigma_ln(p)
    return LMResult(params=P, errors=ERR, F=F, s2=S2, c_eff=CE, status=ST, nfev=NF)
