"""The reporter: delivery reports and heartbeats to each tenant's callback (API.md "Delivery reports").

The stream of `MessagesTable` carries each result as it is written. The events a change appended
are persisted per tenant in `StateTable` (an outbox chunk per tenant per stream batch, keyed by the
batch's first record so a retried batch rewrites the same chunk) before any call, so nothing is lost
while a client is down for days. One holder per tenant at a time (a lease in `SYNC/<tenant>`) posts
what is owed, and on a 2xx moves the chunks to the tenant's ledger (`LEDGER/<tenant>`: which events
were acknowledged, and when). Nothing is written per message: `reported_ts` in a record's history
is read from the ledger. Retention is a TTL set with the result; a message whose events may still be
owed when it expires is put back. The scheduled run retries with backoff, sends heartbeats and acts
on run-now requests.
"""

# No `from __future__ import annotations` here: typing.NamedTuple compiles every string annotation into a
# ForwardRef, which doubles the cost of making the NamedTuples below at each cold start.
import base64
import functools
import http.client
import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple, Protocol

from mailproxy import clock, ledger, messages, outbound_http, payloads, state, tenants
from mailproxy.domain import REPORTABLE_EVENTS, EventType
from mailproxy.dynamo import (
    Item,
    batch_write,
    compress_json,
    conditional_write,
    ddb,
    decompress_json,
    from_attr,
    from_item,
    query_all,
    to_attr,
    to_item,
)
from mailproxy.dynamo import (
    chunks as split_into,
)
from mailproxy.errors import DestinationNotAllowed
from mailproxy.ledger import EventKey, event_key
from mailproxy.logs import logger
from mailproxy.settings import get_settings

POST_TIMEOUT_SECONDS = 10.0  # a slow client cannot hold the function
LEASE_SECONDS = 60  # the function's timeout: a crashed holder's lease lapses by then
RETRY_BASE_SECONDS = 30  # backoff after a failed call: 30 s, 60 s, 120 s ... capped
RETRY_MAX_SECONDS = 900
MAX_EVENTS_PER_CALL = 500  # a backlog goes out in several calls, each acknowledged on its own
MAX_EVENTS_PER_CHUNK = 400  # an outbox chunk stays far below DynamoDB's 400 KB item limit
# A result and the stream record that carries it are written in the same second; an outbox chunk is
# named after its first record's time. This much leeway covers clocks and the stream's own lag.
CHUNK_CLOCK_SLACK_SECONDS = 3_600
MAX_ROUNDS = 20  # calls per tenant per invocation (a backlog, or results that arrived meanwhile)
ROUND_MARGIN_MS = 15_000  # time a round needs: the call's timeout plus the writes after it
WORKERS = 8
MAX_REPLY_BYTES = 1_000_000
LATEST_TIMESTAMP = 253_402_300_799  # 9999-12-31: a later next_sync_after is no time at all (DynamoDB keeps 38 digits)
TTL_PRINCIPAL = "dynamodb.amazonaws.com"

RemainingMs = Callable[[], int] | None


# ---------------------------------------------------------------------- what a report says


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
    """The delivery_report entry of one event (API.md: sent, error or deferred)."""
    kind, ts = event.get("event_type"), int(event.get("event_ts") or 0)
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
    path = str(tenant.get("client_sync_path") or tenants.DEFAULT_SYNC_PATH).strip()
    return base.rstrip("/") + "/" + path.lstrip("/")


# ---------------------------------------------------------------------- HTTP


class ReportFailed(Exception):
    """A call that did not end in a 2xx: its entries are sent again later."""


class ReportHttp(Protocol):
    """How reports are posted: the body of a 2xx answer, else ReportFailed."""

    def post(self, url: str, *, headers: dict[str, str], body: bytes, timeout: float) -> bytes:
        """POST `body`; the response body of a 2xx answer."""
        ...


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is not an acknowledgement (urllib would turn the POST into a GET)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class UrllibReportHttp:
    """ReportHttp over urllib through the outbound guard: a callback must not reach the runtime API,
    the metadata service or a private host; a refused one is retried as an unreachable one."""

    def post(self, url: str, *, headers: dict[str, str], body: bytes, timeout: float) -> bytes:
        """POST `body`; the response body of a 2xx answer, ReportFailed otherwise."""
        if not url.lower().startswith(("http://", "https://")):
            raise ReportFailed(f"not an http(s) URL: {url!r}")
        request = urllib.request.Request(url, data=body, method="POST", headers=headers)
        opener = outbound_http.http_opener(_NoRedirect())
        try:
            with opener.open(request, timeout=timeout) as response:
                status = int(response.status)
                data = response.read(MAX_REPLY_BYTES)
        except urllib.error.HTTPError as exc:
            raise ReportFailed(f"HTTP {exc.code}") from exc
        except urllib.error.URLError as exc:
            raise ReportFailed(str(exc.reason)) from exc
        except DestinationNotAllowed as exc:
            raise ReportFailed(str(exc)) from exc
        except TimeoutError as exc:
            raise ReportFailed(f"timed out after {timeout:g} s") from exc
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise ReportFailed(str(exc) or type(exc).__name__) from exc
        if not 200 <= status < 300:
            raise ReportFailed(f"HTTP {status}")
        return bytes(data)


