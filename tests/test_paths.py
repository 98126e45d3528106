"""specfit never deletes or overwrites what it did not create: every output path is checked
against the inputs (and against other people's folders) before anything is written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml
import zarr

from conftest import tiny_config
from specfit.config import load_config
from specfit.errors import ConfigError, StoreError
from specfit.pipeline import cube_path_for, run
from specfit.store import differing_variables
from specfit.workspace import work_dir_for

SMALL = {"shape": [16, 16], "n_frames": 64, "cadence": 12.0, "seed": 5}


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file below ``folder`` with its bytes."""
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def user_folder(path: Path) -> dict[str, bytes]:
    """A folder of someone's own files (a thesis, a subfolder), and its snapshot."""
    (path / "sub").mkdir(parents=True)
    (path / "thesis.tex").write_text("\\documentclass{article}\n")
    (path / "sub" / "notes.txt").write_text("do not lose me\n")
    return snapshot(path)


@pytest.fixture
def frames(tmp_path) -> Path:
    """A folder of 64 small synthetic FITS frames (a user's input)."""
    from specfit.synthetic import make_synthetic

    return make_synthetic(tmp_path / "data", shape=(16, 16), n_frames=64, seed=5).frames


def frames_config(tmp_path: Path, frames: Path, **output) -> dict:
    cfg = tiny_config(tmp_path, input={"kind": "fits_series", "path": str(frames)})
    cfg["fit"] = {"models": {"m1": "powerlaw_tail"}}
    cfg["output"].update(output)
    return cfg


def user_zarr_cube(path: Path) -> None:
    """A user's own Zarr cube (an xarray dataset with a time coordinate)."""
    rng = np.random.default_rng(1)
    ds = xr.Dataset(
        {"intensity": (("time", "y", "x"), rng.gamma(5.0, 20.0, (64, 16, 16)).astype("f4"))},
        coords={"time": ("time", np.arange(64) * 12.0, {"start_time": "2024-01-01T00:00:00"})},
    )
    ds.to_zarr(path, mode="w", consolidated=False)


def test_user_zarr_input_named_like_the_old_default_cube_survives(tmp_path):
    """The issue's data loss: input d/cube.zarr, output d/results.zarr, keep_cube false."""
    d = tmp_path / "d"
    user_zarr_cube(d / "cube.zarr")
    before = snapshot(d / "cube.zarr")
    cfg = tiny_config(
        tmp_path,
        input={"kind": "zarr", "path": str(d / "cube.zarr")},
        output={"path": str(d / "results.zarr"), "keep_cube": False},
        fit={"models": {"m1": "powerlaw_tail"}},
    )
    ds = run(cfg)
    assert ds.attrs["complete"] is True
    assert snapshot(d / "cube.zarr") == before  # every file, byte for byte
    # The intermediate cube lived in specfit's own folder and only it was removed.
    work = work_dir_for(d / "results.zarr")
    assert cube_path_for(load_config(cfg)).parent == work
    assert not (work / "cube.zarr").exists() and (work / "specfit-work.json").exists()


def test_input_at_the_default_cube_path_is_refused(tmp_path):
    results = tmp_path / "results.zarr"
    cube = work_dir_for(results) / "cube.zarr"
    user_zarr_cube(cube)
    before = snapshot(cube)
    cfg = tiny_config(tmp_path, input={"kind": "zarr", "path": str(cube)})
    with pytest.raises(
        ConfigError, match=r"the input \(input.path: .* lies inside the work folder"
    ):
        run(cfg)
    assert snapshot(cube) == before and not results.exists()


def test_output_inside_the_input_is_refused(tmp_path, frames):
    before = snapshot(frames)
    cfg = frames_config(tmp_path, frames, path=str(frames / "results.zarr"))
    with pytest.raises(ConfigError, match=r"lies inside the input \(input.path: "):
        run(cfg)
    assert snapshot(frames) == before  # nothing added, nothing removed


@pytest.mark.parametrize("flags", [{}, {"overwrite": True}])
def test_output_equal_to_the_input_is_refused(tmp_path, frames, flags):
    before = snapshot(frames)
    with pytest.raises(ConfigError, match="is the input"):
        run(frames_config(tmp_path, frames, path=str(frames)), **flags)
    assert snapshot(frames) == before and len(before) == len(list(frames.glob("*.fits")))


def test_input_inside_the_output_is_refused(tmp_path, frames):
    before = snapshot(frames)
    cfg = frames_config(tmp_path, frames, path=str(frames.parent))
    with pytest.raises(ConfigError, match="lies inside the output.path"):
        run(cfg, overwrite=True)
    assert snapshot(frames) == before


@pytest.mark.parametrize("flags", [{}, {"overwrite": True}])
def test_cube_path_on_a_user_folder_is_refused(tmp_path, frames, flags):
    mine = tmp_path / "mine"
    before = user_folder(mine)
    cfg = frames_config(tmp_path, frames, cube_path=str(mine), keep_cube=False)
    with pytest.raises(ConfigError, match="output.cube_path: .* not a cube written by specfit"):
        run(cfg, **flags)
    assert snapshot(mine) == before
    assert not (tmp_path / "results.zarr").exists()


