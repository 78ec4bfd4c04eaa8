"""The service in one process for benchmarks: moto in-process with the template's resources, the real
handlers called as Lambda and API Gateway would call them, an SQS event source mapping played by hand,
and every AWS call metered.
"""

from __future__ import annotations

import io
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

from bench.meter import DynamoSizer, Meter, Tally

REGION = "us-east-1"
ADMIN_TOKEN = "bench-admin-token-0123456789abcdefghijklmnopqrstuvwxyz"
QUEUE_VARIABLES = ("IMMEDIATE_QUEUE_URL", "HIGH_QUEUE_URL", "MEDIUM_QUEUE_URL", "LOW_QUEUE_URL")
# Lambda's own lines per invocation (START, END, REPORT), about this many bytes in CloudWatch Logs.
PLATFORM_LOG_BYTES = 330

WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "you",
    "that",
    "it",
    "he",
    "was",
    "for",
    "on",
    "are",
    "as",
    "with",
    "his",
    "they",
    "at",
    "be",
    "this",
    "have",
    "from",
    "or",
    "one",
    "had",
    "by",
    "word",
    "but",
    "not",
    "what",
    "all",
    "were",
    "we",
    "when",
    "your",
    "can",
    "said",
    "there",
    "use",
    "an",
    "each",
    "which",
    "she",
    "do",
    "how",
    "their",
    "if",
    "will",
    "up",
    "other",
    "about",
    "out",
    "many",
    "then",
    "them",
    "these",
    "so",
    "some",
    "her",
    "would",
    "make",
    "like",
    "him",
    "into",
    "time",
    "has",
    "look",
    "two",
    "more",
    "write",
    "go",
    "see",
    "number",
    "no",
    "way",
    "could",
    "people",
    "my",
    "than",
    "first",
    "water",
    "been",
    "call",
    "who",
    "oil",
    "its",
    "now",
    "find",
    "long",
    "down",
    "day",
    "did",
    "get",
    "come",
    "made",
    "may",
    "part",
    "order",
    "invoice",
    "shipment",
    "account",
    "password",
    "reset",
    "confirm",
    "delivery",
    "tracking",
    "customer",
    "service",
    "support",
    "team",
    "update",
    "newsletter",
    "offer",
    "discount",
    "week",
    "month",
    "year",
    "payment",
    "received",
    "thank",
    "please",
    "click",
    "link",
    "below",
    "above",
    "details",
    "report",
    "meeting",
    "schedule",
    "reminder",
    "appointment",
    "tomorrow",
    "today",
    "friday",
    "monday",
    "team",
    "project",
    "status",
    "review",
]


class CountingStream(io.TextIOBase):
    """A stream that only counts the bytes written to it (CloudWatch Logs ingestion)."""

    def __init__(self) -> None:
        self.bytes = 0
        self.lines = 0

    def write(self, text: str) -> int:
        """Count and drop."""
        self.bytes += len(text.encode("utf-8"))
        self.lines += text.count("\n")
        return len(text)


def body_text(rng: random.Random, size: int) -> str:
    """Plausible mail text of about `size` characters."""
    words: list[str] = []
    length = 0
    while length < size:
        word = rng.choice(WORDS)
        words.append(word)
        length += len(word) + 1
    text = " ".join(words)
    return "\n\n".join(text[i : i + 400] for i in range(0, len(text), 400))


def make_message(
    rng: random.Random, message_id: str, account_id: str, size: int, to: str | None = None
) -> dict[str, Any]:
    """One add-messages entry whose JSON is about `size` bytes."""
    recipient = to or f"user{rng.randrange(100000)}@example.net"
    subject = " ".join(rng.choice(WORDS) for _ in range(6)).capitalize()
    base = {
        "id": message_id,
        "account_id": account_id,
        "from": "Acme Notifications <noreply@acme.example>",
        "to": [recipient],
        "subject": subject,
        "body": "",
    }
    overhead = len(json.dumps(base))
    base["body"] = body_text(rng, max(50, size - overhead))
    return base


@dataclass
class Invocations:
    """Per-function invocation count and durations."""

    count: int = 0
    wall: float = 0.0  # handler wall time, emulated AWS time excluded (too low when calls run in parallel)
    cpu: float = 0.0  # process CPU time during the handler, the emulator's CPU inside calls excluded
    aws_calls: int = 0
    modelled_latency: float = 0.0  # what the AWS calls would take in the region
    smtp_held: float = 0.0  # time the SMTP sink held at least one reply back during the handler (bench.sink)
    # The handler's time off CPU that this explains: its wall time minus its CPU, at most `smtp_held`. Account groups
    # run side by side, so one group's CPU overlaps another's wait and adding the two would count it twice.
    smtp_wait: float = 0.0


