"""`loglens serve` as a real child process on a loopback port: the one harness tests and benchmarks share.

Used by the operability tests (tests/ops/ops_support.py), the crash and soak harnesses
(tests/reliability/) and the benchmarks (bench/bench_server.py). The child runs this checkout's
`src/` (PYTHONPATH) with the caller's environment, so coverage follows it into the process.
"""

from __future__ import annotations

import json
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
    """The `server.port` a config file sets (flow `{port: N}` or block `port: N` style); 0 if none."""
    found = re.search(r"\bport:\s*(\d+)", config.read_text(encoding="utf-8"))
    return int(found.group(1)) if found else 0


def wait_until_serving(
    proc: subprocess.Popen[bytes], log_path: Path, offset: int = 0, timeout: float = 120, port: int = 0
) -> str:
    """The base URL of a `loglens serve` process, once its /healthz answers 200.

    With `port` 0 the server binds an ephemeral port and names it in its "loglens listening"
    log line (logged at INFO), so no port is chosen in advance (no race with other processes on
    a busy machine). `offset` skips what earlier runs wrote to the same log file. The timeout is
    generous: a loaded 2-core machine can take many seconds to import, open DuckDB and replay.
    """
    deadline = time.monotonic() + timeout
    url: str | None = f"http://127.0.0.1:{port}" if port else None
    with httpx.Client(timeout=5) as client:
        while True:
            if proc.poll() is not None:
                tail = log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
                raise RuntimeError(f"server exited with {proc.returncode}: {tail}")
            if url is None:
                with log_path.open("rb") as f:
                    f.seek(offset)
                    for line in f.read().decode("utf-8", "replace").splitlines():
                        if '"loglens listening"' in line:
                            url = json.loads(line)["metadata"]["url"].rstrip("/")
            if url is not None:
                try:
                    if client.get(url + "/healthz").status_code == 200:
                        return url
                except httpx.TransportError:
                    pass
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"server did not start within {timeout} s")
            time.sleep(0.05)


class ServeProcess:
    """`python -m loglens.cli serve --config CONFIG`, its output appended to `log_path`.

    With `port: 0` in the config (the default of the test configs) each start learns the port
    from the server's "loglens listening" log line, so the config must log at INFO.
    """

    def __init__(self, config: Path, port: int | None = None, log_path: Path | None = None) -> None:
        self.config = config
        self.configured_port = port if port is not None else config_port(config)
        self.port = self.configured_port
        self.log_path = log_path or config.with_suffix(".log")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL of the server."""
        return f"http://127.0.0.1:{self.port}"

    def client(self, **kwargs: Any) -> httpx.Client:
        """An HTTP client for the server."""
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)

    def start(self, timeout: float = 120.0) -> float:
        """Start the process and wait until /healthz answers 200; returns the seconds it took.

        Raises RuntimeError with the end of the server's output when it exits or never gets healthy.
        """
        started = time.monotonic()
        path = os.pathsep.join(p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH", "")) if p)
        env = {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "loglens.cli", "serve", "--config", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=str(self.config.parent),
            )
        try:
            url = wait_until_serving(self.proc, self.log_path, offset, timeout, self.configured_port)
        except RuntimeError:
            self.kill()
            raise
        self.port = int(url.rsplit(":", 1)[1])
        return time.monotonic() - started

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
