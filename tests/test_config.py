"""config.yaml loading: defaults, env interpolation, and file:line errors for every bad case."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from loglens.config import Settings, load_settings, mask_secrets, parse_settings
from loglens.errors import ConfigError

DATA = Path(__file__).parent / "data" / "config"
REPO = Path(__file__).resolve().parents[1]


def issues_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    return [str(i) for i in info.value.issues]


def test_repo_config_is_valid_and_matches_defaults() -> None:
    settings = load_settings(REPO / "config.yaml")
    assert settings.server.host == "127.0.0.1"
    assert settings.server.api_token is None  # ${LOGLENS_API_TOKEN:-} with the variable unset
    assert settings.alerts.rules.error_rate.threshold == 0.10
    assert settings.alerts.rules.absence.threshold_seconds == 120
    assert settings.alerts.rules.volume.threshold == 100
    assert settings.schemas.log == REPO / "schemas" / "log_schema.yaml"
    assert settings.storage.path == REPO / "data" / "loglens.duckdb"


def test_wrong_type_names_line_and_key() -> None:
    (msg,) = issues_of(DATA / "wrong_type.yaml")
    assert msg.startswith(f"{DATA / 'wrong_type.yaml'}:3: server.port: ")
    assert "integer" in msg and "'eighty'" in msg


def test_unknown_key_suggests_the_close_name() -> None:
    (msg,) = issues_of(DATA / "unknown_key.yaml")
    assert ":4: storage.retention_dayz: unknown key (did you mean 'retention_days'?)" in msg


def test_unknown_section_suggests_section() -> None:
    (msg,) = issues_of(DATA / "unknown_section.yaml")
    assert ":3: alertz: unknown key (did you mean 'alerts'?)" in msg


def test_bad_yaml_syntax_gives_line() -> None:
    (msg,) = issues_of(DATA / "bad_yaml.yaml")
    assert ":3: invalid YAML" in msg


def test_out_of_range_threshold() -> None:
    (msg,) = issues_of(DATA / "bad_threshold.yaml")
    assert ":4: alerts.rules.error_rate.threshold: Input should be less than or equal to 1" in msg


def test_missing_file() -> None:
    (msg,) = issues_of(DATA / "does_not_exist.yaml")
    assert "does_not_exist.yaml: file not found" in msg


def test_missing_env_var_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOGLENS_TEST_UNSET_VAR_XYZ", raising=False)
    (msg,) = issues_of(DATA / "missing_env.yaml")
    assert "server.api_token: environment variable LOGLENS_TEST_UNSET_VAR_XYZ is not set" in msg


def test_env_interpolation_with_default_and_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LL_PORT", "9123")
    s = parse_settings("server:\n  port: ${LL_PORT}\n  host: ${LL_HOST:-0.0.0.0}\n")
    assert s.server.port == 9123 and s.server.host == "0.0.0.0"


def test_multiple_errors_are_all_reported() -> None:
    with pytest.raises(ConfigError) as info:
        parse_settings("server:\n  port: -1\ningest:\n  max_body_bytes: 0\n")
    lines = sorted(i.line or 0 for i in info.value.issues)
    assert lines == [2, 4]


def test_top_level_must_be_mapping() -> None:
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        parse_settings("- a\n- b\n")


def test_duplicate_notifier_names_rejected() -> None:
    text = "notifiers:\n  - {name: a, type: console}\n  - {name: a, type: console}\n"
    with pytest.raises(ConfigError, match="duplicate notifier name"):
        parse_settings(text)


def test_empty_file_gives_defaults() -> None:
    assert parse_settings("") == Settings()


def test_secrets_are_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOK", "s3cret-value")
    s = parse_settings(
        "server:\n  api_token: ${TOK}\nnotifiers:\n  - {name: w, type: webhook, settings: {url: http://x, secret: abc}}\n"
    )
    masked = mask_secrets(s)
    assert masked["server"]["api_token"] == "***"
    assert masked["notifiers"][0]["settings"] == {"url": "***", "secret": "***"}
    assert "s3cret-value" not in repr(masked)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loglens.cli", *args], capture_output=True, text=True, cwd=REPO, timeout=60
    )


def test_check_config_ok_and_errors_exit_2() -> None:
    ok = _cli("check-config", "config.yaml")
    assert ok.returncode == 0 and ok.stdout.strip() == "OK"
    bad = _cli("check-config", str(DATA / "unknown_key.yaml"))
    assert bad.returncode == 2
    assert "did you mean 'retention_days'" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_serve_with_bad_config_exits_2_without_traceback() -> None:
    bad = _cli("serve", "--config", str(DATA / "wrong_type.yaml"))
    assert bad.returncode == 2
    assert ":3: server.port:" in bad.stderr
    assert "Traceback" not in bad.stderr
