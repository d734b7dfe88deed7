"""Browser safety without a token: DNS-rebinding and cross-site request defences (ASGI middleware).

loglens listens on loopback without a token by default, so every web page the user visits is a
potential client: it can send "simple" cross-site requests (no CORS preflight) and, through DNS
rebinding, even read answers. `RequestGuard` refuses what no legitimate client sends:

* **Host** must be a name this server answers to: loopback names (`localhost`, `*.localhost`),
  any IP literal (a rebinding attack needs a DNS name), the bind address, this machine's names
  when bound to all interfaces, and `server.allowed_hosts` (`.example.com` covers subdomains,
  `*` turns the check off). Anything else is 400 — a rebound `evil.example` never reaches the API.
* **Writes** (POST, PUT, PATCH, DELETE) from another site are 403: `Origin` must be this server's
  own origin or in `server.cors_origins`, and `Sec-Fetch-Site` (sent by every current browser)
  must be `same-origin` or `none` (typed by the user) unless the Origin is allowed.
* **Writes with a body** must not use a content type an HTML form can send cross-site without a
  preflight (`text/plain`, `application/x-www-form-urlencoded`, `multipart/form-data`): 415 with
  the types to use. Shippers send `application/json`, `application/x-ndjson`,
  `application/x-protobuf` or no type at all, which stay accepted. The dashboard login form is
  the one form route (`FORM_ROUTES`), protected by the Origin checks.

Non-browser clients (curl, shippers, the CLI) send neither Origin nor Sec-Fetch-Site, so they
are unaffected beyond the content-type rule.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from loglens.api.errors import send_json_error
from loglens.config import ServerConfig

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# the content types an HTML <form> (or a no-preflight fetch) may send cross-site
FORM_TYPES = frozenset({"text/plain", "application/x-www-form-urlencoded", "multipart/form-data"})
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
FORM_ROUTES = frozenset({"/login", "/logout"})
_WILDCARD_BINDS = frozenset({"0.0.0.0", "::", ""})


def split_host(header: str) -> tuple[str, int | None]:
    """(lower-case host, port) of a Host header; IPv6 literals keep no brackets."""
    header = header.strip().lower()
    if header.startswith("["):
        end = header.find("]")
        host, rest = header[1:end], header[end + 1 :]
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = header.partition(":")
    return host.rstrip("."), int(port) if port.isdigit() else None


@functools.lru_cache(maxsize=1024)  # checked on every request; a client uses one or two Host values
def is_ip(host: str) -> bool:
    """Whether `host` is an IPv4/IPv6 literal."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@functools.lru_cache(maxsize=8)
def served_names(bind_host: str, allowed: tuple[str, ...]) -> tuple[frozenset[str], tuple[str, ...], bool]:
    """(exact names, subdomain suffixes, any) this server answers to."""
    names = set(LOOPBACK_NAMES)
    suffixes = [".localhost"]
    bind = bind_host.strip("[]").lower()
    if bind and not is_ip(bind):
        names.add(bind)
    if bind in _WILDCARD_BINDS:  # reachable from the network under the machine's own names
        names.update(n.lower() for n in (socket.gethostname(), socket.getfqdn()) if n)
    for entry in allowed:
        entry = entry.strip().lower()
        if entry == "*":
            return frozenset(), (), True
        if entry.startswith("*."):
            entry = entry[1:]
        if entry.startswith("."):
            suffixes.append(entry)
            names.add(entry[1:])
        elif entry:
            names.add(split_host(entry)[0])
    return frozenset(names), tuple(suffixes), False


def host_allowed(header: str, server: ServerConfig) -> bool:
    """Whether a request's Host header names this server (see the module doc)."""
    host, _ = split_host(header)
    if not host or is_ip(host):
        return True
    names, suffixes, anything = served_names(server.host, tuple(server.allowed_hosts))
    return anything or host in names or host.endswith(suffixes)


