"""The report ledger in `StateTable` (`LEDGER#<tenant>`, one item per delivered outbox chunk)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from mailproxy.adapters.aws.dynamo import (
    Item,
    batch_get,
    batch_write,
    query_all,
)
from mailproxy.adapters.aws.expressions import expression, partition
from mailproxy.ledger import SLACK_SECONDS, EventKey, decode_acks, encode_acks
from mailproxy.settings import get_settings


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


def _items(tenant_id: str, projection: tuple[str, ...] = ()) -> Iterator[Item]:
    return query_all(TableName=_table(), **expression(key=partition("pk", _pk(tenant_id)), projection=projection))


def acknowledged_events(tenant_id: str) -> dict[EventKey, int]:
    """Every acknowledged event of the tenant's retained messages, and when (its `reported_ts`)."""
    acks: dict[EventKey, int] = {}
    for item in _items(tenant_id):
        acks.update(decode_acks(bytes(item["acks"])))
    return acks


def forget(tenant_id: str) -> None:
    """Drop a deleted tenant's ledger."""
    keys = [{"pk": i["pk"], "sk": i["sk"]} for i in _items(tenant_id, ("pk", "sk"))]
    batch_write(_table(), deletes=keys)
