"""The same run on other cluster kinds and tilings: which variables differ from the local
cluster's (docs/fitting.md, "Reproducible anywhere").

    PYTHONPATH=. python docs/cluster_kinds.py OUT_DIR [--config specfit/configs/demo.yaml]
        [--json FILE] [--no-mpi]

Runs ``specfit run CONFIG`` into ``OUT_DIR`` with the local cluster (the reference), with
``--cluster synchronous``, with ``synchronous`` and ``output.tile=32``, and with ``mpiexec -n 4
... --cluster mpi --set cluster.interface=lo`` (when ``mpiexec`` is on the PATH), BLAS threads
left at the shell's default, as a user would. Then compares every data variable and
coordinate of each store with the reference's, bit for bit (NaN equal to NaN; the tiling's own
bookkeeping ``tiles_done`` / ``tiles_run`` excepted), and prints the number of differing
variables and their names. ``OUT_DIR`` must be new or empty; the script removes nothing (the
stores are kept for a look).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BOOKKEEPING = ("tiles_done", "tiles_run")


def differing(got: Path, want: Path) -> list[str]:
    """Names of the variables and coordinates of ``got`` not bit-identical to ``want``'s."""
    from specfit.store import differing_variables

    return differing_variables(got, want, BOOKKEEPING)


def run(
    config: Path, store: Path, frames: Path, extra: list[str], launcher: list[str] | None = None
) -> float:
    """``specfit run CONFIG`` into ``store`` (a synthetic input's frames made once in
    ``frames``); returns the wall seconds; raises on failure."""
    cmd = [*(launcher or []), sys.executable, "-m", "specfit.cli", "run", str(config)]
    cmd += ["--set", f"output.path={store}", "--set", "cluster.dashboard=false"]
    cmd += ["--set", f"input.path={frames}", *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="a new or empty folder for the stores")
    ap.add_argument(
        "--config",
        type=Path,
        default=ROOT / "specfit" / "configs" / "demo.yaml",
        help="a config whose input is synthetic (its frames are made once in OUT_DIR/frames)",
    )
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    ap.add_argument("--no-mpi", action="store_true", help="skip the mpiexec run")
    args = ap.parse_args(argv)
    if args.out.exists() and any(args.out.iterdir()):
        raise SystemExit(f"{args.out} is not empty; choose a new folder")
    args.out.mkdir(parents=True, exist_ok=True)
    kinds: dict[str, tuple[list[str], list[str] | None]] = {
        "local": ([], None),
        "synchronous": (["--cluster", "synchronous"], None),
        "synchronous, output.tile=32": (
            ["--cluster", "synchronous", "--set", "output.tile=32"],
            None,
        ),
    }
    mpiexec = shutil.which("mpiexec")
    if mpiexec and not args.no_mpi:
        kinds["mpi, 4 ranks"] = (
            ["--cluster", "mpi", "--set", "cluster.interface=lo"],
            [mpiexec, "-n", "4"],
        )
    figures: dict = {"config": str(args.config.relative_to(ROOT)), "runs": {}}
    stores = {}
    for i, (kind, (extra, launcher)) in enumerate(kinds.items()):
        stores[kind] = args.out / f"run{i}.zarr"
        seconds = run(args.config, stores[kind], args.out / "frames", extra, launcher)
        print(f"{kind}: {seconds:.1f} s", flush=True)
        figures["runs"][kind] = {"seconds": round(seconds, 1)}
    from specfit.store import open_results

    ref = open_results(stores["local"])
    nvars = len([v for v in ref.data_vars if v not in BOOKKEEPING])
    figures["variables"] = nvars
    figures["coordinates"] = len(ref.coords)
    figures["pixels"] = int(ref.sizes["y"] * ref.sizes["x"])
    for kind in list(kinds)[1:]:
        diff = differing(stores[kind], stores["local"])
        figures["runs"][kind]["differing"] = diff
        print(
            f"{kind} against local: {len(diff)} of the {nvars} data variables and "
            f"{len(ref.coords)} coordinates differ {diff or ''}"
        )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    return figures


if __name__ == "__main__":
    main()
