"""Follow NDJSON files (`loglens tail PATH...` and `ingest.files`), surviving rotation.

Guarantees:
- At-least-once: the offset checkpoint of a file is written only after the lines before it are
  committed, so a crash re-reads lines and never skips them.
- Rotation by rename (logrotate `create`, RotatingFileHandler): the old file is read to its end
  through the open handle, then the new file from offset 0. After a restart, a checkpoint
  pointing at an inode that moved is found again among the path's siblings (`app.log.1`).
- Rotation by copytruncate: a file shorter than the committed offset is read again from 0
  (lines written between the last read and the truncation are lost; that is copytruncate's
  own race, which is why rename rotation is preferred).
- A partial last line is left until its newline arrives; a line longer than `max_line_bytes`
  goes to dead-letter (truncated) and reading goes on after its newline.
Each line is JSON mapped with `protocols.mapping.tail`; a line that is not JSON is dead-lettered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from loglens.config import FieldMapping, Settings, TailConfig
from loglens.errors import Backpressure, StorageError
from loglens.ingest.mapping import map_line
from loglens.ingest.pipeline import IngestPipeline, LocalPipeline
from loglens.models import Parsed, malformed_json

log = logging.getLogger("loglens.tail")

SOURCE = "tail"
_READ_BYTES = 4 * 1024 * 1024
Sink = Callable[[Parsed], Awaitable[Any]]


@dataclass
class _Follow:
    """One followed path: the open handle and the committed offset in it."""

    path: Path
    fh: BinaryIO | None = None
    dev: int = 0
    ino: int = 0
    offset: int = 0
    draining: bool = False  # the path now names another file; finish this one, then switch
    seen: list[tuple[int, int]] = field(default_factory=list)  # (dev, ino) of files read to their end


class Checkpoints:
    """`{path: {dev, ino, offset}}` in a JSON file, replaced atomically on every save."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.data: dict[str, dict[str, int]] = orjson.loads(path.read_bytes())
        except FileNotFoundError:
            self.data = {}
        except (orjson.JSONDecodeError, OSError) as exc:
            log.warning("unreadable tail checkpoint file; starting from the beginning", extra={"error": str(exc)})
            self.data = {}

    def get(self, path: Path) -> dict[str, int] | None:
        """The saved position of `path`, if any."""
        return self.data.get(str(path))

    def save(self, path: Path, dev: int, ino: int, offset: int) -> None:
        """Record that everything before `offset` in (dev, ino) is committed."""
        self.data[str(path)] = {"dev": dev, "ino": ino, "offset": offset}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("wb") as fh:
            fh.write(orjson.dumps(self.data))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)


def _find_by_inode(path: Path, dev: int, ino: int) -> Path | None:
    """A rotated sibling (`app.log.1`, `app.log-2026...`) that is the file the checkpoint meant."""
    with contextlib.suppress(OSError):
        for cand in sorted(path.parent.glob(path.name + "*")):
            st = cand.stat()
            if st.st_ino == ino and st.st_dev == dev:
                return cand
    return None


def decode_lines(lines: list[bytes], mapping: FieldMapping, max_line_bytes: int) -> Parsed:
    """Parsed records for NDJSON lines; undecodable or oversized lines become failures."""
    values: list[Any] = []
    failures: dict[int, str] = {}
    for i, line in enumerate(lines):
        if len(line) > max_line_bytes:
            failures[i] = f"line of {len(line)} bytes exceeds max_line_bytes ({max_line_bytes})"
            values.append(None)
            continue
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            failures[i] = malformed_json(line, exc)
            values.append(None)
            continue
        values.append(map_line(value, mapping) if isinstance(value, dict) else value)
    return Parsed(values, failures, lambda i: lines[i][:65536].decode("utf-8", errors="replace"))


