"""Caps glibc's malloc arenas for the server process.

glibc gives every thread that allocates its own arena, up to 8 per core; memory freed in one
arena is never reused by another thread, so a server with many short-lived worker threads
(anyio's pool, asyncio's executor, the writer, loader, dispatcher, evaluator) keeps each arena's
high-water mark and its fragmentation. Python threads run one at a time under the GIL, so
separate arenas buy almost no concurrency; two are enough for the threads that allocate while
the GIL is released (DuckDB and Arrow use their own allocators). Measured in the soak
(docs/benchmarks.md): glibc's share of RSS kept rising with the default arena count.

`MALLOC_ARENA_MAX` in the environment wins (glibc reads it at start-up), so an operator can
still choose. On a non-glibc libc this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

DEFAULT_MAX_ARENAS = 2
_M_ARENA_MAX = -8  # from glibc's malloc.h


def cap_malloc_arenas(max_arenas: int = DEFAULT_MAX_ARENAS) -> bool:
    """Limit glibc to `max_arenas` malloc arenas; True when the limit was set by this call.

    Call it before the server starts its threads: a thread attaches to an arena at its first
    allocation, and arenas already created stay.
    """
    if "MALLOC_ARENA_MAX" in os.environ:
        return False  # the operator's choice, already applied by glibc
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(_M_ARENA_MAX, max_arenas) == 1)


def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (it has `mallopt` and `gnu_get_libc_version`), else None."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return None
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    return libc
