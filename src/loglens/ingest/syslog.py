"""Syslog receiver: RFC 5424 and RFC 3164 over UDP and TCP (LF/NUL or octet-counted framing).

Mapping: severity → level (0-2 FATAL, 3 ERROR, 4 WARN, 5-6 INFO, 7 DEBUG); APP-NAME (5424) or
TAG (3164) → service; MSG → message; TIMESTAMP → timestamp (a 3164 stamp has no year or zone:
the current year and the server's local zone are assumed; a missing stamp means arrival time);
structured data → `metadata.sd` (`{sd_id: {param: value}}`), and SD params named in
`protocols.mapping.syslog` fill user_id / ip_address / response_time_ms / trace_id; facility,
hostname, procid and msgid → metadata. A 3164 message without `<PRI>` (a line of a syslog file,
`Jun 14 15:16:01 host sshd[42]: ...`) is read as PRI 13, user.notice (RFC 3164 section 4.3.3),
marked `metadata.pri_assumed`; it must carry its stamp and host, and then a tag may end at a
space too (`syslogd 1.4.1: restart.`). A tag such as `sshd(pam_unix)` gives the service `sshd`
and is kept whole in `metadata.tag`. Anything that fits neither RFC
goes to dead-letter.

Datagrams and lines are batched (every `flush_interval_ms` or `flush_records`) into the
ingest pipeline. Syslog has no acknowledgement, so under backpressure a batch is retried after
the store's Retry-After while TCP reading pauses (flow control reaches the sender); UDP
datagrams beyond `max_pending` are dropped and counted, as UDP syslog always may be.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from loglens.config import FieldMapping, SyslogConfig
from loglens.errors import Backpressure, StorageError
from loglens.ingest.pipeline import IngestPipeline
from loglens.models import Parsed

log = logging.getLogger("loglens.syslog")

SOURCE = "syslog"
_UDP_RCVBUF = 8 * 1024 * 1024
_LEVELS = ("FATAL", "FATAL", "FATAL", "ERROR", "WARN", "INFO", "INFO", "DEBUG")
FACILITIES = (
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv",
    "ftp", "ntp", "security", "console", "solaris-cron", "local0", "local1", "local2", "local3",
    "local4", "local5", "local6", "local7",
)  # fmt: skip
_RFC5424 = re.compile(r"<(\d{1,3})>([1-9]\d?) (\S+) (\S+) (\S+) (\S+) (\S+) ?(.*)", re.DOTALL)
_STAMP_3164 = r"[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d"
# TAG[pid]. The tag runs to the `[pid]` or what ends it: Linux daemons write `sshd(pam_unix)`.
_TAG_3164 = r"([A-Za-z0-9][^\s\[\]:]{0,127}?)(?:\[([^\]]{0,64})\])?"
_RFC3164 = re.compile(rf"<(\d{{1,3}})>(?:({_STAMP_3164}) (?:(\S+) )?)?{_TAG_3164}: ?(.*)", re.DOTALL)
# The form of syslog files (`Jun 14 15:16:01 combo sshd[42]: ...`), which some senders forward
# without a PRI: RFC 3164 section 4.3.3 reads such a message as PRI 13 (user.notice). Its stamp
# and host are required, so that free text (`Error: disk full`) is still no syslog; then, as the
# RFC says, any character that is no part of a tag ends it (`syslogd 1.4.1: restart.`).
_RFC3164_FILE = re.compile(rf"(?:<(\d{{1,3}})>)?({_STAMP_3164}) (\S*[^\s:]) {_TAG_3164}(?:: ?| )(.*)", re.DOTALL)
_DEFAULT_PRI = "13"
_SERVICE_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/-]*")
_SD_PARAM = re.compile(r' ([^= \]"]{1,32})="((?:[^"\\]|\\.)*)"')
_SD_UNESCAPE = re.compile(r'\\(["\\\]])')
_MONTHS = {
    m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)
}


class SyslogFormatError(ValueError):
    """A message that fits neither RFC 5424 nor RFC 3164."""


def _nil(value: str) -> str | None:
    return None if value == "-" else value


def parse_structured_data(text: str) -> tuple[dict[str, dict[str, str]], str]:
    """(SD elements, rest of the message) from the text after MSGID; raises on malformed SD."""
    if text.startswith("-"):
        return {}, text[2:] if text.startswith("- ") else text[1:]
    elements: dict[str, dict[str, str]] = {}
    pos = 0
    n = len(text)
    while pos < n and text[pos] == "[":
        end_id = pos + 1
        while end_id < n and text[end_id] not in " ]":
            end_id += 1
        sd_id = text[pos + 1 : end_id]
        if not sd_id or end_id >= n:
            raise SyslogFormatError("malformed structured data element")
        params: dict[str, str] = {}
        pos = end_id
        while pos < n and text[pos] == " ":
            m = _SD_PARAM.match(text, pos)
            if m is None:
                raise SyslogFormatError(f"malformed structured data param in [{sd_id}]")
            value = m.group(2)
            params[m.group(1)] = _SD_UNESCAPE.sub(r"\1", value) if "\\" in value else value
            pos = m.end()
        if pos >= n or text[pos] != "]":
            raise SyslogFormatError(f"structured data element [{sd_id}] is not closed")
        elements[sd_id] = params
        pos += 1
    if pos == 0:
        raise SyslogFormatError("STRUCTURED-DATA must be '-' or start with '['")
    rest = text[pos:]
    return elements, rest[1:] if rest.startswith(" ") else rest


def _pri(value: str) -> tuple[str, str]:
    pri = int(value)
    if pri > 191:
        raise SyslogFormatError(f"PRI {pri} is out of range (0-191)")
    return _LEVELS[pri & 7], FACILITIES[pri >> 3]


def _rfc3164_time(stamp: str, now: datetime) -> str:
    month = _MONTHS.get(stamp[:3])
    if month is None:
        raise SyslogFormatError(f"bad RFC 3164 month in {stamp!r}")
    day = int(stamp[4:6])
    hh, mm, ss = (int(x) for x in stamp[7:].split(":"))
    local = now.astimezone()
    try:
        dt = local.replace(month=month, day=day, hour=hh, minute=mm, second=ss, microsecond=0)
    except ValueError as exc:
        raise SyslogFormatError(f"bad RFC 3164 timestamp {stamp!r}: {exc}") from None
    if (dt - local).days > 1:  # a December stamp read in January belongs to last year
        dt = dt.replace(year=dt.year - 1)
    return dt.isoformat()


def parse_message(text: str, mapping: FieldMapping, now: datetime) -> dict[str, Any]:
    """A schema record from one syslog message; SyslogFormatError when it fits neither RFC."""
    text = text.rstrip("\r\n\x00")
    m = _RFC5424.fullmatch(text)
    if m is not None:
        level, facility = _pri(m.group(1))
        stamp, host, app, procid, msgid = (_nil(m.group(i)) for i in range(3, 8))
        sd, msg = parse_structured_data(m.group(8) or "-")
        if msg.startswith("\ufeff"):
            msg = msg[1:]
        meta: dict[str, Any] = {"facility": facility, "syslog": "rfc5424"}
        for key, value in (("hostname", host), ("procid", procid), ("msgid", msgid)):
            if value is not None:
                meta[key] = value
        out: dict[str, Any] = {"level": level, "message": msg, "timestamp": stamp or now.isoformat()}
        if app is not None:
            out["service"] = app
        elif mapping.default_service:
            out["service"] = mapping.default_service
        for field_name in ("user_id", "ip_address", "response_time_ms", "trace_id"):
            for params in sd.values():
                hit = next((params[c] for c in getattr(mapping, field_name) if c in params), None)
                if hit is not None:
                    out[field_name] = _number(hit) if field_name == "response_time_ms" else hit
                    break
        if sd:
            meta["sd"] = sd
        out["metadata"] = meta
        return out
    m = _RFC3164.fullmatch(text) or _RFC3164_FILE.fullmatch(text)
    if m is not None:
        pri, stamp, host, tag, pid, msg = m.groups()
        pri_sent = pri is not None
        pri = pri or _DEFAULT_PRI
        level, facility = _pri(pri)
        meta = {"facility": facility, "syslog": "rfc3164"}
        if not pri_sent:
            meta["pri_assumed"] = True
        if host:
            meta["hostname"] = host
        if pid:
            meta["procid"] = pid
        # the service is the tag's leading name (`sshd` of `sshd(pam_unix)`); the whole tag is kept
        service = _SERVICE_PART.match(tag)
        assert service is not None  # the tag starts with a letter or digit
        if service.group() != tag:
            meta["tag"] = tag
        return {
            "level": level,
            "service": service.group(),
            "message": msg,
            "timestamp": _rfc3164_time(stamp, now) if stamp else now.isoformat(),
            "metadata": meta,
        }
    raise SyslogFormatError(
        "not RFC 5424 (<PRI>1 TIMESTAMP HOST APP PROCID MSGID SD MSG) "
        "nor RFC 3164 (<PRI>[Mmm dd hh:mm:ss HOST ]TAG[pid]: MSG, or without <PRI> with the stamp and host)"
    )


def _number(value: str) -> Any:
    try:
        return float(value)
    except ValueError:
        return value  # the schema rejects it with the field name


@dataclass
class SyslogStats:
    """Counters for tests, benchmarks and operators."""

    received: int = 0
    committed: int = 0
    rejected: int = 0
    dropped: int = 0
    batches: int = 0
    errors: list[str] = field(default_factory=list)


class Batcher:
    """Collects parsed syslog messages and hands them to the pipeline in batches."""

    def __init__(self, pipeline: IngestPipeline, mapping: FieldMapping, config: SyslogConfig) -> None:
        self.pipeline = pipeline
        self.mapping = mapping
        self.config = config
        self.stats = SyslogStats()
        self._values: list[Any] = []
        self._failures: dict[int, str] = {}
        self._raws: list[str] = []
        self._wake = asyncio.Event()
        self._full = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the flush loop on the running event loop."""
        self._task = asyncio.create_task(self._run(), name="syslog-batcher")

    @property
    def pending(self) -> int:
        """Messages waiting for their batch."""
        return len(self._values)

    def add(self, text: str, *, datagram: bool = False) -> bool:
        """Parse and queue one message; False when a datagram was dropped because the buffer is full."""
        if self.pending >= self.config.max_pending and datagram:
            self.stats.dropped += 1
            return False
        self.stats.received += 1
        idx = len(self._values)
        try:
            self._values.append(parse_message(text, self.mapping, datetime.now().astimezone()))
        except (SyslogFormatError, ValueError) as exc:
            self._values.append(None)
            self._failures[idx] = f"syslog: {exc}"
        self._raws.append(text)
        self._wake.set()
        if self.pending >= self.config.flush_records:
            self._full.set()
        if self.pending >= self.config.max_pending:
            self._room.clear()
        return True

    def add_failure(self, raw: str, reason: str) -> None:
        """Queue a dead-letter record for something that never became a message (e.g. too long)."""
        self.stats.received += 1
        self._failures[len(self._values)] = reason
        self._values.append(None)
        self._raws.append(raw)
        self._wake.set()

    async def wait_room(self) -> None:
        """Block a TCP reader while the buffer is full (flow control back to the sender)."""
        await self._room.wait()

    async def _run(self) -> None:
        interval = self.config.flush_interval_ms / 1000
        while True:
            await self._wake.wait()
            if not self._closing and self.pending < self.config.flush_records:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), interval)
            values, failures, raws = self._values, self._failures, self._raws
            self._values, self._failures, self._raws = [], {}, []
            self._wake.clear()
            self._full.clear()
            if values:
                await self._commit(Parsed(values, failures, raws.__getitem__))
            self._room.set()
            if self._closing and not self._values:
                return

    async def _commit(self, parsed: Parsed) -> None:
        while True:
            try:
                result = await self.pipeline.ingest(parsed, SOURCE)
            except (Backpressure, StorageError) as exc:
                self.stats.errors.append(str(exc))
                if self._closing and isinstance(exc, StorageError):
                    return
                await asyncio.sleep(min(exc.retry_after, 5))
                continue
            self.stats.batches += 1
            self.stats.committed += result.accepted
            self.stats.rejected += result.rejected
            return

    async def close(self) -> None:
        """Flush what is buffered, then stop."""
        self._closing = True
        self._wake.set()
        self._full.set()
        if self._task is not None:
            await self._task


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, batcher: Batcher) -> None:
        self.batcher = batcher

    def datagram_received(self, data: bytes, addr: Any) -> None:
        text = data.decode("utf-8", errors="replace")
        if len(data) > self.batcher.config.max_message_bytes:
            self.batcher.add_failure(text[:4096], f"syslog: message of {len(data)} bytes exceeds max_message_bytes")
            return
        if self.batcher.add(text, datagram=True) is False and self.batcher.stats.dropped % 10000 == 1:
            log.warning("syslog UDP buffer full; dropping datagrams", extra={"dropped": self.batcher.stats.dropped})


