"""The report ledger in `StateTable`: which events each tenant acknowledged, and when.

The reporter writes one ledger item per outbox chunk it delivered (`LEDGER#<tenant>`, keyed like the
chunk), so acknowledging a call costs a write per chunk, not per message. A record's `reported_ts`
and "fully reported" (for cleanup) are read from here. Items expire a day after the messages they
describe.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from mailproxy.domain import REPORTABLE_EVENTS
from mailproxy.dynamo import Item, batch_get, batch_write, compress_json, decompress_json, query_all, to_attr
from mailproxy.settings import get_settings

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


def _table() -> str:
    return get_settings().state_table


def _pk(tenant_id: str) -> str:
    return f"LEDGER#{tenant_id}"


def acknowledged_in(tenant_id: str, chunk_keys: list[str]) -> dict[str, dict[EventKey, int]]:
    """The events already acknowledged under these chunk keys (what a retried stream batch wrote again)."""
    if not chunk_keys:
        return {}
    items = batch_get(_table(), [{"pk": _pk(tenant_id), "sk": sk} for sk in chunk_keys])
    return {str(i["sk"]): decode_acks(bytes(i["acks"])) for i in items}


def record(tenant_id: str, acked: Mapping[str, Mapping[EventKey, int]]) -> None:
    """Store, per chunk key, every event acknowledged under it and when (replacing what was there)."""
    retention = get_settings().report_retention_seconds
    puts = [
        {
            "pk": _pk(tenant_id),
            "sk": sk,
            "acks": encode_acks(acks),
            "expires_at": max(acks.values()) + retention + SLACK_SECONDS,
        }
        for sk, acks in acked.items()
        if acks
    ]
    batch_write(_table(), puts=puts)


def _items(tenant_id: str, **projection: str) -> Iterator[Item]:
    return query_all(
        TableName=_table(),
        KeyConditionExpression="pk = :p",
        ExpressionAttributeValues={":p": to_attr(_pk(tenant_id))},
        **projection,
    )


def acknowledged_events(tenant_id: str) -> dict[EventKey, int]:
    """Every acknowledged event of the tenant's retained messages, and when (its `reported_ts`)."""
    acks: dict[EventKey, int] = {}
    for item in _items(tenant_id):
        acks.update(decode_acks(bytes(item["acks"])))
    return acks


def forget(tenant_id: str) -> None:
    """Drop a deleted tenant's ledger."""
    keys = [{"pk": i["pk"], "sk": i["sk"]} for i in _items(tenant_id, ProjectionExpression="pk, sk")]
    batch_write(_table(), deletes=keys)


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
