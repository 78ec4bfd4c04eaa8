"""Service state in `StateTable`: pending counts, journals of work in flight, command log, run-now."""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

from mailproxy import clock, reputation
from mailproxy.adapters.aws.dynamo import (
    Item,
    batch_write,
    ddb,
    from_item,
    is_conditional_failure,
    is_transaction_conflict,
    query_all,
    to_item,
)
from mailproxy.adapters.aws.expressions import (
    Update,
    at_most,
    begins_with,
    between,
    equals,
    exists,
    expression,
    partition,
)
from mailproxy.domain import BounceCounter, Counter, JournalKind
from mailproxy.settings import get_settings

# The reputation window's buckets in an account's COUNTERS item: `rep_s_<bucket>` sends, `rep_b_<bucket>`
# bounces, `rep_c_<bucket>` complaints (mailproxy.reputation).
REP_SENT, REP_BOUNCES, REP_COMPLAINTS = "rep_s_", "rep_b_", "rep_c_"
REP_FIELDS = {REP_SENT: "sent", REP_BOUNCES: "bounces", REP_COMPLAINTS: "complaints"}


def _table() -> str:
    return get_settings().state_table


def pending_update(tenant_id: str, delta: int) -> dict[str, Any]:
    """The TransactWriteItems action that adds `delta` to a tenant's pending count."""
    return {
        "Update": {
            "TableName": _table(),
            "Key": {"pk": {"S": "PENDING"}, "sk": {"S": tenant_id}},
            **expression(Update().add("n", delta)),
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
    items = query_all(TableName=_table(), **expression(key=partition("pk", "PENDING")), ConsistentRead=True)
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
    """Drop a deleted tenant's pending count and run-now request. Its /metrics counters stay: counters never
    go down, not even when a tenant is deleted (docs/monitoring.md)."""
    batch_write(_table(), deletes=[{"pk": pk, "sk": tenant_id} for pk in ("PENDING", "RUNNOW")])


def counted_accounts(tenant_id: str) -> set[str]:
    """Every account the tenant ever had: each gets /metrics counters when it is created, and they stay."""
    items = query_all(
        TableName=_table(),
        **expression(key=partition("pk", "COUNTERS") & begins_with("sk", f"{tenant_id}#"), projection=["sk"]),
        ConsistentRead=True,
    )
    return {str(i["sk"]).partition("#")[2] for i in items}


def open_journal(kind: JournalKind, keys: list[dict[str, Any]], *, due_ts: int) -> str:
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
            **expression(condition=exists("pk")),
        }
    }


def due_journals(now: int) -> list[Item]:
    """Journal entries still open at `now` (their work must be finished by the scheduler)."""
    return list(
        query_all(
            TableName=_table(),
            **expression(key=partition("pk", "JOURNAL") & at_most("sk", f"{now:012d}#~")),
            ConsistentRead=True,
        )
    )


COMMAND_LOG_INDEX = "CommandLogByTenant"
COMMAND_QUERY_PAGE = 1000  # entries per Query: a page stopped by its size cap reads little past it


def _log_day(ts: int) -> str:
    """The UTC day of a command-log entry (`2026-12-03`): its partition."""
    return time.strftime("%Y-%m-%d", time.gmtime(ts))


def log_command(
    *,
    ts: int,
    endpoint: str,
    tenant_id: str | None,
    payload: Any,
    response_status: int,
    source_ip: str | None = None,
    request_id: str | None = None,
) -> None:
    """Append a mutating call to the command log (kept `GMP_COMMAND_LOG_RETENTION_DAYS`, then removed by TTL)."""
    # Imported here, as where the log is read: no function's cold start loads the command log's rules.
    from mailproxy.command_log import expires_at, new_entry_key

    day = _log_day(ts)
    item = {
        # One partition per UTC day, and per tenant and day through CommandLogByTenant: a read queries the
        # days it needs, newest first, and stops at its limit; no partition grows without bound.
        "pk": f"CMDLOG#{day}",
        "sk": new_entry_key(ts),
        "command_ts": ts,
        "endpoint": endpoint,
        "tenant_id": tenant_id,
        # As JSON text: a request body may nest deeper, or hold keys and numbers, that a DynamoDB map cannot.
        "payload": json.dumps(payload, ensure_ascii=False),
        "response_status": response_status,
        "source_ip": source_ip,
        "request_id": request_id,
        "expires_at": expires_at(ts),
    }
    if tenant_id is not None:
        item["log_tenant"] = f"{tenant_id}#{day}"
    ddb().put_item(TableName=_table(), Item=to_item(item))


