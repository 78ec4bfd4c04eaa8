"""The command log's shared rules: how long entries are kept, how a page is cut, what a cursor is."""

from __future__ import annotations

import base64
import binascii
import json
import re

from mailproxy.errors import BadRequest

COMMAND_SK = r"[0-9]{12}#[0-9]{17}#[0-9a-f]{32}"  # compiled on first use (re caches it): not at a cold start
DAY = 86400
MAX_COMMAND_PAGE_BYTES = 4_000_000
CLOCK_SKEW = 300


def encode_cursor(sk: str) -> str:
    """The opaque cursor of a page that continues before the entry `sk`."""
    return base64.urlsafe_b64encode(json.dumps({"before": sk}).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The sort key a cursor continues before; BadRequest if it is not one this service issued."""
    try:
        decoded = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        before = decoded["before"]
    except (ValueError, TypeError, KeyError, binascii.Error) as exc:
        raise BadRequest("Invalid cursor") from exc
    if not isinstance(before, str) or not re.fullmatch(COMMAND_SK, before):
        raise BadRequest("Invalid cursor")
    return before
