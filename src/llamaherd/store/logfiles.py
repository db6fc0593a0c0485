"""Every model's llama-server output in its own rotating file, `folder/<model>.log`.

The event loop never touches the disk, and pays one deque append per line: a writer thread
takes the waiting lines every WRITE_INTERVAL_S and writes them with one write and one flush
per model and batch (a log record, a lock and a flush per line cost llamaherd more CPU per
proxied request than the request itself), rotated at `max_bytes`, keeping `backup_count` old
files (`<model>.log.1` is the newest of them).

A model id becomes a file name only when it is plainly one (letters, digits, `.`, `_`, `-`,
starting with a letter or digit); any other id (`org/model`, `../x`) gets a name made of its
safe characters and a hash of the whole id, so no id can name a path outside `folder`.

A full disk, an unwritable folder or a full queue never reaches the ring's callback: the first
failure logs one warning, the lines are dropped, each new line tries again, and the first line
written after a failure logs that the files are written again.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

from llamaherd.supervisor.output import LogRing

logger = logging.getLogger("llamaherd.store")

QUEUE_LINES = 10_000  # lines waiting for the writer thread before new ones are dropped
WRITE_INTERVAL_S = 0.2
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


class _ModelFile:
    """One model's file, rotated at `max_bytes` (`.1` is the newest old one); used only by the
    writer thread. Its errors go to `_Trouble`, never to stderr."""

    def __init__(self, path: Path, max_bytes: int, backup_count: int, trouble: _Trouble):
        self.path = path
        self.max_bytes = max_bytes
        self.backup_count = backup_count
        self._trouble = trouble
        self._stream: IO[str] | None = None
        self._size = 0

    def write(self, lines: list[str]) -> None:
        """Append `lines` (each ending in a newline), rotating between lines as needed."""
        try:
            stream = self._open()
            for line in lines:
                size = len(line.encode("utf-8", "replace"))
                if self._size and self._size + size > self.max_bytes:
                    stream = self._rotate()
                stream.write(line)
                self._size += size
            stream.flush()
        except (OSError, ValueError) as exc:
            self._trouble.failed(exc, dropped=len(lines))
            self._drop_stream()  # what it still buffers cannot be written either
            return
        self._trouble.succeeded()

    def _open(self) -> IO[str]:
        if self._stream is None:
            # Made again on every try while it is missing: a folder deleted while serving.
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._stream = open(self.path, "a", encoding="utf-8", errors="replace")  # noqa: SIM115
            self._size = self._stream.tell()
        return self._stream

    def _rotate(self) -> IO[str]:
        self._drop_stream()
        for n in range(self.backup_count - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{n}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{n + 1}"))
        if self.path.exists():
            self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        return self._open()

    def _drop_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            with contextlib.suppress(OSError, ValueError):
                stream.close()

    def close(self) -> None:
        self._drop_stream()


class _Writer(threading.Thread):
    """Drains the lines the event loop left, a batch at a time: one write and one flush per
    model and batch, not per line."""

    def __init__(self, owner: ServerLogFiles) -> None:
        super().__init__(name="llamaherd-logfiles", daemon=True)
        self._owner = owner
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(WRITE_INTERVAL_S):
            self._owner._write_pending()
        self._owner._write_pending()  # what came before the stop

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


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
        self._queue_lines = queue_lines
        # (file stem, unix time, line): appended by the loop, taken by the writer thread;
        # a deque's append and popleft are safe across threads without a lock.
        self._pending: collections.deque[tuple[str, float, str]] = collections.deque()
        self._files: dict[str, _ModelFile] = {}  # touched only by the writer thread
        self._writer: _Writer | None = None
        self._unsubscribes: dict[str, Callable[[], None]] = {}

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def path_for(self, model: str) -> Path:
        """Where `model`'s output is written (its older files add `.1`, `.2`, …)."""
        return self.folder / f"{file_stem(model)}.log"

    def start(self) -> None:
        """Start the writer thread (lines attached before it wait in the queue)."""
        if self.enabled and self._writer is None:
            self._writer = _Writer(self)
            self._writer.start()

    def attach(self, model: str, ring: LogRing) -> None:
        """Write every new line of `ring` to `model`'s file (again attached: the new ring)."""
        if not self.enabled:
            return
        if model in self._unsubscribes:
            self._unsubscribes.pop(model)()
        stem = file_stem(model)
        pending = self._pending
        limit = self._queue_lines

        def write(lines: Sequence[str]) -> None:  # on the event loop, once per read: keep it tiny
            room = limit - len(pending)
            if room < len(lines):
                self._trouble.failed(None, dropped=len(lines) - max(0, room))
            now = time.time()
            pending.extend((stem, now, line) for line in lines[: max(0, room)])

        self._unsubscribes[model] = ring.subscribe_batches(write)

    def close(self) -> None:
        """Stop listening, write what waits, close the files. Blocks: see `aclose`."""
        for unsubscribe in self._unsubscribes.values():
            unsubscribe()
        self._unsubscribes.clear()
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.stop()  # writes every waiting line first
        for file in self._files.values():
            file.close()
        self._files.clear()

    def _write_pending(self) -> None:
        """On the writer thread: every waiting line, grouped by model, stamped in UTC."""
        by_model: dict[str, list[str]] = {}
        pending = self._pending
        for _ in range(len(pending)):
            stem, at, line = pending.popleft()
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at))
            by_model.setdefault(stem, []).append(f"{stamp}.{int(at % 1 * 1000):03d}Z {line}\n")
        for stem, lines in by_model.items():
            file = self._files.get(stem)
            if file is None:
                path = self.folder / f"{stem}.log"
                file = self._files[stem] = _ModelFile(
                    path, self.max_bytes, self.backup_count, self._trouble
                )
            file.write(lines)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)
