"""Cross-site requests and DNS rebinding are refused; same-origin and CLI use is not."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.api.conftest import serve_app
from tests.conftest import ServiceFactory

pytestmark = pytest.mark.timeout(30)


async def test_cross_origin_control_is_refused(
    make_service: ServiceFactory, fake_binary: Path, model_file: Path
) -> None:
    service = make_service(binary=fake_binary, model_path=model_file)
    async with (
        serve_app(service, start_service=False) as url,
        httpx.AsyncClient(base_url=url) as http,
    ):
        evil = await http.post("/api/llama/stop", headers={"Origin": "https://evil.example"})
        same = await http.post("/api/llama/stop", headers={"Origin": url})
        cli = await http.post("/api/llama/stop")  # no Origin: not a browser
        read = await http.get("/api/status", headers={"Origin": "https://evil.example"})
    assert evil.status_code == 403
    assert evil.json()["error"] == {
        "message": "cross-origin POST from https://evil.example refused",
        "type": "forbidden",
    }
    assert same.status_code == 200 and cli.status_code == 200
    assert read.status_code == 200


async def test_rebound_host_names_are_refused(
    make_service: ServiceFactory, fake_binary: Path, model_file: Path
) -> None:
    service = make_service(binary=fake_binary, model_path=model_file)
    async with (
        serve_app(service, start_service=False) as url,
        httpx.AsyncClient(base_url=url) as http,
    ):
        rebound = await http.get("/api/status", headers={"Host": "attacker.example:3000"})
        local = await http.get("/api/status", headers={"Host": "localhost:3000"})
    assert rebound.status_code == 403
    assert "not a loopback name" in rebound.json()["error"]["message"]
    assert local.status_code == 200
