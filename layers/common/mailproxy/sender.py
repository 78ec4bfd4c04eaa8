"""The sender: one SQS batch in, each message claimed, rate-limited, sent once and recorded.

Never twice: a conditional claim before the SMTP transaction and a conditional result right after
it. Never lost: the batch's journal entry lets the scheduler finish anything a crash leaves behind.
"""

from __future__ import annotations

import asyncio
import collections
import math
import random
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from mailproxy import clock, message_ids, messages, ratelimit, sessions, suppression, tenants
from mailproxy.addresses import address_domain
from mailproxy.bounce_path import bounce_return_path
from mailproxy.domain import (
    RATE_LIMIT_DEFERRAL,
    RATE_LIMIT_EXCEEDED,
    Counter,
    EventType,
    JournalKind,
    MessageStatus,
    Outcome,
)
from mailproxy.email_builder import OutgoingEmail, build_email
from mailproxy.errors import DeliveryError, PermanentDeliveryError, TemporaryDeliveryError
from mailproxy.logs import logger
from mailproxy.messages import event, retained_until
from mailproxy.queues import MAX_DELAY_SECONDS, QueueEntry, parse_body
from mailproxy.settings import get_settings
from mailproxy.smtp import AccountConfig, SmtpPool, default_pool, run
from mailproxy.stores import stores

SEND_MARGIN_SECONDS = 5.0  # what recording a result needs after the SMTP reply
# A batch that finds every session of its account held by other senders asks again every SESSION_POLL_SECONDS
# (on average) for up to SESSION_WAIT_SECONDS: the others give back what they hold beyond a fair share as they
# next ask (as one of their account groups starts or ends). If still none, its messages come back after
# SESSION_WAIT_SECONDS.
SESSION_WAIT_SECONDS = 2
SESSION_POLL_SECONDS = 0.2
# A session lease outlasts one message's time limit by this much, so most batches never renew it.
LEASE_SPARE_SECONDS = 10
# Idle connections are closed this long before their session lease lapses (when other senders may open them),
# checked every CLOSE_LAPSED_EVERY_SECONDS while a batch runs: a batch of a slow account can outlast the lease
# of another account's idle connections.
LEASE_CLOSE_MARGIN_SECONDS = 2
CLOSE_LAPSED_EVERY_SECONDS = 0.5
UNFINISHED = Outcome.DROPPED  # a job's outcome until something happens to it


@dataclass
class Job:
    """One SQS record and what became of it."""

    record_id: str
    tenant_id: str
    id: str
    rev: str
    payload: dict[str, Any] | None
    item: dict[str, Any] | None = None
    outcome: Outcome = UNFINISHED
    retry_record: bool = False  # report to SQS as a batch item failure
    requeue: QueueEntry | None = None
    # The payload as this attempt sends it: the stored one without its suppressed recipients. Never stored
    # nor re-queued, so an address taken off the suppression list is mailed again on a later attempt.
    sending: dict[str, Any] | None = None


class BatchTally:
    """Counters and pending deltas a batch applies when it closes."""

    def __init__(self) -> None:
        self.counters: dict[tuple[str, str], dict[Counter, int]] = defaultdict(lambda: dict.fromkeys(Counter, 0))
        self.pending: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()  # results are recorded from worker threads (`asyncio.to_thread`)

    def count(self, job: Job, *names: Counter) -> None:
        """Add one to each named counter of the job's account."""
        account = str((job.item or {}).get("account_id", ""))
        with self._lock:
            for name in names:
                self.counters[(job.tenant_id, account)][name] += 1

    def finalized(self, job: Job) -> None:
        """The job's message left the pending set."""
        with self._lock:
            self.pending[job.tenant_id] -= 1


