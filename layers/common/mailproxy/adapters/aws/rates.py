"""Rate windows and tenant quotas in `StateTable`.

All windows of an account (or of a tenant's quota) live in one item written with optimistic concurrency
(a version number): a batch reserves its slots in one conditional write, and concurrent senders (or intake
containers) that lose the race re-read and try again, so together they never exceed a limit.
"""

from __future__ import annotations

from typing import Any

from mailproxy.adapters.aws import versioned
from mailproxy.adapters.aws.dynamo import Item, batch_write
from mailproxy.adapters.aws.expressions import Update
from mailproxy.ratelimit import MAX_ATTEMPTS, WINDOWS, Limits, Reservation
from mailproxy.settings import get_settings

_known = versioned.Guesses()  # last seen item per account and per tenant quota


def _key(pk: str) -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"S": "W"}}


def _account_pk(tenant_id: str, account_id: str) -> str:
    return f"RATE#{tenant_id}#{account_id}"


def _quota_pk(tenant_id: str) -> str:
    return f"QUOTA#{tenant_id}"


def _used(item: Item | None, kind: str, window_id: int) -> int:
    if not item or item.get(f"{kind}_id") != window_id:
        return 0
    return int(item.get(f"{kind}_n", 0))


def _write(pk: str, seen: Item | None, new_counts: dict[str, tuple[int, int]]) -> Item | None:
    """Store new window counts if the item is still `seen`; None on success, else the current item."""
    update = Update()
    for name, value in _window_values(new_counts).items():
        update.set(name, value)
    return versioned.write(get_settings().state_table, _key(pk), seen, update)


def _window_values(new_counts: dict[str, tuple[int, int]]) -> dict[str, int]:
    """The attributes of window counts: `<kind>_id` (the window) and `<kind>_n` (its count)."""
    values: dict[str, int] = {}
    for kind, (window_id, count) in new_counts.items():
        values[f"{kind}_id"], values[f"{kind}_n"] = window_id, count
    return values


def _read(pk: str) -> Item | None:
    return versioned.read(get_settings().state_table, _key(pk))


def reserve(tenant_id: str, account_id: str, limits: Limits, wanted: int, now: int) -> Reservation:
    """Take up to `wanted` send slots in every limited window of the account at `now`."""
    return _reserve(_account_pk(tenant_id, account_id), limits, wanted, now)


def reserve_quota(tenant_id: str, limits: Limits, wanted: int, now: int) -> Reservation:
    """Take up to `wanted` slots of the tenant's quota (every account together) at `now`, first come first served."""
    return _reserve(_quota_pk(tenant_id), limits, wanted, now)


def release(tenant_id: str, account_id: str, reservation: Reservation, count: int) -> None:
    """Give back `count` slots of a reservation (failed sends), in windows that are still current."""
    _release(_account_pk(tenant_id, account_id), reservation, count)


def release_quota(tenant_id: str, reservation: Reservation, count: int) -> None:
    """Give back `count` slots of a quota reservation (messages that turned out not to be new)."""
    _release(_quota_pk(tenant_id), reservation, count)


def _reserve(pk: str, limits: Limits, wanted: int, now: int) -> Reservation:
    by_window = limits.by_window()
    if not by_window or wanted <= 0:
        return Reservation(granted=max(wanted, 0), next_window_ts=None, windows={})
    cache_key = pk
    seen = _known.get(cache_key)
    fresh = seen is None  # a remembered item may be stale: never refuse on its word alone
    for _ in range(MAX_ATTEMPTS):
        ids = {kind: now // size for kind, size in WINDOWS if kind in by_window}
        room = {kind: by_window[kind] - _used(seen, kind, ids[kind]) for kind in by_window}
        granted = max(0, min(wanted, *room.values()))
        full = [kind for kind in by_window if room[kind] - granted <= 0]
        next_ts = max((ids[k] + 1) * dict(WINDOWS)[k] for k in full) if granted < wanted and full else None
        if granted == 0:
            if not fresh:
                seen, fresh = _read(pk), True
                continue
            return Reservation(granted=0, next_window_ts=next_ts, windows=ids, full=tuple(full))
        new_counts = {kind: (ids[kind], _used(seen, kind, ids[kind]) + granted) for kind in by_window}
        current = _write(pk, seen, new_counts)
        if current is None:
            _known.remember(cache_key, versioned.after_write(seen, _window_values(new_counts)))
            return Reservation(granted=granted, next_window_ts=next_ts, windows=ids, full=tuple(full))
        seen, fresh = current or None, True
    raise RuntimeError(f"rate-limit reservation for {cache_key} kept losing races")


def _release(pk: str, reservation: Reservation, count: int) -> None:
    if count <= 0 or not reservation.windows:
        return
    cache_key = pk
    seen = _known.get(cache_key)
    for _ in range(MAX_ATTEMPTS):
        new_counts = {
            kind: (window_id, max(0, _used(seen, kind, window_id) - count))
            for kind, window_id in reservation.windows.items()
            if _used(seen, kind, window_id) > 0
        }
        if seen is not None and not new_counts:
            return
        if seen is None:
            seen = _read(pk)
            if seen is None:
                return
            continue
        current = _write(pk, seen, new_counts)
        if current is None:
            _known.remember(cache_key, versioned.after_write(seen, _window_values(new_counts)))
            return
        seen = current or None


def forget_tenant(tenant_id: str, account_ids: set[str]) -> None:
    """Drop a deleted tenant's quota windows and the rate windows of its accounts."""
    pks = [_quota_pk(tenant_id), *(_account_pk(tenant_id, a) for a in sorted(account_ids))]
    batch_write(get_settings().state_table, deletes=[{"pk": pk, "sk": "W"} for pk in pks])
    _known.forget(*pks)


def forget_cache() -> None:
    """Drop the per-container guesses (tests)."""
    _known.clear()
