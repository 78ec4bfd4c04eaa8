"""The bounce poller (BounceFunction on its schedule; a loop under `make run`): reads each bounce mailbox's new
messages, finds the message each report is about, and records what it says (docs/bounces.md).

For each tenant, its own `bounce_mailbox` (the default of its accounts) and every account's own one are read
once per run, from where the last run stopped (`BounceState`: the mailbox's UIDVALIDITY and the highest UID
processed). Each message is parsed (`bounce_parse`), matched to the original message by its VERP return path
(signed: `verp`) or by the `X-Genro-Mail-ID` it returns, and each failed recipient or complaint becomes a
history event of that message (`bounce` or `complaint`) under a key that makes it appear once, however often
the report is read again; the suppression list is told before the event is recorded and not again once it is
(at least once: a crash between the two counts that bounce twice in the reputation window). The event is a
change of the message record: the reporter sends it to the tenant's callback as it sends results, and `GET
/messages` shows it. Then the mailbox message is moved or flagged, and only then is the position saved: a crash
anywhere means reading a report again, not losing it. A report whose processing fails (storage unavailable)
stops its mailbox there until a later run gets past it; the account's bounce counters are written after the
events, so a crash between the two leaves the metrics short of them.

An auto-reply or a message that is no report is left processed and counted nowhere; a report that names no
message of the tenant, or someone its message was not sent to, is logged and counted once (run's `unmatched`
and `gmp_bounce_reports_unmatched_total` alike), never attributed to a message by guess.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NamedTuple

from mailproxy import bounce_parse, clock, message_ids, suppression, tenants, verp
from mailproxy.addresses import is_valid_address, parse_addresses
from mailproxy.bounce_parse import BounceType, Parsed, ReportKind
from mailproxy.domain import MAX_MESSAGE_ID_CHARS, BounceCounter, EventType, MessageStatus, Record
from mailproxy.imap_mailbox import MailboxConfig, MailboxError, MailboxSession
from mailproxy.logs import logger
from mailproxy.messages import event
from mailproxy.settings import get_settings
from mailproxy.stores import stores

# The tenant counter of unmatched reports (metrics.UNMATCHED_FIELD).
UNMATCHED = "bounce_reports_unmatched"
MAX_LATER_EVENTS = 100  # bounces and complaints one message may collect: its record stays far below 400 KB
TIME_MARGIN_MS = 20_000  # a mailbox is not started with less left than this (its operations' timeouts)
RemainingMs = Callable[[], int] | None


class Mailbox(NamedTuple):
    """One bounce mailbox to read: whose it is, how to reach it, and where its position is kept."""

    key: str  # "<tenant_id>/<account_id>" or "<tenant_id>/*" (the tenant's own)
    tenant_id: str
    account_id: str | None
    config: MailboxConfig
    return_path: str | None  # the mailbox's address, on which VERP tokens are read


class Outcome(NamedTuple):
    """What one mailbox message turned out to be."""

    kind: ReportKind
    recorded: int = 0  # events newly added to messages
    unmatched: bool = False  # a report naming no message of the tenant, or someone its message was not sent to


def mailboxes(tenant: Record, accounts: list[Record]) -> list[Mailbox]:
    """The bounce mailboxes of a tenant: its own, then each account's own; one mailbox named twice is read once."""
    tenant_id = str(tenant["id"])
    settings = get_settings()
    found: list[Mailbox] = []
    seen: set[str] = set()
    owners: list[tuple[Record, str | None, str]] = [(tenant, None, f"bounce/{tenant_id}")]
    owners += [(a, str(a["id"]), f"bounce/{tenant_id}/{a['id']}") for a in accounts]
    for owner, account_id, context in owners:
        stored = owner.get("bounce_mailbox")
        if not isinstance(stored, dict) or not stored.get("host"):
            continue
        config = MailboxConfig(
            host=str(stored["host"]),
            port=int(stored.get("port") or 993),
            user=str(stored.get("user") or ""),
            password=tenants.bounce_password(owner, context),
            use_tls=stored.get("use_tls"),
            folder=str(stored.get("folder") or "INBOX"),
            processed_folder=stored.get("processed_folder") or None,
            timeout=settings.imap_timeout_seconds,
            verify_tls=settings.imap_verify_tls,
        )
        if config.identity in seen:
            continue
        seen.add(config.identity)
        key = f"{tenant_id}/{account_id or '*'}"
        found.append(Mailbox(key, tenant_id, account_id, config, stored.get("return_path") or None))
    return found


