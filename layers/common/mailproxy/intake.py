"""Use cases of the REST API: messages in, listed, deleted; suspend, activate, run-now, status."""

from __future__ import annotations

import contextlib
import functools
import re
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from mailproxy import attachment_auth, clock, ledger, ratelimit, tenants
from mailproxy.addresses import is_valid_address, split_addresses
from mailproxy.auth import Principal, scope
from mailproxy.domain import FINAL, PENDING_STATUSES, UNSENT, JournalKind, MessageStatus, Submission
from mailproxy.errors import BadRequest, NotFound
from mailproxy.limits import header_reason, recipients_reason
from mailproxy.logs import logger
from mailproxy.models import MAX_MESSAGES_PER_REQUEST, AddMessages, Message, priority_of
from mailproxy.queues import MAX_DELAY_SECONDS, QueueEntry, stored_entries
from mailproxy.settings import get_settings
from mailproxy.stores import stores


@functools.cache
def _pool() -> ThreadPoolExecutor:
    # Deletions are conditional writes, which cannot be batched: a few threads keep a long list fast.
    return ThreadPoolExecutor(max_workers=16, thread_name_prefix="intake")


def require_tenant(tenant_id: str) -> dict[str, Any]:
    """The stored tenant, or 404 `Tenant '<id>' not found`."""
    tenant = stores().tenants.get_tenant(tenant_id)
    if tenant is None:
        raise NotFound(f"Tenant '{tenant_id}' not found")
    return tenant


_HEADER_NAME = re.compile(r"[!-9;-~]+")  # RFC 5322 field-name: printable ASCII but the colon


def rejection_reason(message: Message, account_ids: set[str]) -> str | None:
    """Why a schema-valid message cannot be accepted, or None."""
    # Counts and sizes first: linear time, and they bound the parsing below (20 000 addresses took 0.25 s).
    settings = get_settings()
    headers = (("From", message.from_), ("To", message.to), ("Cc", message.cc), ("Reply-To", message.reply_to))
    reason = recipients_reason(message.to, message.cc, message.bcc, limit=settings.max_recipients) or header_reason(
        (*headers, ("Subject", message.subject), ("Message-ID", message.message_id)),
        message.headers,
        max_total=settings.max_header_bytes,
        max_value=settings.max_header_value_bytes,
    )
    if reason is not None:
        return reason
    if not split_addresses(message.to):
        return "missing to"
    fields: list[str | list[str] | None] = [
        message.from_,
        message.to,
        message.cc,
        message.bcc,
        message.reply_to,
        message.return_path,
    ]
    for field in fields:
        for entry in split_addresses(field):
            if not is_valid_address(entry):
                return f"invalid address: {entry}"
    for name, value in (message.headers or {}).items():
        if not _HEADER_NAME.fullmatch(name) or any(c in str(value) for c in "\r\n\x00"):
            return f"invalid header: {name}"
    if message.account_id not in account_ids:
        return "account not found for tenant"
    return None


def add_messages(principal: Principal, request: AddMessages) -> dict[str, Any]:
    """Validate, store and enqueue messages (API.md `POST /commands/add-messages`)."""
    if len(request.messages) > MAX_MESSAGES_PER_REQUEST:
        raise BadRequest({"error": f"Cannot enqueue more than {MAX_MESSAGES_PER_REQUEST} messages at once"})
    now = clock.now_ts()
    default_priority = priority_of(request.default_priority, 2)
    by_tenant: dict[str, dict[str, Message]] = {}
    for message in request.messages:
        tenant_id = scope(principal, message.tenant_id)
        by_tenant.setdefault(tenant_id, {})[message.id] = message  # a repeated id: the last one wins
    stored = {tenant_id: require_tenant(tenant_id) for tenant_id in by_tenant}

    rejected: list[dict[str, str]] = []
    queued = 0
    for tenant_id, batch in by_tenant.items():
        accepted, refused = _submit_tenant_batch(stored[tenant_id], batch, default_priority, now)
        queued += accepted
        rejected += refused
    if queued == 0 and any(r["reason"] != "already sent" for r in rejected):
        raise BadRequest({"error": "No message was queued", "rejected": rejected})
    return {"ok": True, "queued": queued, "rejected": rejected}


