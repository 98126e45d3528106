"""Pipeline scale: the whole run against its floor, at growing image sizes, in one process.

For each image size (default 256², 512², 1024² px, 1200 frames) this script

1. writes a synthetic input cube as Zarr (noise + power-law light curves, made tile by tile so
   memory stays small; 1024² x 1200 float32 is 5 GB on disk);
2. times ``specfit.run`` on it (ingest to cube.zarr, resample, spectra, M1 and M2 Whittle
   fits, results.zarr) on a LocalCluster started *before* the clock starts, so the
   cluster start is excluded;
3. times the floor on the same cluster and tiles: (a) read the cube once from Zarr and take
   each pixel's rfft power, keeping the spectra in worker memory; (b) the fit kernel alone
   (``specfit.kernels.fitting.fit_block``) on those in-memory spectra;
4. samples the RSS of this process and every worker process (psutil, every 0.2 s) and
   reports the peak of their sum during the run.

It prints, per size: pipeline and floor seconds, their ratio, throughput in pixels/s and
the peak memory. Targets (docs): ratio <= 1.5, throughput flat within 25 % across sizes,
peak memory not growing with the image size.

Usage::

    python benchmarks/pipeline_scale.py                       # 256 512 1024, 1200 frames
    python benchmarks/pipeline_scale.py --sizes 128 256 --frames 600 --workers 2
    python benchmarks/pipeline_scale.py --keep                # keep /tmp/specfit-scale
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np

GEN_BLOCK = 128  # px; the synthetic cube is generated and stored in (120, 128, 128) chunks
CADENCE = 12.0


# ----------------------------------------------------------------------------- data
def _light_curves(rng: np.random.Generator, nt: int, npix: int) -> np.ndarray:
    """(nt, npix) float32: power law (index 1.5-2.5) + white noise around 1000 DN/s."""
    freq = np.fft.rfftfreq(nt, d=CADENCE)
    index = rng.uniform(1.5, 2.5, size=npix)
    amp = np.zeros((npix, freq.size))
    amp[:, 1:] = freq[1:] ** (-index[:, None] / 2)
    spec = amp * (rng.standard_normal(amp.shape) + 1j * rng.standard_normal(amp.shape))
    red = np.fft.irfft(spec, n=nt, axis=1)
    red *= 30.0 / red.std(axis=1, keepdims=True)
    white = rng.standard_normal((npix, nt)) * 10.0
    return (1000.0 + red + white).T.astype(np.float32)


def make_input(path: Path, size: int, nt: int, seed: int = 0) -> Path:
    """Write a (nt, size, size) cube as an xarray Zarr store, one 128² column at a time."""
    import dask.array as da
    import xarray as xr
    import zarr

    if (path / "zarr.json").exists() and (path / ".complete").exists():
        return path
    if path.exists():
        shutil.rmtree(path)
    tchunk = 120
    empty = da.zeros((nt, size, size), dtype=np.float32, chunks=(tchunk, GEN_BLOCK, GEN_BLOCK))
    ds = xr.Dataset(
        {"intensity": (("time", "y", "x"), empty, {"bunit": "DN"})},
        coords={
            "time": ("time", np.arange(nt) * CADENCE, {"units": "s"}),
            "y": np.arange(size),
            "x": np.arange(size),
        },
        attrs={"start_time": "2020-01-01T00:00:00"},
    )
    ds["intensity"].attrs["start_time"] = "2020-01-01T00:00:00"
    ds.to_zarr(path, mode="w", compute=False, consolidated=True)
    z = zarr.open_group(str(path), mode="r+")["intensity"]
    rng = np.random.default_rng(seed)
    for y0 in range(0, size, GEN_BLOCK):
        for x0 in range(0, size, GEN_BLOCK):
            ny, nx = min(GEN_BLOCK, size - y0), min(GEN_BLOCK, size - x0)
            block = _light_curves(rng, nt, ny * nx).reshape(nt, ny, nx)
            z[:, y0 : y0 + ny, x0 : x0 + nx] = block
    (path / ".complete").write_text("ok")
    return path


# ----------------------------------------------------------------------------- memory
class PeakRSS:
    """Peak of the summed RSS of this process and all its children, sampled in a thread.

    Also the CPU seconds (user + system) the process tree used in the block: on a machine
    shared with other jobs, CPU time is a steadier measure of work than wall time.
    """

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.peak = 0
        self.cpu_s = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _cpu() -> float:
        import psutil

        me = psutil.Process()
        total = 0.0
        for p in [me, *me.children(recursive=True)]:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        return total

    def _sample(self) -> int:
        import psutil

        me = psutil.Process()
        total = 0
        for p in [me, *me.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRSS:
        self.peak = self._sample()
        self._cpu0 = self._cpu()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.cpu_s = self._cpu() - self._cpu0


# ----------------------------------------------------------------------------- floor
def _read_rfft(
    path: str,
    ys: slice,
    xs: slice,
    dt: float,
    spectra_kw: dict,
    times: np.ndarray | None = None,
    new_times: np.ndarray | None = None,
) -> np.ndarray:
    """One read block's power (npix, nf) float32 in the block's (y, x) order, read straight
    from the Zarr cube.

    The block is taken one stored chunk at a time, so each chunk it covers is read and
    decompressed once and a worker holds one chunk's float64 light curves at a time beside
    the block's float32 spectra. (A whole 384 px block of 3600 frames in float64, 4.2 GB, did
    not fit a 4 GiB worker: the 512² headline of 2026-12-03.)

    The periodogram kernel is the rfft plus the detrend/window/normalisation the pipeline
    applies, so the fit below sees the same spectra as in the pipeline (a bare |rfft|² of
    un-detrended data leaks red noise and makes the fit converge differently). Frames off
    the uniform grid (``times`` != ``new_times``: gaps, jitter) are first interpolated onto
    it, as the pipeline must.
    """
    import zarr

    from specfit.kernels.periodogram import periodogram
    from specfit.kernels.resample import interp_linear

    arr = zarr.open_group(path, mode="r")["intensity"]
    _, cy, cx = arr.chunks
    resample = times is not None and not np.array_equal(times, new_times)
    out = None
    for y0, y1 in _chunk_spans(ys, cy):
        for x0, x1 in _chunk_spans(xs, cx):
            vals = np.asarray(arr[:, y0:y1, x0:x1], dtype=np.float64)
            rows = np.ascontiguousarray(vals.reshape(vals.shape[0], -1).T)
            del vals
            if resample:
                rows = interp_linear(times, rows, new_times)
            _, power, _ = periodogram(rows, dt, **spectra_kw)
            if out is None:
                shape = (ys.stop - ys.start, xs.stop - xs.start, power.shape[-1])
                out = np.empty(shape, dtype=np.float32)
            out[y0 - ys.start : y1 - ys.start, x0 - xs.start : x1 - xs.start] = power.reshape(
                y1 - y0, x1 - x0, -1
            )
    return out.reshape(-1, out.shape[-1])


def _chunk_spans(span: slice, chunk: int) -> list[tuple[int, int]]:
    """``span`` cut at the multiples of ``chunk``: the stored chunks it covers."""
    edges = [span.start, *range((span.start // chunk + 1) * chunk, span.stop, chunk), span.stop]
    return list(zip(edges[:-1], edges[1:], strict=True))


def _fit_tile(
    power: np.ndarray, freq: np.ndarray, models: dict, dof: float, opts: dict, part=None, rho=()
) -> int:
    """The fit kernel alone on one tile's in-memory spectra, with the pipeline's models (by
    name), likelihood dof, window bin correlations (``rho``, :func:`bin_rho`) and solver
    options: the same fits, and the same LRT reference, as the pipeline's. ``part``
    ``(y0, y1, x0, x1, block width)`` cuts the tile from a read block's spectra."""
    from specfit.kernels.fitting import fit_block
    from specfit.stages import resolve_models

    if part is not None:
        y0, y1, x0, x1, width = part
        power = power.reshape(-1, width, power.shape[-1])[y0:y1, x0:x1]
        power = power.reshape(-1, power.shape[-1])
    models = resolve_models(models)
    rows = np.ascontiguousarray(power, dtype=np.float64)
    dofs = np.full(rows.shape[0], dof)
    res = fit_block(freq, rows, models, method="whittle", dof=dofs, bin_rho=rho, **opts)
    return len(res)


