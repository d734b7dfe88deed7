"""Threshold rules as pure functions: `evaluate(rule, window) -> candidates`.

A candidate says, for one (rule, service), whether the condition holds now (`breach`) and with
what value; the alert state machine (`loglens.alerting`) turns candidates into pending → firing
→ resolved transitions. No store, no clock, no API here, so the same code runs live, in
`loglens backtest` and on Dask/Ray workers.
"""

from __future__ import annotations

from dataclasses import dataclass

from loglens.config import AbsenceRule, AlertsConfig, ErrorRateRule, VolumeRule
from loglens.models import Candidate as Candidate  # re-exported: the alert engine imports it from here

Rule = ErrorRateRule | AbsenceRule | VolumeRule

RULE_NAMES: dict[type, str] = {ErrorRateRule: "error_rate", AbsenceRule: "absence", VolumeRule: "volume"}


@dataclass(frozen=True, slots=True)
class RuleWindow:
    """What a rule sees for one service at time `now` (epoch s).

    `total`/`errors` are counts over the rule's own sliding window; `last_seen` is the arrival
    time of the service's newest log (None: never seen).
    """

    service: str
    now: float
    total: int = 0
    errors: int = 0
    last_seen: float | None = None


def rule_name(rule: Rule) -> str:
    """The config name of a rule model (error_rate, absence, volume)."""
    return RULE_NAMES[type(rule)]


def effective_rule(alerts: AlertsConfig, name: str, service: str) -> object:
    """The rule `name` for `service`: its per-service override when one exists, else the global one."""
    override = alerts.overrides.get(service)
    specific = getattr(override, name, None) if override is not None else None
    return specific if specific is not None else getattr(alerts.rules, name)


def evaluate(rule: Rule, window: RuleWindow) -> list[Candidate]:
    """Judge `rule` on `window`; returns one candidate (empty when the rule is disabled)."""
    if not rule.enabled:
        return []
    if isinstance(rule, ErrorRateRule):
        return [_error_rate(rule, window)]
    if isinstance(rule, VolumeRule):
        return [_volume(rule, window)]
    return [_absence(rule, window)]


def _error_rate(rule: ErrorRateRule, w: RuleWindow) -> Candidate:
    rate = w.errors / w.total if w.total else 0.0
    # min_events: a window with few logs is noise (1 error out of 1 log pages nobody)
    breach = w.total >= rule.min_events and rate > rule.threshold
    summary = (
        f"{w.service}: error rate {rate:.1%} ({w.errors}/{w.total} logs) over the last "
        f"{rule.window_seconds} s, above {rule.threshold:.1%}"
        if breach
        else f"{w.service}: error rate {rate:.1%} ({w.errors}/{w.total}) within {rule.threshold:.1%}"
    )
    return Candidate(
        "error_rate",
        w.service,
        breach,
        round(rate, 6),
        rule.threshold,
        rule.severity,
        summary,
        rule.for_seconds,
        {"window_seconds": str(rule.window_seconds), "errors": str(w.errors), "total": str(w.total)},
    )


def _volume(rule: VolumeRule, w: RuleWindow) -> Candidate:
    breach = w.total > rule.threshold
    summary = (
        f"{w.service}: {w.total} logs in the last {rule.window_seconds} s, above {rule.threshold}"
        if breach
        else f"{w.service}: {w.total} logs in {rule.window_seconds} s"
    )
    return Candidate(
        "volume",
        w.service,
        breach,
        float(w.total),
        float(rule.threshold),
        rule.severity,
        summary,
        rule.for_seconds,
        {"window_seconds": str(rule.window_seconds)},
    )


def _absence(rule: AbsenceRule, w: RuleWindow) -> Candidate:
    if w.last_seen is None:  # a service never seen cannot go silent
        return Candidate("absence", w.service, False, None, rule.threshold_seconds, rule.severity, "never seen")
    silent = max(0.0, w.now - w.last_seen)
    breach = silent > rule.threshold_seconds
    summary = (
        f"{w.service}: no logs for {silent:.0f} s (limit {rule.threshold_seconds:.0f} s)"
        if breach
        else f"{w.service}: last log {silent:.0f} s ago"
    )
    return Candidate("absence", w.service, breach, round(silent, 3), rule.threshold_seconds, rule.severity, summary)
