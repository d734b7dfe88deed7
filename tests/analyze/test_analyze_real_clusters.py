"""`loglens analyze --address` on real clusters of separate processes: a Dask scheduler with two
`dask worker` processes, and a two-node Ray cluster (`ray start --head` + `ray start --address`),
started with the CLIs from the venv. The report equals the local one.

Every process is started here (`local_clusters`) and stopped by its own pid; ports are chosen by
the OS. Start-up waits are generous for a loaded machine.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import local_clusters
import pytest
from analyze_data import REPO

from loglens.analyze.engines import dask_handshake, probe_grpc

pytestmark = pytest.mark.xdist_group("cluster")
CONFIG = ["--config", str(REPO / "config.yaml")]


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A scheduler and two single-threaded worker processes; yields the scheduler address."""
    with local_clusters.dask_cluster(tmp_path_factory.mktemp("dask"), workers=2) as cluster:
        yield cluster.address


def analyze_cli(tmp: Path, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    out = tmp / f"r{len(list(tmp.glob('r*.json')))}.json"
    proc = subprocess.run(
        [sys.executable, "-m", "loglens.cli", "analyze", *args, "--no-progress", "--out", str(out), *CONFIG],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    report: dict[str, Any] = json.loads(out.read_text())
    return report


def numbers(report: dict[str, Any]) -> dict[str, Any]:
    s = report["summary"]
    totals = {k: s[k] for k in ("records", "accepted", "rejected", "errors", "p50_ms", "p95_ms", "p99_ms")}
    return {**{k: v for k, v in report.items() if k != "summary"}, "totals": totals}


def test_dask_cluster_of_separate_worker_processes(
    dask_cluster: str, clean_file: Path, broken_file: tuple[Path, dict[str, int]], tmp_path: Path
) -> None:
    paths = [str(clean_file), str(broken_file[0])]
    local = analyze_cli(tmp_path, *paths, "--partitions", "6")
    remote = analyze_cli(tmp_path, *paths, "--partitions", "6", "--engine", "dask", "--address", dask_cluster)
    assert numbers(remote) == numbers(local)
    s = remote["summary"]
    assert s["engine"] == "dask" and dask_cluster in s["engine_detail"] and "2 workers" in s["engine_detail"]
    assert len(s["workers"]) == 2, s["workers"]  # two separate processes did the work
    assert sum(s["workers"].values()) == s["partitions"] >= 6
    assert s["accepted"] == 23_800 and s["rejected"] == 200


def test_a_live_dask_scheduler_answers_the_handshake_probe(dask_cluster: str) -> None:
    """The quick probe recognises a live scheduler, so its `Client` gets the generous bound."""
    dask_handshake(dask_cluster)  # raises if the scheduler did not answer in Dask's protocol


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[tuple[str, dict[str, str]]]:
    """A two-node Ray cluster on this machine (`ray start --head`, then `ray start --address`)."""
    tmp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Ray's socket paths are length-limited
    try:
        with local_clusters.ray_cluster(tmp, nodes=1) as cluster:
            yield cluster.address, cluster.env
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_a_live_ray_head_answers_the_grpc_probe(ray_cluster: tuple[str, dict[str, str]]) -> None:
    """The quick probe recognises a live GCS, so `ray.init` gets the generous bound."""
    probe_grpc(ray_cluster[0], 6379, "Ray cluster")  # raises EngineError if no gRPC server answered


def test_ray_cluster_of_two_nodes(
    ray_cluster: tuple[str, dict[str, str]], clean_file: Path, broken_file: tuple[Path, dict[str, int]], tmp_path: Path
) -> None:
    address, env = ray_cluster
    paths = [str(clean_file), str(broken_file[0])]
    local = analyze_cli(tmp_path, *paths, "--partitions", "6")
    remote = analyze_cli(tmp_path, *paths, "--partitions", "6", "--engine", "ray", "--address", address, env=env)
    assert numbers(remote) == numbers(local)
    s = remote["summary"]
    assert s["engine"] == "ray" and address in s["engine_detail"] and "2 CPUs" in s["engine_detail"]
    assert len(s["workers"]) >= 2, s["workers"]  # worker processes of both nodes
    assert sum(s["workers"].values()) == s["partitions"] >= 6
