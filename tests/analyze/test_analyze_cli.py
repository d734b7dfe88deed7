"""`loglens analyze` from the command line: text, JSON and HTML reports, errors, cluster engines."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from analyze_data import REPO, logs, write_ndjson
from typer.testing import CliRunner

from loglens.analyze.command import parse_time
from loglens.analyze.engines import make_engine
from loglens.cli import app

runner = CliRunner()
CONFIG = ["--config", str(REPO / "config.yaml")]


def test_json_and_text_report(clean_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    result = runner.invoke(app, ["analyze", str(clean_file), "--partitions", "2", "--out", str(out), *CONFIG])
    assert result.exit_code == 0, result.output
    assert "records: 20,000" in result.output and "checkout" in result.output and "top users" in result.output
    assert "analyze (local)" in result.output  # the progress bar
    report = json.loads(out.read_text())
    assert report["summary"]["accepted"] == 20_000
    assert {s["service"] for s in report["services"]} == {"checkout", "payments", "search", "auth"}
    assert report["summary"]["logs_per_s"] > 0


def test_html_report_is_self_contained_and_escaped(tmp_path: Path) -> None:
    records = logs(600, seed=4)
    for r in records[:50]:
        r["user_id"] = "<img src=x onerror=alert(1)>"
    hostile = b'{"level": "INFO", "<script>alert(2)</script>": 1}'
    path = write_ndjson(tmp_path / "h.ndjson", records, broken={10: hostile, 11: b"<b>not json</b>"})
    out = tmp_path / "report.html"
    result = runner.invoke(app, ["analyze", str(path), "--no-progress", "--out", str(out), *CONFIG])
    assert result.exit_code == 0, result.output
    assert "bad lines: 2" in result.output
    text = out.read_text()
    assert text.startswith("<!doctype html>") and text.count("<svg") == 3
    assert "<polyline" in text or "<circle" in text  # one minute per service: dots
    assert "<script" not in text and "<img" not in text and "<b>" not in text
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in text and "&lt;img src=x onerror=alert(1)&gt;" in text
    assert not re.search(r"(src|href)=\"?https?:", text)  # nothing fetched from the network


def test_filters_from_the_command_line(clean_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    result = runner.invoke(
        app,
        [
            "analyze",
            str(clean_file),
            "--no-progress",
            "--service",
            "auth",
            "--since",
            "2023-11-14T22:20:00Z",
            "--until",
            "2023-11-14T22:25:00",
            "--out",
            str(out),
            *CONFIG,
        ],
    )
    assert result.exit_code == 0, result.output
    report = orjson.loads(out.read_bytes())
    assert [s["service"] for s in report["services"]] == ["auth"]
    assert [m["minute"][11:16] for m in report["minutes"]] == ["22:20", "22:21", "22:22", "22:23", "22:24"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--engine", "spark"], "unknown engine 'spark'"),
        (["--address", "tcp://h:8786"], "only the dask and ray engines"),
        (["--partitions", "0"], "at least 1"),
        (["--since", "yesterday"], "--since: not an RFC 3339 date-time"),
        (["--out", "report.txt"], "must end in .json or .html"),
    ],
)
def test_bad_options_exit_2(clean_file: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["analyze", str(clean_file), *args, *CONFIG])
    assert result.exit_code == 2 and message in result.output


def test_missing_input_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["analyze", str(tmp_path / "nope" / "*.ndjson"), *CONFIG])
    assert result.exit_code == 2 and "no input files found" in result.output


def test_parse_time_and_make_engine() -> None:
    assert parse_time(None, "--since") is None
    assert parse_time("2026-01-02", "--since").isoformat() == "2026-01-02T00:00:00+00:00"
    with pytest.raises(ValueError, match="for the dask and ray"):
        make_engine("local", "tcp://x:1")
    with pytest.raises(ValueError, match="unknown engine"):
        make_engine("spark")
    from loglens.analyze.report import write_report

    with pytest.raises(ValueError, match=r"\.json or \.html"):
        write_report({}, Path("r.csv"))


@pytest.mark.xdist_group("cluster")
@pytest.mark.parametrize("engine", ["dask", "ray"])
def test_cli_starts_and_stops_its_own_cluster(clean_file: Path, tmp_path: Path, engine: str) -> None:
    out = tmp_path / "r.json"
    result = runner.invoke(
        app,
        [
            "analyze",
            str(clean_file),
            "--engine",
            engine,
            "--partitions",
            "4",
            "--no-progress",
            "--out",
            str(out),
            *CONFIG,
        ],
    )
    assert result.exit_code == 0, result.output
    report = orjson.loads(out.read_bytes())
    assert report["summary"]["engine"] == engine and report["summary"]["accepted"] == 20_000
    assert len(report["summary"]["workers"]) >= 2
    if engine == "ray":
        import ray

        assert not ray.is_initialized()  # the engine shut down the instance it started


def test_outage_is_a_gap_and_alerts_are_listed(tmp_path: Path) -> None:
    """auth goes silent for 10 minutes: its chart line stops there, and the text lists the alerts."""
    from loglens.analyze.report import _runs, minute_series, render_html

    records = [
        r for r in logs(40_000, seed=8) if not (r["service"] == "auth" and "22:20" <= r["timestamp"][11:16] < "22:30")
    ]
    path = write_ndjson(tmp_path / "outage.ndjson", records)
    out = tmp_path / "report.json"
    result = runner.invoke(app, ["analyze", str(path), "--no-progress", "--out", str(out), *CONFIG])
    assert result.exit_code == 0, result.output
    rep = orjson.loads(out.read_bytes())
    auth = minute_series(rep["minutes"], "count")["auth"]
    gap = [x for x, y in auth if y is None]
    assert len(gap) == 10 and len(_runs(auth)) == 2  # two lines, nothing drawn across the outage
    html = render_html(rep)
    assert html.count("<polyline") >= 3 * (len(rep["services"]) + 1)  # auth's lines are split in each chart
    assert rep["alerts"], "an outage of 10 minutes raises at least an absence alert"
    text = result.output
    assert "rule" in text and "started" in text
    for alert in rep["alerts"]:
        assert alert["started_at"] in text and alert["rule"] in text
    assert _runs([(0.0, None), (1.0, 2.0), (2.0, None), (3.0, 1.0), (4.0, 1.0)]) == [
        [(1.0, 2.0)],
        [(3.0, 1.0), (4.0, 1.0)],
    ]


def test_report_file_is_written_when_stdout_closes_early(clean_file: Path, tmp_path: Path) -> None:
    """`loglens analyze ... --out r.json | head -1`: the reader leaves after one line, and the
    report file is still written (it comes before the text on stdout)."""
    out = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "loglens.cli", "analyze", str(clean_file), "--no-progress", "--out", str(out), *CONFIG]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=REPO) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith(b"engine: local")
        proc.stdout.close()
        proc.wait(timeout=300)
    assert json.loads(out.read_text())["summary"]["accepted"] == 20_000
