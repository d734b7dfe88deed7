"""The server caps glibc's malloc arenas (loglens.ops.malloc), in a real child process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from loglens.ops.malloc import _glibc

SRC = Path(__file__).resolve().parents[2] / "src"

# Starts 8 threads that stay alive together and each allocate with glibc's malloc (outside the
# GIL), then counts the arenas glibc reports in malloc_info's XML (one <heap nr=...> per arena).
_CHILD = r"""
import ctypes, ctypes.util, os, sys, tempfile, threading
from loglens.ops.malloc import cap_malloc_arenas
if sys.argv[1] == "cap":
    assert cap_malloc_arenas(2)
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.fopen.restype = ctypes.c_void_p
libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
libc.fclose.argtypes = [ctypes.c_void_p]
ready = threading.Barrier(9)
done = threading.Event()
def work():
    for _ in range(100):
        libc.malloc(4096)
    ready.wait()
    done.wait()
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads:
    t.start()
ready.wait()
path = os.path.join(tempfile.mkdtemp(), "info.xml")
f = libc.fopen(path.encode(), b"w")
libc.malloc_info(0, f)
libc.fclose(f)
done.set()
print(open(path).read().count("<heap nr="))
"""


def _arenas(mode: str) -> int:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    env["PYTHONPATH"] = str(SRC)
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, mode], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    return int(out.stdout.strip())


@pytest.mark.skipif(_glibc() is None, reason="glibc only")
def test_cap_limits_the_arenas_of_many_allocating_threads() -> None:
    uncapped = _arenas("free")
    assert uncapped > 2, "the check needs glibc's default: a new arena per allocating thread"
    assert _arenas("cap") <= 2


@pytest.mark.skipif(_glibc() is None, reason="glibc only")
def test_operator_setting_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    from loglens.ops.malloc import cap_malloc_arenas

    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert cap_malloc_arenas() is False