def handle_batch(records: list[dict[str, Any]], remaining_ms: Any = None) -> dict[str, Any]:
    """Process an SQS batch; the partial batch response (`batchItemFailures`)."""
    settings = get_settings()
    now = clock.now_ts()
    jobs: list[Job] = []
    failures: list[str] = []
    for record in records:
        try:
            body = parse_body(record["body"])
            jobs.append(
                Job(record["messageId"], str(body["tenant_id"]), str(body["id"]), str(body["rev"]), body.get("payload"))
            )
        except (KeyError, TypeError, ValueError):
            logger().error(
                "unreadable queue message left for the dead-letter queue", extra={"sqs_id": record.get("messageId")}
            )
            failures.append(record["messageId"])
    if not jobs:
        return {"batchItemFailures": [{"itemIdentifier": f} for f in failures]}

    journal = stores().journals.open_journal(
        JournalKind.SEND,
        [{"tenant_id": j.tenant_id, "id": j.id} for j in jobs],
        due_ts=now + settings.claim_timeout_seconds,
    )
    _claim(jobs, journal, now, stale_before=now - settings.claim_timeout_seconds)
    claimed = [j for j in jobs if j.item is not None]
    tally = BatchTally()
    if claimed:
        run(_deliver(claimed, journal, tally, remaining_ms))
    requeue = [j.requeue for j in jobs if j.requeue is not None]
    if requeue:
        stores().queue.enqueue(requeue)
    crashed = [{"tenant_id": j.tenant_id, "id": j.id} for j in jobs if j.outcome == Outcome.CRASHED]
    if crashed:
        # Left open for the crashed messages alone, as a dead container's would be: the scheduler re-queues them
        # when their claims are stale. What the batch recorded is counted now: a deferred message may be claimed
        # and recorded again before then, and the scheduler would no longer find it as this batch's (outcome_by).
        logger().warning("send batch left open after an unexpected error", extra={"journal": journal})
        stores().journals.settle_batch(
            journal, counters=dict(tally.counters), pending=dict(tally.pending), open_keys=crashed
        )
    else:
        stores().journals.close_batch(journal, counters=dict(tally.counters), pending=dict(tally.pending))
    failures += [j.record_id for j in jobs if j.retry_record]
    return {"batchItemFailures": [{"itemIdentifier": f} for f in failures]}


def release_sessions() -> None:
    """Give back every session lease this thread's pool holds and close its connections (a worker that
    stops; tests): other senders need not wait for the leases to lapse."""
    pool = default_pool()
    leases = list(pool.leases.values())
    run(pool.close_all())  # closed first: no other sender opens one in their place while they are still open
    now = clock.now_ts()
    for lease in leases:
        stores().sessions.hold(lease.tenant_id, lease.account_id, pool.holder, wanted=0, limit=1, now=now, until=now)


def _claim(jobs: list[Job], journal: str, now: int, *, stale_before: int) -> None:
    """Claim the jobs' messages in as few calls as the copies allow: two copies of one message in a batch
    (SQS delivers at least once), the first one's claim covers both, and a later copy is tried only when the
    earlier one's claim was refused (another revision)."""
    claimed: set[tuple[str, str]] = set()
    left = jobs
    while left:
        turn: dict[tuple[str, str], Job] = {}
        later: list[Job] = []
        for job in left:
            key = (job.tenant_id, job.id)
            if key in claimed:
                continue
            if key in turn:
                later.append(job)
            else:
                turn[key] = job
        items = stores().messages.claim_many(
            [(j.tenant_id, j.id, j.rev) for j in turn.values()], claim_id=journal, now=now, stale_before=stale_before
        )
        for key, job, item in zip(turn, turn.values(), items, strict=True):
            job.item = item
            if item is not None:
                claimed.add(key)
        left = later


async def _deliver(jobs: list[Job], journal: str, tally: BatchTally, remaining_ms: Any) -> None:
    """Send the claimed jobs, each account's over its leased sessions, recording each result when known."""
    # Connections whose session lease lapsed while this container was frozen or idle (another sender may hold
    # those sessions now), then any whose lease is about to lapse while this batch runs.
    pool = default_pool()
    await pool.close_lapsed(clock.now_ts(), margin=LEASE_CLOSE_MARGIN_SECONDS)
    closer = asyncio.create_task(_close_lapsed_until_cancelled(pool))
    try:
        await _deliver_claimed(jobs, journal, tally, remaining_ms)
    finally:
        closer.cancel()
        await asyncio.gather(closer, return_exceptions=True)


