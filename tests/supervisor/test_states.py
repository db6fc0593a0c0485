from __future__ import annotations

import itertools

import pytest

from llamaherd.supervisor.states import (
    ALLOWED_TRANSITIONS,
    InvalidTransitionError,
    Status,
    check_transition,
)


def test_every_status_has_its_moves() -> None:
    assert set(ALLOWED_TRANSITIONS) == set(Status)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (Status.INITIAL, Status.READY),  # never ready without checking
        (Status.ERROR, Status.STARTING),  # error is left only by a manual start
        (Status.STOPPING, Status.READY),
        (Status.CRASHED, Status.READY),  # a crash must go through a new start
    ],
)
def test_forbidden_moves_raise(old: Status, new: Status) -> None:
    with pytest.raises(InvalidTransitionError, match=f"from {old} to {new}"):
        check_transition(old, new)


def test_the_seed_lifecycle_is_allowed() -> None:
    path = [
        Status.INITIAL,
        Status.CHECKING,
        Status.STARTING,
        Status.READY,
        Status.CRASHED,
        Status.STARTING,
        Status.READY,
        Status.STOPPING,
        Status.INITIAL,
    ]
    for old, new in itertools.pairwise(path):
        check_transition(old, new)
