"""One writer per results store: a second run on the same output gets one line naming the
first (host, pid, start time), a crashed run's lock is taken over, and the store left behind
is always whole and consistent (its attrs' config is the config its values were made with)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from specfit.errors import StoreError
from specfit.store import StoreLock, finalise_store, open_results, run_key_int

# Two small configs on the same frames: B has other science settings and more variables.
A = {"fit": {"models": {"m1": "powerlaw_tail"}}}
B = {
    "spectra": {"window": "hann"},
    "fit": {"models": {"m1": "powerlaw_tail", "m2": "powerlaw_tail_lorentzian"}},
}


def config(frames: Path, results: Path, science: dict) -> dict:
    cfg = {
        "input": {"kind": "fits_series", "path": str(frames)},
        "resample": {"cadence": 12.0},
        "spectra": {"segments": 1, "window": "none", "detrend": "mean"},
        "output": {"path": str(results), "tile": 8},
        "cluster": {"kind": "synchronous"},
    }
    for k, v in science.items():
        cfg[k] = {**cfg.get(k, {}), **v}
    return cfg


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Frames, the two configs as files, and each config's reference maps (made in turn)."""
    from specfit.pipeline import run
    from specfit.synthetic import make_synthetic

    tmp = tmp_path_factory.mktemp("concurrency")
    frames = make_synthetic(tmp / "data", shape=(16, 16), n_frames=96, seed=7).frames
    refs = {}
    for name, science in (("A", A), ("B", B)):
        ds = run(config(frames, tmp / f"ref{name}.zarr", science))
        refs[ds.attrs["config_hash"]] = (name, ds.load())
    return frames, refs


