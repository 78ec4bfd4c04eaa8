"""What Lambda gives a handler locally: the context object, lazy import of the handler, invocation."""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from local.template import FunctionSpec

logger = logging.getLogger(__name__)

Handler = Callable[[Any, Any], Any]

# Lambda's synchronous invocation limits (request and response), in bytes.
MAX_REQUEST_PAYLOAD = 6 * 1024 * 1024
MAX_RESPONSE_PAYLOAD = 6 * 1024 * 1024 + 100

LOCAL_REGION = "us-east-1"
LOCAL_ACCOUNT_ID = "123456789012"


class LambdaContext:
    """The context object of one invocation, with the attributes the Python runtime provides."""

    def __init__(
        self,
        function_name: str,
        *,
        memory_limit_in_mb: int = 128,
        timeout_seconds: float = 3.0,
        region: str = LOCAL_REGION,
        account_id: str = LOCAL_ACCOUNT_ID,
        aws_request_id: str | None = None,
    ) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:{region}:{account_id}:function:{function_name}"
        # The real runtime reads it from AWS_LAMBDA_FUNCTION_MEMORY_SIZE, a string.
        self.memory_limit_in_mb = str(memory_limit_in_mb)
        self.aws_request_id = aws_request_id or str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = f"{time.strftime('%Y/%m/%d')}/[$LATEST]{uuid.uuid4().hex}"
        self.identity: Any = None
        self.client_context: Any = None
        self.tenant_id: str | None = None
        self.timeout_seconds = timeout_seconds
        self._deadline = time.monotonic() + timeout_seconds

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before Lambda would stop this invocation."""
        return max(0, int((self._deadline - time.monotonic()) * 1000))


@dataclass
class Invocation:
    """The outcome of one invocation: the handler's result or its error, and how long it took."""

    result: Any = None
    error: BaseException | None = None
    duration: float = 0.0
    timed_out: bool = False

    @property
    def failed(self) -> bool:
        """True when Lambda would report a function error (exception, timeout, oversized response)."""
        return self.error is not None or self.timed_out


class ResponseTooLarge(Exception):
    """The handler's response exceeds Lambda's 6 MB synchronous payload limit."""


class LambdaFunction:
    """One function of the template: imports its handler on first use and invokes it as Lambda does."""

    def __init__(
        self,
        logical_id: str,
        *,
        module_name: str = "",
        handler_attribute: str = "handler",
        handler: Handler | None = None,
        timeout_seconds: float = 3.0,
        memory_size: int = 128,
        function_name: str | None = None,
        account_id: str = LOCAL_ACCOUNT_ID,
    ) -> None:
        self.logical_id = logical_id
        self.module_name = module_name
        self.handler_attribute = handler_attribute
        self.function_name = function_name or f"gmp-local-{logical_id}"
        self.timeout_seconds = timeout_seconds
        self.memory_size = memory_size
        self.account_id = account_id
        self._handler = handler
        self._lock = threading.Lock()
        # Execution environments in other processes (local.environments.EnvironmentPool), if any.
        self.environments: Any = None

    @classmethod
    def from_spec(
        cls, spec: FunctionSpec, *, timeout_seconds: float, memory_size: int, account_id: str = LOCAL_ACCOUNT_ID
    ) -> LambdaFunction:
        """The function of a template entry (timeout and memory already resolved)."""
        return cls(
            spec.logical_id,
            module_name=spec.module_name,
            handler_attribute=spec.handler_attribute,
            timeout_seconds=timeout_seconds,
            memory_size=memory_size,
            account_id=account_id,
        )

    @classmethod
    def wrap(cls, handler: Handler | LambdaFunction, name: str = "TestFunction") -> LambdaFunction:
        """A LambdaFunction as is, or a plain `handler(event, context)` callable made into one."""
        if isinstance(handler, LambdaFunction):
            return handler
        return cls(name, handler=handler, timeout_seconds=60.0)

    def load(self) -> Handler:
        """The handler, imported on first call (ImportError if its module is not there)."""
        with self._lock:
            if self._handler is None:
                module = importlib.import_module(self.module_name)
                handler = getattr(module, self.handler_attribute, None)
                if not callable(handler):
                    raise ImportError(f"{self.module_name} has no callable {self.handler_attribute!r}")
                self._handler = handler
            return self._handler

    def is_available(self) -> bool:
        """True when the handler can be imported; logs why not otherwise."""
        try:
            self.load()
        except ImportError as exc:
            missing = getattr(exc, "name", None)
            if missing and self.module_name.startswith(missing):
                logger.info("%s: %s does not exist yet, skipped", self.logical_id, self.module_name)
            else:
                logger.warning("%s: cannot import %s, skipped", self.logical_id, self.module_name, exc_info=True)
            return False
        return True

    def new_context(self) -> LambdaContext:
        """A fresh context for one invocation."""
        return LambdaContext(
            self.function_name,
            memory_limit_in_mb=self.memory_size,
            timeout_seconds=self.timeout_seconds,
            account_id=self.account_id,
        )

    def invoke(self, event: Any, context: LambdaContext | None = None) -> Invocation:
        """Call the handler as Lambda would; errors are returned in the Invocation, never raised."""
        if self.environments is not None:
            outcome: Invocation = self.environments.invoke(event, context.aws_request_id if context else None)
            if outcome.error is not None:
                logger.error("%s failed in its execution environment:\n%s", self.logical_id, outcome.error)
            return outcome
        context = context or self.new_context()
        start = time.monotonic()
        outcome = Invocation()
        _ensure_event_loop()
        try:
            outcome.result = self.load()(event, context)
            # Lambda serialises the response: an unserialisable or oversized one is a function error.
            if len(json.dumps(outcome.result).encode()) > MAX_RESPONSE_PAYLOAD:
                raise ResponseTooLarge(f"response exceeds {MAX_RESPONSE_PAYLOAD} bytes")
        except Exception as exc:
            outcome.error = exc
            logger.error("%s failed (request %s)", self.logical_id, context.aws_request_id, exc_info=exc)
        outcome.duration = time.monotonic() - start
        if outcome.duration > self.timeout_seconds:
            # A thread cannot be killed; report what Lambda would have done instead.
            outcome.timed_out = True
            logger.error(
                "%s ran %.1f s, over its %.0f s timeout: on AWS this invocation would have been stopped",
                self.logical_id,
                outcome.duration,
                self.timeout_seconds,
            )
        return outcome


def _ensure_event_loop() -> None:
    # Lambda runs handlers on the main thread, where asyncio.get_event_loop() works (Mangum relies on it);
    # a server or poller thread has no loop until one is set.
    try:
        asyncio.get_event_loop()
    except RuntimeError:
        asyncio.set_event_loop(asyncio.new_event_loop())


def release_event_loop() -> None:
    """Close the event loop `invoke` set on this thread, before the thread ends."""
    policy = asyncio.get_event_loop_policy()
    try:
        loop = policy.get_event_loop()
    except RuntimeError:
        return
    if not loop.is_running():
        loop.close()
        policy.set_event_loop(None)
