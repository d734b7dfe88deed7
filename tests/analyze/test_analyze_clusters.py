"""Local, Dask and Ray engines give identical results, and clusters really spread the work.

One Dask LocalCluster (2 worker processes) and one local Ray instance (2 CPUs) serve the whole
module; both run in the same xdist worker (group "cluster") so they never compete for the CPUs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loglens.analyze import AnalyzeOptions, DaskEngine, RayEngine, run_analysis
from loglens.config import Settings

pytestmark = pytest.mark.xdist_group("cluster")


@pytest.fixture(scope="module")
def dask_client() -> Iterator[Any]:
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},  # no dashboard; health routes on a free port
    )
    client = Client(cluster)
    yield client
    client.close()
    cluster.close()


@pytest.fixture(scope="module")
def ray_session() -> Iterator[None]:
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def numbers(report: dict[str, Any]) -> dict[str, Any]:
    s = report["summary"]
    totals = {
        k: s[k]
        for k in ("records", "accepted", "rejected", "errors", "avg_ms", "p50_ms", "p95_ms", "p99_ms", "partitions")
    }
    return {**{k: v for k, v in report.items() if k != "summary"}, "totals": totals}


def test_local_dask_and_ray_give_identical_results(
    settings: Settings,
    clean_file: Path,
    broken_file: tuple[Path, dict[str, int]],
    dask_client: Any,
    ray_session: None,
) -> None:
    paths = [clean_file, broken_file[0]]
    options = AnalyzeOptions(paths=paths, partitions=6, progress=False)
    local = run_analysis(settings, options)
    with DaskEngine(client=dask_client) as dask_engine:
        on_dask = run_analysis(settings, options, dask_engine)
    with RayEngine() as ray_engine:
        on_ray = run_analysis(settings, options, ray_engine)
    assert numbers(local) == numbers(on_dask) == numbers(on_ray)
    assert local["summary"]["accepted"] == 23_800 and local["bad_lines"]["total"] == 200
    assert on_dask["summary"]["engine"] == "dask" and "2 workers" in on_dask["summary"]["engine_detail"]
    assert on_ray["summary"]["engine"] == "ray" and "2 CPUs" in on_ray["summary"]["engine_detail"]
    # more than one worker process did work on each cluster
    assert len(on_dask["summary"]["workers"]) == 2, on_dask["summary"]["workers"]
    assert len(on_ray["summary"]["workers"]) >= 2, on_ray["summary"]["workers"]
    assert sum(on_ray["summary"]["workers"].values()) == on_ray["summary"]["partitions"] >= 6


def test_ray_engine_leaves_a_session_it_did_not_start(settings: Settings, clean_file: Path, ray_session: None) -> None:
    import ray

    with RayEngine() as engine:
        report = run_analysis(settings, AnalyzeOptions(paths=[clean_file], partitions=2, progress=False), engine)
    assert ray.is_initialized()
    assert report["summary"]["accepted"] == 20_000


def test_dask_engine_connects_to_an_existing_scheduler(settings: Settings, clean_file: Path, dask_client: Any) -> None:
    address = dask_client.scheduler.address
    with DaskEngine(address) as engine:
        report = run_analysis(settings, AnalyzeOptions(paths=[clean_file], partitions=4, progress=False), engine)
        assert address in engine.describe()
    assert report["summary"]["accepted"] == 20_000 and len(report["summary"]["workers"]) == 2
    assert dask_client.submit(sum, [1, 2]).result() == 3  # the cluster we were pointed at keeps running
