"""The shipped IRIS and AIA-JPG configs open their real data lazily with the right shapes."""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np
import pytest

from conftest import assert_docs_quote
from specfit.config import InputConfig, load_config
from specfit.io import open_input
from specfit.stages import ingest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data"


@pytest.mark.realdata
@pytest.mark.parametrize(
    "name,shape,folder",
    [
        ("iris.yaml", (54, 109, 110), "iris_sji_20140329"),
        ("iris2796.yaml", (72, 109, 110), "iris_sji_20140329"),
        pytest.param(
            "aia1600_jpg.yaml", (596, 163, 229), "aia1600_20120606", marks=pytest.mark.slow
        ),
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
    if name == "aia1600_jpg.yaml" and (DATA / folder / "fits").is_dir():
        # The JPGs' fitted co-alignment shifts against the FITS derotation of the same frames
        # (the shift of the field centre), as docs/data.md quotes them.
        from specfit.prep.derotate import plan_derotation

        plan = plan_derotation(open_input(InputConfig(path=str(DATA / folder / "fits"))))
        centre = np.array([81.5]), np.array([143.0])
        pred = np.array([plan.source_coords(i, *centre)[:, 0] for i in range(596)])
        pred -= np.array([81.5, 143.0])
        got = np.stack([arr["coalign_dy"].values, arr["coalign_dx"].values], axis=1)
        rms = np.sqrt(np.mean((got - pred) ** 2, axis=0))
        assert rms[0] < 0.6 and rms[1] < 0.3
        worst = np.abs(got - pred).max()
        assert_docs_quote(
            "data.md",
            f"agree with the FITS derotation to rms {rms[1]:.2f} px in x and {rms[0]:.2f} px in y "
            f"(worst {worst:.2f} px)",
        )


def test_iris_missing_share_is_what_data_md_says():
    """IRIS level-2 missing pixels (-200, blurred at the edges) are caught by the default
    ``missing_below``; docs/data.md quotes the share of each frame they cover, re-measured."""
    folder = DATA / "iris_sji_20140329"
    if not folder.is_dir():
        pytest.skip(f"real data not found at {folder} (../shared/data)")
    medians, empty = [], 0
    for path in sorted(folder.glob("*.fits")):
        arr = open_input(InputConfig(path=str(path)))
        assert arr.attrs["missing_below"] == -50.0  # the IRIS default
        share = 1.0 - np.isfinite(np.asarray(arr.values)).mean(axis=(1, 2))
        empty += int((share == 1.0).sum())
        medians.append(100.0 * float(np.median(share[share < 1.0])))
    low, high = sorted(medians)
    assert_docs_quote(
        "data.md",
        f"`missing_below: -50` catches them (a median {low:.0f}–{high:.0f} % of each frame, "
        "mostly a 3-7 px border and the slit; "
        f"{empty} frames of the two cubes are missing entirely)",
    )


@pytest.mark.realdata
def test_iris_run_names_the_frames_docs_name_and_no_pixel_gaps(tmp_path, caplog):
    """The shipped IRIS Si IV run: its last frames (automatic exposure control) jump away
    from their neighbours in a large share of their pixels, which the run names and
    docs/data.md quotes; no pixel's spectrum bridges more than the frames' own gaps (the
    border pixels that miss samples give no spectrum of their own; with box 3 their means
    come from complete neighbours), as docs/spectra.md says. Both re-measured here."""
    import re

    from specfit.pipeline import run

    if not (DATA / "iris_sji_20140329").is_dir():
        pytest.skip(f"real data not found at {DATA / 'iris_sji_20140329'} (../shared/data)")
    cfg = load_config(
        ROOT / "configs" / "iris.yaml",
        [f"output.path={tmp_path / 'results.zarr'}", "cluster.kind=synchronous"],
    )
    with caplog.at_level("WARNING", logger="specfit"):
        ds = run(cfg)
    said = [r.getMessage() for r in caplog.records]
    assert not [m for m in said if "miss samples of their own" in m], said
    gap = ds["longest_gap"].values
    assert np.nanmax(gap) == pytest.approx(np.nanmin(gap))  # every pixel: the frames' gaps
    jumps = [m for m in said if "differ sharply" in m]
    assert len(jumps) == 1, said
    frames = re.search(r"\): (frame .*?)\. A damaged", jumps[0]).group(1)
    assert_docs_quote(
        "data.md",
        f"The run warns about them (`kernels.resample.frame_jumps`, above): {frames} of their pixels",
    )
    assert_docs_quote("spectra.md", "(AIA 1600; IRIS Si IV and Mg II with box 3) no pixel is named")
