"""Peers found through DNS SRV records (`peers_dns`): a Kubernetes headless Service as the list
of workers.

A headless Service with a named port answers an SRV query for `_<port>._<proto>.<service>.<ns>
.svc.<zone>` with one record per ready pod: its port, and a target that is the pod's own DNS
name (`llamaherd-0.llamaherd-workers.llm.svc.cluster.local` for a StatefulSet). Each target is
one peer, reached at `http://<target>:<port>` with the name as it is.

`resolve_srv()` asks once; `SrvWatcher` asks again every `peers_dns_interval_s` and reports
what came and went. A name that does not exist (NXDOMAIN) or has no SRV records means no peers:
the Service has no ready pod. A name server that does not answer or fails is an error, never
"no peers": the watcher keeps the peers it last knew rather than drop every one of them because
the DNS server blipped, warns once for each distinct error, and goes on asking.

A peer's identity is its (host, port). Priority and weight are kept (the order of `targets`)
but a change of them alone is no change of the members: Kubernetes' DNS gives every record a
weight that depends on how many there are, and adding one pod must not look like replacing all.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.nameserver
import dns.rcode
import dns.rdatatype
import dns.resolver
from dns.rdtypes.IN.SRV import SRV

from llamaherd.errors import ConfigError, PeerDiscoveryError

logger = logging.getLogger("llamaherd.cluster")

DNS_PORT = 53

OnChange = Callable[[list["SrvTarget"], list["SrvTarget"]], Awaitable[None] | None]
"""`on_change(added, removed)`, each sorted like `resolve_srv()`'s answer; may be async."""
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class SrvTarget:
    """One SRV record: a peer at `host:port` (host without the trailing dot, in lower case)."""

    host: str
    port: int
    priority: int = 0
    weight: int = 0

    @property
    def endpoint(self) -> tuple[str, int]:
        """What makes a peer the same peer: its host and port."""
        return (self.host, self.port)

    @property
    def url(self) -> str:
        """`http://host:port`, an IPv6 literal in brackets (its zone's `%` written `%25`)."""
        return f"http://{url_host(self.host)}:{self.port}"


def url_host(host: str) -> str:
    """The host as a URL writes it: an IPv6 literal in brackets, anything else as it is."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if address.version == 6:
        return "[" + host.replace("%", "%25") + "]"
    return host


def sort_key(target: SrvTarget) -> tuple[int, int, str, int]:
    """RFC 2782's order: lower priority first, then higher weight; then by name, for a stable
    order between equals."""
    return (target.priority, -target.weight, target.host, target.port)


def parse_server(server: str) -> tuple[str, int]:
    """`peers_dns_server`'s value as (address, port): `10.96.0.10`, `127.0.0.1:5353`, `::1`,
    `[::1]` or `[::1]:5353`; port 53 when none is written. Raises ConfigError if the address
    is not an IP address (a name server is asked by its address) or the port is wrong."""
    host, port_text = server, ""
    if server.startswith("["):
        host, bracket, rest = server[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise _server_error(server, "a bracketed IPv6 address is written [::1] or [::1]:53")
        port_text = rest[1:]
    elif server.count(":") == 1:
        host, _, port_text = server.partition(":")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise _server_error(server, f"{host!r} is not an IP address") from None
    if server.startswith("[") and address.version != 6:
        raise _server_error(server, "only an IPv6 address is written in brackets")
    if not port_text:
        return str(address), DNS_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise _server_error(server, f"{port_text!r} is not a port from 1 to 65535")
    return str(address), int(port_text)


def _server_error(server: str, why: str) -> ConfigError:
    return ConfigError(
        f"peers_dns_server {server!r}: {why}; use a name server's address, "
        "e.g. 10.96.0.10, 127.0.0.1:5353 or [fd00::10]:53"
    )


async def resolve_srv(
    name: str, server: str | None = None, timeout_s: float = 2.0
) -> list[SrvTarget]:
    """The SRV records of `name`, sorted by `sort_key()`; one target per (host, port).

    `server` is a name server's "host" or "host:port" (see `parse_server()`); None asks the
    system's name servers (/etc/resolv.conf, with its search list for a name without a trailing
    dot). NXDOMAIN, or a name without SRV records, is an empty list. No answer within
    `timeout_s`, or a failure of every name server (SERVFAIL, REFUSED, nothing listening),
    raises PeerDiscoveryError naming `name` and the server.
    """
    where = "the system's name servers"
    try:
        if server is None:
            resolver = dns.asyncresolver.Resolver()
            where += f" ({', '.join(str(ns) for ns in resolver.nameservers)})"
        else:
            address, port = parse_server(server)
            resolver = dns.asyncresolver.Resolver(configure=False)
            resolver.nameservers = [dns.nameserver.Do53Nameserver(address, port)]
            where = f"the name server {url_host(address)}:{port}"
        resolver.timeout = timeout_s
        answer = await resolver.resolve(
            name,
            dns.rdatatype.SRV,
            lifetime=timeout_s,
            search=not name.endswith("."),
            raise_on_no_answer=False,
        )
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except dns.exception.Timeout:
        raise PeerDiscoveryError(
            f"DNS SRV lookup of {name} at {where}: no answer within {timeout_s:g} s; "
            "check peers_dns_server, or that the cluster's DNS is up"
        ) from None
    except dns.resolver.NoNameservers as exc:
        raise PeerDiscoveryError(
            f"DNS SRV lookup of {name} at {where} failed: {_failures(exc)}"
        ) from None
    except dns.exception.DNSException as exc:
        raise PeerDiscoveryError(f"DNS SRV lookup of {name} at {where} failed: {exc}") from exc
    if answer.rrset is None:
        return []
    found: dict[tuple[str, int], SrvTarget] = {}
    records = [
        _target(rdata)
        for rdata in answer.rrset
        # A target of "." means "no such service here" (RFC 2782): no peer.
        if isinstance(rdata, SRV) and rdata.target != dns.name.root
    ]
    for record in sorted(records, key=sort_key):
        found.setdefault(record.endpoint, record)
    return list(found.values())


def _target(rdata: SRV) -> SrvTarget:
    host = rdata.target.to_text(omit_final_dot=True).lower()
    return SrvTarget(host, rdata.port, rdata.priority, rdata.weight)


def _failures(exc: dns.resolver.NoNameservers) -> str:
    """What each name server did, from dnspython's (server, tcp, port, error, response) list."""
    parts = []
    for server, _tcp, port, error, response in exc.kwargs.get("errors", []):
        if isinstance(response, dns.message.Message):
            what = f"answered {dns.rcode.to_text(response.rcode())}"
        elif isinstance(error, ConnectionRefusedError):
            what = "refused the connection (nothing listens there)"
        elif isinstance(error, OSError):
            what = error.strerror or str(error)
        else:
            what = str(error)
        # dnspython names a server "Do53:<address>@<port>".
        address = str(server).removeprefix("Do53:").rpartition("@")[0] or str(server)
        parts.append(f"{url_host(address)}:{port} {what}")
    return "; ".join(dict.fromkeys(parts)) or "no name server answered"


