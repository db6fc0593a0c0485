"""What every browser test shares: Debian's Chromium driven by Playwright, a page, the console
watcher, and screenshots into artifacts/screenshots/."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, ConsoleMessage, Locator, Page, async_playwright

from llamaherd.api.app import STATIC_DIR

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
# Without these, Chromium reaches for Google's services at start, which a closed network refuses.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not (STATIC_DIR / "index.html").is_file():
        pytest.fail("the dashboard is not built: run scripts/install (npm run --prefix web build)")
    if not shutil.which(CHROMIUM):
        pytest.fail(
            f"no Chromium at {CHROMIUM}: apt-get install chromium (scripts/install --tests)"
        )
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        await browser.close()


class Console:
    """Errors the page reports; checked while llamaherd still runs (a page whose server is gone
    rightly complains about refused connections)."""

    def __init__(self, page: Page) -> None:
        self.problems: list[str] = []
        page.on("console", self._on_console)
        page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.problems.append(f"console error: {message.text}")

    def assert_clean(self) -> None:
        assert not self.problems, "the page reported errors:\n" + "\n".join(self.problems)


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    yield await context.new_page()
    await context.close()


async def snapshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    # Transitions run to their end first: a fold caught half open is not the state shown.
    await page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True, animations="disabled")


async def snapshot_of(part: Locator, name: str) -> None:
    """One part of the page (a card), photographed alone."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await part.screenshot(path=SCREENSHOTS / f"{name}.png", animations="disabled")
