"""What the benchmarks share: free loopback ports and `loglens serve` in its own process."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the `loglens serve` process harness shared with the tests
from serve_process import ServeProcess, free_port  # noqa: E402

__all__ = ["REPO", "ServeProcess", "free_port", "post_bodies", "start_server"]


def start_server(tmp: Path, port: int, extra_yaml: str = "") -> subprocess.Popen[bytes]:
    """`loglens serve` in its own process with its store in `tmp`; returns once /healthz answers."""
    config = tmp / "config.yaml"
    config.write_text(
        f"server: {{port: {port}}}\n"
        f"storage: {{path: {tmp / 'store' / 'loglens.duckdb'}}}\n"
        f"schemas: {{log: {REPO / 'schemas' / 'log_schema.yaml'}, anomaly: {REPO / 'schemas' / 'anomaly_schema.yaml'}}}\n"
        "notifiers: []\nlogging: {level: WARNING}\n" + extra_yaml
    )
    server = ServeProcess(config, port)
    try:
        server.start()
    except RuntimeError as exc:
        raise SystemExit(f"server did not start: {exc}") from None
    assert server.proc is not None
    return server.proc


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
