"""llamaherd served for a test: in the test's own event loop (`serve_application`, uvicorn on a
free port), or as `llamaherd serve` in a process of its own (`ServedLlamaherd`).

`llamaherd serve` as a process of its own, for the tests that need llamaherd exactly as it is
deployed: its own memory and event loop, a SIGKILL or a SIGTERM from outside, a mount
namespace or a resource limit of its own, an environment of its own.

`ServedLlamaherd` runs `python -m llamaherd serve --config CONFIG` in a process group of its
own, behind an optional wrapper (`unshare ... exec "$@"`, `prlimit ...`). It reads the output
through a pipe, not a file: a test may take the disk away from llamaherd (RLIMIT_FSIZE covers
every file it writes, its stdout too). It waits for what llamaherd announces to nobody (that
it listens, that a model is ready) by asking again until a deadline, and stops waiting at
once if llamaherd exits. It remembers the llama-servers it runs (its children) and, at
`close()`, kills llamaherd's group and then each of those servers still alive, by pid (a
psutil handle, so a pid the kernel has given to another process meanwhile is never
signalled), never by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx
import psutil
import uvicorn

from llamaherd.api.app import Application
from tests.conftest import free_port

T = TypeVar("T")
POLL_S = 0.05  # between two questions to llamaherd while waiting for a fact
TAIL_CHARS = 4000  # how much of llamaherd's output a failure message shows


def write_config(folder: Path, settings: Mapping[str, Any], name: str = "llamaherd.json") -> Path:
    """`settings` as the JSON config file `llamaherd serve --config` reads; its path."""
    path = folder / name
    path.write_text(json.dumps(settings))
    return path


def _running(process: psutil.Process) -> bool:
    """Whether `process` (the one first seen with its pid, not a later one) runs; a zombie
    counts as gone: it serves nothing."""
    try:
        return bool(process.is_running() and process.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


async def _models(http: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    answer = await http.get("/api/gateway/models")
    answer.raise_for_status()
    return {model["id"]: model for model in answer.json()["models"]}


class ServedLlamaherd:
    """`llamaherd serve --config CONFIG`, started by `start()` (or `async with`).

    `env` changes its environment: a value replaces a variable, None removes it. The config
    must name `app_port`: `url` is built from it. `command` is the llamaherd to run (default:
    this Python's `-m llamaherd`; an installed `llamaherd` script), `cwd` its folder."""

    def __init__(
        self,
        config: Path,
        *,
        wrapper: Sequence[str] = (),
        env: Mapping[str, str | None] | None = None,
        command: Sequence[str] = (sys.executable, "-m", "llamaherd"),
        cwd: Path | None = None,
    ) -> None:
        self.config = config
        self.command = tuple(command)
        self.cwd = cwd
        self.settings: dict[str, Any] = json.loads(config.read_text())
        self.port = int(self.settings["app_port"])
        self.url = f"http://127.0.0.1:{self.port}"
        self.wrapper = tuple(wrapper)
        self.env = dict(env or {})
        self.lines: list[str] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self._servers: dict[int, psutil.Process] = {}
        self._reader: threading.Thread | None = None

    # ---- the process ---------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        return self._started().pid

    @property
    def output(self) -> str:
        """Everything it wrote so far (stdout and stderr)."""
        return "".join(self.lines)

    def tail(self, chars: int = TAIL_CHARS) -> str:
        return self.output[-chars:]

    def _started(self) -> subprocess.Popen[bytes]:
        assert self.proc is not None, "llamaherd was not started"
        return self.proc

    def start(self) -> Self:
        assert self.proc is None, "llamaherd was started already"
        env = dict(os.environ)
        for name, value in self.env.items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        argv = [*self.command, "serve", "--config", str(self.config)]
        self.proc = subprocess.Popen(
            [*self.wrapper, *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
            cwd=self.cwd,
        )
        stdout = self.proc.stdout
        assert stdout is not None

        def read() -> None:
            for line in stdout:
                self.lines.append(line.decode("utf-8", "replace"))

        self._reader = threading.Thread(target=read, name="llamaherd-output", daemon=True)
        self._reader.start()
        return self

    def send_signal(self, sig: signal.Signals) -> None:
        self._started().send_signal(sig)

    def rss(self) -> int:
        """llamaherd's resident memory now, in bytes."""
        return int(psutil.Process(self.pid).memory_info().rss)

    def remember_servers(self) -> set[int]:
        """The pids of the processes llamaherd runs as its children now (its llama-servers),
        remembered so that `close()` can tell whether any outlives it."""
        try:
            children = psutil.Process(self.pid).children()
        except psutil.Error:
            return set()  # llamaherd has ended: it runs nothing now
        found = {child.pid: child for child in children if _running(child)}
        self._servers.update(found)
        return set(found)

    def model_url(self, model: str) -> str:
        """The base URL of `model`'s own llama-server (the config names its port)."""
        return f"http://127.0.0.1:{self.settings['models'][model]['port']}"

    # ---- waiting for what it announces to nobody ------------------------------------------------

    def http(
        self, headers: Mapping[str, str] | None = None, timeout: float = 10.0
    ) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=timeout)

    def _check_running(self) -> None:
        proc = self._started()
        if proc.poll() is not None:
            raise AssertionError(f"llamaherd exited with {proc.returncode}:\n{self.tail()}")

    async def wait_until(
        self, what: str, check: Callable[[], Awaitable[T | None]], timeout_s: float = 60.0
    ) -> T:
        """Ask `check()` again until it returns a truthy value, and return that: llamaherd is
        another process, and none of these facts is announced to this one. An HTTP error
        counts as "not yet" (it may not listen yet); llamaherd's exit ends the wait at once."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._check_running()
            with contextlib.suppress(httpx.HTTPError):
                found = await check()
                if found:
                    return found
            await asyncio.sleep(POLL_S)
        raise AssertionError(f"timed out after {timeout_s} s waiting until {what}:\n{self.tail()}")

    async def wait_healthy(self, timeout_s: float = 60.0) -> None:
        """Until llamaherd answers its open `/healthz` with a 200."""
        async with self.http(timeout=2.0) as http:

            async def up() -> bool:
                return (await http.get("/healthz")).status_code == 200

            await self.wait_until("llamaherd answers /healthz", up, timeout_s)

    async def models(self, headers: Mapping[str, str] | None = None) -> dict[str, dict[str, Any]]:
        """GET /api/gateway/models, by model id."""
        async with self.http(headers) as http:
            return await _models(http)

    async def wait_ready(
        self, model: str, *, headers: Mapping[str, str] | None = None, timeout_s: float = 60.0
    ) -> dict[str, Any]:
        """Once llamaherd answers: load `model`, and wait until its llama-server is ready; its
        facts from /api/gateway/models. The llama-servers running then are remembered.
        `headers` carry a key where llamaherd has keys configured."""
        await self.wait_healthy(timeout_s)
        async with self.http(headers) as http:
            loaded = await http.post(f"/api/models/{model}/load")
            assert loaded.status_code == 200, loaded.text

            async def ready() -> dict[str, Any] | None:
                facts = (await _models(http))[model]
                return facts if facts["state"] == facts["phase"] == "ready" else None

            facts = await self.wait_until(f"model {model} is ready", ready, timeout_s)
        self.remember_servers()
        return facts

    # ---- its end -------------------------------------------------------------------------------

    def _wait_exit(self, timeout_s: float) -> int:
        """Its exit code, once it has ended and its output has been read to the end (raises
        subprocess.TimeoutExpired if it runs on)."""
        proc = self._started()
        code = proc.wait(timeout=timeout_s)
        if self._reader is not None:
            self._reader.join(timeout=5)  # a process that holds the pipe may keep it open
        if proc.stdout is not None and not (self._reader and self._reader.is_alive()):
            proc.stdout.close()
        return code

    async def wait_exit(self, timeout_s: float) -> int:
        return await asyncio.to_thread(self._wait_exit, timeout_s)

    def _kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._started().pid, signal.SIGKILL)

    async def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM, as a user's Ctrl-C would (the llama-servers running then are remembered);
        its exit code once it has ended. If it hangs: SIGKILL to its group, and fail."""
        proc = self._started()
        if proc.poll() is None:
            self.remember_servers()
            proc.send_signal(signal.SIGTERM)
        try:
            return await self.wait_exit(timeout_s)
        except subprocess.TimeoutExpired:
            self._kill_group()
            await self.wait_exit(10)
            raise AssertionError(
                f"llamaherd did not stop within {timeout_s} s of SIGTERM:\n{self.tail()}"
            ) from None

    def close(self) -> list[int]:
        """Whatever happened: kill llamaherd's group if it still runs, then every remembered
        llama-server still alive, by pid. Those servers' pids (empty when none outlived it)."""
        if self.proc is None:
            return []
        if self.proc.poll() is None:
            self.remember_servers()
            self._kill_group()
        self._wait_exit(10)
        left = sorted(pid for pid, server in self._servers.items() if _running(server))
        for pid in left:
            with contextlib.suppress(psutil.Error):
                self._servers[pid].kill()
        return left

    async def __aenter__(self) -> Self:
        return self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop it gracefully, then `close()`; unless an error is on its way already, fail if a
        llama-server outlived it."""
        try:
            await self.stop()
        finally:
            left = self.close()
        if exc_type is None:
            assert not left, f"llama-servers left running after llamaherd stopped: {left}"


@contextlib.asynccontextmanager
async def serve_uvicorn(
    config: uvicorn.Config, *, stop_timeout_s: float = 30
) -> AsyncIterator[str]:
    """uvicorn with `config` in the test's own event loop: its URL once it listens; at the end
    it is told to exit and awaited."""
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(15):
        while not server.started:  # uvicorn offers no event for this
            if task.done():
                task.result()
            await asyncio.sleep(0.02)
    try:
        yield f"http://{config.host}:{config.port}"
    finally:
        server.should_exit = True
        async with asyncio.timeout(stop_timeout_s):
            await task


@contextlib.asynccontextmanager
async def serve_application(
    application: Application, *, graceful_s: int | None = None
) -> AsyncIterator[str]:
    """uvicorn on a free port; at the end it stops accepting, gives open requests `graceful_s`
    (uvicorn's default: no limit), then runs the app's shutdown (which stops every
    llama-server)."""
    config = uvicorn.Config(
        application.asgi,
        host="127.0.0.1",
        port=free_port(),
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=graceful_s,
    )
    async with serve_uvicorn(config) as url:
        try:
            yield url
        finally:
            application.hub.close_streams()
