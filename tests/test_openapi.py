"""The OpenAPI document describes every operation's responses (built in-process, no server)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from loglens.api.app import create_app
from tests_support import make_settings

# Operations whose success is not a JSON document: (method, path) → the media type they declare.
NON_JSON = {
    ("get", "/api/v1/stream"): "text/event-stream",
    ("get", "/metrics"): "text/plain",
    ("post", "/v1/logs"): "application/x-protobuf",
    ("post", "/loki/api/v1/push"): None,  # 204 without a body
    ("post", "/api/prom/push"): None,  # the same, legacy path
}


def _openapi(tmp_path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = create_app(make_settings(tmp_path)).openapi()
    return doc


def _resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    found: dict[str, Any] = doc
    for part in ref.removeprefix("#/").split("/"):
        found = found[part]
    return found


def test_every_json_operation_documents_a_typed_success_response(tmp_path: Path) -> None:
    doc = _openapi(tmp_path)
    operations = [(m, p, op) for p, ops in doc["paths"].items() for m, op in ops.items()]
    assert len(operations) >= 28
    untyped = []
    for method, path, op in operations:
        success = {code: r for code, r in op["responses"].items() if code.startswith("2")}
        assert success, f"{method} {path} documents no success response"
        if (method, path) in NON_JSON:
            media = NON_JSON[(method, path)]
            if media is not None:
                assert media in next(iter(success.values()))["content"], (method, path)
            continue
        content = next(iter(success.values())).get("content", {}).get("application/json", {})
        schema = _resolve(doc, content.get("schema", {}))
        if not schema.get("properties"):
            untyped.append(f"{method.upper()} {path}")
    assert untyped == [], f"operations without a response model: {untyped}"


def test_error_responses_of_the_protocols_are_documented(tmp_path: Path) -> None:
    paths = _openapi(tmp_path)["paths"]
    assert {"400", "413", "415", "429", "503"} <= set(paths["/v1/logs"]["post"]["responses"])
    for loki in ("/loki/api/v1/push", "/api/prom/push"):  # protobuf is decoded: no 415
        assert {"400", "413", "429", "503"} <= set(paths[loki]["post"]["responses"])
    assert {"400", "413", "429", "503"} <= set(paths["/_bulk"]["post"]["responses"])
    assert "503" in paths["/healthz"]["get"]["responses"]
