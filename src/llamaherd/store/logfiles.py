"""Every model's llama-server output in its own rotating file, `folder/<model>.log`.

The event loop never touches the disk: a line from a server's `LogRing` becomes a log record
put on a bounded queue (a `QueueHandler`), and a `QueueListener`'s thread writes it with one
`RotatingFileHandler` per model, rotated at `max_bytes`, keeping `backup_count` old files
(`<model>.log.1` is the newest of them).

A model id becomes a file name only when it is plainly one (letters, digits, `.`, `_`, `-`,
starting with a letter or digit); any other id (`org/model`, `../x`) gets a name made of its
safe characters and a hash of the whole id, so no id can name a path outside `folder`.

A full disk, an unwritable folder or a full queue never reaches the ring's callback: the first
failure logs one warning, the lines are dropped, each new line tries again, and the first line
written after a failure logs that the files are written again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import queue
import re
import sys
import threading
import time
from collections.abc import Callable
from logging.handlers import QueueHandler, QueueListener, RotatingFileHandler
from pathlib import Path

from llamaherd.supervisor.output import LogRing

logger = logging.getLogger("llamaherd.store")

QUEUE_LINES = 10_000  # lines waiting for the writer thread before new ones are dropped
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


def file_stem(model: str) -> str:
    """The file name (without `.log`) for `model`'s output: never a path, never hidden."""
    if _SAFE_ID.fullmatch(model):
        return model
    digest = hashlib.sha256(model.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    readable = _UNSAFE_CHARS.sub("_", model).strip("._-")[:48]
    return f"{readable}-{digest}" if readable else digest


class _Trouble:
    """One warning per failure, one note when writing works again; called from any thread."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.dropped = 0
        self._failing = False
        self._lock = threading.Lock()

    def failed(self, exc: BaseException | None, *, dropped: int = 1) -> None:
        with self._lock:
            self.dropped += dropped
            first, self._failing = not self._failing, True
        if first:
            logger.warning(
                "llama-server log files in %s cannot be written: %s; their lines are dropped "
                "(the dashboard's log view still has them) until they can",
                self.folder,
                exc or "the writer is behind",
            )

    def succeeded(self) -> None:
        if not self._failing:  # the common case: no lock
            return
        with self._lock:
            was_failing, self._failing = self._failing, False
            dropped, self.dropped = self.dropped, 0
        if was_failing:
            logger.warning(
                "llama-server log files in %s are written again; %d lines were dropped",
                self.folder,
                dropped,
            )


class _ModelFile(RotatingFileHandler):
    """One model's rotating file; its errors go to `_Trouble`, never to stderr."""

    def __init__(self, path: Path, max_bytes: int, backup_count: int, trouble: _Trouble):
        super().__init__(
            path, maxBytes=max_bytes, backupCount=backup_count, encoding="utf-8", delay=True
        )
        self._trouble = trouble
        self._ok = True
        formatter = logging.Formatter("%(asctime)s.%(msecs)03dZ %(message)s", "%Y-%m-%dT%H:%M:%S")
        formatter.converter = time.gmtime
        self.setFormatter(formatter)

    def _open(self):  # type: ignore[no-untyped-def]  # typeshed leaves it untyped
        # Made again on every try while it is missing: a folder deleted while serving returns.
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()

    def emit(self, record: logging.LogRecord) -> None:
        self._ok = True
        super().emit(record)  # catches its own errors and calls handleError
        if self._ok:
            self._trouble.succeeded()

    def handleError(self, record: logging.LogRecord) -> None:
        self._ok = False
        self._trouble.failed(sys.exc_info()[1])
        # What the stream still buffers cannot be written either: drop it, open afresh next time.
        stream, self.stream = self.stream, None
        if stream is not None:
            with contextlib.suppress(OSError, ValueError):
                stream.close()


class _ByModel(logging.Handler):
    """Hands each record to its model's file (the record's `name` is the file stem)."""

    def __init__(self, folder: Path, max_bytes: int, backup_count: int, trouble: _Trouble):
        super().__init__()
        self._folder = folder
        self._max_bytes = max_bytes
        self._backup_count = backup_count
        self._trouble = trouble
        self._files: dict[str, _ModelFile] = {}  # touched only by the listener's thread

    def emit(self, record: logging.LogRecord) -> None:
        handler = self._files.get(record.name)
        if handler is None:
            path = self._folder / f"{record.name}.log"
            handler = _ModelFile(path, self._max_bytes, self._backup_count, self._trouble)
            self._files[record.name] = handler
        handler.handle(record)

    def close(self) -> None:
        for handler in self._files.values():
            with contextlib.suppress(OSError, ValueError):  # already reported by handleError
                handler.close()
        self._files.clear()
        super().close()


class _LineQueue(QueueHandler):
    """The event loop's side: puts a line on the queue, drops it if the queue is full."""

    def __init__(self, lines: queue.Queue[logging.LogRecord], trouble: _Trouble):
        super().__init__(lines)
        self._trouble = trouble

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record  # plain text already: formatting waits for the writer's thread

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            self._trouble.failed(None)

    def handleError(self, record: logging.LogRecord) -> None:
        self._trouble.failed(sys.exc_info()[1])


class _Listener(QueueListener):
    def enqueue_sentinel(self) -> None:
        self.queue.put(self._sentinel)  # type: ignore[attr-defined]  # waits for room


class ServerLogFiles:
    def __init__(
        self, folder: Path, *, max_bytes: int, backup_count: int, queue_lines: int = QUEUE_LINES
    ) -> None:
        """`max_bytes == 0`: no files at all (attach does nothing)."""
        if max_bytes < 0 or backup_count < 1:
            raise ValueError("max_bytes must be >= 0 and backup_count >= 1")
        self.folder = Path(folder)
        self.max_bytes = max_bytes
        self.backup_count = backup_count
        self._trouble = _Trouble(self.folder)
        self._lines: queue.Queue[logging.LogRecord] = queue.Queue(queue_lines)
        self._queue = _LineQueue(self._lines, self._trouble)
        self._files = _ByModel(self.folder, max_bytes, backup_count, self._trouble)
        self._listener: _Listener | None = None
        self._unsubscribes: dict[str, Callable[[], None]] = {}

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def path_for(self, model: str) -> Path:
        """Where `model`'s output is written (its older files add `.1`, `.2`, …)."""
        return self.folder / f"{file_stem(model)}.log"

    def start(self) -> None:
        """Start the writer thread (lines attached before it wait in the queue)."""
        if self.enabled and self._listener is None:
            self._listener = _Listener(self._lines, self._files)
            self._listener.start()

    def attach(self, model: str, ring: LogRing) -> None:
        """Write every new line of `ring` to `model`'s file (again attached: the new ring)."""
        if not self.enabled:
            return
        if model in self._unsubscribes:
            self._unsubscribes.pop(model)()
        stem = file_stem(model)

        def write(line: str) -> None:
            self._queue.handle(logging.LogRecord(stem, logging.INFO, "", 0, line, None, None))

        self._unsubscribes[model] = ring.subscribe(write)

    def close(self) -> None:
        """Stop listening, write what waits, close the files. Blocks: see `aclose`."""
        for unsubscribe in self._unsubscribes.values():
            unsubscribe()
        self._unsubscribes.clear()
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.stop()  # writes every queued line first
        self._files.close()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)
