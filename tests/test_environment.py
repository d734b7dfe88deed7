"""The distributed environment works: Dask and Ray import, start a local cluster, run a task, stop.

Run this after `make setup` (or on a new cluster node) to verify the installation.
"""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.xdist_group("cluster")


def _pid_squared(x: int) -> tuple[int, int]:
    return os.getpid(), x * x


def test_dask_distributed_local_cluster_runs_a_task() -> None:
    import dask
    import distributed
    from distributed import Client, LocalCluster

    assert dask.__version__ == distributed.__version__ == "2026.8.0"
    cluster = LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},  # no dashboard; health routes on a free port
    )
    client = Client(cluster)
    try:
        assert len(client.scheduler_info()["workers"]) == 2
        results = client.gather(client.map(_pid_squared, range(8)))
        assert [sq for _, sq in results] == [x * x for x in range(8)]
        assert all(pid != os.getpid() for pid, _ in results)  # ran in worker processes
    finally:
        client.close()
        cluster.close()
    assert client.status == "closed"
    assert cluster.status.name == "closed"


def test_ray_local_cluster_runs_a_task() -> None:
    import ray

    assert ray.__version__ == "2.60.0"
    assert not ray.is_initialized()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        assert ray.cluster_resources()["CPU"] == 2

        def pid_squared(x: int) -> tuple[int, int]:  # defined here: pickled by value, no test import on workers
            return os.getpid(), x * x

        remote = ray.remote(pid_squared)
        results = ray.get([remote.remote(x) for x in range(8)])
        assert [sq for _, sq in results] == [x * x for x in range(8)]
        assert all(pid != os.getpid() for pid, _ in results)
    finally:
        ray.shutdown()
    assert not ray.is_initialized()
