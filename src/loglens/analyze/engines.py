"""Where partitions run: `local` (processes on this machine), `dask` or `ray`.

An engine is a context manager with one method, `run(fn, tasks)`, yielding results as
partitions finish (so the driver can show progress and merge as it goes). Engines own the
clusters they start and leave alone the ones they were given: a `Client`/`ray` session
passed in (or already initialised) is not shut down.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from typing import Any, Protocol, TypeVar

T = TypeVar("T")
R = TypeVar("R")

ENGINES = ("local", "dask", "ray")

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
        self._pool: Executor | None = None

    def __enter__(self) -> LocalEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

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


class DaskEngine:
    """dask.distributed: `Client(address)` for an existing scheduler, else a LocalCluster of processes."""

    name = "dask"

    def __init__(self, address: str | None = None, *, client: Any = None, workers: int | None = None) -> None:
        self.address = address
        self.workers = workers or cpu_count()
        self._client = client
        self._owned: list[Any] = []

    def __enter__(self) -> DaskEngine:
        if self._client is None:
            from distributed import Client, LocalCluster

            if self.address:
                self._client = Client(self.address)
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

    def describe(self) -> str:
        workers = len(self._client.scheduler_info(n_workers=-1)["workers"]) if self._client else 0
        where = self.address or "LocalCluster"
        return f"dask ({where}, {workers} workers)"

    def run(self, fn: Callable[[T], R], tasks: Sequence[T]) -> Iterator[R]:
        from distributed import as_completed as dask_completed

        futures = self._client.map(fn, list(tasks), pure=False)
        for f in dask_completed(futures):
            yield f.result()


class RayEngine:
    """Ray: `ray.init(address=...)` for an existing cluster, else a local one (no dashboard)."""

    name = "ray"

    def __init__(self, address: str | None = None, *, workers: int | None = None) -> None:
        self.address = address
        self.workers = workers or cpu_count()
        self._owned = False

    def __enter__(self) -> RayEngine:
        import ray

        if not ray.is_initialized():
            if self.address:
                ray.init(address=self.address, log_to_driver=False)
            else:
                ray.init(num_cpus=self.workers, include_dashboard=False, log_to_driver=False)
            self._owned = True
        return self

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

        remote = ray.remote(num_cpus=1)(fn)
        pending = [remote.remote(t) for t in tasks]
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
