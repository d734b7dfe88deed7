"""Write-ahead log: segment files of checksummed frames, appended and fsynced by one writer.

A *frame* is everything one group commit made durable: the accepted logs (with their ids), the
dead letters (with their ids), the idempotency keys of the requests in the group and the ids
of dead letters a replay re-ingested. A frame is all-or-nothing: the loader applies it in one
DuckDB transaction, so a replayed request's keys and logs can never be split by a crash.

Layout on disk (little endian)::

    frame   = header payload
    header  = magic "LLW1" | payload_len u32 | n_logs u32 | first_log_id u64
              | n_dead u32 | first_dead_id u64 | crc u32            (36 bytes)
    payload = section*        section = kind u8 | len u32 | bytes
              kind 1: metadata (JSON: keys, replayed dead-letter ids)
              kind 2: logs, one Arrow IPC stream
              kind 3: dead letters, one Arrow IPC stream

`crc` is CRC32C (hardware accelerated by the `crc32c` package) over the header fields before it
and the whole payload, so a torn or partly written frame is recognised and dropped. Positions
are LSNs: byte offsets in one endless log; a segment file is named after the LSN of its first
byte (`<lsn:020d>.seg`) and is removed once the loader has committed everything in it.

Arrow IPC is the frame body because the batch already is an Arrow table: writing it is one
memory copy (no per-row encoding) and reading it back is one copy per section (no decoding),
so the loader hands DuckDB the very same columns the request produced. The only part that is not Arrow is the small JSON
metadata section.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import crc32c
import orjson
import pyarrow as pa

log = logging.getLogger("loglens.store.wal")

MAGIC = b"LLW1"
_HEADER = struct.Struct("<4sIIQIQ")  # fields covered by the CRC
_CRC = struct.Struct("<I")
HEADER_SIZE = _HEADER.size + _CRC.size
_SECTION = struct.Struct("<BI")
_KIND_META, _KIND_LOGS, _KIND_DEAD = 1, 2, 3
SEGMENT_SUFFIX = ".seg"
# A frame larger than this cannot be real (max_body_bytes is 10 MB by default): treat as torn.
MAX_FRAME_BYTES = 1 << 31


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """An idempotency key acknowledged in a frame, with what its request stored."""

    key: str
    accepted: int
    rejected: int
    received_us: int


@dataclass(slots=True)
class Frame:
    """One group commit: logs (id column first), dead letters (id column first), keys, replays."""

    logs: pa.Table | None
    dead: pa.Table | None
    keys: list[KeyRecord] = field(default_factory=list)
    replayed_dead_ids: list[int] = field(default_factory=list)
    replayed_at_us: int = 0
    first_log_id: int = 0
    first_dead_id: int = 0

    @property
    def n_logs(self) -> int:
        """Logs in this frame."""
        return self.logs.num_rows if self.logs is not None else 0

    @property
    def n_dead(self) -> int:
        """Dead letters in this frame."""
        return self.dead.num_rows if self.dead is not None else 0


@dataclass(frozen=True, slots=True)
class FrameAt:
    """A frame read back from the log, with where it starts and ends (LSNs)."""

    lsn: int
    end: int
    frame: Frame


@dataclass(frozen=True, slots=True)
class EncodedFrame:
    """A frame ready to append: its pieces in order (header first) and its size in bytes.

    The pieces are written with one `writev`, so the Arrow IPC bodies are never copied into
    one contiguous frame in memory (a group commit is megabytes).
    """

    parts: tuple[bytes | pa.Buffer, ...]
    size: int

    def __len__(self) -> int:
        return self.size

    def __bytes__(self) -> bytes:
        return b"".join(bytes(p) if isinstance(p, pa.Buffer) else p for p in self.parts)


_SMALL_IPC_ROWS = 1024


def _ipc(table: pa.Table) -> pa.Buffer:
    """One Arrow IPC stream of `table`, uncompressed, written once into a buffer of its exact size.

    Uncompressed because ingest is CPU-bound and the disk is not: LZ4 would halve the bytes
    (~175 → ~100 per log) for ~0.03 µs per log to write and as much to read back, while the
    fsync of a multi-megabyte group commit is I/O the CPUs do not wait on.
    """
    if table.num_rows < _SMALL_IPC_ROWS:
        # A small group (one-log requests): one pass into a growing buffer costs half of
        # measuring then writing, and the copy that measuring avoids is a few hundred bytes.
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return sink.getvalue()
    counter = pa.MockOutputStream()
    with pa.ipc.new_stream(counter, table.schema) as writer:
        writer.write_table(table)
    out = pa.allocate_buffer(counter.size())
    with pa.ipc.new_stream(pa.FixedSizeBufferWriter(out), table.schema) as writer:
        writer.write_table(table)
    return out


def encode_frame(frame: Frame) -> EncodedFrame:
    """Serialise a frame (header with checksum + payload) as pieces for `Wal.append`."""
    parts: list[bytes | pa.Buffer] = []
    meta: dict[str, object] = {}
    if frame.keys:
        meta["keys"] = [[k.key, k.accepted, k.rejected, k.received_us] for k in frame.keys]
    if frame.replayed_dead_ids:
        meta["replayed"] = frame.replayed_dead_ids
        meta["replayed_at"] = frame.replayed_at_us
    if meta:
        body = orjson.dumps(meta)
        parts += [_SECTION.pack(_KIND_META, len(body)), body]
    for kind, table in ((_KIND_LOGS, frame.logs), (_KIND_DEAD, frame.dead)):
        if table is not None and table.num_rows:
            ipc = _ipc(table)
            parts += [_SECTION.pack(kind, ipc.size), ipc]
    length = sum(len(p) if isinstance(p, bytes) else p.size for p in parts)
    head = _HEADER.pack(MAGIC, length, frame.n_logs, frame.first_log_id, frame.n_dead, frame.first_dead_id)
    crc = crc32c.crc32c(head)
    for part in parts:
        crc = crc32c.crc32c(part, crc)
    return EncodedFrame((head + _CRC.pack(crc), *parts), HEADER_SIZE + length)


def encode(frame: Frame) -> bytes:
    """Serialise a frame (header with checksum + payload) into one bytes object."""
    return bytes(encode_frame(frame))


def decode_payload(header: bytes, payload: bytes) -> Frame:
    """The frame a verified header and payload describe."""
    _, _, _n_logs, first_log_id, _n_dead, first_dead_id = _HEADER.unpack_from(header)
    frame = Frame(None, None, first_log_id=first_log_id, first_dead_id=first_dead_id)
    view = memoryview(payload)
    pos = 0
    while pos < len(view):
        kind, length = _SECTION.unpack_from(view, pos)
        pos += _SECTION.size
        body = view[pos : pos + length]
        pos += length
        if kind == _KIND_META:
            meta = orjson.loads(bytes(body))
            frame.keys = [KeyRecord(str(k), int(a), int(r), int(t)) for k, a, r, t in meta.get("keys", [])]
            frame.replayed_dead_ids = [int(i) for i in meta.get("replayed", [])]
            frame.replayed_at_us = int(meta.get("replayed_at", 0))
        elif kind in (_KIND_LOGS, _KIND_DEAD):
            # a copy: a section starts at an odd offset of the frame, and Arrow (Acero) needs
            # its columns aligned, which a new bytes object is
            table = pa.ipc.open_stream(pa.py_buffer(bytes(body))).read_all()
            if kind == _KIND_LOGS:
                frame.logs = table
            else:
                frame.dead = table
    return frame


def _verify(header: bytes, payload: bytes) -> bool:
    (crc,) = _CRC.unpack_from(header, _HEADER.size)
    return bool(crc32c.crc32c(payload, crc32c.crc32c(header[: _HEADER.size])) == crc)


def _parse_header(header: bytes) -> tuple[int, int, int, int, int] | None:
    """(payload_len, n_logs, first_log_id, n_dead, first_dead_id), or None if it is no header."""
    if len(header) < HEADER_SIZE:
        return None
    magic, length, n_logs, first_log_id, n_dead, first_dead_id = _HEADER.unpack_from(header)
    if magic != MAGIC or length > MAX_FRAME_BYTES:
        return None
    return length, n_logs, first_log_id, n_dead, first_dead_id


@dataclass(slots=True)
class ScanResult:
    """What `Wal.open()` found: the end of the valid log and what unloaded frames hold."""

    end_lsn: int = 0
    frames: int = 0
    torn_bytes: int = 0
    max_log_id: int = 0
    max_dead_id: int = 0
    keys: list[KeyRecord] = field(default_factory=list)
    replayed_dead_ids: list[int] = field(default_factory=list)


def _scan_meta(payload: bytes, result: ScanResult) -> None:
    """Collect the keys and replayed ids of an unloaded frame (its metadata section comes first)."""
    if len(payload) < _SECTION.size:
        return
    kind, length = _SECTION.unpack_from(payload, 0)
    if kind != _KIND_META or _SECTION.size + length > len(payload):
        return
    meta = orjson.loads(payload[_SECTION.size : _SECTION.size + length])
    result.keys += [KeyRecord(str(k), int(a), int(r), int(t)) for k, a, r, t in meta.get("keys", [])]
    result.replayed_dead_ids += [int(i) for i in meta.get("replayed", [])]


def fsync_dir(path: Path) -> None:
    """Make a file creation, rename or removal in `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Wal:
    """The segment files of one store. Appends come from one thread; reads from any."""

    def __init__(self, directory: Path, segment_bytes: int = 64 << 20) -> None:
        self.dir = directory
        self.segment_bytes = segment_bytes
        self._fd: int | None = None
        self._segment_start = 0  # LSN of the first byte of the open segment
        self.end_lsn = 0  # LSN after the last durable (fsynced) frame
        self.start_lsn = 0  # LSN of the oldest byte still on disk

    # ---- segments ------------------------------------------------------------------------------
    def segments(self) -> list[tuple[int, Path]]:
        """(start LSN, path) of every segment file, oldest first."""
        out = []
        for p in self.dir.glob(f"*{SEGMENT_SUFFIX}"):
            with contextlib.suppress(ValueError):
                out.append((int(p.stem), p))
        return sorted(out)

    def size_bytes(self) -> int:
        """Bytes of segment files on disk (they hold exactly the LSNs from start_lsn to end_lsn)."""
        return max(0, self.end_lsn - self.start_lsn)

    def open(self, from_lsn: int) -> ScanResult:
        """Find the end of the log after a (re)start; drop a torn tail and loaded segments.

        Frames before `from_lsn` are already in DuckDB. Every frame from there on is read and
        checksummed, so the scan also reports the highest ids the WAL holds; the first frame
        that is incomplete or fails its checksum ends the log (it was never acknowledged,
        because the acknowledgement waits for the fsync that would have made it whole).
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        result = ScanResult(end_lsn=from_lsn)
        segments = self.segments()
        if not segments:
            self._create_segment(from_lsn)
            self.start_lsn = self.end_lsn = from_lsn
            return result
        end = segments[0][0]
        last_path = segments[-1][1]
        for i, (start, path) in enumerate(segments):
            nxt = segments[i + 1][0] if i + 1 < len(segments) else None
            size = path.stat().st_size
            if nxt is not None and start + size <= from_lsn:
                continue  # wholly loaded: removed below
            end = start
            # Closed segments were complete when the next one was created (after an fsync): read
            # only headers and metadata there; checksum every frame of the newest segment, the
            # only place a torn frame can be. (The loader verifies every frame it loads.)
            verify = path == last_path
            with path.open("rb") as f:
                if start < from_lsn:
                    f.seek(from_lsn - start)  # a frame boundary: DuckDB holds everything before it
                    end = from_lsn
                while True:
                    header = f.read(HEADER_SIZE)
                    parsed = _parse_header(header)
                    if parsed is None:
                        break
                    if verify:
                        payload = f.read(parsed[0])
                        if len(payload) != parsed[0] or not _verify(header, payload):
                            break
                    else:
                        frame_end = end - start + HEADER_SIZE + parsed[0]
                        if frame_end > size:
                            break
                        payload = f.read(_SECTION.size) if parsed[0] >= _SECTION.size else b""
                        if len(payload) == _SECTION.size and payload[0] == _KIND_META:
                            payload += f.read(_SECTION.unpack(payload)[1])
                        f.seek(frame_end)
                    end = start + f.tell()
                    result.frames += 1
                    if parsed[1]:
                        result.max_log_id = max(result.max_log_id, parsed[2] + parsed[1] - 1)
                    if parsed[3]:
                        result.max_dead_id = max(result.max_dead_id, parsed[4] + parsed[3] - 1)
                    _scan_meta(payload, result)
            if end - start < size:
                if path != last_path:
                    # Only the newest segment can be torn (a segment is closed after an fsync).
                    log.error("WAL segment damaged before its end", extra={"segment": str(path), "at": end})
                result.torn_bytes += size - (end - start)
                with open(path, "r+b") as f:
                    f.truncate(end - start)
                    os.fsync(f.fileno())
                if path != last_path:
                    for _, later in segments[i + 1 :]:
                        later.unlink()
                    last_path = path
                    break
        result.end_lsn = max(end, from_lsn)
        self.end_lsn = result.end_lsn
        self._segment_start = int(last_path.stem)
        if self._segment_start + last_path.stat().st_size != self.end_lsn:
            # The store is ahead of the files (segments removed by hand): start a fresh segment.
            self._create_segment(self.end_lsn)
        else:
            self._fd = os.open(last_path, os.O_WRONLY | os.O_APPEND)
        self.remove_loaded(from_lsn)
        return result

    def _create_segment(self, lsn: int) -> None:
        path = self.dir / f"{lsn:020d}{SEGMENT_SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fsync_dir(self.dir)
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):
                path.unlink()
            raise
        if self._fd is not None:
            os.close(self._fd)
        self._fd = fd
        self._segment_start = lsn

    def remove_loaded(self, loaded_lsn: int) -> int:
        """Delete segments whose every byte is below `loaded_lsn` (never the open one)."""
        removed = 0
        segments = self.segments()
        for i, (start, path) in enumerate(segments[:-1]):
            if segments[i + 1][0] <= loaded_lsn and start != self._segment_start:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                removed += 1
        remaining = self.segments()
        self.start_lsn = remaining[0][0] if remaining else self.end_lsn
        return removed

    # ---- append (writer thread only) -----------------------------------------------------------
    def append(self, data: bytes | EncodedFrame) -> int:
        """Write one encoded frame and fsync it; returns the LSN after it. Raises OSError.

        On failure the segment is cut back to the last durable frame, so a half-written frame
        never sits in front of the next one.
        """
        if self._fd is None:
            raise OSError("WAL is closed")
        if self.end_lsn - self._segment_start >= self.segment_bytes:
            self._create_segment(self.end_lsn)
        fd = self._fd
        try:
            if isinstance(data, EncodedFrame):
                written = os.writev(fd, data.parts)
                rest = memoryview(bytes(data)[written:]) if written < data.size else memoryview(b"")
            else:
                rest = memoryview(data)
            while rest:  # a short write (signal, nearly full disk): write the rest
                written = os.write(fd, rest)
                rest = rest[written:]
            os.fdatasync(fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, self.end_lsn - self._segment_start)
            raise
        self.end_lsn += len(data)
        return self.end_lsn

    def close(self) -> None:
        """Close the open segment."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # ---- read (any thread) ---------------------------------------------------------------------
    def read(self, from_lsn: int, to_lsn: int, max_logs: int) -> Iterator[FrameAt]:
        """Frames starting at `from_lsn` and ending at or before `to_lsn`, up to ~`max_logs` logs."""
        logs = 0
        lsn = from_lsn
        segments = self.segments()
        for i, (start, path) in enumerate(segments):
            nxt = segments[i + 1][0] if i + 1 < len(segments) else None
            if nxt is not None and nxt <= lsn:
                continue
            if start > lsn:
                lsn = start  # an empty tail of the previous segment
            with path.open("rb") as f:
                f.seek(lsn - start)
                while lsn < to_lsn:
                    header = f.read(HEADER_SIZE)
                    parsed = _parse_header(header)
                    if parsed is None:
                        break
                    payload = f.read(parsed[0])
                    if len(payload) != parsed[0] or not _verify(header, payload):
                        raise OSError(f"WAL frame at LSN {lsn} is damaged")
                    end = lsn + HEADER_SIZE + parsed[0]
                    yield FrameAt(lsn, end, decode_payload(header, payload))
                    lsn = end
                    logs += parsed[1] + parsed[3]
                    if logs >= max_logs:
                        return
            if lsn >= to_lsn:
                return
