"""Where the work runs: the one module that knows about LocalCluster, dask-mpi and addresses.

Four kinds of cluster, chosen by ``cluster.kind`` in the config or ``--cluster`` on the
command line (see :func:`cluster_config_from_flag`):

``local``
    A :class:`distributed.LocalCluster` of worker processes on this machine (the default).
``mpi``
    ``mpiexec -n N specfit run CONFIG --cluster mpi`` with N >= 3: through dask-mpi, MPI
    rank 0 runs the scheduler, rank 1 runs the pipeline (the client) and ranks >= 2 are
    workers. Only rank 1 ever returns from :func:`start_mpi` (called early) or
    :func:`connect`; the other ranks serve until the client shuts the cluster down and then
    leave the process.
``address``
    An existing scheduler: ``tcp://host:port`` or a scheduler JSON file written by
    ``dask scheduler --scheduler-file``. specfit never shuts such a scheduler down.
``synchronous``
    No cluster at all: dask's single-threaded scheduler, for debugging with pdb.

The sizing helpers :func:`auto_tile` and :func:`auto_time_chunk` turn a worker's memory into
chunk sizes; :func:`progress` draws a progress bar on any kind of cluster.
"""

from __future__ import annotations

import atexit
import contextlib
import inspect
import logging
import math
import os
import sys
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import dask

from specfit.config import MIN_WORKER_MEMORY, ClusterConfig, worker_memory_too_small
from specfit.errors import ClusterError, ConfigError

__all__ = [
    "connect",
    "check_reachable",
    "check_worker_memory",
    "start_mpi",
    "dashboard_link",
    "scheduler_host",
    "performance_report",
    "auto_tile",
    "auto_time_chunk",
    "tile_cost",
    "cluster_config_from_flag",
    "progress",
    "quiet_interrupted_cluster",
    "worker_memory_bytes",
    "total_threads",
    "MIN_MPI_RANKS",
]

# Scheduler + client + at least one worker.
MIN_MPI_RANKS = 3

# Seconds to wait for the first worker before giving up with a clear message instead of
# hanging forever (an MPI job whose worker ranks died, a scheduler with no workers).
WORKER_WAIT_TIMEOUT = 120.0

# Seconds to wait for a scheduler to answer a connection. A running scheduler answers in
# milliseconds, even across a cluster's network; dask's default (30 s, with retries) only
# delays the message that the address is wrong or the scheduler is down.
SCHEDULER_CONNECT_TIMEOUT = 5.0

_ADDRESS_SCHEMES = ("tcp://", "tls://", "ucx://", "inproc://", "ws://", "wss://")


# ---------------------------------------------------------------------------------------------
# Sizing
# ---------------------------------------------------------------------------------------------


def _cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _system_memory() -> int:
    import psutil

    return int(psutil.virtual_memory().total)


