"""Data sets shared by the analyze tests: generated logs written once per session."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from analyze_data import BROKEN_KINDS, REPO, logs, write_ndjson

from loglens.config import Settings, parse_settings


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
