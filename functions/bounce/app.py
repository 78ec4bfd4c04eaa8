"""BounceFunction: every minute, one poll of every bounce mailbox (docs/bounces.md)."""

from typing import Any

from mailproxy.bounces import handle_event
from mailproxy.logs import configure_logging

configure_logging("BounceFunction")


def handler(event: dict[str, Any], context: Any) -> dict[str, int]:
    """Read each mailbox's new reports and record them on the messages they name."""
    return handle_event(event, remaining_ms=getattr(context, "get_remaining_time_in_millis", None))
