"""Sender workers: processes that do what SQS's event source mapping and SenderFunction do on AWS, over the
SQLite work queue.

Each worker runs `batches` batch slots (GMP_SENDER_BATCHES, threads), each of them as one Lambda execution
environment: it leases a batch (`receive`, 10 records, the lease lasting `visibility_seconds`), hands it to
`sender.handle_batch` on its own event loop with its own pooled SMTP connections (its own session-lease
holder), then deletes the records it handled and gives back the ones it names in `batchItemFailures`. Several
slots, because a batch lasts as long as its slowest account: with one per worker, as many slow accounts as
workers held everyone else's mail (a message's time limit per round); Lambda starts another container
instead. The lowest idle slot takes the next batch, a higher one only while every lower slot has been on
its batch for OVERFLOW_AFTER_SECONDS: quick batches keep to one slot (one lease holder) per worker, and
idle slots do not poll. Processes beside the threads: building MIME messages is CPU work, and each process
has its own GIL.

What a crash leaves behind is what a dead Lambda leaves: the worker's leased records come back when their
lease lapses, and a batch's journal lets the scheduler take over its claims once they are stale
(docs/delivery.md). A worker that dies is started again by the supervisor; one stuck in a batch longer
than SenderFunction's timeout is killed and started again, as Lambda ends an invocation at its timeout.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.sharedctypes import SynchronizedArray
from multiprocessing.synchronize import Event
from types import FrameType
from typing import Any

logger = logging.getLogger(__name__)

BATCH_SIZE = 10  # SenderFunction's BatchSize in template.yaml
DEFAULT_BATCHES = 4  # GMP_SENDER_BATCHES: a worker process's batch slots (one thread each)
IDLE_CHECK_SECONDS = 0.5  # how often a slot waiting for its turn to poll closes its connections about to lapse
OVERFLOW_AFTER_SECONDS = 5.0  # how long every lower slot has been on its batch before the next slot takes one
BATCH_TIMEOUT_SECONDS = 60.0  # SenderFunction's Timeout in template.yaml: a batch's time budget (remaining_ms)
# Records a batch names in batchItemFailures (handed back untouched, unreadable) are visible again after this,
# not after the lease as on SQS: a handed-back message should go out soon; the delay keeps an unreadable record
# from spinning (it goes to the dead letters after the queue's max receives).
FAILED_RECORD_DELAY_SECONDS = 1
IDLE_SLEEP_SECONDS = 0.05  # the first wait on an empty queue, doubled up to MAX_IDLE_SLEEP_SECONDS
MAX_IDLE_SLEEP_SECONDS = 0.25
STOP_TIMEOUT_SECONDS = 8.0  # a batch under way at stop gets this long (a container's stop grace is 10 s)
RESTART_DELAY_SECONDS = 1.0  # between two starts of one worker, so a worker failing at start cannot spin
# Sending is throughput, a request is someone waiting: on a busy machine the API process (and the loops) get
# the CPU first, the workers take what is left (the same total work; on 2 cores a request of 100 goes from
# ~85 to ~65 ms while the delivered rate stays). A worker only lowers its own priority: no privilege needed.
WORKER_NICENESS = 10


@dataclass(frozen=True)
class WorkerSpec:
    """What a spawned worker needs: a fresh interpreter has none of the parent's state, environment included."""

    index: int
    parent_pid: int  # the runtime's main process: a worker whose parent is another (it died) stops
    environ: dict[str, str]
    sys_path: list[str]
    visibility_seconds: int
    batch_timeout_seconds: float = BATCH_TIMEOUT_SECONDS
    batches: int = DEFAULT_BATCHES


