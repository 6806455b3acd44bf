"""Background-task helpers shared by the proxy's long-lived components."""

from __future__ import annotations

import asyncio
import contextlib


async def cancel_and_wait(task: asyncio.Task[None] | None) -> None:
    """Cancel a background task we own and wait until it has really stopped.

    Only the task's own cancellation is absorbed; if the caller itself is being cancelled,
    ``CancelledError`` propagates after the task is gone.
    """
    if task is None or task.done():
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
