"""Inputs of `loglens analyze`: find files, cut them into partitions, read one partition.

This is loglens' one archive reader (`discover` → `plan` → `read_text`/`read_blocks`/
`archive_source`); `backtest` and `loglens ingest FILE` can read archives through it too.

Kinds of input, told apart by name (content for JSON arrays and Parquet):
- NDJSON (`.ndjson`, `.jsonl`, `.json`, `.log`, `.txt`): split by **byte ranges**. A partition
  `[start, end)` owns every line whose first byte lies in the range, so ranges can be cut
  anywhere without coordination; a worker seeks to `start`, skips the tail of the line the
  previous partition owns, and reads past `end` to finish its last line.
- a JSON array (a file starting with `[`): one partition per file (it must be parsed whole).
- `.gz`: one partition per file (gzip streams cannot be split), streamed in blocks.
- Parquet of validated logs (`loglens export`'s hive-partitioned archive, or any Parquet with
  the store's `ts`/`level`/`service` columns): partitions are groups of files, pruned by the
  `date=/hour=/service=` directories against --since/--until/--service; read by DuckDB.
- other Parquet: partitions are groups of row groups, validated like JSON.
- the server's DuckDB store (`.duckdb`): partitions are ranges of `logs.id`; its rows were
  validated at ingest, so they go straight to aggregation; its dead letters are reported.

Everything here is plain data and pure functions so a `Partition` can be shipped to a
Dask or Ray worker (which must see the same paths: a shared or replicated file system).
"""

from __future__ import annotations

import contextlib
import glob
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import duckdb
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from loglens.ingest.decode import SNIFF_BYTES, decode_json, decode_ndjson, starts_like_json_array
from loglens.ingest.gzipstream import GzipDamage, gunzip
from loglens.models import LOG_ARROW_SCHEMA
from loglens.schema import Parsed

NDJSON_SUFFIXES = frozenset({".ndjson", ".jsonl", ".json", ".log", ".txt"})
PARQUET_SUFFIXES = frozenset({".parquet", ".pq"})
STORE_SUFFIXES = frozenset({".duckdb", ".db"})
BLOCK_BYTES = 64 * 1024 * 1024  # NDJSON read in blocks of about this size: bounded memory per worker
# The tool's own outputs, never inputs (a report written next to the logs it describes).
OWN_OUTPUTS = frozenset({"report.json", "report.html", "manifest.json"})
PARQUET_BLOCK_ROWS = 100_000

_STORE_COLUMNS = [f.name for f in LOG_ARROW_SCHEMA]


class InputError(ValueError):
    """An input path that matches nothing or cannot be read at all."""


@dataclass(frozen=True, slots=True)
class Partition:
    """One unit of work: a byte range of a text file, row groups of Parquet, or a store id range."""

    index: int
    kind: str  # ndjson | gzip | json | parquet | archive | store
    path: str
    start: int = 0
    end: int = -1  # exclusive; -1 = to the end
    row_groups: tuple[int, ...] = ()
    files: tuple[str, ...] = ()  # archive: the Parquet files of this partition
    # store: (hour start µs, highest archived id) of hours also given as archive inputs: their
    # logs up to that id are read from the archive, not twice (later, late ones from the store)
    archived_hours: tuple[tuple[int, int], ...] = ()

    def describe(self) -> str:
        """Short human name, e.g. `logs.ndjson[0:1048576]`."""
        name = Path(self.path).name
        if self.kind in ("ndjson", "store"):
            return f"{name}[{self.start}:{self.end}]"
        if self.kind == "parquet":
            return f"{name}{list(self.row_groups)}"
        if self.kind == "archive":
            return f"{len(self.files)} Parquet files"
        return name


@dataclass(frozen=True, slots=True)
class TextChunk:
    """Raw NDJSON bytes of part of a partition; `base` is the file offset of `body[0]`.

    `damage`: the input ends here because it is damaged (a truncated or corrupt gzip stream);
    `body` is then empty and the reason counts as one rejected record at `base`.
    """

    body: bytes
    base: int
    damage: str | None = None


@dataclass(slots=True)
class Block:
    """Decoded records of part of a partition, with where each raw line came from."""

    parsed: Parsed
    location: Any  # callable index -> "file@offset" string


