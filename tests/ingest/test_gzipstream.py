"""Damaged gzip input: every byte before the damage is read, then one clear error (never a bare
"Aborted." or a traceback), in `loglens ingest` as in the reader itself."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import zlib
from pathlib import Path

import orjson
import pytest

from loglens.demo import generate_logs
from loglens.ingest.gzipstream import GzipDamage, gunzip, open_gunzip
from loglens.store import Store


def test_gunzip_reads_every_member_like_gzip(tmp_path: Path) -> None:
    data = os.urandom(3000) + b"\n".join(b"line %d" % i for i in range(50_000))
    f = tmp_path / "m.gz"
    f.write_bytes(gzip.compress(data[:1000]) + gzip.compress(b"") + gzip.compress(data[1000:]))
    assert b"".join(gunzip(f, 4096)) == data == gzip.decompress(f.read_bytes())
    with open_gunzip(f) as stream:
        assert stream.read() == data
    empty = tmp_path / "empty.gz"
    empty.write_bytes(b"")
    assert list(gunzip(empty)) == []


def test_truncated_and_corrupt_streams_raise_after_their_readable_bytes(tmp_path: Path) -> None:
    data = b"\n".join(b"line %d" % i for i in range(200_000)) + b"\n"
    whole = gzip.compress(data)
    cut = tmp_path / "cut.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    got = bytearray()
    with pytest.raises(GzipDamage, match="truncated"):
        for piece in gunzip(cut):
            got += piece
    assert len(got) > len(data) // 4 and data.startswith(bytes(got))
    garbage = tmp_path / "garbage.gz"
    garbage.write_bytes(whole[:100] + b"\xff" * 5000)
    with pytest.raises(GzipDamage, match="corrupt gzip stream"), open_gunzip(garbage) as stream:
        stream.read()


def test_loglens_ingest_of_a_truncated_gzip_stores_what_it_could_and_says_so(tmp_path: Path) -> None:
    records = list(generate_logs(3000, seed=3))
    whole = gzip.compress(b"".join(orjson.dumps(r) + b"\n" for r in records))
    f = tmp_path / "cut.ndjson.gz"
    f.write_bytes(whole[: len(whole) * 3 // 4])
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"storage: {{path: {tmp_path / 'store.duckdb'}}}\nnotifiers: []\n", encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "loglens.cli", "ingest", str(f), "--config", str(cfg), "--batch-size", "500"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "Aborted" not in proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert str(f) in line and "truncated" in line and "accepted" in line
    complete = zlib.decompressobj(wbits=31).decompress(f.read_bytes()).count(b"\n")
    with Store(tmp_path / "store.duckdb") as store:
        stored = store.query("SELECT count(*) FROM logs")[0][0]
    assert stored == complete > 0  # every whole line before the damage, none lost