def test_cube_path_inside_the_input_or_the_results_is_refused(tmp_path, frames):
    before = snapshot(frames)
    with pytest.raises(ConfigError, match="output.cube_path: .* inside the input"):
        run(frames_config(tmp_path, frames, cube_path=str(frames / "c.zarr")))
    with pytest.raises(ConfigError, match="output.cube_path: .* overlap"):
        run(frames_config(tmp_path, frames, cube_path=str(tmp_path / "results.zarr" / "c")))
    assert snapshot(frames) == before


def test_cube_path_in_another_stores_work_folder_is_refused(tmp_path, frames):
    """A reviewer pointed a second run's output.cube_path at a running first run's own cube
    (``A.specfit-work/cube.zarr``): the second took another lock, found that cube out of date
    and rewrote it under the first run's fit, whose store came out complete from two
    datasets. Another store's work folder is refused, wherever in it the cube would go."""
    from specfit.workspace import ensure_work_dir

    other = ensure_work_dir(tmp_path / "A" / "results.zarr")
    for cube in (other / "cube.zarr", other / "sub" / "c.zarr"):
        cfg = frames_config(tmp_path / "B", frames, cube_path=str(cube))
        with pytest.raises(ConfigError, match="output.cube_path: .* work folder of another"):
            run(cfg)
    assert sorted(p.name for p in other.iterdir()) == ["specfit-work.json"]
    # the run's own work folder is where its default cube goes: naming it is allowed
    own = frames_config(tmp_path, frames)
    own["output"]["cube_path"] = str(work_dir_for(own["output"]["path"]) / "cube.zarr")
    run(own, cluster="synchronous")
    # a second reviewer: a cube named like another cube's partial (the other run deleted it
    # mid-fit), a cube inside a finished store (which then held 'foreign' files and could
    # not be overwritten), and a store inside a work folder (documented as safe to delete)
    store = Path(own["output"]["path"])
    for output, match in (
        (
            {"cube_path": str(tmp_path / "s" / "c.zarr.partial")},
            "output.cube_path: .* ends in .partial",
        ),
        (
            {"cube_path": str(store / "cube.zarr")},
            "output.cube_path: .* lies in .*, a results store",
        ),
        (
            {"path": str(other / "res.zarr")},
            "output.path: .* lies in .*, the work folder of another",
        ),
    ):
        cfg = frames_config(tmp_path / "C", frames, **output)
        with pytest.raises(ConfigError, match=match):
            run(cfg)
    assert not (store / "cube.zarr").exists() and not (other / "res.zarr").exists()


def test_overwrite_replaces_only_a_specfit_store(tmp_path, frames):
    mine = tmp_path / "mine"
    before = user_folder(mine)
    with pytest.raises(StoreError, match="not a specfit results store.*not even with --overwrite"):
        run(frames_config(tmp_path, frames, path=str(mine)), overwrite=True)
    assert snapshot(mine) == before
    assert not work_dir_for(mine).exists()  # refused before anything was written
    # An empty folder is fine as a new store; a specfit store is replaced by --overwrite.
    empty = tmp_path / "empty.zarr"
    empty.mkdir()
    cfg = frames_config(tmp_path, frames, path=str(empty))
    run(cfg)
    assert run(cfg, overwrite=True).attrs["complete"] is True


def test_user_files_put_inside_a_specfit_store_or_cube_are_never_deleted(tmp_path, frames):
    """A finished store or cube is specfit's, but files a user put in it are not. A run that
    would replace or remove such a folder (--overwrite of the store, a cube out of date,
    output.keep_cube: false) refuses before any work, naming them, and changes nothing; a run
    that only reuses the cube goes ahead and leaves the files alone."""
    results = tmp_path / "res.zarr"
    cube = tmp_path / "cube.zarr"
    cfg = frames_config(tmp_path, frames, path=str(results), cube_path=str(cube), keep_cube=True)
    run(cfg)
    (cube / "notes.txt").write_text("mine too\n")
    # the cube is current and kept: reused, the note stays
    run(cfg, overwrite=True)
    assert (cube / "notes.txt").read_text() == "mine too\n"
    before = snapshot(tmp_path)
    want = r"output.cube_path: .*cube.zarr holds files specfit did not write \(notes.txt\)"
    with pytest.raises(StoreError, match=want):  # it would be removed at the end
        run({**cfg, "output": {**cfg["output"], "keep_cube": False}}, overwrite=True)
    assert snapshot(tmp_path) == before
    frame = sorted(frames.glob("*.fits"))[3]  # an input changed: the cube would be rewritten
    frame.write_bytes(frame.read_bytes())
    os.utime(frame, (1e9, 1e9))
    before = snapshot(tmp_path)
    with pytest.raises(StoreError, match=want):
        run(cfg, overwrite=True)
    assert snapshot(tmp_path) == before
    (cube / "notes.txt").unlink()
    run(cfg, overwrite=True)  # without the note: rewritten
    (results / "MY_NOTES.txt").write_text("mine\n")
    (results / "myplots").mkdir()
    (results / "myplots" / "p.png").write_bytes(b"png")
    before = snapshot(tmp_path)
    with pytest.raises(
        StoreError,
        match=r"--overwrite: .*res.zarr holds files specfit did not write \(MY_NOTES.txt, myplots/\)",
    ):
        run(cfg, overwrite=True)
    assert snapshot(tmp_path) == before
    # the default cube in the work folder is guarded the same way
    plain = frames_config(tmp_path, frames, path=str(tmp_path / "plain.zarr"), keep_cube=True)
    run(plain)
    default = cube_path_for(load_config(plain))
    (default / "keep.txt").write_text("mine\n")
    before = snapshot(tmp_path)
    with pytest.raises(
        StoreError, match=r"output.path: .*cube.zarr holds files specfit did not write \(keep.txt\)"
    ):
        run({**plain, "output": {**plain["output"], "keep_cube": False}}, overwrite=True)
    assert snapshot(tmp_path) == before