def run(*, remaining_ms: RemainingMs = None) -> dict[str, int]:
    """One poll of every bounce mailbox: counts of mailboxes read, messages read, events recorded, unmatched."""
    totals = {"mailboxes": 0, "messages": 0, "recorded": 0, "unmatched": 0, "failed": 0}
    key = verp.signing_key()  # once per run: None until an account turns VERP on (then read at the next run)
    for tenant in stores().tenants.list_tenants():
        accounts = stores().tenants.list_accounts(str(tenant["id"]))
        for box in mailboxes(tenant, accounts):
            if remaining_ms is not None and remaining_ms() < TIME_MARGIN_MS:
                return totals  # the next scheduled run goes on from each mailbox's saved position
            try:
                poll(box, totals, key)
            except MailboxError as exc:
                totals["failed"] += 1
                logger().warning(
                    f"Bounce mailbox not read: {exc}", extra={"tenant_id": box.tenant_id, "account_id": box.account_id}
                )
            except Exception:  # storage unavailable, or a bug: this mailbox waits for the next run, the others go on
                totals["failed"] += 1
                logger().exception(
                    "Bounce mailbox failed; read again from its saved position at the next run",
                    extra={"tenant_id": box.tenant_id, "account_id": box.account_id},
                )
    return totals


def poll(box: Mailbox, totals: dict[str, int], key: bytes | None) -> None:
    """Read one mailbox's new messages (at most GMP_BOUNCE_MAX_MESSAGES), each recorded, then marked processed,
    then the position saved past it; `key` is the VERP signing key (None: none made yet)."""
    limit = get_settings().bounce_max_messages
    with MailboxSession(box.config) as session:
        position = stores().bounces.position(box.key) or {}
        same = (
            position.get("identity") == box.config.identity
            and int(position.get("uidvalidity") or 0) == session.uidvalidity
        )
        last_uid = int(position["last_uid"]) if same else 0
        if position and not same:
            logger().info(
                "Bounce mailbox changed (new UIDVALIDITY or another mailbox): reading what is not flagged processed",
                extra={"tenant_id": box.tenant_id, "account_id": box.account_id},
            )
        totals["mailboxes"] += 1
        # Read afresh (never read, or its UIDs renumbered): what an earlier reader flagged is skipped.
        uids = session.uids_after(last_uid, unprocessed_only=not same)
        for uid in uids[:limit]:
            raw = session.fetch(uid)
            if raw is not None:
                outcome = process(box, raw, key)
                totals["messages"] += 1
                totals["recorded"] += outcome.recorded
                if outcome.unmatched:  # counted here only, once per report however many recipients it names
                    totals["unmatched"] += 1
                    stores().counters.add_tenant_counters(box.tenant_id, {UNMATCHED: 1})
                session.done(uid)
            stores().bounces.save_position(
                box.key,
                identity=box.config.identity,
                uidvalidity=session.uidvalidity,
                last_uid=uid,
                now=clock.now_ts(),
            )


def process(box: Mailbox, raw: bytes, key: bytes | None) -> Outcome:
    """Parse one mailbox message and record what it reports on the message it names (`key`: the VERP signing
    key, None when none was made)."""
    parsed = bounce_parse.parse(raw)
    extra: dict[str, Any] = {"tenant_id": box.tenant_id, "account_id": box.account_id}
    if parsed.kind not in (ReportKind.BOUNCE, ReportKind.COMPLAINT):
        logger().debug(f"Bounce mailbox message skipped: {parsed.kind}", extra=extra)
        return Outcome(parsed.kind)
    message_id, how, uid = _correlate(box, parsed, key)
    if message_id is None:
        return _unmatched(parsed, "it names no message of the tenant", message_id, extra)
    record = stores().messages.get_state(box.tenant_id, message_id)
    if record is None:
        return _unmatched(parsed, "its message is no longer stored", message_id, extra)
    if uid is not None and record.get("pk") != uid:
        return _unmatched(parsed, "its Message-ID is not the message's", message_id, extra)
    if record.get("status") != MessageStatus.SENT:
        return _unmatched(parsed, "its message was never sent", message_id, extra)
    if not parsed.failures:
        return _unmatched(parsed, "it names no recipient", message_id, extra)
    now = clock.now_ts()
    account_id = str(record.get("account_id") or "")
    sent_to = _recipients(record)
    recorded = strangers = 0
    deltas: dict[BounceCounter, int] = {}
    known = set(record.get("event_keys") or ())  # events recorded at an earlier read, and in this one
    for failure in parsed.failures:
        # The address as the message spelled it: the suppression list keeps the local part's case, and the
        # sender looks up the payload's own spelling (a report's spelling is the reporting server's).
        recipient = failure.recipient if sent_to is None else sent_to.get(failure.recipient.lower())
        if sent_to is None and not is_valid_address(failure.recipient):
            # No message went to it (intake checks every address): and a key DynamoDB refuses (over 1024 bytes)
            # would fail this report at every poll, stopping its mailbox here for good.
            recipient = None
        if failure.guessed and (sent_to is None or len(sent_to) != 1):
            # The returned copy's To names someone the message went to, not who complained: believed only of a
            # message to one address, else the first To would be suppressed (and charged) for another's complaint.
            recipient = None
        if recipient is None:
            strangers += 1  # not an address the message went to (a forged report, or forwarding it does not undo)
            continue
        if len(record.get("event_keys") or ()) + recorded >= MAX_LATER_EVENTS:
            logger().warning(
                f"Message {message_id} has {MAX_LATER_EVENTS} bounces and complaints already: no more recorded",
                extra=extra,
            )
            break
        if parsed.kind == ReportKind.COMPLAINT:
            kind, bounce_type, counter = EventType.COMPLAINT, "complaint", BounceCounter.COMPLAINTS
        else:
            kind = EventType.BOUNCE
            bounce_type = str(failure.bounce_type or BounceType.HARD)
            counter = BounceCounter.BOUNCES_HARD if bounce_type == BounceType.HARD else BounceCounter.BOUNCES_SOFT
        event_key = f"{bounce_type}:{recipient.lower()}"  # one event per address however a report spells it
        if event_key in known:
            continue  # read before (a crash before the mailbox message was marked): recorded, and told, then
        known.add(event_key)
        entry = event(
            kind,
            now,
            failure.reason,
            bounce_type=bounce_type,
            bounce_code=failure.code,
            bounce_status=failure.status,
            recipient=recipient,
        )
        # The suppression list and the reputation guard (docs/suppressions.md) before the event that marks the
        # report done: a crash between the two tells them again at the next read instead of never.
        suppression.note_bounce(
            box.tenant_id,
            account_id or None,
            recipient,
            bounce_type,
            message_id=message_id,
            code=failure.code,
            reason=failure.reason,
            ts=now,
        )
        if not stores().messages.add_event(box.tenant_id, message_id, entry, key=event_key, now=now):
            continue  # recorded meanwhile by another reader, or the message is gone
        recorded += 1
        deltas[counter] = deltas.get(counter, 0) + 1
    if deltas and account_id:
        stores().counters.add_account_counters(box.tenant_id, account_id, deltas)
    if recorded:
        logger().info(
            f"{parsed.kind.capitalize()} recorded for message {message_id} ({recorded} recipients, matched by {how})",
            extra={**extra, "account_id": account_id, "message_id": message_id},
        )
    if strangers:
        _unmatched(parsed, f"it names recipients the message was not sent to ({strangers})", message_id, extra)
    return Outcome(parsed.kind, recorded, unmatched=strangers > 0)


