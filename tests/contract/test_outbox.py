"""The Outbox port: report events owed per tenant, the reporter's lease per tenant, its sync state."""

from __future__ import annotations

from pathlib import Path

from mailproxy.domain import EventType
from mailproxy.report_format import LEASE_SECONDS, MAX_EVENTS_PER_CHUNK, Owed, chunk_ts, decode_events
from mailproxy.stores import Stores

NOW = 1_800_000_000


def _owed(message_id: str, count: int = 1, ts: int = NOW) -> list[Owed]:
    return [Owed(message_id, n, {"event_type": EventType.SENT.value, "event_ts": ts + n}) for n in range(count)]


def _key(ts: int, sequence: str = "1") -> str:
    return f"{ts:012d}#{sequence:0>40}"


def test_owed_events_are_kept_in_chunks_and_bump_the_revision(stores: Stores) -> None:
    stores.outbox.owe("acme", _owed("m1", 2), _key(NOW))
    stores.outbox.owe("acme", _owed("m2"), _key(NOW + 5, "2"))
    chunks = stores.outbox.chunks("acme")
    assert sorted(str(c["sk"]) for c in chunks) == [f"{_key(NOW)}#000", f"{_key(NOW + 5, '2')}#000"]
    first = next(c for c in chunks if str(c["sk"]).startswith(_key(NOW)))
    assert decode_events(bytes(first["events"])) == [
        Owed("m1", 0, {"event_type": "sent", "event_ts": NOW}),
        Owed("m1", 1, {"event_type": "sent", "event_ts": NOW + 1}),
    ]
    assert int(stores.outbox.sync_states()["acme"]["owed_rev"]) == 2
    assert stores.outbox.chunks("beta") == []


def test_a_retried_batch_rewrites_the_same_chunk(stores: Stores) -> None:
    stores.outbox.owe("acme", _owed("m1"), _key(NOW))
    stores.outbox.owe("acme", _owed("m1"), _key(NOW))
    assert [str(c["sk"]) for c in stores.outbox.chunks("acme")] == [f"{_key(NOW)}#000"]
    assert int(stores.outbox.sync_states()["acme"]["owed_rev"]) == 2  # a holder that read before sees more


def test_a_large_batch_is_split_into_numbered_chunks(stores: Stores) -> None:
    stores.outbox.owe("acme", _owed("m1", MAX_EVENTS_PER_CHUNK + 1), _key(NOW))
    chunks = sorted(stores.outbox.chunks("acme"), key=lambda c: str(c["sk"]))
    assert [str(c["sk"])[-3:] for c in chunks] == ["000", "001"]
    assert [len(decode_events(bytes(c["events"]))) for c in chunks] == [MAX_EVENTS_PER_CHUNK, 1]


def test_the_oldest_owed_time_is_the_first_chunks_and_none_once_dropped(stores: Stores) -> None:
    assert stores.outbox.oldest_owed_ts("acme") is None
    stores.outbox.owe("acme", _owed("m2"), _key(NOW + 30, "2"))
    stores.outbox.owe("acme", _owed("m1"), _key(NOW))
    assert stores.outbox.oldest_owed_ts("acme") == NOW == chunk_ts(f"{_key(NOW)}#000")
    first = [c for c in stores.outbox.chunks("acme") if str(c["sk"]) == f"{_key(NOW)}#000"]
    stores.outbox.drop_chunks("acme", [*first, {"sk": "000000000001#gone", "events": b"x"}])
    assert stores.outbox.oldest_owed_ts("acme") == NOW + 30
    stores.outbox.drop_chunks("acme", stores.outbox.chunks("acme"))
    stores.outbox.drop_chunks("acme", [])
    assert stores.outbox.oldest_owed_ts("acme") is None
    assert stores.outbox.chunks("acme") == []


def test_one_holder_at_a_time_until_its_lease_lapses(stores: Stores) -> None:
    held = stores.outbox.acquire("acme", "lease-1", NOW, ignore_backoff=False)
    assert held is not None
    assert held["lease_id"] == "lease-1"
    assert int(held["lease_until"]) == NOW + LEASE_SECONDS
    assert stores.outbox.acquire("acme", "lease-2", NOW + 1, ignore_backoff=True) is None
    assert stores.outbox.acquire("acme", "lease-2", NOW + LEASE_SECONDS, ignore_backoff=False) is None
    assert stores.outbox.acquire("beta", "lease-3", NOW, ignore_backoff=False) is not None  # tenants apart
    taken = stores.outbox.acquire("acme", "lease-2", NOW + LEASE_SECONDS + 1, ignore_backoff=False)
    assert taken is not None
    assert taken["lease_id"] == "lease-2"
    assert stores.outbox.release("acme", "lease-1", {"failures": 9}) is None  # its lease was taken over
    assert stores.outbox.sync_states()["acme"]["lease_id"] == "lease-2"
    assert stores.outbox.sync_states()["acme"].get("failures") is None


