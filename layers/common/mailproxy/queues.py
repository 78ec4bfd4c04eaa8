"""The priority queues: one SQS queue per priority, batched sends, payload inline when it fits."""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from mailproxy.aws import client
from mailproxy.logs import logger
from mailproxy.settings import get_settings
from mailproxy.stores import stores

MAX_DELAY_SECONDS = 900  # SQS DelaySeconds limit: later schedules wait in DynamoDB
MAX_BATCH_BYTES = 240_000  # under SQS's 256 KiB per message and per SendMessageBatch
MAX_INLINE_PAYLOAD = 200_000


class QueueEntry(NamedTuple):
    """One message to put on the queue of its priority."""

    tenant_id: str
    id: str
    rev: str
    priority: int
    delay: int = 0
    payload: dict[str, Any] | None = None

    def body(self) -> str:
        """The queue message body (payload left out when it would not fit)."""
        body: dict[str, Any] = {"tenant_id": self.tenant_id, "id": self.id, "rev": self.rev}
        if self.payload is not None:
            with_payload = json.dumps({**body, "payload": self.payload}, separators=(",", ":"), ensure_ascii=False)
            if len(with_payload.encode("utf-8")) <= MAX_INLINE_PAYLOAD:
                return with_payload
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def parse_body(body: str) -> dict[str, Any]:
    """A queue message body as a dict with tenant_id, id, rev and maybe payload."""
    value: dict[str, Any] = json.loads(body)
    return value


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


def stored_entries(items: list[dict[str, Any]], now: int) -> list[QueueEntry]:
    """Queue entries for stored message state items, their payloads inline when the stored revision matches."""
    loaded = stores().payloads.load_payloads(items)
    entries = []
    for item in items:
        stored = loaded.get((str(item["tenant_id"]), str(item["id"])))
        entries.append(
            QueueEntry(
                tenant_id=str(item["tenant_id"]),
                id=str(item["id"]),
                rev=str(item["rev"]),
                priority=int(item.get("priority", 2)),
                delay=min(MAX_DELAY_SECONDS, max(0, int(item.get("deferred_ts") or 0) - now)),
                payload=stored[1] if stored and stored[0] == item["rev"] else None,
            )
        )
    return entries


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
