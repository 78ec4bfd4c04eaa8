"""The reporter: delivery reports and heartbeats to each tenant's callback (API.md "Delivery reports").

Each write of a message record is a change (DynamoDB's stream on AWS, the change table on SQLite). The
events a batch of changes appended are persisted per tenant in the outbox (a chunk per tenant per batch,
keyed by the batch's first change so a retried batch rewrites the same chunk) before any call, so nothing
is lost while a client is down for days. One holder per tenant at a time (a lease) posts what is owed,
and on a 2xx moves the chunks to the tenant's ledger (which events were acknowledged, and when). Nothing
is written per message: `reported_ts` in a record's history is read from the ledger. Retention is an
expiry set with the result; a message whose events may still be owed when it expires is put back. The
scheduled run retries with backoff, sends heartbeats and acts on run-now requests.
"""

# No `from __future__ import annotations` here: typing.NamedTuple compiles every string annotation into a
# ForwardRef, which doubles the cost of making the NamedTuples below at each cold start.
import functools
import json
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

from mailproxy import clock, outbound_http, reputation, tenants
from mailproxy.domain import REPORTABLE_EVENTS, Record
from mailproxy.ledger import EventKey
from mailproxy.logs import logger
from mailproxy.messages import pinned_keys
from mailproxy.report_format import (
    Change,
    Owed,
    appended_events,
    build_report,
    chunk_key,
    decode_events,
    parse_reply,
    retry_delay,
    sync_url,
)
from mailproxy.report_http import ReportHttp, UrllibReportHttp
from mailproxy.settings import get_settings
from mailproxy.stores import stores

POST_TIMEOUT_SECONDS = 10.0  # a slow client cannot hold the function
MAX_EVENTS_PER_CALL = 500  # a backlog goes out in several calls, each acknowledged on its own
# A result and the change that carries it are written in the same second; an outbox chunk is named
# after its first change's time. This much leeway covers clocks and the stream's own lag.
CHUNK_CLOCK_SLACK_SECONDS = 3_600
MAX_ROUNDS = 20  # calls per tenant per invocation (a backlog, or results that arrived meanwhile)
ROUND_MARGIN_MS = 15_000  # time a round needs: the call's timeout plus the writes after it
WORKERS = 8

RemainingMs = Callable[[], int] | None
Item = Record


def forget_tenant(tenant_id: str) -> None:
    """Drop the reporter state of a tenant that no longer exists (its messages are gone)."""
    stores().outbox.forget_tenant(tenant_id)
    stores().ledger.forget(tenant_id)


# ---------------------------------------------------------------------- the changes of message records


def _forget_payloads(keys: list[tuple[str, str]]) -> None:
    """Delete the payloads of expired messages, unless the id was submitted again meanwhile."""
    by_tenant: dict[str, list[str]] = {}
    for tenant_id, message_id in keys:
        by_tenant.setdefault(tenant_id, []).append(message_id)
    gone = [
        (tenant_id, i)
        for tenant_id, ids in by_tenant.items()
        for present in [stores().messages.get_states(tenant_id, ids)]
        for i in ids
        if i not in present
    ]
    stores().payloads.delete_payloads(gone)


def _may_be_owed(item: Mapping[str, Any], oldest_owed: int | None) -> bool:
    """Whether an event of the message can still sit in its tenant's outbox: a chunk is named after the
    time of its first result, so none older than the message's last result can hold it."""
    if oldest_owed is None:
        return False
    times = [
        int(e.get("event_ts") or 0)
        for e in item.get("history") or []
        if isinstance(e, Mapping) and e.get("event_type") in REPORTABLE_EVENTS
    ]
    return bool(times) and oldest_owed <= max(times) + CHUNK_CLOCK_SLACK_SECONDS


def split_expired(items: list[Item]) -> tuple[list[Item], list[Item]]:
    """Expired messages as (to keep: their events may still be owed, to let go)."""
    keep: list[Item] = []
    gone: list[Item] = []
    by_tenant: dict[str, list[Item]] = {}
    for item in items:
        by_tenant.setdefault(str(item["tenant_id"]), []).append(item)
    found = stores().tenants.get_tenants(set(by_tenant))
    for tenant_id, group in by_tenant.items():
        tenant = found.get(tenant_id)
        oldest = (
            stores().outbox.oldest_owed_ts(tenant_id) if tenant is not None and tenant.get("client_base_url") else None
        )
        for item in group:
            (keep if _may_be_owed(item, oldest) else gone).append(item)
    return keep, gone


