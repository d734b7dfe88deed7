"""Anomaly documents are checked against schemas/anomaly_schema.yaml before they are stored.

One validator for every producer: the live evaluator, `loglens backtest` and `loglens analyze`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fastjsonschema

from loglens.errors import ConfigError, ConfigIssue
from loglens.schema import load_schema_document


class AnomalyValidator:
    """schemas/anomaly_schema.yaml compiled once; `check(doc)` raises ValueError when invalid."""

    def __init__(self, path: str | Path) -> None:
        document = load_schema_document(path)
        # fastjsonschema implements draft-07 semantics, which cover every keyword the schema uses
        compiled = {k: v for k, v in document.items() if k != "$schema"}
        try:
            self._check = fastjsonschema.compile(compiled)
        except fastjsonschema.JsonSchemaDefinitionException as exc:
            raise ConfigError([ConfigIssue(str(path), None, "", f"invalid JSON Schema: {exc}")]) from None

    def check(self, doc: dict[str, Any]) -> None:
        """Raise ValueError naming the offending field when `doc` does not match the schema."""
        try:
            self._check(doc)
        except fastjsonschema.JsonSchemaValueException as exc:
            raise ValueError(f"anomaly does not match schema: {exc.message}") from None
