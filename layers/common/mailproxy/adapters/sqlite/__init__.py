"""The SQLite adapter: every port over one SQLite database file (WAL) under GMP_DATA_DIR.

The same guarantees as the AWS adapter: what DynamoDB does with a conditional write is a transaction
here; a result and the report events it owes are written in one transaction; the work queue is a table
with priorities, delays and visibility leases that several worker processes share.
"""

from __future__ import annotations

import os

from mailproxy.settings import get_settings
from mailproxy.stores import Stores

DATABASE_FILE = "mailproxy.sqlite3"


def database_path(data_dir: str) -> str:
    """The database file of a data directory."""
    return os.path.join(data_dir, DATABASE_FILE)


def open_stores(data_dir: str, *, sealing_key: str = "") -> Stores:
    """The ports over the database of `data_dir` (created on first use)."""
    from mailproxy.adapters.sqlite import (
        bounces,
        commands,
        files,
        ledger,
        messages,
        outbox,
        payloads,
        queue,
        rates,
        sealer,
        sessions,
        state,
        suppressions,
        tenants,
    )
    from mailproxy.adapters.sqlite.db import Database

    modules = (
        bounces,
        commands,
        files,
        ledger,
        messages,
        outbox,
        payloads,
        queue,
        rates,
        sessions,
        state,
        suppressions,
        tenants,
    )
    db = Database(database_path(data_dir), tuple(m.SCHEMA for m in modules))
    service_state = state.SqliteState(db)
    secrets = sealer.SqliteSealer(data_dir, sealing_key)
    made: dict[str, object] = {
        "messages": messages.SqliteMessages(db),
        "tenants": tenants.SqliteTenants(db, secrets),
        "rates": rates.SqliteRates(db),
        "sessions": sessions.SqliteSessions(db),
        "counters": service_state,
        "journals": service_state,
        "service": service_state,
        "commands": commands.SqliteCommandLog(db),
        "payloads": payloads.SqlitePayloads(db),
        "queue": queue.SqliteQueue(db),
        "outbox": outbox.SqliteOutbox(db),
        "ledger": ledger.SqliteLedger(db),
        "sealer": secrets,
        "bounces": bounces.SqliteBounceState(db),
        "suppressions": suppressions.SqliteSuppressions(db),
        "large_files": files.SqliteLargeFiles(db, data_dir),
    }
    return Stores(made.__getitem__)  # each class is checked against its port by mypy in its own module


def sqlite_stores() -> Stores:
    """The ports over the database of GMP_DATA_DIR."""
    settings = get_settings()
    return open_stores(settings.data_dir or "data", sealing_key=settings.sealing_key)
