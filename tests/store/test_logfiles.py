"""Server output in rotating files: written off the loop, rotated at the size, named safely,
and a disk that refuses is one warning, never an exception in the ring's callback."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from llamaherd.store.logfiles import ServerLogFiles, file_stem
from llamaherd.supervisor.output import LogRing
from llamaherd.supervisor.states import Status
from tests.conftest import ServiceFactory, StateRecorder
from tests.waiting import until

pytestmark = pytest.mark.timeout(60)

STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z "


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "llamaherd.store" and record.levelno >= logging.WARNING
    ]


async def test_lines_are_written_and_rotated_at_the_size(tmp_path: Path) -> None:
    folder = tmp_path / "logs"
    files = ServerLogFiles(folder, max_bytes=2000, backup_count=2)
    ring = LogRing()
    files.attach("demo", ring)
    files.start()
    for n in range(300):
        ring.append(f"line {n:04d} " + "x" * 30)
    await files.aclose()

    assert sorted(p.name for p in folder.iterdir()) == ["demo.log", "demo.log.1", "demo.log.2"]
    assert all(p.stat().st_size <= 2000 for p in folder.iterdir())
    text = "".join((folder / name).read_text() for name in ("demo.log.2", "demo.log.1", "demo.log"))
    lines = text.splitlines()
    assert all(re.fullmatch(STAMP + r"line \d{4} x{30}", line) for line in lines)
    numbers = [int(line.split()[2]) for line in lines]
    assert numbers == list(range(numbers[0], 300))  # the newest, in order, none lost or doubled
    assert numbers[0] > 0  # older lines went with the oldest file


async def test_model_ids_name_files_inside_the_folder_only(tmp_path: Path) -> None:
    folder = tmp_path / "logs"
    files = ServerLogFiles(folder, max_bytes=10_000, backup_count=1)
    hostile = ["../escape", "org/model", "/etc/passwd", "", "..", ".hidden", "a\x00b", "ünï"]
    stems = [file_stem(model) for model in hostile]
    assert len(set(stems)) == len(hostile)
    for model in hostile:
        path = files.path_for(model)
        assert path.parent == folder
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*\.log", path.name), path.name
    assert files.path_for("llama-3.1_8B.Q4") == folder / "llama-3.1_8B.Q4.log"
    assert file_stem("org/model").startswith("org_model-")

    rings = {model: LogRing() for model in ("../escape", "org/model")}
    files.start()
    for model, ring in rings.items():
        files.attach(model, ring)
        ring.append(f"said by {model}")
    await files.aclose()

    assert sorted(p.name for p in tmp_path.iterdir()) == ["logs"]
    for model in rings:
        assert files.path_for(model).read_text().endswith(f"said by {model}\n")


async def test_an_unwritable_folder_warns_once_and_resumes_when_it_can(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file where the folder should be")
    folder = blocker / "logs"
    files = ServerLogFiles(folder, max_bytes=10_000, backup_count=1)
    ring = LogRing()
    files.attach("m", ring)
    files.start()
    for n in range(50):
        ring.append(f"lost {n}")  # never raises into the ring
    await until(lambda: len(warnings(caplog)) == 1)
    assert str(folder) in warnings(caplog)[0]

    blocker.unlink()  # the folder can be made now
    await until(lambda: files._trouble.dropped == 50)  # the writer has seen every lost line
    ring.append("kept")
    await files.aclose()

    assert files.path_for("m").read_text().endswith(" kept\n")
    assert len(warnings(caplog)) == 2
    assert warnings(caplog)[1] == (
        f"llama-server log files in {folder} are written again; 50 lines were dropped"
    )
    assert "Logging error" not in capsys.readouterr().err


async def test_a_full_disk_warns_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "logs"
    folder.mkdir()
    (folder / "m.log").symlink_to("/dev/full")  # every write: ENOSPC
    files = ServerLogFiles(folder, max_bytes=10_000, backup_count=1)
    ring = LogRing()
    files.attach("m", ring)
    files.start()
    for n in range(20):
        ring.append(f"line {n}")
    await files.aclose()

    [warning] = warnings(caplog)
    assert "No space left on device" in warning
    assert "Logging error" not in capsys.readouterr().err


async def test_a_full_queue_drops_lines_and_warns_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files = ServerLogFiles(tmp_path, max_bytes=10_000, backup_count=1, queue_lines=2)
    ring = LogRing()
    files.attach("m", ring)
    for n in range(5):  # the writer has not started: the queue fills
        ring.append(f"line {n}")
    assert len(warnings(caplog)) == 1
    files.start()
    await files.aclose()
    lines = files.path_for("m").read_text().splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == ["line 0", "line 1"]


async def test_max_bytes_zero_writes_no_files(tmp_path: Path) -> None:
    folder = tmp_path / "logs"
    files = ServerLogFiles(folder, max_bytes=0, backup_count=5)
    ring = LogRing()
    files.start()
    files.attach("m", ring)
    ring.append("nowhere")
    await files.aclose()
    assert not files.enabled
    assert not folder.exists()


async def test_a_supervised_servers_output_reaches_its_file(
    make_service: ServiceFactory, fake_binary: Path, model_file: Path, tmp_path: Path
) -> None:
    service = make_service(binary=fake_binary, model_path=model_file)
    files = ServerLogFiles(tmp_path / "logs", max_bytes=1_000_000, backup_count=1)
    files.attach("fake", service.output)
    files.start()
    recorder = StateRecorder(service)
    await service.start()
    await recorder.wait_status(Status.READY)
    await service.stop()
    await files.aclose()

    written = [line.split(" ", 1)[1] for line in files.path_for("fake").read_text().splitlines()]
    assert written == list(service.output)
    assert any(line.startswith("build: ") for line in written)
