"""The HTTP side of the one-machine runtime: the API app under uvicorn, with `/health` and `/metrics` answered by
the MetricsFunction's own handler, as API Gateway routes them on AWS (same body, same token rules)."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import uvicorn
from mailproxy.api import REQUEST_ID_SCOPE_KEY

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# API Gateway's payload quota: a request refused there is refused here, with the same 413.
MAX_BODY_BYTES = 10 * 1024 * 1024
METRICS_FUNCTION_PATHS = ("/health", "/metrics")
# The one-machine runtime's upload route (S3 takes uploads on AWS): bounded by the upload's own size limit.
STREAMED_PATHS = ("/large-files/receive",)
_START_TIMEOUT = 30.0


class ServiceApp:
    """The ASGI app the runtime serves: GET /health and /metrics to the MetricsFunction's handler, every other
    route to the API app (IntakeFunction's FastAPI app), bodies over API Gateway's quota refused."""

    def __init__(self, api: AsgiApp) -> None:
        self.api = api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Route one ASGI connection."""
        if scope["type"] != "http":
            await self.api(scope, receive, send)
            return
        if scope["path"] in METRICS_FUNCTION_PATHS and scope["method"] in ("GET", "HEAD"):
            await self._metrics_function(scope, send)
            return
        if scope["path"] in STREAMED_PATHS and scope["method"] == "POST":
            # An upload carries a whole file (the route enforces its own limit): streamed, never buffered here.
            await self.api(scope, receive, send)
            return
        body = await _bounded_body(receive)
        if body is None:
            await _respond(send, 413, [(b"content-type", b"application/json")], b'{"message": "Request Too Large"}')
            return
        # Each request gets an id, as API Gateway gives one (x-amzn-RequestId): the command log records it.
        request_id = str(uuid.uuid4())
        scope = {**scope, REQUEST_ID_SCOPE_KEY: request_id}

        async def send_with_id(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", request_id.encode())]}
            await send(message)

        await self.api(scope, _replay(body, receive), send_with_id)

    async def _metrics_function(self, scope: Scope, send: Send) -> None:
        # The handler reads SQLite (blocking): off the event loop, as the API's sync routes are.
        event = {
            "resource": scope["path"],
            "path": scope["path"],
            "httpMethod": "GET",
            "headers": {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]},
        }
        reply = await asyncio.to_thread(_metrics_handler, event)
        headers = [(str(k).lower().encode(), str(v).encode()) for k, v in (reply.get("headers") or {}).items()]
        body = str(reply.get("body") or "").encode()
        await _respond(send, int(reply["statusCode"]), headers, b"" if scope["method"] == "HEAD" else body)


def _metrics_handler(event: dict[str, Any]) -> dict[str, Any]:
    from functions.metrics.app import handler

    reply: dict[str, Any] = handler(event, None)
    return reply


async def _bounded_body(receive: Receive) -> bytes | None:
    """The request's whole body, or None once it passes MAX_BODY_BYTES (the rest is read and dropped)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break  # the client went away: the app sees an empty body, then the disconnect
        chunk = message.get("body", b"")
        size += len(chunk)
        if size <= MAX_BODY_BYTES:
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return None if size > MAX_BODY_BYTES else b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that gives the buffered body first, then whatever the connection says (its disconnect)."""
    given = False

    async def replayed() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


async def _respond(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class HttpServer:
    """uvicorn serving `ServiceApp` in a thread of this process, on a socket bound before it starts (port 0: any)."""

    def __init__(self, app: AsgiApp, host: str, port: int) -> None:
        self.host = host
        # IPPROTO_TCP named, not left 0: asyncio turns Nagle's algorithm off (TCP_NODELAY) only on sockets whose
        # protocol says TCP. With it on, a response's body waited for the client's delayed ACK of its headers:
        # 40 ms more on every request of a kept-alive connection.
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._socket.bind((host, port))
        except OSError:
            self._socket.close()
            raise
        self.port = int(self._socket.getsockname()[1])
        config = uvicorn.Config(
            app,
            log_config=None,  # the runtime's logging, not uvicorn's own
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=5,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._serve, name="http", daemon=True)

    @property
    def url(self) -> str:
        """The base URL of the API."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def _serve(self) -> None:
        # uvicorn installs no signal handler outside the main thread: the runtime stops it (should_exit).
        self._server.run(sockets=[self._socket])

    def start(self) -> None:
        """Serve in the background; return once the server accepts connections."""
        self._thread.start()
        deadline = time.monotonic() + _START_TIMEOUT
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the HTTP server did not start on {self.url}")
            time.sleep(0.01)
        logger.info("API listening on %s", self.url)

    def stop(self) -> None:
        """Stop accepting connections, let requests under way finish (5 s at most), close the socket."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(10)
        self._socket.close()
