"""Alerting under stress, against `loglens serve` in its own process on loopback.

Three scenarios (issue 16), each measured against a baseline taken in the same run:

- storm: N services (default 20,000) send one log each and then go silent at once, while one
  live service keeps posting small batches. Reports ingest p99 while idle and during the
  absence storm, the slowest /healthz, notifications per webhook channel (plus one channel on
  a closed port), and how long SIGTERM takes against `server.shutdown_timeout_seconds`.
- flood: M distinct service names (default 100,000) in 10 requests, then an error-rate breach
  (5 errors in 10 logs) on a service known from before: time until it fires, the server's peak
  RSS, and restart-to-serving time.
- disk: the store on an 8 MB tmpfs (needs root), filled by a ballast file: time from the first
  503 until the `store` meta-alert reaches the webhook.

    python bench/stress.py [--services 20000] [--names 100000] [--only storm|flood|disk] [--write]

The figures go to docs/benchmarks.md with --write. `tests/test_alerting_stress.py` runs the same
scenarios at small scale.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson

REPO = Path(__file__).resolve().parents[1]


class Hooks:
    """Loopback webhook receiver: counts notifications per path and keeps their bodies."""

    def __init__(self) -> None:
        self.bodies: dict[str, list[dict[str, Any]]] = {}
        self.arrived: list[tuple[float, str, dict[str, Any]]] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = orjson.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
                with outer.lock:
                    outer.bodies.setdefault(self.path, []).append(body)
                    outer.arrived.append((time.monotonic(), self.path, body))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def count(self, path: str) -> int:
        with self.lock:
            return len(self.bodies.get(path, []))

    def first(self, pred: Callable[[dict[str, Any]], bool]) -> float | None:
        with self.lock:
            return next((t for t, _, b in self.arrived if pred(b)), None)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Server:
    """`loglens serve` in its own process, on a port it binds itself (port 0, read from its log)."""

    workdir: Path
    yaml: str
    proc: subprocess.Popen[bytes] | None = None
    url: str = ""
    started_s: float = 0.0
    shutdown_timeout_s: float = 10.0
    log_dir: Path | None = None  # default: workdir (the disk scenario keeps it off the full disk)

    def start(self, timeout: float = 120.0) -> float:
        """Start and wait for /healthz; returns seconds to serving."""
        config = self.workdir / "config.yaml"
        config.write_text(
            f"server: {{port: 0, shutdown_timeout_seconds: {self.shutdown_timeout_s}}}\n"
            f"storage: {{path: {self.workdir / 'store' / 'loglens.duckdb'}}}\n"
            f"schemas: {{log: {REPO / 'schemas' / 'log_schema.yaml'}, "
            f"anomaly: {REPO / 'schemas' / 'anomaly_schema.yaml'}}}\n"
            "logging: {level: INFO}\n" + self.yaml
        )
        log_path = (self.log_dir or self.workdir) / "server.log"
        offset = log_path.stat().st_size if log_path.exists() else 0
        t0 = time.monotonic()
        with log_path.open("ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "loglens.cli", "serve", "--config", str(config)],
                cwd=self.workdir,
                env={**os.environ, "PYTHONPATH": str(REPO / "src")},
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        url = ""
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited with {self.proc.returncode}: {log_path.read_text()[-2000:]}")
            if not url:
                with log_path.open("rb") as f:
                    f.seek(offset)
                    for line in f.read().decode("utf-8", "replace").splitlines():
                        if '"loglens listening"' in line:
                            url = orjson.loads(line)["metadata"]["url"].rstrip("/")
            if url:
                try:
                    if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                        self.url = url
                        self.started_s = time.monotonic() - t0
                        return self.started_s
                except httpx.HTTPError:
                    pass
            time.sleep(0.05)
        self.kill()
        raise SystemExit("server did not start")

    def rss_mb(self) -> float:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def terminate(self, timeout: float = 120.0) -> float:
        """SIGTERM; returns seconds until the process exited."""
        assert self.proc is not None
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return time.monotonic() - t0

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def logs(service: str | list[str], n: int = 1, errors: int = 0) -> bytes:
    """NDJSON: `n` logs per service (the first `errors` of them ERROR), stamped now."""
    services = [service] if isinstance(service, str) else service
    now = time.time()
    return b"\n".join(
        orjson.dumps(
            {
                "timestamp": now,
                "level": "ERROR" if i < errors else "INFO",
                "service": svc,
                "message": "request served",
                "response_time_ms": 12.0,
            }
        )
        for svc in services
        for i in range(n)
    )


def post(client: httpx.Client, body: bytes) -> float:
    """POST NDJSON (waiting out 429/503); returns the latency of the accepted request in seconds."""
    while True:
        t0 = time.perf_counter()
        r = client.post("/api/v1/logs", content=body, headers={"content-type": "application/x-ndjson"})
        took = time.perf_counter() - t0
        if r.status_code in (429, 503):
            time.sleep(float(r.headers.get("retry-after", "1")))
            continue
        r.raise_for_status()
        return took


class Poller:
    """Calls `fn` every `every` seconds on a thread, recording (monotonic time, latency)."""

    def __init__(self, fn: Callable[[], float], every: float) -> None:
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._fn = fn
        self._every = every
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.samples.append((started, self._fn()))
            except httpx.HTTPError:
                self.samples.append((started, float("inf")))
            self._stop.wait(max(0.0, self._every - (time.monotonic() - started)))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def between(self, a: float, b: float) -> list[float]:
        return [lat for t, lat in self.samples if a <= t < b]


def p99(values: list[float]) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def wait_for(pred: Callable[[], Any], timeout: float, every: float = 0.02) -> float | None:
    """Seconds until `pred()` is truthy, or None after `timeout`."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return time.monotonic() - t0
        time.sleep(every)
    return None


