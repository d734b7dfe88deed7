"""Sustained bulk ingest over HTTP vs DuckDB's own bulk load of the same file.

Generates N logs as NDJSON, starts `loglens serve` as a separate process on a free loopback
port, posts the file in bulk batches from C concurrent clients (each request answered only after
its logs are validated and fsynced to the write-ahead log; it also reports when the loader has
moved them all into DuckDB), and — in the same run, once before the server starts and once
after it stops — times DuckDB's `read_json` → table load of the same file. Prints logs/s for
both and their ratio (against the mean of the two DuckDB loads: the machine is shared, and
bracketing the HTTP run makes a swing of its load visible instead of hiding it in the ratio),
the server's CPU seconds per million logs (from /proc: what the throughput costs, whatever the
load) and the load average around each phase.

    python bench/ingest.py [--logs 1000000] [--batch 5000] [--clients 4] [--markdown]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import httpx
import orjson

REPO = Path(__file__).resolve().parents[1]
from bench_server import free_port, post_bodies, start_server  # noqa: E402  (bench/ is the script directory)

sys.path.insert(0, str(REPO / "src"))

from loglens.demo import generate_logs  # noqa: E402


def write_ndjson(path: Path, n: int) -> None:
    start = time.time() - 50 * 60  # spread over the last 50 minutes of event time
    with path.open("wb") as f:
        for log in generate_logs(n, spacing_s=3000 / n, start=start, seed=11):
            f.write(orjson.dumps(log))
            f.write(b"\n")


def chunks(path: Path, batch: int) -> list[bytes]:
    lines = path.read_bytes().splitlines(keepends=True)
    return [b"".join(lines[i : i + batch]) for i in range(0, len(lines), batch)]


async def post_all(url: str, bodies: list[bytes], clients: int) -> tuple[int, float]:
    """Bulk NDJSON posts; counts what the server says it accepted."""
    return await post_bodies(
        url, "/api/v1/logs", bodies, clients, "application/x-ndjson", lambda r, _body: r.json()["accepted"]
    )


async def post_singles(url: str, seconds: float, clients: int) -> tuple[int, float]:
    """One log per request from `clients` concurrent keep-alive connections, for `seconds`."""
    body = orjson.dumps(next(generate_logs(1)))
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            while time.perf_counter() < deadline:
                r = await client.post("/api/v1/logs", content=body, headers={"Content-Type": "application/json"})
                if r.status_code == 200:
                    done += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    return done, time.perf_counter() - t0


def wait_loaded(url: str) -> float:
    """perf_counter() when the server's loader has moved every acknowledged log into DuckDB."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if httpx.get(f"{url}/healthz", timeout=30).json().get("wal_lag_bytes", 0) == 0:
            return time.perf_counter()
        time.sleep(0.05)
    raise SystemExit("the loader did not catch up")


def pattern_logs_dropped(url: str) -> int:
    """Logs the template miner skipped because it was behind (it should mine every one)."""
    for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
        if line.startswith("loglens_pattern_logs_dropped_total "):
            return int(float(line.split()[1]))
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (Linux /proc), all threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load() -> str:
    """The 1-minute load average, for the record (the machine is shared)."""
    return f"{os.getloadavg()[0]:.1f}"


