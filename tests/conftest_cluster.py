"""Helpers for the whole-run cluster tests (MPI, external scheduler, kill and resume).

One small synthetic run is computed once per test session with the synchronous scheduler
(the reference); the other tests run the same science config on other clusters, or kill and
resume it, and compare every result variable with the reference.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from conftest import free_port

# Big enough for several tiles per worker (so a run can be killed half way), small enough
# that one run takes seconds on 2 shared cores.
SHAPE = (32, 40)
N_FRAMES = 240
TILE = 8

_CACHE: dict[str, Path] = {}


def pipeline_config(data_dir: Path, results: Path, **sections: dict) -> dict:
    """A small synthetic run: frames in ``data_dir`` (shared by all runs), results anywhere."""
    cfg = {
        "input": {
            "kind": "synthetic",
            "path": str(data_dir),
            "synthetic": {"shape": list(SHAPE), "n_frames": N_FRAMES, "cadence": 12.0, "seed": 5},
        },
        # a 3 px box: tiles read a halo, so a tiling-dependent sum would show here
        "spectra": {"segments": 1, "window": "hann", "detrend": "linear", "box": 3},
        "fit": {"models": {"m1": "powerlaw_tail", "m2": "powerlaw_tail_lorentzian"}},
        "output": {"path": str(results), "tile": TILE},
        "cluster": {"kind": "local", "n_workers": 2, "threads_per_worker": 1, "dashboard": False},
    }
    for name, values in sections.items():
        cfg.setdefault(name, {}).update(values)
    return cfg


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def reference_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(synthetic data folder, reference results.zarr), computed once per session."""
    if "ref" not in _CACHE:
        from specfit.pipeline import run

        base = tmp_path_factory.mktemp("cluster_ref")
        data_dir = base / "synthetic"
        results = base / "reference.zarr"
        run(pipeline_config(data_dir, results), cluster="synchronous")
        _CACHE["ref"] = base
    base = _CACHE["ref"]
    return base / "synthetic", base / "reference.zarr"


def assert_same_results(got: Path, want: Path, ignore: tuple[str, ...] = ()) -> None:
    """Every variable of two results stores is identical (NaN where NaN), except ``ignore``
    (e.g. ``tiles_done``, ``tiles_run``: the bookkeeping of another tiling)."""
    from specfit.store import differing_variables

    assert differing_variables(got, want, ignore) == []


def cli(args: list[str], timeout: float, launcher: list[str] | None = None, **kw):
    """Run ``specfit ARGS`` in its own process group; on timeout kill the group and fail."""
    cmd = [*(launcher or []), sys.executable, "-m", "specfit.cli", *args]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        **kw,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        out, err = proc.communicate()
        pytest.fail(f"{' '.join(cmd)} did not finish in {timeout} s:\n{out}\n{err[-4000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL a process started with ``start_new_session=True`` and all its children."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


@contextlib.contextmanager
def external_dask(
    sched_file: Path, n_workers: int, memory_limit: str
) -> Iterator[tuple[str, list[subprocess.Popen]]]:
    """A ``dask scheduler`` and ``dask worker`` started as separate processes on 127.0.0.1
    (as dask-jobqueue or a Kubernetes cluster would give); yields ``(address, procs)`` once
    the scheduler file exists, and kills both afterwards. Skips when ``dask`` is not on PATH."""
    if shutil.which("dask") is None:
        pytest.skip("the `dask` command is not on PATH")
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs: list[subprocess.Popen] = []
    quiet = dict(start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        procs.append(
            subprocess.Popen(
                ["dask", "scheduler", "--host", "127.0.0.1", "--port", str(port),
                 "--no-dashboard", "--scheduler-file", str(sched_file)],
                **quiet,
            )
        )  # fmt: skip
        procs.append(
            subprocess.Popen(
                ["dask", "worker", address, "--nworkers", str(n_workers), "--nthreads", "1",
                 "--memory-limit", memory_limit, "--no-dashboard"],
                **quiet,
            )
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while not sched_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert sched_file.exists(), "dask scheduler did not start within 60 s"
        yield address, procs
    finally:
        for p in procs:
            kill_group(p)
