"""Where alerts go: a webhook (POST the JSON) or a command (the JSON on stdin and in env).

Each `send` is one attempt: it returns on success and raises AttemptFailed, with a reason fit
for the log (no URL, no arguments: they may hold secrets), on anything else. Retrying is the
outbox's business.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable
from typing import Protocol

import aiohttp

from llamaherd.alerts.payload import Alert

STDERR_TAIL_BYTES = 4096  # of a failed command's stderr, for its last line in the log


class AttemptFailed(Exception):
    """One delivery attempt failed; the message says why, without secrets."""


class Destination(Protocol):
    label: str  # how logs name it: no secrets

    async def send(self, alert: Alert) -> None: ...


class Webhook:
    """POST the payload; any 2xx answer is a success, anything else (3xx too) a failure."""

    def __init__(
        self, url: str, label: str, session: Callable[[], aiohttp.ClientSession], timeout_s: float
    ) -> None:
        self.url = url
        self.label = label
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._timeout_s = timeout_s

    async def send(self, alert: Alert) -> None:
        headers = {"Content-Type": "application/json"}
        try:
            async with self._session().post(
                self.url,
                data=alert.body,
                headers=headers,
                timeout=self._timeout,
                allow_redirects=False,
            ) as response:
                if not 200 <= response.status < 300:
                    raise AttemptFailed(f"answered {response.status} {response.reason or ''}")
        except TimeoutError as exc:
            raise AttemptFailed(f"no answer within {self._timeout_s:g} s") from exc
        except aiohttp.ClientConnectorError as exc:
            raise AttemptFailed(f"cannot connect: {exc.os_error.strerror or exc}") from exc
        except aiohttp.ClientError as exc:
            # Only the kind: some aiohttp errors spell out the whole URL, secrets and all.
            raise AttemptFailed(type(exc).__name__) from exc


class Command:
    """Run the command (never through a shell) with the payload on stdin and in its
    environment; killed, with every process it started, after `timeout_s`; exit 0 is a
    success."""

    def __init__(self, argv: tuple[str, ...], timeout_s: float) -> None:
        self.argv = argv
        self.label = f"command {argv[0]}"
        self._timeout_s = timeout_s

    async def send(self, alert: Alert) -> None:
        # The command inherits llamaherd's environment, as any program it starts would.
        env = {
            **os.environ,
            "LLAMAHERD_ALERT": alert.body.decode(),
            "LLAMAHERD_ALERT_EVENT": alert.event,
            "LLAMAHERD_ALERT_MODEL": alert.model,
        }
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                start_new_session=True,  # its own group, so a timeout kills its children too
            )
        except OSError as exc:
            raise AttemptFailed(f"cannot run it: {exc.strerror or exc}") from exc
        try:
            async with asyncio.timeout(self._timeout_s):
                code, stderr = await _feed_and_wait(proc, alert.body)
        except TimeoutError as exc:
            raise AttemptFailed(f"did not finish within {self._timeout_s:g} s; killed it") from exc
        finally:
            # Timed out or cancelled: not reaped yet, so its pid still names its group. The
            # group, because a child left holding stderr would keep the attempt waiting.
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        if code != 0:
            lines = stderr.decode(errors="replace").strip().splitlines()
            raise AttemptFailed(f"exited with code {code}" + (f": {lines[-1]}" if lines else ""))


async def _feed_and_wait(proc: asyncio.subprocess.Process, body: bytes) -> tuple[int, bytes]:
    """Write `body` to stdin, keep the tail of stderr, and wait for the exit."""
    assert proc.stdin is not None and proc.stderr is not None
    try:
        proc.stdin.write(body)
        await proc.stdin.drain()
    except (BrokenPipeError, ConnectionResetError):
        pass  # it need not read its stdin: the payload is in its environment too
    finally:
        proc.stdin.close()
    tail = b""
    while chunk := await proc.stderr.read(STDERR_TAIL_BYTES):
        tail = (tail + chunk)[-STDERR_TAIL_BYTES:]
    return await proc.wait(), tail
