"""The domain's vocabulary: message statuses, history event types, send outcomes, counters.

Each is a `StrEnum`: a member is the `str` it stands for, so stored items, queue bodies and JSON stay
byte for byte what they were, and a value read back from storage (a plain `str`) compares equal to it.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

# The longest message id (API.md): the API refuses a longer one, and a longer X-Genro-Mail-ID in a bounce
# names no message (no storage key is made of it).
MAX_MESSAGE_ID_CHARS = 255


class MessageStatus(StrEnum):
    """A message's `status` in MessagesTable (API.md "Records")."""

    PENDING = "pending"
    DEFERRED = "deferred"
    SUSPENDED = "suspended"
    SENDING = "sending"
    SENT = "sent"
    ERROR = "error"


UNSENT = (MessageStatus.PENDING, MessageStatus.DEFERRED, MessageStatus.SUSPENDED)  # a submission may overwrite
IN_FLIGHT = (MessageStatus.SENDING,)
FINAL = (MessageStatus.SENT, MessageStatus.ERROR)
PENDING_STATUSES = (*UNSENT, *IN_FLIGHT)  # counted in gmp_pending_messages
SENDABLE = (MessageStatus.PENDING, MessageStatus.DEFERRED)  # a sender may claim (or the scheduler re-queue)


class EventType(StrEnum):
    """The `event_type` of a history event."""

    QUEUED = "queued"
    SENT = "sent"
    ERROR = "error"
    DEFERRED = "deferred"
    BOUNCE = "bounce"  # a delivery failure returned after the message was sent (docs/bounces.md)
    COMPLAINT = "complaint"  # a recipient reported the message as spam (an ARF feedback report)


REPORTABLE_EVENTS = (
    EventType.SENT,
    EventType.ERROR,
    EventType.DEFERRED,
    EventType.BOUNCE,
    EventType.COMPLAINT,
)  # what delivery reports carry


class Outcome(StrEnum):
    """What became of one claimed message in a send batch (stored as `outcome`, read by crash recovery)."""

    SENT = "sent"
    ERROR = "error"
    RETRY = "retry"  # deferred after a temporary failure
    RATE_LIMITED = "rate_limited"  # deferred by the account's rate limit
    REQUEUED = "requeued"  # handed back unsent, no attempt counted
    HELD = "held"  # its tenant or batch is suspended
    DROPPED = "dropped"  # its tenant is gone; also a job's outcome until something happens to it
    LOST_CLAIM = "lost-claim"  # another claim took it over before the result was recorded
    CRASHED = "crashed"  # an unexpected error left its claim to crash recovery


DEFERRING_OUTCOMES = (Outcome.RETRY, Outcome.RATE_LIMITED)
FINAL_OUTCOMES = (Outcome.SENT, Outcome.ERROR)


class Counter(StrEnum):
    """An account's persisted /metrics counter (a field of its `COUNTERS` item)."""

    SENT = "sent"
    ERRORS = "errors"
    DEFERRED = "deferred"
    RATE_LIMITED = "rate_limited"
    SUPPRESSED = "suppressed"  # recipients dropped at send because the tenant's suppression list holds them


class BounceCounter(StrEnum):
    """An account's persisted /metrics counter of what its bounce mailbox reported (same `COUNTERS` item; apart
    from `Counter`, which a send batch applies whole)."""

    BOUNCES_HARD = "bounces_hard"  # gmp_bounces_total{type="hard"}
    BOUNCES_SOFT = "bounces_soft"  # gmp_bounces_total{type="soft"}
    COMPLAINTS = "complaints"  # gmp_complaints_total


class JournalKind(StrEnum):
    """The unit of work a journal entry stands for."""

    INTAKE = "intake"
    SEND = "send"


RATE_LIMIT_EXCEEDED = "rate_limit_exceeded"  # the error of a message an account's `limit_behavior: reject` refused
RATE_LIMIT_DEFERRAL = "rate_limit"  # the deferred_reason of a message the account's rate limit deferred


Record = dict[str, Any]  # a stored record (a message, tenant, account...) as the ports exchange it


class AlreadyFinal(Exception):
    """The message was already sent, failed, or is being sent: it cannot be overwritten."""


class Submission:
    """One message of a tenant's submission, as `Messages.submit_many` writes it (the arguments of `submit`).

    A plain class with slots: a NamedTuple here cost every function's cold start (this module is on all their
    paths) for a value only intake makes."""

    __slots__ = (
        "account_id",
        "batch_code",
        "deferred_ts",
        "id",
        "pack",
        "park_ts",
        "priority",
        "rev",
        "status",
        "uid",
    )

    def __init__(
        self,
        *,
        id: str,
        uid: str,
        rev: str,
        account_id: str,
        priority: int,
        batch_code: str | None,
        status: MessageStatus,
        deferred_ts: int | None,
        park_ts: int | None,
        pack: str | None,
    ) -> None:
        self.id = id
        self.uid = uid
        self.rev = rev
        self.account_id = account_id
        self.priority = priority
        self.batch_code = batch_code
        self.status = status
        self.deferred_ts = deferred_ts
        self.park_ts = park_ts
        self.pack = pack
