"""The shipped IRIS and AIA-JPG configs open their real data lazily with the right shapes."""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np
import pytest

from specfit.config import load_config
from specfit.stages import ingest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data"


@pytest.mark.realdata
@pytest.mark.parametrize(
    "name,shape,folder",
    [
        ("iris.yaml", (54, 109, 110), "iris_sji_20140329"),
        ("iris2796.yaml", (72, 109, 110), "iris_sji_20140329"),
        ("aia1600_jpg.yaml", (596, 94, 217), "aia1600_20120606"),
    ],
)
def test_config_ingests_real_data(name, shape, folder):
    if not (DATA / folder).is_dir():
        pytest.skip(f"real data not found at {DATA / folder} (../shared/data)")
    cfg = load_config(ROOT / "configs" / name)
    arr = ingest(cfg)
    assert arr.shape == shape and isinstance(arr.data, da.Array)
    assert arr.dtype == np.float32 and arr.name == "intensity"
    assert np.all(np.diff(arr["time"].values) > 0)
    frame = arr.isel(time=0).values
    assert np.isfinite(frame).mean() > 0.7
