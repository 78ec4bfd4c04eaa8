"""Items written with optimistic concurrency: each write checks the version number `v` its writer read and
adds one, so of two writers that read the same item one wins and the other re-reads and decides again (the
rate windows, the SMTP session leases)."""

from __future__ import annotations

import threading
from typing import Any

from mailproxy.adapters.aws.dynamo import Item, ddb, from_item, is_conditional_failure
from mailproxy.adapters.aws.expressions import Update, absent, equals, expression


def read(table: str, key: dict[str, Any]) -> Item | None:
    """The item as it is now (a consistent read), or None."""
    reply = ddb().get_item(TableName=table, Key=key, ConsistentRead=True)
    return from_item(reply["Item"]) if "Item" in reply else None


def write(table: str, key: dict[str, Any], seen: Item | None, update: Update) -> Item | None:
    """Apply `update` if the item is still the one `seen` (None: it did not exist); None on success, else the
    item as it is now ({} when it is gone)."""
    version = int(seen.get("v", 0)) if seen else 0
    update.set("v", version + 1)
    unchanged = equals("v", version) if seen else absent("v")
    try:
        ddb().update_item(
            TableName=table, Key=key, **expression(update, unchanged), ReturnValuesOnConditionCheckFailure="ALL_OLD"
        )
    except Exception as exc:
        if not is_conditional_failure(exc):
            raise
        current = getattr(exc, "response", {}).get("Item")
        return from_item(current) if current is not None else (read(table, key) or {})
    return None


def after_write(seen: Item | None, values: dict[str, Any]) -> Item:
    """What a successful `write` of `values` over `seen` stored (a good guess for the next one)."""
    return {**(seen or {}), **values, "v": int((seen or {}).get("v", 0)) + 1}


class Guesses:
    """The last item this container saw per key: a first guess that saves a read. Never trusted to refuse
    anything (a caller re-reads before saying no), and a stale one only makes `write` fail and read again."""

    __slots__ = ("_items", "_lock")

    def __init__(self) -> None:
        self._items: dict[str, Item] = {}
        self._lock = threading.Lock()  # results are recorded from several threads of one container

    def get(self, key: str) -> Item | None:
        with self._lock:
            return self._items.get(key)

    def remember(self, key: str, item: Item) -> None:
        with self._lock:
            self._items[key] = item

    def forget(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._items.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
