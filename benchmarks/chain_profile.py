"""Where the non-fit time of a run goes: ``specfit run`` with the fit replaced by a stub.

Runs the whole pipeline in this process (``cluster.kind: synchronous``, one thread) on a
synthetic Zarr cube (``pipeline_scale.make_input``: power-law + white light curves, 12 s
cadence), with :func:`specfit.kernels.tile.fit_maps` replaced by a stub that returns the
fit's variables filled with zeros, so that everything else - reading the input, writing
``cube.zarr``, reading each tile back, resampling, the periodograms, the copies between them
and writing ``results.zarr`` - runs exactly as in a real run. Prints the pipeline's stage
timings, wall and CPU time (the whole run is in this process, so its CPU time is the
figure to compare on a shared machine) and, with ``--profile``, the functions with the most time of their own (cProfile).

Usage::

    python benchmarks/chain_profile.py                        # 256² x 3600 frames
    python benchmarks/chain_profile.py --size 128 --frames 1200 --profile
    python benchmarks/chain_profile.py --micro   # one tile's chain: numpy vs block transposes
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline_scale import make_input  # noqa: E402  (the same synthetic cube)


def _stub_fit_maps(freq, power, dof, sigma, models, method, options, rho=None):
    """The fit's variables (names, dtypes, shapes) filled with zeros: no fitting (the same
    signature as :func:`specfit.kernels.tile.fit_maps`)."""
    from specfit.kernels.fitting import output_dtypes

    _, ny, nx = power.shape
    out = {
        k: np.zeros((ny, nx), dtype=d)
        for k, d in output_dtypes(
            models, method, options["best_model"], options["intervals"]
        ).items()
    }
    for alias, m in models.items():
        for name, v in m.derived_values(np.full((ny * nx, m.npar), np.nan)).items():
            out[f"{alias}_{name}"] = np.asarray(v, dtype=np.float32).reshape(ny, nx)
    return out


def micro(frames: int = 3597, sides: tuple[int, ...] = (32, 64)) -> None:
    """CPU time (best of 5) of one tile's resample + periodogram + fit rows: the chain's
    functions against the same steps with numpy's transposes (the chain before
    :mod:`specfit.kernels.layout`); the outputs are asserted identical."""
    from specfit.kernels import layout, tile
    from specfit.kernels import periodogram as pg
    from specfit.kernels import resample as rs

    rng = np.random.default_rng(0)
    kw = {"segments": 1, "overlap": 0.0, "window": "none", "detrend": "mean"}
    kw["normalisation"] = "density"
    new_t = np.arange(frames + 3) * 12.0
    t = np.delete(new_t, [2160, 2161, 2162])  # a 3-frame gap, as headline.py's input

    def best(fn):
        out = []
        for _ in range(5):
            c0 = time.process_time()
            fn()
            out.append(time.process_time() - c0)
        return min(out)

    for side in sides:
        v = (rng.normal(size=(frames, side, side)) * 10 + 1000).astype(np.float32)

        def numpy_chain(v=v):
            n, ny, nx = v.shape
            out = rs.interp_linear(t, np.ascontiguousarray(v.reshape(n, -1).T), new_t)
            u = np.ascontiguousarray(out.T).reshape(new_t.size, ny, nx)
            rows = np.ascontiguousarray(u.reshape(new_t.size, -1).T)
            freq, power, _ = pg.periodogram(rows, 12.0, **kw)
            p = np.ascontiguousarray(power.T).reshape(freq.size, ny, nx).astype(np.float32)
            return np.ascontiguousarray(p.reshape(freq.size, -1).T, dtype=np.float64)

        def layout_chain(v=v):
            _, p, _ = tile.periodograms(tile.resample_values(v, t, new_t), 12.0, kw)
            return layout.pixel_rows(p.astype(np.float32), np.float64)

        assert np.array_equal(numpy_chain(), layout_chain())
        a = v.reshape(frames, -1)
        print(
            f"{side}² x {frames} float32 tile: transpose numpy {best(lambda a=a: np.ascontiguousarray(a.T)):.4f} s, "
            f"layout {best(lambda a=a: layout.transpose(a)):.4f} s; resample + periodogram + fit "
            f"rows: numpy transposes {best(numpy_chain):.3f} s, layout {best(layout_chain):.3f} s"
        )


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--frames", type=int, default=3600)
    ap.add_argument("--tile", type=int, default=None, help="output.tile (default: auto)")
    ap.add_argument("--workdir", default="/tmp/specfit-chain-profile")
    ap.add_argument("--profile", action="store_true", help="print the top cProfile entries")
    ap.add_argument("--keep", action="store_true", help="keep the generated input")
    ap.add_argument("--fits", default=None, help="a folder of FITS frames to use instead")
    ap.add_argument("--pattern", default="*.fits", help="file names in --fits")
    ap.add_argument("--micro", action="store_true", help="only the per-tile chain timings")
    args = ap.parse_args(argv)
    if args.micro:
        micro()
        return {}

    import specfit
    import specfit.kernels.tile as tile_mod
    from specfit.store import store_attrs

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    if args.fits:
        inp = None
        source = {"kind": "fits_series", "path": args.fits, "pattern": args.pattern}
    else:
        inp = make_input(work / f"input_{args.size}_{args.frames}.zarr", args.size, args.frames)
        source = {"kind": "zarr", "path": str(inp)}
    out = work / "run"
    if out.exists():
        shutil.rmtree(out)
    cfg = {
        "input": source,
        "output": {
            "path": str(out / "results.zarr"),
            "cube_path": str(out / "cube.zarr"),
            "tile": args.tile,
        },
        "cluster": {"kind": "synchronous"},
    }
    real = tile_mod.fit_maps
    tile_mod.fit_maps = _stub_fit_maps
    prof = cProfile.Profile() if args.profile else None
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        if prof:
            prof.enable()
        specfit.run(cfg)
        if prof:
            prof.disable()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        tile_mod.fit_maps = real
    import zarr

    attrs = store_attrs(out / "results.zarr")
    ny, nx = zarr.open_group(str(out / "results.zarr"), mode="r")["mean_intensity"].shape
    npix = ny * nx
    row = {
        "shape": [ny, nx],
        "frames": int(attrs["n_frames"]),
        "tile": int(attrs["tile_size"]),
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        **{k: v for k, v in attrs.get("timings", {}).items()},
        "px_per_s": round(npix / wall, 1),
        "px_per_cpu_s": round(npix / cpu, 1),
    }
    print(row)
    if prof:
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    shutil.rmtree(out)
    if inp is not None and not args.keep:
        shutil.rmtree(inp)
    return row


if __name__ == "__main__":
    main()