def _submit_tenant_batch(
    tenant: dict[str, Any], batch: dict[str, Message], default_priority: int, now: int
) -> tuple[int, list[dict[str, str]]]:
    tenant_id = str(tenant["id"])
    account_ids = stores().tenants.account_ids(tenant_id)
    refused: list[tuple[Message, str]] = []
    plans: list[dict[str, Any]] = []
    sealed: dict[str, str] = {}  # attachment secrets already encrypted in this request
    for message in batch.values():
        reason = rejection_reason(message, account_ids)
        if reason is not None:
            refused.append((message, reason))
        else:
            plans.append(_plan(tenant, message, default_priority, now, sealed))
    plans, over_quota, quota = _within_quota(tenant, plans, now)
    with _quota_given_back_on_failure(tenant_id, quota):  # until the messages are written
        refused += [(batch[p["id"]], reason) for p, reason in over_quota]
        rejected = _record_refusals(tenant_id, refused, now)
        if not plans:
            return 0, rejected
        journal, pack = _store_payloads(tenant_id, plans, now)

    submissions = [
        Submission(
            id=plan["id"],
            uid=uuid.uuid4().hex,
            rev=plan["rev"],
            account_id=plan["account_id"],
            priority=plan["priority"],
            batch_code=plan["batch_code"],
            status=plan["status"],
            deferred_ts=plan["deferred_ts"],
            park_ts=plan["park_ts"],
            pack=pack if plan["enqueue"] else None,
        )
        for plan in plans
    ]
    outcomes = stores().messages.submit_many(tenant_id, submissions, journal=journal, now=now)
    new = sum(1 for o in outcomes if o is True)
    if quota is not None:
        # Only new messages count: an overwrite of an unsent id, or an id already sent, gives its slot back.
        stores().rates.release_quota(tenant_id, quota, len(outcomes) - new)
    entries: list[QueueEntry] = []
    for plan, outcome in zip(plans, outcomes, strict=True):
        if outcome is None:  # a sender finished it between our read and our write
            rejected.append({"id": plan["id"], "reason": "already sent"})
        elif plan["enqueue"]:
            entries.append(
                QueueEntry(
                    tenant_id=tenant_id,
                    id=plan["id"],
                    rev=plan["rev"],
                    priority=plan["priority"],
                    delay=plan["delay"],
                    payload=plan["payload"],
                )
            )
    try:
        stores().queue.enqueue(entries)
    except Exception:
        # The messages are stored: the open journal makes the scheduler enqueue them after the grace period.
        logger().exception("enqueue failed; the scheduler will recover the batch", extra={"tenant_id": tenant_id})
        stores().counters.add_pending({tenant_id: new}, journal_sk=None)
        stores().journals.mark_journal_counted(journal)
    else:
        stores().counters.add_pending({tenant_id: new}, journal_sk=journal)
    accepted = sum(1 for o in outcomes if o is not None)
    order = {message_id: n for n, message_id in enumerate(batch)}
    return accepted, sorted(rejected, key=lambda r: order[r["id"]])


QUOTA_REASON = "tenant quota exceeded"


