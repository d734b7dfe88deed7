"""Console channel: one line (or one JSON object) per notification on stdout/stderr."""

from __future__ import annotations

import sys
from typing import ClassVar, Literal

import orjson

from loglens.models import Notification
from loglens.notify.base import NotifierSettings, notification_to_dict, title_of


class ConsoleNotifier:
    """Print notifications; useful in development, the demo and as a last-resort channel."""

    name: ClassVar[str] = "console"

    class Config(NotifierSettings):
        """Console settings."""

        stream: Literal["stdout", "stderr"] = "stdout"
        format: Literal["text", "json"] = "text"

    def __init__(self, config: Config) -> None:
        self.config = config

    async def send(self, notification: Notification) -> None:
        """Write the notification and flush, so it shows up immediately."""
        out = sys.stdout if self.config.stream == "stdout" else sys.stderr
        if self.config.format == "json":
            line = orjson.dumps(notification_to_dict(notification)).decode()
        else:
            line = f"{title_of(notification)}: {notification.alert.summary}"
        print(line, file=out, flush=True)
