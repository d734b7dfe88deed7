"""What the benchmarks share: free loopback ports and `loglens serve` in its own process."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A free TCP (or UDP, with kind=SOCK_DGRAM) port on loopback."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(tmp: Path, port: int, extra_yaml: str = "") -> subprocess.Popen[bytes]:
    """`loglens serve` in its own process with its store in `tmp`; returns once /healthz answers."""
    config = tmp / "config.yaml"
    config.write_text(
        f"server: {{port: {port}}}\n"
        f"storage: {{path: {tmp / 'store' / 'loglens.duckdb'}}}\n"
        f"schemas: {{log: {REPO / 'schemas' / 'log_schema.yaml'}, anomaly: {REPO / 'schemas' / 'anomaly_schema.yaml'}}}\n"
        "notifiers: []\nlogging: {level: WARNING}\n" + extra_yaml
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "loglens.cli", "serve", "--config", str(config)],
        cwd=tmp,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("server did not start")


async def post_bodies(
    url: str,
    path: str,
    bodies: list[bytes],
    clients: int,
    content_type: str,
    accepted_of: Callable[[httpx.Response, bytes], int],
) -> tuple[int, float]:
    """POST every body once from `clients` concurrent connections, retrying 429/503 after
    Retry-After; returns (records accepted, seconds)."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    accepted = 0

    async def worker() -> None:
        nonlocal accepted
        async with httpx.AsyncClient(base_url=url, timeout=120) as client:
            while not queue.empty():
                body = queue.get_nowait()
                while True:
                    r = await client.post(path, content=body, headers={"Content-Type": content_type})
                    if r.status_code in (429, 503):
                        await asyncio.sleep(float(r.headers.get("retry-after", "1")))
                        continue
                    r.raise_for_status()
                    accepted += accepted_of(r, body)
                    break

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    return accepted, time.perf_counter() - t0