def duckdb_baseline(path: Path, tmp: Path, name: str) -> float:
    con = duckdb.connect(str(tmp / f"{name}.duckdb"))
    t0 = time.perf_counter()
    con.execute(
        "CREATE TABLE logs AS SELECT * FROM read_json(?, format='newline_delimited', columns={"
        "timestamp: 'TIMESTAMP', level: 'VARCHAR', service: 'VARCHAR', message: 'VARCHAR', user_id: 'VARCHAR', "
        "ip_address: 'VARCHAR', response_time_ms: 'DOUBLE', trace_id: 'VARCHAR', metadata: 'JSON'})",
        [str(path)],
    )
    con.execute("CHECKPOINT")
    elapsed = time.perf_counter() - t0
    con.close()
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--logs", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=5000)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--single-seconds", type=float, default=5.0)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="loglens-bench-") as d:
        tmp = Path(d)
        data = tmp / "logs.ndjson"
        print(f"generating {args.logs:,} logs ...", flush=True)
        write_ndjson(data, args.logs)
        bodies = chunks(data, args.batch)
        loads = [load()]
        base_before = duckdb_baseline(data, tmp, "before")
        port = free_port()
        proc = start_server(tmp, port)
        try:
            loads.append(load())
            cpu0 = cpu_seconds(proc.pid)
            t0 = time.perf_counter()
            accepted, http_s = asyncio.run(post_all(f"http://127.0.0.1:{port}", bodies, args.clients))
            server_cpu = cpu_seconds(proc.pid) - cpu0
            loads.append(load())
            loaded_s = wait_loaded(f"http://127.0.0.1:{port}") - t0
            unmined = pattern_logs_dropped(f"http://127.0.0.1:{port}")
            singles, single_s = asyncio.run(post_singles(f"http://127.0.0.1:{port}", args.single_seconds, 32))
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(60)
        base_after = duckdb_baseline(data, tmp, "after")
        loads.append(load())
    base_s = (base_before + base_after) / 2
    http_rate = accepted / http_s
    base_rate = args.logs / base_s
    ratio = http_rate / base_rate
    cpu_per_m = server_cpu / accepted * 1e6
    print(
        f"loglens HTTP ingest : {accepted:,} logs in {http_s:.2f} s = {http_rate:,.0f} logs/s "
        f"({args.clients} clients, {args.batch} logs/request, validated + durable + aggregated)"
    )
    print(
        f"  ... server CPU    : {server_cpu:.2f} s = {cpu_per_m:.1f} CPU-s per million logs "
        f"({server_cpu / http_s:.2f} of {os.cpu_count()} cores)"
    )
    print(
        f"  ... and loaded    : all in DuckDB after {loaded_s:.2f} s = {accepted / loaded_s:,.0f} logs/s "
        f"(ratio {accepted / loaded_s / base_rate:.2f})"
    )
    print(
        f"DuckDB read_json    : {args.logs:,} logs in {base_before:.2f} s before, {base_after:.2f} s after "
        f"= {base_rate:,.0f} logs/s (mean)"
    )
    print(f"ratio               : {ratio:.2f}")
    print(f"not mined (behind)  : {unmined:,} of {accepted:,} logs skipped by the template miner")
    print(f"load average        : {' → '.join(loads)} (start, server up, after HTTP, end)")
    print(
        f"single-log POSTs    : {singles:,} requests in {single_s:.2f} s = {singles / single_s:,.0f} req/s "
        "(32 keep-alive clients, each answered after its WAL fsync)"
    )
    if args.markdown:
        print("\n| what | logs | seconds | logs/s |\n|---|---|---|---|")
        print(
            f"| loglens HTTP bulk ingest ({args.clients} clients × {args.batch}) | {accepted:,} | {http_s:.2f} | {http_rate:,.0f} |"
        )
        print(f"| ... server CPU per million logs | | {cpu_per_m:.1f} CPU-s | |")
        print(f"| ... until all loaded into DuckDB | {accepted:,} | {loaded_s:.2f} | {accepted / loaded_s:,.0f} |")
        print(
            f"| DuckDB read_json → table (before / after) | {args.logs:,} | {base_before:.2f} / {base_after:.2f} | {base_rate:,.0f} |"
        )
        print(f"| ratio | | | {ratio:.2f} |")
        print(f"| logs the template miner skipped (behind) | {unmined:,} | | |")
        print(f"| single-log POSTs (32 clients) | {singles:,} | {single_s:.2f} | {singles / single_s:,.0f} req/s |")
    if accepted != args.logs:
        raise SystemExit(f"accepted {accepted} of {args.logs} logs")


if __name__ == "__main__":
    main()
