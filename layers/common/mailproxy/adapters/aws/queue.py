"""The priority queues on SQS: batched sends, the dead-letter queue's depth."""

from __future__ import annotations

from typing import Any

from mailproxy.aws import client
from mailproxy.logs import logger
from mailproxy.queues import MAX_DELAY_SECONDS, QueueEntry
from mailproxy.settings import get_settings

MAX_BATCH_BYTES = 240_000  # under SQS's 256 KiB per message and per SendMessageBatch


def enqueue(entries: list[QueueEntry]) -> None:
    """Send every entry to its priority's queue (SendMessageBatch by 10 and by size); raise if any fails."""
    settings = get_settings()
    by_priority: dict[int, list[QueueEntry]] = {}
    for entry in entries:
        by_priority.setdefault(entry.priority, []).append(entry)
    failures: list[str] = []
    for priority in sorted(by_priority):
        url = settings.queue_url(priority)
        batch: list[dict[str, Any]] = []
        size = 0
        for entry in by_priority[priority]:
            body = entry.body()
            length = len(body.encode("utf-8"))
            if batch and (len(batch) == 10 or size + length > MAX_BATCH_BYTES):
                failures += _send_batch(url, batch)
                batch, size = [], 0
            record: dict[str, Any] = {"Id": str(len(batch)), "MessageBody": body}
            if entry.delay > 0:
                record["DelaySeconds"] = min(entry.delay, MAX_DELAY_SECONDS)
            batch.append(record)
            size += length
        if batch:
            failures += _send_batch(url, batch)
    if failures:
        raise RuntimeError(f"SQS refused {len(failures)} message(s): {failures[:3]}")


def _send_batch(url: str, batch: list[dict[str, Any]]) -> list[str]:
    reply = client("sqs").send_message_batch(QueueUrl=url, Entries=batch)
    return [f"{f.get('Code')}: {f.get('Message')}" for f in reply.get("Failed", [])]


DLQ_ATTRIBUTES = (
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
)


def dead_letter_depth() -> int | None:
    """Messages in the dead-letter queue (visible, in flight or delayed); None when it cannot be read."""
    url = get_settings().dead_letter_queue_url
    if not url:
        return None
    try:
        attributes = client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=list(DLQ_ATTRIBUTES))
    except Exception as exc:
        # A missing extra must not hide the counters: the series is left out and the cause logged.
        logger().warning(f"dead-letter queue depth unavailable: {type(exc).__name__}")
        return None
    values = attributes.get("Attributes", {})
    return sum(int(values.get(name, 0)) for name in DLQ_ATTRIBUTES)
