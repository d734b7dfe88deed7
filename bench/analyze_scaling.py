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
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from analyze import REPO, write_logs

# the clusters are started exactly as tests/analyze/test_analyze_real_clusters.py starts them
sys.path.insert(0, str(REPO / "tests" / "analyze"))
import local_clusters


def analyze(path: Path, engine: str, address: str, out: Path, env: dict[str, str] | None = None) -> dict:
    cmd = [sys.executable, "-m", "loglens.cli", "analyze", str(path), "--engine", engine, "--address", address]
    cmd += ["--partitions", "8", "--no-progress", "--out", str(out), "--config", str(REPO / "config.yaml")]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
    return json.loads(out.read_text())["summary"]


def dask_runs(path: Path, warm: Path, tmp: Path) -> list[tuple[int, dict]]:
    out: list[tuple[int, dict]] = []
    with local_clusters.dask_cluster(tmp) as cluster:
        for n in (1, 2):
            cluster.add_worker()
            analyze(warm, "dask", cluster.address, tmp / f"dask{n}w.json")  # the new worker imports loglens
            out.append((n, analyze(path, "dask", cluster.address, tmp / f"dask{n}.json")))
    return out


def ray_runs(path: Path, warm: Path, tmp: Path) -> list[tuple[int, dict]]:
    out: list[tuple[int, dict]] = []
    with local_clusters.ray_cluster(tmp) as cluster:
        for n in (1, 2):
            if n > 1:
                cluster.add_node()
                time.sleep(2)  # the new node registers its CPU with the head (a bench, not a test)
            analyze(warm, "ray", cluster.address, tmp / f"ray{n}w.json", cluster.env)  # worker processes start
            out.append((n, analyze(path, "ray", cluster.address, tmp / f"ray{n}.json", cluster.env)))
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
        # An untimed run first on each cluster size: a new worker's first task pays for starting
        # its process and importing loglens, DuckDB and Arrow (seconds), which is not analysis.
        warm = tmp / "warm.ndjson"
        write_logs(warm, 20_000)
        rows = [("dask", n, s) for n, s in dask_runs(path, warm, tmp)]
        rows += [("ray", n, s) for n, s in ray_runs(path, warm, tmp)]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    lines = [
        f"### Cluster scaling, 1 → 2 workers, {args.logs:,} logs — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: {os.cpu_count()} CPUs shared with other jobs (load average at end "
        f"{os.getloadavg()[0]:.1f}), {platform.python_implementation()} {platform.python_version()}. "
        "Real clusters on this machine (`dask scheduler` + `dask worker` processes; `ray start --head` + "
        "`ray start --address`), 1 CPU per worker, 8 partitions; `partitions s` is the time from the first "
        "task submitted to the last result, after an untimed warm-up run on the same workers "
        "(bench/analyze_scaling.py).",
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
