"""The schemas as documentation: every field typed, described, marked required/optional and
illustrated by examples that validate; every anomaly type documented with what it detects and
its default severity; and every log the demo generates valid against log_schema.yaml."""

from __future__ import annotations

import copy
import random
import time
from pathlib import Path
from typing import Any

import fastjsonschema
import pytest

from loglens import demo
from loglens.config import RulesConfig, Settings
from loglens.detect.anomaly import METRICS, Finding
from loglens.detect.documents import PatternFinding, finding_doc, pattern_doc
from loglens.detect.validator import AnomalyValidator
from loglens.models import LEVELS
from loglens.schema import LogSchema, load_schema_document

ROOT = Path(__file__).resolve().parents[2]
LOG = ROOT / "schemas" / "log_schema.yaml"
ANOMALY = ROOT / "schemas" / "anomaly_schema.yaml"
# Fields whose values have a string format a reader must know about.
FORMATTED = {"log": {"timestamp": "date-time", "ip_address": "ipv4"}, "anomaly": {"detected_at": "date-time"}}


def _doc(name: str) -> dict[str, Any]:
    return load_schema_document(LOG if name == "log" else ANOMALY)


def _compile(schema: dict[str, Any]) -> Any:
    # fastjsonschema implements draft-07, which covers every keyword the schemas use (as loglens does).
    return fastjsonschema.compile({k: v for k, v in schema.items() if k not in ("$schema", "$id")})


def _types(spec: dict[str, Any]) -> set[str]:
    """Every JSON type a property can take, including through anyOf/oneOf branches and enums."""
    found: set[str] = set()
    t = spec.get("type")
    found |= set(t) if isinstance(t, list) else ({t} if t else set())
    if "enum" in spec:
        found.add("string")
    for branch in spec.get("anyOf", []) + spec.get("oneOf", []):
        found |= _types(branch)
    return found


def _formats(spec: dict[str, Any]) -> set[str]:
    own = {spec["format"]} if "format" in spec else set()
    return own.union(*(_formats(b) for b in spec.get("anyOf", []) + spec.get("oneOf", [])))


@pytest.mark.parametrize("name", ["log", "anomaly"])
def test_every_property_is_typed_described_and_has_valid_examples(name: str) -> None:
    doc = _doc(name)
    assert doc["properties"], name
    for field, spec in doc["properties"].items():
        assert _types(spec), f"{name}.{field}: no type"
        assert len(str(spec.get("description", "")).strip()) >= 15, f"{name}.{field}: no description"
        examples = spec.get("examples")
        assert isinstance(examples, list) and examples, f"{name}.{field}: no examples"
        check = _compile(spec)
        for example in examples:
            check(example)  # raises JsonSchemaValueException naming the rule it breaks


@pytest.mark.parametrize("name", ["log", "anomaly"])
def test_required_and_optional_are_explicit(name: str) -> None:
    doc = _doc(name)
    required = set(doc["required"])
    assert required <= set(doc["properties"]), required - set(doc["properties"])
    for field, spec in doc["properties"].items():
        text = " ".join(str(spec["description"]).split())
        says_required = "Required" in text and not text.startswith("Optional")
        assert says_required == (field in required), f"{name}.{field}: description disagrees with `required`"
        if field not in required:
            assert text.startswith("Optional"), f"{name}.{field}: optional fields start with 'Optional'"


@pytest.mark.parametrize("name", ["log", "anomaly"])
def test_formats_are_declared(name: str) -> None:
    props = _doc(name)["properties"]
    for field, fmt in FORMATTED[name].items():
        assert fmt in _formats(props[field]), f"{name}.{field}: format {fmt} not declared"


def test_log_schema_examples_validate_and_are_accepted_by_loglens() -> None:
    doc = _doc("log")
    check, runtime = _compile(doc), LogSchema.from_file(LOG)
    assert doc["examples"]
    for example in doc["examples"]:
        check(copy.deepcopy(example))
        assert runtime.check(copy.deepcopy(example)) is None
        # The validator is not vacuous: the same example without a required field is refused.
        broken = {k: v for k, v in example.items() if k != "service"}
        with pytest.raises(fastjsonschema.JsonSchemaValueException):
            check(broken)
        assert runtime.check(broken) == "missing required field: service"


def test_anomaly_schema_examples_validate_with_the_runtime_validator() -> None:
    doc = _doc("anomaly")
    check, runtime = _compile(doc), AnomalyValidator(ANOMALY)
    assert {e["type"] for e in doc["examples"]} >= {"volume_spike", "new_pattern"}
    for example in doc["examples"]:
        check(example)
        runtime.check(example)
        with pytest.raises(ValueError, match="does not match schema"):
            runtime.check({**example, "severity": "purple"})


def test_anomaly_types_are_enumerated_with_detects_and_default_severity() -> None:
    doc = _doc("anomaly")
    builtin = next(b["enum"] for b in doc["properties"]["type"]["anyOf"] if "enum" in b)
    types = doc["x-loglens-types"]
    assert list(types) == builtin, "x-loglens-types must list exactly the built-in types, in enum order"
    defaults = Settings().alerts.rules
    for name, info in types.items():
        assert set(info) == {"detects", "rule", "default_severity"}, name
        assert len(info["detects"]) >= 20, name
        assert info["rule"] in RulesConfig.model_fields, f"{name}: unknown rule {info['rule']!r}"
        assert info["default_severity"] == getattr(defaults, info["rule"]).severity, (
            f"{name}: default_severity differs from alerts.rules.{info['rule']}.severity"
        )
        assert name in doc["properties"]["type"]["description"], f"{name} not named in type's description"


def _findings(now: float) -> list[Finding]:
    return [
        Finding("search", metric, observed, 10.0, 8.0, 12.0, score, 15, now)
        for metric in METRICS
        for observed, score in ((40.0, 9.0), (1.0, -4.5))
    ]


def test_every_anomaly_the_detectors_produce_is_a_documented_type_and_valid() -> None:
    """Docs built by the evaluator's own builders cover every documented type and validate."""
    types = _doc("anomaly")["x-loglens-types"]
    runtime = AnomalyValidator(ANOMALY)
    now = time.time()
    docs = [finding_doc(f, "warning", [1, 2], now) for f in _findings(now)]
    docs += [
        pattern_doc(
            PatternFinding("new_pattern", "checkout", "t1", "ledger <*> out of sync", "ledger 7", "FATAL", 42, now),
            "warning",
            10.0,
        ),
        pattern_doc(
            PatternFinding(
                "pattern_rate",
                "checkout",
                "t2",
                "retry <*>",
                "retry 3",
                "WARN",
                None,
                now,
                observed=300.0,
                expected=4.0,
            ),
            "warning",
            10.0,
        ),
    ]
    for d in docs:
        runtime.check(d)
        assert d["type"] in types, d["type"]
    assert {d["type"] for d in docs} == set(types), "a documented type no detector produces (or vice versa)"


def test_every_demo_log_validates_against_log_schema() -> None:
    check, runtime = _compile(_doc("log")), LogSchema.from_file(LOG)
    logs = [log for seed in (1, 7, 99) for log in demo.generate_logs(2000, error_ratio=0.3, seed=seed, spacing_s=0.5)]
    rng = random.Random(3)
    logs += [demo.make_log(rng, svc, level) for svc in demo.DEMO_SERVICES for level in LEVELS for _ in range(20)]
    assert {log["level"] for log in logs} == set(LEVELS)
    assert {log["service"] for log in logs} == set(demo.DEMO_SERVICES)
    for log in logs:
        check(log)
        assert runtime.check(copy.deepcopy(log)) is None, log