def _kind_of(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".gz"):
        return "gzip"
    suffix = path.suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        return "archive" if is_log_parquet(path) else "parquet"
    if suffix in STORE_SUFFIXES:
        return "store"
    return "json_array" if _is_json_array_file(path) else "ndjson"


def _is_json_array_file(path: Path) -> bool:
    with path.open("rb") as f:
        return starts_like_json_array(f.read(SNIFF_BYTES))


def is_log_parquet(path: Path) -> bool:
    """True for Parquet of validated logs (the store's columns: `ts` timestamp, `level`, `service`)."""
    schema = pq.read_schema(path)
    names = set(schema.names)
    return {"ts", "level", "service"} <= names and pa.types.is_timestamp(schema.field("ts").type)


def _is_input(path: Path) -> bool:
    name = path.name.lower()
    if name in OWN_OUTPUTS or name.startswith(".") or ".tmp" in name:
        return False
    if name.endswith(".gz"):
        name = name[:-3]
    suffix = Path(name).suffix
    return suffix in NDJSON_SUFFIXES | PARQUET_SUFFIXES | STORE_SUFFIXES


def discover(paths: Sequence[str | Path]) -> list[Path]:
    """Expand globs and directories (recursively) into a sorted, de-duplicated list of files.

    Explicitly named files are taken whatever their suffix; inside directories and globs
    only known input suffixes count. Raises InputError naming any path that matches nothing.
    """
    found: dict[Path, None] = {}
    missing: list[str] = []
    for raw in paths:
        text = str(raw)
        p = Path(text)
        if glob.has_magic(text):
            matches = [Path(m) for m in sorted(glob.glob(text, recursive=True))]
            files = [m for m in matches if m.is_file() and _is_input(m)]
            for d in (m for m in matches if m.is_dir()):
                files.extend(_walk(d))
        elif p.is_dir():
            files = _walk(p)
        elif p.is_file():
            files = [p]
        else:
            files = []
        if not files:
            missing.append(text)
        for f in files:
            found.setdefault(f.resolve(), None)
    if missing:
        raise InputError(f"no input files found at: {', '.join(missing)}")
    return sorted(_drop_compressed_copies(found))


def _drop_compressed_copies(files: dict[Path, None]) -> list[Path]:
    """`x.log` and `x.log.gz` side by side are one log (rotation compressed it): keep `x.log`."""
    return [f for f in files if not (f.name.lower().endswith(".gz") and f.with_name(f.name[:-3]) in files)]


def _walk(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and _is_input(p))


def hive_values(path: Path) -> dict[str, str]:
    """`key=value` directories of a hive-partitioned path (values URL-decoded)."""
    out: dict[str, str] = {}
    for part in path.parts[:-1]:
        if "=" in part:
            key, _, value = part.partition("=")
            out[key] = unquote(value)
    return out


def archived_ids(files: Sequence[Path]) -> tuple[tuple[int, int], ...]:
    """(hour start µs, highest log id archived) of each hour the archive files hold.

    The ids come from the archive's manifest.json (`loglens export`); without one, a whole hour
    counts as archived (max id unbounded).
    """
    from loglens.store.archive import MANIFEST, load_manifest

    manifests: dict[Path, dict[str, dict[str, int | str]]] = {}
    out: dict[int, int] = {}
    for f in files:
        hour = hour_of(f)
        if hour is None:
            continue
        root = f.parents[3] if len(f.parents) > 3 else f.parent  # DIR/date=/hour=/service=/file
        if root not in manifests:
            manifests[root] = load_manifest(root) if (root / MANIFEST).exists() else {}
        entry = manifests[root].get(datetime.fromtimestamp(hour / 1e6, UTC).strftime("%Y-%m-%dT%H"))
        max_id = entry.get("max_id") if entry else None
        out[hour] = max(out.get(hour, 0), int(max_id) if isinstance(max_id, int) else 2**62)
    return tuple(sorted(out.items()))


def hour_of(path: Path) -> int | None:
    """Start (epoch µs) of the hour a `date=/hour=` archive file holds, None if not that layout."""
    values = hive_values(path)
    try:
        day = date.fromisoformat(values["date"])
        hour = int(values["hour"])
    except (KeyError, ValueError):
        return None
    return int(datetime(day.year, day.month, day.day, hour, tzinfo=UTC).timestamp()) * 1_000_000


