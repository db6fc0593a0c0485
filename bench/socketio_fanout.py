#!/usr/bin/env python3
"""How fast a llama-server crash reaches every Socket.IO client, and what clients cost in memory.

    .venv/bin/python bench/socketio_fanout.py --clients 1 100 1000

What it does:

1. Starts `python -m llamaherd serve` in its own process (so the clients' load does not share
   its event loop), supervising the fake llama-server of tests/fakes on free ports, and waits
   until GET /api/status says `ready`.
2. For each client count N: starts worker processes (this script with --worker, 4 by default),
   together holding N python-socketio AsyncClients on the WebSocket transport (or, with
   --client raw, N minimal Engine.IO clients on aiohttp, cheaper per message).
3. Each round: waits until every client has seen `ready`, SIGKILLs llama-server (the pid from
   /api/status), and notes time.time() just before the kill. Every client notes time.time()
   when its `llamaStatus` with status `crashed` arrives. Latency = arrival - kill, so it covers
   the supervisor noticing the exit, building the event, and the fan-out to all clients.
   Then POST /api/llama/restart (a fresh retry count) and wait for `ready` again.
4. Reports, per N, the median over rounds of each round's p50, p99 and max latency, the CPU
   time llamaherd itself spent from the kill to the last receipt, and the RSS (VmRSS) of the
   llamaherd process with 0 and with N clients connected.

Prints a Markdown table and writes it to bench/results/socketio_fanout.md (..._raw.md with
--client raw). Ctrl-C or SIGTERM stops it cleanly: workers, llamaherd and llama-server end.

Clients, workers and server share the machine's cores: on a small machine the measuring side
competes with the server for CPU, so the numbers are an upper bound of what the server alone
would need.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import math
import os
import platform
import resource
import signal
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve()
ROOT = SCRIPT.parent.parent
FAKE_SERVER = ROOT / "tests" / "fakes" / "fake_llama_server.py"
DEFAULT_OUT = ROOT / "bench" / "results" / "socketio_fanout.md"
TARGET_MS = 100.0
CLIENT_KINDS = {
    "socketio": "python-socketio AsyncClient",
    "raw": "minimal Engine.IO client on aiohttp (--client raw)",
}
REPLY = "BENCH "  # prefix of a worker's answers on its stdout (anything else is forwarded)

# Every process this script started and has not yet reaped, by pid (killed on the way out).
_children: dict[int, str] = {}


def raise_nofile() -> int:
    """Raise the soft limit on open files to the hard limit; returns the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def vm_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_ns(pid: int) -> int:
    """CPU time used so far by all threads of `pid`, in ns (/proc/PID/task/*/schedstat)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that just ended
            total += int((task / "schedstat").read_text().split()[0])
    return total


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


# ---- the worker side: a process holding many clients ----------------------------------------


async def wait_or_kill(proc: asyncio.subprocess.Process, timeout_s: float) -> None:
    """Wait for a child we asked to exit; SIGKILL it by pid if it does not within the timeout."""
    try:
        async with asyncio.timeout(timeout_s):
            await proc.wait()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        await proc.wait()


class Probe:
    """One client that remembers the last status and when `crashed` arrived."""

    def __init__(self, group: ProbeGroup) -> None:
        self.group = group
        self.status: str | None = None
        self.crashed_at: float | None = None
        self.crashed_ts: int | None = None

    def on_status(self, payload: dict[str, Any], now: float) -> None:
        status = payload["data"]["status"]
        self.status = status
        if status == "crashed" and self.group.armed and self.crashed_at is None:
            self.crashed_at = now
            self.crashed_ts = payload["timestamp"]
            self.group.note_crash()
        elif status == "ready":
            self.group.note_ready()

    async def connect(self, url: str) -> None:
        raise NotImplementedError

    async def disconnect(self) -> None:
        raise NotImplementedError


class SocketioProbe(Probe):
    """python-socketio's AsyncClient, WebSocket transport: what a Python user would run."""

    def __init__(self, group: ProbeGroup) -> None:
        import socketio

        super().__init__(group)
        self.client = socketio.AsyncClient(reconnection=False)
        self.client.on("llamaStatus", lambda payload: self.on_status(payload, time.time()))

    async def connect(self, url: str) -> None:
        await self.client.connect(url, transports=["websocket"], wait_timeout=30)

    async def disconnect(self) -> None:
        await self.client.disconnect()


