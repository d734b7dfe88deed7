"""README.md and docs/*.md only name things that exist: make targets, `loglens` commands and
their options, API routes, notifier plugins and their settings, files they link to; and the
notifier plugin example in README.md is a complete, working package."""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import json
import re
import sys
import tomllib
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer.main
from pydantic import BaseModel
from typer.testing import CliRunner

from loglens.api.app import create_app
from loglens.cli import app as cli_app
from loglens.config import Settings
from loglens.notify.base import Notifier, sample_notification

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = [p for p in (README, ROOT / "README_SETUP.md", *sorted((ROOT / "docs").glob("*.md"))) if p.exists()]
_CMD_RE = re.compile(r"(?:^|[\s`/(])loglens[ \t]+([a-z][a-z0-9-]*)((?:[ \t]+[^\s`#]+)*)", re.M)


def _code(text: str) -> str:
    """Shell blocks and inline code spans: where commands are written to be typed."""
    fenced = [
        body
        for lang, body in re.findall(r"```([^\n]*)\n(.*?)```", text, re.S)
        if lang.strip() in ("", "bash", "sh", "shell", "console", "text")
    ]
    rest = re.sub(r"```.*?```", "", text, flags=re.S)
    return "\n".join([*fenced, *re.findall(r"`([^`\n]+)`", rest)])


def _group() -> Any:
    """The click group behind the typer app (typer ships its own click, so duck-typed)."""
    group = typer.main.get_command(cli_app)
    assert _is_group(group)
    return group


def _is_group(cmd: Any) -> bool:
    return isinstance(getattr(cmd, "commands", None), dict)