def _record_refusals(tenant_id: str, refused: list[tuple[Message, str]], now: int) -> list[dict[str, str]]:
    """Record each refused message as failed (its payload listed as submitted) and say why, `already sent`
    where it was. Only the refused ids are read: the conditional writes refuse what was already sent."""
    rejected: list[dict[str, str]] = []
    existing = stores().messages.get_states(tenant_id, [m.id for m, _ in refused]) if refused else {}
    recorded: list[Message] = []
    for message, reason in refused:
        current = existing.get(message.id)
        if current is not None and current.get("status") not in UNSENT:
            reason = "already sent"
        elif current is None and stores().messages.record_rejected(
            tenant_id, message.id, uid=uuid.uuid4().hex, reason=reason, account_id=message.account_id, now=now
        ):
            recorded.append(message)
        rejected.append({"id": message.id, "reason": reason})
    if recorded:
        # Its record lists the payload as submitted (API.md); only after the record exists, so that a
        # message submitted meanwhile under the same id keeps its own payload. Never sent: kept as shown.
        stores().payloads.store(
            tenant_id, [(m.id, "", shown_payload({**m.payload(), "tenant_id": tenant_id})) for m in recorded]
        )
    quota_rejected = sum(1 for r in rejected if r["reason"].startswith(QUOTA_REASON))
    if quota_rejected:
        stores().counters.add_tenant_counters(tenant_id, {"quota_rejected": quota_rejected})
    return rejected


def _store_payloads(tenant_id: str, plans: list[dict[str, Any]], now: int) -> tuple[str, str | None]:
    """Open the intake journal of the plans and store their payloads: what goes on a queue now shares one
    pack, what waits is pinned, one item each. The journal's key and the pack's."""
    journal = stores().journals.open_journal(
        JournalKind.INTAKE,
        [{"tenant_id": tenant_id, "id": p["id"], "rev": p["rev"]} for p in plans],
        due_ts=now + get_settings().intake_grace_seconds,
    )
    pack = stores().payloads.store_pack(tenant_id, ((p["id"], p["rev"], p["payload"]) for p in plans if p["enqueue"]))
    pinned = [p for p in plans if not p["enqueue"]]
    if pinned:
        stores().payloads.store(tenant_id, [(p["id"], p["rev"], p["payload"]) for p in pinned])
    return journal, pack


@contextlib.contextmanager
def _quota_given_back_on_failure(tenant_id: str, quota: ratelimit.Reservation | None) -> Iterator[None]:
    """Release the request's quota slots if what runs inside fails (nothing of it was written as accepted);
    a failure to release is logged, so the request's own error is the one raised."""
    try:
        yield
    except BaseException:
        if quota is not None:
            try:
                stores().rates.release_quota(tenant_id, quota, quota.granted)
            except Exception:
                logger().exception("quota not given back", extra={"tenant_id": tenant_id, "slots": quota.granted})
        raise


def _within_quota(
    tenant: dict[str, Any], plans: list[dict[str, Any]], now: int
) -> tuple[list[dict[str, Any]], list[tuple[dict[str, Any], str]], ratelimit.Reservation | None]:
    """The plans the tenant's quota (`rate_limits`) lets through, in order; the rest with their reason."""
    limits = ratelimit.Limits.of_quota(tenant.get("rate_limits"))
    if not plans or not limits.by_window():
        return plans, [], None
    quota = stores().rates.reserve_quota(str(tenant["id"]), limits, len(plans), now)
    if quota.granted == len(plans):
        return plans, [], quota
    # The longest full window names the limit: it is the one that decides when sending may resume.
    kind = next((k for k in ("d", "h", "m") if k in quota.full), next(iter(limits.by_window())))
    reason = f"{QUOTA_REASON}: {limits.describe(kind)}"
    return plans[: quota.granted], [(p, reason) for p in plans[quota.granted :]], quota