def fit_dof(plan) -> float:
    """The dof the pipeline hands to the Whittle fit (chi^2 dof over the bins' VIF)."""
    from specfit.kernels.tile import bin_layout
    from specfit.kernels.tile import fit_dof as tile_fit_dof

    return float(tile_fit_dof(plan.meta["dof"], "whittle", *bin_layout(plan.meta)))


def bin_rho(plan) -> np.ndarray:
    """The window's bin correlations the pipeline hands to the fit: they set its LRT
    reference (a Hann run's differs from a windowless one's), so the warm-up and the floor
    must use them too."""
    from specfit.kernels.tile import bin_layout
    from specfit.kernels.tile import bin_rho as tile_bin_rho

    return tile_bin_rho(*bin_layout(plan.meta))


def read_side(path: Path, tile: int) -> int:
    """The floor's read block (px): a multiple of ``tile`` that covers whole Zarr chunks of
    ``path``'s ``intensity``, so that every stored chunk is read and decompressed once.

    Read tile by tile, a (120, 128, 128)-chunked input with 32 px tiles would be decompressed
    16 times over (the pipeline's ingest reads it in such blocks too). A block much larger than
    the tile (chunks that share no factor with it) falls back to the tile.
    """
    import zarr

    _, cy, cx = zarr.open_group(str(path), mode="r")["intensity"].chunks
    side = math.lcm(tile, cy, cx)
    return side if side <= 4 * max(tile, cy, cx) else tile


