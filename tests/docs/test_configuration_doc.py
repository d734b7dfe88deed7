"""docs/configuration.md is generated from the config models, every key in it is described, and
every YAML config example in the docs is a valid config for today's models."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from loglens.config import Settings, parse_settings
from loglens.notify import registry
from loglens.tools import config_docs

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "configuration.md"
_ROW = re.compile(r"^\| `([^`]+)` \| (.*) \| (.*) \| (.*) \|$")


def _rows(text: str) -> dict[str, tuple[str, str, str]]:
    return {m[1]: (m[2], m[3], m[4]) for line in text.splitlines() if (m := _ROW.match(line))}


def test_configuration_md_is_generated_from_the_models() -> None:
    assert DOC.read_text(encoding="utf-8") == config_docs.render(), (
        "docs/configuration.md is stale: run `.venv/bin/python -m loglens.tools.config_docs > docs/configuration.md`"
    )


def test_every_key_is_in_the_doc_with_type_default_and_description() -> None:
    rows = _rows(DOC.read_text(encoding="utf-8"))
    keys = config_docs.config_keys()
    assert len(keys) > 100 and set(keys) == set(rows)
    for section, field in Settings.model_fields.items():
        if not field.exclude:  # run-time fields (config_path, cli_overrides) are not config keys
            assert section in rows, section
    undocumented = sorted(k for k, (typ, default, desc) in rows.items() if not (typ and default and desc.strip()))
    assert not undocumented, f"config keys without a type, default or description: {undocumented}"


def test_defaults_in_the_doc_are_the_real_defaults() -> None:
    """Nested sections show their parent's default (otlp's mapping differs from a bare FieldMapping)."""
    rows = _rows(config_docs.render())
    defaults = Settings()
    assert rows["protocols.mapping.otlp.user_id"][1] == '`["user.id", "enduser.id", "user_id"]`'
    assert defaults.protocols.mapping.otlp.user_id == ["user.id", "enduser.id", "user_id"]
    assert rows["alerts.rules.volume.severity"][1] == f'`"{defaults.alerts.rules.volume.severity}"`'
    assert rows["server.port"][1] == f"`{defaults.server.port}`"
    assert rows["alerts.overrides.<name>.error_rate.threshold"][1] == "`0.1`"


def test_a_new_key_would_be_caught() -> None:
    """config_keys() follows the models, so an added field shows up in the comparison above."""
    from pydantic import BaseModel, Field

    class Extra(BaseModel):
        """A section."""

        added: int = Field(1, description="New.")
        nodesc: int = 2

    rows: list[str] = []
    config_docs._rows(Extra, "x.", rows, set())
    assert config_docs.config_keys(Extra, "x.") == ["x.added", "x.nodesc"]
    assert rows[1].endswith("| `2` |  |")  # no description → empty cell → the test above fails


def _yaml_config_blocks() -> list[tuple[str, str]]:
    """Fenced ```yaml blocks that look like a loglens config, from README and docs/*.md."""
    files = [ROOT / "README.md", ROOT / "README_SETUP.md", *sorted((ROOT / "docs").glob("*.md"))]
    out = []
    for f in files:
        if f.exists():
            for block in re.findall(r"```ya?ml\n(.*?)```", f.read_text(encoding="utf-8"), re.S):
                top = {m for m in re.findall(r"^([a-z_]+):", block, re.M)}
                if top and top <= set(Settings.model_fields):
                    out.append((f.name, block))
    return out


def test_doc_config_examples_are_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = _yaml_config_blocks()
    assert any(name == "configuration.md" for name, _ in blocks)
    for var in ("LOGLENS_API_TOKEN", "SLACK_WEBHOOK_URL", "SMTP_PASSWORD", "LOGLENS_WEBHOOK_SECRET"):
        monkeypatch.setenv(var, "x")
    installed = set(registry.available())
    for name, block in blocks:
        settings = parse_settings(block, file=name)
        # Each notifier's settings, by the plugin's own model. README's plugin example (`jsonl`) is
        # not installed; tests/docs/test_readme.py checks that one against the example's model.
        if {n.type for n in settings.notifiers} <= installed:
            registry.build_all(settings)
