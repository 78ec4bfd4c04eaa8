"""The report outbox on SQLite: events owed to each tenant, the reporter's per-tenant lease, its sync state.

The reporter's state (`ports.Outbox`) as tables: `report_outbox` holds the chunks (keyed by the chunk key,
events in `encode_events`' form), `report_sync` one JSON document per tenant (owed_rev, done_rev, the
lease, failures, retry_at, last_sync_ts, next_sync_due, dnd_until...). A write that DynamoDB makes
conditional is one transaction here.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from mailproxy.adapters.sqlite.db import Database, dumps, loads
from mailproxy.domain import Record
from mailproxy.logs import logger
from mailproxy.report_format import LEASE_SECONDS, MAX_EVENTS_PER_CHUNK, Owed, chunk_ts, encode_events

if TYPE_CHECKING:
    from mailproxy import ports

SCHEMA = """
CREATE TABLE IF NOT EXISTS report_outbox (
    tenant_id TEXT NOT NULL,
    sk TEXT NOT NULL,
    events BLOB NOT NULL,
    PRIMARY KEY (tenant_id, sk)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS report_sync (
    tenant_id TEXT PRIMARY KEY,
    doc TEXT NOT NULL
) WITHOUT ROWID
"""


class SqliteOutbox:
    """Ports' Outbox in the `report_outbox` and `report_sync` tables."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def owe(self, tenant_id: str, owed: list[Owed], key: str) -> None:
        """Persist events owed to a tenant (rewriting the same chunks when a batch is retried) and bump the
        revision, so that a holder that read the outbox before sees more is owed."""
        parts = [owed[start : start + MAX_EVENTS_PER_CHUNK] for start in range(0, len(owed), MAX_EVENTS_PER_CHUNK)]
        with self._db.transaction() as tx:
            tx.executemany(
                "INSERT OR REPLACE INTO report_outbox (tenant_id, sk, events) VALUES (?, ?, ?)",
                [(tenant_id, f"{key}#{n:03d}", encode_events(part)) for n, part in enumerate(parts)],
            )
            sync = _sync(tx, tenant_id) or {}
            sync["owed_rev"] = int(sync.get("owed_rev") or 0) + 1
            _put_sync(tx, tenant_id, sync)

    def chunks(self, tenant_id: str) -> list[Record]:
        """The tenant's outbox chunks ({sk, events}), in key order."""
        rows = self._db.read("SELECT sk, events FROM report_outbox WHERE tenant_id = ? ORDER BY sk", (tenant_id,))
        return [{"sk": str(row["sk"]), "events": bytes(row["events"])} for row in rows]

    def oldest_owed_ts(self, tenant_id: str) -> int | None:
        """The time of the tenant's oldest outbox chunk, or None when nothing is owed."""
        rows = self._db.read("SELECT MIN(sk) AS sk FROM report_outbox WHERE tenant_id = ?", (tenant_id,))
        return chunk_ts(str(rows[0]["sk"])) if rows and rows[0]["sk"] is not None else None

    def drop_chunks(self, tenant_id: str, chunks: list[Record]) -> None:
        """Delete these chunks as read, each unless rewritten since (those already gone are ignored)."""
        if not chunks:
            return
        with self._db.transaction() as tx:
            tx.executemany(
                "DELETE FROM report_outbox WHERE tenant_id = ? AND sk = ? AND events = ?",
                [(tenant_id, str(c["sk"]), bytes(c["events"])) for c in chunks],
            )

    def acquire(self, tenant_id: str, lease_id: str, now: int, *, ignore_backoff: bool) -> Record | None:
        """Take the tenant's lease (none held, and no backoff unless ignored); its sync state, or None."""
        with self._db.transaction() as tx:
            sync = _sync(tx, tenant_id) or {}
            lease_until = sync.get("lease_until")
            if lease_until is not None and int(lease_until) >= now:
                return None
            retry_at = sync.get("retry_at")
            if not ignore_backoff and retry_at is not None and int(retry_at) > now:
                return None
            sync.update(lease_until=now + LEASE_SECONDS, lease_id=lease_id)
            _put_sync(tx, tenant_id, sync)
            return sync

    def release(
        self, tenant_id: str, lease_id: str, sets: dict[str, Any], removes: Iterable[str] = ()
    ) -> Record | None:
        """Record a round's outcome and give the lease back; the new sync state, or None if the lease was lost."""
        with self._db.transaction() as tx:
            sync = _sync(tx, tenant_id)
            if sync is None or sync.get("lease_id") != lease_id:
                logger().warning("report lease lost before release", extra={"tenant_id": tenant_id})
                return None
            sync.update(sets)
            for name in ("lease_until", "lease_id", *removes):
                sync.pop(name, None)
            _put_sync(tx, tenant_id, sync)
            return sync

    def drop_leases(self) -> int:
        """Give back every reporter lease (the one-machine runtime at start, holding its data directory: a lease
        still here was its dead predecessor's); how many there were."""
        dropped = 0
        with self._db.transaction() as tx:
            for row in tx.execute("SELECT tenant_id, doc FROM report_sync").fetchall():
                sync = dict(loads(row["doc"]))
                if "lease_id" in sync or "lease_until" in sync:
                    sync.pop("lease_id", None)
                    sync.pop("lease_until", None)
                    _put_sync(tx, str(row["tenant_id"]), sync)
                    dropped += 1
        return dropped

    def sync_states(self) -> dict[str, Record]:
        """Reporter state per tenant: last_sync_ts, next_sync_due, dnd_until, failures..."""
        rows = self._db.read("SELECT tenant_id, doc FROM report_sync")
        return {str(row["tenant_id"]): dict(loads(row["doc"])) for row in rows}

    def forget_tenant(self, tenant_id: str) -> None:
        """Drop the outbox and sync state of a tenant that no longer exists (its ledger is the Ledger port's)."""
        with self._db.transaction() as tx:
            tx.execute("DELETE FROM report_outbox WHERE tenant_id = ?", (tenant_id,))
            tx.execute("DELETE FROM report_sync WHERE tenant_id = ?", (tenant_id,))


def _sync(tx: sqlite3.Connection, tenant_id: str) -> dict[str, Any] | None:
    row = tx.execute("SELECT doc FROM report_sync WHERE tenant_id = ?", (tenant_id,)).fetchone()
    return None if row is None else dict(loads(row["doc"]))


def _put_sync(tx: sqlite3.Connection, tenant_id: str, sync: dict[str, Any]) -> None:
    tx.execute("INSERT OR REPLACE INTO report_sync (tenant_id, doc) VALUES (?, ?)", (tenant_id, dumps(sync)))


if TYPE_CHECKING:  # mypy checks that the class is the port (open_stores builds Stores from an untyped dict)

    def _implements_port(db: Database) -> ports.Outbox:
        return SqliteOutbox(db)
