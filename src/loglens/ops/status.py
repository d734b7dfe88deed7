"""`loglens status` and `GET /api/v1/status`: what an operator checks first.

`server_status(parts)` describes a running server from its live parts; `store_status(settings)`
describes a stopped one from its store file (read-only). Both return the same shape, and
`render()` prints it for the terminal.
"""

from __future__ import annotations

import contextlib
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from loglens import __version__
from loglens.config import Settings
from loglens.ingest import inputs
from loglens.models import iso
from loglens.ops.selfmetrics import OPTIONAL_TABLES, STORE_TABLES, Observed
from loglens.store import wal_dir_for

_RATE_WINDOW_S = 60


def _rates(query: Any, now_s: float) -> dict[str, float]:
    since = int((now_s - _RATE_WINDOW_S) * 1e6)
    logs = query("SELECT count(*) FROM logs WHERE received_at >= make_timestamp(?)", [since])[0][0]
    dead = query("SELECT count(*) FROM dead_letter WHERE received_at >= make_timestamp(?)", [since])[0][0]
    return {
        "window_seconds": _RATE_WINDOW_S,
        "accepted_per_second": round(logs / _RATE_WINDOW_S, 3),
        "rejected_per_second": round(dead / _RATE_WINDOW_S, 3),
    }


def _rows(query: Any) -> dict[str, int]:
    present = {r[0] for r in query("SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'", [])}
    return {
        t: int(query(f"SELECT count(*) FROM {t}", [])[0][0]) for t in (*STORE_TABLES, *OPTIONAL_TABLES) if t in present
    }


def _file_size(path: Path) -> int:
    total = 0
    for p in (path, path.with_name(path.name + ".wal")):
        with contextlib.suppress(FileNotFoundError):
            total += p.stat().st_size
    return total


def _base(settings: Settings, source: str) -> dict[str, Any]:
    return {
        "source": source,
        "version": __version__,
        "config_path": str(settings.config_path) if settings.config_path else None,
        "store": {
            "path": str(settings.storage.path),
            "exists": settings.storage.path.exists(),
            "size_bytes": _file_size(settings.storage.path),
        },
        "retention": {
            "logs_days": settings.storage.retention_days,
            "metrics_days": settings.storage.metrics_retention_days,
            "interval_seconds": settings.storage.retention_interval_seconds,
        },
    }


def server_status(state: Observed) -> dict[str, Any]:
    """Status of a running server (reads the store; call it off the event loop)."""
    now = time.time()
    out = _base(state.settings, "server")
    out["uptime_seconds"] = round(now - state.started_at, 3)
    out["started_at"] = iso(datetime.fromtimestamp(state.started_at, UTC))
    out["draining"] = bool(state.pipeline.draining)
    out["store"].update(
        rows=_rows(state.store.query), queue_depth=state.store.queue_depth, last_error=state.store.last_error
    )
    wal = state.store.wal_status()
    out["wal"] = {
        "bytes": wal.wal_bytes,
        "lag_bytes": wal.lag_bytes,
        "loader_lag_seconds": round(wal.lag_seconds, 3),
        "replay_progress": round(wal.replay_progress, 4),
        "replay_remaining_bytes": wal.replay_total_bytes - wal.replay_done_bytes,
        "loads": wal.loads,
        "load_failures": wal.load_failures,
        "loader_error": wal.loader_error,
        "drain_bytes_per_second": round(wal.drain_bytes_per_s),
    }
    out["rates"] = _rates(state.store.query, now)
    engine = state.engine
    out["firing_alerts"] = (
        [
            {
                "rule": a.rule,
                "service": a.service,
                "severity": a.severity,
                "summary": a.summary,
                "fired_at": iso(a.fired_at),
            }
            for a in engine.active()
            if a.state == "firing"
        ]
        if engine is not None
        else []
    )
    out["notifiers"] = [
        {k: ch[k] for k in ("name", "type", "status", "pending", "delivered", "dead", "last_error")}
        for ch in state.notifier.health()
    ]
    out["inputs"] = inputs.to_json(inputs.describe(state.settings, state))
    last = state.reload.last
    out["last_reload"] = last.to_json() if last is not None else None
    return out


