"""Server limits under abuse (issue 17 items 1-2), against a real `loglens serve` process.

1. Idle-connection flood: open N connections that never send a request head, then time
   `GET /healthz` while they are open, and count the server's open file descriptors.
2. Slow large uploads: C clients each declare an 8.9 MB body and send it slowly; the server's
   peak RSS is sampled throughout, and what the clients were answered is counted.

    python bench/limits.py [--idle 15000] [--clients 100] [--seconds 20]
"""

from __future__ import annotations

import argparse
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import orjson
import psutil

REPO = Path(__file__).resolve().parents[1]
BODY_BYTES = 8_900_000


def start(tmp: Path) -> tuple[subprocess.Popen[bytes], int]:
    cfg = tmp / "config.yaml"
    cfg.write_text(
        f"storage: {{path: {tmp / 'store.duckdb'}}}\n"
        f"schemas: {{log: {REPO / 'schemas/log_schema.yaml'}, anomaly: {REPO / 'schemas/anomaly_schema.yaml'}}}\n"
        "notifiers: []\n",
        encoding="utf-8",
    )
    err = tmp / "stderr.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "loglens.cli", "serve", "--config", str(cfg), "--port", "0"], stderr=err.open("wb")
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for line in err.read_text().splitlines():
            if '"loglens listening"' in line:
                return proc, int(orjson.loads(line)["metadata"]["port"])
        time.sleep(0.1)
    raise SystemExit("server did not start")


def idle_flood(port: int, n: int, pid: int) -> None:
    socks = []
    failed = 0
    for _ in range(n):
        try:
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        except OSError:
            failed += 1
    fds = psutil.Process(pid).num_fds()
    t0 = time.perf_counter()
    try:
        ok = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=30).status_code
    except httpx.HTTPError as exc:
        ok = f"failed: {exc}"  # type: ignore[assignment]
    took = time.perf_counter() - t0
    print(
        f"idle flood: {len(socks)} connections opened ({failed} refused by the OS); server fds {fds}; "
        f"GET /healthz -> {ok} in {took * 1000:.0f} ms"
    )
    for s in socks:
        s.close()


def slow_uploads(port: int, clients: int, seconds: float, pid: int) -> None:
    proc = psutil.Process(pid)
    base = proc.memory_info().rss
    peak = base
    answers: dict[str, int] = {}
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client() -> None:
        head = (
            "POST /api/v1/logs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-ndjson\r\n"
            f"Content-Length: {BODY_BYTES}\r\n\r\n"
        ).encode()
        status = "still uploading when the run ended"
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=60)
            s.sendall(head)
            s.settimeout(0.05)
            sent = 0
            chunk = b" " * 65536
            while time.monotonic() < stop:
                try:
                    first = s.recv(4096)
                except TimeoutError:
                    first = None
                if first is not None:  # answered (e.g. 503 budget full) or closed
                    status = first.split(b" ", 2)[1].decode() if first.startswith(b"HTTP/") else "closed"
                    break
                if sent < BODY_BYTES:
                    s.sendall(chunk)
                    sent += len(chunk)
                time.sleep(0.2)  # slow: ~320 KB/s per client
            s.close()
        except OSError:
            status = "refused"
        with lock:
            answers[status] = answers.get(status, 0) + 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        peak = max(peak, proc.memory_info().rss)
        time.sleep(0.1)
    after = proc.memory_info().rss
    print(
        f"slow uploads: {clients} clients x {BODY_BYTES / 1e6:.1f} MB for {seconds:.0f} s; RSS {base / 1e6:.0f} MB "
        f"before, peak {peak / 1e6:.0f} MB, {after / 1e6:.0f} MB after; answers {answers}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--idle", type=int, default=15000)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with tempfile.TemporaryDirectory() as tmp:
        proc, port = start(Path(tmp))
        try:
            idle_flood(port, min(args.idle, hard - 200), proc.pid)
            time.sleep(1)
            slow_uploads(port, args.clients, args.seconds, proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)


if __name__ == "__main__":
    main()
