"""The pure-noise field of docs/significance.md: per-pixel vs field-wide false detections.

specfit's synthetic generator (``specfit.synthetic``) without its bump disc: every pixel is a
power law + white tail + photon noise, so every "bump" the LRT finds is false. The field is
run through the whole pipeline with the default fit settings and the numbers of pixels that
prefer M2 per pixel (p < fit.alpha), after Benjamini-Hochberg (q <= fit.fdr_q) and at the
global level (fit.global_level) are printed, with the M1 fits stuck at a constant (amplitude
0, index on its lower bound) that make the field-wide counts exceed their nominal rate.

    PYTHONPATH=. python docs/significance_null_field.py [OUT_DIR] [--seeds 1 2 3] [--cadence 12]

Each field's line is also stored in ``--json`` (default docs/significance_null_field.json,
which docs/significance.md quotes) under ``"<seed>"`` or ``"<seed>@<cadence>"``, merged with
what the file already holds.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import specfit.synthetic as synthetic
from specfit.pipeline import run
from specfit.store import open_results

_maps = synthetic.synthetic_maps


def _no_bump(shape, cadence, exposure):
    # The generator's truths with the bump amplitude set to 0 everywhere.
    maps = _maps(shape, cadence, exposure)
    maps["has_bump"] = np.zeros(shape, bool)
    maps["bump_amplitude"] = np.zeros(shape)
    for k in ("bump_center", "bump_width", "bump_period"):
        maps[k] = np.full(shape, np.nan)
    return maps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", default="significance-null-field")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1])
    ap.add_argument("--shape", type=int, nargs=2, default=[64, 64])
    ap.add_argument(
        "--cadence",
        type=float,
        default=None,
        help="resample.cadence in s (default: the run's own choice from the frame times)",
    )
    ap.add_argument(
        "--json",
        default=str(Path(__file__).resolve().parent / "significance_null_field.json"),
        help="where each field's line is stored (merged with the file's other fields)",
    )
    a = ap.parse_args()
    store = Path(a.json)
    stored = json.loads(store.read_text()) if store.is_file() else {}
    synthetic.synthetic_maps = _no_bump
    out = Path(a.out)
    for seed in a.seeds:
        t0 = time.perf_counter()
        cfg = {
            "input": {
                "kind": "synthetic",
                "path": str(out / f"frames-{seed}"),
                "synthetic": {"shape": list(a.shape), "n_frames": 600, "seed": seed},
            },
            "output": {"path": str(out / f"results-{seed}.zarr")},
            "cluster": {"kind": "local", "n_workers": 1, "threads_per_worker": 2},
        }
        if a.cadence:
            cfg["resample"] = {"cadence": a.cadence}
        run(cfg, overwrite=True)
        ds = open_results(out / f"results-{seed}.zarr")
        info = json.loads(ds.attrs["field_significance"])["lrt_pvalue"]
        stuck = int((ds["m1_amplitude"].values == 0).sum())
        p = ds["lrt_pvalue"].values
        row = {
            "seed": seed,
            "seconds": round(time.perf_counter() - t0, 1),
            "cadence": ds.attrs.get("cadence"),
            "nyquist_kept": ds.attrs.get("interpolation_nyquist_gain"),
            **info,
            "per_pixel_percent": round(100 * info["n_pixel"] / info["n_tested"], 2),
            "m1_stuck_at_constant": stuck,
            "p_below_1e-4": int(np.sum(p < 1e-4)),
            "m2_fdr_pixels_with_m1_stuck": int(
                np.sum((ds["lrt_qvalue"].values <= 0.05) & (ds["m1_amplitude"].values == 0))
            ),
        }
        print(json.dumps(row), flush=True)
        stored[f"{seed}@{a.cadence:g}" if a.cadence else str(seed)] = row
        store.write_text(json.dumps(stored, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
