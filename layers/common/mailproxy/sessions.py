"""Concurrent SMTP sessions of an account: how many a sender may hold open, whatever runs beside it.

Providers cap the connections an account may have open at once, and many senders run at once (Lambda
containers, the one-machine runtime's worker processes). Each sender ("holder": one SMTP pool) keeps a
lease on the sessions it holds open for an account, with an expiry, and says how many it wants; a lease
that has expired counts for nothing. Every sender asks through the `SmtpSessions` port, whose adapters
decide with `grant` and store with `leases_after`, in one conditional write (DynamoDB) or one transaction
(SQLite), so together they never hold more than the account's limit.

Sessions are shared fairly: while another holder wants more than it holds and less than its fair share
(the limit divided among the holders that want some), a holder gets no more than that share, and gives
back what it holds beyond it when it next asks. A holder that got nothing stays on record as wanting
some for DEMAND_SECONDS, so the others make room for it.

A holder granted fewer sessions than it has open stays on record with those it has open until it asks again
having closed them: nobody opens a connection in their place while they are still open at the provider.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

DEFAULT_MAX_CONNECTIONS = 5  # an account's `max_connections` when it names none: genro-mail-proxy's pool size
DEMAND_SECONDS = 5  # how long a holder that got no session stays on record as wanting some


class Held(NamedTuple):
    """One holder's lease: the sessions it holds, until when, and how many it asked for."""

    sessions: int
    until: int  # epoch seconds
    wanted: int


Leases = Mapping[str, Held]


class Lease(NamedTuple):
    """What a sender knows of its own lease on an account's sessions."""

    tenant_id: str
    account_id: str
    until: int  # epoch seconds: the connections must be closed by then
    sessions: int  # how many connections may be open


def grant(leases: Leases, holder: str, *, wanted: int, limit: int, now: int) -> int:
    """How many of `wanted` sessions `holder` may hold: what `limit` leaves beside the other holders'
    unexpired leases, and no more than its fair share while another holder is short of its own (its own
    lease, whatever it was, is replaced)."""
    others = [held for other, held in leases.items() if other != holder and held.until > now]
    free = limit - sum(held.sessions for held in others)
    wanting = [held for held in others if held.wanted > 0]
    share = max(1, limit // (len(wanting) + 1))
    if any(held.sessions < min(held.wanted, share) for held in wanting):
        free = min(free, share)
    return max(0, min(wanted, free))


def leases_after(
    leases: Leases, holder: str, granted: int, *, wanted: int, until: int, now: int, open_now: int = 0
) -> dict[str, Held]:
    """The lease map once `holder` holds `granted` sessions until `until`, or the `open_now` connections it
    still has open if more (until it closes them and asks again): expired leases dropped; a holder that got
    none and has none open kept for DEMAND_SECONDS as wanting some, and dropped when it wants none."""
    kept = {other: held for other, held in leases.items() if other != holder and held.until > now}
    if max(granted, open_now) > 0:
        kept[holder] = Held(max(granted, open_now), until, wanted)
    elif wanted > 0:
        kept[holder] = Held(0, min(until, now + DEMAND_SECONDS), wanted)
    return kept


def account_limit(account: Mapping[str, object], ceiling: int) -> int:
    """The sessions an account may have open at once: its `max_connections` (default 5), never above the
    deployment's ceiling (GMP_SMTP_MAX_CONNECTIONS)."""
    raw = account.get("max_connections")
    wanted = DEFAULT_MAX_CONNECTIONS if raw is None else int(str(raw))
    return max(1, min(wanted, ceiling))
