"""The fault-injection suite: every test here is marked `chaos` and ends with its figures.

A test takes the `figures` fixture and records what it measured (`figures["lost"] = 0`). At the
end of the run the figures of every chaos test that ran are written as one Markdown table to
`artifacts/chaos-figures.md` (or to $LLAMAHERD_CHAOS_FIGURES) and printed in pytest's summary:
the README keeps the latest table, with the command that produced it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# The gateway tests' fixtures, for the chaos tests too: `launch` (a whole llamaherd served in
# the test's own process) and `demo_models` (the tiny models). A conftest's fixtures reach
# only the tests below its own folder, so those of tests/gateway/conftest.py are not seen here
# by themselves; importing them into this conftest registers them for tests/chaos/ as well.
from tests.gateway.conftest import demo_models, launch  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


class Figures(dict[str, object]):
    """One test's figures, in the order they were recorded."""


_RECORDED: list[tuple[str, Figures, str]] = []  # (test, figures, outcome)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).resolve().is_relative_to(HERE):
            item.add_marker(pytest.mark.chaos)


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Iterator[Figures]:
    recorded = Figures()
    yield recorded
    report = getattr(request.node, "rep_call", None)
    outcome = "passed" if report is not None and report.passed else "FAILED"
    _RECORDED.append((request.node.name, recorded, outcome))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    report = yield
    if call.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]
    return report


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value).replace("|", "\\|")


def figures_table() -> str:
    lines = ["| test | result | figures |", "| --- | --- | --- |"]
    for name, recorded, outcome in _RECORDED:
        cells = "; ".join(f"{key} {_cell(value)}" for key, value in recorded.items())
        lines.append(f"| `{name}` | {outcome} | {cells} |")
    return "\n".join(lines) + "\n"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _RECORDED:
        return
    table = figures_table()
    target = Path(
        os.environ.get("LLAMAHERD_CHAOS_FIGURES") or ROOT / "artifacts" / "chaos-figures.md"
    )
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(table)
        where = f"written to {target}"
    except OSError as exc:
        where = f"not written to {target}: {exc.strerror or exc}"
    terminalreporter.write_sep("=", f"chaos figures ({where})")
    terminalreporter.write(table)