def prune(path: Path, since_us: int | None, until_us: int | None, service: str | None) -> bool:
    """False when the file's hive directories prove it holds no log inside the filters."""
    values = hive_values(path)
    if service is not None and "service" in values and values["service"] != service:
        return False
    if "date" in values:
        try:
            day = date.fromisoformat(values["date"])
            hour = int(values.get("hour", "0"))
            start = int(datetime(day.year, day.month, day.day, hour, tzinfo=UTC).timestamp()) * 1_000_000
        except ValueError:
            return True  # not our layout: read it
        span = 3_600_000_000 if "hour" in values else 86_400_000_000
        if until_us is not None and start >= until_us:
            return False
        if since_us is not None and start + span <= since_us:
            return False
    return True


def plan(
    files: Sequence[Path],
    partitions: int,
    *,
    since_us: int | None = None,
    until_us: int | None = None,
    service: str | None = None,
) -> list[Partition]:
    """Cut `files` into about `partitions` partitions of similar size.

    Archive files whose hive directories lie outside the filters are not read at all.
    """
    partitions = max(1, partitions)
    kinds = [(f, _kind_of(f)) for f in files]
    all_archive = [f for f, k in kinds if k == "archive"]
    archive = [f for f in all_archive if prune(f, since_us, until_us, service)]
    archived_hours = archived_ids(all_archive)
    kinds = [(f, k) for f, k in kinds if k != "archive"]
    splittable = sum(f.stat().st_size for f, k in kinds if k == "ndjson")
    chunk = max(1, math.ceil(splittable / partitions))
    out: list[Partition] = []

    def add(kind: str, path: Path, **kw: Any) -> None:
        out.append(Partition(len(out), kind, str(path), **kw))

    for f, kind in kinds:
        if kind == "ndjson":
            size = f.stat().st_size
            for start in range(0, max(size, 1), chunk):
                add("ndjson", f, start=start, end=min(size, start + chunk))
        elif kind == "parquet":
            groups = pq.ParquetFile(f).metadata.num_row_groups
            per = max(1, math.ceil(groups / partitions))
            for g in range(0, groups, per):
                add("parquet", f, row_groups=tuple(range(g, min(groups, g + per))))
        elif kind == "store":
            with duckdb.connect(str(f), read_only=True) as db:
                row = db.execute("SELECT min(id), max(id) FROM logs").fetchone()
            lo, hi = (int(row[0]), int(row[1])) if row and row[0] is not None else (0, -1)
            step = max(1, math.ceil((hi - lo + 1) / partitions))
            for s in range(lo, hi + 1, step):
                add("store", f, start=s, end=min(hi + 1, s + step), archived_hours=archived_hours)
            if hi < lo:
                add("store", f, start=0, end=0)
        elif kind == "json_array":
            add("json", f)
        else:
            add("gzip", f)
    if archive:
        # groups of similar total size, files kept in path order (deterministic merges)
        total = sum(f.stat().st_size for f in archive)
        per = max(1, math.ceil(total / partitions))
        group: list[str] = []
        size = 0
        for f in archive:
            group.append(str(f))
            size += f.stat().st_size
            if size >= per:
                add("archive", Path(group[0]), files=tuple(group))
                group, size = [], 0
        if group:
            add("archive", Path(group[0]), files=tuple(group))
    return out


# ---- reading ------------------------------------------------------------------------------
def read_blocks(part: Partition) -> Iterator[Block]:
    """Decode a text/Parquet partition into blocks of records (the server's decoders)."""
    if part.kind == "ndjson":
        yield from _ndjson_blocks(part)
    elif part.kind == "gzip":
        yield from _gzip_blocks(part)
    elif part.kind == "json":
        data = Path(part.path).read_bytes()
        yield Block(decode_json(data), lambda i: f"{part.path}[{i}]")
    elif part.kind == "parquet":
        yield from _parquet_blocks(part)
    else:
        raise InputError(f"{part.path}: partition kind {part.kind!r} has no records to decode")


def located_block(path: str, base: int, body: bytes) -> Block:
    """Decode NDJSON text; bad lines are located as file@byte-offset (computed only when asked)."""
    parsed = decode_ndjson(body)
    offsets: list[int] = []

    def location(i: int) -> str:
        if not offsets:  # only walk the block when a rejection needs its position
            pos = 0
            for line in body.split(b"\n"):
                if line.strip():
                    offsets.append(base + pos)
                pos += len(line) + 1
        return f"{path}@{offsets[i]}"

    return Block(parsed, location)


