"""The analysis report: built from merged partials, rendered as a terminal table, JSON or HTML.

Quantiles come from the merged latency sketch with exactly `metrics.quantile` semantics (the
nearest rank: the first bucket whose cumulative count reaches max(1, ⌈q·n⌉), as the live
server's queries), evaluated for every group at once. The HTML report is self-contained: inline SVG charts, no script, no CDN, and every
value taken from logs is HTML-escaped.
"""

from __future__ import annotations

import html
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from loglens import metrics
from loglens.models import iso

if TYPE_CHECKING:
    from loglens.analyze.detection import Detection
    from loglens.analyze.driver import Analysis

QUANTILES = (0.5, 0.95, 0.99)


def sketch_quantiles(
    sketch: pa.Table, by: list[str], qs: tuple[float, ...] = QUANTILES
) -> dict[tuple[Any, ...], list[float | None]]:
    """{group key: [value per q]} from sketch rows: per group (rows with equal `by`, nulls
    included), `metrics.quantile` of its merged sketch — the nearest rank the live server's
    queries use, so a report and the dashboard give the same p95 for the same logs. Columnar in
    Arrow/numpy over all groups at once."""
    if sketch.num_rows == 0:
        return {}
    s = (
        sketch.group_by([*by, "bucket"], use_threads=False)
        .aggregate([("count", "sum")])
        .sort_by([(k, "ascending") for k in by] + [("bucket", "ascending")])
    )
    n = s.num_rows
    counts = s["count_sum"].to_numpy()
    starts = _group_starts(s, by)
    sizes = np.diff(np.append(starts, n))
    cumulative = np.cumsum(counts)
    cc = (cumulative - np.repeat(cumulative[starts] - counts[starts], sizes)).astype(np.float64)
    totals = np.repeat(np.add.reduceat(counts, starts), sizes).astype(np.float64)  # n per row's group
    buckets = s["bucket"].to_numpy(zero_copy_only=False)
    rows = np.arange(n)
    # cc grows within a group: its first row at the rank has the smallest bucket (n: none); the
    # rank as in metrics.quantile, max(1, ceil(q·n)), with the same tolerance for float error
    firsts = [
        np.minimum.reduceat(np.where(cc >= np.maximum(1.0, np.ceil(q * totals - 1e-9)), rows, n), starts) for q in qs
    ]
    keys = s.select(by).take(pa.array(starts)).to_pylist()
    return {
        tuple(k[c] for c in by): [None if f[g] >= n else metrics.bucket_value(int(buckets[f[g]])) for f in firsts]
        for g, k in enumerate(keys)
    }


def _group_starts(t: pa.Table, by: list[str]) -> np.ndarray:
    """Indices of the rows of `t` (sorted by `by`) that start a group of equal `by` values."""
    n = t.num_rows
    new = np.zeros(n, dtype=bool)
    new[0] = True
    for key in by:
        a, b = t[key].slice(1), t[key].slice(0, n - 1)
        differs = pc.fill_null(pc.not_equal(a, b), True)
        both_null = pc.and_(pc.is_null(a), pc.is_null(b))
        new[1:] |= pc.and_not(differs, both_null).to_numpy(zero_copy_only=False)
    return np.flatnonzero(new)


def _rate(errors: int, count: int) -> float:
    return errors / count if count else 0.0


def _round(v: float | None, digits: int = 3) -> float | None:
    return None if v is None else round(v, digits)


