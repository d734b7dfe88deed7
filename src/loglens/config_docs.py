"""Generate docs/configuration.md from the pydantic config models (so no key goes undocumented).

Run `python -m loglens.config_docs > docs/configuration.md`; a test fails when the file is stale.
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
(`python -m loglens.config_docs > docs/configuration.md`); a test fails when it is out of date.
"""


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


def _default(field: Any) -> str:
    if field.default is not PydanticUndefined:
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


def _submodels(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _submodels(arg)]


def _rows(model: type[BaseModel], prefix: str, out: list[str], seen: set[str]) -> None:
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        key = f"{prefix}{name}"
        subs = _submodels(field.annotation)
        doc = field.description or ""
        if not doc and subs:
            doc = (subs[0].__doc__ or "").strip().splitlines()[0]
        out.append(f"| `{key}` | {_type_name(field.annotation)} | {_default(field)} | {doc} |")
        origin = typing.get_origin(field.annotation)
        for sub in subs:
            sub_prefix = {list: f"{key}[].", dict: f"{key}.<name>."}.get(origin, f"{key}.")  # type: ignore[call-overload]
            if (sub_prefix, sub) in seen:
                continue
            seen.add((sub_prefix, sub))  # type: ignore[arg-type]
            _rows(sub, sub_prefix, out, seen)


def config_keys(model: type[BaseModel] = Settings, prefix: str = "") -> list[str]:
    """Every dotted key the config accepts (used by the docs test)."""
    rows: list[str] = []
    _rows(model, prefix, rows, set())
    return [r.split("`")[1] for r in rows]


def render() -> str:
    """The whole configuration reference as markdown."""
    out = [_HEADER, "| key | type | default | description |", "|---|---|---|---|"]
    _rows(Settings, "", out, set())
    out.append("")
    out.append("Notifier `settings` are validated by each plugin's own config model; see the README's")
    out.append("notifier section for the built-in plugins' keys.")
    return "\n".join(out) + "\n"


if __name__ == "__main__":  # pragma: no cover
    print(render(), end="")
