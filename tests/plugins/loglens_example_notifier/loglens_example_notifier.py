"""Example third-party loglens notifier: appends each notification as one JSON line to a file.

It uses only the public plugin protocol: `name`, a pydantic `Config`, `__init__(config)` and
`async send(notification)`. Registered in its pyproject.toml under `loglens.notifiers`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict


class ExampleNotifier:
    """Write notifications to `path`, one JSON object per line."""

    name: ClassVar[str] = "example"

    class Config(BaseModel):
        """Example settings."""

        model_config = ConfigDict(extra="forbid")
        path: Path
        tag: str = "example"

    def __init__(self, config: Config) -> None:
        self.config = config

    async def send(self, notification: Any) -> None:
        """Append the notification's id, kind, channel and alert summary."""
        line = {
            "tag": self.config.tag,
            "id": notification.id,
            "kind": notification.kind,
            "channel": notification.channel,
            "rule": notification.alert.rule,
            "service": notification.alert.service,
            "summary": notification.alert.summary,
        }
        with self.config.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(line) + "\n")
