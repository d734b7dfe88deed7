"""Real Dask and Ray clusters of separate processes on this machine, for tests and bench/.

A plain module (conftest files cannot be imported reliably) shared by
tests/analyze/test_analyze_real_clusters.py and bench/analyze_scaling.py, so both start clusters
the same way: with the venv's own CLIs (`dask scheduler` / `dask worker`, `ray start --head` /
`ray start --address`), on ports the OS chooses, each process stopped by its own pid — never by
`ray stop`, which would stop every Ray on the machine. Start-up waits are generous for a loaded
machine and end early with the process's log when it exits.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

BIN = Path(sys.executable).parent
START_TIMEOUT_S = 180.0


def free_port() -> int:
    """A port free on 127.0.0.1 now (for the Ray flags that cannot take 0)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM every process (they drain and stop their children), then wait; kill the stubborn."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=30)


def wait_for_line(path: Path, text: str, proc: subprocess.Popen[bytes], seconds: float) -> None:
    """Wait until `text` appears in the log `path` of `proc`; raise with the log's tail otherwise."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if text in path.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}: {path.read_text(errors='replace')[-3000:]}")
        time.sleep(0.5)
    raise TimeoutError(f"{path.name}: no {text!r} after {seconds} s: {path.read_text(errors='replace')[-3000:]}")


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


class _ProcessCluster(ABC):
    """Processes of one cluster: the first is the head (scheduler), the rest its workers."""

    procs: list[subprocess.Popen[bytes]]

    @abstractmethod
    def start(self) -> None:
        """Start the head and wait until it serves."""

    def stop(self) -> None:
        """Workers first, then the head."""
        stop(self.procs[1:])
        stop(self.procs[:1])


@contextmanager
def _running(cluster: _ProcessCluster, add: Callable[[], None], more: int) -> Iterator[None]:
    """`cluster` started with `more` workers added by `add`, stopped on the way out (also when
    starting it fails half way)."""
    try:
        cluster.start()
        for _ in range(more):
            add()
        yield
    finally:
        cluster.stop()


class DaskCluster(_ProcessCluster):
    """A `dask scheduler` process and the single-threaded `dask worker` processes added to it."""

    def __init__(self, tmp: Path, log: IO[bytes]) -> None:
        self.tmp = tmp
        self._log = log
        self.procs: list[subprocess.Popen[bytes]] = []
        self.address = ""

    def start(self) -> None:
        """Start the scheduler and wait for its address."""
        sched_file = self.tmp / "scheduler.json"
        cmd = [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0"]
        cmd += ["--dashboard-address", "127.0.0.1:0", "--scheduler-file", str(sched_file)]
        self.procs.append(subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + START_TIMEOUT_S
        address = scheduler_address(sched_file)
        while address is None:
            if self.procs[0].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dask scheduler did not start: {self.log_text()[-3000:]}")
            time.sleep(0.2)
            address = scheduler_address(sched_file)
        self.address = address

    def log_text(self) -> str:
        """What the cluster's processes wrote so far."""
        self._log.flush()
        return Path(self._log.name).read_text(errors="replace")

    def add_worker(self) -> None:
        """Start one more worker process and wait until the scheduler counts it."""
        n = len(self.procs) - 1
        cmd = [str(BIN / "dask"), "worker", self.address, "--nthreads", "1", "--nworkers", "1", "--no-dashboard"]
        cmd += ["--host", "127.0.0.1", "--name", f"w{n}", "--local-directory", str(self.tmp / f"w{n}")]
        env = {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
        self.procs.append(subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env))
        from distributed import Client

        with Client(self.address, timeout=60) as client:
            client.wait_for_workers(n + 1, timeout=START_TIMEOUT_S)


@contextmanager
def dask_cluster(tmp: Path, workers: int = 0) -> Iterator[DaskCluster]:
    """A Dask scheduler (and `workers` workers) whose processes log to `tmp/cluster.log`."""
    with (tmp / "cluster.log").open("wb") as log:
        cluster = DaskCluster(tmp, log)
        with _running(cluster, cluster.add_worker, workers):
            yield cluster


def ray_env(tmp: Path) -> dict[str, str]:
    """The environment of Ray's processes and clients: HOME a temp dir, so a token in ~/.ray of
    another user of the machine does not apply, and not the RAY_* variables an in-process
    `ray.init` of another test may have left in os.environ."""
    (tmp / "home").mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(HOME=str(tmp / "home"), RAY_USAGE_STATS_ENABLED="0")
    return env


class RayCluster(_ProcessCluster):
    """`ray start --head --block` and the `ray start --address --block` nodes added to it, 1 CPU each."""

    _COMMON = ("--block", "--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--disable-usage-stats")

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp  # short (Ray's socket paths are length-limited): make it under /tmp
        self.env = ray_env(tmp)
        self.procs: list[subprocess.Popen[bytes]] = []
        self._gcs = free_port()
        self.address = f"127.0.0.1:{self._gcs}"

    def start(self) -> None:
        """Start the head node and wait until it runs."""
        self._start("head", head=True)

    @staticmethod
    def _node_ports() -> list[str]:
        names = ("node-manager", "object-manager", "dashboard-agent-listen", "dashboard-agent-grpc")
        out = [x for name in names for x in (f"--{name}-port", str(free_port()))]
        return [*out, "--runtime-env-agent-port", str(free_port()), "--metrics-export-port", str(free_port())]

    def _start(self, name: str, *, head: bool = False, attempts: int = 3) -> None:
        """Start a node; a node that exits at once is started again on other ports.

        Ray needs its ports as numbers, so they are chosen free beforehand, and another process of
        a busy machine can take one before Ray binds it; the node then exits with a bind error.
        """
        for attempt in range(1, attempts + 1):
            if head:
                where = [
                    "--head",
                    "--port",
                    str(self._gcs),
                    "--include-dashboard",
                    "false",
                    "--temp-dir",
                    str(self.tmp),
                ]
            else:
                where = ["--address", self.address]
            log = self.tmp / f"{name}-{attempt}.log"
            cmd = [str(BIN / "ray"), "start", *where, *self._COMMON, *self._node_ports()]
            with log.open("wb") as out:
                proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env)
            self.procs.append(proc)
            try:
                wait_for_line(log, "Ray runtime started", proc, START_TIMEOUT_S)
                return
            except RuntimeError:  # exited: start it again (a timeout is not retried)
                self.procs.remove(proc)
                if attempt == attempts:
                    raise
                if head:
                    self._gcs = free_port()
                    self.address = f"127.0.0.1:{self._gcs}"

    def add_node(self) -> None:
        """Start one more node joined to the head and wait until it runs."""
        self._start(f"node{len(self.procs)}")


@contextmanager
def ray_cluster(tmp: Path, nodes: int = 0) -> Iterator[RayCluster]:
    """A Ray head (and `nodes` more nodes) in the short directory `tmp`."""
    cluster = RayCluster(tmp)
    with _running(cluster, cluster.add_node, nodes):
        yield cluster
