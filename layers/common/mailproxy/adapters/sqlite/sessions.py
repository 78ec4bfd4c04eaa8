"""SMTP session leases on SQLite: a row per (account, holder), decided in one transaction.

The transaction takes the database's write lock first (BEGIN IMMEDIATE), so worker processes asking at
the same time decide one after the other, each over the leases the previous one wrote.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailproxy.adapters.sqlite.db import Database
from mailproxy.sessions import Held, grant, leases_after

if TYPE_CHECKING:
    from mailproxy import ports

SCHEMA = """
CREATE TABLE IF NOT EXISTS smtp_sessions (
    tenant_id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    holder TEXT NOT NULL,
    sessions INTEGER NOT NULL,
    until INTEGER NOT NULL,
    wanted INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, account_id, holder)
) WITHOUT ROWID
"""


class SqliteSessions:
    """Ports' SmtpSessions in the `smtp_sessions` table."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def hold(
        self,
        tenant_id: str,
        account_id: str,
        holder: str,
        *,
        wanted: int,
        limit: int,
        now: int,
        until: int,
        open_now: int = 0,
    ) -> int:
        """Set `holder`'s lease to as many of `wanted` sessions as `limit` leaves beside the other holders'."""
        with self._db.transaction() as tx:
            rows = tx.execute(
                "SELECT holder, sessions, until, wanted FROM smtp_sessions WHERE tenant_id = ? AND account_id = ?",
                (tenant_id, account_id),
            ).fetchall()
            leases = {str(r["holder"]): Held(int(r["sessions"]), int(r["until"]), int(r["wanted"])) for r in rows}
            granted = grant(leases, holder, wanted=wanted, limit=limit, now=now)
            after = leases_after(leases, holder, granted, wanted=wanted, until=until, now=now, open_now=open_now)
            if after != leases:
                tx.execute("DELETE FROM smtp_sessions WHERE tenant_id = ? AND account_id = ?", (tenant_id, account_id))
                tx.executemany(
                    "INSERT INTO smtp_sessions (tenant_id, account_id, holder, sessions, until, wanted) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    [(tenant_id, account_id, h, *held) for h, held in after.items()],
                )
        return granted

    def forget_tenant(self, tenant_id: str, account_ids: set[str]) -> None:
        """Drop the session leases of a deleted tenant's accounts."""
        with self._db.transaction() as tx:
            tx.executemany(
                "DELETE FROM smtp_sessions WHERE tenant_id = ? AND account_id = ?",
                [(tenant_id, a) for a in sorted(account_ids)],
            )

    def drop_all(self) -> int:
        """Drop every lease (the one-machine runtime at start, when no sender of a killed runtime is left)."""
        with self._db.transaction() as tx:
            return tx.execute("DELETE FROM smtp_sessions").rowcount


if TYPE_CHECKING:  # mypy checks that the class is the port (open_stores builds Stores from an untyped dict)

    def _implements_port(db: Database) -> ports.SmtpSessions:
        return SqliteSessions(db)
