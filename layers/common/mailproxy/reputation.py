"""The reputation guard: each account's bounce and complaint rates over a sliding window, and its pause.

The window (GMP_REPUTATION_WINDOW_SECONDS) is cut into `BUCKETS` buckets. Sends are counted per bucket by the
write each send batch already makes at its close (the account's counters, `Journals.close_batch`): no write
per message. Bounces and complaints are counted per bucket by `note` (one write per bounce, which returns the
window's totals). An account at or over a threshold, with at least GMP_REPUTATION_MIN_SENDS sends in the
window, is paused: its tenant's `paused_accounts` names it, and the sender holds its messages as `suspended`
(`tenants.is_held`) until an admin (or the tenant, with GMP_TENANT_MAY_RESUME) resumes it.
"""

from __future__ import annotations

from typing import Any

from mailproxy import clock
from mailproxy.settings import get_settings
from mailproxy.stores import stores

BUCKETS = 24  # buckets per window: the window slides by 1/24 of its length


def bucket_seconds() -> int:
    """The length of one bucket of the window."""
    return max(1, get_settings().reputation_window_seconds // BUCKETS)


def bucket_of(ts: int) -> int:
    """The bucket a time falls in."""
    return ts // bucket_seconds()


def window_buckets(ts: int) -> range:
    """The buckets of the window ending at `ts` (the current one included)."""
    current = bucket_of(ts)
    return range(current - BUCKETS + 1, current + 1)


def stale_buckets(ts: int) -> range:
    """The window's worth of buckets just before it: what a send batch's write drops as it adds its sends."""
    first = bucket_of(ts) - BUCKETS + 1
    return range(first - BUCKETS, first)


def verdict(window: dict[str, int]) -> str | None:
    """Why an account with these window totals must pause, or None."""
    settings = get_settings()
    sent = int(window.get("sent", 0))
    if sent < settings.reputation_min_sends:
        return None
    bounces, complaints = int(window.get("bounces", 0)), int(window.get("complaints", 0))
    if bounces / sent >= settings.bounce_rate_limit:
        return f"bounce rate {bounces / sent:.2%} over {sent} sends (limit {settings.bounce_rate_limit:.2%})"
    if complaints / sent >= settings.complaint_rate_limit:
        return f"complaint rate {complaints / sent:.2%} over {sent} sends (limit {settings.complaint_rate_limit:.2%})"
    return None


def note(tenant_id: str, account_id: str, *, bounces: int = 0, complaints: int = 0, ts: int | None = None) -> bool:
    """Count bounces or complaints of an account and pause it when its window goes over a threshold; True when
    this call paused it."""
    now = clock.now_ts() if ts is None else ts
    window = stores().counters.add_reputation(tenant_id, account_id, bounces=bounces, complaints=complaints, now=now)
    reason = verdict(window)
    if reason is None:
        return False
    return pause(tenant_id, account_id, reason=reason, window=window)


def pause(tenant_id: str, account_id: str, *, reason: str, window: dict[str, int] | None = None) -> bool:
    """Pause an account: its messages are held from the next send batch on, its tenant is told in its next report
    (asked for now) and `gmp_account_paused` shows it. True when it was not paused before."""
    from mailproxy.logs import logger

    now = clock.now_ts()
    pause_record: dict[str, Any] = {"paused_ts": now, "reason": reason, **(window or {})}
    if not stores().tenants.set_account_pause(tenant_id, account_id, pause_record, now=now):
        return False
    stores().counters.set_paused_gauge(tenant_id, account_id, True)
    stores().service.request_run_now(tenant_id, now)  # the report that tells the tenant goes out now
    logger().warning(f"Account {account_id} paused: {reason}", extra={"tenant_id": tenant_id, "account_id": account_id})
    return True


def resume(tenant_id: str, account_id: str) -> int | None:
    """Resume a paused account and release its held messages: how many, or None when it was not paused. Its
    window's bounces and complaints are forgotten, so the next bounce does not pause it again at once."""
    from mailproxy import intake

    now = clock.now_ts()
    if not stores().tenants.set_account_pause(tenant_id, account_id, None, now=now):
        return None
    stores().counters.reset_reputation(tenant_id, account_id)
    stores().counters.set_paused_gauge(tenant_id, account_id, False)
    tenant = stores().tenants.get_tenant(tenant_id)
    return intake.release_held(tenant) if tenant is not None else 0


def forget_account(tenant_id: str, account_id: str) -> None:
    """Drop the pause of an account that is deleted; its held messages are released, for the sender to fail
    them as any deleted account's."""
    if resume(tenant_id, account_id) is not None:
        from mailproxy.logs import logger

        logger().info(
            f"Paused account {account_id} deleted: its held messages released",
            extra={"tenant_id": tenant_id, "account_id": account_id},
        )


def is_paused(tenant: dict[str, Any], account_id: str | None) -> bool:
    """True when the tenant's account is paused by the reputation guard."""
    return account_id is not None and account_id in (tenant.get("paused_accounts") or {})


def report_entries(tenant: dict[str, Any]) -> list[dict[str, Any]]:
    """What a delivery report tells the tenant about its paused accounts (`paused_accounts`), each while paused."""
    paused = tenant.get("paused_accounts") or {}
    return [
        {
            "account_id": account_id,
            "paused_ts": int(info.get("paused_ts") or 0),
            "reason": str(info.get("reason") or ""),
        }
        for account_id, info in sorted(paused.items())
    ]