def build_report(
    analysis: Analysis, detection: Detection, meta: dict[str, Any], *, top_users: int = 20
) -> dict[str, Any]:
    """The JSON-ready report: summary, services, per-minute series, users, bad lines, alerts."""
    p = analysis.partials
    minute = p.minute.sort_by([("service", "ascending"), ("minute", "ascending")]).to_pylist()
    q_minute = sketch_quantiles(p.sketch, ["service", "minute"])
    q_service = sketch_quantiles(p.sketch, ["service"])
    q_all = sketch_quantiles(
        p.sketch.drop_columns(["service"]).append_column("grp", pa.array([""] * p.sketch.num_rows, pa.string())),
        ["grp"],
    )

    minutes_out = []
    per_service: dict[str, dict[str, Any]] = {}
    for row in minute:
        svc, m, count = row["service"], row["minute"], int(row["count"])
        errors = int(row["error"] + row["fatal"])
        qs = q_minute.get((svc, m), [None] * len(QUANTILES))
        minutes_out.append(
            {
                "service": svc,
                "minute": iso(m),
                "count": count,
                "errors": errors,
                "error_rate": _round(_rate(errors, count), 6),
                "avg_ms": _round(row["rt_sum"] / row["rt_count"]) if row["rt_count"] else None,
                "p50_ms": _round(qs[0]),
                "p95_ms": _round(qs[1]),
                "p99_ms": _round(qs[2]),
            }
        )
        agg = per_service.setdefault(
            svc, {"count": 0, "errors": 0, "rt_sum": 0.0, "rt_count": 0, "first": m, "last": m, "minutes": 0}
        )
        agg["count"] += count
        agg["errors"] += errors
        agg["rt_sum"] += row["rt_sum"]
        agg["rt_count"] += int(row["rt_count"])
        agg["last"] = m
        agg["minutes"] += 1

    users_by_service: Counter[str] = Counter()
    user_totals: Counter[str] = Counter()
    if p.users.num_rows:
        con = duckdb.connect()
        try:
            con.register("u", p.users)
            for svc, n in con.execute("SELECT service, count(DISTINCT user_id) FROM u GROUP BY service").fetchall():
                users_by_service[svc] = int(n)
            for uid, n in con.execute("SELECT user_id, sum(count) FROM u GROUP BY user_id").fetchall():
                user_totals[uid] = int(n)
        finally:
            con.close()

    services = []
    for svc, agg in per_service.items():
        span_min = (agg["last"] - agg["first"]).total_seconds() / 60 + 1
        qs = q_service.get((svc,), [None] * len(QUANTILES))
        services.append(
            {
                "service": svc,
                "count": agg["count"],
                "errors": agg["errors"],
                "error_rate": _round(_rate(agg["errors"], agg["count"]), 6),
                "volume_per_min": _round(agg["count"] / span_min, 2),
                "avg_ms": _round(agg["rt_sum"] / agg["rt_count"]) if agg["rt_count"] else None,
                "p50_ms": _round(qs[0]),
                "p95_ms": _round(qs[1]),
                "p99_ms": _round(qs[2]),
                "distinct_users": users_by_service.get(svc, 0),
                "first_minute": iso(agg["first"]),
                "last_minute": iso(agg["last"]),
            }
        )
    services.sort(key=lambda s: (-s["count"], s["service"]))

    workers: Counter[str] = Counter(r.worker for r in analysis.results)
    records = sum(r.records for r in analysis.results) + analysis.dead_letters
    accepted = sum(r.accepted for r in analysis.results)
    rejected_total = sum(analysis.rejected.values())
    all_minutes = [r["minute"] for r in minute]
    overall = q_all.get(("",), [None] * len(QUANTILES))
    total_rt = sum(a["rt_count"] for a in per_service.values())
    summary = {
        **meta,
        "workers": dict(sorted(workers.items())),
        "records": records,
        "accepted": accepted,
        "rejected": rejected_total,
        "filtered_out": sum(r.filtered_out for r in analysis.results),
        "services": len(services),
        "start": iso(min(all_minutes)) if all_minutes else None,
        "end": iso(max(all_minutes)) if all_minutes else None,
        "errors": sum(s["errors"] for s in services),
        "avg_ms": _round(sum(a["rt_sum"] for a in per_service.values()) / total_rt) if total_rt else None,
        "p50_ms": _round(overall[0]),
        "p95_ms": _round(overall[1]),
        "p99_ms": _round(overall[2]),
        "logs_per_s": round(records / meta["elapsed_s"]) if meta.get("elapsed_s") else None,
    }
    return {
        "summary": summary,
        "services": services,
        "most_active_services": [
            {k: s[k] for k in ("service", "count", "errors", "error_rate")} for s in services[:10]
        ],
        "minutes": minutes_out,
        "requests_per_user": [
            {"user_id": u, "count": n} for u, n in sorted(user_totals.items(), key=lambda x: (-x[1], x[0]))[:top_users]
        ],
        "distinct_users": len(user_totals),
        "bad_lines": {
            "total": rejected_total,
            "by_reason": [
                {
                    "reason": key,
                    "count": n,
                    "samples": [
                        {"reason": r, "raw": raw, "location": loc} for r, raw, loc in analysis.samples.get(key, [])
                    ],
                }
                for key, n in sorted(analysis.rejected.items(), key=lambda x: (-x[1], x[0]))
            ],
        },
        "alerts": detection.alerts,
        "anomalies": detection.anomalies,
        "detection_notes": detection.notes,
    }


