"""Reading the history back: a read-only connection, and the pure assembly of what it read
with what still waits in memory into the `GET /api/history` payload.

What waits in memory (the batch not yet written, every model's open minute) is part of every
answer, so a query shows the latest second, and a store that cannot write still shows what it
keeps. Each list is filtered, put in time order, and cut to the newest `limit`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from llamaherd.gateway.records import RequestRecord
from llamaherd.store.minutes import merge_minutes
from llamaherd.store.rows import (
    MinuteRow,
    Row,
    StartRow,
    TransitionRow,
    request_payload,
)
from llamaherd.store.writer import BUSY_TIMEOUT_MS, MINUTE_COLUMNS, minute_from_db

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    model: str | None = None
    since: float | None = None  # unix seconds, inclusive
    until: float | None = None  # unix seconds, inclusive
    limit: int = 1000  # per list, the newest kept

    def matches(self, model: str, at: float) -> bool:
        return (
            (self.model is None or model == self.model)
            and (self.since is None or at >= self.since)
            and (self.until is None or at <= self.until)
        )

    def where(self, time_column: str) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if self.model is not None:
            clauses.append("model = ?")
            params.append(self.model)
        if self.since is not None:
            clauses.append(f"{time_column} >= ?")
            params.append(self.since)
        if self.until is not None:
            clauses.append(f"{time_column} <= ?")
            params.append(self.until)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


class HistoryReader:
    """A read-only connection to the history file, used only from the store's own thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None

    def read(self, query: HistoryQuery) -> list[Row]:
        """The newest `query.limit` rows of each table that match, oldest first."""
        if self._db is None:
            uri = self.path.resolve().as_uri() + "?mode=ro"
            self._db = sqlite3.connect(uri, uri=True, isolation_level=None)
            self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        try:
            return self._read(self._db, query)
        except BaseException:
            self.close()  # opened again on the next query: the file may come back
            raise

    def _read(self, db: sqlite3.Connection, query: HistoryQuery) -> list[Row]:
        rows: list[Row] = []
        newest = self._newest
        rows += (
            TransitionRow(*values)
            for values in newest(
                db,
                "model, at, from_status, to_status, reason, exit_code, signal",
                "transitions",
                "at",
                query,
            )
        )
        rows += (
            StartRow(model, at, load, peak, bool(ok))
            for model, at, load, peak, ok in newest(
                db, "model, at, load_time_s, peak_rss_bytes, ok", "starts", "at", query
            )
        )
        rows += (
            minute_from_db(values)
            for values in newest(db, MINUTE_COLUMNS, "minutes", "minute", query)
        )
        rows += (
            _request_from_db(values)
            for values in newest(
                db,
                "model, endpoint, status, at, latency_s, queue_wait_s, ttft_s, stream, "
                "prompt_tokens, completion_tokens, prompt_tps, generation_tps, error, "
                "client_disconnected",
                "requests",
                "at",
                query,
            )
        )
        return rows

    @staticmethod
    def _newest(
        db: sqlite3.Connection, columns: str, table: str, time_column: str, query: HistoryQuery
    ) -> list[Any]:
        where, params = query.where(time_column)
        order = f"{time_column} DESC" + (", id DESC" if table != "minutes" else "")
        found = db.execute(
            f"SELECT {columns} FROM {table}{where} ORDER BY {order} LIMIT ?",
            [*params, query.limit],
        ).fetchall()
        return found[::-1]

    def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            db.close()


def _request_from_db(values: Any) -> RequestRecord:
    (model, endpoint, status, at, latency, wait, ttft, stream, prompt, completion) = values[:10]
    prompt_tps, generation_tps, error, disconnected = values[10:]
    return RequestRecord(
        model=model,
        endpoint=endpoint,
        status=status,
        started_at=at,
        latency_s=latency,
        queue_wait_s=wait,
        ttft_s=ttft,
        stream=bool(stream),
        prompt_tokens=prompt,
        completion_tokens=completion,
        prompt_tps=prompt_tps,
        generation_tps=generation_tps,
        error=error,
        client_disconnected=bool(disconnected),
    )


def assemble(
    query: HistoryQuery, stored: Iterable[Row], memory: Iterable[Row], store: dict[str, Any]
) -> dict[str, Any]:
    """The payload of `GET /api/history`: `stored` rows (already filtered) and the `memory`
    rows that match, each list in time order, cut to the newest `query.limit`; two rows of the
    same model and minute merge into one."""
    transitions: list[TransitionRow] = []
    starts: list[StartRow] = []
    requests: list[RequestRecord] = []
    minutes: dict[tuple[str, int], MinuteRow] = {}
    fresh = (row for row in memory if query.matches(row.model, _at(row)))
    for row in (*stored, *fresh):
        if isinstance(row, TransitionRow):
            transitions.append(row)
        elif isinstance(row, StartRow):
            starts.append(row)
        elif isinstance(row, RequestRecord):
            requests.append(row)
        else:
            key = (row.model, row.minute)
            minutes[key] = merge_minutes(minutes[key], row) if key in minutes else row
    return {
        "transitions": [row.payload() for row in _newest(transitions, _at, query.limit)],
        "starts": [row.payload() for row in _newest(starts, _at, query.limit)],
        "minutes": [row.payload() for row in _newest(list(minutes.values()), _at, query.limit)],
        "requests": [request_payload(row) for row in _newest(requests, _at, query.limit)],
        "store": store,
    }


def _at(row: Row) -> float:
    return row.started_at if isinstance(row, RequestRecord) else row.at


def _newest(rows: list[_T], key: Callable[[_T], float], limit: int) -> list[_T]:
    ordered = sorted(rows, key=key)  # stable: equal times keep the order they were written
    return ordered[-limit:] if limit > 0 else []
