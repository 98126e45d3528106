"""Run a config with overrides, then open the results store and look at it.

    python workflows/run_and_inspect.py CONFIG [--set spectra.segments=2 ...]

The same as ``specfit run`` followed by ``specfit info``, from Python: the results are an
``xarray.Dataset`` that any xarray user can slice, plot or save.
"""

from __future__ import annotations

import argparse

import numpy as np

import specfit


def main(config, overrides=(), overwrite=True):
    ds = specfit.run(config, list(overrides), overwrite=overwrite)
    ds = specfit.open_results(specfit.load_config(config, list(overrides)).output.path)
    maps = ds[[v for v in ds.data_vars if ds[v].dims == ("y", "x")]].load()  # 2-D maps only
    index = maps["m1_index"]
    ok = maps["m1_status"] == 0
    print(
        f"m1 index: median {float(index.where(ok).median()):.3f} over {int(ok.sum())} converged px"
    )
    if "best_model" in maps:
        frac = float((maps["best_model"] == 1).mean())
        print(f"m2 preferred in {100 * frac:.1f}% of pixels")
    if "m2_bump_period" in maps:
        per = maps["m2_bump_period"].where(maps["best_model"] == 1)
        print(f"median bump period where m2 is preferred: {float(np.nanmedian(per)):.2f} min")
    return ds


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    a = ap.parse_args()
    main(a.config, a.overrides)
