"""The API keeps the contract its OpenAPI document states (what schemathesis checks).

* A 422 always has FastAPI's documented shape, `{"detail": [{"loc", "msg", "type"}]}`: routes raise
  `unprocessable(...)` instead of an `HTTPException(422, "text")`.
* Every answer a route can give is documented: the guards can refuse any request (400 Host, 401/403
  token or cross-site, 503 body budget), writes can be too large (413), of the wrong type (415) or
  meet a full queue (429), and a route with a path parameter can miss (404). `document_errors`
  adds those to the generated schema once, so no route can forget them.
* An aborted upload (`ClientDisconnect`) is the client's doing: one INFO line, no traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.requests import ClientDisconnect

log = logging.getLogger("loglens.api")

_ERROR = {
    "content": {
        "application/json": {
            "schema": {
                "title": "Error",
                "type": "object",
                "properties": {"detail": {"title": "Detail", "type": "string"}},
                "required": ["detail"],
            }
        }
    }
}
# wire-protocol routes answer errors in their protocol's own shape (OTLP Status, Elasticsearch error)
_PROTOCOL_PREFIXES = ("/v1/logs", "/loki/", "/_bulk", "/{index}/_bulk", "/_es")
_ALWAYS = {
    "400": "Bad request: a Host this server does not serve, or an undecodable body",
    "401": "A token is configured and the request has no valid one",
    "403": "The token lacks the scope, or a cross-site browser request",
    "503": "Busy (request-body budget full, draining, storage unavailable) or a component not running; see Retry-After",
}
_WRITES = {
    "413": "Body larger than the configured limit",
    "415": "Content type not accepted (form types are refused on writes)",
    "429": "Ingest queue full; see Retry-After",
}


def unprocessable(where: str, name: str, message: str) -> RequestValidationError:
    """A 422 in FastAPI's documented shape for parameter `name` in `where` (query, path, body)."""
    return RequestValidationError([{"loc": (where, name), "msg": message, "type": "value_error", "input": None}])


def _add(responses: dict[str, Any], code: str, description: str, protocol: bool) -> None:
    if code not in responses:
        responses[code] = {"description": description} if protocol else {"description": description, **_ERROR}


def document_errors(schema: dict[str, Any]) -> dict[str, Any]:
    """Add the error answers every operation can give to an OpenAPI document (in place)."""
    for path, operations in schema.get("paths", {}).items():
        protocol = path.startswith(_PROTOCOL_PREFIXES)
        for method, op in operations.items():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            responses = op["responses"]
            for code, text in _ALWAYS.items():
                _add(responses, code, text, protocol)
            if method in ("post", "put", "patch", "delete"):
                for code, text in _WRITES.items():
                    _add(responses, code, text, protocol)
            if "{" in path:
                _add(responses, "404", "No such resource", protocol)
    return schema


def install(app: FastAPI) -> None:
    """Wrap the app's OpenAPI generator and log aborted uploads quietly."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_errors(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    async def client_gone(request: Request, exc: Exception) -> Response:
        log.info("client disconnected during the request", extra={"path": request.url.path})
        return Response(status_code=400)  # never delivered: the client has gone

    app.add_exception_handler(ClientDisconnect, client_gone)
