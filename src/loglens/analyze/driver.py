"""The driver of `loglens analyze`: plan partitions, run them on an engine, merge, report.

Partials are merged in partition order (not completion order), so float sums — and therefore
every number in the report — are bit-identical whichever engine ran the partitions.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tqdm import tqdm

from loglens import metrics
from loglens.analyze import detection, report
from loglens.analyze.aggregate import merge_seconds
from loglens.analyze.engines import Engine, LocalEngine, cpu_count, make_engine
from loglens.analyze.inputs import discover, plan, store_dead_letters, total_bytes
from loglens.analyze.worker import (
    Filters,
    PartitionResult,
    PartitionTask,
    reason_key,
    run_partition,
)
from loglens.config import Settings
from loglens.schema import load_schema_document, now_us

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class AnalyzeOptions:
    """What to analyse and how (the `loglens analyze` options)."""

    paths: Sequence[str | Path]
    engine: str = "local"
    address: str | None = None
    partitions: int | None = None
    since: datetime | None = None
    until: datetime | None = None
    service: str | None = None
    progress: bool = True
    sample_limit: int = 5
    top_users: int = 20
    workers: int | None = None
    now: datetime | None = None  # clock for the future-skew check; default: now


@dataclass
class Analysis:
    """Merged outcome of a run (the report is built from this)."""

    partials: metrics.Partials
    seconds: Any
    results: list[PartitionResult]
    rejected: Counter[str] = field(default_factory=Counter)
    samples: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)
    dead_letters: int = 0  # rejected records kept in store files (not read by any partition)


def to_us(dt: datetime | None) -> int | None:
    """Epoch microseconds of a datetime (naive = UTC)."""
    if dt is None:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    delta = dt - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def merge_results(results: list[PartitionResult], sample_limit: int) -> Analysis:
    """Merge partition results in partition order (deterministic sums and samples)."""
    ordered = sorted(results, key=lambda r: r.index)
    analysis = Analysis(
        metrics.merge(r.partials for r in ordered), merge_seconds([r.seconds for r in ordered]), ordered
    )
    for r in ordered:
        analysis.rejected.update(r.rejected)
        for key, samples in r.samples.items():
            kept = analysis.samples.setdefault(key, [])
            kept.extend(samples[: max(0, sample_limit - len(kept))])
    return analysis


def run_analysis(settings: Settings, options: AnalyzeOptions, engine: Engine | None = None) -> dict[str, Any]:
    """Analyse the inputs and return the report as a JSON-ready dict.

    `engine` may be an already-entered engine (tests reuse one cluster); otherwise one is made
    from `options.engine`/`options.address` and closed afterwards.
    """
    started = time.perf_counter()
    stages: dict[str, float] = {}
    files = discover(options.paths)
    workers = options.workers or cpu_count()
    # In-process, one partition per file: DuckDB parallelises inside it. Clusters get 2 per worker.
    in_process = (engine is None and options.engine == "local" and not options.workers) or (
        isinstance(engine, LocalEngine) and engine.in_process
    )
    partitions = plan(
        files,
        options.partitions or (1 if in_process else 2 * workers),
        since_us=to_us(options.since),
        until_us=to_us(options.until),
        service=options.service,
    )
    document = load_schema_document(settings.schemas.log)
    filters = Filters(to_us(options.since), to_us(options.until), options.service)
    given = to_us(options.now)
    clock = given if given is not None else now_us()
    tasks = [
        PartitionTask(
            p,
            document,
            settings.ingest.max_future_skew_seconds,
            settings.ingest.dead_letter_raw_limit,
            clock,
            filters,
            options.sample_limit,
        )
        for p in partitions
    ]
    own_engine = engine is None
    eng = engine or make_engine(options.engine, options.address, options.workers)
    results: list[PartitionResult] = []
    stages["plan_s"] = time.perf_counter() - started
    try:
        mark = time.perf_counter()
        if own_engine:
            eng.__enter__()
        engine_detail = eng.describe()
        stages["engine_start_s"] = time.perf_counter() - mark
        mark = time.perf_counter()
        with tqdm(
            total=len(tasks), desc=f"analyze ({eng.name})", unit="partition", disable=not options.progress
        ) as bar:
            for res in eng.run(run_partition, tasks):
                results.append(res)
                bar.update(1)
        stages["partitions_s"] = time.perf_counter() - mark
    finally:
        mark = time.perf_counter()
        if own_engine:
            eng.__exit__(None, None, None)
        stages["engine_stop_s"] = time.perf_counter() - mark
    # inside the partitions (summed over workers, so on a cluster more than the wall time)
    for r in results:
        for step, seconds in r.steps.items():
            stages[f"worker_{step}_s"] = stages.get(f"worker_{step}_s", 0.0) + seconds
    mark = time.perf_counter()
    analysis = merge_results(results, options.sample_limit)
    for store_file in sorted({p.path for p in partitions if p.kind == "store"}):
        counts, samples = store_dead_letters(store_file, options.sample_limit)
        for reason, n in counts.items():
            analysis.rejected[reason_key(reason)] += n
            analysis.dead_letters += n  # records too: records = accepted + rejected + filtered out
        for reason, raw, where in samples:
            kept = analysis.samples.setdefault(reason_key(reason), [])
            if len(kept) < options.sample_limit:
                kept.append((reason, raw[:500], where))
    stages["merge_s"] = time.perf_counter() - mark
    mark = time.perf_counter()
    found = detection.run_detectors(analysis.partials, analysis.seconds, settings)
    stages["detection_s"] = time.perf_counter() - mark
    elapsed = time.perf_counter() - started
    meta = {
        "engine": eng.name,
        "engine_detail": engine_detail,
        "inputs": [str(f) for f in files],
        "input_bytes": total_bytes(files),
        "partitions": len(partitions),
        "elapsed_s": round(elapsed, 3),
        # where the time went (report building, after this, is not included)
        "stages": {k: round(v, 3) for k, v in stages.items()},
        "filters": {
            "since": options.since.isoformat() if options.since else None,
            "until": options.until.isoformat() if options.until else None,
            "service": options.service,
        },
    }
    return report.build_report(analysis, found, meta, top_users=options.top_users)
