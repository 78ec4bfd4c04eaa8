"""SenderFunction: an SQS batch of messages in, the partial batch response out."""

from typing import Any

from mailproxy.logs import configure_logging
from mailproxy.sender import handle_batch

configure_logging("SenderFunction")


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Deliver the batch; failed records come back from SQS."""
    return handle_batch(event.get("Records", []), getattr(context, "get_remaining_time_in_millis", None))
