"""The dashboard in Debian's Chromium (driven by Playwright), served by the real app, in front
of the real llama-server and the demo model, and of the fake one for the states the real one
passes through too quickly to photograph (starting, error)."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, expect

from tests.api.conftest import serve_app
from tests.conftest import RecordingSleep, ServiceFactory
from tests.e2e.conftest import Console, snapshot

pytestmark = [pytest.mark.timeout(120)]

# Records every text the status badge, the error message and the last-output toggle show, so
# a state held for a split second (`crashed` lasts one backoff) is not missed.
WATCH_BADGE = """() => {
  const watched = {badges: 'status-badge', errors: 'error-message', outputs: 'last-output-toggle'};
  for (const key of Object.keys(watched)) window['__' + key] = [];
  const seen = () => {
    for (const [key, id] of Object.entries(watched)) {
      const element = document.querySelector(`[data-testid="${id}"]`);
      const text = element ? element.textContent : null;
      const list = window['__' + key];
      if (text && list[list.length - 1] !== text) list.push(text);
    }
  };
  new MutationObserver(seen).observe(document.body,
    {subtree: true, childList: true, characterData: true});
  seen();
}"""


async def expect_controls(page: Page, *, start: bool, stop: bool, restart: bool) -> None:
    """Which control buttons are enabled: the ones that make sense in the state shown."""
    for name, enabled in (("start", start), ("stop", stop), ("restart", restart)):
        button = page.get_by_test_id(f"btn-{name}")
        if enabled:
            await expect(button).to_be_enabled()
        else:
            await expect(button).to_be_disabled()


@pytest.mark.real_server
async def test_ready_crash_recovery_and_controls(
    make_service: ServiceFactory, real_binary: Path, demo_model: Path, page: Page
) -> None:
    service = make_service(binary=real_binary, model_path=demo_model)
    console = Console(page)
    async with serve_app(service) as url:
        await service.wait_settled(30)
        await page.goto(url)
        badge = page.get_by_test_id("status-badge")
        await expect(badge).to_have_text("ready")
        row = page.get_by_test_id("model-row")
        await expect(row).to_have_count(1)
        await expect(row).to_contain_text("llamaherd-demo")
        await expect(row).to_contain_text("428.8 KiB")  # 439,040 bytes
        await expect(row).to_contain_text("llama")
        await expect(page.get_by_test_id("logs-panel")).to_contain_text("listening on")
        await expect_controls(page, start=False, stop=True, restart=True)
        await snapshot(page, "ready")

        # kill -9 of llama-server: crashed, starting, ready, live, without a reload.
        await page.evaluate(WATCH_BADGE)
        pid = service.get_state().pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        await expect(badge).to_have_text("crashed")
        await expect(page.get_by_test_id("retry-count")).to_contain_text("retry 1/5")
        await snapshot(page, "crashed")
        await expect(badge).to_have_text("ready", timeout=20_000)
        seen = await page.evaluate("window.__badges")
        assert seen == ["ready", "crashed", "starting", "ready"]
        # The reason alone is the message, not the server's routine lines joined by " | "; the
        # lines sit folded under "Last output".
        errors = await page.evaluate("window.__errors")
        assert any("SIGKILL" in error for error in errors), errors
        assert not any(" | " in error for error in errors), errors
        outputs = await page.evaluate("window.__outputs")
        assert any(output.startswith("▸ Last output (") for output in outputs), outputs
        # The new server's start-up reached the logs panel live (llamaLog), without a reload.
        twice = re.compile(r"listening on[\s\S]*listening on")
        await expect(page.get_by_test_id("logs-panel")).to_contain_text(twice)

        # Stop asks for confirmation; start brings it back.
        await page.get_by_test_id("btn-stop").click()
        await page.get_by_test_id("confirm-stop").click()
        await expect(badge).to_have_text("initial")
        await expect(page.get_by_test_id("model-row")).to_have_count(0)
        await expect_controls(page, start=True, stop=False, restart=False)
        await page.get_by_test_id("btn-start").click()
        await expect(badge).to_have_text("ready", timeout=20_000)
        await expect(page.get_by_test_id("model-row")).to_have_count(1)
        console.assert_clean()


async def test_starting_and_error_states(
    make_service: ServiceFactory, fake_binary: Path, model_file: Path, page: Page
) -> None:
    service = make_service(
        binary=fake_binary,
        model_path=model_file,
        # Three seconds of loading to photograph `starting`, then crashes until `error`.
        server_args=["--fake-load-s", "3", "--fake-crash-after-s", "0.1"],
        sleep=RecordingSleep(real_s=0.2),
    )
    console = Console(page)
    async with serve_app(service, start_service=False) as url:
        await page.goto(url)
        badge = page.get_by_test_id("status-badge")
        await expect(badge).to_have_text("initial")
        await expect_controls(page, start=True, stop=False, restart=False)
        await page.get_by_test_id("btn-start").click()
        await expect(badge).to_have_text("starting")
        await expect(page.get_by_test_id("status-spinner")).to_be_visible()
        await expect_controls(page, start=False, stop=True, restart=True)
        await snapshot(page, "starting")
        await expect(badge).to_have_text("error", timeout=60_000)
        await expect(page.get_by_test_id("retry-count")).to_contain_text("5/5")
        message = page.get_by_test_id("error-message")
        await expect(message).to_contain_text("Gave up after 5")
        await expect(message).not_to_contain_text(" | ")
        await expect_controls(page, start=True, stop=True, restart=True)
        # The dead server's last lines: folded by default, monospace once opened.
        toggle = page.get_by_test_id("last-output-toggle")
        await expect(toggle).to_have_attribute("aria-expanded", "false")
        await expect(page.get_by_test_id("last-output")).to_have_count(0)
        await toggle.click()
        output = page.get_by_test_id("last-output")
        await expect(output).to_be_visible()
        await expect(output).not_to_be_empty()
        font = await output.evaluate("element => getComputedStyle(element).fontFamily")
        assert "monospace" in font, font
        await snapshot(page, "error")
        console.assert_clean()


async def test_unreachable_llamaherd_is_said_plainly(
    make_service: ServiceFactory, fake_binary: Path, model_file: Path, page: Page
) -> None:
    """When llamaherd itself goes away the page says so."""
    service = make_service(binary=fake_binary, model_path=model_file)
    async with serve_app(service) as url:
        await service.wait_settled(20)
        await page.goto(url)
        await expect(page.get_by_test_id("status-badge")).to_have_text("ready")
        await expect(page.get_by_test_id("unreachable-banner")).to_have_count(0)
    banner = page.get_by_test_id("unreachable-banner")
    await expect(banner).to_be_visible(timeout=20_000)
    await expect(banner).to_contain_text("Cannot reach llamaherd")


async def test_phone_layout_and_dark_theme(
    make_service: ServiceFactory, fake_binary: Path, model_file: Path, browser: Browser
) -> None:
    """A phone-sized screen in the system's dark mode: no sideways scrolling, dark page."""
    service = make_service(binary=fake_binary, model_path=model_file)
    context = await browser.new_context(
        viewport={"width": 390, "height": 844}, color_scheme="dark", is_mobile=True
    )
    page = await context.new_page()
    console = Console(page)
    try:
        async with serve_app(service) as url:
            await service.wait_settled(20)
            await page.goto(url)
            await expect(page.get_by_test_id("status-badge")).to_have_text("ready")
            await expect(page.get_by_test_id("btn-restart")).to_be_visible()
            overflow = await page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            background = await page.evaluate("getComputedStyle(document.body).backgroundColor")
            await snapshot(page, "phone-dark")
            console.assert_clean()
    finally:
        await context.close()
    assert overflow <= 0, f"the page scrolls sideways by {overflow} px on a phone"
    red, green, blue = (int(part) for part in re.findall(r"\d+", background)[:3])
    assert max(red, green, blue) < 80, f"not a dark background: {background}"