async def _close_lapsed_until_cancelled(pool: SmtpPool) -> None:
    while True:
        await asyncio.sleep(CLOSE_LAPSED_EVERY_SECONDS)
        await pool.close_lapsed(clock.now_ts(), margin=LEASE_CLOSE_MARGIN_SECONDS)


async def _deliver_claimed(jobs: list[Job], journal: str, tally: BatchTally, remaining_ms: Any) -> None:
    settings = get_settings()
    # Every tenant and account the batch needs, in one read.
    tenant_cache, accounts = stores().tenants.get_tenants_and_accounts(
        {j.tenant_id for j in jobs}, {(j.tenant_id, str((j.item or {}).get("account_id"))) for j in jobs}
    )
    by_account: dict[tuple[str, str], list[Job]] = defaultdict(list)
    held: list[Job] = []
    for job in jobs:
        tenant = tenant_cache.get(job.tenant_id)
        item = job.item or {}
        if tenant is None:
            # The tenant was deleted: its messages go with it and are never sent.
            stores().messages.delete_state(job.tenant_id, job.id)
            job.outcome = Outcome.DROPPED
            continue
        unfinished = messages.unfinished_claims(item)
        if unfinished >= settings.max_claim_attempts:
            # Its earlier claims crashed or timed out each time: fail it rather than let it take a sender down again.
            _fail(job, journal, tally, messages.abandoned_reason(unfinished))
            continue
        if tenants.is_held(tenant, item.get("batch_code"), item.get("account_id")):
            held.append(job)
            continue
        by_account[(job.tenant_id, str(item["account_id"]))].append(job)

    _load_missing_payloads(held + [j for group in by_account.values() for j in group])
    for job in held:
        _finish(job, journal, MessageStatus.SUSPENDED, history=None, outcome=Outcome.HELD, **_pinned(job))
    # Only the tenants that have a suppression list pay its read (one per recipient on DynamoDB).
    listed = [j for group in by_account.values() for j in group if suppression.has_list(tenant_cache.get(j.tenant_id))]
    for job, dropped, emptied in suppression.drop_suppressed(listed):
        tally.count(job, *[Counter.SUPPRESSED] * len(dropped))
        if emptied:  # no SMTP transaction for a message left with no recipient
            _fail(job, journal, tally, suppression.failure_reason(dropped))
    runs = []
    for (tenant_id, account_id), group in by_account.items():
        tenant = tenant_cache.get(tenant_id) or {}
        account = accounts.get((tenant_id, account_id))
        if account is None:
            for job in group:
                if job.outcome == UNFINISHED:  # not failed as suppressed already
                    _fail(job, journal, tally, f"Account '{account_id}' not found for tenant '{tenant_id}'")
            continue
        ready = []
        for job in group:
            if job.payload is None:
                job.retry_record = True  # a newer submission is being written: retry this record later
                _finish(job, journal, _unsent_status(job), history=None, outcome=Outcome.REQUEUED)
            elif job.outcome == UNFINISHED:  # not failed as suppressed
                ready.append(job)
        runs.append(_run_group(tenant, account, ready, journal, tally, remaining_ms))
    # Account groups run side by side, each within its own time limit: a slow or dead SMTP server holds
    # its own account's messages only (docs/delivery.md "Destination isolation").
    await asyncio.gather(*runs)


