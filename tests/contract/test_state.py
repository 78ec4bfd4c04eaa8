"""The counters, journals and service-state ports: what the sender, the scheduler and /metrics rely on."""

from __future__ import annotations

import threading

import pytest
from mailproxy.domain import Counter, JournalKind
from mailproxy.stores import Stores

NOW = 1_800_000_000
KEYS = [{"tenant_id": "t1", "id": "m1", "rev": "r1"}]


def counters_of(stores: Stores, tenant_id: str, account_id: str) -> dict[str, int]:
    rows = [r for r in stores.counters.counter_rows() if (r["tenant_id"], r["account_id"]) == (tenant_id, account_id)]
    return {str(c): int(rows[0].get(c, 0)) for c in Counter} if rows else {}


def test_pending_counts_add_up_per_tenant(stores: Stores) -> None:
    assert (stores.counters.pending_counts(), stores.counters.pending_count(), stores.counters.pending_count("t1")) == (
        {},
        0,
        0,
    )
    stores.counters.add_pending({"t1": 3, "t2": 1, "t3": 0})
    stores.counters.add_pending({"t1": -1})
    assert stores.counters.pending_counts() == {"t1": 2, "t2": 1}
    assert (stores.counters.pending_count("t1"), stores.counters.pending_count()) == (2, 3)


def test_pending_deltas_with_a_journal_apply_only_while_it_is_open(stores: Stores) -> None:
    sk = stores.journals.open_journal(JournalKind.INTAKE, KEYS, due_ts=NOW)
    stores.counters.add_pending({"t1": 2}, journal_sk=sk)
    assert stores.journals.due_journals(NOW) == []
    stores.counters.add_pending({"t1": 2}, journal_sk=sk)  # a second closer (the scheduler) counts nothing
    assert stores.counters.pending_counts() == {"t1": 2}


def test_journals_come_due_with_their_kind_keys_and_counted_mark(stores: Stores) -> None:
    early = stores.journals.open_journal(JournalKind.SEND, KEYS, due_ts=NOW)
    late = stores.journals.open_journal(JournalKind.INTAKE, [], due_ts=NOW + 60)
    assert early < late
    assert [j["sk"] for j in stores.journals.due_journals(NOW - 1)] == []
    (due,) = stores.journals.due_journals(NOW)
    assert (due["sk"], due["kind"], due["keys"], due["due_ts"], due.get("counted")) == (early, "send", KEYS, NOW, None)
    stores.journals.mark_journal_counted(early)
    assert [(j["sk"], bool(j.get("counted"))) for j in stores.journals.due_journals(NOW + 60)] == [
        (early, True),
        (late, False),
    ]


def test_a_batch_is_closed_once_with_its_counts(stores: Stores) -> None:
    sk = stores.journals.open_journal(JournalKind.SEND, KEYS, due_ts=NOW)
    stores.counters.add_pending({"t1": 5})
    counts = {("t1", "acc"): {Counter.SENT: 2, Counter.ERRORS: 1, Counter.DEFERRED: 0}}
    stores.journals.close_batch(sk, counters=counts, pending={"t1": -3})
    stores.journals.close_batch(sk, counters=counts, pending={"t1": -3})
    assert counters_of(stores, "t1", "acc") == {
        "sent": 2,
        "errors": 1,
        "deferred": 0,
        "rate_limited": 0,
        "suppressed": 0,
    }
    assert stores.counters.pending_counts() == {"t1": 2}
    assert stores.journals.due_journals(NOW + 1) == []