# ---- renderers ---------------------------------------------------------------------------
def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1 else f"{v:,.1f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[_fmt(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += [
        "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in cells
    ]
    return "\n".join(out)


_SERVICE_FIELDS = (
    "service",
    "count",
    "errors",
    "error_rate",
    "volume_per_min",
    "avg_ms",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "distinct_users",
)


def _service_rows(rep: dict[str, Any]) -> list[list[Any]]:
    """The per-service table's cells, in column order, for both the text and the HTML report."""
    return [[x[f] for f in _SERVICE_FIELDS] for x in rep["services"]]


def render_text(rep: dict[str, Any]) -> str:
    """A terminal summary: totals, per-service table, top users, bad lines, alerts."""
    s = rep["summary"]
    lines = [
        f"engine: {s['engine_detail']}   partitions: {s['partitions']}   workers: {len(s['workers'])}   "
        f"elapsed: {s['elapsed_s']:.2f} s   ({_fmt(s['logs_per_s'])} logs/s)",
        f"records: {_fmt(s['records'])}   accepted: {_fmt(s['accepted'])}   rejected: {_fmt(s['rejected'])}   "
        f"filtered out: {_fmt(s['filtered_out'])}   period: {s['start'] or '-'} .. {s['end'] or '-'}",
        "",
        _table(
            ["service", "logs", "errors", "err rate", "logs/min", "avg ms", "p50 ms", "p95 ms", "p99 ms", "users"],
            _service_rows(rep),
        ),
    ]
    if rep["requests_per_user"]:
        lines += [
            "",
            f"top users (of {rep['distinct_users']:,}):",
            _table(["user", "requests"], [[u["user_id"], u["count"]] for u in rep["requests_per_user"][:10]]),
        ]
    if rep["bad_lines"]["total"]:
        lines += [
            "",
            f"bad lines: {rep['bad_lines']['total']:,}",
            _table(
                ["reason", "count", "e.g. at"],
                [
                    [b["reason"], b["count"], b["samples"][0]["location"] if b["samples"] else ""]
                    for b in rep["bad_lines"]["by_reason"]
                ],
            ),
        ]
    lines += ["", f"alerts: {len(rep['alerts'])}   anomalies: {len(rep['anomalies'])}"]
    if rep["alerts"]:
        lines += [
            _table(
                ["rule", "service", "severity", "started", "resolved", "value", "threshold", "summary"],
                [
                    [
                        a.get("rule"),
                        a.get("service"),
                        a.get("severity"),
                        a.get("started_at"),
                        a.get("resolved_at") or "still firing",
                        a.get("value"),
                        a.get("threshold"),
                        _clip(a.get("summary")),
                    ]
                    for a in rep["alerts"]
                ],
            )
        ]
    if rep["anomalies"]:
        lines += [
            "",
            _table(
                ["detected", "service", "type", "severity", "score", "description"],
                [
                    [
                        a.get("detected_at"),
                        a.get("service"),
                        a.get("type"),
                        a.get("severity"),
                        a.get("score"),
                        _clip(a.get("description")),
                    ]
                    for a in rep["anomalies"]
                ],
            ),
        ]
    lines += [f"note: {n}" for n in rep["detection_notes"]]
    return "\n".join(lines)


