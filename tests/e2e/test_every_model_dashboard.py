"""Every model's card and logs in Chromium: choosing the second model in the models table
shows its status card and its llama-server's output, its controls act on it alone, and the
choice survives a reload of the page. The real app in front of two real llama-servers."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Page, expect

from llamaherd.api.app import create_app
from llamaherd.gateway.herd import Herd
from llamaherd.gateway.scheduler import Phase
from tests.conftest import pid_alive
from tests.e2e.conftest import Console, snapshot, snapshot_of, two_model_herd
from tests.serving import serve_application

pytestmark = [pytest.mark.timeout(180), pytest.mark.real_server]

LISTENING_TWICE = re.compile(r"listening on[\s\S]*listening on")


@pytest.fixture
async def herd(real_binary: Path, tmp_path: Path) -> AsyncIterator[Herd]:
    """`alpha` (the default, loaded at start) and `beta`, room for both."""
    async with two_model_herd(tmp_path, real_binary, max_loaded=2) as (_settings, herd):
        yield herd


async def test_choose_a_model_see_its_card_and_logs_restart_it_and_reload(
    herd: Herd, page: Page, tmp_path: Path
) -> None:
    console = Console(page)
    async with serve_application(create_app(herd)) as url:
        await page.goto(url)
        card, logs = page.get_by_test_id("status-card"), page.get_by_test_id("logs-panel")
        # Nothing chosen: the primary model, named as such.
        await expect(page.get_by_test_id("status-model")).to_have_text("alpha")
        await expect(card).to_contain_text("primary")
        await expect(page.get_by_test_id("status-badge")).to_have_text("ready", timeout=30_000)
        await expect(logs).to_contain_text(f"{tmp_path}/alpha.gguf")

        # Choose beta in the table: its card (not loaded yet), its own logs, the address.
        beta_row = page.locator('[data-testid="gw-model-row"][data-model-id="beta"]')
        await beta_row.get_by_test_id("gw-model-link").click()
        await expect(page).to_have_url(re.compile(r"#/status/beta$"))
        await expect(page.get_by_test_id("status-model")).to_have_text("beta")
        await expect(card).not_to_contain_text("primary")
        await expect(beta_row).to_have_attribute("aria-selected", "true")
        await expect(page.get_by_test_id("status-badge")).to_have_text("initial")
        await expect(page.get_by_test_id("logs-model")).to_contain_text("beta")
        await expect(logs).not_to_contain_text("alpha.gguf")

        # Its Start loads beta alone; its lines reach its logs live.
        await page.get_by_test_id("btn-start").click()
        await expect(page.get_by_test_id("status-badge")).to_have_text("ready", timeout=30_000)
        await expect(logs).to_contain_text(f"{tmp_path}/beta.gguf")
        await expect(logs).to_contain_text("listening on")
        await expect(logs).not_to_contain_text("alpha.gguf")
        first_pid = herd.backends["beta"].service.get_state().pid
        alpha_pid = herd.backends["alpha"].service.get_state().pid
        assert first_pid is not None and alpha_pid is not None
        await expect(page.get_by_test_id("pid")).to_have_text(str(first_pid))

        # Restart it: a new server, shown live, and alpha untouched.
        await page.get_by_test_id("btn-restart").click()
        await expect(page.get_by_test_id("action-result")).to_contain_text(
            "Restart requested: beta"
        )
        await expect(logs).to_contain_text(LISTENING_TWICE, timeout=30_000)
        await expect(page.get_by_test_id("status-badge")).to_have_text("ready", timeout=30_000)
        new_pid = herd.backends["beta"].service.get_state().pid
        assert new_pid not in (None, first_pid)
        await expect(page.get_by_test_id("pid")).to_have_text(str(new_pid))
        assert not pid_alive(first_pid)
        assert herd.backends["alpha"].service.get_state().pid == alpha_pid
        assert herd.view("alpha").phase is Phase.READY
        await page.get_by_test_id("action-result").get_by_role("button", name="Close").click()
        await snapshot(page, "model-status")
        await snapshot_of(card, "model-card")

        # A reload keeps the choice: beta's card and beta's logs again.
        await page.reload()
        await expect(page).to_have_url(re.compile(r"#/status/beta$"))
        await expect(page.get_by_test_id("status-model")).to_have_text("beta")
        await expect(page.get_by_test_id("status-badge")).to_have_text("ready")
        await expect(page.get_by_test_id("pid")).to_have_text(str(new_pid))
        await expect(logs).to_contain_text(LISTENING_TWICE)
        await expect(logs).not_to_contain_text("alpha.gguf")
        console.assert_clean()
