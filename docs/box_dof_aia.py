"""The AIA 1600 box-3 table of docs/spectra.md: box 1 against box 3 with nominal and estimated dof.

    python docs/box_dof_aia.py [--out DIR] [--json docs/box_dof_aia.json]

Runs ``specfit run configs/aia1600.yaml`` four times (the CLI, timed): as shipped (box 1),
with ``spectra.box=3 spectra.box_dof=nominal``, with ``spectra.box=3`` (``box_dof: auto``,
the default) and with ``spectra.fmax=0.00834`` (docs/hf_steepening.md), and prints per run: the effective number of independent spectra per box
(``dof / dof_per_spectrum``; median and 5th-95th percentile), the medians of ``m1_chi2red``,
``m2_chi2red`` and ``m1_index_err``, the share of pixels where the LRT prefers M2 and where
each model's goodness-of-fit test rejects at 5 %, the shares at a bound (status 7), the
medians of ``m1_index``, ``m1_tail`` and ``lrt_pvalue``, the number
of distinct dof values (one LRT reference each) and the wall time; each run is stamped with
its date, commit and machine (``figure_stamp.stamp``). Results go under ``--out``
(default a temporary folder), never into the repository.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from figure_stamp import stamp  # docs/, beside this script

ROOT = Path(__file__).resolve().parents[1]
RUNS = {
    "box 1": [],
    "box 3, nominal": ["spectra.box=3", "spectra.box_dof=nominal"],
    "box 3, auto": ["spectra.box=3"],
    # docs/hf_steepening.md: the band cut at 8.3 mHz (bins 1-60), box 1
    "box 1, fmax 8.3 mHz": ["spectra.fmax=0.00834"],
}


def run(settings: list[str], store: Path) -> float:
    cmd = [sys.executable, "-m", "specfit.cli", "run", str(ROOT / "configs" / "aia1600.yaml")]
    for s in [*settings, f"output.path={store}", "cluster.dashboard=false"]:
        cmd += ["--set", s]
    t0 = time.perf_counter()
    subprocess.run([*cmd, "--overwrite"], check=True)
    return time.perf_counter() - t0


def figures(store: Path, seconds: float) -> dict:
    import xarray as xr

    ds = xr.open_zarr(store)
    per = float(ds.attrs["dof_per_spectrum"])
    if "dof" in ds:
        neff = np.asarray(ds["dof"].values, dtype=float) / per
    else:
        neff = np.ones(ds["m1_index"].shape)
    neff = neff[np.isfinite(neff)]

    def median(name: str) -> float:
        return float(np.nanmedian(np.asarray(ds[name].values, dtype=float)))

    best = np.asarray(ds["best_model"].values, dtype=float)
    tested = np.isfinite(best) & (best >= 0)
    return {
        "seconds": round(seconds, 1),
        "neff_median": float(np.median(neff)),
        "neff_p5_p95": [float(v) for v in np.percentile(neff, [5, 95])],
        "neff_values": int(np.unique(neff).size),
        "m1_chi2red_median": median("m1_chi2red"),
        "m2_chi2red_median": median("m2_chi2red"),
        "m1_index_err_median": median("m1_index_err"),
        "m2_preferred_percent": 100.0 * float(np.mean(best[tested] == 1)),
        **{f"{m}_gof_below_5_percent": gof_share(ds, m) for m in ("m1", "m2")},
        **{f"{m}_at_bound_percent": status_share(ds, m, 7) for m in ("m1", "m2")},
        "m1_index_median": median("m1_index"),
        "m1_tail_median": median("m1_tail"),
        "lrt_pvalue_median": median("lrt_pvalue"),
    }


def status_share(ds, m: str, code: int) -> float:
    """Percent of the fitted pixels (status >= 0) whose status is ``code``."""
    st = np.asarray(ds[f"{m}_status"].values)
    st = st[st >= 0]
    return 100.0 * float(np.mean(st == code))


def gof_share(ds, m: str) -> float:
    """Percent of fitted pixels whose goodness-of-fit p-value is below 0.05."""
    g = np.asarray(ds[f"{m}_gof_pvalue"].values, dtype=float)
    return 100.0 * float(np.mean(g[np.isfinite(g)] < 0.05))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="where the runs write")
    ap.add_argument("--json", type=Path, default=ROOT / "docs" / "box_dof_aia.json")
    args = ap.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="specfit-boxdof-"))
    result: dict = {"runs": {}}
    for name, settings in RUNS.items():
        store = out / name.replace(" ", "").replace(",", "_") / "results.zarr"
        result["runs"][name] = figures(store, run(settings, store))
        result["runs"][name]["stamp"] = stamp("docs/box_dof_aia.py")
        print(name, json.dumps(result["runs"][name]), flush=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
