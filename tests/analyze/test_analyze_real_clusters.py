"""`loglens analyze --address` on real clusters of separate processes: a Dask scheduler with two
`dask worker` processes, and a two-node Ray cluster (`ray start --head` + `ray start --address`),
started with the CLIs from the venv. The report equals the local one.

Every process is started here and stopped by its own pid; ports are chosen by the OS (port 0,
read back from the scheduler file). Start-up waits are generous for a loaded machine.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from analyze_data import REPO

from loglens.analyze.engines import dask_handshake, probe_grpc

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
        address = scheduler_address(sched_file)
        while address is None and time.monotonic() < deadline:
            assert procs[0].poll() is None, (tmp / "cluster.log").read_text()
            time.sleep(0.2)
            address = scheduler_address(sched_file)
        assert address is not None, (tmp / "cluster.log").read_text()
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


def scheduler_address(sched_file: Path) -> str | None:
    """The address in a Dask scheduler file, or None while it is missing or half written.

    The scheduler creates the file before it writes the JSON, so existing is not enough: a
    loaded machine can show the empty file between the two steps.
    """
    try:
        address: str = json.loads(sched_file.read_text())["address"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return None
    return address


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_line(path: Path, text: str, proc: subprocess.Popen[bytes], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if text in path.read_text(errors="replace"):
            return
        assert proc.poll() is None, path.read_text(errors="replace")[-3000:]
        time.sleep(0.5)
    pytest.fail(f"{path.name}: no {text!r} after {seconds} s: {path.read_text(errors='replace')[-3000:]}")


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """A two-node Ray cluster on this machine (`ray start --head`, then `ray start --address`).

    Each node runs `ray start --block` and is stopped by its pid (SIGTERM drains and stops its
    processes), never by `ray stop`, which would stop every Ray on the machine. HOME is a temp
    dir so a token in ~/.ray of another user of the machine does not apply.
    """
    tmp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Ray's socket paths are length-limited
    (tmp / "home").mkdir()
    # not the RAY_* variables an in-process ray.init of another test may have left in os.environ
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(HOME=str(tmp / "home"), RAY_USAGE_STATS_ENABLED="0")

    def node_ports() -> list[str]:
        names = ("node-manager", "object-manager", "dashboard-agent-listen", "dashboard-agent-grpc")
        out = [x for name in names for x in (f"--{name}-port", str(free_port()))]
        return [*out, "--runtime-env-agent-port", str(free_port()), "--metrics-export-port", str(free_port())]

    gcs = free_port()
    address = f"127.0.0.1:{gcs}"
    common = ["--block", "--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--disable-usage-stats"]
    procs: list[subprocess.Popen[bytes]] = []
    head_dir = ["--temp-dir", str(tmp)]
    try:
        head_log = tmp / "head.log"
        procs.append(
            subprocess.Popen(
                [
                    str(BIN / "ray"),
                    "start",
                    "--head",
                    "--port",
                    str(gcs),
                    "--include-dashboard",
                    "false",
                    *head_dir,
                    *common,
                    *node_ports(),
                ],
                stdout=head_log.open("wb"),
                stderr=subprocess.STDOUT,
                env=env,
            )
        )
        wait_for_line(head_log, "Ray runtime started", procs[0], 120)
        node_log = tmp / "node.log"
        procs.append(
            subprocess.Popen(
                [str(BIN / "ray"), "start", "--address", address, *common, *node_ports()],
                stdout=node_log.open("wb"),
                stderr=subprocess.STDOUT,
                env=env,
            )
        )
        wait_for_line(node_log, "Ray runtime started", procs[1], 120)
        yield address, env
    finally:
        stop(procs[1:])
        stop(procs[:1])
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
