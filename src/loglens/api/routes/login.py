"""Dashboard login: a form that exchanges a token for an HttpOnly, SameSite=Strict session cookie.

The token never appears in a URL (browser history, proxy logs, Referer). `GET /login` renders the
form server-side (no script, under the dashboard's CSP); `POST /login` checks the token and sets
the `loglens_session` cookie (see `loglens.api.auth`), `POST /logout` clears it. An ingest-only
token cannot open the dashboard. Cross-site form posts are refused by the browser guard (Origin /
Sec-Fetch-Site), and the cookie is never sent on cross-site requests (SameSite=Strict).
"""

from __future__ import annotations

import html
from urllib.parse import parse_qs

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from loglens.api import auth
from loglens.api.deps import SettingsDep
from loglens.api.routes.dashboard import SECURITY_HEADERS

router = APIRouter(tags=["dashboard"])
_MAX_FORM_BYTES = 4096

_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <meta name="color-scheme" content="light dark">
  <title>loglens — sign in</title>
  <link rel="icon" href="/static/favicon.svg" type="image/svg+xml">
  <link rel="stylesheet" href="/static/app.css">
</head>
<body>
  <main class="login panel">
    <h1>loglens</h1>
    <p class="muted">This server needs a token. Paste the read, API or admin token (the admin token
    also allows silences from the dashboard).</p>
    {error}
    <form method="post" action="/login">
      <label for="token">Token</label>
      <input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
      <button type="submit">Sign in</button>
    </form>
  </main>
</body>
</html>
"""


def _page(error: str = "", status: int = 200) -> HTMLResponse:
    shown = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    headers = {**SECURITY_HEADERS, "Cache-Control": "no-store"}
    return HTMLResponse(_PAGE.replace("{error}", shown), status_code=status, headers=headers)


@router.get("/login", include_in_schema=False)
async def login_form(settings: SettingsDep) -> Response:
    """The sign-in form (or straight to the dashboard when no token is configured)."""
    if not auth.configured_tokens(settings.server):
        return RedirectResponse("/", status_code=303)
    return _page()


@router.post("/login", include_in_schema=False)
async def login(request: Request, settings: SettingsDep) -> Response:
    """Check the posted token; on success set the session cookie and go to the dashboard."""
    tokens = auth.configured_tokens(settings.server)
    if not tokens:
        return RedirectResponse("/", status_code=303)
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_FORM_BYTES:
            return _page("That is not a token.", 413)
    given = (parse_qs(body.decode("utf-8", errors="replace")).get("token") or [""])[0].strip()
    kind = auth.token_kind(given, tokens) if given else None
    if kind is None:
        return _page("Wrong token.", 401)
    if "read" not in auth.SCOPES[kind]:
        return _page("An ingest token cannot open the dashboard; use the read, API or admin token.", 403)
    max_age = int(settings.server.session_max_age_hours * 3600)
    response = RedirectResponse("/", status_code=303, headers={"Cache-Control": "no-store"})
    response.set_cookie(
        auth.COOKIE,
        auth.session_value(kind, tokens[kind], max_age),
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/logout", include_in_schema=False)
async def logout() -> Response:
    """End the dashboard session."""
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(auth.COOKIE, path="/", httponly=True, samesite="strict")
    return response