async def _run_group(
    tenant: dict[str, Any],
    account: dict[str, Any],
    group: list[Job],
    journal: str,
    tally: BatchTally,
    remaining_ms: Any,
) -> None:
    try:
        await _send_group(tenant, account, group, journal, tally, remaining_ms)
    except Exception:
        # Not one message's failure (a rate-limit write, a KMS decrypt): the group's unfinished messages are
        # left to crash recovery, as a dead container's would be, and the other accounts go on.
        logger().exception(
            f"Unexpected error in account {account.get('id')}; its unfinished messages left to crash recovery",
            extra={"tenant_id": tenant.get("id"), "account_id": account.get("id")},
        )
        for job in group:
            if job.outcome == UNFINISHED:
                job.outcome = Outcome.CRASHED


async def _send_group(
    tenant: dict[str, Any],
    account: dict[str, Any],
    group: list[Job],
    journal: str,
    tally: BatchTally,
    remaining_ms: Any,
) -> None:
    settings = get_settings()
    tenant_id, account_id = str(tenant["id"]), str(account["id"])
    limits = ratelimit.Limits.of(account)
    reservation = stores().rates.reserve(tenant_id, account_id, limits, len(group), clock.now_ts())
    allowed, over = group[: reservation.granted], group[reservation.granted :]
    for job in over:
        _rate_limited(job, journal, tally, account, reservation.next_window_ts)
    if not allowed:
        return

    config = AccountConfig(
        key=f"{tenant_id}/{account_id}",
        host=str(account["host"]),
        port=int(account["port"]),
        user=account.get("user"),
        password=tenants.account_password(account) if account.get("user") else None,
        use_tls=account.get("use_tls"),
        timeout=settings.smtp_timeout_seconds,
        verify_tls=settings.smtp_verify_tls,
        ttl=tenants.connection_ttl(account),
    )
    held = await _hold_sessions(tenant_id, account_id, config.key, account, len(allowed))
    waiting_until = time.monotonic() + SESSION_WAIT_SECONDS
    while not held and time.monotonic() < waiting_until:
        # Every session is another sender's: they make room for this one as they next ask.
        await asyncio.sleep(SESSION_POLL_SECONDS * (0.5 + random.random()))
        held = await _hold_sessions(tenant_id, account_id, config.key, account, len(allowed))
    if not held:
        # Still none: back on the queue for a little while, unsent and without an attempt counted
        # (docs/delivery.md "Concurrent sessions").
        for job in allowed:
            _hand_back(job, journal, delay=SESSION_WAIT_SECONDS)
        stores().rates.release(tenant_id, account_id, reservation, len(allowed))
        logger().info(
            f"No SMTP session free for account {account_id}: {len(allowed)} message(s) back on the queue",
            extra={"tenant_id": tenant_id, "account_id": account_id},
        )
        return
    run = _GroupRun(tenant, account, config, allowed, journal, tally, remaining_ms, held)
    # Up to `held` transactions at once, each on its own connection; each message is still claimed before
    # and recorded right after its own transaction.
    sessions_run = (run.session(n) for n in range(min(held, len(allowed))))
    outcomes = await asyncio.gather(*sessions_run, return_exceptions=True)
    if not run.broken:
        for job in run.waiting:  # left when the lease could not be renewed, or shrank to no session
            _hand_back(job, journal, delay=SESSION_WAIT_SECONDS)
            run.unused += 1
    stores().rates.release(tenant_id, account_id, reservation, run.unused)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    # The group is over: the lease now covers the connections kept open, and no more than a fair share of
    # them while another sender is short (this container may get no batch of the account for a while).
    await _hold_sessions(tenant_id, account_id, config.key, account, 0)


