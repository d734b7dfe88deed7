"""POST /api/v1/logs against a real server and a real DuckDB file."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import orjson

from loglens.config import Settings
from loglens.demo import generate_logs, make_log
from tests_support import LiveServer, count_rows


def post(client: httpx.Client, body: Any, **headers: str) -> httpx.Response:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return client.post("/api/v1/logs", content=content, headers={"Content-Type": "application/json", **headers})


def test_valid_batch_is_committed_before_the_answer(live_server: LiveServer) -> None:
    logs = list(generate_logs(50))
    with live_server.client() as c:
        r = post(c, logs)
    assert r.status_code == 200
    assert r.json() == {"accepted": 50, "rejected": 0, "errors": [], "duplicate": False}
    # committed: visible immediately through an independent read
    assert count_rows(live_server, "logs") == 50


def test_single_object_and_mixed_batch(live_server: LiveServer) -> None:
    good = list(generate_logs(3))
    bad = [{"level": "INFO"}, {**good[0], "response_time_ms": -5}, "not an object"]
    with live_server.client() as c:
        assert post(c, good[0]).json()["accepted"] == 1
        r = post(c, [good[1], bad[0], good[2], bad[1], bad[2]])
    body = r.json()
    assert r.status_code == 200
    assert (body["accepted"], body["rejected"]) == (2, 3)
    assert [e["index"] for e in body["errors"]] == [1, 3, 4]
    assert "missing required fields" in body["errors"][0]["reason"]
    assert "response_time_ms" in body["errors"][1]["reason"]
    with live_server.client() as c:
        dead = c.get("/api/v1/dead-letter").json()
    assert dead["total"] == 3
    assert {d["source"] for d in dead["dead_letters"]} == {"http"}
    assert any('"level":"INFO"' in d["raw"] for d in dead["dead_letters"])


def test_ndjson_and_gzip(live_server: LiveServer) -> None:
    lines = b"\n".join(orjson.dumps(x) for x in generate_logs(20)) + b"\n{broken json\n"
    with live_server.client() as c:
        r = c.post(
            "/api/v1/logs",
            content=gzip.compress(lines),
            headers={"Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"},
        )
    assert r.status_code == 200
    assert (r.json()["accepted"], r.json()["rejected"]) == (20, 1)
    assert r.json()["errors"][0]["index"] == 20
    assert r.json()["errors"][0]["reason"].startswith("malformed JSON")


def test_text_lines_starting_with_a_bracket_sent_as_json_are_one_dead_letter_each(live_server: LiveServer) -> None:
    """An Apache-style error log posted as application/json starts with `[` but is no JSON array:
    each line is its own record with its own dead letter, as NDJSON labelled JSON is."""
    good = orjson.dumps(next(iter(generate_logs(1))))
    body = (
        b"[Sun Dec 04 04:47:44 2005] [notice] workerEnv.init() ok\n"
        + good
        + b"\n[Sun Dec 04 04:47:45 2005] [error] x\n"
    )
    with live_server.client() as c:
        r = c.post("/api/v1/logs", content=body, headers={"Content-Type": "application/json"})
        dead = c.get("/api/v1/dead-letter").json()
    assert r.status_code == 200
    assert (r.json()["accepted"], r.json()["rejected"]) == (1, 2)
    assert [e["index"] for e in r.json()["errors"]] == [0, 2]
    assert sorted(d["raw"] for d in dead["dead_letters"]) == [
        "[Sun Dec 04 04:47:44 2005] [notice] workerEnv.init() ok",
        "[Sun Dec 04 04:47:45 2005] [error] x",
    ]


def test_errors_list_is_capped(settings_factory: Callable[..., Settings], live_server_factory: Any) -> None:
    srv = live_server_factory(settings_factory(ingest={"max_errors_reported": 5}))
    with srv.client() as c:
        r = post(c, [{"bad": i} for i in range(30)])
    assert r.json()["rejected"] == 30 and len(r.json()["errors"]) == 5
    assert count_rows(srv, "dead_letter") == 30


def test_malformed_bodies_are_400_and_dead_lettered(live_server: LiveServer) -> None:
    cases = [
        (b"\x00\xff\xfe not json", {}),
        (b"[1, 2", {}),
        (b"garbage", {"Content-Encoding": "gzip"}),
        (b"", {"Content-Encoding": "br"}),
        (gzip.compress(b'{"a":1}')[:-8], {"Content-Encoding": "gzip"}),
    ]
    with live_server.client() as c:
        for body, headers in cases:
            r = post(c, body, **headers)
            assert r.status_code in (200, 400), (body, r.status_code, r.text)
            if r.status_code == 200:
                assert r.json()["accepted"] == 0 and r.json()["rejected"] == 1
        assert c.get("/healthz").status_code == 200
    assert count_rows(live_server, "dead_letter") == len(cases)


def test_body_limit_413(settings_factory: Callable[..., Settings], live_server_factory: Any) -> None:
    srv = live_server_factory(settings_factory(ingest={"max_body_bytes": 2000}))
    big = orjson.dumps([make_log(__import__("random").Random(1), "a", "INFO") for _ in range(20)])
    assert len(big) > 2000
    with srv.client() as c:
        assert post(c, big).status_code == 413
        # the limit also applies after gzip decoding (no zip bombs)
        assert post(c, gzip.compress(big), **{"Content-Encoding": "gzip"}).status_code == 413

        # chunked upload without Content-Length is cut off too
        def gen() -> Any:
            yield big

        r = c.post("/api/v1/logs", content=gen(), headers={"Content-Type": "application/json"})
        assert r.status_code == 413
        assert c.get("/healthz").status_code == 200
    assert count_rows(srv, "logs") == 0


def test_saturated_queue_answers_429_with_retry_after(
    settings_factory: Callable[..., Settings], live_server_factory: Any
) -> None:
    srv = live_server_factory(settings_factory(ingest={"max_queue_logs": 100}))
    gate = threading.Event()
    entered = threading.Event()

    def stall(_event: Any) -> None:  # holds the writer thread after its first commit
        entered.set()
        gate.wait(30)

    srv.state.store.listeners.append(stall)
    batch = list(generate_logs(60))
    try:
        with ThreadPoolExecutor(4) as pool, srv.client() as c:
            first = pool.submit(post, c, batch)
            assert entered.wait(10)
            second = pool.submit(post, c, batch)  # queued behind the stalled writer: 60 pending
            while srv.state.store.queue_depth < 60:
                threading.Event().wait(0.01)
            third = post(c, batch)  # 60 + 60 > 100
            assert third.status_code == 429
            assert int(third.headers["retry-after"]) >= 1
            gate.set()
            assert first.result().status_code == 200
            assert second.result().status_code == 200
    finally:
        gate.set()
        srv.state.store.listeners.remove(stall)
    assert count_rows(srv, "logs") == 120  # exactly the acknowledged logs, nothing from the 429


def test_idempotency_key_counts_a_retried_batch_once(live_server: LiveServer) -> None:
    logs = list(generate_logs(10))
    with live_server.client() as c:
        a = post(c, logs, **{"Idempotency-Key": "batch-1"})
        b = post(c, logs, **{"Idempotency-Key": "batch-1"})
    assert a.json()["accepted"] == 10
    assert b.status_code == 200 and b.json()["duplicate"] is True and b.json()["accepted"] == 0
    assert count_rows(live_server, "logs") == 10


def test_restart_keeps_everything(settings_factory: Callable[..., Settings], live_server_factory: Any) -> None:
    settings = settings_factory()
    srv = live_server_factory(settings)
    with srv.client() as c:
        post(c, [*generate_logs(25), {"bad": True}])
    srv.stop()
    again = live_server_factory(settings)
    with again.client() as c:
        assert c.get("/api/v1/dead-letter").json()["total"] == 1
        volume = c.get("/api/v1/timeseries", params={"metric": "volume", "minutes": 5}).json()
        assert sum(p["v"] for s in volume["series"] for p in s["points"]) == 25
        post(c, list(generate_logs(5, seed=9)))
        ids = [log["id"] for log in c.get("/api/v1/logs", params={"limit": 1000}).json()["logs"]]
    assert len(ids) == 30 and len(set(ids)) == 30  # ids continue after restart, never reused


def test_api_token_required_when_configured(
    settings_factory: Callable[..., Settings], live_server_factory: Any
) -> None:
    srv = live_server_factory(settings_factory("server: {api_token: t0ken}\n"))
    with srv.client() as c:
        assert post(c, list(generate_logs(1))).status_code == 401
        assert c.get("/api/v1/services").status_code == 401
        assert c.get("/healthz").status_code == 200
        ok = post(c, list(generate_logs(1)), Authorization="Bearer t0ken")
        assert ok.status_code == 200
        assert c.get("/api/v1/services", headers={"X-API-Token": "t0ken"}).status_code == 200
        # never in the URL: it would land in browser history and access logs
        assert c.get("/api/v1/services", params={"token": "t0ken"}).status_code == 401


def test_the_fast_path_answers_exactly_as_the_documented_route(tmp_path: Any) -> None:
    """`POST /api/v1/logs` is served by an ASGI fast path in front of FastAPI; for every kind of
    request it must give the status, body and Retry-After the FastAPI route gives."""
    from loglens.api.app import create_app
    from tests_support import make_settings, start_server

    good = list(generate_logs(3))
    requests: list[tuple[bytes, dict[str, str]]] = [
        (orjson.dumps(good[0]), {"Content-Type": "application/json"}),
        (orjson.dumps([good[1], {"level": "INFO"}, "x"]), {"Content-Type": "application/json"}),
        (b"\n".join(orjson.dumps(x) for x in good) + b"\n{broken", {"Content-Type": "application/x-ndjson"}),
        (gzip.compress(orjson.dumps(good)), {"Content-Type": "application/json", "Content-Encoding": "gzip"}),
        (b"{not json", {"Content-Type": "application/json"}),
        (b"not gzip", {"Content-Type": "application/json", "Content-Encoding": "gzip"}),
        (b"x" * 5000, {"Content-Type": "application/json"}),  # beyond the configured body limit
        (orjson.dumps(good[2]), {"Content-Type": "application/json", "Idempotency-Key": "k1"}),
        (orjson.dumps(good[2]), {"Content-Type": "application/json", "Idempotency-Key": "k1"}),
        (orjson.dumps(good[2]), {"Content-Type": "application/json", "Idempotency-Key": "bad key"}),
    ]

    def answers(name: str, fast: bool) -> list[tuple[int, Any, str | None]]:
        settings = make_settings(tmp_path / name, ingest={"max_body_bytes": 4096})
        app = create_app(settings, ingest_fast_path=fast)
        out = []
        server = start_server(settings, app=app)
        try:
            with server.client() as c:
                for body, headers in requests:
                    r = c.post("/api/v1/logs", content=body, headers=headers)
                    out.append((r.status_code, r.json(), r.headers.get("retry-after")))
                dead = c.get("/api/v1/dead-letter").json()["total"]
        finally:
            server.stop()
        out.append((0, dead, None))
        return out

    via_fast, via_route = answers("fast", True), answers("route", False)
    assert via_fast == via_route
    # a malformed body is one rejected record; undecodable gzip and an oversized body are refused
    assert [a[0] for a in via_fast[:-1]] == [200, 200, 200, 200, 200, 400, 413, 200, 200, 422]
    assert via_fast[8][1]["duplicate"] is True
    assert via_fast[-1][1] == 6  # every rejected record and refused body is a dead letter


def test_the_fast_path_applies_every_protection_the_stack_applies(tmp_path: Any) -> None:
    """The fast path sits in front of the middleware stack, so it must refuse what the stack
    refuses — tokens and scopes, Host, cross-site and form posts, the body budget — and answer
    browsers with the stack's CORS headers."""
    from loglens.api.app import create_app
    from tests_support import make_settings, start_server

    log = orjson.dumps(next(iter(generate_logs(1))))
    json_type = {"Content-Type": "application/json"}
    cases: list[tuple[bytes, dict[str, str]]] = [
        (log, json_type),  # no token
        (log, {**json_type, "Authorization": "Bearer wrong"}),
        (log, {**json_type, "X-API-Token": "tok-read"}),  # a token without the ingest scope
        (log, {**json_type, "X-API-Token": "tok-ingest"}),
        (log, {**json_type, "X-API-Token": "tok-ingest", "Host": "evil.example"}),
        (log, {"Content-Type": "text/plain", "X-API-Token": "tok-ingest"}),  # a form post
        (log, {**json_type, "X-API-Token": "tok-ingest", "Origin": "http://evil.example"}),
        (log, {**json_type, "X-API-Token": "tok-ingest", "Origin": "http://app.example"}),
        (log, {**json_type, "X-API-Token": "tok-ingest", "Sec-Fetch-Site": "cross-site"}),
        (log * 30, {**json_type, "X-API-Token": "tok-ingest"}),  # larger than the body limit
    ]
    yaml_text = (
        "server:\n  ingest_token: tok-ingest\n  read_token: tok-read\n"
        "  cors_origins: ['http://app.example']\n  max_inflight_body_bytes: 4096\n"
        "ingest:\n  max_body_bytes: 4096\n"
    )

    def answers(name: str, fast: bool) -> list[tuple[int, Any, str | None, str | None]]:
        settings = make_settings(tmp_path / name, yaml_text)
        server = start_server(settings, app=create_app(settings, ingest_fast_path=fast))
        out = []
        try:
            with server.client() as c:
                for body, headers in cases:
                    r = c.post("/api/v1/logs", content=body, headers=headers)
                    out.append(
                        (
                            r.status_code,
                            r.json(),
                            r.headers.get("retry-after"),
                            r.headers.get("access-control-allow-origin"),
                        )
                    )
        finally:
            server.stop()
        return out

    via_fast, via_route = answers("fast", True), answers("route", False)
    assert via_fast == via_route
    assert [a[0] for a in via_fast] == [401, 401, 403, 200, 400, 415, 403, 200, 403, 413]
    assert via_fast[7][3] == "http://app.example"
