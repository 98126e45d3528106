"""Where the coarse-to-fine fit spends its evaluations, at 300 and at 1800 bins (diagnostic).

For M1 + M2 on simulated Gamma spectra (half with a bump; :func:`fit_speed.simulate`), one
core, the product's solver options: per model and stage (coarse on ln-f groups, full
resolution) the solver's evaluations per pixel and CPU time, then the full-resolution polish
evaluations of M2 split by final status. Run:
``NUMBA_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/coarse_fine_cost.py``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import fit_speed as fs  # noqa: E402

from specfit.config import DEFAULTS  # noqa: E402
from specfit.kernels import fitting, lm  # noqa: E402
from specfit.stages import resolve_models  # noqa: E402

NPIX = 128


def main() -> None:
    models = resolve_models(dict(DEFAULTS.fit.models))
    opts = {**fs.PRODUCT, "best_model": "bic", "lrt_cache": None}
    solve = lm.solve
    stats: dict = {}
    polish: list = []

    def counted(kernel, x, y, S, LO, HI, method, c, active, w, max_iter, tol, nrun=None, lp=None):
        t0 = time.process_time()
        r = solve(kernel, x, y, S, LO, HI, method, c, active, w, max_iter, tol, nrun, lp)
        key = (S.shape[2], x.shape[0], "iterate" if max_iter > 0 else "rank")
        s = stats.setdefault(key, [0.0, 0.0])
        s[0] += r["nfev"].sum() / NPIX
        s[1] += time.process_time() - t0
        if y.shape[0] == NPIX and max_iter > 0 and S.shape[2] == 6 and x.shape[0] in (300, 1800):
            polish.append(r["nfev"])
        return r

    fitting.lm.solve = counted
    try:
        for method in ("whittle", "lsq", "lsq_log"):
            for nb in (300, 1800):
                f = fs.frequencies(nb)
                y = fs.simulate(f, NPIX, 2.0, 0.5, 7)
                fitting.fit_block(f, y[:8], models, method=method, dof=2.0, bin_rho=(), **opts)
                stats.clear()
                polish.clear()
                t0 = time.process_time()
                out = fitting.fit_block(f, y, models, method=method, dof=2.0, bin_rho=(), **opts)
                dt = time.process_time() - t0
                print(f"{method} {nb} bins: {NPIX / dt:.0f} px/s")
                for (npar, nf, kind), (ev, sec) in sorted(stats.items()):
                    print(f"  npar {npar} on {nf} bins ({kind}): {ev:.1f} evals/px, {sec:.2f} s")
                st = out["m2_status"]
                ev = polish[-1]
                for code in np.unique(st):
                    sel = st == code
                    print(
                        f"  M2 status {code}: {sel.sum()} px, {ev[sel].mean():.1f} polish evals/px"
                    )
    finally:
        fitting.lm.solve = solve


if __name__ == "__main__":
    main()
