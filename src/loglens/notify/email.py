"""Email channel: SMTP (stdlib smtplib in a worker thread), optional STARTTLS or implicit TLS.

Each message is multipart/alternative: a plain-text part and an HTML part in which every field
is HTML-escaped (alert summaries can quote log lines, which are attacker-controlled text).
SMTP 4xx replies and connection problems are transient; 5xx replies and auth failures permanent.
"""

from __future__ import annotations

import asyncio
import html
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import make_msgid
from typing import ClassVar

from pydantic import Field

from loglens.errors import PermanentNotifierError, TransientNotifierError
from loglens.models import Notification
from loglens.notify.base import (
    FALLBACK_TIMEOUT_SECONDS,
    NotifierSettings,
    color_of,
    detail_lines,
    render_text,
    resolve_secret,
    title_of,
)


class EmailNotifier:
    """Send notifications by SMTP."""

    name: ClassVar[str] = "email"

    class Config(NotifierSettings):
        """SMTP settings. The password is read from the env var named by password_env."""

        host: str = "127.0.0.1"
        port: int = Field(25, ge=1, le=65535)
        from_addr: str = Field("loglens@localhost", min_length=3)
        to: list[str] = Field(min_length=1, description="Recipients.")
        starttls: bool = Field(False, description="Upgrade the connection with STARTTLS.")
        ssl: bool = Field(False, description="Implicit TLS (SMTPS, usually port 465).")
        verify_tls: bool = Field(True, description="Check the server certificate.")
        ca_file: str | None = Field(None, description="CA bundle to trust instead of the system one.")
        username: str | None = None
        password_env: str | None = Field(None, description="Name of the env var holding the password.")
        subject_prefix: str = "[loglens]"
        timeout_seconds: float | None = Field(
            None, gt=0, description="Per-attempt timeout; at most outbox.timeout_seconds (None: that one)."
        )

    def __init__(self, config: Config) -> None:
        self.config = config

    def message(self, n: Notification) -> EmailMessage:
        """The multipart/alternative message for `n`."""
        cfg = self.config
        msg = EmailMessage()
        msg["Subject"] = f"{cfg.subject_prefix} {title_of(n)}".strip()
        msg["From"] = cfg.from_addr
        msg["To"] = ", ".join(cfg.to)
        msg["Message-ID"] = make_msgid(idstring=n.id, domain="loglens")
        msg["X-Loglens-Notification-Id"] = n.id
        msg.set_content(render_text(n) + "\n")
        msg.add_alternative(self.html(n), subtype="html")
        return msg

    def html(self, n: Notification) -> str:
        """The HTML part; every value is escaped."""
        e = html.escape
        rows = "".join(f"<tr><th align='left'>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in detail_lines(n))
        return (
            "<!doctype html><html><body>"
            f"<h2 style='color:{e(color_of(n))}'>{e(title_of(n))}</h2>"
            f"<p>{e(n.alert.summary)}</p><table>{rows}</table>"
            "</body></html>\n"
        )

    def _tls_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.config.ca_file)
        if not self.config.verify_tls:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def _deliver(self, msg: EmailMessage, password: str | None) -> None:
        cfg = self.config
        smtp: smtplib.SMTP
        if cfg.ssl:
            smtp = smtplib.SMTP_SSL(
                cfg.host, cfg.port, timeout=cfg.timeout_seconds or FALLBACK_TIMEOUT_SECONDS, context=self._tls_context()
            )
        else:
            smtp = smtplib.SMTP(cfg.host, cfg.port, timeout=cfg.timeout_seconds or FALLBACK_TIMEOUT_SECONDS)
        with smtp:
            if cfg.starttls and not cfg.ssl:
                smtp.starttls(context=self._tls_context())
                smtp.ehlo()
            if cfg.username:
                smtp.login(cfg.username, password or "")
            smtp.send_message(msg)

    async def send(self, notification: Notification) -> None:
        """Build the message and hand it to the SMTP server from a worker thread."""
        password = resolve_secret(None, self.config.password_env, "email password")
        msg = self.message(notification)
        where = f"smtp://{self.config.host}:{self.config.port}"
        try:
            await asyncio.to_thread(self._deliver, msg, password)
        except smtplib.SMTPAuthenticationError as exc:
            raise PermanentNotifierError(f"{where}: authentication failed ({exc.smtp_code})") from None
        except smtplib.SMTPNotSupportedError as exc:
            raise PermanentNotifierError(f"{where}: {exc}") from None
        except smtplib.SMTPRecipientsRefused as exc:
            codes = sorted({code for code, _ in exc.recipients.values()})
            err = f"{where}: recipients refused {sorted(exc.recipients)} (codes {codes})"
            if all(400 <= c < 500 for c in codes):
                raise TransientNotifierError(err) from None
            raise PermanentNotifierError(err) from None
        except smtplib.SMTPResponseException as exc:
            text = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
            err = f"{where}: SMTP {exc.smtp_code} {text}"
            if 400 <= exc.smtp_code < 500:
                raise TransientNotifierError(err) from None
            raise PermanentNotifierError(err) from None
        except ssl.SSLError as exc:
            raise PermanentNotifierError(f"{where}: TLS error: {exc.reason or exc}") from None
        except (smtplib.SMTPException, OSError) as exc:
            raise TransientNotifierError(f"{where}: {type(exc).__name__}: {exc}") from None