@dataclass
class World:
    """A running in-process service."""

    env: dict[str, str]
    meter: Meter
    functions: dict[str, Any]
    api: Any
    clients: dict[str, Any]
    logs: CountingStream
    resolver: Any = None
    invocations: dict[str, Invocations] = field(default_factory=dict)
    esm_tally: Tally = field(default_factory=Tally)
    _streams: list[Any] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)
    # Reads the sink's running total of time spent holding replies back (bench.sink), when it delays them.
    smtp_waited: Callable[[], float] | None = None
    _batch_sizes: dict[str, int] = field(default_factory=dict)

    def play_streams(self) -> int:
        """Deliver what the DynamoDB stream holds to its function (the reporter), as its mapping would."""
        if not self._streams and "ReporterFunction" in self.functions:
            from local.pollers import PollerContext, StreamPoller, pollers_from_template

            for poller in pollers_from_template(self.functions, PollerContext(self.resolver)):
                if isinstance(poller, StreamPoller):
                    name = poller.function.logical_id

                    def handler(event: Any, context: Any, name: str = name) -> Any:
                        return self.invoke(name, event)

                    self._streams.append(
                        StreamPoller(
                            handler,
                            poller.stream_arn,
                            batch_size=poller.batch_size,
                            starting_position="TRIM_HORIZON",
                            report_batch_item_failures=poller.report_batch_item_failures,
                            bisect_on_error=poller.bisect_on_error,
                            maximum_retry_attempts=3,
                            filters=poller.filters,
                            client=self.client("dynamodbstreams"),
                            region=REGION,
                        )
                    )
        handled = 0
        for stream in self._streams:
            for _ in range(10_000):  # bounded: a stream that never runs dry must not hang the benchmark
                count = stream.poll_once()
                handled += count
                if not count:
                    break
        return handled

    def client(self, service: str) -> Any:
        """An unmetered client of the emulated account (set-up and the event source mapping's own calls)."""
        if service not in self.clients:
            import boto3

            # moto's in-process mock does not match botocore's newer DynamoDB Streams endpoint: name the classic one.
            endpoint = f"https://streams.dynamodb.{REGION}.amazonaws.com" if service == "dynamodbstreams" else None
            self.clients[service] = boto3.session.Session(region_name=REGION).client(service, endpoint_url=endpoint)  # type: ignore[call-overload]
        return self.clients[service]

    def invoke(self, logical_id: str, event: Any) -> Any:
        """Invoke a function as Lambda would, timing it without the emulator's share."""
        function = self.functions[logical_id]
        stats = self.invocations.setdefault(logical_id, Invocations())
        waited0 = self.smtp_waited() if self.smtp_waited else 0.0
        with self.meter.section() as section:
            wall0, cpu0 = time.perf_counter(), time.process_time()
            outcome = function.invoke(event)
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        own_wall = max(0.0, wall - section.seconds_in_calls)
        # Process CPU (the handler's worker threads included) without the emulator's work inside calls.
        own_cpu = max(0.0, cpu - section.cpu_in_calls)
        if self.smtp_waited:
            held = self.smtp_waited() - waited0
            stats.smtp_held += held
            stats.smtp_wait += min(held, max(0.0, own_wall - own_cpu))
        stats.count += 1
        stats.wall += own_wall
        stats.cpu += own_cpu
        stats.aws_calls += section.total_calls()
        stats.modelled_latency += section.latency
        # The emulator's own time (moto slows down as its tables grow) and a busy machine are not the
        # handler's: only the handler's share of the wall time counts against its timeout.
        if outcome.error is not None or (outcome.timed_out and own_wall > function.timeout_seconds):
            raise RuntimeError(f"{logical_id} failed: {outcome.error!r} after {own_wall:.1f} s of its own")
        return outcome.result

    def request(self, method: str, path: str, body: Any = None, token: str = ADMIN_TOKEN) -> tuple[int, Any]:
        """One HTTP request through API Gateway's routing to the real handler (timed like any invocation)."""
        from local.apigw import HttpRequest

        raw = json.dumps(body).encode() if body is not None else b""
        headers = [("Content-Type", "application/json"), ("X-API-Token", token), ("Host", "bench.local")]
        request = HttpRequest(method, path, headers, raw, "127.0.0.1")
        routed = self.api.route(method, path.split("?")[0])
        logical_id = routed[0].function.logical_id if routed else "?"
        event = self.api.build_event(request, routed[0], routed[1], "bench") if routed else None
        if event is None:
            raise RuntimeError(f"no route for {method} {path}")
        result = self.invoke(logical_id, event)
        payload = result.get("body") or ""
        return int(result["statusCode"]), json.loads(payload) if payload else None

    def batch_sizes(self) -> dict[str, int]:
        """Queue URL → the BatchSize of the sender's event source mapping on it, as the template sets it."""
        if not self._batch_sizes:
            from local.pollers import PollerContext, SqsPoller, pollers_from_template

            for poller in pollers_from_template(self.functions, PollerContext(self.resolver)):
                if isinstance(poller, SqsPoller):
                    self._batch_sizes.update({source.queue_url: source.batch_size for source in poller.sources})
        return self._batch_sizes

    def _receive_batch(self, url: str, batch_size: int) -> list[dict[str, Any]]:
        """What the mapping hands one invocation: receives of up to 10 until the batch is full or the queue empty."""
        sqs = self.client("sqs")
        messages: list[dict[str, Any]] = []
        while len(messages) < batch_size:
            reply = sqs.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=min(10, batch_size - len(messages)),
                MessageSystemAttributeNames=["All"],
            )
            received = reply.get("Messages", [])
            if not received:
                break
            # The mapping's requests are billed to the account like any other.
            self.esm_tally.calls["sqs.ReceiveMessage"] += 1
            self.esm_tally.billed_requests["sqs.ReceiveMessage"] += 1
            messages += received
        return messages

    def deliver_all(self, batch_size: int | None = None, rounds: int = 100_000) -> int:
        """Play the sender's event source mapping until the queues are empty: records handled.

        Batches are as large as the template's mapping of each queue allows, unless `batch_size` is given.
        """
        sqs = self.client("sqs")
        handled = 0
        for _ in range(rounds):
            delivered = False
            for variable in QUEUE_VARIABLES:
                url = self.env[variable]
                messages = self._receive_batch(url, batch_size or self.batch_sizes().get(url, 10))
                if not messages:
                    continue
                records = [
                    {
                        "messageId": m["MessageId"],
                        "receiptHandle": m["ReceiptHandle"],
                        "body": m["Body"],
                        "attributes": m.get("Attributes", {}),
                        "messageAttributes": {},
                        "eventSource": "aws:sqs",
                        "awsRegion": REGION,
                    }
                    for m in messages
                ]
                result = self.invoke("SenderFunction", {"Records": records})
                failed = {f["itemIdentifier"] for f in result.get("batchItemFailures", [])}
                done = [m for m in messages if m["MessageId"] not in failed]
                if done:
                    sqs.delete_message_batch(
                        QueueUrl=url,
                        Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)],
                    )
                    self.esm_tally.calls["sqs.DeleteMessageBatch"] += 1
                    self.esm_tally.billed_requests["sqs.DeleteMessageBatch"] += 1
                if failed:
                    # Failed records come back at once (the mapping would wait for the visibility timeout),
                    # a few times only: a record that keeps failing must not spin the benchmark forever.
                    for m in messages:
                        if m["MessageId"] in failed:
                            self.failures[m["MessageId"]] = self.failures.get(m["MessageId"], 0) + 1
                            again = 0 if self.failures[m["MessageId"]] <= 5 else 3600
                            sqs.change_message_visibility(
                                QueueUrl=url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=again
                            )
                handled += len(messages)
                delivered = True
                break
            if not delivered:
                return handled
        return handled

    def reset_counts(self) -> None:
        """Forget what set-up cost."""
        self.meter.tally = Tally()
        self.invocations.clear()
        self.esm_tally = Tally()
        self.logs.bytes = 0
        self.logs.lines = 0


