"""The choice of a replica, as a pure function of the facts a front has."""

from __future__ import annotations

from llamaherd.cluster.routing import LOCAL, Replica, rank


def replica(host: str, phase: str = "ready", **facts: object) -> Replica:
    base: dict[str, object] = {"in_flight": 0, "max_concurrency": 2, "queued": 0}
    return Replica(host=host, model="m", phase=phase, **{**base, **facts})  # type: ignore[arg-type]


def hosts(replicas: list[Replica]) -> list[str]:
    return [r.host for r in rank(replicas)]


def test_a_free_slot_first_the_least_busy_and_the_local_one_on_a_tie() -> None:
    assert hosts([replica("a", in_flight=1), replica("b")]) == ["b", "a"]
    assert hosts([replica("a"), replica(LOCAL)]) == [LOCAL, "a"]
    assert hosts([replica("a"), replica("b")]) == ["a", "b"]  # the order they are listed


def test_a_short_queue_before_a_cold_load_and_a_cold_load_before_a_long_queue() -> None:
    busy = replica("warm", in_flight=2, queued=1)  # 1.5 a slot: shorter than a round
    cold = replica("cold", phase="unloaded")
    assert hosts([cold, busy]) == ["warm", "cold"]
    swamped = replica("warm", in_flight=2, queued=4)  # 3 a slot
    assert hosts([swamped, cold]) == ["cold", "warm"]
    cold_on_busy_host = replica("cold", phase="unloaded", busy_models=1)
    assert hosts([cold_on_busy_host, swamped]) == ["warm", "cold"]


def test_unreachable_hosts_and_stopped_models_are_left_out_and_failed_ones_come_last() -> None:
    replicas = [
        replica("gone", reachable=False),
        replica("stopped", stopped=True),
        replica("failed", phase="failed"),
        replica("cold", phase="unloaded", busy_models=3),
    ]
    assert hosts(replicas) == ["cold", "failed"]


def test_a_draining_replica_has_no_free_slot_and_comes_after_a_cold_idle_host() -> None:
    assert hosts([replica("a", draining=True), replica("b", in_flight=1)]) == ["b", "a"]
    assert hosts([replica("a", draining=True), replica("b", phase="unloaded")]) == ["b", "a"]