def store_status(settings: Settings) -> dict[str, Any]:
    """Status from the store file of a server that is not running (opened read-only)."""
    out = _base(settings, "store")
    out["uptime_seconds"] = None
    out["inputs"] = inputs.to_json(inputs.describe(settings))
    path = settings.storage.path
    wal_dir = wal_dir_for(path, settings.storage.wal_dir)
    out["wal"] = {
        "bytes": sum(p.stat().st_size for p in wal_dir.glob("*.seg")) if wal_dir.is_dir() else 0,
        "lag_bytes": None,
        "note": "replayed into the database at the next start",
    }
    if not path.exists():
        out["store"]["rows"] = {}
        out["rates"] = None
        out["firing_alerts"] = []
        out["notifiers"] = _configured_notifiers(settings, {})
        return out
    db = duckdb.connect(str(path), read_only=True)
    try:

        def query(sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
            return db.execute(sql, params).fetchall()

        rows = _rows(query)
        out["store"]["rows"] = rows
        out["rates"] = _rates(query, time.time())
        out["firing_alerts"] = (
            [
                {"rule": r[0], "service": r[1], "severity": r[2], "summary": r[3], "fired_at": iso(r[4])}
                for r in query(
                    "SELECT rule, service, severity, summary, fired_at FROM alerts WHERE state = 'firing' "
                    "ORDER BY fired_at",
                    [],
                )
            ]
            if "alerts" in rows
            else []
        )
        counts: dict[str, dict[str, int]] = {}
        if "notification_outbox" in rows:
            for channel, state, n in query("SELECT channel, state, count(*) FROM notification_outbox GROUP BY ALL", []):
                counts.setdefault(channel, {})[state] = int(n)
        out["notifiers"] = _configured_notifiers(settings, counts)
    finally:
        db.close()
    return out


def _configured_notifiers(settings: Settings, counts: dict[str, dict[str, int]]) -> list[dict[str, Any]]:
    """The configured channels (no server runs them now) with what the outbox holds for each."""
    return [
        {
            "name": n.name,
            "type": n.type,
            "status": "stopped" if n.enabled else "disabled",
            "pending": counts.get(n.name, {}).get("pending", 0),
            "delivered": counts.get(n.name, {}).get("delivered", 0),
            "dead": counts.get(n.name, {}).get("dead", 0),
            "last_error": None,
        }
        for n in settings.notifiers
    ]


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover - the loop always returns


def render(status: dict[str, Any]) -> str:
    """Human-readable status for the terminal."""
    lines = [
        f"loglens {status['version']} ({'running server' if status['source'] == 'server' else 'not running; from the store file'})"
    ]
    if status.get("uptime_seconds") is not None:
        lines.append(
            f"uptime:     {status['uptime_seconds']:.0f} s" + ("  [DRAINING]" if status.get("draining") else "")
        )
    lines.append(f"config:     {status['config_path'] or '(built-in defaults)'}")
    store = status["store"]
    if store.get("exists", True):
        lines.append(f"store:      {store['path']} ({_size(store['size_bytes'])})")
    else:
        lines.append(f"store:      {store['path']} (does not exist yet: created when the server first starts)")
    for table, n in store.get("rows", {}).items():
        lines.append(f"  {table:<20} {n:>12,} rows")
    wal = status.get("wal")
    if wal and wal.get("lag_bytes") is None:
        lines.append(f"wal:        {_size(wal['bytes'])} on disk ({wal['note']})")
    elif wal:
        lines.append(
            f"wal:        {_size(wal['bytes'])} on disk, {_size(wal['lag_bytes'])} not yet loaded "
            f"(loader lag {wal['loader_lag_seconds']:.2f} s, replay {wal['replay_progress'] * 100:.0f} %)"
        )
        if wal.get("loader_error"):
            lines.append(f"  loader failing: {wal['loader_error']}")
    r = status["retention"]
    lines.append(f"retention:  logs {r['logs_days']:g} d, metrics {r['metrics_days']:g} d")
    rates = status.get("rates")
    if rates:
        lines.append(
            f"last {rates['window_seconds']} s: {rates['accepted_per_second']:g} logs/s accepted, "
            f"{rates['rejected_per_second']:g} /s rejected"
        )
    lines.extend(inputs.render_lines(status.get("inputs")))
    firing = status.get("firing_alerts") or []
    lines.append(f"firing alerts: {len(firing)}")
    lines.extend(f"  [{a['severity']}] {a['rule']} {a['service']}: {a['summary']}" for a in firing)
    notifiers = status.get("notifiers") or []
    lines.append("notifiers:" if notifiers else "notifiers: none configured")
    for n in notifiers:
        extra = f" — {n['last_error']}" if n.get("last_error") else ""
        lines.append(
            f"  {n['name']} ({n['type']}): {n['status']}, pending {n['pending']}, delivered {n['delivered']}, "
            f"dead {n['dead']}{extra}"
        )
    return "\n".join(lines)
