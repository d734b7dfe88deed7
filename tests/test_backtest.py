"""`loglens backtest`: archived logs replayed in event time through the live rules."""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson
from typer.testing import CliRunner

from loglens.analyze.backtest import format_report, run_backtest
from loglens.cli import app
from loglens.config import parse_settings
from loglens.demo import generate_logs

REPO = Path(__file__).resolve().parents[1]
T0 = 1_800_000_000.0


def archive(tmp_path: Path) -> Path:
    """10 minutes of steady traffic with a 40-s error burst in `checkout` at minute 5 and `auth`
    going silent for 3 minutes from minute 6."""
    logs = []
    for rec in generate_logs(6000, start=T0, spacing_s=0.1, error_ratio=0.0, seed=1):
        t = T0 + len(logs) * 0.1
        if rec["service"] == "checkout" and 300 <= t - T0 < 340:
            rec["level"] = "ERROR"
        if rec["service"] == "auth" and 360 <= t - T0 < 540:
            logs.append(None)
            continue
        logs.append(rec)
    path = tmp_path / "archive.ndjson.gz"
    with gzip.open(path, "wb") as fh:
        for rec in logs:
            if rec is not None:
                fh.write(orjson.dumps(rec) + b"\n")
        fh.write(b"not json\n")
    return path


def test_backtest_reports_what_would_have_fired(tmp_path: Path) -> None:
    settings = parse_settings("{}", base_dir=REPO)
    result = run_backtest(settings, [archive(tmp_path)])
    assert result.rejected == 1 and result.logs > 5000
    episodes = {(e["rule"], e["service"]): e for e in result.episodes()}
    er = episodes[("error_rate", "checkout")]
    # the burst starts at +300 s; min_events=20 at 120 logs/min per service → fires within seconds
    assert er["fired_at"].startswith("2027-01-15T08:05:0")
    assert 50 <= er["duration_seconds"] <= 110  # until the 40-s burst has left the 60-s window
    ab = episodes[("absence", "auth")]
    assert ab["duration_seconds"] is not None and 40 <= ab["duration_seconds"] <= 70
    assert ("volume", "checkout") in episodes  # 120/min per service breaches the default 100
    lines = format_report(result)
    assert any("FIRING" in ln and "error_rate" in ln and "checkout" in ln for ln in lines)
    assert any("RESOLVED" in ln and "absence" in ln for ln in lines)


def test_backtest_cli(tmp_path: Path) -> None:
    runner = CliRunner()
    small = tmp_path / "small.ndjson"
    recs = list(generate_logs(300, services=("api",), start=T0, spacing_s=0.2, error_ratio=0.0))
    for r in recs[100:130]:
        r["level"] = "ERROR"
    small.write_bytes(b"\n".join(orjson.dumps(r) for r in recs))
    out = runner.invoke(app, ["backtest", "--rules", str(REPO / "config.yaml"), str(small), "--no-patterns"])
    assert out.exit_code == 0, out.output
    assert "would have fired" in out.output and "error_rate" in out.output
    missing = runner.invoke(app, ["backtest", str(tmp_path / "nope.ndjson")])
    assert missing.exit_code == 2


def test_backtest_of_json_array_and_empty_file(tmp_path: Path) -> None:
    settings = parse_settings("{}", base_dir=REPO)
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    assert run_backtest(settings, [empty]).episodes() == []
    arr = tmp_path / "a.json"
    arr.write_bytes(orjson.dumps(list(generate_logs(50, start=T0, spacing_s=0.5))))
    r = run_backtest(settings, [arr])
    assert r.logs == 50 and r.episodes() == []
    assert "0 alert(s) would have fired" in format_report(r)[-1]
