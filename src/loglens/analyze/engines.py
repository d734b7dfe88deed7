"""Where partitions run: `local` (processes on this machine), `dask` or `ray`.

An engine is a context manager with one method, `run(fn, tasks)`, yielding results as
partitions finish (so the driver can show progress and merge as it goes). Engines own the
clusters they start and leave alone the ones they were given: a `Client`/`ray` session
passed in (or already initialised) is not shut down.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")
R = TypeVar("R")

ENGINES = ("local", "dask", "ray")
# An address that does not answer like a cluster fails within this: nothing listening, a port
# that never answers, a server of another protocol.
CONNECT_TIMEOUT_S = 5.0
# Once the address has answered in the cluster's own protocol, the library's full connect (Ray
# starts a driver, Dask fetches the scheduler's identity) gets this long: on a loaded machine it
# can take well over CONNECT_TIMEOUT_S, and giving up on a live cluster is a false "no answer".
ANSWERED_TIMEOUT_S = 120.0
# HTTP/2 client preface and an empty SETTINGS frame: a gRPC server (a Ray GCS, a Ray client
# server) answers with its own SETTINGS frame (type 0x4) before anything else (RFC 9113, 3.4).
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
_H2_SETTINGS = 0x04


class EngineError(RuntimeError):
    """A cluster cannot be reached or used; the message names the address.

    `stuck` is set when a library call is still blocked in a thread (Ray's connect cannot be
    cancelled): the process should exit rather than wait for it.
    """

    def __init__(self, message: str, *, stuck: bool = False) -> None:
        super().__init__(message)
        self.stuck = stuck


def bounded(fn: Callable[[], R], address: str, what: str, hint: str, timeout: float = CONNECT_TIMEOUT_S) -> R:
    """`fn()` (a library's connect call) within `timeout` seconds, else EngineError(stuck=True).

    Dask and Ray retry a wrong address for minutes and ignore signals meanwhile; the call runs
    in a daemon thread so the caller can give up on it.
    """
    box: list[R] = []
    failure: list[BaseException] = []

    def call() -> None:
        try:
            box.append(fn())
        except BaseException as exc:  # reported below
            failure.append(exc)

    thread = threading.Thread(target=call, name="loglens-connect", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise EngineError(f"no {what} answered at {address} within {timeout:.0f} s ({hint})", stuck=True)
    if failure:
        lines = str(failure[0]).strip().splitlines()
        reason = lines[0] if lines else type(failure[0]).__name__
        raise EngineError(f"cannot connect to the {what} at {address}: {reason} ({hint})")
    return box[0]


def probe(address: str, default_port: int, what: str) -> socket.socket:
    """A connection to `address` (host:port, any scheme); EngineError at once when nothing listens."""
    target = urlsplit(address if "://" in address else f"tcp://{address}")
    host, port = target.hostname, target.port or default_port
    if not host:
        raise EngineError(f"--address {address}: not a {what} address (expected host:port)")
    try:
        return socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S / 2)
    except OSError as exc:
        raise EngineError(f"cannot reach the {what} at {address}: {_os_reason(exc, CONNECT_TIMEOUT_S / 2)}") from None


def _os_reason(exc: OSError, waited_s: float) -> str:
    if isinstance(exc, TimeoutError) or "timed out" in str(exc):
        return f"no answer within {waited_s:.0f} s"
    return exc.strerror or type(exc).__name__.replace("Error", " error").lower()


def probe_grpc(address: str, default_port: int, what: str) -> None:
    """EngineError within CONNECT_TIMEOUT_S unless a gRPC (HTTP/2) server answers at `address`.

    Tells a live cluster, however loaded (its gRPC transport answers the preface at once), from
    an address where nothing listens, nothing answers, or another protocol answers.
    """
    deadline = time.monotonic() + CONNECT_TIMEOUT_S
    with probe(address, default_port, what) as conn:
        try:
            conn.settimeout(max(0.1, deadline - time.monotonic()))
            conn.sendall(_H2_PREFACE)
            header = b""
            while len(header) < 9:
                conn.settimeout(max(0.1, deadline - time.monotonic()))
                got = conn.recv(9 - len(header))
                if not got:
                    break
                header += got
        except OSError as exc:
            raise EngineError(f"no {what} answered at {address}: {_os_reason(exc, CONNECT_TIMEOUT_S)}") from None
    if len(header) < 9 or header[3] != _H2_SETTINGS:
        raise EngineError(f"the server at {address} is not a {what}: it does not answer gRPC")


# A LocalCluster bound to loopback without a dashboard. The scheduler still serves its health
# routes over HTTP; a random port keeps two clusters on one machine from colliding on 8787.
LOCAL_CLUSTER_KWARGS: dict[str, Any] = {
    "threads_per_worker": 1,
    "processes": True,
    "host": "127.0.0.1",
    "dashboard_address": None,
    "scheduler_kwargs": {"dashboard_address": "127.0.0.1:0"},
}


class Engine(Protocol):
    """Runs a function over tasks somewhere and yields the results in completion order."""

    name: str

    def __enter__(self) -> Engine: ...

    def __exit__(self, *exc: object) -> None: ...

    def run(self, fn: Callable[[T], R], tasks: Sequence[T]) -> Iterator[R]: ...

    def describe(self) -> str: ...

    def abort(self) -> None: ...


def cpu_count() -> int:
    """CPUs this process may use (the affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


class LocalEngine:
    """This process, or a process pool when asked for several workers.

    By default partitions run in this process one after the other: DuckDB already spreads each
    one over every CPU, and there is no pool to start. `workers=N` (N > 1) runs them in N
    processes instead.
    """

    name = "local"

    def __init__(self, workers: int | None = None) -> None:
        self.in_process = workers is None or workers <= 1
        self.workers = 1 if self.in_process else int(workers or 1)
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> LocalEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def abort(self) -> None:
        """Stop at once: kill the pool's processes (the in-process run ends with the process)."""
        pool = self._pool
        if pool is not None:
            for proc in list(getattr(pool, "_processes", {}).values()):
                proc.kill()
            pool.shutdown(wait=False, cancel_futures=True)

    def describe(self) -> str:
        if self.in_process:
            return f"local (in-process, DuckDB on {cpu_count()} CPUs)"
        return f"local ({self.workers} processes)"

    def run(self, fn: Callable[[T], R], tasks: Sequence[T]) -> Iterator[R]:
        if len(tasks) <= 1 or self.workers <= 1:
            for t in tasks:
                yield fn(t)
            return
        if self._pool is None:
            # forkserver: a clean, fast-starting parent; plain fork is unsafe once DuckDB/Arrow threads run.
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(["loglens.analyze.worker"])
            self._pool = ProcessPoolExecutor(max_workers=min(self.workers, len(tasks)), mp_context=ctx)
        futures = [self._pool.submit(fn, t) for t in tasks]
        for f in as_completed(futures):
            yield f.result()


def dask_handshake(address: str) -> None:
    """Open a Dask comm to `address` (TCP or TLS, with Dask's handshake) and close it."""
    import asyncio

    from distributed.comm.core import connect

    async def shake() -> None:
        comm = await connect(address, timeout=CONNECT_TIMEOUT_S - 1)
        await comm.close()

    try:
        asyncio.run(shake())
    except OSError:
        raise  # Dask's own words: refused, timed out during the handshake...
    except Exception:  # another protocol's bytes read as Dask frames (a nonsense length, bad msgpack)
        raise ConnectionError("it does not answer Dask's handshake") from None


class DaskEngine:
    """dask.distributed: `Client(address)` for an existing scheduler, else a LocalCluster of processes."""

    name = "dask"

    def __init__(self, address: str | None = None, *, client: Any = None, workers: int | None = None) -> None:
        self.address = address
        self.workers = workers or cpu_count()
        self._client = client
        self._owned: list[Any] = []
        self._futures: list[Any] = []

    def __enter__(self) -> DaskEngine:
        if self._client is None:
            from distributed import Client, LocalCluster

            if self.address:
                address = self.address
                hint = "is it a Dask scheduler address, tcp://host:8786?"
                if "://" not in address or address.startswith(("tcp://", "tls://")):
                    probe(address, 8786, "Dask scheduler").close()  # refused: at once
                # Dask's own handshake, bounded: a silent port or another protocol fails here...
                bounded(lambda: dask_handshake(address), address, "Dask scheduler", hint)
                # ...so a scheduler that answered gets a generous bound (a loaded machine is slow)
                self._client = bounded(
                    lambda: Client(address, timeout=ANSWERED_TIMEOUT_S),
                    address,
                    "Dask scheduler",
                    hint,
                    ANSWERED_TIMEOUT_S + 5,
                )
            else:
                cluster = LocalCluster(n_workers=self.workers, **LOCAL_CLUSTER_KWARGS)
                self._owned.append(cluster)
                self._client = Client(cluster)
            self._owned.insert(0, self._client)
        return self

    def __exit__(self, *exc: object) -> None:
        for obj in self._owned:
            obj.close()
        self._owned.clear()

    def abort(self) -> None:
        """Cancel our tasks and drop the connection; a LocalCluster we started is killed."""
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.cancel(list(self._futures), force=True)
        for obj in self._owned:
            with contextlib.suppress(Exception):
                obj.close(timeout=1)
        self._owned.clear()

    def describe(self) -> str:
        workers = len(self._client.scheduler_info(n_workers=-1)["workers"]) if self._client else 0
        where = self.address or "LocalCluster"
        return f"dask ({where}, {workers} workers)"

    def run(self, fn: Callable[[T], R], tasks: Sequence[T]) -> Iterator[R]:
        from distributed import as_completed as dask_completed

        futures = self._client.map(fn, list(tasks), pure=False)
        self._futures = futures
        for f in dask_completed(futures):
            yield f.result()


class RayEngine:
    """Ray: `ray.init(address=...)` for an existing cluster, else a local one (no dashboard)."""

    name = "ray"

    def __init__(self, address: str | None = None, *, workers: int | None = None) -> None:
        self.address = address
        self.workers = workers or cpu_count()
        self._owned = False
        self._pending: list[Any] = []

    def __enter__(self) -> RayEngine:
        if self.address:
            self._probe()  # before importing Ray (a second or more): a bad address fails sooner
        import ray

        if not ray.is_initialized():
            if self.address:
                self._connect(ray)
            else:
                ray.init(num_cpus=self.workers, include_dashboard=False, log_to_driver=False)
            self._owned = True
        return self

    def _probe(self) -> None:
        """A quick gRPC probe: tells a dead, silent or foreign address (error within
        CONNECT_TIMEOUT_S) from a live cluster, whose `ray.init` may then take as long as a
        loaded machine needs (ANSWERED_TIMEOUT_S)."""
        address = self.address or ""
        if address.startswith("ray://"):
            probe_grpc(address, 10001, "Ray client server")
        elif address != "auto":
            probe_grpc(address, 6379, "Ray cluster")

    def _connect(self, ray: Any) -> None:
        """`ray.init(address)` bounded in time (after `_probe`): Ray retries a wrong address for minutes."""
        address = self.address or ""
        # Ray logs its retries (C++ and Python) to stderr: keep the user's terminal to our one line.
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
        bounded(
            lambda: ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR),
            address,
            "Ray cluster",
            "is it the head's GCS address, host:6379?",
            ANSWERED_TIMEOUT_S,
        )

    def abort(self) -> None:
        """Cancel our tasks; a local Ray we started goes down with the process."""
        import ray

        for ref in self._pending:
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)

    def __exit__(self, *exc: object) -> None:
        if self._owned:
            import ray

            ray.shutdown()
            self._owned = False

    def describe(self) -> str:
        import ray

        cpus = int(ray.cluster_resources().get("CPU", 0))
        return f"ray ({self.address or 'local'}, {cpus} CPUs)"

    def run(self, fn: Callable[[T], R], tasks: Sequence[T]) -> Iterator[R]:
        import ray

        # SPREAD: partitions go to every node from the start. Ray's default packs tasks onto the
        # node it prefers until that is busy, so a node whose worker process is still starting
        # (seconds of imports) got nothing and a second node did not make analyze faster.
        remote = ray.remote(num_cpus=1, scheduling_strategy="SPREAD")(fn)
        pending = [remote.remote(t) for t in tasks]
        self._pending = list(pending)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            yield ray.get(done[0])


def make_engine(name: str, address: str | None = None, workers: int | None = None) -> Engine:
    """An engine by name; `address` points dask/ray at an existing cluster."""
    if name == "local":
        if address:
            raise ValueError("--address is for the dask and ray engines")
        return LocalEngine(workers)
    if name == "dask":
        return DaskEngine(address, workers=workers)
    if name == "ray":
        return RayEngine(address, workers=workers)
    raise ValueError(f"unknown engine {name!r} (choose one of: {', '.join(ENGINES)})")
