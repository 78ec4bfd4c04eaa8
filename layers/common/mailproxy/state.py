"""Service state in `StateTable`: pending counts, journals of work in flight, command log, run-now."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from mailproxy.dynamo import (
    Item,
    batch_write,
    ddb,
    expired,
    from_item,
    is_conditional_failure,
    query_all,
    to_attr,
    to_item,
)
from mailproxy.settings import get_settings


def _table() -> str:
    return get_settings().state_table


def pending_update(tenant_id: str, delta: int) -> dict[str, Any]:
    """The TransactWriteItems action that adds `delta` to a tenant's pending count."""
    return {
        "Update": {
            "TableName": _table(),
            "Key": {"pk": {"S": "PENDING"}, "sk": {"S": tenant_id}},
            "UpdateExpression": "ADD n :d",
            "ExpressionAttributeValues": {":d": {"N": str(delta)}},
        }
    }


def add_pending(deltas: dict[str, int], *, journal_sk: str | None = None) -> None:
    """Apply pending-count deltas per tenant, and close a journal entry in the same transaction."""
    actions = [pending_update(t, d) for t, d in deltas.items() if d]
    if journal_sk is not None:
        actions.append(journal_delete(journal_sk))
    if not actions:
        return
    try:
        _transact(actions)
    except Exception as exc:
        if journal_sk is None or not is_conditional_failure(exc):
            raise


def pending_counts() -> dict[str, int]:
    """The exact pending count of every tenant that has had messages."""
    items = query_all(
        TableName=_table(),
        KeyConditionExpression="pk = :p",
        ExpressionAttributeValues={":p": {"S": "PENDING"}},
        ConsistentRead=True,
    )
    return {str(i["sk"]): int(i.get("n", 0)) for i in items}


def pending_count(tenant_id: str | None = None) -> int:
    """The pending count of one tenant, or of the whole service."""
    if tenant_id is None:
        return sum(pending_counts().values())
    reply = ddb().get_item(
        TableName=_table(), Key={"pk": {"S": "PENDING"}, "sk": {"S": tenant_id}}, ConsistentRead=True
    )
    return int(from_item(reply["Item"]).get("n", 0)) if "Item" in reply else 0


def forget_tenant(tenant_id: str) -> None:
    """Drop a deleted tenant's pending count (its messages are gone)."""
    ddb().delete_item(TableName=_table(), Key={"pk": {"S": "PENDING"}, "sk": {"S": tenant_id}})


def open_journal(kind: str, keys: list[dict[str, Any]], *, due_ts: int) -> str:
    """Record work in flight; the scheduler finishes it if it is still open at `due_ts`. Returns its sk."""
    sk = f"{due_ts:012d}#{uuid.uuid4().hex}"
    ddb().put_item(
        TableName=_table(),
        Item=to_item({"pk": "JOURNAL", "sk": sk, "kind": kind, "keys": keys, "due_ts": due_ts}),
    )
    return sk


def journal_delete(sk: str) -> dict[str, Any]:
    """The TransactWriteItems action that closes a journal entry."""
    # Conditional: whoever closes an entry first applies its counts; a second closer's transaction fails.
    return {
        "Delete": {
            "TableName": _table(),
            "Key": {"pk": {"S": "JOURNAL"}, "sk": {"S": sk}},
            "ConditionExpression": "attribute_exists(pk)",
        }
    }


def due_journals(now: int) -> list[Item]:
    """Journal entries still open at `now` (their work must be finished by the scheduler)."""
    return list(
        query_all(
            TableName=_table(),
            KeyConditionExpression="pk = :p AND sk <= :s",
            ExpressionAttributeValues={":p": {"S": "JOURNAL"}, ":s": {"S": f"{now:012d}#~"}},
            ConsistentRead=True,
        )
    )


def log_command(*, ts: int, endpoint: str, tenant_id: str | None, payload: Any, response_status: int) -> None:
    """Append a mutating call to the command log."""
    item = {
        "pk": "CMDLOG",
        # The microsecond clock orders the calls of one second; the uuid keeps concurrent ones apart.
        "sk": f"{ts:012d}#{time.time_ns() // 1000:017d}#{uuid.uuid4().hex}",
        "command_ts": ts,
        "endpoint": endpoint,
        "tenant_id": tenant_id,
        # As JSON text: a request body may nest deeper, or hold keys and numbers, that a DynamoDB map cannot.
        "payload": json.dumps(payload, ensure_ascii=False),
        "response_status": response_status,
    }
    ddb().put_item(TableName=_table(), Item=to_item(item))