class RawProbe(Probe):
    """Engine.IO 4 / Socket.IO 5 spoken directly over an aiohttp WebSocket.

    Much cheaper per message than AsyncClient (no task per packet), so the clients' own CPU
    time weighs less in the latency: closer to what the server alone needs."""

    def __init__(self, group: ProbeGroup, session: Any) -> None:
        super().__init__(group)
        self.session = session
        self.ws: Any = None
        self.reader: asyncio.Task[None] | None = None
        self.pongs: set[asyncio.Task[None]] = set()

    async def connect(self, url: str) -> None:
        ws_url = "ws" + url.removeprefix("http") + "/socket.io/?EIO=4&transport=websocket"
        self.ws = await self.session.ws_connect(ws_url)
        async with asyncio.timeout(30):
            opened = await self.ws.receive_str()
            if not opened.startswith("0{"):
                raise RuntimeError(f"no Engine.IO open packet: {opened[:80]!r}")
            await self.ws.send_str("40")  # join the default namespace
            while self.status is None:  # the status llamaherd sends on connect
                self.handle(await self.ws.receive_str(), time.time())
        self.reader = asyncio.create_task(self.read_forever())

    async def read_forever(self) -> None:
        import aiohttp

        async for message in self.ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                self.handle(message.data, time.time())

    def handle(self, text: str, now: float) -> None:
        if text == "2":  # Engine.IO ping: answer pong
            task = asyncio.create_task(self.ws.send_str("3"))
            self.pongs.add(task)
            task.add_done_callback(self.pongs.discard)
        elif text.startswith("42"):
            event = json.loads(text[2:])
            if event[0] == "llamaStatus":
                self.on_status(event[1], now)
        elif text.startswith("44"):
            raise RuntimeError(f"namespace connection refused: {text[:200]}")

    async def disconnect(self) -> None:
        if self.ws is not None and not self.ws.closed:
            with contextlib.suppress(Exception):
                await self.ws.send_str("41")
            await self.ws.close()
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.reader


