"""Queue entries: what goes on the priority queues (one per priority; payload inline when it fits)."""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from mailproxy.stores import stores

MAX_DELAY_SECONDS = 900  # SQS DelaySeconds limit: later schedules wait in DynamoDB


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
