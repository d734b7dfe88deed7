"""Webhook channel: JSON POST with an optional HMAC-SHA256 signature; also the HTTP core of Slack.

Status handling: 2xx delivered; 408/425/429/5xx transient (Retry-After honoured); any other 4xx
permanent. Network errors and timeouts are transient. Error messages name the receiver as
`scheme://host:port` only, because webhook paths often carry tokens.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import hmac
import time
from typing import Any, ClassVar

import httpx
import orjson
from pydantic import AnyHttpUrl, Field, SecretStr, field_validator

from loglens import __version__
from loglens.errors import PermanentNotifierError, TransientNotifierError
from loglens.models import Notification
from loglens.notify.base import (
    FALLBACK_TIMEOUT_SECONDS,
    NotifierSettings,
    notification_to_dict,
    redact_url,
    resolve_secret,
)

SIGNATURE_HEADER = "X-Loglens-Signature"
_TRANSIENT_STATUS = {408, 425, 429}


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date); None when absent/invalid."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def sign(secret: str, body: bytes) -> str:
    """The signature header value: `sha256=<hex HMAC of the raw body>`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class HttpPoster:
    """An httpx client bound to the event loop that first uses it; recreated if the loop changes."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _get(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = httpx.AsyncClient(timeout=self.timeout, follow_redirects=False)
            self._loop = loop
        return self._client

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> None:
        """POST `body`; map the outcome onto the notifier error tree."""
        where = redact_url(url)
        try:
            resp = await self._get().post(url, content=body, headers=headers)
        except httpx.TimeoutException:
            raise TransientNotifierError(f"timed out posting to {where}") from None
        except httpx.TransportError as exc:
            raise TransientNotifierError(f"cannot reach {where}: {type(exc).__name__}: {exc}") from None
        if resp.is_success:
            return
        snippet = resp.text[:200].strip()
        message = f"{where} answered HTTP {resp.status_code}" + (f": {snippet}" if snippet else "")
        if resp.status_code in _TRANSIENT_STATUS or resp.status_code >= 500:
            raise TransientNotifierError(message, retry_after=parse_retry_after(resp.headers.get("retry-after")))
        raise PermanentNotifierError(message)

    async def aclose(self) -> None:
        """Close the client (only from the loop that created it)."""
        if self._client is not None:
            client, self._client = self._client, None
            if self._loop is asyncio.get_running_loop():
                await client.aclose()


class WebhookNotifier:
    """POST each notification as JSON (`notification_to_dict`) to a URL."""

    name: ClassVar[str] = "webhook"

    class Config(NotifierSettings):
        """Webhook settings. Give the signing secret inline as `${ENV}` or by env var name."""

        url: AnyHttpUrl
        secret: SecretStr | None = Field(None, description="HMAC-SHA256 key; prefer secret_env.")
        secret_env: str | None = Field(None, description="Name of the env var holding the HMAC key.")
        headers: dict[str, str] = Field(default_factory=dict, description="Extra request headers.")
        timeout_seconds: float | None = Field(
            None, gt=0, description="Per-attempt timeout; at most outbox.timeout_seconds (None: that one)."
        )

        @field_validator("headers")
        @classmethod
        def _no_reserved(cls, value: dict[str, str]) -> dict[str, str]:
            reserved = {SIGNATURE_HEADER.lower(), "content-type", "idempotency-key"}
            bad = [k for k in value if k.lower() in reserved]
            if bad:
                raise ValueError(f"header(s) {', '.join(bad)} are set by loglens")
            return value

    def __init__(self, config: Config) -> None:
        self.config = config
        self._http = HttpPoster(config.timeout_seconds or FALLBACK_TIMEOUT_SECONDS)

    def body(self, notification: Notification) -> bytes:
        """The exact bytes posted (and signed)."""
        return orjson.dumps(notification_to_dict(notification))

    async def send(self, notification: Notification) -> None:
        """POST the notification; the receiver can dedupe on the Idempotency-Key header."""
        body = self.body(notification)
        headers: dict[str, Any] = {
            **self.config.headers,
            "Content-Type": "application/json",
            "Idempotency-Key": notification.id,
            "User-Agent": f"loglens/{__version__}",
        }
        secret = resolve_secret(self.config.secret, self.config.secret_env, "webhook secret")
        if secret:
            headers[SIGNATURE_HEADER] = sign(secret, body)
        await self._http.post(str(self.config.url), body, headers)

    async def aclose(self) -> None:
        """Release the HTTP client."""
        await self._http.aclose()
