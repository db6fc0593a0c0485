"""Reading a child's stdout and stderr without ever letting its pipes fill.

Each pipe is read by a protocol (no task), split into lines, and the lines of each read go, as
one batch, to a bounded ring buffer (for `/api/llama/logs` and for crash evidence) and
to whoever listens for new lines (the live log view, log files, and the debug log). Batches,
not lines: llama-server prints several lines per request, and handing them on one by one
(each through every listener) was about a quarter of llamaherd's CPU per request (bench/
gateway.py, part 4). A chatty child never blocks on a full pipe, and an endless line without a
newline cannot grow memory without bound.
"""

from __future__ import annotations

import asyncio
import codecs
import collections
import logging
import os
import re
from collections.abc import Callable, Iterator, Sequence
from typing import cast

MAX_LINE_CHARS = 8192
# How long a pipe is left to gather output after a read, while nobody waits for single lines.
# llama-server writes each of its ~9 lines per request on its own, so a pipe read at once
# meant nine reads, decodes and rounds of listeners per request; this makes it one per window
# at any rate. A pipe holds 64 KiB, and llama-server prints about 1 KiB per request: at
# thousands of requests a second it still never waits for us to read.
GATHER_S = 0.01
EVIDENCE_LINES = 5  # lines of a dead server's output quoted in last_error

LineListener = Callable[[str], None]
BatchListener = Callable[[Sequence[str]], None]

logger = logging.getLogger("llamaherd.supervisor")


class LogRing:
    """The last `capacity` lines of output, shared by every run of one llama-server."""

    def __init__(self, capacity: int = 2000) -> None:
        self._lines: collections.deque[str] = collections.deque(maxlen=capacity)
        self._listeners: list[BatchListener] = []
        self._line_listeners = 0  # those that asked for each line (see `gather_s`)
        self.appended = 0  # lines ever appended: a position that survives the ring's wrap

    def append(self, line: str) -> None:
        self.extend((line,))

    def extend(self, lines: Sequence[str]) -> None:
        """Append `lines` in order; every listener hears them as one batch."""
        if not lines:
            return
        self._lines.extend(lines)
        self.appended += len(lines)
        for listener in tuple(self._listeners):
            try:
                listener(lines)
            except Exception:
                logger.exception("a log listener failed; it stays subscribed")

    def tail(self, n: int) -> list[str]:
        if n <= 0:
            return []
        return list(self._lines)[-n:]

    def since(self, position: int, limit: int) -> list[str]:
        """The last `limit` lines of those appended after `position` (an `appended` value)."""
        return self.tail(min(limit, self.appended - position))

    def gather_s(self) -> float:
        """How long the output may gather before it is read: none while a line listener
        waits (the readiness wait for llama-server's "listening" line), else GATHER_S."""
        return 0.0 if self._line_listeners else GATHER_S

    def subscribe(self, listener: LineListener) -> Callable[[], None]:
        """Call `listener` with each new line, as soon as it is printed."""

        def each(lines: Sequence[str]) -> None:
            for line in lines:
                listener(line)

        unsubscribe_batches = self.subscribe_batches(each)
        self._line_listeners += 1
        subscribed = True

        def unsubscribe() -> None:
            nonlocal subscribed
            if subscribed:
                subscribed = False
                self._line_listeners -= 1
                unsubscribe_batches()

        return unsubscribe

    def subscribe_batches(self, listener: BatchListener) -> Callable[[], None]:
        """Call `listener` with the new lines of each read, in order (never empty); they may
        be up to GATHER_S late."""
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


