"""The dashboard in Chromium in front of `llamaherd serve` with API keys configured: it asks
for a key, shows llamaherd's own sentence for a wrong one or one without the admin scope, works
live with the admin key (status over Socket.IO, logs over REST, a chat through the gateway),
keeps the key for the tab across a reload, and forgets it on request."""

from __future__ import annotations

import contextlib
import re
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import ConsoleMessage, Page, expect

from tests.conftest import free_port
from tests.e2e.conftest import Console, snapshot
from tests.serving import ServedLlamaherd, write_config

pytestmark = [pytest.mark.timeout(180), pytest.mark.real_server]

# Fresh keys each run: what the page shows and stores can only have come from this test.
ADMIN_KEY = f"admin-{secrets.token_hex(12)}"
APP_KEY = f"app-{secrets.token_hex(12)}"
WRONG_KEY = f"wrong-{secrets.token_hex(12)}"
STORAGE_KEY = "llamaherd.apiKey"

# Chromium reports every answer of 400 or more as a console error, without its address; the
# answers themselves are checked instead (`expected_failure`).
FAILED_RESOURCE = re.compile(
    r"^console error: Failed to load resource: the server responded with a status of 40[013]\b"
)
# A refused Socket.IO handshake makes socket.io-client close its engine.io session; a poll it
# had already sent on that session may then be answered 400 ("Invalid session"). Harmless: the
# session was being closed anyway.
CLOSED_SESSION_POLL = re.compile(
    r"^400 (GET|POST) http://[^/]+/socket\.io/\?EIO=4&transport=polling&.*\bsid="
)
# What a missing, unknown or inference-only key is refused on: llamaherd's admin routes.
REFUSED_CALL = re.compile(r"^40[13] (GET|POST) http://[^/]+/api/")


def expected_failure(answer: str) -> bool:
    return bool(REFUSED_CALL.match(answer) or CLOSED_SESSION_POLL.match(answer))


# Set before the page's own scripts on every load: records whether the key dialog ever showed.
WATCH_KEY_DIALOG = """
window.__keyDialogSeen = false;
new MutationObserver(() => {
  if (document.querySelector('[data-testid="api-key-dialog"]')) window.__keyDialogSeen = true;
}).observe(document, {subtree: true, childList: true});
"""


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@contextlib.asynccontextmanager
async def keyed_llamaherd(folder: Path, binary: Path, model: Path) -> AsyncIterator[str]:
    """`llamaherd serve` as a user runs it, with the demo model and two keys: `admin` (the
    dashboard's scope) and `app` (inference only). Afterwards no llama-server it started may
    be left running."""
    config = write_config(
        folder,
        {
            "llama_server_host": "127.0.0.1",
            "llama_server_port": free_port(),
            "llama_server_binary": str(binary),
            "llama_model_path": str(model),
            "app_port": free_port(),
            "stop_timeout_s": 2,
            "api_keys": [
                {"name": "admin", "key": ADMIN_KEY, "scopes": ["admin"]},
                {"name": "app", "key": APP_KEY, "scopes": ["inference"]},
            ],
        },
        name=".llama-proxy-config.json",
    )
    # The keys come from the config alone, not from a key the environment may hold.
    async with ServedLlamaherd(config, env={"LLAMAHERD_API_KEY": None}) as served:
        await served.wait_healthy()
        yield served.url
    output = served.output
    assert ADMIN_KEY not in output and APP_KEY not in output, "a key was written to the log"


async def use_key(page: Page, key: str) -> None:
    field = page.get_by_test_id("api-key-input")
    await field.fill(key)
    await page.get_by_test_id("api-key-submit").click()


async def refusal(url: str, key: str) -> dict[str, str]:
    """llamaherd's own answer to `key` on a route the dashboard uses."""
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        answer = await http.get("/api/status", headers=bearer(key))
    assert answer.status_code in (401, 403), answer.text
    return dict(answer.json()["error"])


