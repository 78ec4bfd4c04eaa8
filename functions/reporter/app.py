"""ReporterFunction: MessagesTable stream batches and the schedule in, delivery reports to each tenant out."""

from typing import Any

from mailproxy.logs import configure_logging
from mailproxy.reports import handle_event

configure_logging("ReporterFunction")


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Report what the stream says is owed, or run the scheduled retries, heartbeats and run-now requests."""
    return handle_event(event, getattr(context, "get_remaining_time_in_millis", None))