class PipeReader(asyncio.Protocol):
    """Reads one of a child's pipes into `sink`, the complete lines of each read at once, with
    no task in between: llama-server's lines are handled in the very callback that read them.

    After a read, the pipe is left unread for `gather_s()` seconds (when that is above 0), so
    that what the child prints meanwhile is read in one go: one read and one callback for a
    window's lines rather than one per line. `drained` is done once the pipe has closed and
    the last line has gone to `sink`."""

    def __init__(self, sink: Callable[[list[str]], None], gather_s: Callable[[], float]) -> None:
        self._sink = sink
        self._gather_s = gather_s
        # Incremental: a multi-byte character split across two reads is decoded whole.
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""
        self._transport: asyncio.ReadTransport | None = None
        self._resume: asyncio.TimerHandle | None = None
        self.drained: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A read pipe transport (uvloop's is not an asyncio.ReadTransport subclass, but has
        # the same pause_reading and resume_reading).
        self._transport = cast(asyncio.ReadTransport, transport)

    def data_received(self, data: bytes) -> None:
        lines, self._pending = _split_lines(self._pending, self._decoder.decode(data))
        if lines:
            self._sink(lines)
        pause = self._gather_s()
        if pause > 0 and self._transport is not None and self._resume is None:
            self._transport.pause_reading()
            self._resume = asyncio.get_running_loop().call_later(pause, self._read_again)

    def _read_again(self) -> None:
        self._resume = None
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._resume is not None:
            self._resume.cancel()
            self._resume = None
        self._transport = None
        lines, rest = _split_lines(self._pending, self._decoder.decode(b"", final=True))
        if rest:
            lines.append(rest)
        self._pending = ""
        try:
            if lines:
                self._sink(lines)
        finally:
            if not self.drained.done():
                self.drained.set_result(None)


async def read_pipe(
    fd: int, sink: Callable[[list[str]], None], gather_s: Callable[[], float]
) -> PipeReader:
    """Start reading the pipe `fd` (which it then owns and closes) into `sink`."""
    loop = asyncio.get_running_loop()
    pipe = os.fdopen(fd, "rb", buffering=0)
    try:
        _, reader = await loop.connect_read_pipe(lambda: PipeReader(sink, gather_s), pipe)
    except BaseException:
        pipe.close()
        raise
    return reader


# Whole words only: "error" inside a file name (".../error_cases/model.gguf") is no complaint.
_TROUBLE = re.compile(
    r"\b(errors?|fail(s|ed|ure)?|abort(ed)?|assert(ion)?|exception|fatal|panic|cannot|unable)\b",
    re.I,
)
# Complaints that only repeat that something failed, printed after the line that says why
# (llama-server: "error loading model: <cause>", then "failed to load model", then "exiting
# due to model loading error"). They are kept, but ranked below any line that names a cause.
_GENERIC = re.compile(
    r"failed to load model|exiting due to|model loading error|^\W*(error|fatal)\W*$|"
    r"failed to initiali[sz]e|unable to load model",
    re.I,
)
# Lines that name a cause outright.
_CAUSE = re.compile(
    r"GGML_ASSERT|invalid magic|permission denied|no such file|out of memory|"
    r"cannot allocate|couldn't bind|address already in use|unknown (model )?architecture|"
    r"invalid argument|not enough (memory|space)|corrupt(ed)? (file|data|model)|segmentation",
    re.I,
)


def _severity(line: str) -> int:
    if _CAUSE.search(line):
        return 3
    if _TROUBLE.search(line):
        return 1 if _GENERIC.search(line) else 2
    return 0


def telling_lines(output: Sequence[str], limit: int = EVIDENCE_LINES) -> list[str]:
    """The lines of a dead server's output worth quoting, in the order they were printed.

    Its complaints if it made any, the ones that name a cause (GGML_ASSERT, "invalid magic
    characters", "Permission denied") before the ones that only say that loading failed;
    without complaints, simply its last lines."""
    ranked = [(_severity(line), index) for index, line in enumerate(output)]
    complaints = [item for item in ranked if item[0] > 0]
    if not complaints:
        return list(output)[-limit:]
    # The most severe first, the latest first among equals; then back into printed order.
    chosen = sorted(complaints, key=lambda item: (-item[0], -item[1]))[:limit]
    return [output[index] for _, index in sorted(chosen, key=lambda item: item[1])]


def main_complaint(output: Sequence[str]) -> str | None:
    """The one line that best says why a server died, or None if it made no complaint."""
    best = max(
        ((_severity(line), index) for index, line in enumerate(output)),
        default=(0, -1),
    )
    return output[best[1]].strip() if best[0] > 0 else None