def _expired(images: list[Item], keys: list[tuple[str, str]], now: int) -> None:
    """Messages retention removed: put back those whose reports may still be owed (unreported messages are
    never removed by retention), and delete the pinned payloads of the others (a packed one goes with its pack)."""
    keep, gone = split_expired(images)
    expires = now + get_settings().report_retention_seconds
    for item in keep:
        stores().messages.restore(item, expires_at=expires)
    seen = {(str(i["tenant_id"]), str(i["id"])) for i in images}
    _forget_payloads(pinned_keys(gone) + [k for k in keys if k not in seen])


def handle_changes(changes: list[Change], *, http: ReportHttp | None = None, remaining_ms: RemainingMs = None) -> bool:
    """A batch of changes of message records: persist the events each tenant is owed, then try to report
    them now. False when the owed events could not be stored: the whole batch must come again (each chunk
    is then written again under the same key)."""
    now = clock.now_ts()
    owed: dict[str, list[Owed]] = {}
    keys: dict[str, str] = {}
    expired: list[Item] = []
    expired_keys: list[tuple[str, str]] = []
    for change in changes:
        if change.expired:
            expired_keys.append((change.tenant_id, change.id))
            if change.old is not None:
                expired.append(change.old)
            continue
        # A message put back after its retention removal carries events that were owed before.
        if change.new is None or change.new.get("restored"):
            continue
        try:
            events = appended_events(change.old, change.new)
        except (KeyError, TypeError, ValueError, AttributeError):
            logger().exception("unreadable change skipped", extra={"tenant_id": change.tenant_id})
            continue
        if not events:
            continue
        owed.setdefault(change.tenant_id, []).extend(events)
        keys.setdefault(change.tenant_id, chunk_key(change.ts, change.seq, now))

    plans: list[tuple[Item, bool, bool]] = []
    try:
        if expired_keys:
            _expired(expired, expired_keys, now)
        found = stores().tenants.get_tenants(set(owed)) if owed else {}
        for tenant_id, events in owed.items():
            tenant = found.get(tenant_id)
            if tenant is None or not tenant.get("client_base_url"):
                continue  # deleted (its messages go with it), or nobody to report to
            stores().outbox.owe(tenant_id, events, keys[tenant_id])
            plans.append((tenant, False, False))
    except Exception:
        logger().exception("could not record owed reports: the batch comes back whole")
        return False
    if plans:
        _serve(plans, http, remaining_ms)
    return True


def handle_stream(
    records: list[dict[str, Any]], *, http: ReportHttp | None = None, remaining_ms: RemainingMs = None
) -> dict[str, Any]:
    """A batch of MessagesTable stream records (AWS); the partial batch response names the batch's first
    record when the owed events could not be stored, so that the whole batch comes back."""
    from mailproxy.adapters.aws.stream import changes

    if handle_changes(changes(records), http=http, remaining_ms=remaining_ms):
        return {"batchItemFailures": []}
    first = str(records[0].get("dynamodb", {}).get("SequenceNumber", "")) if records else ""
    return {"batchItemFailures": [{"itemIdentifier": first}] if first else []}


# ---------------------------------------------------------------------- one tenant's calls


@functools.cache
def _pool() -> ThreadPoolExecutor:
    # Tenants are called side by side (each call may wait its full timeout); marks are written in parallel.
    return ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="reporter")


def _time_left(remaining_ms: RemainingMs) -> bool:
    return remaining_ms is None or remaining_ms() > ROUND_MARGIN_MS


def _take(chunk_items: list[Item], limit: int) -> tuple[list[Item], bool]:
    """Whole chunks, oldest first, up to `limit` events (at least one chunk); whether more remain."""
    used: list[Item] = []
    count = 0
    for chunk in sorted(chunk_items, key=lambda c: str(c["sk"])):
        events = decode_events(bytes(chunk["events"]))
        if used and count + len(events) > limit:
            return used, True
        used.append({**chunk, "owed": events})
        count += len(events)
    return used, False


class Round(NamedTuple):
    """What one call to a tenant did."""

    called: bool = False
    more: bool = False  # something is still owed: call again now


