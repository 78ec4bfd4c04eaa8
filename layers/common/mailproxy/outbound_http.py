"""HTTP through the outbound guard: urllib connections that connect where the guard checked, and a
deadline on a whole exchange. Apart from outbound.py so the sender loads no HTTP client at a cold start."""

from __future__ import annotations

import base64
import contextlib
import http.client
import socket
import threading
import time
import urllib.request
from collections.abc import Mapping
from typing import Any

from mailproxy.outbound import connect


def auth_headers(auth: Mapping[str, Any] | None) -> dict[str, str]:
    """The Authorization header of a `{"method": "none"|"bearer"|"basic", ...}` object (a tenant's client_auth,
    an attachment's auth); ValueError for a method no request model admits."""
    method = str((auth or {}).get("method") or "none").lower()
    if method == "none":
        return {}
    if method == "bearer":
        return {"Authorization": f"Bearer {(auth or {}).get('token') or ''}"}
    if method == "basic":
        pair = f"{(auth or {}).get('user') or ''}:{(auth or {}).get('password') or ''}".encode()
        return {"Authorization": "Basic " + base64.b64encode(pair).decode("ascii")}
    raise ValueError(f"unsupported auth method {method!r}")


class Deadline:
    """A limit on a whole HTTP exchange, not one socket operation: at `seconds` the sockets it watches
    are shut down, so a server that trickles a byte before each timeout still cannot hold a caller."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def remaining(self) -> float:
        """Seconds left, never below a millisecond (a zero timeout would mean non-blocking)."""
        return max(0.001, self.at - time.monotonic())

    def watch(self, sock: socket.socket) -> None:
        """Shut `sock` down when the deadline passes."""
        with self._lock:
            if self.expired:
                sock.close()
                raise TimeoutError(f"timed out after {self.seconds:g} s")
            self._sockets.append(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                with contextlib.suppress(OSError):  # already closed
                    sock.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._timer.cancel()


class _GuardedConnect:
    """Replaces http.client's socket.create_connection with the guard's `connect` (and the deadline)."""

    def __init__(self, *args: Any, deadline: Deadline | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline = deadline
        self._create_connection = self._guarded_connection

    def _guarded_connection(
        self, address: tuple[str, int], timeout: float | None = None, source_address: Any = None
    ) -> socket.socket:
        if self._deadline is not None:
            left = self._deadline.remaining()
            timeout = left if timeout is None else min(timeout, left)
        sock = connect(address[0], address[1], timeout)
        if self._deadline is not None:
            self._deadline.watch(sock)
        return sock

    def putheader(self, header: str | bytes, *values: Any) -> None:
        """http.client's, but a refused value is not quoted in the error: it may be a bearer token or a
        password, and the error becomes a message's error, a callback's last_error and a log line."""
        try:
            super().putheader(header, *values)  # type: ignore[misc]
        except ValueError:
            name = header.decode("latin-1") if isinstance(header, bytes) else str(header)
            raise ValueError(f"invalid value for header {name} (a line break or a character it cannot carry)") from None


class GuardedHTTPConnection(_GuardedConnect, http.client.HTTPConnection):
    """http.client's connection through the guard; the Host header keeps the name."""


class GuardedHTTPSConnection(_GuardedConnect, http.client.HTTPSConnection):
    """The TLS variant: SNI and certificate verification use the host name, the socket a checked address."""


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: Deadline | None) -> None:
        super().__init__()
        self._deadline = deadline

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(GuardedHTTPConnection, req, deadline=self._deadline)  # type: ignore[arg-type]


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: Deadline | None) -> None:
        super().__init__()
        self._deadline = deadline

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(  # type: ignore[arg-type]
            GuardedHTTPSConnection,
            req,
            context=self._context,  # type: ignore[attr-defined]
            deadline=self._deadline,
        )


def http_opener(
    redirects: urllib.request.HTTPRedirectHandler | None = None, *, deadline: Deadline | None = None
) -> urllib.request.OpenerDirector:
    """A urllib opener for http and https only, every connection (redirects included) through the guard.

    Built by hand rather than with build_opener: no proxy from the environment (the guard would check the
    proxy, not the destination) and no file:, ftp: or data: handler.
    """
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.UnknownHandler(),
        _HTTPHandler(deadline),
        _HTTPSHandler(deadline),
        redirects or urllib.request.HTTPRedirectHandler(),
        urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    return opener
