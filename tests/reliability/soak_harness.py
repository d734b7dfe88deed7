"""Soak harness shared by tests/reliability/test_soak.py and bench/soak.py.

Starts `loglens serve` as a real process, sends `rate` logs/s spread over `services` services
from a few sender threads (NDJSON batches, each answered after commit), samples the server's
RSS, and measures alert latency: at the start and the end of the run a canary service sends a
burst of errors and the time until GET /api/v1/alerts shows its error_rate alert firing is
recorded. At the end the server is killed (-9), restarted (it replays its write-ahead log) and
stopped cleanly; the store file is then opened directly: stored logs must equal acknowledged logs.
"""

from __future__ import annotations

import os
import random
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import httpx
import orjson
import psutil
from crash_harness import ServerProcess, write_config

BATCH = 1000


@dataclass
class SoakResult:
    """What a soak run measured."""

    duration_s: float
    target_rate: float
    achieved_rate: float
    services: int
    acked: int
    stored: int
    lost: int
    rejected_requests: int
    rss_start_mb: float
    rss_end_mb: float
    rss_max_mb: float
    alert_latency_s: list[float] = field(default_factory=list)
    rss_trend_mb: list[float] = field(default_factory=list)  # median RSS of each quarter of the run
    load_avg: tuple[float, float, float] = (0.0, 0.0, 0.0)  # the machine's 1/5/15-min load at the end

    def lines(self) -> list[str]:
        """Human-readable summary."""
        return [
            f"duration {self.duration_s:.0f} s, target {self.target_rate:.0f} logs/s, "
            f"achieved {self.achieved_rate:.0f} logs/s over {self.services} services",
            f"acknowledged {self.acked}, stored {self.stored}, lost {self.lost}, "
            f"non-2xx requests {self.rejected_requests}",
            f"RSS start {self.rss_start_mb:.1f} MB, end {self.rss_end_mb:.1f} MB, max {self.rss_max_mb:.1f} MB; "
            "median by quarter " + ", ".join(f"{x:.0f}" for x in self.rss_trend_mb),
            "alert latency (s): " + ", ".join(f"{x:.3f}" for x in self.alert_latency_s),
            "load average (1/5/15 min) at the end: " + ", ".join(f"{x:.2f}" for x in self.load_avg),
        ]


_TS = b'"@TS@"'


def _template(rng: random.Random, services: int, n: int) -> bytes:
    """An NDJSON batch whose timestamps are a placeholder: senders stamp it per request (cheap)."""
    return b"\n".join(
        orjson.dumps(
            {
                "timestamp": "@TS@",
                "level": "ERROR" if rng.random() < 0.02 else "INFO",
                "service": f"soak-{rng.randrange(services):02d}",
                "message": f"request {rng.randrange(10**6)} served",
                "user_id": f"u{rng.randrange(5000)}",
                "response_time_ms": round(rng.expovariate(1 / 80), 2),
            }
        )
        for _ in range(n)
    )


def _alert_latency(url: str, canary: str) -> float:
    """Send an error burst for `canary`; seconds until its error_rate alert is firing."""
    now = time.time()
    body = b"\n".join(
        orjson.dumps({"timestamp": now, "level": "ERROR", "service": canary, "message": "canary failure"})
        for _ in range(40)
    )
    with httpx.Client(base_url=url, timeout=30) as client:
        sent = time.monotonic()
        resp = client.post("/api/v1/logs", content=body, headers={"content-type": "application/x-ndjson"})
        resp.raise_for_status()
        while time.monotonic() - sent < 30:
            alerts = client.get("/api/v1/alerts", params={"state": "firing"}).json()["alerts"]
            if any(a["service"] == canary and a["rule"] == "error_rate" for a in alerts):
                return time.monotonic() - sent
            time.sleep(0.02)
    raise AssertionError(f"no error_rate alert for {canary} within 30 s")


