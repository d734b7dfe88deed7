"""Generate docs/configuration.md from the pydantic config models (so no key goes undocumented).

Run `python -m loglens.tools.config_docs > docs/configuration.md`; a test fails when the file is stale.
"""

from __future__ import annotations

import json
import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from loglens.config import Settings

_HEADER = """# Configuration reference

loglens reads one YAML file, `config.yaml` by default (`--config PATH` to choose another).
Every key is optional; unknown keys are errors. `${VAR}` and `${VAR:-default}` are replaced from
the environment, so secrets need not be written in the file. Relative paths are relative to the
directory of the config file. Check a file with `loglens check-config PATH`: it prints `OK` or
each problem as `file:LINE: key.path: message (did you mean 'x'?)` and exits 2.

This page is generated from the pydantic models in `src/loglens/config.py`
(`python -m loglens.tools.config_docs > docs/configuration.md`); a test fails when it is out of date.
"""


# A test parses this block with `parse_settings`, so the example cannot drift from the models.
_EXAMPLE = """
## Example

Only what differs from the defaults needs to be written. This file binds all interfaces behind a
token, keeps raw logs for 30 days, makes `payments` stricter, and pages by Slack and email for
critical alerts while every alert goes to a webhook:

```yaml
server:
  host: 0.0.0.0
  api_token: ${LOGLENS_API_TOKEN}
storage:
  path: /var/lib/loglens/loglens.duckdb
  retention_days: 30
ingest:
  files: [/var/log/app/app.ndjson]
alerts:
  rules:
    error_rate: {threshold: 0.05, min_events: 50, for_seconds: 30}
    absence: {threshold_seconds: 300}
  overrides:
    payments:
      error_rate: {threshold: 0.01}
notifiers:
  - name: oncall-slack
    type: slack
    severities: [critical]
    settings: {webhook_url_env: SLACK_WEBHOOK_URL, channel: "#oncall"}
  - name: ops-mail
    type: email
    severities: [critical]
    settings: {host: smtp.example.com, port: 587, starttls: true, to: [ops@example.com],
               username: loglens, password_env: SMTP_PASSWORD}
  - name: audit
    type: webhook
    severities: [critical, warning, info]
    settings: {url: "https://hooks.example.com/loglens", secret_env: LOGLENS_WEBHOOK_SECRET}
outbox:
  max_attempts: 12
```"""


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " \\| ".join(json.dumps(a) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin in (list, dict):
        args = ", ".join(_type_name(a) for a in typing.get_args(annotation))
        return f"{origin.__name__}[{args}]"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: Any, parent: BaseModel | None = None, name: str = "") -> str:
    if parent is not None:
        # The parent section's own default wins: e.g. protocols.mapping.otlp has other field
        # names than a bare FieldMapping.
        value = getattr(parent, name)
    elif field.default is not PydanticUndefined:
        value = field.default
    elif field.default_factory is not None:
        value = field.default_factory()
    else:
        return "(required)"
    if isinstance(value, BaseModel):
        return "(section)"
    if isinstance(value, list) and value and isinstance(value[0], BaseModel):
        value = [v.model_dump(mode="json", exclude_defaults=True) for v in value]
    return f"`{json.dumps(value, default=str)}`"


def _value(field: Any) -> Any:
    """A field's default value (built from its factory when it has one)."""
    if field.default is not PydanticUndefined:
        return field.default
    return field.default_factory() if field.default_factory is not None else None


def _submodels(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _submodels(arg)]


def _rows(
    model: type[BaseModel],
    prefix: str,
    out: list[str],
    seen: set[tuple[str, type[BaseModel]]],
    parent: BaseModel | None = None,
) -> None:
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        key = f"{prefix}{name}"
        subs = _submodels(field.annotation)
        doc = field.description or ""
        if not doc and subs:
            doc = (subs[0].__doc__ or "").strip().splitlines()[0]
        out.append(f"| `{key}` | {_type_name(field.annotation)} | {_default(field, parent, name)} | {doc} |")
        origin = typing.get_origin(field.annotation)
        for sub in subs:
            sub_prefix = f"{key}[]." if origin is list else f"{key}.<name>." if origin is dict else f"{key}."
            if (sub_prefix, sub) in seen:
                continue
            seen.add((sub_prefix, sub))
            value = getattr(parent, name) if parent is not None else _value(field)
            _rows(sub, sub_prefix, out, seen, value if isinstance(value, sub) else None)


def config_keys(model: type[BaseModel] = Settings, prefix: str = "") -> list[str]:
    """Every dotted key the config accepts (used by the docs test)."""
    rows: list[str] = []
    _rows(model, prefix, rows, set())
    return [r.split("`")[1] for r in rows]


_ALERTING = """
## How alerting reads these keys

- **Error rate.** The default rule is the seed's: *error rate above 10 % in any 1-minute window*.
  Every second, each service's ERROR+FATAL logs are divided by all its logs in the sliding
  `window_seconds` (60) ending now; it fires when the ratio is strictly above `threshold` (0.1)
  and the window holds at least `min_events` logs (10). So 5 errors out of 10 logs in a minute
  fire (50 % > 10 %), 1 error out of 200 does not (0.5 %), and 1 error out of 1 log does not
  either (too few logs to mean anything). Raise `min_events` for noisy low-volume services.
- **Grouping.** Transitions of one rule and kind (firing / resolved) that reach a channel within
  `alerts.group_wait_seconds` go out as one notification listing the services (and those of one
  evaluation always do, even with 0); once a grouped message went out, further transitions of
  that rule are collected for at least 5 s before the next one (Alertmanager's group_interval).
  20,000 services going silent together are a handful of messages, not 20,000. Meta-alerts
  about loglens itself are never held or grouped.
- **Flapping.** With `alerts.resolve_after_seconds` > 0 a firing alert resolves once its
  condition has been clear that long; `new_pattern` alerts (events, not levels) clear
  `rules.new_pattern.resolve_after_seconds` after their last finding and then resolve the same way.
- **Many services.** At most `alerts.max_series` services are tracked by detection; logs of
  further new names are stored and queryable as usual, counted (GET /api/v1/rules, `series`)
  and left out of alerting, and a `series_limit` meta-alert fires once. A service silent for
  `alerts.series_idle_seconds` is forgotten (its alerts resolve), which makes room again.
- **Timeouts.** Each notification attempt is bounded by the channel's own `timeout_seconds`
  when it sets one, else by `outbox.timeout_seconds`; a channel timeout longer than the outbox's
  is a `check-config` error (the outbox would cut it short and the receiver would get repeats).
"""


def render() -> str:
    """The whole configuration reference as markdown."""
    out = [_HEADER, "| key | type | default | description |", "|---|---|---|---|"]
    _rows(Settings, "", out, set())
    out.append("")
    out.append("Notifier `settings` are validated by each plugin's own config model; see the README's")
    out.append("notifier section for the built-in plugins' keys.")
    out.append(_EXAMPLE)
    out.append(_ALERTING)
    return "\n".join(out) + "\n"


if __name__ == "__main__":  # pragma: no cover
    print(render(), end="")
