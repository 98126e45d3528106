"""The LocalCluster every pipeline benchmark times against (started before any clock)."""

from __future__ import annotations

import logging


def bench_cluster(workers: int, memory_limit, threads: int = 1):
    """A quiet LocalCluster: ``workers`` processes of ``threads`` threads, no dashboard."""
    from distributed import LocalCluster

    return LocalCluster(
        n_workers=workers,
        threads_per_worker=threads,
        memory_limit=memory_limit,
        dashboard_address=None,
        silence_logs=logging.ERROR,
    )