def _recipients(record: Record) -> dict[str, str] | None:
    """The bare addresses the message was sent to, lowercased, each to its spelling in the stored payload (the
    first, should two differ only in case); None when the payload is no longer stored (a pack expired): the
    report is then taken as it names its recipient."""
    # A storage failure raises (the mailbox waits for the next poll): read as "no payload" it would let any report
    # quoting the message's id suppress anyone, exactly while storage (or a permission) is broken.
    stored = stores().payloads.load_payloads([record]).get((str(record["tenant_id"]), str(record["id"])))
    if stored is None:
        return None
    payload = stored[1]
    spellings: dict[str, str] = {}
    for name in ("to", "cc", "bcc"):
        for address in parse_addresses(payload.get(name)):
            spellings.setdefault(address.lower(), address)
    return spellings


def _correlate(box: Mailbox, parsed: Parsed, key: bytes | None) -> tuple[str | None, str, str | None]:
    """The id of the tenant's message a report is about, how it was found, and the record uuid it must have
    (None: any): a VERP address signed for this tenant first (it cannot be forged), else the X-Genro-Mail-ID
    the report returns, else the Message-ID the service derived for the message (its uuid must match)."""
    if box.return_path and key is not None:
        for address in parsed.addresses:
            found = verp.message_of(address, box.return_path, box.tenant_id, key)
            if found is not None:
                return found, "VERP", None
    if parsed.genro_id and len(parsed.genro_id) <= MAX_MESSAGE_ID_CHARS:
        return parsed.genro_id, "X-Genro-Mail-ID", None
    ours = message_ids.message_of(parsed.message_id or "")
    if ours is not None and len(ours[1]) <= MAX_MESSAGE_ID_CHARS:
        return ours[1], "Message-ID", ours[0]
    return None, "", None


def _unmatched(parsed: Parsed, why: str, message_id: str | None, extra: dict[str, Any]) -> Outcome:
    """Log a report that names no message of the tenant, or someone its message was not sent to (run() counts it)."""
    logger().warning(
        f"Unmatched {parsed.kind} in the bounce mailbox: {why}",
        extra={**extra, "message_id": message_id, "recipients": len(parsed.failures)},
    )
    return Outcome(parsed.kind, unmatched=True)


def handle_event(scheduled: dict[str, Any], remaining_ms: RemainingMs = None) -> dict[str, int]:
    """The BounceFunction: every invocation is the schedule's (its event says nothing more)."""
    started = time.monotonic()
    totals = run(remaining_ms=remaining_ms)
    logger().info(f"Bounce mailboxes polled in {time.monotonic() - started:.1f} s", extra=totals)
    return totals
