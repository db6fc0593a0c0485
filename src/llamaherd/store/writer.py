"""The history file's one read-write connection.

Used only from the store's own thread (see `HistoryStore`), never from the event loop: every
method blocks on the disk. A batch is written in one transaction, so a failed write (a full
disk, a read-only file) leaves the file as it was and the same batch can be tried again.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llamaherd.gateway.records import RequestRecord
from llamaherd.store.minutes import merge_minutes
from llamaherd.store.rows import MinuteRow, Row, StartRow, TransitionRow
from llamaherd.store.schema import migrate

BUSY_TIMEOUT_MS = 5000

_INSERT_TRANSITION = """INSERT INTO transitions
    (model, at, from_status, to_status, reason, exit_code, signal) VALUES (?, ?, ?, ?, ?, ?, ?)"""
_INSERT_START = """INSERT INTO starts
    (model, at, load_time_s, peak_rss_bytes, ok) VALUES (?, ?, ?, ?, ?)"""
_INSERT_REQUEST = """INSERT INTO requests
    (model, endpoint, status, at, latency_s, queue_wait_s, ttft_s, stream, prompt_tokens,
     completion_tokens, prompt_tps, generation_tps, error, client_disconnected)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""
_UPSERT_MINUTE = """INSERT OR REPLACE INTO minutes
    (model, minute, requests, errors, by_status, prompt_tokens, completion_tokens,
     tokens_per_second, tps_samples, latency_p50_ms, latency_p95_ms, ttft_p50_ms, ttft_p95_ms,
     rss_bytes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""
MINUTE_COLUMNS = """model, minute, requests, errors, by_status, prompt_tokens,
    completion_tokens, tokens_per_second, tps_samples, latency_p50_ms, latency_p95_ms,
    ttft_p50_ms, ttft_p95_ms, rss_bytes"""
# Everything but the newest `requests_kept` (OFFSET 0 names the newest: keeping 0 keeps none).
_TRIM_REQUESTS = """DELETE FROM requests WHERE id <=
    (SELECT id FROM requests ORDER BY id DESC LIMIT 1 OFFSET ?)"""
_PRUNE = [
    "DELETE FROM transitions WHERE at < ?",
    "DELETE FROM starts WHERE at < ?",
    "DELETE FROM minutes WHERE minute < ?",
    "DELETE FROM requests WHERE at < ?",
]


def minute_from_db(values: Sequence[Any]) -> MinuteRow:
    """A `minutes` row read in `MINUTE_COLUMNS` order."""
    (model, minute, requests, errors, by_status, prompt, completion, speed, samples) = values[:9]
    p50, p95, ttft50, ttft95, rss = values[9:]
    return MinuteRow(
        model=model,
        minute=minute,
        requests=requests,
        errors=errors,
        by_status={str(k): int(v) for k, v in json.loads(by_status).items()},
        prompt_tokens=prompt,
        completion_tokens=completion,
        tokens_per_second=speed,
        tps_samples=samples,
        latency_p50_ms=p50,
        latency_p95_ms=p95,
        ttft_p50_ms=ttft50,
        ttft_p95_ms=ttft95,
        rss_bytes=rss,
    )


class HistoryWriter:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None

    def _open(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None)
            try:
                db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                db.execute("PRAGMA journal_mode = WAL")
                # WAL with NORMAL: a power cut may lose the last batches, never the file.
                db.execute("PRAGMA synchronous = NORMAL")
                migrate(db)
            except BaseException:
                db.close()
                raise
            self._db = db
        return self._db

    def write(self, rows: Sequence[Row], *, requests_kept: int, prune_before: float | None) -> None:
        """Write `rows` in one transaction, keep the newest `requests_kept` requests, and
        delete what is older than `prune_before` (unix seconds) if given."""
        db = self._open()
        db.execute("BEGIN IMMEDIATE")
        try:
            self._insert(db, rows)
            db.execute(_TRIM_REQUESTS, (requests_kept,))
            if prune_before is not None:
                for statement in _PRUNE:
                    db.execute(statement, (prune_before,))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def _insert(self, db: sqlite3.Connection, rows: Sequence[Row]) -> None:
        for row in rows:
            if isinstance(row, RequestRecord):
                db.execute(_INSERT_REQUEST, _request_values(row))
            elif isinstance(row, TransitionRow):
                db.execute(
                    _INSERT_TRANSITION,
                    (
                        row.model,
                        row.at,
                        row.from_status,
                        row.to_status,
                        row.reason,
                        row.exit_code,
                        row.signal,
                    ),
                )
            elif isinstance(row, StartRow):
                db.execute(
                    _INSERT_START,
                    (row.model, row.at, row.load_time_s, row.peak_rss_bytes, int(row.ok)),
                )
            else:
                self._upsert_minute(db, row)

    def _upsert_minute(self, db: sqlite3.Connection, row: MinuteRow) -> None:
        found = db.execute(
            f"SELECT {MINUTE_COLUMNS} FROM minutes WHERE model = ? AND minute = ?",
            (row.model, row.minute),
        ).fetchone()
        if found is not None:
            row = merge_minutes(minute_from_db(found), row)
        db.execute(
            _UPSERT_MINUTE,
            (
                row.model,
                row.minute,
                row.requests,
                row.errors,
                json.dumps(dict(row.by_status), sort_keys=True),
                row.prompt_tokens,
                row.completion_tokens,
                row.tokens_per_second,
                row.tps_samples,
                row.latency_p50_ms,
                row.latency_p95_ms,
                row.ttft_p50_ms,
                row.ttft_p95_ms,
                row.rss_bytes,
            ),
        )

    def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            db.close()


def _request_values(record: RequestRecord) -> tuple[object, ...]:
    return (
        record.model,
        record.endpoint,
        record.status,
        record.started_at,
        record.latency_s,
        record.queue_wait_s,
        record.ttft_s,
        int(record.stream),
        record.prompt_tokens,
        record.completion_tokens,
        record.prompt_tps,
        record.generation_tps,
        record.error,
        int(record.client_disconnected),
    )
