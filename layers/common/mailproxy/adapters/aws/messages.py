"""Message records in `MessagesTable`: one small item per message, whose status changes."""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from mailproxy.adapters.aws.dynamo import (
    Item,
    batch_get,
    batch_write,
    conditional_write,
    ddb,
    from_item,
    is_conditional_failure,
    query_all,
    to_attr,
)
from mailproxy.adapters.aws.expressions import (
    Condition,
    Update,
    absent,
    at_most,
    equals,
    exists,
    expression,
    is_in,
    lacks,
    partition,
)
from mailproxy.domain import AlreadyFinal, EventType, MessageStatus, Outcome, Submission
from mailproxy.messages import (
    EARLY_SLACK_SECONDS,
    PARK_SHARD,
    abandoned_reason,
    event,
    rejected_record,
    retained_until,
)
from mailproxy.settings import get_settings


def _table() -> str:
    return get_settings().messages_table


@functools.cache
def _pool() -> ThreadPoolExecutor:
    # Conditional writes cannot be batched; a few threads keep a 1000-message request fast.
    return ThreadPoolExecutor(max_workers=16, thread_name_prefix="messages")


def _key(tenant_id: str, message_id: str) -> dict[str, Any]:
    return {"tenant_id": {"S": tenant_id}, "id": {"S": message_id}}


def get_state(tenant_id: str, message_id: str) -> Item | None:
    """The state item of one message, or None."""
    reply = ddb().get_item(TableName=_table(), Key=_key(tenant_id, message_id), ConsistentRead=True)
    return from_item(reply["Item"]) if "Item" in reply else None


def get_states(tenant_id: str, ids: list[str]) -> dict[str, Item]:
    """id → state item for the existing messages among `ids` of one tenant."""
    unique = list(dict.fromkeys(ids))
    items = batch_get(_table(), [{"tenant_id": tenant_id, "id": i} for i in unique])
    return {str(i["id"]): i for i in items}


def submit(
    tenant_id: str,
    message_id: str,
    *,
    uid: str,
    rev: str,
    account_id: str,
    priority: int,
    batch_code: str | None,
    status: MessageStatus,
    deferred_ts: int | None,
    park_ts: int | None,
    pack: str | None,
    journal: str,
    now: int,
) -> bool:
    """Create or overwrite an unsent message; True if it is new. Raises AlreadyFinal otherwise."""
    update = (
        Update()
        .set_if_absent("pk", uid)
        .set("rev", rev)
        .set("account_id", account_id)
        .set("priority", priority)
        .set("status", status)
        .set_if_absent("created_at", now)
        .set_if_absent("created_by", journal)
        .set("updated_at", now)
        .set("attempts", 0)
        .append("history", [event(EventType.QUEUED, now)])
    )
    update.remove("error", "error_ts", "claim_id", "claim_ts")
    for name, value in (("batch_code", batch_code), ("deferred_ts", deferred_ts), ("pack", pack)):
        if value is None:
            update.remove(name)
        else:
            update.set(name, value)
    if park_ts is None:
        update.remove("park_shard", "park_ts")
    else:
        update.set("park_shard", PARK_SHARD).set("park_ts", park_ts)
    unsent = is_in("status", (MessageStatus.PENDING, MessageStatus.DEFERRED, MessageStatus.SUSPENDED))
    try:
        reply = ddb().update_item(
            TableName=_table(),
            Key=_key(tenant_id, message_id),
            **expression(update, absent("id") | unsent),
            ReturnValues="ALL_OLD",
        )
    except Exception as exc:
        if is_conditional_failure(exc):
            raise AlreadyFinal(message_id) from exc
        raise
    return "id" not in reply.get("Attributes", {})


