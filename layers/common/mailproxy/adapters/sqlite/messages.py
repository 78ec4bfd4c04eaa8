"""Placeholder of the SQLite adapter's messages port (being written, issue 12)."""

from __future__ import annotations

from typing import Any

SCHEMA = ""


class SqliteMessages:
    """Not written yet."""

    def __init__(self, db: Any) -> None:
        raise NotImplementedError("SqliteMessages is being written")
