"""The Suppressions port (each tenant's suppression list and soft-bounce counts), the reputation window of the
Counters port (sends counted by the batch's close, bounces and complaints by `add_reputation`) and the pause
of an account in the Tenants port."""

from __future__ import annotations

import pytest
from mailproxy import clock, reputation
from mailproxy.domain import Counter, JournalKind
from mailproxy.stores import Stores

NOW = 1_800_000_000
HOUR = 3600  # one bucket of the default 24-hour window


def _entry(address: str, **fields: object) -> dict[str, object]:
    return {"address": address, "source": "hard", "reason": "550 5.1.1 no such user", "created_at": NOW, **fields}


def test_an_address_put_on_the_list_is_found_and_only_in_its_tenant(stores: Stores) -> None:
    assert stores.suppressions.put("acme", _entry("bob@x.test", message_id="m1", code="5.1.1"))
    assert not stores.suppressions.put("acme", _entry("bob@x.test", reason="again"))  # replaced, not new
    found = stores.suppressions.find({("acme", "bob@x.test"), ("acme", "eve@x.test"), ("beta", "bob@x.test")})
    assert set(found) == {("acme", "bob@x.test")}
    assert found[("acme", "bob@x.test")]["reason"] == "again"
    assert stores.suppressions.find(set()) == {}


def test_more_than_a_batched_reads_worth_of_keys_are_all_looked_up(stores: Stores) -> None:
    for n in range(0, 260, 2):
        stores.suppressions.put("acme", _entry(f"u{n:03d}@x.test"))
    keys = {("acme", f"u{n:03d}@x.test") for n in range(260)}
    assert {a for _, a in stores.suppressions.find(keys)} == {f"u{n:03d}@x.test" for n in range(0, 260, 2)}


def test_the_list_pages_in_address_order(stores: Stores) -> None:
    for address in ("c@x.test", "a@x.test", "b@x.test", "d@x.test"):
        stores.suppressions.put("acme", _entry(address))
    stores.suppressions.put("beta", _entry("a0@x.test"))
    first = stores.suppressions.list_entries("acme", after=None, limit=3)
    assert [e["address"] for e in first] == ["a@x.test", "b@x.test", "c@x.test"]
    rest = stores.suppressions.list_entries("acme", after="c@x.test", limit=3)
    assert [e["address"] for e in rest] == ["d@x.test"]
    assert stores.suppressions.list_entries("acme", after="d@x.test", limit=3) == []
    assert first[0]["reason"] == "550 5.1.1 no such user" and first[0]["created_at"] == NOW


def test_a_removed_address_is_no_longer_found(stores: Stores) -> None:
    stores.suppressions.put("acme", _entry("bob@x.test"))
    assert not stores.suppressions.remove("beta", "bob@x.test")  # another tenant's list holds nothing of it
    assert stores.suppressions.remove("acme", "bob@x.test")
    assert not stores.suppressions.remove("acme", "bob@x.test")
    assert stores.suppressions.find({("acme", "bob@x.test")}) == {}


def test_soft_bounces_are_counted_within_their_window(stores: Stores) -> None:
    day = 24 * HOUR
    assert stores.suppressions.note_soft_bounce("acme", "bob@x.test", ts=NOW, window_seconds=day) == 1
    assert stores.suppressions.note_soft_bounce("acme", "bob@x.test", ts=NOW + 60, window_seconds=day) == 2
    assert stores.suppressions.note_soft_bounce("beta", "bob@x.test", ts=NOW + 60, window_seconds=day) == 1
    # The first one left the window: two remain, the newest included.
    assert stores.suppressions.note_soft_bounce("acme", "bob@x.test", ts=NOW + day + 30, window_seconds=day) == 2


def test_forgetting_a_tenant_drops_its_list_and_soft_bounces(stores: Stores) -> None:
    stores.suppressions.put("acme", _entry("bob@x.test"))
    stores.suppressions.put("beta", _entry("bob@x.test"))
    stores.suppressions.note_soft_bounce("acme", "eve@x.test", ts=NOW, window_seconds=HOUR)
    stores.suppressions.forget_tenant("acme")
    assert stores.suppressions.list_entries("acme", after=None, limit=10) == []
    assert stores.suppressions.note_soft_bounce("acme", "eve@x.test", ts=NOW + 1, window_seconds=HOUR) == 1
    assert set(stores.suppressions.find({("beta", "bob@x.test")})) == {("beta", "bob@x.test")}


