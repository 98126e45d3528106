"""The cluster layer alone: every kind of cluster runs a small dask computation.

The MPI and external-scheduler tests start real processes (mpiexec, ``dask scheduler``,
``dask worker``) and always kill them, with timeouts, so that no test can hang CI.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest

from conftest import free_port
from conftest_cluster import external_dask
from specfit.cluster import (
    auto_tile,
    auto_time_chunk,
    cluster_config_from_flag,
    connect,
    dashboard_link,
    performance_report,
    progress,
    tile_cost,
    total_threads,
    worker_memory_bytes,
)
from specfit.config import ClusterConfig
from specfit.errors import ClusterError

GiB = 2**30


# --------------------------------------------------------------------------- sizing


def _peak(nt: int, t: int, nmodels: int) -> float:
    # The documented estimate: float64 series x (6 + 4 per model) copies.
    return nt * t * t * 8 * (6 + 4 * nmodels)


@pytest.mark.filterwarnings("ignore:a worker's memory:UserWarning")
@pytest.mark.parametrize("shape", [(4096, 4096), (1024, 1024), (164, 287), (256, 256)])
@pytest.mark.parametrize("nt", [100, 1200, 20000])
@pytest.mark.parametrize("mem_gib", [0.5, 4, 16])
@pytest.mark.parametrize("min_tasks", [1, 8])
def test_auto_tile_fits_memory_and_is_the_cheapest_cover(shape, nt, mem_gib, min_tasks):
    ny, nx = shape
    mem, nmodels = int(mem_gib * GiB), 2
    tile = auto_tile(ny, nx, nt, mem, nmodels, min_tasks=min_tasks)
    assert tile % 8 == 0 and 8 <= tile <= 256
    if tile > 8:
        assert _peak(nt, tile, nmodels) <= mem / 4
    # Brute force over every tile that fits in memory and gives enough tasks.
    ok = [
        t
        for t in range(8, 257, 8)
        if _peak(nt, t, nmodels) <= mem / 4 and math.ceil(ny / t) * math.ceil(nx / t) >= min_tasks
    ]
    if ok:
        assert tile in ok
        best = min(tile_cost(ny, nx, t) for t in ok)
        assert tile_cost(ny, nx, tile) == best
        assert tile == max(t for t in ok if tile_cost(ny, nx, t) == best)


def test_auto_tile_shrinks_with_more_frames_and_models():
    mem = 4 * GiB
    tiles = [auto_tile(4096, 4096, nt, mem, 2) for nt in (300, 1200, 4800, 19200)]
    assert tiles == sorted(tiles, reverse=True) and tiles[0] > tiles[-1]
    assert auto_tile(4096, 4096, 4800, mem, 1) >= auto_tile(4096, 4096, 4800, mem, 3)


def test_auto_tile_no_straggler_tiles_and_enough_tasks():
    # 128 px with memory for up to ~120 px: 2 x 2 tiles of 64, not 120 + thin slivers.
    assert auto_tile(128, 128, 300, 16 * GiB, 2, min_tasks=4) == 64
    # Never larger than the image (rounded up to a multiple of 8).
    assert auto_tile(20, 13, 100, 16 * GiB, 2) == 24
    # Enough tiles for every worker thread.
    tile = auto_tile(256, 256, 100, 16 * GiB, 2, min_tasks=8)
    assert math.ceil(256 / tile) ** 2 >= 8


def test_auto_tile_tiny_memory_warns_and_returns_8():
    with pytest.warns(UserWarning, match="memory_limit"):
        assert auto_tile(512, 512, 100_000, 64 * 2**20, 3) == 8


def test_auto_tile_rejects_bad_input():
    with pytest.raises(ValueError, match="positive"):
        auto_tile(0, 10, 10, GiB, 1)
    with pytest.raises(ValueError, match="worker_memory_bytes"):
        auto_tile(10, 10, 10, 0, 1)


@pytest.mark.parametrize("shape", [(164, 287), (1024, 1024), (4096, 4096)])
@pytest.mark.parametrize("mem_gib", [0.25, 2, 8])
def test_auto_time_chunk_keeps_a_rechunk_task_in_memory(shape, mem_gib):
    ny, nx = shape
    mem = int(mem_gib * GiB)
    frames = auto_time_chunk(ny, nx, mem)
    assert 1 <= frames <= 1024
    if frames > 1:
        assert 2 * frames * ny * nx * 4 <= mem / 4
    if frames < 1024:
        assert 2 * (frames + 1) * ny * nx * 4 > mem / 4
    assert auto_time_chunk(ny, nx, mem, nt=7) <= 7
    assert auto_time_chunk(ny, nx, mem, itemsize=8) <= frames
    # Aligned with an input chunked by 120 frames when at least one such chunk fits.
    aligned = auto_time_chunk(ny, nx, mem, source_chunk=120)
    if frames >= 120:
        assert aligned % 120 == 0 and frames - 120 < aligned <= frames
    else:
        assert aligned == frames


# --------------------------------------------------------------------------- flags


def test_cluster_config_from_flag(tmp_path):
    base = ClusterConfig(n_workers=3, memory_limit="2GiB", interface="lo", report="r.html")
    for kind in ("local", "mpi", "synchronous"):
        cfg = cluster_config_from_flag(kind, base)
        assert cfg.kind == kind and cfg.address is None
        # The rest of the section is kept.
        assert (cfg.n_workers, cfg.memory_limit, cfg.interface, cfg.report) == (
            3,
            "2GiB",
            "lo",
            "r.html",
        )
    cfg = cluster_config_from_flag("tcp://10.1.2.3:8786", base)
    assert (cfg.kind, cfg.address) == ("address", "tcp://10.1.2.3:8786")
    sched = tmp_path / "scheduler.json"
    sched.write_text("{}")
    cfg = cluster_config_from_flag(str(sched))
    assert (cfg.kind, cfg.address) == ("address", str(sched.resolve()))
    with pytest.raises(ClusterError, match="does not exist"):
        cluster_config_from_flag(str(tmp_path / "missing.json"))
    with pytest.raises(ClusterError, match="expected local, mpi"):
        cluster_config_from_flag("lcoal")


# --------------------------------------------------------------------------- synchronous


def test_synchronous_runs_in_this_thread_and_yields_none():
    x = np.arange(10_000, dtype=float).reshape(100, 100)
    with connect(ClusterConfig(kind="synchronous")) as client:
        assert client is None
        assert dask.config.get("scheduler") == "synchronous"
        assert dashboard_link(client) is None
        assert total_threads(client) == 1
        assert worker_memory_bytes(client) > 0
        got = (da.from_array(x, chunks=30) ** 2).sum(axis=0).compute()
        items = list(progress(iter(range(5)), total=5, desc="sync"))
    np.testing.assert_allclose(got, (x**2).sum(axis=0))
    assert items == [0, 1, 2, 3, 4]
    assert dask.config.get("scheduler", None) != "synchronous"


def test_dashboard_link_names_the_host_the_dashboard_listens_on():
    """Under MPI without cluster.interface dask's link carries the node's network address
    while the dashboard listens on cluster.dashboard_address's host (127.0.0.1 by default):
    the printed link must be the one that answers, with the port actually taken."""
    from types import SimpleNamespace

    scheduler = SimpleNamespace(address="tcp://192.0.2.2:40123")
    mpi = SimpleNamespace(dashboard_link="http://192.0.2.2:8790/status", scheduler=scheduler)
    assert dashboard_link(mpi, "127.0.0.1:8787") == "http://127.0.0.1:8790/status"
    assert dashboard_link(mpi, "::1:8787") == "http://[::1]:8790/status"
    for every_interface in (":8787", "0.0.0.0:8787", None):
        assert dashboard_link(mpi, every_interface) == mpi.dashboard_link
    # a link from dask's config (distributed.dashboard.link, e.g. a JupyterHub proxy) as given
    proxy = SimpleNamespace(
        dashboard_link="http://login01:8000/user/a/proxy/8787/status", scheduler=scheduler
    )
    assert dashboard_link(proxy, "127.0.0.1:8787") == proxy.dashboard_link
    assert (
        dashboard_link(SimpleNamespace(dashboard_link="", scheduler=scheduler), "127.0.0.1:8787")
        is None
    )


def test_a_dashboard_port_in_use_is_replaced_without_distributeds_warning():
    """The link printed at start names the port taken instead; distributed's multi-line
    'Port ... is already in use' warning is not shown as well."""
    import socket
    import warnings

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = ClusterConfig(
            n_workers=1, threads_per_worker=1, dashboard_address=f"127.0.0.1:{port}"
        )
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            with connect(cfg) as client:
                link = dashboard_link(client)
    assert link and f":{port}/" not in link
    assert not [w for w in seen if "already in use" in str(w.message)], [
        str(w.message) for w in seen
    ]


def test_dashboard_false_prints_no_link(capsys):
    """cluster.dashboard: false serves no dashboard pages, so no link is printed (one to the
    scheduler's bare HTTP endpoints was)."""
    with connect(ClusterConfig(n_workers=1, threads_per_worker=1, dashboard=False)):
        pass
    err = capsys.readouterr().err
    assert "local cluster: 1 workers" in err and "dashboard" not in err


def test_performance_report_none_is_a_no_op_and_sync_warns(tmp_path):
    with performance_report(None):
        pass
    with connect(ClusterConfig(kind="synchronous")):
        with pytest.warns(UserWarning, match="needs a dask cluster"):
            with performance_report(tmp_path / "r.html"):
                da.ones(10, chunks=5).sum().compute()
    assert not (tmp_path / "r.html").exists()


# --------------------------------------------------------------------------- local


def test_local_cluster_computes_reports_and_closes(tmp_path):
    rng = np.random.default_rng(42)
    x = rng.normal(size=(64, 64))
    cfg = ClusterConfig(n_workers=1, threads_per_worker=2, memory_limit="1GiB")
    report = tmp_path / "sub" / "report.html"
    with connect(cfg) as client:
        assert client is not None
        assert total_threads(client) == 2
        assert worker_memory_bytes(client) == GiB
        link = dashboard_link(client)
        assert link is None or link.startswith("http")
        with performance_report(report):
            got = da.from_array(x, chunks=16).rechunk((64, 8)).std(axis=0).compute()
        futures = client.map(np.square, [1, 2, 3, 4])
        done = list(progress(futures, desc="local"))
        results = sorted(int(f.result()) for f in done)
    np.testing.assert_allclose(got, x.std(axis=0), rtol=1e-12)
    assert results == [1, 4, 9, 16]
    assert {f.key for f in done} == {f.key for f in futures}
    assert report.exists() and "<html" in report.read_text()[:2000].lower()
    assert client.status == "closed"


@pytest.mark.parametrize(
    ("memory_limit", "n_workers", "fix"),
    [
        ("auto", 4, "fewer workers|more memory"),  # the machine's memory over the cores
        ("0.5", 1, "larger fraction"),  # a fraction of the machine's memory
        ("4GB", 1, "more memory"),  # more than the machine has: dask gives it all of it
    ],
)
def test_local_workers_with_too_little_memory_are_refused_before_a_cluster(
    monkeypatch, tmp_path, memory_limit, n_workers, fix
):
    """auto and fractions depend on the machine: checked, as the nannies will read them, before
    a run prepares its inputs (the config itself refuses bytes below the floor)."""
    import distributed
    from distributed import system

    from conftest import tiny_config
    from specfit.cluster import check_reachable, check_worker_memory
    from specfit.config import MIN_WORKER_MEMORY
    from specfit.errors import ConfigError
    from specfit.pipeline import run

    monkeypatch.setattr(system, "MEMORY_LIMIT", int(0.9 * MIN_WORKER_MEMORY))
    started = []
    monkeypatch.setattr(distributed, "LocalCluster", lambda *a, **k: started.append(k))
    cfg = ClusterConfig(memory_limit=memory_limit, n_workers=n_workers, threads_per_worker=1)
    for check in (check_worker_memory, check_reachable):
        with pytest.raises(ConfigError) as e:
            check(cfg)
        msg = str(e.value)
        assert f"cluster.memory_limit {memory_limit!r}" in msg and "per worker" in msg
        assert "1 GB" in msg and any(f in msg for f in fix.split("|"))
    with pytest.raises(ConfigError, match="cluster.memory_limit"):
        with connect(cfg):
            pass
    cluster = {"kind": "local", "memory_limit": memory_limit, "n_workers": n_workers}
    with pytest.raises(ConfigError, match="cluster.memory_limit"):
        run(tiny_config(tmp_path, cluster=cluster))
    assert not started and not (tmp_path / "results.zarr").exists()
    assert not (tmp_path / "synthetic").exists()  # refused before the inputs were made
    # other kinds of cluster are not this machine's workers; no limit is no limit
    check_worker_memory(cfg.model_copy(update={"kind": "synchronous"}))
    check_worker_memory(ClusterConfig(memory_limit="0"))


def test_local_workers_with_enough_memory_pass(monkeypatch):
    from distributed import system

    from specfit.cluster import check_worker_memory

    monkeypatch.setattr(system, "MEMORY_LIMIT", 4096 * GiB)
    check_worker_memory(ClusterConfig())  # auto: 4 TiB x threads / cores
    check_worker_memory(ClusterConfig(memory_limit="0.5"))
    check_worker_memory(ClusterConfig(memory_limit="1GB", n_workers=8))


# --------------------------------------------------------------------------- external scheduler


@pytest.fixture(scope="module")
def external_scheduler(tmp_path_factory):
    """A ``dask scheduler`` + one ``dask worker`` on 127.0.0.1, killed afterwards."""
    sched_file = tmp_path_factory.mktemp("sched") / "scheduler.json"
    with external_dask(sched_file, n_workers=1, memory_limit="1GiB") as (address, _):
        yield address, sched_file


@pytest.mark.timeout(180)
def test_address_and_scheduler_file_join_without_shutting_down(external_scheduler):
    address, sched_file = external_scheduler
    x = np.arange(1000.0)
    for flag in (address, str(sched_file)):
        cfg = cluster_config_from_flag(flag)
        with connect(cfg) as client:
            assert client.scheduler.address == address
            assert worker_memory_bytes(client) == GiB
            got = float((da.from_array(x, chunks=100) ** 2).sum().compute())
        assert got == float((x**2).sum())
    # connect() only disconnected: the scheduler still serves a new client.
    with connect(cluster_config_from_flag(address)) as client:
        assert client.submit(sum, [1, 2, 3]).result() == 6


@pytest.mark.timeout(180)
def test_a_scheduler_or_worker_with_other_specfit_code_is_refused(external_scheduler, monkeypatch):
    """The scheduler unpickles the task graph and the workers run the kernels: one without
    specfit failed with ~40 lines of 'Error during deserialization of the task graph', one
    with other code would change results without a word (cluster reviewer). Both are named
    when specfit connects."""
    import specfit.store

    address, _ = external_scheduler
    monkeypatch.setattr(specfit.store, "_CODE_SHA256", ["0123456789ab" + "0" * 52])
    with pytest.raises(ClusterError) as err:
        with connect(cluster_config_from_flag(address)):
            pass
    said = str(err.value)
    assert said.startswith(f"scheduler {address}: the scheduler runs specfit code ")
    assert (
        "; worker tcp://" in said and "this process runs specfit 0.1.0 (code 0123456789ab)" in said
    )
    assert "install this specfit on the scheduler and on every worker" in said
    monkeypatch.undo()
    with connect(cluster_config_from_flag(address)) as client:  # the same code: joins
        assert client.submit(sum, [1, 2]).result() == 3


def test_unreachable_address_is_a_clear_error():
    port = free_port()  # nothing listens there
    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
        with pytest.raises(ClusterError, match="cannot reach the dask scheduler"):
            with connect(ClusterConfig(kind="address", address=f"tcp://127.0.0.1:{port}")):
                pass


def test_a_port_that_is_no_dask_scheduler_is_a_clear_error_not_a_hang(monkeypatch):
    """A port that accepts connections and says nothing (the dashboard's 8787 given by
    mistake, another service) kept distributed's Client waiting without limit (the helper's
    finding): it is now a one-line error after the connect timeout and a grace period."""
    import socket
    import threading
    import time

    import specfit.cluster as cl

    monkeypatch.setattr(cl, "_HANDSHAKE_GRACE_S", 2.0)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    port = server.getsockname()[1]
    held, stop = [], threading.Event()

    def accept() -> None:  # accept and never answer
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                pass

    threading.Thread(target=accept, daemon=True).start()
    before = dask.config.get("scheduler", None)
    t0 = time.perf_counter()
    try:
        with pytest.raises(ClusterError, match="did not answer as a dask scheduler.*8786"):
            with connect(ClusterConfig(kind="address", address=f"tcp://127.0.0.1:{port}")):
                pass
    finally:
        stop.set()
        server.close()
        for c in held:
            c.close()
    assert time.perf_counter() - t0 < cl.SCHEDULER_CONNECT_TIMEOUT + 2.0 + 5.0
    assert dask.config.get("scheduler", None) == before  # no half-made client left as default


def test_a_service_that_talks_another_protocol_is_named_without_its_bytes(monkeypatch):
    """A port whose service answers in another protocol (an SSH banner): distributed read its
    bytes as a frame length and the message quoted 'Unable to allocate 3.07 EiB' (cluster
    reviewer); the error names the address and the fix only."""
    import socket
    import threading

    import specfit.cluster as cl

    monkeypatch.setattr(cl, "_HANDSHAKE_GRACE_S", 2.0)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    port = server.getsockname()[1]

    def banner() -> None:
        while True:
            try:
                conn, _ = server.accept()
                conn.sendall(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n" * 4)
            except OSError:
                return

    threading.Thread(target=banner, daemon=True).start()
    scheduler_before = dask.config.get("scheduler", None)
    try:
        with pytest.raises(ClusterError) as err:
            with connect(ClusterConfig(kind="address", address=f"tcp://127.0.0.1:{port}")):
                pass
    finally:
        server.close()
    said = str(err.value)
    assert f"127.0.0.1:{port} accepts connections but did not answer as a dask" in said
    assert "allocate" not in said and "8787 is its dashboard" in said
    # the failed Client stayed dask's default scheduler: every later computation of the
    # process waited on it (CI hung in the next module's tests)
    assert dask.config.get("scheduler", None) == scheduler_before
    assert float(da.ones(4, chunks=2).sum().compute()) == 4.0


def test_check_reachable_fails_fast_before_any_input_is_read(tmp_path):
    import json
    import time

    from specfit.cluster import check_reachable

    address = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    sched = tmp_path / "scheduler.json"
    sched.write_text(json.dumps({"address": address}))
    t0 = time.perf_counter()
    for where in (address, str(sched)):
        with pytest.raises(ClusterError, match=f"cannot reach the dask scheduler at {address}"):
            check_reachable(ClusterConfig(kind="address", address=where))
    assert time.perf_counter() - t0 < 10
    sched.write_text("not json")
    with pytest.raises(ClusterError, match="not a readable scheduler JSON file"):
        check_reachable(ClusterConfig(kind="address", address=str(sched)))
    for kind in ("local", "synchronous", "mpi"):  # nothing to reach for these
        check_reachable(ClusterConfig(kind=kind))


# --------------------------------------------------------------------------- MPI

MPI_SCRIPT = textwrap.dedent(
    """
    import os
    import sys
    import dask.array as da
    import numpy as np
    from specfit.cluster import connect, start_mpi
    from specfit.config import ClusterConfig

    mode = sys.argv[1]
    cfg = ClusterConfig(kind="mpi", interface="lo", dashboard=False)
    if mode.startswith("early"):
        start_mpi(cfg)
        # Only the client rank gets here: a file created exclusively proves it.
        fd = os.open(sys.argv[2], os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        os.write(fd, b"rank 1")
        os.close(fd)
        if mode == "early-fail":
            raise RuntimeError("check failed before connect")
    with connect(cfg) as client:
        x = np.random.default_rng(1).normal(size=(50, 40))
        got = da.from_array(x, chunks=10).sum(axis=0).compute()
        ok = np.allclose(got, x.sum(axis=0))
        print("CLIENT", ok, len(client.scheduler_info()["workers"]), flush=True)
        if mode == "fail":
            raise RuntimeError("client failed on purpose")
    # Only the client rank may get here.
    print("AFTER", flush=True)
    """
)


def _mpiexec(tmp_path: Path, n: int, mode: str, *extra: str) -> subprocess.CompletedProcess:
    mpiexec = shutil.which("mpiexec")
    if mpiexec is None:
        pytest.skip("mpiexec not found (pip install mpich)")
    script = tmp_path / "mpi_connect.py"
    script.write_text(MPI_SCRIPT)
    proc = subprocess.Popen(
        [mpiexec, "-n", str(n), sys.executable, str(script), mode, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"mpiexec -n {n} hung for 120 s:\n{out}\n{err[-3000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.mpi
@pytest.mark.timeout(300)
def test_mpi_four_ranks_compute_and_only_the_client_continues(tmp_path):
    res = _mpiexec(tmp_path, 4, "ok")
    assert res.returncode == 0, res.stderr[-3000:]
    # Rank 1 computed correctly with 2 worker ranks; no other rank ran the code after connect.
    assert res.stdout.count("CLIENT True 2") == 1, res.stdout
    assert res.stdout.count("AFTER") == 1, res.stdout


@pytest.mark.mpi
@pytest.mark.timeout(300)
def test_mpi_client_error_closes_every_rank(tmp_path):
    res = _mpiexec(tmp_path, 3, "fail")
    assert res.returncode != 0
    assert "client failed on purpose" in res.stderr
    assert "AFTER" not in res.stdout


@pytest.mark.mpi
@pytest.mark.timeout(300)
def test_mpi_too_few_ranks_says_how_many(tmp_path):
    res = _mpiexec(tmp_path, 2, "ok")
    assert res.returncode != 0
    assert "needs at least 3 MPI ranks" in res.stderr


@pytest.mark.mpi
@pytest.mark.timeout(300)
def test_mpi_start_early_runs_the_code_before_connect_on_rank_1_only(tmp_path):
    marker = tmp_path / "only-once"
    res = _mpiexec(tmp_path, 4, "early", str(marker))
    # A second rank creating the marker would fail with FileExistsError.
    assert res.returncode == 0, res.stderr[-3000:]
    assert marker.read_text() == "rank 1"
    assert res.stdout.count("CLIENT True 2") == 1 and res.stdout.count("AFTER") == 1


@pytest.mark.mpi
@pytest.mark.timeout(300)
def test_mpi_error_between_start_and_connect_still_closes_every_rank(tmp_path):
    marker = tmp_path / "only-once"
    res = _mpiexec(tmp_path, 3, "early-fail", str(marker))
    assert res.returncode != 0
    assert "check failed before connect" in res.stderr
    assert "CLIENT" not in res.stdout


def test_a_script_reimported_by_a_worker_is_told_to_use_a_main_guard():
    """A local cluster's spawned workers import the user's script again: a top-level
    specfit.run there gets the fix (the __main__ guard), not the store lock's message."""
    from specfit.cluster import refuse_in_worker_start
    from specfit.errors import ClusterError

    code = compile("from specfit.cluster import refuse_in_worker_start as r\nr()\n", "s.py", "exec")
    with pytest.raises(ClusterError, match='if __name__ == "__main__":'):
        exec(code, {"__name__": "__mp_main__"})
    exec(code, {"__name__": "__main__"})  # the script itself, run by the user: fine

    # a function of the script that a worker calls later (not while importing it): fine
    script = {"__name__": "__mp_main__", "r": refuse_in_worker_start}
    exec(compile("def task():\n    r()\n", "s.py", "exec"), script)
    script["task"]()


def test_an_mpi_server_rank_whose_client_never_closes_leaves_after_its_grace():
    """A scheduler or worker rank waits for the client's close after SIGTERM/SIGINT, but not
    for ever: with the client gone the signal ends it once its grace period has passed
    (here shortened to 0.5 s), quietly."""
    import time

    script = textwrap.dedent(
        """
        import os, signal, time
        import specfit.cluster as cluster
        cluster._SERVER_GRACE_S = 0.5
        cluster._leave_on_the_clients_close()
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.2)
        print("still serving", flush=True)  # the signal alone does not stop the rank
        time.sleep(30)
        print("not reached", flush=True)
        """
    )
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    waited = time.monotonic() - t0
    assert res.returncode == -signal.SIGTERM, res.stderr  # ended by the signal itself
    assert res.stdout == "still serving\n" and res.stderr == ""
    assert waited < 25


def test_a_local_workers_filter_drops_only_the_expected_shutdown_and_input_noise():
    """A local worker keeps its real errors; it drops the heartbeat failure that a client
    closing the cluster causes (it printed a traceback before the resume line after SIGTERM,
    once in CI) and the duplicate traceback of a bad input file."""
    import logging

    from specfit.cluster import _DropWorkerNoise

    def record(msg: str) -> logging.LogRecord:
        return logging.LogRecord("distributed.worker", logging.ERROR, "w.py", 1, msg, None, None)

    keep = _DropWorkerNoise().filter
    assert not keep(record("Failed to communicate with scheduler during heartbeat."))
    assert not keep(record("Compute Failed ... InputError('frame 3 unreadable')"))
    assert keep(record("Worker stream died during communication: tcp://127.0.0.1:1"))
    assert keep(record("Compute Failed ... ValueError('bad')"))


def test_auto_memory_shares_the_machine_between_more_workers_than_cores():
    """dask's 'auto' gives each worker the machine's memory x min(1, threads / cores): with
    40 workers on 2 cores and 23.5 GiB each was promised 11.8 GiB, and the 1 GB floor could not
    trigger (the helper's finding). A local cluster's 'auto' is now at most the machine's
    memory over the workers, and too many workers for it are refused before any start."""
    from distributed import system

    from specfit.cluster import _memory_limit, check_worker_memory
    from specfit.errors import ConfigError

    total = system.MEMORY_LIMIT
    many = int(total // 0.9e9) + 1  # below 1 GB each
    for n in (1, 2, many):
        limit = _memory_limit(ClusterConfig(kind="local", n_workers=n), n)
        assert isinstance(limit, int) and limit <= total // n
    with pytest.raises(ConfigError, match=f"'auto' with {many} worker"):
        check_worker_memory(ClusterConfig(kind="local", n_workers=many))
    check_worker_memory(ClusterConfig(kind="local", n_workers=2))
    assert _memory_limit(ClusterConfig(kind="local", memory_limit="2GB"), 4) == "2GB"


def test_local_layout_defaults_are_the_documented_ones(monkeypatch):
    """docs/cluster.md said threads_per_worker defaults to 1 (2 above 4 cores) while a set
    n_workers shares the cores between them (a helper's finding: 1 worker on 2 cores ran 2
    threads); the docs now say so, and this checks the rule they state."""
    from specfit import cluster
    from specfit.config import ClusterConfig

    for cores, n_workers, threads, expected in [
        (2, None, None, (2, 1)),
        (4, None, None, (4, 1)),
        (16, None, None, (8, 2)),
        (2, 1, None, (1, 2)),
        (16, 2, None, (2, 8)),
        (16, None, 4, (4, 4)),
        (2, 3, 1, (3, 1)),
    ]:
        monkeypatch.setattr(cluster, "_cpu_count", lambda c=cores: c)
        cfg = ClusterConfig(n_workers=n_workers, threads_per_worker=threads)
        assert cluster._local_layout(cfg) == expected, (cores, n_workers, threads)
    text = (Path(__file__).resolve().parents[1] / "docs" / "cluster.md").read_text()
    assert "cores / n_workers if n_workers is set, else 1, 2 above 4 cores" in text
