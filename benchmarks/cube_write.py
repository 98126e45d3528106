"""Time stage 1 (writing ``cube.zarr``) alone, per ``output.cube_codec`` and rechunk method.

``specfit run`` first rewrites its input (FITS frames or a cube) into ``cube.zarr``, chunked
``(time_chunk, tile, tile)``. This script plans a run on the given input exactly as
``specfit run`` does (``specfit.pipeline.plan_run`` and the run's own tile and time-chunk
choice, or ``--tile``), then calls the run's own writer (``specfit.pipeline._write_cube``)
once per case, in the order given and ``--repeat`` times round, on one LocalCluster of
2 workers x 1 thread (4 GiB each, as ``benchmarks/headline.py``), and prints the wall time
and the size on disk of each. A case is ``CODEC`` or ``CODEC+METHOD`` (METHOD: ``tasks``, the
default, or ``p2p``, distributed's shuffle).

Usage (the headline's kept inputs, ``python benchmarks/headline.py --keep --workdir /work/hl``)::

    python benchmarks/cube_write.py --fits /work/hl/headline-input-256-3600-0/frames \
        --tile 32 lz4 zstd none lz4+p2p
    python benchmarks/cube_write.py --zarr /work/hl/headline-input-256-3600-0/input.zarr \
        --tile 32 lz4 zstd lz4+p2p

Only the ``cube-*.zarr`` folders it writes under ``--workdir`` are removed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path


def _size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--fits", help="folder of FITS frames (pattern --pattern)")
    src.add_argument("--zarr", help="an xarray Zarr cube with an 'intensity' variable")
    ap.add_argument("--pattern", default="frame_*.fits")
    ap.add_argument("--tile", type=int, help="tile (px); default: the run's own choice")
    ap.add_argument("--repeat", type=int, default=2, help="rounds over the cases (default 2)")
    ap.add_argument("--workdir", help="where the cubes go (default: a temporary folder)")
    ap.add_argument("--json", help="write the rows here")
    ap.add_argument("cases", nargs="+", help="CODEC[+tasks|+p2p], CODEC in lz4, zstd, none")
    args = ap.parse_args(argv)

    import dask
    from distributed import Client, LocalCluster

    import specfit.pipeline as P
    from specfit.config import load_config

    if args.fits:
        inp = {"kind": "fits_series", "path": args.fits, "pattern": args.pattern}
    else:
        inp = {"kind": "zarr", "path": args.zarr}
    work = Path(args.workdir or tempfile.mkdtemp(prefix="cube-write-"))
    work.mkdir(parents=True, exist_ok=True)
    config = load_config({"input": inp, "output": {"path": str(work / "results.zarr")}})
    science = P._science(config)
    rows = []
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, memory_limit="4GiB", dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        plan = P.plan_run(config)
        tile, time_chunk = P._choose_sizes(config, plan, client)
        tile = args.tile or tile
        print(
            f"{plan.arr.shape} input chunks {plan.arr.data.chunksize}; tile {tile}, "
            f"time_chunk {time_chunk}",
            flush=True,
        )
        for rnd in range(args.repeat):
            for case in args.cases:
                codec, _, method = case.partition("+")
                method = method or "tasks"
                path = work / f"cube-{codec}-{method}.zarr"
                if path.exists():
                    shutil.rmtree(path)
                t0 = time.perf_counter()
                with dask.config.set({"array.rechunk.method": method}):
                    P._write_cube(plan.arr, path, tile, time_chunk, client, science, codec=codec)
                wall = time.perf_counter() - t0
                row = {
                    "round": rnd,
                    "codec": codec,
                    "method": method,
                    "wall_s": round(wall, 1),
                    "size_mb": round(_size_mb(path), 3),
                }
                rows.append(row)
                print(
                    f"round {rnd}: {codec:5s} {method:5s} {wall:6.1f} s  {row['size_mb']:.0f} MB",
                    flush=True,
                )
                shutil.rmtree(path)  # written just above by this script
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    if not args.workdir:
        shutil.rmtree(work)  # the temporary folder made above
    return rows


if __name__ == "__main__":
    main()