def _close_batch_with_sends(stores: Stores, sent: int, *, account: str = "a1") -> None:
    journal = stores.journals.open_journal(JournalKind.SEND, [], due_ts=NOW + 600)
    stores.journals.close_batch(journal, counters={("acme", account): {Counter.SENT: sent}}, pending={})


def test_the_reputation_window_counts_the_sends_of_closed_batches_and_the_bounces_noted(
    stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(clock, "now_ts", lambda: NOW)
    _close_batch_with_sends(stores, 40)
    _close_batch_with_sends(stores, 60)
    _close_batch_with_sends(stores, 7, account="a2")
    window = stores.counters.add_reputation("acme", "a1", bounces=2, complaints=0, now=NOW)
    assert window == {"sent": 100, "bounces": 2, "complaints": 0}
    window = stores.counters.add_reputation("acme", "a1", bounces=0, complaints=1, now=NOW + 5)
    assert window == {"sent": 100, "bounces": 2, "complaints": 1}
    assert stores.counters.add_reputation("acme", "a2", bounces=0, complaints=0, now=NOW) == {
        "sent": 7,
        "bounces": 0,
        "complaints": 0,
    }
    # The sends still count as /metrics counters.
    rows = {(r["tenant_id"], r["account_id"]): r for r in stores.counters.counter_rows()}
    assert rows[("acme", "a1")][Counter.SENT] == 100


def test_the_window_slides_what_left_it_stops_counting(stores: Stores, monkeypatch: pytest.MonkeyPatch) -> None:
    window_seconds = reputation.BUCKETS * reputation.bucket_seconds()
    monkeypatch.setattr(clock, "now_ts", lambda: NOW)
    _close_batch_with_sends(stores, 100)
    stores.counters.add_reputation("acme", "a1", bounces=3, complaints=0, now=NOW)
    later = NOW + window_seconds // 2
    monkeypatch.setattr(clock, "now_ts", lambda: later)
    _close_batch_with_sends(stores, 50)
    assert stores.counters.add_reputation("acme", "a1", bounces=1, complaints=0, now=later) == {
        "sent": 150,
        "bounces": 4,
        "complaints": 0,
    }
    much_later = NOW + window_seconds + 1
    monkeypatch.setattr(clock, "now_ts", lambda: much_later)
    _close_batch_with_sends(stores, 10)
    assert stores.counters.add_reputation("acme", "a1", bounces=0, complaints=0, now=much_later) == {
        "sent": 60,
        "bounces": 1,
        "complaints": 0,
    }
    # Long after, nothing of it is left.
    gone = NOW + 5 * window_seconds
    assert stores.counters.add_reputation("acme", "a1", bounces=0, complaints=0, now=gone) == {
        "sent": 0,
        "bounces": 0,
        "complaints": 0,
    }


def test_resetting_the_reputation_forgets_bounces_and_complaints_but_not_sends(
    stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(clock, "now_ts", lambda: NOW)
    _close_batch_with_sends(stores, 30)
    stores.counters.add_reputation("acme", "a1", bounces=5, complaints=2, now=NOW)
    stores.counters.reset_reputation("acme", "a1")
    assert stores.counters.add_reputation("acme", "a1", bounces=1, complaints=0, now=NOW) == {
        "sent": 30,
        "bounces": 1,
        "complaints": 0,
    }


def test_the_paused_gauge_is_kept_in_the_accounts_counters_row(stores: Stores) -> None:
    stores.counters.ensure_counters("acme", "a1")
    stores.counters.set_paused_gauge("acme", "a1", True)
    rows = {(r["tenant_id"], r["account_id"]): r for r in stores.counters.counter_rows()}
    assert int(rows[("acme", "a1")]["paused"]) == 1
    stores.counters.set_paused_gauge("acme", "a1", False)
    rows = {(r["tenant_id"], r["account_id"]): r for r in stores.counters.counter_rows()}
    assert int(rows[("acme", "a1")]["paused"]) == 0


def test_an_account_is_paused_and_resumed_once_in_its_tenants_record(stores: Stores) -> None:
    stores.tenants.create_tenant({"id": "acme", "name": "Acme"}, key_hash="h" * 64, now=NOW)
    pause = {"paused_ts": NOW, "reason": "bounce rate 7.00% over 200 sends (limit 5.00%)"}
    assert stores.tenants.set_account_pause("acme", "a1", pause, now=NOW)
    assert not stores.tenants.set_account_pause("acme", "a1", pause, now=NOW)  # already paused
    assert stores.tenants.set_account_pause("acme", "a2", pause, now=NOW)
    tenant = stores.tenants.get_tenant("acme")
    assert tenant is not None and set(tenant["paused_accounts"]) == {"a1", "a2"}
    assert tenant["paused_accounts"]["a1"]["reason"] == pause["reason"]
    assert stores.tenants.set_account_pause("acme", "a1", None, now=NOW)
    assert not stores.tenants.set_account_pause("acme", "a1", None, now=NOW)  # not paused any more
    tenant = stores.tenants.get_tenant("acme")
    assert tenant is not None and set(tenant["paused_accounts"]) == {"a2"}
    assert not stores.tenants.set_account_pause("nobody", "a1", pause, now=NOW)
    # A change of the tenant's configuration keeps the pause.
    stores.tenants.update_tenant("acme", {"name": "Acme 2"}, now=NOW, replace=True)
    tenant = stores.tenants.get_tenant("acme")
    assert tenant is not None and set(tenant["paused_accounts"]) == {"a2"}


def test_an_entry_added_if_absent_never_replaces_one_already_listed(stores: Stores) -> None:
    assert stores.suppressions.put("acme", _entry("bob@x.test", source="manual", reason="asked us"))
    assert not stores.suppressions.add_if_absent("acme", _entry("bob@x.test", source="soft", created_at=NOW + 9))
    assert stores.suppressions.add_if_absent("beta", _entry("bob@x.test", source="soft"))  # another tenant's list
    assert stores.suppressions.add_if_absent("acme", _entry("eve@x.test", source="soft"))
    found = stores.suppressions.find({("acme", "bob@x.test"), ("acme", "eve@x.test"), ("beta", "bob@x.test")})
    assert (found[("acme", "bob@x.test")]["source"], found[("acme", "bob@x.test")]["reason"]) == ("manual", "asked us")
    assert found[("acme", "bob@x.test")]["created_at"] == NOW
    assert found[("acme", "eve@x.test")]["source"] == "soft"
    assert found[("beta", "bob@x.test")]["source"] == "soft"


def _refuse_keys_as_dynamodb_does(adapter: str) -> None:
    """moto deletes by any key; DynamoDB refuses an empty sort key or one over 1024 bytes (a ValidationException,
    which the API would answer as a 500)."""
    if adapter != "aws":
        return
    from botocore.exceptions import ClientError
    from mailproxy.adapters.aws.dynamo import ddb

    def check(params: dict[str, object], **_: object) -> None:
        key = params.get("Key")
        sk = key.get("sk", {}).get("S") if isinstance(key, dict) else None
        if isinstance(sk, str) and (sk == "" or len(sk.encode("utf-8")) > 1024):
            raise ClientError({"Error": {"Code": "ValidationException", "Message": "bad key"}}, "DeleteItem")

    ddb().meta.events.register("provide-client-params.dynamodb.DeleteItem", check)


def test_removing_an_address_no_entry_can_have_is_false_not_a_storage_error(stores: Stores, adapter: str) -> None:
    _refuse_keys_as_dynamodb_does(adapter)
    stores.suppressions.put("acme", _entry("bob@x.test"))
    assert not stores.suppressions.remove("acme", "")
    assert not stores.suppressions.remove("acme", "\U0001f600" * 320)  # 320 characters, 1280 bytes
    assert stores.suppressions.remove("acme", "bob@x.test")
