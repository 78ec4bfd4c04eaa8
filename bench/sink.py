"""A counting SMTP sink on loopback (aiosmtpd): when each mail arrived, by its X-Genro-Mail-ID.

Recipients steer the answer, as in the integration tests' server: `reject550@…` is refused
permanently, `flaky451@…` temporarily the first time only, anything else accepted. Logins are
accepted without a check, so accounts with credentials work.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

HOST = "127.0.0.1"
MAIL_ID = re.compile(rb"^X-Genro-Mail-ID:\s*(\S+)", re.MULTILINE | re.IGNORECASE)


@dataclass
class CountingHandler:
    """Counts accepted messages and notes the arrival time of each mail id."""

    arrivals: dict[str, float] = field(default_factory=dict)
    accepted: int = 0
    refused: int = 0
    sessions: int = 0
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

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
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


@contextlib.contextmanager
def counting_sink(port: int = 0) -> Iterator[tuple[int, CountingHandler]]:
    """A sink on 127.0.0.1 for the duration of the block: (its port, its handler)."""
    import socket

    handler = CountingHandler()
    if not port:
        with socket.socket() as probe:
            probe.bind((HOST, 0))
            port = int(probe.getsockname()[1])
    controller = Controller(
        handler,
        hostname=HOST,
        port=port,
        auth_require_tls=False,
        authenticator=_accept_any,
        server_hostname="sink.bench",
        data_size_limit=None,
    )
    controller.start()
    try:
        yield port, handler
    finally:
        controller.stop()