def list_commands(
    *, tenant_id: str | None, since_ts: int | None, until_ts: int | None, limit: int
) -> tuple[list[dict[str, Any]], int]:
    """Logged commands, newest first, and how many match in all."""
    low = f"{max(since_ts or 0, 0):012d}#"
    high = f"{min(until_ts, 10**12 - 1):012d}#~" if until_ts is not None else "~"
    if low > high:
        return [], 0  # a window that ends before it starts: DynamoDB refuses BETWEEN with reversed bounds
    kwargs: dict[str, Any] = {
        "TableName": _table(),
        "KeyConditionExpression": "pk = :p AND sk BETWEEN :lo AND :hi",
        "ExpressionAttributeValues": {":p": {"S": "CMDLOG"}, ":lo": {"S": low}, ":hi": {"S": high}},
        "ScanIndexForward": False,
    }
    if tenant_id is not None:
        kwargs["FilterExpression"] = "tenant_id = :t"
        kwargs["ExpressionAttributeValues"][":t"] = to_attr(tenant_id)
    matches = [
        {
            **{k: item.get(k) for k in ("command_ts", "endpoint", "tenant_id", "response_status")},
            "payload": json.loads(item["payload"]) if isinstance(item.get("payload"), str) else item.get("payload"),
        }
        for item in query_all(**kwargs)
    ]
    return matches[:limit], len(matches)


def service_started_at(now: int) -> int:
    """When the service first ran (recorded once, persisted)."""
    reply = ddb().update_item(
        TableName=_table(),
        Key={"pk": {"S": "SERVICE"}, "sk": {"S": "INFO"}},
        UpdateExpression="SET started_at = if_not_exists(started_at, :n)",
        ExpressionAttributeValues={":n": to_attr(now)},
        ReturnValues="ALL_NEW",
    )
    return int(from_item(reply["Attributes"])["started_at"])


def scheduler_last_run() -> int | None:
    """When the scheduler last completed a round, or None if it never ran."""
    reply = ddb().get_item(
        TableName=_table(), Key={"pk": {"S": "SERVICE"}, "sk": {"S": "SCHEDULER"}}, ConsistentRead=True
    )
    return int(from_item(reply["Item"])["last_run_ts"]) if "Item" in reply else None


def mark_scheduler_run(now: int) -> None:
    """Record that the scheduler completed a round."""
    ddb().put_item(
        TableName=_table(),
        Item=to_item({"pk": "SERVICE", "sk": "SCHEDULER", "last_run_ts": now}),
    )


def request_run_now(scope: str, now: int) -> None:
    """Record a run-now request (`*` from the admin token, else the tenant id) for scheduler and reporter."""
    ddb().put_item(TableName=_table(), Item=to_item({"pk": "RUNNOW", "sk": scope, "requested_at": now}))


def run_now_requests() -> dict[str, int]:
    """Open run-now requests: scope → requested_at."""
    items = query_all(
        TableName=_table(),
        KeyConditionExpression="pk = :p",
        ExpressionAttributeValues={":p": {"S": "RUNNOW"}},
        ConsistentRead=True,
    )
    return {str(i["sk"]): int(i["requested_at"]) for i in items}


def mark_journal_counted(sk: str) -> None:
    """Note on an open journal entry that its pending counts were applied (only the enqueue is left)."""
    ddb().update_item(
        TableName=_table(),
        Key={"pk": {"S": "JOURNAL"}, "sk": {"S": sk}},
        UpdateExpression="SET counted = :t",
        ExpressionAttributeValues={":t": {"BOOL": True}},
    )


def sync_states() -> dict[str, Item]:
    """Reporter state per tenant: last_sync_ts, next_sync_due, dnd_until."""
    items = query_all(
        TableName=_table(),
        KeyConditionExpression="pk = :p",
        ExpressionAttributeValues={":p": {"S": "SYNC"}},
        ConsistentRead=True,
    )
    return {str(i["sk"]): i for i in items}


def counter_rows() -> list[dict[str, Any]]:
    """The persisted /metrics counters: one row per tenant and account."""
    rows = []
    items = query_all(
        TableName=_table(),
        KeyConditionExpression="pk = :p",
        ExpressionAttributeValues={":p": {"S": "COUNTERS"}},
        ConsistentRead=True,
    )
    for item in items:
        tenant_id, _, account_id = str(item["sk"]).partition("#")
        rows.append({**item, "tenant_id": tenant_id, "account_id": account_id})
    return sorted(rows, key=lambda r: (r["tenant_id"], r["account_id"]))


