"""Placeholder of the SQLite adapter's sealer (being written, issue 12)."""

from __future__ import annotations


class SqliteSealer:
    """Not written yet."""

    def __init__(self, data_dir: str, key: str) -> None:
        raise NotImplementedError("SqliteSealer is being written")
