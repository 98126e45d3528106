"""The seed's job: 3600 frames at 12 s, M1 + M2 + LRT at the product's defaults, end to end.

For each image size (default 256² px) and each input kind (FITS frames, a Zarr cube) this
script

1. generates the input on disk with specfit's synthetic generator
   (:func:`specfit.synthetic.synthetic_series`, a mosaic of 32 x 32 px fields with their own
   seeds, on a common regular 12 s grid with its one 3-frame gap): a Zarr cube
   (``intensity`` in DN/s, chunks (120, 128, 128)) and, for the FITS input, one FITS file
   per frame (counts, with DATE-OBS and EXPTIME) written from it;
2. starts a LocalCluster (default 2 workers x 1 thread) *before* any clock, and pays the
   numba compilation and the LRT null reference on every worker in a warm-up on the run's
   exact frequency grid and dof (reported as ``warm_up_s``);
3. times ``specfit.run`` at the config defaults (spectra: one segment, no window, mean
   detrend; fit: M1 + M2 Whittle, multistart and the global search as configured, the LRT)
   from that input to ``results.zarr``;
4. times the floor on the same cluster, as ``benchmarks/pipeline_scale.py`` defines it (its
   ``floor`` is reused): read every stored Zarr chunk of a cube once (in blocks of whole
   chunks, a multiple of the run's tile) and take the spectra, then the fit kernel alone on
   the in-memory spectra, tile by tile. For the Zarr input the floor reads the input cube;
   for FITS frames it also reads every frame once (in parallel on the workers: no pipeline
   can read less) and takes the spectra from the ``cube.zarr`` the run wrote;
5. samples the summed RSS and CPU time of the whole process tree (client, scheduler,
   workers) every 0.2 s.

It prints, per case: throughput (px/s), peak memory, the ratio to the floor, and the time
the 1600² x 3600 field would take at that throughput. Targets (issue 11): >= 4,300 px/s on a
2-core machine, peak memory flat in the cube size, the pipeline <= 1.3x its floor.

Usage::

    python benchmarks/headline.py                           # 256², FITS and Zarr, 3600 frames
    python benchmarks/headline.py --sizes 256 512 --inputs zarr
    python benchmarks/headline.py --quick                   # a tiny end-to-end check
    python benchmarks/headline.py --keep --workdir /data/hl # keep the generated inputs

Only files this script creates (under ``--workdir``, in folders named ``headline-*``) are
ever removed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline_scale import PeakRSS, _warm_up, bin_rho, fit_dof, floor  # noqa: E402  (one floor)

CADENCE = 12.0
BLOCK = 32  # px: one synthetic field (its memory is ~1 GB at 3600 frames with oversample 4)
ZCHUNK = (120, 128, 128)
EXPOSURE = 2.9
FULL_FIELD = 1600  # the seed's field is 1600 x 1600 px
MARK = ".headline-made"  # marks a folder this script created (and so may remove)


# ----------------------------------------------------------------------------- inputs
def _generate_zarr(
    path: Path, size: int, nt: int, seed: int, cadence: float = CADENCE, distinct: int = 0
) -> None:
    """Write the (time, y, x) cube of DN/s as an xarray Zarr store, one 128² column at a time.

    ``distinct`` > 0: only that many different 32² fields are simulated (seeds ``seed`` to
    ``seed + distinct - 1``); the mosaic repeats them in turn. Every pixel is still read,
    transformed and fitted: the fit knows nothing of the repeats (it only saves ~1 s of
    simulation per field, ~40 min at 1600²)."""
    import dask.array as da
    import xarray as xr
    import zarr

    from specfit.synthetic import START_TIME, synthetic_series

    made: dict[int, tuple] = {}

    def field(i: int):
        if distinct > 0:
            i %= distinct
            if i in made:
                return made[i]
        # jitter, drops and exposure jitter off: every field shares the frame times (its one
        # gap included) and exposures, so the fields tile one image series
        t, counts, exptime, _ = synthetic_series(
            (BLOCK, BLOCK),
            nt,
            cadence,
            seed + i,
            jitter=0.0,
            drop_fraction=0.0,
            exposure=EXPOSURE,
            exposure_jitter=0.0,
        )
        out = t, (counts / exptime[:, None, None]).astype(np.float32)
        if distinct > 0:
            made[i] = out
        return out

    first = field(0)
    times = first[0]
    empty = da.zeros((times.size, size, size), dtype=np.float32, chunks=ZCHUNK)
    ds = xr.Dataset(
        {"intensity": (("time", "y", "x"), empty, {"bunit": "DN/s", "start_time": START_TIME})},
        coords={
            "time": ("time", times, {"units": "s"}),
            "y": np.arange(size),
            "x": np.arange(size),
        },
        attrs={"start_time": START_TIME},
    )
    ds.to_zarr(path, mode="w", compute=False, consolidated=True)
    z = zarr.open_group(str(path), mode="r+")["intensity"]
    col = ZCHUNK[1]
    i = 0
    for y0 in range(0, size, col):
        for x0 in range(0, size, col):
            ny, nx = min(col, size - y0), min(col, size - x0)
            block = np.empty((times.size, ny, nx), dtype=np.float32)
            for by in range(0, ny, BLOCK):
                for bx in range(0, nx, BLOCK):
                    t, rate = first if i == 0 else field(i)
                    i += 1
                    if not np.array_equal(t, times):
                        raise RuntimeError("synthetic fields do not share frame times")
                    block[:, by : by + BLOCK, bx : bx + BLOCK] = rate[
                        :, : min(BLOCK, ny - by), : min(BLOCK, nx - bx)
                    ]
            z[:, y0 : y0 + ny, x0 : x0 + nx] = block


def _write_fits(zpath: Path, frames: Path) -> None:
    """One FITS file per frame (counts = rate x EXPTIME), from the Zarr cube, 120 at a time."""
    import zarr
    from astropy.io import fits
    from astropy.time import Time, TimeDelta

    from specfit.synthetic import START_TIME

    g = zarr.open_group(str(zpath), mode="r")
    z, times = g["intensity"], np.asarray(g["time"][:], dtype=float)
    isot = (Time(START_TIME, scale="utc") + TimeDelta(times, format="sec")).isot
    frames.mkdir(parents=True, exist_ok=True)
    for t0 in range(0, times.size, ZCHUNK[0]):
        slab = np.asarray(z[t0 : t0 + ZCHUNK[0]])
        for k in range(slab.shape[0]):
            h = fits.Header()
            h["DATE-OBS"] = isot[t0 + k]
            h["EXPTIME"] = (EXPOSURE, "s")
            h["BUNIT"] = "DN"
            data = slab[k] * np.float32(EXPOSURE)
            fits.PrimaryHDU(data, header=h).writeto(frames / f"frame_{t0 + k:05d}.fits")


def input_folder(
    workdir: Path, size: int, nt: int, seed: int = 0, cadence: float = CADENCE, distinct: int = 0
) -> Path:
    """Where :func:`make_inputs` writes the inputs of one size."""
    extra = "" if cadence == CADENCE else f"-{cadence:g}s"
    extra += f"-distinct{distinct}" if distinct > 0 else ""
    return workdir / f"headline-input-{size}-{nt}-{seed}{extra}"


def make_inputs(
    workdir: Path,
    size: int,
    nt: int,
    kinds: list[str],
    seed: int = 0,
    cadence: float = CADENCE,
    distinct: int = 0,
) -> dict:
    """Generate (or reuse, if complete) the inputs in :func:`input_folder`."""
    base = input_folder(workdir, size, nt, seed, cadence, distinct)
    zpath, frames = base / "input.zarr", base / "frames"
    if not (base / MARK).exists():
        if base.exists():
            raise SystemExit(f"{base} exists but was not made by this script; choose --workdir")
        base.mkdir(parents=True)
        (base / MARK).write_text("headline inputs\n")
    done = base / "done.json"
    state = json.loads(done.read_text()) if done.exists() else {}
    t = {}
    if not state.get("zarr"):
        t0 = time.perf_counter()
        _generate_zarr(zpath, size, nt, seed, cadence, distinct)
        t["generate_zarr_s"] = round(time.perf_counter() - t0, 1)
        state["zarr"] = True
        done.write_text(json.dumps(state))
    if "fits" in kinds and not state.get("fits"):
        t0 = time.perf_counter()
        if frames.exists():
            shutil.rmtree(frames)  # a half-written set of ours (the folder is marked)
        _write_fits(zpath, frames)
        t["write_fits_s"] = round(time.perf_counter() - t0, 1)
        state["fits"] = True
        done.write_text(json.dumps(state))
    return {"base": base, "zarr": zpath, "fits": frames, **t}


# ----------------------------------------------------------------------------- floor
def _read_frames(paths: list[str]) -> int:
    """Read FITS frames fully (what any pipeline must do once); returns the bytes read."""
    from astropy.io import fits

    n = 0
    for p in paths:
        with fits.open(p, memmap=False) as hd:
            n += hd[0].data.nbytes
    return n


def read_frames_s(client, frames: Path, nworkers: int) -> float:
    """Seconds to read every FITS frame once, split evenly over the workers."""
    files = sorted(str(p) for p in frames.glob("frame_*.fits"))
    parts = [files[i :: nworkers * 4] for i in range(nworkers * 4)]
    t0 = time.perf_counter()
    client.gather([client.submit(_read_frames, p, pure=False) for p in parts])
    return time.perf_counter() - t0


# ----------------------------------------------------------------------------- one case
def run_case(
    client, workdir: Path, inputs: dict, kind: str, size: int, nworkers: int, floor_on: bool
) -> dict:
    """Time one input kind at one size (pipeline and floor); returns the row of figures."""
    out = workdir / f"headline-run-{kind}-{size}"
    if out.exists():
        if not (out / MARK).exists():
            raise SystemExit(f"{out} exists but was not made by this script; choose --workdir")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARK).write_text("headline run\n")
    if kind == "zarr":
        inp = {"kind": "zarr", "path": str(inputs["zarr"])}
    else:
        inp = {"kind": "fits_series", "path": str(inputs["fits"]), "pattern": "frame_*.fits"}
    cfg = {
        "input": inp,
        "output": {"path": str(out / "results.zarr"), "cube_path": str(out / "cube.zarr")},
    }
    try:
        return _run_case(client, cfg, inputs, kind, size, nworkers, floor_on, out)
    finally:
        shutil.rmtree(out)  # ours (made above); the inputs are kept or removed by main


def _run_case(client, cfg, inputs, kind, size, nworkers, floor_on, out) -> dict:
    import specfit
    from specfit.config import load_config
    from specfit.pipeline import fit_options, plan_run
    from specfit.store import store_attrs

    config = load_config(cfg)
    plan = plan_run(config)
    opts = fit_options(config)
    models = dict(config.fit.models)
    freq, dof = np.asarray(plan.freq), fit_dof(plan)
    t0 = time.perf_counter()
    client.run(_warm_up, models, freq, dof, opts, bin_rho(plan))
    t_warm = time.perf_counter() - t0
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        specfit.run(cfg, cluster=client.scheduler.address)
        t_pipe = time.perf_counter() - t0
    attrs = store_attrs(out / "results.zarr")
    tile = int(attrs["tile_size"])
    stages = attrs.get("timings", {})
    npix = size * size
    row = {
        "input": kind,
        "size": size,
        "frames": int(plan.times.size),
        "freqs": int(freq.size),
        "tile": tile,
        "warm_up_s": round(t_warm, 1),
        "pipeline_s": round(t_pipe, 1),
        "cube_s": stages.get("cube_s"),
        "tiles_s": stages.get("tiles_s"),
        "px_per_s": round(npix / t_pipe, 1),
        "cpu_s": round(mem.cpu_s, 1),
        "px_per_cpu_s": round(npix / max(mem.cpu_s, 1e-9), 1),
        "peak_rss_gib": round(mem.peak / 2**30, 2),
        "full_field_min": round(FULL_FIELD**2 / (npix / t_pipe) / 60, 1),
    }
    if floor_on:
        client.run(lambda: __import__("gc").collect())
        with PeakRSS() as fmem:
            t_frames = read_frames_s(client, inputs["fits"], nworkers) if kind == "fits" else 0.0
            cube = inputs["zarr"] if kind == "zarr" else out / "cube.zarr"
            fl = floor(client, cube, size, tile, models, plan, opts)
        floor_s = fl["floor_s"] + t_frames
        row.update(
            floor_read_frames_s=round(t_frames, 1),
            floor_read_spectra_s=round(fl["read_rfft_s"], 1),
            floor_read_side=fl["read_side"],
            floor_fit_s=round(fl["fit_s"], 1),
            floor_s=round(floor_s, 1),
            ratio=round(t_pipe / floor_s, 2),
            floor_cpu_s=round(fmem.cpu_s, 1),
            cpu_ratio=round(mem.cpu_s / max(fmem.cpu_s, 1e-9), 2),
        )
    return row


def lines(rows: list[dict], workers: int) -> list[str]:
    """README-ready lines, one per case."""
    out = []
    for r in rows:
        s = (
            f"{r['input']} input, {r['size']}² x {r['frames']} frames ({r['freqs']} freqs), "
            f"{workers} workers x 1 thread: {r['pipeline_s']} s = {r['px_per_s']:,.0f} px/s "
            f"({r['px_per_cpu_s']:,.0f} px per CPU-second of the process tree) "
            f"(target 4,300: {'met' if r['px_per_s'] >= 4300 else 'NOT met'}); "
            f"peak RSS {r['peak_rss_gib']} GiB; "
        )
        if "ratio" in r:
            s += (
                f"{r['ratio']}x the floor of {r['floor_s']} s (read frames {r['floor_read_frames_s']}"
                f" + read+spectra {r['floor_read_spectra_s']} + fit {r['floor_fit_s']}; target "
                f"<= 1.3x: {'met' if r['ratio'] <= 1.3 else 'NOT met'}); "
            )
        s += f"1600² x {r['frames']} at this rate: {r['full_field_min']} min (target <= 10)"
        out.append(s)
    return out


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[256])
    ap.add_argument("--inputs", nargs="+", choices=["fits", "zarr"], default=["fits", "zarr"])
    ap.add_argument("--frames", type=int, default=3600)
    ap.add_argument("--cadence", type=float, default=CADENCE, help="s between frames")
    ap.add_argument(
        "--distinct-fields",
        type=int,
        default=0,
        help="simulate only N different 32² fields and repeat them (0: all different)",
    )
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--memory-limit", default="4GiB", help="per worker")
    ap.add_argument("--workdir", default="/tmp/specfit-headline")
    ap.add_argument("--keep", action="store_true", help="keep the generated inputs")
    ap.add_argument("--no-floor", action="store_true", help="time the pipeline only")
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    ap.add_argument("--quick", action="store_true", help="tiny check: 32², 240 frames, 1 worker")
    args = ap.parse_args(argv)
    if args.quick:
        args.sizes, args.frames, args.workers = [32], 240, 1

    from _cluster import bench_cluster
    from distributed import Client

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    cluster = bench_cluster(args.workers, args.memory_limit)
    made: list[Path] = []
    try:
        with Client(cluster) as client:
            for size in args.sizes:
                spec = {"cadence": args.cadence, "distinct": args.distinct_fields}
                made.append(input_folder(workdir, size, args.frames, **spec))
                inputs = make_inputs(workdir, size, args.frames, args.inputs, **spec)
                gen = {k: v for k, v in inputs.items() if k.endswith("_s")}
                if gen:
                    print(f"generated {size}²: {gen}", file=sys.stderr, flush=True)
                for kind in args.inputs:
                    row = run_case(
                        client, workdir, inputs, kind, size, args.workers, not args.no_floor
                    )
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    finally:
        cluster.close()
        if not args.keep:
            for base in made:
                if (base / MARK).exists():
                    shutil.rmtree(base)
    print()
    for s in lines(rows, args.workers):
        print(s)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
