"""The scheduler: re-queues parked messages that are due and finishes work that a crash left open."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from mailproxy import clock, messages
from mailproxy.adapters.aws.dynamo import Item
from mailproxy.domain import (
    DEFERRING_OUTCOMES,
    FINAL,
    FINAL_OUTCOMES,
    RATE_LIMIT_EXCEEDED,
    SENDABLE,
    Counter,
    JournalKind,
    MessageStatus,
    Outcome,
)
from mailproxy.logs import logger
from mailproxy.settings import get_settings
from mailproxy.stores import stores


def run_round(now: int | None = None) -> dict[str, int]:
    """One scheduler round; how many messages it re-queued and journal entries it finished."""
    now = clock.now_ts() if now is None else now
    requeued = requeue_parked(now)
    finished = 0
    for journal in stores().journals.due_journals(now):
        try:
            finish_journal(journal, now)
            finished += 1
        except Exception:
            logger().exception("could not finish a journal entry", extra={"journal": journal.get("sk")})
    stores().service.mark_scheduler_run(now)
    return {"requeued": requeued, "journals_finished": finished}


def requeue_parked(now: int) -> int:
    """Put parked messages whose time has come back on their queues (queue first, then unpark)."""
    total = 0
    while True:
        due = stores().messages.due_parked(now)
        if not due:
            return total
        keys = [(str(d["tenant_id"]), str(d["id"])) for d in due]
        items = [
            i
            for t, ids in _group(keys).items()
            for i in stores().messages.get_states(t, ids).values()
            if i.get("status") == MessageStatus.DEFERRED and i.get("park_ts") is not None and int(i["park_ts"]) <= now
        ]
        from mailproxy.queues import stored_entries  # SQS only when something is due

        stores().queue.enqueue(stored_entries(items, now))
        for item in items:
            stores().messages.unpark(str(item["tenant_id"]), str(item["id"]), park_ts=int(item["park_ts"]), now=now)
        total += len(items)
        if len(items) < len(due):
            # Some index entries were already handled; do not spin on them within this round.
            return total


def _group(keys: list[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = defaultdict(list)
    for tenant_id, message_id in keys:
        grouped[tenant_id].append(message_id)
    return grouped


def _states(keys: list[dict[str, Any]]) -> list[Item]:
    grouped = _group([(str(k["tenant_id"]), str(k["id"])) for k in keys])
    return [i for t, ids in grouped.items() for i in stores().messages.get_states(t, ids).values()]


def _requeueable(item: Item) -> bool:
    return item.get("status") in SENDABLE and item.get("park_ts") is None


def finish_journal(journal: Item, now: int) -> None:
    """Complete an intake or send journal entry whose owner did not close it."""
    sk = str(journal["sk"])
    if journal.get("kind") == JournalKind.INTAKE:
        _finish_intake(journal, sk, now)
    else:
        _finish_send(journal, sk, now)


def _finish_intake(journal: Item, sk: str, now: int) -> None:
    keys = journal.get("keys") or []
    revs = {(str(k["tenant_id"]), str(k["id"])): str(k["rev"]) for k in keys}
    items = _states(keys)
    from mailproxy.queues import stored_entries

    stores().queue.enqueue(
        stored_entries([i for i in items if _requeueable(i) and revs.get((i["tenant_id"], i["id"])) == i["rev"]], now)
    )
    deltas: dict[str, int] = defaultdict(int)
    if not journal.get("counted"):
        for item in items:
            if item.get("created_by") == sk:
                deltas[str(item["tenant_id"])] += 1
    stores().counters.add_pending(dict(deltas), journal_sk=sk)
    logger().warning("finished an intake left open", extra={"journal": sk, "messages": len(items)})


def _finish_send(journal: Item, sk: str, now: int) -> None:
    items = _states(journal.get("keys") or [])
    counters: dict[tuple[str, str], dict[Counter, int]] = defaultdict(lambda: dict.fromkeys(Counter, 0))
    pending: dict[str, int] = defaultdict(int)
    requeue: list[Item] = []
    max_claims = get_settings().max_claim_attempts
    for item in items:
        tenant_id, account_id = str(item["tenant_id"]), str(item.get("account_id", ""))
        if item.get("status") == MessageStatus.SENDING and item.get("claim_id") == sk:
            # The claim is stale by now: a new claim takes it over, unless it was the last one allowed.
            attempts = int(item.get("claims", 1))
            if attempts < max_claims:
                requeue.append(item)
            elif stores().messages.abandon(tenant_id, str(item["id"]), claim_id=sk, attempts=attempts, now=now):
                logger().error(
                    messages.abandoned_reason(attempts),
                    extra={"tenant_id": tenant_id, "account_id": account_id, "message_id": item["id"]},
                )
                counters[(tenant_id, account_id)][Counter.ERRORS] += 1
                pending[tenant_id] -= 1
            continue
        if item.get("outcome_by") != sk:
            continue
        outcome, row = item.get("outcome"), counters[(tenant_id, account_id)]
        if outcome == Outcome.SENT:
            row[Counter.SENT] += 1
        elif outcome == Outcome.ERROR:
            if item.get("error") == RATE_LIMIT_EXCEEDED:
                row[Counter.RATE_LIMITED] += 1
            else:
                row[Counter.ERRORS] += 1
        elif outcome in DEFERRING_OUTCOMES:
            row[Counter.DEFERRED] += 1
            row[Counter.RATE_LIMITED] += 1 if outcome == Outcome.RATE_LIMITED else 0
            if _requeueable(item):
                requeue.append(item)
        if item.get("status") in FINAL and outcome in FINAL_OUTCOMES:
            pending[tenant_id] -= 1
    from mailproxy.queues import stored_entries

    stores().queue.enqueue(stored_entries(requeue, now))
    stores().journals.close_batch(sk, counters=dict(counters), pending=dict(pending))
    logger().warning("finished a send batch left open", extra={"journal": sk, "messages": len(items)})
