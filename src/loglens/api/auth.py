"""Token scopes and dashboard sessions: who may call which route.

Three scopes, four tokens (all optional; with none set, loglens is open on loopback):

| token                  | scopes                  | for                                         |
|------------------------|-------------------------|---------------------------------------------|
| `server.ingest_token`  | ingest                  | log shippers: may only send logs            |
| `server.read_token`    | read                    | dashboards and scripts: may only read       |
| `server.api_token`     | ingest, read            | both (what the single token did before)     |
| `server.admin_token`   | ingest, read, admin     | silences, reload, dead-letter replay, retry |

Once any token is set every non-public route needs a token with its scope: 401 without a valid
token, 403 with a valid token that lacks the scope. `required_scope` classifies routes by method
and path in one table, so a new route is `read` (GET) or `admin` (anything else under /api) unless
it is listed, and never open by accident. Tokens come from `Authorization: Bearer`, `X-API-Token`
or the dashboard's session cookie — never from the URL, which leaks into history and logs.

The dashboard session cookie (`POST /login`) holds no token: it is `kind.expiry.mac`, the mac an
HMAC of the kind and expiry keyed by that token, so it expires, and changing the token ends it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Mapping
from http.cookies import SimpleCookie
from typing import Literal

from fastapi import HTTPException, Request

from loglens.config import ServerConfig, secret_value

ScopeName = Literal["ingest", "read", "admin"]
TokenKind = Literal["admin", "api", "read", "ingest"]
SCOPES: dict[TokenKind, frozenset[str]] = {
    "admin": frozenset({"ingest", "read", "admin"}),
    "api": frozenset({"ingest", "read"}),
    "read": frozenset({"read"}),
    "ingest": frozenset({"ingest"}),
}
COOKIE = "loglens_session"
AUTHORIZED = "loglens.authorized"  # ASGI scope key set once the middleware has authorized a request

_PUBLIC_PATHS = frozenset(
    {"/healthz", "/", "/favicon.ico", "/login", "/logout", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
)
_INGEST_POSTS = frozenset({"/api/v1/logs", "/v1/logs", "/loki/api/v1/push", "/api/prom/push"})
_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def required_scope(method: str, path: str) -> ScopeName | None:
    """The scope a request needs, or None for public routes (liveness, the page, API docs)."""
    if method == "OPTIONS":
        return None  # CORS preflights carry no credentials by design; the request that follows does
    if method == "HEAD" and path in ("/", "/_es"):
        return "ingest"  # Elasticsearch clients' ping
    if path.startswith(("/static/", "/docs/assets/")) or (
        path in _PUBLIC_PATHS and (method in _READ_METHODS or path in ("/login", "/logout"))
    ):
        return None
    if method in ("POST", "PUT") and (path in _INGEST_POSTS or path == "/_bulk" or path.endswith("/_bulk")):
        return "ingest"
    if path in ("/_es",):
        return "ingest"  # Elasticsearch clients probe this before `_bulk`
    if method in _READ_METHODS:
        return "read"
    return "admin"  # every other write: silences, reload, replay, notification retry


def configured_tokens(server: ServerConfig) -> dict[TokenKind, str]:
    """The tokens that are set, by kind."""
    out: dict[TokenKind, str] = {}
    for kind, value in (
        ("admin", server.admin_token),
        ("api", server.api_token),
        ("read", server.read_token),
        ("ingest", server.ingest_token),
    ):
        text = secret_value(value)
        if text:
            out[kind] = text  # type: ignore[index]
    return out


def _presented(headers: Mapping[str, str]) -> str | None:
    header = headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return headers.get("x-api-token")


def token_kind(given: str, tokens: Mapping[TokenKind, str]) -> TokenKind | None:
    """Which configured token `given` is (constant-time comparisons, every token compared)."""
    found: TokenKind | None = None
    for kind, expected in tokens.items():
        if hmac.compare_digest(given.encode(), expected.encode()) and found is None:
            found = kind
    return found


def _mac(token: str, kind: str, expires: int) -> str:
    digest = hmac.new(token.encode(), f"loglens-session|{kind}|{expires}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def session_value(kind: TokenKind, token: str, max_age_s: float, now: float | None = None) -> str:
    """The cookie value of a dashboard session opened with `token` (of `kind`)."""
    expires = int((now if now is not None else time.time()) + max_age_s)
    return f"{kind}.{expires}.{_mac(token, kind, expires)}"


def session_kind(value: str, tokens: Mapping[TokenKind, str], now: float | None = None) -> TokenKind | None:
    """The token kind a session cookie stands for, or None when it is forged, expired or stale."""
    parts = value.split(".")
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    kind, expires = parts[0], int(parts[1])
    token = tokens.get(kind)  # type: ignore[call-overload]
    if token is None or expires < (now if now is not None else time.time()):
        return None
    return kind if hmac.compare_digest(parts[2].encode(), _mac(token, kind, expires).encode()) else None  # type: ignore[return-value]


def _cookie(headers: Mapping[str, str]) -> str | None:
    raw = headers.get("cookie")
    if not raw:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(raw)
    except Exception:  # a malformed Cookie header is no session
        return None
    morsel = jar.get(COOKIE)
    return morsel.value if morsel is not None else None


def granted_scopes(headers: Mapping[str, str], tokens: Mapping[TokenKind, str]) -> frozenset[str] | None:
    """The scopes the request's credentials grant, or None when it presents no valid credential."""
    given = _presented(headers)
    if given:
        kind = token_kind(given, tokens)
        return SCOPES[kind] if kind else None
    session = _cookie(headers)
    if session:
        kind = session_kind(session, tokens)
        return SCOPES[kind] if kind else None
    return None


def decide(method: str, path: str, headers: Mapping[str, str], server: ServerConfig) -> tuple[int, str] | None:
    """(status, reason) when the request is not authorized, else None."""
    return decide_scope(required_scope(method, path), headers, server)


def decide_scope(need: ScopeName | None, headers: Mapping[str, str], server: ServerConfig) -> tuple[int, str] | None:
    """(status, reason) when credentials in `headers` do not grant `need` (None = public), else None."""
    tokens = configured_tokens(server)
    if not tokens or need is None:
        return None
    granted = granted_scopes(headers, tokens)
    if granted is None:
        return 401, "missing or invalid API token"
    if need not in granted:
        hint = "server.admin_token" if need == "admin" else f"a token with the {need} scope"
        return 403, f"this token lacks the {need} scope needed here (use {hint})"
    return None


def require(request: Request, server: ServerConfig, need: ScopeName | None = None) -> None:
    """Route-level check (FastAPI dependency body): a no-op once `RequestGuard` authorized the request.

    Without the middleware (an app assembled differently) it applies the same decision, with
    `need` overriding the route table when given.
    """
    if request.scope.get(AUTHORIZED):
        return
    need = need or required_scope(request.method, request.url.path)
    refusal = decide_scope(need, dict(request.headers), server)
    if refusal is not None:
        raise HTTPException(
            refusal[0], refusal[1], headers={"WWW-Authenticate": "Bearer"} if refusal[0] == 401 else None
        )
