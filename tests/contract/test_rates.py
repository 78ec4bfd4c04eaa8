"""The RateWindows port: no window of an account or of a tenant's quota ever grants more than its limit."""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path
from typing import Any

from mailproxy.adapters.sqlite import database_path
from mailproxy.adapters.sqlite.db import Database
from mailproxy.adapters.sqlite.rates import SCHEMA, SqliteRates
from mailproxy.ratelimit import Limits
from mailproxy.stores import Stores

NOW = 1_800_000_000 - 1_800_000_000 % 3600 + 600  # ten minutes into an hour


def test_no_limit_grants_everything_and_takes_no_window(stores: Stores) -> None:
    got = stores.rates.reserve("acme", "main", Limits(), 50, NOW)
    assert (got.granted, got.next_window_ts, got.windows, got.full) == (50, None, {}, ())
    assert stores.rates.reserve("acme", "main", Limits(0, -1, None), 5, NOW).granted == 5
    assert stores.rates.reserve("acme", "main", Limits(per_minute=3), 0, NOW).granted == 0


def test_a_minute_grants_up_to_its_limit_then_says_when_the_next_opens(stores: Stores) -> None:
    limits = Limits(per_minute=5)
    first = stores.rates.reserve("acme", "main", limits, 3, NOW)
    assert (first.granted, first.next_window_ts, first.full) == (3, None, ())
    assert first.windows == {"m": NOW // 60}
    second = stores.rates.reserve("acme", "main", limits, 3, NOW + 10)
    assert (second.granted, second.next_window_ts, second.full) == (2, NOW + 60, ("m",))
    third = stores.rates.reserve("acme", "main", limits, 1, NOW + 59)
    assert (third.granted, third.next_window_ts, third.full) == (0, NOW + 60, ("m",))
    assert stores.rates.reserve("acme", "main", limits, 9, NOW + 60).granted == 5


def test_exactly_filling_a_window_says_it_is_full_but_gives_no_next_window(stores: Stores) -> None:
    got = stores.rates.reserve("acme", "main", Limits(per_minute=4), 4, NOW)
    assert (got.granted, got.next_window_ts, got.full) == (4, None, ("m",))


def test_the_tightest_window_decides_and_the_latest_full_one_gives_the_next_time(stores: Stores) -> None:
    limits = Limits(per_minute=10, per_hour=12, per_day=100)
    assert stores.rates.reserve("acme", "main", limits, 10, NOW).granted == 10
    got = stores.rates.reserve("acme", "main", limits, 10, NOW + 60)
    assert (got.granted, got.full, got.next_window_ts) == (2, ("h",), NOW - NOW % 3600 + 3600)
    got = stores.rates.reserve("acme", "main", limits, 1, NOW + 120)
    assert (got.granted, got.full) == (0, ("h",))
    assert set(got.windows) == {"m", "h", "d"}


def test_accounts_tenants_and_quotas_count_apart(stores: Stores) -> None:
    limits = Limits(per_minute=2)
    assert stores.rates.reserve("acme", "a", limits, 5, NOW).granted == 2
    assert stores.rates.reserve("acme", "b", limits, 5, NOW).granted == 2
    assert stores.rates.reserve("beta", "a", limits, 5, NOW).granted == 2
    assert stores.rates.reserve_quota("acme", limits, 5, NOW).granted == 2
    assert stores.rates.reserve_quota("acme", limits, 5, NOW).granted == 0
    assert stores.rates.reserve_quota("beta", limits, 5, NOW).granted == 2


def test_released_slots_return_to_a_current_window_only(stores: Stores) -> None:
    limits = Limits(per_minute=3, per_hour=10)
    got = stores.rates.reserve("acme", "main", limits, 3, NOW)
    stores.rates.release("acme", "main", got, 2)
    assert stores.rates.reserve("acme", "main", limits, 5, NOW + 1).granted == 2
    stores.rates.release("acme", "main", got, 0)
    stores.rates.release("acme", "main", got, 100)  # never below zero
    assert stores.rates.reserve("acme", "main", limits, 5, NOW + 2).granted == 3

    later = stores.rates.reserve("acme", "main", limits, 1, NOW + 60)  # a new minute, the same hour
    assert later.granted == 1
    stores.rates.release("acme", "main", got, 1)  # `got`'s minute has closed: only its hour gets a slot back
    assert stores.rates.reserve("acme", "main", limits, 5, NOW + 61).granted == 2
    stores.rates.release("acme", "main", stores.rates.reserve("acme", "main", Limits(), 3, NOW), 3)  # no windows


def test_a_quota_reservation_is_released_apart_from_the_accounts(stores: Stores) -> None:
    limits = Limits(per_day=4)
    quota = stores.rates.reserve_quota("acme", limits, 4, NOW)
    account = stores.rates.reserve("acme", "main", limits, 4, NOW)
    stores.rates.release_quota("acme", quota, 3)
    assert stores.rates.reserve_quota("acme", limits, 9, NOW).granted == 3
    assert stores.rates.reserve("acme", "main", limits, 9, NOW).granted == 0
    stores.rates.release("acme", "main", account, 1)
    assert stores.rates.reserve("acme", "main", limits, 9, NOW).granted == 1


def test_a_forgotten_tenant_starts_with_empty_windows(stores: Stores) -> None:
    limits = Limits(per_hour=2)
    stores.rates.reserve("acme", "a", limits, 2, NOW)
    stores.rates.reserve_quota("acme", limits, 2, NOW)
    stores.rates.reserve("beta", "a", limits, 2, NOW)
    stores.rates.forget_tenant("acme", {"a"})
    stores.rates.forget_cache()
    assert stores.rates.reserve("acme", "a", limits, 5, NOW).granted == 2
    assert stores.rates.reserve_quota("acme", limits, 5, NOW).granted == 2
    assert stores.rates.reserve("beta", "a", limits, 5, NOW).granted == 0


def test_two_threads_reserving_at_once_never_exceed_a_limit(stores: Stores) -> None:
    limits = Limits(per_minute=15)
    granted: list[int] = []
    start = threading.Barrier(2)

    def take() -> None:
        start.wait()
        for _ in range(12):
            granted.append(stores.rates.reserve("acme", "main", limits, 1, NOW).granted)
            granted.append(stores.rates.reserve_quota("acme", limits, 1, NOW).granted)

    threads = [threading.Thread(target=take) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(granted) == 30  # 15 of the account's minute and 15 of the quota's, of 48 asked for
    assert stores.rates.reserve("acme", "main", limits, 1, NOW).granted == 0


def _reserve_in_a_process(path: str, start: Any, results: Any) -> None:
    rates = SqliteRates(Database(path, (SCHEMA,)))
    start.wait()
    results.put(sum(rates.reserve("acme", "main", Limits(per_minute=20), 1, NOW).granted for _ in range(15)))


def test_two_processes_reserving_at_once_never_exceed_a_limit_on_sqlite(tmp_path: Path) -> None:
    path = database_path(str(tmp_path))
    Database(path, (SCHEMA,))
    context = multiprocessing.get_context("spawn")  # each process opens its own connection, as workers do
    start, results = context.Event(), context.Queue()
    processes = [context.Process(target=_reserve_in_a_process, args=(path, start, results)) for _ in range(2)]
    for process in processes:
        process.start()
    start.set()
    granted = [results.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(timeout=60)
    assert sum(granted) == 20  # of 30 asked for
    assert SqliteRates(Database(path)).reserve("acme", "main", Limits(per_minute=20), 1, NOW).granted == 0
