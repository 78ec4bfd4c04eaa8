"""The work queue: enqueue and the dead-letter depth on both adapters; on SQLite, also the consumer side that
SQS and Lambda's event source mapping play on AWS (priorities, delays, leases, redelivery, dead letters)."""

from __future__ import annotations

import json
import multiprocessing
import time
from pathlib import Path
from typing import Any

import pytest
from mailproxy.adapters.sqlite.db import Database
from mailproxy.adapters.sqlite.queue import MAX_RECEIVES, SCHEMA, SqliteQueue
from mailproxy.queues import QueueEntry
from mailproxy.stores import Stores

T = "t1"


def entry(message_id: str, priority: int = 2, delay: int = 0, payload: dict[str, Any] | None = None) -> QueueEntry:
    return QueueEntry(T, message_id, "r1", priority, delay, payload)


def ids(records: list[dict[str, Any]]) -> list[str]:
    return [json.loads(r["body"])["id"] for r in records]


def test_enqueued_entries_wait_on_their_priority_and_nothing_is_dead_yet(
    stores: Stores, adapter: str, request: pytest.FixtureRequest
) -> None:
    stores.queue.enqueue([entry("m1", 3), entry("m2", 0, payload={"subject": "s"}), entry("m3", 3), entry("m4", 1)])
    stores.queue.enqueue([])
    assert stores.queue.dead_letter_depth() == 0
    if adapter == "aws":
        by_priority = request.getfixturevalue("aws_env").drain_all()
        bodies = [body for p in range(4) for body in by_priority[p]]
    else:
        assert isinstance(stores.queue, SqliteQueue)
        bodies = [json.loads(r["body"]) for r in stores.queue.receive(10, 30)]
    assert [b["id"] for b in bodies] == ["m2", "m4", "m1", "m3"]  # most urgent first, then oldest
    assert bodies[0] == {"tenant_id": T, "id": "m2", "rev": "r1", "payload": {"subject": "s"}}
    assert bodies[1] == {"tenant_id": T, "id": "m4", "rev": "r1"}


# ---------------------------------------------------------------------- SQLite: the consumer side


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "queue.sqlite3")


@pytest.fixture
def queue(db_path: str) -> SqliteQueue:
    return SqliteQueue(Database(db_path, (SCHEMA,)))


def test_a_received_message_carries_what_a_lambda_sqs_record_does(queue: SqliteQueue) -> None:
    queue.enqueue([entry("m1")])
    (record,) = queue.receive(10, 30)
    assert set(record) >= {"messageId", "receiptHandle", "body", "attributes"}
    assert record["attributes"]["ApproximateReceiveCount"] == "1"
    assert json.loads(record["body"]) == {"tenant_id": T, "id": "m1", "rev": "r1"}


def test_receiving_honours_the_batch_size_priority_and_age(queue: SqliteQueue) -> None:
    queue.enqueue([entry(f"low{n}", 3) for n in range(3)])
    queue.enqueue([entry(f"now{n}", 0) for n in range(3)])
    assert ids(queue.receive(4, 30)) == ["now0", "now1", "now2", "low0"]
    assert ids(queue.receive(4, 30)) == ["low1", "low2"]
    assert queue.receive(4, 30) == []


def test_a_delayed_message_is_not_received_before_its_time(queue: SqliteQueue) -> None:
    queue.enqueue([entry("later", 0, delay=3600), entry("soon", 2, delay=0)])
    assert ids(queue.receive(10, 7200)) == ["soon"]
    assert queue.receive(10, 7200, now=time.time() + 3500) == []
    assert ids(queue.receive(10, 7200, now=time.time() + 3601)) == ["later"]


