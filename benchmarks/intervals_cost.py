"""What profile-likelihood intervals (``fit.intervals``) cost, on one core.

The product's fit (:func:`fit_speed.specfit_product`: M1 + M2, the defaults' starts, the
global search and the LRT) on simulated Gamma spectra (half with a bump;
:func:`fit_speed.simulate`), without intervals and with each set of :data:`SETS`, in the
same run and on the same pixels: CPU seconds per pixel (best of ``--repeats``), the ratio
to the fit without intervals, and the intervals' own solver evaluations per pixel (the
solver's evaluations counted while the intervals are found; ``<m>_nfev`` does not hold
them). Run:
``NUMBA_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/intervals_cost.py
[--json benchmarks/intervals_cost.json]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import fit_speed as fs  # noqa: E402

from specfit.kernels import fitting, lm  # noqa: E402
from specfit.stages import resolve_models  # noqa: E402

# the bump's position and width (the low-dof intervals docs/fitting.md measures), and those
# plus the power law's index and the tail (every M1 parameter but the amplitude)
SETS = (("bump_center", "bump_width"), ("bump_center", "bump_width", "index", "tail"))


def timed(f, y, dof, models, intervals, cache) -> tuple[float, float]:
    """(CPU seconds, solver evaluations spent inside the interval search per pixel)."""
    counted = {"n": 0}
    solve, inner = lm.solve, fitting._intervals

    def counting(*a, **k):
        r = solve(*a, **k)
        if counted.get("inside"):
            counted["n"] += int(r["nfev"].sum())
        return r

    def marked(*a, **k):
        counted["inside"] = True
        try:
            return inner(*a, **k)
        finally:
            counted["inside"] = False

    fitting.lm.solve, fitting._intervals = counting, marked
    try:
        dt = fs.specfit_product(
            f, y, dof, fs.DEFAULTS.fit.method, models, cache, {"intervals": list(intervals)}
        )[0]
    finally:
        fitting.lm.solve, fitting._intervals = solve, inner
    return dt, counted["n"] / y.shape[0]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=32, help="square block side (px)")
    ap.add_argument("--bins", default="300,1800", help="comma-separated numbers of bins")
    ap.add_argument("--dof", type=float, default=4.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    models = resolve_models(dict(fs.DEFAULTS.fit.models))
    res = {"size": args.size, "dof": args.dof, "method": fs.DEFAULTS.fit.method, "rows": []}
    for nb in (int(b) for b in args.bins.split(",")):
        f = fs.frequencies(nb)
        n = args.size * args.size
        y = fs.simulate(f, n, args.dof, 0.5, args.seed)
        with tempfile.TemporaryDirectory(prefix="specfit-lrt-") as cache:
            for s in ((),) + SETS:  # compile and build the LRT reference first
                timed(f, y[:16], args.dof, models, s, cache)
            base = None
            for s in ((),) + SETS:
                dt, ev = min(timed(f, y, args.dof, models, s, cache) for _ in range(args.repeats))
                base = dt if base is None else base
                row = {"bins": nb, "intervals": list(s), "cpu_s_per_px": dt / n,
                       "x_without": dt / base, "interval_nfev_per_px": ev}  # fmt: skip
                res["rows"].append(row)
                print(f"{nb} bins, dof {args.dof:g}, {n} px, one core: intervals "
                      f"[{', '.join(s)}] {1e3 * dt / n:.2f} ms/px = {dt / base:.2f}x without "
                      f"({ev:.0f} interval evaluations per pixel)")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(res, indent=1) + "\n")
    return res


if __name__ == "__main__":
    main()
