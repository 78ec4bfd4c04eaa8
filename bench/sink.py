"""A counting SMTP sink on loopback (aiosmtpd): when each mail arrived, by its X-Genro-Mail-ID.

Recipients steer the answer, as in the integration tests' server: `reject550@…` is refused
permanently, `flaky451@…` temporarily the first time only, anything else accepted. Logins are
accepted without a check, so accounts with credentials work.

A reply delay stands for a provider that far away (issue 17): the sink waits that long before it
answers MAIL, each RCPT and the end of DATA, the three replies a lock-step client waits for in a
transaction (DATA's 354, the greeting, EHLO and AUTH are not delayed: a warm connection does not
repeat them, and the 354 is the round trip this model leaves out). The waits are per command, so
the delay does not model PIPELINING (bench/pipelining.py puts the delay on the wire instead). The
sink also counts the SMTP sessions open at once, and how long at least one reply was held back.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult

HOST = "127.0.0.1"
MAIL_ID = re.compile(rb"^X-Genro-Mail-ID:\s*(\S+)", re.MULTILINE | re.IGNORECASE)


@dataclass
class CountingHandler:
    """Counts accepted messages and notes the arrival time of each mail id; delays replies if asked."""

    reply_delay: float = 0.0  # seconds before answering MAIL, each RCPT and the end of DATA
    arrivals: dict[str, float] = field(default_factory=dict)
    accepted: int = 0
    refused: int = 0
    sessions: int = 0  # EHLOs seen (a session each)
    open_sessions: int = 0  # connections open now
    max_open_sessions: int = 0  # the most open at any moment since the last `reset_peak`
    waiting_seconds: float = 0.0  # time during which at least one delayed reply was pending
    _pending: int = 0
    _pending_since: float = 0.0
    _seen_flaky: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _done: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self._done = threading.Condition(self._lock)

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        with self._lock:
            self.sessions += 1
        return responses

    def connection_opened(self) -> None:
        """A client connected (called by the sink's SMTP factory)."""
        with self._lock:
            self.open_sessions += 1
            self.max_open_sessions = max(self.max_open_sessions, self.open_sessions)

    def connection_closed(self) -> None:
        """A client's connection ended."""
        with self._lock:
            self.open_sessions -= 1
            self._done.notify_all()

    def wait_open_sessions(self, at_most: int, timeout: float = 10.0) -> int:
        """The sessions open once at most `at_most` are (or `timeout` passed): the server notices a close on its
        own thread, a moment after the client saw it done."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self.open_sessions > at_most and (left := deadline - time.monotonic()) > 0:
                self._done.wait(left)
            return self.open_sessions

    def reset_peak(self) -> None:
        """Start counting the most sessions open at once from those open now."""
        with self._lock:
            self.max_open_sessions = self.open_sessions

    async def _hold_reply(self) -> None:
        # Overlapping waits (concurrent sessions) count once: this is the wall time a client spent waiting.
        if self.reply_delay <= 0:
            return
        with self._lock:
            if self._pending == 0:
                self._pending_since = time.perf_counter()
            self._pending += 1
        try:
            await asyncio.sleep(self.reply_delay)
        finally:
            with self._lock:
                self._pending -= 1
                if self._pending == 0:
                    self.waiting_seconds += time.perf_counter() - self._pending_since

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        await self._hold_reply()
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        await self._hold_reply()
        local = address.split("@", 1)[0].lower()
        if local.startswith("reject550"):
            with self._lock:
                self.refused += 1
            return "550 5.1.1 User unknown"
        if local.startswith("flaky451"):
            with self._lock:
                first = address not in self._seen_flaky
                self._seen_flaky.add(address)
                if first:
                    self.refused += 1
            if first:
                return "451 4.3.0 Try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        now = time.time()
        await self._hold_reply()
        content = envelope.original_content or envelope.content or b""
        if isinstance(content, str):
            content = content.encode()
        found = MAIL_ID.search(content[:8192])
        with self._lock:
            self.accepted += 1
            if found:
                self.arrivals.setdefault(found.group(1).decode(), now)
            self._done.notify_all()
        return "250 Message accepted"

    def wait_for(self, count: int, timeout: float) -> bool:
        """Wait until `count` messages were accepted; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self.accepted < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._done.wait(left)
        return True


def _accept_any(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    return AuthResult(success=True)


class _CountedSMTP(SMTP):
    """aiosmtpd's server, telling the handler when a connection opens and closes."""

    def __init__(self, handler: CountingHandler, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._counter = handler
        self._counted = False

    def connection_made(self, transport: Any) -> None:
        if not self._counted:
            self._counted = True
            self._counter.connection_opened()
        super().connection_made(transport)

    def eof_received(self) -> bool | None:
        # The client closed its end: counted now, not two turns of the server's loop later at connection_lost,
        # when a connection another client opened meanwhile may already be counted.
        if self._counted:
            self._counted = False
            self._counter.connection_closed()
        return super().eof_received()

    def connection_lost(self, error: Exception | None) -> None:
        if self._counted:
            self._counted = False
            self._counter.connection_closed()
        super().connection_lost(error)


class _CountingController(Controller):
    def factory(self) -> SMTP:
        return _CountedSMTP(self.handler, **self.SMTP_kwargs)


@contextlib.contextmanager
def counting_sink(port: int = 0, reply_delay_ms: float = 0.0) -> Iterator[tuple[int, CountingHandler]]:
    """A sink on 127.0.0.1 for the duration of the block, answering `reply_delay_ms` late: (its port, its handler)."""
    import socket

    handler = CountingHandler(reply_delay=reply_delay_ms / 1000)
    if not port:
        with socket.socket() as probe:
            probe.bind((HOST, 0))
            port = int(probe.getsockname()[1])
    controller = _CountingController(
        handler,
        hostname=HOST,
        port=port,
        auth_require_tls=False,
        authenticator=_accept_any,
        server_hostname="sink.bench",
        data_size_limit=None,
    )
    controller.start()
    # start() connects once to see the server up: that probe is counted open until the server notices its close.
    if handler.wait_open_sessions(0) != 0:
        controller.stop()
        raise RuntimeError("the sink never saw its start-up probe close")
    handler.reset_peak()
    try:
        yield port, handler
    finally:
        controller.stop()
