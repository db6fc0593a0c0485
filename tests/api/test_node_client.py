"""The llamaStatus contract as the official JavaScript client (socket.io-client 4.x) sees it.

tests/node/socketio_contract.mjs connects twice (default transports: polling then the upgrade
to a WebSocket; and WebSocket only), checks every payload's keys and types, and prints a JSON
summary. Its dependencies come from `npm ci --prefix tests/node`."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from tests.api.conftest import serve_app
from tests.conftest import ServiceFactory

pytestmark = pytest.mark.timeout(60)

NODE_DIR = Path(__file__).resolve().parent.parent / "node"
SCRIPT = NODE_DIR / "socketio_contract.mjs"
NODE_TIMEOUT_S = 30  # the script gives up by itself after 15 s


def node_binary() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH: install Node.js 20 or newer to run this test")
    if not (NODE_DIR / "node_modules" / "socket.io-client").is_dir():
        pytest.fail(
            f"{NODE_DIR / 'node_modules'} is missing socket.io-client: "
            "run `npm ci --prefix tests/node` first"
        )
    return node


async def run_contract_check(node: str, url: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        node,
        str(SCRIPT),
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(NODE_TIMEOUT_S):
            stdout, stderr = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        pytest.fail(f"node {SCRIPT.name} did not exit within {NODE_TIMEOUT_S} s")
    assert proc.returncode is not None
    return proc.returncode, stdout.decode(), stderr.decode()


async def test_node_socketio_client_sees_the_contract(
    make_service: ServiceFactory, fake_binary: Path, model_file: Path
) -> None:
    node = node_binary()
    service = make_service(binary=fake_binary, model_path=model_file)
    async with serve_app(service) as url:
        state = await service.wait_settled(20)
        assert state.status.value == "ready", state

        code, stdout, stderr = await run_contract_check(node, url)

    assert code == 0, f"contract check failed (exit {code}):\n{stderr}{stdout}"
    lines = stdout.strip().splitlines()
    assert len(lines) == 1, f"expected one summary line, got: {stdout!r}"
    summary = json.loads(lines[0])
    assert summary["ok"] is True
    assert summary["status"] == "ready"
    by_name = {conn["name"]: conn for conn in summary["connections"]}
    assert by_name["default"]["transport"] == "websocket", "polling must upgrade to a WebSocket"
    assert by_name["websocket"]["transport"] == "websocket"
    assert all(conn["status"] == "ready" and conn["answered"] for conn in by_name.values())
