"""The suppression list: addresses a tenant never mails again, fed by bounces and complaints, and the filter
the sender applies before any SMTP transaction (docs/suppressions.md).

`note_bounce` is what the bounce processing calls once per correlated bounce or complaint: it adds the recipient
when due (at once for a hard bounce or a complaint, after GMP_SOFT_BOUNCE_LIMIT soft bounces within
GMP_SOFT_BOUNCE_WINDOW_SECONDS) and feeds the account's reputation window (`mailproxy.reputation`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from email.utils import formataddr
from typing import Any, Protocol

from mailproxy import urlsafe
from mailproxy.addresses import address_pairs, suppression_key
from mailproxy.errors import BadRequest
from mailproxy.settings import get_settings
from mailproxy.stores import stores
from mailproxy.tenants import HAS_SUPPRESSIONS

KINDS = ("hard", "soft", "complaint")
MANUAL = "manual"  # the `source` of an entry a tenant added over the API
RECIPIENT_FIELDS = ("to", "cc", "bcc")


def note_bounce(
    tenant_id: str,
    account_id: str | None,
    recipient: str,
    kind: str,
    *,
    message_id: str | None,
    code: str | None,
    reason: str,
    ts: int,
) -> None:
    """Act on one bounce (`kind` "hard" or "soft") or complaint ("complaint") of a tenant's message to
    `recipient`: suppress the address when due, and count it in the account's reputation window (pausing the
    account when over a threshold). `account_id` None: the account is not known, only the list is fed."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    from mailproxy import reputation

    settings = get_settings()
    address = suppression_key(recipient)
    entry: dict[str, Any] = {
        "address": address,
        "source": kind,
        "reason": reason,
        "code": code,
        "message_id": message_id,
        "account_id": account_id,
        "created_at": ts,
    }
    tenant = stores().tenants.get_tenant(tenant_id)
    if tenant is None:
        return  # deleted meanwhile: nothing of it is kept
    if kind == "soft":
        window = settings.soft_bounce_window_seconds
        count = stores().suppressions.note_soft_bounce(tenant_id, address, ts=ts, window_seconds=window)
        if count >= settings.soft_bounce_limit:
            entry["reason"] = f"{count} soft bounces within {window} s; last: {reason}"
            _note_list(tenant)
            # Added only when absent: a hard bounce's, a complaint's or the tenant's entry says more, and the
            # entry of the bounce that reached the limit keeps its time.
            stores().suppressions.add_if_absent(tenant_id, entry)
    else:
        _note_list(tenant)
        stores().suppressions.put(tenant_id, entry)
    # The bounce rate counts hard bounces, as SES's does: a soft one is a server's passing trouble. It is counted
    # when it is learnt (now), not at `ts`: a report read late still weighs on the window of the recent sends.
    if account_id is not None and kind != "soft":
        reputation.note(
            tenant_id,
            account_id,
            bounces=1 if kind == "hard" else 0,
            complaints=1 if kind == "complaint" else 0,
        )


# ---------------------------------------------------------------------- at send


class Sendable(Protocol):
    """What the filter needs of a sender's job."""

    tenant_id: str
    payload: dict[str, Any] | None
    sending: dict[str, Any] | None


def drop_suppressed[J: Sendable](jobs: Sequence[J]) -> list[tuple[J, list[str], bool]]:
    """Set each job's `sending` to its payload without the suppressed recipients (the stored payload is left
    as it is), reading the tenants' lists once for the whole batch: per job that lost any, (job, the addresses
    dropped, True when none is left to send to)."""
    parsed: list[tuple[J, dict[str, list[tuple[str, str]]]]] = []
    for job in jobs:
        if job.payload is None:
            continue
        try:
            fields = {name: address_pairs(job.payload.get(name)) for name in RECIPIENT_FIELDS}
        except ValueError:
            continue  # a garbled field: the email builder fails the message with the reason
        parsed.append((job, fields))
    keys = {
        (job.tenant_id, suppression_key(addr))
        for job, fields in parsed
        for pairs in fields.values()
        for _, addr in pairs
    }
    suppressed = stores().suppressions.find(keys) if keys else {}
    if not suppressed:
        return []
    dropped_jobs: list[tuple[J, list[str], bool]] = []
    for job, fields in parsed:
        dropped: list[str] = []
        kept_any = False
        changed: dict[str, list[str]] = {}
        for name, pairs in fields.items():
            kept = [(n, a) for n, a in pairs if (job.tenant_id, suppression_key(a)) not in suppressed]
            dropped += [a for _, a in pairs if (job.tenant_id, suppression_key(a)) in suppressed]
            kept_any = kept_any or bool(kept)
            if len(kept) != len(pairs):
                changed[name] = [formataddr(pair) for pair in kept]
        if dropped:
            assert job.payload is not None
            job.sending = {**job.payload, **changed}
            dropped_jobs.append((job, list(dict.fromkeys(dropped)), not kept_any))
    return dropped_jobs