# ---------------------------------------------------------------------- reporter state in StateTable


def _state_table() -> str:
    return get_settings().state_table


def _sync_key(tenant_id: str) -> dict[str, Any]:
    return {"pk": {"S": "SYNC"}, "sk": {"S": tenant_id}}


def _outbox_pk(tenant_id: str) -> str:
    return f"OUTBOX#{tenant_id}"


def chunk_key(change: Mapping[str, Any], now: int) -> str:
    """The outbox key of a stream batch's events for one tenant, from its first record: the same batch
    retried gives the same key. The time first, so that chunks sort roughly in event order."""
    created = change.get("ApproximateCreationDateTime")
    ts = int(created) if isinstance(created, int | float) and not isinstance(created, bool) else now
    return f"{ts:012d}#{change.get('SequenceNumber', '')!s:0>40}"


def chunk_ts(sk: str) -> int:
    """The time an outbox chunk's key starts with."""
    return int(sk.partition("#")[0])


def owe(tenant_id: str, owed: list[Owed], key: str) -> None:
    """Persist events owed to a tenant (rewriting the same chunks when a stream batch is retried),
    then bump the revision so that a holder that read the outbox before sees more is owed."""
    for n, part in enumerate(split_into(owed, MAX_EVENTS_PER_CHUNK)):
        item = {"pk": _outbox_pk(tenant_id), "sk": f"{key}#{n:03d}", "events": encode_events(part)}
        ddb().put_item(TableName=_state_table(), Item=to_item(item))
    ddb().update_item(
        TableName=_state_table(),
        Key=_sync_key(tenant_id),
        UpdateExpression="ADD owed_rev :one",
        ExpressionAttributeValues={":one": {"N": "1"}},
    )


def chunks(tenant_id: str) -> list[Item]:
    return list(
        query_all(
            TableName=_state_table(),
            KeyConditionExpression="pk = :p",
            ExpressionAttributeValues={":p": to_attr(_outbox_pk(tenant_id))},
            ConsistentRead=True,
        )
    )


def oldest_owed_ts(tenant_id: str) -> int | None:
    """The time of the tenant's oldest outbox chunk, or None when nothing is owed."""
    reply = ddb().query(
        TableName=_state_table(),
        KeyConditionExpression="pk = :p",
        ExpressionAttributeValues={":p": to_attr(_outbox_pk(tenant_id))},
        ProjectionExpression="sk",
        ConsistentRead=True,
        Limit=1,
    )
    found = reply.get("Items") or []
    return chunk_ts(str(from_item(found[0])["sk"])) if found else None


def drop_chunks(tenant_id: str, sks: list[str]) -> None:
    batch_write(_state_table(), deletes=[{"pk": _outbox_pk(tenant_id), "sk": sk} for sk in sks])


def acquire(tenant_id: str, lease_id: str, now: int, *, ignore_backoff: bool) -> Item | None:
    """Take the tenant's lease (none held, and no backoff unless ignored); its SYNC item, or None."""
    condition = "(attribute_not_exists(lease_until) OR lease_until < :now)"
    if not ignore_backoff:
        condition += " AND (attribute_not_exists(retry_at) OR retry_at <= :now)"
    reply = conditional_write(
        ddb().update_item,
        TableName=_state_table(),
        Key=_sync_key(tenant_id),
        UpdateExpression="SET lease_until = :until, lease_id = :lease",
        ConditionExpression=condition,
        ExpressionAttributeValues={
            ":now": to_attr(now),
            ":until": to_attr(now + LEASE_SECONDS),
            ":lease": to_attr(lease_id),
        },
        ReturnValues="ALL_NEW",
    )
    if reply is None:
        return None
    return from_item(reply["Attributes"])


