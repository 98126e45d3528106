"""The fit engine of several commits timed side by side, and where one commit's time goes.

Rates on a shared machine drift by tens of percent within minutes, so comparing a figure with
one measured on another day says little. This script times two or more commits in the same
session: each commit is checked out in a temporary git worktree and timed in its own process
(one core), the commits alternating for ``--rounds`` rounds, on the same simulated spectra
(``fit_speed.simulate``, dof 2, Whittle): the bare kernel (M1, one start, 8,192 px, best of 3)
and the product's defaults (``fit_speed.specfit_product``: M1 + M2, global search, 3 starts,
LRT; 1,024 px, half with a bump, best of 2).

``--stages`` instead profiles the working tree's defaults: the CPU time of every
:func:`specfit.kernels.lm.solve` call grouped by (bins, parameters, starts, tolerance), i.e.
each model's coarse stage (grouped bins), its full-resolution ranking and polish.

    python benchmarks/engine_ab.py 8ec215e HEAD --bins 300 1800 --rounds 2
    python benchmarks/engine_ab.py --stages --bins 1800 [--method lsq]
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

for _v in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _setup(nbins: int):
    """fit_speed (imported from here), the frequency grid and the default models."""
    sys.path.insert(0, str(HERE))
    import fit_speed as fs

    from specfit.config import DEFAULTS

    f = fs.frequencies(nbins)
    return fs, f, fs.resolve_models(dict(DEFAULTS.fit.models))


def _child(nbins: int) -> str:
    """Time the specfit importable here (the worktree on PYTHONPATH); one line."""
    fs, f, models = _setup(nbins)
    bare = fs.simulate(f, 8192, 2.0, 0.0, 1)
    prod = fs.simulate(f, 1024, 2.0, 0.5, 1)
    with tempfile.TemporaryDirectory() as cache:
        fs.specfit_bare(f, bare[:64], 2.0, "whittle", models["m1"])  # compile / load caches
        fs.specfit_product(f, prod[:64], 2.0, "whittle", models, cache)
        tb = min(fs.specfit_bare(f, bare, 2.0, "whittle", models["m1"])[0] for _ in range(3))
        tp = min(fs.specfit_product(f, prod, 2.0, "whittle", models, cache)[0] for _ in range(2))
    return f"bare M1 {8192 / tb:,.0f} fits/s, defaults {1024 / tp:,.0f} px/s"


def _stages(nbins: int, method: str = "whittle") -> None:
    from specfit.kernels import fitting, lm

    fs, f, models = _setup(nbins)
    y = fs.simulate(f, 1024, 2.0, 0.5, 1)
    stats = collections.defaultdict(lambda: [0, 0.0, 0, 0])
    solve = lm.solve

    def timed(kernel, x, y_, S, *a, **k):
        t = time.process_time()
        r = solve(kernel, x, y_, S, *a, **k)
        s = stats[(x.size, S.shape[2], S.shape[1], a[7] if len(a) > 7 else k.get("tol"))]
        s[0] += 1
        s[1] += time.process_time() - t
        s[2] += int(r["nfev"].sum())
        s[3] += S.shape[0]
        return r

    with tempfile.TemporaryDirectory() as cache:
        fs.specfit_product(f, y[:64], 2.0, method, models, cache)
        fitting.lm.solve = timed
        try:
            dt = fs.specfit_product(f, y, 2.0, method, models, cache)[0]
        finally:
            fitting.lm.solve = solve
    print(f"{nbins} bins, defaults ({method}, dof 2, 1,024 px): {1024 / dt:,.0f} px/s")
    for (nb, npar, nst, tol), (calls, t, nfev, npx) in sorted(
        stats.items(), key=lambda kv: -kv[1][1]
    ):
        print(
            f"  {nb:5d} bins, {npar} parameters, {nst:2d} starts, tol {tol:g}: {calls:3d} calls, "
            f"{100 * t / dt:3.0f} % of the time, {nfev / npx:.1f} evaluations per pixel per call"
        )


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("revs", nargs="*", help="git revisions (HEAD: the working tree)")
    ap.add_argument("--bins", type=int, nargs="+", default=[300, 1800])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--stages", action="store_true", help="profile the working tree's stages")
    ap.add_argument(
        "--method", default="whittle", choices=("whittle", "lsq"), help="objective for --stages"
    )
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child is not None:
        print(_child(args.child), flush=True)
        return
    if args.stages:
        for nb in args.bins:
            _stages(nb, args.method)
        return
    if len(args.revs) < 2:
        ap.error("give two or more revisions, or --stages")
    with tempfile.TemporaryDirectory() as tmp:
        trees = {}
        for rev in args.revs:
            if rev == "HEAD":
                trees[rev] = ROOT
                continue
            path = Path(tmp) / rev.replace("/", "_")
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(path), rev], check=True)  # fmt: skip
            trees[rev] = path
        try:
            for r in range(args.rounds):
                for rev, path in trees.items():
                    for nb in args.bins:
                        env = {**os.environ, "PYTHONPATH": str(path)}
                        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(nb)]
                        out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=path)
                        line = out.stdout.strip().splitlines()[-1] if out.returncode == 0 else out.stderr.strip()[-300:]  # fmt: skip
                        print(f"round {r + 1} {rev} {nb} bins: {line}", flush=True)
        finally:
            for path in trees.values():
                if path != ROOT:
                    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)], check=False)  # fmt: skip


if __name__ == "__main__":
    main()
