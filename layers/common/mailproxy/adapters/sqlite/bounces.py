"""The bounce poller's state on SQLite: each mailbox's position and the sealed VERP signing key."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailproxy.adapters.sqlite.db import Database
from mailproxy.domain import Record

if TYPE_CHECKING:
    from mailproxy import ports

SCHEMA = """
CREATE TABLE IF NOT EXISTS bounce_positions (
    tenant_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    identity TEXT NOT NULL,
    uidvalidity INTEGER NOT NULL,
    last_uid INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, scope)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS bounce_signing_key (
    name TEXT PRIMARY KEY,
    sealed BLOB NOT NULL
) WITHOUT ROWID
"""

_KEY_NAME = "verp"


def _split(mailbox: str) -> tuple[str, str]:
    tenant_id, _, scope = mailbox.partition("/")
    return tenant_id, scope or "*"


class SqliteBounceState:
    """Ports' BounceState in the tables `bounce_positions` and `bounce_signing_key`."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def position(self, mailbox: str) -> Record | None:
        """The mailbox's `identity`, `uidvalidity` and `last_uid`, or None."""
        rows = self._db.read(
            "SELECT identity, uidvalidity, last_uid, updated_at FROM bounce_positions WHERE tenant_id = ? AND scope = ?",
            _split(mailbox),
        )
        return dict(rows[0]) if rows else None

    def save_position(self, mailbox: str, *, identity: str, uidvalidity: int, last_uid: int, now: int) -> None:
        """Remember where the poller stopped in the mailbox."""
        with self._db.transaction() as tx:
            tx.execute(
                "INSERT OR REPLACE INTO bounce_positions (tenant_id, scope, identity, uidvalidity, last_uid, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (*_split(mailbox), identity, int(uidvalidity), int(last_uid), int(now)),
            )

    def forget_tenant(self, tenant_id: str) -> None:
        """Drop the positions of a deleted tenant's mailboxes."""
        with self._db.transaction() as tx:
            tx.execute("DELETE FROM bounce_positions WHERE tenant_id = ?", (tenant_id,))

    def sealed_signing_key(self) -> bytes | None:
        """The sealed signing key, or None before the first VERP account was saved."""
        rows = self._db.read("SELECT sealed FROM bounce_signing_key WHERE name = ?", (_KEY_NAME,))
        return bytes(rows[0]["sealed"]) if rows else None

    def offer_signing_key(self, sealed: bytes) -> bytes:
        """Store `sealed` unless a key is stored; the stored one."""
        with self._db.transaction() as tx:
            tx.execute("INSERT OR IGNORE INTO bounce_signing_key (name, sealed) VALUES (?, ?)", (_KEY_NAME, sealed))
            row = tx.execute("SELECT sealed FROM bounce_signing_key WHERE name = ?", (_KEY_NAME,)).fetchone()
        return bytes(row["sealed"])


if TYPE_CHECKING:  # mypy checks that the class is the port

    def _implements_port(db: Database) -> ports.BounceState:
        return SqliteBounceState(db)
