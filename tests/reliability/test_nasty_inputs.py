"""A corpus of nasty inputs, each with the outcome documented in docs/reliability.md.

Every case goes through the real HTTP ingest path of a live server; the test asserts the
answer (accepted / rejected with the documented reason), that a rejected record is in the
dead-letter store, and what exactly was stored for an accepted one.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from tests_support import LiveServer

NOW = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _log(message: str = '"m"', ts: str | None = None, extra: str = "", service: str = '"api"') -> bytes:
    return (f'{{"timestamp":"{ts or NOW}","level":"INFO","service":{service},"message":{message}{extra}}}').encode(
        "utf-8", "surrogatepass"
    )


def _deep(levels: int) -> str:
    return '{"a":' * levels + "1" + "}" * levels


NDJSON = "application/x-ndjson"
JSON = "application/json"

# (id, body, content type, accepted, rejected, reason fragment of the rejection or None)
CORPUS: list[tuple[str, bytes, str, int, int, str | None]] = [
    ("invalid-utf8", _log('"bad \\u00e9"').replace(b"\\u00e9", b"\xff\xfe"), JSON, 0, 1, "not valid UTF-8"),
    (
        "invalid-utf8-one-ndjson-line",
        _log() + b"\n" + _log('"x\\u00e9"').replace(b"\\u00e9", b"\xff"),
        NDJSON,
        1,
        1,
        "not valid UTF-8",
    ),
    ("message-1mb", _log(json.dumps("x" * 1_000_000)), JSON, 0, 1, "message: must be shorter than or equal to 65536"),
    ("message-64kb-limit", _log(json.dumps("x" * 65536)), JSON, 1, 0, None),
    ("metadata-1mb-string", _log(extra=',"metadata":{"blob":' + json.dumps("y" * 1_000_000) + "}"), JSON, 1, 0, None),
    ("metadata-nested-200", _log(extra=',"metadata":' + _deep(200)), JSON, 1, 0, None),
    (
        "metadata-nested-1000",
        _log(extra=',"metadata":' + _deep(1000)),
        JSON,
        0,
        1,
        "metadata: cannot be stored as JSON",
    ),
    ("metadata-nested-100000", _log(extra=',"metadata":' + _deep(100_000)), JSON, 0, 1, "depth limit exceeded"),
    ("nan", _log(extra=',"response_time_ms":NaN'), JSON, 0, 1, "malformed JSON"),
    ("infinity", _log(extra=',"response_time_ms":Infinity'), JSON, 0, 1, "malformed JSON"),
    ("overflow-1e999", _log(extra=',"response_time_ms":1e999'), JSON, 0, 1, "number is infinity"),
    ("year-0", _log(ts="0000-01-01T00:00:00Z"), JSON, 0, 1, "timestamp: no such date"),
    ("year-1", _log(ts="0001-01-01T00:00:00Z"), JSON, 1, 0, None),
    ("year-9999", _log(ts="9999-12-31T23:59:59Z"), JSON, 0, 1, "in the future, beyond the allowed clock skew"),
    ("epoch-negative", b'{"timestamp":-5,"level":"INFO","service":"api","message":"m"}', JSON, 0, 1, "timestamp:"),
    (
        "response-time-negative",
        _log(extra=',"response_time_ms":-1'),
        JSON,
        0,
        1,
        "response_time_ms: must be bigger than or equal to 0",
    ),
    ("duplicate-keys", _log(extra=',"level":"ERROR"'), JSON, 1, 0, None),
    ("bom-json", b"\xef\xbb\xbf" + _log(), JSON, 1, 0, None),
    ("bom-ndjson", b"\xef\xbb\xbf" + _log() + b"\n" + _log(), NDJSON, 2, 0, None),
    ("crlf-ndjson", _log() + b"\r\n" + _log() + b"\r\n", NDJSON, 2, 0, None),
    ("null-byte-escaped-in-message", _log('"a\\u0000b"'), JSON, 1, 0, None),
    ("null-byte-raw-in-string", _log('"a\x00b"'), JSON, 0, 1, "unexpected control character"),
    ("null-byte-in-service", _log(service='"a\\u0000pi"'), JSON, 0, 1, "service: must match pattern"),
    ("lone-surrogate", _log('"\\ud800"'), JSON, 0, 1, "surrogate"),
    ("array-of-deep-lists", b"[" + b"[" * 1020 + b"]" * 1020 + b"]", JSON, 0, 1, "must be a JSON object"),
    ("not-json", b"hello world", JSON, 0, 1, "malformed JSON"),
    ("json-scalar", b"42", JSON, 0, 1, "must be a JSON object"),
]


@pytest.fixture(scope="module")
def nasty_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from tests_support import make_settings, start_server

    server = start_server(make_settings(tmp_path_factory.mktemp("nasty"), "notifiers: []"))
    yield server
    server.stop()


@pytest.mark.parametrize(
    ("body", "ctype", "accepted", "rejected", "reason"), [c[1:] for c in CORPUS], ids=[c[0] for c in CORPUS]
)
def test_nasty_input(
    nasty_server: LiveServer, body: bytes, ctype: str, accepted: int, rejected: int, reason: str | None
) -> None:
    store = nasty_server.state.store
    dead_before = store.query("SELECT count(*) FROM dead_letter")[0][0]
    with nasty_server.client() as client:
        resp = client.post("/api/v1/logs", content=body, headers={"content-type": ctype})
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert (out["accepted"], out["rejected"]) == (accepted, rejected), out
    if reason is not None:
        assert reason in out["errors"][0]["reason"], out
        rows = store.query("SELECT reason, raw FROM dead_letter WHERE id > ? ORDER BY id", [dead_before])
        assert len(rows) == rejected and reason in rows[0][0]
        assert len(rows[0][1]) <= 4096 + 40  # raw text kept, bounded


def _stored(server: LiveServer, body: bytes, ctype: str = JSON) -> dict[str, Any]:
    store = server.state.store
    last = store.query("SELECT coalesce(max(id), 0) FROM logs")[0][0]
    with server.client() as client:
        assert client.post("/api/v1/logs", content=body, headers={"content-type": ctype}).json()["accepted"] == 1
    cols = ["ts", "level", "service", "message", "metadata", "late"]
    row = store.query(f"SELECT {', '.join(cols)} FROM logs WHERE id > ?", [last])
    assert len(row) == 1
    return dict(zip(cols, row[0], strict=True))


def test_documented_details_of_accepted_nasty_inputs(nasty_server: LiveServer) -> None:
    # duplicate keys: the last value wins (orjson), so this log is an ERROR
    assert _stored(nasty_server, _log(extra=',"level":"ERROR"'))["level"] == "ERROR"
    # an escaped NUL survives byte-exact
    assert _stored(nasty_server, _log('"a\\u0000b"'))["message"] == "a\x00b"
    # year 1 is a real date: stored, and flagged late (it is far behind the allowed lateness)
    old = _stored(nasty_server, _log(ts="0001-01-01T00:00:00Z"))
    assert old["ts"].year == 1 and old["late"] is True
    # a BOM and CRLF are not part of the record
    assert _stored(nasty_server, b"\xef\xbb\xbf" + _log('"bom"') + b"\r\n", NDJSON)["message"] == "bom"
    # 200 levels of metadata are kept as JSON text
    meta = _stored(nasty_server, _log(extra=',"metadata":' + _deep(200)))["metadata"]
    assert meta.count('{"a":') == 200
    # and the server is still healthy after the whole corpus
    with nasty_server.client() as client:
        assert client.get("/healthz").status_code == 200
