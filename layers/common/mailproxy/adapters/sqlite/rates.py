"""Placeholder of the SQLite adapter's rates port (being written, issue 12)."""

from __future__ import annotations

from typing import Any

SCHEMA = ""


class SqliteRates:
    """Not written yet."""

    def __init__(self, db: Any) -> None:
        raise NotImplementedError("SqliteRates is being written")