COUNTER_FIELDS = ("sent", "errors", "deferred", "rate_limited")
TENANT_COUNTER_FIELDS = ("quota_rejected",)


def add_tenant_counters(tenant_id: str, deltas: dict[str, int]) -> None:
    """Add to a tenant's own /metrics counters (those of no single account: quota rejections)."""
    used = {name: value for name, value in deltas.items() if value}
    if not used:
        return
    ddb().update_item(
        TableName=_table(),
        Key={"pk": {"S": "TENANT_COUNTERS"}, "sk": {"S": tenant_id}},
        UpdateExpression="ADD " + ", ".join(f"#{name} :{name}" for name in used),
        ExpressionAttributeNames={f"#{name}": name for name in used},
        ExpressionAttributeValues={f":{name}": {"N": str(value)} for name, value in used.items()},
    )


def tenant_counter_rows() -> dict[str, Item]:
    """The persisted per-tenant /metrics counters, by tenant id."""
    items = query_all(
        TableName=_table(),
        KeyConditionExpression="pk = :p",
        ExpressionAttributeValues={":p": {"S": "TENANT_COUNTERS"}},
        ConsistentRead=True,
    )
    return {str(i["sk"]): i for i in items}


def counter_update(tenant_id: str, account_id: str, deltas: dict[str, int]) -> dict[str, Any]:
    """The TransactWriteItems action that adds to an account's /metrics counters."""
    used = {name: value for name, value in deltas.items() if value}
    names = {f"#{name}": name for name in used}
    return {
        "Update": {
            "TableName": _table(),
            "Key": {"pk": {"S": "COUNTERS"}, "sk": {"S": f"{tenant_id}#{account_id}"}},
            "UpdateExpression": "ADD " + ", ".join(f"#{name} :{name}" for name in used),
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": {f":{name}": {"N": str(value)} for name, value in used.items()},
        }
    }


def close_batch(journal_sk: str, *, counters: dict[tuple[str, str], dict[str, int]], pending: dict[str, int]) -> None:
    """Apply a batch's counters and pending deltas and close its journal entry, all or nothing."""
    actions = [counter_update(t, a, d) for (t, a), d in counters.items() if any(d.values())]
    actions += [pending_update(t, d) for t, d in pending.items() if d]
    actions.append(journal_delete(journal_sk))
    # TransactWriteItems takes 100 actions; a batch of 10 messages needs far fewer.
    try:
        _transact(actions)
    except Exception as exc:
        if not is_conditional_failure(exc):
            raise
        # Already closed (by the scheduler finishing it, or the batch itself): its counts are in.


def _transact(actions: list[dict[str, Any]]) -> None:
    """Run actions as one transaction (the last one, the journal delete, guards all of them)."""
    if len(actions) == 1 and "Delete" in actions[0]:
        ddb().delete_item(**actions[0]["Delete"])
        return
    if len(actions) == 1 and "Update" in actions[0]:
        ddb().update_item(**actions[0]["Update"])
        return
    if len(actions) > 100:
        raise ValueError("a transaction takes at most 100 actions")
    ddb().transact_write_items(TransactItems=actions)


def clear_run_now(scope: str, requested_at: int) -> None:
    """Close a run-now request once acted on (a newer request of the same scope stays open)."""
    try:
        ddb().delete_item(
            TableName=_table(),
            Key={"pk": {"S": "RUNNOW"}, "sk": {"S": scope}},
            ConditionExpression="requested_at = :at",
            ExpressionAttributeValues={":at": to_attr(requested_at)},
        )
    except Exception as exc:
        if not is_conditional_failure(exc):
            raise


def ensure_counters(tenant_id: str, account_id: str) -> None:
    """Give a new account its /metrics series at zero, so its first event shows as an increase."""
    names = {f"#{name}": name for name in COUNTER_FIELDS}
    ddb().update_item(
        TableName=_table(),
        Key={"pk": {"S": "COUNTERS"}, "sk": {"S": f"{tenant_id}#{account_id}"}},
        UpdateExpression="SET " + ", ".join(f"#{name} = if_not_exists(#{name}, :zero)" for name in COUNTER_FIELDS),
        ExpressionAttributeNames=names,
        ExpressionAttributeValues={":zero": {"N": "0"}},
    )


def delete_expired(now: int) -> int:
    """Delete items whose `expires_at` has passed (the table's TTL, played by the local stack: a Scan)."""
    items = expired(_table(), now, projection="pk, sk")
    batch_write(_table(), deletes=[{"pk": i["pk"], "sk": i["sk"]} for i in items])
    return len(items)
