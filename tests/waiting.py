"""Waiting in a test for a fact nobody announces (a count, a phase, a log line): ask again until
a deadline, then fail naming what was awaited. One `until` for every test that polls."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

POLL_S = 0.02


async def until(
    condition: Callable[[], bool], what: str = "the condition holds", *, timeout: float = 30.0
) -> None:
    """Return once `condition()` is true; AssertionError after `timeout` seconds. The timeout
    only bounds a failure: a passing test waits no longer for a larger one."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting until {what}")
        await asyncio.sleep(POLL_S)
