"""Issue 17 item 7: schemathesis finds no contract deviation: every status code, content type and
response body an operation gives is the one its OpenAPI document states (positive and negative
cases, every operation). The long run (minutes) is `bench/contract.py`; this keeps a short one."""

from __future__ import annotations

from collections.abc import Iterator

import openapi_cases
import pytest

from tests_support import LiveServer, make_settings, start_server

EXAMPLES = 12


@pytest.fixture(scope="module")
def contract_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = start_server(make_settings(tmp_path_factory.mktemp("contract"), "notifiers: []"))
    yield server
    server.stop()


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
    ops = openapi_cases.operations(contract_server.url)
    assert len(ops) >= 25
    found: list[str] = []
    for op in ops:
        found.extend(openapi_cases.failures(op, contract_server.url, EXAMPLES, openapi_cases.CONTRACT_CHECKS))
    assert found == []