def test_a_release_records_the_outcome_and_frees_the_lease(stores: Stores) -> None:
    stores.outbox.owe("acme", _owed("m1"), _key(NOW))
    stores.outbox.acquire("acme", "lease-1", NOW, ignore_backoff=False)
    stores.outbox.release("acme", "lease-1", {"failures": 2, "last_error": "boom", "dnd_until": NOW + 9})
    stores.outbox.acquire("acme", "lease-2", NOW + 1, ignore_backoff=False)
    new = stores.outbox.release(
        "acme", "lease-2", {"last_sync_ts": NOW + 1, "failures": 0, "done_rev": 1}, ["last_error", "dnd_until"]
    )
    assert new is not None
    assert (new["last_sync_ts"], new["failures"], new["done_rev"], new["owed_rev"]) == (NOW + 1, 0, 1, 1)
    for gone in ("last_error", "dnd_until", "lease_id", "lease_until"):
        assert new.get(gone) is None
    assert stores.outbox.sync_states()["acme"]["last_sync_ts"] == NOW + 1
    assert stores.outbox.release("acme", "lease-2", {"failures": 5}) is None  # released already
    assert stores.outbox.release("nobody", "lease-x", {}) is None
    assert stores.outbox.acquire("acme", "lease-3", NOW + 2, ignore_backoff=False) is not None


def test_a_backoff_keeps_the_lease_unless_it_is_ignored(stores: Stores) -> None:
    stores.outbox.acquire("acme", "lease-1", NOW, ignore_backoff=False)
    stores.outbox.release("acme", "lease-1", {"failures": 1, "retry_at": NOW + 30})
    assert stores.outbox.acquire("acme", "lease-2", NOW + 29, ignore_backoff=False) is None
    forced = stores.outbox.acquire("acme", "lease-2", NOW + 29, ignore_backoff=True)
    assert forced is not None
    assert forced["retry_at"] == NOW + 30
    stores.outbox.release("acme", "lease-2", {}, ["retry_at"])
    assert stores.outbox.acquire("acme", "lease-3", NOW + 29, ignore_backoff=False) is not None

    stores.outbox.acquire("beta", "lease-4", NOW, ignore_backoff=False)
    stores.outbox.release("beta", "lease-4", {"retry_at": NOW + 30})
    assert stores.outbox.acquire("beta", "lease-5", NOW + 30, ignore_backoff=False) is not None  # due exactly now


def test_sync_states_has_every_tenant_the_reporter_touched(stores: Stores) -> None:
    assert stores.outbox.sync_states() == {}
    stores.outbox.owe("acme", _owed("m1"), _key(NOW))
    stores.outbox.acquire("beta", "lease-1", NOW, ignore_backoff=False)
    stores.outbox.release("beta", "lease-1", {"last_sync_ts": NOW, "next_sync_due": NOW + 300})
    states = stores.outbox.sync_states()
    assert set(states) == {"acme", "beta"}
    assert (states["beta"]["last_sync_ts"], states["beta"]["next_sync_due"]) == (NOW, NOW + 300)


def test_a_forgotten_tenant_has_no_chunks_ledger_or_sync_state_left(stores: Stores) -> None:
    # What the reporter does for a deleted tenant (reports.forget_tenant): its outbox and sync state, its ledger.
    for tenant_id in ("acme", "beta"):
        stores.outbox.owe(tenant_id, _owed("m1"), _key(NOW))
        stores.outbox.owe(tenant_id, _owed("m2"), _key(NOW + 1, "2"))
        stores.ledger.record(tenant_id, {f"{_key(NOW)}#000": {o.key: NOW + 2 for o in _owed("m1")}})
    stores.outbox.forget_tenant("acme")
    stores.ledger.forget("acme")
    assert stores.outbox.chunks("acme") == []
    assert stores.outbox.oldest_owed_ts("acme") is None
    assert stores.ledger.acknowledged_events("acme") == {}
    assert set(stores.outbox.sync_states()) == {"beta"}
    assert len(stores.outbox.chunks("beta")) == 2
    assert len(stores.ledger.acknowledged_events("beta")) == 1
    stores.outbox.forget_tenant("nobody")


def test_leases_a_dead_runtime_left_are_dropped_and_nothing_else(tmp_path: Path) -> None:
    from mailproxy.adapters.sqlite.db import Database
    from mailproxy.adapters.sqlite.outbox import SCHEMA, SqliteOutbox

    outbox = SqliteOutbox(Database(str(tmp_path / "db.sqlite3"), (SCHEMA,)))
    outbox.owe("acme", _owed("m1"), _key(NOW))
    assert outbox.acquire("acme", "dead-holder", NOW, ignore_backoff=False) is not None
    assert outbox.acquire("acme", "next", NOW + 1, ignore_backoff=False) is None
    assert outbox.drop_leases() == 1
    taken = outbox.acquire("acme", "next", NOW + 1, ignore_backoff=False)
    assert taken is not None and int(taken["owed_rev"]) == 1
    assert outbox.drop_leases() == 1 and outbox.drop_leases() == 0


def test_a_chunk_rewritten_after_it_was_read_is_not_dropped(stores: Stores) -> None:
    # A round reads the outbox and reports it; meanwhile a retried batch writes more events under the same
    # key (the SQLite runtime re-reads its change log from the same first change after a crash, and finds
    # more): dropping the chunk as read must not drop what was added.
    stores.outbox.owe("acme", _owed("m1"), _key(NOW))
    read = stores.outbox.chunks("acme")
    stores.outbox.owe("acme", [*_owed("m1"), *_owed("m2")], _key(NOW))
    stores.outbox.drop_chunks("acme", read)
    [kept] = stores.outbox.chunks("acme")
    assert [o.id for o in decode_events(bytes(kept["events"]))] == ["m1", "m2"]
    stores.outbox.drop_chunks("acme", [kept])
    assert stores.outbox.chunks("acme") == []