def test_overwrite_keeps_a_users_arrays_and_files_inside_a_store(tmp_path):
    """An array a user added to a finished results store with zarr, and a file put inside one
    of its arrays' folders, are the user's: --overwrite refuses and names them (a review found
    both deleted without a word)."""
    cfg = tiny_config(tmp_path)
    results = tmp_path / "results.zarr"
    run(cfg)
    zarr.open_group(str(results), mode="r+").create_array("my_ratio", shape=(3,), dtype="f4")
    (results / "m1_index" / "my_notes.txt").write_text("mine\n")
    before = snapshot(tmp_path)
    with pytest.raises(
        StoreError,
        match=r"--overwrite: .*results.zarr holds files specfit did not write \(m1_index/my_notes"
        r"\.txt, my_ratio/ \(an array specfit did not write\)\)",
    ):
        run(cfg, overwrite=True)
    assert snapshot(tmp_path) == before


def test_an_overwrite_that_cannot_delete_never_leaves_a_complete_looking_store(
    tmp_path, monkeypatch
):
    """--overwrite whose deletion of the old store fails halfway (a file it may not remove):
    before, a traceback and a half-deleted store that still said 'complete'. Now the old
    store is renamed first, so its path is free, the error is one line naming the renamed
    folder, and a later run writes a new store there."""
    import shutil

    from specfit import workspace
    from specfit.store import is_complete

    cfg = tiny_config(tmp_path)
    results = tmp_path / "results.zarr"
    run(cfg)
    real = shutil.rmtree
    calls = []

    def fails_halfway(path, *a, **k):  # the first array goes, the second may not be removed
        calls.append(path)
        if len(calls) == 1:
            return real(path, *a, **k)
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(workspace.shutil, "rmtree", fails_halfway)
    with pytest.raises(StoreError, match=r"cannot delete the old results.zarr, moved to .*"
                       r"specfit-removing.*Permission denied.*is free"):  # fmt: skip
        run(cfg, overwrite=True)
    assert not results.exists() and not is_complete(results)
    (left,) = tmp_path.glob(".results.zarr.specfit-removing-*")
    monkeypatch.setattr(workspace.shutil, "rmtree", real)
    run(cfg, overwrite=True)
    # the next run on this output finishes that deletion (sweep_removals: its process is
    # gone, or is this one); it was left for the user to delete by hand
    assert is_complete(results) and not left.exists()


def test_foreign_entries_are_what_zarr_did_not_write(tmp_path):
    from specfit.workspace import foreign_entries

    store = tmp_path / "s.zarr"
    xr.Dataset({"a": ("x", np.arange(3.0))}).to_zarr(store, consolidated=True)
    assert foreign_entries(store) == []
    (store / "x.txt").write_text("")
    (store / "d").mkdir()
    (store / ".DS_Store").write_text("")  # a file browser's, not the user's work
    assert foreign_entries(store) == ["d/", "x.txt"]
    assert foreign_entries(tmp_path / "missing") == []


def test_foreign_entries_know_each_arrays_chunk_names(tmp_path):
    """Inside an array's folder only the chunks its chunk grid can have are zarr's: a user's
    file named like a chunk ("0", "1.2") beside a v3 array's metadata, a file inside its
    ``c/`` folder, or a chunk index beyond its grid are the user's (before, a name of digits
    and dots anywhere, and everything under ``c/``, counted as zarr's: --overwrite deleted
    them)."""
    import zarr

    from specfit.workspace import foreign_entries

    store = tmp_path / "s.zarr"
    g = zarr.open_group(str(store), mode="w")
    a = g.create_array("a", shape=(4, 6), chunks=(2, 3), dtype="f4")
    a[:] = 1.0
    g.create_array("s", shape=(), dtype="f4")[...] = 2.0
    assert sorted((store / "a" / "c").rglob("*")) and foreign_entries(store) == []
    (store / "a" / "0").write_text("mine")
    (store / "a" / "1.2").write_text("mine")
    (store / "a" / "c" / "notes.txt").write_text("mine")
    (store / "a" / "c" / "1" / "5").write_text("beyond the grid's 2 columns")
    (store / "a" / "c" / "0" / "7").mkdir()
    assert foreign_entries(store) == [
        "a/0", "a/1.2", "a/c/0/7/", "a/c/1/5", "a/c/notes.txt"
    ]  # fmt: skip
    v2 = tmp_path / "v2.zarr"
    g2 = zarr.open_group(str(v2), mode="w", zarr_format=2)
    g2.create_array("b", shape=(4,), chunks=(2,), dtype="f4")[:] = 1.0
    assert foreign_entries(v2) == []
    (v2 / "b" / "7").write_text("not one of its 2 chunks")
    (v2 / "b" / "0.0").write_text("a 2-d name in a 1-d array")
    assert foreign_entries(v2) == ["b/0.0", "b/7"]


