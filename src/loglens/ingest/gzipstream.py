"""Reading gzip files so that damage costs only what is damaged.

`gzip.GzipFile` raises EOFError on a truncated file and drops the bytes its last read had
already decompressed, and the CLI's argument library turns an EOFError into a bare "Aborted.".
`gunzip` yields every byte decompressed before the damage and then raises `GzipDamage`, whose
message says what is wrong; `open_gunzip` gives the same as a buffered binary file.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Iterator
from pathlib import Path

from loglens.errors import LoglensError

_GZIP_READ = 16 * 1024  # compressed bytes per decompress() call: what a corrupt stream can lose


class GzipDamage(LoglensError, ValueError):
    """A gzip input is truncated or corrupt (the message says which)."""


def gunzip(path: str | Path, size: int = 1 << 20) -> Iterator[bytes]:
    """The decompressed bytes of a gzip file (every member), in pieces of about `size`.

    A truncated or corrupt stream raises GzipDamage *after* every byte decompressed before the
    damage was yielded (gzip.GzipFile would lose the last read's bytes and raise EOFError).
    """
    with open(path, "rb") as f:
        inflater = zlib.decompressobj(wbits=31)  # 31: gzip header and trailer
        started = False
        while True:
            # small reads: a corrupt stream raises inside decompress() and loses that call's output
            data = inflater.unused_data or f.read(_GZIP_READ)
            if inflater.unused_data:  # the next member of a multi-member file
                inflater = zlib.decompressobj(wbits=31)
                started = False
            if not data:
                if started and not inflater.eof:
                    raise GzipDamage("gzip stream ends early (truncated file)")
                return
            if not started and not data.strip(b"\x00"):
                return  # zero padding after the last member, as gzip(1) allows
            started = True
            try:
                out = inflater.decompress(data, size)
                while out:
                    yield out
                    out = inflater.decompress(inflater.unconsumed_tail, size) if inflater.unconsumed_tail else b""
            except zlib.error as exc:
                raise GzipDamage(f"corrupt gzip stream: {exc}") from None


class _GunzipRaw(io.RawIOBase):
    """A raw binary stream over `gunzip` (use through io.BufferedReader)."""

    def __init__(self, path: str | Path) -> None:
        self._pieces = gunzip(path)
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def readinto(self, target: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._buffer:
            piece = next(self._pieces, None)
            if piece is None:
                return 0
            self._buffer = piece
        n = min(len(target), len(self._buffer))
        target[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        return n


def open_gunzip(path: str | Path) -> io.BufferedReader:
    """The decompressed content of a gzip file as a binary file; reading past damage raises
    GzipDamage after everything before it was returned."""
    return io.BufferedReader(_GunzipRaw(path), buffer_size=1 << 20)
