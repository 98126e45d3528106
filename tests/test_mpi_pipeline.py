"""The whole run on other clusters gives the same numbers as the synchronous reference.

- ``mpiexec -n 4 specfit run CONFIG --cluster mpi`` (dask-mpi on the loopback interface);
- ``specfit run CONFIG --cluster tcp://127.0.0.1:PORT`` joining a scheduler and a worker that
  the test starts (and kills) itself;
- ``--cluster path/to/scheduler.json``, the same scheduler through its file.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import pytest

from conftest_cluster import (
    assert_same_results,
    cli,
    kill_group,
    pipeline_config,
    reference_run,
    write_config,
)


@pytest.mark.mpi
@pytest.mark.slow
@pytest.mark.timeout(400)
def test_mpiexec_run_equals_reference(tmp_path, tmp_path_factory):
    mpiexec = shutil.which("mpiexec")
    if mpiexec is None:
        pytest.skip("mpiexec not found (pip install mpich)")
    data_dir, reference = reference_run(tmp_path_factory)
    results = tmp_path / "mpi.zarr"
    config = write_config(tmp_path / "mpi.yaml", pipeline_config(data_dir, results))
    res = cli(
        ["run", str(config), "--cluster", "mpi", "--set", "cluster.interface=lo"],
        timeout=300,
        launcher=[mpiexec, "-n", "4"],
    )
    assert res.returncode == 0, res.stderr[-4000:]
    assert "MPI cluster (4 ranks): 2 workers" in res.stderr
    assert_same_results(results, reference)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_run_joins_an_existing_scheduler(tmp_path, tmp_path_factory):
    if shutil.which("dask") is None:
        pytest.skip("the `dask` command is not on PATH")
    data_dir, reference = reference_run(tmp_path_factory)
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    sched_file = tmp_path / "scheduler.json"
    procs = []
    try:
        procs.append(
            subprocess.Popen(
                ["dask", "scheduler", "--host", "127.0.0.1", "--port", str(port),
                 "--no-dashboard", "--scheduler-file", str(sched_file)],
                start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        )  # fmt: skip
        procs.append(
            subprocess.Popen(
                ["dask", "worker", address, "--nworkers", "2", "--nthreads", "1",
                 "--memory-limit", "2GiB", "--no-dashboard"],
                start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while not sched_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert sched_file.exists(), "dask scheduler did not start within 60 s"

        for flag, name in ((address, "tcp.zarr"), (str(sched_file), "file.zarr")):
            results = tmp_path / name
            config = write_config(tmp_path / "tcp.yaml", pipeline_config(data_dir, results))
            res = cli(["run", str(config), "--cluster", flag], timeout=300)
            assert res.returncode == 0, res.stderr[-4000:]
            assert f"scheduler {address}" in res.stderr
            assert_same_results(results, reference)
        # specfit only disconnected: the scheduler and its workers are still up.
        assert all(p.poll() is None for p in procs)
    finally:
        for p in procs:
            kill_group(p)
