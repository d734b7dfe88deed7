"""Logic of `loglens status` and `loglens dead-letter list|show|replay` (cli.py only wires them).

Each command talks to a running server when there is one — `--url`, or the config's own
host:port when it answers `/healthz` — and otherwise works on the local store file directly.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import typer

from loglens import timeparse
from loglens.config import Settings, secret_value
from loglens.errors import ConfigError, LoglensError, StorageError
from loglens.ingest import replay
from loglens.ingest.pipeline import IngestPipeline
from loglens.ops import status
from loglens.schema import LogSchema
from loglens.store import Store, deadletters

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str | None, now: datetime | None = None) -> datetime | None:
    """`--since`: ISO 8601 (UTC when no offset) or a relative age like 30m, 2h, 7d."""
    if text is None:
        return None
    m = _RELATIVE.match(text.strip())
    if m:
        try:
            return (now or datetime.now(UTC)) - timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])
        except OverflowError:
            raise typer.BadParameter(f"{text!r}: an age before the year 1") from None
    try:
        return timeparse.parse_instant(text)
    except timeparse.TimestampError as exc:
        raise typer.BadParameter(f"{exc} (or give an age like 30m, 2h, 7d)") from None


def server_url(settings: Settings, url: str | None) -> str | None:
    """The server to talk to: `url`, else the configured one when it is up, else None (local store)."""
    if url:
        return url.rstrip("/")
    host = settings.server.host if settings.server.host not in ("0.0.0.0", "::") else "127.0.0.1"
    candidate = f"http://{host}:{settings.server.port}"
    try:
        httpx.get(candidate + "/healthz", timeout=0.5)
    except httpx.HTTPError:
        return None
    return candidate


def default_token(settings: Settings, admin: bool = False) -> str | None:
    """The token from the config file (`--config`) when none is given: admin first for admin calls."""
    server = settings.server
    order = (server.admin_token,) if admin else (server.read_token, server.api_token, server.admin_token)
    return next((v for v in map(secret_value, order) if v), None)


def _client(url: str, token: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=url, headers=headers, timeout=60)


def _check(resp: httpx.Response) -> Any:
    if resp.status_code >= 400:
        try:
            detail = resp.json()
        except ValueError:
            detail = resp.text
        raise typer.Exit(_fail(f"server answered {resp.status_code}: {detail}"))
    return resp.json()


def _fail(message: str) -> int:
    typer.echo(message, err=True)
    return 1


@contextmanager
def local_store(settings: Settings) -> Iterator[Store]:
    """The store file opened for this command (fails clearly while a server holds it)."""
    store = Store(settings.storage.path, wal_dir=settings.storage.wal_dir)  # replays its WAL on start
    try:
        store.start()
    except StorageError as exc:
        raise typer.Exit(_fail(f"{exc}\n(is a server running on it? pass --url)")) from None
    try:
        yield store
    finally:
        store.close()


def _run(settings: Settings, url: str | None, remote: Callable[[str], int], local: Callable[[], int]) -> int:
    target = server_url(settings, url)
    try:
        return remote(target) if target else local()
    except httpx.HTTPError as exc:
        return _fail(f"cannot reach {target}: {exc}")


# ---- status ---------------------------------------------------------------------------------
def status_command(settings: Settings, url: str | None, token: str | None, as_json: bool) -> int:
    """`loglens status`."""

    def show(doc: dict[str, Any]) -> int:
        typer.echo(json.dumps(doc, indent=2) if as_json else status.render(doc))
        return 0

    def remote(target: str) -> int:
        with _client(target, token or default_token(settings)) as c:
            return show(_check(c.get("/api/v1/status")))

    return _run(settings, url, remote, lambda: show(status.store_status(settings)))


# ---- dead letters ---------------------------------------------------------------------------
def display_raw(raw: str, limit: int = 100) -> str:
    """Raw text safe for a terminal: binary bodies (e.g. gzip without Content-Encoding) are
    summarised, control characters escaped (they could drive the terminal), long text cut."""
    if not raw:
        return "(empty)"
    odd = sum(ch == "\ufffd" or (not ch.isprintable() and ch not in "\t ") for ch in raw)
    if odd > len(raw) * 0.1:
        return f"(binary data, {len(raw)} characters; `loglens dead-letter show ID` prints it escaped)"
    text = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in raw)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _print_rows(rows: list[dict[str, Any]], total: int) -> None:
    typer.echo(f"{total} dead-letter record(s)" + (f", showing {len(rows)}" if len(rows) < total else ""))
    for r in rows:
        mark = f" [replayed {r['replayed_at']}]" if r.get("replayed_at") else ""
        typer.echo(f"#{r['id']} {r['received_at']} {r['source']}: {r['reason']}{mark}\n    {display_raw(r['raw'])}")


def dead_letter_list(
    settings: Settings, url: str | None, token: str | None, reason: str | None, since: str | None, limit: int
) -> int:
    """`loglens dead-letter list`."""
    since_dt = parse_since(since)

    def remote(target: str) -> int:
        params: dict[str, Any] = {"limit": limit}
        if reason:
            params["reason"] = reason
        if since_dt:
            params["since"] = since_dt.isoformat()
        with _client(target, token or default_token(settings)) as c:
            doc = _check(c.get("/api/v1/dead-letter", params=params))
        _print_rows(doc["dead_letters"], doc["total"])
        return 0

    def local() -> int:
        with local_store(settings) as store:
            doc = deadletters.dead_letters(store, reason=reason, since=since_dt, limit=limit)
        _print_rows(doc["dead_letters"], doc["total"])
        return 0

    return _run(settings, url, remote, local)


def dead_letter_show(settings: Settings, url: str | None, token: str | None, dead_id: int) -> int:
    """`loglens dead-letter show ID`: the record with its full raw text."""

    def show(row: dict[str, Any] | None) -> int:
        if row is None:
            return _fail(f"no dead-letter record {dead_id}")
        typer.echo(json.dumps(row, indent=2, ensure_ascii=False))
        return 0

    def remote(target: str) -> int:
        with _client(target, token or default_token(settings)) as c:
            resp = c.get(f"/api/v1/dead-letter/{dead_id}")
            return show(None if resp.status_code == 404 else _check(resp))

    def local() -> int:
        with local_store(settings) as store:
            return show(replay.get(store, dead_id))

    return _run(settings, url, remote, local)


def _print_replay(doc: dict[str, Any]) -> None:
    typer.echo(
        f"matched {doc['matched']}, replayed {doc['replayed']}, still invalid {doc['still_invalid']}, "
        f"skipped {doc['skipped']}"
    )
    for e in doc["errors"][:20]:
        typer.echo(f"  #{e['id']}: {e['reason']}")


def dead_letter_replay(
    settings: Settings,
    url: str | None,
    token: str | None,
    reason: str | None,
    since: str | None,
    ids: list[int] | None,
) -> int:
    """`loglens dead-letter replay`: re-validate with the current schema and ingest what is valid now."""
    since_dt = parse_since(since)

    def remote(target: str) -> int:
        body: dict[str, Any] = {"reason": reason, "ids": ids or None}
        if since_dt:
            body["since"] = since_dt.isoformat()
        with _client(target, token or default_token(settings, admin=True)) as c:
            _print_replay(_check(c.post("/api/v1/dead-letter/replay", json=body)))
        return 0

    def local() -> int:
        try:
            schema = LogSchema.from_file(
                settings.schemas.log,
                allowed_lateness_s=settings.ingest.allowed_lateness_seconds,
                max_future_skew_s=settings.ingest.max_future_skew_seconds,
                raw_limit=settings.ingest.dead_letter_raw_limit,
            )
        except ConfigError as exc:
            return _fail("\n".join(str(i) for i in exc.issues))
        with local_store(settings) as store:
            try:
                result = replay.replay(IngestPipeline(schema, store), reason=reason, since=since_dt, ids=ids or None)
            except LoglensError as exc:
                return _fail(str(exc))
        _print_replay(result.to_json())
        return 0

    return _run(settings, url, remote, local)
