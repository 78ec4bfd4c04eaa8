"""Lambda execution environments as processes: concurrent invocations of a function that run in parallel.

On AWS each concurrent invocation of a function runs in its own execution environment, with its own
memory (module caches, pooled SMTP connections). Locally, threads of one process share one GIL, so the
sender's CPU work (building MIME messages, SMTP) would not use a second core. An `EnvironmentPool` keeps
a few worker processes, each importing the function's handler once and running one invocation at a
time. Their AWS calls go over HTTP to the stack's emulator (AWS_ENDPOINT_URL: the stack's moto server,
which applies DynamoDB requests one at a time, or the user's LocalStack), as a Lambda's go to AWS.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import queue
import sys
import threading
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any

from local.lambda_runtime import Invocation, LambdaFunction

logger = logging.getLogger(__name__)

_START_TIMEOUT = 120.0


def _worker_main(connection: Connection, spec: dict[str, Any]) -> None:
    """A worker process: import the handler, then run invocations sent by the stack until told to stop."""
    os.environ.clear()
    os.environ.update(spec["environ"])
    sys.path[:0] = [p for p in spec["sys_path"] if p not in sys.path]
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)-8s %(message)s",
        stream=sys.stdout,
    )
    for noisy in ("botocore", "boto3", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    function = LambdaFunction(
        spec["logical_id"],
        module_name=spec["module_name"],
        handler_attribute=spec["handler_attribute"],
        timeout_seconds=spec["timeout_seconds"],
        memory_size=spec["memory_size"],
        function_name=spec["function_name"],
        account_id=spec["account_id"],
    )
    function.load()
    connection.send(("ready", None))
    while True:
        message = connection.recv()
        if message[0] == "stop":
            return
        context = function.new_context()
        if message[2]:
            context.aws_request_id = message[2]
        outcome = function.invoke(message[1], context)
        error = None
        if outcome.error is not None:
            error = "".join(traceback.format_exception(outcome.error))
        connection.send(
            ("done", (outcome.result if error is None else None, error, outcome.duration, outcome.timed_out))
        )


class InvocationError(Exception):
    """A handler's exception in a worker process (its traceback as text)."""


class _Worker:
    def __init__(self, context: Any, function: LambdaFunction, spec: dict[str, Any]) -> None:
        self.connection, child = context.Pipe()
        self.process = context.Process(
            target=_worker_main, args=(child, spec), name=f"lambda-{function.logical_id}", daemon=True
        )
        self.process.start()
        child.close()


class EnvironmentPool:
    """Worker processes for one function: `invoke` runs the handler in an idle one, as Lambda would."""

    def __init__(self, function: LambdaFunction, size: int) -> None:
        self.function = function
        self.logical_id = function.logical_id
        self.size = max(1, size)
        self._spec = {
            "logical_id": function.logical_id,
            "module_name": function.module_name,
            "handler_attribute": function.handler_attribute,
            "timeout_seconds": function.timeout_seconds,
            "memory_size": function.memory_size,
            "function_name": function.function_name,
            "account_id": function.account_id,
            "sys_path": list(sys.path),
        }
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the worker processes and wait until each has imported the handler."""
        context = multiprocessing.get_context("spawn")
        spec = {**self._spec, "environ": dict(os.environ)}
        started = [_Worker(context, self.function, spec) for _ in range(self.size)]
        deadline = time.monotonic() + _START_TIMEOUT
        for worker in started:
            try:
                if not worker.connection.poll(max(0.0, deadline - time.monotonic())):
                    raise EOFError
                worker.connection.recv()
            except (EOFError, OSError):
                self._workers = list(started)
                self.stop()
                raise RuntimeError(
                    f"{self.logical_id}: an execution environment did not start (its log says why)"
                ) from None
            self._workers.append(worker)
            self._idle.put(worker)
        logger.info("%s: %d execution environments (processes)", self.logical_id, self.size)

    def stop(self) -> None:
        """Stop the worker processes."""
        for worker in self._workers:
            with contextlib.suppress(OSError, ValueError):
                worker.connection.send(("stop",))
        for worker in self._workers:
            worker.process.join(5)
            if worker.process.is_alive():
                worker.process.kill()
            worker.connection.close()
        self._workers = []

    def invoke(self, event: Any, request_id: str | None = None) -> Invocation:
        """Run one invocation in an idle environment and wait for its outcome."""
        worker = self._idle.get()
        try:
            return self._run(worker, event, request_id)
        finally:
            self._idle.put(worker)

    def _run(self, worker: _Worker, event: Any, request_id: str | None) -> Invocation:
        connection = worker.connection
        connection.send(("invoke", event, request_id))
        _, (result, error, duration, timed_out) = connection.recv()
        outcome = Invocation(result=result, duration=duration, timed_out=timed_out)
        if error is not None:
            outcome.error = InvocationError(error)
        return outcome
