"""The Ledger port: which report events each tenant acknowledged, and when (a record's `reported_ts`)."""

from __future__ import annotations

from typing import Any

import pytest
from mailproxy.ledger import SLACK_SECONDS, EventKey, fully_reported, reported_ts
from mailproxy.settings import get_settings
from mailproxy.stores import Stores

NOW = 1_800_000_000


def _key(message_id: str, index: int, ts: int = NOW) -> EventKey:
    return (message_id, index, "sent", ts)


def test_acknowledgements_are_found_under_their_chunk_keys(stores: Stores) -> None:
    stores.ledger.record(
        "acme", {"c1": {_key("m1", 1): NOW + 5, _key("m2", 1): NOW + 5}, "c2": {_key("m3", 1): NOW + 6}}
    )
    found = stores.ledger.acknowledged_in("acme", ["c1", "c2", "c9"])
    assert found == {"c1": {_key("m1", 1): NOW + 5, _key("m2", 1): NOW + 5}, "c2": {_key("m3", 1): NOW + 6}}
    assert stores.ledger.acknowledged_in("acme", []) == {}
    assert stores.ledger.acknowledged_in("beta", ["c1"]) == {}


def test_recording_a_chunk_again_replaces_it_and_empty_chunks_are_not_stored(stores: Stores) -> None:
    stores.ledger.record("acme", {"c1": {_key("m1", 1): NOW}})
    stores.ledger.record("acme", {"c1": {_key("m1", 1): NOW, _key("m1", 2): NOW + 9}, "c2": {}})
    assert stores.ledger.acknowledged_in("acme", ["c1", "c2"]) == {"c1": {_key("m1", 1): NOW, _key("m1", 2): NOW + 9}}
    stores.ledger.record("acme", {})


def test_a_tenants_acknowledged_events_give_each_events_reported_ts(stores: Stores) -> None:
    stores.ledger.record("acme", {"c1": {_key("m1", 1): NOW + 5}, "c2": {_key("m1", 2, NOW + 60): NOW + 70}})
    stores.ledger.record("beta", {"c1": {_key("m1", 1): NOW + 8}})
    acks = stores.ledger.acknowledged_events("acme")
    assert acks == {_key("m1", 1): NOW + 5, _key("m1", 2, NOW + 60): NOW + 70}
    history: list[dict[str, Any]] = [
        {"event_type": "queued", "event_ts": NOW - 1},
        {"event_type": "sent", "event_ts": NOW},
        {"event_type": "sent", "event_ts": NOW + 60},
    ]
    message = {"id": "m1", "history": history}
    assert reported_ts(message, acks) == [None, NOW + 5, NOW + 70]
    assert fully_reported(message, acks)
    assert not fully_reported(message, stores.ledger.acknowledged_events("beta"))  # beta lacks the second
    assert stores.ledger.acknowledged_events("nobody") == {}


def test_a_forgotten_ledger_is_gone_for_that_tenant_only(stores: Stores) -> None:
    stores.ledger.record("acme", {"c1": {_key("m1", 1): NOW}, "c2": {_key("m2", 1): NOW}})
    stores.ledger.record("beta", {"c1": {_key("m1", 1): NOW}})
    stores.ledger.forget("acme")
    assert stores.ledger.acknowledged_events("acme") == {}
    assert stores.ledger.acknowledged_in("acme", ["c1", "c2"]) == {}
    assert len(stores.ledger.acknowledged_events("beta")) == 1


def test_a_ledger_entry_expires_a_day_after_the_messages_it_describes(stores: Stores, adapter: str) -> None:
    stores.ledger.record("acme", {"c1": {_key("m1", 1): NOW, _key("m2", 1): NOW + 40}})
    expires_at = NOW + 40 + get_settings().report_retention_seconds + SLACK_SECONDS
    if adapter == "aws":  # DynamoDB's TTL removes it: the item carries the time
        from mailproxy.aws import client

        item = client("dynamodb").get_item(
            TableName=get_settings().state_table, Key={"pk": {"S": "LEDGER#acme"}, "sk": {"S": "c1"}}
        )["Item"]
        assert int(item["expires_at"]["N"]) == expires_at
        return
    from mailproxy.adapters.sqlite.ledger import SqliteLedger

    assert isinstance(stores.ledger, SqliteLedger)
    assert stores.ledger.delete_expired(expires_at - 1) == 0
    assert stores.ledger.acknowledged_in("acme", ["c1"]) != {}
    assert stores.ledger.delete_expired(expires_at) == 1
    assert stores.ledger.acknowledged_in("acme", ["c1"]) == {}


def test_recording_removes_the_tenants_expired_entries_on_sqlite(stores: Stores, adapter: str) -> None:
    if adapter != "sqlite":
        pytest.skip("DynamoDB's TTL removes expired items on AWS")
    stores.ledger.record("acme", {"old": {_key("m1", 1): NOW}})
    later = NOW + get_settings().report_retention_seconds + SLACK_SECONDS
    stores.ledger.record("acme", {"new": {_key("m2", 1): later}})
    assert set(stores.ledger.acknowledged_in("acme", ["old", "new"])) == {"new"}