def _local_layout(cfg: ClusterConfig) -> tuple[int, int]:
    """Workers and threads per worker for a LocalCluster.

    The kernels are numpy/numba code that holds the GIL for part of each task, so processes
    scale better than threads; one or two threads per worker keeps memory per task predictable.
    """
    ncpu = _cpu_count()
    threads = cfg.threads_per_worker
    workers = cfg.n_workers
    if threads is None and workers is None:
        threads = 1 if ncpu <= 4 else 2
        workers = max(1, ncpu // threads)
    elif threads is None:
        threads = max(1, ncpu // workers)
    elif workers is None:
        workers = max(1, ncpu // threads)
    return int(workers), int(threads)


def _memory_limit(cfg: ClusterConfig, workers: int | None = None) -> str | int:
    """None and "auto" both mean: share this machine's memory between the workers. dask's
    own "auto" gives each worker the machine's memory times min(1, threads / cores), which
    with more workers than cores promises more than the machine has (40 workers on 2 cores
    and 23.5 GiB: 11.8 GiB each); for a local cluster of ``workers`` it is at most the
    machine's memory over their number."""
    limit = cfg.memory_limit or "auto"
    if limit != "auto" or not workers:
        return limit
    from distributed import system

    share = int(system.MEMORY_LIMIT // workers)
    return min(_worker_bytes("auto", _local_layout(cfg)[1]) or share, share)


def _worker_bytes(limit: str | int, threads: int) -> int | None:
    """A worker's memory limit in bytes as dask's nanny reads it (None: no limit), without
    the warnings parse_memory_limit logs (the nanny's to give)."""
    from distributed.worker_memory import parse_memory_limit

    quiet = logging.Logger("specfit.cluster.memory")
    quiet.addHandler(logging.NullHandler())
    return parse_memory_limit(limit, threads, logger=quiet)


def check_worker_memory(cfg: ClusterConfig) -> None:
    """Refuse a local cluster whose workers would each get less than the memory they need.

    The config refuses a ``cluster.memory_limit`` in bytes below
    :data:`specfit.config.MIN_WORKER_MEMORY`; ``auto`` and a fraction depend on the machine,
    and are checked here, as the local cluster's nannies will read them (this machine's
    memory, or its cgroup's limit, times ``min(1, threads per worker / cores)`` for ``auto``).
    Below the floor dask pauses a worker as soon as it has imported specfit's kernels and the
    run hangs. A no-op for other kinds of cluster (their workers run on other machines or
    exist already).

    Parameters
    ----------
    cfg
        The ``cluster`` section of the config.

    Raises
    ------
    ConfigError
        Naming ``cluster.memory_limit``, the memory per worker, the floor and the fix.
    """
    from distributed import system

    if cfg.kind != "local":
        return
    workers, threads = _local_layout(cfg)
    size = _worker_bytes(_memory_limit(cfg, workers), threads)
    if size is None or size >= MIN_WORKER_MEMORY:
        return  # no limit, or enough
    given = cfg.memory_limit or "auto"
    what = f"cluster.memory_limit {given!r} with {workers} worker(s) on this machine"
    if size >= system.MEMORY_LIMIT:  # dask gives a worker at most the machine's memory
        fix = "run on a machine (or in a container) with more memory"
    elif given == "auto":
        fix = "use fewer workers (cluster.n_workers=1) or set cluster.memory_limit, e.g. 2GB"
    else:
        fix = (
            f"give at least {MIN_WORKER_MEMORY / 1e9:g}GB, e.g. 4GB, or a larger fraction of "
            "the machine's memory"
        )
    raise ConfigError(worker_memory_too_small(what, size, fix))


def auto_tile(
    ny: int,
    nx: int,
    nt: int,
    worker_memory_bytes: int,
    nmodels: int,
    *,
    min_tasks: int = 1,
) -> int:
    """Spatial tile edge (px) for the spectra and fit tasks.

    One task holds a ``(nt, tile, tile)`` float64 time series and its spectra and fit
    work arrays. Its peak is estimated as ``nt * tile**2 * 8 bytes * copies`` with
    ``copies = 6 + 4 * nmodels`` (input, detrended/windowed copy, complex rfft, power,
    plus per model a model curve, residuals and a jacobian of a few parameters over ~nt/2
    frequencies); tiles are multiples of 8 (at most 256) keeping that under a quarter of
    the worker's memory, so several tasks plus dask's own buffers fit. Of those, the one
    covering the image with the least padding is kept (equal tasks, no straggler tile).

    Parameters
    ----------
    ny, nx
        Image size in pixels.
    nt
        Number of frames (time samples) per pixel.
    worker_memory_bytes
        Memory of one worker (see :func:`worker_memory_bytes`).
    nmodels
        Number of spectral models fitted per pixel.
    min_tasks
        Prefer tiles (not below 8 px) that give at least this many tasks, so that every
        worker thread has work (pass, e.g., twice :func:`total_threads`).

    Returns
    -------
    int
        Tile edge in pixels: a multiple of 8, between 8 and 256.
    """
    if min(ny, nx, nt) < 1:
        raise ValueError(f"auto_tile: ny, nx, nt must be positive (got {ny}, {nx}, {nt})")
    if worker_memory_bytes <= 0:
        raise ValueError("auto_tile: worker_memory_bytes must be positive")
    copies = 6 + 4 * max(1, nmodels)
    budget = worker_memory_bytes / 4
    tile = int(math.sqrt(budget / (nt * 8 * copies)))
    tile = min(256, tile // 8 * 8)
    if tile < 8:
        warnings.warn(
            f"a worker's memory ({worker_memory_bytes / 2**30:.2f} GiB) is small for {nt} frames "
            "per pixel; using 8 px tiles. Raise cluster.memory_limit or use fewer workers.",
            stacklevel=2,
        )
        tile = 8
    return _balanced_tile(ny, nx, tile, min_tasks)


def _balanced_tile(ny: int, nx: int, largest: int, min_tasks: int) -> int:
    """Among multiples of 8 up to ``largest``, the tile that covers the image best.

    Edge tiles are cut short, so a tile that does not divide the image makes one task
    much smaller than the others (for 128 px and 120 px tiles: 120² + 2 x 960 + 64 px),
    and a worker idles while another finishes the big one; many small tiles cost a fixed
    overhead each (reading, ~40 result arrays written, scheduling). The tile kept has the
    least ``tiles * (t² + TASK_OVERHEAD_PX)`` among those giving at least ``min_tasks``
    tiles (ties: the larger tile).
    """
    candidates = list(range(8, largest + 1, 8))
    enough = [t for t in candidates if _ntiles(ny, nx, t) >= min_tasks]
    pool = enough or [8]
    return min(pool, key=lambda t: (tile_cost(ny, nx, t), -t))


# Fixed cost of one tile task, in pixel-fits (~0.3 s of a worker on 2026 hardware).
TASK_OVERHEAD_PX = 512


def _ntiles(ny: int, nx: int, t: int) -> int:
    return math.ceil(ny / t) * math.ceil(nx / t)


def tile_cost(ny: int, nx: int, t: int) -> int:
    """Work of covering a (ny, nx) image with t-px tiles: padded pixels + per-task overhead."""
    return _ntiles(ny, nx, t) * (t * t + TASK_OVERHEAD_PX)


def auto_time_chunk(
    ny: int,
    nx: int,
    worker_memory_bytes: int,
    *,
    itemsize: int = 4,
    nt: int | None = None,
    source_chunk: int | None = None,
) -> int:
    """Frames per ``cube.zarr`` chunk for the per-frame to per-tile rechunk.

    Frames arrive a few whole frames at a time (chunks ``(k, ny, nx)``, k up to 16 for a FITS
    series; a cube's own chunks otherwise); ``cube.zarr`` is chunked
    ``(time_chunk, tile, tile)`` so that reading a whole tile's time series is a cheap
    concatenation. Building one such chunk row needs ``time_chunk`` whole frames in memory,
    about twice over (input pieces and the assembled output), so ``time_chunk`` is the
    largest count keeping ``2 * time_chunk * ny * nx * itemsize`` under a quarter of a
    worker's memory.

    Parameters
    ----------
    ny, nx
        Frame size in pixels.
    worker_memory_bytes
        Memory of one worker.
    itemsize
        Bytes per cube value (4 for float32).
    nt
        Number of frames, if known: the result never exceeds it.
    source_chunk
        Frames per chunk of the input itself (e.g. a Zarr cube chunked by 120 frames). When
        the budget allows, the result is a multiple of it, so that every input chunk is read
        by one rechunk task only (unaligned, each straddling chunk is read twice).

    Returns
    -------
    int
        Frames per chunk, at least 1 (and at most 1024, so tasks stay short).
    """
    if min(ny, nx) < 1 or worker_memory_bytes <= 0:
        raise ValueError("auto_time_chunk: ny, nx and worker_memory_bytes must be positive")
    frames = int(worker_memory_bytes / 4 / (2 * ny * nx * itemsize))
    frames = max(1, min(1024, frames))
    if nt is not None:
        frames = max(1, min(frames, nt))
    if source_chunk and 1 < source_chunk <= frames and (nt is None or frames < nt):
        frames -= frames % source_chunk
    return frames


def worker_memory_bytes(client: Any | None = None) -> int:
    """Memory limit of the smallest worker, in bytes.

    With no client (synchronous runs), or workers without a limit, the machine's available
    memory is used instead.
    """
    limits: list[int] = []
    if client is not None:
        info = client.scheduler_info(n_workers=-1)
        limits = [int(w.get("memory_limit") or 0) for w in info.get("workers", {}).values()]
    limits = [m for m in limits if m > 0]
    if limits:
        return min(limits)
    import psutil

    return int(psutil.virtual_memory().available)


def total_threads(client: Any | None = None) -> int:
    """Worker threads in the cluster (1 for synchronous runs)."""
    if client is None:
        return 1
    info = client.scheduler_info(n_workers=-1)
    return max(1, sum(int(w.get("nthreads", 1)) for w in info.get("workers", {}).values()))


# ---------------------------------------------------------------------------------------------
# Flags
# ---------------------------------------------------------------------------------------------


def cluster_config_from_flag(flag: str, base: ClusterConfig | None = None) -> ClusterConfig:
    """Turn ``--cluster FLAG`` into a :class:`ClusterConfig`.

    Parameters
    ----------
    flag
        ``local``, ``mpi``, ``synchronous``, a scheduler address such as
        ``tcp://10.0.0.5:8786``, or the path of a scheduler JSON file.
    base
        The config's own ``cluster`` section; its other keys (workers, memory, interface,
        report, ...) are kept.

    Raises
    ------
    ClusterError
        If the flag is none of those (for example a scheduler file that does not exist).
    """
    data = (base or ClusterConfig()).model_dump()
    text = flag.strip()
    if text in ("local", "mpi", "synchronous"):
        data.update(kind=text, address=None)
    elif text.startswith(_ADDRESS_SCHEMES):
        data.update(kind="address", address=text)
    elif text.endswith(".json") or Path(text).expanduser().is_file():
        path = Path(text).expanduser()
        if not path.is_file():
            raise ClusterError(
                f"--cluster {flag}: scheduler file {path} does not exist; start the scheduler "
                f"with `dask scheduler --scheduler-file {path}` first"
            )
        data.update(kind="address", address=str(path.resolve()))
    else:
        raise ClusterError(
            f"--cluster {flag!r}: expected local, mpi, synchronous, a scheduler address like "
            "tcp://host:8786, or a scheduler JSON file"
        )
    return ClusterConfig.model_validate(data)


# ---------------------------------------------------------------------------------------------
# Connecting
# ---------------------------------------------------------------------------------------------


def _say(msg: str) -> None:
    # Diagnostics go to stderr so that stdout stays clean for results/paths.
    print(f"specfit: {msg}", file=sys.stderr, flush=True)


def dashboard_link(client: Any | None, listening_on: str | None = None) -> str | None:
    """The dashboard URL of ``client``'s scheduler, or None (no client or no dashboard).

    dask builds the link from the scheduler's own host, which under MPI without
    ``cluster.interface`` is the node's network address, while the dashboard listens on
    ``cluster.dashboard_address``'s host (127.0.0.1 by default). Given that address as
    ``listening_on``, the link names its host (when it names one) with the port actually
    taken, i.e. the address that answers.
    """
    from urllib.parse import urlsplit, urlunsplit

    if client is None:
        return None
    try:
        link = client.dashboard_link
    except (KeyError, AttributeError, TypeError, OSError):
        return None
    host = (listening_on or "").rpartition(":")[0].strip("[]")
    if not link or host in ("", "0.0.0.0", "::", "*"):
        return link or None
    parts = urlsplit(link)
    if parts.port is None or parts.hostname != scheduler_host(client):
        return link  # a link set in dask's config (e.g. a proxy): as given
    shown = f"[{host}]" if ":" in host else host
    netloc = f"{shown}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def scheduler_host(client: Any) -> str | None:
    """The host (name or address) of ``client``'s scheduler, or None."""
    from urllib.parse import urlsplit

    try:
        return urlsplit(str(client.scheduler.address)).hostname
    except (AttributeError, ValueError):
        return None


def _announce(
    client: Any, what: str, dashboard_address: str | None = None, dashboard: bool = True
) -> None:
    # dashboard false: the scheduler still serves its HTTP endpoints, but no dashboard pages
    link = dashboard_link(client, dashboard_address) if dashboard else None
    host = scheduler_host(client)
    if link and host and link != dashboard_link(client):
        # the link names the dashboard's loopback: say on which node (for an SSH tunnel)
        link += f" on the scheduler's node {host}"
    nthreads = total_threads(client)
    _say(
        f"{what}: {len(client.scheduler_info(n_workers=-1).get('workers', {}))} workers, "
        f"{nthreads} threads" + (f"; dashboard {link}" if link else "")
    )


def _wait_for_workers(client: Any, n: int, what: str) -> None:
    try:
        client.wait_for_workers(n, timeout=WORKER_WAIT_TIMEOUT)
    except TimeoutError as exc:
        raise ClusterError(
            f"{what}: no worker joined within {WORKER_WAIT_TIMEOUT:.0f} s; check that workers "
            "are running and can reach the scheduler (network interface, firewall)"
        ) from exc


def _quiet_logs() -> None:
    """Keep dask's INFO chatter (and p2p's per-rechunk warnings) out of the run's output.

    Only the loggers of this process are touched: the client's (which also hosts a local
    cluster's scheduler), or each MPI rank's. With debug logging on (``specfit -v``) dask's
    INFO messages stay.
    """
    import logging

    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("distributed").setLevel(logging.WARNING)
    # The p2p scheduler plugin logs a WARNING for every rechunk it starts and ends; on a
    # pipeline with hundreds of tiles that buries real warnings.
    logging.getLogger("distributed.shuffle._scheduler_plugin").setLevel(logging.ERROR)


def refuse_in_worker_start() -> None:
    """Raise a :class:`ClusterError` with the fix when called while a worker process starts: a
    local cluster's workers are spawned and import the user's script again, so a top-level
    ``specfit.run(...)`` (no ``if __name__ == "__main__":`` guard) would run there too."""
    frame = inspect.currentframe()
    while frame is not None:
        # the re-imported script's top level: module code named __mp_main__ (a spawned child)
        if frame.f_code.co_name == "<module>" and frame.f_globals.get("__name__") == "__mp_main__":
            break
        frame = frame.f_back
    if frame is not None:
        raise ClusterError(
            "specfit was asked to start a cluster inside a starting worker process: the "
            "script's top-level code runs again in every worker; put its specfit calls under "
            '`if __name__ == "__main__":`'
        )


@contextlib.contextmanager
def _distributed_settings() -> Iterator[None]:
    # The rechunk method is left to dask (task-based for small graphs, p2p for huge ones;
    # DASK_ARRAY__RECHUNK__METHOD overrides it), except that the cube write asks for task-based
    # rechunks (pipeline._write_cube says why). Forcing p2p for every rechunk made small
    # cube writes fail at random with "lost dependencies" (dask/distributed 2026.8).
    yield


def quiet_interrupted_cluster() -> None:
    """After Ctrl-C: keep this process's dask, tornado and asyncio logs out of the output.

    The workers are stopped mid-task on purpose. What those libraries log from then on (busy
    workers killed, a scatter or a wait cut short, never-retrieved asyncio tasks) describes
    that stop and would bury the one line that says how to resume. The CLI calls this from
    its SIGINT handler, before the interrupt reaches any waiting call; with debug logging
    (``specfit -v``) nothing is hidden.
    """
    import logging

    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        for name in ("distributed", "tornado", "asyncio"):
            logging.getLogger(name).setLevel(logging.CRITICAL + 1)


class _DropWorkerNoise:
    """Logging filter on a local worker: two multi-line records that only bury the run's line.

    - A "Compute Failed" traceback for a bad input file: the reader's InputError names the
      file and the fix, and the client prints it as the run's one error line.
    - "Failed to communicate with scheduler during heartbeat" with its traceback: a local
      cluster's scheduler lives in the client's process, so it goes away only when the client
      closes the cluster (at the end, or after Ctrl-C or SIGTERM, where a heartbeat in flight
      then fails; seen once in CI after SIGTERM).
    """

    def filter(self, record: Any) -> bool:
        message = record.getMessage()
        return "InputError(" not in message and not message.startswith(
            "Failed to communicate with scheduler during heartbeat"
        )


def _quiet_workers(debug: bool = False) -> None:
    """Run on each local worker: leave Ctrl-C to the client, and keep expected noise out.

    A terminal's Ctrl-C reaches every process of the group; the client then closes the
    cluster, which stops the workers in order. Workers that reacted themselves, and workers
    whose running tasks are cancelled, each log warnings ("Scheduler was unaware of this
    worker", "... ended with CancelledError") that would bury the line saying how to resume.
    With debug logging (``specfit -v``) everything stays.
    """
    import logging
    import signal

    with contextlib.suppress(ValueError):  # only possible in the worker's main thread
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    if not debug:
        logging.getLogger("distributed.worker.state_machine").setLevel(logging.ERROR)
        worker_log = logging.getLogger("distributed.worker")
        if not any(isinstance(f, _DropWorkerNoise) for f in worker_log.filters):
            worker_log.addFilter(_DropWorkerNoise())


# distributed's warning when a dashboard port is taken and it picks a free one
_PORT_IN_USE = r"Port \d+ is already in use"


def _local_cluster(cfg: ClusterConfig, workers: int, threads: int) -> Any:
    import logging

    from distributed import LocalCluster

    return LocalCluster(
        n_workers=workers,
        threads_per_worker=threads,
        memory_limit=_memory_limit(cfg, workers),
        processes=True,
        # Scheduler, workers and dashboard listen on loopback only unless the config says
        # otherwise: a dashboard on 0.0.0.0 shows (and lets anyone stop) the run from the
        # network. When the port is taken (several runs) distributed picks a free one.
        host="127.0.0.1",
        dashboard_address=cfg.dashboard_address if cfg.dashboard else None,
        silence_logs=logging.WARNING,
    )


def _hold_ctrl_c() -> Any:
    """Block SIGINT in this (the main) thread while the local cluster starts; returns the
    mask to restore (None where nothing was blocked).

    A terminal's Ctrl-C reaches every process of the group. A worker process that is still
    starting (importing numpy, scipy, distributed) has not yet set it aside
    (:func:`_quiet_workers`) and dies with a KeyboardInterrupt traceback each. With SIGINT
    blocked, the processes started meanwhile (from this thread or the threads it starts)
    inherit the block, so a Ctrl-C never reaches them, and the client's own Ctrl-C waits,
    pending, until :func:`_release_ctrl_c` and is raised there: deferred, not lost.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    if not hasattr(signal, "pthread_sigmask"):  # not POSIX
        return None
    return signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})


def _release_ctrl_c(held: Any) -> None:
    """Undo :func:`_hold_ctrl_c` (once; a pending Ctrl-C is raised as KeyboardInterrupt)."""
    import signal

    if held is not None and signal.SIGINT not in held:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


@contextlib.contextmanager
def _connect_local(cfg: ClusterConfig) -> Iterator[Any]:
    import logging

    from distributed import Client

    workers, threads = _local_layout(cfg)
    _quiet_logs()  # before the scheduler starts in this process
    refuse_in_worker_start()
    check_worker_memory(cfg)
    held = _hold_ctrl_c()
    try:
        with warnings.catch_warnings():
            # a dashboard port in use is replaced by a free one, and the link printed at
            # start names it: distributed's own multi-line warning about it says no more
            warnings.filterwarnings("ignore", _PORT_IN_USE, UserWarning)
            cluster = _local_cluster(cfg, workers, threads)
    except BaseException as exc:
        _release_ctrl_c(held)
        if not isinstance(exc, RuntimeError):
            raise
        script = getattr(sys.modules.get("__main__"), "__file__", None)
        ours = script and (
            Path(script).name == "specfit" or Path(script).resolve().parent == Path(__file__).parent
        )  # the specfit command itself: the advice is not for it
        if script and not ours and "failed to start" in str(exc):
            raise ClusterError(
                f"the local cluster's workers did not start ({exc}). If {script} calls "
                "specfit.run at its top level: each worker process imports that script again, "
                'so put the call under `if __name__ == "__main__":`'
            ) from exc
        raise
    try:
        with Client(cluster) as client:
            try:
                client.run(_quiet_workers, logging.getLogger().getEffectiveLevel() <= logging.DEBUG)
            finally:
                _release_ctrl_c(held)  # a Ctrl-C pressed meanwhile is raised here
            _announce(client, "local cluster", dashboard=cfg.dashboard)
            with _distributed_settings():
                yield client
    except KeyboardInterrupt:
        quiet_interrupted_cluster()
        raise
    finally:
        # The work is over (saved or failed, and said so): a worker process slow to exit
        # (numba's compiled code, a large heap) is killed by the nanny after a few seconds,
        # which it logs as a warning that says nothing about the run.
        if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
            logging.getLogger("distributed.nanny").setLevel(logging.ERROR)
        _close_local(cluster)
        _release_ctrl_c(held)  # where the start failed before the workers were quieted


def _close_local(cluster: Any) -> None:
    """Close the local cluster, once. After a Ctrl-C while a worker was still starting, its
    close can fail on that worker's state; distributed's own exit hook then tried again and
    printed that failure as a traceback after the run's one-line message. What is left is
    ended with the process, so neither is shown."""
    try:
        cluster.close()
    except Exception as exc:  # noqa: BLE001 - the run is over; its result is already said
        logging.getLogger("specfit").debug("closing the local cluster: %r", exc)
    finally:
        from distributed.deploy.spec import SpecCluster

        instances = getattr(SpecCluster, "_instances", None)
        if instances is not None:
            instances.discard(cluster)  # not closed again by distributed's exit hook


def check_reachable(cfg: ClusterConfig) -> None:
    """Fail fast when ``cfg`` names a scheduler that nothing answers at (or a missing file),
    or a local cluster whose workers would get too little memory.

    A plain TCP connection, tried before a run prepares its inputs: a wrong address or port,
    or a scheduler that is down, is reported in at most :data:`SCHEDULER_CONNECT_TIMEOUT`
    seconds instead of after the cube is prepared. A no-op for schemes other than tcp://
    (tls, ucx, ... are left to the dask client). For a local cluster, the memory of each
    worker is checked instead (:func:`check_worker_memory`).

    Raises
    ------
    ClusterError
        If the scheduler file does not exist or holds no address, or the connection fails.
    ConfigError
        If a local cluster's workers would each get less than the memory they need.
    """
    import json
    import socket

    check_worker_memory(cfg)
    if cfg.kind != "address":
        return
    address = cfg.address or ""
    if not address.startswith(_ADDRESS_SCHEMES):
        try:
            address = str(json.loads(Path(address).read_text())["address"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ClusterError(
                f"cluster.address {cfg.address!r}: not a readable scheduler JSON file with an "
                f"address ({type(exc).__name__}); start the scheduler with `dask scheduler "
                "--scheduler-file FILE` and pass that FILE"
            ) from exc
    if not address.startswith("tcp://"):
        return
    host, _, port = address[len("tcp://") :].rpartition(":")
    try:
        with socket.create_connection(
            (host.strip("[]"), int(port)), timeout=SCHEDULER_CONNECT_TIMEOUT
        ):
            pass
    except (OSError, ValueError) as exc:
        raise ClusterError(
            f"cannot reach the dask scheduler at {address} ({exc.__class__.__name__}: "
            f"{exc}); is it running (`dask scheduler`), and are the address and port right?"
        ) from exc


# Beyond the connection timeout: how long the dask handshake with an address may take. A
# port that accepts connections but is no dask scheduler (the dashboard's 8787, another
# service) kept distributed's Client waiting without limit.
_HANDSHAKE_GRACE_S = 20.0


def _default_client() -> Any:
    """distributed's default client, or None."""
    from distributed import default_client

    try:
        return default_client()
    except ValueError:
        return None


def _undo_client(client_before: Any, scheduler_before: Any) -> None:
    """Undo what a Client whose connection failed left behind: its constructor made it dask's
    default scheduler before connecting, so every later dask computation of this process (a
    notebook's, the next run's) waited on it for good. It is closed and the setting restored."""
    made = _default_client()
    if made is not None and made is not client_before:
        with contextlib.suppress(Exception):
            made.close(timeout=2)
    if scheduler_before is None:
        dask.config.config.pop("scheduler", None)
    else:
        dask.config.set(scheduler=scheduler_before)


def _client_within(make: Any, address: str) -> Any:
    """``make()`` (a distributed Client for ``address``) in a helper thread, given
    :data:`SCHEDULER_CONNECT_TIMEOUT` + :data:`_HANDSHAKE_GRACE_S` seconds; an address that
    does not answer as a dask scheduler is a one-line :class:`ClusterError`."""
    import threading

    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["client"] = make()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            out["error"] = exc

    before = _default_client(), dask.config.get("scheduler", None)
    thread = threading.Thread(target=target, name="specfit-connect", daemon=True)
    thread.start()
    limit = SCHEDULER_CONNECT_TIMEOUT + _HANDSHAKE_GRACE_S
    thread.join(limit)
    not_dask = f"{address} accepts connections but did not answer as a dask scheduler"
    hint = "give the scheduler's address (tcp://host:8786 by default; 8787 is its dashboard)"
    if thread.is_alive():
        _undo_client(*before)
        raise ClusterError(f"{not_dask} within {limit:.0f} s: {hint}")
    exc = out.get("error")
    if exc is None:
        return out["client"]
    _undo_client(*before)
    if isinstance(exc, OSError | KeyboardInterrupt | ClusterError):
        raise exc
    # a MemoryError's text is distributed's reading of another protocol's bytes as a length
    said = "" if isinstance(exc, MemoryError) else f": {str(exc)[:120]}"
    raise ClusterError(f"{not_dask} ({type(exc).__name__}{said}): {hint}") from exc


def _code_here() -> str:
    """The sha256 of the specfit code this process runs (called on the scheduler and workers;
    where specfit does not import, the call itself fails there and is reported as such)."""
    from specfit.store import code_sha256

    return code_sha256()


def _said(got: Any) -> str:
    if isinstance(got, str):
        return f"specfit code {got[:12]}"
    return f"no specfit ({type(got).__name__}: {str(got)[:80]})"


def check_same_code(client: Any, what: str) -> None:
    """Refuse a scheduler or worker that runs other specfit code than this process, or none:
    the scheduler unpickles the task graph and the workers run the kernels, so another
    version changes results (or fails deserialising the graph, ~40 lines of traceback)."""
    from specfit._version import __version__

    here = _code_here()
    try:
        found = {"the scheduler": client.run_on_scheduler(_code_here)}
    except Exception as exc:  # noqa: BLE001 - it could not run the function: no specfit there
        found = {"the scheduler": exc}
    for worker, got in client.run(_code_here, on_error="return").items():
        found[f"worker {worker}"] = got
    other = [f"{k} runs {_said(v)}" for k, v in found.items() if v != here]
    if other:
        more = f" (and {len(other) - 3} more)" if len(other) > 3 else ""
        raise ClusterError(
            f"{what}: {'; '.join(other[:3])}{more}, but this process runs specfit "
            f"{__version__} (code {here[:12]}): install this specfit on the scheduler and on "
            "every worker, so that results do not depend on where they were computed"
        )


@contextlib.contextmanager
def _connect_address(cfg: ClusterConfig) -> Iterator[Any]:
    from distributed import Client

    address = cfg.address or ""
    is_file = not address.startswith(_ADDRESS_SCHEMES)
    if is_file and not Path(address).is_file():
        raise ClusterError(
            f"cluster.address {address!r} is neither tcp://host:port nor an existing "
            "scheduler JSON file"
        )
    _quiet_logs()
    try:
        client = _client_within(
            lambda: (
                Client(scheduler_file=address, timeout=SCHEDULER_CONNECT_TIMEOUT)
                if is_file
                else Client(address, timeout=SCHEDULER_CONNECT_TIMEOUT)
            ),
            address,
        )
    except OSError as exc:
        raise ClusterError(
            f"cannot reach the dask scheduler at {address} within "
            f"{SCHEDULER_CONNECT_TIMEOUT:.0f} s ({type(exc).__name__}); is it running "
            "(`dask scheduler`), and are the address and port right?"
        ) from exc
    # Never shut down a scheduler we did not start: only disconnect from it.
    with client:
        _wait_for_workers(client, 1, f"scheduler {address}")
        check_same_code(client, f"scheduler {address}")
        _announce(client, f"scheduler {client.scheduler.address}")
        with _distributed_settings():
            yield client


# Whether this process has turned its MPI job into a dask cluster, and whether it is closed.
_MPI_STATE = {"started": False, "closed": False, "size": 0}


# How long a scheduler or worker rank waits after its own SIGTERM/SIGINT for the client's
# close signal before the signal ends it (batch systems send SIGKILL ~30 s after SIGTERM).
_SERVER_GRACE_S = 20.0


def _leave_on_the_clients_close() -> None:
    """SIGTERM/SIGINT in an MPI job's scheduler or worker rank: leave when the client closes
    the cluster, as on a normal end; after a grace period (``_SERVER_GRACE_S``) without that
    close, or at a second signal, the signal's default action ends it.

    ``mpiexec`` (and a batch system at the wall-time limit) sends the signal to every rank at
    once. Raised inside a serving rank's event loop, the interrupt made asyncio cancel the
    scheduler's or worker's tasks, which could wait for each other for good (the job hung
    after the client had said how to resume), or closed the scheduler before the client had
    reacted, whose connection then logged a traceback. The client rank reacts (one line on
    how to resume) and sends the close signal; this rank then ends as usual, its logs quiet
    as the client's are.
    """
    import signal
    import threading
    import time

    received: list[int] = []
    stopped = threading.Event()

    def watchdog() -> None:
        stopped.wait()
        time.sleep(_SERVER_GRACE_S)
        os.kill(os.getpid(), received[0])  # now with the signal's default action: the end

    def handler(signum: int, frame: object) -> None:
        # first: a second one (Ctrl-C twice) stops this rank, and never re-enters this handler
        signal.signal(signum, signal.SIG_DFL)
        quiet_interrupted_cluster()  # the shutdown that follows is the one asked for
        received.append(signum)
        stopped.set()  # its lock is only ever held briefly by the watchdog, never by this thread

    # started now, not in the handler: starting a thread takes a lock the interrupted main
    # thread may itself hold (while it starts one of dask's threads)
    threading.Thread(target=watchdog, name="specfit-mpi-grace", daemon=True).start()
    for sig in (signal.SIGINT, signal.SIGTERM):
        # a signal the job was started to ignore (nohup, a background job) stays ignored
        if signal.getsignal(sig) is not signal.SIG_IGN:
            signal.signal(sig, handler)


def start_mpi(cfg: ClusterConfig) -> None:
    """Turn this MPI job into a dask cluster now; only the client rank returns.

    Call it first thing in a program that every MPI rank runs (``specfit run`` under
    ``mpiexec``), before any file is read or written: rank 0 becomes the scheduler and ranks
    >= 2 the workers, and those ranks serve inside this call until the client shuts the
    cluster down, then exit the process; rank 1 returns and runs the program. A no-op unless
    ``cfg.kind == 'mpi'``, and when called again. :func:`connect` calls it too, so calling it
    early is optional, but then checks and input preparation run on rank 1 only.

    If rank 1 ends without entering :func:`connect` (an error in a check, Ctrl-C), an exit
    hook still shuts the cluster down, so no rank is left waiting.

    Raises
    ------
    ClusterError
        If dask-mpi/mpi4py are missing or the job has fewer than 3 ranks.
    """
    if cfg.kind != "mpi" or _MPI_STATE["started"]:
        return
    try:
        import dask_mpi
        from mpi4py import MPI
    except ImportError as exc:
        raise ClusterError(
            "cluster.kind 'mpi' needs dask-mpi and mpi4py: pip install 'specfit-solar[mpi]'"
        ) from exc

    size = MPI.COMM_WORLD.Get_size()
    if size < MIN_MPI_RANKS:
        if MPI.COMM_WORLD.Get_rank() != 0:
            sys.exit(2)  # rank 0 says why, once
        raise ClusterError(
            f"cluster.kind mpi needs at least {MIN_MPI_RANKS} MPI ranks (scheduler, client, "
            f"worker) but got {size}: run `mpiexec -n 4 specfit run CONFIG --cluster mpi`"
        )
    # Every rank logs; at INFO level N ranks bury the pipeline's own messages.
    _quiet_logs()
    if MPI.COMM_WORLD.Get_rank() != 1:  # the scheduler and the workers
        _leave_on_the_clients_close()
    # a dashboard port in use is replaced by a free one, which the printed link names
    warnings.filterwarnings("ignore", _PORT_IN_USE, UserWarning)
    # exit=False: we, not dask-mpi's own atexit hook, decide when the cluster closes (in
    # connect()'s finally, or our exit hook below); the non-client ranks leave right here.
    is_client = dask_mpi.initialize(
        interface=cfg.interface,
        nthreads=cfg.threads_per_worker or 1,
        memory_limit=_memory_limit(cfg),
        dashboard=cfg.dashboard,
        dashboard_address=cfg.dashboard_address,
        # each worker's own HTTP server (health and metrics) on loopback only: the cluster's
        # traffic does not use it, and dask would otherwise open it on every interface
        worker_options={"dashboard_address": "127.0.0.1:0"},
        exit=False,
    )
    if not is_client:
        # Scheduler and worker ranks: their event loop has ended because the client shut
        # the cluster down. They must never run the rest of the program.
        sys.exit(0)
    _MPI_STATE.update(started=True, closed=False, size=size)
    atexit.register(_close_mpi_at_exit)


def mpi_ranks() -> int:
    """The number of MPI ranks of the cluster this process started (0: none)."""
    return int(_MPI_STATE["size"]) if _MPI_STATE["started"] else 0


def _close_mpi_at_exit() -> None:
    if _MPI_STATE["started"] and not _MPI_STATE["closed"]:
        _close_mpi(None)


@contextlib.contextmanager
def _connect_mpi(cfg: ClusterConfig) -> Iterator[Any]:
    from distributed import Client

    start_mpi(cfg)
    size = int(_MPI_STATE["size"])
    client = None
    try:
        client = Client()  # dask_mpi.initialize put the scheduler address in dask.config
        _wait_for_workers(client, size - 2, f"MPI cluster of {size} ranks")
        _announce(client, f"MPI cluster ({size} ranks)", cfg.dashboard_address, cfg.dashboard)
        with _distributed_settings():
            yield client
    finally:
        # Always, also on errors and Ctrl-C: otherwise the other ranks wait forever.
        _close_mpi(client)


def _close_mpi(client: Any | None) -> None:
    """Shut the MPI cluster down so that every rank exits and mpiexec returns."""
    from distributed import Client

    _MPI_STATE["closed"] = True
    try:
        if client is None:
            client = Client(timeout=30)
        client.shutdown()
    except Exception as exc:  # the scheduler may already be gone; nothing else to do
        _say(f"closing the MPI cluster: {exc}")
    finally:
        if client is not None:
            with contextlib.suppress(Exception):
                client.close(timeout=10)


@contextlib.contextmanager
def _connect_synchronous(cfg: ClusterConfig) -> Iterator[None]:
    # The task-based rechunk is the only one that runs without distributed.
    with dask.config.set({"scheduler": "synchronous", "array.rechunk.method": "tasks"}):
        _say("synchronous scheduler (no cluster; for debugging)")
        yield None


@contextlib.contextmanager
def connect(cfg: ClusterConfig | None = None) -> Iterator[Any | None]:
    """Start or join the cluster described by ``cfg`` for the duration of a ``with`` block.

    With ``kind='mpi'`` every MPI rank runs the same program and only the client rank (1)
    comes out of ``connect``; the scheduler (rank 0) and worker ranks (>= 2) serve until the
    client leaves the block and then exit the process. Work done *before* ``connect`` runs
    on every rank, so call :func:`start_mpi` first thing in the program (it is a no-op for
    other kinds) and do checks and input preparation after it. One ``connect`` per MPI job:
    leaving the block shuts the MPI cluster down.

    Parameters
    ----------
    cfg
        The ``cluster`` section of the config; None means a default local cluster.

    Yields
    ------
    distributed.Client or None
        The client, set as dask's default scheduler inside the block; None for
        ``kind='synchronous'``.

    Raises
    ------
    ClusterError
        When the cluster cannot be started or reached, with what to change.

    Examples
    --------
    >>> from specfit.config import ClusterConfig
    >>> with connect(ClusterConfig(kind="synchronous")) as client:
    ...     client is None
    True
    """
    cfg = cfg or ClusterConfig()
    factory = {
        "local": _connect_local,
        "mpi": _connect_mpi,
        "address": _connect_address,
        "synchronous": _connect_synchronous,
    }[cfg.kind]
    with factory(cfg) as client:
        yield client


@contextlib.contextmanager
def performance_report(path: str | os.PathLike | None) -> Iterator[None]:
    """Write dask's performance report (HTML) for the enclosed work to ``path``.

    A no-op when ``path`` is None, and (with a warning) when no distributed client is
    active, as with the synchronous scheduler.
    """
    if path is None:
        yield
        return
    from distributed import performance_report as _report

    if _default_client() is None:
        warnings.warn(
            f"--report {path}: a performance report needs a dask cluster; "
            "none is active (synchronous scheduler), so no report is written",
            stacklevel=3,
        )
        yield
        return
    Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
    with _report(filename=str(Path(path).expanduser())):
        yield
    _say(f"performance report written to {path}")


# ---------------------------------------------------------------------------------------------
# Progress
# ---------------------------------------------------------------------------------------------


def _is_future(x: Any) -> bool:
    from distributed import Future

    return isinstance(x, Future)


def progress(
    futures_or_iterable: Iterable[Any],
    total: int | None = None,
    desc: str = "",
    unit: str = "block",
) -> Iterator[Any]:
    """Iterate with a progress bar, on any kind of cluster.

    Parameters
    ----------
    futures_or_iterable
        A list/tuple of :class:`distributed.Future` (yielded as they complete, in completion
        order), a :class:`distributed.as_completed` object, or any iterable (yielded in
        order; with the synchronous scheduler the work happens while iterating).
    total
        Number of items, if ``len()`` does not tell.
    desc
        Label in front of the bar, e.g. ``"fit"``.
    unit
        What one item is, e.g. ``"tile"``.

    Yields
    ------
    The futures (completed) or the items of the iterable.
    """
    from distributed import as_completed
    from tqdm.auto import tqdm

    items: Iterable[Any] = futures_or_iterable
    if isinstance(items, list | tuple) and items and all(_is_future(f) for f in items):
        items = as_completed(items)
    if total is None:
        with contextlib.suppress(TypeError):
            total = len(futures_or_iterable)  # type: ignore[arg-type]
    # In batch logs (SLURM, CI) a bar redrawn ten times a second is noise.
    interactive = sys.stderr.isatty()
    # Made silent, then drawn: tqdm's constructor draws a bar before it has set up what its
    # close needs, so Ctrl-C arriving just then left a bar that closes without ending its line
    bar = tqdm(
        total=total,
        desc=desc or None,
        unit=unit,
        mininterval=0.1 if interactive else 10.0,
        dynamic_ncols=True,
        file=sys.stderr,
        delay=1e-9,
    )
    bar.delay = 0.0
    _OPEN_BARS.append(bar)
    try:
        bar.refresh()
        for item in items:
            yield item
            bar.update(1)
    finally:
        bar.close()  # ends the bar's line (nothing if end_progress_lines did)
        _OPEN_BARS[:] = [b for b in _OPEN_BARS if b is not bar]  # tqdm's == compares places


# Bars of progress() whose line is not ended yet: a generator interrupted while suspended
# (Ctrl-C in the loop's body) is closed only when it is collected, which can be after the
# CLI's last line.
_OPEN_BARS: list = []


def end_progress_lines() -> None:
    """End the line of every bar of :func:`progress` still open, before other output.

    The CLI calls this after Ctrl-C, before its one line on how to resume: a loop interrupted
    in its body leaves its generator suspended, and the bar is closed only when that is
    collected. A bar whose close was cut short gets a newline instead. Either way the bar
    stays silent when it is collected later.
    """
    while _OPEN_BARS:
        bar = _OPEN_BARS.pop()
        ended = False
        if not bar.disable:
            with contextlib.suppress(Exception):
                bar.close()
                ended = True
        bar.disable = True
        if not ended:
            with contextlib.suppress(Exception):
                bar.fp.write("\n")
                bar.fp.flush()
