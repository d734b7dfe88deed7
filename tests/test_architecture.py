"""The import rules of docs/architecture.md hold for the code (a static AST scan of src/loglens).

The rules are read from the table between the `import-rules` markers in the doc, so the doc and
the check cannot drift apart; the scan sees every import, also inside functions and under
`if TYPE_CHECKING:`.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "loglens"
DOC = REPO / "docs" / "architecture.md"

# The server's long-lived parts: only the composition root and the CLI entry points build them.
COMPONENT_CLASSES = frozenset(
    {
        "Store",
        "IngestPipeline",
        "NotificationService",
        "SyslogServer",
        "FluentServer",
        "ReloadManager",
        "StoreWatch",
        "SelfMetrics",
        "MetricsPublisher",
        "EventHub",
        "AlertRepository",
        "AlertWriter",
        "OutboxRepository",
    }
)
WIRING_MODULES = frozenset({"runtime", "cli", "ops.commands", "demo"})


def module_names() -> dict[str, Path]:
    """Every module under src/loglens, by its name relative to `loglens` ('' is the package root)."""
    out: dict[str, Path] = {}
    for path in SRC.rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = module_names()


def _resolve(target: str) -> str | None:
    """`loglens.x.y` → 'x.y' when it is one of our modules ('' for the package root)."""
    if target == "loglens":
        return ""
    if not target.startswith("loglens."):
        return None
    name = target[len("loglens.") :]
    while name and name not in MODULES:  # `from loglens.x import Y` where Y is not a module
        name = name.rpartition(".")[0]
    return name


def imports_of(path: Path) -> set[str]:
    """The loglens modules `path` imports, wherever the import statement is."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from loglens import queries` imports the module loglens.queries
            targets = [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            resolved = _resolve(target)
            if resolved is not None:
                found.add(resolved)
    return found


def _matches(pattern: str, module: str) -> bool:
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        base = pattern[:-2]
        return module == base or module.startswith(base + ".")
    return module == pattern


@dataclass(frozen=True)
class Rule:
    """One row of the doc's table."""

    modules: tuple[str, ...]
    excepted: tuple[str, ...]
    kind: str  # only | never
    targets: tuple[str, ...]
    why: str

    def applies_to(self, module: str) -> bool:
        """Does this rule constrain `module`?"""
        return any(_matches(p, module) for p in self.modules) and not any(_matches(p, module) for p in self.excepted)

    def violations(self, module: str, imported: set[str]) -> list[str]:
        """The imports of `module` that break this rule."""
        bad = []
        for target in sorted(imported):
            if target in ("", module):  # the package root (only __version__) and self-references
                continue
            hit = any(_matches(p, target) for p in self.targets)
            if (self.kind == "only" and not hit) or (self.kind == "never" and hit):
                bad.append(f"{module} imports {target} ({self.kind} {', '.join(self.targets)}: {self.why})")
        return bad


def _names(cell: str) -> tuple[str, ...]:
    return tuple(re.findall(r"`([^`]+)`", cell)) or tuple(x.strip() for x in cell.split(",") if x.strip())


def read_rules(text: str) -> list[Rule]:
    """The rule table between `<!-- import-rules:start -->` and `<!-- import-rules:end -->`."""
    block = text.split("<!-- import-rules:start -->", 1)[1].split("<!-- import-rules:end -->", 1)[0]
    rules = []
    for line in block.strip().splitlines()[2:]:  # skip the header and the |---| row
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        modules_cell, kind, targets_cell, why = cells
        inner = modules_cell.strip("`")
        excepted: tuple[str, ...] = ()
        if " except " in inner:
            head, _, tail = inner.partition(" except ")
            modules, excepted = (head.strip(),), tuple(x.strip() for x in tail.split(","))
        else:
            modules = _names(modules_cell)
        assert kind in ("only", "never"), line
        rules.append(Rule(modules, excepted, kind, _names(targets_cell), why))
    return rules


RULES = read_rules(DOC.read_text())


def test_the_doc_has_rules_and_every_named_module_exists() -> None:
    assert len(RULES) >= 10
    for rule in RULES:
        for pattern in (*rule.modules, *rule.excepted, *rule.targets):
            if pattern == "*":
                continue
            base = pattern.removesuffix(".*")
            assert base in MODULES, f"the rules name {pattern!r}, which is not a module of src/loglens"


@pytest.mark.parametrize("rule", RULES, ids=lambda r: f"{','.join(r.modules)}-{r.kind}")
def test_import_rule_holds(rule: Rule) -> None:
    applied = [m for m in MODULES if rule.applies_to(m)]
    assert applied, f"rule {rule} applies to no module"
    bad = [v for m in sorted(applied) for v in rule.violations(m, imports_of(MODULES[m]))]
    assert not bad, "\n".join(bad)


def test_only_the_composition_root_and_entry_points_build_server_components() -> None:
    bad = []
    for module, path in MODULES.items():
        if module in WIRING_MODULES:
            continue
        tree = ast.parse(path.read_text(), str(path))
        defined = {n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                name = node.func.id
                if name in COMPONENT_CLASSES and name not in defined:
                    bad.append(f"{module}:{node.lineno} builds {name}")
    assert not bad, "wire components in loglens.runtime:\n" + "\n".join(bad)


def test_the_checker_catches_a_violation(tmp_path: Path) -> None:
    """The scan must see imports inside functions and type-only blocks (so the rules can fail)."""
    src = tmp_path / "m.py"
    src.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from loglens.api.deps import RuntimeDep\n"
        "def f():\n    from loglens import runtime\n    import loglens.notify.service\n"
        "from loglens.store import Store\n"
    )
    assert imports_of(src) == {"api.deps", "runtime", "notify.service", "store"}
    ingest_rule = next(r for r in RULES if r.modules == ("ingest.*",))
    assert ingest_rule.violations("ingest.tail", imports_of(src))