def read_text(part: Partition, block_bytes: int = BLOCK_BYTES) -> Iterator[TextChunk]:
    """Raw NDJSON of an `ndjson` (byte range) or `gzip` partition, in chunks of whole lines.

    A gzipped JSON array yields nothing here: `is_json_array_gzip` tells the caller to use
    `read_blocks` for it.
    """
    if part.kind == "ndjson":
        yield from _ndjson_text(part, block_bytes)
    elif part.kind == "gzip":
        yield from _gzip_text(part, block_bytes)
    else:
        raise InputError(f"{part.path}: partition kind {part.kind!r} is not NDJSON text")


def is_json_array_gzip(part: Partition) -> bool:
    """True when a gzip partition holds a JSON array rather than NDJSON."""
    head = b""
    try:
        for piece in gunzip(part.path, SNIFF_BYTES):
            head += piece
            if len(head) >= SNIFF_BYTES:
                break
    except GzipDamage:
        return False  # NDJSON reading reports the damage (with whatever lines came before it)
    return starts_like_json_array(head[:SNIFF_BYTES])


def _ndjson_text(part: Partition, block_bytes: int) -> Iterator[TextChunk]:
    with open(part.path, "rb") as f:
        if part.start > 0:
            f.seek(part.start - 1)
            if f.read(1) != b"\n":
                f.readline()  # the rest of this line belongs to the previous partition
        pos = f.tell()
        while pos < part.end:
            # Find where the block's last line ends first, then read the chunk in one piece:
            # appending that line's tail to a block read whole would copy the block again.
            want = min(block_bytes, part.end - pos)
            f.seek(pos + want - 1)
            tail = f.readline()  # from the block's last byte to the end of its line, even past `end`
            f.seek(pos)
            body = f.read(want - 1 + len(tail) if tail else want)  # no tail: the file ends sooner
            if not body:
                break
            if pos == 0 and body.startswith(b"\xef\xbb\xbf"):
                yield TextChunk(body[3:], 3)
            else:
                yield TextChunk(body, pos)
            pos += len(body)


def _gzip_text(part: Partition, block_bytes: int) -> Iterator[TextChunk]:
    """Whole-line chunks of a gzip file; a damaged stream ends with a `damage` chunk after the
    lines read before it (a line cut by the damage is yielded too, and judged like any other)."""
    pos = 0
    pending = b""
    damage: str | None = None
    pieces = gunzip(part.path, block_bytes)
    while True:
        try:
            piece = next(pieces, None)
        except GzipDamage as exc:
            piece, damage = None, str(exc)
        if piece is not None:
            pending += piece
            cut = pending.rfind(b"\n") + 1
            if len(pending) < block_bytes or not cut:
                continue  # gather a block's worth, ending on a line end
            body, pending = pending[:cut], pending[cut:]
        else:
            body, pending = pending, b""
        if body:
            if pos == 0 and body.startswith(b"\xef\xbb\xbf"):
                yield TextChunk(body[3:], 3)
            else:
                yield TextChunk(body, pos)
            pos += len(body)
        if piece is None:
            if damage is not None:
                yield TextChunk(b"", pos, damage)
            return


def _ndjson_blocks(part: Partition) -> Iterator[Block]:
    for chunk in _ndjson_text(part, BLOCK_BYTES):
        yield located_block(part.path, chunk.base, chunk.body)


def _gzip_blocks(part: Partition) -> Iterator[Block]:
    if is_json_array_gzip(part):
        try:
            data = b"".join(gunzip(part.path))
        except GzipDamage as exc:  # a JSON array cut short has no whole record to read
            yield damaged_block(part.path, 0, str(exc))
            return
        yield Block(decode_json(data), lambda i: f"{part.path}[{i}]")
        return
    for chunk in _gzip_text(part, BLOCK_BYTES):
        if chunk.damage is not None:
            yield damaged_block(part.path, chunk.base, chunk.damage)
        else:
            yield located_block(part.path, chunk.base, chunk.body)


def damaged_block(path: str, offset: int, reason: str) -> Block:
    """One rejected record standing for the damaged rest of an input (located at the
    decompressed offset where reading stopped)."""
    return Block(Parsed([None], {0: reason}, lambda i: ""), lambda i: f"{path}@{offset}")