def _hooks_yaml(hooks: Hooks, group_wait: float) -> str:
    return (
        f"alerts: {{group_wait_seconds: {group_wait}, max_series: 50000, "
        "rules: {absence: {threshold_seconds: 10}, volume: {enabled: false}}}\n"
        "notifiers:\n"
        f"  - {{name: a, type: webhook, settings: {{url: '{hooks.url('/a')}'}}}}\n"
        f"  - {{name: b, type: webhook, settings: {{url: '{hooks.url('/b')}'}}}}\n"
        "  - {name: closed, type: webhook, settings: {url: 'http://127.0.0.1:9/x'}}\n"  # nothing listens on 9
    )


@dataclass
class StormResult:
    services: int
    idle_p99_ms: float
    storm_p99_ms: float
    healthz_max_ms: float
    healthz_idle_max_ms: float
    notifications: dict[str, int] = field(default_factory=dict)
    absence_fired: int = 0
    sigterm_s: float = 0.0
    shutdown_timeout_s: float = 10.0


def storm(services: int, workdir: Path, group_wait: float = 0.0) -> StormResult:
    """`services` go silent at once; the live service's ingest is measured throughout."""
    hooks = Hooks()
    srv = Server(workdir, _hooks_yaml(hooks, group_wait))
    srv.start()
    try:
        with httpx.Client(base_url=srv.url, timeout=120) as client:
            names = [f"svc-{i:06d}" for i in range(services)]
            for k in range(0, services, 2000):
                post(client, logs(names[k : k + 2000]))
            registered = time.monotonic()
            live = httpx.Client(base_url=srv.url, timeout=120)
            health = httpx.Client(base_url=srv.url, timeout=120)

            def ingest() -> float:
                return post(live, logs("live", 10))

            def healthz() -> float:
                t0 = time.perf_counter()
                health.get("/healthz")
                return time.perf_counter() - t0

            ingest_poll = Poller(ingest, 0.05)
            health_poll = Poller(healthz, 0.05)

            # absence threshold 10 s: the storm starts ~10 s after the last registration
            time.sleep(max(0.0, registered + 8 - time.monotonic()))
            storm_from = time.monotonic()
            wait_for(lambda: hooks.count("/a") > 0 and hooks.count("/b") > 0, 60, 0.1)
            # quiet for 3 s: the storm's notifications are all out
            last = -1
            while True:
                n = hooks.count("/a") + hooks.count("/b")
                if n == last:
                    break
                last = n
                time.sleep(3)
            storm_to = time.monotonic()
            ingest_poll.stop()
            health_poll.stop()
            live.close()
            health.close()
            absent = 0
            offset: int | None = 0
            while offset is not None:
                page = client.get("/api/v1/alerts", params={"state": "firing", "limit": 1000, "offset": offset}).json()
                absent += sum(1 for a in page["alerts"] if a["rule"] == "absence")
                offset = page["next_offset"]
        result = StormResult(
            services,
            idle_p99_ms=p99(ingest_poll.between(registered, storm_from)) * 1000,
            storm_p99_ms=p99(ingest_poll.between(storm_from, storm_to)) * 1000,
            healthz_max_ms=max(health_poll.between(storm_from, storm_to), default=float("nan")) * 1000,
            healthz_idle_max_ms=max(health_poll.between(registered, storm_from), default=float("nan")) * 1000,
            notifications={"a": hooks.count("/a"), "b": hooks.count("/b")},
            absence_fired=absent,
            shutdown_timeout_s=srv.shutdown_timeout_s,
        )
        result.sigterm_s = srv.terminate()
        return result
    finally:
        srv.kill()
        hooks.close()


