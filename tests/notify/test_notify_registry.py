"""Plugin discovery, config validation with keyed errors, and the shared notification helpers."""

from __future__ import annotations

from datetime import timedelta
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from loglens.config import NotifierConfig, load_settings
from loglens.errors import ConfigError, PermanentNotifierError
from loglens.models import Notification
from loglens.notify import registry
from loglens.notify.base import (
    Notifier,
    format_duration,
    notification_from_dict,
    notification_id,
    notification_to_dict,
    redact_url,
    render_text,
    resolve_secret,
    sample_notification,
)
from loglens.notify.console import ConsoleNotifier
from loglens.notify.email import EmailNotifier
from loglens.notify.slack import SlackNotifier
from loglens.notify.webhook import WebhookNotifier


def test_builtins_load_through_the_same_entry_points() -> None:
    found = registry.available()
    for name, cls in [
        ("console", ConsoleNotifier),
        ("webhook", WebhookNotifier),
        ("slack", SlackNotifier),
        ("email", EmailNotifier),
    ]:
        assert found[name].load() is cls and cls.name == name
        assert isinstance(cls(cls.Config.model_validate(_minimal(name))), Notifier)


def _minimal(name: str) -> dict[str, object]:
    return {
        "console": {},
        "webhook": {"url": "http://127.0.0.1:1/x"},
        "slack": {"webhook_url_env": "X"},
        "email": {"to": ["a@example.com"]},
    }[name]


def test_unknown_type_names_the_key_and_lists_known_types() -> None:
    with pytest.raises(ConfigError) as info:
        registry.build(NotifierConfig(name="pager", type="pagerduty"), 2)
    (issue,) = info.value.issues
    assert issue.key == "notifiers[2].type"
    assert "unknown notifier type 'pagerduty'" in issue.message
    assert "built-in: console, email, slack, webhook; installed plugins: example" in issue.message


def test_invalid_settings_point_at_file_line_and_key(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        "notifiers:\n"
        "  - name: ok\n"
        "    type: console\n"
        "  - name: hook\n"
        "    type: webhook\n"
        "    settings:\n"
        "      urll: http://127.0.0.1/x\n"
        "  - name: mail\n"
        "    type: email\n"
        "    settings:\n"
        "      to: []\n"
        "      port: 70000\n"
    )
    settings = load_settings(cfg)
    with pytest.raises(ConfigError) as info:
        registry.build_all(settings)
    issues = {i.key: i for i in info.value.issues}
    assert set(issues) == {
        "notifiers[1].settings.urll",
        "notifiers[1].settings.url",
        "notifiers[2].settings.to",
        "notifiers[2].settings.port",
    }
    assert issues["notifiers[1].settings.urll"].line == 7
    assert (
        "unknown key for notifier type 'webhook' (allowed: url, secret" in issues["notifiers[1].settings.urll"].message
    )
    assert issues["notifiers[1].settings.url"].line == 6  # missing: points at the settings block
    assert issues["notifiers[2].settings.port"].line == 12
    assert str(issues["notifiers[2].settings.port"]).startswith(f"{cfg.resolve()}:12: notifiers[2].settings.port:")


def test_disabled_channels_are_not_built(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("notifiers:\n  - {name: off, type: nonexistent, enabled: false}\n  - {name: c, type: console}\n")
    assert list(registry.build_all(load_settings(cfg))) == ["c"]


def test_broken_plugins_are_config_errors(monkeypatch) -> None:
    eps = {
        "notaplugin": EntryPoint("notaplugin", "loglens.models:Alert", registry.GROUP),
        "missing": EntryPoint("missing", "loglens_no_such_module:Thing", registry.GROUP),
    }
    monkeypatch.setattr(registry, "available", lambda: eps)
    with pytest.raises(ConfigError, match="is not a notifier plugin"):
        registry.load_class("notaplugin")
    with pytest.raises(ConfigError, match="failed to load: No module named"):
        registry.load_class("missing")


def test_notification_round_trip_and_idempotency_key(alert_factory) -> None:
    alert = alert_factory()
    resolved = alert_factory(state="resolved", resolved_at=alert.started_at + timedelta(minutes=5))
    n = Notification(
        notification_id(resolved, "resolved", "hook"), "hook", "resolved", resolved, alert.started_at, 300.0
    )
    assert notification_from_dict(notification_to_dict(n)) == n
    assert notification_id(alert, "firing", "hook") == notification_id(alert, "firing", "hook")
    assert (
        len(
            {
                notification_id(alert, "firing", "hook"),
                notification_id(alert, "firing", "mail"),
                notification_id(resolved, "resolved", "hook"),
            }
        )
        == 3
    )
    text = render_text(n)
    assert text.splitlines()[0] == "[RESOLVED] critical error_rate on checkout"
    assert "Fired for: 5m 0s" in text and "label env: test" in text


def test_small_helpers(monkeypatch) -> None:
    assert (
        format_duration(None) == "unknown" and format_duration(59.6) == "1m 0s" and format_duration(7322) == "2h 2m 2s"
    )
    assert (
        redact_url("https://user:pw@hooks.example.com:8443/services/T0/B1/xyz?token=1")
        == "https://hooks.example.com:8443"
    )
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    with pytest.raises(PermanentNotifierError, match="NOT_SET_ANYWHERE is not set"):
        resolve_secret(None, "NOT_SET_ANYWHERE", "thing")
    assert resolve_secret(None, None, "thing") is None
    sample = sample_notification("ops")
    assert sample.kind == "test" and sample.channel == "ops" and "'ops'" in sample.alert.summary


async def _send_console(cfg: ConsoleNotifier.Config, n: Notification) -> None:
    await ConsoleNotifier(cfg).send(n)


@pytest.mark.anyio
async def test_console_text_and_json(capsys, alert_factory) -> None:
    n = sample_notification("c")
    await _send_console(ConsoleNotifier.Config(), n)
    await _send_console(ConsoleNotifier.Config(stream="stderr", format="json"), n)
    out, err = capsys.readouterr()
    assert out.startswith("[TEST] warning test on loglens: Test notification")
    assert '"kind":"test"' in err and '"channel":"c"' in err


def test_plugin_errors_without_a_readable_config_file_have_no_line(tmp_path: Path) -> None:
    cfg = tmp_path / "gone.yaml"
    cfg.write_text("notifiers:\n  - {name: h, type: webhook}\n")
    settings = load_settings(cfg)
    cfg.unlink()
    with pytest.raises(ConfigError) as info:
        registry.build_all(settings)
    assert [(i.key, i.line) for i in info.value.issues] == [("notifiers[0].settings.url", None)]
