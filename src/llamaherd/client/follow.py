"""`llamaherd logs --follow`: the tail of a model's log, then its new lines as they come, with no
line shown twice where the tail and the stream overlap."""

from __future__ import annotations

import time
from collections.abc import Iterator

from llamaherd.api.event_names import LOG_EVENT
from llamaherd.client.remote import Event, RemoteClient
from llamaherd.errors import (
    ServiceUnreachableError,
)

# Lines written just before the tail was fetched may arrive again in the first log event.
OVERLAP_WINDOW_S = 1.0


# Compared against that batch: more lines than a short -n gives, so a match is real evidence.
OVERLAP_CONTEXT_LINES = 200


def drop_overlap(tail: list[str], lines: list[str]) -> list[str]:
    """`lines` without its first lines when they were already in `tail`.

    The follow subscribes before it fetches the tail, so no line is lost; lines written just
    before the fetch (the server sends lines in batches) then come twice: as the end of the tail
    and as the start of the first batch. That start ends with the tail's last lines, so the
    shortest such start is dropped. Shortest: on repeated lines, a duplicate beats a lost line.
    """
    for count in range(1, len(lines) + 1):
        compared = min(count, len(tail))
        if compared and lines[count - compared : count] == tail[-compared:]:
            return lines[count:]
    return lines


def follow_logs(
    client: RemoteClient,
    tail_lines: int,
    *,
    max_events: int | None = None,
    model: str | None = None,
) -> Iterator[list[str]]:
    """The last `tail_lines` lines, then each new batch of lines as llama-server writes them:
    the primary model's, or `model`'s (an id or an alias).

    Ends after `max_events` batches of new lines when given (tests use it), else only when
    the server ends the stream, which raises ServiceUnreachableError.
    """
    if model is not None:
        yield from _follow_model(client, model, tail_lines, max_events)
        return
    with client.events() as events:
        # The stream starts with a status event: from then on, no new line can be missed.
        next(events, None)
        context = client.logs(max(tail_lines, OVERLAP_CONTEXT_LINES))
        yield context[-tail_lines:]
        fetched_at = time.monotonic()
        count = 0
        for index, batch in enumerate(_log_batches(events)):
            early = index == 0 and time.monotonic() - fetched_at < OVERLAP_WINDOW_S
            new = drop_overlap(context, batch) if early else batch
            if not new:
                continue
            yield new
            count += 1
            if max_events is not None and count >= max_events:
                return
    raise ServiceUnreachableError(
        f"llamaherd at {client.base_url} ended the event stream; is it shutting down?"
    )


def _follow_model(
    client: RemoteClient, model: str, tail_lines: int, max_events: int | None
) -> Iterator[list[str]]:
    # The server sends the tail and then every batch after it, none twice: nothing to drop.
    with client.followed_logs(model, tail_lines) as events:
        for count, batch in enumerate(_log_batches(events)):
            yield batch
            if max_events is not None and count >= max_events:
                return
    raise ServiceUnreachableError(
        f"llamaherd at {client.base_url} ended the log stream of {model}; is it shutting down, "
        "or did a reload remove the model?"
    )


def _log_batches(events: Iterator[Event]) -> Iterator[list[str]]:
    for name, payload in events:
        data = payload.get("data")
        lines = data.get("lines") if isinstance(data, dict) else None
        if name == LOG_EVENT and isinstance(lines, list):
            yield [str(line) for line in lines]