def test_foreign_entries_take_only_the_chunk_names_zarr_writes(tmp_path):
    """Chunk indices are plain decimals: a user's "c/1/01" or "c/00/1" counted as chunk (1, 1)
    / (0, 1) and --overwrite deleted it; "c/0/²" (a digit to str.isdigit, not to int) crashed
    the check; a v3 array whose chunk keys use the separator "." ("c.0", "c.1") was refused as
    foreign (code reviewer)."""
    import zarr

    from specfit.workspace import foreign_entries

    store = tmp_path / "s.zarr"
    g = zarr.open_group(str(store), mode="w", zarr_format=3)
    g.create_array("a", shape=(4, 4), chunks=(2, 2), dtype="f4")[:] = 1.0
    assert foreign_entries(store) == []
    (store / "a" / "c" / "1" / "01").write_text("mine")
    (store / "a" / "c" / "0" / "\u00b2").write_text("mine")
    (store / "a" / "c" / "00").mkdir()
    (store / "a" / "c" / "00" / "1").write_text("mine")
    assert foreign_entries(store) == ["a/c/0/\u00b2", "a/c/00/", "a/c/1/01"]
    dotted = tmp_path / "d.zarr"
    g = zarr.open_group(str(dotted), mode="w", zarr_format=3)
    enc = {"name": "default", "separator": "."}
    g.create_array("b", shape=(4,), chunks=(2,), dtype="f4", chunk_key_encoding=enc)[:] = 1.0
    assert sorted(p.name for p in (dotted / "b").iterdir()) == ["c.0", "c.1", "zarr.json"]
    assert foreign_entries(dotted) == []
    (dotted / "b" / "c.2").write_text("beyond the grid")
    assert foreign_entries(dotted) == ["b/c.2"]


def test_a_refused_run_leaves_no_folders_behind(tmp_path, frames):
    """A run refused after taking its lock (here: a cadence that leaves too few samples)
    removes the work folder and the parent folders it created; folders that existed before
    (a finished run's work folder) stay."""
    out = tmp_path / "new" / "deeper" / "x.zarr"
    cfg = frames_config(tmp_path, frames, path=str(out))
    cfg["resample"] = {"cadence": 1e5}
    with pytest.raises(ConfigError, match="resample.cadence"):
        run(cfg)
    assert not (tmp_path / "new").exists()
    cube = tmp_path / "cubes" / "c.zarr"
    with pytest.raises(ConfigError, match="resample.cadence"):
        run({**cfg, "output": {**cfg["output"], "cube_path": str(cube)}})
    assert not (tmp_path / "new").exists() and not (tmp_path / "cubes").exists()
    done = tmp_path / "done.zarr"
    run(frames_config(tmp_path, frames, path=str(done)))
    before = snapshot(work_dir_for(done))
    with pytest.raises(StoreError, match="already holds a finished run"):
        run(frames_config(tmp_path, frames, path=str(done)))
    assert snapshot(work_dir_for(done)) == before
    # a work folder that existed before (no store yet: another run's, say) stays as it was
    from specfit.workspace import ensure_work_dir

    early = tmp_path / "early.zarr"
    ensure_work_dir(early)
    before = snapshot(work_dir_for(early))
    with pytest.raises(ConfigError, match="resample.cadence"):
        run({**cfg, "output": {**cfg["output"], "path": str(early)}})
    after = snapshot(work_dir_for(early))  # kept (the run's lock file may have joined it)
    assert {k: after.get(k) for k in before} == before and set(after) <= {*before, "lock"}


def test_a_foreign_work_folder_is_left_alone(tmp_path, frames):
    results = tmp_path / "results.zarr"
    before = user_folder(work_dir_for(results))
    with pytest.raises(ConfigError, match="was not made by specfit"):
        run(frames_config(tmp_path, frames, path=str(results)))
    assert snapshot(work_dir_for(results)) == before


def test_prepare_store_refuses_to_replace_a_foreign_folder(tmp_path):
    """The store layer guards itself too, whatever its caller checked."""
    from specfit.store import StoreLayout, prepare_store

    mine = tmp_path / "mine"
    before = user_folder(mine)
    layout = StoreLayout(4, 4, np.arange(3.0), 4, {}, {}, {}, {})
    with pytest.raises(StoreError, match="not a specfit results store"):
        prepare_store(mine, layout)
    assert snapshot(mine) == before


