"""What every browser test shares: Debian's Chromium driven by Playwright, a page, the console
watcher, and screenshots into artifacts/screenshots/."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, ConsoleMessage, Locator, Page, async_playwright

from llamaherd.api.app import STATIC_DIR
from llamaherd.catalog.demo_model import write_demo_model
from llamaherd.config.settings import Settings, load_config
from llamaherd.gateway.herd import Herd
from llamaherd.supervisor.states import ServiceState
from llamaherd.wiring.build import build_herd
from tests.conftest import free_port, pid_alive

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


@contextlib.asynccontextmanager
async def two_model_herd(
    folder: Path, binary: Path, **keys: Any
) -> AsyncIterator[tuple[Settings, Herd]]:
    """Two demo models from a config file, as `llamaherd serve` reads it: `alpha` (the seed's
    `llama_model_path`, the default) and `beta` (under `models`), plus `keys`. At the end the
    herd is closed, and no llama-server it started may live on."""
    write_demo_model(folder / "alpha.gguf", seed=1)
    write_demo_model(folder / "beta.gguf", seed=2)
    config = folder / ".llama-proxy-config.json"
    settings_keys = {
        "llama_server_host": "127.0.0.1",
        "llama_server_port": free_port(),
        "llama_server_binary": str(binary),
        "llama_model_path": "alpha.gguf",
        "models": {"beta": {"path": "beta.gguf"}},
        "stop_timeout_s": 2,
        **keys,
    }
    config.write_text(json.dumps(settings_keys))
    settings = load_config(config)
    herd = build_herd(settings)
    pids: set[int] = set()

    def remember(state: ServiceState) -> None:
        if state.pid is not None and not state.adopted:
            pids.add(state.pid)

    for backend in herd.backends.values():
        backend.service.on_state_change(remember)
    yield settings, herd
    await herd.aclose()  # again after an app's shutdown: stopped servers stay stopped
    orphans = [pid for pid in pids if pid_alive(pid)]
    for pid in orphans:
        os.kill(pid, signal.SIGKILL)
    assert not orphans, f"llama-servers left running: {orphans}"
