#!/usr/bin/env python3
"""What a front costs, what replicas give, and how fast failover is: llamaherds as a cluster.

    .venv/bin/python bench/cluster.py                          # everything, about 5 minutes
    .venv/bin/python bench/cluster.py --parts 3 --kill-rounds 3

Every llamaherd runs as `python -m llamaherd serve` in a process of its own; the load
generators (wrk, and this file run with `load` for part 3) in processes of their own. The
parts:

1. The hop: plain chat completions (the demo model, `max_tokens` 8, `-np 4 -t 1 -cram 0`) at 4
   and 16 connections, straight to a worker and through a front whose only peer is that
   worker, the two in turn in every round: req/s, p50, p99, the p50 the front adds, and the
   front's CPU per request (user + system time of its process, psutil, over the requests
   served).
2. Replicas: a model behind the fake llama-server (tests/fakes/fake_llama_server.py, one slot,
   `--fake-gen-ms` per token: every answer takes the same time) on two workers, through a
   front, against one worker reached directly and a front with that one worker only: req/s
   with wrk. Target: two replicas at least 1.8 times one.
3. Failover: two workers with `shared` (the real llama-server, `--parallel 2`) and a front;
   a load of `--clients` concurrent loops through the front; SIGKILL of one worker's process
   group (and of its llama-servers): the time from the kill to the end of the first request
   sent after it that succeeded (served by the other), and to the front's /v1/models calling
   the worker unreachable. The worker is started again between rounds. Target: under 1 s.

Prints the tables and writes them to bench/results/cluster.md. Ctrl-C or SIGTERM stops every
process it started.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gateway_procs as procs
import psutil
from gateway_load import CHAT_PATH, WrkResult, chat_body, run_wrk, write_wrk_script

from llamaherd.catalog.demo_model import write_demo_model
from llamaherd.config.binaries import locate_llama_server

SCRIPT = Path(__file__).resolve()
ROOT = SCRIPT.parent.parent
FAKE_SERVER = ROOT / "tests" / "fakes" / "fake_llama_server.py"
DEFAULT_OUT = ROOT / "bench" / "results" / "cluster.md"
KEY = "bench-cluster-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
TARGET_REPLICA_RATIO = 1.8
TARGET_FAILOVER_S = 1.0


# ---- the processes -------------------------------------------------------------------------------


class Herd:
    """One `llamaherd serve` with `config` (app_port filled in); started again by `start()`."""

    def __init__(self, workdir: Path, name: str, config: dict[str, Any]) -> None:
        self.name = name
        self.port = procs.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / f"{name}.log"
        self.path = workdir / f"{name}.json"
        self.path.write_text(json.dumps({"app_port": self.port, **config}, indent=2))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, ready: Sequence[str] = ()) -> Herd:
        argv = [sys.executable, "-m", "llamaherd", "serve", "--config", str(self.path)]
        self.proc = procs.start(argv, self.log, cwd=ROOT)
        self.wait(lambda: procs.get_json(f"{self.url}/healthz"), "answering /healthz")
        for model in ready:
            procs.post_json(f"{self.url}/api/models/{model}/load", {}, headers=AUTH)
            self.wait(lambda m=model: self.phase(m) == "ready" or None, f"{model} ready")
        return self

    def wait(self, probe: Any, what: str, timeout_s: float = 60) -> Any:
        return procs.wait_for(
            probe, timeout_s=timeout_s, what=f"{self.name} {what}", proc=self.proc, log=self.log
        )

    def phase(self, model: str) -> str | None:
        listing = procs.get_json(f"{self.url}/api/gateway/models", headers=AUTH)
        return next((m["phase"] for m in listing["models"] if m["id"] == model), None)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL to its process group and to each llama-server it runs (by pid)."""
        servers = psutil.Process(self.pid).children()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        for server in servers:
            with contextlib.suppress(psutil.Error):
                server.kill()
        assert self.proc is not None
        self.proc.wait(timeout=10)
        procs.stop(self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            procs.stop(self.proc)


@contextlib.contextmanager
def running(*herds: tuple[Herd, Sequence[str]]) -> Iterator[None]:
    try:
        for herd, models in herds:
            herd.start(models)
        yield
    finally:
        for herd, _ in reversed(herds):
            herd.stop()


def worker(
    workdir: Path, name: str, binary: Path, model: Path, *, models: Sequence[str], args: list[str]
) -> Herd:
    return Herd(
        workdir,
        name,
        {
            "llama_server_binary": str(binary),
            "llama_server_port": procs.free_port(),
            "state_dir": str(workdir / f"state-{name}"),
            "max_loaded": len(models),
            "api_keys": [{"name": "front", "key": KEY, "scopes": ["admin"]}],
            "models": {m: {"path": str(model), "args": args} for m in models},
        },
    )


def front(workdir: Path, name: str, peers: Sequence[Herd]) -> Herd:
    return Herd(
        workdir,
        name,
        {
            "state_dir": str(workdir / f"state-{name}"),
            "peers": [{"name": p.name, "url": p.url, "key": KEY} for p in peers],
        },
    )


def replicas(front_herd: Herd, model: str) -> dict[str, dict[str, Any]]:
    listing = procs.get_json(f"{front_herd.url}/v1/models")
    entry = next((m for m in listing["data"] if m["id"] == model), None)
    return {r["host"]: r for r in (entry or {}).get("meta", {}).get("replicas", [])}


def wait_replicas(front_herd: Herd, model: str, hosts: Sequence[str]) -> None:
    def ready() -> bool | None:
        found = replicas(front_herd, model)
        ok = all(h in found and found[h]["reachable"] and found[h]["phase"] for h in hosts)
        return ok or None

    front_herd.wait(ready, f"lists {model} on {', '.join(hosts)}")


def cpu_s(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def check(url: str, model: str) -> None:
    status, body = procs.post_json(url + CHAT_PATH, chat_body(model, 8), headers=AUTH)
    if status != 200:
        raise RuntimeError(f"{url}{CHAT_PATH} answered {status}: {body[:300]!r}")


# ---- part 1: the hop -----------------------------------------------------------------------------


@dataclass
class Run:
    wrk: WrkResult
    front_cpu_s: float | None


def wrk_run(url: str, script: Path, level: int, args: argparse.Namespace, pid: int | None) -> Run:
    if args.warmup_s > 0:
        run_wrk(url + CHAT_PATH, script, level, args.warmup_s)
    before = cpu_s(pid) if pid is not None else None
    result = run_wrk(url + CHAT_PATH, script, level, args.duration_s)
    spent = cpu_s(pid) - before if pid is not None and before is not None else None
    return Run(result, spent)


def part_hop(tmp: Path, binary: Path, model: Path, args: argparse.Namespace) -> list[str]:
    w = worker(
        tmp, "hop-worker", binary, model, models=["a"], args=["-np", "4", "-t", "1", "-cram", "0"]
    )
    f = front(tmp, "hop-front", [w])
    script = write_wrk_script(tmp / "hop.lua", chat_body("a", args.max_tokens), AUTH)
    runs: dict[tuple[int, str], list[Run]] = {}
    with running((w, ["a"]), (f, [])):
        wait_replicas(f, "a", ["hop-worker"])
        targets = {"worker direct": (w.url, None), "through the front": (f.url, f.pid)}
        for url, _ in targets.values():
            check(url, "a")
        for level in args.levels:
            for round_no in range(args.rounds):
                order = list(targets) if round_no % 2 == 0 else list(reversed(targets))
                for variant in order:
                    url, pid = targets[variant]
                    run = wrk_run(url, script, level, args, pid)
                    runs.setdefault((level, variant), []).append(run)
                    print(
                        f"  c={level} {variant}: {run.wrk.rps:.0f} req/s, "
                        f"p50 {run.wrk.p50_ms:.2f} ms",
                        flush=True,
                    )
    lines = [
        "### 1. The hop: front -> worker against the worker directly",
        "",
        f"wrk, plain chat completions of the demo model (`max_tokens` {args.max_tokens}), "
        f"{args.duration_s:g} s per run after {args.warmup_s:g} s warm-up, median of "
        f"{args.rounds} rounds; llama-server `-np 4 -t 1 -cram 0`.",
        "",
        "| connections | path | req/s | p50 ms | p99 ms | req/s vs direct | added p50 ms "
        "| front µs CPU / request | errors |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for level in args.levels:
        direct = runs[(level, "worker direct")]
        for variant in ("worker direct", "through the front"):
            rs = runs[(level, variant)]
            rps = med([r.wrk.rps for r in rs])
            p50 = med([r.wrk.p50_ms for r in rs])
            ratio = "—"
            added = "—"
            cpu = "—"
            if variant != "worker direct":
                ratio = f"{100 * rps / med([r.wrk.rps for r in direct]):.1f}%"
                pairs = zip(rs, direct, strict=True)
                added = f"{med([r.wrk.p50_ms - d.wrk.p50_ms for r, d in pairs]):+.2f}"
                cpu = f"{med([1e6 * (r.front_cpu_s or 0) / r.wrk.requests for r in rs]):.0f}"
            lines.append(
                f"| {level} | {variant} | {rps:.0f} | {p50:.2f} | "
                f"{med([r.wrk.p99_ms for r in rs]):.2f} | {ratio} | {added} | {cpu} | "
                f"{sum(r.wrk.errors for r in rs)} |"
            )
    return lines


# ---- part 2: replicas ----------------------------------------------------------------------------


def part_replicas(tmp: Path, args: argparse.Namespace) -> tuple[list[str], float]:
    fake = tmp / "fake-llama-server"
    fake.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_SERVER}" "$@"\n')
    fake.chmod(0o755)
    gguf = tmp / "fake.gguf"
    gguf.write_bytes(b"GGUF" + (3).to_bytes(4, "little") + bytes(16) + bytes(2048 - 24))
    fake_args = ["--fake-gen-ms", f"{args.fake_gen_ms:g}", "--fake-load-s", "0.05"]
    w1 = worker(tmp, "r1", fake, gguf, models=["r"], args=fake_args)
    w2 = worker(tmp, "r2", fake, gguf, models=["r"], args=fake_args)
    both = front(tmp, "front-both", [w1, w2])
    one = front(tmp, "front-one", [w1])
    body = chat_body("r", args.fake_tokens, ignore_eos=False)
    script = write_wrk_script(tmp / "replicas.lua", body, AUTH)
    rps: dict[str, list[float]] = {}
    errors = 0
    with running((w1, ["r"]), (w2, ["r"]), (both, []), (one, [])):
        wait_replicas(both, "r", ["r1", "r2"])
        wait_replicas(one, "r", ["r1"])
        targets = {
            "one replica, direct": w1.url,
            "one replica, through a front": one.url,
            "two replicas, through a front": both.url,
        }
        for url in targets.values():
            check(url, "r")
        for round_no in range(args.rounds):
            shift = round_no % len(targets)
            names = list(targets)
            for variant in names[shift:] + names[:shift]:
                run = wrk_run(targets[variant], script, args.replica_connections, args, None)
                rps.setdefault(variant, []).append(run.wrk.rps)
                errors += run.wrk.errors
                print(f"  {variant}: {run.wrk.rps:.1f} req/s", flush=True)
    base = med(rps["one replica, direct"])
    ratio = med(rps["two replicas, through a front"]) / base
    per_request_ms = args.fake_tokens * args.fake_gen_ms
    lines = [
        "### 2. Two replicas against one",
        "",
        f"The fake llama-server (one slot, {args.fake_tokens} tokens at {args.fake_gen_ms:g} ms: "
        f"{per_request_ms:g} ms an answer, at most {1000 / per_request_ms:.1f} req/s a "
        f"replica), wrk with {args.replica_connections} connections, {args.duration_s:g} s per "
        f"run, median of {args.rounds} rounds ({errors} errors in all).",
        "",
        "| path | req/s | vs one replica direct |",
        "|---|---:|---:|",
    ]
    for variant in targets:
        value = med(rps[variant])
        lines.append(f"| {variant} | {value:.1f} | {value / base:.2f}x |")
    met = ratio >= TARGET_REPLICA_RATIO
    lines += ["", f"Target: two replicas at least {TARGET_REPLICA_RATIO}x one: {ratio:.2f}x, "
              f"{'**met**' if met else '**missed**'}."]  # fmt: skip
    return lines, ratio


# ---- part 3: failover ----------------------------------------------------------------------------


def part_failover(tmp: Path, binary: Path, model: Path, args: argparse.Namespace) -> list[str]:
    np_args = ["--parallel", "2"]
    w1 = worker(tmp, "f1", binary, model, models=["shared"], args=np_args)
    w2 = worker(tmp, "f2", binary, model, models=["shared"], args=np_args)
    f = front(tmp, "failover-front", [w1, w2])
    rows: list[dict[str, float]] = []
    with running((w1, ["shared"]), (w2, ["shared"]), (f, [])):
        for round_no in range(args.kill_rounds):
            if round_no:
                w1.start(["shared"])
            wait_replicas(f, "shared", ["f1", "f2"])
            rows.append(failover_round(f, w1, args))
            row = rows[-1]
            print(
                f"  round {round_no + 1}: first served by the other after "
                f"{row['first_ok_s'] * 1000:.0f} ms, unreachable after "
                f"{row['unreachable_s'] * 1000:.0f} ms, failed {row['failed']:.0f}, "
                f"lost {row['lost']:.0f}",
                flush=True,
            )
    first = med([r["first_ok_s"] for r in rows])
    lines = [
        "### 3. Failover: SIGKILL of a worker under continuous load",
        "",
        f"Two workers with `shared` (real llama-server, `--parallel 2`), {args.clients} "
        f"clients in a separate process sending plain chat completions (`max_tokens` "
        f"{args.max_tokens}) through the front; SIGKILL of one worker's group and its "
        f"llama-servers after {args.before_kill_s:g} s of load; {args.kill_rounds} rounds.",
        "",
        "| round | kill → first success sent after it, ms | kill → front says unreachable, ms "
        "| sent | succeeded | failed | of them sent after the kill | lost |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n, r in enumerate(rows, start=1):
        lines.append(
            f"| {n} | {r['first_ok_s'] * 1000:.0f} | {r['unreachable_s'] * 1000:.0f} | "
            f"{r['sent']:.0f} | {r['ok']:.0f} | {r['failed']:.0f} | {r['failed_after']:.0f} | "
            f"{r['lost']:.0f} |"
        )
    lines.append(
        f"| median | {first * 1000:.0f} | {med([r['unreachable_s'] for r in rows]) * 1000:.0f} "
        "| | | | | |"
    )
    met = first < TARGET_FAILOVER_S
    lines += ["", f"Target: under {TARGET_FAILOVER_S:g} s from the kill to the first request "
              f"served by the other replica: {first * 1000:.0f} ms (median), "
              f"{'**met**' if met else '**missed**'}."]  # fmt: skip
    return lines


def failover_round(f: Herd, victim: Herd, args: argparse.Namespace) -> dict[str, float]:
    argv = [sys.executable, str(SCRIPT), "load", "--url", f.url, "--model", "shared"]
    argv += ["--clients", str(args.clients), "--max-tokens", str(args.max_tokens)]
    load = subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.PIPE)
    time.sleep(args.before_kill_s)
    unreachable: list[float] = []

    def watch() -> None:
        deadline = time.time() + 10
        while time.time() < deadline:
            with contextlib.suppress(OSError, ValueError):
                if not replicas(f, "shared").get(victim.name, {}).get("reachable", True):
                    unreachable.append(time.time())
                    return
            time.sleep(0.01)

    killed = time.time()
    victim.kill()
    watcher = threading.Thread(target=watch)
    watcher.start()
    time.sleep(args.after_kill_s)
    watcher.join()
    out, _ = load.communicate(b"stop\n", timeout=60)
    outcomes = json.loads(out)
    after = [o for o in outcomes if o["started"] >= killed and o["status"] == 200]
    first_ok = min((o["ended"] for o in after), default=float("inf")) - killed
    return {
        "first_ok_s": first_ok,
        "unreachable_s": (unreachable[0] - killed) if unreachable else float("inf"),
        "sent": len(outcomes),
        "ok": sum(1 for o in outcomes if o["status"] == 200),
        "failed": sum(1 for o in outcomes if o["status"] not in (200, None)),
        "failed_after": sum(
            1 for o in outcomes if o["status"] not in (200, None) and o["started"] >= killed
        ),
        "lost": sum(1 for o in outcomes if o["status"] is None),
    }


async def load_main(url: str, model: str, clients: int, max_tokens: int) -> list[dict[str, Any]]:
    """Run as `load`: `clients` loops of chat completions until a line on stdin; every request
    as {started, ended (time.time()), status (None: no answer)}, as JSON on stdout."""
    import aiohttp

    outcomes: list[dict[str, Any]] = []
    stop = asyncio.Event()
    body = chat_body(model, max_tokens)

    async def loop(session: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            started = time.time()
            status: int | None
            try:
                async with session.post(url + CHAT_PATH, json=body) as answer:
                    await answer.read()
                    status = answer.status
            except (aiohttp.ClientError, TimeoutError):
                status = None
            outcomes.append({"started": started, "ended": time.time(), "status": status})

    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        tasks = [asyncio.create_task(loop(session)) for _ in range(clients)]
        await asyncio.to_thread(sys.stdin.readline)
        stop.set()
        await asyncio.gather(*tasks)
    return outcomes


# ---- the report ----------------------------------------------------------------------------------


def med(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def bench(args: argparse.Namespace, command: str) -> str:
    binary = locate_llama_server()
    sections: list[list[str]] = []
    began = time.monotonic()
    load_before = procs.load_average()
    with tempfile.TemporaryDirectory(prefix="llamaherd-cluster-") as tmp_name:
        tmp = Path(tmp_name)
        model = write_demo_model(tmp / "demo.gguf")
        if 1 in args.parts:
            print("part 1: the hop", flush=True)
            sections.append(part_hop(tmp, binary, model, args))
        if 2 in args.parts:
            print("part 2: replicas", flush=True)
            sections.append(part_replicas(tmp, args)[0])
        if 3 in args.parts:
            print("part 3: failover", flush=True)
            sections.append(part_failover(tmp, binary, model, args))
    head = [
        f"## bench/cluster.py, {dt.date.today().isoformat()}",
        "",
        f"`{command}` ({revision()}; load average {load_before} before, "
        f"{procs.load_average()} after; {(time.monotonic() - began) / 60:.1f} min)",
        "",
        *procs.machine_lines(binary),
        "",
    ]
    return "\n".join(head + [line for s in sections for line in [*s, ""]])


def revision() -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "commit unknown"
    return f"commit {head}"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", type=int, nargs="+", default=[1, 2, 3], choices=[1, 2, 3])
    parser.add_argument("--levels", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration-s", type=float, default=10.0)
    parser.add_argument("--warmup-s", type=float, default=2.0)
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--fake-gen-ms", type=float, default=10.0)
    parser.add_argument("--fake-tokens", type=int, default=16)
    parser.add_argument("--replica-connections", type=int, default=8)
    parser.add_argument("--kill-rounds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=4, help="part 3's concurrent clients")
    parser.add_argument("--before-kill-s", type=float, default=2.0)
    parser.add_argument("--after-kill-s", type=float, default=3.0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if ({1, 2} & set(args.parts)) and shutil.which("wrk") is None:
        parser.error("parts 1 and 2 need wrk: apt-get install -y wrk")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["load"]:
        load = argparse.ArgumentParser()
        load.add_argument("--url", required=True)
        load.add_argument("--model", required=True)
        load.add_argument("--clients", type=int, default=4)
        load.add_argument("--max-tokens", type=int, default=8)
        a = load.parse_args(argv[1:])
        print(json.dumps(asyncio.run(load_main(a.url, a.model, a.clients, a.max_tokens))))
        return 0
    args = parse_args(argv)
    command = " ".join([".venv/bin/python", "bench/cluster.py", *argv])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        table = bench(args, command)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        procs.kill_all()
    print()
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table)
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