def count_command_log_failure() -> None:
    """Count a command-log entry that could not be written (`gmp_command_log_write_failures_total`)."""
    ddb().update_item(
        TableName=_table(),
        Key={"pk": {"S": "SERVICE"}, "sk": {"S": "COUNTERS"}},
        **expression(Update().add("command_log_write_failures", 1)),
    )


def service_counters() -> Item:
    """The service-wide /metrics counters (command-log write failures)."""
    reply = ddb().get_item(
        TableName=_table(), Key={"pk": {"S": "SERVICE"}, "sk": {"S": "COUNTERS"}}, ConsistentRead=True
    )
    return from_item(reply["Item"]) if "Item" in reply else {}


def list_commands(
    *,
    tenant_id: str | None,
    since_ts: int | None,
    until_ts: int | None,
    limit: int,
    cursor: str | None = None,
    now: int,
) -> tuple[list[dict[str, Any]], str | None]:
    """Logged commands, newest first, at most `limit`, and the cursor of the next page (None at the end)."""
    # Imported here: the command log is read on this route only, not on any function's cold-start path.
    from mailproxy.command_log import CLOCK_SKEW, DAY, MAX_COMMAND_PAGE_BYTES, decode_cursor, encode_cursor

    # Nothing older than the retention exists (TTL may lag: what it has not removed yet is not shown).
    oldest = max(since_ts or 0, now - get_settings().command_log_retention_days * DAY)
    # Another container's clock may run a little ahead; nothing is logged later than that.
    newest = min(until_ts if until_ts is not None else now + CLOCK_SKEW, now + CLOCK_SKEW)
    high = f"{newest:012d}#~"
    if cursor is not None:
        high = min(high, decode_cursor(cursor))
        newest = min(newest, int(high[:12]))
    low = f"{oldest:012d}#"
    found: list[Item] = []
    read_bytes = 0
    day = newest // DAY
    # Read up to `limit` + 1 entries, or up to the first one past the page's size cap (then it is the
    # next page's first): never the whole of a large `limit` that the cap would cut anyway.
    while day >= oldest // DAY and len(found) <= limit and read_bytes <= MAX_COMMAND_PAGE_BYTES and low < high:
        for item in _query_day(tenant_id, _log_day(day * DAY), low, high, limit + 1 - len(found)):
            found.append(item)
            read_bytes += len(str(item.get("payload") or ""))
            if read_bytes > MAX_COMMAND_PAGE_BYTES and len(found) > 1:
                break
        day -= 1
    page: list[Item] = []
    size = 0
    for item in found[:limit]:
        size += len(str(item.get("payload") or ""))
        if page and size > MAX_COMMAND_PAGE_BYTES:
            break  # a Lambda reply holds 6 MB: the rest comes with the cursor
        page.append(item)
    next_cursor = encode_cursor(str(page[-1]["sk"])) if len(found) > len(page) else None
    commands = [
        {
            **{
                k: item.get(k)
                for k in ("command_ts", "endpoint", "tenant_id", "response_status", "source_ip", "request_id")
            },
            "payload": json.loads(item["payload"]) if isinstance(item.get("payload"), str) else item.get("payload"),
        }
        for item in page
    ]
    return commands, next_cursor


def _query_day(tenant_id: str | None, day: str, low: str, high: str, wanted: int) -> Iterator[Item]:
    """Up to `wanted` entries of one day's partition with `low <= sk < high`, newest first, read as consumed
    (`COMMAND_QUERY_PAGE` per query at most)."""
    if tenant_id is None:
        index: dict[str, Any] = {}
        key = partition("pk", f"CMDLOG#{day}")
    else:
        index = {"IndexName": COMMAND_LOG_INDEX}
        key = partition("log_tenant", f"{tenant_id}#{day}")
    items = query_all(
        TableName=_table(),
        **index,
        **expression(key=key & between("sk", low, high)),
        ScanIndexForward=False,
        Limit=min(wanted + 1, COMMAND_QUERY_PAGE),  # + 1: `high` itself may come back (a cursor)
    )
    entries = (item for item in items if str(item["sk"]) < high)
    return itertools.islice(entries, wanted)


