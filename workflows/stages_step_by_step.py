"""Run specfit's stages one by one on a dask cluster, the way a notebook user would.

    python workflows/stages_step_by_step.py [OUT_DIR] [--cluster local|synchronous|tcp://...]

Makes synthetic frames with known parameters, opens them lazily, resamples to a uniform
cadence, takes power spectra (2 segments, 3 x 3 box), fits two models by Whittle likelihood,
saves the maps and compares the recovered index with the truth.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import specfit
from specfit.cluster import cluster_config_from_flag, connect
from specfit.synthetic import open_truth


def main(out_dir: str = "workflow-out", cluster: str = "local", shape=(32, 32), n_frames=400):
    out = Path(out_dir)
    data = specfit.make_synthetic(out / "synthetic", shape=shape, n_frames=n_frames, seed=1)
    with connect(cluster_config_from_flag(cluster)):
        frames = specfit.ingest(data.frames)  # lazy (time, y, x), one task per file
        uniform = specfit.resample(frames, cadence=12.0, max_gap=2.0)  # the nominal cadence
        power = specfit.power_spectra(uniform, segments=2, window="hann", box=3)
        results = specfit.fit(
            power, models={"m1": "powerlaw_tail", "m2": "powerlaw_tail_lorentzian"}
        )
        results = results.compute()
    results.to_zarr(out / "maps.zarr", mode="w")
    truth = open_truth(data.truth)
    err = results["m1_index"].values - truth["index"].values
    print(f"m1 index: median error {np.nanmedian(err):+.3f}, scatter {np.nanstd(err):.3f}")
    return results, truth


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", nargs="?", default="workflow-out")
    ap.add_argument("--cluster", default="local")
    a = ap.parse_args()
    main(a.out_dir, a.cluster)
