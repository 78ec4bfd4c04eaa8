"""Rate windows on SQLite: send slots per UTC minute, hour and day of an account, and of a tenant's quota.

`mailproxy.ratelimit`'s port, with its `Limits`, `Reservation` and `WINDOWS`. One row per (scope, window
kind) holds the current window's id and count. A reservation or a release is one transaction: it takes
the database's write lock first, so concurrent senders (threads or processes) never grant more slots in a
window than its limit, without the optimistic retries DynamoDB needs.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

from mailproxy.adapters.sqlite.db import Database
from mailproxy.ratelimit import WINDOWS, Limits, Reservation

if TYPE_CHECKING:
    from mailproxy import ports

SCHEMA = """
CREATE TABLE IF NOT EXISTS rate_windows (
    tenant_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    kind TEXT NOT NULL,
    window_id INTEGER NOT NULL,
    used INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, scope, kind)
) WITHOUT ROWID
"""

QUOTA = "quota"  # the scope of a tenant's quota; an account's is "account:<id>"
WINDOW_SIZES = dict(WINDOWS)


def _account_scope(account_id: str) -> str:
    return f"account:{account_id}"


class SqliteRates:
    """Ports' RateWindows in the `rate_windows` table."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def reserve(self, tenant_id: str, account_id: str, limits: Limits, wanted: int, now: int) -> Reservation:
        """Take up to `wanted` send slots in every limited window of the account at `now`."""
        return self._reserve(tenant_id, _account_scope(account_id), limits, wanted, now)

    def reserve_quota(self, tenant_id: str, limits: Limits, wanted: int, now: int) -> Reservation:
        """Take up to `wanted` slots of the tenant's quota (every account together) at `now`."""
        return self._reserve(tenant_id, QUOTA, limits, wanted, now)

    def release(self, tenant_id: str, account_id: str, reservation: Reservation, count: int) -> None:
        """Give back `count` slots of a reservation (failed sends), in windows that are still current."""
        self._release(tenant_id, _account_scope(account_id), reservation, count)

    def release_quota(self, tenant_id: str, reservation: Reservation, count: int) -> None:
        """Give back `count` slots of a quota reservation (messages that turned out not to be new)."""
        self._release(tenant_id, QUOTA, reservation, count)

    def forget_tenant(self, tenant_id: str, account_ids: set[str]) -> None:
        """Drop a deleted tenant's quota windows and the rate windows of its accounts."""
        scopes = [QUOTA, *(_account_scope(a) for a in sorted(account_ids))]
        with self._db.transaction() as tx:
            tx.executemany(
                "DELETE FROM rate_windows WHERE tenant_id = ? AND scope = ?", [(tenant_id, s) for s in scopes]
            )

    def forget_cache(self) -> None:
        """Nothing to forget: every reservation reads the windows inside its transaction."""

    def _reserve(self, tenant_id: str, scope: str, limits: Limits, wanted: int, now: int) -> Reservation:
        by_window = limits.by_window()
        if not by_window or wanted <= 0:
            return Reservation(granted=max(wanted, 0), next_window_ts=None, windows={})
        ids = {kind: now // size for kind, size in WINDOWS if kind in by_window}
        with self._db.transaction() as tx:
            used = _used(tx, tenant_id, scope, ids)
            room = {kind: by_window[kind] - used[kind] for kind in by_window}
            granted = max(0, min(wanted, *room.values()))
            full = tuple(kind for kind in by_window if room[kind] - granted <= 0)
            if granted > 0:
                tx.executemany(
                    "INSERT OR REPLACE INTO rate_windows (tenant_id, scope, kind, window_id, used) "
                    "VALUES (?, ?, ?, ?, ?)",
                    [(tenant_id, scope, kind, ids[kind], used[kind] + granted) for kind in by_window],
                )
        next_ts = max((ids[k] + 1) * WINDOW_SIZES[k] for k in full) if granted < wanted and full else None
        return Reservation(granted=granted, next_window_ts=next_ts, windows=ids, full=full)

    def _release(self, tenant_id: str, scope: str, reservation: Reservation, count: int) -> None:
        if count <= 0 or not reservation.windows:
            return
        with self._db.transaction() as tx:
            # Only the windows still current: a slot of a window that has closed is nobody's to give back.
            tx.executemany(
                "UPDATE rate_windows SET used = MAX(0, used - ?) "
                "WHERE tenant_id = ? AND scope = ? AND kind = ? AND window_id = ? AND used > 0",
                [(count, tenant_id, scope, kind, window_id) for kind, window_id in reservation.windows.items()],
            )


def _used(tx: sqlite3.Connection, tenant_id: str, scope: str, ids: dict[str, int]) -> dict[str, int]:
    """Slots taken in each current window (0 for a window that has not started being counted)."""
    rows = tx.execute(
        "SELECT kind, window_id, used FROM rate_windows WHERE tenant_id = ? AND scope = ?", (tenant_id, scope)
    ).fetchall()
    stored = {str(row["kind"]): (int(row["window_id"]), int(row["used"])) for row in rows}
    return {
        kind: stored[kind][1] if kind in stored and stored[kind][0] == window_id else 0
        for kind, window_id in ids.items()
    }


if TYPE_CHECKING:  # mypy checks that the class is the port (open_stores builds Stores from an untyped dict)

    def _implements_port(db: Database) -> ports.RateWindows:
        return SqliteRates(db)