def floor(client, path: Path, size: int, tile: int, models: dict, info, opts: dict) -> dict:
    """Seconds to read+rfft every pixel once (spectra kept in memory) and to fit them alone.

    The read covers whole Zarr chunks of the cube once (:func:`read_side`); the fit runs on
    the pipeline's tiles. Frames off the uniform grid are interpolated onto it first (see
    :func:`_read_rfft`).
    """
    freq, dof, rho = np.asarray(info.freq), fit_dof(info), bin_rho(info)
    times, new_times = np.asarray(info.times), np.asarray(info.new_times)
    side = read_side(path, tile)
    blocks = [
        (slice(y, min(y + side, size)), slice(x, min(x + side, size)))
        for y in range(0, size, side)
        for x in range(0, size, side)
    ]
    t0 = time.perf_counter()
    spectra = [
        client.submit(
            _read_rfft, str(path), ys, xs, info.dt, info.spectra, times, new_times, pure=False
        )
        for ys, xs in blocks
    ]
    # all spectra now sit in worker memory (wait, not gather: gathering them to the client
    # added their transfer, ~0.5 GB at 256² x 3600 frames, to the floor until 2026-12-03)
    from distributed import wait

    wait(spectra)
    t_read = time.perf_counter() - t0
    t0 = time.perf_counter()
    fits = [
        client.submit(_fit_tile, s, freq, models, dof, opts, part, rho, pure=False)
        for s, (ys, xs) in zip(spectra, blocks, strict=True)
        for part in _parts(ys, xs, tile)
    ]
    client.gather(fits)
    t_fit = time.perf_counter() - t0
    del spectra, fits
    return {"read_rfft_s": t_read, "fit_s": t_fit, "floor_s": t_read + t_fit, "read_side": side}


def _parts(ys: slice, xs: slice, tile: int) -> list[tuple[int, int, int, int, int]]:
    """The pipeline's tiles inside one read block, as ``_fit_tile``'s ``part``: (y0, y1, x0,
    x1) within the block and the block's width."""
    h, w = ys.stop - ys.start, xs.stop - xs.start
    return [
        (y, min(y + tile, h), x, min(x + tile, w), w)
        for y in range(0, h, tile)
        for x in range(0, w, tile)
    ]


def _warm_up(models: dict, freq: np.ndarray, dof: float, opts: dict, rho=()) -> int:
    """Compile the numba kernels and build the LRT null reference in this process.

    Both are per process and per frequency grid (the LRT reference is simulated once and
    cached), so they are paid here, before any clock runs, for the exact grid the pipeline
    and the floor use.
    """
    from specfit.kernels.fitting import fit_block
    from specfit.stages import resolve_models

    rng = np.random.default_rng(1)
    power = (freq**-2.0 * 1e-4 + 1.0) * rng.gamma(dof / 2, 2 / dof, size=(4, freq.size))
    fit_block(
        freq,
        power,
        resolve_models(models),
        method="whittle",
        dof=np.full(4, dof),
        bin_rho=rho,
        **opts,
    )
    return 0


