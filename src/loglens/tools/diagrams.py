"""Render the architecture diagrams: `diagrams/src/*.dot` → `diagrams/*.png` with Graphviz `dot`.

`python -m loglens.tools.diagrams` (what `make diagrams` runs) renders every source. Each PNG gets a
`tEXt` chunk holding the SHA-256 of the source it was drawn from, so a test can tell a committed
PNG that no longer matches its source, whatever Graphviz version drew it.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SOURCE_KEY = "loglens-source-sha256"


class DiagramError(RuntimeError):
    """`dot` is missing or rejected a source; the message says which and why."""


def source_digest(source: Path) -> str:
    """SHA-256 of a diagram source, as stored in the PNG rendered from it."""
    return hashlib.sha256(source.read_bytes()).hexdigest()


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, payload) of every chunk of a PNG; ValueError when `data` is not a well-formed PNG."""
    if not data.startswith(PNG_SIGNATURE):
        raise ValueError("not a PNG (bad signature)")
    chunks, pos = [], len(PNG_SIGNATURE)
    while pos < len(data):
        if pos + 8 > len(data):
            raise ValueError("truncated chunk header")
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        payload = data[pos + 8 : pos + 8 + length]
        crc = data[pos + 8 + length : pos + 12 + length]
        if len(payload) != length or len(crc) != 4 or struct.unpack(">I", crc)[0] != zlib.crc32(kind + payload):
            raise ValueError(f"corrupt {kind!r} chunk")
        chunks.append((kind, payload))
        pos += 12 + length
    if not chunks or chunks[0][0] != b"IHDR" or chunks[-1][0] != b"IEND":
        raise ValueError("PNG must start with IHDR and end with IEND")
    return chunks


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) in pixels."""
    width, height = struct.unpack(">II", png_chunks(data)[0][1][:8])
    return width, height


def png_text(data: bytes) -> dict[str, str]:
    """The PNG's `tEXt` key/value pairs."""
    out = {}
    for kind, payload in png_chunks(data):
        if kind == b"tEXt" and b"\0" in payload:
            key, value = payload.split(b"\0", 1)
            out[key.decode("latin-1")] = value.decode("latin-1")
    return out


def _with_text(data: bytes, key: str, value: str) -> bytes:
    """`data` with a tEXt chunk inserted right after IHDR (any chunk with the same key dropped)."""
    chunks = [(k, p) for k, p in png_chunks(data) if not (k == b"tEXt" and p.split(b"\0", 1)[0] == key.encode())]
    chunks.insert(1, (b"tEXt", key.encode("latin-1") + b"\0" + value.encode("latin-1")))
    body = b"".join(struct.pack(">I", len(p)) + k + p + struct.pack(">I", zlib.crc32(k + p)) for k, p in chunks)
    return PNG_SIGNATURE + body


def render(source: Path, out: Path, dot: str = "dot", dpi: int = 110) -> Path:
    """Render one .dot file to `out` (PNG) and stamp the source digest into it."""
    exe = shutil.which(dot)
    if exe is None:
        raise DiagramError(
            f"Graphviz `{dot}` not found: install Debian's graphviz package (make setup does it when run as root)"
        )
    # -Gdpi keeps text crisp; the source decides layout, fonts and colours.
    proc = subprocess.run([exe, "-Tpng", f"-Gdpi={dpi}", str(source)], capture_output=True, check=False)
    if proc.returncode != 0 or not proc.stdout.startswith(PNG_SIGNATURE):
        message = proc.stderr.decode(errors="replace").strip() or f"exit code {proc.returncode}"
        raise DiagramError(f"{source}: dot failed: {message}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(_with_text(proc.stdout, SOURCE_KEY, source_digest(source)))
    return out


def render_all(src_dir: Path, out_dir: Path, dot: str = "dot") -> list[Path]:
    """Render every `*.dot` in `src_dir` to `out_dir/<name>.png`; the written paths, sorted."""
    sources = sorted(src_dir.glob("*.dot"))
    if not sources:
        raise DiagramError(f"no .dot sources in {src_dir}")
    return [render(s, out_dir / f"{s.stem}.png", dot) for s in sources]


def main(argv: list[str] | None = None) -> int:
    """CLI of `python -m loglens.tools.diagrams`; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m loglens.tools.diagrams", description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=Path("diagrams/src"), help="directory of .dot sources")
    parser.add_argument("--out", type=Path, default=Path("diagrams"), help="directory for the PNGs")
    parser.add_argument("--dot", default="dot", help="Graphviz dot executable")
    args = parser.parse_args(argv)
    try:
        written = render_all(args.src, args.out, args.dot)
    except DiagramError as exc:
        print(f"diagrams: {exc}", file=sys.stderr)
        return 1
    for path in written:
        width, height = png_size(path.read_bytes())
        print(f"wrote {path} ({width}x{height})")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
