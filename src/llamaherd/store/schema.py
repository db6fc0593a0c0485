"""The history file's tables, and how a file of any older version is brought up to date.

The schema's version is SQLite's `PRAGMA user_version`: 0 for a new file, then the number of
migrations applied. To change the schema, append a function to `MIGRATIONS` (never edit one
that has shipped): a file at version 1 runs only the new one, in its own transaction, so a
migration that fails leaves the file as it was. A file written by a newer llamaherd (a version
above `len(MIGRATIONS)`) is refused rather than written in a shape we do not know.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

Migration = Callable[[sqlite3.Connection], None]


def _v1(db: sqlite3.Connection) -> None:
    """Transitions, starts, per-minute figures and the last requests."""
    statements = [
        """CREATE TABLE transitions (
            id INTEGER PRIMARY KEY,
            model TEXT NOT NULL,
            at REAL NOT NULL,              -- unix seconds
            from_status TEXT NOT NULL,
            to_status TEXT NOT NULL,
            reason TEXT,                   -- the state's last_error
            exit_code INTEGER,
            signal TEXT)""",
        "CREATE INDEX transitions_at ON transitions (at)",
        """CREATE TABLE starts (
            id INTEGER PRIMARY KEY,
            model TEXT NOT NULL,
            at REAL NOT NULL,
            load_time_s REAL,
            peak_rss_bytes INTEGER,
            ok INTEGER NOT NULL)""",
        "CREATE INDEX starts_at ON starts (at)",
        """CREATE TABLE minutes (
            model TEXT NOT NULL,
            minute INTEGER NOT NULL,       -- unix seconds, a multiple of 60
            requests INTEGER NOT NULL,
            errors INTEGER NOT NULL,
            by_status TEXT NOT NULL,       -- JSON: {"200": n, ...}
            prompt_tokens INTEGER NOT NULL,
            completion_tokens INTEGER NOT NULL,
            tokens_per_second REAL,        -- mean of the requests' generation speed
            tps_samples INTEGER NOT NULL,  -- how many requests that mean is over
            latency_p50_ms REAL,
            latency_p95_ms REAL,
            ttft_p50_ms REAL,
            ttft_p95_ms REAL,
            rss_bytes INTEGER,             -- the largest sampled in the minute
            PRIMARY KEY (model, minute)) WITHOUT ROWID""",
        "CREATE INDEX minutes_minute ON minutes (minute)",
        """CREATE TABLE requests (
            id INTEGER PRIMARY KEY,
            model TEXT NOT NULL,
            endpoint TEXT NOT NULL,
            status INTEGER,
            at REAL NOT NULL,              -- when it arrived
            latency_s REAL NOT NULL,
            queue_wait_s REAL NOT NULL,
            ttft_s REAL,
            stream INTEGER NOT NULL,
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            prompt_tps REAL,
            generation_tps REAL,
            error TEXT,
            client_disconnected INTEGER NOT NULL)""",
        "CREATE INDEX requests_at ON requests (at)",
    ]
    for statement in statements:
        db.execute(statement)


MIGRATIONS: list[Migration] = [_v1]
SCHEMA_VERSION = len(MIGRATIONS)


def schema_version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def migrate(db: sqlite3.Connection) -> None:
    """Apply the migrations `db` lacks; `db` must be in autocommit mode (isolation_level None)."""
    version = schema_version(db)
    if version > SCHEMA_VERSION:
        raise sqlite3.DatabaseError(
            f"its schema version {version} is newer than this llamaherd knows "
            f"({SCHEMA_VERSION}); use a newer llamaherd or another state_dir"
        )
    for number, migration in enumerate(MIGRATIONS[version:], start=version + 1):
        db.execute("BEGIN IMMEDIATE")
        try:
            migration(db)
            db.execute(f"PRAGMA user_version = {number}")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
