"""Find notifier plugins through the entry-point group `loglens.notifiers` and build channels.

Built-ins are declared in loglens's own pyproject.toml under the same group, so every channel —
console or a third-party package — is loaded the same way.
"""

from __future__ import annotations

import logging
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from pydantic import BaseModel, ValidationError

from loglens.config import NotifierConfig, Settings, is_secret_annotation
from loglens.errors import ConfigError, ConfigIssue

GROUP = "loglens.notifiers"
log = logging.getLogger("loglens.notify")


def available() -> dict[str, EntryPoint]:
    """Every installed plugin type, by entry-point name."""
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def _issue(settings: Settings | None, key: str, message: str) -> ConfigIssue:
    file = str(settings.config_path) if settings is not None and settings.config_path else "config.yaml"
    return ConfigIssue(file, _line(settings, key), key, message)


def _line(settings: Settings | None, key: str) -> int | None:
    """Best-effort line of `key` in the config file, so plugin errors point where others do."""
    if settings is None or settings.config_path is None:
        return None
    try:
        from ruamel.yaml import YAML

        from loglens.config import _line_of

        root = YAML(typ="rt").load(settings.config_path.read_text(encoding="utf-8"))
        path: list[Any] = []
        for part in key.replace("]", "").replace("[", ".").split("."):
            path.append(int(part) if part.isdigit() else part)
        return _line_of(root, tuple(path))
    except Exception:  # the line is a courtesy; the message is what matters
        return None


def describe_types(plugins: dict[str, EntryPoint]) -> str:
    """'built-in: console, email, ...' plus installed third-party plugins with their package, so a
    test or example plugin in the environment is not mistaken for part of loglens."""
    builtin = sorted(n for n, ep in plugins.items() if ep.dist is not None and ep.dist.name == "loglens")
    extra = sorted(
        f"{n} (from {ep.dist.name if ep.dist is not None else 'unknown package'})"
        for n, ep in plugins.items()
        if n not in builtin
    )
    text = "built-in: " + (", ".join(builtin) or "none")
    return text + ("; installed plugins: " + ", ".join(extra) if extra else "")


def secret_fields(type_name: str) -> set[str]:
    """Settings the plugin's own Config model declares secret (`SecretStr`), for masking; an
    unknown or broken plugin has none (its settings are then masked by key name only)."""
    try:
        model = load_class(type_name).Config
    except ConfigError:
        return set()
    return {name for name, f in model.model_fields.items() if is_secret_annotation(f.annotation)}


def load_class(type_name: str, key: str = "type", settings: Settings | None = None) -> type[Any]:
    """The plugin class registered as `type_name`; ConfigError naming `key` when unknown or broken."""
    plugins = available()
    ep = plugins.get(type_name)
    if ep is None:
        raise ConfigError([_issue(settings, key, f"unknown notifier type {type_name!r} ({describe_types(plugins)})")])
    try:
        cls = ep.load()
    except Exception as exc:
        raise ConfigError([_issue(settings, key, f"notifier plugin {type_name!r} failed to load: {exc}")]) from None
    config_model = getattr(cls, "Config", None)
    if not (isinstance(config_model, type) and issubclass(config_model, BaseModel)) or not callable(
        getattr(cls, "send", None)
    ):
        raise ConfigError(
            [_issue(settings, key, f"{ep.value} is not a notifier plugin (needs Config model and async send)")]
        )
    plugin: type[Any] = cls  # checked above: a class with a Config model and an async send
    return plugin


def build(cfg: NotifierConfig, index: int, settings: Settings | None = None) -> Any:
    """Validate `cfg.settings` with the plugin's Config and instantiate the channel."""
    prefix = f"notifiers[{index}]"
    cls = load_class(cfg.type, f"{prefix}.type", settings)
    try:
        config = cls.Config.model_validate(cfg.settings)
    except ValidationError as exc:
        issues = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            key = f"{prefix}.settings.{loc}" if loc else f"{prefix}.settings"
            message = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            if err["type"] == "extra_forbidden":
                allowed = ", ".join(cls.Config.model_fields)
                message += f" for notifier type {cfg.type!r} (allowed: {allowed})"
            issues.append(_issue(settings, key, message))
        raise ConfigError(issues) from None
    return cls(config)


def build_all(settings: Settings) -> dict[str, Any]:
    """Every enabled channel, by name; all problems reported together."""
    channels: dict[str, Any] = {}
    issues: list[ConfigIssue] = []
    for i, cfg in enumerate(settings.notifiers):
        if not cfg.enabled:
            continue
        try:
            channels[cfg.name] = build(cfg, i, settings)
        except ConfigError as exc:
            issues.extend(exc.issues)
            continue
        timeout = channel_timeout(channels[cfg.name])
        if timeout is not None and timeout > settings.outbox.timeout_seconds:
            # the outbox would cut every slow attempt short and retry it: the receiver gets duplicates
            issues.append(
                _issue(
                    settings,
                    f"notifiers[{i}].settings.timeout_seconds",
                    f"{timeout:g} s is longer than outbox.timeout_seconds ({settings.outbox.timeout_seconds:g} s), "
                    "which bounds every attempt; raise outbox.timeout_seconds or lower this",
                )
            )
    if issues:
        raise ConfigError(issues)
    return channels


def channel_timeout(plugin: Any) -> float | None:
    """The per-attempt timeout a channel's own settings ask for (None: it leaves it to the outbox)."""
    value = getattr(getattr(plugin, "config", None), "timeout_seconds", None)
    return float(value) if isinstance(value, int | float) else None