class ProbeGroup:
    def __init__(self) -> None:
        self.probes: list[Probe] = []
        self.armed = False
        self.crashes = 0
        self.changed = asyncio.Event()

    def note_crash(self) -> None:
        self.crashes += 1
        self.changed.set()

    def note_ready(self) -> None:
        self.changed.set()

    async def wait_until(self, done: Any, timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while not done():
                    self.changed.clear()
                    await self.changed.wait()
        return bool(done())


def reply(message: dict[str, Any]) -> None:
    sys.stdout.write(REPLY + json.dumps(message) + "\n")
    sys.stdout.flush()


async def worker_main(url: str, count: int, concurrency: int, nice: int, kind: str) -> int:
    import aiohttp

    raise_nofile()
    if nice:
        os.nice(nice)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        return await hold_clients(url, count, concurrency, kind, session)


async def hold_clients(url: str, count: int, concurrency: int, kind: str, session: Any) -> int:
    group = ProbeGroup()
    group.probes = [
        SocketioProbe(group) if kind == "socketio" else RawProbe(group, session)
        for _ in range(count)
    ]
    gate = asyncio.Semaphore(concurrency)
    failures: list[str] = []

    async def connect(probe: Probe) -> None:
        async with gate:
            try:
                await probe.connect(url)
            except Exception as exc:
                failures.append(f"{type(exc).__name__}: {exc}")

    started = time.monotonic()
    await asyncio.gather(*(connect(probe) for probe in group.probes))
    reply(
        {
            "connected": count - len(failures),
            "failed": len(failures),
            "errors": failures[:3],
            "seconds": time.monotonic() - started,
        }
    )
    try:
        while True:
            line = await asyncio.to_thread(sys.stdin.readline)
            command = line.split()
            if not command or command[0] == "quit":
                break
            if command[0] == "settle":
                timeout = float(command[1])
                ok = await group.wait_until(
                    lambda: all(p.status == "ready" for p in group.probes), timeout
                )
                not_ready = sum(p.status != "ready" for p in group.probes)
                reply({"ok": ok, "not_ready": not_ready})
            elif command[0] == "arm":
                for probe in group.probes:
                    probe.crashed_at = probe.crashed_ts = None
                group.crashes = 0
                group.armed = True
                reply({"armed": True})
            elif command[0] == "collect":
                timeout = float(command[1])
                await group.wait_until(lambda: group.crashes >= count, timeout)
                group.armed = False
                times = [p.crashed_at for p in group.probes if p.crashed_at is not None]
                stamps = {p.crashed_ts for p in group.probes if p.crashed_ts is not None}
                reply({"times": times, "missing": count - len(times), "server_ts": sorted(stamps)})
            else:
                reply({"error": f"unknown command {line!r}"})
    finally:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(20):
                await asyncio.gather(
                    *(p.disconnect() for p in group.probes), return_exceptions=True
                )
    return 0


# ---- the measuring side -----------------------------------------------------------------------


class Worker:
    """A worker process, spoken to one command line at a time."""

    def __init__(self, proc: asyncio.subprocess.Process, count: int) -> None:
        self.proc = proc
        self.count = count

    @classmethod
    async def start(cls, url: str, count: int, args: argparse.Namespace) -> Worker:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(SCRIPT),
            "--worker",
            f"--url={url}",
            f"--count={count}",
            f"--client={args.client}",
            f"--connect-concurrency={args.connect_concurrency}",
            f"--worker-nice={args.worker_nice}",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            start_new_session=True,  # Ctrl-C reaches only us; we stop the workers ourselves
            limit=16 << 20,
        )
        _children[proc.pid] = "worker"
        return cls(proc, count)

    async def read_reply(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"worker {self.proc.pid} exited (code {await self.proc.wait()})")
            text = line.decode()
            if text.startswith(REPLY):
                answer: dict[str, Any] = json.loads(text[len(REPLY) :])
                return answer
            sys.stderr.write(f"[worker {self.proc.pid}] {text}")

    async def ask(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        await self.proc.stdin.drain()
        return await self.read_reply()

    async def stop(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ConnectionError):
                assert self.proc.stdin is not None
                self.proc.stdin.write(b"quit\n")
                await self.proc.stdin.drain()
                self.proc.stdin.close()
            await wait_or_kill(self.proc, 30)
        _children.pop(self.proc.pid, None)


class Llamaherd:
    """`llamaherd serve` in its own process, supervising the fake llama-server."""

    def __init__(self, workdir: Path, load_s: float) -> None:
        self.workdir = workdir
        self.load_s = load_s
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "llamaherd.log"
        self.proc: asyncio.subprocess.Process | None = None
        self.llama_pids: set[int] = set()

    def write_config(self) -> Path:
        wrapper = self.workdir / "fake-llama-server"
        wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_SERVER}" "$@"\n')
        wrapper.chmod(0o755)
        model = self.workdir / "dummy.gguf"
        model.write_bytes(b"GGUF\x03\x00\x00\x00" + bytes(16))
        config = {
            "llama_server_host": "127.0.0.1",
            "llama_server_port": free_port(),
            "llama_model_path": str(model),
            "llama_server_binary": str(wrapper),
            "llama_server_args": ["--fake-load-s", str(self.load_s)],
            "app_host": "127.0.0.1",
            "app_port": self.port,
            "liveness_interval_ms": 1000,
        }
        path = self.workdir / "llamaherd.json"
        path.write_text(json.dumps(config, indent=2))
        return path

    async def start(self) -> None:
        config = self.write_config()
        with self.log_path.open("wb") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "llamaherd",
                "serve",
                "--config",
                str(config),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                cwd=ROOT,
            )
        _children[self.proc.pid] = "llamaherd"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    async def status(self, http: Any) -> dict[str, Any]:
        if self.proc is not None and self.proc.returncode is not None:
            raise RuntimeError(
                f"llamaherd exited with code {self.proc.returncode}:\n{self.log_tail()}"
            )
        answer: dict[str, Any] = (await http.get(f"{self.url}/api/status")).json()
        if answer.get("pid"):
            self.llama_pids.add(int(answer["pid"]))
        return answer

    async def wait_ready(
        self, http: Any, *, not_pid: int | None = None, timeout: float = 60
    ) -> dict[str, Any]:
        """Wait for `ready` with a fresh retry count (and a new llama-server, if not_pid)."""
        import httpx

        last: dict[str, Any] | None = None
        try:
            async with asyncio.timeout(timeout):
                while True:
                    with contextlib.suppress(httpx.TransportError):
                        last = await self.status(http)
                        if (
                            last["status"] == "ready"
                            and last["retries"] == 0
                            and last["pid"] != not_pid
                        ):
                            return last
                    await asyncio.sleep(0.05)
        except TimeoutError:
            raise RuntimeError(
                f"llamaherd not ready after {timeout} s (last status {last}):\n{self.log_tail()}"
            ) from None

    async def restart(self, http: Any) -> None:
        """POST /api/llama/restart; a 409 (the supervisor is busy) is retried."""
        async with asyncio.timeout(30):
            while True:
                answer = await http.post(f"{self.url}/api/llama/restart")
                if answer.status_code != 409:
                    answer.raise_for_status()
                    return
                await asyncio.sleep(0.1)

    async def stop(self) -> None:
        """SIGTERM (llamaherd then stops llama-server itself), SIGKILL if it does not exit."""
        if self.proc is None:
            return
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)
            await wait_or_kill(self.proc, 20)
        _children.pop(self.proc.pid, None)
        kill_leftover_llama_servers(self.llama_pids)


