"""The payloads port on SQLite: compressed JSON blobs in the `payloads` table, no S3.

A row is one message's payload, kept either on its own ("pinned", `pack` = '') or as part of a pack
(`pack` = the pack's key, which the message record names). Both can exist for one message, as a pinned
item and a pack entry can on AWS, and a record reads the one it names. A pack is written together in one
transaction; its rows expire after `PACK_EXPIRATION_SECONDS` through `expires_at` (the S3 lifecycle rule
of packs on AWS), swept by the state port's `delete_expired`. Pinned payloads never expire.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mailproxy import clock
from mailproxy.adapters.sqlite.db import Database
from mailproxy.compression import compress_json, decompress_json

if TYPE_CHECKING:
    from mailproxy import ports

SCHEMA = """
CREATE TABLE IF NOT EXISTS payloads (
    tenant_id TEXT NOT NULL,
    id TEXT NOT NULL,
    pack TEXT NOT NULL DEFAULT '',
    rev TEXT NOT NULL,
    payload BLOB NOT NULL,
    expires_at INTEGER,
    PRIMARY KEY (tenant_id, id, pack)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS payloads_by_pack ON payloads (pack) WHERE pack <> ''
"""

PINNED = ""  # the `pack` of a payload stored on its own
PACK_EXPIRATION_SECONDS = 14 * 86400  # template.yaml's PackExpirationDays default
PACK_PREFIX = "packs/"
_CHUNK = 500  # ids per IN (...) query


def _key(record: Mapping[str, Any]) -> tuple[str, str, str]:
    """(tenant_id, id, pack) of the payload a message record names."""
    return str(record["tenant_id"]), str(record["id"]), str(record.get("pack") or PINNED)


class SqlitePayloads:
    """The payloads port over the `payloads` table."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def store(self, tenant_id: str, entries: list[tuple[str, str, dict[str, Any]]]) -> None:
        """Store (id, rev, payload) entries one by one (they may outlive any pack)."""
        rows = [
            (tenant_id, message_id, PINNED, rev, compress_json(payload), None) for message_id, rev, payload in entries
        ]
        self._put(rows)

    def store_pack(self, tenant_id: str, entries: Iterable[tuple[str, str, dict[str, Any]]]) -> str | None:
        """Store (id, rev, payload) entries of one tenant as one pack; its key (None when there are none)."""
        key = f"{PACK_PREFIX}{tenant_id}/{uuid.uuid4().hex}"
        expires = clock.now_ts() + PACK_EXPIRATION_SECONDS
        packed = {message_id: (rev, payload) for message_id, rev, payload in entries}
        if not packed:
            return None
        self._put([(tenant_id, i, key, rev, compress_json(payload), expires) for i, (rev, payload) in packed.items()])
        return key

    def pin(self, tenant_id: str, message_id: str, rev: str, payload: dict[str, Any]) -> None:
        """Store one payload on its own (a message that will wait longer than a pack lives)."""
        self.store(tenant_id, [(message_id, rev, payload)])

    def load_payloads(self, records: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], tuple[str, dict[str, Any]]]:
        """(tenant_id, id) → (rev, payload) for each stored payload of these message records (from the pack a
        record names, else the pinned one); the caller compares the revision with the record's."""
        wanted: dict[tuple[str, str], list[str]] = {}
        for tenant_id, message_id, pack in dict.fromkeys(_key(r) for r in records):
            wanted.setdefault((tenant_id, pack), []).append(message_id)
        found: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}
        for (tenant_id, pack), ids in wanted.items():
            for start in range(0, len(ids), _CHUNK):
                part = ids[start : start + _CHUNK]
                rows = self.db.read(
                    f"SELECT id, rev, payload FROM payloads WHERE tenant_id = ? AND pack = ?"
                    f" AND id IN ({','.join('?' * len(part))})",
                    (tenant_id, pack, *part),
                )
                for row in rows:
                    found[(tenant_id, str(row["id"]))] = (str(row["rev"]), dict(decompress_json(row["payload"])))
        return found

    def forget(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Delete the payloads of messages their owner deleted: the pinned one or the pack entry each names."""
        keys = list(dict.fromkeys(_key(r) for r in records))
        with self.db.transaction() as tx:
            tx.executemany("DELETE FROM payloads WHERE tenant_id = ? AND id = ? AND pack = ?", keys)

    def delete_tenant_payloads(self, tenant_id: str) -> None:
        """Delete every payload of a tenant, pinned and packed (what the AWS cascade's delete_packs adds)."""
        with self.db.transaction() as tx:
            tx.execute("DELETE FROM payloads WHERE tenant_id = ?", (tenant_id,))

    def delete_payloads(self, keys: list[tuple[str, str]]) -> None:
        """Delete pinned payloads (a packed one goes with its pack's expiry)."""
        with self.db.transaction() as tx:
            tx.executemany(
                "DELETE FROM payloads WHERE tenant_id = ? AND id = ? AND pack = ?", [(t, i, PINNED) for t, i in keys]
            )

    def _put(self, rows: Sequence[tuple[str, str, str, str, bytes, int | None]]) -> None:
        if not rows:
            return
        with self.db.transaction() as tx:
            tx.executemany(
                "INSERT OR REPLACE INTO payloads (tenant_id, id, pack, rev, payload, expires_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )


if TYPE_CHECKING:

    def _implements(db: Database) -> ports.Payloads:
        return SqlitePayloads(db)