async def _hold_sessions(tenant_id: str, account_id: str, key: str, account: dict[str, Any], wanted: int) -> int:
    """Lease the sessions this batch may open to the account (together with those of every other sender, at
    most its `max_connections`): as many as it has messages, and at least the connections this container
    keeps open. The lease lasts one message's time limit and margin, is renewed while the batch sends
    (`_GroupRun`), and the connections close before it lapses (`SmtpPool.close_lapsed`): a container that
    dies or is frozen keeps nobody waiting longer than that."""
    settings = get_settings()
    pool = default_pool()
    limit = sessions.account_limit(account, settings.smtp_max_connections)
    now = clock.now_ts()
    until = now + math.ceil(settings.message_time_limit_seconds + SEND_MARGIN_SECONDS) + LEASE_SPARE_SECONDS
    wanted = min(limit, max(wanted, pool.open_count(key)))
    while True:
        open_now = pool.open_count(key)
        # Off the event loop: the other accounts' sessions go on meanwhile.
        held = await asyncio.to_thread(
            stores().sessions.hold,
            tenant_id,
            account_id,
            pool.holder,
            wanted=wanted,
            limit=limit,
            now=now,
            until=until,
            open_now=open_now,
        )
        if held >= open_now:
            break
        # Fewer than are open (a limit lowered, a fair share, a lease lost while frozen): the lease still
        # counts the open ones. Idle ones beyond it are closed now and the lease asked again without them;
        # busy ones close when their transaction ends (`SmtpPool._checkin`), and the next ask drops them.
        await pool.trim(key, held)
        if pool.open_count(key) == open_now:
            break
    if held or pool.open_count(key):
        # A lease of no session still closes the busy connections when their transaction ends.
        pool.leases[key] = sessions.Lease(tenant_id, account_id, until, held)
    else:
        pool.leases.pop(key, None)
    return held


class _GroupRun:
    """One account's messages of a batch, taken in turn by its concurrent sessions."""

    def __init__(
        self,
        tenant: dict[str, Any],
        account: dict[str, Any],
        config: AccountConfig,
        jobs: list[Job],
        journal: str,
        tally: BatchTally,
        remaining_ms: Any,
        held: int,
    ) -> None:
        settings = get_settings()
        self.tenant, self.account, self.config, self.journal, self.tally = tenant, account, config, journal, tally
        self.held = held  # sessions leased: session n runs while n < held
        self.renewing = asyncio.Lock()
        self.remaining_ms = remaining_ms
        self.waiting = collections.deque(jobs)
        self.started = 0
        self.unused = 0  # rate slots to give back: messages not sent
        self.limit = settings.message_time_limit_seconds
        self.deadline = time.monotonic() + settings.account_time_limit_seconds
        self.fetch_tenant = _FetchTenant(tenant)
        self.broken = False  # an unexpected error in one session: the others take no new message

    async def session(self, n: int) -> None:
        """Send messages one after another over one connection, while the lease covers it and some are left
        (those left when no session may go on are handed back by `_send_group`)."""
        try:
            while self.waiting and not self.broken and await self._leased(n):
                if self.waiting:  # another session may have taken the last one meanwhile
                    await self._one(self.waiting.popleft())
        except BaseException:
            self.broken = True
            raise

    async def _leased(self, n: int) -> bool:
        """True when the account's session lease covers session `n` through one more message, renewed if
        need be (a renewal may grant fewer sessions: those beyond it stop)."""
        margin = self.limit + SEND_MARGIN_SECONDS
        key = self.config.key
        async with self.renewing:
            lease = default_pool().leases.get(key)
            if lease is not None and lease.until - clock.now_ts() >= margin:
                return n < lease.sessions
            tenant_id, account_id = str(self.tenant["id"]), str(self.account["id"])
            self.held = await _hold_sessions(tenant_id, account_id, key, self.account, self.held)
            return n < self.held

    async def _one(self, job: Job) -> None:
        journal, tally, limit = self.journal, self.tally, self.limit
        first, self.started = self.started == 0, self.started + 1
        if self.remaining_ms is not None and self.remaining_ms() < (limit + SEND_MARGIN_SECONDS) * 1000:
            # Too little time left to finish a transaction: hand the message back untouched.
            self.unused += 1
            await asyncio.to_thread(_requeue_record, job, journal)
            return
        if not first and time.monotonic() + limit > self.deadline:
            # The account's share of the batch is used up (GMP_ACCOUNT_TIME_LIMIT_SECONDS): back on the queue,
            # not an attempt. The first message of a group always gets its chance.
            self.unused += 1
            await asyncio.to_thread(_hand_back, job, journal)
            return
        try:
            await asyncio.wait_for(
                _transaction(job, self.tenant, self.config, self.fetch_tenant, self.account), timeout=limit
            )
        except DeliveryError as exc:
            self.unused += 1
            await asyncio.to_thread(_failed_attempt, job, journal, tally, exc)
            return
        except TimeoutError:
            # Cancelled mid-way (the pool discards a connection cancelled mid-transaction): a timed-out attempt.
            self.unused += 1
            timed_out = TemporaryDeliveryError(f"message time limit exceeded ({limit:g} s)")
            await asyncio.to_thread(_failed_attempt, job, journal, tally, timed_out)
            return
        except Exception:
            # A failure without a type (a bug, a payload that breaks a library): treated as a crash of this
            # message alone. Its claim is left to go stale and the batch's journal open, so the scheduler
            # re-queues it and the claim counter fails it after GMP_MAX_CLAIM_ATTEMPTS; the batch goes on.
            logger().exception(
                f"Unexpected error sending message {job.id}; left to crash recovery",
                extra={
                    "tenant_id": job.tenant_id,
                    "account_id": (job.item or {}).get("account_id"),
                    "message_id": job.id,
                },
            )
            job.outcome = Outcome.CRASHED
            return
        # Recorded off the event loop: the other sessions' replies are read meanwhile.
        await asyncio.to_thread(_sent, job, journal, tally)