def _plan(
    tenant: dict[str, Any], message: Message, default_priority: int, now: int, sealed: dict[str, str]
) -> dict[str, Any]:
    """How one accepted message is stored and whether it goes on a queue now."""
    payload = message.payload()
    payload["tenant_id"] = str(tenant["id"])
    if message.attachments:
        # Attachment tokens and passwords are stored (queue, pack, table) only encrypted.
        payload = attachment_auth.seal_payload(payload, str(tenant["id"]), sealed)
    priority = priority_of(message.priority, default_priority)
    delay = max(0, (message.deferred_ts or 0) - now)
    park_ts = None
    if tenants.is_held(tenant, message.batch_code):
        status, enqueue_now = MessageStatus.SUSPENDED, False
    elif delay > MAX_DELAY_SECONDS:
        status, enqueue_now, park_ts = MessageStatus.DEFERRED, False, message.deferred_ts
    elif delay > 0:
        status, enqueue_now = MessageStatus.DEFERRED, True
    else:
        status, enqueue_now = MessageStatus.PENDING, True
    return {
        "id": message.id,
        "rev": uuid.uuid4().hex[:16],
        "account_id": message.account_id,
        "priority": priority,
        "batch_code": message.batch_code,
        "status": status,
        "deferred_ts": message.deferred_ts if delay > 0 else None,
        "park_ts": park_ts,
        "delay": delay,
        "enqueue": enqueue_now,
        "payload": payload,
    }


def shown_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload as listed: inline base64 content and every attachment's auth left out."""
    shown = dict(payload)
    attachments = []
    for attachment in payload.get("attachments") or []:
        item = {k: v for k, v in attachment.items() if k not in ("auth", "auth_enc")}
        path = str(item.get("storage_path", ""))
        if item.get("fetch_mode") == "base64" or path.startswith("base64:"):
            item.pop("storage_path", None)
        attachments.append(item)
    if "attachments" in payload:
        shown["attachments"] = attachments
    return shown


BOUNCE_EVENT_FIELDS = (
    "bounce_type",
    "bounce_code",
    "bounce_status",
    "recipient",
)  # what a bounce or complaint event adds

RECORD_FIELDS = (
    "pk",
    "id",
    "tenant_id",
    "account_id",
    "priority",
    "batch_code",
    "status",
    "deferred_ts",
    "sent_ts",
    "error_ts",
    "error",
    "created_at",
    "updated_at",
)


def list_messages(tenant_id: str, *, active_only: bool, include_history: bool) -> list[dict[str, Any]]:
    """The tenant's messages as records, by priority then age (API.md "Records")."""
    require_tenant(tenant_id)
    items = stores().messages.list_states(tenant_id)
    if active_only:
        items = [i for i in items if i.get("status") in PENDING_STATUSES]
    items.sort(key=lambda i: (int(i.get("priority", 2)), int(i.get("created_at", 0)), str(i["id"])))
    loaded = stores().payloads.load_payloads(items)
    acks = stores().ledger.acknowledged_events(tenant_id) if include_history else {}
    records = []
    for item in items:
        record = {name: item.get(name) for name in RECORD_FIELDS}
        if record["status"] != MessageStatus.SENT:
            record["sent_ts"] = None
        stored = loaded.get((tenant_id, str(item["id"])))
        # A payload no longer stored (its pack expired, a record older than issue 16) lists as {}: never
        # null, which genro-mail-proxy's client cannot read.
        record["message"] = shown_payload(stored[1]) if stored else {}
        if include_history:
            record["history"] = [
                {
                    "event_type": e.get("event_type"),
                    "event_ts": e.get("event_ts"),
                    "description": e.get("description"),
                    "reported_ts": reported,
                    **{name: e[name] for name in BOUNCE_EVENT_FIELDS if e.get(name) is not None},
                }
                for e, reported in zip(item.get("history", []), ledger.reported_ts(item, acks), strict=True)
            ]
        records.append(record)
    return records


def delete_messages(tenant_id: str, ids: list[str]) -> dict[str, Any]:
    """Delete messages by id (API.md `POST /commands/delete-messages`)."""
    require_tenant(tenant_id)
    unique = list(dict.fromkeys(ids))
    deleted = list(_pool().map(lambda i: stores().messages.delete_state(tenant_id, i), unique))
    removed = [i for i, old in zip(unique, deleted, strict=True) if old is not None]
    not_found = [i for i, old in zip(unique, deleted, strict=True) if old is None]
    unsent = sum(1 for old in deleted if old is not None and old.get("status") in PENDING_STATUSES)
    stores().payloads.forget(old for old in deleted if old is not None)
    stores().counters.add_pending({tenant_id: -unsent})
    return {"ok": True, "removed": len(removed), "not_found": not_found, "unauthorized": []}