def _capture_logs(stream: CountingStream) -> None:
    """Point the package's log handlers (Powertools writes to stdout) at the counting stream."""
    for name in ("mail-proxy", os.environ.get("POWERTOOLS_SERVICE_NAME", "service_undefined")):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.StreamHandler):
                handler.setStream(stream)


@contextmanager
def running_world(settings: dict[str, str] | None = None) -> Iterator[World]:
    """The service in this process, against moto's in-process mock; environment restored at exit."""
    import moto

    from local.apigw import ApiGateway, api_settings_from_template, routes_from_template
    from local.emulator import InProcessEmulator
    from local.environment import EnvironmentPatch
    from local.lambda_runtime import LambdaFunction
    from local.template import Template

    patch = EnvironmentPatch()
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN", "ADMIN_TOKEN_SECRET_ARN"):
        patch.unset(name)
    base = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "GMP_API_TOKEN": ADMIN_TOKEN,
        "LOG_LEVEL": "INFO",
        "GMP_SMTP_VERIFY_TLS": "false",
        # The sink and the report callback listen on loopback, which the outbound guard refuses unless
        # allowed (as `make run` allows it): without this nothing is delivered and the figures are void.
        "GMP_ALLOWED_NETWORKS": "127.0.0.0/8,::1/128",
        **(settings or {}),
    }
    for key, value in base.items():
        patch.set(key, value)

    import mailproxy.aws
    import mailproxy.settings

    try:
        import moto.kms.models as kms_models

        # moto makes an RSA key for every KMS key, even symmetric ones; one is enough here.
        original_keygen = kms_models.generate_private_key
        kms_models.generate_private_key = functools_cache(original_keygen)  # type: ignore[assignment]
    except (ImportError, AttributeError):
        kms_models = None  # type: ignore[assignment]

    with moto.mock_aws():
        template = Template.load()
        emulator = InProcessEmulator(template, environment=patch)
        env = emulator.start()
        mailproxy.settings.get_settings.cache_clear()
        mailproxy.aws.reset_clients()
        _reset_package_state()
        meter = Meter(DynamoSizer(REGION))
        meter.attach(mailproxy.aws._session())
        resolver = emulator.resolver
        functions = {
            spec.logical_id: LambdaFunction.from_spec(
                spec,
                timeout_seconds=float(resolver.resolve(spec.timeout)),
                memory_size=int(resolver.resolve(spec.memory_size)),
            )
            for spec in template.functions(resolver)
        }
        stage, binary = api_settings_from_template(resolver)
        api = ApiGateway(routes_from_template(resolver, functions), stage=stage, binary_media_types=binary)
        logs = CountingStream()
        for function in functions.values():
            with suppress(ImportError):
                function.load()
        _capture_logs(logs)
        world = World(env=env, meter=meter, functions=functions, api=api, clients={}, logs=logs, resolver=resolver)
        try:
            yield world
        finally:
            _close_smtp()
            emulator.stop()
            patch.restore()
            mailproxy.settings.get_settings.cache_clear()
            mailproxy.aws.reset_clients()
            _reset_package_state()
            if kms_models is not None:
                kms_models.generate_private_key = original_keygen  # type: ignore[assignment]


