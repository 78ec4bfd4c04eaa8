"""The SQLite adapter: every port over one SQLite database file (WAL) under GMP_DATA_DIR."""

from __future__ import annotations

from mailproxy.ports import Stores


def sqlite_stores() -> Stores:
    """The ports over the database of GMP_DATA_DIR."""
    raise NotImplementedError("the SQLite adapter is being built (issue 12)")
