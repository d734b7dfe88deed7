"""Email channel against a real aiosmtpd SMTP server (plain, STARTTLS + AUTH, implicit TLS)."""

from __future__ import annotations

import email
import email.policy
import ssl
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from notify_receivers import free_port

from loglens.errors import PermanentNotifierError, TransientNotifierError
from loglens.models import Notification
from loglens.notify.base import notification_id
from loglens.notify.email import EmailNotifier

pytestmark = pytest.mark.anyio


class Sink:
    """aiosmtpd handler keeping every message; recipients starting with bad/later are refused."""

    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []
        self.envelopes: list[Any] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options) -> str:
        if address.startswith("bad"):
            return "550 5.1.1 no such user"
        if address.startswith("later"):
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope) -> str:
        self.envelopes.append(envelope)
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        return "250 Message accepted"


class Auth:
    def __init__(self) -> None:
        self.logins: list[str] = []

    def __call__(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        if isinstance(auth_data, LoginPassword) and auth_data.password == b"pa55word":
            self.logins.append(auth_data.login.decode())
            return AuthResult(success=True)
        return AuthResult(success=False, handled=False)


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def _server_ctx(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    return ctx


@pytest.fixture
def smtp() -> Iterator[tuple[Sink, int]]:
    sink = Sink()
    port = free_port()
    ctl = Controller(sink, hostname="127.0.0.1", port=port)
    ctl.start()
    yield sink, port
    ctl.stop()


@pytest.fixture
def smtp_starttls(ca: trustme.CA) -> Iterator[tuple[Sink, Auth, int]]:
    sink, auth = Sink(), Auth()
    port = free_port()
    ctl = Controller(
        sink,
        hostname="127.0.0.1",
        port=port,
        tls_context=_server_ctx(ca),
        require_starttls=True,
        authenticator=auth,
        auth_require_tls=True,
    )
    ctl.start()
    yield sink, auth, port
    ctl.stop()


def _note(alert, kind="firing", duration=None) -> Notification:
    return Notification(notification_id(alert, kind, "mail"), "mail", kind, alert, alert.started_at, duration)


def _parts(msg: email.message.EmailMessage) -> dict[str, str]:
    return {part.get_content_type(): part.get_content() for part in msg.iter_parts()}


async def test_email_multipart_with_every_field_escaped(smtp, alert_factory) -> None:
    sink, port = smtp
    mailer = EmailNotifier(EmailNotifier.Config(port=port, to=["ops@example.com", "dev@example.com"]))
    alert = alert_factory(summary="<script>alert(1)</script> & 'quotes'", labels={"<k>": "<v>"})
    n = _note(alert)
    await mailer.send(n)
    (msg,) = sink.messages
    assert msg.get_content_type() == "multipart/alternative"
    assert msg["Subject"] == "[loglens] [FIRING] critical error_rate on checkout"
    assert msg["X-Loglens-Notification-Id"] == n.id
    assert sorted(sink.envelopes[0].rcpt_tos) == ["dev@example.com", "ops@example.com"]
    parts = _parts(msg)
    assert set(parts) == {"text/plain", "text/html"}
    assert "Summary: <script>alert(1)</script> & 'quotes'" in parts["text/plain"]
    html_part = parts["text/html"]
    assert "<script>" not in html_part and "<k>" not in html_part
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &#x27;quotes&#x27;" in html_part
    assert "&lt;k&gt;" in html_part and "#d32f2f" in html_part


async def test_email_resolved_says_how_long_it_fired(smtp, alert_factory) -> None:
    sink, port = smtp
    mailer = EmailNotifier(EmailNotifier.Config(port=port, to=["ops@example.com"], subject_prefix="[prod]"))
    a = alert_factory(state="resolved")
    a = alert_factory(state="resolved", resolved_at=a.started_at + timedelta(hours=1, seconds=5))
    await mailer.send(_note(a, "resolved", 3605.0))
    msg = sink.messages[0]
    assert msg["Subject"] == "[prod] [RESOLVED] critical error_rate on checkout"
    assert "Fired for: 1h 5s" in _parts(msg)["text/plain"]


async def test_email_starttls_and_auth_with_password_from_env(
    smtp_starttls, ca_file, alert_factory, monkeypatch
) -> None:
    sink, auth, port = smtp_starttls
    monkeypatch.setenv("SMTP_PASS", "pa55word")
    cfg = EmailNotifier.Config(
        port=port, to=["ops@example.com"], starttls=True, ca_file=ca_file, username="loglens", password_env="SMTP_PASS"
    )
    await EmailNotifier(cfg).send(_note(alert_factory()))
    assert auth.logins == ["loglens"] and len(sink.messages) == 1


async def test_email_wrong_password_is_permanent_and_not_echoed(
    smtp_starttls, ca_file, alert_factory, monkeypatch
) -> None:
    _, _, port = smtp_starttls
    monkeypatch.setenv("SMTP_PASS", "wrong-password")
    cfg = EmailNotifier.Config(
        port=port, to=["ops@example.com"], starttls=True, ca_file=ca_file, username="loglens", password_env="SMTP_PASS"
    )
    with pytest.raises(PermanentNotifierError, match="authentication failed") as info:
        await EmailNotifier(cfg).send(_note(alert_factory()))
    assert "wrong-password" not in str(info.value)


async def test_email_without_starttls_is_refused_by_a_tls_only_server(smtp_starttls, alert_factory) -> None:
    _, _, port = smtp_starttls
    with pytest.raises(PermanentNotifierError, match="530"):
        await EmailNotifier(EmailNotifier.Config(port=port, to=["ops@example.com"])).send(_note(alert_factory()))


async def test_email_untrusted_certificate_is_a_tls_error(smtp_starttls, alert_factory) -> None:
    _, _, port = smtp_starttls
    cfg = EmailNotifier.Config(port=port, to=["ops@example.com"], starttls=True)
    with pytest.raises(PermanentNotifierError, match="TLS error"):
        await EmailNotifier(cfg).send(_note(alert_factory()))
    # verify_tls: false accepts it (for self-signed internal relays)
    sink, _, _ = smtp_starttls
    await EmailNotifier(cfg.model_copy(update={"verify_tls": False})).send(_note(alert_factory()))
    assert len(sink.messages) == 1


async def test_email_implicit_tls(ca, ca_file, alert_factory) -> None:
    sink, port = Sink(), free_port()
    ctl = Controller(sink, hostname="127.0.0.1", port=port, ssl_context=_server_ctx(ca))
    ctl.start()
    try:
        cfg = EmailNotifier.Config(port=port, to=["ops@example.com"], ssl=True, ca_file=ca_file)
        await EmailNotifier(cfg).send(_note(alert_factory()))
    finally:
        ctl.stop()
    assert len(sink.messages) == 1


@pytest.mark.parametrize(
    ("rcpt", "error"), [("bad@example.com", PermanentNotifierError), ("later@example.com", TransientNotifierError)]
)
async def test_email_refused_recipient(smtp, alert_factory, rcpt, error) -> None:
    _, port = smtp
    with pytest.raises(error, match="recipients refused"):
        await EmailNotifier(EmailNotifier.Config(port=port, to=[rcpt])).send(_note(alert_factory()))


async def test_email_connection_refused_is_transient(alert_factory) -> None:
    cfg = EmailNotifier.Config(port=free_port(), to=["ops@example.com"], timeout_seconds=2)
    with pytest.raises(TransientNotifierError, match="ConnectionRefusedError"):
        await EmailNotifier(cfg).send(_note(alert_factory()))


async def test_email_missing_password_env_is_permanent(smtp, alert_factory, monkeypatch) -> None:
    _, port = smtp
    monkeypatch.delenv("SMTP_PASS_MISSING", raising=False)
    cfg = EmailNotifier.Config(port=port, to=["a@example.com"], username="u", password_env="SMTP_PASS_MISSING")
    with pytest.raises(PermanentNotifierError, match="SMTP_PASS_MISSING is not set"):
        await EmailNotifier(cfg).send(_note(alert_factory()))
