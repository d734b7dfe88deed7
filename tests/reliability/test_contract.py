"""Issue 17 item 7: schemathesis finds no contract deviation: every status code, content type and
response body an operation gives is the one its OpenAPI document states (positive and negative
cases, every operation). The long run (minutes) is `bench/contract.py`; this keeps a short one."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests_support import LiveServer, make_settings, start_server

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
_EXCLUDED = {"/api/v1/stream"}  # never ends by design; covered in test_fuzz_api.py
EXAMPLES = 12


@pytest.fixture(scope="module")
def contract_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = start_server(make_settings(tmp_path_factory.mktemp("contract"), "notifiers: []"))
    yield server
    server.stop()


def deviations(op: Any, base_url: str, examples: int) -> list[str]:
    """Contract deviations of one operation over `examples` positive and negative cases."""
    found: list[str] = []
    strategy = st.one_of(op.as_strategy(GenerationMode.POSITIVE), op.as_strategy(GenerationMode.NEGATIVE))

    @given(case=strategy)
    @settings(
        max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None
    )
    def run(case: Any) -> None:
        response = case.call(base_url=base_url, timeout=30)
        try:
            case.validate_response(response, checks=CHECKS)
        except Exception as exc:
            found.append(f"{op.label}: {response.status_code} {response.text[:200]!r}: {str(exc)[:300]}")

    try:
        run()
    except Exception as exc:  # schemathesis reports a failing case once hypothesis has shrunk it
        found.append(f"{op.label}: {str(exc)[:600]}")
    return found


def test_the_openapi_document_states_every_error_answer(contract_server: LiveServer) -> None:
    import httpx

    paths = httpx.get(contract_server.url + "/openapi.json").json()["paths"]
    assert "put" in paths["/_bulk"]  # served, so documented
    logs = paths["/api/v1/logs"]["post"]["responses"]
    assert {"400", "401", "403", "413", "415", "422", "429", "503"} <= set(logs)
    assert "404" in paths["/api/v1/dead-letter/{dead_id}"]["get"]["responses"]
    assert "409" in paths["/api/v1/dead-letter/replay"]["post"]["responses"]


@pytest.mark.slow
def test_no_contract_deviation(contract_server: LiveServer) -> None:
    schema = schemathesis.openapi.from_url(f"{contract_server.url}/openapi.json")
    operations = [r.ok() for r in schema.get_all_operations()]
    ops = [op for op in operations if op.path not in _EXCLUDED]
    assert len(ops) >= 25
    found: list[str] = []
    for op in ops:
        found.extend(deviations(op, contract_server.url, EXAMPLES))
    assert found == []
