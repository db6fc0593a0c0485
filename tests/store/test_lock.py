"""One llamaherd per state folder: the lock is exclusive, names its holder, and dies with it."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from llamaherd.errors import StateDirInUseError
from llamaherd.store.lock import LOCK_FILE, hold_state_dir
from tests.conftest import wait_until_dead

pytestmark = pytest.mark.timeout(60)

HOLDER = textwrap.dedent(
    """
    import subprocess, sys, time
    from pathlib import Path
    from llamaherd.store.lock import hold_state_dir

    with hold_state_dir(Path(sys.argv[1])):
        if sys.argv[2:] == ["--child"]:
            # A child started while the lock is held, left running after it ends; it keeps
            # every descriptor it may inherit.
            child = subprocess.Popen(
                [sys.executable, "-c", "import time; time.sleep(60)"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                close_fds=False,
            )
            print(child.pid, flush=True)
        else:
            print("held", flush=True)
            time.sleep(60)
    """
)


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process that holds tmp_path/state until it is killed."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path / "state")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "held\n"
        yield proc
    finally:
        proc.kill()
        proc.communicate(timeout=10)


def test_a_second_holder_is_refused_naming_the_first(tmp_path: Path) -> None:
    folder = tmp_path / "state"
    with hold_state_dir(folder):
        assert (folder / LOCK_FILE).read_text() == f"{os.getpid()}\n"
        with pytest.raises(StateDirInUseError) as refused, hold_state_dir(folder):
            pass
    message = str(refused.value)
    assert f"another llamaherd (pid {os.getpid()}) already uses the state folder {folder}" in (
        message
    )
    assert "Stop the other llamaherd, or give this one another state_dir" in message
    with hold_state_dir(folder):  # released at the end of the first block
        pass


def test_another_process_holds_it_until_it_is_killed_and_leaves_no_stale_lock(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    folder = tmp_path / "state"
    with pytest.raises(StateDirInUseError, match=f"pid {holder.pid}\\)"), hold_state_dir(folder):
        pass
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=10)
    assert (folder / LOCK_FILE).read_text() == f"{holder.pid}\n"  # left behind by the crash
    with hold_state_dir(folder):  # yet it holds nothing
        assert (folder / LOCK_FILE).read_text() == f"{os.getpid()}\n"


def test_a_child_that_outlives_the_holder_does_not_keep_the_lock(tmp_path: Path) -> None:
    """llama-servers are children of llamaherd: one left running must not hold the folder."""
    folder = tmp_path / "state"
    result = subprocess.run(
        [sys.executable, "-c", HOLDER, str(folder), "--child"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    child = int(result.stdout)
    try:
        with hold_state_dir(folder):
            pass
    finally:
        os.kill(child, signal.SIGKILL)
        assert wait_until_dead(child, 5)


def test_a_folder_that_cannot_be_made_does_not_stop_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """History and log files cope with an unusable folder on their own, and say so."""
    blocker = tmp_path / "file"
    blocker.write_text("a regular file, where a folder would have to be\n")
    caplog.set_level(logging.WARNING, logger="llamaherd.store")
    with hold_state_dir(blocker / "state"):
        pass
    assert "nothing keeps a second llamaherd off this state folder" in caplog.text
