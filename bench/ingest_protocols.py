"""Ingest throughput per wire protocol: OTLP/HTTP (protobuf) and syslog (TCP, UDP).

Starts `loglens serve` as a separate process (syslog enabled on free ports), then:
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
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
from bench_server import free_port, post_bodies, start_server  # noqa: E402  (bench/ is the script directory)

sys.path.insert(0, str(REPO / "src"))

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest  # noqa: E402


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--logs", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1000, help="records per OTLP request")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--udp-rate", type=float, default=20_000, help="UDP datagrams/s offered")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    n = args.logs
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        port, sport = free_port(), free_port()
        proc = start_server(
            tmp, port, f"protocols: {{syslog: {{enabled: true, udp_port: {sport}, tcp_port: {sport}}}}}\n"
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
    rows = [
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
        print("| protocol | logs committed | time | logs/s | how |")
        print("|---|---|---|---|---|")
        for r in rows:
            print("| " + " | ".join(r) + " |")
    else:
        for r in rows:
            print(f"{r[0]:24} {r[1]:>20} {r[2]:>9} {r[3]:>10} logs/s  ({r[4]})")


if __name__ == "__main__":
    main()
