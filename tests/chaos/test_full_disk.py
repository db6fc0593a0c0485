"""The history store's disk fills up while llamaherd serves: serving goes on, and says so.

`llamaherd serve` runs as a process of its own, its state folder (history.db, its log files)
on a disk the test can fill and empty while requests flow. Two ways to get such a disk:

- `tmpfs`: a real, small file system. The process runs in a private mount namespace
  (`unshare -m`, or `unshare -rm` for a user without privileges) where a 4 MiB tmpfs is
  mounted on the state folder; the test fills it to the last byte through
  /proc/PID/root/..., so every write gets ENOSPC exactly as on a full disk, and SQLite's
  own handling of it (its WAL, its -shm file) is what is tested. Skipped, with the reason,
  where no mount namespace can be made (many CI machines and containers).
- `fsize`: an injection at the file-system boundary that needs no privileges, so that the
  test runs everywhere: the kernel's per-process file size limit (RLIMIT_FSIZE, set from
  outside with prlimit) is lowered to 0, so every write to a regular file fails (EFBIG, "File
  too large") while pipes and sockets are untouched; raised again, writes work again. It is a
  full disk as a process sees it (writes refused, reads fine), not a full file system.

Either way: requests keep succeeding with none lost, the model's server is never touched,
`GET /api/history` says `store.ok: false` with the reason and still answers from memory, the
log has one warning, and once the disk has room again the store resumes and every request of
the full period reaches the file.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import os
import resource
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.chaos.conftest import Figures
from tests.chaos.load import Load
from tests.conftest import free_port
from tests.gateway.conftest import FAST_POLICY
from tests.serving import ServedLlamaherd, write_config

pytestmark = [pytest.mark.real_server, pytest.mark.timeout(120)]

MODEL = "demo"
TMPFS_SIZE = "4m"
WAIT_S = 30.0


@functools.cache
def mount_namespace() -> tuple[list[str], str | None]:
    """The `unshare` flags that give a private mount namespace where a tmpfs can be mounted,
    or why there are none here."""
    flags = ["-m"] if os.geteuid() == 0 else ["-rm"]
    probe = [
        "unshare",
        *flags,
        "--propagation",
        "private",
        "sh",
        "-c",
        'd=$(mktemp -d) && mount -t tmpfs -o size=64k probe "$d" && umount "$d" && rmdir "$d"',
    ]
    try:
        result = subprocess.run(probe, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return flags, f"no unshare here: {exc}"
    if result.returncode != 0:
        return flags, f"no tmpfs in a private mount namespace here: {result.stderr.strip()}"
    return flags, None


@dataclass
class Disk:
    """How the test fills the state folder's disk and empties it again."""

    name: str
    wrapper: list[str]  # what runs llamaherd (empty: nothing)
    fill: Callable[[ServedLlamaherd], dict[str, Any]]  # returns figures about the full disk
    empty: Callable[[ServedLlamaherd], None]
    folder: Callable[[ServedLlamaherd], Path]  # the state folder as this process reaches it


def tmpfs_disk(state: Path) -> Disk:
    flags, missing = mount_namespace()
    if missing is not None:
        pytest.skip(missing)
    script = f'mount -t tmpfs -o size={TMPFS_SIZE},mode=0755 llamaherd-state "$0" && exec "$@"'
    wrapper = ["unshare", *flags, "--propagation", "private", "sh", "-c", script, str(state)]

    def inside(herd: ServedLlamaherd) -> Path:
        # The folder as llamaherd sees it: its own mount namespace, through its root.
        return Path(f"/proc/{herd.pid}/root") / state.relative_to("/")

    def fill(herd: ServedLlamaherd) -> dict[str, Any]:
        folder = inside(herd)
        assert os.statvfs(folder).f_blocks * os.statvfs(folder).f_frsize <= 4 * 2**20
        filled = 0
        with (folder / "filler").open("wb", buffering=0) as filler:
            for size in (2**16, 2**12, 1):  # down to the last byte
                with contextlib.suppress(OSError):
                    while True:
                        filled += filler.write(b"\0" * size)
        with pytest.raises(OSError) as full:
            (folder / "probe").write_bytes(b"x")
        assert full.value.errno == errno.ENOSPC
        return {"filled_bytes": filled, "free_bytes": os.statvfs(folder).f_bavail}

    def empty(herd: ServedLlamaherd) -> None:
        (inside(herd) / "filler").unlink()

    name = f"tmpfs {TMPFS_SIZE} in a private mount namespace, filled"
    return Disk(name, wrapper, fill, empty, inside)


