"""Rate limits per tenant+account, and tenant quotas: UTC minute, hour and day windows shared by every caller.

What a limit is and what a reservation grants; the windows' counts are kept by the adapters
(`ports.RateWindows`), so that every caller together never exceeds a limit.
"""

from __future__ import annotations

from typing import Any, NamedTuple

WINDOWS = (("m", 60), ("h", 3600), ("d", 86400))


MAX_ATTEMPTS = 25


class Limits(NamedTuple):
    """An account's limits; None, 0 or negative means unlimited."""

    per_minute: int | None = None
    per_hour: int | None = None
    per_day: int | None = None

    @classmethod
    def of(cls, account: dict[str, Any]) -> Limits:
        """The limits of a stored account."""
        return cls(account.get("limit_per_minute"), account.get("limit_per_hour"), account.get("limit_per_day"))

    @classmethod
    def of_quota(cls, rate_limits: dict[str, Any] | None) -> Limits:
        """The quota of a tenant's stored `rate_limits` (genro's `hourly`/`daily` or `per_hour`/`per_day`)."""
        given = rate_limits or {}
        return cls(
            given.get("per_minute"),
            given.get("per_hour") if given.get("per_hour") is not None else given.get("hourly"),
            given.get("per_day") if given.get("per_day") is not None else given.get("daily"),
        )

    def describe(self, kind: str) -> str:
        """`1000 messages per day`: the limit of one window kind, for a rejection reason."""
        name = {"m": "minute", "h": "hour", "d": "day"}[kind]
        return f"{self.by_window()[kind]} messages per {name}"

    def by_window(self) -> dict[str, int]:
        """Window kind (m, h, d) → limit, for the limited windows only."""
        values = {"m": self.per_minute, "h": self.per_hour, "d": self.per_day}
        return {kind: int(limit) for kind, limit in values.items() if limit is not None and int(limit) > 0}


class Reservation(NamedTuple):
    """What a reservation got: `granted` slots, and when the next window opens if it got fewer than asked."""

    granted: int
    next_window_ts: int | None
    windows: dict[str, int]  # window kind → window id the slots were taken from
    full: tuple[str, ...] = ()  # window kinds left without room when fewer than asked were granted
