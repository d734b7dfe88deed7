"""Reading request bodies: one size limit and one Content-Encoding rule for every protocol."""

from __future__ import annotations

from fastapi import Request

from loglens.errors import PayloadTooLarge
from loglens.ingest.decode import decode_content


async def read_body(request: Request, limit: int) -> bytes:
    """The raw request body, refusing (PayloadTooLarge → 413) as soon as it exceeds `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body of {declared} bytes exceeds the {limit} byte limit")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body exceeds the {limit} byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_decoded(request: Request, limit: int) -> bytes:
    """The body within `limit`, with its Content-Encoding undone (PayloadTooLarge / ParseError)."""
    return decode_content(await read_body(request, limit), request.headers.get("content-encoding"), limit)
