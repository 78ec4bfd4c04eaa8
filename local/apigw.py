"""An HTTP server that plays API Gateway (REST API, Lambda proxy integration) in front of the real handlers."""

from __future__ import annotations

import base64
import binascii
import fnmatch
import json
import logging
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from local.lambda_runtime import MAX_REQUEST_PAYLOAD, LambdaFunction, release_event_loop
from local.template import Resolver

logger = logging.getLogger(__name__)

# API Gateway's REST API payload quota and integration timeout.
MAX_BODY_BYTES = 10 * 1024 * 1024
INTEGRATION_TIMEOUT_SECONDS = 29.0
# A request body over the limit is read and dropped up to this size (so the client sees the 413), then cut.
_DISCARD_LIMIT = 64 * 1024 * 1024
_HOP_BY_HOP = {"connection", "content-length", "transfer-encoding", "keep-alive"}
_METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS")


@dataclass(frozen=True)
class Route:
    """One `Api` event of a function: a resource path (`/tenant/{id}`, `/{proxy+}`) and a method or ANY."""

    resource: str
    method: str
    function: LambdaFunction


@dataclass(frozen=True)
class HttpRequest:
    """A request as the server read it."""

    method: str
    target: str
    headers: Sequence[tuple[str, str]]
    body: bytes
    source_ip: str
    too_large: bool = False