@dataclass
class FloodResult:
    names: int
    first_start_s: float
    post_s: float
    alert_s: float | None
    rss_peak_mb: float
    restart_s: float
    series_meta: bool


def flood(names: int, workdir: Path, max_series: int = 10_000) -> FloodResult:
    """`names` distinct services in 10 requests, then a breach on a known service."""
    hooks = Hooks()
    srv = Server(
        workdir,
        f"alerts: {{max_series: {max_series}, rules: {{volume: {{enabled: false}}}}}}\n"
        f"notifiers: [{{name: a, type: webhook, settings: {{url: '{hooks.url('/a')}'}}}}]\n",
    )
    first_start = srv.start()
    peak = [srv.rss_mb()]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.1):
            try:
                peak[0] = max(peak[0], srv.rss_mb())
            except (OSError, ValueError):
                return

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        with httpx.Client(base_url=srv.url, timeout=300) as client:
            post(client, logs("checkout", 20))  # a real service, known before the flood
            t0 = time.monotonic()
            per = max(1, names // 10)
            for k in range(0, names, per):
                post(client, logs([f"junk-{i:07d}" for i in range(k, min(names, k + per))]))
            post_s = time.monotonic() - t0
            sent = time.monotonic()
            post(client, logs("checkout", 10, errors=5))  # the seed's rule: 50 % > 10 % in a minute

            def firing() -> bool:
                alerts = client.get("/api/v1/alerts", params={"state": "firing"}).json()["alerts"]
                return any(a["rule"] == "error_rate" and a["service"] == "checkout" for a in alerts)

            waited = wait_for(firing, 60)
            alert_s = (time.monotonic() - sent) if waited is not None else None
            meta = any(
                a["rule"] == "meta" and a["service"] == "series_limit"
                for a in client.get("/api/v1/alerts", params={"state": "firing"}).json()["alerts"]
            )
        stop.set()
        sampler.join(5)
        srv.terminate()
        restart_s = srv.start()
        return FloodResult(names, first_start, post_s, alert_s, peak[0], restart_s, meta)
    finally:
        stop.set()
        srv.kill()
        hooks.close()


@dataclass
class DiskResult:
    meta_s: float | None
    first_503: bool


def disk(workdir: Path) -> DiskResult:
    """The store's disk fills up: how long until the `store` meta-alert reaches the webhook."""
    mnt = workdir / "disk"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], check=True)
    hooks = Hooks()
    srv = Server(
        mnt, f"notifiers: [{{name: a, type: webhook, settings: {{url: '{hooks.url('/a')}'}}}}]\n", log_dir=workdir
    )
    try:
        srv.start()
        with httpx.Client(base_url=srv.url, timeout=60) as client:
            post(client, logs("api", 50))
            ballast = mnt / "ballast"
            with ballast.open("wb", buffering=0) as f:
                try:
                    while True:
                        f.write(b"\0" * 65536)
                except OSError:
                    pass
            first_503 = False
            for _ in range(50):
                big = logs([f"s{i % 3}" for i in range(2000)])
                r = client.post("/api/v1/logs", content=big, headers={"content-type": "application/x-ndjson"})
                if r.status_code == 503:
                    first_503 = True
                    break
            waited = wait_for(lambda: hooks.first(lambda b: b["alert"]["rule"] == "meta") is not None, 30)
            meta_s = waited if first_503 and waited is not None else None
            ballast.unlink()
        srv.terminate()
        return DiskResult(meta_s, first_503)
    finally:
        srv.kill()
        hooks.close()
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def report(storm_r: StormResult | None, flood_r: FloodResult | None, disk_r: DiskResult | None) -> list[str]:
    lines = ["## Alerting under stress (bench/stress.py)", ""]
    lines.append(f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on loopback, {os.cpu_count()} cores.")
    lines.append("")
    lines.append("| scenario | figure | target | measured | met |")
    lines.append("|---|---|---|---|---|")

    def row(scenario: str, figure: str, target: str, value: str, ok: bool) -> None:
        lines.append(f"| {scenario} | {figure} | {target} | {value} | {'yes' if ok else 'no'} |")

    if storm_r is not None:
        s = storm_r
        name = f"{s.services:,} services silent"
        ratio = s.storm_p99_ms / s.idle_p99_ms if s.idle_p99_ms else float("inf")
        row(
            name,
            "ingest p99 storm / idle",
            "≤ 2×",
            f"{s.storm_p99_ms:.1f} / {s.idle_p99_ms:.1f} ms = {ratio:.2f}×",
            ratio <= 2,
        )
        row(
            name,
            "slowest /healthz storm (idle)",
            "≤ 100 ms",
            f"{s.healthz_max_ms:.1f} ms ({s.healthz_idle_max_ms:.1f} ms)",
            s.healthz_max_ms <= 100,
        )
        worst = max(s.notifications.values())
        row(
            name,
            "notifications per channel",
            "≤ 10",
            ", ".join(f"{k}: {v}" for k, v in s.notifications.items()),
            worst <= 10,
        )
        row(name, "absence alerts firing", f"{s.services:,}", f"{s.absence_fired:,}", s.absence_fired >= s.services)
        row(
            name,
            "SIGTERM to exit",
            f"≤ {s.shutdown_timeout_s:g} s",
            f"{s.sigterm_s:.1f} s",
            s.sigterm_s <= s.shutdown_timeout_s,
        )
    if flood_r is not None:
        f = flood_r
        name = f"{f.names:,} names in 10 requests"
        row(name, "posting them", "—", f"{f.post_s:.1f} s", True)
        alert = f"{f.alert_s:.2f} s" if f.alert_s is not None else "none in 60 s"
        row(
            name, "error-rate breach on a known service fires", "≤ 1 s", alert, f.alert_s is not None and f.alert_s <= 1
        )
        row(name, "server RSS peak", "< 500 MB", f"{f.rss_peak_mb:.0f} MB", f.rss_peak_mb < 500)
        row(
            name,
            "restart to serving (first start, empty store)",
            "≤ 5 s",
            f"{f.restart_s:.1f} s ({f.first_start_s:.1f} s)",
            f.restart_s <= 5,
        )
        row(name, "series_limit meta-alert firing", "yes", "yes" if f.series_meta else "no", f.series_meta)
    if disk_r is not None:
        value = f"{disk_r.meta_s:.2f} s" if disk_r.meta_s is not None else "not delivered"
        row(
            "disk full",
            "store meta-alert at the webhook",
            "≤ 5 s",
            value,
            disk_r.meta_s is not None and disk_r.meta_s <= 5,
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=20_000)
    parser.add_argument("--names", type=int, default=100_000)
    parser.add_argument("--group-wait", type=float, default=0.0)
    parser.add_argument("--only", choices=["storm", "flood", "disk"])
    parser.add_argument("--write", action="store_true", help="append the table to docs/benchmarks.md")
    args = parser.parse_args(argv)
    storm_r = flood_r = disk_r = None
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        if args.only in (None, "storm"):
            (base / "storm").mkdir()
            storm_r = storm(args.services, base / "storm", args.group_wait)
        if args.only in (None, "flood"):
            (base / "flood").mkdir()
            flood_r = flood(args.names, base / "flood")
        if args.only in (None, "disk"):
            (base / "disk-run").mkdir()
            disk_r = disk(base / "disk-run")
    lines = report(storm_r, flood_r, disk_r)
    print("\n".join(lines))
    if args.write:
        with (REPO / "docs" / "benchmarks.md").open("a", encoding="utf-8") as fh:
            fh.write("\n" + "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
