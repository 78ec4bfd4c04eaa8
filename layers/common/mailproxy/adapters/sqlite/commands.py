"""The command log on SQLite: the audit trail of API commands (`ports.CommandLog`).

One row per logged call, keyed as on AWS (`<ts>#<microseconds>#<uuid>`: newest first is descending key
order), with the same opaque cursor, the same retention (GMP_COMMAND_LOG_RETENTION_DAYS: older entries are
never shown, and each write deletes what has expired) and the same cap on a page's payload bytes.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from mailproxy.adapters.sqlite.db import Database
from mailproxy.command_log import (
    CLOCK_SKEW,
    DAY,
    MAX_COMMAND_PAGE_BYTES,
    decode_cursor,
    encode_cursor,
    expires_at,
    new_entry_key,
)
from mailproxy.settings import get_settings

if TYPE_CHECKING:
    from mailproxy import ports

SCHEMA = """
CREATE TABLE IF NOT EXISTS command_log (
    sk TEXT PRIMARY KEY,
    tenant_id TEXT,
    command_ts INTEGER NOT NULL,
    endpoint TEXT NOT NULL,
    payload TEXT NOT NULL,
    response_status INTEGER NOT NULL,
    source_ip TEXT,
    request_id TEXT,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS command_log_by_tenant ON command_log (tenant_id, sk);
CREATE INDEX IF NOT EXISTS command_log_expiry ON command_log (expires_at)
"""

FIELDS = ("command_ts", "endpoint", "tenant_id", "response_status", "source_ip", "request_id")


class SqliteCommandLog:
    """Ports' CommandLog in the `command_log` table."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def log_command(
        self,
        *,
        ts: int,
        endpoint: str,
        tenant_id: str | None,
        payload: Any,
        response_status: int,
        source_ip: str | None = None,
        request_id: str | None = None,
    ) -> None:
        """Append a mutating call to the log (kept GMP_COMMAND_LOG_RETENTION_DAYS, then deleted)."""
        row = (
            new_entry_key(ts),
            tenant_id,
            ts,
            endpoint,
            json.dumps(payload, ensure_ascii=False),
            response_status,
            source_ip,
            request_id,
            expires_at(ts),
        )
        with self._db.transaction() as tx:
            tx.execute(
                "INSERT INTO command_log (sk, tenant_id, command_ts, endpoint, payload, response_status, "
                "source_ip, request_id, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
            tx.execute("DELETE FROM command_log WHERE expires_at <= ?", (ts,))  # DynamoDB's TTL, played here

    def list_commands(
        self,
        *,
        tenant_id: str | None,
        since_ts: int | None,
        until_ts: int | None,
        limit: int,
        cursor: str | None = None,
        now: int,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Logged commands, newest first, at most `limit`, and the cursor of the next page (None at the end);
        BadRequest for a cursor this service did not issue."""
        oldest = max(since_ts or 0, now - get_settings().command_log_retention_days * DAY)
        newest = min(until_ts if until_ts is not None else now + CLOCK_SKEW, now + CLOCK_SKEW)
        high = f"{newest:012d}#~"
        if cursor is not None:
            high = min(high, decode_cursor(cursor))
        low = f"{oldest:012d}#"
        sql = "SELECT * FROM command_log WHERE sk >= ? AND sk < ?"
        parameters: tuple[Any, ...] = (low, high)
        if tenant_id is not None:
            sql += " AND tenant_id = ?"
            parameters += (tenant_id,)
        sql += " ORDER BY sk DESC LIMIT ?"
        # Up to `limit` + 1 rows, or up to the first one past the page's size cap (then it is the next page's first).
        found: list[Any] = []
        read_bytes = 0
        rows = self._db.connection().execute(sql, (*parameters, max(limit, 0) + 1))
        try:
            for row in rows:
                found.append(row)
                read_bytes += len(row["payload"])
                if read_bytes > MAX_COMMAND_PAGE_BYTES and len(found) > 1:
                    break
        finally:
            rows.close()  # a statement left open would hold its read snapshot (and WAL checkpoints) back
        page: list[Any] = []
        size = 0
        for row in found[: max(limit, 0)]:
            size += len(row["payload"])
            if page and size > MAX_COMMAND_PAGE_BYTES:
                break  # the rest comes with the cursor, as on AWS (whose replies hold 6 MB)
            page.append(row)
        next_cursor = encode_cursor(str(page[-1]["sk"])) if page and len(found) > len(page) else None
        commands = [{**{k: row[k] for k in FIELDS}, "payload": json.loads(row["payload"])} for row in page]
        return commands, next_cursor

    def delete_expired(self, now: int) -> int:
        """Delete the entries whose retention has passed; how many."""
        with self._db.transaction() as tx:
            return tx.execute("DELETE FROM command_log WHERE expires_at <= ?", (now,)).rowcount


if TYPE_CHECKING:  # mypy checks that the class is the port (open_stores builds Stores from an untyped dict)

    def _implements_port(db: Database) -> ports.CommandLog:
        return SqliteCommandLog(db)
