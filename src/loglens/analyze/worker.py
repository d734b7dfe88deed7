"""What runs on a worker for one partition: check → aggregate, pushed down into DuckDB.

- a whole plain NDJSON file: DuckDB's own parallel reader reads and checks it in one pass
  (`_scan_file`), its rows tied to the file's lines by position and held to it;
- other NDJSON (byte ranges, gzip, or when the scan cannot be trusted): each chunk's lines
  become a zero-copy Arrow string column. The next chunk is read and split in a thread while
  DuckDB checks the current one.
  Either way DuckDB checks the lines with the log schema compiled to SQL (`predicates`), and only
  the lines it does not accept are decoded in Python and judged by the server's exact validator
  (`LogSchema`), which gives every rejection its reason.
- the store and Parquet archives hold validated logs: DuckDB reads them directly.
- JSON arrays and other Parquet: `LogSchema` (vectorised fast path, then exact) as on the server.
Everything accepted is aggregated by one SQL scan (`aggregate`, equal to `metrics.aggregate`).
The result is a small, picklable `PartitionResult` (Arrow partials + rejection counts and
samples) that the driver merges. Nothing here knows which engine called it.
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import duckdb
import numpy as np
import orjson
import pyarrow as pa

from loglens import metrics
from loglens.analyze.aggregate import AGG_COLUMNS, SECONDS_SCHEMA, Aggregates, Window, aggregate, merge_seconds
from loglens.analyze.inputs import (
    BLOCK_BYTES,
    Partition,
    TextChunk,
    archive_source,
    damaged_block,
    is_json_array_gzip,
    located_block,
    read_blocks,
    read_text,
    store_source,
)
from loglens.analyze.predicates import CompiledChecks, compile_checks, sql_literal
from loglens.ingest.decode import decode_lines
from loglens.models import Rejection
from loglens.schema import LogSchema

SAMPLE_RAW_CHARS = 500
# A whole NDJSON file up to this size is checked by DuckDB's own parallel reader in one pass
# (`_scan_file`); its checked rows (about 50 bytes a log) stay in memory until aggregated.
# Larger files, and byte ranges of a file (partitions on Dask/Ray), are read in chunks.
SCAN_MAX_BYTES = 2 * 1024**3
_GLOB = re.compile(r"[*?\[\]{}]")  # DuckDB would expand these in a path
EXACT_BATCH = 50_000  # lines the scan hands to the exact validator at a time

_SCHEMAS: dict[bytes, LogSchema] = {}  # per-process cache: compiling the schema once per worker, not per task
_CHECKS: dict[bytes, CompiledChecks | None] = {}

_GOT = re.compile(r" \(got .*\)$", re.S)
_INVALID_VALUE = re.compile(r"invalid value .*?; expected", re.S)
_NUMBER = re.compile(r"-?\d+(\.\d+)?")


def reason_key(reason: str) -> str:
    """Group rejection reasons by kind: drop the offending value, keep field and rule."""
    if reason.startswith("malformed JSON"):
        return "malformed JSON"
    key = _GOT.sub("", reason)
    key = _INVALID_VALUE.sub("invalid value; expected", key)
    if key.startswith("timestamp:") and "in the future" in key:
        key = _NUMBER.sub("N", key)
    return key


@dataclass(frozen=True, slots=True)
class Filters:
    """Which accepted logs count: event time in [since, until) and one service (None = all)."""

    since_us: int | None = None
    until_us: int | None = None
    service: str | None = None


@dataclass(frozen=True, slots=True)
class PartitionTask:
    """Everything a worker needs; the schema travels as its document so workers need no config file."""

    partition: Partition
    schema_document: dict[str, Any]
    max_future_skew_s: float
    raw_limit: int
    now_us: int  # one clock for every partition: identical results whatever the engine
    filters: Filters = Filters()
    sample_limit: int = 5


@dataclass(slots=True)
class PartitionResult:
    """Aggregates and bad-line accounting of one partition."""

    index: int
    worker: str
    records: int = 0
    accepted: int = 0
    filtered_out: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    samples: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)
    partials: metrics.Partials = field(default_factory=metrics.Partials.empty)
    seconds: pa.Table = field(default_factory=SECONDS_SCHEMA.empty_table)
    elapsed_s: float = 0.0
    # seconds per step, summed over the partition's chunks: read, split, check, exact, aggregate
    steps: dict[str, float] = field(default_factory=dict)


@contextmanager
def _step(result: PartitionResult, name: str) -> Iterator[None]:
    """Add the time spent inside to `result.steps[name]` (where a partition's seconds go)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        result.steps[name] = result.steps.get(name, 0.0) + time.perf_counter() - started


def worker_id() -> str:
    """Host and process of this worker (proves work ran in more than one place)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _schema(task: PartitionTask) -> LogSchema:
    key = orjson.dumps([task.schema_document, task.max_future_skew_s, task.raw_limit], option=orjson.OPT_SORT_KEYS)
    schema = _SCHEMAS.get(key)
    if schema is None:
        # Archives are old by nature: lateness is meaningless in a backtest, so nothing is flagged late.
        schema = LogSchema(
            task.schema_document,
            allowed_lateness_s=1e12,
            max_future_skew_s=task.max_future_skew_s,
            raw_limit=task.raw_limit,
        )
        _SCHEMAS[key] = schema
    return schema


def _checks(task: PartitionTask) -> CompiledChecks | None:
    key = orjson.dumps(task.schema_document, option=orjson.OPT_SORT_KEYS)
    if key not in _CHECKS:
        _CHECKS[key] = compile_checks(task.schema_document)
    return _CHECKS[key]


def run_partition(task: PartitionTask) -> PartitionResult:
    """Analyse one partition. Bad records are counted and sampled by reason; never raises on data."""
    started = time.perf_counter()
    part = task.partition
    result = PartitionResult(part.index, worker_id())
    window = Window(task.filters.since_us, task.filters.until_us, task.filters.service)
    aggs: list[Aggregates] = []
    if part.kind == "store":  # validated when it was ingested
        with duckdb.connect(part.path, read_only=True) as con, _step(result, "aggregate"):
            agg = aggregate(con, *store_source(part), window)
        result.records += agg.kept + agg.filtered_out
        aggs.append(agg)
    elif part.kind == "archive":  # validated Parquet (loglens export): straight to aggregation
        with _connect() as con, _step(result, "aggregate"):
            agg = aggregate(con, *archive_source(part), window)
        result.records += agg.kept + agg.filtered_out
        aggs.append(agg)
    else:
        schema = _schema(task)
        checks = _checks(task)
        rejected: Counter[str] = Counter()
        with _connect() as con:
            scanned = _scan_file(con, checks, schema, task, window, result, rejected) if checks is not None else None
            if scanned is not None:
                aggs.extend(scanned)
            elif (
                checks is not None
                and part.kind in ("ndjson", "gzip")
                and not (part.kind == "gzip" and is_json_array_gzip(part))
            ):
                chunks = read_text(part, BLOCK_BYTES)
                # The next chunk is read and split in a thread while DuckDB checks this one: those
                # steps are single-threaded Python (file reads and numpy, which release the GIL),
                # and the check leaves part of the CPUs idle. At most two chunks are in memory.
                with ThreadPoolExecutor(1, thread_name_prefix="loglens-read") as reader:
                    ahead = reader.submit(_prepare, chunks)
                    while (prepared := ahead.result()) is not None:
                        ahead = reader.submit(_prepare, chunks)
                        for name, seconds in prepared.steps.items():
                            result.steps[name] = result.steps.get(name, 0.0) + seconds
                        aggs.append(_check_chunk(con, checks, schema, task, prepared, window, result, rejected))
            else:
                for block in read_blocks(part):
                    with _step(result, "exact"):
                        batch = schema.validate(block.parsed, "analyze", task.now_us)
                        result.records += len(block.parsed)
                        _count_rejections(batch.rejections, block.location, task, result, rejected)
                    with _step(result, "aggregate"):
                        aggs.append(_aggregate_table(con, batch.table, window))
        result.rejected = dict(rejected)
    result.accepted = sum(a.kept for a in aggs)
    result.filtered_out = sum(a.filtered_out for a in aggs)
    if len(aggs) == 1:
        result.partials, result.seconds = aggs[0].partials, aggs[0].seconds
    elif aggs:
        result.partials = metrics.merge(a.partials for a in aggs)
        result.seconds = merge_seconds([a.seconds for a in aggs])
    result.elapsed_s = time.perf_counter() - started
    return result


def _connect() -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB for one partition; its threads share the worker's CPUs."""
    return duckdb.connect(config={"threads": max(1, cpu_count())})


def cpu_count() -> int:
    """CPUs this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _count_rejections(
    rejections: list[Rejection],
    location: Callable[[int], str],
    task: PartitionTask,
    result: PartitionResult,
    rejected: Counter[str],
) -> None:
    for rej in rejections:
        key = reason_key(rej.reason)
        rejected[key] += 1
        kept = result.samples.setdefault(key, [])
        if len(kept) < task.sample_limit:
            kept.append((rej.reason, rej.raw[:SAMPLE_RAW_CHARS], str(location(rej.index))))


def _aggregate_table(con: duckdb.DuckDBPyConnection, table: pa.Table, window: Window) -> Aggregates:
    con.register("validated", table)
    try:
        return aggregate(con, f"SELECT {', '.join(AGG_COLUMNS)} FROM validated", [], window)
    finally:
        con.unregister("validated")


_BLANK_START = np.zeros(256, dtype=bool)
_BLANK_START[[9, 10, 11, 12, 13, 32]] = True  # bytes.strip()'s whitespace


def _line_offsets(body: bytes) -> tuple[np.ndarray, np.ndarray | None]:
    """Where each line of `body` starts, plus its end (n + 1 offsets), and which lines are not
    blank (None: all of them). A line is blank when `bytes.strip()` leaves nothing, as the
    server's NDJSON decoder skips it."""
    buf = np.frombuffer(body, np.uint8)
    ends = np.flatnonzero(buf == 10) + 1
    if not len(ends) or ends[-1] != len(body):
        ends = np.append(ends, len(body))
    offsets = np.concatenate([[0], ends]).astype(np.int64)
    starts = offsets[:-1]
    maybe_blank = np.flatnonzero(_BLANK_START[buf[np.minimum(starts, max(len(body) - 1, 0))]] | (starts >= len(body)))
    blank = [int(k) for k in maybe_blank if not body[offsets[k] : offsets[k + 1]].strip()]
    if not blank:
        return offsets, None
    keep = np.ones(len(starts), dtype=bool)
    keep[blank] = False
    return offsets, keep


def line_starts(body: bytes) -> np.ndarray:
    """The offset in `body` of each non-blank line."""
    offsets, keep = _line_offsets(body)
    return offsets[:-1] if keep is None else offsets[:-1][keep]


def split_lines(body: bytes) -> tuple[pa.Array, np.ndarray]:
    """The non-blank lines of an NDJSON body as an Arrow string array (zero-copy views of `body`,
    each line keeping its newline) and each line's offset in `body`."""
    offsets, keep = _line_offsets(body)
    starts = offsets[:-1]
    lines = pa.Array.from_buffers(pa.large_string(), len(starts), [None, pa.py_buffer(offsets), pa.py_buffer(body)])
    if keep is None:
        return lines, starts
    return lines.filter(pa.array(keep)), starts[keep]


@dataclass(slots=True)
class _Prepared:
    """A chunk read and split into lines (`lines` None: not UTF-8, for the exact path whole)."""

    chunk: TextChunk
    lines: pa.Array | None
    starts: np.ndarray | None
    steps: dict[str, float]  # seconds spent reading and splitting it


def _prepare(chunks: Iterator[TextChunk]) -> _Prepared | None:
    """The next chunk of `chunks`, split into lines when it is UTF-8; None at the end."""
    started = time.perf_counter()
    chunk = next(chunks, None)
    if chunk is None:
        return None
    read = time.perf_counter()
    lines = starts = None
    if chunk.damage is None and _is_utf8(chunk.body):
        lines, starts = split_lines(chunk.body)
    return _Prepared(chunk, lines, starts, {"read": read - started, "split": time.perf_counter() - read})


def _is_utf8(body: bytes) -> bool:
    if body.isascii():
        return True
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _check_chunk(
    con: duckdb.DuckDBPyConnection,
    checks: CompiledChecks,
    schema: LogSchema,
    task: PartitionTask,
    prepared: _Prepared,
    window: Window,
    result: PartitionResult,
    rejected: Counter[str],
) -> Aggregates:
    """Check an NDJSON chunk in SQL; lines it does not accept get the exact validator's verdict."""
    path = task.partition.path
    chunk = prepared.chunk
    body = chunk.body
    lines, starts = prepared.lines, prepared.starts
    if lines is None or starts is None:  # not UTF-8 (or the damage that ends a gzip input): exact path
        with _step(result, "exact"):
            if chunk.damage is not None:
                block = damaged_block(path, chunk.base, chunk.damage)
            else:  # the exact path rejects the bad lines one by one
                block = located_block(path, chunk.base, body)
            batch = schema.validate(block.parsed, "analyze", task.now_us)
            result.records += len(block.parsed)
            _count_rejections(batch.rejections, block.location, task, result, rejected)
        return _aggregate_table(con, batch.table, window)
    result.records += len(starts)
    con.register("lines", pa.table({"i": pa.array(np.arange(len(starts), dtype=np.int64)), "line": lines}))
    params = {"now_us": task.now_us, "skew_us": schema.skew_us, "late_us": schema.lateness_us}
    with _step(result, "check"):
        try:
            try:
                con.execute(f"CREATE OR REPLACE TEMP TABLE checked AS {checks.sql}", params).fetchall()
            except duckdb.Error:  # a malformed line: check again, telling JSON from not-JSON per line
                con.execute(f"CREATE OR REPLACE TEMP TABLE checked AS {checks.guarded_sql}", params).fetchall()
        finally:
            con.unregister("lines")
        bad = con.sql("SELECT i FROM checked WHERE NOT ok ORDER BY i").fetchnumpy()["i"]
    exact_table = None
    if len(bad):
        with _step(result, "exact"):
            raws = [_line_at(body, int(starts[k])) for k in bad.tolist()]
            batch = schema.validate(decode_lines(raws), "analyze", task.now_us)
            _count_rejections(
                batch.rejections, lambda j: f"{path}@{chunk.base + int(starts[bad[j]])}", task, result, rejected
            )
            exact_table = batch.table
    source = f"SELECT {', '.join(AGG_COLUMNS)} FROM checked WHERE ok"
    if exact_table is not None and exact_table.num_rows:
        con.register("exact", exact_table)
        source += f" UNION ALL SELECT {', '.join(AGG_COLUMNS)} FROM exact"
    try:
        with _step(result, "aggregate"):
            return aggregate(con, source, [], window)
    finally:
        if exact_table is not None and exact_table.num_rows:
            con.unregister("exact")
        con.execute("DROP TABLE IF EXISTS checked").fetchall()


def scannable(part: Partition) -> bool:
    """Whether DuckDB's own NDJSON reader can check `part` in one pass (`_scan_file`): a whole
    plain NDJSON file of at most SCAN_MAX_BYTES, without a byte-order mark, whose path DuckDB
    reads literally (no glob characters)."""
    if part.kind != "ndjson" or part.start != 0 or _GLOB.search(part.path):
        return False
    try:
        size = os.path.getsize(part.path)
        with open(part.path, "rb") as f:
            head = f.read(3)
    except OSError:
        return False
    return 0 < size <= SCAN_MAX_BYTES and part.end in (-1, size) and head != b"\xef\xbb\xbf"


def _file_line_starts(path: str) -> np.ndarray:
    """The offset of each non-blank line of a whole file, as the chunked reader splits it.

    Plain reads, not a memory map: a log file truncated meanwhile (copytruncate rotation) ends
    the read early instead of killing the process with SIGBUS."""
    part = Partition(0, "ndjson", path, 0, os.path.getsize(path))
    offsets = [chunk.base + line_starts(chunk.body) for chunk in read_text(part, BLOCK_BYTES)]
    return np.concatenate([np.zeros(0, np.int64), *offsets])


def _scan_file(
    con: duckdb.DuckDBPyConnection,
    checks: CompiledChecks,
    schema: LogSchema,
    task: PartitionTask,
    window: Window,
    result: PartitionResult,
    rejected: Counter[str],
) -> list[Aggregates] | None:
    """Check a whole NDJSON file with DuckDB's parallel reader (`read_json_objects`) in one pass;
    None when that cannot be trusted here, and the caller reads the file in chunks instead.

    DuckDB's reader turns a line it cannot parse into a NULL row and skips blank lines. The
    checked rows keep file order (a row's `rowid` is its line number among the non-blank lines),
    which two checks hold it to before any result counts: as many rows as non-blank lines
    (counted in a thread meanwhile), and each line not accepted is the one found at that position
    in the file (the same text, or text that is not a JSON object where DuckDB gave NULL). Lines
    not accepted go to the exact validator EXACT_BATCH at a time (memory stays bounded when most
    lines need it, e.g. a layout the SQL does not read); nothing reaches `result` until every batch
    is aligned.
    """
    part = task.partition
    if not scannable(part):
        return None
    path = os.path.abspath(part.path)
    params = {"now_us": task.now_us, "skew_us": schema.skew_us, "late_us": schema.lateness_us}
    scratch = PartitionResult(part.index, result.worker)
    found: Counter[str] = Counter()
    try:
        with ThreadPoolExecutor(1, thread_name_prefix="loglens-lines") as counter, _step(scratch, "check"):
            counted = counter.submit(_file_line_starts, part.path)
            con.execute(
                "CREATE OR REPLACE TEMP VIEW lines AS SELECT json::VARCHAR AS line FROM read_json_objects("
                f"{sql_literal(path)}, format='newline_delimited', compression='none', ignore_errors=true)"
            ).fetchall()
            con.execute(f"CREATE OR REPLACE TEMP TABLE checked AS {checks.scan_sql}", params).fetchall()
            con.execute("DROP VIEW lines").fetchall()
            row = con.execute("SELECT count(*) FROM checked").fetchone()
            bad = con.execute("SELECT rowid FROM checked WHERE NOT ok ORDER BY rowid").fetchnumpy()["rowid"]
            starts = counted.result()
        scratch.records = int(row[0]) if row else 0
        if scratch.records != len(starts):
            return None
        aggs: list[Aggregates] = []
        for k in range(0, len(bad), EXACT_BATCH):
            agg = _aggregate_exact(con, path, starts, bad[k : k + EXACT_BATCH], schema, task, window, scratch, found)
            if agg is None:
                return None
            aggs.append(agg)
        with _step(scratch, "aggregate"):
            accepted = aggregate(con, f"SELECT {', '.join(AGG_COLUMNS)} FROM checked WHERE ok", [], window)
    except duckdb.Error:
        return None
    finally:
        con.execute("DROP VIEW IF EXISTS lines").fetchall()
        con.execute("DROP TABLE IF EXISTS checked").fetchall()
    result.records += scratch.records
    rejected.update(found)
    for key, samples in scratch.samples.items():
        kept = result.samples.setdefault(key, [])
        kept.extend(samples[: max(0, task.sample_limit - len(kept))])
    for name, seconds in scratch.steps.items():
        result.steps[name] = result.steps.get(name, 0.0) + seconds
    return [accepted, *aggs]


def _aggregate_exact(
    con: duckdb.DuckDBPyConnection,
    path: str,
    starts: np.ndarray,
    rowids: np.ndarray,
    schema: LogSchema,
    task: PartitionTask,
    window: Window,
    scratch: PartitionResult,
    found: Counter[str],
) -> Aggregates | None:
    """Judge the scanned lines `rowids` (not accepted in SQL) with the exact validator and
    aggregate those it accepts; None when a row is not the line at its place in the file."""
    with _step(scratch, "exact"):
        texts = con.execute(
            "SELECT line FROM checked WHERE NOT ok AND rowid BETWEEN ? AND ? ORDER BY rowid",
            [int(rowids[0]), int(rowids[-1])],
        ).fetchall()
        raws = _bad_lines(path, starts, list(zip(rowids.tolist(), (t for (t,) in texts), strict=True)))
        if raws is None:
            return None
        offsets = starts[rowids]
        batch = schema.validate(decode_lines(raws), "analyze", task.now_us)
        _count_rejections(batch.rejections, lambda j: f"{task.partition.path}@{int(offsets[j])}", task, scratch, found)
    with _step(scratch, "aggregate"):
        return _aggregate_table(con, batch.table, window)


def _bad_lines(path: str, starts: np.ndarray, bad: list[tuple[int, str | None]]) -> list[bytes] | None:
    """The raw text of each line DuckDB did not accept (`bad`: its row number and DuckDB's text
    of it, None where DuckDB could not parse it); None when a row is not the line at that place."""
    if not bad:
        return []
    raws: list[bytes] = []
    with open(path, "rb") as f:
        for rowid, text in bad:
            f.seek(int(starts[rowid]))
            raw = f.readline()
            if text is None:
                if _is_json_object(raw):
                    return None
            elif raw.strip() != text.encode("utf-8"):
                return None
            raws.append(raw)
    return raws


def _is_json_object(raw: bytes) -> bool:
    try:
        return isinstance(orjson.loads(raw), dict)
    except orjson.JSONDecodeError:
        return False


def _line_at(body: bytes, start: int) -> bytes:
    """The line of `body` starting at `start`, with its newline (not the blank lines after it)."""
    end = body.find(b"\n", start)
    return body[start : len(body) if end < 0 else end + 1]