@dataclass
class HttpResponse:
    """A response to write back."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


def _segments(path: str) -> list[str]:
    return [segment for segment in path.strip("/").split("/") if segment] if path.strip("/") else []


def _match_resource(resource: str, segments: list[str]) -> tuple[tuple[int, ...], dict[str, str]] | None:
    """How specifically `resource` matches the request segments (lower is more specific), and its path params."""
    pattern = _segments(resource)
    rank: list[int] = []
    params: dict[str, str] = {}
    for index, part in enumerate(pattern):
        if part.startswith("{") and part.endswith("+}"):
            if index >= len(segments):
                return None
            params[part[1:-2]] = "/".join(segments[index:])
            rank.append(2)
            return tuple(rank), params
        if index >= len(segments):
            return None
        if part.startswith("{") and part.endswith("}"):
            params[part[1:-1]] = segments[index]
            rank.append(1)
        elif part == segments[index]:
            rank.append(0)
        else:
            return None
    if len(pattern) != len(segments):
        return None
    return tuple(rank), params


def _json_response(status: int, message: str, error_type: str | None = None) -> HttpResponse:
    headers = [("Content-Type", "application/json")]
    if error_type:
        headers.append(("x-amzn-ErrorType", error_type))
    return HttpResponse(status, headers, json.dumps({"message": message}).encode())


class ApiGateway:
    """Routes requests as API Gateway does, builds the REST proxy event and turns the result into HTTP."""

    def __init__(
        self,
        routes: Sequence[Route],
        *,
        stage: str = "Prod",
        binary_media_types: Sequence[str] = (),
        host: str = "127.0.0.1",
        port: int = 8000,
        api_id: str = "local",
        lambda_payload_limit: int = MAX_REQUEST_PAYLOAD,
    ) -> None:
        self.routes = list(routes)
        self.stage = stage
        self.binary_media_types = [media_type.replace("~1", "/") for media_type in binary_media_types]
        self.host = host
        self.port = port
        self.api_id = api_id
        self.lambda_payload_limit = lambda_payload_limit
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        # Every resource API Gateway would have: each route's path and the parents it implies.
        self._resources: dict[str, list[Route]] = {}
        for route in self.routes:
            parts = _segments(route.resource)
            for depth in range(len(parts) + 1):
                self._resources.setdefault("/" + "/".join(parts[:depth]), [])
            self._resources["/" + "/".join(parts)].append(route)

    @property
    def url(self) -> str:
        """The base URL clients use (no stage prefix, like `sam local start-api`)."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        """Listen on host:port (port 0 picks a free one, stored in `port`)."""
        server = ThreadingHTTPServer((self.host, self.port), _RequestHandler)
        server.daemon_threads = True
        server.gateway = self  # type: ignore[attr-defined]
        self._server = server
        self.port = int(server.server_address[1])
        self._thread = threading.Thread(target=server.serve_forever, name="apigw", daemon=True)
        self._thread.start()
        logger.info("API listening on %s (stage %s)", self.url, self.stage)

    def stop(self) -> None:
        """Stop listening; requests under way finish in their threads."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    # ------------------------------------------------------------------ routing

    def route(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        """The route API Gateway picks: the most specific resource, then its method (exact before ANY)."""
        segments = _segments(path)
        best: tuple[tuple[int, ...], str, dict[str, str]] | None = None
        for resource in self._resources:
            matched = _match_resource(resource, segments)
            if matched is not None and (best is None or matched[0] < best[0]):
                best = (matched[0], resource, matched[1])
        if best is None:
            return None
        _, resource, params = best
        candidates = self._resources[resource]
        for route in candidates:
            if route.method == method:
                return route, params
        for route in candidates:
            if route.method == "ANY":
                return route, params
        return None

    # ------------------------------------------------------------------ dispatch

    def _is_binary(self, content_type: str) -> bool:
        media_type = content_type.split(";", 1)[0].strip().lower()
        return bool(media_type) and any(fnmatch.fnmatch(media_type, pattern) for pattern in self.binary_media_types)

    def build_event(
        self, request: HttpRequest, route: Route, path_params: Mapping[str, str], request_id: str
    ) -> dict[str, Any]:
        """The API Gateway REST proxy event (payload version 1.0) of a request."""
        parts = urlsplit(request.target)
        path = parts.path or "/"
        multi_headers: dict[str, list[str]] = {}
        for name, value in request.headers:
            # API Gateway keeps the client's header names; repeated ones are grouped under the first spelling.
            key = next((existing for existing in multi_headers if existing.lower() == name.lower()), name)
            multi_headers.setdefault(key, []).append(value)
        lower = {name.lower(): name for name in multi_headers}
        # Headers API Gateway adds on the way to the integration.
        if "x-forwarded-for" in lower:
            multi_headers[lower["x-forwarded-for"]] = [
                f"{multi_headers[lower['x-forwarded-for']][-1]}, {request.source_ip}"
            ]
        else:
            multi_headers["X-Forwarded-For"] = [request.source_ip]
        multi_headers.setdefault("X-Forwarded-Proto", ["http"])
        multi_headers.setdefault("X-Forwarded-Port", [str(self.port)])
        multi_headers.setdefault("X-Amzn-Trace-Id", [f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]}"])
        headers = {name: values[-1] for name, values in multi_headers.items()}

        multi_query: dict[str, list[str]] = {}
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            multi_query.setdefault(name, []).append(value)
        query = {name: values[-1] for name, values in multi_query.items()}

        content_type = next((value for name, value in headers.items() if name.lower() == "content-type"), "")
        body: str | None = None
        is_base64 = False
        if request.body:
            if self._is_binary(content_type):
                body, is_base64 = base64.b64encode(request.body).decode(), True
            else:
                body = request.body.decode("utf-8", errors="replace")

        now = time.time()
        user_agent = next((value for name, value in headers.items() if name.lower() == "user-agent"), None)
        host = next((value for name, value in headers.items() if name.lower() == "host"), self.url)
        return {
            "resource": route.resource,
            "path": path,
            "httpMethod": request.method,
            "headers": headers,
            "multiValueHeaders": multi_headers,
            "queryStringParameters": query or None,
            "multiValueQueryStringParameters": multi_query or None,
            "pathParameters": dict(path_params) or None,
            "stageVariables": None,
            "requestContext": {
                "resourceId": uuid.uuid5(uuid.NAMESPACE_URL, route.resource).hex[:6],
                "resourcePath": route.resource,
                "httpMethod": request.method,
                "extendedRequestId": uuid.uuid4().hex[:16],
                "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
                "path": f"/{self.stage}{path}",
                "accountId": route.function.account_id,
                "protocol": "HTTP/1.1",
                "stage": self.stage,
                "domainPrefix": host.split(".", 1)[0],
                "requestTimeEpoch": int(now * 1000),
                "requestId": request_id,
                "identity": {
                    "cognitoIdentityPoolId": None,
                    "accountId": None,
                    "cognitoIdentityId": None,
                    "caller": None,
                    "sourceIp": request.source_ip,
                    "principalOrgId": None,
                    "accessKey": None,
                    "cognitoAuthenticationType": None,
                    "cognitoAuthenticationProvider": None,
                    "userArn": None,
                    "userAgent": user_agent,
                    "user": None,
                },
                "domainName": host,
                "apiId": self.api_id,
            },
            "body": body,
            "isBase64Encoded": is_base64,
        }

    def dispatch(self, request: HttpRequest) -> HttpResponse:
        """Answer one request as API Gateway would, calling the route's handler."""
        request_id = str(uuid.uuid4())
        response = self._dispatch(request, request_id)
        response.headers.append(("x-amzn-RequestId", request_id))
        response.headers.append(("x-amz-apigw-id", base64.b64encode(uuid.uuid4().bytes[:12]).decode()))
        return response

    def _dispatch(self, request: HttpRequest, request_id: str) -> HttpResponse:
        if request.too_large:
            return _json_response(413, "Request Too Large")
        path = urlsplit(request.target).path or "/"
        routed = self.route(request.method, path)
        if routed is None:
            return _json_response(403, "Missing Authentication Token", "MissingAuthenticationTokenException")
        route, params = routed
        name = route.function.logical_id
        event = self.build_event(request, route, params, request_id)
        if len(json.dumps(event).encode()) > self.lambda_payload_limit:
            # Lambda refuses a synchronous invocation over 6 MB, though API Gateway accepted the request.
            logger.warning(
                "%s: event exceeds Lambda's %d-byte invocation payload limit", name, self.lambda_payload_limit
            )
            return _json_response(413, "Request Too Long")
        context = route.function.new_context()
        context.aws_request_id = request_id
        outcome = route.function.invoke(event, context)
        if outcome.duration > INTEGRATION_TIMEOUT_SECONDS:
            return _json_response(504, "Endpoint request timed out")
        if outcome.failed:
            return _json_response(502, "Internal server error", "InternalServerErrorException")
        converted = self._proxy_response(outcome.result, name)
        if converted is None:
            return _json_response(502, "Internal server error", "InternalServerErrorException")
        return converted

    def _proxy_response(self, result: Any, function_name: str) -> HttpResponse | None:
        """The HTTP response of a Lambda proxy result, or None when API Gateway would call it malformed."""
        try:
            if not isinstance(result, Mapping):
                raise TypeError("not an object")
            status = int(result["statusCode"])
            body = result.get("body")
            if body is not None and not isinstance(body, str):
                raise TypeError("body is not a string")
            single = result.get("headers") or {}
            multi = result.get("multiValueHeaders") or {}
            if not isinstance(single, Mapping) or not isinstance(multi, Mapping):
                raise TypeError("headers are not objects")
            raw = (
                base64.b64decode(body or "", validate=True) if result.get("isBase64Encoded") else (body or "").encode()
            )
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            logger.error("%s: malformed Lambda proxy response (%s): %r", function_name, exc, result)
            return None
        headers: list[tuple[str, str]] = []
        seen: set[str] = set()
        for name, values in multi.items():
            seen.add(str(name).lower())
            headers.extend((str(name), str(value)) for value in (values if isinstance(values, list) else [values]))
        headers.extend((str(name), str(value)) for name, value in single.items() if str(name).lower() not in seen)
        headers = [(name, value) for name, value in headers if name.lower() not in _HOP_BY_HOP]
        if result.get("isBase64Encoded"):
            content_type = next((value for name, value in headers if name.lower() == "content-type"), "")
            if not self._is_binary(content_type):
                # Without a matching binaryMediaTypes entry API Gateway passes the base64 text through.
                logger.warning(
                    "%s: base64 body of type %r: on AWS the client gets base64 text unless the API's "
                    "BinaryMediaTypes lists it",
                    function_name,
                    content_type,
                )
        return HttpResponse(status, headers, raw)


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "gmp-local-apigw"
    sys_version = ""
    # TCP_NODELAY: the headers and the body are written apart, and with Nagle's algorithm the body of every
    # reply on a kept-alive connection waited for the client's delayed ACK of the headers (40 ms).
    disable_nagle_algorithm = True

    @property
    def gateway(self) -> ApiGateway:
        gateway: ApiGateway = self.server.gateway  # type: ignore[attr-defined]
        return gateway

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.client_address[0], *args)

    def handle_expect_100(self) -> bool:
        # Refuse an oversized body before the client sends it.
        if self._content_length() > MAX_BODY_BYTES:
            self._write(_json_response(413, "Request Too Large"), close=True)
            return False
        return super().handle_expect_100()

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            release_event_loop()

    def _content_length(self) -> int:
        try:
            return int(self.headers.get("Content-Length", "0") or 0)
        except ValueError:
            return 0

    def _read_body(self) -> tuple[bytes, bool]:
        """The request body, and whether it exceeded API Gateway's limit (then it is read and dropped)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            total = 0
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                total += size
                if total > _DISCARD_LIMIT:
                    self.close_connection = True
                    return b"", True
                data = self.rfile.read(size)
                self.rfile.readline()
                if total <= MAX_BODY_BYTES:
                    chunks.append(data)
            return (b"", True) if total > MAX_BODY_BYTES else (b"".join(chunks), False)
        length = self._content_length()
        if length > MAX_BODY_BYTES:
            if length > _DISCARD_LIMIT:
                self.close_connection = True
                return b"", True
            remaining = length
            while remaining > 0:
                data = self.rfile.read(min(remaining, 1024 * 1024))
                if not data:
                    break
                remaining -= len(data)
            return b"", True
        return (self.rfile.read(length) if length > 0 else b""), False

    def _handle(self) -> None:
        started = time.monotonic()
        body, too_large = self._read_body()
        request = HttpRequest(
            method=self.command,
            target=self.path,
            headers=list(self.headers.items()),
            body=body,
            source_ip=self.client_address[0],
            too_large=too_large,
        )
        gateway = self.gateway
        response = gateway.dispatch(request)
        self._write(response, close=too_large, head=self.command == "HEAD")
        logger.info(
            "%s %s %d %.0f ms",
            self.command,
            urlsplit(self.path).path,
            response.status,
            (time.monotonic() - started) * 1000,
        )

    def _write(self, response: HttpResponse, *, close: bool = False, head: bool = False) -> None:
        self.send_response(response.status)
        for name, value in response.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if not head:
            self.wfile.write(response.body)

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def do_OPTIONS(self) -> None:
        self._handle()


def routes_from_template(resolver: Resolver, functions: Mapping[str, LambdaFunction]) -> list[Route]:
    """The `Api` events of every function of the template, as routes."""
    routes = []
    for spec in resolver.template.functions(resolver):
        for event in spec.events_of_type("Api"):
            properties = resolver.resolve({key: value for key, value in event.properties.items() if key != "RestApiId"})
            method = str(properties.get("Method", "ANY")).upper()
            routes.append(Route(str(properties["Path"]), method, functions[spec.logical_id]))
    return routes


def api_settings_from_template(resolver: Resolver) -> tuple[str, list[str]]:
    """The stage name and binary media types of the template's (first) AWS::Serverless::Api."""
    for properties in resolver.template.resources_of_type("AWS::Serverless::Api", resolver).values():
        stage = str(resolver.resolve(properties.get("StageName", "Prod")))
        binary = [str(item) for item in resolver.resolve(properties.get("BinaryMediaTypes", []))]
        return stage, binary
    # An implicit API (Api events without RestApiId) gets SAM's default stage.
    return "Prod", []