class SrvWatcher:
    """Resolves an SRV name every `interval_s` and calls `on_change(added, removed)` whenever
    the set of targets changes; the first answer reports every target as added.

    On an error it keeps the targets it last found, warns once for each distinct error (not
    once a round), and says when the name resolves again. `start()` begins, `aclose()` ends;
    `refresh_now()` asks at once, without waiting for the interval; `await refresh()` also waits
    for that answer. `on_change` runs in the watcher's task, one call at a time; an exception
    from it is logged, and the watcher goes on.
    """

    def __init__(
        self,
        name: str,
        on_change: OnChange,
        *,
        server: str | None = None,
        interval_s: float = 10.0,
        timeout_s: float = 2.0,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if server is not None:
            parse_server(server)  # a wrong address fails here, not on every round
        self.name = name
        self.server = server
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.rounds = 0
        self.last_error: Exception | None = None
        self._on_change = on_change
        self._sleep = sleep
        self._targets: dict[tuple[str, int], SrvTarget] = {}
        self._wake = asyncio.Event()
        self._waiting: list[asyncio.Future[None]] = []
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def targets(self) -> list[SrvTarget]:
        """The targets last found (kept through errors), sorted like `resolve_srv()`'s."""
        return sorted(self._targets.values(), key=sort_key)

    def start(self) -> None:
        if self._task is not None or self._closed:
            raise RuntimeError(f"the watcher of {self.name} was already started")
        self._task = asyncio.create_task(self._run(), name=f"peers_dns {self.name}")

    async def aclose(self) -> None:
        """Stops asking; a `refresh()` still waiting returns the targets last found."""
        self._closed = True
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._release(self._waiting)

    def refresh_now(self) -> None:
        """Ask again now rather than at the end of the interval (the interval then restarts)."""
        self._wake.set()

    async def refresh(self) -> list[SrvTarget]:
        """Ask again now, and return the targets once an answer begun after this call is in."""
        if self._task is None or self._task.done():
            raise RuntimeError(f"the watcher of {self.name} is not running")
        done = asyncio.get_running_loop().create_future()
        self._waiting.append(done)
        self._wake.set()
        await done
        return self.targets

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            asked, self._waiting = self._waiting, []
            try:
                await self._round()
            finally:
                self._release(asked)
            await self._pause()

    async def _pause(self) -> None:
        """The interval, or less if `refresh_now()` is called."""
        sleeping = asyncio.ensure_future(self._sleep(self.interval_s))
        woken = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({sleeping, woken}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeping.cancel()
            woken.cancel()
            await asyncio.gather(sleeping, woken, return_exceptions=True)

    async def _round(self) -> None:
        self.rounds += 1
        try:
            found = await resolve_srv(self.name, self.server, self.timeout_s)
        except Exception as exc:
            self._failed(exc)
            return
        if self.last_error is not None:
            logger.info("peers_dns %s resolves again: %d peers", self.name, len(found))
            self.last_error = None
        await self._apply(found)

    def _failed(self, exc: Exception) -> None:
        text = _error_text(exc)
        if self.last_error is None or text != _error_text(self.last_error):
            logger.warning(
                "%s; keeping the %d peers found before, asking again every %g s",
                text,
                len(self._targets),
                self.interval_s,
                exc_info=not isinstance(exc, PeerDiscoveryError),
            )
        self.last_error = exc

    async def _apply(self, found: list[SrvTarget]) -> None:
        now = {target.endpoint: target for target in found}
        added = [target for key, target in now.items() if key not in self._targets]
        removed = [target for key, target in self._targets.items() if key not in now]
        self._targets = now
        if not added and not removed:
            return
        logger.info(
            "peers_dns %s: %s",
            self.name,
            ", ".join([f"+{t.url}" for t in added] + [f"-{t.url}" for t in removed]),
        )
        try:
            result = self._on_change(sorted(added, key=sort_key), sorted(removed, key=sort_key))
            if inspect.isawaitable(result):
                await result
        except Exception:
            logger.exception("peers_dns %s: the change handler failed", self.name)

    @staticmethod
    def _release(waiting: list[asyncio.Future[None]]) -> None:
        for done in waiting:
            if not done.done():
                done.set_result(None)


def _error_text(exc: Exception) -> str:
    return str(exc) if isinstance(exc, PeerDiscoveryError) else repr(exc)
