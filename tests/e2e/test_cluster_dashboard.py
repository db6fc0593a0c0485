"""A front's dashboard in Chromium (issue 16): its hosts and their models shown live, a worker
killed and started again followed without a reload of the page. Two workers and a front as
three `llamaherd serve` processes with the real llama-server."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.async_api import Page, expect

from tests.cluster.test_front_real import cluster, until_listed
from tests.e2e.conftest import Console, snapshot_of
from tests.serving import ServedLlamaherd

pytestmark = [pytest.mark.timeout(180), pytest.mark.real_server]


async def test_hosts_are_shown_and_a_killed_worker_goes_and_comes_back_live(
    page: Page, tmp_path: Path, real_binary: Path, demo_model: Path
) -> None:
    console = Console(page)
    async with cluster(tmp_path, real_binary, demo_model) as c:
        await until_listed(c.front, {"m1", "m2", "shared"})
        await page.goto(c.front.url)
        panel = page.get_by_test_id("peers")
        w1 = panel.get_by_test_id("peer-row").filter(has_text="w1")
        w2 = panel.get_by_test_id("peer-row").filter(has_text="w2")
        await expect(w1.get_by_test_id("peer-reachable")).to_have_text("reachable")
        await expect(w2.get_by_test_id("peer-reachable")).to_have_text("reachable")
        await expect(w2).to_contain_text("m2")
        await snapshot_of(panel, "front-hosts")

        c.w2.close()  # SIGKILL to w2 and its llama-servers
        await expect(w2.get_by_test_id("peer-reachable")).to_have_text(
            "unreachable", timeout=10_000
        )
        await expect(w2.get_by_test_id("peer-problem")).to_contain_text("does not answer")
        await expect(w1.get_by_test_id("peer-reachable")).to_have_text("reachable")
        await snapshot_of(panel, "front-host-down")

        async with ServedLlamaherd(c.w2.config) as again:
            await again.wait_healthy()
            await expect(w2.get_by_test_id("peer-reachable")).to_have_text(
                "reachable", timeout=10_000
            )
            await expect(w2).to_contain_text("m2")
        console.assert_clean()  # before the front stops: the page then loses its server
