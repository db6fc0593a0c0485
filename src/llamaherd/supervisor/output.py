"""Reading a child's stdout and stderr without ever letting its pipes fill.

Each stream is drained by its own task in chunks, split into lines, and every line goes to a
bounded ring buffer (for `/api/llama/logs` and for crash evidence) and to whoever listens for
new lines (the live log view, and the debug log). A chatty child never blocks on a full pipe, and an
endless line without a newline cannot grow memory without bound.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import re
from collections.abc import Callable, Iterator, Sequence

MAX_LINE_CHARS = 8192
EVIDENCE_LINES = 5  # lines of a dead server's output quoted in last_error
READ_CHUNK_BYTES = 65536

LineListener = Callable[[str], None]

logger = logging.getLogger("llamaherd.supervisor")


class LogRing:
    """The last `capacity` lines of output, shared by every run of one llama-server."""

    def __init__(self, capacity: int = 2000) -> None:
        self._lines: collections.deque[str] = collections.deque(maxlen=capacity)
        self._listeners: list[LineListener] = []

    def append(self, line: str) -> None:
        self._lines.append(line)
        for listener in list(self._listeners):
            try:
                listener(line)
            except Exception:
                logger.exception("a log listener failed; it stays subscribed")

    def tail(self, n: int) -> list[str]:
        if n <= 0:
            return []
        return list(self._lines)[-n:]

    def subscribe(self, listener: LineListener) -> Callable[[], None]:
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._lines))

    def __len__(self) -> int:
        return len(self._lines)


def _split_lines(pending: str, chunk: str) -> tuple[list[str], str]:
    text = pending + chunk
    *complete, rest = text.split("\n")
    # An endless line is cut into pieces rather than held in memory.
    while len(rest) > MAX_LINE_CHARS:
        complete.append(rest[:MAX_LINE_CHARS])
        rest = rest[MAX_LINE_CHARS:]
    return [line.rstrip("\r") for line in complete], rest


async def pump_stream(stream: asyncio.StreamReader, sink: Callable[[str], None]) -> None:
    """Copy `stream` line by line into `sink` until end of file."""
    pending = ""
    while True:
        chunk = await stream.read(READ_CHUNK_BYTES)
        if not chunk:
            break
        lines, pending = _split_lines(pending, chunk.decode("utf-8", errors="replace"))
        for line in lines:
            sink(line)
    if pending:
        sink(pending)


_TROUBLE = re.compile(r"error|fail|abort|assert|exception|fatal|panic|cannot|unable", re.I)


def telling_lines(output: Sequence[str], limit: int = EVIDENCE_LINES) -> list[str]:
    """The lines of a dead server's output worth quoting: its complaints if it made any
    (llama-server logs "failed to load model", GGML_ASSERT...), else simply the last lines."""
    complaints = [line for line in output if _TROUBLE.search(line)]
    return (complaints or list(output))[-limit:]