def run_soak(
    workdir: Path,
    duration_s: float,
    rate: float,
    services: int = 50,
    senders: int = 2,
    seed: int = 1,
    memory_limit: str | None = None,
) -> SoakResult:
    """Run a soak against a fresh server in `workdir`."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = 0  # the server picks a free port and names it in its log
    # volume/anomaly/new-pattern rules would page on the synthetic traffic; the canary needs error_rate
    cfg = write_config(workdir, port, "alerts: {rules: {volume: {enabled: false}, anomaly: {enabled: false}}}")
    if memory_limit:
        text = cfg.read_text(encoding="utf-8")
        cfg.write_text(
            text.replace("storage: {path: ", f"storage: {{memory_limit: {memory_limit}, path: "), encoding="utf-8"
        )
    server = ServerProcess(cfg, port, workdir / "server.log")
    server.start()
    assert server.proc is not None
    proc = psutil.Process(server.proc.pid)
    acked = 0
    failed = 0
    lock = threading.Lock()
    stop = threading.Event()
    rss: list[float] = []
    try:
        latencies = [_alert_latency(server.url, "canary-start")]
        rss_start = proc.memory_info().rss / 2**20
        per_sender = rate / senders

        def sender(i: int) -> None:
            nonlocal acked, failed
            rng = random.Random(seed * 100 + i)
            # pre-built batches keep the client's CPU for sending, not for JSON encoding
            templates = [_template(rng, services, BATCH) for _ in range(16)]
            with httpx.Client(base_url=server.url, timeout=60) as client:
                started = time.monotonic()
                sent = 0
                while not stop.is_set():
                    # pace: stay on the target line; never sleep when behind
                    ahead = sent / per_sender - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(min(ahead, 0.2))
                        continue
                    body = templates[sent // BATCH % len(templates)].replace(_TS, b"%.6f" % time.time())
                    resp = client.post("/api/v1/logs", content=body, headers={"content-type": "application/x-ndjson"})
                    with lock:
                        if resp.status_code == 200:
                            acked += resp.json()["accepted"]
                        else:
                            failed += 1
                    sent += BATCH

        threads = [threading.Thread(target=sender, args=(i,), daemon=True) for i in range(senders)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        while time.monotonic() - t0 < duration_s:
            time.sleep(0.5)
            rss.append(proc.memory_info().rss / 2**20)
        stop.set()
        for t in threads:
            t.join(timeout=60)
        elapsed = time.monotonic() - t0
        rss_end = proc.memory_info().rss / 2**20
        load_avg = os.getloadavg()
        latencies.append(_alert_latency(server.url, "canary-end"))
    finally:
        server.kill()
    # Killed (-9) while the loader was still behind: what was acknowledged but not yet in DuckDB
    # is in the write-ahead log. A restart replays it and a clean stop drains it; only then does
    # the store file hold every acknowledged log, which is what the count below checks.
    replay = ServerProcess(cfg, port, workdir / "server-replay.log")
    replay.start()
    replay.stop(timeout=120)
    con = duckdb.connect(str(workdir / "store" / "loglens.duckdb"))
    try:
        stored = int(con.execute("SELECT count(*) FROM logs WHERE service LIKE 'soak-%'").fetchone()[0])
    finally:
        con.close()
    return SoakResult(
        elapsed,
        rate,
        acked / elapsed,
        services,
        acked,
        stored,
        max(0, acked - stored),
        failed,
        rss_start,
        rss_end,
        max([*rss, rss_end]),
        latencies,
        _quarter_medians(rss),
        load_avg,
    )


def _quarter_medians(samples: list[float]) -> list[float]:
    """Median of each quarter of the samples: a level per quarter that one sample's spike (a
    DuckDB checkpoint, a load transaction) does not move, unlike the single sample at 25/50/75/100 %."""
    if len(samples) < 4:
        return list(samples)
    n = len(samples)
    return [statistics.median(samples[n * q // 4 : n * (q + 1) // 4]) for q in range(4)]
