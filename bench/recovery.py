"""How fast llamaherd brings the real llama-server up, and back after kill -9.

    .venv/bin/python bench/recovery.py [--rounds 10] [--model PATH]

Per round, with the real llama-server and the demo model (written to a temporary folder when
--model is not given):
  - baseline: llama-server started by hand, spawn to the first GET /health 200, polled every
    10 ms (what a perfect supervisor could see);
  - llamaherd: LlamaService.start() to `ready` (its readiness poll: at once, then after
    `--initial-ms`, doubling up to `--interval-ms`);
  - recovery: SIGKILL to `crashed` (exit noticed), and to `ready` again (1 s of backoff,
    a fresh start, the first health check that succeeds).
Prints medians (and min/max) as a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import httpx

from llamaherd.catalog.demo_model import write_demo_model
from llamaherd.config.binaries import locate_llama_server
from llamaherd.supervisor.policy import SupervisorPolicy
from llamaherd.supervisor.service import LlamaService
from llamaherd.supervisor.states import ServiceState, Status


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def baseline_ready_s(binary: Path, model: Path) -> float:
    port = free_port()
    began = time.monotonic()
    proc = subprocess.Popen(
        [str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False) as http:
            while True:
                try:
                    if http.get("/health", timeout=1).status_code == 200:
                        return time.monotonic() - began
                except httpx.HTTPError:
                    pass
                time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


async def llamaherd_round(binary: Path, model: Path, policy: SupervisorPolicy) -> list[float]:
    service = LlamaService(port=free_port(), model_path=model, binary=binary, policy=policy)
    seen: dict[Status, float] = {}
    changed = asyncio.Event()

    def on_change(state: ServiceState) -> None:
        seen.setdefault(state.status, time.monotonic())
        changed.set()

    began = time.monotonic()
    ready = await service.start()
    start_s = time.monotonic() - began
    assert ready.pid is not None, ready.last_error
    service.on_state_change(on_change)
    seen.clear()
    killed = time.monotonic()
    os.kill(ready.pid, signal.SIGKILL)
    while Status.READY not in seen:
        changed.clear()
        await changed.wait()
    await service.stop()
    return [start_s, seen[Status.CRASHED] - killed, seen[Status.READY] - killed]


def row(name: str, values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return f"| {name} | {statistics.median(ms):.1f} | {min(ms):.1f} | {max(ms):.1f} |"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--interval-ms", type=int, default=1000, help="readiness poll interval")
    parser.add_argument(
        "--initial-ms", type=int, default=50, help="first readiness poll delay (it doubles)"
    )
    args = parser.parse_args()
    binary = locate_llama_server()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or write_demo_model(Path(tmp) / "demo.gguf")
        policy = replace(
            SupervisorPolicy(),
            readiness_interval_ms=args.interval_ms,
            readiness_initial_ms=args.initial_ms,
        )
        baseline = [baseline_ready_s(binary, model) for _ in range(args.rounds)]
        rounds = [await llamaherd_round(binary, model, policy) for _ in range(args.rounds)]
    print(
        f"{args.rounds} rounds, readiness poll {args.initial_ms} ms doubling to "
        f"{args.interval_ms} ms, model {model.name}\n"
    )
    print("| measure | median ms | min ms | max ms |\n|---|---:|---:|---:|")
    print(row("baseline: spawn to /health 200 (10 ms polling)", baseline))
    print(row("llamaherd: start() to ready", [r[0] for r in rounds]))
    print(row("kill -9 to `crashed`", [r[1] for r in rounds]))
    print(row("kill -9 to `ready` again (incl. 1 s backoff)", [r[2] for r in rounds]))


if __name__ == "__main__":
    asyncio.run(main())