def _round(tenant: Item, sync: Item, lease_id: str, *, heartbeat: bool, http: ReportHttp) -> Round:
    """One call (or none when nothing is owed and no heartbeat is wanted), holding the tenant's lease."""
    tenant_id = str(tenant["id"])
    seen_rev = int(sync.get("owed_rev") or 0)
    used, capped = _take(stores().outbox.chunks(tenant_id), MAX_EVENTS_PER_CALL)
    # A stream batch retried after its chunk was acknowledged writes the chunk again: skip what the ledger has.
    previous = stores().ledger.acknowledged_in(tenant_id, [str(c["sk"]) for c in used])
    seen: set[EventKey] = set()
    owed: list[Owed] = []
    fresh: dict[str, list[EventKey]] = {}  # chunk key → the events this call reports
    for chunk in used:
        sk = str(chunk["sk"])
        for event in chunk["owed"]:
            if event.key not in previous.get(sk, {}) and event.key not in seen:
                seen.add(event.key)
                owed.append(event)
                fresh.setdefault(sk, []).append(event.key)
    report = build_report(owed)
    settled = {} if capped else {"done_rev": seen_rev}
    if not report and not heartbeat:
        stores().outbox.drop_chunks(tenant_id, used)  # everything listed was acknowledged already
        stores().outbox.release(tenant_id, lease_id, settled)
        return Round(more=capped)

    now = clock.now_ts()
    paused = reputation.report_entries(tenant)  # told at every report while paused (docs/suppressions.md)
    body = json.dumps(
        {"delivery_report": report, **({"paused_accounts": paused} if paused else {})}, separators=(",", ":")
    ).encode()
    extra = {"tenant_id": tenant_id, "entries": len(report)}
    try:
        headers = {"Content-Type": "application/json", **outbound_http.auth_headers(tenants.client_auth(tenant))}
        answer = http.post(sync_url(tenant), headers=headers, body=body, timeout=POST_TIMEOUT_SECONDS)
    except Exception as exc:
        failures = int(sync.get("failures") or 0) + 1
        retry_at = now + retry_delay(failures)
        reason = str(exc) or type(exc).__name__
        logger().warning(f"Report to {tenant_id} failed ({reason}): retry at {retry_at}", extra=extra)
        stores().outbox.release(
            tenant_id, lease_id, {"failures": failures, "retry_at": retry_at, "last_error": reason[:500]}
        )
        return Round(called=True)

    acknowledged = clock.now_ts()
    # The ledger first: chunks that outlive a crash here are found acknowledged by the next round and dropped.
    stores().ledger.record(
        tenant_id, {sk: {**previous.get(sk, {}), **dict.fromkeys(keys, acknowledged)} for sk, keys in fresh.items()}
    )
    stores().outbox.drop_chunks(tenant_id, used)
    reply = parse_reply(answer)
    interval = get_settings().sync_interval
    sets: dict[str, Any] = {**settled, "last_sync_ts": acknowledged, "failures": 0}
    removes = ["retry_at", "last_error", "expect_more"]  # expect_more: written before issue 16, read by nothing
    if reply.next_sync_after is not None and reply.next_sync_after > acknowledged:
        # Do-not-disturb: no heartbeat before then (the first one exactly then); events still go out.
        sets["dnd_until"] = sets["next_sync_due"] = reply.next_sync_after
    else:
        removes.append("dnd_until")
        # Whatever `queued` says: the results of what the client is submitting go out from the stream as soon as
        # they exist, as every result does; an empty call at every tick would not bring them sooner (issue 16).
        sets["next_sync_due"] = acknowledged + interval
    logger().info(
        f"Report posted to {tenant_id}: {len(report)} entries", extra={**extra, "client_queued": reply.queued}
    )
    new = stores().outbox.release(tenant_id, lease_id, sets, removes)
    more = capped or (new is not None and int(new.get("owed_rev") or 0) > int(new.get("done_rev") or 0))
    return Round(called=True, more=more)


