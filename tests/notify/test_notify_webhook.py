"""Webhook and Slack channels against a real loopback HTTP receiver."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from notify_receivers import Reply, free_port

from loglens.errors import PermanentNotifierError, TransientNotifierError
from loglens.models import Notification
from loglens.notify.base import COLORS, notification_id
from loglens.notify.slack import SlackNotifier, slack_escape
from loglens.notify.webhook import SIGNATURE_HEADER, WebhookNotifier, parse_retry_after, sign

pytestmark = pytest.mark.anyio


def _note(alert, kind="firing", channel="hook", duration=None) -> Notification:
    return Notification(notification_id(alert, kind, channel), channel, kind, alert, alert.started_at, duration)


async def test_webhook_posts_signed_json(receiver, alert_factory, monkeypatch) -> None:
    monkeypatch.setenv("HOOK_SECRET", "s3cr3t-key")
    hook = WebhookNotifier(
        WebhookNotifier.Config(url=receiver.url, secret_env="HOOK_SECRET", headers={"X-Team": "ops"})
    )
    n = _note(alert_factory())
    await hook.send(n)
    await hook.aclose()
    (req,) = receiver.wait_for(1)
    assert req.path == "/hook/secret-path-token"
    body = req.json()
    assert body["id"] == n.id and body["kind"] == "firing" and body["channel"] == "hook"
    assert body["alert"]["rule"] == "error_rate" and body["alert"]["started_at"] == "2026-01-02T03:04:05.000Z"
    assert req.headers["idempotency-key"] == n.id
    assert req.headers["x-team"] == "ops"
    expected = "sha256=" + hmac.new(b"s3cr3t-key", req.body, hashlib.sha256).hexdigest()
    assert req.headers[SIGNATURE_HEADER.lower()] == expected == sign("s3cr3t-key", req.body)


async def test_webhook_without_secret_has_no_signature(receiver, alert_factory) -> None:
    hook = WebhookNotifier(WebhookNotifier.Config(url=receiver.url))
    await hook.send(_note(alert_factory()))
    (req,) = receiver.wait_for(1)
    assert SIGNATURE_HEADER.lower() not in req.headers


@pytest.mark.parametrize(
    ("reply", "error", "retry_after"),
    [
        (Reply(500, body=b"boom"), TransientNotifierError, None),
        (Reply(503, {"Retry-After": "7"}), TransientNotifierError, 7.0),
        (Reply(429, {"Retry-After": "2"}), TransientNotifierError, 2.0),
        (Reply(404), PermanentNotifierError, None),
        (Reply(400, body=b"bad payload"), PermanentNotifierError, None),
    ],
)
async def test_webhook_status_mapping(receiver_factory, alert_factory, reply, error, retry_after) -> None:
    r = receiver_factory(default=reply)
    hook = WebhookNotifier(WebhookNotifier.Config(url=r.url))
    with pytest.raises(error) as info:
        await hook.send(_note(alert_factory()))
    assert f"HTTP {reply.status}" in str(info.value)
    assert "secret-path-token" not in str(info.value)  # URL paths carry tokens: never in errors
    if error is TransientNotifierError:
        assert info.value.retry_after == retry_after


async def test_webhook_connection_refused_is_transient(alert_factory) -> None:
    url = f"http://127.0.0.1:{free_port()}/hook/token-in-path"
    hook = WebhookNotifier(WebhookNotifier.Config(url=url))
    with pytest.raises(TransientNotifierError) as info:
        await hook.send(_note(alert_factory()))
    assert "cannot reach http://127.0.0.1" in str(info.value)
    assert "token-in-path" not in str(info.value)


async def test_webhook_timeout_is_transient(receiver_factory, alert_factory) -> None:
    r = receiver_factory(default=Reply(delay=1.0))
    hook = WebhookNotifier(WebhookNotifier.Config(url=r.url, timeout_seconds=0.1))
    with pytest.raises(TransientNotifierError, match="timed out"):
        await hook.send(_note(alert_factory()))


async def test_webhook_missing_secret_env_is_permanent(receiver, alert_factory, monkeypatch) -> None:
    monkeypatch.delenv("NOPE_SECRET", raising=False)
    hook = WebhookNotifier(WebhookNotifier.Config(url=receiver.url, secret_env="NOPE_SECRET"))
    with pytest.raises(PermanentNotifierError, match="NOPE_SECRET is not set"):
        await hook.send(_note(alert_factory()))


def test_webhook_config_rejects_reserved_headers_and_hides_secret() -> None:
    with pytest.raises(ValueError, match="set by loglens"):
        WebhookNotifier.Config(url="http://127.0.0.1:1/x", headers={"Content-Type": "text/plain"})
    cfg = WebhookNotifier.Config(url="http://127.0.0.1:1/x", secret="hunter22")
    assert "hunter22" not in repr(cfg) and "hunter22" not in str(cfg.model_dump())


def test_parse_retry_after_forms() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("-5") == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    when = datetime(2030, 1, 1, tzinfo=UTC)
    now = (when - timedelta(seconds=42)).timestamp()
    assert parse_retry_after(format_datetime(when, usegmt=True), now=now) == pytest.approx(42)


@pytest.mark.parametrize(
    ("severity", "kind", "color"),
    [("critical", "firing", "#d32f2f"), ("warning", "firing", "#f9a825"), ("critical", "resolved", COLORS["resolved"])],
)
async def test_slack_payload_colour_by_severity(receiver, alert_factory, monkeypatch, severity, kind, color) -> None:
    monkeypatch.setenv("SLACK_URL", receiver.url)
    slack = SlackNotifier(SlackNotifier.Config(webhook_url_env="SLACK_URL", channel="#ops", username="loglens"))
    alert = alert_factory(severity=severity, summary="5xx <b>&</b> <!channel>")
    if kind == "resolved":
        alert = alert_factory(severity=severity, state="resolved", resolved_at=alert.started_at + timedelta(seconds=75))
    await slack.send(_note(alert, kind, "slack", 75.0 if kind == "resolved" else None))
    await slack.aclose()
    body = receiver.wait_for(1)[0].json()
    att = body["attachments"][0]
    assert att["color"] == color
    assert body["channel"] == "#ops" and body["username"] == "loglens"
    fields = {f["title"]: f["value"] for f in att["fields"]}
    assert fields["Service"] == "checkout" and fields["Severity"] == severity
    if kind == "resolved":
        assert att["title"].startswith("[RESOLVED]") and fields["Fired for"] == "1m 15s"
    else:
        # Slack control characters are escaped so a log line cannot @-mention the channel.
        assert att["text"] == "5xx &lt;b&gt;&amp;&lt;/b&gt; &lt;!channel&gt;"
        assert "<!channel>" not in receiver.requests[0].body.decode()


async def test_slack_errors_never_show_the_webhook_url(receiver_factory, alert_factory) -> None:
    r = receiver_factory(default=Reply(403, body=b"invalid_token"))
    slack = SlackNotifier(SlackNotifier.Config(webhook_url=r.url))
    with pytest.raises(PermanentNotifierError) as info:
        await slack.send(_note(alert_factory(), channel="slack"))
    assert "HTTP 403" in str(info.value) and "secret-path-token" not in str(info.value)


def test_slack_config_needs_exactly_one_url() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        SlackNotifier.Config()
    with pytest.raises(ValueError, match="exactly one"):
        SlackNotifier.Config(webhook_url="http://x/y", webhook_url_env="X")
    assert slack_escape("a<b>&c") == "a&lt;b&gt;&amp;c"
