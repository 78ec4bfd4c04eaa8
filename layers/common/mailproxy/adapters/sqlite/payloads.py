"""Placeholder of the SQLite adapter's payloads port (being written, issue 12)."""

from __future__ import annotations

from typing import Any

SCHEMA = ""


class SqlitePayloads:
    """Not written yet."""

    def __init__(self, db: Any) -> None:
        raise NotImplementedError("SqlitePayloads is being written")