def test_write_cube_refuses_a_foreign_partial_folder(tmp_path):
    import dask.array as da

    from specfit.pipeline import _write_cube

    mine = tmp_path / "cube.zarr.partial"
    before = user_folder(mine)
    arr = xr.DataArray(
        da.zeros((8, 4, 4), chunks=(1, 4, 4)), dims=("time", "y", "x"), name="intensity"
    )
    with pytest.raises(StoreError, match="not a cube written by specfit"):
        _write_cube(arr, tmp_path / "cube.zarr", 4, 4, None, {"input": {}, "prep": {}})
    assert snapshot(mine) == before


def _cli_run(cfg: dict, tmp_path: Path, *flags: str) -> subprocess.CompletedProcess:
    import yaml

    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return subprocess.run(
        [sys.executable, "-m", "specfit.cli", "run", str(path), *flags],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("where", "key"),
    [
        ("below_file", "output.path"),
        ("is_file", "output.path"),
        ("root", "output.path"),
        ("unwritable", "output.path"),
        ("cube_below_file", "output.cube_path"),
        ("cube_unwritable", "output.cube_path"),
    ],
)
def test_impossible_output_paths_give_one_line_before_any_cluster(tmp_path, where, key):
    """A path below a regular file, a file in place of the store, or a place nothing can be
    created: one line naming the key, exit 2, on the default local cluster (never started)."""
    afile = tmp_path / "afile"
    afile.write_text("a user's file\n")
    cfg = tiny_config(tmp_path)
    cfg["cluster"] = {"kind": "local"}  # the error must come before it starts
    if where == "below_file":
        cfg["output"]["path"] = str(afile / "results.zarr")
    elif where == "is_file":
        cfg["output"]["path"] = str(afile)
    elif where == "root":  # a traceback (ValueError: '/' has an empty name) before
        cfg["output"]["path"] = "/"
    elif where == "unwritable":
        cfg["output"]["path"] = "/proc/specfit-cannot-write-here/results.zarr"
    elif where == "cube_unwritable":
        cfg["output"]["cube_path"] = "/proc/specfit-cannot-write-here/cube.zarr"
    else:
        cfg["output"]["cube_path"] = str(afile / "cube.zarr")
    res = _cli_run(cfg, tmp_path)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"specfit: error: {key}"), res.stderr
    assert "Traceback" not in res.stderr and "dashboard" not in res.stderr.lower()
    assert afile.read_text() == "a user's file\n"


def test_synthetic_frames_are_made_only_in_a_folder_specfit_marked(tmp_path):
    """input.kind synthetic writes frames into input.path: files there with specfit's names
    but no specfit marker are someone else's and stay."""
    mine = tmp_path / "synthetic"
    (mine / "frames").mkdir(parents=True)
    (mine / "frames" / "synth_00000.fits").write_bytes(b"someone's file")
    before = snapshot(mine)
    with pytest.raises(ConfigError, match="input.path: .* no record of making"):
        run(tiny_config(tmp_path))
    assert snapshot(mine) == before


def test_a_folder_without_write_permission_is_refused_before_work(tmp_path, monkeypatch):
    """(As root every folder is writable, so the permission answer is simulated.)"""
    import os

    real = os.access
    locked = tmp_path / "locked"
    locked.mkdir()
    monkeypatch.setattr(os, "access", lambda p, m: False if Path(p) == locked else real(p, m))
    cfg = tiny_config(tmp_path, output={"path": str(locked / "results.zarr")})
    with pytest.raises(ConfigError, match=r"output.path: .* no permission to write in .*locked"):
        run(cfg)
    assert list(locked.iterdir()) == [] and not (tmp_path / "synthetic").exists()


# ----------------------------------------------------------------------------- other products
def test_a_report_never_replaces_a_users_file_and_is_checked_before_work(tmp_path, frames):
    """--report/cluster.report is written when the run ends: a path that would replace an
    input frame, a user's file or the config, or is a folder, or lies in the input or the
    store, is refused before anything is written. An earlier dask report may be replaced."""
    from specfit.workspace import check_report_path

    notes = tmp_path / "notes.txt"
    notes.write_text("mine\n")
    frame = sorted(frames.iterdir())[0]
    folder = tmp_path / "reports"
    folder.mkdir()
    other = tmp_path / "other_run" / "results.zarr"  # another run's store, and its cube
    zarr.open_group(str(other), mode="w").attrs["specfit_kind"] = "results"
    cube = tmp_path / "other_run" / "cube.zarr"
    zarr.open_group(str(cube), mode="w").attrs["specfit_kind"] = "cube"
    work = tmp_path / "other_run" / "results.zarr.specfit-work"  # and its work folder
    work.mkdir()
    (work / "specfit-work.json").write_text("{}")
    before = snapshot(tmp_path)
    cfg = frames_config(tmp_path, frames)
    cases = [
        (frame, "exists and is not a dask performance report"),
        (notes, "exists and is not a dask performance report"),
        (folder, "is a folder; give a file name"),
        (frames / "new.html", "lies inside input.path"),
        (tmp_path / "results.zarr" / "r.html", "lies inside output.path"),
        (other / "r.html", "lies inside a specfit store"),
        (cube / "sub" / "r.html", "lies inside a specfit store"),
        (work / "r.html", "lies inside a specfit work folder"),
    ]
    for report, message in cases:
        with pytest.raises(ConfigError, match=f"--report/cluster.report: .*{message}"):
            run(cfg, report=str(report))
    assert snapshot(tmp_path) == before
    assert not (tmp_path / "results.zarr").exists()
    with pytest.raises(ConfigError, match="not a dask performance report"):
        run({**cfg, "cluster": {**cfg["cluster"], "report": str(notes)}})
    old = tmp_path / "old.html"
    old.write_text("<html><h1> Dask Performance Report </h1></html>")
    check_report_path(load_config(cfg), old)  # an earlier report: may be replaced
    check_report_path(load_config(cfg), tmp_path / "new" / "r.html")  # a new file