class _FetchTenant:
    """The tenant with its decrypted client_auth (for attachment fetches), made once per account group on first
    use: the group's sessions wait for one decrypt (a KMS call on AWS) rather than each making its own."""

    def __init__(self, tenant: dict[str, Any]) -> None:
        self.tenant = tenant
        self.made: dict[str, Any] | None = None
        self.making = asyncio.Lock()

    async def get(self) -> dict[str, Any]:
        async with self.making:
            if self.made is None:
                # Off the event loop, as everything in a transaction that may block or take long.
                client_auth = await asyncio.to_thread(tenants.client_auth, self.tenant)
                self.made = {**self.tenant, "client_auth": client_auth}
        return self.made


async def _transaction(
    job: Job,
    tenant: dict[str, Any],
    config: AccountConfig,
    fetch_tenant: _FetchTenant,
    account: dict[str, Any] | None = None,
) -> None:
    """Fetch, build and send one message (the whole of what GMP_MESSAGE_TIME_LIMIT_SECONDS bounds)."""
    payload = job.sending or job.payload or {}
    attachments: list[Any] = []
    if payload.get("attachments"):
        # Imported on first use: most batches carry no attachment, and cold starts are billed.
        from mailproxy.large_files import attachments_for_send

        # The tenant's large_file_config applies here; a rewritten file's link goes into the body (issue 14).
        seed = str((job.item or {}).get("pk", job.id))
        attachments, payload = await attachments_for_send(payload, tenant=await fetch_tenant.get(), seed=seed)
    # Built in a worker thread: encoding megabytes of attachments, or a VERP account's first key read, would
    # hold every other session of the batch, whose replies wait on this loop.
    email = await asyncio.to_thread(_email, job, payload, attachments, tenant, account)
    await default_pool().send(config, email)


def _email(
    job: Job, payload: dict[str, Any], attachments: list[Any], tenant: dict[str, Any], account: dict[str, Any] | None
) -> OutgoingEmail:
    """The email to send, within GMP_MAX_MESSAGE_BYTES (else a permanent failure)."""
    bounce_path = bounce_return_path(tenant, account, job.id) if account is not None else None
    email = build_email(payload, message_id=_message_id(job, payload), attachments=attachments, bounce_path=bounce_path)
    size, cap = _encoded_size(email), get_settings().max_message_bytes
    if size > cap:
        raise PermanentDeliveryError(f"message too large: {size} bytes (limit {cap})")
    return email


