"""A stateful property test of LlamaService against the fake llama-server.

Hypothesis drives one service through any order of control calls (start, stop, restart, a stop
that is cancelled while it waits, two calls at once, waits), of faults (kill -9 of the child,
SIGSTOP and SIGCONT, a foreign program or a foreign llama-server on the port) and of time
passing, and after every step checks what must always hold:

- at most one child that llamaherd started is alive, and the state agrees with the processes
  that exist (ready or starting: the pid in the state is our one live child, or the server was
  adopted; initial, crashed or error: no child of ours is alive); `checking` and `stopping` are
  passing states that must end within a bound;
- every call returns within a bound, and none raises (an overlapping call waits its turn);
- nothing outlives stop(), and after it the state stays `initial`;
- start() and wait_settled() return only in ready, error or initial (wait_settled() also on its
  own timeout);
- a foreign or adopted process is never killed, and llamaherd never starts its own server while
  the one it adopted still holds the port.

Hypothesis's RuleBasedStateMachine is synchronous, so each test case owns an event loop and each
rule runs its coroutine to the end on it. Between rules the loop does not run: the supervisor
only moves while a rule or a check runs, which keeps the interleavings reproducible (and lets a
fault rule act on a state that cannot change under it). Examples are derandomized, so CI runs
the same ones every time; set LLAMAHERD_STATEFUL_EXAMPLES to run more of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from llamaherd.supervisor.policy import SupervisorPolicy
from llamaherd.supervisor.service import LlamaService
from llamaherd.supervisor.states import ServiceState, Status
from tests.conftest import free_port, pid_alive

T = TypeVar("T")

POLICY = SupervisorPolicy(
    max_retries=3,
    backoff_initial_ms=20,
    backoff_max_ms=200,
    health_timeout_ms=300,
    readiness_initial_ms=10,
    readiness_interval_ms=50,
    readiness_max_attempts=30,  # a 1.5 s readiness budget
    liveness_interval_ms=100,
    liveness_failures=2,
    stable_after_s=3600.0,
    stop_timeout_s=0.5,
    log_lines=200,
)
SERVER_ARGS = ("--fake-load-s", "0.05")

# Bounds on each call. A start that ends in `error` after every retry takes at most
# (max_retries + 1) x (spawn + readiness budget + health timeout) plus the backoff: about 13 s
# on two busy cores. A stop takes the SIGTERM timeout plus up to 1 s to drain the output.
START_LIMIT_S = 15.0
STOP_LIMIT_S = 5.0
LIMIT_S = {"start": START_LIMIT_S, "stop": STOP_LIMIT_S, "restart": STOP_LIMIT_S + START_LIMIT_S}
# How long the state may disagree with the processes after a step (a kill not yet noticed, a
# hang not yet detected, `checking` or `stopping` not yet over).
SETTLE_LIMIT_S = 5.0
POLL_S = 0.02
# How long a foreign server may take to start listening (a Python start on busy cores).
FOREIGN_START_S = 20.0

SETTLED = frozenset({Status.READY, Status.ERROR, Status.INITIAL})
AT_REST_WITHOUT_CHILD = frozenset({Status.INITIAL, Status.CRASHED, Status.ERROR})


def _port_arg(argv: list[str]) -> int | None:
    for flag, value in itertools.pairwise(argv):
        if flag == "--port" and value.isdigit():
            return int(value)
    return None


def children_on_port(port: int) -> set[int]:
    """Live (non-zombie) children of this process started with `--port PORT`."""
    me = os.getpid()
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) != me or fields[0] == "Z":
                continue
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        if _port_arg(argv) == port:
            found.add(int(entry.name))
    return found


def pid_exists(pid: int) -> bool:
    """True while `pid` has not been reaped (a zombie still exists)."""
    return Path(f"/proc/{pid}").exists()


def send(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def deferred(method: Callable[..., None]) -> Callable[..., None]:
    """Record the first failure of a rule or check instead of raising it; skip every step after.

    The failure is raised by teardown(), once the example has drawn all its steps. A bug that
    shows at step 5 in one run may show at step 4 when Hypothesis replays the example to shrink
    it; raised at once, the shorter run would draw fewer steps, which Hypothesis reports as
    flaky data generation instead of the bug."""

    @functools.wraps(method)
    def run(self: ServiceMachine, *args: Any, **kwargs: Any) -> None:
        if self.failure is not None:
            return
        try:
            method(self, *args, **kwargs)
        except Exception as exc:
            exc.add_note(
                f"First failed in {method.__name__}(); the steps printed after it did nothing."
            )
            self.failure = exc

    return run


@dataclass
class Foreign:
    """A program on the port that llamaherd did not start."""

    proc: subprocess.Popen[bytes]
    kind: str  # "listener" (not llama-like), "llama" (adoptable) or "loading" (never ready)
    killed_by_test: bool = False

    @property
    def pid(self) -> int:
        return self.proc.pid


@dataclass
class Shared:
    """What the state listener records, read by the checks."""

    history: list[str] = field(default_factory=list)
    spawned: set[int] = field(default_factory=set)
    adopted_pid: int | None = None
    violations: list[str] = field(default_factory=list)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)


class ServiceMachine(RuleBasedStateMachine):
    # Set by the test on a subclass: the fake llama-server's executable and a model file.
    binary: Path
    model: Path

    def __init__(self) -> None:
        super().__init__()
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.service: LlamaService | None = None
        self.shared = Shared()
        self.foreign: list[Foreign] = []
        self.sigstopped: set[int] = set()
        # "stopped": the last control call was a completed stop; "running": a start or
        # restart; "unknown": after a cancelled stop.
        self.desired = "stopped"
        self.started_once = False
        # Whether a foreign program was last put on the port (even if the port was busy and
        # none came): the foreign rules take turns by this flag, not by what runs.
        self.foreign_turn = False
        self.step = "(none)"
        self.failure: Exception | None = None  # see deferred()

    # ---- set-up --------------------------------------------------------------------------

    @initialize(
        ignore_sigterm=st.booleans(),
        found=st.sampled_from(["nothing", "a foreign llama", "a foreign listener"]),
    )
    @deferred
    def build(self, ignore_sigterm: bool, found: str) -> None:
        """The service, and what it finds on the port at its first start: adoption and a held
        port are reached this way in many more examples than by a rule alone."""
        args = [*SERVER_ARGS, *(["--fake-ignore-sigterm"] if ignore_sigterm else [])]
        self.service = LlamaService(
            host="127.0.0.1",
            port=self.port,
            model_path=self.model,
            server_args=args,
            binary=self.binary,
            policy=POLICY,
        )
        self.service.on_state_change(self._record)
        if found == "a foreign llama":
            self.foreign_llama_takes_port(loads_forever=False)
        elif found == "a foreign listener":
            self.foreign_listener_takes_port()

    def _record(self, state: ServiceState) -> None:
        shared = self.shared
        pid = "-" if state.pid is None else str(state.pid)
        shared.history.append(f"{state.status}(pid {pid}{', adopted' if state.adopted else ''})")
        if state.status is Status.STARTING and state.pid is not None and not state.adopted:
            shared.spawned.add(state.pid)
            held = shared.adopted_pid
            if held is not None and pid_alive(held):
                shared.violations.append(
                    f"during {self.step}: started its own llama-server (pid {state.pid}) while "
                    f"the server it adopted (pid {held}) still holds port {self.port}"
                )
        if state.status is Status.READY and state.adopted:
            shared.adopted_pid = state.pid
            if state.pid is not None and state.pid in shared.spawned:
                shared.violations.append(
                    f"during {self.step}: reports its own child {state.pid} as adopted"
                )
        if state.status is Status.INITIAL:
            shared.adopted_pid = None
        if state.status is Status.STOPPING:
            shared.stopping.set()

    @property
    def svc(self) -> LlamaService:
        assert self.service is not None
        return self.service

    # ---- helpers ---------------------------------------------------------------------------

    def _ours(self) -> set[int]:
        foreign = {f.pid for f in self.foreign}
        return children_on_port(self.port) - foreign

    def _live_foreign(self) -> list[Foreign]:
        return [f for f in self.foreign if not f.killed_by_test and f.proc.poll() is None]

    def _describe(self) -> str:
        state = self.svc.get_state()
        recent = " -> ".join(self.shared.history[-10:])
        return (
            f"state {state.status} pid={state.pid} adopted={state.adopted} "
            f"last_error={state.last_error!r}; children of ours alive: {sorted(self._ours())}; "
            f"foreign alive: {[f.pid for f in self._live_foreign()]}; recent states: {recent}"
        )

    def _call(
        self,
        step: str,
        make: Callable[[], Awaitable[T]],
        limit_s: float,
    ) -> T | None:
        """Run one call on the loop within `limit_s`."""
        self.step = step

        async def bounded() -> tuple[bool, T | None]:
            timer = asyncio.timeout(limit_s)
            try:
                async with timer:
                    return False, await make()
            except TimeoutError:
                if timer.expired():
                    return True, None
                raise

        try:
            hung, result = self.loop.run_until_complete(bounded())
        except Exception as exc:
            raise AssertionError(f"{step} raised {exc!r}; {self._describe()}") from exc
        if hung:
            raise AssertionError(f"{step} did not return within {limit_s:g} s; {self._describe()}")
        return result

    def _check_returned(self, step: str, state: ServiceState | None) -> None:
        if state is not None and state.status not in SETTLED:
            raise AssertionError(
                f"{step} returned in {state.status}, not ready, error or initial; "
                f"{self._describe()}"
            )

    # ---- control rules ---------------------------------------------------------------------

    @rule(wait=st.booleans())
    @deferred
    def start(self, wait: bool) -> None:
        step = f"start(wait={wait})"
        state = self._call(step, lambda: self.svc.start(wait=wait), START_LIMIT_S)
        self._after_start(step, state, wait)

    @rule(wait=st.booleans())
    @deferred
    def restart(self, wait: bool) -> None:
        step = f"restart(wait={wait})"
        state = self._call(step, lambda: self.svc.restart(wait=wait), LIMIT_S["restart"])
        self._after_start(step, state, wait)

    def _after_start(self, step: str, state: ServiceState | None, wait: bool) -> None:
        self.started_once = True
        if state is None:
            return
        if wait:
            self._check_returned(step, state)
        self.desired = "running"

    # Stops, waits and foreign programs coming and going before any start are legal but teach
    # little (build() already puts a foreign program on the port in some examples): every
    # example starts first, which keeps the steps on the paths where things happen.
    @precondition(lambda self: self.started_once)
    @rule()
    @deferred
    def stop(self) -> None:
        step = "stop()"
        state = self._call(step, self.svc.stop, STOP_LIMIT_S)
        if state is None:
            return
        self.desired = "stopped"
        ours = self._ours()
        if state.status is not Status.INITIAL or state.pid is not None or ours:
            raise AssertionError(
                f"{step} returned {state and state.status} with pid {state and state.pid}; "
                f"children of ours still alive: {sorted(ours)}; {self._describe()}"
            )

    @precondition(lambda self: self.started_once)
    @rule(when=st.sampled_from(["after one turn", "once stopping", "after 0.25 s"]))
    @deferred
    def cancelled_stop(self, when: str) -> None:
        """A stop whose caller is cancelled (an HTTP request cut off) at a chosen point: after
        its first step, as soon as the state is `stopping`, or 0.25 s in (within the SIGTERM
        timeout of a server that ignores SIGTERM; after the end of a stop of one that does
        not)."""

        async def cancel_it() -> None:
            self.shared.stopping.clear()
            task = asyncio.create_task(self.svc.stop())
            if when == "once stopping":
                seen = asyncio.ensure_future(self.shared.stopping.wait())
                await asyncio.wait({task, seen}, return_when=asyncio.FIRST_COMPLETED)
                seen.cancel()
            elif when == "after 0.25 s":
                await asyncio.wait({task}, timeout=0.25)
            else:
                await asyncio.sleep(0)
            task.cancel()
            await asyncio.wait({task})
            if not task.cancelled():
                task.result()  # a stop that failed, rather than finished first, is reported

        self._call(f"stop() cancelled {when}", cancel_it, STOP_LIMIT_S)
        self.desired = "unknown"

    @rule(
        first=st.sampled_from(["start", "stop", "restart"]),
        second=st.sampled_from(["start", "stop", "restart"]),
    )
    @deferred
    def overlapping(self, first: str, second: str) -> None:
        """Two control calls at once: the second waits its turn."""
        step = f"{first}() overlapped by {second}()"

        def call(name: str) -> Coroutine[Any, Any, ServiceState]:
            method: Callable[..., Coroutine[Any, Any, ServiceState]] = getattr(self.svc, name)
            return method()

        async def both() -> tuple[ServiceState, ServiceState | None]:
            one = asyncio.create_task(call(first))
            two = asyncio.create_task(call(second))
            await asyncio.wait({one, two})
            return one.result(), two.result()

        result = self._call(step, both, LIMIT_S[first] + LIMIT_S[second])
        assert result is not None
        first_state, second_state = result
        for name, state in ((first, first_state), (second, second_state)):
            if name != "stop":
                self._check_returned(step, state)
        last = second if second_state is not None else first
        self.desired = "stopped" if last == "stop" else "running"
        self.started_once = self.started_once or any(n != "stop" for n in (first, second))

    @precondition(lambda self: self.started_once)
    @rule(timeout=st.sampled_from([0.05, 0.3, None]))
    @deferred
    def wait_settled(self, timeout: float | None) -> None:
        step = f"wait_settled(timeout={timeout})"
        began = time.monotonic()
        limit = START_LIMIT_S if timeout is None else timeout + 2.0
        state = self._call(step, lambda: self.svc.wait_settled(timeout), limit)
        took = time.monotonic() - began
        if timeout is None or took < timeout * 0.9:  # it did not merely time out
            self._check_returned(step, state)

    @precondition(lambda self: self.started_once)
    @rule(seconds=st.sampled_from([0.3, 1.5]))
    @deferred
    def time_passes(self, seconds: float) -> None:
        """The supervisor runs on its own for a while: liveness probes (a hang is noticed in
        about 0.8 s), backoff waits and retries. The checks after a step stop as soon as the
        state agrees with the processes, so without this a hang would never be noticed."""
        self._call(f"{seconds} s pass", lambda: asyncio.sleep(seconds), seconds + 1.0)

    # ---- fault rules -----------------------------------------------------------------------
    #
    # Preconditions read only the test's own bookkeeping, never the processes or the service's
    # state: those depend on timing, and Hypothesis must draw the same rules when it replays an
    # example (to shrink it) or it reports the data generation itself as flaky. A fault whose
    # target is missing at that moment (no child of ours alive, the port busy) does nothing.

    def _our_live_pid(self) -> int | None:
        state = self.svc.get_state()
        if state.pid is None or state.adopted or state.pid not in self._ours():
            return None
        return state.pid

    def _foreign_present(self) -> Foreign | None:
        """The foreign program the test put on the port and has not removed, if any."""
        return next((f for f in self.foreign if not f.killed_by_test), None)

    @precondition(lambda self: self.started_once)
    @rule()
    @deferred
    def kill_child(self) -> None:
        pid = self._our_live_pid()
        self.step = f"kill -9 {pid}"
        if pid is not None:
            send(pid, signal.SIGKILL)

    @precondition(lambda self: self.started_once)
    @rule()
    @deferred
    def sigstop_child(self) -> None:
        pid = self._our_live_pid()
        self.step = f"kill -STOP {pid} (ours)"
        if pid is not None:
            send(pid, signal.SIGSTOP)
            self.sigstopped.add(pid)

    @precondition(lambda self: self.started_once and self.foreign_turn)
    @rule()
    @deferred
    def sigstop_foreign(self) -> None:
        foreign = self._foreign_present()
        self.step = f"kill -STOP {foreign and foreign.pid} (foreign)"
        if foreign is not None:
            send(foreign.pid, signal.SIGSTOP)
            self.sigstopped.add(foreign.pid)

    @precondition(lambda self: self.started_once)
    @rule()
    @deferred
    def sigcont(self) -> None:
        self.step = f"kill -CONT {sorted(self.sigstopped)}"
        for pid in self.sigstopped:
            send(pid, signal.SIGCONT)
        self.sigstopped.clear()

    def _port_free(self) -> socket.socket | None:
        """A socket bound to the port, or None while a child of ours is alive (it may bind at
        any moment: no race decides who gets the port) or something else holds it."""
        if self._ours():
            return None
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", self.port))
        except OSError:
            sock.close()
            return None
        return sock

    @precondition(lambda self: self.started_once and not self.foreign_turn)
    @rule()
    @deferred
    def foreign_listener_takes_port(self) -> None:
        """A program that accepts connections on the port and never answers: not llama-like."""
        self.step = f"a foreign listener takes port {self.port}"
        self.foreign_turn = True
        sock = self._port_free()
        if sock is None:
            return
        with sock:
            sock.listen(16)
            proc = subprocess.Popen(
                ["sleep", "600"],
                pass_fds=[sock.fileno()],
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.foreign.append(Foreign(proc, "listener"))

    @precondition(lambda self: self.started_once and not self.foreign_turn)
    @rule(loads_forever=st.booleans())
    @deferred
    def foreign_llama_takes_port(self, loads_forever: bool) -> None:
        """A llama-server started outside llamaherd: ready at once, or loading forever."""
        kind = "loading" if loads_forever else "llama"
        self.step = f"a foreign {kind} server takes port {self.port}"
        self.foreign_turn = True
        sock = self._port_free()
        if sock is None:
            return
        sock.close()
        argv = [str(self.binary), "-m", str(self.model), "--port", str(self.port)]
        argv += ["--fake-503-forever"] if loads_forever else ["--fake-load-s", "0"]
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.foreign.append(Foreign(proc, kind))
        self._wait_listening(proc)

    def _wait_listening(self, proc: subprocess.Popen[bytes]) -> None:
        # The loop does not run here, so nothing of llamaherd's can take the port meanwhile.
        deadline = time.monotonic() + FOREIGN_START_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"the foreign server exited with {proc.returncode}")
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(POLL_S)
        raise AssertionError(f"the foreign server did not listen within {FOREIGN_START_S} s")

    @precondition(lambda self: self.started_once and self.foreign_turn)
    @rule()
    @deferred
    def foreign_leaves(self) -> None:
        self.foreign_turn = False
        foreign = self._foreign_present()
        if foreign is None:
            self.step = "no foreign program to kill"
            return
        self.step = f"the foreign {foreign.kind} (pid {foreign.pid}) is killed"
        foreign.killed_by_test = True
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(foreign.pid, signal.SIGKILL)
        foreign.proc.wait(timeout=10)
        self.sigstopped.discard(foreign.pid)

    # ---- what must always hold ---------------------------------------------------------------

    def _check_always(self) -> None:
        """What must hold at every instant, not only once things have settled."""
        if self.shared.violations:
            raise AssertionError("; ".join(self.shared.violations))
        for foreign in self.foreign:
            if not foreign.killed_by_test and foreign.proc.poll() is not None:
                raise AssertionError(
                    f"after {self.step}: the foreign {foreign.kind} (pid {foreign.pid}) was "
                    f"ended (exit {foreign.proc.returncode}); llamaherd must never kill a "
                    "program it did not start"
                )
        ours = self._ours()
        if len(ours) > 1:
            raise AssertionError(
                f"after {self.step}: {len(ours)} children of ours alive at once {sorted(ours)}; "
                f"{self._describe()}"
            )
        state = self.svc.get_state()
        if self.desired == "stopped" and (state.status is not Status.INITIAL or ours):
            raise AssertionError(
                f"after {self.step}: stopped, yet the state is {state.status} with children "
                f"{sorted(ours)}; {self._describe()}"
            )

    def _disagreement(self) -> str | None:
        """How the state and the processes disagree now, or None."""
        state = self.svc.get_state()
        ours = self._ours()
        if state.status in (Status.CHECKING, Status.STOPPING):
            return f"still {state.status}"
        if self.desired == "running" and state.status is Status.INITIAL:
            return "started, but still initial"
        if state.status in AT_REST_WITHOUT_CHILD:
            return (
                f"{state.status}, yet children of ours are alive: {sorted(ours)}" if ours else None
            )
        if state.adopted:  # ready, adopted
            if ours:
                return f"adopted, yet children of ours are alive: {sorted(ours)}"
            if state.pid is not None and not pid_alive(state.pid):
                return f"adopted pid {state.pid} is gone"
            return None
        if state.pid is None or state.pid not in ours:
            return f"{state.status} with pid {state.pid}, but our live children are {sorted(ours)}"
        return None

    async def _settle(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SETTLE_LIMIT_S
        while True:
            self._check_always()
            problem = self._disagreement()
            if problem is None:
                return
            if loop.time() >= deadline:
                raise AssertionError(
                    f"after {self.step}: {problem}, for {SETTLE_LIMIT_S:g} s; {self._describe()}"
                )
            await asyncio.sleep(POLL_S)

    @invariant()
    @deferred
    def state_agrees_with_processes(self) -> None:
        self.loop.run_until_complete(self._settle())

    # ---- clean-up ----------------------------------------------------------------------------

    def teardown(self) -> None:
        """Stop, then end by pid whatever is left, reap it, and close the loop; then raise the
        failure a step recorded (see deferred()).

        The clean-up itself never raises, and nothing is raised while another exception is on
        its way out (Hypothesis calls teardown() from a `finally`): it would hide that one."""
        try:
            self._clean_up()
        finally:
            self._close_loop()
        if self.failure is not None and sys.exc_info()[1] is None:
            raise self.failure

    def _clean_up(self) -> None:
        if self.service is not None:
            self.loop.run_until_complete(self._quiet_stop(self.service))
        leftovers = self._ours() | {f.pid for f in self.foreign if f.proc.poll() is None}
        for pid in leftovers | self.sigstopped:
            send(pid, signal.SIGCONT)
        for pid in leftovers:
            send(pid, signal.SIGKILL)
        for foreign in self.foreign:
            with contextlib.suppress(subprocess.TimeoutExpired):
                foreign.proc.wait(timeout=10)
        self.loop.run_until_complete(self._reap(leftovers))

    async def _quiet_stop(self, service: LlamaService) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(STOP_LIMIT_S):
                await service.stop()
        # A supervisor whose stop failed may leave its HTTP client open: close it here, so the
        # failure is reported once rather than as a stray ResourceWarning in a later test.
        probe = getattr(service, "_probe", None)
        if probe is not None:
            with contextlib.suppress(Exception):
                await probe.aclose()

    async def _reap(self, pids: set[int]) -> None:
        """Wait until the killed children are reaped and their transports are closed (their
        output pumps end); a supervisor task that a bug left running is cancelled after."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 2.0
        me = asyncio.current_task()
        while loop.time() < deadline:
            if not any(pid_exists(pid) for pid in pids) and all(
                task.done() for task in asyncio.all_tasks() if task is not me
            ):
                break
            await asyncio.sleep(POLL_S)

    def _close_loop(self) -> None:
        loop = self.loop
        try:
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            if tasks:
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()


def _examples() -> int:
    return int(os.environ.get("LLAMAHERD_STATEFUL_EXAMPLES", "30"))


@pytest.mark.timeout(900)
def test_service_state_machine(fake_binary: Path, model_file: Path) -> None:
    class Machine(ServiceMachine):
        binary = fake_binary
        model = model_file

    run_state_machine_as_test(
        Machine,
        settings=settings(
            max_examples=_examples(),
            stateful_step_count=10,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=[
                HealthCheck.too_slow,
                HealthCheck.filter_too_much,
                HealthCheck.data_too_large,
            ],
        ),
    )


def test_children_on_port_sees_only_our_children_on_that_port(
    fake_binary: Path, model_file: Path
) -> None:
    """The helper the invariants rest on: it finds a child by its --port, and nothing else."""
    port = free_port()
    proc = subprocess.Popen(
        [str(fake_binary), "-m", str(model_file), "--port", str(port), "--fake-load-s", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        assert children_on_port(port) == {proc.pid}
        assert proc.pid not in children_on_port(free_port())
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert children_on_port(port) == set()
