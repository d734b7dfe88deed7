"""Threshold rules as pure functions: `evaluate(rule, window) -> candidates`.

A candidate says, for one (rule, service), whether the condition holds now (`breach`) and with
what value; the alert state machine (`loglens.alerting`) turns candidates into pending → firing
→ resolved transitions. No store, no clock, no API here, so the same code runs live, in
`loglens backtest` and on Dask/Ray workers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from loglens.config import AbsenceRule, AlertsConfig, ErrorRateRule, VolumeRule
from loglens.models import Candidate as Candidate  # re-exported: the alert engine imports it from here

Rule = ErrorRateRule | AbsenceRule | VolumeRule

# The threshold rules, in evaluation order: the one list live, backtest and analyze all use.
THRESHOLD_RULES: tuple[str, ...] = ("error_rate", "volume", "absence")

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


class Counts(Protocol):
    """Sums over one window."""

    @property
    def total(self) -> int:
        """Logs in the window."""
        ...

    @property
    def errors(self) -> int:
        """ERROR and FATAL logs in the window."""
        ...


class WindowSource(Protocol):
    """Where rule windows come from (`loglens.detect.windows.SlidingWindows`)."""

    def counts(self, service: str, now: float, window_s: int) -> Counts:
        """Logs and errors of `service` in the `window_s` seconds ending at `now`."""
        ...

    def seen(self, service: str) -> float | None:
        """Arrival time of the newest log of `service` (None: never seen)."""
        ...


def threshold_rule(alerts: AlertsConfig, name: str, service: str) -> Rule:
    """The effective threshold rule `name` (error_rate, volume, absence) for `service`."""
    rule = effective_rule(alerts, name, service)
    assert isinstance(rule, ErrorRateRule | AbsenceRule | VolumeRule)
    return rule


def threshold_candidates(
    alerts: AlertsConfig, name: str, source: WindowSource, services: Iterable[str], now: float
) -> list[Candidate]:
    """Judge threshold rule `name` for each service on the windows ending at `now`.

    The one candidate builder of the threshold rules, shared by the live evaluator and the
    event-time replay (`loglens backtest` and `loglens analyze`).
    """
    out: list[Candidate] = []
    for svc in services:
        rule = threshold_rule(alerts, name, svc)
        if not rule.enabled:
            continue
        window_s = rule.window_seconds if isinstance(rule, ErrorRateRule | VolumeRule) else 0
        if window_s:
            c = source.counts(svc, now, window_s)
            w = RuleWindow(svc, now, c.total, c.errors, source.seen(svc))
        else:
            w = RuleWindow(svc, now, 0, 0, source.seen(svc))
        out.extend(evaluate(rule, w))
    return out


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
