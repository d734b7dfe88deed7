"""A wrong cluster address fails fast with one line naming it; Ctrl-C and SIGTERM stop any engine.

Real processes: `python -m loglens.cli analyze` is spawned as a user runs it. Bounds are generous
(the requirement is 10 s for an address, 2 s for Ctrl-C; docs/benchmarks.md has measured times)
so the tests hold on a loaded machine, but a hang — the old behaviour — fails them.
"""

from __future__ import annotations

import gzip
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from analyze_data import REPO, logs

pytestmark = pytest.mark.xdist_group("cluster")
CONFIG = ["--config", str(REPO / "config.yaml")]


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "loglens.cli", "analyze", *args, *CONFIG]


@pytest.fixture(scope="module")
def big_gz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """~300 MB of NDJSON in a small gzip file: one partition that takes many seconds to analyse."""
    block = b"\n".join(orjson.dumps(r) for r in logs(2_000, seed=6)) + b"\n"
    path = tmp_path_factory.mktemp("big") / "big.ndjson.gz"
    comp = zlib.compressobj(1, zlib.DEFLATED, 31)  # gzip container, fastest level
    with path.open("wb") as f:
        for _ in range(600):
            f.write(comp.compress(block))
        f.write(comp.flush())
    with gzip.open(path, "rb") as check:
        assert check.read(10).startswith(b"{")
    return path


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers (not a cluster)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    yield server.getsockname()[1]
    server.close()


@pytest.fixture
def foreign_port() -> Iterator[int]:
    """A port where a server of another protocol (HTTP/1.1) answers every connection and closes it."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.2)
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(60)
                try:
                    conn.recv(4096)
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    done.set()
    thread.join(60)
    server.close()


@pytest.mark.parametrize("engine", ["dask", "ray"])
@pytest.mark.parametrize("kind", ["refused", "silent", "foreign"])
def test_bad_address_is_one_line_naming_it_and_exit_2(
    engine: str, kind: str, silent_port: int, foreign_port: int, clean_file: Path
) -> None:
    if kind == "refused":
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()  # nothing listens there now
    else:
        port = silent_port if kind == "silent" else foreign_port
    address = f"tcp://127.0.0.1:{port}" if engine == "dask" else f"127.0.0.1:{port}"
    started = time.monotonic()
    proc = subprocess.run(
        cli(str(clean_file), "--engine", engine, "--address", address, "--no-progress"),
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    elapsed = time.monotonic() - started
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and address in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert elapsed < 30, elapsed  # 5 s connect bound + interpreter and library start-up


def start_and_wait_running(args: list[str]) -> tuple[subprocess.Popen[bytes], list[bytes]]:
    """Start the CLI and return once its progress bar shows partitions running."""
    # As a terminal starts it: with SIGINT at its default. A runner started in the background by a
    # non-interactive shell (`make test &`, `nohup ... &`) ignores SIGINT, children inherit that,
    # and Python then installs no KeyboardInterrupt handler at all (Ctrl-C could not reach them).
    proc = subprocess.Popen(
        args,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    seen: list[bytes] = []
    running = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for chunk in iter(lambda: proc.stderr.read1(4096), b""):  # type: ignore[union-attr]
            seen.append(chunk)
            if b"partition" in b"".join(seen):
                running.set()

    threading.Thread(target=read, daemon=True).start()
    if not running.wait(120):  # Ray may take a minute to start on a loaded machine
        proc.kill()
        pytest.fail(f"analyze never started its partitions: {b''.join(seen)[-2000:]!r}")
    time.sleep(0.5)  # inside the partition now
    return proc, seen


@pytest.mark.parametrize(
    ("engine", "sig"),
    [("local", signal.SIGINT), ("dask", signal.SIGINT), ("ray", signal.SIGINT), ("ray", signal.SIGTERM)],
)
def test_ctrl_c_and_sigterm_stop_any_engine(engine: str, sig: int, big_gz: Path) -> None:
    proc, seen = start_and_wait_running(cli(str(big_gz), "--engine", engine))
    assert proc.poll() is None, b"".join(seen)
    sent = time.monotonic()
    proc.send_signal(sig)
    try:
        code = proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"{engine} ignored {sig!r} for 30 s")
    elapsed = time.monotonic() - sent
    assert code == 130, b"".join(seen)[-2000:]
    time.sleep(0.2)
    assert b"interrupted: stopping the " + engine.encode() + b" engine" in b"".join(seen)
    assert elapsed < 10, elapsed  # the process leaves 1.5 s after the signal, whatever blocks
