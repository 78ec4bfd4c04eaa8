"""Placeholder of the SQLite adapter's state port (being written, issue 12)."""

from __future__ import annotations

from typing import Any

SCHEMA = ""


class SqliteState:
    """Not written yet."""

    def __init__(self, db: Any) -> None:
        raise NotImplementedError("SqliteState is being written")
