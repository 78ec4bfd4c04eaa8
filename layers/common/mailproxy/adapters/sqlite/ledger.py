"""Placeholder of the SQLite adapter's ledger port (being written, issue 12)."""

from __future__ import annotations

from typing import Any

SCHEMA = ""


class SqliteLedger:
    """Not written yet."""

    def __init__(self, db: Any) -> None:
        raise NotImplementedError("SqliteLedger is being written")
