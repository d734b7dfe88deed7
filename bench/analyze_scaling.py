"""1 → 2 worker scaling of `loglens analyze --address` on real clusters started on this machine.

    .venv/bin/python bench/analyze_scaling.py [--logs 500000] [--no-write]

Starts a Dask scheduler with 1, then 2 `dask worker` processes (1 thread each), and a Ray head
with 1 CPU, then a second `ray start --address` node (1 CPU), all on free ports; runs the same
analysis (8 partitions of one NDJSON file) on each and reports the in-run seconds of the
partitions stage and the speed-up. Processes are stopped by pid. Appends to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from analyze import REPO, write_logs

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in reversed(procs):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()


def analyze(path: Path, engine: str, address: str, out: Path, env: dict[str, str] | None = None) -> dict:
    cmd = [sys.executable, "-m", "loglens.cli", "analyze", str(path), "--engine", engine, "--address", address]
    cmd += ["--partitions", "8", "--no-progress", "--out", str(out), "--config", str(REPO / "config.yaml")]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
    return json.loads(out.read_text())["summary"]


def dask_runs(path: Path, tmp: Path) -> list[tuple[int, dict]]:
    sched_file = tmp / "scheduler.json"
    procs = [
        subprocess.Popen(
            [
                str(BIN / "dask"),
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--dashboard-address",
                "127.0.0.1:0",
                "--scheduler-file",
                str(sched_file),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    out: list[tuple[int, dict]] = []
    try:
        # The file appears before its JSON is written: wait until it parses.
        address = None
        while address is None:
            time.sleep(0.2)
            try:
                address = json.loads(sched_file.read_text())["address"]
            except (FileNotFoundError, json.JSONDecodeError, KeyError):
                address = None
        from distributed import Client

        for n in (1, 2):
            procs.append(
                subprocess.Popen(
                    [
                        str(BIN / "dask"),
                        "worker",
                        address,
                        "--nthreads",
                        "1",
                        "--nworkers",
                        "1",
                        "--no-dashboard",
                        "--host",
                        "127.0.0.1",
                        "--local-directory",
                        str(tmp / f"w{n}"),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            with Client(address, timeout=60) as client:
                client.wait_for_workers(n, timeout=180)
            out.append((n, analyze(path, "dask", address, tmp / f"dask{n}.json")))
    finally:
        stop(procs)
    return out


def ray_runs(path: Path, tmp: Path) -> list[tuple[int, dict]]:
    (tmp / "home").mkdir()
    # not the RAY_* variables an in-process ray.init of another test may have left in os.environ
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(HOME=str(tmp / "home"), RAY_USAGE_STATS_ENABLED="0")

    def ports() -> list[str]:
        names = ("node-manager", "object-manager", "dashboard-agent-listen", "dashboard-agent-grpc")
        flags = [x for name in names for x in (f"--{name}-port", str(free_port()))]
        return [*flags, "--runtime-env-agent-port", str(free_port()), "--metrics-export-port", str(free_port())]

    gcs = free_port()
    address = f"127.0.0.1:{gcs}"
    common = ["--block", "--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--disable-usage-stats"]
    procs: list[subprocess.Popen[bytes]] = []
    out: list[tuple[int, dict]] = []
    try:
        for n in (1, 2):
            log = tmp / f"ray{n}.log"
            head = ["--head", "--port", str(gcs), "--include-dashboard", "false", "--temp-dir", str(tmp)]
            where = head if n == 1 else ["--address", address]
            procs.append(
                subprocess.Popen(
                    [str(BIN / "ray"), "start", *where, *common, *ports()],
                    stdout=log.open("wb"),
                    stderr=subprocess.STDOUT,
                    env=env,
                )
            )
            deadline = time.monotonic() + 180
            while "Ray runtime started" not in log.read_text(errors="replace"):
                if time.monotonic() > deadline or procs[-1].poll() is not None:
                    raise RuntimeError(log.read_text(errors="replace")[-2000:])
                time.sleep(0.5)
            time.sleep(2)  # the new node registers its CPU with the head
            out.append((n, analyze(path, "ray", address, tmp / f"ray{n}.json", env)))
    finally:
        stop(procs)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--logs", type=int, default=500_000)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="scal", dir="/tmp"))
    try:
        path = tmp / "logs.ndjson"
        write_logs(path, args.logs)
        rows = [("dask", n, s) for n, s in dask_runs(path, tmp)] + [("ray", n, s) for n, s in ray_runs(path, tmp)]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    lines = [
        f"### Cluster scaling, 1 → 2 workers, {args.logs:,} logs — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: {os.cpu_count()} CPUs shared with other jobs (load average at end "
        f"{os.getloadavg()[0]:.1f}), {platform.python_implementation()} {platform.python_version()}. "
        "Real clusters on this machine (`dask scheduler` + `dask worker` processes; `ray start --head` + "
        "`ray start --address`), 1 CPU per worker, 8 partitions; `partitions s` is the time from the first "
        "task submitted to the last result (bench/analyze_scaling.py).",
        "",
        "| engine | workers | partitions s | whole run s | speed-up of partitions |",
        "|---|---:|---:|---:|---:|",
    ]
    base: dict[str, float] = {}
    for engine, n, s in rows:
        part = s["stages"]["partitions_s"]
        base.setdefault(engine, part)
        lines.append(f"| {engine} | {n} | {part:.2f} | {s['elapsed_s']:.2f} | {base[engine] / part:.2f}× |")
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        bench = REPO / "docs" / "benchmarks.md"
        existing = bench.read_text()
        start = existing.index("## Batch analysis")
        nxt = existing.find("\n## ", start + 1)
        end = len(existing) if nxt < 0 else nxt
        bench.write_text(existing[:end].rstrip("\n") + "\n\n" + text + existing[end:])


if __name__ == "__main__":
    sys.exit(main())
