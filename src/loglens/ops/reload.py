"""Hot reload of config.yaml: SIGHUP, `POST /api/v1/admin/reload`, or (opt-in) a change on disk.

A reload reads and validates the whole new config (YAML, every key, the log schema it names and
every notifier's plugin settings) before anything changes. When valid, the runtime swaps its
settings and log schema (the `swap` callable) and each component's reload hook applies its part (thresholds and rules
in the evaluator thread, channels in the notifier service) — in-flight requests keep the schema
reference they started with, and firing alerts stay as they are. When invalid, nothing changes:
the `file:line` issues are logged, returned to the caller and raised as a `config_reload`
meta-alert that resolves at the next successful reload.

Reload hooks (given by `loglens.runtime`, one per component) are called in two phases:
`hook(new_settings)` prepares and may raise ConfigError to veto the reload; it returns None or
a callable that applies the change (its result is awaited when awaitable). Keys that need a restart (listen
address, store path, queue sizes) keep their running values and are reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio.to_thread

from loglens.config import Settings, load_settings
from loglens.errors import ConfigError, ConfigIssue
from loglens.ops.tasks import cancel_task, start_task
from loglens.ports import MetaAlerts, ReloadApply
from loglens.schema import LogSchema

log = logging.getLogger("loglens.ops.reload")

META_NAME = "config_reload"
ReloadHook = Callable[[Settings], ReloadApply | None]
# Installs a validated config and its compiled log schema in the running server.
Swap = Callable[[Settings, LogSchema], None]

# (section, key) pairs that only take effect on restart: the running values are kept.
RESTART_KEYS = (
    ("server", "host"),
    ("server", "port"),
    ("server", "cors_origins"),  # the CORS middleware is installed when the app is built
    ("storage", "path"),
    ("ingest", "max_queue_logs"),
    ("ingest", "max_batch_logs"),
    ("ingest", "commit_interval_ms"),
    ("ingest", "files"),
    ("protocols", "syslog"),
    ("protocols", "fluent"),
    ("protocols", "tail"),
)


@dataclass
class ReloadResult:
    """Outcome of one reload attempt."""

    ok: bool
    trigger: str
    issues: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    restart_required: list[str] = field(default_factory=list)
    at: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        """The API shape."""
        return {
            "ok": self.ok,
            "trigger": self.trigger,
            "issues": self.issues,
            "changed": self.changed,
            "restart_required": self.restart_required,
            "at": self.at,
        }


def _changed_sections(old: Settings, new: Settings) -> list[str]:
    a, b = old.model_dump(mode="json"), new.model_dump(mode="json")
    out: list[str] = []
    for section in b:
        if isinstance(b[section], dict) and isinstance(a.get(section), dict):
            out.extend(f"{section}.{k}" for k in b[section] if b[section][k] != a[section].get(k))
        elif b[section] != a.get(section):
            out.append(section)
    return sorted(out)


def keep_restart_keys(old: Settings, new: Settings) -> tuple[Settings, list[str]]:
    """`new` with the running values of restart-only keys; also the keys whose file value differs."""
    differ: list[str] = []
    updates: dict[str, Any] = {}
    for section, key in RESTART_KEYS:
        old_sec, new_sec = getattr(old, section), updates.get(section, getattr(new, section))
        if getattr(old_sec, key) != getattr(new_sec, key):
            # a value given by a command-line flag (--port, --data-dir) overrides the file: the file
            # differing from it is expected, not a change that needs a restart
            if f"{section}.{key}" not in old.cli_overrides:
                differ.append(f"{section}.{key}")
            updates[section] = new_sec.model_copy(update={key: getattr(old_sec, key)})
    return new.model_copy(update={**updates, "cli_overrides": old.cli_overrides}), differ


class ReloadManager:
    """Serialises reloads of one app and keeps their history for the API and /metrics."""

    name = "reload"

    def __init__(
        self,
        current: Callable[[], Settings],
        swap: Swap,
        hooks: Sequence[ReloadHook] = (),
        meta: MetaAlerts | None = None,
        loader: Callable[[Path], Settings] = load_settings,
    ) -> None:
        self.current = current
        self.swap = swap
        self.hooks = list(hooks)
        self.meta = meta
        self.loader = loader
        self._lock = asyncio.Lock()
        self.successes = 0
        self.failures = 0
        self.last: ReloadResult | None = None
        self._meta_raised = False
        self._watch_task: asyncio.Task[None] | None = None
        self._sighup = False

    @property
    def last_ok(self) -> bool:
        """False only when the latest reload was rejected."""
        return self.last is None or self.last.ok

    async def reload(self, trigger: str = "api") -> ReloadResult:
        """Validate the config file and, when valid, switch to it atomically."""
        async with self._lock:
            result = await self._reload(trigger)
        self.last = result
        if result.ok:
            self.successes += 1
            log.info(
                "config reloaded",
                extra={"trigger": trigger, "changed": result.changed, "restart_required": result.restart_required},
            )
            if self._meta_raised:
                self._meta_raised = False
                self._meta("resolve_meta", META_NAME)
        else:
            self.failures += 1
            log.error(
                "config reload rejected; keeping the running config",
                extra={"trigger": trigger, "issues": result.issues},
            )
            self._meta_raised = True
            self._meta("raise_meta", META_NAME, "config reload rejected: " + "; ".join(result.issues)[:500], "warning")
        return result

    async def _reload(self, trigger: str) -> ReloadResult:
        old = self.current()
        path = old.config_path
        if path is None:
            return ReloadResult(False, trigger, ["no config file: the server was started without --config"])
        try:
            loaded = await anyio.to_thread.run_sync(self.loader, path)
            new, restart = keep_restart_keys(old, loaded)
            schema = await anyio.to_thread.run_sync(self._schema, new)
            applies = [hook(new) for hook in self.hooks]
        except ConfigError as exc:
            return ReloadResult(False, trigger, [str(i) for i in exc.issues])
        except Exception as exc:  # a component could not prepare: treat like an invalid config
            log.exception("reload hook failed to prepare")
            return ReloadResult(False, trigger, [f"{type(exc).__name__}: {exc}"])
        # Valid: from here on nothing may veto; swap the shared references, then let components apply.
        self.swap(new, schema)
        for apply in applies:
            if apply is None:
                continue
            try:
                result = apply()
                if inspect.isawaitable(result):
                    await result
            except Exception:  # the config is valid; a component failing to apply is its own bug
                log.exception("reload hook failed to apply")
        return ReloadResult(True, trigger, changed=_changed_sections(old, new), restart_required=restart)

    @staticmethod
    def _schema(settings: Settings) -> LogSchema:
        try:
            return LogSchema.from_file(
                settings.schemas.log,
                allowed_lateness_s=settings.ingest.allowed_lateness_seconds,
                max_future_skew_s=settings.ingest.max_future_skew_seconds,
                raw_limit=settings.ingest.dead_letter_raw_limit,
            )
        except ConfigError as exc:
            # name the schema file in every issue so the caller knows which file to fix
            raise ConfigError(
                [
                    ConfigIssue(
                        i.file if i.file != "log schema" else str(settings.schemas.log), i.line, i.key, i.message
                    )
                    for i in exc.issues
                ]
            ) from None

    def _meta(self, method: str, *args: str) -> None:
        if self.meta is None:
            return
        try:
            getattr(self.meta, method)(*args)
        except Exception:
            log.exception("meta-alert hook failed", extra={"method": method})

    # ---- component ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Runtime component: SIGHUP handler and the optional file watch (`server.watch_config`)."""
        self.install_sighup()
        server = self.current().server
        if server.watch_config:
            self.start_watch(server.watch_interval_seconds)

    async def stop(self) -> None:
        """Runtime component: stop watching and listening for SIGHUP."""
        self.remove_sighup()
        await self.stop_watch()

    # ---- triggers ------------------------------------------------------------------------------
    def request(self, trigger: str) -> asyncio.Task[ReloadResult]:
        """Start a reload in the background (signal handler, file watch)."""
        return asyncio.get_running_loop().create_task(self.reload(trigger))

    def install_sighup(self) -> bool:
        """Reload on SIGHUP; only possible when the loop runs in the main thread (`loglens serve`)."""
        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGHUP, self.request, "SIGHUP")
        except (ValueError, RuntimeError, NotImplementedError, AttributeError):
            return False
        self._sighup = True
        return True

    def remove_sighup(self) -> None:
        """Undo `install_sighup`."""
        if self._sighup:
            with contextlib.suppress(ValueError, RuntimeError):
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            self._sighup = False

    def start_watch(self, interval_s: float) -> None:
        """Poll the config file's mtime/size and reload when it changes (opt-in: server.watch_config)."""
        path = self.current().config_path
        if path is not None:
            self._watch_task = start_task(self._watch(Path(path), interval_s), "loglens-config-watch")

    async def stop_watch(self) -> None:
        """Stop the file watch."""
        task, self._watch_task = self._watch_task, None
        await cancel_task(task)

    async def _watch(self, path: Path, interval_s: float) -> None:
        last = _stamp(path)
        while True:
            await asyncio.sleep(interval_s)
            now = _stamp(path)
            if now != last:
                last = now
                await self.reload("watch")


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size
