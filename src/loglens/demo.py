"""`loglens demo`: a server plus generated traffic from several services.

The traffic generator is also used by tests and benchmarks (`generate_logs`).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import uvicorn

from loglens.config import Settings

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
    n: int, *, services: tuple[str, ...] = DEMO_SERVICES, error_ratio: float = 0.02, seed: int = 7,
    start: float | None = None, spacing_s: float = 0.0,
) -> Iterator[dict[str, Any]]:
    """`n` logs round-robin over `services`, ~`error_ratio` of them errors; deterministic per seed."""
    rng = random.Random(seed)
    t0 = time.time() if start is None else start
    for i in range(n):
        level = "ERROR" if rng.random() < error_ratio else rng.choice(["INFO", "INFO", "INFO", "WARN", "DEBUG"])
        yield make_log(rng, services[i % len(services)], level, t0 + i * spacing_s)


def _start_server(settings: Settings) -> tuple[uvicorn.Server, threading.Thread]:
    from loglens.server import uvicorn_config

    server = uvicorn.Server(uvicorn_config(settings))
    thread = threading.Thread(target=server.run, name="loglens-demo-server", daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise SystemExit("demo server failed to start (is the port in use? try --port)")
        time.sleep(0.05)
    return server, thread


def run_demo(settings: Settings, *, duration: float = 0, fast: bool = False) -> int:
    """Serve and send steady traffic; returns an exit code."""
    from loglens.logs import configure_logging

    configure_logging("WARNING")
    server, thread = _start_server(settings)
    url = f"http://{settings.server.host}:{settings.server.port}"
    print(f"loglens demo running — dashboard: {url}/   API docs: {url}/docs", flush=True)
    rng = random.Random(1)
    deadline = time.monotonic() + duration if duration else None
    headers = {"Authorization": f"Bearer {settings.server.api_token}"} if settings.server.api_token else {}
    try:
        with httpx.Client(base_url=url, timeout=10, headers=headers) as client:
            while deadline is None or time.monotonic() < deadline:
                batch = [
                    make_log(rng, svc, "ERROR" if rng.random() < 0.02 else "INFO")
                    for svc in DEMO_SERVICES
                    for _ in range(rng.randint(0, 2))
                ]
                if batch:
                    client.post("/api/v1/logs", content=orjson.dumps(batch),
                                headers={"Content-Type": "application/json"})
                time.sleep(0.1 if fast else 1.0)
    except KeyboardInterrupt:
        pass
    finally:
        server.should_exit = True
        thread.join(timeout=15)
    return 0
