"""One llamaherd per state folder: `hold_state_dir(folder)` for as long as it serves.

Two llamaherds on one `state_dir` would write one history (SQLite) and rotate the same log
files, each unaware of the other. The first takes an exclusive `flock` on
`folder/llamaherd.lock` and writes its pid there; a second finds the lock taken and refuses to
start, naming the first's pid, the folder and the way out.

A flock belongs to the open file, and the kernel releases it when that file is closed, which
the end of its process does however it ends (SIGKILL included): a lock file a crashed llamaherd
left behind holds no lock, and the next one starts. The pid in it is only a note for the
message. The file is opened close-on-exec (Python's default, and subprocess closes other
descriptors too), so a llama-server that outlives llamaherd never holds it.

A folder where the lock file cannot be made (read-only, full, not a folder) does not stop
llamaherd: the history and the log files cope with such a disk on their own, and say so.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from llamaherd.errors import StateDirInUseError

logger = logging.getLogger("llamaherd.store")

LOCK_FILE = "llamaherd.lock"


def _holder(fd: int) -> int | None:
    """The pid the holder of the lock wrote into the file, if it has written one yet."""
    with contextlib.suppress(OSError, ValueError):
        return int(os.pread(fd, 32, 0).decode("ascii").strip())
    return None


def _in_use(folder: Path, fd: int) -> StateDirInUseError:
    pid = _holder(fd)
    who = f"another llamaherd (pid {pid})" if pid else "another llamaherd"
    return StateDirInUseError(
        f"{who} already uses the state folder {folder} (its lock file {folder / LOCK_FILE}): "
        "two would write one history and rotate the same log files. Stop the other llamaherd, "
        "or give this one another state_dir in its config."
    )


def _unguarded(path: Path, exc: OSError) -> None:
    logger.warning(
        "cannot lock %s (%s): nothing keeps a second llamaherd off this state folder",
        path,
        exc.strerror or exc,
    )


@contextlib.contextmanager
def hold_state_dir(folder: Path) -> Iterator[None]:
    """Hold `folder` for this process until the block ends (or the process does). Raises
    StateDirInUseError if another process holds it."""
    path = folder / LOCK_FILE
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        _unguarded(path, exc)
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _in_use(folder, fd) from None
        except OSError as exc:  # e.g. a file system without locks
            _unguarded(path, exc)
        else:
            with contextlib.suppress(OSError):  # a full disk: the lock holds, the note is lost
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