def test_a_leased_message_comes_back_when_its_lease_ends_unless_deleted(queue: SqliteQueue) -> None:
    queue.enqueue([entry("m1"), entry("m2")])
    first = queue.receive(10, 30)
    assert queue.receive(10, 30) == []
    again = queue.receive(10, 30, now=time.time() + 31)  # a crashed worker's messages come back
    assert ids(again) == ["m1", "m2"]
    assert [r["messageId"] for r in again] == [r["messageId"] for r in first]
    assert [r["attributes"]["ApproximateReceiveCount"] for r in again] == ["2", "2"]
    assert queue.delete([r["receiptHandle"] for r in first]) == 0  # an old handle deletes nothing
    assert queue.delete([again[0]["receiptHandle"]]) == 1
    assert ids(queue.receive(10, 30, now=time.time() + 100)) == ["m2"]


def test_a_released_message_comes_back_after_the_delay_asked(queue: SqliteQueue) -> None:
    queue.enqueue([entry("m1")])
    (record,) = queue.receive(10, 300)
    assert queue.release([record["receiptHandle"]], delay_seconds=60) == 1
    assert queue.receive(10, 300) == []
    assert ids(queue.receive(10, 300, now=time.time() + 61)) == ["m1"]
    assert queue.release([record["receiptHandle"]]) == 0  # that receive's handle is spent


def test_a_message_received_too_often_goes_to_the_dead_letters(queue: SqliteQueue) -> None:
    queue.enqueue([entry("poison"), entry("fine")])
    now = time.time()
    for attempt in range(1, MAX_RECEIVES + 1):
        received = queue.receive(1, 10, now=now)
        assert ids(received) == ["poison"]
        assert received[0]["attributes"]["ApproximateReceiveCount"] == str(attempt)
        now += 11
    assert queue.dead_letter_depth() == 0
    assert ids(queue.receive(1, 10, now=now)) == ["fine"]  # the poison one moved aside, the batch filled
    assert queue.dead_letter_depth() == 1


def test_the_dead_letter_limit_is_the_constructors(db_path: str) -> None:
    queue = SqliteQueue(Database(db_path, (SCHEMA,)), max_receives=1)
    queue.enqueue([entry("m1")])
    assert ids(queue.receive(1, 0)) == ["m1"]
    assert queue.receive(1, 0) == []
    assert queue.dead_letter_depth() == 1


def _receive_all(path: str, start: Any, results: Any) -> None:
    """A worker process: receive until the queue is empty for a while, keeping every lease (no delete)."""
    queue = SqliteQueue(Database(path, (SCHEMA,)))
    got: list[str] = []
    start.wait()
    idle = 0
    while idle < 3:
        received = queue.receive(3, 60)
        got += ids(received)
        idle = 0 if received else idle + 1
        time.sleep(0.001)  # "sending" the batch: the other worker gets the lock meanwhile
    results.put(got)


def test_two_processes_never_receive_one_message_while_its_lease_holds(queue: SqliteQueue, db_path: str) -> None:
    wanted = [f"m{n}" for n in range(300)]
    queue.enqueue([entry(i, n % 4) for n, i in enumerate(wanted)])
    context = multiprocessing.get_context("spawn")
    start, results = context.Barrier(2), context.Queue()
    workers = [context.Process(target=_receive_all, args=(db_path, start, results)) for _ in range(2)]
    for worker in workers:
        worker.start()
    got = [results.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=10)
    received = got[0] + got[1]
    assert sorted(received) == sorted(wanted)  # each once, none lost
    assert all(got), "both workers received some (the race happened)"


def test_leases_a_dead_runtime_left_are_given_back_at_once(queue: SqliteQueue) -> None:
    queue.enqueue([entry("leased"), entry("waiting", delay=600)])
    now = time.time()
    [record] = queue.receive(10, visibility_seconds=180, now=now)
    assert queue.receive(10, visibility_seconds=180, now=now + 1) == []
    assert queue.return_leased(now=now + 1) == 1  # the delayed entry was never leased: it keeps its delay
    [again] = queue.receive(10, visibility_seconds=180, now=now + 1)
    assert again["messageId"] == record["messageId"]
    assert again["receiptHandle"] != record["receiptHandle"]
    assert queue.delete([record["receiptHandle"]]) == 0  # the dead worker's handle is stale
