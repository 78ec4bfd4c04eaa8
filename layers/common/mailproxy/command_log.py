"""The command log's shared rules: how long entries are kept, how a page is cut, what a cursor is."""

from __future__ import annotations

import re
import time
import uuid

from mailproxy import urlsafe
from mailproxy.errors import BadRequest
from mailproxy.settings import get_settings

COMMAND_SK = r"[0-9]{12}#[0-9]{17}#[0-9a-f]{32}"  # compiled on first use (re caches it): not at a cold start
DAY = 86400
MAX_COMMAND_PAGE_BYTES = 4_000_000
CLOCK_SKEW = 300


def new_entry_key(ts: int) -> str:
    """The sort key of a new entry at `ts` (it matches COMMAND_SK): the microsecond clock orders the calls of
    one second, the uuid keeps concurrent ones apart."""
    return f"{ts:012d}#{time.time_ns() // 1000:017d}#{uuid.uuid4().hex}"


def expires_at(ts: int) -> int:
    """When an entry logged at `ts` leaves the log (GMP_COMMAND_LOG_RETENTION_DAYS later)."""
    return ts + get_settings().command_log_retention_days * DAY


def encode_cursor(sk: str) -> str:
    """The opaque cursor of a page that continues before the entry `sk`."""
    return urlsafe.cursor("before", sk)


def decode_cursor(cursor: str) -> str:
    """The sort key a cursor continues before; BadRequest if it is not one this service issued."""
    try:
        before = urlsafe.cursor_value(cursor, "before")
    except ValueError as exc:
        raise BadRequest("Invalid cursor") from exc
    if not isinstance(before, str) or not re.fullmatch(COMMAND_SK, before):
        raise BadRequest("Invalid cursor")
    return before