class Tailer:
    """Follows a set of files and hands their new lines to `sink` in committed batches."""

    def __init__(
        self, paths: list[Path], sink: Sink, mapping: FieldMapping, config: TailConfig, checkpoint_path: Path
    ) -> None:
        self.follows = [_Follow(Path(p).absolute()) for p in paths]
        self.sink = sink
        self.mapping = mapping
        self.config = config
        self.checkpoints = Checkpoints(checkpoint_path)
        self.committed = 0
        self._stop = asyncio.Event()

    async def run(self) -> None:
        """Poll until `stop()`; errors of one poll are logged and retried, never fatal."""
        interval = self.config.poll_interval_ms / 1000
        while not self._stop.is_set():
            try:
                moved = await self.poll_once()
            except (Backpressure, StorageError) as exc:
                await self._sleep(min(exc.retry_after, 5))
                continue
            if not moved:
                await self._sleep(interval)
        for f in self.follows:
            if f.fh is not None:
                f.fh.close()
                f.fh = None

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    def stop(self) -> None:
        """Ask `run()` to return after the current batch."""
        self._stop.set()

    async def poll_once(self) -> int:
        """Read and commit what is new in every file; returns the number of lines committed."""
        total = 0
        for f in self.follows:
            total += await self._poll_file(f)
        self.committed += total
        return total

    def _open(self, f: _Follow) -> bool:
        """Open the path, resuming from the checkpoint, or first finish the file it pointed at."""
        try:
            fh = f.path.open("rb")
        except (FileNotFoundError, PermissionError):
            return False
        st = os.fstat(fh.fileno())
        saved = self.checkpoints.get(f.path)
        f.fh, f.dev, f.ino, f.offset, f.draining = fh, st.st_dev, st.st_ino, 0, False
        if saved is None or (saved["dev"], saved["ino"]) in f.seen:
            return True
        if saved["ino"] == st.st_ino and saved["dev"] == st.st_dev:
            f.offset = saved["offset"] if saved["offset"] <= st.st_size else 0
            return True
        old = _find_by_inode(f.path, saved["dev"], saved["ino"])
        if old is not None:  # rotated while we were down: finish the old file first
            fh.close()
            self._switch(f, old, saved["offset"])
        return True

    def _switch(self, f: _Follow, path: Path, offset: int) -> None:
        fh = path.open("rb")
        st = os.fstat(fh.fileno())
        f.fh, f.dev, f.ino, f.offset, f.draining = fh, st.st_dev, st.st_ino, offset, True

    def _next_rotated(self, f: _Follow, after_ns: int) -> Path | None:
        """A rotated sibling written after the file just finished and not read yet (several
        rotations between two polls): oldest first, higher numeric suffix first on ties."""
        try:
            current = f.path.stat()
            current_id = (current.st_dev, current.st_ino)
        except FileNotFoundError:
            current_id = (-1, -1)
        best: tuple[tuple[int, int], Path] | None = None
        with contextlib.suppress(OSError):
            for cand in f.path.parent.glob(f.path.name + ".*"):
                st = cand.stat()
                ident = (st.st_dev, st.st_ino)
                if ident in f.seen or ident == current_id or st.st_mtime_ns < after_ns:
                    continue
                suffix = cand.name.rsplit(".", 1)[-1]
                key = (st.st_mtime_ns, -int(suffix) if suffix.isdigit() else 0)
                if best is None or key < best[0]:
                    best = (key, cand)
        return best[1] if best else None

    async def _poll_file(self, f: _Follow) -> int:
        if f.fh is None and not self._open(f):
            return 0
        assert f.fh is not None
        if not f.draining:
            try:
                st = f.path.stat()
            except FileNotFoundError:
                st = None
            if st is not None and (st.st_ino != f.ino or st.st_dev != f.dev):
                f.draining = True  # renamed away: read the rest of the old file via the open handle
            elif st is not None and st.st_size < f.offset:
                log.info("file truncated (copytruncate); reading from the start", extra={"path": str(f.path)})
                f.offset = 0
                self.checkpoints.save(f.path, f.dev, f.ino, 0)
        done = 0
        while True:
            lines, consumed = self._read_lines(f)
            if not consumed:
                break
            if lines:
                parsed = decode_lines(lines, self.mapping, self.config.max_line_bytes)
                await self.sink(parsed)  # returns only after commit: then the checkpoint may move
            f.offset += consumed
            self.checkpoints.save(f.path, f.dev, f.ino, f.offset)
            done += len(lines)
        if f.draining:
            finished_ns = os.fstat(f.fh.fileno()).st_mtime_ns
            f.fh.close()
            f.fh = None
            f.seen = [*f.seen[-99:], (f.dev, f.ino)]
            nxt = self._next_rotated(f, finished_ns)
            if nxt is not None:
                self._switch(f, nxt, 0)
            else:
                if not self._open(f):
                    return done
                # A rotation between the scan above and the open would hand us the newest file
                # and skip the one rotated in between: re-scan, and read any such file first.
                missed = self._next_rotated(f, finished_ns)
                if missed is not None:
                    assert f.fh is not None
                    f.fh.close()
                    self._switch(f, missed, 0)
            done += await self._poll_file(f)
        return done

    def _read_lines(self, f: _Follow) -> tuple[list[bytes], int]:
        """Complete lines after the committed offset (≤ batch_lines) and the bytes they span."""
        assert f.fh is not None
        f.fh.seek(f.offset)
        data = f.fh.read(_READ_BYTES)
        if not data:
            return [], 0
        end = data.rfind(b"\n")
        if end < 0:
            if len(data) > self.config.max_line_bytes:
                return self._skip_long_line(f, data)
            if f.draining:  # the writer moved on: a last line without newline is complete
                return [data], len(data)
            return [], 0
        lines: list[bytes] = []
        pos = 0
        limit = self.config.batch_lines
        while pos <= end and len(lines) < limit:
            nl = data.index(b"\n", pos)
            line = data[pos:nl].rstrip(b"\r")
            if line.strip():
                lines.append(line)
            pos = nl + 1
        return lines, pos  # lines may be empty when only blank lines were consumed

    def _skip_long_line(self, f: _Follow, head: bytes) -> tuple[list[bytes], int]:
        """A line longer than max_line_bytes: dead-letter its start, resume after its newline."""
        assert f.fh is not None
        size = len(head)
        while True:
            chunk = f.fh.read(_READ_BYTES)
            if not chunk:
                if f.draining:
                    return [head[: self.config.max_line_bytes + 1]], size
                return [], 0  # its newline has not arrived yet
            nl = chunk.find(b"\n")
            if nl >= 0:
                return [head[: self.config.max_line_bytes + 1]], size + nl + 1
            size += len(chunk)