def test_an_empty_cube_folder_the_user_made_stays_when_the_cube_is_dropped(tmp_path, frames):
    mine = tmp_path / "cube_here"
    mine.mkdir()
    run(frames_config(tmp_path, frames, cube_path=str(mine), keep_cube=False))
    assert mine.is_dir() and not any(mine.iterdir())
    made = tmp_path / "made_by_the_run"
    cfg = frames_config(tmp_path, frames, path=str(tmp_path / "r2.zarr"), cube_path=str(made))
    run({**cfg, "output": {**cfg["output"], "keep_cube": False}})
    assert not made.exists()  # what the run made, it removes
    # interrupted after the cube was written into the user's folder, then resumed: the
    # folder (now holding the cube) is still the user's
    import specfit.pipeline as pipeline

    again = tmp_path / "cube_again"
    again.mkdir()
    cfg = frames_config(tmp_path, frames, path=str(tmp_path / "r3.zarr"), cube_path=str(again))
    cfg["output"]["keep_cube"] = False

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    real = pipeline._tiles
    pipeline._tiles = interrupted
    try:
        with pytest.raises(KeyboardInterrupt):
            run(cfg)
    finally:
        pipeline._tiles = real
    assert any(again.iterdir())  # the cube is in it
    run(cfg, resume=True)
    assert again.is_dir() and not any(again.iterdir())


def test_plot_and_export_never_write_into_the_store_or_the_input_folder(tmp_path, frames):
    from specfit.export import export_fits
    from specfit.viz.maps import plot_results

    results = tmp_path / "results.zarr"
    run(frames_config(tmp_path, frames))
    before = snapshot(tmp_path)
    for out in (frames, frames / "maps", results, results / "maps", work_dir_for(results)):
        with pytest.raises(ConfigError, match=r"--out .*: is or lies inside"):
            plot_results(str(results), out, maps=["m1_index"])
        with pytest.raises(ConfigError, match=r"--fits .*: is or lies inside"):
            export_fits(str(results), out, maps=["m1_index"])
    # a Dataset that lost its encoding (ds.where drops it) is guarded by the folder itself
    from specfit.store import open_results

    ds = open_results(results)
    masked = ds.where(ds["m1_index"] > -5)
    assert "source" not in masked.encoding
    for out in (results / "maps", work_dir_for(results) / "maps"):
        with pytest.raises(ConfigError, match=r"--out .*: is or lies inside a specfit"):
            plot_results(masked, out, maps=["m1_index"])
        with pytest.raises(ConfigError, match=r"--fits .*: is or lies inside a specfit"):
            export_fits(masked, out, maps=["m1_index"])
    assert snapshot(tmp_path) == before


def test_an_interrupted_plot_can_be_run_again(tmp_path, demo_store, monkeypatch):
    """The marker naming the files specfit plot writes is written first: after Ctrl-C the
    same command replaces its own partial output instead of refusing it as someone else's."""
    from specfit.viz import maps as viz_maps

    real = viz_maps.heatmap
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    out = tmp_path / "plots"
    monkeypatch.setattr(viz_maps, "heatmap", interrupted)
    with pytest.raises(KeyboardInterrupt):
        viz_maps.plot_results(demo_store, out, maps=["m1_index", "m1_tail"], html_page=False)
    assert (out / "m1_index.png").exists() and not (out / "m1_tail.png").exists()
    monkeypatch.setattr(viz_maps, "heatmap", real)
    written = viz_maps.plot_results(demo_store, out, maps=["m1_index", "m1_tail"], html_page=False)
    assert [w.name for w in written] == ["m1_index.png", "m1_tail.png"]