def worker_main(spec: WorkerSpec, stop: Event, busy_since: SynchronizedArray[float]) -> None:
    """A worker process: settings re-read from `spec.environ`, then `spec.batches` slots run batches until told
    to stop or orphaned."""
    os.environ.clear()
    os.environ.update(spec.environ)
    sys.path[:0] = [p for p in spec.sys_path if p not in sys.path]
    terminated = threading.Event()
    # Ctrl-C reaches the whole process group: the runtime stops its workers itself, after their batch.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def _terminate(signum: int, frame: FrameType | None) -> None:
        terminated.set()

    signal.signal(signal.SIGTERM, _terminate)
    with contextlib.suppress(OSError):  # a platform without nice() keeps the default priority
        os.nice(WORKER_NICENESS)
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO").upper(),
        format=f"%(asctime)s %(levelname)-8s [sender-{spec.index}] %(message)s",
        stream=sys.stdout,
    )
    from mailproxy.logs import configure_logging

    configure_logging(f"sender-{spec.index}")
    import mailproxy.sender  # noqa: F401 - imported once here, not by every slot at once

    from local.embedded.ports import sqlite_queue

    queue = sqlite_queue()

    def running() -> bool:
        # A worker whose parent died (kill -9 of the runtime's process alone, even before this one got here)
        # stops: it must not send unsupervised.
        return not stop.is_set() and not terminated.is_set() and os.getppid() == spec.parent_pid

    def run_slot(n: int) -> None:
        # An exception ends the process, as it ends a Lambda invocation: every slot's records come back after
        # their lease.
        try:
            _batches(n, queue, running, terminated, busy_since, spec)
        except BaseException:
            logger.exception("batch slot %d failed: the worker ends", n)
            os._exit(1)

    threads = [threading.Thread(target=run_slot, args=(n,), name=f"batch-{n}") for n in range(max(1, spec.batches))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _batches(
    n: int,
    queue: Any,
    running: Callable[[], bool],
    terminated: threading.Event,
    busy_since: SynchronizedArray[float],
    spec: WorkerSpec,
) -> None:
    """One batch slot: its turn at the queue, then its batch, until the worker stops."""
    from mailproxy import clock, smtp
    from mailproxy.sender import LEASE_CLOSE_MARGIN_SECONDS, handle_batch, release_sessions

    def close_lapsed() -> None:
        # Idle: this slot's connections whose session lease is about to lapse are closed, for another to open.
        smtp.run(smtp.default_pool().close_lapsed(clock.now_ts(), margin=LEASE_CLOSE_MARGIN_SECONDS))

    def may_poll() -> bool:
        # The lowest idle slot takes the next batch; a higher one only while every lower slot has been on its
        # batch for OVERFLOW_AFTER_SECONDS (waiting on a slow account), so that quick batches keep to one slot
        # per worker (one lease holder: fewer holders share an account's sessions with less churn).
        now = time.monotonic()
        return all(busy_since[m] and now - busy_since[m] >= OVERFLOW_AFTER_SECONDS for m in range(n))

    idle = IDLE_SLEEP_SECONDS
    while running():
        if not may_poll():
            close_lapsed()
            terminated.wait(IDLE_CHECK_SECONDS)
            continue
        records = queue.receive(BATCH_SIZE, spec.visibility_seconds)
        if not records:
            close_lapsed()
            terminated.wait(idle)
            idle = min(MAX_IDLE_SLEEP_SECONDS, idle * 2)
            continue
        idle = IDLE_SLEEP_SECONDS
        started = time.monotonic()
        deadline = started + spec.batch_timeout_seconds
        busy_since[n] = started
        response = handle_batch(records, functools.partial(_remaining_ms, deadline))
        settle(queue, records, response)
        busy_since[n] = 0.0
    release_sessions()  # the other senders need not wait for this slot's session leases to lapse


def _remaining_ms(deadline: float) -> float:
    """What Lambda's context.get_remaining_time_in_millis answers, for a batch ending at `deadline`."""
    return (deadline - time.monotonic()) * 1000


def settle(queue: Any, records: list[dict[str, Any]], response: dict[str, Any]) -> None:
    """What the event source mapping does with a partial batch response: delete what was handled, give back the
    records it names (after FAILED_RECORD_DELAY_SECONDS)."""
    failed = {str(item["itemIdentifier"]) for item in response.get("batchItemFailures") or []}
    handled = [r["receiptHandle"] for r in records if r["messageId"] not in failed]
    retried = [r["receiptHandle"] for r in records if r["messageId"] in failed]
    if handled:
        queue.delete(handled)
    if retried:
        queue.release(retried, FAILED_RECORD_DELAY_SECONDS)


class _Worker:
    """One worker process of the pool and what the supervisor knows of it."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.process: Any = None
        self.busy_since: Any = None
        self.started_at = 0.0


class SenderWorkers:
    """`count` worker processes (spawned: each re-reads the settings from the environment it is given),
    kept running by a supervisor thread until `stop()`."""

    def __init__(
        self,
        count: int,
        *,
        visibility_seconds: int,
        batch_timeout_seconds: float = BATCH_TIMEOUT_SECONDS,
        batches: int = DEFAULT_BATCHES,
    ):
        self.count = max(1, count)
        self.batches = max(1, batches)
        self.visibility_seconds = visibility_seconds
        self.batch_timeout_seconds = batch_timeout_seconds
        self.restarts = 0
        self._context = multiprocessing.get_context("spawn")
        self._stop = self._context.Event()
        self._stopping = threading.Event()
        self._workers = [_Worker(index) for index in range(self.count)]
        self._supervisor = threading.Thread(target=self._supervise, name="sender-supervisor", daemon=True)

    @property
    def pids(self) -> list[int]:
        """The process ids of the running workers."""
        return [
            worker.process.pid for worker in self._workers if worker.process is not None and worker.process.is_alive()
        ]

    def start(self) -> None:
        """Start the workers (with this process's environment as it is now) and their supervisor."""
        for worker in self._workers:
            self._spawn(worker)
        self._supervisor.start()

    def _spawn(self, worker: _Worker) -> None:
        spec = WorkerSpec(
            index=worker.index,
            parent_pid=os.getpid(),
            environ=dict(os.environ),
            sys_path=list(sys.path),
            visibility_seconds=self.visibility_seconds,
            batch_timeout_seconds=self.batch_timeout_seconds,
            batches=self.batches,
        )
        worker.busy_since = self._context.Array("d", self.batches, lock=False)
        worker.process = self._context.Process(
            target=worker_main, args=(spec, self._stop, worker.busy_since), name=f"sender-{worker.index}", daemon=True
        )
        worker.started_at = time.monotonic()
        worker.process.start()

    def _supervise(self) -> None:
        while not self._stopping.wait(0.5):
            for worker in self._workers:
                self._check(worker)

    def _check(self, worker: _Worker) -> None:
        process = worker.process
        if process.is_alive():
            busy = min((float(b) for b in worker.busy_since if b), default=0.0)  # its oldest batch under way
            if busy and time.monotonic() - busy > self.batch_timeout_seconds + STOP_TIMEOUT_SECONDS:
                logger.error(
                    "sender-%d: one batch has run for more than %.0f s: killed, as Lambda ends an invocation at "
                    "its timeout (its messages are recovered like a crash's)",
                    worker.index,
                    self.batch_timeout_seconds,
                )
                process.kill()
                process.join(5)
            return
        if self._stopping.is_set() or time.monotonic() - worker.started_at < RESTART_DELAY_SECONDS:
            return
        logger.warning("sender-%d exited (code %s): started again", worker.index, process.exitcode)
        self.restarts += 1
        self._spawn(worker)

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        """Ask every worker to stop after its batch; kill those still busy after `timeout` (crash-safe)."""
        self._stopping.set()
        self._stop.set()
        if self._supervisor.is_alive():
            self._supervisor.join()
        deadline = time.monotonic() + timeout
        for worker in self._workers:
            if worker.process is None:
                continue
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                logger.warning("sender-%d still busy after %.0f s: killed", worker.index, timeout)
                worker.process.kill()
                worker.process.join(5)
