"""The health view in Chromium, against the real app with its history store, in front of two
real llama-servers (tiny demo models): chat requests give the charts and the requests table
their rows, a `kill -9` of one llama-server gives the uptime bar its crash and restart marker,
and the models table shows the live tokens/s."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Locator, Page, expect

from llamaherd.api.app import Application, create_app
from llamaherd.telemetry.assembly import Telemetry
from llamaherd.wiring.build import telemetry_options
from tests.conftest import post_chat
from tests.e2e.conftest import Console, snapshot, two_model_herd
from tests.serving import serve_application

pytestmark = [pytest.mark.timeout(240), pytest.mark.real_server]

WAIT_S = 30.0
SIDEWAYS = "document.documentElement.scrollWidth - document.documentElement.clientWidth"


@pytest.fixture
async def application(real_binary: Path, tmp_path: Path) -> AsyncIterator[Application]:
    """The app `llamaherd serve` builds from a config file: `alpha` (the default, loaded at
    start) and `beta`, room for both, history and log files in a temporary `state_dir`."""
    async with two_model_herd(tmp_path, real_binary, max_loaded=2, state_dir="state") as (
        settings,
        herd,
    ):
        assert settings.state_dir == tmp_path / "state"
        yield create_app(herd, telemetry=Telemetry(herd, telemetry_options(settings)))


async def gateway_model(http: httpx.AsyncClient, model: str) -> dict[str, Any]:
    answer = await http.get("/api/gateway/models")
    assert answer.status_code == 200, answer.text
    found: list[dict[str, Any]] = [m for m in answer.json()["models"] if m["id"] == model]
    assert found, answer.text
    return found[0]


async def until_state(http: httpx.AsyncClient, model: str, state: str, other_than: int) -> int:
    """Wait (with a deadline) until `model` is `state` with a pid other than `other_than`."""
    async with asyncio.timeout(WAIT_S):
        while True:
            entry = await gateway_model(http, model)
            if entry["state"] == state and entry["pid"] not in (None, other_than):
                return int(entry["pid"])
            await asyncio.sleep(0.1)


def row_of(page: Page, test_id: str, model: str) -> Locator:
    return page.locator(f'[data-testid="{test_id}"][data-model-id="{model}"]')


async def test_health_page(application: Application, page: Page, browser: Browser) -> None:
    console = Console(page)
    async with (
        serve_application(application) as url,
        httpx.AsyncClient(base_url=url, timeout=WAIT_S) as http,
    ):
        # History to show: chats with both models, then a crash and a restart of alpha.
        for model in ("alpha", "alpha", "alpha", "beta", "beta"):
            await post_chat(http, model, tokens=16)
        await check_models_table(page, url)

        first_pid = await until_state(http, "alpha", "ready", other_than=-1)
        os.kill(first_pid, signal.SIGKILL)
        await until_state(http, "alpha", "ready", other_than=first_pid)
        await post_chat(http, "alpha", tokens=16)

        await check_health_page(page, url)
        await snapshot(page, "health")
        await check_requests_table(page)
        await check_phone(browser, url)
        await check_tablet(browser, url)
        console.assert_clean()


async def check_models_table(page: Page, url: str) -> None:
    """The status view's models table shows the live speed of the last minute's requests."""
    await page.goto(url)
    for model in ("alpha", "beta"):
        row = row_of(page, "gw-model-row", model)
        await expect(row.get_by_test_id("gw-tps")).to_have_text(re.compile(r"^\d+(\.\d)? tok/s$"))
        await expect(row.get_by_test_id("gw-memory")).to_have_text(re.compile(r"\d\.\d [KMG]iB"))
        await expect(row.get_by_test_id("gw-slots")).to_have_text(re.compile(r"^\d+/\d+$"))
    rate = await row_of(page, "gw-model-row", "alpha").get_by_test_id("gw-tps").inner_text()
    assert float(rate.split()[0]) > 0, rate


async def check_health_page(page: Page, url: str) -> None:
    await page.get_by_test_id("nav-health").click()
    await expect(page).to_have_url(re.compile(r"#/health$"))
    await expect(page.get_by_test_id("health-page")).to_be_visible()
    await expect(page.get_by_test_id("history-disabled")).to_have_count(0)
    await expect(page.get_by_test_id("store-warning")).to_have_count(0)

    # Uptime: alpha was ready, crashed and came back; beta was loaded on demand.
    alpha = row_of(page, "uptime-row", "alpha")
    day = alpha.locator('[data-testid="uptime-bar"][data-window="24h"]')
    await expect(day.locator('[data-testid="uptime-segment"][data-kind="crashed"]')).to_have_count(
        1
    )
    await expect(day.locator('[data-testid="uptime-segment"][data-kind="ready"]')).to_have_count(2)
    await expect(
        day.locator('[data-testid="uptime-segment"][data-kind="starting"]')
    ).not_to_have_count(0)
    marker = day.get_by_test_id("restart-marker")
    await expect(marker).to_have_count(1)
    await expect(marker).to_have_attribute("data-exit", "killed by SIGKILL")
    await expect(alpha.get_by_test_id("restart-count")).to_have_text("1 restart in 24 h")
    for window in ("24h", "7d"):
        figure = alpha.locator(f'[data-testid="availability"][data-window="{window}"]')
        await expect(figure).to_have_text(re.compile(r"^\d{1,2}\.\d\d%$"))  # a crash: below 100 %
        assert 0 < float((await figure.inner_text()).rstrip("%")) < 100
    beta = row_of(page, "uptime-row", "beta")
    await expect(beta.get_by_test_id("restart-marker")).to_have_count(0)
    await expect(beta.locator('[data-testid="availability"][data-window="24h"]')).to_have_text(
        re.compile(r"^\d{1,3}(\.\d\d)?%$")
    )
    await expect(page.get_by_test_id("availability-definition")).to_contain_text(
        "Availability = time ready ÷ time wanted"
    )

    # Alpha's charts (the default model): points drawn as SVG marks.
    await expect(page.get_by_test_id("health-model")).to_have_value("alpha")
    for chart in ("chart-tps", "chart-latency", "chart-memory"):
        card = page.get_by_test_id(chart)
        await expect(card).not_to_have_attribute("data-points", "0")
        await expect(card.locator("svg .MuiLineChart-mark").first).to_be_visible()
    line = page.get_by_test_id("chart-tps").locator("svg path.MuiLineChart-line").first
    assert re.match(r"^M[\d.]+,[\d.]+", await line.get_attribute("d") or ""), "no line drawn"
    loads = page.get_by_test_id("chart-load-times")
    await expect(loads).to_have_attribute("data-points", "2")  # the first start and the restart
    await expect(loads.locator("svg circle").first).to_be_visible()

    restart = page.get_by_test_id("restart-row")
    await expect(restart).to_have_count(1)
    await expect(restart).to_contain_text("killed by SIGKILL")


async def check_requests_table(page: Page) -> None:
    """Six chats, newest first; the filters narrow them by model and by status class."""
    rows = page.get_by_test_id("request-row")
    await expect(rows).to_have_count(6)
    await expect(rows.first.get_by_test_id("request-model")).to_have_text("alpha")
    await expect(
        page.locator('[data-testid="request-row"][data-status-class="2xx"]')
    ).to_have_count(6)
    await page.get_by_test_id("requests-filter-model").select_option("beta")
    await expect(rows).to_have_count(2)
    await expect(page.locator('[data-testid="request-row"][data-model="beta"]')).to_have_count(2)
    await page.get_by_test_id("requests-filter-status").select_option("5xx")
    await expect(rows).to_have_count(0)
    await expect(page.get_by_test_id("requests-empty")).to_have_text(
        "No request matches these filters."
    )
    await page.get_by_test_id("requests-filter-model").select_option("")
    await page.get_by_test_id("requests-filter-status").select_option("2xx")
    await expect(rows).to_have_count(6)


async def check_phone(browser: Browser, url: str) -> None:
    """A phone: the bars and charts fit the width; nothing scrolls sideways."""
    phone = await browser.new_context(viewport={"width": 375, "height": 812}, is_mobile=True)
    try:
        page = await phone.new_page()
        await page.goto(f"{url}/#/health/beta")
        await expect(page.get_by_test_id("health-model")).to_have_value("beta")
        markers = row_of(page, "uptime-row", "alpha").get_by_test_id("restart-marker")
        await expect(markers).to_have_count(2)  # one on each bar, 24 hours and 7 days
        await expect(page.get_by_test_id("request-row").first).to_be_visible()
        await expect(
            page.get_by_test_id("chart-tps").locator("svg .MuiLineChart-mark").first
        ).to_be_visible()
        overflow = await page.evaluate(SIDEWAYS)
        await snapshot(page, "health-phone")
    finally:
        await phone.close()
    assert overflow <= 0, f"the health page scrolls sideways by {overflow} px on a phone"


async def check_tablet(browser: Browser, url: str) -> None:
    """Where the models table gets its middle columns (900 px): neither view scrolls sideways."""
    tablet = await browser.new_context(viewport={"width": 900, "height": 1000})
    try:
        page = await tablet.new_page()
        await page.goto(url)
        await expect(
            row_of(page, "gw-model-row", "alpha").get_by_test_id("gw-memory")
        ).to_be_visible()
        status_overflow = await page.evaluate(SIDEWAYS)
        await page.get_by_test_id("nav-health").click()
        await expect(page.get_by_test_id("request-row").first).to_be_visible()
        health_overflow = await page.evaluate(SIDEWAYS)
    finally:
        await tablet.close()
    assert status_overflow <= 0, f"the status view scrolls sideways by {status_overflow} px"
    assert health_overflow <= 0, f"the health view scrolls sideways by {health_overflow} px"
