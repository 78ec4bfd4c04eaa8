"""The messages port: what intake, the sender, the scheduler and the reporter rely on, on both adapters."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from mailproxy.adapters.sqlite.db import Database
from mailproxy.adapters.sqlite.messages import SCHEMA, SqliteMessages
from mailproxy.domain import AlreadyFinal, EventType, MessageStatus, Outcome, Submission
from mailproxy.messages import EARLY_SLACK_SECONDS, PARK_SHARD, abandoned_reason, event
from mailproxy.stores import Stores

if TYPE_CHECKING:
    from mailproxy.ports import Messages

NOW = 1_800_000_000
TENANT = "t1"


def submit(
    messages: Messages,
    message_id: str = "m1",
    *,
    rev: str = "r1",
    status: MessageStatus = MessageStatus.PENDING,
    now: int = NOW,
    uid: str = "uid-1",
    journal: str = "journal-1",
    **options: Any,
) -> bool:
    values: dict[str, Any] = {"batch_code": None, "deferred_ts": None, "park_ts": None, "pack": None, **options}
    return messages.submit(
        TENANT,
        message_id,
        uid=uid,
        rev=rev,
        account_id="acc",
        priority=1,
        status=status,
        journal=journal,
        now=now,
        **values,
    )


def claim(messages: Messages, claim_id: str, *, rev: str = "r1", now: int = NOW, stale_before: int = NOW - 60) -> Any:
    return messages.claim(TENANT, "m1", rev=rev, claim_id=claim_id, now=now, stale_before=stale_before)


def finish(messages: Messages, claim_id: str, status: MessageStatus = MessageStatus.SENT, **options: Any) -> bool:
    return messages.finish(
        TENANT,
        "m1",
        claim_id=claim_id,
        status=status,
        now=NOW + 1,
        history_event=options.pop("history_event", event(EventType.SENT, NOW + 1)),
        outcome=options.pop("outcome", Outcome.SENT),
        **options,
    )


def test_a_new_message_is_recorded_queued(stores: Stores) -> None:
    assert submit(stores.messages) is True
    state = stores.messages.get_state(TENANT, "m1")
    assert state is not None
    assert {k: state[k] for k in ("tenant_id", "id", "pk", "rev", "account_id", "priority", "status")} == {
        "tenant_id": TENANT,
        "id": "m1",
        "pk": "uid-1",
        "rev": "r1",
        "account_id": "acc",
        "priority": 1,
        "status": "pending",
    }
    assert (state["created_at"], state["created_by"], state["updated_at"], state["attempts"]) == (
        NOW,
        "journal-1",
        NOW,
        0,
    )
    assert state["history"] == [{"event_type": "queued", "event_ts": NOW}]


def test_a_resubmission_overwrites_an_unsent_message_and_keeps_its_origin(stores: Stores) -> None:
    submit(stores.messages, batch_code="b", deferred_ts=NOW + 50, pack="pack-1", park_ts=NOW + 5000)
    assert submit(stores.messages, rev="r2", now=NOW + 10, uid="uid-2", journal="journal-2") is False
    state = stores.messages.get_state(TENANT, "m1")
    assert state is not None
    assert (state["rev"], state["pk"], state["created_at"], state["created_by"], state["updated_at"]) == (
        "r2",
        "uid-1",
        NOW,
        "journal-1",
        NOW + 10,
    )
    assert [e["event_ts"] for e in state["history"]] == [NOW, NOW + 10]
    assert not {"batch_code", "deferred_ts", "pack", "park_shard", "park_ts"} & set(state)


@pytest.mark.parametrize("status", [MessageStatus.PENDING, MessageStatus.DEFERRED, MessageStatus.SUSPENDED])
def test_every_unsent_status_may_be_overwritten(stores: Stores, status: MessageStatus) -> None:
    submit(stores.messages, status=status)
    assert submit(stores.messages, rev="r2") is False
    assert (stores.messages.get_state(TENANT, "m1") or {})["rev"] == "r2"


def test_a_message_being_sent_or_sent_cannot_be_overwritten(stores: Stores) -> None:
    submit(stores.messages)
    assert claim(stores.messages, "c1") is not None
    with pytest.raises(AlreadyFinal):
        submit(stores.messages, rev="r2")
    assert finish(stores.messages, "c1")
    with pytest.raises(AlreadyFinal):
        submit(stores.messages, rev="r2")
    assert (stores.messages.get_state(TENANT, "m1") or {})["rev"] == "r1"


def submission(message_id: str, *, rev: str = "r1", **options: Any) -> Submission:
    values: dict[str, Any] = {
        "uid": f"uid-{message_id}",
        "account_id": "acc",
        "priority": 1,
        "batch_code": None,
        "status": MessageStatus.PENDING,
        "deferred_ts": None,
        "park_ts": None,
        "pack": None,
        **options,
    }
    return Submission(id=message_id, rev=rev, **values)


def test_a_submission_of_many_writes_each_as_submit_would_and_says_what_each_became(stores: Stores) -> None:
    submit(stores.messages, "old")  # unsent: overwritten
    submit(stores.messages, "done")
    claim_of_done = stores.messages.claim(TENANT, "done", rev="r1", claim_id="c", now=NOW, stale_before=NOW - 60)
    assert claim_of_done is not None  # being sent: left as it is
    batch = [
        submission("new", batch_code="b", pack="pack-1"),
        submission("old", rev="r2"),
        submission("done", rev="r2"),
        submission("later", status=MessageStatus.DEFERRED, deferred_ts=NOW + 5000, park_ts=NOW + 5000),
    ]
    outcomes = stores.messages.submit_many(TENANT, batch, journal="journal-2", now=NOW + 1)
    assert outcomes == [True, False, None, True]
    states = stores.messages.get_states(TENANT, ["new", "old", "done", "later"])
    assert {i: (s["rev"], s["status"]) for i, s in states.items()} == {
        "new": ("r1", "pending"),
        "old": ("r2", "pending"),
        "done": ("r1", "sending"),
        "later": ("r1", "deferred"),
    }
    assert (states["new"]["pk"], states["new"]["created_by"], states["new"]["batch_code"], states["new"]["pack"]) == (
        "uid-new",
        "journal-2",
        "b",
        "pack-1",
    )
    assert (states["old"]["pk"], states["old"]["created_by"]) == ("uid-1", "journal-1")
    assert [d["id"] for d in stores.messages.due_parked(NOW + 5000)] == ["later"]
    assert stores.messages.submit_many(TENANT, [], journal="journal-3", now=NOW) == []


def test_a_claim_of_many_takes_each_claimable_message_and_refuses_the_others(stores: Stores) -> None:
    for message_id in ("a", "b", "c"):
        submit(stores.messages, message_id)
    submit(stores.messages, "held", status=MessageStatus.SUSPENDED)
    keys = [
        (TENANT, "a", "r1"),
        (TENANT, "b", "r0"),
        (TENANT, "missing", "r1"),
        (TENANT, "held", "r1"),
        (TENANT, "c", "r1"),
    ]
    claimed = stores.messages.claim_many(keys, claim_id="c1", now=NOW, stale_before=NOW - 60)
    assert [None if c is None else c["id"] for c in claimed] == ["a", None, None, None, "c"]
    assert all(c is None or (c["status"], c["claim_id"], c["claims"]) == ("sending", "c1", 1) for c in claimed)
    assert claimed[0] == stores.messages.get_state(TENANT, "a")
    again = stores.messages.claim_many(keys[:1], claim_id="c2", now=NOW + 1, stale_before=NOW - 60)
    assert again == [None]  # a live claim holds
    assert stores.messages.claim_many([], claim_id="c3", now=NOW, stale_before=NOW) == []


def test_a_rejected_message_is_recorded_failed_only_when_its_id_is_new(stores: Stores) -> None:
    assert stores.messages.record_rejected(TENANT, "bad", uid="u", reason="no recipient", account_id=None, now=NOW)
    state = stores.messages.get_state(TENANT, "bad")
    assert state is not None
    assert (state["status"], state["error"], state["error_ts"], state["rev"]) == ("error", "no recipient", NOW, "")
    assert state["expires_at"] > NOW
    assert "account_id" not in state
    assert state["history"] == [{"event_type": "error", "event_ts": NOW, "description": "no recipient"}]
    submit(stores.messages)
    assert not stores.messages.record_rejected(TENANT, "m1", uid="u", reason="x", account_id="acc", now=NOW)
    assert (stores.messages.get_state(TENANT, "m1") or {})["status"] == "pending"


def test_a_claim_takes_a_pending_message_with_the_expected_revision(stores: Stores) -> None:
    submit(stores.messages)
    assert claim(stores.messages, "c1", rev="r0") is None
    claimed = claim(stores.messages, "c1")
    assert claimed is not None
    assert (claimed["status"], claimed["claim_id"], claimed["claim_ts"], claimed["claims"]) == ("sending", "c1", NOW, 1)
    assert stores.messages.get_state(TENANT, "m1") == claimed


def test_a_claim_of_a_missing_suspended_or_final_message_fails(stores: Stores) -> None:
    assert claim(stores.messages, "c1") is None
    submit(stores.messages, status=MessageStatus.SUSPENDED)
    assert claim(stores.messages, "c1") is None
    stores.messages.record_rejected(TENANT, "bad", uid="u", reason="x", account_id=None, now=NOW)
    assert stores.messages.claim(TENANT, "bad", rev="", claim_id="c", now=NOW, stale_before=NOW) is None


def test_a_message_is_not_claimed_before_it_is_due(stores: Stores) -> None:
    submit(stores.messages, status=MessageStatus.DEFERRED, deferred_ts=NOW + EARLY_SLACK_SECONDS + 1)
    assert claim(stores.messages, "c1") is None
    assert claim(stores.messages, "c1", now=NOW + 1) is not None  # within the slack of clocks and queue delays


def test_a_live_claim_holds_and_a_stale_one_is_taken_over(stores: Stores) -> None:
    submit(stores.messages)
    assert claim(stores.messages, "c1") is not None
    assert claim(stores.messages, "c2", now=NOW + 10, stale_before=NOW - 1) is None
    taken = claim(stores.messages, "c2", now=NOW + 10, stale_before=NOW)
    assert taken is not None
    assert (taken["claim_id"], taken["claims"]) == ("c2", 2)


def test_only_the_live_claim_records_a_result_and_the_result_resets_the_claims(stores: Stores) -> None:
    submit(stores.messages)
    claim(stores.messages, "c1")
    claim(stores.messages, "c2", now=NOW + 10, stale_before=NOW)
    assert finish(stores.messages, "c1") is False
    assert finish(stores.messages, "c2", fields={"sent_ts": NOW + 1, "error": None}, remove=("attempts",)) is True
    state = stores.messages.get_state(TENANT, "m1")
    assert state is not None
    assert (state["status"], state["outcome"], state["outcome_by"], state["sent_ts"]) == ("sent", "sent", "c2", NOW + 1)
    assert state["error"] is None
    assert not {"claim_id", "claim_ts", "claims", "attempts"} & set(state)
    assert state["history"][-1] == {"event_type": "sent", "event_ts": NOW + 1}
    assert finish(stores.messages, "c2") is False  # the claim is gone with the result


def test_a_result_without_an_event_leaves_the_history_alone(stores: Stores) -> None:
    submit(stores.messages)
    claim(stores.messages, "c1")
    assert finish(stores.messages, "c1", MessageStatus.PENDING, history_event=None, outcome=Outcome.REQUEUED)
    state = stores.messages.get_state(TENANT, "m1") or {}
    assert (len(state["history"]), state["status"]) == (1, "pending")
    assert claim(stores.messages, "c2") is not None  # pending again: claimable


def test_two_claimers_racing_exactly_one_wins(stores: Stores) -> None:
    submit(stores.messages)
    barrier = threading.Barrier(6)
    won: list[str] = []

    def race(claim_id: str) -> None:
        barrier.wait()
        if claim(stores.messages, claim_id) is not None:
            won.append(claim_id)

    threads = [threading.Thread(target=race, args=(f"c{n}",)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 1
    assert (stores.messages.get_state(TENANT, "m1") or {})["claim_id"] == won[0]


def test_an_abandoned_message_fails_with_its_reason_and_retention(stores: Stores) -> None:
    submit(stores.messages)
    claim(stores.messages, "c1")
    assert stores.messages.abandon(TENANT, "m1", claim_id="c0", attempts=3, now=NOW + 5) is False
    assert stores.messages.abandon(TENANT, "m1", claim_id="c1", attempts=3, now=NOW + 5) is True
    state = stores.messages.get_state(TENANT, "m1") or {}
    assert (state["status"], state["error"], state["error_ts"]) == ("error", abandoned_reason(3), NOW + 5)
    assert state["expires_at"] > NOW + 5
    assert state["history"][-1]["event_type"] == "error"


def test_a_suspended_message_is_released_to_pending_once(stores: Stores) -> None:
    submit(stores.messages, status=MessageStatus.SUSPENDED)
    released = stores.messages.release_suspended(TENANT, "m1", now=NOW + 3)
    assert released is not None
    assert (released["status"], released["updated_at"]) == ("pending", NOW + 3)
    assert stores.messages.release_suspended(TENANT, "m1", now=NOW + 4) is None
    assert stores.messages.release_suspended(TENANT, "missing", now=NOW + 4) is None


def test_parked_messages_come_due_and_are_unparked_once(stores: Stores) -> None:
    submit(stores.messages, status=MessageStatus.DEFERRED, deferred_ts=NOW + 5000, park_ts=NOW + 5000)
    submit(stores.messages, "m2")
    assert stores.messages.due_parked(NOW + 4999) == []
    due = stores.messages.due_parked(NOW + 5000)
    assert due == [{"tenant_id": TENANT, "id": "m1", "park_shard": PARK_SHARD, "park_ts": NOW + 5000, "priority": 1}]
    assert stores.messages.unpark(TENANT, "m1", park_ts=NOW + 1, now=NOW + 5000) is False
    assert stores.messages.unpark(TENANT, "m1", park_ts=NOW + 5000, now=NOW + 5000) is True
    assert stores.messages.due_parked(NOW + 9999) == []
    state = stores.messages.get_state(TENANT, "m1") or {}
    assert not {"park_shard", "park_ts"} & set(state)
    assert stores.messages.unpark(TENANT, "m1", park_ts=NOW + 5000, now=NOW + 5000) is False


def test_a_result_that_parks_a_message_puts_it_on_the_parked_index(stores: Stores) -> None:
    submit(stores.messages)
    claim(stores.messages, "c1")
    later = NOW + 3600
    fields = {"deferred_ts": later, "attempts": 1, "park_shard": PARK_SHARD, "park_ts": later}
    history = event(EventType.DEFERRED, NOW + 1, "busy", deferred_ts=later, deferred_reason="busy")
    assert finish(
        stores.messages, "c1", MessageStatus.DEFERRED, history_event=history, outcome=Outcome.RETRY, fields=fields
    )
    submit(stores.messages, "m2", status=MessageStatus.DEFERRED, deferred_ts=later - 1, park_ts=later - 1)
    assert [d["id"] for d in stores.messages.due_parked(later)] == ["m2", "m1"]  # earliest first
    assert [d["id"] for d in stores.messages.due_parked(later, limit=1)] == ["m2"]


def test_listing_getting_and_deleting_messages(stores: Stores) -> None:
    for message_id in ("b", "a", "c"):
        submit(stores.messages, message_id)
    assert [s["id"] for s in stores.messages.list_states(TENANT)] == ["a", "b", "c"]
    assert stores.messages.list_states("other") == []
    assert set(stores.messages.get_states(TENANT, ["a", "c", "zz", "a"])) == {"a", "c"}
    deleted = stores.messages.delete_state(TENANT, "a")
    assert deleted is not None and deleted["id"] == "a"
    assert stores.messages.delete_state(TENANT, "a") is None
    stores.messages.delete_states([(TENANT, "b"), (TENANT, "missing")])
    assert [s["id"] for s in stores.messages.list_states(TENANT)] == ["c"]


def _sent(messages: Messages, message_id: str) -> None:
    submit(messages, message_id)
    messages.claim(TENANT, message_id, rev="r1", claim_id="c", now=NOW, stale_before=NOW)
    messages.finish(
        TENANT,
        message_id,
        claim_id="c",
        status=MessageStatus.SENT,
        now=NOW,
        history_event=event(EventType.SENT, NOW),
        outcome=Outcome.SENT,
        fields={"expires_at": NOW + 100},
    )


def test_only_a_final_message_has_its_expiry_moved(stores: Stores) -> None:
    _sent(stores.messages, "m1")
    submit(stores.messages, "m2")
    assert stores.messages.extend_expiry(TENANT, "m1", expires_at=NOW + 500) is True
    assert stores.messages.extend_expiry(TENANT, "m2", expires_at=NOW + 500) is False
    assert stores.messages.extend_expiry(TENANT, "missing", expires_at=NOW + 500) is False
    assert (stores.messages.get_state(TENANT, "m1") or {})["expires_at"] == NOW + 500


def test_an_expired_message_is_restored_marked_unless_its_id_came_back(stores: Stores) -> None:
    _sent(stores.messages, "m1")
    item = stores.messages.delete_state(TENANT, "m1")
    assert item is not None
    assert stores.messages.restore(item, expires_at=NOW + 900) is True
    restored = stores.messages.get_state(TENANT, "m1") or {}
    assert (restored["restored"], restored["expires_at"], restored["history"]) == (True, NOW + 900, item["history"])
    assert stores.messages.restore(item, expires_at=NOW + 999) is False


# ---------------------------------------------------------------------- SQLite: the change log (AWS: the stream)


@pytest.fixture
def sqlite_messages(tmp_path: Path) -> SqliteMessages:
    """The SQLite messages port over a fresh database (its change log is not part of the port)."""
    return SqliteMessages(Database(str(tmp_path / "db.sqlite3"), (SCHEMA,)))


def test_every_write_of_a_message_is_logged_with_its_old_and_new_record(sqlite_messages: SqliteMessages) -> None:
    from mailproxy.report_format import appended_events

    store = sqlite_messages
    submit(store)
    claim(store, "c1")
    finish(store, "c1")
    assert claim(store, "c2") is None  # a refused write logs nothing
    changes = store.changes(10)
    assert [c["seq"] for c in changes] == sorted(c["seq"] for c in changes)
    assert [(c["old"] or {}).get("status") for c in changes] == [None, "pending", "sending"]
    assert [c["new"]["status"] for c in changes] == ["pending", "sending", "sent"]
    assert all((c["tenant_id"], c["id"], c["expired"]) == (TENANT, "m1", False) for c in changes)
    owed = [o for c in changes for o in appended_events(c["old"], c["new"])]
    assert [(o.id, o.position, o.event["event_type"]) for o in owed] == [("m1", 1, "sent")]
    store.drop_changes(changes[1]["seq"])
    assert [c["seq"] for c in store.changes(10)] == [changes[2]["seq"]]
    store.delete_state(TENANT, "m1")
    deleted = store.changes(10)[-1]
    assert (deleted["old"]["status"], deleted["new"], deleted["expired"]) == ("sent", None, False)


def test_expiry_deletes_what_expired_and_logs_each_removal_as_expired(sqlite_messages: SqliteMessages) -> None:
    store = sqlite_messages
    _sent(store, "m1")
    submit(store, "m2")
    store.drop_changes(store.changes(100)[-1]["seq"])
    assert store.expire(NOW + 99) == []
    gone = store.expire(NOW + 100)
    assert [g["id"] for g in gone] == ["m1"]
    assert store.get_state(TENANT, "m1") is None and store.get_state(TENANT, "m2") is not None
    (change,) = store.changes(10)
    assert (change["id"], change["old"]["status"], change["new"], change["expired"]) == ("m1", "sent", None, True)
    # What the reporter does with a TTL removal whose reports may be owed: put it back, marked.
    assert store.restore(change["old"], expires_at=NOW + 900) is True
    assert store.changes(10)[-1]["new"]["restored"] is True
