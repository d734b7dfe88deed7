"""`loglens analyze --address` on real clusters of separate processes: a Dask scheduler with two
`dask worker` processes, started with the CLIs from the venv. The report equals the local one.

Every process is started here and stopped by its own pid; ports are chosen by the OS (port 0,
read back from the scheduler file). Start-up waits are generous for a loaded machine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from analyze_data import REPO

pytestmark = pytest.mark.xdist_group("cluster")
BIN = Path(sys.executable).parent
CONFIG = ["--config", str(REPO / "config.yaml")]


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=30)


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A scheduler and two single-threaded worker processes; yields the scheduler address."""
    tmp = tmp_path_factory.mktemp("dask")
    sched_file = tmp / "scheduler.json"
    log = (tmp / "cluster.log").open("wb")
    procs = [
        subprocess.Popen(
            [
                str(BIN / "dask"),
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--dashboard-address",
                "127.0.0.1:0",
                "--scheduler-file",
                str(sched_file),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    ]
    try:
        deadline = time.monotonic() + 120
        while not sched_file.exists() and time.monotonic() < deadline:
            assert procs[0].poll() is None, (tmp / "cluster.log").read_text()
            time.sleep(0.2)
        address = json.loads(sched_file.read_text())["address"]
        for i in range(2):
            procs.append(
                subprocess.Popen(
                    [
                        str(BIN / "dask"),
                        "worker",
                        address,
                        "--nthreads",
                        "1",
                        "--nworkers",
                        "1",
                        "--no-dashboard",
                        "--host",
                        "127.0.0.1",
                        "--name",
                        f"w{i}",
                        "--local-directory",
                        str(tmp / f"w{i}"),
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", "")},
                )
            )
        from distributed import Client

        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=180)
        yield address
    finally:
        stop(procs[1:])
        stop(procs[:1])
        log.close()


def analyze_cli(tmp: Path, *args: str) -> dict[str, Any]:
    out = tmp / f"r{len(list(tmp.glob('r*.json')))}.json"
    proc = subprocess.run(
        [sys.executable, "-m", "loglens.cli", "analyze", *args, "--no-progress", "--out", str(out), *CONFIG],
        capture_output=True,
        text=True,
        timeout=600,
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
