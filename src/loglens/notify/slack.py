"""Slack channel: an incoming-webhook message with one attachment coloured by severity.

The webhook URL is itself the credential, so it is a secret (given as `${ENV}` or by env var
name) and never appears in errors, logs or the API.
"""

from __future__ import annotations

from typing import Any, ClassVar

import orjson
from pydantic import Field, SecretStr, model_validator

from loglens.models import Notification
from loglens.notify.base import (
    FALLBACK_TIMEOUT_SECONDS,
    NotifierSettings,
    color_of,
    detail_lines,
    resolve_secret,
    title_of,
)
from loglens.notify.webhook import HttpPoster


def slack_escape(text: str) -> str:
    """Slack's mrkdwn escaping: only &, < and > are control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class SlackNotifier:
    """Post to a Slack incoming webhook."""

    name: ClassVar[str] = "slack"

    class Config(NotifierSettings):
        """Slack settings: exactly one of webhook_url / webhook_url_env."""

        webhook_url: SecretStr | None = Field(None, description="Incoming-webhook URL (use ${ENV}).")
        webhook_url_env: str | None = Field(None, description="Name of the env var holding the URL.")
        channel: str | None = Field(None, description="Override the webhook's default channel.")
        username: str | None = None
        icon_emoji: str | None = None
        timeout_seconds: float | None = Field(
            None, gt=0, description="Per-attempt timeout; at most outbox.timeout_seconds (None: that one)."
        )

        @model_validator(mode="after")
        def _one_url(self) -> SlackNotifier.Config:
            if (self.webhook_url is None) == (self.webhook_url_env is None):
                raise ValueError("set exactly one of webhook_url or webhook_url_env")
            return self

    def __init__(self, config: Config) -> None:
        self.config = config
        self._http = HttpPoster(config.timeout_seconds or FALLBACK_TIMEOUT_SECONDS)

    def payload(self, n: Notification) -> dict[str, Any]:
        """The incoming-webhook JSON: fallback text plus one coloured attachment with fields."""
        title = slack_escape(title_of(n))
        fields = [
            {"title": slack_escape(k), "value": slack_escape(v), "short": k not in ("Summary", "Notification id")}
            for k, v in detail_lines(n)
        ]
        body: dict[str, Any] = {
            "text": f"{title}: {slack_escape(n.alert.summary)}",
            "attachments": [
                {
                    "color": color_of(n),
                    "title": title,
                    "text": slack_escape(n.alert.summary),
                    "fields": fields,
                    "footer": "loglens",
                    "ts": int(n.created_at.timestamp()),
                }
            ],
        }
        for key in ("channel", "username", "icon_emoji"):
            value = getattr(self.config, key)
            if value:
                body[key] = value
        return body

    async def send(self, notification: Notification) -> None:
        """POST the payload to the webhook URL."""
        url = resolve_secret(self.config.webhook_url, self.config.webhook_url_env, "slack webhook_url")
        assert url is not None  # the Config validator guarantees one source
        await self._http.post(url, orjson.dumps(self.payload(notification)), {"Content-Type": "application/json"})

    async def aclose(self) -> None:
        """Release the HTTP client."""
        await self._http.aclose()