def write_cfg(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def start(cfg_path: Path, *flags: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "specfit.cli", "run", str(cfg_path), *flags],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def assert_consistent(results: Path, refs: dict) -> str:
    """The store opens as complete, every tile was written under the store's own run key,
    and every map equals the reference run of the config its attrs name. Returns A or B."""
    ds = open_results(results)
    assert ds.attrs["complete"] is True
    name, ref = refs[ds.attrs["config_hash"]]
    assert set(ds.data_vars) == set(ref.data_vars)
    for v in ref.data_vars:
        if v != "tiles_run":
            np.testing.assert_array_equal(ds[v].values, ref[v].values, err_msg=v)
    keys = ds["tiles_run"].values
    assert (keys == run_key_int(ds.attrs["run_key"])).all()
    return name


def one_line_refusal(stderr: str) -> str:
    lines = [ln for ln in stderr.strip().splitlines() if ln.startswith("specfit: error:")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-3000:]
    return lines[0]


SLOW = pytest.mark.slow  # keeps the file's default run under a minute

# The second run: its config (A or B) and flags.
MODES = {
    "same": ("A", ()),
    "overwrite_changed": ("B", ("--overwrite",)),
    "changed": ("B", ()),
    "overwrite_same": ("A", ("--overwrite",)),
}


@pytest.mark.parametrize(
    ("mode", "offset"),
    [
        pytest.param("same", 0.0, marks=SLOW),
        ("same", 0.5),
        ("same", 2.0),
        pytest.param("same", 5.0, marks=SLOW),
        ("overwrite_changed", 0.0),
        ("overwrite_changed", 0.5),
        ("overwrite_changed", 2.0),
        pytest.param("overwrite_changed", 5.0, marks=SLOW),
        pytest.param("changed", 0.5, marks=SLOW),
        pytest.param("overwrite_same", 2.0, marks=SLOW),
    ],
)
@pytest.mark.timeout(180)
def test_two_runs_on_one_output(world, tmp_path, offset, mode):
    """First run: config A. Second, ``offset`` s later: A or B (other science settings), with
    or without --overwrite. Exactly one writes at a time; the other gets one line; the store
    is whole and holds the config of the run that wrote it."""
    frames, refs = world
    results = tmp_path / "results.zarr"
    cfg1 = write_cfg(tmp_path / "a.yaml", config(frames, results, A))
    second, flags = MODES[mode]
    cfg2 = write_cfg(tmp_path / "b.yaml", config(frames, results, {"A": A, "B": B}[second]))
    p1 = start(cfg1)
    time.sleep(offset)
    p2 = start(cfg2, *flags)
    out1 = p1.communicate(timeout=150)[1]
    out2 = p2.communicate(timeout=150)[1]
    codes = (p1.returncode, p2.returncode)
    assert set(codes) <= {0, 2}, (codes, out1[-2000:], out2[-2000:])
    assert 0 in codes, (out1[-2000:], out2[-2000:])
    for code, err in zip(codes, (out1, out2), strict=True):
        if code == 2:
            line = one_line_refusal(err)
            assert (
                "is being written by another specfit run (host" in line
                or "already holds a finished run" in line
            ), line
            if "another specfit run" in line:
                assert f"host {socket.gethostname()}, pid " in line and "started 20" in line
    winner = assert_consistent(results, refs)
    if codes == (0, 2):
        assert winner == "A"
    elif codes == (2, 0):
        assert winner == second
    else:  # both wrote, one after the other: only --overwrite may replace a finished store
        assert "--overwrite" in flags and winner == second, (out1[-1500:], out2[-1500:])


def test_a_held_lock_is_named_and_overwrite_refuses(world, tmp_path, capsys):
    """While another run holds the lock (here: this test), `run`, `run --overwrite` and
    `run --resume` all refuse with one line naming it, and the finished store is untouched."""
    from specfit.cli import main
    from specfit.pipeline import run

    frames, refs = world
    results = tmp_path / "results.zarr"
    cfg = write_cfg(tmp_path / "a.yaml", config(frames, results, A))
    cfg_b = write_cfg(tmp_path / "b.yaml", config(frames, results, B))
    run(str(cfg))
    before = {p: p.read_bytes() for p in results.rglob("*") if p.is_file()}
    with StoreLock(results) as lock:
        for c, flags in ((cfg, []), (cfg_b, ["--overwrite"]), (cfg, ["--resume"])):
            capsys.readouterr()
            assert main(["run", str(c), *flags]) == 2
            line = one_line_refusal(capsys.readouterr().err)
            assert (
                f"is being written by another specfit run (host {socket.gethostname()}, "
                f"pid {os.getpid()}, started {lock.info['started']})" in line
            ), line
    assert {p: p.read_bytes() for p in results.rglob("*") if p.is_file()} == before
    assert assert_consistent(results, refs) == "A"


def test_a_crashed_runs_lock_is_taken_over_with_a_warning(tmp_path, caplog):
    """kill -9 of the holder: the OS frees the lock, its lock.json stays; the next run takes
    over and says whose lock it was."""
    results = tmp_path / "results.zarr"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from specfit.store import StoreLock; "
            f"lk = StoreLock({str(results)!r}).acquire(); print('held', flush=True); time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(StoreError, match=f"pid {holder.pid}"):
            StoreLock(results).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    info = json.loads((tmp_path / "results.zarr.specfit-work" / "lock.json").read_text())
    assert info["pid"] == holder.pid  # the crash left its record behind
    with caplog.at_level("WARNING", logger="specfit"), StoreLock(results) as lock:
        assert f"pid {holder.pid}" in caplog.text and "ended without finishing" in caplog.text
        assert json.loads(lock.info_path.read_text())["pid"] == os.getpid()
    assert not lock.info_path.exists()  # released cleanly: no record left


@pytest.mark.parametrize("crashed_record", [False, True])
def test_a_run_starting_as_the_holder_writes_its_record_names_the_holder(tmp_path, crashed_record):
    """The holder takes the OS lock, then writes lock.json (late here: 0.8 s). A run trying
    in between waits for the record and names the holder (it had said "host ?, pid ?" once
    in CI). With a crashed run's record still there, it waits past that one too and never
    takes the lock over (the OS lock proves the holder runs): before, it named the dead run
    or, after 0.5 s, unlinked the live holder's lock file and wrote beside it."""
    import threading

    import filelock

    results = tmp_path / "results.zarr"
    first = StoreLock(results)
    first.work.mkdir()
    (first.work / "specfit-work.json").write_text("{}")
    if crashed_record:
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        crashed = {"host": socket.gethostname(), "pid": dead.pid, "started": "crashed-run"}
        first.info_path.write_text(json.dumps(crashed))
    live = filelock.FileLock(str(first.lock_path))
    live.acquire()
    info = {"host": "elsewhere", "pid": 4242, "started": "2026-12-06T01:00:00+00:00"}
    late = threading.Timer(0.8, lambda: first.info_path.write_text(json.dumps(info)))
    late.start()
    try:
        with pytest.raises(StoreError, match="host elsewhere, pid 4242, started 2026-12-06"):
            StoreLock(results).acquire()
        assert first.lock_path.exists() and live.is_locked  # not taken over
    finally:
        late.join()
        live.release()
    first.info_path.unlink()
    with StoreLock(results) as lock:  # the holder gone: the lock is free again
        assert json.loads(lock.info_path.read_text())["pid"] == os.getpid()


def test_a_leftover_lock_of_a_dead_local_pid_is_taken_over(tmp_path, caplog, monkeypatch):
    """Where the lock is only the file's existence (no flock), a dead holder on this host
    would block forever: its lock is taken over with a warning."""
    import filelock

    results = tmp_path / "results.zarr"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    work = tmp_path / "results.zarr.specfit-work"
    work.mkdir()
    (work / "specfit-work.json").write_text("{}")
    (work / "lock.json").write_text(
        json.dumps({"host": socket.gethostname(), "pid": dead.pid, "started": "2026-01-01"})
    )
    (work / "lock").write_text("")
    # A soft lock (existence of the file), as filelock uses where flock is missing.
    monkeypatch.setattr(filelock, "FileLock", filelock.SoftFileLock)
    with caplog.at_level("WARNING", logger="specfit"), StoreLock(results):
        assert f"pid {dead.pid}" in caplog.text and "no longer exists" in caplog.text


def test_complete_only_when_every_tile_is_this_runs_and_every_variable_is_there(world, tmp_path):
    import shutil

    import zarr

    from specfit.pipeline import run

    frames, _ = world
    results = tmp_path / "results.zarr"
    run(config(frames, results, A))
    root = zarr.open_group(str(results), mode="r+")
    root.attrs["complete"] = False
    root["tiles_run"][1, 0] = 12345  # a tile written under another run's key
    with pytest.raises(StoreError, match="1 of 4 tiles were written by another run"):
        finalise_store(results)
    root["tiles_run"][1, 0] = run_key_int(root.attrs["run_key"])
    shutil.rmtree(results / "m1_tail")
    with pytest.raises(StoreError, match=r"variables missing \(m1_tail\)"):
        finalise_store(results)
    assert zarr.open_group(str(results), mode="r").attrs["complete"] is False


def test_a_shared_cube_path_is_locked_too(world, tmp_path, capsys):
    """Two stores may share an ``output.cube_path``; a run on the other store waits its turn
    instead of rewriting the cube under the first one's tiles."""
    from specfit.cli import main

    frames, _ = world
    cube = tmp_path / "shared_cube.zarr"
    cfg = config(frames, tmp_path / "other.zarr", A)
    cfg["output"]["cube_path"] = str(cube)
    path = write_cfg(tmp_path / "other.yaml", cfg)
    with StoreLock(cube, "output.cube_path "):
        assert main(["run", str(path)]) == 2
        line = one_line_refusal(capsys.readouterr().err)
        # (a run on another store may only read the cube: not "being written", as before)
        assert (
            f"output.cube_path {cube} is in use (written, or read for a fit) by another specfit "
            "run" in line
        )
    assert not (tmp_path / "other.zarr").exists() and not cube.exists()
    # nor the work folder the refused run made for its store (left behind before)
    assert not (tmp_path / "other.zarr.specfit-work").exists()
    assert main(["run", str(path)]) == 0  # free again
    assert (cube / "zarr.json").exists()


def test_runs_sharing_a_synthetic_input_folder_take_turns(tmp_path):
    """Two runs on their own stores but one synthetic input.path, with other input.synthetic
    settings: the second rewrote the frames while the first read them, which finished
    'complete' from the other seed's frames (and the second crashed in truth.zarr; the
    resume reviewer). A run now holds the folder for its whole duration; another is refused
    with one line. A refused run leaves no folder it made."""
    from conftest import tiny_config
    from specfit.pipeline import run
    from specfit.store import InputFolderLock

    cfg = tiny_config(tmp_path)
    shared = tmp_path / "shared_synthetic"
    cfg["input"]["path"] = str(shared)
    with InputFolderLock(shared):  # another run using the folder
        with pytest.raises(StoreError, match=r"input.path .*shared_synthetic is in use by"):
            run(cfg)
    assert not (tmp_path / "results.zarr").exists()
    assert not shared.exists()  # made only for the lock, removed again
    ds = run(cfg)  # free again: the run makes the frames and holds the folder meanwhile
    assert ds.attrs["complete"] and (shared / "frames").is_dir()