def same_origin(origin: str, host_header: str) -> bool:
    """Whether an Origin header names the server the request was sent to (scheme-default ports apply)."""
    parts = urlsplit(origin)
    if not parts.scheme or not parts.netloc:
        return False
    o_host, o_port = split_host(parts.netloc)
    o_port = o_port or {"http": 80, "https": 443}.get(parts.scheme)
    h_host, h_port = split_host(host_header)
    return o_host == h_host and (o_port == h_port or (h_port is None and o_port in (80, 443)))


def check_request(method: str, path: str, headers: dict[str, str], server: ServerConfig) -> tuple[int, str] | None:
    """(status, reason) when the request must be refused, else None. Pure, so it is easy to test."""
    host = headers.get("host", "")
    if host and not host_allowed(host, server):
        shown = host if len(host) <= 100 else host[:100] + "..."
        return 400, (
            f"Host {shown!r} is not a name of this server; add it to server.allowed_hosts "
            "(this protects the API from DNS rebinding)"
        )
    if method not in UNSAFE_METHODS:
        return None
    origin = headers.get("origin")
    allowed_origin = origin is not None and origin.rstrip("/") in {o.rstrip("/") for o in server.cors_origins}
    site = headers.get("sec-fetch-site")
    # Sec-Fetch-Site is set by the browser itself and is decisive when present (a same-origin form
    # post under Referrer-Policy: no-referrer carries `Origin: null`); Origin covers older browsers.
    trusted_site = site in ("same-origin", "none")
    if origin is not None and not trusted_site and not allowed_origin and not same_origin(origin, host):
        return 403, f"cross-site request refused: Origin {origin[:100]!r} is not this server nor in server.cors_origins"
    if site is not None and not trusted_site and not allowed_origin:
        return (
            403,
            f"cross-site request refused (Sec-Fetch-Site: {site[:40]}); allow the page's origin in server.cors_origins",
        )
    media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media in FORM_TYPES and path not in FORM_ROUTES:
        return 415, (
            f"Content-Type {media} is not accepted for writes (web pages can send it cross-site); send "
            "application/json, application/x-ndjson or application/x-protobuf"
        )
    return None


def refusal_of(method: str, path: str, headers: dict[str, str], server: ServerConfig) -> tuple[int, str] | None:
    """(status, reason) when the request must be refused — Host and cross-site checks first, then
    the token scope — else None. The request guard and the ingest fast path both decide with it."""
    from loglens.api import auth

    return check_request(method, path, headers, server) or auth.decide(method, path, headers, server)


class RequestGuard:
    """ASGI middleware: every request's Host/cross-site checks, then its token scope, before its body.

    One pass per request over the headers for both checks (they used to be two middlewares that
    each decoded the headers); the running settings come from the runtime, so a reload applies.
    """

    def __init__(self, app: ASGIApp, server: ServerConfig) -> None:
        self.app = app
        self.server = server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        from loglens.api import auth

        if scope["type"] == "http":
            state = getattr(getattr(scope.get("app"), "state", None), "runtime", None)
            server = state.settings.server if state is not None else self.server
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            refusal = refusal_of(scope["method"], scope["path"], headers, server)
            if refusal is not None:
                await _refuse(send, *refusal)
                return
            scope[auth.AUTHORIZED] = True
        await self.app(scope, receive, send)


async def _refuse(send: Send, status: int, reason: str) -> None:
    await send_json_error(send, status, reason, {"WWW-Authenticate": "Bearer"} if status == 401 else None)


def install_guards(app: Any, settings: Any) -> None:
    """Add the browser guard and the request-body budget to a loglens app (one call in create_app)."""
    from loglens.api import contract, limits

    contract.install(app)
    limits.install(app, settings.server.max_inflight_body_bytes, settings.ingest.max_body_bytes)
    # added later = runs earlier: Host and cross-site checks and the token, then the body budget,
    # so a refused or unauthenticated request never reserves body budget
    app.add_middleware(RequestGuard, server=settings.server)
