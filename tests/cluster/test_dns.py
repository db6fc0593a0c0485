"""Peers through DNS SRV records, against a DNS server of the test's own on loopback (dnslib):
its records come from a dict the test changes, and it can answer SERVFAIL, drop every query, or
stop."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Iterator

import pytest
from dnslib import QTYPE, RCODE, RR, SRV, DNSRecord
from dnslib.server import DNSHandler, DNSLogger, DNSServer

from llamaherd.cluster.dns import (
    SrvTarget,
    SrvWatcher,
    parse_server,
    resolve_srv,
)
from llamaherd.errors import ConfigError, PeerDiscoveryError

pytestmark = pytest.mark.timeout(20)

NAME = "_http._tcp.llamaherd-workers.llm.svc.cluster.local"
POD = "llamaherd-{}.llamaherd-workers.llm.svc.cluster.local"


class LoopbackDNS:
    """A DNS server on 127.0.0.1 (or ::1) and a free UDP port, in a thread. `records` maps an
    SRV name (no trailing dot) to its (priority, weight, port, target) records; a name not in
    it is NXDOMAIN. `mode`: "answer", "servfail", or "drop" (no answer at all)."""

    def __init__(self, address: str = "127.0.0.1") -> None:
        self.records: dict[str, list[tuple[int, int, int, str]]] = {}
        self.mode = "answer"
        self.queries = 0
        self.queried = threading.Event()
        outer = self

        class Resolver:
            def resolve(self, request: DNSRecord, handler: DNSHandler) -> DNSRecord:
                return outer.answer(request)

        class Handler(DNSHandler):  # type: ignore[misc]  # dnslib has no types
            def handle(self) -> None:
                outer.queries += 1
                outer.queried.set()
                if outer.mode != "drop":
                    super().handle()

        quiet = DNSLogger(logf=lambda _line: None)
        self.server = DNSServer(Resolver(), address=address, port=0, logger=quiet, handler=Handler)
        host, self.port = self.server.server.server_address[:2]
        self.address = f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"
        self.thread = threading.Thread(
            target=self.server.server.serve_forever, args=(0.05,), daemon=True
        )
        self.thread.start()

    def answer(self, request: DNSRecord) -> DNSRecord:
        reply = request.reply()
        if self.mode == "servfail":
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        name = str(request.q.qname).rstrip(".")
        if name not in self.records:
            reply.header.rcode = RCODE.NXDOMAIN
            return reply
        if request.q.qtype == QTYPE.SRV:
            for priority, weight, port, target in self.records[name]:
                record = SRV(priority, weight, port, target)
                reply.add_answer(RR(request.q.qname, QTYPE.SRV, ttl=0, rdata=record))
        return reply

    def stop(self) -> None:
        if self.thread.is_alive():
            self.server.server.shutdown()
            self.thread.join(5)
        self.server.server.server_close()


@pytest.fixture
def dns_server() -> Iterator[LoopbackDNS]:
    server = LoopbackDNS()
    try:
        yield server
    finally:
        server.stop()


class Changes:
    """`on_change` for a watcher: every call, in a queue the test awaits."""

    def __init__(self) -> None:
        self.calls: asyncio.Queue[tuple[list[SrvTarget], list[SrvTarget]]] = asyncio.Queue()

    def __call__(self, added: list[SrvTarget], removed: list[SrvTarget]) -> None:
        self.calls.put_nowait((added, removed))

    async def next(self) -> tuple[list[SrvTarget], list[SrvTarget]]:
        async with asyncio.timeout(5):
            return await self.calls.get()


@pytest.fixture
async def watched(dns_server: LoopbackDNS) -> AsyncIterator[tuple[SrvWatcher, Changes]]:
    """A started watcher of NAME at the loopback server, asking every 0.1 s."""
    changes = Changes()
    watcher = SrvWatcher(NAME, changes, server=dns_server.address, interval_s=0.1, timeout_s=0.2)
    watcher.start()
    try:
        yield watcher, changes
    finally:
        await watcher.aclose()


def pods(*numbers: int, port: int = 8080) -> list[tuple[int, int, int, str]]:
    """The records Kubernetes' DNS gives a headless Service: equal weights, pod names."""
    return [(0, 100 // len(numbers), port, POD.format(n) + ".") for n in numbers]


def dns_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "llamaherd.cluster" and record.levelno == logging.WARNING
    ]


# resolve_srv


async def test_targets_sorted_by_priority_then_weight_with_their_urls(
    dns_server: LoopbackDNS,
) -> None:
    dns_server.records[NAME] = [
        (10, 5, 8080, "c.example."),
        (0, 10, 8081, "B.Example."),
        (0, 60, 8082, "a.example."),
        (0, 10, 8080, "b.example."),
        (10, 5, 8080, "c.example."),  # the same again: one peer
        (0, 0, 0, "."),  # "not here" (RFC 2782): no peer
    ]
    targets = await resolve_srv(NAME, dns_server.address)
    assert targets == [
        SrvTarget("a.example", 8082, 0, 60),
        SrvTarget("b.example", 8080, 0, 10),
        SrvTarget("b.example", 8081, 0, 10),
        SrvTarget("c.example", 8080, 10, 5),
    ]
    assert [t.url for t in targets] == [
        "http://a.example:8082",
        "http://b.example:8080",
        "http://b.example:8081",
        "http://c.example:8080",
    ]


async def test_kubernetes_pod_names_are_the_urls_as_they_are(dns_server: LoopbackDNS) -> None:
    dns_server.records[NAME] = pods(1, 0)
    targets = await resolve_srv(NAME + ".", dns_server.address)
    assert [t.url for t in targets] == [
        "http://llamaherd-0.llamaherd-workers.llm.svc.cluster.local:8080",
        "http://llamaherd-1.llamaherd-workers.llm.svc.cluster.local:8080",
    ]


async def test_nxdomain_and_a_name_without_srv_records_are_no_peers(
    dns_server: LoopbackDNS,
) -> None:
    assert await resolve_srv(NAME, dns_server.address) == []
    dns_server.records[NAME] = []
    assert await resolve_srv(NAME, dns_server.address) == []
    assert dns_server.queries == 2


async def test_servfail_is_an_error_naming_the_name_and_the_server(
    dns_server: LoopbackDNS,
) -> None:
    dns_server.records[NAME] = pods(0)
    dns_server.mode = "servfail"
    with pytest.raises(PeerDiscoveryError) as caught:
        await resolve_srv(NAME, dns_server.address)
    message = str(caught.value)
    assert NAME in message
    assert dns_server.address in message
    assert "SERVFAIL" in message


async def test_a_server_that_drops_queries_is_a_timeout_naming_both(
    dns_server: LoopbackDNS,
) -> None:
    dns_server.mode = "drop"
    loop = asyncio.get_running_loop()
    began = loop.time()
    with pytest.raises(PeerDiscoveryError, match=r"no answer within 0\.2 s") as caught:
        await resolve_srv(NAME, dns_server.address, timeout_s=0.2)
    assert loop.time() - began < 2
    assert NAME in str(caught.value)
    assert dns_server.address in str(caught.value)
    assert dns_server.queries >= 1


async def test_a_server_over_ipv6_and_ipv6_targets_in_brackets() -> None:
    server = LoopbackDNS("::1")
    try:
        assert server.address.startswith("[::1]:")
        server.records[NAME] = [(0, 0, 8080, "fd00::1."), (0, 0, 8080, "10.0.0.7.")]
        targets = await resolve_srv(NAME, server.address)
    finally:
        server.stop()
    assert [t.url for t in targets] == ["http://10.0.0.7:8080", "http://[fd00::1]:8080"]


def test_urls_of_ip_literals() -> None:
    assert SrvTarget("fd00::1", 8080).url == "http://[fd00::1]:8080"
    assert SrvTarget("fe80::1%eth0", 80).url == "http://[fe80::1%25eth0]:80"
    assert SrvTarget("10.1.2.3", 8080).url == "http://10.1.2.3:8080"
    assert SrvTarget("worker-1.lan", 3000).url == "http://worker-1.lan:3000"


@pytest.mark.parametrize(
    ("server", "parsed"),
    [
        ("10.96.0.10", ("10.96.0.10", 53)),
        ("127.0.0.1:5353", ("127.0.0.1", 5353)),
        ("::1", ("::1", 53)),
        ("[fd00::10]", ("fd00::10", 53)),
        ("[fd00::10]:5353", ("fd00::10", 5353)),
    ],
)
def test_name_server_addresses(server: str, parsed: tuple[str, int]) -> None:
    assert parse_server(server) == parsed


@pytest.mark.parametrize(
    "server", ["999.1.1.1", "1.2.3.4:0", "1.2.3.4:65536", "[::1", "[10.0.0.1]:53", "[::1]53"]
)
def test_wrong_name_server_addresses_are_config_errors(server: str) -> None:
    with pytest.raises(ConfigError, match=r"^peers_dns_server") as caught:
        parse_server(server)
    assert repr(server) in str(caught.value)


# SrvWatcher


async def test_watcher_adds_and_removes_peers_as_records_come_and_go(
    dns_server: LoopbackDNS, watched: tuple[SrvWatcher, Changes]
) -> None:
    watcher, changes = watched
    dns_server.records[NAME] = pods(0, 1)
    added, removed = await changes.next()
    assert [t.host for t in added] == [POD.format(0), POD.format(1)]
    assert removed == []

    dns_server.records[NAME] = pods(0, 1, 2)  # every weight changes: only pod 2 is news
    added, removed = await changes.next()
    assert [t.url for t in added] == [f"http://{POD.format(2)}:8080"]
    assert removed == []

    dns_server.records[NAME] = pods(0, 2)
    added, removed = await changes.next()
    assert added == []
    assert [t.host for t in removed] == [POD.format(1)]
    assert [t.host for t in watcher.targets] == [POD.format(0), POD.format(2)]
    assert changes.calls.empty()


async def test_watcher_nxdomain_removes_every_peer(
    dns_server: LoopbackDNS, watched: tuple[SrvWatcher, Changes]
) -> None:
    watcher, changes = watched
    dns_server.records[NAME] = pods(0, 1)
    added, _ = await changes.next()
    assert len(added) == 2
    del dns_server.records[NAME]  # the Service has no ready pod
    added, removed = await changes.next()
    assert added == []
    assert [t.host for t in removed] == [POD.format(0), POD.format(1)]
    assert watcher.targets == []
    assert watcher.last_error is None


async def test_watcher_keeps_its_peers_warns_once_and_recovers(
    dns_server: LoopbackDNS, watched: tuple[SrvWatcher, Changes], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "llamaherd.cluster")
    watcher, changes = watched
    dns_server.records[NAME] = pods(0, 1)
    await changes.next()
    known = watcher.targets

    dns_server.mode = "drop"
    rounds = watcher.rounds
    for _ in range(3):
        assert await watcher.refresh() == known
    assert watcher.rounds >= rounds + 3
    assert isinstance(watcher.last_error, PeerDiscoveryError)
    [warning] = dns_warnings(caplog)
    assert NAME in warning
    assert dns_server.address in warning
    assert "keeping the 2 peers" in warning

    dns_server.mode = "servfail"  # another error: one more warning, then none
    for _ in range(3):
        assert await watcher.refresh() == known
    assert len(dns_warnings(caplog)) == 2
    assert "SERVFAIL" in dns_warnings(caplog)[1]
    assert changes.calls.empty()

    dns_server.records[NAME] = pods(1, 2)  # back, and changed meanwhile
    dns_server.mode = "answer"
    added, removed = await changes.next()
    assert [t.host for t in added] == [POD.format(2)]
    assert [t.host for t in removed] == [POD.format(0)]
    assert watcher.last_error is None
    assert any("resolves again" in r.getMessage() for r in caplog.records)

    dns_server.mode = "drop"  # an error after a recovery is news again
    await watcher.refresh()
    await watcher.refresh()
    assert len(dns_warnings(caplog)) == 3


async def test_watcher_keeps_its_peers_when_nothing_listens(
    dns_server: LoopbackDNS, watched: tuple[SrvWatcher, Changes], caplog: pytest.LogCaptureFixture
) -> None:
    watcher, changes = watched
    dns_server.records[NAME] = pods(0)
    await changes.next()
    dns_server.stop()  # the port is closed: nothing answers there any more
    await watcher.refresh()
    await watcher.refresh()
    assert [t.host for t in watcher.targets] == [POD.format(0)]
    assert len(dns_warnings(caplog)) == 1
    assert changes.calls.empty()


async def test_watcher_first_error_is_a_warning_without_peers(
    dns_server: LoopbackDNS, caplog: pytest.LogCaptureFixture
) -> None:
    dns_server.mode = "servfail"
    changes = Changes()
    watcher = SrvWatcher(NAME, changes, server=dns_server.address, interval_s=0.05)
    watcher.start()
    try:
        await watcher.refresh()
        await watcher.refresh()
    finally:
        await watcher.aclose()
    assert watcher.targets == []
    [warning] = dns_warnings(caplog)
    assert "keeping the 0 peers" in warning
    assert changes.calls.empty()


class HeldSleep:
    """An injected sleep that lasts until the test ends it: each call is recorded."""

    def __init__(self) -> None:
        self.calls: list[float] = []
        self.pending: asyncio.Future[None] | None = None
        self.started = asyncio.Event()

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        self.pending = asyncio.get_running_loop().create_future()
        self.started.set()
        await self.pending

    async def wait_started(self) -> None:
        async with asyncio.timeout(5):
            await self.started.wait()
        self.started.clear()

    def end(self) -> None:
        assert self.pending is not None
        self.pending.set_result(None)


async def test_watcher_asks_once_an_interval_unless_asked_now(dns_server: LoopbackDNS) -> None:
    dns_server.records[NAME] = pods(0)
    sleep = HeldSleep()
    watcher = SrvWatcher(NAME, Changes(), server=dns_server.address, interval_s=7, sleep=sleep)
    watcher.start()
    try:
        await sleep.wait_started()
        assert (dns_server.queries, sleep.calls) == (1, [7])
        for _ in range(20):  # the sleep lasts: no round, however long the loop runs
            await asyncio.sleep(0)
        assert dns_server.queries == 1

        sleep.end()  # the interval is over
        await sleep.wait_started()
        assert (dns_server.queries, sleep.calls) == (2, [7, 7])

        watcher.refresh_now()  # cuts the interval short, and the sleep is cancelled
        held = sleep.pending
        await sleep.wait_started()
        assert held is not None and held.cancelled()
        assert (dns_server.queries, sleep.calls) == (3, [7, 7, 7])
    finally:
        await watcher.aclose()
    assert watcher.rounds == 3


async def test_watcher_goes_on_after_its_handler_fails(
    dns_server: LoopbackDNS, caplog: pytest.LogCaptureFixture
) -> None:
    seen: asyncio.Queue[list[str]] = asyncio.Queue()
    calls = 0

    async def on_change(added: list[SrvTarget], removed: list[SrvTarget]) -> None:
        nonlocal calls
        calls += 1
        await seen.put([t.host for t in added])
        if calls == 1:
            raise RuntimeError("handler bug")

    dns_server.records[NAME] = pods(0)
    watcher = SrvWatcher(NAME, on_change, server=dns_server.address, interval_s=0.05)
    watcher.start()
    try:
        async with asyncio.timeout(5):
            assert await seen.get() == [POD.format(0)]
            dns_server.records[NAME] = pods(0, 1)
            assert await seen.get() == [POD.format(1)]
    finally:
        await watcher.aclose()
    assert any("the change handler failed" in r.getMessage() and r.exc_info for r in caplog.records)


async def test_watcher_start_close_and_refresh(dns_server: LoopbackDNS) -> None:
    changes = Changes()
    watcher = SrvWatcher(NAME, changes, server=dns_server.address, interval_s=60)
    with pytest.raises(RuntimeError, match="not running"):
        await watcher.refresh()
    watcher.start()
    with pytest.raises(RuntimeError, match="already started"):
        watcher.start()
    dns_server.records[NAME] = pods(0)
    # Asked during the first round or after it, refresh() returns a later answer.
    assert [t.host for t in await watcher.refresh()] == [POD.format(0)]
    task = watcher._task
    assert task is not None
    await watcher.aclose()
    assert task.cancelled()
    with pytest.raises(RuntimeError):
        watcher.start()
    with pytest.raises(RuntimeError, match="not running"):
        await watcher.refresh()


async def test_a_refresh_waiting_when_the_watcher_closes_returns(
    dns_server: LoopbackDNS,
) -> None:
    dns_server.mode = "drop"
    watcher = SrvWatcher(NAME, Changes(), server=dns_server.address, timeout_s=5)
    watcher.start()
    waiting = asyncio.create_task(watcher.refresh())
    async with asyncio.timeout(5):
        # The first round is under way, and would take 5 s.
        assert await asyncio.to_thread(dns_server.queried.wait, 5)
        await watcher.aclose()
        assert await waiting == []


def test_a_wrong_server_fails_when_the_watcher_is_made() -> None:
    with pytest.raises(ConfigError, match="peers_dns_server"):
        SrvWatcher(NAME, Changes(), server="dns.example:53")
