"""`loglens demo`: a server plus generated traffic from several services.

The traffic generator is also used by tests and benchmarks (`generate_logs`).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import uvicorn

from loglens.config import NotifierConfig, Settings, secret_value

DEMO_SERVICES = ("checkout", "payments", "search", "auth", "inventory")
_MESSAGES = {
    "INFO": ["request served {path} in {ms} ms", "user {user} logged in", "cache hit for key {key}"],
    "WARN": ["slow query on {table} took {ms} ms", "retrying call to {service} attempt {n}"],
    "ERROR": ["payment declined for order {n}", "upstream {service} returned 502", "timeout calling {service}"],
}


def make_log(rng: random.Random, service: str, level: str, ts: float | None = None) -> dict[str, Any]:
    """One realistic log record (valid against schemas/log_schema.yaml)."""
    template = rng.choice(_MESSAGES.get(level, _MESSAGES["INFO"]))
    message = template.format(
        path=rng.choice(["/cart", "/pay", "/search", "/login"]),
        ms=rng.randint(5, 900),
        user=f"u-{rng.randint(1, 50)}",
        key=f"k{rng.randint(1, 999)}",
        table=rng.choice(["orders", "users"]),
        service=rng.choice(DEMO_SERVICES),
        n=rng.randint(1, 99999),
    )
    return {
        "timestamp": datetime.fromtimestamp(ts if ts is not None else time.time(), UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z"),
        "level": level,
        "service": service,
        "message": message,
        "user_id": f"u-{rng.randint(1, 50)}",
        "ip_address": f"10.0.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
        "response_time_ms": round(rng.lognormvariate(4, 0.6), 2),
        "trace_id": f"{rng.getrandbits(128):032x}",
        "metadata": {"region": rng.choice(["eu-west-1", "us-east-1"])},
    }


def generate_logs(
    n: int,
    *,
    services: tuple[str, ...] = DEMO_SERVICES,
    error_ratio: float = 0.02,
    seed: int = 7,
    start: float | None = None,
    spacing_s: float = 0.0,
) -> Iterator[dict[str, Any]]:
    """`n` logs round-robin over `services`, ~`error_ratio` of them errors; deterministic per seed."""
    rng = random.Random(seed)
    t0 = time.time() if start is None else start
    for i in range(n):
        level = "ERROR" if rng.random() < error_ratio else rng.choice(["INFO", "INFO", "INFO", "WARN", "DEBUG"])
        yield make_log(rng, services[i % len(services)], level, t0 + i * spacing_s)


def _start_server(settings: Settings) -> tuple[uvicorn.Server, threading.Thread, str]:
    """Serve on the configured address (port 0: a free one); returns the server, its thread and URL."""
    from loglens.api.server import bind_listener, uvicorn_config
    from loglens.errors import ServerBindError

    try:
        sock = bind_listener(settings.server.host, settings.server.port)
    except ServerBindError as exc:
        raise SystemExit(f"error: {exc} (try --port)") from None
    server = uvicorn.Server(uvicorn_config(settings))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="loglens-demo-server", daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise SystemExit("demo server failed to start")
        time.sleep(0.05)
    host = f"[{settings.server.host}]" if ":" in settings.server.host else settings.server.host
    return server, thread, f"http://{host}:{sock.getsockname()[1]}"


@dataclass(frozen=True)
class _Timeline:
    """When each incident of the demo happens (seconds after start) and the traffic rate."""

    rate: float  # logs per second per service
    silent: tuple[float, float]  # auth sends nothing (absence)
    errors: tuple[float, float]  # payments: half its logs are errors (error_rate)
    burst: tuple[float, float]  # search sends 6x its usual volume (volume + anomaly)
    slow: tuple[float, float]  # inventory answers 15x slower (p95 latency anomaly)
    pattern: float  # checkout logs a FATAL line never seen before (new_pattern)
    end: float  # stop waiting for resolutions


_NORMAL = _Timeline(1.0, (10, 140), (20, 50), (60, 85), (90, 125), 100, 260)
_FAST = _Timeline(4.0, (2, 13), (3, 10), (10, 18), (15, 23), 17, 45)


def demo_settings(settings: Settings, fast: bool) -> Settings:
    """The demo's own thresholds (code-only overrides): new patterns are only judged after the
    learning phase, and --fast shrinks every window so the whole story fits in ~40 s."""
    rules = settings.alerts.rules
    np_rule = rules.new_pattern.model_copy(
        update={"warmup_seconds": 2.0 if fast else 5.0, "resolve_after_seconds": 8.0 if fast else 45.0}
    )
    update: dict[str, Any] = {"new_pattern": np_rule}
    if fast:
        update["error_rate"] = rules.error_rate.model_copy(update={"window_seconds": 10, "min_events": 10})
        update["volume"] = rules.volume.model_copy(update={"window_seconds": 10, "threshold": 100})
        update["absence"] = rules.absence.model_copy(update={"threshold_seconds": 6})
        update["anomaly"] = rules.anomaly.model_copy(update={"window_seconds": 15})
    # Damp flapping (a rate hovering at its threshold).
    alerts = settings.alerts.model_copy(
        update={"rules": rules.model_copy(update=update), "resolve_after_seconds": 2.0 if fast else 10.0}
    )
    # Every alert and its resolution reach the terminal through a notifier plugin (the console
    # channel), the same path a Slack or webhook channel takes: what you see is what they get.
    console = NotifierConfig(
        name="console",
        type="console",
        severities=["critical", "warning", "info"],
        settings={"stream": "stdout", "format": "text"},
    )
    notifiers = [n for n in settings.notifiers if n.type != "console" and n.name != "console"] + [console]
    return settings.model_copy(update={"alerts": alerts, "notifiers": notifiers})


def fresh_store(settings: Settings) -> None:
    """Delete the demo's store and its companions (WAL, learned templates) so a new run starts from
    nothing (`--keep` skips this)."""
    path = settings.storage.path
    if path.parent.is_dir():
        for candidate in path.parent.glob(path.name + "*"):
            if candidate.is_file():
                candidate.unlink()


def _records(
    rng: random.Random, tl: _Timeline, t: float, dt: float, now: float, sent: dict[str, float]
) -> list[dict[str, Any]]:
    """The logs every service sends in (t, t + dt] of the demo timeline."""
    out: list[dict[str, Any]] = []
    for svc in DEMO_SERVICES:
        if svc == "auth" and tl.silent[0] <= t < tl.silent[1]:
            continue
        rate = tl.rate * (6 if svc == "search" and tl.burst[0] <= t < tl.burst[1] else 1)
        sent[svc] = sent.get(svc, 0.0) + rate * dt
        n = int(sent[svc])
        sent[svc] -= n
        for _ in range(n):
            error_share = 0.5 if svc == "payments" and tl.errors[0] <= t < tl.errors[1] else 0.01
            rec = make_log(rng, svc, "ERROR" if rng.random() < error_share else "INFO", now)
            if svc == "inventory" and tl.slow[0] <= t < tl.slow[1]:
                rec["response_time_ms"] = round(rec["response_time_ms"] * 15, 2)
            out.append(rec)
    return out


def _history(rng: random.Random, tl: _Timeline, now: float, minutes: int = 15) -> list[dict[str, Any]]:
    """Steady past traffic, so the anomaly baselines are warm from the first second."""
    n = int(minutes * 60 * tl.rate)
    out = [
        make_log(rng, svc, "ERROR" if rng.random() < 0.01 else "INFO", now - minutes * 60 + i / tl.rate)
        for i in range(n)
        for svc in DEMO_SERVICES
    ]
    # every everyday error line once, so only the scripted FATAL line is a *new* pattern later;
    # spread over the whole history (not its last minute, where they made a spurious error-rate
    # anomaly the demo's first line)
    pairs = [(t, target) for t in _MESSAGES["ERROR"] for target in DEMO_SERVICES]
    step = minutes * 60 / len(pairs)
    for i, (template, target) in enumerate(pairs):
        rec = make_log(rng, DEMO_SERVICES[i % len(DEMO_SERVICES)], "ERROR", now - minutes * 60 + (i + 0.5) * step)
        rec["message"] = template.format(service=target, n=rng.randint(1, 99999))
        out.append(rec)
    return out


def run_demo(settings: Settings, *, duration: float = 0, fast: bool = False) -> int:
    """Serve, send traffic that fires (and resolves) every alert type, print each transition."""
    from loglens.ops.logs import configure_logging

    configure_logging("WARNING")
    settings = demo_settings(settings, fast)
    tl = _FAST if fast else _NORMAL
    server, thread, url = _start_server(settings)
    print(f"loglens demo running — dashboard: {url}/   API docs: {url}/docs", flush=True)
    print(
        "timeline: auth goes silent, payments error spike, search volume burst, inventory latency "
        "anomaly, a new FATAL pattern in checkout. Each alert and its resolution are printed by the "
        "console notifier channel as [FIRING] / [RESOLVED] lines.",
        flush=True,
    )
    rng = random.Random(1)
    token = secret_value(settings.server.admin_token) or secret_value(settings.server.api_token)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    sent: dict[str, float] = {}
    end = duration or float("inf")  # 0: steady traffic after the timeline until Ctrl-C
    started = time.monotonic()
    last = 0.0
    pattern_sent = done = False
    try:
        with httpx.Client(base_url=url, timeout=10, headers=headers) as client:
            post: dict[str, Any] = {"headers": {"Content-Type": "application/json"}}
            client.post("/api/v1/logs", content=orjson.dumps(_history(rng, tl, time.time())), **post)
            while (t := time.monotonic() - started) < end:
                batch = _records(rng, tl, last, t - last, time.time(), sent)
                last = t
                if not pattern_sent and t >= tl.pattern:
                    pattern_sent = True
                    batch.append(
                        {
                            **make_log(rng, "checkout", "FATAL"),
                            "message": "database connection pool exhausted on shard 7 after 5000 ms",
                        }
                    )
                if batch:
                    client.post("/api/v1/logs", content=orjson.dumps(batch), **post)
                if not done and t >= tl.end:
                    done = True
                    print(f"[{t:6.1f}s] demo timeline done; steady traffic continues. Dashboard: {url}/", flush=True)
                time.sleep(0.1)
    except KeyboardInterrupt:
        pass
    finally:
        server.should_exit = True
        thread.join(timeout=15)
    return 0
