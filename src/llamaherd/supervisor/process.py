"""Launching one llama-server as a child process and ending it: the launcher seam.

The child runs in its own session (so signals reach the whole process group, never llamaherd)
and, on Linux, with a parent-death signal: if llamaherd itself is killed with SIGKILL, the kernel
sends SIGKILL to llama-server too, so no server lives on unseen. A server that survives anyway
(another OS, a reparented grandchild) is adopted at the next start when it answers /health.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import sys
from collections.abc import Sequence

import psutil

from llamaherd.errors import BinaryNotFoundError
from llamaherd.supervisor.output import LogRing, PipeReader, read_pipe
from llamaherd.supervisor.states import ExitInfo

logger = logging.getLogger("llamaherd.supervisor")
server_log = logging.getLogger("llamaherd.llama_server")

_PR_SET_PDEATHSIG = 1


def _load_prctl() -> ctypes.CDLL | None:
    # Resolved once, in the parent: the code that runs between fork and exec must not import.
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None


_LIBC = _load_prctl()


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def exit_info(returncode: int | None, last_output: Sequence[str] = ()) -> ExitInfo:
    signal_name = None
    if returncode is not None and returncode < 0:
        try:
            signal_name = signal.Signals(-returncode).name
        except ValueError:
            signal_name = f"signal {-returncode}"
    return ExitInfo(returncode=returncode, signal_name=signal_name, last_output=tuple(last_output))


class LlamaProcess:
    """One running llama-server child, the readers of its output, and how to end it."""

    def __init__(self, proc: asyncio.subprocess.Process, readers: list[PipeReader]) -> None:
        self._proc = proc
        self._readers = readers

    @classmethod
    async def spawn(cls, argv: Sequence[str], output: LogRing) -> LlamaProcess:
        """Start `argv` (an argument list, never a shell) in a new session."""
        # Our own pipes rather than asyncio's StreamReaders: read by a protocol, a line needs
        # no task step to be handled, and the pipe can be left to gather (see PipeReader).
        out_read, out_write = os.pipe()
        err_read, err_write = os.pipe()
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out_write,
                stderr=err_write,
                start_new_session=True,
                preexec_fn=_die_with_parent if _LIBC is not None else None,
            )
        except (FileNotFoundError, PermissionError) as exc:
            os.close(out_read)
            os.close(err_read)
            raise BinaryNotFoundError(
                f"cannot run llama-server binary {argv[0]!r}: {exc.strerror}; "
                "give the path of an executable llama-server"
            ) from exc
        except BaseException:
            os.close(out_read)
            os.close(err_read)
            raise
        finally:
            os.close(out_write)  # the child has its copies; ours would hold the pipes open
            os.close(err_write)

        def keep(lines: list[str]) -> None:
            output.extend(lines)
            # DEBUG: llama-server prints a hundred lines per start; `serve -v` shows them.
            if server_log.isEnabledFor(logging.DEBUG):
                for line in lines:
                    server_log.debug("[pid %d] %s", proc.pid, line)

        readers = [
            await read_pipe(out_read, keep, output.gather_s),
            await read_pipe(err_read, keep, output.gather_s),
        ]
        return cls(proc, readers)

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode

    async def wait(self) -> int:
        """Wait for the exit and for the last of its output to be read."""
        code = await self._proc.wait()
        # Pipes may stay open in a grandchild; the exit is what counts.
        await asyncio.wait([reader.drained for reader in self._readers], timeout=1.0)
        return code

    def signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)

    async def terminate(self, timeout_s: float) -> int:
        """SIGTERM to the process group, then SIGKILL after `timeout_s`; returns the exit code."""
        if self._proc.returncode is not None:
            return self._proc.returncode
        self.signal_group(signal.SIGTERM)
        try:
            async with asyncio.timeout(timeout_s):
                return await self.wait()
        except TimeoutError:
            logger.warning(
                "Force killing llama server process (pid %d): no exit %g s after SIGTERM",
                self.pid,
                timeout_s,
            )
            self.signal_group(signal.SIGKILL)
            return await self.wait()

    async def kill(self) -> int:
        """SIGKILL the process group at once (a hung server will not answer SIGTERM)."""
        # A SIGSTOPped process still dies of SIGKILL; SIGCONT is not needed.
        self.signal_group(signal.SIGKILL)
        return await self.wait()


def resident_bytes(pid: int) -> int:
    """The resident memory of process `pid` (blocking: call it in a worker thread). Raises
    psutil.Error or OSError when the process is gone or cannot be read."""
    return int(psutil.Process(pid).memory_info().rss)