def test_two_closers_racing_apply_a_batch_once(stores: Stores) -> None:
    sk = stores.journals.open_journal(JournalKind.SEND, KEYS, due_ts=NOW)
    barrier = threading.Barrier(4)

    def close() -> None:
        barrier.wait()
        stores.journals.close_batch(sk, counters={("t1", "acc"): {Counter.SENT: 1}}, pending={"t1": -1})

    threads = [threading.Thread(target=close) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counters_of(stores, "t1", "acc")["sent"] == 1
    assert stores.counters.pending_counts() == {"t1": -1}


def test_a_settled_batch_keeps_only_its_open_keys_and_counts_nothing_twice(stores: Stores) -> None:
    keys = [*KEYS, {"tenant_id": "t1", "id": "m2", "rev": "r1"}]
    sk = stores.journals.open_journal(JournalKind.SEND, keys, due_ts=NOW)
    stores.journals.settle_batch(sk, counters={("t1", "acc"): {Counter.SENT: 1}}, pending={"t1": -1}, open_keys=KEYS)
    (entry,) = stores.journals.due_journals(NOW)
    assert entry["keys"] == KEYS
    stores.journals.close_batch(sk, counters={("t1", "acc"): {Counter.ERRORS: 1}}, pending={"t1": -1})
    stores.journals.settle_batch(sk, counters={("t1", "acc"): {Counter.SENT: 1}}, pending={"t1": -1}, open_keys=[])
    assert counters_of(stores, "t1", "acc") == {
        "sent": 1,
        "errors": 1,
        "deferred": 0,
        "rate_limited": 0,
        "suppressed": 0,
    }
    assert stores.counters.pending_counts() == {"t1": -2}
    assert stores.journals.due_journals(NOW) == []


def test_an_account_gets_its_counters_at_zero_and_they_outlive_it(stores: Stores) -> None:
    stores.counters.ensure_counters("t1", "acc")
    assert counters_of(stores, "t1", "acc") == {
        "sent": 0,
        "errors": 0,
        "deferred": 0,
        "rate_limited": 0,
        "suppressed": 0,
    }
    sk = stores.journals.open_journal(JournalKind.SEND, KEYS, due_ts=NOW)
    stores.journals.close_batch(sk, counters={("t1", "acc"): {Counter.SENT: 4}}, pending={})
    stores.counters.ensure_counters("t1", "acc")  # never resets what was counted
    assert counters_of(stores, "t1", "acc")["sent"] == 4
    stores.counters.ensure_counters("t1", "other")
    stores.counters.ensure_counters("t2", "acc")
    assert stores.counters.counted_accounts("t1") == {"acc", "other"}
    assert [(r["tenant_id"], r["account_id"]) for r in stores.counters.counter_rows()] == [
        ("t1", "acc"),
        ("t1", "other"),
        ("t2", "acc"),
    ]
    stores.service.forget_tenant("t1")
    assert stores.counters.counted_accounts("t1") == {"acc", "other"}


def test_tenant_and_service_counters_add_up(stores: Stores) -> None:
    assert stores.counters.tenant_counter_rows() == {}
    assert stores.counters.service_counters().get("command_log_write_failures", 0) == 0
    stores.counters.add_tenant_counters("t1", {"quota_rejected": 2})
    stores.counters.add_tenant_counters("t1", {"quota_rejected": 1})
    stores.counters.add_tenant_counters("t2", {"quota_rejected": 0})
    rows = stores.counters.tenant_counter_rows()
    assert set(rows) == {"t1"}
    assert rows["t1"]["quota_rejected"] == 3
    stores.counters.count_command_log_failure()
    stores.counters.count_command_log_failure()
    assert stores.counters.service_counters()["command_log_write_failures"] == 2


def test_the_service_start_is_recorded_once_and_scheduler_runs_are_marked(stores: Stores) -> None:
    assert stores.service.service_started_at(NOW) == NOW
    assert stores.service.service_started_at(NOW + 100) == NOW
    assert stores.service.scheduler_last_run() is None
    stores.service.mark_scheduler_run(NOW + 5)
    stores.service.mark_scheduler_run(NOW + 9)
    assert stores.service.scheduler_last_run() == NOW + 9


def test_a_run_now_request_is_cleared_only_by_who_saw_it(stores: Stores) -> None:
    stores.service.request_run_now("*", NOW)
    stores.service.request_run_now("t1", NOW)
    assert stores.service.run_now_requests() == {"*": NOW, "t1": NOW}
    stores.service.request_run_now("*", NOW + 1)  # a newer request while the first is acted on
    stores.service.clear_run_now("*", NOW)
    assert stores.service.run_now_requests() == {"*": NOW + 1, "t1": NOW}
    stores.service.clear_run_now("*", NOW + 1)
    assert stores.service.run_now_requests() == {"t1": NOW}


def test_a_forgotten_tenant_loses_its_pending_count_and_run_now_request(stores: Stores) -> None:
    stores.counters.add_pending({"t1": 1, "t2": 1})
    stores.service.request_run_now("t1", NOW)
    stores.service.request_run_now("t2", NOW)
    stores.service.forget_tenant("t1")
    assert stores.counters.pending_counts() == {"t2": 1}
    assert stores.service.run_now_requests() == {"t2": NOW}


def test_nothing_expired_is_nothing_deleted(stores: Stores, adapter: str) -> None:
    # The retention sweep of the one-machine runtime (on AWS the tables' TTL; local/ttl.py plays it on moto).
    if adapter != "sqlite":
        pytest.skip("DynamoDB's TTL removes expired items on AWS")
    from mailproxy.adapters.sqlite.state import SqliteState

    assert isinstance(stores.service, SqliteState)
    stores.counters.add_pending({"t1": 1})
    stores.journals.open_journal(JournalKind.SEND, KEYS, due_ts=NOW)
    assert stores.service.delete_expired(NOW + 10**6) == 0
    assert stores.counters.pending_counts() == {"t1": 1}
    assert len(stores.journals.due_journals(NOW)) == 1