def service_started_at(now: int) -> int:
    """When the service first ran (recorded once, persisted)."""
    reply = ddb().update_item(
        TableName=_table(),
        Key={"pk": {"S": "SERVICE"}, "sk": {"S": "INFO"}},
        **expression(Update().set_if_absent("started_at", now)),
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
    items = query_all(TableName=_table(), **expression(key=partition("pk", "RUNNOW")), ConsistentRead=True)
    return {str(i["sk"]): int(i["requested_at"]) for i in items}


def mark_journal_counted(sk: str) -> None:
    """Note on an open journal entry that its pending counts were applied (only the enqueue is left)."""
    ddb().update_item(
        TableName=_table(),
        Key={"pk": {"S": "JOURNAL"}, "sk": {"S": sk}},
        **expression(Update().set("counted", True)),
    )


def sync_states() -> dict[str, Item]:
    """Reporter state per tenant: last_sync_ts, next_sync_due, dnd_until."""
    items = query_all(TableName=_table(), **expression(key=partition("pk", "SYNC")), ConsistentRead=True)
    return {str(i["sk"]): i for i in items}


def counter_rows() -> list[dict[str, Any]]:
    """The persisted /metrics counters: one row per tenant and account."""
    rows = []
    items = query_all(TableName=_table(), **expression(key=partition("pk", "COUNTERS")), ConsistentRead=True)
    for item in items:
        tenant_id, _, account_id = str(item["sk"]).partition("#")
        rows.append({**item, "tenant_id": tenant_id, "account_id": account_id})
    return sorted(rows, key=lambda r: (r["tenant_id"], r["account_id"]))


def add_tenant_counters(tenant_id: str, deltas: dict[str, int]) -> None:
    """Add to a tenant's own /metrics counters (those of no single account: quota rejections)."""
    used = {name: value for name, value in deltas.items() if value}
    if not used:
        return
    ddb().update_item(
        TableName=_table(),
        Key={"pk": {"S": "TENANT_COUNTERS"}, "sk": {"S": tenant_id}},
        **expression(_additions(used)),
    )


def add_account_counters(tenant_id: str, account_id: str, deltas: Mapping[BounceCounter, int]) -> None:
    """Add to an account's /metrics counters outside a send batch (bounces and complaints)."""
    used = {str(name): value for name, value in deltas.items() if value}
    if used:
        ddb().update_item(
            TableName=_table(),
            Key={"pk": {"S": "COUNTERS"}, "sk": {"S": f"{tenant_id}#{account_id}"}},
            **expression(_additions(used)),
        )


def tenant_counter_rows() -> dict[str, Item]:
    """The persisted per-tenant /metrics counters, by tenant id."""
    items = query_all(TableName=_table(), **expression(key=partition("pk", "TENANT_COUNTERS")), ConsistentRead=True)
    return {str(i["sk"]): i for i in items}


def counter_update(tenant_id: str, account_id: str, deltas: Mapping[Counter, int]) -> dict[str, Any]:
    """The TransactWriteItems action that adds to an account's /metrics counters; its sends also go to the
    current bucket of its reputation window, and the buckets that left the window are dropped (the same write:
    counting sends for the reputation guard costs no write of its own)."""
    used = {str(name): value for name, value in deltas.items() if value}
    update = _additions(used)
    if deltas.get(Counter.SENT):
        now = clock.now_ts()
        update.add(f"{REP_SENT}{reputation.bucket_of(now)}", deltas[Counter.SENT])
        update.remove(*(f"{REP_SENT}{b}" for b in reputation.stale_buckets(now)))
    return {
        "Update": {
            "TableName": _table(),
            "Key": {"pk": {"S": "COUNTERS"}, "sk": {"S": f"{tenant_id}#{account_id}"}},
            **expression(update),
        }
    }


def _counters_key(tenant_id: str, account_id: str) -> dict[str, Any]:
    return {"pk": {"S": "COUNTERS"}, "sk": {"S": f"{tenant_id}#{account_id}"}}


def _reputation_buckets(item: Mapping[str, Any]) -> dict[str, dict[int, int]]:
    """The reputation buckets of a COUNTERS item, by field (sent, bounces, complaints) and bucket."""
    found: dict[str, dict[int, int]] = {field: {} for field in REP_FIELDS.values()}
    for name, value in item.items():
        prefix, bucket = name[: len(REP_SENT)], name[len(REP_SENT) :]
        if prefix in REP_FIELDS and bucket.lstrip("-").isdigit():
            found[REP_FIELDS[prefix]][int(bucket)] = int(value)
    return found


def add_reputation(tenant_id: str, account_id: str, *, bounces: int, complaints: int, now: int) -> dict[str, int]:
    """Add bounces and complaints to the current bucket of the account's window; the window's totals. Buckets
    that left the window are dropped by a second write, when there are any."""
    bucket = reputation.bucket_of(now)
    update = Update()
    if bounces:
        update.add(f"{REP_BOUNCES}{bucket}", bounces)
    if complaints:
        update.add(f"{REP_COMPLAINTS}{bucket}", complaints)
    if bounces or complaints:
        reply = ddb().update_item(
            TableName=_table(), Key=_counters_key(tenant_id, account_id), ReturnValues="ALL_NEW", **expression(update)
        )
        item = from_item(reply.get("Attributes") or {})
    else:
        reply = ddb().get_item(TableName=_table(), Key=_counters_key(tenant_id, account_id), ConsistentRead=True)
        item = from_item(reply.get("Item") or {})
    window = reputation.window_buckets(now)
    buckets = _reputation_buckets(item)
    stale = [f"{prefix}{b}" for prefix, field in REP_FIELDS.items() for b in buckets[field] if b < window.start]
    if stale:
        ddb().update_item(
            TableName=_table(), Key=_counters_key(tenant_id, account_id), **expression(Update().remove(*stale))
        )
    return {field: sum(n for b, n in counts.items() if b in window) for field, counts in buckets.items()}


def reset_reputation(tenant_id: str, account_id: str) -> None:
    """Forget the bounces and complaints of the account's window (the sends stay)."""
    reply = ddb().get_item(TableName=_table(), Key=_counters_key(tenant_id, account_id), ConsistentRead=True)
    item = from_item(reply.get("Item") or {})
    names = [name for name in item if name.startswith((REP_BOUNCES, REP_COMPLAINTS))]
    if names:
        ddb().update_item(
            TableName=_table(), Key=_counters_key(tenant_id, account_id), **expression(Update().remove(*names))
        )


def set_paused_gauge(tenant_id: str, account_id: str, paused: bool) -> None:
    """Mirror an account's pause into its COUNTERS item (`paused`: 1 or 0), which /metrics reads anyway."""
    ddb().update_item(
        TableName=_table(),
        Key=_counters_key(tenant_id, account_id),
        **expression(Update().set("paused", 1 if paused else 0)),
    )


def _additions(deltas: Mapping[str, int]) -> Update:
    """An update adding each delta to its counter."""
    update = Update()
    for name, delta in deltas.items():
        update.add(name, delta)
    return update


def close_batch(
    journal_sk: str, *, counters: Mapping[tuple[str, str], Mapping[Counter, int]], pending: Mapping[str, int]
) -> None:
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


def settle_batch(
    journal_sk: str,
    *,
    counters: Mapping[tuple[str, str], Mapping[Counter, int]],
    pending: Mapping[str, int],
    open_keys: list[dict[str, Any]],
) -> None:
    """Apply what a batch recorded and keep its journal entry open for `open_keys` only (messages left to crash
    recovery), all or nothing: the scheduler then finishes those alone and counts nothing of this batch twice."""
    actions = [counter_update(t, a, d) for (t, a), d in counters.items() if any(d.values())]
    actions += [pending_update(t, d) for t, d in pending.items() if d]
    actions.append(
        {
            "Update": {
                "TableName": _table(),
                "Key": {"pk": {"S": "JOURNAL"}, "sk": {"S": journal_sk}},
                **expression(Update().set("keys", open_keys), exists("pk")),
            }
        }
    )
    try:
        _transact(actions)
    except Exception as exc:
        if not is_conditional_failure(exc):
            raise
        # Already finished by the scheduler, which counted what the batch recorded.


TRANSACTION_ATTEMPTS = 4


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
    # Every batch adds to its tenants' PENDING items: two batches closing at once can conflict. The loser
    # tries again (its journal delete still guards the counts); a condition that failed is not retried.
    for attempt in range(TRANSACTION_ATTEMPTS):
        try:
            ddb().transact_write_items(TransactItems=actions)
            return
        except Exception as exc:
            if attempt + 1 == TRANSACTION_ATTEMPTS or not is_transaction_conflict(exc):
                raise
            time.sleep(0.02 * 2**attempt)


def clear_run_now(scope: str, requested_at: int) -> None:
    """Close a run-now request once acted on (a newer request of the same scope stays open)."""
    try:
        ddb().delete_item(
            TableName=_table(),
            Key={"pk": {"S": "RUNNOW"}, "sk": {"S": scope}},
            **expression(condition=equals("requested_at", requested_at)),
        )
    except Exception as exc:
        if not is_conditional_failure(exc):
            raise


def ensure_counters(tenant_id: str, account_id: str) -> None:
    """Give a new account its /metrics series at zero, so its first event shows as an increase."""
    update = Update()
    for name in Counter:
        update.set_if_absent(name, 0)
    ddb().update_item(
        TableName=_table(),
        Key={"pk": {"S": "COUNTERS"}, "sk": {"S": f"{tenant_id}#{account_id}"}},
        **expression(update),
    )
