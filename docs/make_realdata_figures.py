"""Regenerate every real-data figure the README quotes, from fresh runs, and print them.

    python docs/make_realdata_figures.py [--out DIR] [--only aia1600,legacy]

Runs ``specfit run`` (the CLI, timed as a user would time it) on the AIA 1600 Å frames in
``../shared/data`` with ``configs/aia1600.yaml`` and ``configs/legacy.yaml``, then computes:

- aia1600: field size, wall time, the share of pixels where the LRT prefers M2, the median
  index of each model where it is preferred, the share of M1 tails at their bound (status 7);
- legacy: the same run figures, and the comparison with the original specFit's ``param.npy``
  on the original's own pixel grid (:func:`specfit.legacy.compare_original`).

It prints them, writes ``docs/img/aia1600_m1_index.png`` and ``aia1600_m2_bump_period.png``
(``specfit plot`` of the aia1600 run) and ``docs/realdata.json`` (the README's real-data section quotes these
numbers; ``tests/test_realdata.py`` checks a fresh legacy run and the README against them).
Results go under ``--out`` (default a temporary folder), never into the repository.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data" / "aia1600_20120606"
ORIGINAL = DATA / "original_specfit"
JSON_OUT = ROOT / "docs" / "realdata.json"


def run_config(name: str, out: Path) -> tuple[Path, float]:
    """``specfit run configs/<name>.yaml`` into ``out/<name>``; returns (store, seconds)."""
    store = out / name / "results.zarr"
    cmd = [
        sys.executable,
        "-m",
        "specfit.cli",
        "run",
        str(ROOT / "configs" / f"{name}.yaml"),
        "--set",
        f"output.path={store}",
        "--set",
        "cluster.dashboard=false",
        "--overwrite",
    ]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    return store, time.perf_counter() - t0


def plot_maps(store: Path, folder: Path) -> None:
    """``specfit plot`` of the aia1600 run; the two maps the README and docs/explore.md show
    are copied to docs/img/aia1600_<map>.png."""
    import shutil

    subprocess.run(
        # --pvalue 0.05: M2's maps only where the LRT prefers it, as docs/explore.md shows them
        [sys.executable, "-m", "specfit.cli", "plot", str(store), "--out", str(folder)]
        + ["--pvalue", "0.05"],
        check=True,
    )
    for m in ("m1_index", "m2_bump_period"):
        shutil.copyfile(folder / f"{m}.png", ROOT / "docs" / "img" / f"aia1600_{m}.png")
        print(f"wrote docs/img/aia1600_{m}.png")


def run_figures(store: Path, seconds: float) -> dict:
    """Figures of one run: size, time, preferred-model shares and medians, tails at bound."""
    import xarray as xr

    ds = xr.open_zarr(store)
    aliases = ds["best_model"].attrs["flag_meanings"].split()[1:]
    best = np.asarray(ds["best_model"].values)
    out: dict = {
        "shape": [int(ds.sizes["y"]), int(ds.sizes["x"])],
        "seconds": round(seconds, 1),
        "rule": ds["best_model"].attrs.get("rule"),
    }
    for i, a in enumerate(aliases):
        pref = best == i
        out[f"{a}_preferred_percent"] = 100.0 * float(pref.mean())
        n = np.asarray(ds[f"{a}_index"].values, dtype=float)[pref]
        out[f"{a}_index_median_where_preferred"] = float(np.nanmedian(n)) if n.size else None
        status = np.asarray(ds[f"{a}_status"].values)
        out[f"{a}_at_bound_percent"] = 100.0 * float(np.mean(status == 7))
        info = json.loads(ds.attrs["models"])[a]
        names = info["params"]
        if "tail" in names:
            lo = info["bounds"][names.index("tail")][0]
            lo = -np.inf if lo is None else lo
            tail = np.asarray(ds[f"{a}_tail"].values, dtype=float)
            at_lo = tail <= lo + 1e-6 * max(abs(lo), 1e-30)
            out[f"{a}_tail_at_lower_bound_percent"] = 100.0 * float(np.mean(at_lo))
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=None, help="where the runs write (default: tmp)")
    p.add_argument("--only", default="aia1600,legacy", help="comma-separated config names")
    p.add_argument("--json", type=Path, default=JSON_OUT, help="figures file to write")
    args = p.parse_args(argv)
    if not DATA.is_dir():
        raise SystemExit(f"real data not found at {DATA.resolve()} (../shared/data)")
    out = args.out or Path(tempfile.mkdtemp(prefix="specfit-realdata-"))
    figures: dict = {
        "measured": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores",
    }
    for name in args.only.split(","):
        store, seconds = run_config(name, out)
        figures[name] = run_figures(store, seconds)
        if name == "aia1600":
            plot_maps(store, out / "aia1600_plots")
        if name == "legacy":
            import xarray as xr

            from specfit.legacy import compare_original

            figures[name]["original_comparison"] = compare_original(xr.open_zarr(store), ORIGINAL)
    old = json.loads(args.json.read_text()) if args.json.is_file() else {}
    old.update(figures)
    args.json.write_text(json.dumps(old, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    print(f"wrote {args.json}")
    return figures


if __name__ == "__main__":
    main()
