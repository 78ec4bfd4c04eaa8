"""SMTP session leases in `StateTable`: one item per account, its holders' leases in one map.

Written with optimistic concurrency (a version number), as the rate windows are: a sender reads the item
(or trusts its last copy), decides with `mailproxy.sessions.grant` and writes its lease if the version is
still the one it read; a sender that loses the race re-reads and decides again. The item's `expires_at`
(the table's TTL) follows the latest lease, so an account nobody sends through leaves nothing behind.
"""

from __future__ import annotations

from typing import Any

from mailproxy.adapters.aws import versioned
from mailproxy.adapters.aws.dynamo import Item, batch_write
from mailproxy.adapters.aws.expressions import Update
from mailproxy.ratelimit import MAX_ATTEMPTS
from mailproxy.sessions import Held, Leases, grant, leases_after
from mailproxy.settings import get_settings

_known = versioned.Guesses()  # last seen item per account


def _pk(tenant_id: str, account_id: str) -> str:
    return f"SESSIONS#{tenant_id}#{account_id}"


def _key(pk: str) -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"S": "S"}}


def _leases(item: Item | None) -> dict[str, Held]:
    stored = (item or {}).get("leases") or {}
    return {holder: Held(*(int(n) for n in lease)) for holder, lease in stored.items()}


def _write(pk: str, seen: Item | None, leases: Leases) -> Item | None:
    """Store `leases` if the item is still `seen`; None on success, else the current item ({} if gone)."""
    latest = max((held.until for held in leases.values()), default=0)
    update = Update().set("leases", _stored(leases))
    update.set("expires_at", latest + 3600)  # TTL deletion is late by hours at most; a stale lease is void anyway
    return versioned.write(get_settings().state_table, _key(pk), seen, update)


def _stored(leases: Leases) -> dict[str, list[int]]:
    return {holder: list(held) for holder, held in leases.items()}


def hold(
    tenant_id: str, account_id: str, holder: str, *, wanted: int, limit: int, now: int, until: int, open_now: int = 0
) -> int:
    """Set `holder`'s lease to as many of `wanted` sessions as `limit` leaves beside the other holders'."""
    pk = _pk(tenant_id, account_id)
    seen = _known.get(pk)
    fresh = seen is None  # a remembered item may be stale: never refuse on its word alone
    for _ in range(MAX_ATTEMPTS):
        leases = _leases(seen)
        granted = grant(leases, holder, wanted=wanted, limit=limit, now=now)
        if granted < wanted and not fresh:
            seen, fresh = versioned.read(get_settings().state_table, _key(pk)), True
            continue
        after = leases_after(leases, holder, granted, wanted=wanted, until=until, now=now, open_now=open_now)
        if after == leases and seen is not None:
            if fresh:
                return granted  # nothing to change (no lease asked for, none held)
            # A guess may be older than the stored item (another thread of this container remembered its write
            # late): the lease it shows may not be the one stored, so it is read before any write is skipped.
            seen, fresh = versioned.read(get_settings().state_table, _key(pk)), True
            continue
        current = _write(pk, seen, after)
        if current is None:
            _known.remember(pk, versioned.after_write(seen, {"leases": _stored(after)}))
            return granted
        seen, fresh = current or None, True
    raise RuntimeError(f"session lease for {pk} kept losing races")


def forget_tenant(tenant_id: str, account_ids: set[str]) -> None:
    """Drop the session leases of a deleted tenant's accounts."""
    pks = [_pk(tenant_id, a) for a in sorted(account_ids)]
    batch_write(get_settings().state_table, deletes=[{"pk": pk, "sk": "S"} for pk in pks])
    _known.forget(*pks)


def forget_cache() -> None:
    """Drop the per-container guesses (tests)."""
    _known.clear()
