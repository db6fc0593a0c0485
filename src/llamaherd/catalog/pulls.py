"""Pulls of models from the Hugging Face Hub into models_dir: several at once, each with its
progress, cancellable.

A pull resolves its source first (catalog/hub.py: the files, their sizes and checksums,
access), then checks the disk: the bytes still to download, with those of the pulls already
running, against the free space of models_dir's file system; too little is an error before
anything is written. Then it downloads in a thread, file after file, into
`models_dir/.pull/<name>.part` (a hidden folder: the folder scan never sees it, and a rename
from there into models_dir is atomic, on the same file system). Only when every file is
complete and matches the Hub's checksum are they renamed into models_dir, the first part of
a split model last, and `on_complete` runs (`serve` reloads the config, so the model is
served without a restart).

A pull of files another running pull is already downloading is that pull (one download). A
cancelled pull removes its partial files; a failed one (the network) keeps them, and the next
pull of the same files resumes where it stopped; a corrupt file is removed.

Every change of a pull is told to the listeners as the pull's dictionary (`Pull.as_dict`):
a change of state at once, progress at most every PROGRESS_INTERVAL_S per pull.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from llamaherd.catalog.hub import Hub, PullCancelledError, Resolution, parse_source
from llamaherd.catalog.library import split_part_name
from llamaherd.errors import LlamaherdError, PullError

logger = logging.getLogger("llamaherd.pull")

PARTIAL_DIR = ".pull"  # in models_dir: hidden from the scan
PROGRESS_INTERVAL_S = 0.25
KEEP_FINISHED = 50  # finished pulls still listed (a dashboard that connects late sees them)
CANCEL_WAIT_S = 10.0  # how long a cancel waits for the download thread to stop

State = Literal["downloading", "done", "failed", "cancelled"]
Listener = Callable[[dict[str, Any]], None]
FreeBytes = Callable[[Path], int]


def free_bytes(folder: Path) -> int:
    """Free space for an unprivileged writer on the file system of `folder` (or of its
    nearest existing parent: models_dir may not exist yet)."""
    path = folder
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def human_bytes(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


@dataclass(eq=False)
class Pull:
    """One pull: what it downloads, where it is."""

    id: str
    source: str
    resolution: Resolution
    folder: Path
    started_at: float  # unix seconds
    state: State = "downloading"
    bytes: int = 0
    error: str | None = None
    cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def total(self) -> int:
        return self.resolution.total

    @property
    def targets(self) -> frozenset[str]:
        return frozenset(self.resolution.targets)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "source": self.source,
            "repo": self.resolution.repo,
            "files": list(self.resolution.targets),
            "model": self.resolution.model_id,
            "state": self.state,
            "bytes": self.bytes,
            "total": self.total,
            "error": self.error,
            "startedAt": self.started_at,
        }


class PullManager:
    """The pulls into one models_dir (`models_dir()`: the config's, which a reload may change;
    None: pulls are refused until it names one). `hub`: where from; `free_bytes`: the free
    space check (a test's small disk); `on_complete(pull)`: once a pull's files are in place
    (serve reloads the config there)."""

    def __init__(
        self,
        models_dir: Callable[[], Path | None],
        hub: Hub,
        *,
        free_space: FreeBytes = free_bytes,
        on_complete: Callable[[Pull], Awaitable[None]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.models_dir = models_dir
        self.hub = hub
        self._free_space = free_space
        self._on_complete = on_complete
        self._clock = clock
        self._pulls: dict[str, Pull] = {}
        self._listeners: list[Listener] = []
        self._pending: dict[str, asyncio.TimerHandle] = {}
        self._last_told: dict[str, float] = {}

    # ---- reading ------------------------------------------------------------------------

    def on_change(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def pulls(self) -> list[dict[str, Any]]:
        """Every pull running and the latest finished ones, oldest first."""
        return [pull.as_dict() for pull in self._pulls.values()]

    def get(self, pull_id: str) -> Pull:
        pull = self._pulls.get(pull_id)
        if pull is None:
            known = ", ".join(self._pulls) or "none"
            raise PullError(
                f"no pull {pull_id!r} (pulls: {known})", status=404, code="no_such_pull"
            )
        return pull

    # ---- pulling ------------------------------------------------------------------------

    async def pull(self, source: str) -> Pull:
        """Start pulling `source` (or join the pull already downloading its files); returns at
        once, the download runs in the background. Raises PullError: a wrong source (400), no
        such repository or file (404), a gated repository (401/403), an ambiguous quantisation
        (409), files of that name already in models_dir (409), too little space (507)."""
        parsed = parse_source(source)
        folder = self._folder()
        resolution = await asyncio.to_thread(self.hub.resolve, parsed)
        wanted = frozenset(resolution.targets)
        for pull in self._pulls.values():
            if pull.state != "downloading" or pull.folder != folder:
                continue
            if pull.targets == wanted:
                return pull
            if pull.targets & wanted:
                both = ", ".join(sorted(pull.targets & wanted))
                raise PullError(
                    f"pull {pull.id} ({pull.source}) is downloading {both} already; wait for "
                    "it or cancel it",
                    status=409,
                    code="pull_in_progress",
                )
        # No await from the check above to the registration below: two pulls of one file
        # that arrive together are one download (a few stat calls block the loop briefly).
        have = self._present(folder, resolution)
        self._check_space(folder, resolution, have)
        pull = Pull(
            id=uuid.uuid4().hex[:12],
            source=str(parsed),
            resolution=resolution,
            folder=folder,
            started_at=self._clock(),
            bytes=have,
        )
        self._pulls[pull.id] = pull
        self._forget_old()
        pull.task = asyncio.create_task(self._run(pull), name=f"pull-{pull.id}")
        self._tell(pull, urgent=True)
        logger.info(
            "pulling %s from %s: %s (%s)",
            resolution.model_id,
            resolution.repo,
            ", ".join(resolution.targets),
            human_bytes(resolution.total),
        )
        return pull

    async def cancel(self, pull_id: str) -> Pull:
        """Stop a pull and remove its partial files; a finished pull is left as it is."""
        pull = self.get(pull_id)
        if pull.state != "downloading":
            return pull
        pull.cancel.set()
        pull.state = "cancelled"
        self._tell(pull, urgent=True)
        if pull.task is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(pull.task), CANCEL_WAIT_S)
        return pull

    async def wait(self, pull: Pull) -> Pull:
        """Until `pull` has finished (done, failed or cancelled)."""
        if pull.task is not None:
            await asyncio.shield(pull.task)
        return pull

    async def aclose(self) -> None:
        """Stop every download (shutting down): their partial files stay, for a resume."""
        running = [p for p in self._pulls.values() if p.task is not None and not p.task.done()]
        for pull in running:
            pull.cancel.set()
        for pull in running:
            assert pull.task is not None
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(pull.task, CANCEL_WAIT_S)
        for handle in self._pending.values():
            handle.cancel()
        self._pending.clear()

    def _folder(self) -> Path:
        folder = self.models_dir()
        if folder is None:
            raise PullError(
                'models_dir is not set: add "models_dir": "./models" to the config (pulled '
                "models go there), then reload",
                status=409,
                code="no_models_dir",
            )
        return folder

    def _present(self, folder: Path, resolution: Resolution) -> int:
        """Bytes already there: complete files in models_dir, partial ones in .pull/. A file of
        the same name but another size in models_dir is another model: refused."""
        have = 0
        for file, target in zip(resolution.files, resolution.targets, strict=True):
            final = folder / target
            if final.exists():
                size = final.stat().st_size
                if size != file.size:
                    raise PullError(
                        f"{final} exists already and is not {file.path} of {resolution.repo} "
                        f"({size} bytes, not {file.size}); remove it first (llamaherd rm "
                        f"{resolution.model_id}) or pull another file",
                        status=409,
                        code="file_exists",
                    )
                have += size
                continue
            partial = folder / PARTIAL_DIR / f"{target}.part"
            with contextlib.suppress(OSError):
                have += min(partial.stat().st_size, file.size)
        return have

    def _check_space(self, folder: Path, resolution: Resolution, have: int) -> None:
        needed = resolution.total - have
        reserved = sum(
            max(0, p.total - p.bytes)
            for p in self._pulls.values()
            if p.state == "downloading" and p.folder == folder
        )
        free = self._free_space(folder) - reserved
        if needed > free:
            others = f" ({human_bytes(reserved)} of it held for pulls running)" if reserved else ""
            raise PullError(
                f"not enough disk space for {resolution.model_id}: it needs "
                f"{human_bytes(needed)} more, {folder} has {human_bytes(max(free, 0))} free"
                f"{others}; free some space (llamaherd rm MODEL) or set models_dir to a larger "
                "disk",
                status=507,
                code="no_space",
            )

    async def _run(self, pull: Pull) -> None:
        loop = asyncio.get_running_loop()

        def on_bytes(count: int) -> None:  # in the download thread
            loop.call_soon_threadsafe(self._add_bytes, pull, count)

        try:
            await asyncio.to_thread(self._download_all, pull, on_bytes)
            await asyncio.sleep(0)  # the last progress calls, queued by the thread, first
            if pull.cancel.is_set():
                raise PullCancelledError
            if self._on_complete is not None:
                await self._on_complete(pull)
            pull.state, pull.bytes = "done", pull.total
            logger.info("pulled %s into %s", pull.resolution.model_id, pull.folder)
        except PullCancelledError:
            await asyncio.to_thread(self._remove_partials, pull)
            if pull.state == "downloading":  # stopped by a shutdown, not by a cancel
                pull.state, pull.error = "failed", "interrupted: llamaherd stopped"
            logger.info("pull of %s stopped", pull.resolution.model_id)
        except Exception as exc:
            if pull.state == "cancelled":  # what failed was the cancel taking effect
                await asyncio.to_thread(self._remove_partials, pull)
            elif isinstance(exc, PullError):
                pull.state, pull.error = "failed", str(exc)
                logger.warning("pull of %s failed: %s", pull.resolution.model_id, exc)
            else:
                pull.state, pull.error = "failed", f"unexpected error: {exc}"
                logger.exception("pull of %s failed", pull.resolution.model_id)
        finally:
            self._tell(pull, urgent=True)

    def _download_all(self, pull: Pull, on_bytes: Callable[[int], None]) -> None:
        """In a thread: every file into .pull/, checked; then all renamed into models_dir."""
        resolution, folder = pull.resolution, pull.folder
        moves: list[tuple[Path, Path]] = []
        for file, target in zip(resolution.files, resolution.targets, strict=True):
            final = folder / target
            if final.exists():
                continue  # counted as there when the pull started
            partial = folder / PARTIAL_DIR / f"{target}.part"
            self.hub.download(
                resolution.repo, resolution.revision, file, partial, on_bytes, pull.cancel
            )
            moves.append((partial, final))
        if pull.cancel.is_set():
            raise PullCancelledError
        # The first part of a split model (what the scan starts from) last: a scan meanwhile
        # sees either the whole model or none of it.
        moves.sort(key=lambda move: _first_part(move[1].name))
        for partial, final in moves:
            os.replace(partial, final)
        with contextlib.suppress(OSError):
            (folder / PARTIAL_DIR).rmdir()  # only when empty: another pull may use it

    def _remove_partials(self, pull: Pull) -> None:
        if pull.state != "cancelled":
            return  # an interruption: the partial files stay, for a resume
        for target in pull.resolution.targets:
            (pull.folder / PARTIAL_DIR / f"{target}.part").unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            (pull.folder / PARTIAL_DIR).rmdir()  # only when empty

    def _add_bytes(self, pull: Pull, count: int) -> None:
        if pull.state != "downloading":
            return
        pull.bytes = max(0, min(pull.bytes + count, pull.total))
        self._tell(pull, urgent=False)

    def _tell(self, pull: Pull, *, urgent: bool) -> None:
        """Tell the listeners: now (a change of state), or at most every PROGRESS_INTERVAL_S."""
        loop = asyncio.get_running_loop()
        if urgent:
            handle = self._pending.pop(pull.id, None)
            if handle is not None:
                handle.cancel()
            self._send(pull)
            return
        if pull.id in self._pending:
            return
        wait = self._last_told.get(pull.id, 0.0) + PROGRESS_INTERVAL_S - loop.time()
        if wait <= 0:
            self._send(pull)
        else:
            self._pending[pull.id] = loop.call_later(wait, self._send, pull)

    def _send(self, pull: Pull) -> None:
        self._pending.pop(pull.id, None)
        self._last_told[pull.id] = asyncio.get_running_loop().time()
        payload = pull.as_dict()
        for listener in list(self._listeners):
            try:
                listener(payload)
            except Exception:
                logger.exception("a listener of pulls failed")

    def _forget_old(self) -> None:
        finished = [p for p in self._pulls.values() if p.state != "downloading"]
        for pull in finished[: max(0, len(finished) - KEEP_FINISHED)]:
            del self._pulls[pull.id]
            self._last_told.pop(pull.id, None)


def _first_part(name: str) -> bool:
    part = split_part_name(name)
    return part is not None and part.number == 1


def pulled_model_files(folder: Path, model: str, path: Path) -> list[Path]:
    """The files of `model` (served from `path`) in models_dir `folder`: every part, and its
    projector unless another model uses it too. Raises PullError (409) when the model is not
    a model of that folder (a file named in the config elsewhere is not llamaherd's to
    delete)."""
    from llamaherd.catalog.library import scan_models_dir

    try:
        found = scan_models_dir(folder)
    except LlamaherdError as exc:
        raise PullError(str(exc), status=409, code="not_in_models_dir") from None
    mine = next((m for m in found if m.id == model and m.path == path), None)
    if mine is None:
        raise PullError(
            f"{model} is not a model file in models_dir ({folder}): llamaherd deletes only "
            "those; a model the config names by its path is removed from the config instead",
            status=409,
            code="not_in_models_dir",
        )
    files = list(mine.parts)
    shared = any(m.mmproj == mine.mmproj for m in found if m is not mine)
    if mine.mmproj is not None and not shared:
        files.append(mine.mmproj)
    return files


def delete_files(files: list[Path]) -> None:
    """Delete a model's files, its first part first (the folder scan then skips the rest)."""
    for path in files:
        path.unlink(missing_ok=True)
