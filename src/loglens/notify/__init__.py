"""Notifications: plugin protocol, entry-point registry, built-in channels and the durable outbox.

```
Alert transition ─► NotificationService.submit() ─► outbox row (DuckDB, idempotency key)
                                                      │
                      per-channel worker (asyncio) ◄──┘ retries, backoff + jitter, Retry-After
                                │
                                ▼
                     plugin.send(Notification)   (console, webhook, slack, email, third-party)
```
Every channel type, built-in or third-party, is found through the entry-point group
`loglens.notifiers`, so the plugin path is the only path.
"""

from loglens.notify.base import Notifier, NotifierSettings

__all__ = ["Notifier", "NotifierSettings"]