def _plain(value: Any) -> Any:
    """Parquet values as the JSON the schema expects (timestamps as RFC 3339 strings)."""
    if isinstance(value, datetime):
        text = value.isoformat()
        return text if value.tzinfo else text + "Z"
    if isinstance(value, date):
        return value.isoformat() + "T00:00:00Z"
    return value


def _parquet_blocks(part: Partition) -> Iterator[Block]:
    pf = pq.ParquetFile(part.path)
    base = sum(pf.metadata.row_group(g).num_rows for g in range(part.row_groups[0])) if part.row_groups else 0
    for batch in pf.iter_batches(batch_size=PARQUET_BLOCK_ROWS, row_groups=list(part.row_groups)):
        rows = batch.to_pylist()
        values: list[Any] = []
        for row in rows:
            rec = {k: _plain(v) for k, v in row.items() if v is not None or k in ("user_id", "response_time_ms")}
            meta = rec.get("metadata")
            if isinstance(meta, str):  # metadata stored as JSON text (e.g. exported from the store)
                with contextlib.suppress(orjson.JSONDecodeError):
                    rec["metadata"] = orjson.loads(meta)
            values.append(rec)
        start = base

        def raw(i: int, vals: list[Any] = values) -> str:
            return orjson.dumps(vals[i], default=str).decode()

        yield Block(Parsed(values, {}, raw), lambda i, s=start: f"{part.path}#row{s + i}")
        base += len(rows)


def archive_source(part: Partition) -> tuple[str, list[object]]:
    """SQL (and parameters) of the validated logs in an archive partition's Parquet files."""
    return (
        "SELECT ts, level, service, user_id, response_time_ms, coalesce(late, false) AS late "
        "FROM read_parquet(?, hive_partitioning = false, union_by_name = true)",
        [list(part.files)],
    )


def store_source(part: Partition) -> tuple[str, list[object]]:
    """SQL (and parameters) of the logs in a store partition (an id range)."""
    sql = "SELECT ts, level, service, user_id, response_time_ms, late FROM logs WHERE id >= ? AND id < ?"
    params: list[object] = [part.start, part.end]
    if part.archived_hours:
        # An archive and the live store given together: a log of an archived hour is read from
        # the archive if its id was archived, else (it arrived late) from the store. Never twice.
        sql += (
            " AND CASE WHEN list_contains(?::BIGINT[], epoch_us(date_trunc('hour', ts))) "
            "THEN id > list_extract(?::BIGINT[], list_position(?::BIGINT[], epoch_us(date_trunc('hour', ts)))) "
            "ELSE true END"
        )
        hours = [h for h, _ in part.archived_hours]
        params += [hours, [m for _, m in part.archived_hours], hours]
    return sql, params


def read_store(part: Partition) -> pa.Table:
    """Logs of a store partition (id range) as LOG_ARROW_SCHEMA, read-only."""
    with duckdb.connect(part.path, read_only=True) as db:
        table = db.sql(
            f"SELECT {', '.join(_STORE_COLUMNS)} FROM logs WHERE id >= $1 AND id < $2 ORDER BY id",
            params=[part.start, part.end],
        ).to_arrow_table()
    return table.cast(LOG_ARROW_SCHEMA)


def store_dead_letters(path: str, sample_limit: int) -> tuple[dict[str, int], list[tuple[str, str, str]]]:
    """Dead letters kept in a store: count per exact reason, and up to `sample_limit` per reason."""
    with duckdb.connect(path, read_only=True) as db:
        counts = db.execute("SELECT reason, count(*) FROM dead_letter GROUP BY reason").fetchall()
        samples = db.execute(
            "SELECT reason, raw, id FROM (SELECT *, row_number() OVER (PARTITION BY reason ORDER BY id) AS rn "
            "FROM dead_letter) WHERE rn <= ? ORDER BY id",
            [sample_limit],
        ).fetchall()
    return {str(r): int(c) for r, c in counts}, [(str(r), str(raw), f"{path}#dead_letter{i}") for r, raw, i in samples]


def store_records(path: str) -> tuple[int, int]:
    """(logs, dead letters) held in a store file."""
    with duckdb.connect(path, read_only=True) as db:
        row = db.execute("SELECT (SELECT count(*) FROM logs), (SELECT count(*) FROM dead_letter)").fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


def total_bytes(files: Sequence[Path]) -> int:
    """Size on disk of all inputs (for the summary)."""
    return sum(os.path.getsize(f) for f in files)
