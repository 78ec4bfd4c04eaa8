"""Message records: their history events, retention and claim bookkeeping (stored by the adapters)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from mailproxy.domain import EventType, MessageStatus
from mailproxy.domain import Record as Item
from mailproxy.settings import get_settings

PARK_SHARD = "P"


EARLY_SLACK_SECONDS = 5  # clocks and SQS delays are not exact to the second


def retained_until(result_ts: int) -> int:
    """The retention expiry (`expires_at`, the table's TTL) of a message that got its final result at
    `result_ts`; the reporter puts back a message whose reports are still owed when it expires."""
    return result_ts + get_settings().report_retention_seconds


def event(event_type: EventType, ts: int, description: str | None = None, **extra: Any) -> dict[str, Any]:
    """A history event (reported to the tenant when its type is sent, error or deferred)."""
    value: dict[str, Any] = {"event_type": event_type, "event_ts": ts}
    if description is not None:
        value["description"] = description
    value.update({k: v for k, v in extra.items() if v is not None})
    return value


def unfinished_claims(item: Item) -> int:
    """How many claims of a claimed message ended without a recorded result before the current one."""
    return max(0, int(item.get("claims", 1)) - 1)


def abandoned_reason(attempts: int) -> str:
    """The error of a message whose claims kept ending unfinished (never sent again, reported as failed)."""
    return f"Abandoned after {attempts} attempts that did not finish (sender crashed or timed out)"


def rejected_record(
    tenant_id: str, message_id: str, *, uid: str, reason: str, account_id: str | None, now: int
) -> Item:
    """The record of a message refused at submission: failed at once with `reason`, kept for retention."""
    item: Item = {
        "tenant_id": tenant_id,
        "id": message_id,
        "pk": uid,
        "rev": "",
        "status": MessageStatus.ERROR,
        "error": reason,
        "error_ts": now,
        "priority": 2,
        "created_at": now,
        "updated_at": now,
        "attempts": 0,
        "history": [event(EventType.ERROR, now, reason)],
        "expires_at": retained_until(now),
    }
    if account_id:
        item["account_id"] = account_id
    return item


def pinned_keys(records: Iterable[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """(tenant_id, id) of the records whose payload is stored on its own (pinned), not in a pack."""
    return [(str(r["tenant_id"]), str(r["id"])) for r in records if not r.get("pack")]
