"""The service registry in memory: every service seen, with first/last arrival, totals.

It is updated from each batch right after its WAL fsync, so it is always as fresh as the
acknowledgements; DuckDB's `services` table is its persisted copy, written by the loader in
the same transaction as the logs (see loader.py), and seeds the registry at start.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace

import pyarrow as pa
import pyarrow.compute as pc

from loglens.models import ERROR_LEVELS


@dataclass(frozen=True, slots=True)
class ServiceInfo:
    """One service: arrival times (epoch µs), newest event time (epoch µs) and counts."""

    service: str
    first_seen_us: int
    last_seen_us: int
    last_event_us: int
    total: int
    errors: int


# Up to this many logs a Python pass is cheaper than an Acero group-by (~0.5 ms fixed cost);
# the dispatcher calls this for every delivery, mostly a handful of logs.
_SMALL_BATCH = 256


def per_service(logs: pa.Table) -> list[ServiceInfo]:
    """Aggregate a batch of logs (LOG_ARROW_SCHEMA columns) per service, in order of first appearance."""
    if logs.num_rows == 0:
        return []
    if logs.num_rows <= _SMALL_BATCH:
        return _per_service_rows(logs)
    errors = pc.cast(pc.is_in(logs["level"], pa.array(sorted(ERROR_LEVELS))), pa.int64())
    table = pa.table(
        {
            "service": logs["service"],
            "received": pc.cast(logs["received_at"], pa.int64()),
            "ts": pc.cast(logs["ts"], pa.int64()),
            "err": errors,
        }
    )
    g = table.group_by("service", use_threads=False).aggregate(
        [("received", "min"), ("received", "max"), ("ts", "max"), ("err", "count"), ("err", "sum")]
    )
    return [
        ServiceInfo(s, int(a), int(b), int(c), int(n), int(e))
        for s, a, b, c, n, e in zip(
            g["service"].to_pylist(),
            g["received_min"].to_pylist(),
            g["received_max"].to_pylist(),
            g["ts_max"].to_pylist(),
            g["err_count"].to_pylist(),
            g["err_sum"].to_pylist(),
            strict=True,
        )
    ]


class ServiceRegistry:
    """Thread-safe map service → ServiceInfo."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._services: dict[str, ServiceInfo] = {}

    def seed(self, rows: list[ServiceInfo]) -> None:
        """Replace the content (at start, from the persisted table)."""
        with self._lock:
            self._services = {r.service: r for r in rows}

    def add(self, deltas: list[ServiceInfo]) -> None:
        """Fold per-service aggregates of a new batch in."""
        with self._lock:
            for d in deltas:
                old = self._services.get(d.service)
                if old is None:
                    self._services[d.service] = d
                else:
                    self._services[d.service] = replace(
                        old,
                        first_seen_us=min(old.first_seen_us, d.first_seen_us),
                        last_seen_us=max(old.last_seen_us, d.last_seen_us),
                        last_event_us=max(old.last_event_us, d.last_event_us),
                        total=old.total + d.total,
                        errors=old.errors + d.errors,
                    )

    def forget_idle(self, last_seen_before_us: int) -> list[str]:
        """Drop services whose newest arrival is before `last_seen_before_us`; returns their names."""
        with self._lock:
            gone = [name for name, info in self._services.items() if info.last_seen_us < last_seen_before_us]
            for name in gone:
                del self._services[name]
        return gone

    def snapshot(self) -> list[ServiceInfo]:
        """Every service, sorted by name."""
        with self._lock:
            return sorted(self._services.values(), key=lambda s: s.service)

    def __len__(self) -> int:
        return len(self._services)


def _per_service_rows(logs: pa.Table) -> list[ServiceInfo]:
    """`per_service` by one pass over the rows (same result as the group-by)."""
    acc: dict[str, list[int]] = {}  # service -> [first_seen, last_seen, last_event, total, errors]
    for service, received, ts, level in zip(
        logs["service"].to_pylist(),
        pc.cast(logs["received_at"], pa.int64()).to_pylist(),
        pc.cast(logs["ts"], pa.int64()).to_pylist(),
        logs["level"].to_pylist(),
        strict=True,
    ):
        err = 1 if level in ERROR_LEVELS else 0
        a = acc.get(service)
        if a is None:
            acc[service] = [received, received, ts, 1, err]
            continue
        if received < a[0]:
            a[0] = received
        if received > a[1]:
            a[1] = received
        if ts > a[2]:
            a[2] = ts
        a[3] += 1
        a[4] += err
    return [ServiceInfo(s, *a) for s, a in acc.items()]