def release(tenant_id: str, lease_id: str, sets: dict[str, Any], removes: Iterable[str] = ()) -> Item | None:
    """Record a round's outcome and give the lease back; the new SYNC item, or None if the lease was lost."""
    names = {"#lease_until": "lease_until", "#lease_id": "lease_id"}
    values: dict[str, Any] = {":lease": to_attr(lease_id)}
    parts = []
    for n, (name, value) in enumerate(sets.items()):
        names[f"#s{n}"] = name
        values[f":s{n}"] = to_attr(value)
        parts.append(f"#s{n} = :s{n}")
    dropped = ["#lease_until", "#lease_id"]
    for n, name in enumerate(removes):
        names[f"#r{n}"] = name
        dropped.append(f"#r{n}")
    update = ("SET " + ", ".join(parts) + " " if parts else "") + "REMOVE " + ", ".join(dropped)
    reply = conditional_write(
        ddb().update_item,
        TableName=_state_table(),
        Key=_sync_key(tenant_id),
        UpdateExpression=update,
        ConditionExpression="#lease_id = :lease",
        ExpressionAttributeNames=names,
        ExpressionAttributeValues=values,
        ReturnValues="ALL_NEW",
    )
    if reply is None:
        logger().warning("report lease lost before release", extra={"tenant_id": tenant_id})
        return None
    return from_item(reply["Attributes"])


def sync_states() -> dict[str, Item]:
    """Reporter state per tenant: last_sync_ts, next_sync_due, dnd_until."""
    return state.sync_states()


def forget_tenant(tenant_id: str) -> None:
    """Drop the reporter state of a tenant that no longer exists (its messages are gone)."""
    drop_chunks(tenant_id, [str(c["sk"]) for c in chunks(tenant_id)])
    ledger.forget(tenant_id)
    ddb().delete_item(TableName=_state_table(), Key=_sync_key(tenant_id))


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
    used, capped = _take(chunks(tenant_id), MAX_EVENTS_PER_CALL)
    # A stream batch retried after its chunk was acknowledged writes the chunk again: skip what the ledger has.
    previous = ledger.acknowledged_in(tenant_id, [str(c["sk"]) for c in used])
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
        drop_chunks(tenant_id, [str(c["sk"]) for c in used])  # everything listed was acknowledged already
        release(tenant_id, lease_id, settled)
        return Round(more=capped)

    now = clock.now_ts()
    body = json.dumps({"delivery_report": report}, separators=(",", ":")).encode()
    extra = {"tenant_id": tenant_id, "entries": len(report)}
    try:
        headers = {"Content-Type": "application/json", **outbound_http.auth_headers(tenants.client_auth(tenant))}
        answer = http.post(sync_url(tenant), headers=headers, body=body, timeout=POST_TIMEOUT_SECONDS)
    except Exception as exc:
        failures = int(sync.get("failures") or 0) + 1
        retry_at = now + retry_delay(failures)
        reason = str(exc) or type(exc).__name__
        logger().warning(f"Report to {tenant_id} failed ({reason}): retry at {retry_at}", extra=extra)
        release(tenant_id, lease_id, {"failures": failures, "retry_at": retry_at, "last_error": reason[:500]})
        return Round(called=True)

    acknowledged = clock.now_ts()
    # The ledger first: chunks that outlive a crash here are found acknowledged by the next round and dropped.
    ledger.record(
        tenant_id, {sk: {**previous.get(sk, {}), **dict.fromkeys(keys, acknowledged)} for sk, keys in fresh.items()}
    )
    drop_chunks(tenant_id, [str(c["sk"]) for c in used])
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
    new = release(tenant_id, lease_id, sets, removes)
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
        sync = acquire(tenant_id, lease_id, clock.now_ts(), ignore_backoff=ignore_backoff)
        if sync is None:
            break
        try:
            outcome = _round(tenant, sync, lease_id, heartbeat=heartbeat and calls == 0, http=client)
        except Exception:
            release(tenant_id, lease_id, {})
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


# ---------------------------------------------------------------------- the stream trigger


def _stream_attr(attr: Mapping[str, Any]) -> Any:
    """A stream image's attribute value (Lambda gives binary as base64 text)."""
    ((kind, value),) = attr.items()
    if kind == "B" and isinstance(value, str):
        return base64.b64decode(value)
    if kind == "M":
        return {k: _stream_attr(v) for k, v in value.items()}
    if kind == "L":
        return [_stream_attr(v) for v in value]
    return from_attr(attr)


def stream_image(image: Mapping[str, Any] | None) -> Item | None:
    """A NEW_IMAGE/OLD_IMAGE of a Lambda stream record as a dict."""
    if not image:
        return None
    return {k: _stream_attr(v) for k, v in image.items()}


def _is_ttl_removal(record: Mapping[str, Any]) -> bool:
    identity = record.get("userIdentity") or {}
    return (
        record.get("eventName") == "REMOVE"
        and identity.get("type") == "Service"
        and identity.get("principalId") == TTL_PRINCIPAL
    )


