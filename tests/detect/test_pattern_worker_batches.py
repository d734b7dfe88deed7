"""The pattern worker mines each distinct message of a batch once; its results must be exactly
those of mining the batch row by row (findings, examples, per-minute rates, template counts),
whatever the batch sizes and including batches in which the message cache fills up."""

from __future__ import annotations

import random
from collections.abc import Callable

import pyarrow as pa
import pytest

import loglens.detect.pattern_worker as pattern_worker
from loglens.config import Settings
from loglens.detect.documents import PatternFinding
from loglens.detect.pattern_worker import PatternWorker

WORDS = ["disk", "cache", "user", "timeout", "db", "queue", "retry", "login", "payment", "search"]


def batches(seed: int, sizes: list[int]) -> list[pa.Table]:
    """Batches of logs whose messages repeat within and across batches (and an empty batch)."""
    rng = random.Random(seed)
    out = []
    next_id = 1
    t0 = 1_800_000_000
    for b, n in enumerate(sizes):
        messages = [
            f"{rng.choice(WORDS)} {rng.choice(WORDS)} {'id' if rng.random() < 0.5 else 'took'} "
            f"{rng.randrange(40) if rng.random() < 0.8 else rng.randrange(10**6)}"
            + (" again" if rng.random() < 0.1 else "")
            for _ in range(n)
        ]
        ts = sorted(t0 + b * 25 + rng.randrange(180) for _ in range(n))
        out.append(
            pa.table(
                {
                    "id": pa.array(range(next_id, next_id + n), pa.int64()),
                    "ts": pa.array([s * 1_000_000 for s in ts], pa.int64()).cast(pa.timestamp("us")),
                    "level": pa.array([rng.choice(["INFO", "WARN", "ERROR", "FATAL"]) for _ in range(n)], pa.string()),
                    "service": pa.array([rng.choice(["api", "db", "web"]) for _ in range(n)], pa.string()),
                    "message": pa.array(messages, pa.string()),
                }
            )
        )
        next_id += n
    return out


def outcome(worker: PatternWorker, found: list[PatternFinding]) -> tuple[object, ...]:
    rates = {tid: dict(minutes) for tid, minutes in worker.rates._open.items()}
    return found, dict(worker._examples), rates, worker.processed, list(worker.miner.templates())


@pytest.mark.parametrize("coalesced", [False, True])
@pytest.mark.parametrize("cache_entries", [100_000, 700, 40])
@pytest.mark.parametrize("seed", [1, 2])
def test_batches_mine_as_rows_do(
    settings_factory: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
    cache_entries: int,
    seed: int,
    coalesced: bool,
) -> None:
    monkeypatch.setattr(pattern_worker, "_MINE_CACHE_ENTRIES", cache_entries)
    settings = settings_factory()
    logs = batches(seed, [1, 300, 2000, 5, 1500, 1200, 0, 800])

    by_batch: list[PatternFinding] = []
    worker = PatternWorker(settings.alerts, by_batch.append, clock=lambda: 1e10)
    worker.born = 0.0  # past the warm-up: new patterns are reported
    for table in [pa.concat_tables(logs)] if coalesced else logs:  # the worker thread mines what queued up as one
        worker.process(table)

    by_row: list[PatternFinding] = []
    reference = PatternWorker(settings.alerts, by_row.append, clock=lambda: 1e10)
    reference.born = 0.0
    for table in logs:
        by_row.extend(reference._process_rows(table, 1e10, False))
        reference.processed += table.num_rows

    assert by_batch, "the data must produce new-pattern findings for the comparison to mean something"
    assert outcome(worker, by_batch) == outcome(reference, by_row)
