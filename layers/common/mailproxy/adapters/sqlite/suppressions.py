"""The suppression list on SQLite: table `suppressions` (one row per tenant and address) and `soft_bounces`
(one row per soft bounce, expired a window after it by `delete_expired`, as the TTL does on AWS)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailproxy.adapters.sqlite.db import Database, dumps, loads
from mailproxy.domain import Record

if TYPE_CHECKING:
    from mailproxy import ports

SCHEMA = """
CREATE TABLE IF NOT EXISTS suppressions (
    tenant_id TEXT NOT NULL,
    address TEXT NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (tenant_id, address)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS soft_bounces (
    tenant_id TEXT NOT NULL,
    address TEXT NOT NULL,
    ts INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS soft_bounces_address ON soft_bounces (tenant_id, address, ts);
CREATE INDEX IF NOT EXISTS soft_bounces_expiry ON soft_bounces (expires_at)
"""

IN_BATCH = 400  # (tenant, address) pairs per query: two parameters each, far below SQLite's limit


class SqliteSuppressions:
    """Ports' Suppressions in the `suppressions` and `soft_bounces` tables."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def put(self, tenant_id: str, entry: Record) -> bool:
        """Add (or replace) the entry of `entry["address"]`; True when the address was not suppressed."""
        address = str(entry["address"])
        with self._db.transaction() as tx:
            existed = tx.execute(
                "SELECT 1 FROM suppressions WHERE tenant_id = ? AND address = ?", (tenant_id, address)
            ).fetchone()
            tx.execute(
                "INSERT OR REPLACE INTO suppressions (tenant_id, address, doc) VALUES (?, ?, ?)",
                (tenant_id, address, dumps({**entry, "tenant_id": tenant_id})),
            )
        return existed is None

    def add_if_absent(self, tenant_id: str, entry: Record) -> bool:
        """Add the entry of `entry["address"]` unless the address is listed (its entry is left as it is); True
        when it was added."""
        with self._db.transaction() as tx:
            added = tx.execute(
                "INSERT OR IGNORE INTO suppressions (tenant_id, address, doc) VALUES (?, ?, ?)",
                (tenant_id, str(entry["address"]), dumps({**entry, "tenant_id": tenant_id})),
            )
            return added.rowcount == 1

    def remove(self, tenant_id: str, address: str) -> bool:
        """Take an address off the list; False when it was not on it."""
        with self._db.transaction() as tx:
            cursor = tx.execute("DELETE FROM suppressions WHERE tenant_id = ? AND address = ?", (tenant_id, address))
        return cursor.rowcount > 0

    def find(self, keys: set[tuple[str, str]]) -> dict[tuple[str, str], Record]:
        """The entries among (tenant_id, address) keys."""
        found: dict[tuple[str, str], Record] = {}
        ordered = sorted(keys)
        for start in range(0, len(ordered), IN_BATCH):
            part = ordered[start : start + IN_BATCH]
            pairs = ", ".join("(?, ?)" for _ in part)
            rows = self._db.read(
                f"SELECT tenant_id, address, doc FROM suppressions WHERE (tenant_id, address) IN (VALUES {pairs})",
                tuple(value for pair in part for value in pair),
            )
            for row in rows:
                found[(str(row["tenant_id"]), str(row["address"]))] = loads(row["doc"])
        return found

    def list_entries(self, tenant_id: str, *, after: str | None, limit: int) -> list[Record]:
        """Up to `limit` entries of the tenant in address order, those after the address `after`."""
        rows = self._db.read(
            "SELECT doc FROM suppressions WHERE tenant_id = ? AND address > ? ORDER BY address LIMIT ?",
            (tenant_id, after if after is not None else "", limit),
        )
        return [loads(row["doc"]) for row in rows]

    def note_soft_bounce(self, tenant_id: str, address: str, *, ts: int, window_seconds: int) -> int:
        """Count a soft bounce of the address; how many fall in the window ending at `ts`, this one included."""
        with self._db.transaction() as tx:
            tx.execute(
                "INSERT INTO soft_bounces (tenant_id, address, ts, expires_at) VALUES (?, ?, ?, ?)",
                (tenant_id, address, ts, ts + window_seconds),
            )
            row = tx.execute(
                "SELECT COUNT(*) AS n FROM soft_bounces WHERE tenant_id = ? AND address = ? AND ts > ? AND ts <= ?",
                (tenant_id, address, ts - window_seconds, ts),
            ).fetchone()
        return int(row["n"])

    def forget_tenant(self, tenant_id: str) -> None:
        """Drop a deleted tenant's list and soft-bounce counts."""
        with self._db.transaction() as tx:
            tx.execute("DELETE FROM suppressions WHERE tenant_id = ?", (tenant_id,))
            tx.execute("DELETE FROM soft_bounces WHERE tenant_id = ?", (tenant_id,))


if TYPE_CHECKING:  # mypy checks that the class is the port (open_stores builds Stores from an untyped dict)

    def _implements_port(db: Database) -> ports.Suppressions:
        return SqliteSuppressions(db)
