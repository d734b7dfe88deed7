"""Generated data sets of the analyze tests (a plain module: conftest files cannot be imported reliably)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from loglens.demo import generate_logs

REPO = Path(__file__).resolve().parents[2]
START = 1_700_000_000.0  # 2023-11-14T22:13:20Z: safely in the past, so no log is "in the future"
SERVICES = ("checkout", "payments", "search", "auth")


def logs(n: int, seed: int = 11) -> list[dict[str, Any]]:
    """`n` valid logs over ~n/20 s for 4 services, 10 % errors (several per service and minute)."""
    return list(generate_logs(n, services=SERVICES, error_ratio=0.1, seed=seed, start=START, spacing_s=0.05))


def write_ndjson(path: Path, records: list[Any], *, broken: dict[int, bytes] | None = None) -> Path:
    """NDJSON with `broken[i]` written as line i instead of the record."""
    broken = broken or {}
    with path.open("wb") as f:
        for i, rec in enumerate(records):
            f.write(broken[i] if i in broken else orjson.dumps(rec))
            f.write(b"\n")
    return path


# Broken lines of known kinds, each with the reason key the report must group it under.
BROKEN_KINDS: list[tuple[str, Callable[[dict[str, Any]], bytes]]] = [
    ("malformed JSON", lambda r: orjson.dumps(r)[:-7]),
    ("missing required field: service", lambda r: orjson.dumps({k: v for k, v in r.items() if k != "service"})),
    (
        "level: must be one of ['DEBUG', 'INFO', 'WARN', 'ERROR', 'FATAL']",
        lambda r: orjson.dumps({**r, "level": "LOUD"}),
    ),
    ("response_time_ms: must be bigger than or equal to 0", lambda r: orjson.dumps({**r, "response_time_ms": -5})),
]
