"""What the benchmarks share: free loopback ports and `loglens serve` in its own process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
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
