"""Work is reused only for unchanged inputs: the cube and a resume are keyed by the config and
by a fingerprint of the input files; a change is reported and redone, never silently reused."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from conftest import tiny_config
from specfit.errors import StoreError
from specfit.pipeline import run
from specfit.store import open_results
from specfit.workspace import input_fingerprint


def make_frames(folder: Path) -> Path:
    from specfit.synthetic import make_synthetic

    return make_synthetic(folder, shape=(16, 16), n_frames=96, seed=5).frames


def frames_config(out: Path, frames: Path) -> dict:
    cfg = tiny_config(out, input={"kind": "fits_series", "path": str(frames)})
    cfg["fit"] = {"models": {"m1": "powerlaw_tail"}}
    return cfg


def replace_data_same_names(frames: Path) -> None:
    """New data under the same names and sizes (each image flipped): only the modification
    times tell the files changed."""
    from astropy.io import fits

    for f in sorted(frames.glob("*.fits")):
        size = f.stat().st_size
        with fits.open(f, mode="update") as h:
            h[0].data = np.ascontiguousarray(h[0].data[::-1] * 1.5)
        assert f.stat().st_size == size
        os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 1_000_000_000))


def add_frames(frames: Path, n: int) -> int:
    """Append ``n`` frames after the last one (copies of the first frames, later times)."""
    from astropy.io import fits
    from astropy.time import Time, TimeDelta

    files = sorted(frames.glob("*.fits"))
    last = Time(fits.getheader(files[-1])["DATE-OBS"])
    for k in range(n):
        with fits.open(files[k]) as h:
            hdu = fits.PrimaryHDU(h[0].data, header=h[0].header)
        hdu.header["DATE-OBS"] = (last + TimeDelta(12.0 * (k + 1), format="sec")).isot
        hdu.header.pop("T_OBS", None)
        hdu.writeto(frames / f"synth_{len(files) + k:05d}.fits")
    return len(files) + n


def assert_same_maps(a, b) -> None:
    assert set(a.data_vars) == set(b.data_vars)
    for name in a.data_vars:
        if name == "tiles_run":
            continue
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)


def fresh(tmp: Path, frames: Path):
    """A run from scratch on the frames as they are now, in a folder of its own."""
    return run(frames_config(tmp, frames))


def mark_unfinished(results: Path) -> None:
    import zarr

    root = zarr.open_group(str(results), mode="r+")
    root["tiles_done"][0, 0] = 0
    root.attrs["complete"] = False


def test_fingerprint_sees_names_sizes_times_and_zarr_metadata(tmp_path):
    from specfit.config import load_config

    frames = tmp_path / "f"
    frames.mkdir()
    for i in range(3):
        (frames / f"a{i}.fits").write_bytes(b"x" * 10)
    cfg = load_config({"input": {"path": str(frames), "pattern": "*.fits"}})
    fp0 = input_fingerprint(cfg)
    assert fp0["files"] == 3 and fp0["bytes"] == 30
    st = (frames / "a1.fits").stat()
    os.utime(frames / "a1.fits", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert input_fingerprint(cfg)["hash"] != fp0["hash"]
    (frames / "a3.fits").write_bytes(b"y")
    assert input_fingerprint(cfg)["files"] == 4
    (frames / "notes.txt").write_text("not matched by the pattern")
    assert input_fingerprint(cfg)["files"] == 4
    # nor by the default pattern '*': no reader reads it, so it is no change (a reviewer's
    # --resume was refused with "input changed (files 195 -> 196)" for a notes file)
    star = load_config({"input": {"path": str(frames)}})
    assert input_fingerprint(star)["files"] == 4
    # A Zarr store: metadata counted by content (same time and size, other attrs).
    import xarray as xr

    z = tmp_path / "c.zarr"
    xr.Dataset({"v": (("time", "y", "x"), np.zeros((4, 2, 2)))}, attrs={"a": "bb"}).to_zarr(
        z, mode="w", consolidated=False
    )
    zcfg = load_config({"input": {"path": str(z)}})
    fz = input_fingerprint(zcfg)
    meta = z / "zarr.json"
    st = meta.stat()
    meta.write_text(meta.read_text().replace('"bb"', '"cc"'))
    os.utime(meta, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert meta.stat().st_size == st.st_size
    assert input_fingerprint(zcfg)["hash"] != fz["hash"]


def test_changed_frames_with_overwrite_equal_a_fresh_run(tmp_path, capfd):
    frames = make_frames(tmp_path / "data")
    cfg = frames_config(tmp_path / "a", frames)
    old = run(cfg)["m1_index"].values  # read now: the store is replaced below
    replace_data_same_names(frames)
    # Without a flag: refused, saying the input changed.
    with pytest.raises(StoreError, match=r"finished run.*the input changed \(newest file time"):
        run(cfg)
    capfd.readouterr()
    new = run(cfg, overwrite=True)
    err = capfd.readouterr().err
    assert "is out of date (the input changed" in err and "reusing" not in err
    ref = fresh(tmp_path / "b", frames)
    assert_same_maps(new, ref)
    assert not np.array_equal(old, new["m1_index"].values, equal_nan=True)


def test_unchanged_inputs_still_reuse_the_cube(tmp_path, capfd):
    frames = make_frames(tmp_path / "data")
    cfg = frames_config(tmp_path / "a", frames)
    first = run(cfg).load()
    capfd.readouterr()
    again = run(cfg, overwrite=True)
    assert "reusing" in capfd.readouterr().err
    assert_same_maps(first, again)


def test_resume_after_the_frames_changed_is_refused_then_overwrite_redoes(tmp_path):
    frames = make_frames(tmp_path / "data")
    cfg = frames_config(tmp_path / "a", frames)
    run(cfg)
    results = tmp_path / "a" / "results.zarr"
    mark_unfinished(results)  # as if killed
    replace_data_same_names(frames)
    with pytest.raises(StoreError, match=r"refusing to resume .*the input changed.*--overwrite"):
        run(cfg, resume=True)
    assert_same_maps(run(cfg, overwrite=True), fresh(tmp_path / "b", frames))


def test_added_frames_are_detected_and_redone_cleanly(tmp_path, capfd):
    """The issue's case: 20 frames added; every tile failed with 'values has 96 samples per
    row but times has 116 frames', and --resume the same."""
    frames = make_frames(tmp_path / "data")
    cfg = frames_config(tmp_path / "a", frames)
    n_before = run(cfg).attrs["n_frames"]
    n_after = add_frames(frames, 20)
    with pytest.raises(StoreError, match=rf"files {n_before} -> {n_after}"):
        run(cfg)
    mark_unfinished(tmp_path / "a" / "results.zarr")
    with pytest.raises(StoreError, match=rf"refusing to resume .*files {n_before} -> {n_after}"):
        run(cfg, resume=True)
    capfd.readouterr()
    ds = run(cfg, overwrite=True)
    err = capfd.readouterr().err
    assert "Traceback" not in err and "samples per row" not in err
    assert ds.attrs["n_frames"] == n_after and ds.attrs["complete"] is True
    assert_same_maps(ds, fresh(tmp_path / "b", frames))


