"""Placeholder of the SQLite adapter's commands port (being written, issue 12)."""

from __future__ import annotations

from typing import Any

SCHEMA = ""


class SqliteCommandLog:
    """Not written yet."""

    def __init__(self, db: Any) -> None:
        raise NotImplementedError("SqliteCommandLog is being written")
