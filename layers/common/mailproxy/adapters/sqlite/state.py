"""The service's state on SQLite: the counters and pending gauge, the journals of work in flight, and the
service's own marks (start time, scheduler runs, run-now requests).

What DynamoDB makes one transaction (a batch's counters, its pending deltas and the conditional delete of
its journal entry) is one SQLite transaction here, applied only while the journal entry exists: whoever
closes an entry first applies its counts, a second closer changes nothing.

`delete_expired` plays the TTL of the state table on AWS (command log, ledger): it deletes the rows whose
`expires_at` has passed in every table that has such a column (a table opts in by naming a column so), except
`messages`, whose removals are logged changes (`SqliteMessages.expire`).
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mailproxy import clock, reputation
from mailproxy.adapters.sqlite.db import Database, dumps, loads
from mailproxy.domain import BounceCounter, Counter, JournalKind, Record

if TYPE_CHECKING:
    from mailproxy.ports import CounterDeltas

if TYPE_CHECKING:
    from mailproxy import ports

SCHEMA = """
CREATE TABLE IF NOT EXISTS pending (
    tenant_id TEXT PRIMARY KEY,
    n INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS account_counters (
    tenant_id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    name TEXT NOT NULL,
    value INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, account_id, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tenant_counters (
    tenant_id TEXT NOT NULL,
    name TEXT NOT NULL,
    value INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS service_counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS journals (
    sk TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    keys TEXT NOT NULL,
    due_ts INTEGER NOT NULL,
    counted INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS service_marks (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS reputation (
    tenant_id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    bucket INTEGER NOT NULL,
    sent INTEGER NOT NULL DEFAULT 0,
    bounces INTEGER NOT NULL DEFAULT 0,
    complaints INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, account_id, bucket)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS run_now (
    scope TEXT PRIMARY KEY,
    requested_at INTEGER NOT NULL
) WITHOUT ROWID
"""

STARTED_AT = "started_at"
SCHEDULER_LAST_RUN = "scheduler_last_run"
COMMAND_LOG_WRITE_FAILURES = "command_log_write_failures"
TTL_COLUMN = "expires_at"
REPUTATION_COLUMNS = {name: name for name in ("sent", "bounces", "complaints")}
NOT_SWEPT = (
    "messages",  # its TTL is SqliteMessages.expire: each removal is a logged change
    "api_keys",  # an expired key stays, refused as expired (TenantsTable has no TTL on AWS either)
)


def _add_pending(tx: sqlite3.Connection, deltas: Mapping[str, int]) -> None:
    tx.executemany(
        "INSERT INTO pending (tenant_id, n) VALUES (?, ?) ON CONFLICT (tenant_id) DO UPDATE SET n = n + excluded.n",
        [(tenant_id, delta) for tenant_id, delta in deltas.items() if delta],
    )


def _add_counters(tx: sqlite3.Connection, counters: CounterDeltas) -> None:
    tx.executemany(
        "INSERT INTO account_counters (tenant_id, account_id, name, value) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (tenant_id, account_id, name) DO UPDATE SET value = value + excluded.value",
        [
            (tenant_id, account_id, str(name), value)
            for (tenant_id, account_id), deltas in counters.items()
            for name, value in deltas.items()
            if value
        ],
    )
    # The sends also go to the current bucket of each account's reputation window (the batch's own
    # transaction, as the AWS adapter adds them in the same write), and buckets that left it are dropped.
    sends = [(t, a, d[Counter.SENT]) for (t, a), d in counters.items() if d.get(Counter.SENT)]
    if sends:
        now = clock.now_ts()
        _add_reputation(tx, sends, bucket=reputation.bucket_of(now), field="sent")
        _drop_stale_reputation(tx, [(t, a) for t, a, _ in sends], now)


def _add_reputation(tx: sqlite3.Connection, deltas: list[tuple[str, str, int]], *, bucket: int, field: str) -> None:
    field = REPUTATION_COLUMNS[field]  # a column name, never from input
    tx.executemany(
        f"INSERT INTO reputation (tenant_id, account_id, bucket, {field}) VALUES (?, ?, ?, ?)"
        f" ON CONFLICT (tenant_id, account_id, bucket) DO UPDATE SET {field} = {field} + excluded.{field}",
        [(t, a, bucket, n) for t, a, n in deltas],
    )


def _drop_stale_reputation(tx: sqlite3.Connection, accounts: list[tuple[str, str]], now: int) -> None:
    first = reputation.window_buckets(now).start
    tx.executemany(
        "DELETE FROM reputation WHERE tenant_id = ? AND account_id = ? AND bucket < ?",
        [(t, a, first) for t, a in accounts],
    )


def _journal_open(tx: sqlite3.Connection, sk: str) -> bool:
    return tx.execute("SELECT 1 FROM journals WHERE sk = ?", (sk,)).fetchone() is not None


class SqliteState:
    """The counters, journals and service-state ports over their tables."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # ------------------------------------------------------------------ pending counts

    def add_pending(self, deltas: dict[str, int], *, journal_sk: str | None = None) -> None:
        """Apply pending deltas per tenant, closing the journal entry `journal_sk` in the same transaction
        (nothing applied when that entry is already closed: its counts are in)."""
        with self.db.transaction() as tx:
            if journal_sk is not None:
                if not _journal_open(tx, journal_sk):
                    return
                tx.execute("DELETE FROM journals WHERE sk = ?", (journal_sk,))
            _add_pending(tx, deltas)

    def pending_counts(self) -> dict[str, int]:
        """The exact pending count of every tenant that has had messages."""
        return {str(r["tenant_id"]): int(r["n"]) for r in self.db.read("SELECT tenant_id, n FROM pending")}

    def pending_count(self, tenant_id: str | None = None) -> int:
        """The pending count of one tenant, or of the whole service."""
        if tenant_id is None:
            return int(self.db.read("SELECT COALESCE(SUM(n), 0) AS n FROM pending")[0]["n"])
        rows = self.db.read("SELECT n FROM pending WHERE tenant_id = ?", (tenant_id,))
        return int(rows[0]["n"]) if rows else 0

    # ------------------------------------------------------------------ /metrics counters

    def counted_accounts(self, tenant_id: str) -> set[str]:
        """Every account the tenant ever had counters for (they stay when the account goes)."""
        rows = self.db.read("SELECT DISTINCT account_id FROM account_counters WHERE tenant_id = ?", (tenant_id,))
        return {str(r["account_id"]) for r in rows}

    def counter_rows(self) -> list[dict[str, Any]]:
        """The persisted /metrics counters: one row per tenant and account (tenant_id, account_id, counters)."""
        rows: dict[tuple[str, str], dict[str, Any]] = {}
        for r in self.db.read("SELECT tenant_id, account_id, name, value FROM account_counters"):
            key = (str(r["tenant_id"]), str(r["account_id"]))
            rows.setdefault(key, {"tenant_id": key[0], "account_id": key[1]})[str(r["name"])] = int(r["value"])
        return [rows[key] for key in sorted(rows)]

    def add_tenant_counters(self, tenant_id: str, deltas: dict[str, int]) -> None:
        """Add to a tenant's own /metrics counters (those of no single account: quota rejections)."""
        with self.db.transaction() as tx:
            tx.executemany(
                "INSERT INTO tenant_counters (tenant_id, name, value) VALUES (?, ?, ?)"
                " ON CONFLICT (tenant_id, name) DO UPDATE SET value = value + excluded.value",
                [(tenant_id, name, value) for name, value in deltas.items() if value],
            )

    def add_account_counters(self, tenant_id: str, account_id: str, deltas: Mapping[BounceCounter, int]) -> None:
        """Add to an account's /metrics counters outside a send batch (bounces and complaints)."""
        with self.db.transaction() as tx:
            tx.executemany(
                "INSERT INTO account_counters (tenant_id, account_id, name, value) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (tenant_id, account_id, name) DO UPDATE SET value = value + excluded.value",
                [(tenant_id, account_id, str(name), value) for name, value in deltas.items() if value],
            )

    def tenant_counter_rows(self) -> dict[str, Record]:
        """The persisted per-tenant /metrics counters, by tenant id."""
        rows: dict[str, Record] = {}
        for r in self.db.read("SELECT tenant_id, name, value FROM tenant_counters ORDER BY tenant_id"):
            rows.setdefault(str(r["tenant_id"]), {})[str(r["name"])] = int(r["value"])
        return rows

    def ensure_counters(self, tenant_id: str, account_id: str) -> None:
        """Give a new account its /metrics series at zero (existing values kept)."""
        with self.db.transaction() as tx:
            tx.executemany(
                "INSERT OR IGNORE INTO account_counters (tenant_id, account_id, name, value) VALUES (?, ?, ?, 0)",
                [(tenant_id, account_id, str(name)) for name in Counter],
            )

    def service_counters(self) -> Record:
        """The service-wide /metrics counters (command-log write failures)."""
        return {str(r["name"]): int(r["value"]) for r in self.db.read("SELECT name, value FROM service_counters")}

    def count_command_log_failure(self) -> None:
        """Count a command-log entry that could not be written (`gmp_command_log_write_failures_total`)."""
        with self.db.transaction() as tx:
            tx.execute(
                "INSERT INTO service_counters (name, value) VALUES (?, 1)"
                " ON CONFLICT (name) DO UPDATE SET value = value + 1",
                (COMMAND_LOG_WRITE_FAILURES,),
            )

    # ------------------------------------------------------------------ reputation window

    def add_reputation(
        self, tenant_id: str, account_id: str, *, bounces: int, complaints: int, now: int
    ) -> dict[str, int]:
        """Add bounces and complaints to the current bucket of the account's window; the window's totals."""
        bucket = reputation.bucket_of(now)
        with self.db.transaction() as tx:
            if bounces:
                _add_reputation(tx, [(tenant_id, account_id, bounces)], bucket=bucket, field="bounces")
            if complaints:
                _add_reputation(tx, [(tenant_id, account_id, complaints)], bucket=bucket, field="complaints")
            _drop_stale_reputation(tx, [(tenant_id, account_id)], now)
            row = tx.execute(
                "SELECT COALESCE(SUM(sent), 0) AS sent, COALESCE(SUM(bounces), 0) AS bounces,"
                " COALESCE(SUM(complaints), 0) AS complaints FROM reputation"
                " WHERE tenant_id = ? AND account_id = ? AND bucket <= ?",
                (tenant_id, account_id, bucket),
            ).fetchone()
        return {"sent": int(row["sent"]), "bounces": int(row["bounces"]), "complaints": int(row["complaints"])}

    def reset_reputation(self, tenant_id: str, account_id: str) -> None:
        """Forget the bounces and complaints of the account's window (the sends stay)."""
        with self.db.transaction() as tx:
            tx.execute(
                "UPDATE reputation SET bounces = 0, complaints = 0 WHERE tenant_id = ? AND account_id = ?",
                (tenant_id, account_id),
            )

    def set_paused_gauge(self, tenant_id: str, account_id: str, paused: bool) -> None:
        """Mirror an account's pause into its counters row (`paused`: 1 or 0), for /metrics."""
        with self.db.transaction() as tx:
            tx.execute(
                "INSERT OR REPLACE INTO account_counters (tenant_id, account_id, name, value) VALUES (?, ?, ?, ?)",
                (tenant_id, account_id, "paused", 1 if paused else 0),
            )

    # ------------------------------------------------------------------ journals

    def open_journal(self, kind: JournalKind, keys: list[dict[str, Any]], *, due_ts: int) -> str:
        """Record work in flight; the scheduler finishes it if it is still open at `due_ts`. Returns its sk."""
        sk = f"{due_ts:012d}#{uuid.uuid4().hex}"
        with self.db.transaction() as tx:
            tx.execute(
                "INSERT INTO journals (sk, kind, keys, due_ts) VALUES (?, ?, ?, ?)",
                (sk, str(kind), dumps(keys), due_ts),
            )
        return sk

    def due_journals(self, now: int) -> list[Record]:
        """Journal entries still open at `now`, oldest due first (sk, kind, keys, due_ts, counted when set)."""
        rows = self.db.read(
            "SELECT sk, kind, keys, due_ts, counted FROM journals WHERE sk <= ? ORDER BY sk", (f"{now:012d}#~",)
        )
        entries: list[Record] = []
        for r in rows:
            entry: Record = {
                "sk": str(r["sk"]),
                "kind": str(r["kind"]),
                "keys": loads(r["keys"]),
                "due_ts": int(r["due_ts"]),
            }
            if r["counted"]:
                entry["counted"] = True
            entries.append(entry)
        return entries

    def mark_journal_counted(self, sk: str) -> None:
        """Note on an open journal entry that its pending counts were applied (only the enqueue is left)."""
        with self.db.transaction() as tx:
            tx.execute("UPDATE journals SET counted = 1 WHERE sk = ?", (sk,))

    def close_batch(self, journal_sk: str, *, counters: CounterDeltas, pending: Mapping[str, int]) -> None:
        """Apply a batch's counters and pending deltas and close its journal entry, all or nothing, once."""
        with self.db.transaction() as tx:
            if not _journal_open(tx, journal_sk):
                return  # already closed (by the scheduler, or the batch itself): its counts are in
            _add_counters(tx, counters)
            _add_pending(tx, pending)
            tx.execute("DELETE FROM journals WHERE sk = ?", (journal_sk,))

    def settle_batch(
        self,
        journal_sk: str,
        *,
        counters: CounterDeltas,
        pending: Mapping[str, int],
        open_keys: list[dict[str, Any]],
    ) -> None:
        """Apply what a batch recorded and keep its journal entry open for `open_keys` only, all or nothing
        (nothing when the scheduler already finished the entry)."""
        with self.db.transaction() as tx:
            if not _journal_open(tx, journal_sk):
                return
            _add_counters(tx, counters)
            _add_pending(tx, pending)
            tx.execute("UPDATE journals SET keys = ? WHERE sk = ?", (dumps(open_keys), journal_sk))

    # ------------------------------------------------------------------ the service's own state

    def service_started_at(self, now: int) -> int:
        """When the service first ran (recorded once, persisted)."""
        with self.db.transaction() as tx:
            tx.execute("INSERT OR IGNORE INTO service_marks (name, value) VALUES (?, ?)", (STARTED_AT, now))
            row = tx.execute("SELECT value FROM service_marks WHERE name = ?", (STARTED_AT,)).fetchone()
        return int(row["value"])

    def scheduler_last_run(self) -> int | None:
        """When the scheduler last completed a round, or None if it never ran."""
        rows = self.db.read("SELECT value FROM service_marks WHERE name = ?", (SCHEDULER_LAST_RUN,))
        return int(rows[0]["value"]) if rows else None

    def mark_scheduler_run(self, now: int) -> None:
        """Record that the scheduler completed a round."""
        with self.db.transaction() as tx:
            tx.execute("INSERT OR REPLACE INTO service_marks (name, value) VALUES (?, ?)", (SCHEDULER_LAST_RUN, now))

    def request_run_now(self, scope: str, now: int) -> None:
        """Record a run-now request (`*` from the admin token, else the tenant id) for scheduler and reporter."""
        with self.db.transaction() as tx:
            tx.execute("INSERT OR REPLACE INTO run_now (scope, requested_at) VALUES (?, ?)", (scope, now))

    def run_now_requests(self) -> dict[str, int]:
        """Open run-now requests: scope → requested_at."""
        return {
            str(r["scope"]): int(r["requested_at"]) for r in self.db.read("SELECT scope, requested_at FROM run_now")
        }

    def clear_run_now(self, scope: str, requested_at: int) -> None:
        """Close a run-now request once acted on (a newer request of the same scope stays open)."""
        with self.db.transaction() as tx:
            tx.execute("DELETE FROM run_now WHERE scope = ? AND requested_at = ?", (scope, requested_at))

    def forget_tenant(self, tenant_id: str) -> None:
        """Drop a deleted tenant's pending count and run-now request (its /metrics counters stay)."""
        with self.db.transaction() as tx:
            tx.execute("DELETE FROM pending WHERE tenant_id = ?", (tenant_id,))
            tx.execute("DELETE FROM run_now WHERE scope = ?", (tenant_id,))

    def delete_expired(self, now: int) -> int:
        """Delete the rows whose `expires_at` has passed (the TTL), in every table that has the column but
        `messages`; how many."""
        deleted = 0
        with self.db.transaction() as tx:
            for table in _ttl_tables(tx):
                cursor = tx.execute(
                    f'DELETE FROM "{table}" WHERE {TTL_COLUMN} IS NOT NULL AND {TTL_COLUMN} <= ?', (now,)
                )
                deleted += cursor.rowcount
        return deleted


def _ttl_tables(tx: sqlite3.Connection) -> list[str]:
    """The tables with an `expires_at` column, `messages` left out."""
    names = [str(r[0]) for r in tx.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()]
    return [
        name
        for name in names
        if name not in NOT_SWEPT
        and not name.startswith("sqlite_")
        and any(str(column[1]) == TTL_COLUMN for column in tx.execute(f'PRAGMA table_info("{name}")').fetchall())
    ]


if TYPE_CHECKING:

    def _implements(db: Database) -> tuple[ports.Counters, ports.Journals, ports.ServiceState]:
        state = SqliteState(db)
        return state, state, state
