"""The ingest inputs of a server, for `loglens status` and `/metrics`: what listens where.

Every input feeds the same `IngestPipeline` under its own `source` name, so the per-input
accepted / rejected counts are the self-metrics counters `loglens_logs_accepted_total` and
`loglens_logs_rejected_total` by `source`. This module lists the inputs (HTTP endpoints always;
syslog, Fluent forward and file tail when enabled, with the addresses actually bound), adds those
counts for a running server, and yields the listener gauges the counters cannot express.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from loglens.config import Settings
from loglens.ingest.fluent import FluentServer
from loglens.ingest.syslog import SyslogServer
from loglens.ops.selfmetrics import Observed, SelfMetrics


@dataclass
class InputStatus:
    """One input: its source name (the `source` of its logs and dead letters), where it listens."""

    source: str
    protocol: str
    listen: str
    enabled: bool
    accepted: int | None = None
    rejected: int | None = None


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def describe(settings: Settings, running: object = None) -> list[InputStatus]:
    """Every input of `settings`; with the running server (the runtime: its `syslog`, `fluent` and
    `selfmetrics` parts), the addresses actually bound and the counts since start."""
    syslog = getattr(running, "syslog", None)
    fluent = getattr(running, "fluent", None)
    metrics = getattr(running, "selfmetrics", None)
    # HTTP inputs are named by path: they share the API's listener (its port may be 0, chosen at bind)
    syslog_cfg, fluent_cfg = settings.protocols.syslog, settings.protocols.fluent
    out = [
        InputStatus("http", "loglens JSON / NDJSON", "POST /api/v1/logs", True),
        InputStatus("otlp", "OTLP/HTTP logs", "POST /v1/logs", True),
        InputStatus("loki", "Loki push (protobuf, JSON)", "POST /loki/api/v1/push, /api/prom/push", True),
        InputStatus("es_bulk", "Elasticsearch _bulk", "POST /_bulk, /{index}/_bulk", True),
    ]
    udp = syslog.udp_port if isinstance(syslog, SyslogServer) else syslog_cfg.udp_port
    tcp = syslog.tcp_port if isinstance(syslog, SyslogServer) else syslog_cfg.tcp_port
    where = [
        f"{kind} {_host(syslog_cfg.host)}:{port}" for kind, port in (("udp", udp), ("tcp", tcp)) if port is not None
    ]
    out.append(InputStatus("syslog", "syslog RFC 5424/3164", ", ".join(where) or "-", syslog_cfg.enabled))
    port = fluent.port if isinstance(fluent, FluentServer) else fluent_cfg.port
    protocol = "Fluent forward" + (" (shared key)" if fluent_cfg.shared_key else "")
    out.append(InputStatus("fluent", protocol, f"tcp {_host(fluent_cfg.host)}:{port}", fluent_cfg.enabled))
    files = ", ".join(str(f) for f in settings.ingest.files) if settings.ingest.files else "-"
    out.append(InputStatus("tail", "file tail (NDJSON)", files, bool(settings.ingest.files)))
    if isinstance(metrics, SelfMetrics):
        accepted, rejected = _by_source(metrics.accepted), _by_source(metrics.rejected)
        for item in out:
            item.accepted = accepted.get(item.source, 0)
            item.rejected = rejected.get(item.source, 0)
    return out


def _by_source(counter: Any) -> dict[str, int]:
    """Totals of a prometheus Counter with a `source` label (summed over its other labels)."""
    totals: dict[str, int] = {}
    for family in counter.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                src = sample.labels["source"]
                totals[src] = totals.get(src, 0) + int(sample.value)
    return totals


def to_json(inputs: list[InputStatus]) -> list[dict[str, Any]]:
    """The status API shape."""
    return [asdict(i) for i in inputs]


def render_lines(inputs: list[dict[str, Any]] | None) -> list[str]:
    """Terminal lines for `loglens status`."""
    if not inputs:
        return []
    lines = ["inputs:"]
    for i in inputs:
        state = "on " if i["enabled"] else "off"
        counts = (
            f"  accepted {i['accepted']:,}, rejected {i['rejected']:,}"
            if i.get("accepted") is not None and i["enabled"]
            else ""
        )
        lines.append(f"  [{state}] {i['source']:<8} {i['protocol']:<28} {i['listen']}{counts}")
    return lines


def sources(running: Observed) -> list[str]:
    """Source names of the inputs a running server runs (so their counters start at 0, not absent)."""
    return [i.source for i in describe(running.settings, running) if i.enabled]


def collect(running: Observed) -> Iterator[Metric]:
    """Listener gauges and counters for `/metrics` (the per-input record counts are by `source`)."""
    up = GaugeMetricFamily(
        "loglens_input_enabled",
        "1 for each input the server runs, by source and listen address.",
        labels=["source", "listen"],
    )
    for item in describe(running.settings, running):
        if item.enabled:
            up.add_metric([item.source, item.listen], 1)
    yield up
    fluent = getattr(running, "fluent", None)
    if not isinstance(fluent, FluentServer):
        return
    st = fluent.stats
    yield GaugeMetricFamily("loglens_fluent_connections", "Open Fluent forward connections.", value=st.open_connections)
    yield CounterMetricFamily("loglens_fluent_messages", "Forward-protocol messages received.", value=st.messages)
    yield CounterMetricFamily("loglens_fluent_acks", "Chunk acks sent (each after its commit).", value=st.acks)
    yield CounterMetricFamily(
        "loglens_fluent_bad_frames", "Forward messages or byte streams dead-lettered as invalid.", value=st.bad_frames
    )
    yield CounterMetricFamily("loglens_fluent_auth_failures", "Failed shared-key handshakes.", value=st.auth_failures)
