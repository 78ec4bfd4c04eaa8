"""The report ledger on SQLite: which events each tenant acknowledged, and when (`mailproxy.ledger`'s port).

One row per delivered outbox chunk, keyed like the chunk, its acknowledgements in `encode_acks`' form.
A row expires a day after the messages it describes (`expires_at`, as on AWS); `delete_expired` removes
what has, and each `record` prunes the tenant's expired rows, so the table stays bounded on its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from mailproxy.adapters.sqlite.db import Database
from mailproxy.ledger import SLACK_SECONDS, EventKey, decode_acks, encode_acks
from mailproxy.settings import get_settings

if TYPE_CHECKING:
    from mailproxy import ports

SCHEMA = """
CREATE TABLE IF NOT EXISTS report_ledger (
    tenant_id TEXT NOT NULL,
    chunk_key TEXT NOT NULL,
    acks BLOB NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, chunk_key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS report_ledger_expiry ON report_ledger (expires_at)
"""

IN_BATCH = 500  # keys per `IN (...)`: far below SQLite's limit on parameters


class SqliteLedger:
    """Ports' Ledger in the `report_ledger` table."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def acknowledged_in(self, tenant_id: str, chunk_keys: list[str]) -> dict[str, dict[EventKey, int]]:
        """The events already acknowledged under these chunk keys (what a retried batch wrote again)."""
        found: dict[str, dict[EventKey, int]] = {}
        unique = sorted(set(chunk_keys))
        for start in range(0, len(unique), IN_BATCH):
            part = unique[start : start + IN_BATCH]
            rows = self._db.read(
                "SELECT chunk_key, acks FROM report_ledger WHERE tenant_id = ? AND chunk_key IN "
                f"({','.join('?' * len(part))})",
                (tenant_id, *part),
            )
            found.update({str(row["chunk_key"]): decode_acks(bytes(row["acks"])) for row in rows})
        return found

    def record(self, tenant_id: str, acked: Mapping[str, Mapping[EventKey, int]]) -> None:
        """Store, per chunk key, every event acknowledged under it and when (replacing what was there)."""
        retention = get_settings().report_retention_seconds
        rows = [
            (tenant_id, sk, encode_acks(acks), max(acks.values()) + retention + SLACK_SECONDS)
            for sk, acks in acked.items()
            if acks
        ]
        if not rows:
            return
        acknowledged = max(max(acks.values()) for acks in acked.values() if acks)
        with self._db.transaction() as tx:
            tx.executemany(
                "INSERT OR REPLACE INTO report_ledger (tenant_id, chunk_key, acks, expires_at) VALUES (?, ?, ?, ?)",
                rows,
            )
            # The acknowledgement time is now: what expired before it is gone, as DynamoDB's TTL removes it.
            tx.execute("DELETE FROM report_ledger WHERE tenant_id = ? AND expires_at <= ?", (tenant_id, acknowledged))

    def acknowledged_events(self, tenant_id: str) -> dict[EventKey, int]:
        """Every acknowledged event of the tenant's retained messages, and when (its `reported_ts`)."""
        acks: dict[EventKey, int] = {}
        for row in self._db.read("SELECT acks FROM report_ledger WHERE tenant_id = ?", (tenant_id,)):
            acks.update(decode_acks(bytes(row["acks"])))
        return acks

    def forget(self, tenant_id: str) -> None:
        """Drop a deleted tenant's ledger."""
        with self._db.transaction() as tx:
            tx.execute("DELETE FROM report_ledger WHERE tenant_id = ?", (tenant_id,))

    def delete_expired(self, now: int) -> int:
        """Delete the rows whose `expires_at` has passed (every tenant's); how many."""
        with self._db.transaction() as tx:
            return tx.execute("DELETE FROM report_ledger WHERE expires_at <= ?", (now,)).rowcount


if TYPE_CHECKING:  # mypy checks that the class is the port (open_stores builds Stores from an untyped dict)

    def _implements_port(db: Database) -> ports.Ledger:
        return SqliteLedger(db)
