"""The gateway's part of the dashboard in Chromium: the models table and the chat playground,
served by the real app in front of two real llama-servers, each with its own tiny demo model,
one loaded at a time (`max_loaded: 1`)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Locator, Page, expect

from llamaherd.api.app import create_app
from llamaherd.gateway.herd import Herd
from llamaherd.gateway.scheduler import Phase
from tests.conftest import pid_alive
from tests.e2e.conftest import Console, snapshot_of, two_model_herd
from tests.serving import serve_application

pytestmark = [pytest.mark.timeout(180), pytest.mark.real_server]

# Records every label each model's state chip shows, so the swap's short states are seen too.
WATCH_CHIPS = """() => {
  window.__chips = {};
  const seen = () => {
    for (const row of document.querySelectorAll('[data-testid="gw-model-row"]')) {
      const id = row.dataset.modelId;
      const chip = row.querySelector('[data-testid="gw-state"]');
      const list = (window.__chips[id] = window.__chips[id] || []);
      if (chip && list[list.length - 1] !== chip.textContent) list.push(chip.textContent);
    }
  };
  new MutationObserver(seen).observe(document.body,
    {subtree: true, childList: true, characterData: true});
  seen();
}"""


@pytest.fixture
async def herd(real_binary: Path, tmp_path: Path) -> AsyncIterator[Herd]:
    """`alpha` (the default) and `beta`, one loaded at a time."""
    async with two_model_herd(tmp_path, real_binary, max_loaded=1) as (_settings, herd):
        yield herd


def model_row(page: Page, model: str) -> Locator:
    return page.locator(f'[data-testid="gw-model-row"][data-model-id="{model}"]')


async def expect_buttons(row: Locator, *, load: bool, unload: bool) -> None:
    for name, enabled in (("load", load), ("unload", unload)):
        button = row.get_by_test_id(f"btn-{name}")
        if enabled:
            await expect(button).to_be_enabled()
        else:
            await expect(button).to_be_disabled()


async def test_models_table_swap_and_playground(herd: Herd, page: Page, browser: Browser) -> None:
    console = Console(page)
    async with serve_application(create_app(herd)) as url:
        await page.goto(url)
        await expect(page.get_by_test_id("gw-model-row")).to_have_count(2)
        await check_first_table(page)
        await snapshot_of(page.get_by_test_id("models-card"), "models")
        await load_beta_in_place_of_alpha(page, herd)
        await snapshot_of(page.get_by_test_id("models-card"), "models-swapped")
        await chat_with_beta(page, herd)
        await snapshot_of(page.get_by_test_id("playground"), "playground")
        await check_phone(browser, url)
        console.assert_clean()


async def check_first_table(page: Page) -> None:
    """The seed's model loads at start; the other waits for its first request."""
    alpha, beta = model_row(page, "alpha"), model_row(page, "beta")
    await expect(alpha.get_by_test_id("gw-state")).to_have_text("ready", timeout=30_000)
    await expect(beta.get_by_test_id("gw-state")).to_have_text("unloaded")
    await expect(alpha.get_by_test_id("gw-default-mark")).to_be_visible()
    await expect(beta.get_by_test_id("gw-default-mark")).to_have_count(0)
    for row in (alpha, beta):
        await expect(row.get_by_test_id("gw-size")).to_have_text("428.8 KiB")  # 439,040 bytes
        await expect(row.get_by_test_id("gw-quant")).to_have_text("F32 · llama")
    await expect(alpha.get_by_test_id("gw-in-flight")).to_have_text(re.compile(r"^0/\d+$"))
    await expect(page.get_by_test_id("gw-summary")).to_have_text("2 served · 1 loaded")
    await expect_buttons(alpha, load=False, unload=True)
    await expect_buttons(beta, load=True, unload=False)


async def load_beta_in_place_of_alpha(page: Page, herd: Herd) -> None:
    """Load the other model: with room for one, alpha makes way, and the table follows."""
    alpha, beta = model_row(page, "alpha"), model_row(page, "beta")
    alpha_pid = herd.backends["alpha"].service.get_state().pid
    assert alpha_pid is not None
    await page.evaluate(WATCH_CHIPS)
    await beta.get_by_test_id("btn-load").click()
    await expect(beta.get_by_test_id("gw-state")).to_have_text("ready", timeout=30_000)
    await expect(alpha.get_by_test_id("gw-state")).to_have_text("unloaded", timeout=15_000)
    result = page.get_by_test_id("model-action-result")
    await expect(result).to_have_text("Loading beta…")
    await result.get_by_role("button", name="Close").click()
    await expect(result).to_be_hidden()
    await expect_buttons(alpha, load=True, unload=False)
    await expect_buttons(beta, load=False, unload=True)
    chips = await page.evaluate("window.__chips")
    assert chips["beta"][0] == "unloaded" and chips["beta"][-1] == "ready", chips
    assert chips["alpha"][0] == "ready" and chips["alpha"][-1] == "unloaded", chips
    assert not {"error", "failed", "crashed"} & {*chips["alpha"], *chips["beta"]}, chips
    # What the page says is what happened: alpha's llama-server is gone.
    assert herd.view("beta").phase is Phase.READY
    assert herd.view("alpha").phase is Phase.UNLOADED
    assert not pid_alive(alpha_pid)


async def chat_with_beta(page: Page, herd: Herd) -> None:
    """The playground: the chosen model answers, streamed, then its speed is shown."""
    await page.get_by_test_id("playground").scroll_into_view_if_needed()
    await expect(page.get_by_test_id("playground-model")).to_have_value("alpha")
    await page.get_by_test_id("playground-model").select_option("beta")
    await page.get_by_test_id("playground-max-tokens").fill("48")
    await page.get_by_test_id("playground-input").fill("Tell me about llamas.")
    await page.get_by_test_id("playground-send").click()
    exchange = page.get_by_test_id("playground-exchange")
    await expect(exchange).to_have_attribute("data-status", "done", timeout=60_000)
    await expect(page.get_by_test_id("playground-answer")).not_to_be_empty()
    rate = page.get_by_test_id("playground-tps")
    await expect(rate).to_have_text(re.compile(r"^\d+\.\d tokens/s$"))
    assert float((await rate.inner_text()).split()[0]) > 0
    tokens = await page.get_by_test_id("playground-tokens").inner_text()
    assert 0 < int(tokens.split()[0]) <= 48, tokens
    await expect(page.get_by_test_id("playground-stats")).to_contain_text("beta")
    # It went to beta: used just now, and alpha was not brought back for it.
    await expect(model_row(page, "beta").get_by_test_id("gw-last-used")).not_to_have_text("—")
    await expect(model_row(page, "alpha").get_by_test_id("gw-state")).to_have_text("unloaded")
    assert herd.view("alpha").phase is Phase.UNLOADED


async def check_phone(browser: Browser, url: str) -> None:
    """A phone: the table drops columns rather than scroll sideways."""
    phone = await browser.new_context(viewport={"width": 375, "height": 812}, is_mobile=True)
    try:
        page = await phone.new_page()
        await page.goto(url)
        await expect(page.get_by_test_id("gw-model-row")).to_have_count(2)
        await expect(model_row(page, "beta").get_by_test_id("btn-unload")).to_be_visible()
        await expect(model_row(page, "beta").get_by_test_id("gw-size")).to_be_hidden()
        overflow = await page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        await snapshot_of(page.get_by_test_id("models-card"), "models-phone")
    finally:
        await phone.close()
    assert overflow <= 0, f"the page scrolls sideways by {overflow} px on a phone"