def _mentions() -> list[tuple[str, list[str], set[str]]]:
    """(file, command path, options on that line) for every `loglens <command>` in the docs."""
    group, found = _group(), []
    for doc in DOCS:
        for line in _code(doc.read_text(encoding="utf-8")).splitlines():
            for m in _CMD_RE.finditer(line.split(" # ")[0]):
                words = m[2].split()
                path = [m[1]]
                cmd = group.commands.get(m[1])
                if _is_group(cmd) and words:
                    # `loglens dead-letter list|replay`: every alternative is a subcommand
                    path = [m[1], *[w for w in words[0].split("|") if re.fullmatch(r"[a-z][a-z-]*", w)]]
                found.append((doc.name, path, set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", m[2]))))
    return found


def _make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return {t for line in re.findall(r"^([a-z][\w .-]*):(?!=)", text, re.M) for t in line.split()}


def test_the_two_commands_are_make_targets() -> None:
    targets = _make_targets()
    assert {"demo", "test"} <= targets
    readme = README.read_text(encoding="utf-8")
    assert "make demo" in readme and "make test" in readme
    named = {t for doc in DOCS for t in re.findall(r"\bmake ([a-z][\w-]*)", _code(doc.read_text(encoding="utf-8")))}
    assert {"demo", "test", "diagrams"} <= named
    assert not named - targets, f"docs name make targets the Makefile lacks: {sorted(named - targets)}"


def test_every_loglens_command_in_the_docs_exists_with_its_options() -> None:
    group, mentions = _group(), _mentions()
    assert len(mentions) >= 15
    for doc, path, options in mentions:
        cmd = group.commands.get(path[0])
        assert cmd is not None, f"{doc}: `loglens {path[0]}` is not a command"
        commands = [cmd]
        if _is_group(cmd):
            assert len(path) > 1, f"{doc}: `loglens {path[0]}` needs a subcommand"
            commands = [cmd.commands.get(sub) for sub in path[1:]]
            assert all(commands), f"{doc}: `loglens {' '.join(path)}` names a missing subcommand"
        known = {"--help"} | {o for c in commands for p in c.params for o in (*p.opts, *p.secondary_opts)}
        assert options <= known, f"{doc}: `loglens {' '.join(path)}` has no option(s) {sorted(options - known)}"


def test_every_command_is_in_the_readme_and_its_help_works() -> None:
    group = _group()
    in_readme = {tuple(p) for doc, p, _ in _mentions() if doc == "README.md"}
    runner = CliRunner()
    for name, cmd in group.commands.items():
        paths = [[name, sub] for sub in cmd.commands] if _is_group(cmd) else [[name]]
        for path in paths:
            named = any(p[0] == path[0] and set(path[1:]) <= set(p[1:]) for p in in_readme)
            assert named, f"`loglens {' '.join(path)}` is not in README.md"
            result = runner.invoke(cli_app, [*path, "--help"])
            assert result.exit_code == 0, (path, result.output)
            assert "Usage:" in result.output


def _norm(path: str) -> str:
    """`/api/v1/silences/{silence_id}` and `/api/v1/silences/{id}` are the same route."""
    return re.sub(r"\{[^}]*\}", "{}", path.split("?", 1)[0])


def _api_rows() -> set[tuple[str, str]]:
    """(METHOD, path) of every row of README's API table."""
    text = README.read_text(encoding="utf-8").split("\n## API\n", 1)[1].split("\n## ", 1)[0]
    rows = set()
    for methods, cell in re.findall(r"^\| ([A-Z/]+) \| (`.+?`) \|", text, re.M):
        for path in re.findall(r"`([^`]+)`", cell):
            rows |= {(method, _norm(path)) for method in methods.split("/")}
    return rows


def _app_routes(tmp_path: Path) -> set[tuple[str, str]]:
    settings = Settings().model_copy(
        update={"storage": Settings().storage.model_copy(update={"path": tmp_path / "x.duckdb"})}
    )
    app = create_app(settings)  # every optional router is included here; nothing starts
    # The OpenAPI document lists every included route whatever FastAPI's internal route types are.
    routes = {(m.upper(), _norm(p)) for p, ops in app.openapi()["paths"].items() for m in ops}
    # /docs and /redoc are served by routes.docs (offline assets) and kept out of the schema
    return routes | asyncio.run(_docs_pages(app)) | {("GET", app.openapi_url or "")}


async def _docs_pages(app: Any) -> set[tuple[str, str]]:
    """/docs and /redoc (kept out of the OpenAPI document) when the app serves them; they need no
    running state, so the app is asked without starting its lifespan."""
    transport = httpx.ASGITransport(app=app)
    # localhost: the app refuses Host names it does not serve (DNS-rebinding guard)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        return {("GET", p) for p in ("/docs", "/redoc") if (await client.get(p)).status_code == 200}


def test_every_api_path_in_the_readme_is_a_route(tmp_path: Path) -> None:
    routes, rows = _app_routes(tmp_path), _api_rows()
    assert len(rows) >= 25 and ("POST", "/api/v1/logs") in rows and ("DELETE", "/api/v1/silences/{}") in rows
    missing = sorted(f"{m} {p}" for m, p in rows - routes)
    assert not missing, f"README's API table lists routes the app does not have: {missing}"


def test_every_route_of_the_app_is_in_the_readme(tmp_path: Path) -> None:
    missing = sorted(f"{m} {p}" for m, p in _app_routes(tmp_path) - _api_rows() if p != "/openapi.json")
    assert not missing, f"routes missing from README's API table: {missing}"


def _notifier_table() -> dict[str, list[str]]:
    text = README.read_text(encoding="utf-8").split("## Notifiers", 1)[1].split("\n## ", 1)[0]
    table = {}
    for name, keys in re.findall(r"^\| `([a-z_]+)` \| ([^|]+) \|", text, re.M):
        # keys are the backticked words that are not listed values in parentheses
        table[name] = re.findall(r"`([a-z_]+)`(?![^(]*\))", keys)
    return table


def test_notifier_table_lists_every_builtin_plugin_and_its_settings() -> None:
    eps = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["entry-points"]
    builtins = eps["loglens.notifiers"]
    table = _notifier_table()
    assert set(table) == set(builtins), "README's notifier table and pyproject's entry points differ"
    for name, target in builtins.items():
        module, cls_name = target.split(":")
        cls = getattr(importlib.import_module(module), cls_name)
        assert table[name] == list(cls.Config.model_fields), f"{name}: README lists {table[name]}"


def _readme_block(lang: str, contains: str) -> str:
    blocks = re.findall(rf"```{lang}\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    matches = [b for b in blocks if contains in b]
    assert len(matches) == 1, f"expected one ```{lang} block containing {contains!r}"
    return matches[0]


def test_plugin_example_in_the_readme_is_a_working_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pyproject = tomllib.loads(_readme_block("toml", "loglens.notifiers"))
    ((ep_name, target),) = pyproject["project"]["entry-points"]["loglens.notifiers"].items()
    module_name, cls_name = target.split(":")
    assert pyproject["tool"]["setuptools"]["py-modules"] == [module_name]
    assert f"`loglens-jsonl-notifier/{module_name}.py`" in README.read_text(encoding="utf-8")
    (tmp_path / f"{module_name}.py").write_text(_readme_block("python", "class "), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = importlib.util.find_spec(module_name)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, module_name, module)
    spec.loader.exec_module(module)
    cls: Any = getattr(module, cls_name)
    # What notify/registry.py requires of a plugin, and the type name matches the entry point.
    assert cls.name == ep_name and issubclass(cls.Config, BaseModel) and callable(cls.send)
    channel = _readme_block("yaml", f"type: {ep_name}")
    settings = {"path": str(tmp_path / "alerts.jsonl")}
    assert "settings: {path:" in channel
    with pytest.raises(ValueError, match="extra"):
        cls.Config.model_validate({**settings, "typo": 1})
    notifier = cls(cls.Config.model_validate(settings))
    assert isinstance(notifier, Notifier)
    asyncio.run(notifier.send(sample_notification("audit-file")))
    line = json.loads((tmp_path / "alerts.jsonl").read_text(encoding="utf-8"))
    assert line["channel"] == "audit-file" and line["kind"] == "test" and line["alert"]["rule"] == "test"
    # A failed write is a transient error, so the outbox retries it.
    from loglens.errors import TransientNotifierError

    broken = cls(cls.Config.model_validate({"path": str(tmp_path / "missing-dir" / "a.jsonl")}))
    with pytest.raises(TransientNotifierError, match="cannot write"):
        asyncio.run(broken.send(sample_notification("audit-file")))


def test_relative_links_in_the_docs_resolve() -> None:
    broken = []
    for doc in DOCS:
        text = re.sub(r"```.*?```", "", doc.read_text(encoding="utf-8"), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:|#", target):
                continue
            if not (doc.parent / target.split("#", 1)[0]).exists():
                broken.append(f"{doc.name} → {target}")
    assert not broken, f"broken links: {broken}"


def test_readme_check_config_example_runs_word_for_word(tmp_path: Path) -> None:
    """The README's check-config example, run as written against the shipped config.yaml."""
    import shutil
    import subprocess
    import sys

    text = README.read_text(encoding="utf-8")
    block = text[text.index("sed 's/  retention_days") :].split("```", 1)[0].strip().splitlines()
    sed_cmd, check_cmd, expected = block[0].split("#")[0].strip(), block[1], block[2].lstrip("# ")
    shutil.copy(ROOT / "config.yaml", tmp_path / "config.yaml")
    subprocess.run(sed_cmd, shell=True, cwd=tmp_path, check=True)
    args = check_cmd.split()[1:]  # `.venv/bin/loglens` is this interpreter's `loglens`
    result = subprocess.run(
        [sys.executable, "-m", "loglens.cli", *args], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [expected]
