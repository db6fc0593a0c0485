"""How long `llamaherd --version` and `llamaherd status` take, as a person at a shell sees it.

    .venv/bin/python bench/cli_startup.py [--runs 30] [--command CMD]...

Each run is a new process (`subprocess.run`, output discarded), timed from before the fork to
after its exit: the interpreter's start, the imports, the work and the exit (wall time), and
the CPU time it used (user + system, from the kernel's accounting of the reaped child: what
does not grow when other work shares the cores). The commands take turns within each round,
so a busy moment of the machine falls on all of them alike. One unmeasured round first warms
the page cache. `--command` may be given several times (`"env PYTHONPATH=old/src
.venv/bin/llamaherd"` runs another checkout's code): each one's rows, interleaved. Rows:

  - `--version`;
  - `status --url` of a port where nothing listens (the "is it running?" answer: exit 1,
    "cannot reach llamaherd");
  - `status --url` of a running llamaherd, and `status --config` with that llamaherd's config
    file (the address taken from the config, as `llamaherd status --config
    /etc/llamaherd/config.json` on a service host). The llamaherd runs in a process of its
    own (`python -m llamaherd serve`), supervising the fake llama-server of
    tests/fakes/fake_llama_server.py, in a temporary folder; it is stopped by its pid at the
    end (SIGTERM, SIGKILL to its process group after 20 s).

Prints a Markdown table (median, min and max wall time, median CPU time, in ms; the targets of
issue 15, on the median wall time: 150 ms for --version, 300 ms for status) and writes it to
bench/results/cli_startup.md. Exit status 1 if a command answered otherwise than expected.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FAKE_SERVER = ROOT / "tests" / "fakes" / "fake_llama_server.py"
RESULTS = ROOT / "bench" / "results" / "cli_startup.md"
TARGET_MS = {"version": 150.0, "status": 300.0}


@dataclass
class Case:
    """One command line to time, and how it must end to count."""

    command: str
    name: str
    target: str  # a key of TARGET_MS
    argv: list[str]
    exit_code: int
    says: str  # found in its stdout or stderr
    times_ms: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def default_command() -> str:
    """The `llamaherd` script installed beside this Python, as a user runs it; else -m."""
    script = Path(sys.executable).with_name("llamaherd")
    with contextlib.suppress(ValueError):
        script = script.relative_to(Path.cwd())
    return str(script) if script.is_file() else f"{sys.executable} -m llamaherd"


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_once(case: Case) -> tuple[float, float]:
    """The wall time and the CPU time of one run, in ms."""
    cpu_before = _children_cpu_s()
    began = time.perf_counter()
    done = subprocess.run(case.argv, capture_output=True, text=True, check=False, timeout=60)
    elapsed_ms = (time.perf_counter() - began) * 1000
    cpu_ms = (_children_cpu_s() - cpu_before) * 1000
    if done.returncode != case.exit_code or case.says not in done.stdout + done.stderr:
        raise RuntimeError(
            f"{' '.join(case.argv)} exited {done.returncode} (expected {case.exit_code}, "
            f"saying {case.says!r}):\n{done.stdout}{done.stderr}"
        )
    return elapsed_ms, cpu_ms


def write_config(folder: Path) -> Path:
    """A config for a llamaherd of the benchmark's own: the fake llama-server, free ports."""
    wrapper = folder / "fake-llama-server"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_SERVER}" "$@"\n')
    wrapper.chmod(0o755)
    model = folder / "dummy.gguf"
    model.write_bytes(b"GGUF\x03\x00\x00\x00" + bytes(16))
    config = folder / "llamaherd.json"
    settings = {
        "llama_server_host": "127.0.0.1",
        "llama_server_port": unused_port(),
        "llama_model_path": str(model),
        "llama_server_binary": str(wrapper),
        "app_host": "127.0.0.1",
        "app_port": unused_port(),
        "state_dir": str(folder / "state"),
    }
    config.write_text(json.dumps(settings, indent=2))
    return config


