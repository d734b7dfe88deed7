"""Ingest throughput per wire protocol, against loglens's own NDJSON bulk endpoint in the same run.

NDJSON, Loki and Fluent each run on a fresh `loglens serve` process (warmed up with 20,000 NDJSON
logs, not measured), in the order NDJSON, Loki, Fluent, NDJSON; the baseline is the mean of the
two NDJSON rows, and the Loki and Fluent rows are reported as ratios to it:
- NDJSON bulk (the baseline): C concurrent clients post B-record NDJSON bodies to /api/v1/logs.
- Loki protobuf: the same records as snappy-compressed `PushRequest`s (one JSON line per entry,
  stream label `job`), as Promtail/Alloy ship JSON log files, posted like the NDJSON bodies.
- Fluent forward: the same records as PackedForward messages of B entries (EventTime) with the
  `chunk` option over C TCP connections; each connection waits for the ack (sent after commit)
  before the next chunk, as Fluent Bit does with `Require_ack_response`.
Then one more server (syslog enabled on free ports) runs the older rows in sequence:
- OTLP: C concurrent clients post pre-built `ExportLogsServiceRequest`s of B records each; every
  response comes after commit, so logs/s = accepted records / wall time.
- syslog TCP: C connections stream newline-framed RFC 5424 lines; syslog has no ack, so the
  clock stops when `GET /api/v1/services` shows every line committed.
- syslog UDP: one sender at a paced rate; reports committed/sent (UDP may drop under load).

    python bench/ingest_protocols.py [--logs 200000] [--batch 1000] [--clients 4] [--markdown]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import struct
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
from bench_server import free_port, post_bodies, start_server  # noqa: E402  (bench/ is the script directory)

sys.path.insert(0, str(REPO / "src"))

import cramjam  # noqa: E402
import msgpack  # noqa: E402
import orjson  # noqa: E402
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest  # noqa: E402

from loglens.demo import generate_logs  # noqa: E402
from loglens.ingest import loki_proto  # noqa: E402


def records(n: int, seed: int) -> list[dict[str, object]]:
    """The generated logs every protocol row sends (event times spread over the last 50 minutes)."""
    return list(generate_logs(n, spacing_s=3000 / n, start=time.time() - 50 * 60, seed=seed))


def epoch(ts: object) -> tuple[int, int]:
    """(seconds, nanoseconds) of an RFC 3339 timestamp."""
    from datetime import datetime

    dt = datetime.fromisoformat(str(ts).replace("Z", "+00:00"))
    seconds = int(dt.timestamp())
    return seconds, dt.microsecond * 1000


def ndjson_bodies(logs: list[dict[str, object]], batch: int) -> list[bytes]:
    return [b"\n".join(orjson.dumps(r) for r in logs[i : i + batch]) for i in range(0, len(logs), batch)]


def loki_bodies(logs: list[dict[str, object]], batch: int) -> list[bytes]:
    """Snappy-compressed PushRequests: a stream per service, the whole log as the JSON line."""
    bodies = []
    for i in range(0, len(logs), batch):
        req = loki_proto.PushRequest()
        streams: dict[object, object] = {}
        for r in logs[i : i + batch]:
            stream = streams.get(r["service"])
            if stream is None:
                stream = streams[r["service"]] = req.streams.add()  # type: ignore[attr-defined]
                stream.labels = f'{{job="{r["service"]}"}}'  # type: ignore[attr-defined]
            entry = stream.entries.add()  # type: ignore[attr-defined]
            entry.timestamp.seconds, entry.timestamp.nanos = epoch(r["timestamp"])
            entry.line = orjson.dumps({k: v for k, v in r.items() if k != "timestamp"}).decode()
        bodies.append(bytes(cramjam.snappy.compress_raw(req.SerializeToString())))
    return bodies


def fluent_messages(logs: list[dict[str, object]], batch: int) -> list[bytes]:
    """PackedForward messages (tag = first record's service; records keep their own service)."""
    out = []
    for i in range(0, len(logs), batch):
        chunk = logs[i : i + batch]
        entries = b"".join(
            msgpack.packb(
                [
                    msgpack.ExtType(0, struct.pack(">II", *epoch(r["timestamp"]))),
                    {k: v for k, v in r.items() if k != "timestamp"},
                ]
            )
            for r in chunk
        )
        out.append(msgpack.packb([chunk[0]["service"], entries, {"chunk": f"c{i}", "size": len(chunk)}]))
    return out


def fluent_send(port: int, messages: list[bytes], clients: int) -> tuple[int, float]:
    """Send every message once over `clients` connections, each waiting for its ack; (acks, seconds)."""
    import threading

    queue = list(reversed(messages))
    lock = threading.Lock()
    acked = 0

    def worker() -> None:
        nonlocal acked
        with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
            unpacker = msgpack.Unpacker(raw=False)
            while True:
                with lock:
                    if not queue:
                        return
                    msg = queue.pop()
                sock.sendall(msg)
                reply = None
                while reply is None:
                    data = sock.recv(4096)
                    if not data:
                        raise SystemExit("fluent connection closed before the ack")
                    unpacker.feed(data)
                    reply = next(iter(unpacker), None)
                with lock:
                    acked += 1

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return acked, time.perf_counter() - t0


def otlp_bodies(n: int, batch: int) -> list[bytes]:
    """Pre-serialised export requests (like an SDK's BatchLogRecordProcessor sends)."""
    bodies = []
    now = time.time_ns()
    for start in range(0, n, batch):
        req = ExportLogsServiceRequest()
        rl = req.resource_logs.add()
        kv = rl.resource.attributes.add()
        kv.key, kv.value.string_value = "service.name", f"bench-otlp-{start // batch % 5}"
        sl = rl.scope_logs.add()
        sl.scope.name = "bench"
        for i in range(start, min(start + batch, n)):
            rec = sl.log_records.add()
            rec.time_unix_nano = now + i
            rec.severity_number = 17 if i % 20 == 0 else 9
            rec.body.string_value = f"request {i} handled"
            a = rec.attributes.add()
            a.key, a.value.string_value = "user.id", f"u-{i % 500}"
            b = rec.attributes.add()
            b.key, b.value.double_value = "http.response_time_ms", float(i % 300)
            rec.trace_id = i.to_bytes(16, "big")
        bodies.append(req.SerializeToString())
    return bodies


async def post_otlp(url: str, bodies: list[bytes], clients: int) -> tuple[int, float]:
    """OTLP export requests; every record in them is valid, so a 2xx accepts them all."""
    return await post_bodies(
        url,
        "/v1/logs",
        bodies,
        clients,
        "application/x-protobuf",
        lambda _r, body: body.count(b"handled"),  # records in this request
    )


def committed(url: str, prefix: str) -> int:
    services = httpx.get(f"{url}/api/v1/services", timeout=30).json()["services"]
    return sum(s["total"] for s in services if s["service"].startswith(prefix))


def wait_committed(url: str, prefix: str, target: int, timeout: float = 300) -> int:
    deadline = time.monotonic() + timeout
    seen = committed(url, prefix)
    while seen < target and time.monotonic() < deadline:
        time.sleep(0.05)
        seen = committed(url, prefix)
    return seen


def syslog_lines(n: int, tag: str) -> bytes:
    return b"".join(
        f"<{134 if i % 20 else 131}>1 2026-11-23T14:00:00.{i % 1000:03d}Z web01 {tag}-{i % 5} {i} REQ "
        f'[req@1 user_id="u-{i % 500}" response_time_ms="{i % 300}"] request {i} handled\n'.encode()
        for i in range(n)
    )


def syslog_tcp(port: int, data: bytes, clients: int) -> None:
    per = len(data) // clients
    parts, start = [], 0
    for c in range(clients):  # split on line boundaries
        end = len(data) if c == clients - 1 else data.index(b"\n", start + per) + 1
        parts.append(data[start:end])
        start = end

    def send(part: bytes) -> None:
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(part)

    import threading

    threads = [threading.Thread(target=send, args=(p,)) for p in parts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def syslog_udp(port: int, n: int, rate: float) -> None:
    lines = syslog_lines(n, "bench-udp").split(b"\n")[:-1]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        t0 = time.perf_counter()
        for i, line in enumerate(lines):
            s.sendto(line, ("127.0.0.1", port))
            if i % 100 == 0:
                ahead = i / rate - (time.perf_counter() - t0)
                if ahead > 0:
                    time.sleep(ahead)


def fluent_port(url: str) -> int:
    """The port the Fluent listener bound (configured as 0); the status API lists it."""
    inputs = httpx.get(f"{url}/api/v1/status", timeout=30).json()["inputs"]
    return int(next(i["listen"] for i in inputs if i["source"] == "fluent").rsplit(":", 1)[1])


def measure(tmp: Path, kind: str, n: int, batch: int, clients: int, seed: int) -> tuple[int, float]:
    """(logs committed, seconds) of one protocol on a fresh `loglens serve`, after a warm-up.

    Each protocol row gets its own server so that no row inherits the store size and the
    detection/pattern-mining backlog of the rows before it.
    """
    tmp.mkdir(parents=True)
    port = free_port()
    proc = start_server(tmp, port, "protocols: {fluent: {enabled: true, port: 0}}\n")
    url = f"http://127.0.0.1:{port}"
    try:
        # Warm-up (not measured): the first requests of a fresh server pay for caches and lazy imports.
        warm = ndjson_bodies(records(min(n, 20_000), 10), batch)
        asyncio.run(post_bodies(url, "/api/v1/logs", warm, clients, "application/x-ndjson", lambda *_: 0))
        logs = records(n, seed)
        if kind == "ndjson":
            bodies = ndjson_bodies(logs, batch)
            got, secs = asyncio.run(
                post_bodies(
                    url, "/api/v1/logs", bodies, clients, "application/x-ndjson", lambda r, _b: r.json()["accepted"]
                )
            )
        elif kind == "loki":
            bodies = loki_bodies(logs, batch)
            sizes = dict(zip(map(id, bodies), (min(batch, n - i) for i in range(0, n, batch)), strict=True))
            got, secs = asyncio.run(
                post_bodies(
                    url, "/loki/api/v1/push", bodies, clients, "application/x-protobuf", lambda _r, b: sizes[id(b)]
                )
            )  # a 204 means every entry of the push was stored
        else:
            messages = fluent_messages(logs, batch)
            acks, secs = fluent_send(fluent_port(url), messages, clients)
            if acks != len(messages):
                raise SystemExit(f"fluent: {acks} acks for {len(messages)} messages")
            got = n  # every message acked, i.e. committed
        stored = wait_committed(url, "", min(n, 20_000) + got, timeout=30)
        if stored < min(n, 20_000) + got:
            raise SystemExit(f"{kind}: only {stored:,} logs stored")
        return got, secs
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--logs", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1000, help="records per request / forward message")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--udp-rate", type=float, default=20_000, help="UDP datagrams/s offered")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    n = args.logs
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        # NDJSON is measured before and after the two protocols (each on a fresh server); the
        # baseline is the mean of both, so a change in machine load during the run shows up.
        phases = {}
        for i, kind in enumerate(("ndjson", "loki", "fluent", "ndjson2")):
            phases[kind] = measure(tmp / f"{i}-{kind}", kind.rstrip("2"), n, args.batch, args.clients, 11 + i)
        (nd1, nd1_s), (nd2, nd2_s) = phases["ndjson"], phases["ndjson2"]
        nd_rate = (nd1 / nd1_s + nd2 / nd2_s) / 2
        loki_accepted, loki_secs = phases["loki"]
        fluent_got, fluent_secs = phases["fluent"]
        loki_rate, fluent_rate = loki_accepted / loki_secs, fluent_got / fluent_secs

        port, sport = free_port(), free_port()
        (tmp / "shared").mkdir()
        proc = start_server(
            tmp / "shared", port, f"protocols: {{syslog: {{enabled: true, udp_port: {sport}, tcp_port: {sport}}}}}\n"
        )
        url = f"http://127.0.0.1:{port}"
        try:
            bodies = otlp_bodies(n, args.batch)
            accepted, secs = asyncio.run(post_otlp(url, bodies, args.clients))
            otlp_rate = accepted / secs

            data = syslog_lines(n, "bench-tcp")
            t0 = time.perf_counter()
            syslog_tcp(sport, data, args.clients)
            got = wait_committed(url, "bench-tcp", n)
            tcp_secs = time.perf_counter() - t0
            tcp_rate = got / tcp_secs

            udp_n = min(n, int(args.udp_rate * 5))
            t0 = time.perf_counter()
            syslog_udp(sport, udp_n, args.udp_rate)
            udp_got = wait_committed(url, "bench-udp", udp_n, timeout=10)
            udp_secs = time.perf_counter() - t0
        finally:
            proc.terminate()
            proc.wait(30)
    how = f"{args.clients} clients, {args.batch} records/request, answered after commit, fresh server"
    rows = [
        (
            "NDJSON bulk `POST /api/v1/logs`, before",
            f"{nd1:,}",
            f"{nd1_s:.2f} s",
            f"{nd1 / nd1_s:,.0f}",
            f"baseline: mean of before and after = {nd_rate:,.0f} · {how}",
        ),
        (
            "Loki push, snappy protobuf",
            f"{loki_accepted:,}",
            f"{loki_secs:.2f} s",
            f"{loki_rate:,.0f}",
            f"**{loki_rate / nd_rate:.2f}** · {how.replace('records/request', 'JSON lines/push')}",
        ),
        (
            "Fluent forward, PackedForward + chunk ack",
            f"{fluent_got:,}",
            f"{fluent_secs:.2f} s",
            f"{fluent_rate:,.0f}",
            f"**{fluent_rate / nd_rate:.2f}** · {args.clients} connections, {args.batch} entries/message, "
            "each waits for its ack (sent after commit), fresh server",
        ),
        (
            "NDJSON bulk `POST /api/v1/logs`, after",
            f"{nd2:,}",
            f"{nd2_s:.2f} s",
            f"{nd2 / nd2_s:,.0f}",
            f"1.00 (with the row before) · {how}",
        ),
        (
            "OTLP/HTTP protobuf",
            f"{accepted:,}",
            f"{secs:.2f} s",
            f"{otlp_rate:,.0f}",
            f"{args.clients} clients, {args.batch} records/request, answered after commit",
        ),
        (
            "syslog TCP (RFC 5424)",
            f"{got:,}",
            f"{tcp_secs:.2f} s",
            f"{tcp_rate:,.0f}",
            f"{args.clients} connections, newline framing, until committed",
        ),
        (
            "syslog UDP (RFC 5424)",
            f"{udp_got:,} of {udp_n:,}",
            f"{udp_secs:.2f} s",
            f"{udp_got / udp_secs:,.0f}",
            f"offered at {args.udp_rate:,.0f} datagrams/s",
        ),
    ]
    if args.markdown:
        print("| protocol | logs committed | time | logs/s | × NDJSON · how |")
        print("|---|---|---|---|---|")
        for r in rows:
            print("| " + " | ".join(r) + " |")
    else:
        for r in rows:
            print(f"{r[0]:24} {r[1]:>20} {r[2]:>9} {r[3]:>10} logs/s  ({r[4]})")


if __name__ == "__main__":
    main()
