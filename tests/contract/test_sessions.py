"""The SmtpSessions port: senders together never hold more of an account's sessions than its limit."""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path
from typing import Any

from mailproxy.adapters.sqlite import database_path
from mailproxy.adapters.sqlite.db import Database
from mailproxy.adapters.sqlite.sessions import SCHEMA, SqliteSessions
from mailproxy.sessions import DEMAND_SECONDS
from mailproxy.stores import Stores

NOW = 1_800_000_000


def hold(stores: Stores, holder: str, wanted: int, *, limit: int = 5, now: int = NOW, account: str = "main") -> int:
    return stores.sessions.hold("acme", account, holder, wanted=wanted, limit=limit, now=now, until=now + 30)


def test_holders_share_the_limit_and_make_room_for_one_that_is_short(stores: Stores) -> None:
    assert hold(stores, "a", 3) == 3
    assert hold(stores, "b", 4) == 2  # what is left
    assert hold(stores, "c", 1) == 0  # nothing left: c is on record as wanting one
    assert hold(stores, "a", 3) == 1  # while c is short, a gets its fair share (5 // 3) and gives back two
    assert hold(stores, "c", 1) == 1
    assert hold(stores, "b", 0) == 0  # giving back everything
    assert hold(stores, "a", 3) == 3  # nobody is short: a gets what is free again


def test_a_holder_that_got_nothing_is_waited_for_a_few_seconds_only(stores: Stores) -> None:
    assert hold(stores, "x", 5) == 5
    assert hold(stores, "y", 2) == 0
    assert hold(stores, "x", 5, now=NOW + 1) == 2  # room made for y: 5 // 2
    assert hold(stores, "x", 5, now=NOW + DEMAND_SECONDS) == 5  # y never came back: its wish lapsed


def test_an_expired_lease_counts_for_nothing(stores: Stores) -> None:
    assert hold(stores, "frozen", 5) == 5
    assert hold(stores, "b", 2, now=NOW + 29) == 0
    assert hold(stores, "b", 2, now=NOW + 30) == 2  # the lease ran until NOW + 30
    assert hold(stores, "frozen", 5, now=NOW + 31) == 3  # back from the freeze, it gets what is left


def test_accounts_and_tenants_count_apart(stores: Stores) -> None:
    assert hold(stores, "a", 5, limit=2) == 2
    assert hold(stores, "a", 5, limit=2, account="other") == 2
    assert stores.sessions.hold("beta", "main", "a", wanted=5, limit=2, now=NOW, until=NOW + 30) == 2
    assert hold(stores, "b", 1, limit=2) == 0


def test_a_lowered_limit_is_kept_as_holders_ask_again(stores: Stores) -> None:
    assert hold(stores, "a", 5, limit=5) == 5
    assert hold(stores, "b", 1, limit=3) == 0  # the account's limit was lowered: 5 held, 3 allowed
    assert hold(stores, "a", 5, limit=3) == 1  # a asking again keeps within it, and makes room for b
    assert hold(stores, "b", 1, limit=3) == 1


def test_connections_still_open_stay_counted_until_their_holder_asks_again_without_them(stores: Stores) -> None:
    assert hold(stores, "a", 3, limit=3) == 3
    assert hold(stores, "b", 2, limit=3) == 0  # b is short
    # a's fair share is 1, but its three connections are open until it closes two of them
    assert stores.sessions.hold("acme", "main", "a", wanted=3, limit=3, now=NOW, until=NOW + 30, open_now=3) == 1
    assert hold(stores, "b", 2, limit=3) == 0
    assert stores.sessions.hold("acme", "main", "a", wanted=3, limit=3, now=NOW, until=NOW + 30, open_now=1) == 1
    assert hold(stores, "b", 2, limit=3) == 2


def test_a_forgotten_tenant_holds_no_lease(stores: Stores) -> None:
    hold(stores, "a", 5)
    stores.sessions.hold("beta", "main", "a", wanted=5, limit=5, now=NOW, until=NOW + 30)
    stores.sessions.forget_tenant("acme", {"main"})
    assert hold(stores, "b", 5) == 5
    assert stores.sessions.hold("beta", "main", "b", wanted=5, limit=5, now=NOW, until=NOW + 30) == 0


def test_threads_holding_at_once_never_exceed_the_limit(stores: Stores) -> None:
    start = threading.Barrier(4)
    granted: dict[str, int] = {}

    def take(holder: str) -> None:
        start.wait()
        granted[holder] = hold(stores, holder, 3, limit=7)

    threads = [threading.Thread(target=take, args=(f"h{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(granted.values()) == 7  # of 12 asked for
    assert hold(stores, "late", 1, limit=7) == 0


def _hold_in_a_process(path: str, holder: str, start: Any, results: Any) -> None:
    sessions = SqliteSessions(Database(path, (SCHEMA,)))
    start.wait()
    got = [sessions.hold("acme", "main", holder, wanted=n, limit=10, now=NOW, until=NOW + 30) for n in (2, 4, 6)]
    results.put(got[-1])


def test_processes_holding_at_once_never_exceed_the_limit_on_sqlite(tmp_path: Path) -> None:
    path = database_path(str(tmp_path))
    Database(path, (SCHEMA,))
    context = multiprocessing.get_context("spawn")  # each process opens its own connection, as workers do
    start, results = context.Event(), context.Queue()
    processes = [context.Process(target=_hold_in_a_process, args=(path, f"p{i}", start, results)) for i in range(3)]
    for process in processes:
        process.start()
    start.set()
    final = [results.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(timeout=60)
    assert sum(final) <= 10
    held = SqliteSessions(Database(path, (SCHEMA,))).hold(
        "acme", "main", "p-last", wanted=10, limit=10, now=NOW, until=NOW + 30
    )
    assert held == 10 - sum(final)


def test_a_late_guess_from_another_thread_never_lets_a_holder_skip_its_write(aws_env: Any) -> None:
    """One container's threads share their guesses of the item: a thread that remembers its write after a
    later one remembered its own must not put the older item back, or a holder finding its lease unchanged in
    that older item would skip its write and open connections the stored lease does not count."""
    from mailproxy.adapters.aws import sessions

    def hold_aws(holder: str, wanted: int) -> int:
        return sessions.hold("acme", "main", holder, wanted=wanted, limit=3, now=NOW, until=NOW + 30)

    pk = "SESSIONS#acme#main"
    assert hold_aws("b", 3) == 3
    older = sessions._known.get(pk)
    assert older is not None
    assert hold_aws("b", 1) == 1  # b gave two back
    sessions._known.remember(pk, older)  # another thread's remember of the older write, arriving late
    b_holds = hold_aws("b", 3)
    assert b_holds + hold_aws("c", 3) <= 3
