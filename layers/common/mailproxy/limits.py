"""Bounds on one message, checked at intake before anything costly: no single message may wedge a sender.

Each bound is a per-message rejection reason (the other messages of the request are kept), never a 422:
the request is well-formed, one message of it is not acceptable (docs/decisions.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from mailproxy.addresses import split_addresses

# Headers the service writes itself: a custom header may not replace them (case-insensitive), nor any
# `Content-*` one. From/To/Cc/Reply-To come from their fields, Bcc is never a header, Return-Path is the
# envelope's (`return_path`) and the receiving server writes it.
STRUCTURAL_HEADERS = frozenset(
    {
        "from",
        "to",
        "cc",
        "bcc",
        "sender",
        "date",
        "message-id",
        "mime-version",
        "return-path",
        "x-genro-mail-id",
    }
)


def is_structural_header(name: str) -> bool:
    """True when a custom header of this name would replace one the service writes itself."""
    folded = name.strip().lower()
    return folded in STRUCTURAL_HEADERS or folded.startswith("content-")


def _text_bytes(value: str | list[str] | None) -> int:
    if value is None:
        return 0
    if isinstance(value, str):
        return len(value.encode("utf-8"))
    # A list becomes one header with ", " between entries.
    return sum(len(entry.encode("utf-8")) for entry in value) + 2 * max(0, len(value) - 1)


def header_reason(
    fields: Iterable[tuple[str, str | list[str] | None]],
    custom: dict[str, Any] | None,
    *,
    max_total: int,
    max_value: int,
) -> str | None:
    """Why the headers of a message are refused (a reserved name, a value or the whole too long), or None.

    Sizes are UTF-8 bytes of `Name: value` as submitted, counted in linear time before any parsing.
    """
    total = 0
    for name, value in fields:
        size = _text_bytes(value)
        if size and name == "Subject" and size > max_value:
            return f"header too long: {name}: {size} bytes (limit {max_value})"
        total += len(name) + 2 + size if size else 0
    for name, raw in (custom or {}).items():
        if is_structural_header(name):
            return f"invalid header: {name}"
        size = len(str(raw).encode("utf-8"))
        if size > max_value:
            return f"header too long: {name}: {size} bytes (limit {max_value})"
        total += len(name.encode("utf-8")) + 2 + size
    if total > max_total:
        return f"headers too large: {total} bytes (limit {max_total})"
    return None


def recipients_reason(*fields: str | list[str] | None, limit: int) -> str | None:
    """`too many recipients: N (limit M)` when to + cc + bcc (comma strings split) exceed the limit."""
    count = sum(len(split_addresses(field)) for field in fields)
    if count > limit:
        return f"too many recipients: {count} (limit {limit})"
    return None
