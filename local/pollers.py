"""Event-source pollers: SQS event source mappings, schedules and the DynamoDB stream, calling real handlers.

Each poller plays what AWS does between an event source and a function: it builds the event Lambda
would deliver, invokes the handler, and settles the records as the event source mapping would
(delete, leave for redelivery, retry, checkpoint). `pollers_from_template` picks them from the
template's function events through `POLLER_FACTORIES`, keyed by SAM event type.
"""

from __future__ import annotations

import base64
import datetime
import json
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import boto3
from mailproxy.settings import PRIORITY_NAMES

from local.lambda_runtime import (
    LOCAL_ACCOUNT_ID,
    LOCAL_REGION,
    MAX_REQUEST_PAYLOAD,
    Handler,
    LambdaFunction,
    release_event_loop,
)
from local.template import EventSpec, Resolver, Unresolvable

logger = logging.getLogger(__name__)

DEFAULT_SCHEDULER_INTERVAL = 1.0


class Poller(Protocol):
    """Something that delivers events to a function in the background until stopped."""

    name: str

    def start(self) -> None:
        """Start delivering in background threads."""

    def stop(self, timeout: float = 10.0) -> None:
        """Stop delivering; an invocation under way is allowed to finish."""


class _ThreadPoller:
    """Runs `_run()` in worker threads until `stop()`; subclasses implement `_run`."""

    def __init__(self, name: str, workers: int = 1) -> None:
        self.name = name
        self.workers = max(1, workers)
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def running(self) -> bool:
        """True while worker threads are alive."""
        return any(thread.is_alive() for thread in self._threads)

    def start(self) -> None:
        """Start the worker threads."""
        if self._threads:
            return
        self._stopping.clear()
        for index in range(self.workers):
            thread = threading.Thread(target=self._worker, name=f"{self.name}-{index}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the workers to stop and wait for them."""
        self._stopping.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                logger.warning("%s: worker still busy after %.0f s", self.name, timeout)
        self._threads = []

    def _worker(self) -> None:
        try:
            self._run()
        finally:
            release_event_loop()

    def _run(self) -> None:
        raise NotImplementedError

    def _poll_until_stopped(self, poll_once: Callable[[], int], idle: float, max_idle: float) -> None:
        """Call `poll_once` in a loop, backing off while it finds nothing (AWS long-polls; this is cheaper)."""
        delay = idle
        while not self._stopping.is_set():
            try:
                handled = poll_once()
            except Exception:
                logger.exception("%s: polling failed", self.name)
                handled = 0
                delay = max_idle
            if handled:
                delay = idle
                continue
            self._stopping.wait(delay)
            delay = min(max_idle, delay * 2)


# ---------------------------------------------------------------------- SQS


@dataclass(frozen=True)
class SqsSource:
    """One queue of an SQS event source mapping and its batching settings."""

    queue_url: str
    queue_arn: str = ""
    batch_size: int = 10
    batching_window: float = 0.0
    report_batch_item_failures: bool = True


@dataclass
class SqsStats:
    """Counters of what an SqsPoller did, for tests and logs."""

    invocations: int = 0
    received: int = 0
    deleted: int = 0
    failed: int = 0
    # The last batches delivered (queue URL, message ids), bounded so a long `make run` does not grow.
    batches: deque[tuple[str, list[str]]] = field(default_factory=lambda: deque(maxlen=1000))


def _lambda_message_attribute(attribute: Mapping[str, Any]) -> dict[str, Any]:
    """An SQS API message attribute in the shape Lambda's SQS event uses (camelCase, base64 binary)."""
    converted: dict[str, Any] = {}
    if "StringValue" in attribute:
        converted["stringValue"] = attribute["StringValue"]
    if "BinaryValue" in attribute:
        converted["binaryValue"] = base64.b64encode(attribute["BinaryValue"]).decode()
    converted["stringListValues"] = list(attribute.get("StringListValues", []))
    converted["binaryListValues"] = [
        base64.b64encode(value).decode() for value in attribute.get("BinaryListValues", [])
    ]
    converted["dataType"] = attribute.get("DataType", "String")
    return converted


class SqsPoller(_ThreadPoller):
    """Plays the SQS event source mappings of one function over several queues, drained in priority order.

    Each round starts again from the first queue: a batch comes from the first queue that has
    messages (AWS runs one mapping per queue with no order between them; locally the order is the
    design's promise that higher priorities go first). Records listed in `batchItemFailures`, or all
    of them when the handler raises, stay in the queue and come back after its visibility timeout;
    the queue's RedrivePolicy, which the emulator honours, moves them to the dead-letter queue.
    """

    def __init__(
        self,
        handler: Handler | LambdaFunction,
        queues: Sequence[str | SqsSource],
        *,
        name: str | None = None,
        batch_size: int = 10,
        batching_window: float = 0.0,
        report_batch_item_failures: bool = True,
        workers: int = 1,
        client: Any = None,
        region: str | None = None,
        idle_sleep: float = 0.05,
        max_idle_sleep: float = 0.5,
    ) -> None:
        self.function = LambdaFunction.wrap(handler)
        super().__init__(name or f"sqs-{self.function.logical_id}", workers)
        self.sources = [
            source
            if isinstance(source, SqsSource)
            else SqsSource(source, "", batch_size, batching_window, report_batch_item_failures)
            for source in queues
        ]
        self.stats = SqsStats()
        self._client = client
        self._region = region
        self._idle = idle_sleep
        self._max_idle = max_idle_sleep
        self._arns: dict[str, str] = {}
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        """The SQS client (created on first use, after the emulator set the environment)."""
        if self._client is None:
            self._client = boto3.session.Session().client("sqs", region_name=self._region)
        return self._client

    @property
    def region(self) -> str:
        """The region named in the records' awsRegion."""
        return self._region or str(self.client.meta.region_name or LOCAL_REGION)

    def _run(self) -> None:
        self._poll_until_stopped(self.poll_once, self._idle, self._max_idle)

    def poll_once(self) -> int:
        """Deliver at most one batch, from the first queue that has messages; return its size."""
        for source in self.sources:
            messages = self._receive_batch(source)
            if messages:
                self._deliver(source, messages)
                return len(messages)
        return 0

    def _queue_arn(self, source: SqsSource) -> str:
        if source.queue_arn:
            return source.queue_arn
        if source.queue_url not in self._arns:
            attributes = self.client.get_queue_attributes(QueueUrl=source.queue_url, AttributeNames=["QueueArn"])
            self._arns[source.queue_url] = attributes["Attributes"]["QueueArn"]
        return self._arns[source.queue_url]

    def _receive_batch(self, source: SqsSource) -> list[dict[str, Any]]:
        batch: list[dict[str, Any]] = []
        deadline = 0.0
        while len(batch) < source.batch_size:
            response = self.client.receive_message(
                QueueUrl=source.queue_url,
                MaxNumberOfMessages=min(10, source.batch_size - len(batch)),
                WaitTimeSeconds=0,
                MessageSystemAttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
            messages = response.get("Messages", [])
            if not batch and not messages:
                return []
            if not batch:
                # The batching window runs from the first record, as in an event source mapping.
                deadline = time.monotonic() + source.batching_window
            batch.extend(messages)
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._stopping.is_set():
                break
            if not messages:
                # A higher priority must not wait for this batching window: deliver what is here now.
                if self._higher_priority_waiting(source):
                    break
                self._stopping.wait(min(0.1, remaining))
        return batch

    def _higher_priority_waiting(self, source: SqsSource) -> bool:
        for higher in self.sources[: self.sources.index(source)]:
            attributes = self.client.get_queue_attributes(
                QueueUrl=higher.queue_url, AttributeNames=["ApproximateNumberOfMessages"]
            )["Attributes"]
            if int(attributes.get("ApproximateNumberOfMessages", "0")) > 0:
                return True
        return False

    def _record(self, source: SqsSource, message: Mapping[str, Any]) -> dict[str, Any]:
        record: dict[str, Any] = {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": dict(message.get("Attributes", {})),
            "messageAttributes": {
                name: _lambda_message_attribute(value) for name, value in message.get("MessageAttributes", {}).items()
            },
            "md5OfBody": message.get("MD5OfBody", ""),
            "eventSource": "aws:sqs",
            "eventSourceARN": self._queue_arn(source),
            "awsRegion": self.region,
        }
        if message.get("MD5OfMessageAttributes"):
            record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
        return record

    def _deliver(self, source: SqsSource, messages: list[dict[str, Any]]) -> None:
        event = {"Records": [self._record(source, message) for message in messages]}
        ids = [message["MessageId"] for message in messages]
        size = len(json.dumps(event))
        if size > MAX_REQUEST_PAYLOAD:
            # An event source mapping never builds such a batch: it stops adding records at 6 MB.
            logger.warning("%s: batch of %d bytes would exceed Lambda's payload limit on AWS", self.name, size)
        outcome = self.function.invoke(event)
        if outcome.failed:
            failed = set(ids)
        elif source.report_batch_item_failures:
            failed = self._reported_failures(outcome.result, ids)
        else:
            failed = set()
        to_delete = [message for message in messages if message["MessageId"] not in failed]
        for start in range(0, len(to_delete), 10):
            chunk = to_delete[start : start + 10]
            response = self.client.delete_message_batch(
                QueueUrl=source.queue_url,
                Entries=[{"Id": str(index), "ReceiptHandle": m["ReceiptHandle"]} for index, m in enumerate(chunk)],
            )
            for failure in response.get("Failed", []):
                logger.warning("%s: could not delete a message: %s", self.name, failure.get("Message"))
        with self._lock:
            self.stats.invocations += 1
            self.stats.received += len(messages)
            self.stats.deleted += len(to_delete)
            self.stats.failed += len(failed)
            self.stats.batches.append((source.queue_url, ids))
        if failed:
            logger.info(
                "%s: %d of %d records failed; they return after the queue's visibility timeout",
                self.name,
                len(failed),
                len(messages),
            )

    def _reported_failures(self, result: Any, ids: list[str]) -> set[str]:
        """The ids a partial batch response names; an invalid response fails the whole batch, as on AWS."""
        if result is None or (isinstance(result, Mapping) and result.get("batchItemFailures") is None):
            return set()
        items = result.get("batchItemFailures") if isinstance(result, Mapping) else None
        if not isinstance(items, list):
            logger.warning("%s: invalid partial batch response %r: the whole batch fails", self.name, result)
            return set(ids)
        failed: set[str] = set()
        for item in items:
            identifier = item.get("itemIdentifier") if isinstance(item, Mapping) else None
            if not isinstance(identifier, str) or identifier not in ids:
                logger.warning("%s: invalid itemIdentifier %r: the whole batch fails", self.name, identifier)
                return set(ids)
            failed.add(identifier)
        return failed


# ---------------------------------------------------------------------- schedule


class SchedulePoller(_ThreadPoller):
    """Invokes a function every `interval` seconds with an EventBridge Scheduled Event (or the rule's Input)."""

    def __init__(
        self,
        handler: Handler | LambdaFunction,
        *,
        interval: float = DEFAULT_SCHEDULER_INTERVAL,
        rule_name: str | None = None,
        event_input: Any = None,
        name: str | None = None,
        region: str = LOCAL_REGION,
        account_id: str = LOCAL_ACCOUNT_ID,
    ) -> None:
        self.function = LambdaFunction.wrap(handler)
        super().__init__(name or f"schedule-{self.function.logical_id}")
        self.interval = interval
        self.rule_name = rule_name or f"gmp-local-{self.function.logical_id}-schedule"
        self.event_input = event_input
        self.region = region
        self.account_id = account_id
        self.invocations = 0

    def scheduled_event(self) -> Any:
        """The event EventBridge delivers for one tick (the rule's Input replaces it when set)."""
        if self.event_input is not None:
            return self.event_input
        return {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "account": self.account_id,
            "time": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": self.region,
            "resources": [f"arn:aws:events:{self.region}:{self.account_id}:rule/{self.rule_name}"],
            "detail": {},
        }

    def tick(self) -> None:
        """Invoke the function once now."""
        self.function.invoke(self.scheduled_event())
        self.invocations += 1

    def _run(self) -> None:
        # One tick at a time: a slow run delays the next instead of overlapping it, which keeps logs readable.
        while not self._stopping.wait(self.interval):
            self.tick()


# ---------------------------------------------------------------------- DynamoDB stream


def _matches_rule(rule: Any, present: bool, value: Any) -> bool:
    if isinstance(rule, Mapping):
        if "exists" in rule:
            return bool(rule["exists"]) == present
        if not present:
            return False
        if "prefix" in rule:
            return isinstance(value, str) and value.startswith(str(rule["prefix"]))
        if "suffix" in rule:
            return isinstance(value, str) and value.endswith(str(rule["suffix"]))
        if "equals-ignore-case" in rule:
            return isinstance(value, str) and value.lower() == str(rule["equals-ignore-case"]).lower()
        if "anything-but" in rule:
            excluded = rule["anything-but"]
            if isinstance(excluded, Mapping):
                return not _matches_rule(excluded, present, value)
            excluded_values = excluded if isinstance(excluded, list) else [excluded]
            return value not in excluded_values
        if "numeric" in rule:
            try:
                number = float(value)
            except (TypeError, ValueError):
                return False
            conditions = list(rule["numeric"])
            checks: dict[str, Callable[[float, float], bool]] = {
                "=": lambda a, b: a == b,
                "<": lambda a, b: a < b,
                "<=": lambda a, b: a <= b,
                ">": lambda a, b: a > b,
                ">=": lambda a, b: a >= b,
            }
            return all(
                checks[op](number, float(bound)) for op, bound in zip(conditions[::2], conditions[1::2], strict=False)
            )
        logger.warning("filter operator %s is not supported locally: treated as a match", sorted(rule))
        return True
    if not present:
        return False
    if isinstance(rule, (int, float)) and not isinstance(rule, bool):
        try:
            return float(value) == float(rule)
        except (TypeError, ValueError):
            return False
    return bool(value == rule)


def event_pattern_matches(pattern: Mapping[str, Any], record: Mapping[str, Any]) -> bool:
    """True when a record matches an event filtering pattern (the subset of EventBridge syntax Lambda uses)."""
    for key, rule in pattern.items():
        present = isinstance(record, Mapping) and key in record
        value = record.get(key) if present else None
        if isinstance(rule, Mapping):
            if not present or not isinstance(value, Mapping) or not event_pattern_matches(rule, value):
                return False
            continue
        rules = rule if isinstance(rule, list) else [rule]
        values = value if isinstance(value, list) else [value]
        if not any(_matches_rule(each, present, candidate) for each in rules for candidate in values):
            return False
    return True


def _encode_binaries(image: dict[str, Any]) -> None:
    """Turn the binary values of a GetRecords image into base64 text in place (the reply is the caller's own)."""
    for value in image.values():
        _encode_binary(value)


def _encode_binary(value: dict[str, Any]) -> None:
    for tag, raw in value.items():
        if tag == "B":
            value["B"] = base64.b64encode(bytes(raw)).decode()
        elif tag == "BS":
            value["BS"] = [base64.b64encode(bytes(member)).decode() for member in raw]
        elif tag == "M":
            _encode_binaries(raw)
        elif tag == "L":
            for member in raw:
                _encode_binary(member)


class StreamPoller(_ThreadPoller):
    """Plays a DynamoDB stream event source mapping: batches, filters, retries, bisection, checkpoints."""

    def __init__(
        self,
        handler: Handler | LambdaFunction,
        stream_arn: str,
        *,
        name: str | None = None,
        batch_size: int = 100,
        batching_window: float = 0.0,
        starting_position: str = "LATEST",
        report_batch_item_failures: bool = False,
        bisect_on_error: bool = False,
        maximum_retry_attempts: int = -1,
        filters: Sequence[Mapping[str, Any]] = (),
        client: Any = None,
        region: str | None = None,
        idle_sleep: float = 0.1,
        max_idle_sleep: float = 1.0,
    ) -> None:
        self.function = LambdaFunction.wrap(handler)
        super().__init__(name or f"stream-{self.function.logical_id}")
        self.stream_arn = stream_arn
        self.batch_size = batch_size
        self.batching_window = batching_window
        self.starting_position = starting_position
        self.report_batch_item_failures = report_batch_item_failures
        self.bisect_on_error = bisect_on_error
        self.maximum_retry_attempts = maximum_retry_attempts
        self.filters = list(filters)
        self.invocations = 0
        self.discarded = 0
        self._client = client
        self._region = region
        self._idle = idle_sleep
        self._max_idle = max_idle_sleep
        self._iterators: dict[str, str | None] = {}
        self._buffer: list[dict[str, Any]] = []
        self._buffered_since = 0.0

    @property
    def client(self) -> Any:
        """The DynamoDB Streams client (created on first use)."""
        if self._client is None:
            self._client = boto3.session.Session().client("dynamodbstreams", region_name=self._region)
        return self._client

    def start(self) -> None:
        """Take the shard iterators now, so LATEST means 'from start()' and not 'from the first poll'."""
        self._refresh_shards()
        super().start()

    def _run(self) -> None:
        self._poll_until_stopped(self.poll_once, self._idle, self._max_idle)

    def _refresh_shards(self) -> None:
        stream = self.client.describe_stream(StreamArn=self.stream_arn)["StreamDescription"]
        first_time = not self._iterators
        for shard in stream.get("Shards", []):
            shard_id = shard["ShardId"]
            if shard_id in self._iterators:
                continue
            # Shards that appear later are read from their start, as the mapping follows the lineage.
            iterator_type = self.starting_position if first_time else "TRIM_HORIZON"
            iterator = self.client.get_shard_iterator(
                StreamArn=self.stream_arn, ShardId=shard_id, ShardIteratorType=iterator_type
            )
            self._iterators[shard_id] = iterator["ShardIterator"]

    def _lambda_record(self, record: Mapping[str, Any]) -> dict[str, Any]:
        converted = {key: value for key, value in record.items() if key != "dynamodb"}
        dynamodb = dict(record.get("dynamodb", {}))
        # Only the attribute maps hold binary values; GetRecords' reply is ours to change.
        for images in ("Keys", "NewImage", "OldImage"):
            if isinstance(dynamodb.get(images), dict):
                _encode_binaries(dynamodb[images])
        created = dynamodb.get("ApproximateCreationDateTime")
        if isinstance(created, datetime.datetime):
            dynamodb["ApproximateCreationDateTime"] = int(created.timestamp())
        converted["dynamodb"] = dynamodb
        converted["eventSourceARN"] = self.stream_arn
        return converted

    def _fetch(self) -> None:
        if not self._iterators:
            self._refresh_shards()
        for shard_id, iterator in list(self._iterators.items()):
            if iterator is None:
                continue
            response = self.client.get_records(ShardIterator=iterator, Limit=1000)
            self._iterators[shard_id] = response.get("NextShardIterator")
            for raw in response.get("Records", []):
                record = self._lambda_record(raw)
                # Filtered-out records count as processed, as with Lambda event filtering.
                if self.filters and not any(event_pattern_matches(f, record) for f in self.filters):
                    continue
                if not self._buffer:
                    self._buffered_since = time.monotonic()
                self._buffer.append(record)

    def poll_once(self) -> int:
        """Read new records and deliver one batch when it is full or its batching window has passed."""
        self._fetch()
        if not self._buffer:
            return 0
        full = len(self._buffer) >= self.batch_size
        if not full and time.monotonic() - self._buffered_since < self.batching_window:
            return 0
        batch = self._buffer[: self.batch_size]
        self._deliver(batch)
        self._buffer = self._buffer[len(batch) :]
        self._buffered_since = time.monotonic()
        return len(batch)

    def _deliver(self, batch: list[dict[str, Any]]) -> None:
        """Invoke until the batch succeeds, retrying from the first failed record, as the mapping does."""
        attempts = 0
        while batch and not self._stopping.is_set():
            outcome = self.function.invoke({"Records": batch})
            self.invocations += 1
            if not outcome.failed:
                remaining = self._remaining_after(outcome.result, batch)
                if not remaining:
                    return
                batch = remaining
            elif self.bisect_on_error and len(batch) > 1:
                half = len(batch) // 2
                self._deliver(batch[:half])
                self._deliver(batch[half:])
                return
            attempts += 1
            if 0 <= self.maximum_retry_attempts < attempts:
                self.discarded += len(batch)
                logger.error(
                    "%s: %d records dropped after %d retries", self.name, len(batch), self.maximum_retry_attempts
                )
                return
            self._stopping.wait(min(10.0, 0.5 * 2 ** (attempts - 1)))

    def _remaining_after(self, result: Any, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not self.report_batch_item_failures or not isinstance(result, Mapping):
            return []
        items = result.get("batchItemFailures")
        if not items:
            return []
        sequence_numbers = [record["dynamodb"]["SequenceNumber"] for record in batch]
        failed = [item.get("itemIdentifier") if isinstance(item, Mapping) else None for item in items]
        if not all(isinstance(number, str) and number in sequence_numbers for number in failed):
            logger.warning("%s: invalid partial batch response %r: the whole batch is retried", self.name, result)
            return batch
        # The checkpoint moves to the lowest failed sequence number; everything from there is retried.
        first = min(sequence_numbers.index(str(number)) for number in failed)
        return batch[first:]


# ---------------------------------------------------------------------- registry


@dataclass
class PollerContext:
    """What a poller factory needs: the resolver of created resources, and local settings."""

    resolver: Resolver
    scheduler_interval: float = DEFAULT_SCHEDULER_INTERVAL
    sqs_workers: int = 1
    # A function's schedules at their own pace (logical id → seconds): the bounce poller logs in to real
    # mailboxes, which must not see a login every `scheduler_interval`.
    schedule_intervals: Mapping[str, float] = field(default_factory=dict)


PollerFactory = Callable[[LambdaFunction, list[EventSpec], PollerContext], list[Poller]]


def _enabled(properties: Mapping[str, Any], resolver: Resolver) -> bool:
    return str(resolver.resolve(properties.get("Enabled", True))).lower() != "false"


def _priority_rank(queue_logical_id: str, env_names: Sequence[str]) -> int:
    # Priorities (mailproxy's names, highest first) matched against the queue's logical id and env var names.
    names = [queue_logical_id.lower(), *(name.lower() for name in env_names)]
    for rank, priority in enumerate(PRIORITY_NAMES):
        if any(name.startswith(priority) for name in names):
            return rank
    return len(PRIORITY_NAMES)


def _sqs_pollers(function: LambdaFunction, events: list[EventSpec], context: PollerContext) -> list[Poller]:
    resolver = context.resolver
    ranked: list[tuple[int, int, SqsSource]] = []
    for position, event in enumerate(events):
        properties = event.properties
        if not _enabled(properties, resolver):
            continue
        arn = str(resolver.resolve(properties["Queue"]))
        queue_ids = resolver.referenced_resources(properties["Queue"])
        queue = next((r for r in resolver.resources.values() if r.attributes.get("Arn") == arn), None)
        if queue is None:
            logger.warning("%s: queue %s of event %s is not created locally", function.logical_id, arn, event.name)
            continue
        env_names = [
            name
            for spec in resolver.template.functions(resolver)
            for name, raw in spec.environment.items()
            if resolver.referenced_resources(raw) & queue_ids
        ]
        response_types = resolver.resolve(properties.get("FunctionResponseTypes", []))
        source = SqsSource(
            queue_url=queue.ref,
            queue_arn=arn,
            batch_size=int(resolver.resolve(properties.get("BatchSize", 10))),
            batching_window=float(resolver.resolve(properties.get("MaximumBatchingWindowInSeconds", 0))),
            report_batch_item_failures="ReportBatchItemFailures" in response_types,
        )
        ranked.append((_priority_rank(queue.logical_id, env_names), position, source))
    if not ranked:
        return []
    sources = [source for _, _, source in sorted(ranked, key=lambda item: (item[0], item[1]))]
    return [SqsPoller(function, sources, workers=context.sqs_workers, region=resolver.region)]


def _schedule_pollers(function: LambdaFunction, events: list[EventSpec], context: PollerContext) -> list[Poller]:
    pollers: list[Poller] = []
    for event in events:
        if not _enabled(event.properties, context.resolver):
            continue
        raw_input = context.resolver.resolve(event.properties.get("Input"))
        pollers.append(
            SchedulePoller(
                function,
                interval=context.schedule_intervals.get(function.logical_id, context.scheduler_interval),
                rule_name=f"gmp-local-{function.logical_id}-{event.name}",
                event_input=json.loads(raw_input) if isinstance(raw_input, str) else raw_input,
                name=f"schedule-{function.logical_id}-{event.name}",
                region=context.resolver.region,
                account_id=context.resolver.account_id,
            )
        )
    return pollers


def _stream_pollers(function: LambdaFunction, events: list[EventSpec], context: PollerContext) -> list[Poller]:
    resolver = context.resolver
    pollers: list[Poller] = []
    for event in events:
        properties = resolver.resolve(event.properties)
        if not _enabled(event.properties, resolver):
            continue
        filters = [
            json.loads(entry["Pattern"]) for entry in (properties.get("FilterCriteria") or {}).get("Filters", [])
        ]
        pollers.append(
            StreamPoller(
                function,
                str(properties["Stream"]),
                name=f"stream-{function.logical_id}-{event.name}",
                batch_size=int(properties.get("BatchSize", 100)),
                batching_window=float(properties.get("MaximumBatchingWindowInSeconds", 0)),
                starting_position=str(properties.get("StartingPosition", "LATEST")),
                report_batch_item_failures="ReportBatchItemFailures" in properties.get("FunctionResponseTypes", []),
                bisect_on_error=str(properties.get("BisectBatchOnFunctionError", False)).lower() == "true",
                maximum_retry_attempts=int(properties.get("MaximumRetryAttempts", -1)),
                filters=filters,
                region=resolver.region,
            )
        )
    return pollers


# SAM event type -> the factory of its pollers; a new event source plugs in here.
POLLER_FACTORIES: dict[str, PollerFactory] = {
    "SQS": _sqs_pollers,
    "Schedule": _schedule_pollers,
    "ScheduleV2": _schedule_pollers,
    "DynamoDB": _stream_pollers,
}


def pollers_from_template(functions: Mapping[str, LambdaFunction], context: PollerContext) -> list[Poller]:
    """The pollers the template's function events call for; functions whose module is missing are skipped."""
    pollers: list[Poller] = []
    for spec in context.resolver.template.functions(context.resolver):
        function = functions[spec.logical_id]
        for event_type, factory in POLLER_FACTORIES.items():
            events = spec.events_of_type(event_type)
            if not events:
                continue
            if not function.is_available():
                break
            try:
                pollers.extend(factory(function, events, context))
            except Unresolvable as exc:
                logger.warning("%s: %s events not played locally: %s", spec.logical_id, event_type, exc)
    return pollers