def functools_cache(function: Any) -> Any:
    """`functools.cache` (kept apart so the patch above reads plainly)."""
    import functools

    return functools.cache(function)


def _reset_package_state() -> None:
    """Per-container caches of the package, as a fresh container starts."""
    import importlib

    for module_name, names in (
        ("mailproxy.secret_cache", ("secrets",)),
        ("mailproxy.adapters.aws.sealer", ("decrypt_secret",)),
    ):
        module = importlib.import_module(module_name)
        for name in names:
            getattr(module, name).cache_clear()
    from mailproxy.adapters.aws import rates as ratelimit

    ratelimit.forget_cache()
    forget = getattr(importlib.import_module("mailproxy.tenants"), "forget_cache", None)
    if forget is not None:
        forget()


def _close_smtp() -> None:
    from mailproxy import smtp

    try:
        smtp.run(smtp.default_pool().close_all())
    finally:
        smtp.reset_pool()


def setup_tenant(
    world: World,
    tenant_id: str,
    accounts: list[str],
    smtp_port: int,
    *,
    limits: dict[str, int] | None = None,
    callback: str | None = None,
) -> str:
    """A tenant and its SMTP accounts (pointing at the sink), made through the API; the tenant's key."""
    tenant: dict[str, Any] = {"id": tenant_id, "name": tenant_id}
    if callback:
        tenant["client_base_url"] = callback
    status, reply = world.request("POST", "/tenant", tenant)
    if status != 200:
        raise RuntimeError(f"tenant: {status} {reply}")
    key = str(reply["api_key"])
    for account_id in accounts:
        body = {
            "id": account_id,
            "tenant_id": tenant_id,
            "host": "127.0.0.1",
            "port": smtp_port,
            "use_tls": False,
            "user": f"{account_id}-user",
            "password": "bench-password",
            **(limits or {}),
        }
        status, reply = world.request("POST", "/account", body)
        if status != 200:
            raise RuntimeError(f"account: {status} {reply}")
    return key


@contextmanager
def callback_server() -> Iterator[tuple[str, list[int]]]:
    """A tenant's report endpoint on loopback that acknowledges everything: (base URL, report sizes)."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    sizes: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            sizes.append(len(self.rfile.read(length)))
            body = b'{"ok": true}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", sizes
    finally:
        server.shutdown()
        server.server_close()


def threads_alive() -> int:
    """Live threads (to spot leaks between runs)."""
    return threading.active_count()
