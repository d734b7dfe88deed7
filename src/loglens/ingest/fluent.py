"""Fluent forward input: the TCP protocol of Fluent Bit's and Fluentd's `forward` output and of
Docker's `fluentd` log driver (Forward Protocol Specification v1), MessagePack over TCP.

Modes, told apart by the second element of each message array:
- Message:                 `[tag, time, record, option?]`
- Forward:                 `[tag, [[time, record], ...], option?]`
- PackedForward:           `[tag, bin/str of concatenated [time, record] entries, option?]`
- CompressedPackedForward: as PackedForward with option `{"compressed": "gzip"}` (gzip members)

`time` is an integer or float of seconds, or the EventTime extension (type 0: seconds and
nanoseconds as two big-endian uint32); Fluent Bit's `[[time, metadata], record]` entries are read
too. Mapping (`protocols.mapping.fluent`): the event time is the timestamp, the record's fields
map as in JSON ingest (`log`/`message` → message, `level` → level, ...), and the tag is the
service when the record names none; the tag is kept as `metadata.fluent_tag`.

Acknowledgement: the records decoded from what one read returned go through
`IngestPipeline.ingest` together (same validation and dead-letter as `POST /api/v1/logs`);
only after that commit returns is `{"ack": chunk}` written for each message that carried the
`chunk` option, so at-least-once clients (Fluent Bit `Require_ack_response`, fluent-logger-golang
`RequestAck`) never lose an acknowledged record. A well-formed MessagePack value that is not a
valid forward message is dead-lettered with its reason (and still acked: it was handled); bytes
that are not MessagePack at all cannot be resynchronised, so they are dead-lettered and that
connection is closed. Neither ever stops the listener.

With `shared_key` set the server opens with HELO, checks the client's PING digest
(sha512(salt + hostname + nonce + key)) and answers PONG with its own digest, or a failed PONG
and a closed connection. User/password authentication is not offered (HELO `auth` is empty), nor
TLS, nor the UDP heartbeat (Fluentd's default `heartbeat_type transport` checks TCP instead).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
import msgpack
import orjson

from loglens.config import FieldMapping, FluentConfig
from loglens.errors import Backpressure, StorageError
from loglens.ingest.mapping import iso_from_epoch, map_document
from loglens.ingest.pipeline import IngestPipeline
from loglens.models import Parsed

log = logging.getLogger("loglens.fluent")

SOURCE = "fluent"
_READ_BYTES = 1024 * 1024
_THREAD_BYTES = 64 * 1024  # decode bigger reads off the event loop, as HTTP bodies are
_HANDSHAKE_TIMEOUT_S = 30.0
_MAX_RETRY_WAIT_S = 5.0
_EVENT_TIME = struct.Struct(">II")


class ForwardError(ValueError):
    """A MessagePack value that is not a valid forward-protocol message."""


@dataclass
class FluentStats:
    """Counters for `loglens status`, `/metrics`, tests and benchmarks."""

    connections: int = 0
    open_connections: int = 0
    messages: int = 0
    records: int = 0
    committed: int = 0
    rejected: int = 0
    acks: int = 0
    bad_frames: int = 0
    auth_failures: int = 0
    errors: list[str] = field(default_factory=list)


def event_time(value: Any) -> tuple[int, int]:
    """(seconds, nanoseconds) of a forward-protocol time (ForwardError when it is none)."""
    if isinstance(value, msgpack.ExtType):
        if value.code != 0 or len(value.data) != 8:
            raise ForwardError(f"time: unknown extension type {value.code} of {len(value.data)} bytes")
        seconds, nanos = struct.unpack(">II", value.data)
        return seconds, nanos
    if isinstance(value, bool):
        raise ForwardError("time: must be an integer, a float or EventTime")
    if isinstance(value, int):
        return value, 0
    if isinstance(value, float):
        seconds = int(value)
        return seconds, min(round((value - seconds) * 1e9), 999_999_999)
    if isinstance(value, msgpack.Timestamp):
        seconds, nanos = divmod(value.to_unix_nano(), 1_000_000_000)
        return seconds, nanos
    raise ForwardError(f"time: must be an integer, a float or EventTime (got {type(value).__name__})")


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return "base64:" + base64.b64encode(value[:65536]).decode()
    if isinstance(value, msgpack.ExtType):
        return {"ext": value.code, "data": "base64:" + base64.b64encode(value.data).decode()}
    return repr(value)


def render(value: Any) -> str:
    """Text kept in the dead-letter store for a decoded value (bytes as base64)."""
    try:
        return orjson.dumps(value, default=_jsonable, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return repr(value)[:65536]


def gunzip_members(data: bytes, limit: int) -> bytes:
    """Concatenated gzip members (how Fluentd and Fluent Bit compress chunks), at most `limit` bytes."""
    out: list[bytes] = []
    size = 0
    while data:
        d = zlib.decompressobj(wbits=31)
        try:
            part = d.decompress(data, limit - size + 1)
        except zlib.error as exc:
            raise ForwardError(f"compressed entries are not valid gzip: {exc}") from None
        size += len(part)
        if size > limit or d.unconsumed_tail:
            raise ForwardError(f"decompressed entries exceed max_chunk_bytes ({limit})")
        if not d.eof:
            raise ForwardError("compressed entries are truncated gzip")
        out.append(part)
        data = d.unused_data
    return b"".join(out)


class Batch:
    """Records decoded from one read of one connection, and the chunk ids to ack after commit."""

    def __init__(self, mapping: FieldMapping, limit: int) -> None:
        self.mapping = mapping
        self.limit = limit
        self.values: list[Any] = []
        self.failures: dict[int, str] = {}
        self.raws: list[Any] = []  # what to render for a dead letter, on demand
        self.acks: list[Any] = []
        self.messages = 0
        self.bad = 0

    def __len__(self) -> int:
        return len(self.values)

    def fail(self, raw: Any, reason: str) -> None:
        """A value that cannot become a record: dead-lettered with `reason`."""
        self.failures[len(self.values)] = f"fluent: {reason}"
        self.values.append(None)
        self.raws.append(raw)

    def message(self, msg: Any) -> None:
        """Decode one forward-protocol message into records (a bad one becomes one dead letter)."""
        self.messages += 1
        chunk = None
        try:
            if not isinstance(msg, (list, tuple)) or len(msg) < 2:
                raise ForwardError("a message must be an array [tag, time, record] or [tag, entries, option]")
            tag, second = msg[0], msg[1]
            entries = isinstance(second, (list, bytes, str))  # Forward / PackedForward, else Message mode
            n_fields = 2 if entries else 3
            option = msg[n_fields] if len(msg) > n_fields else None
            if isinstance(msg[-1], dict) and len(msg) == 4:
                option = msg[-1]  # even in a malformed message: its chunk is acked once dead-lettered
            chunk = option.get("chunk") if isinstance(option, dict) else None
            if len(msg) not in (n_fields, n_fields + 1):
                raise ForwardError(
                    "Forward mode is [tag, entries, option?]"
                    if entries
                    else "Message mode is [tag, time, record, option?]"
                )
            if option is not None and not isinstance(option, dict):
                raise ForwardError("option: must be a map")
            if not isinstance(tag, str):
                raise ForwardError("tag: must be a string")
            if option and option.get("fluent_signal", 0) not in (0, None):
                raise ForwardError(f"fluent_signal {option.get('fluent_signal')}: only logs are accepted")
            if isinstance(second, list):
                self._entries(tag, second)
            elif entries:
                self._packed(tag, second.encode() if isinstance(second, str) else second, option)
            else:
                self._record(tag, second, msg[2], msg)
        except ForwardError as exc:
            self.bad += 1
            self.fail(msg, str(exc))
        if chunk is not None:
            self.acks.append(chunk)

    def _packed(self, tag: str, data: bytes, option: dict[str, Any] | None) -> None:
        compressed = option.get("compressed") if option else None
        if compressed == "gzip":
            data = gunzip_members(data, self.limit)
        elif compressed not in (None, "text"):
            raise ForwardError(f"compressed: {compressed!r} is not supported (gzip is)")
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=max(len(data), 1))
        unpacker.feed(data)
        try:
            entries = list(unpacker)
        except (ValueError, msgpack.UnpackException) as exc:
            raise ForwardError(f"packed entries are not MessagePack: {exc}") from None
        self._entries(tag, entries)

    def _entries(self, tag: str, entries: list[Any]) -> None:
        """Forward / PackedForward entries. The loop body is the common case inlined (an
        EventTime and a map): it runs for every record of the busiest input paths."""
        mapping, values, raws = self.mapping, self.values, self.raws
        ext, unpack_time = msgpack.ExtType, _EVENT_TIME.unpack
        for entry in entries:
            if type(entry) is not list or len(entry) != 2:
                self.fail((tag, entry), "an entry must be [time, record]")
                continue
            time_value, record = entry
            if type(time_value) is ext and time_value.code == 0 and len(time_value.data) == 8 and type(record) is dict:
                seconds, nanos = unpack_time(time_value.data)
                try:
                    when = iso_from_epoch(seconds, nanos)
                except ValueError:
                    self.fail((tag, entry), f"time: out of range ({seconds} s, {nanos} ns)")
                    continue
                for key, value in record.items():
                    if type(value) is bytes:  # a bin value (old clients): text, as every other field is
                        record[key] = value.decode("utf-8", errors="replace")
                out = map_document(record, mapping, defaults={"timestamp": when, "service": tag})
                existing = out.get("metadata")
                out["metadata"] = {"fluent_tag": tag, **existing} if type(existing) is dict else {"fluent_tag": tag}
                values.append(out)
                raws.append((tag, entry))
            else:
                self._record(tag, time_value, record, (tag, entry))

    def _record(self, tag: str, time_value: Any, record: Any, raw: Any) -> None:
        meta: dict[str, Any] | None = None
        if (
            type(time_value) is list and len(time_value) == 2
        ):  # Fluent Bit [[time, metadata], record] (ExtType is a tuple)
            time_value, extra = time_value
            if isinstance(extra, dict) and extra:
                meta = {"fluent_metadata": extra}
        try:
            seconds, nanos = event_time(time_value)
            when = iso_from_epoch(seconds, nanos)
        except (ForwardError, ValueError, OverflowError, OSError) as exc:
            reason = str(exc) if isinstance(exc, ForwardError) else f"time: out of range ({time_value!r})"
            self.fail(raw, reason)
            return
        if not isinstance(record, dict):
            self.fail(raw, "record: must be a map")
            return
        for key, value in record.items():
            if type(value) is bytes:  # a bin value (old clients): text, as every other field is
                record[key] = value.decode("utf-8", errors="replace")
        out = map_document(record, self.mapping, defaults={"timestamp": when, "service": tag})
        existing = out.get("metadata")
        extra_meta = {"fluent_tag": tag, **(meta or {})}
        out["metadata"] = {**extra_meta, **existing} if isinstance(existing, dict) else extra_meta
        self.values.append(out)
        self.raws.append(raw)

    def parsed(self) -> Parsed:
        """The records as the pipeline takes them."""
        raws = self.raws
        return Parsed(self.values, self.failures, lambda i: render(_raw_value(raws[i])))


def _raw_value(raw: Any) -> Any:
    """What a dead letter shows: an entry (kept as (tag, entry) while decoding) as [tag, time, record]."""
    if type(raw) is tuple:
        tag, entry = raw
        return [tag, *entry] if type(entry) is list else [tag, entry]
    return raw


def _hexdigest(*parts: str | bytes) -> str:
    h = hashlib.sha512()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
    return h.hexdigest()


class FluentServer:
    """The forward-protocol TCP listener; a runtime component (`start()`/`stop()`)."""

    name = "fluent"

    def __init__(
        self, pipeline: IngestPipeline, mapping: Callable[[], FieldMapping] | FieldMapping, config: FluentConfig
    ) -> None:
        self.pipeline = pipeline
        # A callable so a config reload's new mapping applies to the next message.
        self._mapping = mapping if callable(mapping) else (lambda: mapping)
        self.config = config
        self.stats = FluentStats()
        self.port: int | None = None
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task[Any]] = set()
        self._closing = False

    @property
    def address(self) -> str:
        """host:port being listened on."""
        host = f"[{self.config.host}]" if ":" in self.config.host else self.config.host
        return f"{host}:{self.port}"

    async def start(self) -> None:
        """Bind the configured port (0 picks a free one; see `port`)."""
        self._server = await asyncio.start_server(self._handle, self.config.host, self.config.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("fluent forward listening", extra={"address": self.address})

    async def stop(self) -> None:
        """Stop accepting, then end the connections (unacked chunks are resent by their clients)."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        for task in list(self._conns):
            task.cancel()
        if self._conns:
            await asyncio.gather(*self._conns, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._conns.add(task)
        self.stats.connections += 1
        self.stats.open_connections += 1
        try:
            if self.config.shared_key is not None and not await self._handshake(reader, writer):
                return
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.CancelledError, asyncio.IncompleteReadError):
            pass
        except Exception as exc:  # one connection's bug must never take the listener down
            log.exception("fluent connection failed")
            self.stats.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            self.stats.open_connections -= 1
            writer.close()
            if task is not None:
                self._conns.discard(task)

    async def _reject_stream(self, data: bytes, reason: str) -> None:
        """Dead-letter bytes that are not MessagePack (the connection is closed after this)."""
        self.stats.bad_frames += 1
        raw = "base64:" + base64.b64encode(data[:4096]).decode()
        with contextlib.suppress(Backpressure, StorageError):
            await self.pipeline.reject_whole(raw, f"fluent: {reason}", SOURCE)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        limit = self.config.max_chunk_bytes
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=limit)
        while not self._closing:
            data = await reader.read(_READ_BYTES)
            if not data:
                return
            try:
                unpacker.feed(data)
            except msgpack.BufferFull:
                await self._reject_stream(data, f"message larger than max_chunk_bytes ({limit})")
                return
            if len(data) > _THREAD_BYTES:
                batch, broken = await anyio.to_thread.run_sync(self._decode, unpacker)
            else:
                batch, broken = self._decode(unpacker)
            self.stats.messages += batch.messages
            self.stats.bad_frames += batch.bad
            if len(batch) and not await self._commit(batch):
                return  # shutting down: no ack, the client resends
            for chunk in batch.acks:
                writer.write(msgpack.packb({"ack": chunk}))
            self.stats.acks += len(batch.acks)
            if batch.acks:
                await writer.drain()
            if broken is not None:
                await self._reject_stream(data, broken)
                return

    def _decode(self, unpacker: msgpack.Unpacker) -> tuple[Batch, str | None]:
        """Every complete message buffered so far, and why the stream broke (None when intact)."""
        batch = Batch(self._mapping(), self.config.max_chunk_bytes)
        broken = None
        try:
            for msg in unpacker:
                batch.message(msg)
        # FormatError, StackError, ExtraData ...; TypeError: a map keyed by an array or map
        # (valid MessagePack, but no Python dict can hold it)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            broken = f"not MessagePack ({type(exc).__name__}: {exc}); connection closed"
        return batch, broken

    async def _commit(self, batch: Batch) -> bool:
        """Ingest until committed (False when the server is shutting down first). Under
        backpressure nothing is read meanwhile, so TCP flow control slows the sender."""
        parsed = batch.parsed()
        while True:
            try:
                result = await self.pipeline.ingest(parsed, SOURCE)
            except (Backpressure, StorageError) as exc:
                self.stats.errors.append(str(exc))
                if self._closing or self.pipeline.draining:
                    return False
                await asyncio.sleep(min(exc.retry_after, _MAX_RETRY_WAIT_S))
                continue
            self.stats.records += len(batch)
            self.stats.committed += result.accepted
            self.stats.rejected += result.rejected
            return True

    async def _handshake(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """HELO → PING → PONG (forward protocol v1); False (connection to close) on failure."""
        key = self.config.shared_key or ""
        nonce = os.urandom(16)
        writer.write(msgpack.packb(["HELO", {"nonce": nonce, "auth": "", "keepalive": True}]))
        await writer.drain()
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=64 * 1024)
        ping: Any = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _HANDSHAKE_TIMEOUT_S
        while ping is None:
            data = await asyncio.wait_for(reader.read(4096), max(deadline - loop.time(), 0.001))
            if not data:
                return False
            try:
                unpacker.feed(data)
                ping = next(iter(unpacker), None)
            except (ValueError, msgpack.UnpackException, msgpack.BufferFull):
                ping = False
        ok, reason = False, "PING expected: ['PING', hostname, salt, digest, username, password]"
        if isinstance(ping, list) and len(ping) >= 4 and ping[0] == "PING":
            hostname, salt, digest = ping[1], ping[2], ping[3]
            if isinstance(hostname, str) and isinstance(salt, (str, bytes)) and isinstance(digest, str):
                ok = hmac.compare_digest(digest, _hexdigest(salt, hostname, nonce, key))
                reason = "" if ok else "shared_key mismatch"
                if ok:
                    mine = _hexdigest(salt, self.config.self_hostname, nonce, key)
                    writer.write(msgpack.packb(["PONG", True, "", self.config.self_hostname, mine]))
                    await writer.drain()
                    return True
        # Nothing from an unauthenticated peer is stored (not even as a dead letter): counted and logged.
        self.stats.auth_failures += 1
        log.warning("fluent handshake failed", extra={"reason": reason})
        writer.write(msgpack.packb(["PONG", False, reason, "", ""]))
        await writer.drain()
        return False