def test_an_empty_output_folder_is_written_into_not_made_again(tmp_path, frames):
    """A user's empty folder as output.path was deleted and made again (zarr's mode "w"), so
    its permissions and group were lost, and a shell standing in it was left in a deleted
    folder (a reviewer's finding). It is now the same folder, with its mode. Replacing that
    store (--overwrite, another setting) made the folder anew with the default mode and group
    (a helper's finding); the new folder now has the old one's mode and group."""
    import stat

    out = tmp_path / "shared" / "results.zarr"
    out.mkdir(parents=True)
    os.chmod(out, 0o2770)
    inode = out.stat().st_ino
    run(frames_config(tmp_path, frames, path=str(out)), cluster="synchronous")
    assert out.stat().st_ino == inode
    assert stat.S_IMODE(out.stat().st_mode) == 0o2770
    assert xr.open_zarr(out).attrs["complete"]
    group = out.stat().st_gid
    cfg = frames_config(tmp_path, frames, path=str(out))
    cfg["spectra"] = {**cfg.get("spectra", {}), "detrend": "linear"}
    run(cfg, cluster="synchronous", overwrite=True)
    assert stat.S_IMODE(out.stat().st_mode) == 0o2770 and out.stat().st_gid == group
    assert xr.open_zarr(out).attrs["complete"] and xr.open_zarr(out).attrs["detrend"] == "linear"


def test_a_store_cut_off_while_being_created_is_specfits_own(tmp_path, frames, monkeypatch):
    """A run killed (or out of disk) while creating the store's arrays left a folder without
    specfit's marker, which every later run refused as someone else's, --overwrite included
    (a reviewer's finding). The marker is now written with the group, first."""
    from specfit.workspace import is_specfit_results

    cfg = frames_config(tmp_path, frames)
    real = zarr.Group.create_array

    def out_of_disk(self, *args, **kwargs):
        name = args[0] if args else kwargs.get("name")
        if str(name).startswith("m1_"):  # the store's first fit map (the cube is written)
            raise OSError(28, "No space left on device")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(zarr.Group, "create_array", out_of_disk)
    with pytest.raises(OSError, match="No space left"):
        run(cfg, cluster="synchronous")
    monkeypatch.undo()
    store = tmp_path / "results.zarr"
    assert store.is_dir() and is_specfit_results(store)
    # no tile can have been written: info says so in one line, and a plain run (or --resume,
    # which a reviewer found refused with "another specfit version" and 60 keys) makes it anew
    r = subprocess.run(
        [sys.executable, "-m", "specfit.cli", "info", str(store)], capture_output=True, text=True
    )
    assert r.returncode == 2 and "cut off while it was being created" in r.stderr, r.stderr
    ds = run(cfg, cluster="synchronous", resume=True)
    assert ds.attrs["complete"]
    again = tmp_path / "again"
    ref = run(frames_config(again, frames), cluster="synchronous")
    assert not differing_variables(store, again / "results.zarr", ("tiles_run",))
    del ref


def test_an_overwrite_that_could_not_delete_a_folder_deletes_nothing(tmp_path, monkeypatch):
    """A reviewer's store with a read-only array folder (a non-root user): --overwrite moved
    the store aside, deleted 33 of its 55 entries and stopped, leaving no store. The tree is
    now checked first: one line naming the folder, and the old store complete as it was.
    (Root may delete anything, so the permission is simulated.)"""
    from specfit.store import is_complete

    cfg = tiny_config(tmp_path)
    results = tmp_path / "results.zarr"
    run(cfg)
    before = snapshot(results)
    locked = str(results / "m1_index")
    real = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode, **kw: str(p) != locked and real(p, mode, **kw)
    )
    with pytest.raises(StoreError, match=r"cannot replace .*m1_index is not writable.*nothing was"):
        run(cfg, overwrite=True)
    assert snapshot(results) == before and is_complete(results)


def test_a_full_disk_while_marking_the_work_folder_leaves_nothing(tmp_path, monkeypatch):
    """A full disk at the work folder's marker left the folder with an empty temporary marker,
    which every later run (--overwrite too) refused as "not made by specfit"."""
    import errno

    from specfit.workspace import ensure_work_dir

    real = Path.write_text

    def full(self, *args, **kwargs):
        if "specfit-work" in self.name:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *args, **kwargs)

    results = tmp_path / "out" / "results.zarr"
    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(ConfigError, match=r"No space left on device\); free space on that disk"):
        ensure_work_dir(results)
    assert not work_dir_for(results).exists()
    monkeypatch.undo()
    assert ensure_work_dir(results).is_dir()  # the next run goes on
    # a folder holding only another run's temporary marker (that run marking it at this
    # moment: two runs started together, CI) is specfit's, not "not made by specfit"
    other = tmp_path / "two" / "results.zarr"
    work = work_dir_for(other)
    work.mkdir(parents=True)
    (work / ".specfit-work.json.12345").write_text("{}")
    assert ensure_work_dir(other) == work and (work / "specfit-work.json").is_file()
    (work / "specfit-work.json").unlink()
    (work / "mine.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not made by specfit"):
        ensure_work_dir(other)


