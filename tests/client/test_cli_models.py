"""The per-model commands: `logs MODEL [-f]`, `status MODEL`, `start|stop|restart MODEL`,
against the real app over uvicorn with the fake llama-server (see tests/client/test_cli.py). `chat`
is the primary model (loaded at start); `coder` (alias `c`) is the second, whose output and
controls the command line reached only through the primary's before."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from llamaherd.gateway.herd import Herd
from llamaherd.gateway.scheduler import Phase
from llamaherd.supervisor.service import LlamaService
from llamaherd.supervisor.states import Status
from tests.client.test_cli import cli_output, quiet, run_cli, serve_herd, wait_for_output

pytestmark = pytest.mark.timeout(60)


async def loaded(herd: Herd, model: str) -> int:
    herd.load(model)
    async with asyncio.timeout(20):
        while herd.view(model).phase is not Phase.READY:
            await asyncio.sleep(0.02)
    pid = herd.backends[model].service.get_state().pid
    assert pid is not None
    return pid


@contextlib.asynccontextmanager
async def both_quiet(
    tmp_path: Path, binary: Path, model_file: Path
) -> AsyncIterator[tuple[str, LlamaService, LlamaService]]:
    """Both models loaded, and coder done talking: the URL, coder's and chat's supervisors."""
    async with serve_herd(tmp_path, binary, model_file, max_loaded=2) as (url, herd):
        await herd.primary.service.wait_settled(20)
        await loaded(herd, "coder")
        coder, chat = herd.backends["coder"].service, herd.backends["chat"].service
        await quiet(coder)
        yield url, coder, chat


async def test_logs_of_a_model_by_id_or_alias(
    tmp_path: Path, fake_binary: Path, model_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with both_quiet(tmp_path, fake_binary, model_file) as (url, coder, chat):
        coder.output.append("only coder said this")
        code, by_alias, _ = await cli_output(capsys, "logs", "c", "-n", "3", "--url", url)
        assert code == 0
        code, by_id, _ = await cli_output(capsys, "logs", "coder", "-n", "3", "--url", url)
        expected = coder.output.tail(3)
        code, primary, _ = await cli_output(capsys, "logs", "-n", "3", "--url", url)
        expected_primary = chat.output.tail(3)
    assert by_alias.splitlines() == by_id.splitlines() == expected
    assert expected[-1] == "only coder said this"
    assert primary.splitlines() == expected_primary
    assert "only coder said this" not in primary


async def test_logs_follow_of_a_model_prints_only_its_new_lines(
    tmp_path: Path, fake_binary: Path, model_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with both_quiet(tmp_path, fake_binary, model_file) as (url, coder, chat):
        capsys.readouterr()
        expected_tail = coder.output.tail(2)
        follow = asyncio.create_task(
            run_cli("logs", "coder", "-f", "-n", "2", "--max-events", "1", "--url", url)
        )
        tail = await wait_for_output(capsys)
        chat.output.append("the primary says this")  # not coder's: never printed
        coder.output.append("coder says this")
        async with asyncio.timeout(20):
            assert await follow == 0
        new = capsys.readouterr().out
    assert tail.splitlines() == expected_tail
    assert new.splitlines() == ["coder says this"]


async def test_restart_stop_start_and_status_of_a_model(
    tmp_path: Path, fake_binary: Path, model_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with serve_herd(tmp_path, fake_binary, model_file, max_loaded=2) as (url, herd):
        chat_pid = await loaded(herd, "chat")
        old_pid = await loaded(herd, "coder")

        code, out, err = await cli_output(capsys, "restart", "c", "--wait", "20", "--url", url)
        new_pid = herd.backends["coder"].service.get_state().pid
        assert (code, err) == (0, "")
        assert out.startswith(f"coder: ready, pid {new_pid}, uptime "), out
        assert new_pid not in (None, old_pid)
        assert herd.backends["chat"].service.get_state().pid == chat_pid, "only coder restarted"

        code, out, _ = await cli_output(capsys, "status", "coder", "--url", url)
        assert code == 0
        assert out.splitlines()[:3] == [
            "model       coder",
            "status      ready",
            f"pid         {new_pid}",
        ]
        code, out, _ = await cli_output(capsys, "status", "c", "--json", "--url", url)
        assert (json.loads(out)["model"], json.loads(out)["pid"]) == ("coder", new_pid)

        code, out, _ = await cli_output(capsys, "stop", "coder", "--url", url)
        assert (code, out) == (0, "coder: initial (not running)\n")
        assert herd.view("coder").stopped is not None
        assert herd.backends["chat"].service.get_state().status is Status.READY

        code, out, _ = await cli_output(capsys, "start", "coder", "--wait", "20", "--url", url)
        assert code == 0
        assert out.startswith("coder: ready, pid "), out

        code, out, _ = await cli_output(capsys, "restart", "coder", "--wait", "0", "--url", url)
        assert code == 0
        assert out.startswith("coder: restart requested; now "), out
        async with asyncio.timeout(20):  # the restart ends before llamaherd does
            while herd.view("coder").phase is not Phase.READY or herd.view("coder").load_requested:
                await asyncio.sleep(0.02)

        # Without MODEL: the primary, as the seed's commands always did.
        code, out, _ = await cli_output(capsys, "status", "--json", "--url", url)
        assert "model" not in json.loads(out)
        assert json.loads(out)["pid"] == chat_pid


async def test_logs_follow_of_an_unknown_model_is_one_line(
    tmp_path: Path, fake_binary: Path, model_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with serve_herd(tmp_path, fake_binary, model_file) as (url, _):
        code, out, err = await cli_output(capsys, "logs", "nope", "-f", "--url", url)
    assert (code, out) == (1, "")
    assert err.startswith("llamaherd: error: The model 'nope' does not exist.")
