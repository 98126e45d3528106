"""The shipped IRIS and AIA-JPG configs open their real data lazily with the right shapes."""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np
import pytest

from conftest import assert_docs_quote
from specfit.config import InputConfig, load_config
from specfit.errors import InputError
from specfit.io import open_input
from specfit.stages import ingest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data"


@pytest.mark.realdata
@pytest.mark.parametrize(
    "name,shape,folder",
    [
        ("iris.yaml", (44, 109, 110), "iris_sji_20140329"),  # input.max_frames: 44
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
def test_iris_exposure_control_frames_are_named_and_the_shipped_run_stops_before_them(
    tmp_path, caplog
):
    """IRIS Si IV: from frame 44 on, EXPTIMES lists 0.7-3.5 s instead of 8 s, but frames 44-50
    hold the raw level of the 8 s frames (the exposures would make it 0.09-0.43 of it), which
    the run names before any work (stages.exposure_mismatches); frames 51-53 are not named.
    Run on all 54 frames, the damaged-frame check names the frames that jump. The shipped
    config stops before frame 44: neither is named there, and the pixels it names for their
    own gaps are those docs/spectra.md quotes. docs/data.md quotes every figure, re-measured."""
    import re

    from specfit.pipeline import run
    from specfit.stages import exposure_mismatches

    if not (DATA / "iris_sji_20140329").is_dir():
        pytest.skip(f"real data not found at {DATA / 'iris_sji_20140329'} (../shared/data)")
    shipped = ROOT / "configs" / "iris.yaml"
    found = exposure_mismatches(ingest(load_config(shipped, ["input.max_frames=null"])))
    named = [m for m in found if m["contradicted"]]
    assert [m["frame"] for m in named] == list(range(44, 51))
    assert [m["frame"] for m in found if not m["contradicted"]] == [51, 52, 53]
    assert {m["reference"] for m in found} == {43}
    q = [m["exposure_ratio"] for m in named]
    r = [m["level_ratio"] for m in named]
    rest = [m["level_ratio"] for m in found if not m["contradicted"]]
    assert_docs_quote(
        "data.md",
        f"Frames 44–50 hold {min(r):.2f}–{max(r):.2f} times the raw level (median DN) of frame 43 "
        f"(8 s), where their listed exposures would give {min(q):.2f}–{max(q):.2f} times",
    )
    assert_docs_quote(
        "data.md",
        f"multiply them by {1 / max(q):.1f}–{1 / min(q):.1f}x against their neighbours",
    )
    assert_docs_quote(
        "data.md",
        f"frames 51–53 (3.46 s) hold {min(rest):.2f}–{max(rest):.2f} times frame 43's level",
    )

    def warnings_of(overrides, out):
        cfg = load_config(
            shipped, [*overrides, f"output.path={tmp_path / out}", "cluster.kind=synchronous"]
        )
        caplog.clear()
        with caplog.at_level("WARNING", logger="specfit"):
            ds = run(cfg)
        return [r.getMessage() for r in caplog.records], ds

    # all 54 frames: refused before any work, the contradicted frames named
    with pytest.raises(InputError, match=r"^7 frame\(s\) hold the raw level") as err:
        warnings_of(["input.max_frames=null"], "all.zarr")
    assert "frame 44 (t=1110 s" in str(err.value) and "input.normalise_exposure: false" in str(
        err.value
    )
    assert not (tmp_path / "all.zarr").exists()
    # read as stored (no division), no frame jumps
    said, ds = warnings_of(["input.max_frames=null", "input.normalise_exposure=false"], "raw.zarr")
    assert ds.attrs["n_frames"] == 54
    assert not [m for m in said if "differ sharply" in m or "exposure time listed" in m], said
    assert_docs_quote(
        "data.md",
        "the damaged-frame check (`kernels.resample.frame_jumps`, above) names none of the 54",
    )

    said, ds = warnings_of([], "shipped.zarr")
    assert not [m for m in said if "differ sharply" in m or "exposure time listed" in m], said
    assert ds.attrs["n_frames"] == 44
    (gaps,) = [m for m in said if "miss samples of their own" in m]
    count, longest, where = re.search(
        r"^(\d+) pixel\(s\).*longest (\d+) s = \d+ cadences, at pixel (y=\d+, x=\d+)", gaps
    ).groups()
    assert_docs_quote(
        "spectra.md",
        f"IRIS Si IV (its first 44 frames) names {count} pixels (longest {longest} s, at {where})",
    )