def submit_many(tenant_id: str, submissions: list[Submission], *, journal: str, now: int) -> list[bool | None]:
    """`submit` each (one conditional update each, side by side): True (new), False (an unsent one overwritten)
    or None (already final, left as it was) per submission, in order."""

    def one(s: Submission) -> bool | None:
        try:
            return submit(
                tenant_id,
                s.id,
                uid=s.uid,
                rev=s.rev,
                account_id=s.account_id,
                priority=s.priority,
                batch_code=s.batch_code,
                status=s.status,
                deferred_ts=s.deferred_ts,
                park_ts=s.park_ts,
                pack=s.pack,
                journal=journal,
                now=now,
            )
        except AlreadyFinal:
            return None

    return list(_pool().map(one, submissions))


def record_rejected(
    tenant_id: str, message_id: str, *, uid: str, reason: str, account_id: str | None, now: int
) -> bool:
    """Record a message rejected at submission as failed (only if the id is new); True if recorded."""
    return _put_if_absent(
        rejected_record(tenant_id, message_id, uid=uid, reason=reason, account_id=account_id, now=now)
    )


def _put_if_absent(item: Item) -> bool:
    """Write a whole message item unless its id exists; False when it does."""
    return (
        conditional_write(
            ddb().put_item,
            TableName=_table(),
            Item={k: to_attr(v) for k, v in item.items()},
            **expression(condition=absent("id")),
        )
        is not None
    )


def list_states(tenant_id: str) -> list[Item]:
    """Every message state item of a tenant."""
    return list(query_all(TableName=_table(), **expression(key=partition("tenant_id", tenant_id)), ConsistentRead=True))


def delete_state(tenant_id: str, message_id: str) -> Item | None:
    """Delete a message's state item; the deleted item, or None if there was none."""
    reply = ddb().delete_item(TableName=_table(), Key=_key(tenant_id, message_id), ReturnValues="ALL_OLD")
    return from_item(reply["Attributes"]) if "Attributes" in reply else None


def delete_states(keys: list[tuple[str, str]]) -> None:
    """Delete many state items (no conditions: for cascades and retention)."""
    batch_write(_table(), deletes=[{"tenant_id": t, "id": i} for t, i in keys])


def release_suspended(tenant_id: str, message_id: str, *, now: int) -> Item | None:
    """Turn a suspended message back to pending (on activation); the new item, or None if it changed."""
    update = Update().set("status", MessageStatus.PENDING).set("updated_at", now)
    reply = _update_where(
        tenant_id, message_id, update, equals("status", MessageStatus.SUSPENDED), ReturnValues="ALL_NEW"
    )
    if reply is None:
        return None
    return from_item(reply["Attributes"])


def _update_if(tenant_id: str, message_id: str, update: Update, condition: Condition) -> bool:
    """Apply `update` to a message if `condition` holds; False when it does not (a lost race, not an error)."""
    return _update_where(tenant_id, message_id, update, condition) is not None


def _update_where(
    tenant_id: str, message_id: str, update: Update, condition: Condition, **options: Any
) -> dict[str, Any] | None:
    """Apply `update` to a message if `condition` holds: DynamoDB's reply, or None when it does not."""
    return conditional_write(
        ddb().update_item,
        TableName=_table(),
        Key=_key(tenant_id, message_id),
        **expression(update, condition),
        **options,
    )


def claim(tenant_id: str, message_id: str, *, rev: str, claim_id: str, now: int, stale_before: int) -> Item | None:
    """Take a message for sending; the claimed item, or None when it is gone, stale, final or held by a live claim.

    `claims` on the item counts the claims since its last recorded result (`finish` resets it): above one,
    earlier claims did not finish (a crash, a timeout) and this one recovered theirs.
    """
    update = (
        Update()
        .set("status", MessageStatus.SENDING)
        .set("claim_id", claim_id)
        .set("claim_ts", now)
        .set("updated_at", now)
        .add("claims", 1)
    )
    takeable = is_in("status", (MessageStatus.PENDING, MessageStatus.DEFERRED)) | (
        equals("status", MessageStatus.SENDING) & at_most("claim_ts", stale_before)
    )
    # A copy that arrives before the message is due (a duplicate of a delayed one) is not taken.
    due = absent("deferred_ts") | at_most("deferred_ts", now + EARLY_SLACK_SECONDS)
    condition = equals("rev", rev) & takeable & due
    reply = _update_where(tenant_id, message_id, update, condition, ReturnValues="ALL_NEW")
    if reply is None:
        return None
    return from_item(reply["Attributes"])


