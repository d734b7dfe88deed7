"""schemathesis against loglens's own OpenAPI schema: every operation, bounded examples, no 5xx.

The server is a real uvicorn on a loopback port with a fresh store; schemathesis reads
/openapi.json from it and sends generated (valid and invalid) requests to every operation.
The check is `not_a_server_error`: loglens may refuse input (4xx) but must never fail (5xx)
or crash. The SSE stream never ends by design, so it is checked separately for a clean start.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openapi_cases
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests_support import LiveServer, make_settings, start_server

EXAMPLES = 25  # per operation; ~27 operations stay well under a minute


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("fuzz")
    server = start_server(make_settings(tmp, "notifiers: []"))
    yield server
    server.stop()


@pytest.mark.slow
@pytest.mark.xdist_group("fuzz")
def test_no_operation_answers_5xx(fuzz_server: LiveServer) -> None:
    fuzzed = openapi_cases.operations(fuzz_server.url)
    assert len(fuzzed) >= 20  # the whole API, not a corner of it
    found: list[str] = []
    for op in fuzzed:
        found.extend(openapi_cases.failures(op, fuzz_server.url, EXAMPLES, openapi_cases.NO_5XX))
    assert found == []
    # and the server is still healthy after the barrage
    assert httpx.get(f"{fuzz_server.url}/healthz").status_code == 200


def test_stream_starts_cleanly(fuzz_server: LiveServer) -> None:
    with httpx.Client(base_url=fuzz_server.url, timeout=10) as client, client.stream("GET", "/api/v1/stream") as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")


def test_schema_lists_every_ingest_and_query_route(fuzz_server: LiveServer) -> None:
    """The fuzzed schema really covers the API: a route missing from it would escape fuzzing."""
    paths = httpx.get(f"{fuzz_server.url}/openapi.json").json()["paths"]
    for path in (
        "/api/v1/logs",
        "/api/v1/dead-letter",
        "/api/v1/services",
        "/api/v1/timeseries",
        "/api/v1/metrics/summary",
        "/healthz",
    ):
        assert path in paths


# Protocol endpoints take bodies the OpenAPI schema cannot describe (NDJSON, protobuf, gzip,
# ES bulk), so schemathesis sends them one example; here hypothesis throws raw bytes at them.
_RAW_TARGETS = [
    ("/api/v1/logs", "application/json"),
    ("/api/v1/logs", "application/x-ndjson"),
    ("/v1/logs", "application/x-protobuf"),
    ("/v1/logs", "application/json"),
    ("/loki/api/v1/push", "application/json"),
    ("/loki/api/v1/push", "application/x-protobuf"),
    ("/_bulk", "application/x-ndjson"),
]
_json_line = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)


@pytest.mark.slow
@pytest.mark.xdist_group("fuzz")
def test_protocol_endpoints_survive_raw_bytes(fuzz_server: LiveServer) -> None:
    import orjson

    bodies = st.one_of(
        st.binary(max_size=400),
        st.lists(_json_line, max_size=5).map(lambda xs: b"\n".join(orjson.dumps(x) for x in xs)),
    )
    seen: list[str] = []
    with httpx.Client(base_url=fuzz_server.url, timeout=30) as client:

        @given(target=st.sampled_from(_RAW_TARGETS), body=bodies, gz=st.booleans())
        @settings(
            max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None
        )
        def run(target: tuple[str, str], body: bytes, gz: bool) -> None:
            import gzip

            headers = {"content-type": target[1]}
            if gz:
                body, headers["content-encoding"] = gzip.compress(body), "gzip"
            resp = client.post(target[0], content=body, headers=headers)
            if resp.status_code >= 500:
                seen.append(f"{target} {body[:80]!r}: {resp.status_code} {resp.text[:200]}")

        run()
    assert seen == []
