"""The dashboard: `/` and `/static/...` served from the package, under a strict CSP.

Only files that ship in `loglens/dashboard/static` are served: the list is read once when the
router is built, so a request path is looked up in that list, never joined onto the file
system (no traversal). Scripts and styles all come from this server — the Content-Security-Policy
forbids inline scripts, inline styles in markup, other origins, framing and plugins.
`GET /api/v1/dashboard/config` gives the page the few settings it needs (token-protected).
"""

from __future__ import annotations

import hashlib
import mimetypes
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import JSONResponse

from loglens import __version__
from loglens.api.deps import SettingsDep
from loglens.api.responses import DashboardConfigOut

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".json": "application/json",
}


@dataclass(frozen=True)
class Asset:
    """One static file held in memory (the whole dashboard is ~100 KB)."""

    body: bytes
    content_type: str
    etag: str


def _walk(node: Traversable, prefix: str = "") -> dict[str, Traversable]:
    out: dict[str, Traversable] = {}
    for child in node.iterdir():
        name = f"{prefix}{child.name}"
        if child.is_dir():
            out.update(_walk(child, name + "/"))
        elif child.is_file() and not child.name.startswith("."):
            out[name] = child
    return out


def load_assets() -> dict[str, Asset]:
    """Every file of the packaged dashboard, keyed by its path under static/."""
    root = resources.files("loglens").joinpath("dashboard", "static")
    assets = {}
    for name, node in _walk(root).items():
        body = node.read_bytes()
        suffix = "." + name.rsplit(".", 1)[-1] if "." in name else ""
        ctype = _TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "text/plain; charset=utf-8"
        assets[name] = Asset(body, ctype, '"' + hashlib.sha256(body).hexdigest()[:20] + '"')
    return assets


def _serve(asset: Asset, request: Request) -> Response:
    headers = {**SECURITY_HEADERS, "ETag": asset.etag, "Cache-Control": "no-cache"}
    if request.headers.get("if-none-match") == asset.etag:
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.content_type, headers=headers)


def build_router() -> APIRouter:
    """Routes for the page and its assets (no token: they hold no data)."""
    assets = load_assets()
    router = APIRouter(tags=["dashboard"])

    @router.get("/", include_in_schema=False)
    async def index(request: Request) -> Response:
        # `/` is both the dashboard and the root document Elasticsearch clients probe before
        # sending `_bulk`; browsers ask for text/html, ES clients for (vnd.elasticsearch+)json.
        accept = request.headers.get("accept", "").lower()
        agent = request.headers.get("user-agent", "").lower()
        if "text/html" not in accept and ("json" in accept or "elasticsearch" in agent):
            from loglens.ingest import es_bulk

            return JSONResponse(es_bulk.es_root_document(), headers=es_bulk.PRODUCT_HEADERS)
        return _serve(assets["index.html"], request)

    @router.get("/favicon.ico", include_in_schema=False)
    async def favicon(request: Request) -> Response:
        return _serve(assets["favicon.svg"], request)

    @router.get("/static/{path:path}", include_in_schema=False)
    async def static(path: str, request: Request) -> Response:
        asset = assets.get(path)
        if asset is None:
            raise HTTPException(404, "no such dashboard file")
        return _serve(asset, request)

    return router


config_router = APIRouter(prefix="/api/v1", tags=["dashboard"])


def _features(request: Request) -> dict[str, bool]:
    """Which optional APIs this app serves, so the page never requests a missing one."""
    # The OpenAPI document lists every included route whatever FastAPI's internal route types
    # are, and FastAPI caches it after the first build.
    paths = set(request.app.openapi().get("paths", {}))
    return {
        "alerts": "/api/v1/alerts" in paths,
        "anomalies": "/api/v1/anomalies" in paths,
        "silences": "/api/v1/silences" in paths,
    }


@config_router.get("/dashboard/config", response_model=DashboardConfigOut)
async def dashboard_config(settings: SettingsDep, request: Request) -> dict[str, Any]:
    """Thresholds the page uses to colour service tiles (so they match the alert rules) and features."""
    alerts = settings.alerts
    rules = alerts.rules
    return {
        "version": __version__,
        "features": _features(request),
        "absence_threshold_seconds": rules.absence.threshold_seconds,
        "absence_enabled": rules.absence.enabled,
        "error_rate_threshold": rules.error_rate.threshold,
        "error_rate_min_events": rules.error_rate.min_events,
        "volume_threshold": rules.volume.threshold,
        "volume_window_seconds": rules.volume.window_seconds,
        "overrides": {
            svc: {
                "absence_threshold_seconds": o.absence.threshold_seconds if o.absence else None,
                "error_rate_threshold": o.error_rate.threshold if o.error_rate else None,
            }
            for svc, o in alerts.overrides.items()
        },
    }
