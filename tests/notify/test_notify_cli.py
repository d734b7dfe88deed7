"""`loglens notify test CHANNEL`: a real sample sent to real receivers, exact errors and exit codes."""

from __future__ import annotations

from pathlib import Path

from notify_receivers import Reply, free_port
from typer.testing import CliRunner

from loglens.cli import app

runner = CliRunner()


def _config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(f"storage: {{path: {tmp_path / 'db.duckdb'}}}\nnotifiers:\n{body}")
    return path


def test_notify_test_delivers_a_sample(tmp_path: Path, receiver) -> None:
    cfg = _config(tmp_path, f"  - {{name: ops, type: webhook, settings: {{url: '{receiver.url}'}}}}\n")
    result = runner.invoke(app, ["notify", "test", "ops", "--config", str(cfg)])
    assert result.exit_code == 0, result.output
    assert "ops: test notification delivered" in result.output
    (req,) = receiver.requests
    body = req.json()
    assert body["kind"] == "test" and body["channel"] == "ops" and body["alert"]["rule"] == "test"


def test_notify_test_reports_the_exact_error(tmp_path: Path, receiver_factory) -> None:
    r = receiver_factory(default=Reply(500, body=b"upstream exploded"))
    cfg = _config(tmp_path, f"  - {{name: ops, type: webhook, settings: {{url: '{r.url}'}}}}\n")
    result = runner.invoke(app, ["notify", "test", "ops", "--config", str(cfg)])
    assert result.exit_code == 1
    assert (
        f"ops: delivery failed (transient): http://127.0.0.1:{r.port} answered HTTP 500: upstream exploded"
        in result.output
    )
    assert "secret-path-token" not in result.output


def test_notify_test_permanent_and_timeout(tmp_path: Path, receiver_factory) -> None:
    slow = receiver_factory(default=Reply(delay=1.0))
    cfg = _config(
        tmp_path,
        f"""  - {{name: gone, type: email, settings: {{port: {free_port()}, to: [a@b.c],
        username: u, password_env: LOGLENS_TEST_UNSET_PW}}}}
  - {{name: slow, type: webhook, settings: {{url: '{slow.url}'}}}}
outbox: {{timeout_seconds: 0.2}}
""",
    )
    result = runner.invoke(app, ["notify", "test", "gone", "--config", str(cfg)])
    assert result.exit_code == 1
    assert (
        "gone: delivery failed (permanent): email password: environment variable LOGLENS_TEST_UNSET_PW" in result.output
    )
    result = runner.invoke(app, ["notify", "test", "slow", "--config", str(cfg)])
    assert result.exit_code == 1 and "slow: delivery failed (transient): timed out after 0.2s" in result.output


def test_notify_test_unknown_channel_and_bad_settings(tmp_path: Path) -> None:
    cfg = _config(tmp_path, "  - {name: ops, type: webhook, settings: {uri: 'http://x'}}\n")
    result = runner.invoke(app, ["notify", "test", "nope", "--config", str(cfg)])
    assert result.exit_code == 1 and "no channel named 'nope' (known: ops)" in result.output
    result = runner.invoke(app, ["notify", "test", "ops", "--config", str(cfg)])
    assert result.exit_code == 1
    assert f"{cfg.resolve()}:3: notifiers[0].settings.uri: unknown key" in result.output


def test_notify_test_plugin_bug_is_shown_without_traceback(tmp_path: Path) -> None:
    # The example plugin appending to a path inside a missing directory raises FileNotFoundError.
    cfg = _config(tmp_path, f"  - {{name: ex, type: example, settings: {{path: '{tmp_path}/no/such/dir.jsonl'}}}}\n")
    result = runner.invoke(app, ["notify", "test", "ex", "--config", str(cfg)])
    assert result.exit_code == 1 and "ex: delivery failed: FileNotFoundError" in result.output
    assert "Traceback" not in result.output


def test_notify_test_console(tmp_path: Path) -> None:
    cfg = _config(tmp_path, "  - {name: c, type: console}\n")
    result = runner.invoke(app, ["notify", "test", "c", "--config", str(cfg)])
    assert result.exit_code == 0 and "[TEST] warning test on loglens" in result.output


def test_check_config_validates_notifier_plugin_settings(tmp_path: Path) -> None:
    cfg = _config(tmp_path, "  - {name: ops, type: slack, settings: {channel: '#ops'}}\n")
    result = runner.invoke(app, ["check-config", str(cfg)])
    assert result.exit_code == 2
    assert f"{cfg.resolve()}:3: notifiers[0].settings: Value error, set exactly one of webhook_url" in result.output