class TcpFramer:
    """Splits a TCP byte stream into messages: octet counting (RFC 6587 3.4.1) or LF/NUL delimited."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.buf = bytearray()
        self.discarding = False

    def feed(self, data: bytes) -> tuple[list[bytes], list[tuple[bytes, str]], bool]:
        """(messages, (raw, reason) failures, fatal): fatal means the stream cannot be resynced."""
        self.buf += data
        messages: list[bytes] = []
        failures: list[tuple[bytes, str]] = []
        buf = self.buf
        while buf:
            if self.discarding:
                cut = _delimiter(buf)
                if cut < 0:
                    buf.clear()
                    break
                del buf[: cut + 1]
                self.discarding = False
                continue
            if buf[0] in b"\n\r\x00 ":
                del buf[:1]
                continue
            if 0x30 <= buf[0] <= 0x39:  # octet counting: "LEN SP MSG"
                space = buf.find(b" ", 0, 12)
                if space < 0:
                    if len(buf) >= 12:
                        failures.append((bytes(buf[:200]), "syslog: bad octet-counted frame length"))
                        return messages, failures, True
                    break
                length_text = bytes(buf[:space])
                if not length_text.isdigit():
                    failures.append((bytes(buf[:200]), "syslog: bad octet-counted frame length"))
                    return messages, failures, True
                length = int(length_text)
                if length > self.max_bytes:
                    failures.append((bytes(buf[:4096]), f"syslog: frame of {length} bytes exceeds max_message_bytes"))
                    return messages, failures, True
                if len(buf) < space + 1 + length:
                    break
                messages.append(bytes(buf[space + 1 : space + 1 + length]))
                del buf[: space + 1 + length]
                continue
            cut = _delimiter(buf)
            if cut < 0:
                if len(buf) > self.max_bytes:
                    failures.append((bytes(buf[:4096]), "syslog: message exceeds max_message_bytes"))
                    buf.clear()
                    self.discarding = True
                break
            messages.append(bytes(buf[:cut]))
            del buf[: cut + 1]
        return messages, failures, False

    def finish(self) -> bytes | None:
        """What remains at end of stream (a last message without its delimiter)."""
        rest = bytes(self.buf).strip(b"\r\n\x00 ")
        self.buf.clear()
        return rest if rest and not self.discarding else None


def _delimiter(buf: bytearray) -> int:
    lf = buf.find(b"\n")
    nul = buf.find(b"\x00")
    if lf < 0:
        return nul
    if nul < 0:
        return lf
    return min(lf, nul)


class SyslogServer:
    """UDP and TCP listeners feeding one Batcher; `start()`/`stop()` from the app lifespan."""

    def __init__(self, pipeline: IngestPipeline, mapping: FieldMapping, config: SyslogConfig) -> None:
        self.config = config
        self.batcher = Batcher(pipeline, mapping, config)
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._conns: set[asyncio.Task[Any]] = set()
        self.udp_port: int | None = None
        self.tcp_port: int | None = None

    async def start(self) -> None:
        """Bind the configured ports (port 0 picks a free one; see udp_port/tcp_port)."""
        loop = asyncio.get_running_loop()
        self.batcher.start()
        if self.config.udp_port is not None:
            sock = socket.socket(socket.AF_INET6 if ":" in self.config.host else socket.AF_INET, socket.SOCK_DGRAM)
            # A large receive buffer absorbs bursts while a batch is validated (capped by rmem_max).
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _UDP_RCVBUF)
            sock.bind((self.config.host, self.config.udp_port))
            transport, _ = await loop.create_datagram_endpoint(lambda: _UdpProtocol(self.batcher), sock=sock)
            self._udp = transport
            self.udp_port = transport.get_extra_info("sockname")[1]
        if self.config.tcp_port is not None:
            self._tcp = await asyncio.start_server(self._handle, self.config.host, self.config.tcp_port)
            self.tcp_port = self._tcp.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._conns.add(task)
        framer = TcpFramer(self.config.max_message_bytes)
        try:
            while True:
                await self.batcher.wait_room()
                data = await reader.read(65536)
                if not data:
                    rest = framer.finish()
                    if rest:
                        self.batcher.add(rest.decode("utf-8", errors="replace"))
                    return
                messages, failures, fatal = framer.feed(data)
                for msg in messages:
                    self.batcher.add(msg.decode("utf-8", errors="replace"))
                for raw, reason in failures:
                    self.batcher.add_failure(raw.decode("utf-8", errors="replace"), reason)
                if fatal:
                    return  # the framing is lost; the sender reconnects
        except (ConnectionError, asyncio.CancelledError):
            return
        finally:
            writer.close()
            if task is not None:
                self._conns.discard(task)

    async def stop(self) -> None:
        """Close listeners and connections, then flush the last batch."""
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
        for task in list(self._conns):
            task.cancel()
        if self._conns:
            await asyncio.gather(*self._conns, return_exceptions=True)
        if self._tcp is not None:
            await self._tcp.wait_closed()
        await self.batcher.close()