def sync_tenant(
    tenant: Item,
    *,
    heartbeat: bool = False,
    ignore_backoff: bool = False,
    http: ReportHttp | None = None,
    remaining_ms: RemainingMs = None,
) -> int:
    """Report what the tenant is owed (and a heartbeat when asked), call after call while more is owed
    and time is left; how many calls were made. Does nothing while another holder has the tenant."""
    client = http if http is not None else UrllibReportHttp()
    tenant_id = str(tenant["id"])
    calls = 0
    for _ in range(MAX_ROUNDS):
        if not _time_left(remaining_ms):
            break
        lease_id = uuid.uuid4().hex
        sync = stores().outbox.acquire(tenant_id, lease_id, clock.now_ts(), ignore_backoff=ignore_backoff)
        if sync is None:
            break
        try:
            outcome = _round(tenant, sync, lease_id, heartbeat=heartbeat and calls == 0, http=client)
        except Exception:
            stores().outbox.release(tenant_id, lease_id, {})
            raise
        calls += 1 if outcome.called else 0
        if not outcome.more:
            break
        ignore_backoff = False
    return calls


def _serve(plans: list[tuple[Item, bool, bool]], http: ReportHttp | None, remaining_ms: RemainingMs) -> int:
    """Run sync_tenant for each (tenant, heartbeat, ignore_backoff) side by side; total calls made."""

    def one(plan: tuple[Item, bool, bool]) -> int:
        tenant, heartbeat, ignore_backoff = plan
        try:
            return sync_tenant(
                tenant, heartbeat=heartbeat, ignore_backoff=ignore_backoff, http=http, remaining_ms=remaining_ms
            )
        except Exception:
            # What is owed stays in the outbox: the next scheduled run tries again.
            logger().exception("report round failed", extra={"tenant_id": tenant.get("id")})
            return 0

    if len(plans) == 1:
        return one(plans[0])
    return sum(_pool().map(one, plans))


# ---------------------------------------------------------------------- the schedule


def run_schedule(*, http: ReportHttp | None = None, remaining_ms: RemainingMs = None) -> dict[str, int]:
    """One scheduled run: retries of what is owed (after backoff), heartbeats, run-now requests."""
    now = clock.now_ts()
    requests = stores().service.run_now_requests()
    flush_all = "*" in requests
    syncs = stores().outbox.sync_states()
    plans: list[tuple[Item, bool, bool]] = []
    known: set[str] = set()
    for tenant in stores().tenants.list_tenants():
        tenant_id = str(tenant["id"])
        known.add(tenant_id)
        if not tenant.get("client_base_url"):
            continue
        plan = _plan(tenant, syncs.get(tenant_id, {}), now, forced=tenant_id in requests, flush_all=flush_all)
        if plan is not None:
            plans.append(plan)
    for tenant_id in set(syncs) - known:
        forget_tenant(tenant_id)
    calls = _serve(plans, http, remaining_ms) if plans else 0
    for scope, requested_at in requests.items():
        stores().service.clear_run_now(scope, requested_at)
    return {"tenants": len(plans), "calls": calls, "run_now": len(requests)}


def _plan(
    tenant: Item, sync: Mapping[str, Any], now: int, *, forced: bool, flush_all: bool
) -> tuple[Item, bool, bool] | None:
    """(tenant, heartbeat, ignore_backoff) when the tenant should be called now, else None."""
    owed = int(sync.get("owed_rev") or 0) > int(sync.get("done_rev") or 0)
    ignore_backoff = forced or flush_all
    retry_at = sync.get("retry_at")
    if retry_at is not None and int(retry_at) > now and not ignore_backoff:
        return None
    in_dnd = sync.get("dnd_until") is not None and int(sync["dnd_until"]) > now
    due = sync.get("next_sync_due") is None or int(sync["next_sync_due"]) <= now
    # No heartbeat for an inactive tenant; a tenant key's run-now calls even inside do-not-disturb.
    heartbeat = bool(tenant.get("active", True)) and (forced or (due and not in_dnd))
    if not owed and not heartbeat:
        return None
    return tenant, heartbeat, ignore_backoff


# ---------------------------------------------------------------------- entry point and retention


def handle_event(event: Mapping[str, Any], remaining_ms: RemainingMs = None) -> dict[str, Any]:
    """The ReporterFunction: stream batches carry `Records`; anything else is the schedule."""
    records = event.get("Records")
    if isinstance(records, list):
        return handle_stream(records, remaining_ms=remaining_ms)
    return dict(run_schedule(remaining_ms=remaining_ms))
