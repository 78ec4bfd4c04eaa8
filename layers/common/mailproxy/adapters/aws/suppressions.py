"""The suppression list in `StateTable`: `SUPPRESS#<tenant>` (one item per address) and `SOFT#<tenant>` (the
soft bounces of an address, expired by the table's TTL a window after the last one)."""

from __future__ import annotations

from typing import Any

from mailproxy.adapters.aws.dynamo import (
    Item,
    batch_get,
    batch_write,
    conditional_write,
    ddb,
    from_item,
    query_all,
    to_item,
)
from mailproxy.adapters.aws.expressions import Update, absent, expression, partition
from mailproxy.domain import Record
from mailproxy.settings import get_settings

MAX_SORT_KEY_BYTES = 1024  # DynamoDB's limit; an empty sort key is refused too
MAX_SOFT_HITS = 50  # soft bounces kept per address: more than any sensible GMP_SOFT_BOUNCE_LIMIT


def _table() -> str:
    return get_settings().state_table


def _pk(tenant_id: str) -> str:
    return f"SUPPRESS#{tenant_id}"


def _soft_pk(tenant_id: str) -> str:
    return f"SOFT#{tenant_id}"


def _entry(item: Item) -> Record:
    return {k: v for k, v in item.items() if k not in ("pk", "sk")}


def put(tenant_id: str, entry: Record) -> bool:
    """Add (or replace) the entry of `entry["address"]`; True when the address was not suppressed."""
    item = {"pk": _pk(tenant_id), "sk": entry["address"], **entry, "tenant_id": tenant_id}
    reply = ddb().put_item(TableName=_table(), Item=to_item(item), ReturnValues="ALL_OLD")
    return "Attributes" not in reply


def add_if_absent(tenant_id: str, entry: Record) -> bool:
    """Add the entry of `entry["address"]` unless the address is listed (its entry is left as it is); True when
    it was added."""
    item = {"pk": _pk(tenant_id), "sk": entry["address"], **entry, "tenant_id": tenant_id}
    request = {"TableName": _table(), "Item": to_item(item), **expression(condition=absent("sk"))}
    return conditional_write(ddb().put_item, **request) is not None


def remove(tenant_id: str, address: str) -> bool:
    """Take an address off the list; False when it was not on it."""
    if not address or len(address.encode("utf-8", "surrogatepass")) > MAX_SORT_KEY_BYTES:
        return False  # no entry has such a key, and DynamoDB refuses to look one up (ValidationException)
    reply = ddb().delete_item(
        TableName=_table(), Key=to_item({"pk": _pk(tenant_id), "sk": address}), ReturnValues="ALL_OLD"
    )
    return "Attributes" in reply


def find(keys: set[tuple[str, str]]) -> dict[tuple[str, str], Record]:
    """The entries among (tenant_id, address) keys: one BatchGetItem per 100."""
    if not keys:
        return {}
    items = batch_get(_table(), [{"pk": _pk(t), "sk": a} for t, a in sorted(keys)])
    return {(str(i["tenant_id"]), str(i["sk"])): _entry(i) for i in items}


def list_entries(tenant_id: str, *, after: str | None, limit: int) -> list[Record]:
    """Up to `limit` entries of the tenant in address order, those after the address `after`."""
    request: dict[str, Any] = {"TableName": _table(), **expression(key=partition("pk", _pk(tenant_id)))}
    if after is not None:
        request["ExclusiveStartKey"] = to_item({"pk": _pk(tenant_id), "sk": after})
    found: list[Record] = []
    while len(found) < limit:
        reply = ddb().query(**request, Limit=limit - len(found), ConsistentRead=True)
        found.extend(_entry(from_item(i)) for i in reply.get("Items", []))
        if "LastEvaluatedKey" not in reply:
            break
        request["ExclusiveStartKey"] = reply["LastEvaluatedKey"]
    return found


def note_soft_bounce(tenant_id: str, address: str, *, ts: int, window_seconds: int) -> int:
    """Count a soft bounce of the address (appended to its item); how many fall in the window ending at `ts`."""
    key = to_item({"pk": _soft_pk(tenant_id), "sk": address})
    reply = ddb().update_item(
        TableName=_table(),
        Key=key,
        ReturnValues="ALL_NEW",
        **expression(Update().append("hits", [ts]).set("expires_at", ts + window_seconds)),
    )
    hits = [int(h) for h in from_item(reply["Attributes"]).get("hits", [])]
    recent = sorted(h for h in hits if h > ts - window_seconds)
    if len(hits) > MAX_SOFT_HITS:
        # Keep the item small (an update is billed by its size): only the window's hits matter. A hit another
        # caller appends meanwhile may be dropped, which only delays a suppression by one bounce.
        ddb().update_item(TableName=_table(), Key=key, **expression(Update().set("hits", recent[-MAX_SOFT_HITS:])))
    return len(recent)


def forget_tenant(tenant_id: str) -> None:
    """Drop a deleted tenant's list and soft-bounce counts."""
    for pk in (_pk(tenant_id), _soft_pk(tenant_id)):
        keys = [
            {"pk": pk, "sk": str(i["sk"])}
            for i in query_all(TableName=_table(), **expression(key=partition("pk", pk), projection=["sk"]))
        ]
        batch_write(_table(), deletes=keys)