def _forget_payloads(keys: list[tuple[str, str]]) -> None:
    """Delete the payloads of expired messages, unless the id was submitted again meanwhile."""
    by_tenant: dict[str, list[str]] = {}
    for tenant_id, message_id in keys:
        by_tenant.setdefault(tenant_id, []).append(message_id)
    gone = [
        (tenant_id, i)
        for tenant_id, ids in by_tenant.items()
        for present in [messages.get_states(tenant_id, ids)]
        for i in ids
        if i not in present
    ]
    payloads.delete_payloads(gone)


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
    found = tenants.get_tenants(set(by_tenant))
    for tenant_id, group in by_tenant.items():
        tenant = found.get(tenant_id)
        oldest = oldest_owed_ts(tenant_id) if tenant is not None and tenant.get("client_base_url") else None
        for item in group:
            (keep if _may_be_owed(item, oldest) else gone).append(item)
    return keep, gone


def _expired(images: list[Item], keys: list[tuple[str, str]], now: int) -> None:
    """Messages DynamoDB's TTL removed: put back those whose reports may still be owed (unreported
    messages are never removed by retention), and delete the pinned payloads of the others (a packed
    one goes with its pack)."""
    keep, gone = split_expired(images)
    expires = now + get_settings().report_retention_seconds
    for item in keep:
        messages.restore(item, expires_at=expires)
    seen = {(str(i["tenant_id"]), str(i["id"])) for i in images}
    _forget_payloads(payloads.pinned_keys(gone) + [k for k in keys if k not in seen])


def handle_stream(
    records: list[dict[str, Any]], *, http: ReportHttp | None = None, remaining_ms: RemainingMs = None
) -> dict[str, Any]:
    """A batch of MessagesTable stream records: persist the events each tenant is owed, then try to report them now.

    When an outbox cannot be written, the partial batch response names the batch's first record, so that
    the whole batch comes back and each chunk is written again under the same key.
    """
    now = clock.now_ts()
    owed: dict[str, list[Owed]] = {}
    keys: dict[str, str] = {}
    expired: list[Item] = []
    expired_keys: list[tuple[str, str]] = []
    for record in records:
        try:
            change = record["dynamodb"]
            if _is_ttl_removal(record):
                key = stream_image(change["Keys"]) or {}
                expired_keys.append((str(key["tenant_id"]), str(key["id"])))
                old = stream_image(change.get("OldImage"))
                if old is not None:
                    expired.append(old)
                continue
            new = stream_image(change.get("NewImage"))
            # A message put back after its TTL removal carries events that were owed before.
            if new is None or new.get("restored"):
                continue
            events = appended_events(stream_image(change.get("OldImage")), new)
            if not events:
                continue
            tenant_id = str(new["tenant_id"])
        except (KeyError, TypeError, ValueError, AttributeError):
            logger().exception("unreadable stream record skipped", extra={"event_id": record.get("eventID")})
            continue
        owed.setdefault(tenant_id, []).extend(events)
        keys.setdefault(tenant_id, chunk_key(change, now))

    plans: list[tuple[Item, bool, bool]] = []
    try:
        if expired_keys:
            _expired(expired, expired_keys, now)
        found = tenants.get_tenants(set(owed)) if owed else {}
        for tenant_id, events in owed.items():
            tenant = found.get(tenant_id)
            if tenant is None or not tenant.get("client_base_url"):
                continue  # deleted (its messages go with it), or nobody to report to
            owe(tenant_id, events, keys[tenant_id])
            plans.append((tenant, False, False))
    except Exception:
        logger().exception("could not record owed reports: the batch comes back whole")
        first = str(records[0].get("dynamodb", {}).get("SequenceNumber", ""))
        return {"batchItemFailures": [{"itemIdentifier": first}] if first else []}
    if plans:
        _serve(plans, http, remaining_ms)
    return {"batchItemFailures": []}


# ---------------------------------------------------------------------- the schedule


def run_schedule(*, http: ReportHttp | None = None, remaining_ms: RemainingMs = None) -> dict[str, int]:
    """One scheduled run: retries of what is owed (after backoff), heartbeats, run-now requests."""
    now = clock.now_ts()
    requests = state.run_now_requests()
    flush_all = "*" in requests
    syncs = state.sync_states()
    plans: list[tuple[Item, bool, bool]] = []
    known: set[str] = set()
    for tenant in tenants.list_tenants():
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
        state.clear_run_now(scope, requested_at)
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


def expire_due(now: int | None = None) -> int:
    """What DynamoDB's TTL and the reporter's handling of its removals do in AWS, for the local stack
    (moto never expires items): delete expired messages and their payloads, keep those whose reports
    may still be owed, and drop expired ledger items. How many messages were deleted."""
    now = clock.now_ts() if now is None else now
    keep, gone = split_expired(messages.expired_items(now))
    expires = now + get_settings().report_retention_seconds
    for item in keep:
        messages.extend_expiry(str(item["tenant_id"]), str(item["id"]), expires_at=expires)
    keys = [(str(i["tenant_id"]), str(i["id"])) for i in gone]
    if keys:
        messages.delete_states(keys)
        payloads.delete_payloads(payloads.pinned_keys(gone))
    state.delete_expired(now)
    return len(keys)
