"""The reporter's state in `StateTable`: each tenant's outbox (`OUTBOX#<tenant>` chunks of owed events) and
its `SYNC/<tenant>` item (the lease of the one holder calling the tenant, backoff, revisions, last sync)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from mailproxy.adapters.aws.dynamo import (
    Item,
    batch_write,
    conditional_write,
    ddb,
    from_item,
    query_all,
    to_attr,
    to_item,
)
from mailproxy.adapters.aws.dynamo import chunks as split_into
from mailproxy.adapters.aws.expressions import Update, absent, at_most, equals, expression, less_than, partition
from mailproxy.logs import logger
from mailproxy.report_format import LEASE_SECONDS, MAX_EVENTS_PER_CHUNK, Owed, chunk_ts, encode_events
from mailproxy.settings import get_settings


def _state_table() -> str:
    return get_settings().state_table


def _sync_key(tenant_id: str) -> dict[str, Any]:
    return {"pk": {"S": "SYNC"}, "sk": {"S": tenant_id}}


def _outbox_pk(tenant_id: str) -> str:
    return f"OUTBOX#{tenant_id}"


def owe(tenant_id: str, owed: list[Owed], key: str) -> None:
    """Persist events owed to a tenant (rewriting the same chunks when a stream batch is retried),
    then bump the revision so that a holder that read the outbox before sees more is owed."""
    for n, part in enumerate(split_into(owed, MAX_EVENTS_PER_CHUNK)):
        item = {"pk": _outbox_pk(tenant_id), "sk": f"{key}#{n:03d}", "events": encode_events(part)}
        ddb().put_item(TableName=_state_table(), Item=to_item(item))
    ddb().update_item(
        TableName=_state_table(),
        Key=_sync_key(tenant_id),
        **expression(Update().add("owed_rev", 1)),
    )


def chunks(tenant_id: str) -> list[Item]:
    return list(
        query_all(
            TableName=_state_table(), **expression(key=partition("pk", _outbox_pk(tenant_id))), ConsistentRead=True
        )
    )


def oldest_owed_ts(tenant_id: str) -> int | None:
    """The time of the tenant's oldest outbox chunk, or None when nothing is owed."""
    reply = ddb().query(
        TableName=_state_table(),
        **expression(key=partition("pk", _outbox_pk(tenant_id)), projection=["sk"]),
        ConsistentRead=True,
        Limit=1,
    )
    found = reply.get("Items") or []
    return chunk_ts(str(from_item(found[0])["sk"])) if found else None


def drop_chunks(tenant_id: str, chunks: list[Item]) -> None:
    """Delete these chunks as read, each unless rewritten since (a conditional delete per chunk: a round
    drops one or two)."""
    for chunk in chunks:
        conditional_write(
            ddb().delete_item,
            TableName=_state_table(),
            Key={"pk": to_attr(_outbox_pk(tenant_id)), "sk": to_attr(str(chunk["sk"]))},
            **expression(condition=equals("events", bytes(chunk["events"]))),
        )


def _drop_all(tenant_id: str, sks: list[str]) -> None:
    batch_write(_state_table(), deletes=[{"pk": _outbox_pk(tenant_id), "sk": sk} for sk in sks])


def acquire(tenant_id: str, lease_id: str, now: int, *, ignore_backoff: bool) -> Item | None:
    """Take the tenant's lease (none held, and no backoff unless ignored); its SYNC item, or None."""
    free = absent("lease_until") | less_than("lease_until", now)
    if not ignore_backoff:
        free = free & (absent("retry_at") | at_most("retry_at", now))
    update = Update().set("lease_until", now + LEASE_SECONDS).set("lease_id", lease_id)
    reply = conditional_write(
        ddb().update_item,
        TableName=_state_table(),
        Key=_sync_key(tenant_id),
        **expression(update, free),
        ReturnValues="ALL_NEW",
    )
    if reply is None:
        return None
    return from_item(reply["Attributes"])


def release(tenant_id: str, lease_id: str, sets: dict[str, Any], removes: Iterable[str] = ()) -> Item | None:
    """Record a round's outcome and give the lease back; the new SYNC item, or None if the lease was lost."""
    update = Update()
    for name, value in sets.items():
        update.set(name, value)
    update.remove("lease_until", "lease_id", *removes)
    reply = conditional_write(
        ddb().update_item,
        TableName=_state_table(),
        Key=_sync_key(tenant_id),
        **expression(update, equals("lease_id", lease_id)),
        ReturnValues="ALL_NEW",
    )
    if reply is None:
        logger().warning("report lease lost before release", extra={"tenant_id": tenant_id})
        return None
    return from_item(reply["Attributes"])


def sync_states() -> dict[str, Item]:
    """Reporter state per tenant: last_sync_ts, next_sync_due, dnd_until, failures, owed and done revisions."""
    items = query_all(TableName=_state_table(), **expression(key=partition("pk", "SYNC")), ConsistentRead=True)
    return {str(i["sk"]): i for i in items}


def forget_tenant(tenant_id: str) -> None:
    """Drop the outbox and reporter state of a tenant that no longer exists (its messages are gone)."""
    _drop_all(tenant_id, [str(c["sk"]) for c in chunks(tenant_id)])
    ddb().delete_item(TableName=_state_table(), Key=_sync_key(tenant_id))