def kill_leftover_llama_servers(pids: set[int]) -> None:
    """SIGKILL fake llama-servers llamaherd started that still run (only if llamaherd died)."""
    for pid in pids:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if FAKE_SERVER.name.encode() in cmdline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@dataclass
class Round:
    latencies_ms: list[float]
    missing: int
    detect_ms: float | None  # the crashed event's server timestamp minus the kill time
    server_cpu_ms: float  # CPU time llamaherd used from the kill to the last receipt

    @property
    def p50(self) -> float:
        return percentile(self.latencies_ms, 50) if self.latencies_ms else math.inf

    @property
    def p99(self) -> float:
        return percentile(self.latencies_ms, 99) if self.latencies_ms else math.inf

    @property
    def max(self) -> float:
        if self.missing or not self.latencies_ms:
            return math.inf
        return self.latencies_ms[-1]

    @property
    def within_target(self) -> bool:
        return self.max <= TARGET_MS


@dataclass
class Result:
    clients: int
    workers: int
    connect_s: float
    rss_kib: int
    rounds: list[Round]

    def median(self, stat: str) -> float:
        return statistics.median(getattr(r, stat) for r in self.rounds)


async def measure(server: Llamaherd, http: Any, clients: int, args: argparse.Namespace) -> Result:
    n_workers = max(1, min(args.workers, clients))
    counts = [clients // n_workers + (i < clients % n_workers) for i in range(n_workers)]
    workers: list[Worker] = []
    try:
        for count in counts:
            workers.append(await Worker.start(server.url, count, args))
        connected = await asyncio.gather(*(w.read_reply() for w in workers))
        failed = sum(c["failed"] for c in connected)
        if failed:
            errors = [e for c in connected for e in c["errors"]]
            raise RuntimeError(f"{failed} of {clients} clients failed to connect: {errors}")
        connect_s = max(c["seconds"] for c in connected)
        await settle(workers)
        await asyncio.sleep(args.settle_s)
        rss = vm_rss_kib(server.pid)
        rounds: list[Round] = []
        for number in range(1, args.rounds + 1):
            state = await server.wait_ready(http)
            await settle(workers)
            await asyncio.sleep(args.settle_s)  # let batched log lines and the like go out
            victim = int(state["pid"])
            for worker in workers:
                await worker.ask("arm")
            cpu_before = cpu_ns(server.pid)
            killed_at = time.time()
            os.kill(victim, signal.SIGKILL)
            answers = await asyncio.gather(*(w.ask(f"collect {args.timeout_s}") for w in workers))
            cpu_ms = (cpu_ns(server.pid) - cpu_before) / 1e6
            latencies = sorted((t - killed_at) * 1000 for a in answers for t in a["times"])
            missing = sum(a["missing"] for a in answers)
            stamps = [s for a in answers for s in a["server_ts"]]
            detect = min(stamps) - killed_at * 1000 if stamps else None
            result = Round(latencies, missing, detect, cpu_ms)
            rounds.append(result)
            print(
                f"  N={clients:<5} round {number}: p50 {result.p50:7.1f} ms  "
                f"p99 {result.p99:7.1f} ms  max {result.max:7.1f} ms  "
                f"event built after {fmt(detect)} ms  llamaherd CPU {cpu_ms:.1f} ms  "
                f"missing {missing}",
                flush=True,
            )
            await server.restart(http)
            await server.wait_ready(http, not_pid=victim)
        return Result(clients, n_workers, connect_s, rss, rounds)
    finally:
        await asyncio.gather(*(w.stop() for w in workers), return_exceptions=True)


async def settle(workers: list[Worker], timeout: float = 60) -> None:
    answers = await asyncio.gather(*(w.ask(f"settle {timeout}") for w in workers))
    not_ready = sum(a["not_ready"] for a in answers)
    if not_ready:
        raise RuntimeError(f"{not_ready} clients did not see `ready` within {timeout} s")


def fmt(value: float | None) -> str:
    if value is None or math.isinf(value):
        return "—"
    return f"{value:.1f}"


def version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def server_stack() -> str:
    """What uvicorn's "auto" picks in this interpreter (the server runs the same one)."""
    websockets, uvloop = version("websockets"), version("uvloop")
    ws = f"websockets {websockets}" if websockets else f"wsproto {version('wsproto')}"
    loop = f"uvloop {uvloop}" if uvloop else "asyncio loop"
    return (
        f"Python {platform.python_version()}, python-socketio {version('python-socketio')}, "
        f"python-engineio {version('python-engineio')}, uvicorn {version('uvicorn')} "
        f"with {ws} and {loop}"
    )


def report(results: list[Result], rss_idle_kib: int, args: argparse.Namespace, command: str) -> str:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"## Socket.IO fan-out: llama-server crash to every client ({args.client} clients)",
        "",
        f"- date: {now}",
        f"- machine: {os.cpu_count()} CPU cores, {platform.system()} {platform.release()}, "
        f"{platform.machine()}; llamaherd, the client workers and llama-server share these "
        f"cores; load average before the run: {args.load_before}",
        f"- server: {server_stack()}",
        f"- clients: {CLIENT_KINDS[args.client]}, WebSocket transport, in up to {args.workers} "
        f"worker processes (niceness +{args.worker_nice})",
        f"- latency: a client's receipt of `llamaStatus` `crashed` minus time.time() just "
        f"before SIGKILL of llama-server; target: every client within {TARGET_MS:.0f} ms",
        f"- {args.rounds} rounds per client count; p50, p99, max, built and CPU are the median "
        "over rounds of that round's figure; worst max is the largest over all rounds",
        f"- command: `{command}`",
        "",
        "| clients | p50 ms | p99 ms | max ms | worst max ms | rounds all ≤ 100 ms "
        "| missed | built ms | llamaherd CPU ms | connect s | llamaherd RSS MiB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        detects = [x.detect_ms for x in r.rounds if x.detect_ms is not None]
        lines.append(
            f"| {r.clients} | {fmt(r.median('p50'))} | {fmt(r.median('p99'))} "
            f"| {fmt(r.median('max'))} | {fmt(max(x.max for x in r.rounds))} "
            f"| {sum(x.within_target for x in r.rounds)}/{len(r.rounds)} "
            f"| {sum(x.missing for x in r.rounds)} "
            f"| {fmt(statistics.median(detects) if detects else None)} "
            f"| {fmt(r.median('server_cpu_ms'))} "
            f"| {r.connect_s:.1f} | {r.rss_kib / 1024:.1f} |"
        )
    lines += [
        "",
        "| clients connected | llamaherd RSS (VmRSS) MiB |",
        "|---:|---:|",
        f"| 0 | {rss_idle_kib / 1024:.1f} |",
        *(f"| {r.clients} | {r.rss_kib / 1024:.1f} |" for r in results),
        "",
        "- `missed`: clients that got no `crashed` event within "
        f"{args.timeout_s:g} s, over all rounds.",
        "- `built ms`: the `timestamp` of the `crashed` event (llamaherd's clock, whole ms) "
        "minus the kill time: how long llamaherd took to notice the exit and build the event. "
        "The rest of the latency is the fan-out and the clients' own processing.",
        "- `llamaherd CPU ms`: CPU time the llamaherd process used from the kill until the "
        "last client had the event (all its threads, /proc/PID/task/*/schedstat): its own "
        "cost of noticing and sending, whatever the other processes did meanwhile.",
        "- `connect s`: time to connect all the clients (the slowest worker).",
        "",
    ]
    return "\n".join(lines)


async def bench_main(args: argparse.Namespace, command: str) -> int:
    import httpx

    args.load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    limit = raise_nofile()
    needed = max(args.clients) + 100
    if limit < needed:
        print(f"warning: open-file limit {limit} may be too low for {needed} sockets")
    with tempfile.TemporaryDirectory(prefix="llamaherd-fanout-") as tmp:
        server = Llamaherd(Path(tmp), args.load_s)
        try:
            await server.start()
            async with httpx.AsyncClient(timeout=10) as http:
                state = await server.wait_ready(http)
                print(
                    f"llamaherd pid {server.pid} on {server.url}, llama-server pid {state['pid']}"
                )
                await asyncio.sleep(args.settle_s)
                rss_idle = vm_rss_kib(server.pid)
                results = []
                for clients in args.clients:
                    print(f"N={clients}: connecting...", flush=True)
                    results.append(await measure(server, http, clients, args))
        finally:
            await server.stop()
    table = report(results, rss_idle, args, command)
    print()
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table)
    print(f"written to {args.out}")
    return 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 100, 1000])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=4, help="client processes (default 4)")
    parser.add_argument(
        "--client",
        choices=["socketio", "raw"],
        default="socketio",
        help="socketio: python-socketio AsyncClient (default); raw: a minimal Engine.IO client "
        "over aiohttp, cheaper per message, so closer to the server's own share",
    )
    parser.add_argument("--connect-concurrency", type=int, default=25, help="per worker")
    parser.add_argument(
        "--worker-nice",
        type=int,
        default=0,
        help="niceness added to the client workers (e.g. 10: the server gets the CPU first)",
    )
    parser.add_argument("--settle-s", type=float, default=0.5, help="quiet time before a kill")
    parser.add_argument("--timeout-s", type=float, default=10.0, help="wait for `crashed` events")
    parser.add_argument("--load-s", type=float, default=0.0, help="fake model load time")
    parser.add_argument(
        "--out",
        type=Path,
        help=f"Markdown file (default: {DEFAULT_OUT.relative_to(ROOT)}, "
        "or ..._raw.md with --client raw)",
    )
    # Internal: run as a worker holding --count clients.
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.out is None:
        suffix = "" if args.client == "socketio" else f"_{args.client}"
        args.out = DEFAULT_OUT.with_name(f"{DEFAULT_OUT.stem}{suffix}.md")
    if not args.worker and (min(args.clients) < 1 or args.rounds < 1):
        parser.error("--clients and --rounds must be at least 1")
    return args


def kill_children() -> None:
    """Last resort (a second Ctrl-C, an error): SIGKILL every child still registered."""
    for pid in list(_children):
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        _children.pop(pid, None)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return asyncio.run(
            worker_main(
                args.url, args.count, args.connect_concurrency, args.worker_nice, args.client
            )
        )
    python = Path(sys.executable)
    with contextlib.suppress(ValueError):
        python = python.relative_to(Path.cwd())
    command = " ".join([str(python), "bench/socketio_fanout.py", *sys.argv[1:]])

    async def run() -> int:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await bench_main(args, command)

    try:
        return asyncio.run(run())
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        kill_children()


if __name__ == "__main__":
    sys.exit(main())
