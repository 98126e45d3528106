"""``specfit.fit`` on an in-memory DataArray, as a notebook user calls it: first-call cost and cores.

A (freq, y, x) power DataArray held in memory (one chunk) is fitted at the product's defaults
(M1 + M2, Whittle, multistart and the LRT of the config). ``specfit.fit`` tiles such an array
itself (about four tiles per core), so dask's threaded scheduler runs it on every core.

Printed:

- first-call cost on ``--first`` px: the first call's time minus a second call's, in a fresh
  process, with a cold numba cache and no LRT reference on disk (``cold``), and again with
  both cached (``warm``: what every later session pays);
- fits on ``--size`` x ``--size`` px with dask's threaded scheduler on 1 and on 2 threads, and
  on 2 threads without the tiling (one chunk, as before): wall and CPU time (best of
  ``--repeat``; CPU / wall = cores kept busy), and the speed-up; the maps are checked
  bit-identical.

Run::

    python benchmarks/api_fit.py                 # 128 x 128, 300 bins, first call on 64 x 64
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def power_array(size: int, nf: int = 300, seed: int = 0):
    """Simulated periodograms (dof 2): power law + tail, a bump in a third of the pixels."""
    import xarray as xr

    rng = np.random.default_rng(seed)
    f = np.arange(1, nf + 1) / (2 * nf * 12.0)
    npix = size * size
    amp = 10 ** rng.uniform(-6, -4, npix)
    index = rng.uniform(1, 3, npix)
    tail = 10 ** rng.uniform(0, 1, npix)
    m = amp[:, None] * f[None] ** -index[:, None] + tail[:, None]
    bump = (rng.uniform(size=npix) < 1 / 3) * rng.uniform(1, 4, npix) * tail
    m = m + bump[:, None] * np.exp(-0.5 * ((np.log(f)[None] - np.log(3e-3)) / 0.2) ** 2)
    p = (m * rng.exponential(size=m.shape)).T.reshape(nf, size, size)
    return xr.DataArray(
        p,
        dims=("freq", "y", "x"),
        coords={"freq": f},
        attrs={"dof_per_spectrum": 2.0, "units": "DN^2/Hz"},
    )


def _first_call(size: int) -> dict:
    """In this (fresh) process: the first and a second call's wall time."""
    import specfit

    power = power_array(size)
    out = {}
    for name in ("first", "second"):
        t0 = time.perf_counter()
        specfit.fit(power).compute()
        out[name] = time.perf_counter() - t0
    return out


def first_call_costs(size: int) -> dict:
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "NUMBA_CACHE_DIR": f"{tmp}/numba", "SPECFIT_CACHE_DIR": tmp}
        for label in ("cold", "warm"):  # the second process finds both caches filled
            cmd = [sys.executable, __file__, "--child-first", str(size)]
            got = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            res[label] = json.loads(got.stdout.strip().splitlines()[-1])
    return res


def threaded(size: int, repeat: int) -> dict:
    """{label: (wall s, cpu s)}: 1 and 2 threads, and 2 threads on one chunk (no tiling)."""
    import dask

    import specfit
    from specfit import stages

    power = power_array(size)
    specfit.fit(power.isel(y=slice(0, 8), x=slice(0, 8))).compute()  # compile, LRT reference
    spread = stages._spread_over_cores
    out, maps = {}, {}
    for label, n, tiled in (
        ("1 thread", 1, True),
        ("2 threads", 2, True),
        ("2 threads, one chunk (before)", 2, False),
    ):
        best = (np.inf, np.inf)
        stages._spread_over_cores = spread if tiled else (lambda pw: pw)
        try:
            for _ in range(repeat):
                with dask.config.set(scheduler="threads", num_workers=n):
                    t0, c0 = time.perf_counter(), time.process_time()
                    ds = specfit.fit(power).compute()
                    best = min(best, (time.perf_counter() - t0, time.process_time() - c0))
        finally:
            stages._spread_over_cores = spread
        out[label] = best
        maps[label] = ds
    first = next(iter(maps.values()))
    for ds in maps.values():
        for name in first.data_vars:
            np.testing.assert_array_equal(ds[name].values, first[name].values, err_msg=name)
    return out


def machine_control(seconds: float = 0.5) -> float:
    """Speed-up of a trivially parallel nogil numba loop on 2 threads vs 1: the most the machine
    grants this process right now (on a shared machine it can be well below 2)."""
    import threading

    import numba

    @numba.njit(nogil=True)
    def burn(n):
        s = 0.0
        for i in range(n):
            s += (i % 7) * 1e-9
        return s

    burn(10)
    n = 1
    while True:  # size the loop to about ``seconds`` of one thread
        t0 = time.perf_counter()
        burn(n)
        if time.perf_counter() - t0 > seconds / 4:
            break
        n *= 2
    n *= 4
    t0 = time.perf_counter()
    burn(n)
    burn(n)
    one = time.perf_counter() - t0
    threads = [threading.Thread(target=burn, args=(n,)) for _ in range(2)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return one / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--first", type=int, default=64, help="edge of the first-call array (px)")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--child-first", type=int, help=argparse.SUPPRESS)
    ap.add_argument(
        "--json",
        default=str(Path(__file__).resolve().parent / "api_fit.json"),
        help="where the figures are stored (docs/fitting.md quotes them)",
    )
    args = ap.parse_args(argv)
    if args.child_first:
        print(json.dumps(_first_call(args.child_first)))
        return
    costs = first_call_costs(args.first)
    npx = args.first**2
    for label, t in costs.items():
        print(
            f"first call, {label} caches, {npx} px: {t['first']:.2f} s "
            f"(a second call {t['second']:.2f} s; start-up {t['first'] - t['second']:.2f} s)"
        )
    times = threaded(args.size, args.repeat)
    npx = args.size**2
    for label, (wall, cpu) in times.items():
        print(
            f"{args.size} x {args.size} px, {label}: {wall:.2f} s = {npx / wall:,.0f} px/s "
            f"(CPU {cpu:.2f} s: {cpu / wall:.2f} cores busy)"
        )
    t1, t2 = times["1 thread"][0], times["2 threads"][0]
    print(f"speed-up on 2 threads: {t1 / t2:.2f}x (maps bit-identical in every row)")
    control = machine_control()
    print(
        f"control: a nogil numba loop on 2 threads runs {control:.2f}x faster than "
        "on 1 on this machine right now (the ceiling)"
    )
    out = {
        "first_px": args.first**2,
        "first_call": costs,
        "size": args.size,
        "threaded": {k: {"wall": w, "cpu": c} for k, (w, c) in times.items()},
        "control_2_over_1_threads": control,
    }
    Path(args.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
