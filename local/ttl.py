"""DynamoDB's TTL, played for the AWS-fidelity mode (moto never expires items; not deployed).

On AWS the tables' TTL deletes expired items and the reporter, fed the removals by the stream, puts back
a message whose report is still owed. Here a schedule scans the tables instead and does both.
"""

from __future__ import annotations

from mailproxy import clock
from mailproxy.adapters.aws.dynamo import Item, batch_write, scan_all
from mailproxy.adapters.aws.expressions import at_most, expression
from mailproxy.messages import pinned_keys
from mailproxy.reports import split_expired
from mailproxy.settings import get_settings
from mailproxy.stores import stores


def _expired(table: str, now: int, projection: tuple[str, ...] = ()) -> list[Item]:
    """Items of `table` whose `expires_at` (the TTL attribute of every table that has one) has passed."""
    return list(scan_all(TableName=table, **expression(filter=at_most("expires_at", now), projection=projection)))


def expire_due(now: int | None = None) -> int:
    """Delete expired messages and their payloads (keeping those whose reports may still be owed, as the
    reporter does for a TTL removal on AWS) and expired StateTable items. How many messages were deleted."""
    now = clock.now_ts() if now is None else now
    settings = get_settings()
    keep, gone = split_expired(_expired(settings.messages_table, now))
    expires = now + settings.report_retention_seconds
    for item in keep:
        stores().messages.extend_expiry(str(item["tenant_id"]), str(item["id"]), expires_at=expires)
    keys = [(str(i["tenant_id"]), str(i["id"])) for i in gone]
    if keys:
        stores().messages.delete_states(keys)
        stores().payloads.delete_payloads(pinned_keys(gone))
    expire_state(now)
    return len(keys)


def expire_state(now: int) -> int:
    """Delete the StateTable items whose `expires_at` has passed (command log, ledger); how many."""
    table = get_settings().state_table
    items = _expired(table, now, projection=("pk", "sk"))
    batch_write(table, deletes=[{"pk": i["pk"], "sk": i["sk"]} for i in items])
    return len(items)
