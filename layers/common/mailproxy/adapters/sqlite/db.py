"""The SQLite database of the embedded runtime: one file (WAL) shared by the API and the worker processes.

Every port module of this adapter declares its tables in `SCHEMA`; `Database` creates them all. A write
that DynamoDB makes conditional is a transaction here: `with db.transaction() as tx:` takes the write lock
first (BEGIN IMMEDIATE), so a read-check-write inside it cannot race another process.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BUSY_TIMEOUT_MS = 30_000


def dumps(value: Any) -> str:
    """A record as stored: compact JSON (bytes are not JSON: callers store them in BLOB columns)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


def loads(text: str | bytes | None) -> Any:
    """A stored JSON value."""
    return None if text is None else json.loads(text)


class Database:
    """Connections to one database file, one per thread; schemas created on first open."""

    def __init__(self, path: str, schemas: tuple[str, ...] = ()) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._local = threading.local()
        self.connection().execute("PRAGMA journal_mode=WAL")
        with self.transaction() as tx:
            for schema in schemas:
                for statement in _statements(schema):
                    tx.execute(statement)

    def connection(self) -> sqlite3.Connection:
        """This thread's connection (autocommit mode: transactions are explicit)."""
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
            connection.row_factory = sqlite3.Row
            connection.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            connection.execute("PRAGMA synchronous=NORMAL")  # WAL: durable at each checkpoint, never corrupt
            connection.execute("PRAGMA foreign_keys=ON")
            self._local.connection = connection
        return connection

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction holding the database's write lock from its start; nested calls join the outer one."""
        connection = self.connection()
        if connection.in_transaction:
            yield connection
            return
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield connection
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

    def read(self, sql: str, parameters: tuple[Any, ...] | dict[str, Any] = ()) -> list[sqlite3.Row]:
        """The rows of one query (a consistent snapshot of committed data)."""
        return self.connection().execute(sql, parameters).fetchall()

    def close(self) -> None:
        """Close this thread's connection."""
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None


def _statements(schema: str) -> list[str]:
    return [part.strip() for part in schema.split(";") if part.strip()]
