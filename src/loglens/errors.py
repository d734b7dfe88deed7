"""The one exception tree of loglens.

```
LoglensError
├── ConfigError            bad config.yaml (carries file:line issues)            → CLI exit 2 / HTTP 400
├── IngestError            a request body that cannot be taken                    → HTTP 400
│   ├── ParseError         undecodable body (bad gzip, bad JSON shape, ...)       → HTTP 400
│   ├── PayloadTooLarge    body over ingest.max_body_bytes                         → HTTP 413
│   ├── UnsupportedMediaType  a body format the endpoint does not take             → HTTP 415
│   └── RejectedRecord     one record failed the schema (goes to dead-letter)
├── Backpressure           ingest queue full; carries retry_after seconds          → HTTP 429
├── StorageError           the store could not commit; carries retry_after        → HTTP 503
├── ServerBindError        `serve` cannot listen on its host:port                  → CLI exit 2
├── StartupError           `serve`'s app start-up failed (store locked, ...)        → CLI exit 2
└── NotifierError          a notification could not be delivered
    ├── TransientNotifierError   retry later (timeouts, 5xx, 429 + Retry-After)
    └── PermanentNotifierError   give up (4xx, bad config)
```
The API maps these to HTTP codes in one place (`loglens.api.errors.http_error`).
"""

from __future__ import annotations

from dataclasses import dataclass


class LoglensError(Exception):
    """Base of every error loglens raises on purpose."""


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a config file, pointing at the line and the dotted key."""

    file: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class ConfigError(LoglensError):
    """The configuration is invalid; `issues` lists each problem with file and line."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


class ServerBindError(LoglensError):
    """The server cannot listen on its configured address (port busy, address not local, ...)."""


class StartupError(LoglensError):
    """The server's application start-up failed; the message is one line."""


class IngestError(LoglensError):
    """A request body that cannot be ingested as a whole."""


class ParseError(IngestError):
    """The body could not be decoded (compression, encoding or JSON shape)."""


class PayloadTooLarge(IngestError):
    """The body exceeds the configured size limit."""


class UnsupportedMediaType(IngestError):
    """The body is in a format this endpoint does not take (e.g. Loki protobuf)."""


class RejectedRecord(IngestError):
    """A single record failed validation; the reason goes to the dead-letter store."""


class Backpressure(LoglensError):
    """The ingest queue is full; the client should retry after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StorageError(LoglensError):
    """The store failed to commit (disk full, I/O error); nothing was acknowledged."""

    def __init__(self, message: str, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NotifierError(LoglensError):
    """A notification could not be delivered."""


class TransientNotifierError(NotifierError):
    """Delivery failed in a way worth retrying; `retry_after` is the receiver's hint, if any."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentNotifierError(NotifierError):
    """Delivery failed in a way that retrying cannot fix."""


def describe(exc: BaseException) -> str:
    """One line for an unexpected exception: its type and the first line of its message."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
