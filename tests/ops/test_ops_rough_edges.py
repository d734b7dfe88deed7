"""Issue 17 item 12: status, dead-letter list, reload and check-config say what is true."""

from __future__ import annotations

import gzip
from pathlib import Path

from typer.testing import CliRunner

from loglens.cli import _with_overrides, app
from loglens.config import parse_settings
from loglens.ingest.decode import decode_json, decode_ndjson
from loglens.ops import status
from loglens.ops.commands import display_raw
from loglens.ops.reload import keep_restart_keys
from tests_support import LiveServer

runner = CliRunner()


def test_status_of_a_missing_store_says_so_and_lists_the_configured_channels(tmp_path: Path) -> None:
    settings = parse_settings(f"storage: {{path: {tmp_path / 'none.duckdb'}}}\n")  # console by default
    text = status.render(status.store_status(settings))
    store_line = next(line for line in text.splitlines() if line.startswith("store:"))
    assert "does not exist yet" in store_line and "0 B" not in store_line
    assert "console (console): stopped" in text and "notifiers: none" not in text
    empty = parse_settings(f"storage: {{path: {tmp_path / 'none.duckdb'}}}\nnotifiers: []\n")
    assert "notifiers: none configured" in status.render(status.store_status(empty))


def test_dead_letter_list_never_prints_binary_or_control_characters() -> None:
    body = gzip.compress(b'{"message": "x"}\n' * 100).decode("utf-8", errors="replace")
    assert display_raw(body).startswith("(binary data")
    assert display_raw("ok \x1b[2J then") == "ok \\x1b[2J then"  # an escape sequence stays inert
    assert display_raw('{"a": 1}') == '{"a": 1}'


def test_reload_does_not_ask_to_restart_for_values_given_by_flags(tmp_path: Path) -> None:
    file = parse_settings("server: {port: 8080}\n")
    running = _with_overrides(file, None, 9999, tmp_path)
    assert set(running.cli_overrides) == {"server.port", "storage.path"}
    kept, restart = keep_restart_keys(running, file)
    assert restart == [] and kept.server.port == 9999 and kept.storage.path == tmp_path / "loglens.duckdb"
    changed = parse_settings("server: {host: 0.0.0.0, port: 8080}\n")
    assert keep_restart_keys(running, changed)[1] == ["server.host"]  # a real change is still reported


def test_check_config_tells_built_in_types_from_installed_plugins(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text("notifiers:\n  - {name: p, type: pagerduty}\n", encoding="utf-8")
    result = runner.invoke(app, ["check-config", str(cfg)])
    assert result.exit_code == 2
    assert "built-in: console, email, slack, webhook" in result.output
    assert "example (from loglens-example-notifier)" in result.output  # the test plugin, named as such


def test_invalid_utf8_reason_says_what_is_wrong(live_server: LiveServer) -> None:
    line = b'{"timestamp":"2026-11-23T14:00:00Z","level":"INFO","service":"s","message":"caf\xe9"}'
    for parsed in (decode_json(line), decode_ndjson(line + b"\n" + line + b"\n")):
        reason = parsed.value_at(0)[1] or ""
        assert "not valid UTF-8 (byte 0xe9 at offset" in reason
    with live_server.client() as c:
        r = c.post("/api/v1/logs", content=line, headers={"content-type": "application/json"})
        assert "not valid UTF-8" in r.json()["errors"][0]["reason"]