def fsize_disk(state: Path) -> Disk:
    def fill(herd: ServedLlamaherd) -> dict[str, Any]:
        _soft, hard = resource.prlimit(herd.pid, resource.RLIMIT_FSIZE)
        resource.prlimit(herd.pid, resource.RLIMIT_FSIZE, (0, hard))
        return {"fsize_limit": 0}

    def empty(herd: ServedLlamaherd) -> None:
        _soft, hard = resource.prlimit(herd.pid, resource.RLIMIT_FSIZE)
        resource.prlimit(herd.pid, resource.RLIMIT_FSIZE, (hard, hard))

    return Disk("RLIMIT_FSIZE 0 (writes refused with EFBIG)", [], fill, empty, lambda _: state)


def herd_config(folder: Path, state: Path, model: Path, binary: Path) -> Path:
    settings = {
        "llama_server_binary": str(binary),
        "llama_server_port": free_port(),
        "app_port": free_port(),
        "models": {MODEL: {"path": str(model)}},
        "state_dir": str(state),
        **FAST_POLICY,
    }
    return write_config(folder, settings)


async def history(herd: ServedLlamaherd, **params: Any) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=WAIT_S) as client:
        answer = await client.get(f"{herd.url}/api/history", params={"model": MODEL, **params})
    answer.raise_for_status()
    result: dict[str, Any] = answer.json()
    return result


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = WAIT_S) -> float:
    """Poll `check()` every 0.1 s until it holds; how long that took. (The store's state has
    no event to await from outside the process.)"""
    began = time.monotonic()
    while not await check():
        if time.monotonic() - began > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting until {what}")
        await asyncio.sleep(0.1)
    return time.monotonic() - began


@dataclass
class FullDiskHerd:
    disk: Disk
    herd: ServedLlamaherd
    scratch: Path  # a folder of the test's own, on a disk with room


@pytest.fixture(params=["tmpfs", "fsize"])
def full_disk_herd(
    request: pytest.FixtureRequest, tmp_path: Path, demo_model: Path, real_binary: Path
) -> Iterator[FullDiskHerd]:
    """A `llamaherd serve` (not started yet) whose state folder is on a disk the test can
    fill; at the end it is killed with every llama-server it started."""
    state = tmp_path / "state"
    state.mkdir()
    disk = tmpfs_disk(state) if request.param == "tmpfs" else fsize_disk(state)
    config = herd_config(tmp_path, state, demo_model, real_binary)
    herd = ServedLlamaherd(config, wrapper=disk.wrapper)
    yield FullDiskHerd(disk, herd, tmp_path / "scratch")
    left = herd.close()
    assert not left, f"llama-server processes left running: {left}"


