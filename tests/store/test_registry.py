"""The service registry's per-batch aggregate: the row path for small batches equals the group-by."""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa
import pytest

from loglens.schema import LogSchema, parse_values
from loglens.store import registry

REPO = Path(__file__).resolve().parents[2]
SCHEMA = LogSchema.from_file(REPO / "schemas" / "log_schema.yaml")


@pytest.mark.parametrize("n", [1, 40, 256])
def test_per_service_row_path_equals_the_group_by(n: int, monkeypatch: pytest.MonkeyPatch) -> None:
    rnd = random.Random(n)
    base = 1_790_000_000.0
    values = [
        {
            "timestamp": base + rnd.uniform(-600, 600),
            "level": rnd.choice(["INFO", "ERROR", "WARN", "FATAL", "debug"]),
            "service": rnd.choice(["a", "b", "c"]),
            "message": "m",
        }
        for _ in range(n)
    ]
    # arrivals spread over a second, so first/last seen differ per service
    tables = [
        SCHEMA.validate(parse_values(values[i : i + 8]), "t", int((base + i) * 1e6)).table for i in range(0, n, 8)
    ]
    logs = pa.concat_tables(tables)
    rows_path = registry.per_service(logs)
    monkeypatch.setattr(registry, "_SMALL_BATCH", 0)
    grouped = registry.per_service(logs)
    assert sorted(rows_path, key=lambda s: s.service) == sorted(grouped, key=lambda s: s.service)
