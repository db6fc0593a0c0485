"""A page of another site, open in Chromium beside llamaherd (no keys, the default): what it
embeds, fetches or navigates to must not load a model; a link it holds to the dashboard may
still be followed, and an address the user types still works."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import uvicorn
from playwright.async_api import Page, Response, expect
from starlette.types import Receive, Scope, Send

from llamaherd.api.app import create_app
from llamaherd.gateway.herd import Herd
from llamaherd.gateway.scheduler import Phase
from llamaherd.supervisor.states import ServiceState, Status
from tests.conftest import free_port
from tests.e2e.conftest import two_model_herd
from tests.serving import serve_application, serve_uvicorn

pytestmark = [pytest.mark.timeout(120)]

# Everything a page can make a browser send without any help from llamaherd: an image, a
# script, a frame, a no-cors fetch. "done" once they all have their answers.
EVIL_PAGE = """<!doctype html><meta charset="utf-8"><title>evil</title>
<img src="{url}/upstream/beta/health">
<script src="{url}/upstream/beta/props"></script>
<iframe src="{url}/upstream/beta/"></iframe>
<iframe src="{url}/"></iframe>
<a id="dashboard" href="{url}/">llamaherd</a>
<a id="swap" href="{url}/upstream/beta/health">swap</a>
<script>
  Promise.allSettled([
    fetch("{url}/upstream/beta/slots", {{mode: "no-cors"}}),
    fetch("{url}/api/status", {{mode: "no-cors"}}),
  ]).then(() => {{ document.title = "done"; }});
</script>"""


@contextlib.asynccontextmanager
async def serve_page(html: str) -> AsyncIterator[str]:
    """`html` at `/` of http://localhost:PORT: another site than llamaherd's 127.0.0.1."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        body = html.encode()
        headers = [(b"content-type", b"text/html"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    config = uvicorn.Config(
        app, host="127.0.0.1", port=free_port(), log_level="warning", lifespan="off"
    )
    async with serve_uvicorn(config) as url:
        yield url.replace("127.0.0.1", "localhost")


@pytest.fixture
async def herd(fake_binary: Path, tmp_path: Path) -> AsyncIterator[Herd]:
    """`alpha` (the default, loaded at start) and `beta`, one loaded at a time."""
    async with two_model_herd(tmp_path, fake_binary, max_loaded=1) as (_settings, herd):
        yield herd


def count_starts(herd: Herd) -> Counter[str]:
    starts: Counter[str] = Counter()
    for model, backend in herd.backends.items():

        def on_state(state: ServiceState, model: str = model) -> None:
            if state.status is Status.STARTING:
                starts[model] += 1

        backend.service.on_state_change(on_state)
    return starts


async def until_ready(herd: Herd, model: str) -> None:
    changed = asyncio.Event()
    herd.on_change(changed.set)
    async with asyncio.timeout(20):
        while herd.view(model).phase is not Phase.READY:
            changed.clear()
            await changed.wait()


async def test_a_page_of_another_site_cannot_load_a_model(herd: Herd, page: Page) -> None:
    starts = count_starts(herd)
    answers: list[tuple[str, int]] = []

    def on_response(response: Response) -> None:
        if response.url.startswith(url):
            answers.append((response.url.removeprefix(url), response.status))

    page.on("response", on_response)
    async with (
        serve_application(create_app(herd, start_service=True)) as url,
        serve_page(EVIL_PAGE.format(url=url)) as evil,
    ):
        await until_ready(herd, "alpha")
        await page.goto(evil)
        await expect(page).to_have_title("done", timeout=20_000)
        upstream = [status for path, status in answers if path.startswith("/upstream/")]
        assert upstream and set(upstream) == {403}, answers

        # A link to a page with effects is refused; one to the dashboard is followed, and
        # the dashboard's own requests are its own (same-origin).
        async with page.expect_navigation() as swap:
            await page.click("#swap")
        assert (await swap.value).status == 403
        await page.go_back()
        async with page.expect_navigation() as dashboard:
            await page.click("#dashboard")
        assert (await dashboard.value).status == 200
        await expect(page.get_by_test_id("status-badge")).to_have_text("ready")
        assert starts["beta"] == 0, answers
        assert herd.view("alpha").phase is Phase.READY

        # An address the user types (Sec-Fetch-Site: none) loads beta, as it should.
        typed = await page.goto(f"{url}/upstream/beta/health")
        assert typed is not None and typed.status == 200
        assert starts["beta"] == 1
