"""The architecture diagrams: their sources render, the committed PNGs match them, and every
module they name exists (and every stage module is named), so the pictures cannot drift."""

from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path

import pytest

from loglens.tools import diagrams

ROOT = Path(__file__).resolve().parents[2]
SRC_DIR = ROOT / "diagrams" / "src"
PKG = ROOT / "src" / "loglens"
SOURCES = {"system_architecture", "data_flow"}
# A path-like module reference in a label: `ingest/pipeline.py`, `sql/*.sql`, `detect/*`, `dashboard/static`.
_MODULE_RE = re.compile(r"(?<![\w/.-])((?:[a-z_]+/)*(?:[a-z_*]+\.(?:py|sql|yaml)|\*|static))(?![\w/])")
STAGES = ("Apps", "Collect", "Store", "Find Problems", "Send Alerts", "Dashboard", "Dask", "Ray")


def _text(name: str) -> str:
    return (SRC_DIR / f"{name}.dot").read_text(encoding="utf-8")


def _module_refs(text: str) -> set[str]:
    return set(_MODULE_RE.findall(text))


def _exists(ref: str) -> bool:
    """A reference resolves under src/loglens (modules) or the repo root (schemas/*.yaml)."""
    return any(any(base.glob(ref)) for base in (PKG, ROOT))


def test_sources_are_the_two_diagrams() -> None:
    assert {p.stem for p in SRC_DIR.glob("*.dot")} == SOURCES


def test_sources_render_to_valid_pngs(tmp_path: Path) -> None:
    written = diagrams.render_all(SRC_DIR, tmp_path)
    assert [p.name for p in written] == sorted(f"{s}.png" for s in SOURCES)
    for path in written:
        data = path.read_bytes()
        width, height = diagrams.png_size(data)  # also checks every chunk's CRC
        # Big enough to carry module names legibly, small enough to show in a browser.
        assert 1200 <= width <= 8000 and 600 <= height <= 6000, (path.name, width, height)
        assert 50_000 < len(data) < 5_000_000
        assert diagrams.png_text(data)[diagrams.SOURCE_KEY] == diagrams.source_digest(SRC_DIR / f"{path.stem}.dot")


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_committed_png_was_rendered_from_the_current_source(name: str) -> None:
    png = ROOT / "diagrams" / f"{name}.png"
    data = png.read_bytes()
    assert diagrams.png_size(data)[0] > 0
    assert diagrams.png_text(data).get(diagrams.SOURCE_KEY) == diagrams.source_digest(SRC_DIR / f"{name}.dot"), (
        f"{png.relative_to(ROOT)} is stale: run `make diagrams` and commit the PNG"
    )


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_every_module_a_diagram_names_exists(name: str) -> None:
    refs = _module_refs(_text(name))
    assert len(refs) >= 20, refs  # the diagrams are meant to name real modules
    missing = sorted(r for r in refs if not _exists(r))
    assert not missing, f"{name}.dot names modules that do not exist under src/loglens: {missing}"


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_every_diagram_shows_every_stage(name: str) -> None:
    text = _text(name)
    for stage in STAGES:
        assert stage in text, f"{name}.dot does not show {stage!r}"
    assert "dead_letter" in text and "ingest/replay.py" in text
    assert "analyze/" in text


def test_architecture_names_every_stage_module() -> None:
    """A new collector, detector, notifier or batch module must appear in the picture."""
    refs = _module_refs(_text("system_architecture"))
    wanted = {
        str(p.relative_to(PKG))
        for pkg in ("ingest", "detect", "notify", "analyze", "alerting")
        for p in (PKG / pkg).glob("*.py")
        if p.name != "__init__.py"
    }
    wanted |= {
        "schema/__init__.py",
        "schema/fast.py",
        "store/*",
        "metrics.py",
        "ingest/replay.py",
        "store/queries.py",
        "store/wal.py",
        "store/loader.py",
        "api/app.py",
        "api/events.py",
        "api/routes/ingest.py",
    }
    assert not sorted(wanted - refs), f"system_architecture.dot misses: {sorted(wanted - refs)}"


def test_module_regex_reads_paths_not_prose() -> None:
    refs = _module_refs(
        '<font>ingest/otlp.py · sql/*.sql · detect/* · dashboard/static</font> schema.py, x.y "loglens.notifiers"'
    )
    assert refs == {"ingest/otlp.py", "sql/*.sql", "detect/*", "dashboard/static", "schema.py"}
    assert not _exists("ingest/nope.py") and _exists("schemas/log_schema.yaml")


def test_cli_renders_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert diagrams.main(["--src", str(SRC_DIR), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "data_flow.png (" in out and "system_architecture.png (" in out
    assert diagrams.main(["--src", str(tmp_path / "empty"), "--out", str(tmp_path)]) == 1
    assert "no .dot sources" in capsys.readouterr().err
    assert diagrams.main(["--src", str(SRC_DIR), "--out", str(tmp_path), "--dot", "no-such-graphviz"]) == 1
    assert "graphviz" in capsys.readouterr().err


def test_broken_source_reports_dots_message(tmp_path: Path) -> None:
    bad = tmp_path / "bad.dot"
    bad.write_text("digraph { a -> }\n", encoding="utf-8")
    with pytest.raises(diagrams.DiagramError, match=r"bad\.dot: dot failed: .*syntax error"):
        diagrams.render(bad, tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


def test_rerender_replaces_the_digest(tmp_path: Path) -> None:
    src = tmp_path / "g.dot"
    src.write_text("digraph { a -> b }\n", encoding="utf-8")
    first = diagrams.render(src, tmp_path / "g.png").read_bytes()
    src.write_text("digraph { a -> c }\n", encoding="utf-8")
    again = diagrams._with_text(first, diagrams.SOURCE_KEY, diagrams.source_digest(src))
    texts = [p for k, p in diagrams.png_chunks(again) if k == b"tEXt"]
    assert len([t for t in texts if t.startswith(diagrams.SOURCE_KEY.encode())]) == 1
    assert diagrams.png_text(again)[diagrams.SOURCE_KEY] == diagrams.source_digest(src)


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"GIF89a", "bad signature"),
        (diagrams.PNG_SIGNATURE + b"\0\0", "truncated"),
        (diagrams.PNG_SIGNATURE + _chunk(b"IHDR", b"\0" * 13)[:-1] + b"\0", "corrupt"),
        (diagrams.PNG_SIGNATURE + _chunk(b"IEND", b""), "IHDR"),
    ],
)
def test_malformed_pngs_are_rejected(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        diagrams.png_chunks(data)
