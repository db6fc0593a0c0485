"""Which replica of a model serves a request: a pure function of the facts the front has.

The same model id on several hosts is one model with replicas. In order of preference:

1. a replica that has it loaded with a free slot (the fewest requests in flight per slot);
2. then one loaded (or loading) whose queue is shorter than a round of its slots;
3. then a cold load on a host where it fits without touching a busy model (no model of that
   host serves a request: its own scheduler would evict only idle ones);
4. then the loaded replicas with longer queues, the shortest first (per slot);
5. then a cold load on a busy host (its scheduler queues it; it never evicts a busy model);
6. last, one whose start failed (it refuses during its cool-down: its 503 sends the request
   on to the next).

Replicas on hosts that are unreachable, and models stopped by an operator, are left out. On a
tie the local replica wins (no hop), then the host named first.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

LOCAL = ""  # the host name of this llamaherd's own models


@dataclass(frozen=True, slots=True)
class Replica:
    """One host's copy of a model, as the front sees it."""

    host: str  # a peer's name, or LOCAL
    model: str
    phase: str  # the scheduler's: unloaded, loading, ready, unloading, failed
    in_flight: int
    max_concurrency: int
    queued: int
    draining: bool = False
    stopped: bool = False
    busy_models: int = 0  # models serving requests on that host (for a cold load)
    reachable: bool = True

    @property
    def local(self) -> bool:
        return self.host == LOCAL

    @property
    def free_slot(self) -> bool:
        return self.phase == "ready" and not self.draining and self.in_flight < self.max_concurrency


def rank(replicas: Iterable[Replica]) -> list[Replica]:
    """The replicas worth trying, best first (see the module's docstring)."""
    usable = [r for r in replicas if r.reachable and not r.stopped]
    order = {host: index for index, host in enumerate(dict.fromkeys(r.host for r in usable))}

    def key(r: Replica) -> tuple[float, ...]:
        slots = max(1, r.max_concurrency)
        load = (r.queued + r.in_flight) / slots
        tie = (0 if r.local else 1, order[r.host])
        if r.free_slot:
            return (0, r.in_flight / slots, *tie)
        if r.draining:  # it serves what it has, then unloads: what is sent now waits for that
            return (3, load, *tie)
        warm = r.phase in ("ready", "loading")
        if warm and load < 2:  # less than one round of queued requests per slot
            return (1, load, *tie)
        if r.phase == "unloaded" and r.busy_models == 0:
            return (2, 0, *tie)
        if warm:
            return (3, load, *tie)
        if r.phase == "unloaded":
            return (4, r.busy_models, *tie)
        return (5, 0, *tie)

    return sorted(usable, key=key)