def test_the_rest_of_an_interrupted_replacement_is_deleted_by_the_next_run(tmp_path):
    """Ctrl-C while --overwrite deleted the old store (renamed .results.zarr.specfit-removing-
    HOST-PID) left it hidden at full size for good; the next run on that output deletes it,
    also one with this process's pid (an earlier process's: pid 1 in every container run, or
    the rename onto it failed), and leaves a live process's (its deletion going on), another
    host's and anything else alone."""
    import socket

    from specfit.workspace import REMOVING_MARKER, ensure_work_dir, remove_specfit_tree

    host = socket.gethostname()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], text=True,
                          capture_output=True, check=True).stdout.strip()  # fmt: skip
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        name = ".results.zarr.specfit-removing-"
        left = [tmp_path / f"{name}{dead}", tmp_path / f"{name}{host}-{dead}"]
        left.append(tmp_path / f"{name}{host}-{os.getpid()}")
        kept = [tmp_path / f"{name}{host}-{alive.pid}", tmp_path / f"{name}elsewhere-{dead}"]
        other = tmp_path / f".other.zarr.specfit-removing-{host}-{os.getpid()}"
        # a folder of that name that specfit did not mark is the user's (a probe's finding:
        # one holding a thesis was deleted), as is one of an older version's interrupted
        # deletion (left, with a warning)
        users = tmp_path / f"{name}{host}-{dead}0"
        for p in (*left, *kept, other, users):
            (p / "m1_index").mkdir(parents=True)
            if p is not users:
                (p / REMOVING_MARKER).write_text("")
        (users / "thesis.txt").write_text("mine")
        ensure_work_dir(tmp_path / "results.zarr")
        assert [p.exists() for p in left] == [False] * 3
        assert all(p.exists() for p in kept) and other.exists()
        assert (users / "thesis.txt").read_text() == "mine"
        (tmp_path / "other.zarr").mkdir()
        remove_specfit_tree(tmp_path / "other.zarr")  # its rename target was in the way
        assert not other.exists() and not (tmp_path / "other.zarr").exists()
    finally:
        alive.kill()


@pytest.mark.parametrize("source", ["file", "mapping"])
def test_the_same_input_through_a_link_is_the_same_run(tmp_path, frames, source):
    """input.path given as an absolute path through a symbolic link counted as another
    configuration and as changed input: a finished store was refused ("input.path: '/real'
    != '/link'", "the input changed") and a killed run could not be resumed, while a relative
    link was resolved (a helper's finding). Absolute paths are now freed of links too."""
    link = tmp_path / "frames_link"
    link.symlink_to(frames, target_is_directory=True)
    cfg = frames_config(tmp_path, frames)
    via = frames_config(tmp_path, frames)
    via["input"]["path"] = str(link)
    if source == "file":
        (tmp_path / "real.yaml").write_text(yaml.safe_dump(cfg))
        (tmp_path / "link.yaml").write_text(yaml.safe_dump(via))
        cfg, via = str(tmp_path / "real.yaml"), str(tmp_path / "link.yaml")
    first = run(cfg, cluster="synchronous")
    stamp = (tmp_path / "results.zarr" / "zarr.json").stat().st_mtime_ns
    again = run(via, cluster="synchronous", resume=True)  # refused before
    assert again.attrs["complete"] and first.attrs["config"] == again.attrs["config"]
    assert (tmp_path / "results.zarr" / "zarr.json").stat().st_mtime_ns == stamp  # not redone
    assert str(frames.resolve()) in again.attrs["config"]


def test_an_unset_or_missing_input_is_said_so_before_the_stores_config(tmp_path, frames):
    """On an existing finished store, an unset or mistyped input.path was reported as a
    config that differs from the store's ("input.path: '/real' != None", pass --overwrite),
    because the store was checked before the input (a helper's finding)."""
    from specfit.errors import InputError

    cfg = frames_config(tmp_path, frames)
    run(cfg, cluster="synchronous")
    for path, said in ((None, "input.path is not set"), (str(tmp_path / "nope"), "nope")):
        bad = frames_config(tmp_path, frames)
        bad["input"]["path"] = path
        with pytest.raises(InputError, match=said) as e:
            run(bad, cluster="synchronous")
        assert "--overwrite" not in str(e.value)


def test_a_work_folder_another_run_is_making_is_not_called_foreign(tmp_path):
    """Two runs started at the same moment, the second with --overwrite: it marked the first
    run's half-made work folder for deletion (REMOVING_MARKER) beside that run's temporary
    marker, and the first then refused the folder as 'not made by specfit' (ci35's flaky
    concurrency test); it then meets the other at the store's lock."""
    from specfit.errors import ConfigError
    from specfit.workspace import REMOVING_MARKER, WORK_MARKER, ensure_work_dir, work_dir_for

    results = tmp_path / "results.zarr"
    work = work_dir_for(results)
    work.mkdir()
    (work / f".{WORK_MARKER}.12345").write_text("")  # the first run's, half made
    (work / REMOVING_MARKER).write_text("")  # the second's mark, before its rename
    assert ensure_work_dir(results) == work and (work / WORK_MARKER).is_file()
    mine = tmp_path / "mine.zarr"
    work_dir_for(mine).mkdir()
    (work_dir_for(mine) / "notes.txt").write_text("mine")  # a user's folder: still refused
    with pytest.raises(ConfigError, match="was not made by specfit"):
        ensure_work_dir(mine)
