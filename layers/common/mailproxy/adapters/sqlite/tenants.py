"""Tenants, their API keys and SMTP accounts on SQLite (`mailproxy.tenants`' port).

Records are the JSON documents the AWS adapter stores as items (same fields, None values left out, secrets
sealed under the same contexts), in three tables: `tenants`, `tenant_accounts` and `api_keys` (one row per
live key hash, with its expiry as stored). The pure helpers (public_tenant, client_auth, is_held...) stay in
`mailproxy.tenants` and read these records as they read DynamoDB's.
"""

from __future__ import annotations

import base64
import sqlite3
from typing import TYPE_CHECKING, Any

from mailproxy.adapters.sqlite.db import Database, dumps, loads
from mailproxy.domain import Record

if TYPE_CHECKING:
    from mailproxy.ports import Sealer
from mailproxy.tenants import (
    ACCOUNT_FIELDS,
    BOUNCE_PASSWORD,
    HAS_SUPPRESSIONS,
    account_secrets,
    config_values,
    new_incarnation,
    paused_after,
    replacement,
    suspended_after,
)

if TYPE_CHECKING:
    from mailproxy import ports

SCHEMA = """
CREATE TABLE IF NOT EXISTS tenants (
    tenant_id TEXT PRIMARY KEY,
    doc TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tenant_accounts (
    tenant_id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (tenant_id, account_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS api_keys (
    key_hash TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    expires_at INTEGER
) WITHOUT ROWID
"""

SEALED_FIELDS = (
    "client_auth_enc",
    "password_enc",
    BOUNCE_PASSWORD,
)  # bytes in the records, base64 text in the documents
IN_BATCH = 400  # keys per `IN (...)`: far below SQLite's limit on parameters


