"""Crash-durability harness shared by tests/reliability/test_crash.py and bench/crash.py.

Runs `python -m loglens.cli serve` as a real process on a free loopback port, sends logs from
concurrent clients (every log carries a unique trace_id; some requests carry an
Idempotency-Key), `kill -9`s the server at a random moment, restarts it on the same store,
retries the keyed requests that got no answer, and finally opens the DuckDB file directly to
check: every acknowledged log is stored exactly once, unacknowledged logs at most once, keyed
retries exactly once, and the metric tables agree with the stored logs.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import httpx
import orjson

from serve_process import ServeProcess

REPO = Path(__file__).resolve().parents[2]


def write_config(workdir: Path, port: int, extra: str = "") -> Path:
    """A config for a crash run: store in `workdir`, repo schemas, no notifier output."""
    cfg = workdir / "config.yaml"
    cfg.write_text(
        f"""
server: {{host: 127.0.0.1, port: {port}}}
storage: {{path: {workdir / "store" / "loglens.duckdb"}}}
schemas: {{log: {REPO / "schemas" / "log_schema.yaml"}, anomaly: {REPO / "schemas" / "anomaly_schema.yaml"}}}
notifiers: []
logging: {{level: INFO}}  # the "loglens listening" line names the port the server bound
{extra}
""",
        encoding="utf-8",
    )
    return cfg


# `loglens serve` as a child process (start / kill -9 / logs; with `port: 0` each start learns its
# port from the server's log) is the harness shared with tests/ops and the benchmarks.
ServerProcess = ServeProcess


@dataclass
class Ledger:
    """What the clients sent and what the server acknowledged, across all trials."""

    acked: Counter[str] = field(default_factory=Counter)  # trace_id -> acknowledged copies
    unacked: set[str] = field(default_factory=set)  # sent, no 2xx seen (may or may not be stored)
    pending_keyed: dict[str, bytes] = field(default_factory=dict)  # idempotency key -> body, unanswered
    keyed_traces: dict[str, list[str]] = field(default_factory=dict)  # key -> trace ids in its body
    acked_keyed: dict[str, bytes] = field(default_factory=dict)  # idempotency key -> body, acknowledged
    requests_ok: int = 0
    requests_failed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _batch(prefix: str, n: int, rng: random.Random) -> tuple[bytes, list[str]]:
    now = time.time()
    traces = [f"{prefix}-{i}" for i in range(n)]
    logs = [
        {
            "timestamp": now - rng.random() * 90,
            "level": rng.choice(("INFO", "INFO", "WARN", "ERROR")),
            "service": f"svc-{rng.randrange(8)}",
            "message": f"crash test {t}",
            "user_id": f"u{rng.randrange(50)}",
            "response_time_ms": round(rng.random() * 500, 2),
            "trace_id": t,
        }
        for t in traces
    ]
    return b"\n".join(orjson.dumps(x) for x in logs), traces


def _client(
    url: str, cid: str, stop: threading.Event, ledger: Ledger, rng: random.Random, sizes: tuple[int, int] = (1, 40)
) -> None:
    seq = 0
    with httpx.Client(base_url=url, timeout=30) as client:
        while not stop.is_set():
            seq += 1
            body, traces = _batch(f"{cid}-{seq}", rng.randint(*sizes), rng)
            key = f"{cid}-{seq}" if rng.random() < 0.5 else None
            headers = {"content-type": "application/x-ndjson"}
            if key:
                headers["idempotency-key"] = key
                with ledger.lock:
                    ledger.keyed_traces[key] = traces
            try:
                resp = client.post("/api/v1/logs", content=body, headers=headers)
            except httpx.TransportError:
                ok = False
            else:
                ok = resp.status_code == 200 and resp.json()["accepted"] == len(traces)
                if resp.status_code // 100 == 2 and not ok:
                    raise AssertionError(f"unexpected ingest answer {resp.status_code}: {resp.text[:300]}")
            with ledger.lock:
                if ok:
                    ledger.requests_ok += 1
                    ledger.acked.update(traces)
                    if key:
                        ledger.acked_keyed[key] = body
                else:
                    ledger.requests_failed += 1
                    ledger.unacked.update(traces)
                    if key:
                        ledger.pending_keyed[key] = body
            if not ok:
                return  # the server is gone; this client's trial is over


def traffic_then_kill(
    server: ServerProcess,
    ledger: Ledger,
    trial: int,
    clients: int,
    rng: random.Random,
    min_s: float = 0.3,
    max_s: float = 1.0,
    bulk_clients: int = 0,
) -> float:
    """Run `clients` concurrent small senders (the first sends one log per request) plus
    `bulk_clients` bulk senders, and SIGKILL the server after a random delay."""
    stop = threading.Event()
    sizes = [(1, 1) if c == 0 and clients > 1 else (1, 40) for c in range(clients)]
    sizes += [(500, 3000)] * bulk_clients
    threads = [
        threading.Thread(
            target=_client,
            args=(server.url, f"t{trial}c{c}", stop, ledger, random.Random(rng.random()), size),
            daemon=True,
        )
        for c, size in enumerate(sizes)
    ]
    for t in threads:
        t.start()
    delay = rng.uniform(min_s, max_s)
    time.sleep(delay)
    server.kill()
    stop.set()
    for t in threads:
        t.join(timeout=30)
    return delay


def retry_keyed(server: ServerProcess, ledger: Ledger) -> int:
    """Retry every unanswered keyed request on the restarted server; each must now be acknowledged.

    Also re-sends two requests acknowledged before the crash: their key must mark them duplicate.
    """
    retried = 0
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for key in list(ledger.acked_keyed)[-2:]:
            resp = client.post(
                "/api/v1/logs",
                content=ledger.acked_keyed.pop(key),
                headers={"content-type": "application/x-ndjson", "idempotency-key": key},
            )
            assert resp.status_code == 200, resp.text
            assert resp.json()["duplicate"] is True and resp.json()["accepted"] == 0, resp.text
            retried += 1
        for key, body in list(ledger.pending_keyed.items()):
            resp = client.post(
                "/api/v1/logs",
                content=body,
                headers={"content-type": "application/x-ndjson", "idempotency-key": key},
            )
            assert resp.status_code == 200, resp.text
            traces = ledger.keyed_traces[key]
            with ledger.lock:
                # either the pre-crash commit or this retry stored them: exactly one copy either way
                ledger.unacked.difference_update(traces)
                ledger.acked.update(traces)
                del ledger.pending_keyed[key]
            retried += 1
    return retried


@dataclass
class Verdict:
    """Result of checking the store file against the ledger."""

    stored_logs: int
    acked_logs: int
    unacked_stored: int
    problems: list[str]


def replay_wal(db_path: Path) -> None:
    """Open the store as a restart would (replaying loglens's write-ahead log into DuckDB) and close it."""
    from loglens.store import Store

    store = Store(db_path).start()
    try:
        if not store.sync(120):
            raise AssertionError(f"WAL replay did not finish: {store.wal_status()}")
    finally:
        store.close()


def verify_store(db_path: Path, ledger: Ledger) -> Verdict:
    """Replay the WAL left by the last kill, open the DuckDB file directly and compare it with the ledger."""
    problems: list[str] = []
    replay_wal(db_path)
    con = duckdb.connect(str(db_path))
    try:
        stored = Counter(dict(con.execute("SELECT trace_id, count(*) FROM logs GROUP BY trace_id").fetchall()))
        for trace, copies in ledger.acked.items():
            if stored.get(trace, 0) != copies:
                problems.append(f"acknowledged {trace}: {copies} acked, {stored.get(trace, 0)} stored")
        unacked_stored = 0
        for trace in ledger.unacked:
            n = stored.get(trace, 0)
            unacked_stored += n
            if n > 1:
                problems.append(f"unacknowledged {trace} stored {n} times")
        known = set(ledger.acked) | ledger.unacked
        strays = [t for t in stored if t not in known]
        if strays:
            problems.append(f"{len(strays)} stored logs were never sent, e.g. {strays[:3]}")
        mismatch = con.execute(
            """
            SELECT count(*) FROM (
                SELECT service, date_trunc('minute', ts) AS minute, count(*) AS n,
                       count(*) FILTER (WHERE level IN ('ERROR', 'FATAL')) AS e
                FROM logs GROUP BY ALL
            ) l FULL OUTER JOIN metrics_minute m USING (service, minute)
            WHERE l.n IS DISTINCT FROM m.count OR l.e IS DISTINCT FROM m.error + m.fatal
            """
        ).fetchone()
        if mismatch and mismatch[0]:
            problems.append(f"{mismatch[0]} metrics_minute rows disagree with the stored logs")
        svc = con.execute(
            """
            SELECT count(*) FROM (SELECT service, count(*) AS n FROM logs GROUP BY ALL) l
            FULL OUTER JOIN services s USING (service) WHERE l.n IS DISTINCT FROM s.total
            """
        ).fetchone()
        if svc and svc[0]:
            problems.append(f"{svc[0]} services rows disagree with the stored logs")
        ids = con.execute("SELECT count(*), count(DISTINCT id) FROM logs").fetchone()
        if ids and ids[0] != ids[1]:
            problems.append(f"duplicate log ids: {ids[0]} rows, {ids[1]} distinct ids")
        total = sum(stored.values())
    finally:
        con.close()
    return Verdict(total, sum(ledger.acked.values()), unacked_stored, problems)


@dataclass
class CrashRun:
    """Summary of a series of kill -9 trials."""

    trials: int
    acked_logs: int
    stored_logs: int
    unacked_stored: int
    requests_ok: int
    requests_failed: int
    keyed_retries: int
    mean_restart_s: float
    problems: list[str]
    max_restart_s: float = 0.0


def run_crash_trials(
    workdir: Path,
    trials: int,
    clients: int = 4,
    seed: int = 0,
    min_s: float = 0.3,
    max_s: float = 1.0,
    bulk_clients: int = 0,
) -> CrashRun:
    """`trials` × (traffic, kill -9, restart, retry keyed); then verify the store file."""
    rng = random.Random(seed)
    workdir.mkdir(parents=True, exist_ok=True)
    server = ServerProcess(write_config(workdir, 0), 0, workdir / "server.log")
    ledger = Ledger()
    restarts: list[float] = []
    retries = 0
    try:
        restarts.append(server.start())
        for trial in range(trials):
            traffic_then_kill(server, ledger, trial, clients, rng, min_s, max_s, bulk_clients)
            restarts.append(server.start())  # the store must open cleanly after every kill -9
            retries += retry_keyed(server, ledger)
    finally:
        server.kill()
    verdict = verify_store(workdir / "store" / "loglens.duckdb", ledger)
    return CrashRun(
        trials,
        verdict.acked_logs,
        verdict.stored_logs,
        verdict.unacked_stored,
        ledger.requests_ok,
        ledger.requests_failed,
        retries,
        sum(restarts) / len(restarts),
        verdict.problems,
        max(restarts),
    )