def _clip(text: Any, width: int = 90) -> str:
    """One table cell of free text: a single line of at most `width` characters."""
    flat = " ".join(str(text or "").split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def render_json(rep: dict[str, Any]) -> bytes:
    """The report as indented JSON."""
    return orjson.dumps(rep, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)


_PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563")


def _svg_chart(title: str, series: dict[str, list[tuple[float, float | None]]], *, percent: bool = False) -> str:
    """A self-contained SVG line chart (one line per series, shared axes, legend)."""
    w, h, left, right, top, bottom = 900, 260, 60, 150, 28, 30
    pts = [(x, y) for ps in series.values() for x, y in ps if y is not None]
    esc = html.escape
    if not pts:
        return f'<svg width="{w}" height="60" role="img"><text x="10" y="30">{esc(title)}: no data</text></svg>'
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y1 = max(p[1] for p in pts) or 1.0
    sx = (w - left - right) / ((x1 - x0) or 1)
    sy = (h - top - bottom) / y1

    def xy(x: float, y: float) -> str:
        return f"{left + (x - x0) * sx:.1f},{h - bottom - y * sy:.1f}"

    parts = [
        f'<svg width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="{esc(title)}">',
        f'<text x="{left}" y="18" font-weight="bold">{esc(title)}</text>',
        f'<line x1="{left}" y1="{h - bottom}" x2="{w - right}" y2="{h - bottom}" stroke="#999"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{h - bottom}" stroke="#999"/>',
    ]
    for frac in (0.0, 0.5, 1.0):
        label = f"{y1 * frac:.1%}" if percent else f"{y1 * frac:,.1f}"
        parts.append(
            f'<text x="{left - 4}" y="{h - bottom - frac * (h - top - bottom) + 4:.1f}" '
            f'text-anchor="end" font-size="11">{label}</text>'
        )
    for x, anchor in ((x0, "start"), (x1, "end")):
        stamp = iso_from_epoch(x)
        parts.append(
            f'<text x="{xy(x, 0).split(",")[0]}" y="{h - 10}" text-anchor="{anchor}" font-size="11">{esc(stamp)}</text>'
        )
    for i, (name, ps) in enumerate(sorted(series.items())):
        color = _PALETTE[i % len(_PALETTE)]
        # A None is a minute without data: the line stops there (an outage shows as a gap,
        # not as a straight line over it); a lone minute between gaps is drawn as a dot.
        for run in _runs(ps):
            if len(run) == 1:
                cx, cy = xy(*run[0]).split(",")
                parts.append(f'<circle cx="{cx}" cy="{cy}" r="1.5" fill="{color}"/>')
            else:
                coords = " ".join(xy(x, y) for x, y in run)
                parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{coords}"/>')
        parts.append(
            f'<text x="{w - right + 8}" y="{top + 14 * i + 10}" font-size="12" fill="{color}">{esc(name)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _runs(points: list[tuple[float, float | None]]) -> list[list[tuple[float, float]]]:
    """Consecutive points with a value, split at every None."""
    runs: list[list[tuple[float, float]]] = [[]]
    for x, y in points:
        if y is None:
            if runs[-1]:
                runs.append([])
        else:
            runs[-1].append((x, y))
    return [r for r in runs if r]


def minute_series(minutes: list[dict[str, Any]], field: str) -> dict[str, list[tuple[float, float | None]]]:
    """Per service, `field` for every minute of the report's period; None where it has no logs."""
    if not minutes:
        return {}
    xs = [_epoch(m["minute"]) for m in minutes]
    lo, hi = min(xs), max(xs)
    values: dict[str, dict[float, float | None]] = {}
    for x, m in zip(xs, minutes, strict=True):
        values.setdefault(m["service"], {})[x] = m[field]
    grid = [lo + 60 * k for k in range(int((hi - lo) // 60) + 1)]
    return {svc: [(x, vals.get(x)) for x in grid] for svc, vals in values.items()}


def iso_from_epoch(x: float) -> str:
    """Minute-precision UTC label for an epoch second."""
    return datetime.fromtimestamp(x, UTC).strftime("%Y-%m-%d %H:%MZ")


def _epoch(iso_text: str) -> float:
    return datetime.fromisoformat(iso_text.replace("Z", "+00:00")).timestamp()


def _html_table(headers: list[str], rows: list[list[Any]]) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{esc(_fmt(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(rep: dict[str, Any]) -> str:
    """A self-contained HTML report (inline CSS + SVG; nothing fetched from the network)."""
    esc = html.escape
    s = rep["summary"]
    volume = minute_series(rep["minutes"], "count")
    err = minute_series(rep["minutes"], "error_rate")
    p95 = minute_series(rep["minutes"], "p95_ms")
    sections = [
        f"<h1>loglens analysis</h1><p>engine {esc(s['engine_detail'])} · {s['partitions']} partitions · "
        f"{len(s['workers'])} workers · {s['elapsed_s']:.2f} s · {esc(_fmt(s['records']))} records, "
        f"{esc(_fmt(s['accepted']))} accepted, {esc(_fmt(s['rejected']))} rejected · period "
        f"{esc(s['start'] or '-')} .. {esc(s['end'] or '-')}</p>",
        _svg_chart("logs per minute", volume),
        _svg_chart("error rate per minute", err, percent=True),
        _svg_chart("p95 latency per minute (ms)", p95),
        "<h2>services (most active first)</h2>",
        _html_table(
            ["service", "logs", "errors", "error rate", "logs/min", "avg ms", "p50 ms", "p95 ms", "p99 ms", "users"],
            _service_rows(rep),
        ),
        f"<h2>requests per user (top {len(rep['requests_per_user'])} of {rep['distinct_users']:,})</h2>",
        _html_table(["user", "requests"], [[u["user_id"], u["count"]] for u in rep["requests_per_user"]]),
        f"<h2>alerts ({len(rep['alerts'])})</h2>",
        _html_table(
            ["rule", "service", "severity", "value", "threshold", "summary", "started"],
            [
                [
                    a.get("rule"),
                    a.get("service"),
                    a.get("severity"),
                    a.get("value"),
                    a.get("threshold"),
                    a.get("summary"),
                    a.get("started_at"),
                ]
                for a in rep["alerts"]
            ],
        ),
        f"<h2>anomalies ({len(rep['anomalies'])})</h2>",
        _html_table(
            ["type", "service", "severity", "description", "score"],
            [
                [a.get("type"), a.get("service"), a.get("severity"), a.get("description"), a.get("score")]
                for a in rep["anomalies"]
            ],
        ),
        "".join(f"<p class=note>{esc(n)}</p>" for n in rep["detection_notes"]),
        f"<h2>bad lines ({rep['bad_lines']['total']:,})</h2>",
    ]
    for b in rep["bad_lines"]["by_reason"]:
        sections.append(f"<h3>{esc(b['reason'])} — {b['count']:,}</h3>")
        sections.append(
            _html_table(["where", "reason", "raw"], [[x["location"], x["reason"], x["raw"]] for x in b["samples"]])
        )
    sections.append("<h2>per service and minute</h2>")
    sections.append(
        _html_table(
            ["service", "minute", "logs", "errors", "error rate", "avg ms", "p50 ms", "p95 ms", "p99 ms"],
            [
                [
                    m["service"],
                    m["minute"],
                    m["count"],
                    m["errors"],
                    m["error_rate"],
                    m["avg_ms"],
                    m["p50_ms"],
                    m["p95_ms"],
                    m["p99_ms"],
                ]
                for m in rep["minutes"]
            ],
        )
    )
    style = (
        "body{font:14px system-ui,sans-serif;margin:24px;color:#111}table{border-collapse:collapse;"
        "margin:8px 0 20px}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}td{font-variant-numeric:tabular-nums;"
        "max-width:600px;overflow-wrap:anywhere}.note{color:#92400e}svg{display:block;margin:12px 0}"
    )
    return (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>loglens analysis</title>"
        f"<style>{style}</style></head><body>{''.join(sections)}</body></html>"
    )


def write_report(rep: dict[str, Any], out: Path) -> None:
    """Write JSON (`.json`) or HTML (`.html`/`.htm`) by the file's suffix."""
    suffix = out.suffix.lower()
    if suffix == ".json":
        out.write_bytes(render_json(rep))
    elif suffix in (".html", ".htm"):
        out.write_text(render_html(rep), encoding="utf-8")
    else:
        raise ValueError(f"{out}: the report must end in .json or .html")
