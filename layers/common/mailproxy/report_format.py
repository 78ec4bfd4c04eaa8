"""What a delivery report says (API.md "Delivery reports"): the events owed, their entries, the client's reply.

Pure functions, shared by the reporter (`mailproxy.reports`) and both adapters' outboxes.
"""

# No `from __future__ import annotations` here: typing.NamedTuple compiles every string annotation into a
# ForwardRef, which doubles the cost of making the NamedTuples below at each cold start.
import json
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from mailproxy.compression import compress_json, decompress_json
from mailproxy.domain import REPORTABLE_EVENTS, EventType
from mailproxy.ledger import EventKey, event_key
from mailproxy.tenants import DEFAULT_SYNC_PATH

LEASE_SECONDS = 60  # the function's timeout: a crashed holder's lease lapses by then
RETRY_BASE_SECONDS = 30  # backoff after a failed call: 30 s, 60 s, 120 s ... capped
RETRY_MAX_SECONDS = 900
MAX_EVENTS_PER_CHUNK = 400  # an outbox chunk stays far below DynamoDB's 400 KB item limit
LATEST_TIMESTAMP = 253_402_300_799  # 9999-12-31: a later next_sync_after is no time at all (DynamoDB keeps 38 digits)


class Change(NamedTuple):
    """One write of a message record, as the reporter reads them (DynamoDB's stream; SQLite's change table).

    `old`/`new` are the record before and after (None: created / deleted); `expired` marks a removal by
    retention; `ts` and `seq` place the change in its feed (a retried batch has the same first ones).
    """

    tenant_id: str
    id: str
    old: dict[str, Any] | None
    new: dict[str, Any] | None
    expired: bool = False
    ts: int | None = None
    seq: str = ""


class Owed(NamedTuple):
    """One reportable event owed to a tenant: the message, the event's place in its history, the event."""

    id: str
    position: int
    event: Mapping[str, Any]

    @property
    def key(self) -> EventKey:
        """What identifies the event in the ledger."""
        return event_key(self.id, self.position, self.event)


def appended_events(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> list[Owed]:
    """The reportable events a change appended to a message's history (histories only grow)."""
    start = len(old.get("history") or []) if old else 0
    message_id = str(new["id"])
    return [
        Owed(message_id, index, event)
        for index, event in enumerate(new.get("history") or [])
        if index >= start and isinstance(event, Mapping) and event.get("event_type") in REPORTABLE_EVENTS
    ]


def entry(message_id: str, event: Mapping[str, Any]) -> dict[str, Any]:
    """The delivery_report entry of one event (API.md: sent, error or deferred; docs/bounces.md: bounce or
    complaint, as genro-mail-proxy's enterprise edition words a bounce, plus the recipient)."""
    kind, ts = event.get("event_type"), int(event.get("event_ts") or 0)
    if kind in (EventType.BOUNCE, EventType.COMPLAINT):
        return {
            "id": message_id,
            "bounce_ts": ts,
            "bounce_type": str(event.get("bounce_type") or kind),
            "bounce_code": event.get("bounce_code"),
            "bounce_status": event.get("bounce_status"),
            "bounce_reason": str(event.get("description") or ""),
            "recipient": event.get("recipient"),
        }
    if kind == EventType.SENT:
        return {"id": message_id, "sent_ts": ts}
    if kind == EventType.ERROR:
        return {"id": message_id, "error_ts": ts, "error": str(event.get("description") or "")}
    due = event.get("deferred_ts")
    reason = event.get("deferred_reason") or event.get("description") or ""
    return {"id": message_id, "deferred_ts": int(due) if due is not None else ts, "deferred_reason": str(reason)}


def build_report(owed: Iterable[Owed]) -> list[dict[str, Any]]:
    """The entries of the owed events in event order (a message's own events keep their history order)."""
    timed = [(int(o.event.get("event_ts") or 0), o.id, o.position, entry(o.id, o.event)) for o in owed]
    timed.sort(key=lambda t: (t[0], t[1], t[2]))
    return [e for _, _, _, e in timed]


def encode_events(owed: list[Owed]) -> bytes:
    """An outbox chunk's events, compressed (a chunk is billed by its size)."""
    return compress_json([[o.id, o.position, dict(o.event)] for o in owed])


def decode_events(blob: bytes) -> list[Owed]:
    """The events of an outbox chunk."""
    return [Owed(str(i), int(n), e) for i, n, e in decompress_json(blob)]


class Reply(NamedTuple):
    """What a client's 2xx answer asks for (a body that is not a JSON object asks for nothing)."""

    next_sync_after: int | None = None
    queued: int = 0
    extra: Mapping[str, Any] = {}  # never changed: a Mapping


def parse_reply(body: bytes) -> Reply:
    """The client's directives from a 2xx body; anything unreadable is an acknowledgement only."""
    try:
        value = json.loads(body.decode("utf-8")) if body.strip() else None
    except (UnicodeDecodeError, ValueError):
        return Reply()
    if not isinstance(value, dict):
        return Reply()
    return Reply(
        next_sync_after=_whole(value.get("next_sync_after"), LATEST_TIMESTAMP),
        queued=_whole(value.get("queued"), 10**9) or 0,
        extra={k: value[k] for k in ("error", "not_found") if k in value},
    )


def _whole(value: Any, highest: int) -> int | None:
    """A JSON number as an int, if it is one from 0 to `highest` (JSON's Infinity, NaN and 1e400 are not)."""
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= highest:
        return None  # NaN fails every comparison
    return int(value)


def retry_delay(failures: int) -> int:
    """Seconds before the next attempt after `failures` failed calls in a row."""
    return int(min(RETRY_MAX_SECONDS, RETRY_BASE_SECONDS * 2 ** max(0, failures - 1)))


def sync_url(tenant: Mapping[str, Any]) -> str:
    """`client_base_url` + `client_sync_path` (default `/mail-proxy/sync`)."""
    base = str(tenant.get("client_base_url") or "").strip()
    path = str(tenant.get("client_sync_path") or DEFAULT_SYNC_PATH).strip()
    return base.rstrip("/") + "/" + path.lstrip("/")


def chunk_key(ts: int | None, seq: str, now: int) -> str:
    """The outbox key of a batch of changes' events for one tenant, from its first change (time, sequence):
    the same batch retried gives the same key. The time first, so that chunks sort roughly in event order."""
    when = ts if isinstance(ts, int) and not isinstance(ts, bool) else now
    return f"{when:012d}#{seq:0>40}"


def chunk_ts(sk: str) -> int:
    """The time an outbox chunk's key starts with."""
    return int(sk.partition("#")[0])
