"""The processes bench/gateway.py starts, and what it reads about them.

Every child is started in a session of its own and registered by pid; `stop` ends it (SIGTERM
to its process group, SIGKILL after a grace period) and `kill_all` is the last resort on the
way out. Nothing is ended by name.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

# Every process this script started and has not yet reaped, by pid.
_children: dict[int, subprocess.Popen[bytes]] = {}
# Plain urllib with no proxies from the environment: everything here is on 127.0.0.1.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(argv: Sequence[str], log: Path, *, cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """Run `argv` in its own session, output to `log`."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=cwd,
        )
    _children[proc.pid] = proc
    return proc


def stop(proc: subprocess.Popen[bytes], *, group: bool = True, grace_s: float = 20) -> None:
    """SIGTERM (to the process group, or only the process), then SIGKILL if it is still there
    after `grace_s`."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(proc.pid, signal.SIGTERM)
            else:
                os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=grace_s)
    _children.pop(proc.pid, None)


def kill_all() -> None:
    """SIGKILL every child still registered, with its process group."""
    for pid, proc in list(_children.items()):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        _children.pop(pid, None)


def kill_if_ours(pid: int | None, marker: str) -> None:
    """SIGKILL `pid` if it still runs and its command line contains `marker` (our temporary
    folder): a llama-server left behind by a llamaherd that did not stop it."""
    if pid is None:
        return
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return
    if marker.encode() in cmdline:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def get_json(url: str, timeout_s: float = 5, headers: dict[str, str] | None = None) -> Any:
    request = urllib.request.Request(url, headers=headers or {})
    with _HTTP.open(request, timeout=timeout_s) as answer:
        return json.loads(answer.read())


def post_json(
    url: str, body: dict[str, Any], timeout_s: float = 60, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with _HTTP.open(request, timeout=timeout_s) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_for(
    probe: Callable[[], T | None],
    *,
    timeout_s: float,
    what: str,
    proc: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> T:
    """Poll `probe` (None or an exception: not yet) until it returns a value, with a deadline;
    fail at once if `proc` exits meanwhile. There is no event to await across processes."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    delay = 0.02
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with {proc.returncode}{tail(log)}")
        try:
            value = probe()
        except (OSError, ValueError) as exc:
            last = exc
        else:
            if value is not None:
                return value
        time.sleep(delay)
        delay = min(delay * 2, 0.5)
    raise RuntimeError(f"{what}: not within {timeout_s:g} s (last: {last}){tail(log)}")


def tail(log: Path | None, lines: int = 20) -> str:
    if log is None:
        return ""
    try:
        text = log.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return "\n" + "\n".join(text)


def cpu_s(pid: int) -> float:
    """utime + stime of `pid` (all its threads) from /proc/PID/stat, in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    # After "pid (comm) ", the fields start at number 3 (state): utime is 14, stime 15.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def children_of(ppid: int) -> list[int]:
    """The pids whose parent is `ppid` (nginx's workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2 :].split()[1]) == ppid:
            found.append(int(entry.name))
    return found


def pin(pid: int, cpus: set[int]) -> None:
    """Move every thread of `pid` to `cpus` (threads it starts later inherit it)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that just ended
            os.sched_setaffinity(int(task.name), cpus)


@contextlib.contextmanager
def pinned_here(cpus: set[int] | None) -> Iterator[None]:
    """Run this process (and so every child it starts meanwhile) on `cpus`; None: no change."""
    if cpus is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def cpu_of(pids: Sequence[int]) -> float:
    return sum(cpu_s(pid) for pid in pids)


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def version_line(argv: Sequence[str]) -> str:
    """The first line a program prints about its version (stdout or stderr)."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "not found"
    lines = (done.stdout + done.stderr).strip().splitlines()
    return lines[0].strip() if lines else "unknown"


def llama_server_version(binary: Path) -> str:
    try:
        done = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except OSError:
        return "unknown"
    for line in (done.stdout + done.stderr).splitlines():
        if line.startswith("version:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def machine_lines(binary: Path) -> list[str]:
    wrk = version_line(["wrk", "--version"]).split(" [")[0] if shutil.which("wrk") else "—"
    nginx = version_line(["nginx", "-v"]).removeprefix("nginx version: ")
    return [
        f"- machine: {os.cpu_count()} CPU cores (nproc), {cpu_model()}, "
        f"{platform.system()} {platform.release()} {platform.machine()}",
        f"- software: Python {platform.python_version()}, "
        f"llama-server {llama_server_version(binary)}, {wrk}, "
        f"nginx {nginx if shutil.which('nginx') else 'not installed'}",
    ]


# ---- nginx ----------------------------------------------------------------------------------


def nginx_conf(workdir: Path, listen_port: int, upstream_port: int, *, workers: int) -> Path:
    """A reverse proxy to llama-server as one would write it: HTTP/1.1 keep-alive connections
    upstream, no buffering (what an event stream needs), no access log."""
    for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (workdir / f"nginx-{name}").mkdir(exist_ok=True)
    user = "user root root;\n" if os.geteuid() == 0 else ""
    conf = workdir / "nginx.conf"
    conf.write_text(
        f"""{user}worker_processes {workers};
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {workdir}/nginx-body;
    proxy_temp_path {workdir}/nginx-proxy;
    fastcgi_temp_path {workdir}/nginx-fastcgi;
    uwsgi_temp_path {workdir}/nginx-uwsgi;
    scgi_temp_path {workdir}/nginx-scgi;
    upstream llama {{
        server 127.0.0.1:{upstream_port};
        keepalive 128;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{listen_port};
        keepalive_requests 1000000;
        location / {{
            proxy_pass http://llama;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 600s;
        }}
    }}
}}
"""
    )
    return conf