def _encoded_size(email: OutgoingEmail) -> int:
    """The message's size on the wire, give or take its MIME boundaries: every part's encoded content and
    headers (counted without generating the message, which would copy it once more)."""
    total = 0
    for part in email.message.walk():
        total += sum(len(name) + len(str(value)) + 4 for name, value in part.items())
        if not part.is_multipart():
            total += len(str(part.get_payload()))
    return total


def _hand_back(job: Job, journal: str, *, delay: int = 0) -> None:
    """Put a claimed message back on its queue unsent (after `delay` seconds), without counting an attempt."""
    if _finish(job, journal, _unsent_status(job), history=None, outcome=Outcome.REQUEUED):
        item = job.item or {}
        job.requeue = QueueEntry(job.tenant_id, job.id, job.rev, int(item.get("priority", 2)), delay, job.payload)


def _requeue_record(job: Job, journal: str) -> None:
    """Hand a claimed message back untouched: its SQS record is retried (too little time left in the batch)."""
    _finish(job, journal, _unsent_status(job), history=None, outcome=Outcome.REQUEUED)
    job.retry_record = True


def _message_id(job: Job, payload: dict[str, Any]) -> str:
    """A Message-ID derived from the record's stable uuid and the message's id, so every retry carries the same
    one and a report returning only it names the message (`mailproxy.message_ids`)."""
    domain = address_domain(str(payload.get("from", ""))) or "mail-proxy.local"
    uid = (job.item or {}).get("pk")
    return message_ids.derived(str(uid), job.id, domain) if uid else f"<{job.id}@{domain}>"


def _unsent_status(job: Job) -> MessageStatus:
    return MessageStatus.DEFERRED if (job.item or {}).get("deferred_ts") else MessageStatus.PENDING


def _load_missing_payloads(jobs: list[Job]) -> None:
    """Fill in payloads that did not travel inline; a payload of another revision counts as missing."""
    wanted = [j for j in jobs if j.payload is None]
    if not wanted:
        return
    loaded = stores().payloads.load_payloads([j.item or {"tenant_id": j.tenant_id, "id": j.id} for j in wanted])
    for job in wanted:
        stored = loaded.get((job.tenant_id, job.id))
        if stored is not None and stored[0] == job.rev:
            job.payload = stored[1]


def _pinned(job: Job) -> dict[str, Any]:
    """Store the payload of a message that is going to wait on its own (it may outlive its pack): the
    record's fields that say so (`pack` removed), or none when there is nothing to do."""
    if not (job.item or {}).get("pack") or job.payload is None:
        return {}
    stores().payloads.pin(job.tenant_id, job.id, job.rev, job.payload)
    return {"pack": None}


def _finish(
    job: Job, journal: str, status: MessageStatus, *, history: dict[str, Any] | None, outcome: Outcome, **fields: Any
) -> bool:
    remove = tuple(name for name, value in fields.items() if value is None)
    kept = {name: value for name, value in fields.items() if value is not None}
    done = stores().messages.finish(
        job.tenant_id,
        job.id,
        claim_id=journal,
        status=status,
        now=clock.now_ts(),
        history_event=history,
        outcome=outcome,
        fields=kept,
        remove=remove,
    )
    if not done:
        logger().warning(
            "claim lost before the result was recorded", extra={"tenant_id": job.tenant_id, "message_id": job.id}
        )
    job.outcome = outcome if done else Outcome.LOST_CLAIM
    return done


def _sent(job: Job, journal: str, tally: BatchTally) -> None:
    now = clock.now_ts()
    if _finish(
        job,
        journal,
        MessageStatus.SENT,
        history=event(EventType.SENT, now),
        outcome=Outcome.SENT,
        sent_ts=now,
        error=None,
        error_ts=None,
        expires_at=retained_until(now),
    ):
        tally.count(job, Counter.SENT)
        tally.finalized(job)
        logger().info(
            f"Message {job.id} sent via {(job.item or {}).get('account_id')}",
            extra={"tenant_id": job.tenant_id, "account_id": (job.item or {}).get("account_id"), "message_id": job.id},
        )