class SqliteTenants:
    """Ports' Tenants in the `tenants`, `tenant_accounts` and `api_keys` tables."""

    def __init__(self, db: Database, sealer: Sealer) -> None:
        self._db = db
        self._sealer = sealer

    def get_tenant(self, tenant_id: str) -> Record | None:
        """The stored tenant (secrets still sealed), or None."""
        return _tenant(self._db.connection(), tenant_id)

    def create_tenant(self, tenant: dict[str, Any], *, key_hash: str, now: int) -> bool:
        """Store a new tenant and its key hash together; False if the tenant already exists."""
        tenant_id = tenant["id"]
        values = config_values({"client_auth": None, "active": True, **tenant}, tenant_id, encrypt=self._encrypt)
        record = {
            "id": tenant_id,
            **values,
            "api_key_hash": key_hash,
            "api_key_expires_at": tenant.get("api_key_expires_at"),
            "suspended_batches": [],
            "created_at": now,
            "updated_at": now,
            "incarnation": new_incarnation(),
        }
        with self._db.transaction() as tx:
            if _tenant(tx, tenant_id) is not None:
                return False
            tx.execute("INSERT INTO tenants (tenant_id, doc) VALUES (?, ?)", (tenant_id, _to_doc(record)))
            _put_key(tx, key_hash, tenant_id, tenant.get("api_key_expires_at"))
        return True

    def update_tenant(self, tenant_id: str, fields: dict[str, Any], *, now: int, replace: bool = False) -> bool:
        """Change the given config fields (all of them, defaults for the rest, when `replace`); False if absent."""
        values = config_values(replacement(fields) if replace else fields, tenant_id, encrypt=self._encrypt)
        values["updated_at"] = now
        with self._db.transaction() as tx:
            record = _tenant(tx, tenant_id)
            if record is None:
                return False
            for name, value in values.items():
                if value is None:
                    record.pop(name, None)
                else:
                    record[name] = value
            _put_tenant(tx, record)
        return True

    def list_tenants(self, *, active_only: bool = False) -> list[Record]:
        """Every tenant, sorted by id."""
        rows = self._db.read("SELECT doc FROM tenants ORDER BY tenant_id")
        tenants = [_from_doc(row["doc"]) for row in rows]
        return [t for t in tenants if t.get("active", True)] if active_only else tenants

    def delete_tenant(self, tenant_id: str) -> bool:
        """Delete a tenant with its accounts and key; False if it did not exist."""
        with self._db.transaction() as tx:
            record = _tenant(tx, tenant_id)
            if record is None:
                return False
            tx.execute("DELETE FROM tenant_accounts WHERE tenant_id = ?", (tenant_id,))
            if record.get("api_key_hash"):
                tx.execute(
                    "DELETE FROM api_keys WHERE key_hash = ? AND tenant_id = ?", (record["api_key_hash"], tenant_id)
                )
            tx.execute("DELETE FROM tenants WHERE tenant_id = ?", (tenant_id,))
        return True

    def set_api_key(self, tenant_id: str, *, key_hash: str | None, expires_at: int | None, now: int) -> bool:
        """Replace (or with None remove) the tenant's key: the old one stops working at once."""
        with self._db.transaction() as tx:
            record = _tenant(tx, tenant_id)
            if record is None:
                return False
            if record.get("api_key_hash"):
                tx.execute("DELETE FROM api_keys WHERE key_hash = ?", (record["api_key_hash"],))
            record["updated_at"] = now
            record.pop("api_key_hash", None)
            record.pop("api_key_expires_at", None)
            if key_hash:
                _put_key(tx, key_hash, tenant_id, expires_at)
                record["api_key_hash"] = key_hash
                record["api_key_expires_at"] = expires_at
            _put_tenant(tx, record)
        return True

    def lookup_api_key(self, key_hash: str) -> Record | None:
        """The key's record ({tenant_id, expires_at when it has one}), or None; the caller judges the expiry."""
        rows = self._db.read("SELECT tenant_id, expires_at FROM api_keys WHERE key_hash = ?", (key_hash,))
        if not rows:
            return None
        found: Record = {"tenant_id": str(rows[0]["tenant_id"])}
        if rows[0]["expires_at"] is not None:
            found["expires_at"] = int(rows[0]["expires_at"])
        return found

    def change_suspended_batches(
        self, tenant_id: str, batch_code: str | None, *, suspend: bool, now: int
    ) -> list[str] | None:
        """Suspend or activate a batch (None: the whole tenant), in one transaction; the batches after it, None
        if there is no such tenant."""
        with self._db.transaction() as tx:
            record = _tenant(tx, tenant_id)
            if record is None:
                return None
            batches = suspended_after(record.get("suspended_batches"), batch_code, suspend=suspend)
            record.update(suspended_batches=batches, updated_at=now)
            _put_tenant(tx, record)
        return batches

    def note_suppressions(self, tenant_id: str) -> None:
        """Mark the tenant as having a suppression list (never unmarked); nothing if it does not exist."""
        with self._db.transaction() as tx:
            record = _tenant(tx, tenant_id)
            if record is not None and not record.get(HAS_SUPPRESSIONS):
                record[HAS_SUPPRESSIONS] = True
                _put_tenant(tx, record)

    def set_account_pause(self, tenant_id: str, account_id: str, pause: Record | None, *, now: int) -> bool:
        """Pause (`pause`: why and when) or resume (None) an account in the tenant's `paused_accounts`; True when
        this call changed it."""
        with self._db.transaction() as tx:
            record = _tenant(tx, tenant_id)
            if record is None:
                return False
            paused = paused_after(record.get("paused_accounts"), account_id, pause)
            if paused is None:
                return False
            record["paused_accounts"] = paused
            _put_tenant(tx, record)
        return True

    def put_account(self, tenant_id: str, account: dict[str, Any], *, now: int) -> None:
        """Create or replace an account (upsert on tenant + id), its password sealed."""
        account_id = account["id"]
        record: Record = {
            "id": account_id,
            "tenant_id": tenant_id,
            **{name: account.get(name) for name in ACCOUNT_FIELDS},
            "updated_at": now,
        }
        record.update(account_secrets(tenant_id, account, encrypt=self._encrypt))
        with self._db.transaction() as tx:
            existing = _account(tx, tenant_id, account_id)
            record["created_at"] = existing.get("created_at", now) if existing else now
            tx.execute(
                "INSERT OR REPLACE INTO tenant_accounts (tenant_id, account_id, doc) VALUES (?, ?, ?)",
                (tenant_id, account_id, _to_doc(record)),
            )

    def get_account(self, tenant_id: str, account_id: str) -> Record | None:
        """The stored account (password still sealed), or None."""
        return _account(self._db.connection(), tenant_id, account_id)

    def get_tenants_and_accounts(
        self, tenant_ids: set[str], account_keys: set[tuple[str, str]]
    ) -> tuple[dict[str, Record], dict[tuple[str, str], Record]]:
        """The stored tenants and (tenant_id, account_id) accounts that exist among those asked for."""
        found_tenants: dict[str, Record] = {}
        ids = sorted(tenant_ids)
        for start in range(0, len(ids), IN_BATCH):
            part = ids[start : start + IN_BATCH]
            rows = self._db.read(
                f"SELECT tenant_id, doc FROM tenants WHERE tenant_id IN ({','.join('?' * len(part))})", tuple(part)
            )
            found_tenants.update({str(row["tenant_id"]): _from_doc(row["doc"]) for row in rows})
        found_accounts: dict[tuple[str, str], Record] = {}
        keys = sorted(account_keys)
        for start in range(0, len(keys), IN_BATCH):
            pairs = keys[start : start + IN_BATCH]
            rows = self._db.read(
                "SELECT tenant_id, account_id, doc FROM tenant_accounts WHERE (tenant_id, account_id) IN "
                f"(VALUES {','.join(['(?, ?)'] * len(pairs))})",
                tuple(value for pair in pairs for value in pair),
            )
            found_accounts.update({(str(r["tenant_id"]), str(r["account_id"])): _from_doc(r["doc"]) for r in rows})
        return found_tenants, found_accounts

    def get_tenants(self, tenant_ids: set[str]) -> dict[str, Record]:
        """The stored tenants among those asked for, read together."""
        return self.get_tenants_and_accounts(tenant_ids, set())[0] if tenant_ids else {}

    def list_accounts(self, tenant_id: str) -> list[Record]:
        """The tenant's accounts, sorted by id."""
        rows = self._db.read("SELECT doc FROM tenant_accounts WHERE tenant_id = ? ORDER BY account_id", (tenant_id,))
        return [_from_doc(row["doc"]) for row in rows]

    def account_ids(self, tenant_id: str) -> set[str]:
        """The ids of the tenant's accounts."""
        rows = self._db.read("SELECT account_id FROM tenant_accounts WHERE tenant_id = ?", (tenant_id,))
        return {str(row["account_id"]) for row in rows}

    def delete_account(self, tenant_id: str, account_id: str) -> bool:
        """Delete an account; False if the tenant has no such account."""
        with self._db.transaction() as tx:
            deleted = tx.execute(
                "DELETE FROM tenant_accounts WHERE tenant_id = ? AND account_id = ?", (tenant_id, account_id)
            )
            return deleted.rowcount > 0

    def _encrypt(self, plaintext: str, *, context: str) -> bytes:
        return self._sealer.encrypt_secret(plaintext, context=context)