def cleanup_messages(tenant_id: str, older_than_seconds: int | None) -> dict[str, Any]:
    """Remove processed, fully reported messages older than the given age (default: retention)."""
    tenant = require_tenant(tenant_id)
    age = get_settings().report_retention_seconds if older_than_seconds is None else older_than_seconds
    cutoff = clock.now_ts() - age
    no_callback = not tenant.get("client_base_url")
    acks = {} if no_callback else stores().ledger.acknowledged_events(tenant_id)
    doomed = [
        i
        for i in stores().messages.list_states(tenant_id)
        if i.get("status") in FINAL
        and int(i.get("updated_at", 0)) <= cutoff
        and (no_callback or ledger.fully_reported(i, acks))
    ]
    stores().messages.delete_states([(tenant_id, str(i["id"])) for i in doomed])
    stores().payloads.forget(doomed)
    return {"ok": True, "removed": len(doomed)}


def delete_tenant(tenant_id: str) -> None:
    """Delete a tenant and everything of it (`DELETE /tenant/{id}`): its messages and payloads, the rate windows,
    SMTP session leases and reputation windows' bounces of every account it had, its quota windows, pending
    count, run-now request, reporter state, bounce mailboxes' positions, suppression list and what its storage
    can drop at once of its large files, then its accounts, key and configuration. The tenant goes last, so a
    deletion cut short leaves it listed, and deleting it again finishes the job. Two things stay by design: its
    /metrics counters (they never go down, docs/monitoring.md) and its command-log entries (the audit trail,
    expired by its retention)."""
    tenant = require_tenant(tenant_id)
    account_ids = stores().tenants.account_ids(tenant_id) | stores().counters.counted_accounts(tenant_id)
    items = stores().messages.list_states(tenant_id)
    stores().messages.delete_states([(tenant_id, str(i["id"])) for i in items])
    stores().payloads.delete_tenant_payloads(tenant_id)
    stores().rates.forget_tenant(tenant_id, account_ids)
    stores().sessions.forget_tenant(tenant_id, account_ids)
    stores().service.forget_tenant(tenant_id)
    stores().bounces.forget_tenant(tenant_id)
    from mailproxy import reports  # the reporter's outbox and ledger, loaded on this rare path only

    reports.forget_tenant(tenant_id)
    stores().suppressions.forget_tenant(tenant_id)
    for account_id in sorted(account_ids):
        # A tenant made again with the same ids must not inherit these bounces (and be paused at once).
        stores().counters.reset_reputation(tenant_id, account_id)
    stores().large_files.forget_tenant(tenant_id)  # its links are refused from now on either way
    for account_id in tenant.get("paused_accounts") or {}:
        stores().counters.set_paused_gauge(tenant_id, account_id, False)  # its counters stay; no alert for it
    stores().tenants.delete_tenant(tenant_id)


def _batch_pending(tenant_id: str, batch_code: str | None) -> int:
    if batch_code is None:
        return stores().counters.pending_count(tenant_id)
    return sum(
        1
        for i in stores().messages.list_states(tenant_id)
        if i.get("batch_code") == batch_code and i.get("status") in PENDING_STATUSES
    )


def suspend(tenant_id: str, batch_code: str | None) -> dict[str, Any]:
    """Suspend a tenant (no batch) or one batch: its messages are held, not lost."""
    batches = stores().tenants.change_suspended_batches(tenant_id, batch_code, suspend=True, now=clock.now_ts())
    if batches is None:
        raise BadRequest(f"Tenant '{tenant_id}' not found")
    return _suspension_reply(tenant_id, batch_code, batches)


