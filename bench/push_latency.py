"""Dashboard push latency: ingest response → SSE `metrics` event at a connected client.

Starts `loglens serve` as a separate process (uvloop + httptools, as in production) on a free
loopback port, keeps one SSE client connected to /api/v1/stream, then sends probe logs one
request at a time. For each probe it records
  - push latency:  SSE event carrying the probe's service received − ingest response received,
  - end to end:    SSE event received − ingest request sent,
first on an idle server, then while a background client posts bulk batches (the case where
commits are coalesced into at most one event per `min_interval`). Finally it stops the server
with SIGINT while the stream is open and times the shutdown.

    python bench/push_latency.py [--samples 200] [--markdown]   # --markdown updates docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import queue
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

REPO = Path(__file__).resolve().parents[1]
from bench_server import free_port, start_server  # noqa: E402  (bench/ is the script directory)

sys.path.insert(0, str(REPO / "src"))

from loglens.demo import generate_logs  # noqa: E402

SECTION = "## Dashboard push latency (bench/push_latency.py)"


class SseListener(threading.Thread):
    """Reads the stream; puts (perf_counter, kind, data) of every event on a queue."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.events: queue.Queue[tuple[float, str, Any]] = queue.Queue()
        self.ready = threading.Event()
        self.ended = threading.Event()

    def run(self) -> None:
        kind, data = "message", b""
        try:
            with httpx.Client(timeout=None) as client, client.stream("GET", self.url + "/api/v1/stream") as resp:
                for line in resp.iter_lines():
                    if line.startswith("event:"):
                        kind = line[6:].strip()
                    elif line.startswith("data:"):
                        data = line[5:].strip().encode()
                    elif line == "" and data:
                        now = time.perf_counter()
                        if kind == "hello":
                            self.ready.set()
                        self.events.put((now, kind, orjson.loads(data)))
                        kind, data = "message", b""
        except httpx.HTTPError:
            pass
        self.ended.set()


def probe(client: httpx.Client, sse: SseListener, service: str) -> tuple[float, float]:
    """(push latency, end-to-end) in seconds for one probe log."""
    log = next(generate_logs(1, services=(service,), seed=int(time.time() * 1000) % 100000))
    body = orjson.dumps([log])
    sent = time.perf_counter()
    r = client.post("/api/v1/logs", content=body, headers={"Content-Type": "application/json"})
    answered = time.perf_counter()
    r.raise_for_status()
    deadline = answered + 5
    while True:
        at, kind, data = sse.events.get(timeout=max(0.01, deadline - time.perf_counter()))
        if kind == "metrics" and any(row["service"] == service for row in data["services"]):
            return at - answered, at - sent


def drain(sse: SseListener) -> None:
    while True:
        try:
            sse.events.get_nowait()
        except queue.Empty:
            return


def background_load(url: str, stop: threading.Event, counter: list[int]) -> None:
    bodies = [
        b"\n".join(orjson.dumps(x) for x in generate_logs(1000, seed=s, start=time.time() - 30, spacing_s=0.01))
        for s in range(4)
    ]
    with httpx.Client(base_url=url, timeout=60) as client:
        i = 0
        while not stop.is_set():
            r = client.post("/api/v1/logs", content=bodies[i % 4], headers={"Content-Type": "application/x-ndjson"})
            if r.status_code == 200:
                counter[0] += r.json()["accepted"]
            i += 1


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run_scenario(url: str, sse: SseListener, samples: int, service: str, pause: float) -> dict[str, float]:
    push, e2e = [], []
    with httpx.Client(base_url=url, timeout=30) as client:
        for _ in range(samples):
            drain(sse)
            p, e = probe(client, sse, service)
            push.append(p)
            e2e.append(e)
            time.sleep(pause)
    ms = 1000
    return {
        "samples": samples,
        "push_p50": statistics.median(push) * ms,
        "push_p99": pct(push, 0.99) * ms,
        "push_max": max(push) * ms,
        "e2e_p50": statistics.median(e2e) * ms,
        "e2e_p99": pct(e2e, 0.99) * ms,
    }


def update_doc(text: str) -> None:
    """Replace (or append) this benchmark's own section of docs/benchmarks.md."""
    doc = REPO / "docs" / "benchmarks.md"
    body = doc.read_text() if doc.exists() else "# Benchmarks\n"
    start = body.find(SECTION)
    if start == -1:
        body = body.rstrip("\n") + "\n\n" + text
    else:
        nxt = body.find("\n## ", start + len(SECTION))
        body = body[:start] + text + (body[nxt + 1 :] if nxt != -1 else "")
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(body.rstrip("\n") + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=200, help="probe logs per scenario (≥ 100 for a p99)")
    ap.add_argument("--markdown", action="store_true", help="write the results into docs/benchmarks.md")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="loglens-push-") as tmpdir:
        port = free_port()
        proc = start_server(Path(tmpdir), port)
        url = f"http://127.0.0.1:{port}"
        try:
            sse = SseListener(url)
            sse.start()
            if not sse.ready.wait(10):
                raise SystemExit("no hello event from /api/v1/stream")
            # spaced wider than the coalescing interval: the pure push path
            idle = run_scenario(url, sse, args.samples, "probe-idle", 0.15)
            stop, counter = threading.Event(), [0]
            loader = threading.Thread(target=background_load, args=(url, stop, counter), daemon=True)
            t0 = time.perf_counter()
            loader.start()
            time.sleep(0.5)
            loaded = run_scenario(url, sse, args.samples, "probe-load", 0.01)
            stop.set()
            loader.join(30)
            load_rate = counter[0] / (time.perf_counter() - t0)
            t_stop = time.perf_counter()
            proc.send_signal(signal.SIGINT)
            proc.wait(30)
            shutdown_s = time.perf_counter() - t_stop
            stream_closed = sse.ended.wait(5)
        finally:
            if proc.poll() is None:
                proc.kill()

    rows = [("idle server", idle), (f"under bulk load (~{load_rate:,.0f} logs/s)", loaded)]
    lines = [
        SECTION,
        "",
        f"{time.strftime('%Y-%m-%d')}, 2 cores, `loglens serve` (uvloop + httptools), one SSE client, "
        f"{args.samples} probe logs per scenario, one request at a time (idle: 150 ms apart; under load: back to back). Commits are coalesced into at most one event per 100 ms. *Push* = SSE `metrics` event "
        "received − ingest response received; *end to end* = event received − ingest request sent. "
        "Target: push p99 ≤ 1 s.",
        "",
        "| scenario | push p50 | push p99 | push max | end-to-end p50 | end-to-end p99 |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in rows:
        lines.append(
            f"| {name} | {r['push_p50']:.1f} ms | {r['push_p99']:.1f} ms | {r['push_max']:.1f} ms | "
            f"{r['e2e_p50']:.1f} ms | {r['e2e_p99']:.1f} ms |"
        )
    lines += [
        "",
        f"Server stopped with SIGINT while the stream was open: shut down in {shutdown_s:.2f} s "
        f"(stream closed by the server: {'yes' if stream_closed else 'no'}).",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    ok = all(r["push_p99"] <= 1000 for _, r in rows)
    print("PASS: push p99 ≤ 1 s" if ok else "FAIL: push p99 > 1 s")
    if args.markdown:
        update_doc(text)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
