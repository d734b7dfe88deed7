"""`loglens serve` as a real child process on a loopback port: the one harness tests and benchmarks share.

Used by the operability tests (tests/ops/ops_support.py), the crash and soak harnesses
(tests/reliability/) and the benchmarks (bench/bench_server.py). The child runs this checkout's
`src/` (PYTHONPATH) with the caller's environment, so coverage follows it into the process.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A free TCP (or UDP, with kind=SOCK_DGRAM) port on loopback."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def config_port(config: Path) -> int:
    """The `server.port` a config file sets (flow `{port: N}` or block `port: N` style)."""
    found = re.search(r"\bport:\s*(\d+)", config.read_text(encoding="utf-8"))
    if found is None:
        raise ValueError(f"{config} sets no server port")
    return int(found.group(1))


class ServeProcess:
    """`python -m loglens.cli serve --config CONFIG`, its output appended to `log_path`."""

    def __init__(self, config: Path, port: int | None = None, log_path: Path | None = None) -> None:
        self.config = config
        self.port = port if port is not None else config_port(config)
        self.log_path = log_path or config.with_suffix(".log")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL of the server."""
        return f"http://127.0.0.1:{self.port}"

    def client(self, **kwargs: Any) -> httpx.Client:
        """An HTTP client for the server."""
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)

    def start(self, timeout: float = 60.0) -> float:
        """Start the process and wait until /healthz answers 200; returns the seconds it took.

        Raises RuntimeError with the end of the server's output when it exits or never gets healthy.
        """
        started = time.monotonic()
        path = os.pathsep.join(p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH", "")) if p)
        env = {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "loglens.cli", "serve", "--config", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=str(self.config.parent),
            )
        deadline = started + timeout
        with httpx.Client(timeout=2) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited with {self.proc.returncode}: {self.tail_log()}")
                try:
                    if client.get(f"{self.url}/healthz").status_code == 200:
                        return time.monotonic() - started
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"server did not become healthy within {timeout:g} s: {self.tail_log()}")

    def signal(self, sig: int) -> None:
        """Send `sig` to the server."""
        assert self.proc is not None, "not started"
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 30.0, sig: int | None = None) -> int:
        """Graceful stop (SIGTERM by default), SIGKILL after `timeout`; returns the exit status."""
        proc = self.proc
        if proc is None:
            return 0
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM if sig is None else sig)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(10)

    def kill(self) -> None:
        """SIGKILL (no cleanup of any kind) and reap."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.proc = None

    def log_lines(self) -> list[str]:
        """Everything the server printed, line by line."""
        return self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()

    def tail_log(self, chars: int = 3000) -> str:
        """The end of the server's output, for failure messages."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-chars:]
        except FileNotFoundError:
            return ""