def _tenant(connection: sqlite3.Connection, tenant_id: str) -> Record | None:
    row = connection.execute("SELECT doc FROM tenants WHERE tenant_id = ?", (tenant_id,)).fetchone()
    return None if row is None else _from_doc(row["doc"])


def _put_tenant(tx: sqlite3.Connection, record: Record) -> None:
    tx.execute("UPDATE tenants SET doc = ? WHERE tenant_id = ?", (_to_doc(record), record["id"]))


def _account(connection: sqlite3.Connection, tenant_id: str, account_id: str) -> Record | None:
    row = connection.execute(
        "SELECT doc FROM tenant_accounts WHERE tenant_id = ? AND account_id = ?", (tenant_id, account_id)
    ).fetchone()
    return None if row is None else _from_doc(row["doc"])


def _put_key(tx: sqlite3.Connection, key_hash: str, tenant_id: str, expires_at: int | None) -> None:
    tx.execute(
        "INSERT OR REPLACE INTO api_keys (key_hash, tenant_id, expires_at) VALUES (?, ?, ?)",
        (key_hash, tenant_id, None if expires_at is None else int(expires_at)),
    )


def _to_doc(record: Record) -> str:
    """A record as stored: None values left out (as DynamoDB items leave them), sealed secrets in base64."""
    stored = {name: value for name, value in record.items() if value is not None}
    for name in SEALED_FIELDS:
        if name in stored:
            stored[name] = base64.b64encode(bytes(stored[name])).decode("ascii")
    return dumps(stored)


def _from_doc(doc: str) -> Record:
    record: Record = loads(doc)
    for name in SEALED_FIELDS:
        if isinstance(record.get(name), str):
            record[name] = base64.b64decode(record[name])
    return record


if TYPE_CHECKING:  # mypy checks that the class is the port

    def _implements_port(db: Database, sealer: Sealer) -> ports.Tenants:
        return SqliteTenants(db, sealer)
