#!/usr/bin/env python3
"""What llamaherd's gateway costs: throughput, latency, streams, switching and CPU, against
llama-server itself and against nginx.

    .venv/bin/python bench/gateway.py                       # everything, about 10 minutes
    .venv/bin/python bench/gateway.py --parts 1 --rounds 1  # only plain requests, quickly

One run, one llama-server build (`locate_llama_server()`), the tiny demo model; the load
generators (wrk, and bench/gateway_load.py for streams and switching) run in processes of their
own. The parts:

1. Plain chat completions (fixed body, `max_tokens` 8, `ignore_eos`) at 1, 4, 16 and 64
   connections: req/s, p50 and p99 with wrk, (a) direct to llama-server, (b) through
   `llamaherd serve`, (c) through nginx `proxy_pass` with upstream keep-alive (if installed).
   "Direct" is the very llama-server process llamaherd started, on its port, while llamaherd
   runs idle: same binary, same flags (`-np 4 -t 1 -cram 0`), same warm state. Each round
   runs the variants one after the other (the order turns each round), each with a warm-up.
2. 32 concurrent streams of 256 tokens (`-np 32`): total tokens/s and time to first token,
   through llamaherd against direct, on a llama-server started by a second llamaherd.
3. Switching: N sequential requests alternating two models (a, b, a, b...) through llamaherd
   with `max_loaded` 1, against llama-server's router mode (`--models-dir --models-max 1`).
4. CPU per request: utime + stime (/proc/PID/stat) of the llamaherd process, of nginx (master
   and workers) and of llama-server, over the measured runs of part 1 at 16 connections,
   divided by the requests served.

Prints one Markdown table per part and writes them to bench/results/gateway.md. Ctrl-C or
SIGTERM stops every process it started.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gateway_procs as procs
from gateway_load import CHAT_PATH, WrkResult, chat_body, run_wrk, write_wrk_script

from llamaherd.catalog.demo_model import write_demo_model
from llamaherd.config.binaries import locate_llama_server

SCRIPT = Path(__file__).resolve()
ROOT = SCRIPT.parent.parent
LOAD_SCRIPT = SCRIPT.parent / "gateway_load.py"
DEFAULT_OUT = ROOT / "bench" / "results" / "gateway.md"
MODEL = "a"
BENCH_KEY = "bench-key-0123456789abcdef"  # --with-keys: the key every variant sends
# The targets of the issue "Hot path" (the earlier "Gateway" asked 90%, 1 ms and 98%).
TARGET_RPS_RATIO = 0.95
TARGET_ADDED_P50_MS = 0.5
TARGET_LEVELS = (4, 16)
TARGET_STREAM_RATIO = 0.99
TARGET_ADDED_TTFT_MS = 5.0
TARGET_CPU_US = 250  # per request, telemetry on and llama-server's output read
TARGET_TELEMETRY_COST = 0.03  # req/s lost to telemetry and history, at each target level


# ---- the servers ----------------------------------------------------------------------------


class Llamaherd:
    """`python -m llamaherd serve` in its own process, with a config in the work folder."""

    def __init__(
        self,
        workdir: Path,
        name: str,
        config: dict[str, Any],
        *,
        slots: int | None = None,
        api_key: str | None = None,
    ) -> None:
        self.workdir = workdir
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.slots = slots  # wait until the gateway has learned this slot count from /props
        self.name = name
        self.port = procs.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / f"{name}.log"
        self.config = {"app_host": "127.0.0.1", "app_port": self.port, **config}
        self.proc: subprocess.Popen[bytes] | None = None
        self.llama_pid: int | None = None

    def __enter__(self) -> Llamaherd:
        path = self.workdir / f"{self.name}.json"
        path.write_text(json.dumps(self.config, indent=2))
        argv = [sys.executable, "-m", "llamaherd", "serve", "--config", str(path)]
        self.proc = procs.start(argv, self.log, cwd=ROOT)

        def ready() -> int | None:
            status = procs.get_json(f"{self.url}/api/status", headers=self.headers)
            return int(status["pid"]) if status.get("status") == "ready" else None

        self.llama_pid = procs.wait_for(
            ready, timeout_s=60, what=f"llamaherd ({self.name}) ready", proc=self.proc, log=self.log
        )
        if self.slots is not None:
            # Until llamaherd has read /props it sends one request at a time upstream.
            procs.wait_for(
                lambda: self.max_concurrency() == self.slots or None,
                timeout_s=30,
                what=f"llamaherd ({self.name}) using {self.slots} slots",
                proc=self.proc,
                log=self.log,
            )
        return self

    def max_concurrency(self) -> int:
        listing = procs.get_json(f"{self.url}/v1/models", headers=self.headers)
        return int(listing["data"][0]["meta"]["maxConcurrency"])

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            # llamaherd stops its llama-server itself on SIGTERM (and the kernel kills it if
            # llamaherd dies); only a server left behind anyway is killed here, by pid.
            procs.stop(self.proc)
        procs.kill_if_ours(self.llama_pid, str(self.workdir))

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


class Nginx:
    """nginx in the foreground (`daemon off`) with a generated config, proxying to `upstream`."""

    def __init__(self, workdir: Path, upstream_port: int, workers: int) -> None:
        self.workdir = workdir
        self.port = procs.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "nginx.log"
        self.conf = procs.nginx_conf(workdir, self.port, upstream_port, workers=workers)
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Nginx:
        argv = ["nginx", "-p", str(self.workdir), "-c", str(self.conf), "-g", "daemon off;"]
        self.proc = procs.start(argv, self.log)
        procs.wait_for(
            lambda: procs.get_json(f"{self.url}/health"),
            timeout_s=20,
            what="nginx answering",
            proc=self.proc,
            log=self.workdir / "nginx-error.log",
        )
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            procs.stop(self.proc)

    def pids(self) -> list[int]:
        assert self.proc is not None
        return [self.proc.pid, *procs.children_of(self.proc.pid)]


class Router:
    """llama-server in router mode: `--models-dir DIR --models-max 1`, one child per model."""

    def __init__(self, workdir: Path, binary: Path, models_dir: Path, args: Sequence[str]) -> None:
        self.workdir = workdir
        self.port = procs.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "router.log"
        self.argv = [
            str(binary),
            "--models-dir",
            str(models_dir),
            "--models-max",
            "1",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            *args,
        ]
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Router:
        self.proc = procs.start(self.argv, self.log)
        procs.wait_for(
            lambda: procs.get_json(f"{self.url}/v1/models"),
            timeout_s=60,
            what="llama-server router answering",
            proc=self.proc,
            log=self.log,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            procs.stop(self.proc)  # the group: the router and the servers it spawned


def check_answers(url: str, model: str | None, headers: dict[str, str] | None = None) -> None:
    """One request that must succeed before anything is measured."""
    status, body = procs.post_json(url + CHAT_PATH, chat_body(model, 8), headers=headers)
    if status != 200:
        raise RuntimeError(f"{url}{CHAT_PATH} answered {status}: {body[:300]!r}")


def pin_proxies(groups: list[list[int]], args: argparse.Namespace) -> None:
    """With --pin: the proxies (llamaherd, nginx) move to a core of their own; llama-server
    and the load generator stay where they were started (`args.server_cpus`)."""
    if args.proxy_cpus is not None:
        for pids in groups:
            for pid in pids:
                procs.pin(pid, args.proxy_cpus)


def llama_args(slots: int, threads: int, ctx: int | None = None) -> list[str]:
    """The same flags for every variant. `-cram 0` turns off llama-server's RAM prompt cache
    of idle slots: with it, each request of a long run costs llama-server more CPU than the
    one before (2.6 ms to 4.3 ms per request within 20,000 identical requests here), so a
    variant measured later would be slower for reasons of its own."""
    args = ["-np", str(slots), "-t", str(threads), "-cram", "0"]
    return [*args, "-c", str(ctx)] if ctx else args


# ---- part 1 (and 4): plain requests ---------------------------------------------------------


@dataclass
class Run:
    wrk: WrkResult
    proxy_cpu_s: float | None  # llamaherd's or nginx's CPU over the measured run
    server_cpu_s: float  # llama-server's


@dataclass
class PlainResults:
    runs: dict[tuple[int, str], list[Run]] = field(default_factory=dict)
    variants: list[str] = field(default_factory=list)


def part_plain(tmp: Path, args: argparse.Namespace, notes: list[str]) -> PlainResults:
    server_port = procs.free_port()
    config = {
        "llama_server_host": "127.0.0.1",
        "llama_server_port": server_port,
        "llama_model_path": str(tmp / f"{MODEL}.gguf"),
        "llama_server_args": llama_args(args.slots, args.threads),
        "state_dir": str(tmp / "state"),
    }
    # With --with-keys every variant gets the same Authorization header (llama-server and nginx
    # ignore it), so the only difference is llamaherd checking it.
    headers = {"Authorization": f"Bearer {BENCH_KEY}"} if args.with_keys else {}
    script = write_wrk_script(tmp / "chat.lua", chat_body(MODEL, args.max_tokens), headers)
    results = PlainResults()
    with contextlib.ExitStack() as stack:
        stack.enter_context(procs.pinned_here(args.server_cpus))
        herd = stack.enter_context(Llamaherd(tmp, "llamaherd-plain", config, slots=args.slots))
        assert herd.llama_pid is not None
        targets: dict[str, tuple[str, list[int]]] = {
            "direct": (f"http://127.0.0.1:{server_port}", []),
            "llamaherd": (herd.url, [herd.pid]),
        }
        if args.telemetry_off:
            # A second llamaherd in front of the same llama-server (it adopts it), with no
            # measurements, no history and no log files: what observing costs, in one run.
            quiet = {
                **config,
                "metrics_enabled": False,
                "history_enabled": False,
                "log_file_max_bytes": 0,
            }
            bare = stack.enter_context(Llamaherd(tmp, "llamaherd-bare", quiet, slots=args.slots))
            targets["llamaherd, telemetry off"] = (bare.url, [bare.pid])
        if args.with_keys:
            # A llamaherd that requires an API key, in front of the same llama-server.
            keyed_config = {
                **config,
                "api_keys": [{"name": "bench", "key": BENCH_KEY, "scopes": ["admin"]}],
            }
            keyed = stack.enter_context(
                Llamaherd(tmp, "llamaherd-keys", keyed_config, slots=args.slots, api_key=BENCH_KEY)
            )
            targets["llamaherd, API key"] = (keyed.url, [keyed.pid])
        if args.nginx:
            nginx = stack.enter_context(Nginx(tmp, server_port, args.nginx_workers))
            targets["nginx"] = (nginx.url, nginx.pids())
        pin_proxies([pids for _, pids in targets.values()], args)
        results.variants = list(targets)
        for url, _ in targets.values():
            check_answers(url, MODEL, headers)
        notes.append(f"part 1: load average before {procs.load_average()}")
        for level in args.levels:
            for round_no in range(args.rounds):
                shift = round_no % len(results.variants)
                for variant in results.variants[shift:] + results.variants[:shift]:
                    url, proxy_pids = targets[variant]
                    run = measure_plain(
                        url,
                        script,
                        level,
                        proxy_pids=proxy_pids,
                        server_pid=herd.llama_pid,
                        args=args,
                    )
                    results.runs.setdefault((level, variant), []).append(run)
                    print(
                        f"  c={level} round {round_no + 1} {variant}: {run.wrk.rps:.0f} req/s, "
                        f"p50 {run.wrk.p50_ms:.2f} ms, p99 {run.wrk.p99_ms:.2f} ms"
                        + (f", {run.wrk.errors} errors" if run.wrk.errors else ""),
                        flush=True,
                    )
    return results


def part_quiet_cpu(tmp: Path, args: argparse.Namespace) -> list[Run]:
    """llamaherd's CPU per request when its llama-server prints nothing (`--log-disable`):
    llama-server writes about nine lines per request, which llamaherd reads off the pipes."""
    server_port = procs.free_port()
    config = {
        "llama_server_host": "127.0.0.1",
        "llama_server_port": server_port,
        "llama_model_path": str(tmp / f"{MODEL}.gguf"),
        "llama_server_args": [*llama_args(args.slots, args.threads), "--log-disable"],
    }
    script = tmp / "chat.lua"
    runs = []
    with (
        procs.pinned_here(args.server_cpus),
        Llamaherd(tmp, "llamaherd-quiet", config, slots=args.slots) as herd,
    ):
        assert herd.llama_pid is not None
        pin_proxies([[herd.pid]], args)
        check_answers(herd.url, MODEL)
        for round_no in range(args.rounds):
            run = measure_plain(
                herd.url,
                script,
                args.cpu_level,
                proxy_pids=[herd.pid],
                server_pid=herd.llama_pid,
                args=args,
            )
            runs.append(run)
            print(
                f"  c={args.cpu_level} round {round_no + 1} llamaherd, llama-server --log-disable: "
                f"{run.wrk.rps:.0f} req/s",
                flush=True,
            )
    return runs


def measure_plain(
    url: str,
    script: Path,
    level: int,
    *,
    proxy_pids: list[int],
    server_pid: int,
    args: argparse.Namespace,
) -> Run:
    if args.warmup_s > 0:
        run_wrk(url + CHAT_PATH, script, level, args.warmup_s)
    proxy_before = procs.cpu_of(proxy_pids) if proxy_pids else None
    server_before = procs.cpu_s(server_pid)
    result = run_wrk(url + CHAT_PATH, script, level, args.duration_s)
    server_cpu = procs.cpu_s(server_pid) - server_before
    proxy_cpu = procs.cpu_of(proxy_pids) - proxy_before if proxy_before is not None else None
    return Run(result, proxy_cpu, server_cpu)


# ---- part 2: streams ------------------------------------------------------------------------


@dataclass
class StreamRun:
    tokens_per_s: float
    ttft_median_ms: float | None
    tokens: int
    short: int
    errors: list[str]
    proxy_cpu_s: float | None = None  # llamaherd's CPU over the run


def run_streams(url: str, streams: int, tokens: int) -> StreamRun:
    argv = [sys.executable, str(LOAD_SCRIPT), "stream", "--url", url, "--model", MODEL]
    argv += ["--streams", str(streams), "--tokens", str(tokens)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"stream client exited {done.returncode}: {done.stderr[-2000:]}")
    out = json.loads(done.stdout)
    return StreamRun(
        out["tokens_per_s"], out["ttft_median_ms"], out["tokens"], out["short"], out["errors"]
    )


def part_streams(
    tmp: Path, args: argparse.Namespace, notes: list[str]
) -> dict[str, list[StreamRun]]:
    server_port = procs.free_port()
    slots = args.stream_slots
    config = {
        "llama_server_host": "127.0.0.1",
        "llama_server_port": server_port,
        "llama_model_path": str(tmp / f"{MODEL}.gguf"),
        "llama_server_args": llama_args(slots, args.threads, slots * args.ctx_per_slot),
    }
    runs: dict[str, list[StreamRun]] = {"direct": [], "llamaherd": []}
    with (
        procs.pinned_here(args.server_cpus),
        Llamaherd(tmp, "llamaherd-stream", config, slots=slots) as herd,
    ):
        pin_proxies([[herd.pid]], args)
        targets = {"direct": f"http://127.0.0.1:{server_port}", "llamaherd": herd.url}
        for url in targets.values():
            check_answers(url, MODEL)
            run_streams(url, args.streams, 16)  # warm-up: every slot used once
        notes.append(f"part 2: load average before {procs.load_average()}")
        for round_no in range(args.stream_rounds):
            order = list(targets) if round_no % 2 == 0 else list(reversed(targets))
            for variant in order:
                before = procs.cpu_s(herd.pid)
                run = run_streams(targets[variant], args.streams, args.stream_tokens)
                if variant == "llamaherd":
                    run.proxy_cpu_s = procs.cpu_s(herd.pid) - before
                runs[variant].append(run)
                print(
                    f"  streams round {round_no + 1} {variant}: {run.tokens_per_s:.0f} tokens/s, "
                    f"TTFT median {fmt(run.ttft_median_ms)} ms"
                    + (f", {len(run.errors)} errors: {run.errors[:2]}" if run.errors else ""),
                    flush=True,
                )
    return runs


# ---- part 3: switching ----------------------------------------------------------------------


def run_switch(url: str, count: int, max_tokens: int) -> dict[str, Any]:
    argv = [sys.executable, str(LOAD_SCRIPT), "switch", "--url", url, "--models", "a", "b"]
    argv += ["--count", str(count), "--max-tokens", str(max_tokens)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"switch client exited {done.returncode}: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def part_switch(
    tmp: Path, binary: Path, args: argparse.Namespace, notes: list[str]
) -> dict[str, dict[str, Any]]:
    models_dir = tmp / "models"
    server_args = llama_args(args.slots, args.threads)
    config = {
        "llama_server_host": "127.0.0.1",
        "llama_server_args": server_args,
        "models": {
            "a": {"path": str(models_dir / "a.gguf")},
            "b": {"path": str(models_dir / "b.gguf")},
        },
        "default_model": "a",
        "max_loaded": 1,
    }
    results: dict[str, dict[str, Any]] = {}
    notes.append(f"part 3: load average before {procs.load_average()}")
    gateways: list[tuple[str, Any]] = [
        ("llamaherd (max_loaded 1)", Llamaherd(tmp, "llamaherd-switch", config)),
        ("llama-server router (--models-max 1)", Router(tmp, binary, models_dir, server_args)),
    ]
    if args.switch_readiness_ms:
        quick = {**config, "readiness_initial_ms": args.switch_readiness_ms}
        name = f"llamaherd (max_loaded 1, readiness_initial_ms {args.switch_readiness_ms})"
        gateways.append((name, Llamaherd(tmp, "llamaherd-switch-quick", quick)))
    for name, gateway in gateways:
        with gateway:
            run_switch(gateway.url, 2, args.max_tokens)  # warm-up: a, then b (b stays loaded)
            results[name] = run_switch(gateway.url, args.switch_count, args.max_tokens)
            lat = results[name]["latencies_ms"]
            print(
                f"  switching {name}: median {statistics.median(lat):.1f} ms, "
                f"p90 {percentile(sorted(lat), 90):.1f} ms",
                flush=True,
            )
            if name.startswith("llama-server"):
                names = [m["id"] for m in procs.get_json(f"{gateway.url}/v1/models")["data"]]
                notes.append(f"part 3: the router's /v1/models names the files {names}")
    return results


# ---- the report -----------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def fmt(value: float | None, digits: int = 2) -> str:
    if value is None or math.isinf(value) or math.isnan(value):
        return "—"
    return f"{value:.{digits}f}"


def signed(value: float, digits: int = 2) -> str:
    return "—" if math.isnan(value) else f"{value:+.{digits}f}"


def med(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def verdict(met: bool) -> str:
    return "**met**" if met else "**missed**"


def plain_table(res: PlainResults, args: argparse.Namespace, targets: list[str]) -> list[str]:
    lines = [
        "### 1. Plain chat completions (wrk, `max_tokens` "
        f"{args.max_tokens}, {args.duration_s:g} s per run after {args.warmup_s:g} s warm-up, "
        f"median of {args.rounds} rounds)",
        "",
        "| connections | path | req/s | p50 ms | p99 ms | req/s vs direct | added p50 ms "
        "| errors |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for level in args.levels:
        direct = res.runs[(level, "direct")]
        for variant in res.variants:
            runs = res.runs[(level, variant)]
            # Paired with the direct run of the same round, then the median over rounds.
            ratios = [r.wrk.rps / d.wrk.rps for r, d in zip(runs, direct, strict=True)]
            added = [r.wrk.p50_ms - d.wrk.p50_ms for r, d in zip(runs, direct, strict=True)]
            is_direct = variant == "direct"
            lines.append(
                f"| {level} | {variant} | {med([r.wrk.rps for r in runs]):.0f} "
                f"| {fmt(med([r.wrk.p50_ms for r in runs]))} "
                f"| {fmt(med([r.wrk.p99_ms for r in runs]))} "
                f"| {'—' if is_direct else f'{med(ratios):.1%}'} "
                f"| {'—' if is_direct else fmt(med(added))} "
                f"| {sum(r.wrk.errors for r in runs)} |"
            )
            if variant == "llamaherd" and level in TARGET_LEVELS:
                targets.append(
                    f"- llamaherd at {level} connections: {med(ratios):.1%} of direct req/s "
                    f"(target ≥ {TARGET_RPS_RATIO:.0%}): {verdict(med(ratios) >= TARGET_RPS_RATIO)}"
                )
                targets.append(
                    f"- llamaherd at {level} connections: p50 {signed(med(added))} ms over direct "
                    f"(target ≤ {TARGET_ADDED_P50_MS:g} ms): "
                    f"{verdict(med(added) <= TARGET_ADDED_P50_MS)}"
                )
    quiet_variant = "llamaherd, telemetry off"
    if quiet_variant in res.variants:
        for level in TARGET_LEVELS:
            if level not in args.levels:
                continue
            # Paired by round, as above: the req/s that telemetry and history cost.
            pairs = zip(
                res.runs[(level, "llamaherd")], res.runs[(level, quiet_variant)], strict=True
            )
            cost = med([1 - on.wrk.rps / off.wrk.rps for on, off in pairs])
            targets.append(
                f"- telemetry and history on against off at {level} connections (the off "
                f"variant also reads no llama-server output): {cost:.1%} of req/s "
                f"(target ≤ {TARGET_TELEMETRY_COST:.0%}): "
                f"{verdict(cost <= TARGET_TELEMETRY_COST)}"
            )
    lines += [
        "",
        "`req/s vs direct` and `added p50` pair each run with the direct run of the same round "
        "and give the median over rounds.",
    ]
    return lines


def cpu_table(res: PlainResults, level: int, quiet: list[Run], targets: list[str]) -> list[str]:
    lines = [
        f"### 4. CPU per request at {level} connections (utime + stime from /proc/PID/stat "
        "over the measured runs)",
        "",
        "| path | requests | proxy µs CPU / request | llama-server µs CPU / request |",
        "|---|---:|---:|---:|",
    ]
    rows = [(variant, res.runs.get((level, variant), [])) for variant in res.variants]
    rows.append(("llamaherd, llama-server `--log-disable`", quiet))
    for variant, runs in rows:
        if not runs:
            continue
        requests = sum(r.wrk.requests for r in runs)
        proxy = [r.proxy_cpu_s for r in runs if r.proxy_cpu_s is not None]
        server = sum(r.server_cpu_s for r in runs)
        proxy_us = f"{sum(proxy) / requests * 1e6:.0f}" if proxy and requests else "—"
        server_us = f"{server / requests * 1e6:.0f}" if requests else "—"
        lines.append(f"| {variant} | {requests} | {proxy_us} | {server_us} |")
        if variant == "llamaherd" and proxy and requests:
            per_request = sum(proxy) / requests * 1e6
            targets.append(
                f"- llamaherd's CPU per request at {level} connections (telemetry on, "
                f"llama-server's output read): {per_request:.0f} µs (target ≤ {TARGET_CPU_US} "
                f"µs): {verdict(per_request <= TARGET_CPU_US)}"
            )
    lines += [
        "",
        "`proxy`: the llamaherd process (all threads), or nginx's master and workers. "
        "The clock-tick resolution (10 ms) is small against the runs' totals. The last row is "
        "a second llamaherd whose llama-server prints no log lines (`--log-disable`): the "
        "difference is what reading llama-server's output costs llamaherd per request.",
    ]
    return lines


def stream_table(
    runs: dict[str, list[StreamRun]], args: argparse.Namespace, targets: list[str]
) -> list[str]:
    lines = [
        f"### 2. {args.streams} concurrent streams of {args.stream_tokens} tokens "
        f"(`-np {args.stream_slots} -c {args.stream_slots * args.ctx_per_slot}`, "
        f"median of {args.stream_rounds} rounds)",
        "",
        "| path | tokens/s | vs direct | TTFT median ms | added TTFT ms "
        "| short or failed streams | llamaherd µs CPU / token |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    direct = runs["direct"]
    for variant, these in runs.items():
        ratios = [r.tokens_per_s / d.tokens_per_s for r, d in zip(these, direct, strict=True)]
        added = [
            r.ttft_median_ms - d.ttft_median_ms
            for r, d in zip(these, direct, strict=True)
            if r.ttft_median_ms is not None and d.ttft_median_ms is not None
        ]
        ttft = [r.ttft_median_ms for r in these if r.ttft_median_ms is not None]
        is_direct = variant == "direct"
        lines.append(
            f"| {variant} | {med([r.tokens_per_s for r in these]):.0f} "
            f"| {'—' if is_direct else f'{med(ratios):.1%}'} | {fmt(med(ttft), 1)} "
            f"| {'—' if is_direct else fmt(med(added), 1)} "
            f"| {sum(r.short + len(r.errors) for r in these)} "
            f"| {cpu_per_token(these)} |"
        )
        if variant == "llamaherd":
            targets.append(
                f"- {args.streams} streams through llamaherd: {med(ratios):.1%} of direct "
                f"tokens/s (target ≥ {TARGET_STREAM_RATIO:.0%}): "
                f"{verdict(med(ratios) >= TARGET_STREAM_RATIO)}; time to first token "
                f"{signed(med(added), 1)} ms (median; target ≤ {TARGET_ADDED_TTFT_MS:g} ms): "
                f"{verdict(med(added) <= TARGET_ADDED_TTFT_MS)}"
            )
    lines += [
        "",
        "tokens/s: completion tokens of all streams (`usage` of each stream's last chunk) over "
        "the wall time from the first request to the last stream's end. TTFT: request sent to "
        "the first chunk with content, median over the streams of a run. CPU: the llamaherd "
        "process's utime + stime over its runs, over the tokens they carried (one SSE chunk "
        "each).",
    ]
    return lines


def cpu_per_token(runs: list[StreamRun]) -> str:
    cpu = [r.proxy_cpu_s for r in runs if r.proxy_cpu_s is not None]
    tokens = sum(r.tokens for r in runs if r.proxy_cpu_s is not None)
    return f"{sum(cpu) / tokens * 1e6:.0f}" if cpu and tokens else "—"


def switch_table(
    results: dict[str, dict[str, Any]], args: argparse.Namespace, targets: list[str]
) -> list[str]:
    lines = [
        f"### 3. Switching: {args.switch_count} sequential requests alternating models a and b "
        f"(`max_tokens` {args.max_tokens}), one model loaded at a time",
        "",
        "| gateway | median ms | p90 ms | min ms | max ms | errors |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    medians: dict[str, float] = {}
    for name, result in results.items():
        lat = sorted(result["latencies_ms"])
        medians[name] = statistics.median(lat)
        lines.append(
            f"| {name} | {medians[name]:.1f} | {percentile(lat, 90):.1f} | {lat[0]:.1f} "
            f"| {lat[-1]:.1f} | {len(result['errors'])} |"
        )
    if len(medians) >= 2:
        herd, router = list(medians.values())[:2]
        targets.append(
            f"- switching: llamaherd median {herd:.1f} ms vs router {router:.1f} ms "
            f"(target: no slower): {verdict(herd <= router)}"
        )
    lines += [
        "",
        "Every measured request names the model that is not loaded, so each one is an unload "
        "and a load; a warm-up request to a, then to b, comes first. The last row is "
        "llamaherd with a quicker first readiness poll of a starting llama-server "
        "(`readiness_initial_ms`, 50 ms by default).",
    ]
    return lines


def report(
    *,
    command: str,
    binary: Path,
    args: argparse.Namespace,
    notes: list[str],
    sections: list[list[str]],
    targets: list[str],
) -> str:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    stream_ctx = args.stream_slots * args.ctx_per_slot
    lines = [
        "## llamaherd gateway benchmark",
        "",
        f"- date: {now}",
        *procs.machine_lines(binary),
        f"- llamaherd: {args.revision}",
        f"- llama-server flags: `{' '.join(llama_args(args.slots, args.threads))}` for parts 1 "
        "and 3, "
        f"`{' '.join(llama_args(args.stream_slots, args.threads, stream_ctx))}` "
        "for part 2; model: the demo model (random weights, 2 layers, 64-dim)",
        "- direct: the llama-server that llamaherd started, on its own port, while llamaherd "
        "runs idle; nginx: "
        + (f"{args.nginx_workers} worker, upstream keepalive" if args.nginx else "not run"),
        (
            f"- pinned (--pin): llama-server and the load generator on CPU "
            f"{min(args.server_cpus)}, llamaherd and nginx on CPU {min(args.proxy_cpus)} "
            "(parts 1, 2 and 4; part 3 unpinned)"
            if args.pin
            else "- everything (load generator, proxies, llama-server) shares the machine's cores"
        ),
        *(f"- {note}" for note in notes),
        f"- command: `{command}`",
        "",
    ]
    for section in sections:
        lines += [*section, ""]
    lines += ["### Targets", "", *targets, ""]
    return "\n".join(lines)


# ---- main -----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", type=int, nargs="+", default=[1, 2, 3], choices=[1, 2, 3])
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--duration-s", type=float, default=10.0, help="per measured run")
    parser.add_argument("--warmup-s", type=float, default=2.0, help="before each run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--slots", type=int, default=4, help="llama-server -np (parts 1, 3)")
    parser.add_argument(
        "--threads", type=int, default=1, help="llama-server -t (1: no spinning thread pool)"
    )
    parser.add_argument("--cpu-level", type=int, default=16, help="connections for part 4")
    parser.add_argument(
        "--telemetry-off",
        action="store_true",
        help="part 1 also through a llamaherd with metrics, history and log files off",
    )
    parser.add_argument(
        "--with-keys",
        action="store_true",
        help="part 1 also through a llamaherd that requires an API key (every variant sends it)",
    )
    parser.add_argument("--no-nginx", dest="nginx", action="store_false")
    parser.add_argument("--nginx-workers", type=int, default=1)
    parser.add_argument("--streams", type=int, default=32)
    parser.add_argument("--stream-tokens", type=int, default=256)
    parser.add_argument("--stream-slots", type=int, default=32, help="llama-server -np, part 2")
    parser.add_argument("--stream-rounds", type=int, default=5)
    parser.add_argument("--ctx-per-slot", type=int, default=512, help="part 2: -c is slots x this")
    parser.add_argument("--switch-count", type=int, default=20)
    parser.add_argument(
        "--switch-readiness-ms",
        type=int,
        default=5,
        help="also switch through llamaherd with this readiness_initial_ms (0: skip)",
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="parts 1, 2 and 4: llama-server and the load generator on CPU 0, the proxy "
        "(llamaherd, nginx) on CPU 1: a proxy with a core of its own",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    args.server_cpus = args.proxy_cpus = None
    if args.pin:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            parser.error("--pin needs at least 2 CPUs")
        args.server_cpus, args.proxy_cpus = {cpus[0]}, {cpus[1]}
    if args.nginx and shutil.which("nginx") is None:
        print("nginx not installed: its variant is left out (apt-get install -y nginx-light)")
        args.nginx = False
    if 1 in args.parts and shutil.which("wrk") is None:
        parser.error("part 1 needs wrk: apt-get install -y wrk")
    return args


def revision() -> str:
    """The commit measured, and whether src/ had changes not yet committed."""
    git = ["git", "-C", str(ROOT)]
    try:
        head = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--", "src"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "commit unknown"
    return f"commit {head}" + (" with uncommitted changes in src/" if dirty else "")


def bench(args: argparse.Namespace, command: str) -> str:
    binary = locate_llama_server()
    args.revision = revision()  # at the start: the servers run the code of this moment
    notes: list[str] = []
    sections: list[list[str]] = []
    targets: list[str] = []
    with tempfile.TemporaryDirectory(prefix="llamaherd-gateway-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "models").mkdir()
        for seed, name in enumerate(("a", "b"), start=1):
            write_demo_model(tmp / "models" / f"{name}.gguf", seed=seed)
        (tmp / f"{MODEL}.gguf").hardlink_to(tmp / "models" / f"{MODEL}.gguf")
        began = time.monotonic()
        if 1 in args.parts:
            print("part 1: plain requests", flush=True)
            plain = part_plain(tmp, args, notes)
            sections.append(plain_table(plain, args, targets))
        if 2 in args.parts:
            print("part 2: streams", flush=True)
            sections.append(stream_table(part_streams(tmp, args, notes), args, targets))
        if 3 in args.parts:
            print("part 3: switching", flush=True)
            sections.append(switch_table(part_switch(tmp, binary, args, notes), args, targets))
        if 1 in args.parts and args.cpu_level in args.levels:
            print("part 4: CPU with a silent llama-server", flush=True)
            quiet = part_quiet_cpu(tmp, args)
            sections.append(cpu_table(plain, args.cpu_level, quiet, targets))
        notes.append(
            f"load average after: {procs.load_average()}; the run took "
            f"{(time.monotonic() - began) / 60:.1f} min"
        )
    return report(
        command=command, binary=binary, args=args, notes=notes, sections=sections, targets=targets
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    python = Path(sys.executable)
    with contextlib.suppress(ValueError):
        python = python.relative_to(Path.cwd())
    command = " ".join([str(python), "bench/gateway.py", *sys.argv[1:]])
    # SIGTERM unwinds like Ctrl-C, so every `with` stops what it started.
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
