"""The report ledger: which events each tenant acknowledged, and when.

The reporter records, per outbox chunk it delivered, the events acknowledged under it (keyed like the
chunk), so acknowledging a call costs a write per chunk, not per message. A record's `reported_ts`
and "fully reported" (for cleanup) are read from here. Entries expire a day after the messages they
describe. Stored by the adapters (`ports.Ledger`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mailproxy.compression import compress_json, decompress_json
from mailproxy.domain import REPORTABLE_EVENTS

EventKey = tuple[str, int, str, int]  # (message id, history index, event_type, event_ts)


SLACK_SECONDS = 86_400  # the ledger outlives the messages it describes by a day


def event_key(message_id: str, index: int, event: Mapping[str, Any]) -> EventKey:
    """The ledger key of the `index`-th history event of a message."""
    return (message_id, int(index), str(event.get("event_type")), int(event.get("event_ts") or 0))


def encode_acks(acks: Mapping[EventKey, int]) -> bytes:
    """Acknowledged event keys with their `acked_ts`, compressed (an item is billed by its size)."""
    return compress_json(sorted([[*key, ts] for key, ts in acks.items()]))


def decode_acks(blob: bytes) -> dict[EventKey, int]:
    """Acknowledged event keys and their `acked_ts`, from their compressed form."""
    return {(str(i), int(n), str(t), int(ts)): int(at) for i, n, t, ts, at in decompress_json(blob)}


def reported_ts(item: Mapping[str, Any], acks: Mapping[EventKey, int]) -> list[int | None]:
    """The `reported_ts` of each history event of a message (None: not acknowledged, or not reportable)."""
    message_id = str(item["id"])
    return [
        acks.get(event_key(message_id, index, event)) if isinstance(event, Mapping) else None
        for index, event in enumerate(item.get("history") or [])
    ]


def fully_reported(item: Mapping[str, Any], acks: Mapping[EventKey, int]) -> bool:
    """True when every reportable event of the message has been acknowledged by the tenant."""
    message_id = str(item["id"])
    return all(
        event_key(message_id, index, event) in acks
        for index, event in enumerate(item.get("history") or [])
        if isinstance(event, Mapping) and event.get("event_type") in REPORTABLE_EVENTS
    )
