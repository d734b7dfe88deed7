"""Background coroutines of the running server: started as named tasks, stopped by cancelling."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any


def start_task(coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
    """Run `coro` as a task named `name` (shown in task dumps) on the running event loop."""
    return asyncio.get_running_loop().create_task(coro, name=name)


async def cancel_task(task: asyncio.Task[None] | None) -> None:
    """Cancel `task` (None: nothing to do) and wait until it has unwound."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
