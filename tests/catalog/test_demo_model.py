"""The demo model: written whole, deterministic, and loaded and run by the real llama-server."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from llamaherd.catalog.demo_model import DEMO_MODEL_NAME, write_demo_model
from llamaherd.catalog.gguf import read_gguf_summary
from llamaherd.errors import ModelFileError


def test_writes_a_small_gguf(tmp_path: Path) -> None:
    path = write_demo_model(tmp_path / "models" / "nested" / "demo.gguf")

    assert path == tmp_path / "models" / "nested" / "demo.gguf"
    assert 100_000 < path.stat().st_size < 2_000_000
    summary = read_gguf_summary(path)
    assert summary.architecture == "llama"
    assert summary.name == DEMO_MODEL_NAME
    assert summary.size_bytes == path.stat().st_size


def test_leaves_no_temporary_file(tmp_path: Path) -> None:
    write_demo_model(tmp_path / "demo.gguf")

    assert [p.name for p in tmp_path.iterdir()] == ["demo.gguf"]


def test_replaces_an_existing_file_only_when_told(tmp_path: Path) -> None:
    path = tmp_path / "demo.gguf"
    path.write_text("a real model")

    with pytest.raises(ModelFileError) as caught:
        write_demo_model(path)
    assert str(caught.value) == (
        f"{path} already exists (a file of 12 bytes); choose another path, "
        "or add --force to replace it"
    )
    assert path.read_text() == "a real model"
    assert [p.name for p in tmp_path.iterdir()] == ["demo.gguf"]

    write_demo_model(path, overwrite=True)

    assert read_gguf_summary(path).name == DEMO_MODEL_NAME


def _special_files(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """Things at a path that are not a regular file, and how the refusal names each."""
    folder = tmp_path / "folder.gguf"
    folder.mkdir()
    yield folder, "is a directory"
    fifo = tmp_path / "fifo.gguf"
    os.mkfifo(fifo)
    yield fifo, "is a named pipe (FIFO)"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(tmp_path / "sock.gguf"))
        yield tmp_path / "sock.gguf", "is a socket"
    link = tmp_path / "link.gguf"
    link.symlink_to(tmp_path / "target.gguf")
    yield link, "is a symbolic link"
    device = tmp_path / "null.gguf"
    try:  # a node of /dev/null (1, 3), made here: a test must never aim at the real /dev
        os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except PermissionError:
        return  # only root may make device nodes
    yield device, "is a character device"


@pytest.mark.parametrize("overwrite", [False, True])
def test_never_replaces_anything_but_a_regular_file(tmp_path: Path, overwrite: bool) -> None:
    for path, what in _special_files(tmp_path):
        before = os.lstat(path)
        with pytest.raises(ModelFileError) as caught:
            if overwrite:
                write_demo_model(path, overwrite=True)
            else:
                write_demo_model(path)
        message = str(caught.value)
        assert message.startswith(f"{path} {what}"), message
        assert "only a regular file can be replaced" in message or "directory" in message
        after = os.lstat(path)
        assert (after.st_mode, after.st_ino) == (before.st_mode, before.st_ino)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_directory_gets_a_file_name_hint(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match=r"give a file path such as .*/demo\.gguf"):
        write_demo_model(tmp_path)


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    first = write_demo_model(tmp_path / "a.gguf", seed=7)
    second = write_demo_model(tmp_path / "b.gguf", seed=7)
    other = write_demo_model(tmp_path / "c.gguf", seed=8)

    assert first.read_bytes() == second.read_bytes()
    assert first.read_bytes() != other.read_bytes()
    assert first.stat().st_size == other.stat().st_size


@pytest.mark.real_server
@pytest.mark.timeout(60)
def test_real_llama_server_runs_it(real_binary: Path, port: int, tmp_path: Path) -> None:
    model = write_demo_model(tmp_path / "demo.gguf")
    log = tmp_path / "llama-server.log"
    argv = [str(real_binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_healthy(proc, base, log)
        with httpx.Client(base_url=base, timeout=20) as client:
            models = client.get("/v1/models").json()
            # Builds differ on whether the id is the file name or the whole path.
            ids = [m["id"] for m in models["data"]]
            assert ids in ([str(model)], [model.name]), models

            reply = client.post("/v1/chat/completions", json=_chat_request())
            assert reply.status_code == 200, reply.text
            body = reply.json()
            assert body["choices"], body
            assert body["usage"]["completion_tokens"] > 0, body
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _chat_request() -> dict[str, object]:
    return {
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": 16,
        "temperature": 0,
    }


def _wait_healthy(proc: subprocess.Popen[bytes], base: str, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"llama-server exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    pytest.fail(f"llama-server was not healthy within 30 s:\n{log.read_text()[-4000:]}")


def test_unwritable_place_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    with pytest.raises(ModelFileError, match=r"cannot write the demo model to .*not-a-folder"):
        write_demo_model(blocker / "demo.gguf")


def test_a_full_disk_leaves_no_partial_file(tmp_path: Path) -> None:
    """RLIMIT_FSIZE makes writes fail part way, as a full disk does (EFBIG instead of ENOSPC)."""
    script = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (10_000, 10_000))\n"
        "from llamaherd.client.cli import main\n"
        f"sys.exit(main(['demo-model', {str(tmp_path / 'demo.gguf')!r}]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 1
    assert "llamaherd: error: cannot write the demo model to" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def run_demo_model_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llamaherd", "demo-model", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_refuses_an_existing_file_and_force_replaces_it(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF precious")

    refused = run_demo_model_cli(str(path))
    assert refused.returncode == 1
    assert refused.stderr == (
        f"llamaherd: error: {path} already exists (a file of 13 bytes); choose another path, "
        "or add --force to replace it\n"
    )
    assert path.read_bytes() == b"GGUF precious"

    forced = run_demo_model_cli("--force", str(path))
    assert forced.returncode == 0, forced.stderr
    assert forced.stdout == f"{path}\n"
    assert read_gguf_summary(path).name == DEMO_MODEL_NAME


def test_cli_force_still_refuses_a_fifo(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    result = run_demo_model_cli("--force", str(fifo))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(f"llamaherd: error: {fifo} is a named pipe (FIFO)")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