# ----------------------------------------------------------------------------- main
def run_size(
    client, workdir: Path, size: int, nt: int, tile: int | None, with_floor: bool = True
) -> dict:
    import specfit
    from specfit.store import store_attrs

    t0 = time.perf_counter()
    inp = make_input(workdir / f"input_{size}.zarr", size, nt)
    t_gen = time.perf_counter() - t0
    results = workdir / f"results_{size}.zarr"
    models = {"m1": "powerlaw_tail", "m2": "powerlaw_tail_lorentzian"}
    cfg = {
        "input": {"kind": "zarr", "path": str(inp)},
        "spectra": {"segments": 1, "window": "hann", "detrend": "linear"},
        "fit": {"models": models, "method": "whittle"},
        "output": {
            "path": str(results),
            "cube_path": str(workdir / f"cube_{size}.zarr"),
            "tile": tile,
        },
    }
    address = client.scheduler.address
    for p in (results, workdir / f"cube_{size}.zarr"):
        if p.exists():
            shutil.rmtree(p)
    # The pipeline's own frequency grid and dof, to warm every worker up on exactly them.
    from specfit.config import load_config
    from specfit.pipeline import fit_options, plan_run

    config = load_config(cfg)
    info = plan_run(config)
    opts = fit_options(config)
    freq, dof = np.asarray(info.freq), fit_dof(info)
    t0 = time.perf_counter()
    client.run(_warm_up, models, freq, dof, opts, bin_rho(info))
    t_warm = time.perf_counter() - t0
    with PeakRSS() as mem_pipe:
        t0 = time.perf_counter()
        specfit.run(cfg, cluster=address, overwrite=True)
        t_pipe = time.perf_counter() - t0
    attrs = store_attrs(results)
    used_tile = int(attrs["tile_size"])
    stages = attrs.get("timings", {})
    npix = size * size
    row = {
        "size": size,
        "frames": nt,
        "tile": used_tile,
        "generate_s": round(t_gen, 1),
        "warm_up_s": round(t_warm, 1),
        "pipeline_s": round(t_pipe, 2),
        "cube_s": stages.get("cube_s"),
        "tiles_s": stages.get("tiles_s"),
        "pixels_per_s": round(npix / t_pipe, 1),
        "cpu_pipeline_s": round(mem_pipe.cpu_s, 1),
        "peak_rss_pipeline_gib": round(mem_pipe.peak / 2**30, 2),
    }
    if not with_floor:
        return row
    client.run(lambda: __import__("gc").collect())
    with PeakRSS() as mem_floor:
        fl = floor(client, inp, size, used_tile, models, info, opts)
    row.update(
        read_rfft_s=round(fl["read_rfft_s"], 2),
        fit_s=round(fl["fit_s"], 2),
        floor_s=round(fl["floor_s"], 2),
        ratio=round(t_pipe / fl["floor_s"], 2),
        floor_pixels_per_s=round(npix / fl["floor_s"], 1),
        cpu_floor_s=round(mem_floor.cpu_s, 1),
        cpu_ratio=round(mem_pipe.cpu_s / mem_floor.cpu_s, 2),
        peak_rss_floor_gib=round(mem_floor.peak / 2**30, 2),
    )
    return row


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    ap.add_argument("--frames", type=int, default=1200)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--memory-limit", default="4GiB", help="per worker")
    ap.add_argument("--tile", type=int, default=None, help="default: auto_tile from memory")
    ap.add_argument("--workdir", default="/tmp/specfit-scale")
    ap.add_argument("--keep", action="store_true", help="keep the generated stores")
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    ap.add_argument(
        "--no-floor",
        action="store_true",
        help="time the pipeline only (the floor holds every spectrum in worker memory, so it "
        "cannot run with small workers; use this to see the pipeline's memory plateau)",
    )
    args = ap.parse_args(argv)

    from _cluster import bench_cluster
    from distributed import Client

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    cluster = bench_cluster(args.workers, args.memory_limit, threads=args.threads)
    try:
        with Client(cluster) as client:
            print(
                f"cluster: {args.workers} workers x {args.threads} threads, "
                f"{args.memory_limit} each; {args.frames} frames",
                file=sys.stderr,
            )
            for size in args.sizes:
                row = run_size(
                    client, workdir, size, args.frames, args.tile, with_floor=not args.no_floor
                )
                rows.append(row)
                print(json.dumps(row), flush=True)
                if not args.keep:
                    for p in workdir.glob(f"*_{size}.zarr"):
                        shutil.rmtree(p, ignore_errors=True)
    finally:
        cluster.close()
    _table(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return rows


def _table(rows: list[dict]) -> None:
    print()
    if rows and "floor_s" not in rows[0]:
        print("| size | frames | tile | pipeline s (cube / tiles) | CPU s | px/s | peak RSS GiB |")
        print("|---|---|---|---|---|---|---|")
        for r in rows:
            print(
                f"| {r['size']}² | {r['frames']} | {r['tile']} | {r['pipeline_s']} "
                f"({r['cube_s']} / {r['tiles_s']}) | {r['cpu_pipeline_s']} | "
                f"{r['pixels_per_s']:.0f} | {r['peak_rss_pipeline_gib']} |"
            )
        return
    print("| size | frames | tile | pipeline s | floor s (read+spectra / fit) | ratio | "
          "CPU s pipeline / floor (ratio) | px/s | peak RSS GiB pipeline / floor |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['size']}² | {r['frames']} | {r['tile']} | {r['pipeline_s']} | "
            f"{r['floor_s']} ({r['read_rfft_s']} / {r['fit_s']}) | {r['ratio']} | "
            f"{r['cpu_pipeline_s']} / {r['cpu_floor_s']} ({r['cpu_ratio']}) | "
            f"{r['pixels_per_s']:.0f} | {r['peak_rss_pipeline_gib']} / {r['peak_rss_floor_gib']} |"
        )
    if len(rows) > 1:
        tp = [r["pixels_per_s"] for r in rows]
        print(f"\nthroughput spread: {max(tp) / min(tp) - 1:.0%} (target <= 25 %)")


if __name__ == "__main__":
    main()