async def test_dashboard_asks_for_a_key_and_keeps_it_for_the_tab(
    real_binary: Path, demo_model: Path, tmp_path: Path, page: Page
) -> None:
    console = Console(page)
    said: list[str] = []

    def remember(message: ConsoleMessage) -> None:
        said.append(message.text)

    page.on("console", remember)
    failed: list[str] = []
    page.on(
        "response",
        lambda r: (
            failed.append(f"{r.status} {r.request.method} {r.url}") if r.status >= 400 else None
        ),
    )
    async with keyed_llamaherd(tmp_path, real_binary, demo_model) as url:
        await page.goto(url)
        await check_first_question(page)
        await check_refused_keys(page, url)
        await use_key(page, ADMIN_KEY)
        await expect(page.get_by_test_id("api-key-dialog")).to_have_count(0)
        await expect_live(page)
        stored = await page.evaluate(
            f"[sessionStorage.getItem('{STORAGE_KEY}'), localStorage.length]"
        )
        assert stored == [ADMIN_KEY, 0]
        assert ADMIN_KEY not in page.url
        await chat(page)
        await check_reload_and_other_tab(page, url)
        await check_forget(page)
        unexpected = [p for p in console.problems if not FAILED_RESOURCE.match(p)]
        unexpected += [answer for answer in failed if not expected_failure(answer)]
        assert not unexpected, "the page reported errors:\n" + "\n".join(unexpected)
    assert not [text for text in said if ADMIN_KEY in text or APP_KEY in text], "a key was logged"


async def check_first_question(page: Page) -> None:
    """No key yet: the dialog asks, with nothing wrong to show, and llamaherd is not called
    unreachable."""
    await expect(page.get_by_test_id("api-key-dialog")).to_be_visible()
    await expect(page.get_by_test_id("api-key-input")).to_have_attribute("type", "password")
    await expect(page.get_by_test_id("api-key-error")).to_have_count(0)
    await expect(page.get_by_test_id("unreachable-banner")).to_have_count(0)
    await expect(page.get_by_test_id("connection-state")).to_have_text("key needed")
    await snapshot(page, "api-key-dialog")


async def check_refused_keys(page: Page, url: str) -> None:
    """An unknown key and an inference-only key: each refusal is llamaherd's own sentence, and
    neither key is kept."""
    wrong = await refusal(url, WRONG_KEY)
    scope = await refusal(url, APP_KEY)
    assert wrong["code"] == "invalid_api_key", wrong
    assert scope["code"] == "insufficient_scope", scope
    error = page.get_by_test_id("api-key-error")
    await use_key(page, WRONG_KEY)
    await expect(error).to_have_text(wrong["message"])
    await use_key(page, APP_KEY)
    await expect(error).to_have_text(scope["message"])
    await expect(page.get_by_test_id("api-key-dialog")).to_be_visible()
    await snapshot(page, "api-key-scope")
    assert await page.evaluate(f"sessionStorage.getItem('{STORAGE_KEY}')") is None


async def check_reload_and_other_tab(page: Page, url: str) -> None:
    """A reload in the same tab keeps the key: no question asked. Another tab is another
    session: it asks for its own key."""
    await page.add_init_script(WATCH_KEY_DIALOG)
    await page.reload()
    await expect_live(page)
    assert await page.evaluate("window.__keyDialogSeen") is False
    other = await page.context.new_page()
    try:
        await other.goto(url)
        await expect(other.get_by_test_id("api-key-dialog")).to_be_visible()
    finally:
        await other.close()


async def check_forget(page: Page) -> None:
    """Forget key: gone from the tab, and the dialog asks again."""
    await page.get_by_test_id("forget-key").click()
    await expect(page.get_by_test_id("api-key-dialog")).to_be_visible()
    await expect(page.get_by_test_id("forget-key")).to_have_count(0)
    assert await page.evaluate(f"sessionStorage.getItem('{STORAGE_KEY}')") is None


async def expect_live(page: Page) -> None:
    """The admin key at work: the status over Socket.IO, the logs tail over REST."""
    await expect(page.get_by_test_id("status-badge")).to_have_text("ready", timeout=30_000)
    await expect(page.get_by_test_id("connection-state")).to_have_text("live")
    await expect(page.get_by_test_id("logs-panel")).to_contain_text("listening on")
    await expect(page.get_by_test_id("unreachable-banner")).to_have_count(0)


async def chat(page: Page) -> None:
    """The playground's inference call carries the key too."""
    await page.get_by_test_id("playground").scroll_into_view_if_needed()
    await page.get_by_test_id("playground-max-tokens").fill("8")
    await page.get_by_test_id("playground-input").fill("Hello")
    await page.get_by_test_id("playground-send").click()
    exchange = page.get_by_test_id("playground-exchange")
    await expect(exchange).to_have_attribute("data-status", "done", timeout=60_000)
    await expect(page.get_by_test_id("playground-error")).to_have_count(0)
