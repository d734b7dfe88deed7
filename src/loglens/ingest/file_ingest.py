"""`loglens ingest FILE`: stream NDJSON (or a JSON array) to a server or into the local store."""

from __future__ import annotations

import asyncio
import io
import itertools
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager
from typing import Any, BinaryIO

import httpx
import orjson
from tqdm import tqdm

from loglens.config import Settings
from loglens.ingest.decode import SNIFF_BYTES, decode_ndjson, starts_like_json_array
from loglens.ingest.gzipstream import GzipDamage
from loglens.ingest.pipeline import IngestPipeline, LocalPipeline


def _chunks(stream: BinaryIO, batch_size: int, progress: tqdm) -> Iterator[bytes]:
    """NDJSON chunks of `batch_size` lines. A JSON array of logs (`starts_like_json_array`) is
    read whole and re-emitted as NDJSON; text whose lines start with `[` stays lines."""
    head = stream.read(SNIFF_BYTES)
    if starts_like_json_array(head):
        data = head + stream.read()
        progress.update(len(data))
        values = orjson.loads(data.lstrip(b"\xef\xbb\xbf \t\r\n"))
        for i in range(0, len(values), batch_size):
            yield b"\n".join(orjson.dumps(v) for v in values[i : i + batch_size])
        return
    lines: list[bytes] = []
    try:
        # the sniffed head and the rest of its last line, then the stream's own lines
        for line in itertools.chain(io.BytesIO(head + stream.readline()), stream):
            progress.update(len(line))
            lines.append(line)
            if len(lines) >= batch_size:
                yield b"".join(lines)
                lines = []
    except GzipDamage:  # the whole lines read before the damage still go in
        if lines:
            yield b"".join(lines)
        raise
    if lines:
        yield b"".join(lines)


def ingest_file(
    stream: BinaryIO,
    total_bytes: int | None,
    settings: Settings,
    *,
    url: str | None = None,
    batch_size: int = 5000,
    token: str | None = None,
    local: LocalPipeline | None = None,
) -> tuple[int, int]:
    """Send every record; returns (accepted, rejected). Retries 429/503 after Retry-After.

    Without `url` the records go into the local store through `local(settings)` (the CLI passes
    `loglens.runtime.local_pipeline`).
    """
    progress = tqdm(total=total_bytes, unit="B", unit_scale=True, desc="ingest", disable=total_bytes is None)
    counts = [0, 0]  # accepted, rejected: kept outside the loops so a damaged input still reports them
    try:
        with progress:
            if url:
                headers = {"Content-Type": "application/x-ndjson"}
                if token:
                    headers["Authorization"] = f"Bearer {token}"
                with httpx.Client(base_url=url, timeout=60, headers=headers) as client:
                    for chunk in _chunks(stream, batch_size, progress):
                        body = _post_with_retry(client, chunk)
                        counts[0] += body["accepted"]
                        counts[1] += body["rejected"]
            else:
                if local is None:
                    raise ValueError("ingest_file needs a url or a local pipeline")
                asyncio.run(_ingest_local(stream, local(settings), batch_size, progress, counts))
    except GzipDamage as exc:
        raise GzipDamage(
            f"{exc}; the records before it were ingested: accepted {counts[0]:,}, rejected {counts[1]:,}"
        ) from None
    return counts[0], counts[1]


def _post_with_retry(client: httpx.Client, chunk: bytes, attempts: int = 20) -> dict[str, int]:
    import time

    for _ in range(attempts):
        resp = client.post("/api/v1/logs", content=chunk)
        if resp.status_code in (429, 503):
            time.sleep(float(resp.headers.get("retry-after", "1")))
            continue
        resp.raise_for_status()
        counts: dict[str, int] = resp.json()
        return counts
    raise RuntimeError("server kept answering 429/503; giving up")


async def _ingest_local(
    stream: BinaryIO,
    opened: AbstractAsyncContextManager[IngestPipeline],
    batch_size: int,
    progress: tqdm[Any],
    counts: list[int],
) -> None:
    """Ingest into the local store, adding to `counts` ([accepted, rejected]) as batches commit."""
    async with opened as pipeline:
        for chunk in _chunks(stream, batch_size, progress):
            # every chunk is NDJSON: a JSON array was re-emitted line by line by `_chunks`
            result = await pipeline.ingest(decode_ndjson(chunk), "file")
            counts[0] += result.accepted
            counts[1] += result.rejected