def test_other_synthetic_settings_make_new_frames_and_a_new_cube(tmp_path):
    """Synthetic inputs are keyed by their settings; frames of another seed are not reused."""
    small = {"shape": [16, 16], "n_frames": 96, "cadence": 12.0, "seed": 3}
    cfg = tiny_config(tmp_path, fit={"models": {"m1": "powerlaw_tail"}})
    cfg["input"]["synthetic"] = small
    first = run(cfg)["m1_index"].values  # read now: the store is replaced below
    other = run(cfg, ["input.synthetic.seed=4"], overwrite=True)
    cfg_b = tiny_config(tmp_path / "b", fit={"models": {"m1": "powerlaw_tail"}})
    cfg_b["input"]["synthetic"] = small
    ref = run(cfg_b, ["input.synthetic.seed=4"])
    assert_same_maps(other, ref)
    assert not np.array_equal(first, other["m1_index"].values, equal_nan=True)


def test_a_cube_without_specfit_marker_or_input_record_is_rewritten(tmp_path, capfd):
    """Cubes of earlier versions (no marker, no input record) are never reused."""
    import zarr

    frames = make_frames(tmp_path / "data")
    cfg = frames_config(tmp_path / "a", frames)
    cfg["output"]["keep_cube"] = True
    run(cfg)
    cube = tmp_path / "a" / "results.zarr.specfit-work" / "cube.zarr"
    zarr.open_group(str(cube), mode="r+").attrs["input_fingerprint"] = ""
    capfd.readouterr()
    run(cfg, overwrite=True)
    assert "has no record of its inputs" in capfd.readouterr().err
    assert open_results(tmp_path / "a" / "results.zarr").attrs["complete"] is True


def test_resume_of_a_store_from_another_version_names_the_settings(tmp_path):
    """A store whose stored config lacks a setting this version has (started by an earlier
    specfit) is not resumed (its tiles may have been computed differently); the refusal names
    the setting as new, not as 'None != value', and says how to go on."""
    import json

    import zarr

    frames = make_frames(tmp_path / "data")
    cfg = frames_config(tmp_path / "a", frames)
    run(cfg)
    results = tmp_path / "a" / "results.zarr"
    mark_unfinished(results)
    root = zarr.open_group(str(results), mode="r+")
    old = json.loads(root.attrs["config_json"])
    del old["input"]["quality_bits"]
    root.attrs["config_json"] = json.dumps(old)
    with pytest.raises(
        StoreError,
        match=r"input.quality_bits: not in the stored config \(another specfit version\), now "
        r"None\)\. Finish it with the specfit that started it, or start again with --overwrite",
    ):
        run(cfg, resume=True)
