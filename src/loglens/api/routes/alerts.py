"""Alerting endpoints: alerts, anomalies, silences CRUD and the rules with their last evaluation.

Listings are paged (`limit` ≤ 1000, `offset`, `next_offset`) and read, shaped and encoded in a
worker thread from the alert repository's own connection (a DuckDB snapshot), so neither a large
page nor an evaluation in progress holds up the event loop.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import anyio.to_thread
import orjson
from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from loglens.alerting import alert_json
from loglens.api.contract import unprocessable
from loglens.api.deps import EngineDep, EvaluatorDep, SettingsDep
from loglens.api.responses import AlertsOut, AnomaliesOut, DeletedOut, RulesOut, SilenceOut, SilencesOut
from loglens.detect.documents import to_dt
from loglens.models import iso
from loglens.timeparse import Instant

router = APIRouter(prefix="/api/v1", tags=["alerts"])

Limit = Annotated[int, Query(ge=1, le=1000, description="Page size (bounded).")]
Offset = Annotated[int, Query(ge=0, le=10_000_000, description="Rows to skip: the `next_offset` of the last page.")]


def _running(evaluator: EvaluatorDep) -> Any:
    if evaluator is None:
        raise HTTPException(503, "alerting is not running")
    return evaluator


@router.get("/alerts", response_model=AlertsOut)
async def list_alerts(
    engine: EngineDep,
    evaluator: EvaluatorDep,
    state_filter: Annotated[
        Literal["pending", "firing", "resolved", "all"], Query(alias="state", description="Which alerts")
    ] = "all",
    limit: Limit = 200,
    offset: Offset = 0,
) -> Response:
    """Alerts newest first: pending/firing ones and the resolved history, one page at a time."""
    repo = _running(evaluator).repo
    wanted = None if state_filter == "all" else state_filter

    def read() -> bytes:  # query, shape and encode in a worker thread: the event loop only sends
        page = repo.list_alerts(wanted, limit, offset)
        now = engine.clock()
        alerts = [alert_json(a, a.state == "firing" and engine.is_suppressed(a, now)) for a in page.items]
        return orjson.dumps({"alerts": alerts, "next_offset": page.next_offset})

    return Response(await anyio.to_thread.run_sync(read), media_type="application/json")


@router.get("/anomalies", response_model=AnomaliesOut)
async def list_anomalies(
    evaluator: EvaluatorDep,
    limit: Limit = 100,
    offset: Offset = 0,
    service: Annotated[str | None, Query(max_length=500)] = None,
) -> Response:
    """Anomalies newest first (one document per episode), each valid against schemas/anomaly_schema.yaml."""
    repo = _running(evaluator).repo

    def read() -> bytes:
        page = repo.list_anomalies(limit, service, offset)
        return orjson.dumps({"anomalies": page.items, "next_offset": page.next_offset})

    return Response(await anyio.to_thread.run_sync(read), media_type="application/json")


# a matcher names a field (never empty: `{"": "0"}` would match nothing yet look like a silence)
MatcherName = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"\S")]
MatcherValue = Annotated[str, StringConstraints(max_length=1000)]


class SilenceIn(BaseModel):
    """A silence to create: exact-match matchers and either an expiry time or a duration."""

    model_config = ConfigDict(extra="forbid")
    matchers: dict[MatcherName, MatcherValue] = Field(
        description="rule, service, severity or label → exact value", min_length=1
    )
    expires_at: Instant | None = None
    duration_seconds: float | None = Field(None, gt=0, le=365 * 86400)
    starts_at: Instant | None = None
    comment: str = Field("", max_length=1000)
    created_by: str = Field("", max_length=200)

    @model_validator(mode="after")
    def _one_expiry(self) -> SilenceIn:
        if (self.expires_at is None) == (self.duration_seconds is None):
            raise ValueError("give exactly one of expires_at or duration_seconds")
        return self


def _epoch(dt: datetime) -> float:
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


@router.post("/silences", status_code=201, response_model=SilenceOut)
async def create_silence(engine: EngineDep, body: SilenceIn) -> dict[str, Any]:
    """Mute notifications of matching alerts until the silence expires."""
    now = engine.clock()
    starts = _epoch(body.starts_at) if body.starts_at else now
    expires = _epoch(body.expires_at) if body.expires_at else starts + (body.duration_seconds or 0)
    if expires <= now:
        raise unprocessable("body", "expires_at", "the silence would already be expired")
    silence = await anyio.to_thread.run_sync(
        lambda: engine.add_silence(body.matchers, expires, body.comment, body.created_by, starts)
    )
    return silence.to_json()


@router.get("/silences", response_model=SilencesOut)
async def list_silences(engine: EngineDep, limit: Limit = 200, offset: Offset = 0) -> Response:
    """Silences that have not expired, oldest first, one page at a time (from the engine's snapshot)."""
    silences = engine.silences()
    page = silences[offset : offset + limit]
    next_offset = offset + limit if len(silences) > offset + limit else None
    body = {"silences": [s.to_json() for s in page], "next_offset": next_offset}
    return Response(await anyio.to_thread.run_sync(orjson.dumps, body), media_type="application/json")


@router.delete("/silences/{silence_id}", response_model=DeletedOut)
async def delete_silence(engine: EngineDep, silence_id: str) -> dict[str, Any]:
    """Remove a silence; alerts it muted that still fire are notified now."""
    if not await anyio.to_thread.run_sync(engine.delete_silence, silence_id):
        raise HTTPException(404, f"no silence {silence_id}")
    return {"deleted": silence_id}


@router.get("/rules", response_model=RulesOut)
async def list_rules(settings: SettingsDep, evaluator: EvaluatorDep) -> dict[str, Any]:
    """Each built-in rule with its threshold and last evaluation."""
    cfg = settings.alerts.rules
    thresholds = {
        "error_rate": cfg.error_rate.threshold,
        "absence": cfg.absence.threshold_seconds,
        "volume": float(cfg.volume.threshold),
        "anomaly": cfg.anomaly.k,
        "new_pattern": cfg.new_pattern.rate_jump_factor,
    }
    out = []
    for name, threshold in thresholds.items():
        rule = getattr(cfg, name)
        st = evaluator.stats.get(name) if evaluator else None
        out.append(
            {
                "name": name,
                "severity": rule.severity,
                "enabled": rule.enabled,
                "threshold": threshold,
                "overrides": sorted(s for s, o in settings.alerts.overrides.items() if getattr(o, name, None)),
                "last_evaluated_at": _iso(st.last_evaluated_at) if st else None,
                "last_duration_ms": st.last_duration_ms if st else None,
            }
        )
        if name == "new_pattern" and evaluator is not None and evaluator.patterns is not None:
            pw = evaluator.patterns
            out[-1]["mining"] = {  # template mining runs off the hot path: how it keeps up
                "processed": pw.processed,
                "dropped": pw.dropped,
                "lines_per_second": round(pw.lines_per_second),
                "templates": len(pw.miner),
            }
    series = None
    if evaluator is not None:
        cap = evaluator.series
        series = {
            "tracked": cap.tracked,
            "max_series": settings.alerts.max_series,
            "rejected_logs": cap.rejected_logs,
            "rejected_names": cap.rejected_names,
            "expired": cap.expired,
            "evaluator_dropped_logs": evaluator.scheduler.dropped,
        }
    return {"rules": out, "series": series}


def _iso(epoch: float | None) -> str | None:
    return iso(to_dt(epoch)) if epoch is not None else None
