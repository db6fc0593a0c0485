"""The states of one supervised llama-server, the moves allowed between them, and the snapshot
that every observer (REST, Socket.IO, logs) reads.

    initial ─► checking ─► starting ─► ready ─► stopping ─► initial
                  │            │         │
                  │            ▼         ▼
                  │         crashed ◄────┘   (exit, hang, failed start)
                  │          │   ▲
                  │          ▼   │ retry n after backoff
                  │       starting
                  ▼
                error  (port held by another program, or max retries spent)

`error` is left only by a manual start or restart (error ─► checking) or a stop.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime

from llamaherd.catalog.models import ModelInfo
from llamaherd.supervisor.policy import SupervisorPolicy

_DEFAULTS = SupervisorPolicy()


class Status(enum.StrEnum):
    INITIAL = "initial"
    CHECKING = "checking"
    STARTING = "starting"
    READY = "ready"
    CRASHED = "crashed"
    STOPPING = "stopping"
    ERROR = "error"


ALLOWED_TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.INITIAL: frozenset({Status.CHECKING}),
    Status.CHECKING: frozenset({Status.STARTING, Status.READY, Status.ERROR, Status.STOPPING}),
    Status.STARTING: frozenset({Status.READY, Status.CRASHED, Status.ERROR, Status.STOPPING}),
    # READY -> READY carries changes that keep the status (models refreshed, retries reset).
    Status.READY: frozenset({Status.READY, Status.CRASHED, Status.ERROR, Status.STOPPING}),
    Status.CRASHED: frozenset({Status.STARTING, Status.ERROR, Status.STOPPING}),
    Status.STOPPING: frozenset({Status.INITIAL}),
    Status.ERROR: frozenset({Status.CHECKING, Status.STOPPING}),
}


class InvalidTransitionError(RuntimeError):
    """A bug: the supervisor tried a move its state machine does not allow."""


def check_transition(old: Status, new: Status) -> None:
    if new not in ALLOWED_TRANSITIONS[old]:
        raise InvalidTransitionError(f"llama-server state cannot go from {old} to {new}")


@dataclass(frozen=True, slots=True)
class ExitInfo:
    """How a llama-server process ended: the evidence kept next to the restart count."""

    returncode: int | None
    signal_name: str | None
    last_output: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.signal_name is not None:
            how = f"was killed by {self.signal_name}"
        elif self.returncode is not None:
            how = f"exited with code {self.returncode}"
        else:
            how = "ended"
        return how


@dataclass(frozen=True, slots=True)
class ServiceState:
    """An immutable snapshot of one supervised llama-server; `uptime` is computed when taken."""

    status: Status
    models: tuple[ModelInfo, ...] = ()
    last_error: str | None = None
    retries: int = 0
    max_retries: int = _DEFAULTS.max_retries
    started_at: datetime | None = None  # wall-clock time it became ready, for display only
    uptime: float = 0.0  # seconds, from the monotonic clock
    pid: int | None = None
    adopted: bool = False  # found already running: not ours to stop
    next_retry_at: datetime | None = None
    last_exit: ExitInfo | None = None
    restarts: int = field(default=0)  # automatic restarts since llamaherd started