def activate(tenant_id: str, batch_code: str | None) -> dict[str, Any]:
    """Lift a suspension and send the held messages (activating one batch of a suspended tenant: 400)."""
    tenant = stores().tenants.get_tenant(tenant_id)
    if tenant is None:
        raise BadRequest(f"Tenant '{tenant_id}' not found")
    if batch_code is not None and "*" in (tenant.get("suspended_batches") or []):
        raise BadRequest("Cannot activate a single batch while the whole tenant is suspended")
    batches = stores().tenants.change_suspended_batches(tenant_id, batch_code, suspend=False, now=clock.now_ts())
    if batches is None:
        raise BadRequest(f"Tenant '{tenant_id}' not found")
    tenant["suspended_batches"] = batches
    release_held(tenant)
    return _suspension_reply(tenant_id, batch_code, batches)


def _suspension_reply(tenant_id: str, batch_code: str | None, batches: list[str]) -> dict[str, Any]:
    return {
        "ok": True,
        "tenant_id": tenant_id,
        "batch_code": batch_code,
        "suspended_batches": batches,
        "pending_messages": _batch_pending(tenant_id, batch_code),
    }


def release_held(tenant: dict[str, Any]) -> int:
    """Re-queue the tenant's suspended messages that are no longer held; how many were released."""
    tenant_id = str(tenant["id"])
    now = clock.now_ts()
    held = [
        i
        for i in stores().messages.list_states(tenant_id)
        if i.get("status") == MessageStatus.SUSPENDED
        and not tenants.is_held(tenant, i.get("batch_code"), i.get("account_id"))
    ]
    released = [r for r in (stores().messages.release_suspended(tenant_id, str(i["id"]), now=now) for i in held) if r]
    entries = stored_entries(released, now)
    stores().queue.enqueue(entries)
    return len(entries)


def status(principal: Principal) -> dict[str, Any]:
    """`GET /status`: service state from persisted data (a tenant sees its own counts)."""
    now = clock.now_ts()
    last_run = stores().service.scheduler_last_run()
    interval = max(get_settings().scheduler_interval, 1.0)
    active = True
    if not principal.is_admin and principal.tenant_id is not None:
        tenant = stores().tenants.get_tenant(principal.tenant_id)
        active = bool(tenant and tenant.get("active", True) and "*" not in (tenant.get("suspended_batches") or []))
    return {
        "ok": True,
        "active": active,
        "scheduler_active": last_run is not None and now - last_run <= 3 * interval + 5,
        "pending_messages": stores().counters.pending_count(None if principal.is_admin else principal.tenant_id),
        "uptime_seconds": max(0, now - stores().service.service_started_at(now)),
    }


def run_now(principal: Principal) -> dict[str, Any]:
    """Record a run-now request for the scheduler and the reporter."""
    stores().service.request_run_now("*" if principal.is_admin else str(principal.tenant_id), clock.now_ts())
    return {"ok": True}


def require_scope(principal: Principal, tenant_id: str | None) -> str:
    """The tenant of a tenant-scoped call, checked to exist (404 otherwise)."""
    resolved = scope(principal, tenant_id)
    require_tenant(resolved)
    return resolved


def sync_status() -> dict[str, Any]:
    """`GET /tenants/sync-status`: each tenant's report schedule, from persisted reporter state."""
    now = clock.now_ts()
    interval = get_settings().sync_interval
    syncs = stores().outbox.sync_states()
    rows = []
    for tenant in stores().tenants.list_tenants():
        sync = syncs.get(str(tenant["id"]), {})
        last = sync.get("last_sync_ts")
        dnd_until = sync.get("dnd_until")
        due = sync.get("next_sync_due") or ((int(last) + interval) if last else None)
        rows.append(
            {
                "id": tenant["id"],
                "name": tenant.get("name"),
                "active": bool(tenant.get("active", True)),
                "client_base_url": tenant.get("client_base_url"),
                "last_sync_ts": last,
                "next_sync_due": due,
                "in_dnd": dnd_until is not None and int(dnd_until) > now,
            }
        )
    return {"ok": True, "sync_interval_seconds": interval, "tenants": rows}
