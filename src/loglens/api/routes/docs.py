"""Offline API docs: `/docs` (Swagger UI) and `/redoc` (Redoc) served with loglens's own assets.

FastAPI's built-in pages load Swagger UI and Redoc from a CDN, so they were blank without
internet; the app is created with those disabled and these routes serve the same pages from
files vendored from the npm registry (`swagger-ui-dist`, `redoc`; versions in
`docs_static/VERSIONS`, licenses beside them, refreshed by `scripts/vendor_assets.sh`). Like the
dashboard, only files that ship in the package are served, looked up by name (no traversal),
and the pages load no script from anywhere but this server.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import HTMLResponse

ASSET_PREFIX = "/docs/assets/"
# Swagger UI and Redoc set inline styles and Redoc starts a worker from a blob: URL; scripts
# still come only from this server.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "worker-src 'self' blob:; connect-src 'self'; font-src 'self' data:; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}

SWAGGER_PAGE = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>loglens API — Swagger UI</title>
<link rel="icon" type="image/png" href="{ASSET_PREFIX}favicon-32x32.png">
<link rel="stylesheet" href="{ASSET_PREFIX}swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{ASSET_PREFIX}swagger-ui-bundle.js"></script>
<script src="{ASSET_PREFIX}loglens-swagger-init.js"></script>
</body>
</html>
"""

REDOC_PAGE = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>loglens API — Redoc</title>
<link rel="icon" type="image/png" href="{ASSET_PREFIX}favicon-32x32.png">
</head>
<body>
<redoc spec-url="/openapi.json"></redoc>
<script src="{ASSET_PREFIX}redoc.standalone.js"></script>
</body>
</html>
"""


_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".png": "image/png"}


@dataclass(frozen=True)
class DocsAsset:
    """One vendored file, held in memory (read once per app)."""

    body: bytes
    content_type: str
    etag: str


def load_assets() -> dict[str, DocsAsset]:
    """The servable files of `loglens/api/docs_static` (scripts, styles, the icon), by name."""
    out = {}
    for node in resources.files("loglens").joinpath("api", "docs_static").iterdir():
        suffix = "." + node.name.rsplit(".", 1)[-1]
        if node.is_file() and suffix in _TYPES:
            body = node.read_bytes()
            out[node.name] = DocsAsset(body, _TYPES[suffix], '"' + hashlib.sha256(body).hexdigest()[:20] + '"')
    return out


def _serve(asset: DocsAsset, request: Request) -> Response:
    headers = {"ETag": asset.etag, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
    if request.headers.get("if-none-match") == asset.etag:
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.content_type, headers=headers)


def build_router() -> APIRouter:
    """`/docs`, `/redoc` and their assets (no token: the OpenAPI document is public in FastAPI too)."""
    assets = load_assets()
    router = APIRouter(tags=["docs"])

    @router.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return HTMLResponse(SWAGGER_PAGE, headers=_HEADERS)

    @router.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return HTMLResponse(REDOC_PAGE, headers=_HEADERS)

    @router.get(ASSET_PREFIX + "{name}", include_in_schema=False)
    async def asset(name: str, request: Request) -> Response:
        found = assets.get(name)
        if found is None:
            raise HTTPException(404, "no such docs file")
        return _serve(found, request)

    return router