def _fail(job: Job, journal: str, tally: BatchTally, reason: str, *, count_error: bool = True) -> None:
    now = clock.now_ts()
    history = event(EventType.ERROR, now, reason)
    expires = retained_until(now)
    if _finish(
        job,
        journal,
        MessageStatus.ERROR,
        history=history,
        outcome=Outcome.ERROR,
        error=reason,
        error_ts=now,
        expires_at=expires,
    ):
        if count_error:
            tally.count(job, Counter.ERRORS)
        tally.finalized(job)
        logger().error(
            f"Message {job.id} failed: {reason}",
            extra={"tenant_id": job.tenant_id, "account_id": (job.item or {}).get("account_id"), "message_id": job.id},
        )


def _defer(
    job: Job, journal: str, tally: BatchTally, *, until: int, reason: str, attempts: int, outcome: Outcome
) -> None:
    """Put the message back for later: on its queue with a delay, or parked for the scheduler."""
    now = clock.now_ts()
    delay = max(0, until - now)
    parked = delay > MAX_DELAY_SECONDS
    fields: dict[str, Any] = {"deferred_ts": until, "attempts": attempts}
    if parked:
        fields.update(park_shard=messages.PARK_SHARD, park_ts=until, **_pinned(job))
    history = event(EventType.DEFERRED, now, reason, deferred_ts=until, deferred_reason=reason)
    if _finish(job, journal, MessageStatus.DEFERRED, history=history, outcome=outcome, **fields):
        tally.count(job, Counter.DEFERRED)
        if not parked:
            item = job.item or {}
            job.requeue = QueueEntry(job.tenant_id, job.id, job.rev, int(item.get("priority", 2)), delay, job.payload)


def _rate_limited(job: Job, journal: str, tally: BatchTally, account: dict[str, Any], next_ts: int | None) -> None:
    tally.count(job, Counter.RATE_LIMITED)
    extra = {"tenant_id": job.tenant_id, "account_id": account["id"], "message_id": job.id}
    if account.get("limit_behavior") == "reject":
        logger().warning(f"Rate limit hit for {account['id']}: message {job.id} rejected", extra=extra)
        _fail(job, journal, tally, RATE_LIMIT_EXCEEDED, count_error=False)
        return
    until = next_ts or clock.now_ts() + 60
    logger().warning(f"Rate limit hit for {account['id']}: message {job.id} deferred to {until}", extra=extra)
    attempts = int((job.item or {}).get("attempts", 0))
    _defer(
        job, journal, tally, until=until, reason=RATE_LIMIT_DEFERRAL, attempts=attempts, outcome=Outcome.RATE_LIMITED
    )


def _failed_attempt(job: Job, journal: str, tally: BatchTally, exc: DeliveryError) -> None:
    settings = get_settings()
    extra = {"tenant_id": job.tenant_id, "account_id": (job.item or {}).get("account_id"), "message_id": job.id}
    if not exc.temporary or isinstance(exc, PermanentDeliveryError):
        _fail(job, journal, tally, exc.reason)
        return
    attempts = int((job.item or {}).get("attempts", 0)) + 1
    logger().warning(f"Temporary error for message {job.id}: {exc.reason}", extra=extra)
    if attempts > settings.max_retries:
        _fail(job, journal, tally, f"Max retries ({settings.max_retries}) exceeded: {exc.reason}")
        return
    delays = settings.retry_delays
    until = clock.now_ts() + delays[min(attempts - 1, len(delays) - 1)]
    logger().warning(f"Retry {attempts} of message {job.id} scheduled at {until}", extra=extra)
    _defer(job, journal, tally, until=until, reason=exc.reason, attempts=attempts, outcome=Outcome.RETRY)
