"""`llamaherd pull` and `llamaherd rm` as a person runs them: with no llamaherd running (the
download happens in the command), and with `llamaherd serve` running (the server pulls, the
command shows its progress), against the test's own Hub on loopback."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from llamaherd.client.pull import ProgressBar
from tests.catalog.hub_server import AMBIGUOUS, TINY, HubServer, standard_hub
from tests.conftest import free_port
from tests.serving import ServedLlamaherd, write_config

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def hub(demo_model: Path) -> Iterator[HubServer]:
    with standard_hub(demo_model.read_bytes()) as server:
        yield server


def config_for(tmp_path: Path, binary: Path) -> Path:
    (tmp_path / "models").mkdir()
    return write_config(
        tmp_path,
        {
            "llama_server_binary": str(binary),
            "llama_server_port": free_port(),
            "app_port": free_port(),
            "state_dir": str(tmp_path / "state"),
            "models_dir": "models",
        },
    )


def llamaherd(
    hub: HubServer, *args: str, wrapper: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "LLAMAHERD_API_KEY")}
    env |= {"HF_ENDPOINT": hub.url, "HF_HOME": str(Path(args[-1]).parent / "hf")}
    return subprocess.run(
        [*wrapper, sys.executable, "-m", "llamaherd", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


def test_pull_and_rm_without_a_running_llamaherd(
    tmp_path: Path, hub: HubServer, fake_binary: Path
) -> None:
    config = config_for(tmp_path, fake_binary)
    models = tmp_path / "models"
    done = llamaherd(hub, "pull", f"{TINY}:Q4_K_M", "--config", str(config))
    assert done.returncode == 0, done.stderr
    assert "is not running" in done.stderr and "working on models_dir here" in done.stderr
    assert "Tiny-Q4_K_M [" in done.stderr and "100%" in done.stderr  # the bar's last line
    assert "Tiny-Q4_K_M: pulled (Tiny-Q4_K_M.gguf)" in done.stdout
    assert (models / "Tiny-Q4_K_M.gguf").read_bytes() == hub.repos[TINY].files["Tiny-Q4_K_M.gguf"]

    refused = llamaherd(hub, "pull", f"{AMBIGUOUS}:Q4_K_M", "--config", str(config))
    assert refused.returncode == 1
    assert "Alpha-Q4_K_M.gguf, Beta-Q4_K_M.gguf" in refused.stderr
    assert "Traceback" not in refused.stderr

    removed = llamaherd(hub, "rm", "Tiny-Q4_K_M", "--config", str(config))
    assert removed.returncode == 0, removed.stderr
    assert "Tiny-Q4_K_M: deleted Tiny-Q4_K_M.gguf" in removed.stdout
    assert list(models.iterdir()) == []
    unknown = llamaherd(hub, "rm", "Tiny-Q4_K_M", "--config", str(config))
    assert unknown.returncode == 1 and "has no model 'Tiny-Q4_K_M'" in unknown.stderr


def test_a_disk_that_fills_during_the_download_is_a_clear_error_and_resumes_later(
    tmp_path: Path, hub: HubServer, fake_binary: Path
) -> None:
    """The free space was enough when the pull began, then the disk filled up: here, the
    kernel's file size limit (RLIMIT_FSIZE, set with prlimit) refuses writes past 200 000
    bytes of the 300 000-byte model."""
    config = config_for(tmp_path, fake_binary)
    full = llamaherd(
        hub,
        "pull", f"{TINY}:Q4_K_M", "--local", "--config", str(config),
        wrapper=("prlimit", "--fsize=200000", "--"),
    )  # fmt: skip
    assert full.returncode == 1, full.stderr
    assert "the disk filled up while downloading Tiny-Q4_K_M.gguf" in full.stderr, full.stderr
    assert "Traceback" not in full.stderr
    models = tmp_path / "models"
    assert not (models / "Tiny-Q4_K_M.gguf").exists()
    assert (models / ".pull" / "Tiny-Q4_K_M.gguf.part").stat().st_size == 200_000
    resumed = llamaherd(hub, "pull", f"{TINY}:Q4_K_M", "--local", "--config", str(config))
    assert resumed.returncode == 0, resumed.stderr
    assert hub.downloads("Tiny-Q4_K_M.gguf")[-1] == "bytes=200000-"
    assert (models / "Tiny-Q4_K_M.gguf").read_bytes() == hub.repos[TINY].files["Tiny-Q4_K_M.gguf"]


async def test_pull_and_rm_through_a_running_llamaherd(
    tmp_path: Path, hub: HubServer, fake_binary: Path
) -> None:
    config = config_for(tmp_path, fake_binary)
    env = {"HF_ENDPOINT": hub.url, "HF_TOKEN": None, "HF_HOME": str(tmp_path / "hf")}
    async with ServedLlamaherd(config, env=env) as served:
        await served.wait_healthy()
        done = await asyncio.to_thread(
            llamaherd, hub, "pull", f"{TINY}:Q4_K_M", "--config", str(config)
        )
        assert done.returncode == 0, done.stderr
        assert "not running" not in done.stderr
        assert "llamaherd serves it now as model 'Tiny-Q4_K_M'" in done.stdout
        assert "Tiny-Q4_K_M" in await served.models()  # served without a restart
        removed = await asyncio.to_thread(
            llamaherd, hub, "rm", "Tiny-Q4_K_M", "--config", str(config)
        )
        assert removed.returncode == 0, removed.stderr
        assert "Tiny-Q4_K_M" not in await served.models()
        assert not (tmp_path / "models" / "Tiny-Q4_K_M.gguf").exists()


def test_the_bar_is_redrawn_on_a_terminal_and_quartered_in_a_log() -> None:
    pull = {"model": "m", "state": "downloading", "bytes": 0, "total": 4 * 1024 * 1024}
    log = io.StringIO()
    bar = ProgressBar(log, clock=iter([0.0, 1.0, 1.5, 2.0, 3.0]).__next__)
    for done in (0, 1024, 1024 * 1024 + 1, 2 * 1024 * 1024):
        bar.show(pull | {"bytes": done})
    bar.show(pull | {"bytes": 4 * 1024 * 1024, "state": "done"})
    lines = log.getvalue().splitlines()
    assert [line.split("] ")[1].split()[0] for line in lines] == ["0%", "25%", "50%", "100%"]
    assert lines[-1].endswith("done") and "MiB/s" in lines[-1]