def pipeline_sink(pipeline: IngestPipeline) -> Sink:
    """A sink committing into a local IngestPipeline (retrying under backpressure)."""

    async def sink(parsed: Parsed) -> Any:
        while True:
            try:
                return await pipeline.ingest(parsed, SOURCE)
            except Backpressure as exc:
                await asyncio.sleep(min(exc.retry_after, 5))

    return sink


def http_sink(url: str, token: str | None = None) -> tuple[Sink, Callable[[], Awaitable[None]]]:
    """A sink posting NDJSON to a loglens server (answered after commit); and its close function."""
    import httpx

    headers = {"Content-Type": "application/x-ndjson"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    client = httpx.AsyncClient(base_url=url, timeout=60, headers=headers)

    async def sink(parsed: Parsed) -> Any:
        body = b"\n".join(
            parsed.raw(i).encode() if i in parsed.failures else orjson.dumps(v) for i, v in enumerate(parsed.values)
        )
        while True:
            resp = await client.post("/api/v1/logs", content=body)
            if resp.status_code in (429, 503):
                await asyncio.sleep(float(resp.headers.get("retry-after", "1")))
                continue
            resp.raise_for_status()
            return resp.json()

    return sink, client.aclose


def default_checkpoint_path(config: TailConfig, store_path: Path) -> Path:
    """Where offsets live: configured, or next to the store."""
    return config.checkpoint_path or Path(store_path).parent / "tail-checkpoints.json"


async def run_tail(
    paths: list[Path],
    settings: Settings,
    *,
    url: str | None = None,
    token: str | None = None,
    checkpoint: Path | None = None,
    once: bool = False,
    local: LocalPipeline | None = None,
) -> int:
    """`loglens tail`: follow `paths` into a server (`url`) or the local store; returns lines committed.

    With `once`, read what is there now and return (cron-style); otherwise follow until cancelled.
    Without `url`, lines go into the local store through `local(settings)`.
    """
    async with contextlib.AsyncExitStack() as stack:
        if url:
            sink, close = http_sink(url, token)
            stack.push_async_callback(close)
        elif local is not None:
            sink = pipeline_sink(await stack.enter_async_context(local(settings)))
        else:
            raise ValueError("run_tail needs a url or a local pipeline")
        tail_cfg = settings.protocols.tail
        ckpt = checkpoint or default_checkpoint_path(tail_cfg, settings.storage.path)
        tailer = Tailer(paths, sink, settings.protocols.mapping.tail, tail_cfg, ckpt)
        if once:
            while await tailer.poll_once():
                pass
        else:
            await tailer.run()
    return tailer.committed
