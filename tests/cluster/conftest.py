"""Fixtures for every test of the cluster: the loopback DNS server of test_dns.py, and a worker
and a front in the test's own event loop (tests/cluster/inprocess.py)."""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.cluster.inprocess import Pair, worker_and_front
from tests.cluster.test_dns import dns_server  # noqa: F401


@pytest.fixture
async def pair(tmp_path: Path, fake_binary: Path, model_file: Path) -> AsyncIterator[Pair]:
    async with worker_and_front(tmp_path, fake_binary, model_file) as both:
        yield both
