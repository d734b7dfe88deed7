"""Anomaly documents (per schemas/anomaly_schema.yaml) built from detector findings.

Pure: used by the live evaluator, `loglens analyze` and `loglens backtest` alike.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from loglens.detect.anomaly import Finding
from loglens.models import iso

_ANOMALY_TYPES = {
    "volume": ("volume_spike", "volume_drop"),
    "error_rate": ("error_rate",) * 2,
    "p95_latency": ("latency",) * 2,
}


def to_dt(epoch_s: float) -> datetime:
    """Aware UTC datetime from epoch seconds."""
    return datetime.fromtimestamp(epoch_s, UTC)


def finding_doc(
    f: Finding, severity: str, related: list[int], detected_at: float, window_s: float = 60
) -> dict[str, Any]:
    """The schema document of a baseline finding."""
    spike, drop = _ANOMALY_TYPES[f.metric]
    return {
        "id": uuid.uuid4().hex,
        "detected_at": iso(to_dt(detected_at)),
        "type": spike if f.observed >= f.median else drop,
        "severity": severity,
        "service": f.service,
        "description": f.description,
        "score": round(abs(f.score), 3),
        "confidence": f.confidence,
        "observed": round(f.observed, 6),
        "expected": {"low": round(f.low, 6), "high": round(f.high, 6), "median": round(f.median, 6)},
        "window": {"start": iso(to_dt(f.at - window_s)), "end": iso(to_dt(f.at))},
        "related_log_ids": related[:20],
        "details": {"metric": f.metric, "baseline_minutes": f.baseline_minutes},
    }


@dataclass(frozen=True, slots=True)
class PatternFinding:
    """A new error template, or a template far above its own rate."""

    kind: str  # new_pattern | pattern_rate
    service: str
    template_id: str
    template: str
    example: str
    level: str
    log_id: int | None
    at: float
    observed: float = 1.0
    expected: float | None = None


def pattern_doc(p: PatternFinding, severity: str, factor: float) -> dict[str, Any]:
    """The schema document of a pattern finding."""
    if p.kind == "new_pattern":
        description = (
            f"{p.service}: new {p.level} pattern '{clip(p.template, 200)}' never seen before, "
            f"e.g. '{clip(p.example, 300)}'"
        )
        expected = None
        score, confidence = 1.0, 0.9
        start = p.at
    else:
        exp = p.expected or 0.0
        description = (
            f"{p.service}: pattern '{clip(p.template, 200)}' seen {p.observed:.0f} times in a minute, "
            f"usually {exp:.1f}/min, e.g. '{clip(p.example, 300)}'"
        )
        expected = {"low": 0.0, "high": round(factor * max(exp, 0.1), 3), "median": round(exp, 3)}
        score = round(p.observed / max(exp, 0.1), 3)
        confidence = 0.95
        start = p.at - 60
    return {
        "id": uuid.uuid4().hex,
        "detected_at": iso(to_dt(time.time())),
        "type": p.kind,
        "severity": severity,
        "service": p.service,
        "description": description,
        "score": score,
        "confidence": confidence,
        "observed": p.observed,
        "expected": expected,
        "window": {"start": iso(to_dt(start)), "end": iso(to_dt(p.at))},
        "related_log_ids": [p.log_id] if p.log_id else [],
        "details": {"template_id": p.template_id, "template": p.template, "example": p.example, "level": p.level},
    }


def clip(text: str, n: int) -> str:
    """`text` cut to `n` characters with an ellipsis."""
    return text if len(text) <= n else text[: n - 1] + "…"