def failure_reason(dropped: Iterable[str]) -> str:
    """The error of a message whose every recipient is suppressed."""
    return f"suppressed: {', '.join(dropped)}"


# ---------------------------------------------------------------------- the API


def entry_view(entry: dict[str, Any]) -> dict[str, Any]:
    """An entry as the API shows it."""
    return {
        "address": entry.get("address"),
        "source": entry.get("source"),
        "reason": entry.get("reason"),
        "code": entry.get("code"),
        "message_id": entry.get("message_id"),
        "account_id": entry.get("account_id"),
        "created_at": entry.get("created_at"),
    }


def _after(cursor: str | None) -> str | None:
    if cursor is None:
        return None
    try:
        after = urlsafe.cursor_value(cursor, "after")
    except ValueError as exc:
        raise BadRequest("invalid cursor") from exc
    if not isinstance(after, str) or not after or any(0xD800 <= ord(c) <= 0xDFFF for c in after):
        raise BadRequest("invalid cursor")
    return after


def list_page(tenant_id: str, *, limit: int, cursor: str | None) -> dict[str, Any]:
    """`GET /suppressions`: one page of the tenant's list in address order, and the cursor of the next one."""
    entries = stores().suppressions.list_entries(tenant_id, after=_after(cursor), limit=limit + 1)
    page = entries[:limit]
    more = len(entries) > limit
    return {
        "ok": True,
        "suppressions": [entry_view(e) for e in page],
        "total": len(page),
        "next_cursor": urlsafe.cursor("after", str(page[-1]["address"])) if more and page else None,
    }


def add(tenant_id: str, addresses: list[str], *, reason: str | None, now: int) -> dict[str, Any]:
    """`POST /suppressions`: suppress addresses by hand (`source` manual); which were new."""
    wanted = list(dict.fromkeys(suppression_key(given) for given in addresses))
    # An address already on the list keeps its entry (a bounce's reason and source say more than "manual").
    found = stores().suppressions.find({(tenant_id, address) for address in wanted})
    new = [address for address in wanted if (tenant_id, address) not in found]
    if new:
        _note_list(stores().tenants.get_tenant(tenant_id) or {"id": tenant_id})
    # Added only when still absent: a bounce recorded since the read above keeps its entry.
    added = [
        address
        for address in new
        if stores().suppressions.add_if_absent(
            tenant_id,
            {"address": address, "source": MANUAL, "reason": reason or "added by the tenant", "created_at": now},
        )
    ]
    return {"ok": True, "added": added, "already_suppressed": [a for a in wanted if a not in added]}


def _note_list(tenant: dict[str, Any]) -> None:
    """Mark the tenant as having a list before its entry is written (a crash between leaves a mark and no
    entry: a read for nothing, never a suppressed address mailed)."""
    if not tenant.get(HAS_SUPPRESSIONS):
        stores().tenants.note_suppressions(str(tenant["id"]))


def has_list(tenant: dict[str, Any] | None) -> bool:
    """Whether the sender must read the tenant's suppression list at all."""
    return bool((tenant or {}).get(HAS_SUPPRESSIONS))


def remove(tenant_id: str, address: str) -> bool:
    """`DELETE /suppressions/{address}`: False when the address was not on the list."""
    return stores().suppressions.remove(tenant_id, suppression_key(address))
