"""Sliding windows of 1-second sub-buckets per service: counts, errors, latency sketch, last arrival.

Pure (no store, no API): the live evaluator, `loglens backtest` and batch workers feed it Arrow
batches of stored logs and read sums over any window `(now - W, now]` at 1-s resolution. A
window slides every second, so a burst straddling a minute boundary is seen whole — unlike a
tumbling per-minute bucket, which would split it in two.

Logs are bucketed by event time, clamped to their arrival time (a client clock running ahead
must not push logs into windows that have not happened yet). Seconds older than `horizon_s`
behind the newest evaluation are pruned, so memory is O(services × horizon).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from loglens import metrics


@dataclass(slots=True)
class _Second:
    total: int = 0
    errors: int = 0
    rt_buckets: list[np.ndarray] = field(default_factory=list)
    rt_counts: list[np.ndarray] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class WindowCounts:
    """Sums over one window for one service."""

    total: int
    errors: int

    @property
    def error_rate(self) -> float:
        """errors / total, 0 for an empty window."""
        return self.errors / self.total if self.total else 0.0


class SlidingWindows:
    """Per-service 1-second buckets over the last `horizon_s` seconds, plus last arrival times."""

    def __init__(self, horizon_s: int = 300) -> None:
        self.horizon_s = horizon_s
        self._seconds: dict[str, dict[int, _Second]] = {}
        self.last_seen: dict[str, float] = {}  # arrival time (epoch s) of each service's newest log
        self._newest = 0
        # per service: [logs, errors] over every second still held, kept up to date on add and
        # prune, so "could this service breach anything?" is answered in O(1)
        self._held: dict[str, list[int]] = {}

    @property
    def services(self) -> list[str]:
        """Every service seen (including ones that have gone silent)."""
        return list(self.last_seen)

    @property
    def busy(self) -> list[str]:
        """Services with logs inside the horizon: the only ones whose window sums can be non-zero."""
        return list(self._held)

    def __contains__(self, service: object) -> bool:
        return service in self.last_seen

    def __len__(self) -> int:
        return len(self.last_seen)

    def seen(self, service: str) -> float | None:
        """Arrival time of the newest log of `service` (None: never seen)."""
        return self.last_seen.get(service)

    def idle(self, before: float) -> list[str]:
        """Services whose newest log arrived before `before`."""
        return [svc for svc, t in self.last_seen.items() if t < before]

    def add_counts(self, service: str, second: int, total: int, errors: int, arrival_s: float) -> None:
        """Add pre-aggregated counts of one second (the event-time replay feeds these)."""
        self.touch(service, arrival_s)
        if second <= self._newest - self.horizon_s:
            return
        bucket = self._seconds[service].get(second)
        if bucket is None:
            bucket = self._seconds[service][second] = _Second()
        bucket.total += total
        bucket.errors += errors
        held = self._held.setdefault(service, [0, 0])
        held[0] += total
        held[1] += errors

    def touch(self, service: str, arrival_s: float) -> None:
        """Record that `service` sent logs at `arrival_s` (used when restoring from the store)."""
        if arrival_s > self.last_seen.get(service, float("-inf")):
            self.last_seen[service] = arrival_s
        self._seconds.setdefault(service, {})

    def add(self, logs: pa.Table) -> list[str]:
        """Add a batch of stored logs (columns ts, received_at, level, service, response_time_ms).

        Returns the services present in the batch.
        """
        if logs.num_rows == 0:
            return []
        ts = pc.cast(logs["ts"], pa.int64())
        received = pc.cast(logs["received_at"], pa.int64())
        ts = pc.min_element_wise(ts, received)
        sec = pc.divide(ts, 1_000_000)  # integer division on int64 floors for positive times
        err = pc.cast(pc.is_in(logs["level"], pa.array(["ERROR", "FATAL"])), pa.int64())
        table = pa.table(
            {
                "service": logs["service"],
                "sec": sec,
                "one": pa.array(np.ones(logs.num_rows, dtype=np.int64)),
                "err": err,
                "recv": received,
            }
        )
        grouped = table.group_by(["service", "sec"], use_threads=False).aggregate(
            [("one", "sum"), ("err", "sum"), ("recv", "max")]
        )
        services = grouped["service"].to_pylist()
        secs = grouped["sec"].to_pylist()
        totals = grouped["one_sum"].to_pylist()
        errors = grouped["err_sum"].to_pylist()
        recvs = grouped["recv_max"].to_pylist()
        floor = self._newest - self.horizon_s
        for svc, s, n, e, r in zip(services, secs, totals, errors, recvs, strict=True):
            self.touch(svc, r / 1e6)
            if s <= floor:
                continue  # older than any window we evaluate: counted in the store, not here
            bucket = self._seconds[svc].get(s)
            if bucket is None:
                bucket = self._seconds[svc][s] = _Second()
            bucket.total += n
            bucket.errors += e
            held = self._held.setdefault(svc, [0, 0])
            held[0] += n
            held[1] += e
        self._add_latency(logs, sec, floor)
        return sorted(set(services))

    def add_latency(self, logs: pa.Table) -> None:
        """Add only the response times of a batch (its counts came through `add_counts`)."""
        if logs.num_rows == 0:
            return
        ts = pc.min_element_wise(pc.cast(logs["ts"], pa.int64()), pc.cast(logs["received_at"], pa.int64()))
        for svc in pc.unique(logs["service"]).to_pylist():
            self._seconds.setdefault(svc, {})
        self._add_latency(logs, pc.divide(ts, 1_000_000), self._newest - self.horizon_s)

    def _add_latency(self, logs: pa.Table, sec: pa.Array, floor: int) -> None:
        # Columnar: one sort of (service, second, bucket) and run lengths, then one Python step
        # per (service, second) — not per distinct bucket, which is nearly every row of a batch.
        keep = pc.and_(pc.is_valid(logs["response_time_ms"]), pc.greater(sec, floor))
        if not pc.any(keep).as_py():
            return
        t = pa.table({"service": logs["service"], "sec": sec, "rt": logs["response_time_ms"]}).filter(keep)
        t = t.combine_chunks()  # one dictionary for the whole batch
        coded = pc.dictionary_encode(t["service"]).chunk(0)
        names = coded.dictionary.to_pylist()
        codes = coded.indices.to_numpy(zero_copy_only=False)
        secs = t["sec"].chunk(0).to_numpy(zero_copy_only=False)
        buckets = metrics.sketch_buckets(t["rt"]).to_numpy(zero_copy_only=False)
        order = np.lexsort((buckets, secs, codes))
        codes, secs, buckets = codes[order], secs[order], buckets[order]
        n = len(codes)
        new_key = np.ones(n, dtype=bool)  # a new (service, second, bucket) run starts here
        new_key[1:] = (codes[1:] != codes[:-1]) | (secs[1:] != secs[:-1]) | (buckets[1:] != buckets[:-1])
        starts = np.flatnonzero(new_key)
        counts = np.diff(np.append(starts, n)).astype(np.int64)
        codes, secs, buckets = codes[starts], secs[starts], buckets[starts].astype(np.int32)
        new_second = np.ones(len(starts), dtype=bool)
        new_second[1:] = (codes[1:] != codes[:-1]) | (secs[1:] != secs[:-1])
        firsts = np.flatnonzero(new_second).tolist()
        for a, b in zip(firsts, [*firsts[1:], len(starts)], strict=True):
            bucket = self._seconds[names[codes[a]]].setdefault(int(secs[a]), _Second())
            bucket.rt_buckets.append(buckets[a:b])
            bucket.rt_counts.append(counts[a:b])
            if len(bucket.rt_buckets) > 32:  # compact the fragments of a second that many batches hit
                bk = np.concatenate(bucket.rt_buckets)
                ct = np.concatenate(bucket.rt_counts)
                uniq, inv = np.unique(bk, return_inverse=True)
                bucket.rt_buckets = [uniq.astype(np.int32)]
                bucket.rt_counts = [np.bincount(inv, weights=ct).astype(np.int64)]

    def counts(self, service: str, now: float, window_s: int) -> WindowCounts:
        """Logs and errors of `service` in the window of `window_s` seconds ending at `now`."""
        end = int(now // 1)
        start = end - window_s
        total = errors = 0
        for s, b in self._seconds.get(service, {}).items():
            if start < s <= end:
                total += b.total
                errors += b.errors
        return WindowCounts(total, errors)

    def quantile(self, service: str, now: float, window_s: int, q: float) -> tuple[float | None, int]:
        """The q-quantile of response times in the window, and how many samples it is based on."""
        end = int(now // 1)
        start = end - window_s
        bs: list[np.ndarray] = []
        cs: list[np.ndarray] = []
        for s, b in self._seconds.get(service, {}).items():
            if start < s <= end and b.rt_counts:
                bs.extend(b.rt_buckets)
                cs.extend(b.rt_counts)
        if not cs:
            return None, 0
        buckets = np.concatenate(bs)
        counts = np.concatenate(cs)
        return metrics.quantile(buckets, counts, q), int(counts.sum())  # type: ignore[arg-type]  # numpy arrays work

    def prune(self, now: float) -> None:
        """Forget seconds that no window ending at or after `now` can contain."""
        self._newest = max(self._newest, int(now // 1))
        floor = self._newest - self.horizon_s
        for svc in [svc for svc, held in self._held.items() if held[0] or held[1]]:
            secs = self._seconds[svc]
            if min(secs) > floor:
                continue
            held = self._held[svc]
            for s in [s for s in secs if s <= floor]:
                b = secs.pop(s)
                held[0] -= b.total
                held[1] -= b.errors
            if not secs:
                del self._held[svc]

    def held(self, service: str) -> tuple[int, int]:
        """(logs, errors) of `service` over everything inside the horizon: an upper bound of any window."""
        h = self._held.get(service)
        return (h[0], h[1]) if h else (0, 0)

    def forget(self, service: str) -> None:
        """Drop a service entirely."""
        self._held.pop(service, None)
        self._seconds.pop(service, None)
        self.last_seen.pop(service, None)
