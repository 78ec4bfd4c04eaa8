"""The bounce poller's state on AWS, in StateTable: each mailbox's position and the sealed VERP signing key.

| pk | sk | item |
|---|---|---|
| `BOUNCE#<tenant_id>` | `<account_id>` or `*` (the tenant's own mailbox) | `identity`, `uidvalidity`, `last_uid`, `updated_at` |
| `BOUNCE_KEY` | `VERP` | `sealed`: the signing key, sealed by KMS (context `service/verp`) |
"""

from __future__ import annotations

from typing import Any

from mailproxy.adapters.aws.dynamo import Item, batch_write, conditional_write, ddb, from_item, query_all, to_item
from mailproxy.adapters.aws.expressions import absent, expression, partition
from mailproxy.settings import get_settings


def _table() -> str:
    return get_settings().state_table


def _key(mailbox: str) -> dict[str, Any]:
    tenant_id, _, scope = mailbox.partition("/")
    return {"pk": {"S": f"BOUNCE#{tenant_id}"}, "sk": {"S": scope or "*"}}


def position(mailbox: str) -> Item | None:
    """The mailbox's `identity`, `uidvalidity` and `last_uid`, or None."""
    reply = ddb().get_item(TableName=_table(), Key=_key(mailbox), ConsistentRead=True)
    return from_item(reply["Item"]) if "Item" in reply else None


def save_position(mailbox: str, *, identity: str, uidvalidity: int, last_uid: int, now: int) -> None:
    """Remember where the poller stopped in the mailbox. BounceFunction's runs do not overlap (a timeout under
    its schedule's minute, a reserved concurrency of 1 unless IntakeReservedConcurrency is 0); when two do, the
    last write wins and at worst a report is read again (its events are recorded once)."""
    key = _key(mailbox)
    item = {"pk": key["pk"]["S"], "sk": key["sk"]["S"], "identity": identity, "uidvalidity": uidvalidity}
    ddb().put_item(TableName=_table(), Item=to_item({**item, "last_uid": last_uid, "updated_at": now}))


def forget_tenant(tenant_id: str) -> None:
    """Drop the positions of a deleted tenant's mailboxes."""
    pk = f"BOUNCE#{tenant_id}"
    items = query_all(TableName=_table(), **expression(key=partition("pk", pk), projection=["sk"]))
    batch_write(_table(), deletes=[{"pk": pk, "sk": str(i["sk"])} for i in items])


_SIGNING_KEY = {"pk": {"S": "BOUNCE_KEY"}, "sk": {"S": "VERP"}}


def sealed_signing_key() -> bytes | None:
    """The sealed signing key, or None before the first VERP account was saved."""
    reply = ddb().get_item(TableName=_table(), Key=_SIGNING_KEY, ConsistentRead=True)
    return bytes(from_item(reply["Item"])["sealed"]) if "Item" in reply else None


def offer_signing_key(sealed: bytes) -> bytes:
    """Store `sealed` unless a key is stored; the stored one."""
    item = {"pk": "BOUNCE_KEY", "sk": "VERP", "sealed": sealed}
    if conditional_write(ddb().put_item, TableName=_table(), Item=to_item(item), **expression(condition=absent("pk"))):
        return sealed
    stored = sealed_signing_key()
    if stored is None:  # cannot happen: the put was refused because the item exists
        raise RuntimeError("the VERP signing key vanished")
    return stored
