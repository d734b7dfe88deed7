"""schemathesis cases against a live server's own OpenAPI document, shared by the fuzz and contract
tests and bench/contract.py (a plain module: conftest files cannot be imported reliably)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

# every status code, content type and body an operation gives is the one its document states
CONTRACT_CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
NO_5XX = [not_a_server_error]
NEVER_ENDING = {"/api/v1/stream"}  # text/event-stream never ends by design; checked on its own


def operations(base_url: str) -> list[Any]:
    """Every operation of the server's /openapi.json except the never-ending stream."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    return [op for op in (r.ok() for r in schema.get_all_operations()) if op.path not in NEVER_ENDING]


def failures(
    op: Any,
    base_url: str,
    examples: int,
    checks: Sequence[Callable[..., Any]],
    *,
    seed_value: int | None = None,
    on_response: Callable[[Any], None] | None = None,
) -> list[str]:
    """Send `examples` positive and negative cases to one operation; every failed check, described.

    Without `seed_value` the cases are derandomized (the same on every run, as a test needs);
    `on_response` sees each response (bench/contract.py counts cases and 5xx with it).
    """
    found: list[str] = []
    strategy = st.one_of(op.as_strategy(GenerationMode.POSITIVE), op.as_strategy(GenerationMode.NEGATIVE))

    @given(case=strategy)
    @settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=seed_value is None,
        database=None,
    )
    def run(case: Any) -> None:
        response = case.call(base_url=base_url, timeout=60)
        if on_response is not None:
            on_response(response)
        try:
            case.validate_response(response, checks=list(checks))
        except Exception as exc:  # collect every failing case, not only the first
            found.append(f"{op.label}: {response.status_code} {response.text[:200]!r}: {str(exc)[:300]}")

    if seed_value is not None:
        run = seed(seed_value)(run)
    try:
        run()
    except Exception as exc:  # schemathesis reports a failing case once hypothesis has shrunk it
        found.append(f"{op.label}: {str(exc)[:600]}")
    return found
