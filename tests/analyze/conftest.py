"""Data sets shared by the analyze tests: generated logs written once per session."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from loglens.config import Settings, parse_settings
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
    ("level: must be one of ['DEBUG', 'INFO', 'WARN', 'ERROR', 'FATAL']",
     lambda r: orjson.dumps({**r, "level": "LOUD"})),
    ("response_time_ms: must be bigger than or equal to 0", lambda r: orjson.dumps({**r, "response_time_ms": -5})),
]


@pytest.fixture(scope="session")
def settings() -> Settings:
    return parse_settings("{}", base_dir=REPO)


@pytest.fixture(scope="session")
def clean_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20,000 valid logs (~17 minutes, 4 services)."""
    return write_ndjson(tmp_path_factory.mktemp("clean") / "logs.ndjson", logs(20_000))


@pytest.fixture(scope="session")
def broken_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    """4,000 lines of which 5 % are broken in four ways; returns the file and count per reason."""
    records = logs(4_000, seed=5)
    rng = random.Random(3)
    picked = rng.sample(range(len(records)), 200)
    broken: dict[int, bytes] = {}
    expected: dict[str, int] = {}
    for j, i in enumerate(picked):
        reason, make = BROKEN_KINDS[j % len(BROKEN_KINDS)]
        broken[i] = make(records[i])
        expected[reason] = expected.get(reason, 0) + 1
    return write_ndjson(tmp_path_factory.mktemp("broken") / "broken.ndjson", records, broken=broken), expected
