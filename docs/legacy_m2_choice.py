"""Why the original specFit kept M1 in 3.3 % of pixels: its optimiser, re-enacted on specfit's
legacy spectra and compared with its ``param.npy`` pixel by pixel.

    python docs/legacy_m2_choice.py STORE [--every N] [--json docs/legacy_m2_choice.json]
        [--run STORE_ORIGINAL]

``STORE`` is the results store of ``specfit run configs/legacy.yaml --set
fit.optimizer=specfit`` (specfit's own solver; it holds the spectra, ``power``, which do not
depend on the optimiser). ``--run`` adds the store of ``specfit run configs/legacy.yaml``
(``fit.optimizer: original``, the procedure inside the pipeline) and how often its choice
agrees with the re-enactment. :func:`specfit.legacy.compare_choice` re-runs the original's fitting procedure
(one bounded ``curve_fit`` of M1, one of M2 from the middle of the bounds then 'trf' from
there, sigma = delta log10 f, M2 kept where chi2(M1) > chi2(M2)) on every N-th row (default
all 134 rows: ~10 min on one core) and writes the shares of M2 kept by param.npy, by that
procedure and by specfit, the overlap of the M1 pixels, and the share of the procedure's M1
pixels where specfit's M2 has a lower chi-square than the procedure's M1. docs/legacy.md
quotes the json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ORIGINAL = ROOT / ".." / "shared" / "data" / "aia1600_20120606" / "original_specfit"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("store", help="results.zarr of specfit run configs/legacy.yaml")
    ap.add_argument("--every", type=int, default=1, help="fit every N-th row (1 = all)")
    ap.add_argument("--json", default=str(ROOT / "docs" / "legacy_m2_choice.json"))
    ap.add_argument("--run", default=None, help="results.zarr of configs/legacy.yaml as shipped")
    args = ap.parse_args(argv)

    import xarray as xr

    from specfit.legacy import compare_choice

    ds = xr.open_zarr(args.store)
    rows = np.arange(0, ds.sizes["y"], args.every)
    t0 = time.perf_counter()
    run = xr.open_zarr(args.run) if args.run else None
    out = compare_choice(ds, ORIGINAL, rows, run)
    out["rows_every"] = args.every
    out["seconds"] = round(time.perf_counter() - t0, 1)
    out["specfit_version"] = ds.attrs.get("specfit_version")
    Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