@contextlib.contextmanager
def running_llamaherd(folder: Path) -> Iterator[tuple[str, Path]]:
    """`llamaherd serve` in a process of its own: its URL and config once /api/status answers."""
    config = write_config(folder)
    url = f"http://127.0.0.1:{json.loads(config.read_text())['app_port']}"
    with (folder / "llamaherd.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llamaherd", "serve", "--config", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    print(f"llamaherd serve: pid {proc.pid}, {url}", file=sys.stderr)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                log_text = (folder / "llamaherd.log").read_text(errors="replace")
                raise RuntimeError(f"llamaherd exited with {proc.returncode}:\n{log_text}")
            with (
                contextlib.suppress(urllib.error.URLError, OSError),
                urllib.request.urlopen(f"{url}/api/status", timeout=2) as answer,
            ):
                if answer.status == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"llamaherd did not answer {url}/api/status within 60 s")
            time.sleep(0.05)
        yield url, config
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def measure(cases: list[Case], runs: int) -> None:
    for case in cases:  # warm-up: the page cache, the bytecode caches
        run_once(case)
    for _ in range(runs):
        for case in cases:
            wall_ms, cpu_ms = run_once(case)
            case.times_ms.append(wall_ms)
            case.cpu_ms.append(cpu_ms)


def report(cases: list[Case], runs: int, load_before: tuple[float, float, float]) -> str:
    load = os.getloadavg()
    lines = [
        f"{runs} runs of each command, each a new process; `bench/cli_startup.py --runs {runs}`.",
        "",
        f"Machine: {os.cpu_count()} CPU cores, {platform.machine()}, Linux "
        f"{platform.release()}, Python {platform.python_version()}; load average "
        f"{load_before[0]:.2f} before, {load[0]:.2f} after.",
        "",
        "| llamaherd | command | median ms | min ms | max ms | CPU ms | target ms | met |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for case in cases:
        median = statistics.median(case.times_ms)
        target = TARGET_MS[case.target]
        lines.append(
            f"| `{case.command}` | {case.name} | {median:.0f} | {min(case.times_ms):.0f} | "
            f"{max(case.times_ms):.0f} | {statistics.median(case.cpu_ms):.0f} | {target:.0f} | "
            f"{'yes' if median <= target else 'no'} |"
        )
    return "\n".join(lines)


def cases_for(command: str, nowhere: str, url: str, config: Path) -> list[Case]:
    argv = shlex.split(command)
    return [
        Case(command, "`--version`", "version", [*argv, "--version"], 0, "llamaherd "),
        Case(
            command,
            "`status --url` (nothing listening)",
            "status",
            [*argv, "status", "--url", nowhere],
            1,
            "cannot reach llamaherd",
        ),
        Case(
            command,
            "`status --url` (a running llamaherd)",
            "status",
            [*argv, "status", "--url", url],
            0,
            "status",
        ),
        Case(
            command,
            "`status --config` (a running llamaherd)",
            "status",
            [*argv, "status", "--config", str(config)],
            0,
            "status",
        ),
    ]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30, help="timed runs of each command")
    parser.add_argument(
        "--command",
        action="append",
        default=None,
        help="a llamaherd command line to time, split like a shell (default: the llamaherd "
        "script beside this Python); several are measured in turns",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the table goes")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    commands = args.command or [default_command()]
    nowhere = f"http://127.0.0.1:{unused_port()}"
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="llamaherd-cli-") as tmp:
        try:
            with running_llamaherd(Path(tmp)) as (url, config):
                cases = [
                    case
                    for command in commands
                    for case in cases_for(command, nowhere, url, config)
                ]
                measure(cases, args.runs)
        except RuntimeError as exc:
            print(f"cli_startup: {exc}", file=sys.stderr)
            return 1
    table = report(cases, args.runs, load_before)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
