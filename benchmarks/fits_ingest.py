"""The ingest of a FITS frame series alone: open (scan the headers) + write ``cube.zarr``.

On a LocalCluster started before any clock (default 2 workers x 1 thread, as
``headline.py``), this times, for a folder of FITS frames (e.g. the frames ``headline.py
--keep`` leaves in ``<workdir>/headline-input-<size>-<frames>-0/frames``):

1. ``open``: :func:`specfit.io.open_input` (every header read and checked; in this process);
2. ``cube``: the pipeline's own cube write (:func:`specfit.pipeline._write_cube`) with the
   tile and time chunk a run on this cluster would choose (or ``--tile`` / ``--time-chunk``).

It prints wall and CPU seconds (user + system of the whole process tree: client, scheduler,
workers; the steadier figure on a shared machine), the number of dask chunks of the input,
and a SHA-256 of the cube's ``intensity`` values, so that two versions can be checked to
write the same cube. To compare versions, run it under each (``PYTHONPATH=<export of the
other commit>``), alternating.

Usage::

    python benchmarks/fits_ingest.py /tmp/hl/headline-input-64-3600-0/frames --pattern 'frame_*.fits'
    python benchmarks/fits_ingest.py FOLDER --repeat 2 --workers 2
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline_scale import PeakRSS  # noqa: E402  (CPU of the process tree)


def cube_digest(path: Path) -> str:
    """SHA-256 of the cube's intensity values (float32 bytes, C order)."""
    import zarr

    z = zarr.open_group(str(path), mode="r")["intensity"]
    h = hashlib.sha256()
    step = max(1, z.chunks[0])
    for t0 in range(0, z.shape[0], step):
        h.update(np.ascontiguousarray(z[t0 : t0 + step], dtype=np.float32).tobytes())
    return h.hexdigest()[:16]


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("frames", help="folder of FITS frames")
    ap.add_argument("--pattern", default="*.fits")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--memory-limit", default="4GiB", help="per worker")
    ap.add_argument("--tile", type=int, default=None)
    ap.add_argument("--time-chunk", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args(argv)

    from _cluster import bench_cluster
    from distributed import Client

    import specfit
    from specfit.cluster import auto_tile, auto_time_chunk, total_threads, worker_memory_bytes
    from specfit.config import InputConfig
    from specfit.io import open_input
    from specfit.pipeline import _write_cube

    cfg = InputConfig(kind="fits_series", path=args.frames, pattern=args.pattern)
    rows = []
    cluster = bench_cluster(args.workers, args.memory_limit)
    work = Path(tempfile.mkdtemp(prefix="fits-ingest-"))
    try:
        with Client(cluster) as client:
            for _ in range(args.repeat):
                with PeakRSS() as m_open:
                    t0 = time.perf_counter()
                    arr = open_input(cfg)
                    t_open = time.perf_counter() - t0
                nt, ny, nx = arr.shape
                mem = worker_memory_bytes(client)
                tile = args.tile or auto_tile(
                    ny, nx, nt, mem, 2, min_tasks=2 * total_threads(client)
                )
                tchunks = arr.chunksizes["time"]
                tc = args.time_chunk or auto_time_chunk(
                    ny, nx, mem, nt=nt, source_chunk=int(tchunks[0]) if len(tchunks) > 1 else None
                )
                cube = work / "cube.zarr"
                with PeakRSS() as m_cube:
                    t0 = time.perf_counter()
                    _write_cube(arr, cube, tile, tc, client, {"input": {}, "prep": {}})
                    t_cube = time.perf_counter() - t0
                row = {
                    "specfit": str(Path(specfit.__file__).parent),
                    "frames": nt,
                    "shape": [ny, nx],
                    "read_chunks": len(tchunks),
                    "tile": tile,
                    "time_chunk": tc,
                    "open_s": round(t_open, 2),
                    "open_cpu_s": round(m_open.cpu_s, 2),
                    "cube_s": round(t_cube, 2),
                    "cube_cpu_s": round(m_cube.cpu_s, 2),
                    "cube_sha256": cube_digest(cube),
                }
                shutil.rmtree(cube)
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        cluster.close()
        shutil.rmtree(work, ignore_errors=True)
    return rows


if __name__ == "__main__":
    main()
