"""The runtime's periodic work, as threads of its main process: the scheduler, the reporter (the change log and
its schedule), retention and the bounce mailboxes' poll. What EventBridge schedules and the DynamoDB stream's event source mapping do on
AWS, calling the same use cases.

Threads, not processes: this work is waiting on SQLite and on tenants' callbacks, with little CPU; the sender
workers are the processes. Each loop runs its step, then waits for its interval; a step that raises is logged
and tried again at the next interval, as a scheduled Lambda is invoked again. Nothing here lives only in
memory: what a loop has not finished is still in the database when the runtime starts again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from mailproxy import clock

logger = logging.getLogger(__name__)

CHANGES_BATCH = 100  # the ReporterFunction's stream BatchSize in template.yaml
RETENTION_INTERVAL_SECONDS = 60.0  # DynamoDB's TTL sweeps in the background; a minute is close enough
IDLE_SLEEP_SECONDS = 0.05  # the change log's first wait when empty, doubled up to CHANGES_MAX_WAIT_SECONDS
# The change log is read again at once only after a full batch (a backlog); after a partial one it waits, so
# that a busy sender's changes come in batches near CHANGES_BATCH, not a few rows each time (each batch costs a
# write transaction and its tenants' reads). Reports wait at most this much longer.
CHANGES_MAX_WAIT_SECONDS = 0.2
RETRY_SLEEP_SECONDS = 1.0  # after a failed step, doubled up to MAX_RETRY_SLEEP_SECONDS
MAX_RETRY_SLEEP_SECONDS = 30.0


class TryAgain(Exception):
    """A step that could not do its work now and must be tried again later (already logged where it failed)."""


class Loop:
    """A daemon thread calling `step` until stopped. `step` answers whether it did something: if so it runs
    again at once (a backlog drains), else after `interval`; after an exception, after a growing pause."""

    def __init__(self, name: str, step: Callable[[], bool], interval: float, *, idle: float | None = None) -> None:
        self.name = name
        self.step = step
        self.interval = interval
        self.idle = interval if idle is None else min(idle, interval)
        self.runs = 0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the step under way (waiting at most `timeout` seconds for it)."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
            if self._thread.is_alive():
                logger.warning("%s: still busy after %.0f s", self.name, timeout)

    def _run(self) -> None:
        wait = self.idle
        failed = RETRY_SLEEP_SECONDS
        while not self._stopping.is_set():
            try:
                busy = self.step()
            except TryAgain as exc:
                logger.warning("%s: %s; trying again in %.0f s", self.name, exc, failed)
                self._stopping.wait(failed)
                failed = min(MAX_RETRY_SLEEP_SECONDS, failed * 2)
                continue
            except Exception:  # any failure: logged, the step runs again later (a scheduled Lambda's retry)
                logger.exception("%s failed; trying again in %.0f s", self.name, failed)
                self._stopping.wait(failed)
                failed = min(MAX_RETRY_SLEEP_SECONDS, failed * 2)
                continue
            self.runs += 1
            failed = RETRY_SLEEP_SECONDS
            if busy:
                wait = self.idle
                continue
            self._stopping.wait(wait)
            wait = min(self.interval, wait * 2)


def scheduler_round() -> bool:
    """SchedulerFunction: re-queue what is due, finish what a crash left open (never a backlog to drain)."""
    from mailproxy.scheduler import run_round

    run_round()
    return False


def report_changes() -> bool:
    """The stream's event source mapping and ReporterFunction: the oldest changes of message records, in order,
    to the reporter; forgotten only once it stored what they owe (else the same batch comes again). True when
    the batch was full: more are waiting."""
    from mailproxy.report_format import Change
    from mailproxy.reports import handle_changes

    from local.embedded.ports import sqlite_messages

    log = sqlite_messages()
    rows = log.changes(CHANGES_BATCH)
    if not rows:
        return False
    changes = [
        Change(
            tenant_id=row["tenant_id"],
            id=row["id"],
            old=row["old"],
            new=row["new"],
            expired=bool(row["expired"]),
            ts=int(row["ts"]),
            seq=str(row["seq"]),
        )
        for row in rows
    ]
    if not handle_changes(changes):
        raise TryAgain("the reporter could not store what the changes owe")  # the same batch comes again
    log.drop_changes(max(int(row["seq"]) for row in rows))
    return len(rows) == CHANGES_BATCH


def report_schedule() -> bool:
    """ReporterFunction on its schedule: retries after backoff, heartbeats, run-now requests."""
    from mailproxy.reports import run_schedule

    run_schedule()
    return False


def retention() -> bool:
    """DynamoDB's TTL: expired messages are deleted and logged as expired changes, which the reporter handles as
    on AWS (it puts back those whose reports are still owed); expired rows of the other tables are dropped."""

    from local.embedded.ports import sqlite_large_files, sqlite_messages, sqlite_state

    now = clock.now_ts()
    expired = sqlite_messages().expire(now)
    swept = sqlite_state().delete_expired(now)
    swept += sqlite_large_files().sweep(now)  # the large-file bucket's lifecycle rules (docs/large-files.md)
    if expired or swept:
        logger.info("retention: %d messages and %d other rows expired", len(expired), swept)
    return False


def bounce_poll() -> bool:
    """BounceFunction on its schedule: every bounce mailbox's new reports (docs/bounces.md)."""
    from mailproxy.bounces import run

    run()
    return False


def service_loops(scheduler_interval: float, bounce_interval: float) -> list[Loop]:
    """The loops of the runtime's main process."""
    return [
        Loop("scheduler", scheduler_round, scheduler_interval),
        Loop(
            "reporter-changes",
            report_changes,
            min(scheduler_interval, CHANGES_MAX_WAIT_SECONDS),
            idle=IDLE_SLEEP_SECONDS,
        ),
        Loop("reporter-schedule", report_schedule, scheduler_interval),
        Loop("retention", retention, RETENTION_INTERVAL_SECONDS),
        Loop("bounces", bounce_poll, bounce_interval),
    ]
