"""Alerts: the rules and the rate limit on their own, then whole crash loops of fake
llama-servers alerting a real webhook receiver and a real command."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from llamaherd.alerts import Alert, Alerter, AlertRules, Event, RateLimit, redact_url
from llamaherd.alerts.outbox import Outbox
from llamaherd.config.settings import AlertSettings, CrashLoopRule
from llamaherd.gateway.herd import Herd
from llamaherd.supervisor.states import ServiceState, Status
from tests.clock import FakeClock
from tests.conftest import FAST_POLICY, HerdFactory, free_port, pid_alive
from tests.waiting import until

pytestmark = pytest.mark.timeout(60)

# Two retries, 10-40 ms apart: a launch that fails at once reaches `error` in well under a second.
LOOP_POLICY = replace(FAST_POLICY, max_retries=2, backoff_initial_ms=10, backoff_max_ms=40)
PAYLOAD_KEYS = {
    "event",
    "model",
    "state",
    "lastError",
    "retries",
    "restarts",
    "timestamp",
    "host",
    "message",
    "suppressed",
}


# ---- the rules, the rate limit, the log's view of a URL ---------------------------------


def feed(
    rules: AlertRules, steps: Sequence[tuple[float, Status, int]]
) -> list[tuple[float, Event]]:
    """Feed (time, status, retries) snapshots of model "m"; the events with their times."""
    raised: list[tuple[float, Event]] = []
    for now, status, retries in steps:
        state = ServiceState(status=status, retries=retries)
        raised += [(now, event) for event in rules.observe("m", state, now)]
    return raised


def crash_at(now: float, retries: int) -> list[tuple[float, Status, int]]:
    return [(now, Status.CRASHED, retries), (now, Status.STARTING, retries)]


def test_a_crash_loop_is_raised_once_per_loop() -> None:
    rules = AlertRules(crashes=3, within_s=10)
    rules.track("m", Status.STARTING)
    steps = [step for n, t in enumerate((0, 1, 2, 3, 4), 1) for step in crash_at(t, n)]
    assert feed(rules, steps) == [(2, "crash_loop")]
    # Ready again but not yet stable (retries still counted): the loop goes on.
    assert feed(rules, [(5, Status.READY, 5), *crash_at(6, 6)]) == [(5, "recovered")]


def test_a_new_loop_after_a_quiet_window_or_a_stable_server() -> None:
    rules = AlertRules(crashes=2, within_s=10)
    rules.track("m", Status.STARTING)
    assert feed(rules, [*crash_at(0, 1), *crash_at(1, 2)]) == [(1, "crash_loop")]
    # Crashes 11 s apart are no loop; two within the window after a quiet one are a new one.
    assert feed(rules, [*crash_at(12, 3), *crash_at(23, 4)]) == []
    assert feed(rules, [*crash_at(24, 5)]) == [(24, "crash_loop")]
    # The supervisor resets the retries of a server that stayed ready: that ends the loop.
    steps = [(25, Status.READY, 5), (26, Status.READY, 0), *crash_at(27, 1), *crash_at(28, 2)]
    assert feed(rules, steps) == [(25, "recovered"), (28, "crash_loop")]


def test_error_and_recovered() -> None:
    rules = AlertRules(crashes=3, within_s=10)
    rules.track("m", Status.INITIAL)
    steps = [
        (0, Status.CHECKING, 0),
        (0, Status.STARTING, 0),
        (1, Status.READY, 0),  # an ordinary start: nothing to say
        (2, Status.ERROR, 0),
        (3, Status.CHECKING, 0),
        (3, Status.ERROR, 0),
        (4, Status.STOPPING, 0),
        (4, Status.INITIAL, 0),
        (5, Status.CHECKING, 0),
        (6, Status.READY, 0),
        (7, Status.READY, 0),  # ready -> ready (retries reset): no second "recovered"
    ]
    assert feed(rules, steps) == [(2, "error"), (3, "error"), (6, "recovered")]


def test_the_rate_limit_holds_back_and_counts_per_model_and_event() -> None:
    limit = RateLimit(min_interval_s=300)
    assert limit.admit(("a", "error"), 0) == 0
    assert limit.admit(("a", "error"), 10) is None
    assert limit.admit(("a", "error"), 299) is None
    assert limit.admit(("a", "recovered"), 11) == 0
    assert limit.admit(("b", "error"), 12) == 0
    assert limit.admit(("a", "error"), 300) == 2
    assert limit.admit(("a", "error"), 301) is None
    assert limit.suppressed_total == 3
    assert RateLimit(min_interval_s=0).admit(("a", "error"), 0) == 0


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "https://user:pw@hooks.example.com/services/T1/B2/XYZ?token=1#x",
            "https://hooks.example.com/services/...",
        ),
        ("http://127.0.0.1:8080/hook?key=secret", "http://127.0.0.1:8080/hook"),
        ("http://[::1]:9000", "http://[::1]:9000"),
        ("https://example.com/", "https://example.com"),
    ],
)
def test_a_logged_url_keeps_no_secret(url: str, shown: str) -> None:
    assert redact_url(url) == shown


class Blocking:
    """A destination that records what it is sent and answers only when told."""

    label = "blocking"

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.release = asyncio.Event()

    async def send(self, alert: Alert) -> None:
        self.sent.append(alert.model)
        await self.release.wait()


def alert_for(model: str) -> Alert:
    return Alert("error", model, {}, b"{}")


async def test_a_full_outbox_drops_its_oldest_alert() -> None:
    destination = Blocking()
    outbox = Outbox(destination, depth=2, retries=0, retry_base_s=0)
    outbox.start()
    outbox.put(alert_for("first"))
    await until(lambda: destination.sent == ["first"])  # in flight: not in the queue
    for model in ("second", "third", "fourth"):
        outbox.put(alert_for(model))
    assert outbox.dropped == 1 and outbox.pending == 3
    destination.release.set()
    outbox.close()
    assert outbox.task is not None
    await asyncio.wait_for(outbox.task, 5)
    assert destination.sent == ["first", "third", "fourth"]
    assert outbox.delivered == 3


# ---- a webhook receiver and herds of fake servers ----------------------------------------


class Receiver:
    """A webhook on 127.0.0.1: answers `answers` in turn, then 200; or never, with `hang`."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.payloads: list[dict[str, Any]] = []
        self.requests = 0
        self.answers: list[int] = []
        self.hang = False
        self.in_flight = 0
        self.release = asyncio.Event()
        self._arrived = asyncio.Event()
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app)

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        self.in_flight += 1
        try:
            body = await request.json()
            if self.hang:
                await self.release.wait()
            status = self.answers.pop(0) if self.answers else 200
            if status == 200:
                self.payloads.append(body)
            return web.Response(status=status)
        finally:
            self.in_flight -= 1
            self._arrived.set()

    async def wait_for(self, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
        async with asyncio.timeout(timeout):
            while len(self.payloads) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return self.payloads

    def events(self) -> list[tuple[str, str]]:
        return [(payload["model"], payload["event"]) for payload in self.payloads]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    await receiver.runner.setup()
    await web.TCPSite(receiver.runner, "127.0.0.1", receiver.port).start()
    yield receiver
    receiver.release.set()
    await receiver.runner.cleanup()


AlerterFactory = Callable[..., Alerter]


@pytest.fixture
async def make_alerter() -> AsyncIterator[AlerterFactory]:
    alerters: list[Alerter] = []

    def factory(herd: Herd, clock: Any = time.monotonic, **settings: Any) -> Alerter:
        settings.setdefault("crash_loop", CrashLoopRule(crashes=2, within_s=60))
        settings.setdefault("timeout_s", 5.0)
        settings.setdefault("retries", 0)
        alerter = Alerter(AlertSettings(**settings), herd, clock=clock, retry_base_s=0.01)
        alerter.start()
        alerters.append(alerter)
        return alerter

    yield factory
    for alerter in alerters:
        await alerter.aclose()


def fail_first(tmp_path: Path, launches: int) -> tuple[str, ...]:
    state_file = tmp_path / "launches"
    return ("--fake-fail-first", str(launches), "--fake-state-file", str(state_file))


# ---- whole crash loops -------------------------------------------------------------------


async def test_a_crash_loop_into_error_alerts_crash_loop_then_error(
    receiver: Receiver, make_herd: HerdFactory, make_alerter: AlerterFactory
) -> None:
    herd = make_herd(("coder",), args=("--fake-exit-at-start", "1"), policy=LOOP_POLICY)
    make_alerter(herd, webhooks=(receiver.url,))
    before_ms = time.time() * 1000

    state = await herd.backends["coder"].service.start()

    assert state.status is Status.ERROR
    crash_loop, error = await receiver.wait_for(2)
    assert set(crash_loop) == set(error) == PAYLOAD_KEYS
    assert crash_loop["event"] == "crash_loop" and crash_loop["state"] == "crashed"
    assert (crash_loop["retries"], crash_loop["restarts"]) == (2, 2)
    assert crash_loop["lastError"].startswith("llama-server exited with code 1 while starting")
    assert crash_loop["message"].startswith(
        "llamaherd: model coder is crash-looping: 2 crashes within 60 s, retry 2/2: "
        "llama-server exited with code 1 while starting"
    )
    assert error["event"] == "error" and error["model"] == "coder" and error["state"] == "error"
    assert state.last_error is not None and "Gave up after 2 retries" in state.last_error
    assert error["lastError"] == state.last_error
    assert (error["retries"], error["restarts"], error["suppressed"]) == (2, 2, 0)
    assert error["host"] == socket.gethostname()
    assert before_ms <= error["timestamp"] <= time.time() * 1000
    assert error["message"].startswith(
        "llamaherd: model coder is in error: llama-server exited with code 1 while starting"
    )
    assert error["message"].endswith("(2 retries)") and "\n" not in error["message"]


async def test_the_same_alert_within_min_interval_is_held_back_then_counted(
    receiver: Receiver, make_herd: HerdFactory, make_alerter: AlerterFactory
) -> None:
    clock = FakeClock()
    herd = make_herd(("coder",), args=("--fake-exit-at-start", "1"), policy=LOOP_POLICY)
    alerter = make_alerter(herd, clock, webhooks=(receiver.url,), min_interval_s=300)
    service = herd.backends["coder"].service
    await service.start()
    await receiver.wait_for(2)

    clock.now += 10
    assert (await service.restart()).status is Status.ERROR
    # Decided in the state listener, so already counted; the crash loop is the same loop.
    assert alerter.suppressed == 1

    clock.now += 300  # past the rate limit and the crash-loop window
    assert (await service.restart()).status is Status.ERROR
    payloads = await receiver.wait_for(4)
    assert receiver.events() == [("coder", "crash_loop"), ("coder", "error")] * 2
    assert [payload["suppressed"] for payload in payloads] == [0, 0, 0, 1]


async def test_a_model_alerted_in_error_sends_recovered_when_fixed(
    tmp_path: Path, receiver: Receiver, make_herd: HerdFactory, make_alerter: AlerterFactory
) -> None:
    herd = make_herd(
        ("coder",), args=fail_first(tmp_path, 3), policy=LOOP_POLICY
    )  # three failed launches spend 2 retries
    make_alerter(herd, webhooks=(receiver.url,))
    service = herd.backends["coder"].service
    assert (await service.start()).status is Status.ERROR
    await receiver.wait_for(2)

    assert (await service.restart()).status is Status.READY  # the fourth launch works

    recovered = (await receiver.wait_for(3))[2]
    assert receiver.events() == [
        ("coder", "crash_loop"),
        ("coder", "error"),
        ("coder", "recovered"),
    ]
    assert recovered["state"] == "ready" and recovered["lastError"] is None
    assert (recovered["retries"], recovered["restarts"]) == (0, 2)
    assert (
        recovered["message"] == "llamaherd: model coder recovered: ready again (2 restarts so far)"
    )


async def test_a_crash_loop_that_ends_ready_sends_recovered(
    tmp_path: Path, receiver: Receiver, make_herd: HerdFactory, make_alerter: AlerterFactory
) -> None:
    herd = make_herd(
        ("coder",), args=fail_first(tmp_path, 2), policy=LOOP_POLICY
    )  # the last retry works
    make_alerter(herd, webhooks=(receiver.url,))
    assert (await herd.backends["coder"].service.start()).status is Status.READY
    await receiver.wait_for(2)
    assert receiver.events() == [("coder", "crash_loop"), ("coder", "recovered")]


async def test_a_webhook_that_fails_twice_gets_the_alert_on_the_third_try(
    receiver: Receiver,
    make_herd: HerdFactory,
    make_alerter: AlerterFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="llamaherd.alerts")
    receiver.answers = [500, 503]
    url = f"http://alice:s3cret@127.0.0.1:{receiver.port}/hooks/T0K3N?key=hush"
    herd = make_herd(("coder",), args=("--fake-exit-at-start", "1"), policy=LOOP_POLICY)
    alerter = make_alerter(
        herd, webhooks=(url,), retries=3, crash_loop=CrashLoopRule(crashes=10, within_s=60)
    )
    await herd.backends["coder"].service.start()

    [error] = await receiver.wait_for(1)
    assert error["event"] == "error"
    assert receiver.requests == 3
    await until(lambda: alerter.delivered == 1)
    failures = [
        r.getMessage()
        for r in caplog.records
        if r.name == "llamaherd.alerts" and r.levelno == logging.WARNING
    ]
    assert failures == [
        f"alert error for model coder: http://127.0.0.1:{receiver.port}/hooks/..., attempt "
        f"{n}/4 failed: answered {status} {reason}; retrying in {delay} s"
        for n, status, reason, delay in [
            (1, 500, "Internal Server Error", 0.01),
            (2, 503, "Service Unavailable", 0.02),
        ]
    ]
    for secret in ("alice", "s3cret", "T0K3N", "hush"):
        assert secret not in caplog.text


async def test_a_webhook_that_never_answers_delays_no_restart(
    receiver: Receiver, make_herd: HerdFactory, make_alerter: AlerterFactory
) -> None:
    receiver.hang = True
    policy = replace(FAST_POLICY, max_retries=3, backoff_initial_ms=200, backoff_max_ms=800)
    herd = make_herd(("coder",), args=("--fake-exit-at-start", "1"), policy=policy)
    alerter = make_alerter(herd, webhooks=(receiver.url,), timeout_s=30.0, retries=3)
    service = herd.backends["coder"].service
    moves: list[tuple[Status, float]] = []
    service.on_state_change(lambda state: moves.append((state.status, time.monotonic())))

    assert (await service.start()).status is Status.ERROR

    # The crash loop alert went out at the second crash and hangs; the retries went on anyway.
    await until(lambda: receiver.in_flight == 1)
    assert receiver.payloads == []
    crashed = [at for status, at in moves if status is Status.CRASHED]
    restarted = [at for status, at in moves if status is Status.STARTING][1:]
    assert len(crashed) == len(restarted) == 3
    for retry, (crash, start) in enumerate(zip(crashed, restarted, strict=True), 1):
        delay = policy.backoff.delay_s(retry)
        assert delay <= start - crash < delay + 1.0, f"retry {retry}"

    began = time.monotonic()
    await alerter.aclose()  # gives the hung delivery its grace, then cancels it
    assert time.monotonic() - began < 4.0
    assert alerter.delivered == 0 and alerter.pending == 0


# ---- the command ---------------------------------------------------------------------------

RECORDER = """\
import json, os, pathlib, sys
out = pathlib.Path(sys.argv[1])
event = os.environ["LLAMAHERD_ALERT_EVENT"]
record = {
    "stdin": sys.stdin.read(),
    "env": os.environ["LLAMAHERD_ALERT"],
    "model": os.environ["LLAMAHERD_ALERT_MODEL"],
}
(out / (event + ".tmp")).write_text(json.dumps(record))
(out / (event + ".tmp")).rename(out / (event + ".json"))
"""

HANGER = """\
import os, pathlib, subprocess, sys
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
pathlib.Path(sys.argv[1]).write_text(f"{os.getpid()} {child.pid}")
sys.stdin.read()
child.wait()
"""


async def test_a_command_gets_the_payload_on_stdin_and_in_its_environment(
    tmp_path: Path, make_herd: HerdFactory, make_alerter: AlerterFactory
) -> None:
    script = tmp_path / "record.py"
    script.write_text(RECORDER)
    herd = make_herd(("coder",), args=("--fake-exit-at-start", "1"), policy=LOOP_POLICY)
    alerter = make_alerter(herd, command=(sys.executable, str(script), str(tmp_path)))

    await herd.backends["coder"].service.start()

    await until(lambda: alerter.delivered == 2)
    for event in ("crash_loop", "error"):
        record = json.loads((tmp_path / f"{event}.json").read_text())
        assert record["stdin"] == record["env"]
        payload = json.loads(record["stdin"])
        assert (payload["event"], payload["model"], record["model"]) == (event, "coder", "coder")
        assert set(payload) == PAYLOAD_KEYS


async def test_a_command_that_hangs_is_killed_with_its_children(
    tmp_path: Path,
    make_herd: HerdFactory,
    make_alerter: AlerterFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    script, pids = tmp_path / "hang.py", tmp_path / "pids"
    script.write_text(HANGER)
    herd = make_herd(("coder",), args=("--fake-exit-at-start", "1"), policy=LOOP_POLICY)
    alerter = make_alerter(
        herd,
        command=(sys.executable, str(script), str(pids)),
        timeout_s=2.0,
        crash_loop=CrashLoopRule(crashes=10, within_s=60),  # the error alone
    )

    await herd.backends["coder"].service.start()

    await until(lambda: alerter.failed == 1)
    command_pid, child_pid = map(int, pids.read_text().split())
    await until(lambda: not pid_alive(command_pid) and not pid_alive(child_pid))
    assert "attempt 1/1 failed: did not finish within 2 s; killed it; giving up" in caplog.text


async def test_a_command_that_fails_is_retried_and_its_complaint_logged(
    tmp_path: Path,
    make_herd: HerdFactory,
    make_alerter: AlerterFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    script = tmp_path / "fail.py"
    script.write_text(
        "import sys\nprint('webhook relay: no route to pager', file=sys.stderr)\nsys.exit(3)\n"
    )
    herd = make_herd(("coder",), args=("--fake-exit-at-start", "1"), policy=LOOP_POLICY)
    alerter = make_alerter(
        herd,
        command=(sys.executable, str(script)),
        retries=1,
        crash_loop=CrashLoopRule(crashes=10, within_s=60),
    )

    await herd.backends["coder"].service.start()

    await until(lambda: alerter.failed == 1)
    label = f"command {sys.executable}"
    complaint = "failed: exited with code 3: webhook relay: no route to pager"
    assert f"{label}, attempt 1/2 {complaint}; retrying in 0.01 s" in caplog.text
    assert f"{label}, attempt 2/2 {complaint}; giving up" in caplog.text