def claim_many(keys: list[tuple[str, str, str]], *, claim_id: str, now: int, stale_before: int) -> list[Item | None]:
    """`claim` each (tenant_id, id, rev), one after the other: the claimed items, None where a claim was refused."""
    return [
        claim(tenant_id, message_id, rev=rev, claim_id=claim_id, now=now, stale_before=stale_before)
        for tenant_id, message_id, rev in keys
    ]


def finish(
    tenant_id: str,
    message_id: str,
    *,
    claim_id: str,
    status: MessageStatus,
    now: int,
    history_event: dict[str, Any] | None,
    outcome: Outcome,
    fields: dict[str, Any] | None = None,
    remove: tuple[str, ...] = (),
) -> bool:
    """Record the result of a claimed message (only while the claim is ours); False if it was lost."""
    update = Update().set("status", status).set("updated_at", now).set("outcome", outcome).set("outcome_by", claim_id)
    for name, value in (fields or {}).items():
        update.set(name, value)
    if history_event is not None:
        update.append("history", [history_event])
    update.remove("claim_id", "claim_ts", "claims", *remove)
    return _update_if(tenant_id, message_id, update, equals("claim_id", claim_id))


def abandon(tenant_id: str, message_id: str, *, claim_id: str, attempts: int, now: int) -> bool:
    """Fail a message whose stale claim `claim_id` was its last allowed attempt; False if it was taken over."""
    reason = abandoned_reason(attempts)
    return finish(
        tenant_id,
        message_id,
        claim_id=claim_id,
        status=MessageStatus.ERROR,
        now=now,
        history_event=event(EventType.ERROR, now, reason),
        outcome=Outcome.ERROR,
        fields={"error": reason, "error_ts": now, "expires_at": retained_until(now)},
    )


def add_event(tenant_id: str, message_id: str, event: dict[str, Any], *, key: str, now: int) -> bool:
    """Append a later history event (a bounce, a complaint) unless one under `key` is there; False if it is, or
    if the message is gone. The key joins the string set `event_keys` in the same conditional update."""
    update = Update().append("history", [event]).add("event_keys", frozenset([key])).set("updated_at", now)
    return _update_if(tenant_id, message_id, update, exists("id") & lacks("event_keys", key))


def unpark(tenant_id: str, message_id: str, *, park_ts: int, now: int) -> bool:
    """Take a due message off the parked index once it is back on a queue; False if it changed meanwhile."""
    update = Update().set("updated_at", now).remove("park_shard", "park_ts")
    return _update_if(tenant_id, message_id, update, equals("park_ts", park_ts))


def due_parked(now: int, limit: int = 500) -> list[Item]:
    """Parked messages whose time has come (keys, priority and park_ts from the sparse index)."""
    reply = ddb().query(
        TableName=_table(),
        IndexName="ParkedIndex",
        **expression(key=partition("park_shard", PARK_SHARD) & at_most("park_ts", now)),
        Limit=limit,
    )
    return [from_item(i) for i in reply.get("Items", [])]


def restore(item: Item, *, expires_at: int) -> bool:
    """Put back a message TTL removed while its reports may still be owed, marked `restored` so that
    its events are not owed twice; False if the id was submitted again meanwhile."""
    return _put_if_absent({**item, "expires_at": expires_at, "restored": True})


def extend_expiry(tenant_id: str, message_id: str, *, expires_at: int) -> bool:
    """Move the retention expiry of a final message; False if it is not one (any more)."""
    update = Update().set("expires_at", expires_at)
    final = exists("id") & is_in("status", (MessageStatus.SENT, MessageStatus.ERROR))
    return _update_if(tenant_id, message_id, update, final)