async def test_a_full_disk_under_the_history_store_never_stops_serving(
    full_disk_herd: FullDiskHerd, figures: Figures
) -> None:
    disk, herd = full_disk_herd.disk, full_disk_herd.herd
    herd.start()
    facts = await herd.wait_ready(MODEL)

    async def store_ok() -> bool:
        return bool((await history(herd, limit=1))["store"]["ok"])

    async def store_failing() -> bool:
        return not await store_ok()

    figures["disk"] = disk.name
    async with Load(herd.url, MODEL, clients=3, timeout_s=WAIT_S) as load:
        await load.successes(10)
        await until(store_ok, "the history store writes")
        full = await asyncio.to_thread(disk.fill, herd)
        figures.update(full)
        filled_at = len(load.outcomes)
        figures["noticed_after_s"] = await until(store_failing, "the store says it cannot write")
        while_full = await history(herd, limit=100_000)
        await load.successes(30)
        served_while_full = len(load.outcomes) - filled_at
        await asyncio.to_thread(disk.empty, herd)
        figures["resumed_after_s"] = await until(store_ok, "the store writes again")
        await load.successes(5)
    outcome = load.figures()
    figures.update(outcome)
    figures["served_while_full"] = served_while_full
    warning = while_full["store"]["warning"] or ""
    figures["warning"] = warning.split("history.db ", 1)[-1]

    assert outcome["lost"] == 0, load.details("lost")
    assert outcome["failed_clearly"] == 0, load.details("failed_clearly")
    # The store said why, and still answered from memory meanwhile.
    assert while_full["store"]["ok"] is False
    assert "cannot be written" in warning and "kept in memory" in warning, warning
    assert len(while_full["requests"]) >= filled_at
    # The server was never touched: the same pid, no retry.
    after = await herd.models()
    assert after[MODEL]["pid"] == facts["pid"] and after[MODEL]["retries"] == 0
    # Every request of the whole run, the full period's included, reaches the file.
    figures["all_in_file_after_s"] = await until(
        lambda: _in_file(disk.folder(herd), outcome["sent"], full_disk_herd.scratch),
        "every request is in the history file",
    )

    code = await herd.stop(WAIT_S)
    output = herd.output
    assert code == 0, output[-4000:]
    # One warning when the store fails and one when it resumes, not one per flush.
    assert _warnings(output, "cannot be written:") == 1, output[-4000:]
    assert _warnings(output, "is written again") == 1, output[-4000:]
    # No traceback at all: llamaherd's own log file says once that it cannot write (below).
    assert "Traceback" not in output and "Logging error" not in output, output[-4000:]


@pytest.mark.parametrize("full_disk_herd", ["fsize"], indirect=True)  # no write at all fits
async def test_llamaherd_own_log_file_on_a_full_disk_is_one_warning(
    full_disk_herd: FullDiskHerd,
) -> None:
    disk, herd = full_disk_herd.disk, full_disk_herd.herd
    herd.start()
    await herd.wait_ready(MODEL)
    await asyncio.to_thread(disk.fill, herd)
    async with httpx.AsyncClient(base_url=herd.url, timeout=WAIT_S) as client:
        for _ in range(3):  # each one logs a line or two: "unloading model", "loading model"
            (await client.post(f"/api/models/{MODEL}/unload")).raise_for_status()
            (await client.post(f"/api/models/{MODEL}/load")).raise_for_status()
    await herd.wait_ready(MODEL)
    await herd.stop(WAIT_S)
    assert "Logging error" not in herd.output, herd.output[-4000:]
    assert herd.output.count("cannot write its log file") == 1, herd.output[-4000:]


def _warnings(output: str, what: str) -> int:
    """How many of llamaherd's own WARNING lines say `what` about the history store."""
    return sum(
        1
        for line in output.splitlines()
        if "WARNING" in line and "llamaherd.store: history store" in line and what in line
    )


async def _in_file(folder: Path, sent: int, scratch: Path) -> bool:
    """Whether the history file itself (not llamaherd's memory) holds `sent` requests.

    Read from a copy of the file and its WAL: SQLite resolves the /proc/PID/root link of a
    path into this process's own mount namespace, so it cannot open the file in place. A copy
    taken in the middle of a write is refused or incomplete; the caller asks again."""

    def count() -> int | None:
        scratch.mkdir(exist_ok=True)
        for name in ("history.db", "history.db-wal"):
            (scratch / name).unlink(missing_ok=True)
            if (folder / name).exists():
                shutil.copyfile(folder / name, scratch / name)
        try:
            with contextlib.closing(sqlite3.connect(scratch / "history.db")) as db:
                return int(db.execute("SELECT count(*) FROM requests").fetchone()[0])
        except sqlite3.DatabaseError:
            return None

    return await asyncio.to_thread(count) == sent
