"""An in-memory SQS (standard queues) for the local stack: constant cost per message whatever the queue's depth.

A queue keeps its visible messages in arrival order and the invisible ones (delayed, or in flight after a
receive) in a heap by the time they become visible again, so a send, a receive or a delete costs the same
with ten messages or a hundred thousand. Redrive to the dead-letter queue happens on the receive that
would exceed `maxReceiveCount`, as in SQS.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import heapq
import json
import re
import struct
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from local.fastaws.errors import NotEmulated, ServiceError

MAX_MESSAGE_BYTES = 262144
MAX_DELAY_SECONDS = 900
MAX_VISIBILITY_SECONDS = 43200
MAX_WAIT_SECONDS = 20
_DEFAULTS = {
    "DelaySeconds": "0",
    "MaximumMessageSize": str(MAX_MESSAGE_BYTES),
    "MessageRetentionPeriod": "345600",
    "ReceiveMessageWaitTimeSeconds": "0",
    "VisibilityTimeout": "30",
    "SqsManagedSseEnabled": "true",
}
_SETTABLE = frozenset(
    {*_DEFAULTS, "RedrivePolicy", "RedriveAllowPolicy", "Policy", "KmsMasterKeyId", "KmsDataKeyReusePeriodSeconds"}
)
# Characters SQS accepts in a body: #x9 | #xA | #xD | #x20 to #xD7FF | #xE000 to #xFFFD | #x10000 to #x10FFFF
_INVALID_BODY = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _error(code: str, message: str) -> ServiceError:
    return ServiceError(code, message)


def _invalid(message: str) -> ServiceError:
    return ServiceError("InvalidParameterValue", message)


def md5_of_body(body: str) -> str:
    """MD5OfMessageBody: the hex MD5 of the UTF-8 body."""
    return hashlib.md5(body.encode(), usedforsecurity=False).hexdigest()


def md5_of_attributes(attributes: Mapping[str, Mapping[str, Any]]) -> str:
    """MD5OfMessageAttributes as SQS computes it (length-prefixed names, types and values, sorted by name)."""
    digest = hashlib.md5(usedforsecurity=False)
    for name in sorted(attributes):
        attribute = attributes[name]
        data_type = str(attribute["DataType"])
        for text in (name, data_type):
            encoded = text.encode()
            digest.update(struct.pack("!I", len(encoded)) + encoded)
        if "BinaryValue" in attribute:
            raw = attribute["BinaryValue"]
            payload = raw if isinstance(raw, bytes) else base64.b64decode(raw)
            digest.update(b"\x02" + struct.pack("!I", len(payload)) + payload)
        else:
            encoded = str(attribute["StringValue"]).encode()
            digest.update(b"\x01" + struct.pack("!I", len(encoded)) + encoded)
    return digest.hexdigest()


@dataclass(eq=False)
class Message:
    message_id: str
    body: str
    attributes: dict[str, dict[str, Any]]
    sent: float
    visible_at: float
    md5_body: str
    md5_attributes: str | None
    receive_count: int = 0
    first_receive: float | None = None
    receipts: set[str] = field(default_factory=set)
    state: str = "new"  # new, delayed, visible, inflight, deleted
    generation: int = 0  # bumps whenever visible_at changes, so stale heap entries are skipped


class Queue:
    """One standard queue."""

    def __init__(self, name: str, url: str, arn: str, attributes: Mapping[str, str]) -> None:
        self.name = name
        self.url = url
        self.arn = arn
        self.attributes: dict[str, str] = {**_DEFAULTS, **attributes}
        self.created = time.time()
        self.modified = self.created
        self.messages: dict[str, Message] = {}
        self.visible: deque[Message] = deque()
        self.waiting: list[tuple[float, int, int, Message]] = []  # (visible_at, generation, tiebreak, message)
        self.receipts: dict[str, Message] = {}
        self.counts = {"delayed": 0, "visible": 0, "inflight": 0}
        self._tiebreak = 0

    def setting(self, name: str) -> int:
        return int(self.attributes.get(name, _DEFAULTS.get(name, "0")))

    def redrive(self) -> tuple[str, int] | None:
        raw = self.attributes.get("RedrivePolicy")
        if not raw:
            return None
        policy = json.loads(raw)
        return str(policy["deadLetterTargetArn"]), int(policy["maxReceiveCount"])

    def _move(self, message: Message, state: str) -> None:
        if message.state in self.counts:
            self.counts[message.state] -= 1
        message.state = state
        if state in self.counts:
            self.counts[state] += 1

    def add(self, message: Message, now: float) -> None:
        self.messages[message.message_id] = message
        if message.visible_at <= now:
            self._move(message, "visible")
            self.visible.append(message)
        else:
            self._move(message, "delayed")
            self._wait(message)

    def _wait(self, message: Message) -> None:
        message.generation += 1
        self._tiebreak += 1
        heapq.heappush(self.waiting, (message.visible_at, message.generation, self._tiebreak, message))

    def hide(self, message: Message, until: float) -> None:
        message.visible_at = until
        self._move(message, "inflight")
        self._wait(message)

    def promote(self, now: float) -> None:
        """Make visible every delayed or in-flight message whose time has come; drop expired ones."""
        while self.waiting and self.waiting[0][0] <= now:
            _, generation, _, message = heapq.heappop(self.waiting)
            if message.state in ("deleted", "visible") or generation != message.generation:
                continue
            self._move(message, "visible")
            self.visible.append(message)

    def remove(self, message: Message) -> None:
        self._move(message, "deleted")
        self.messages.pop(message.message_id, None)
        for receipt in message.receipts:
            self.receipts.pop(receipt, None)

    def purge(self) -> None:
        for message in list(self.messages.values()):
            self.remove(message)
        self.visible.clear()
        self.waiting.clear()


class Sqs:
    """The queues of one emulated account and the SQS operations on them."""

    def __init__(self, region: str, account_id: str, base_url: str) -> None:
        self.region = region
        self.account_id = account_id
        self.base_url = base_url.rstrip("/")
        self.queues: dict[str, Queue] = {}
        self.lock = threading.RLock()
        self.arrived = threading.Condition(self.lock)
        self.clock: Callable[[], float] = time.time

    def handle(self, operation: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """Run one operation and return its reply."""
        method: Callable[[Mapping[str, Any]], dict[str, Any]] | None = getattr(self, f"op_{operation}", None)
        if method is None:
            raise NotEmulated(f"SQS {operation}")
        with self.lock:
            return method(params)

    def queue(self, url: Any) -> Queue:
        name = str(url).rstrip("/").rsplit("/", 1)[-1]
        queue = self.queues.get(name)
        if queue is None:
            raise ServiceError(
                "AWS.SimpleQueueService.NonExistentQueue", "The specified queue does not exist for this wsdl version."
            )
        return queue

    def _by_arn(self, arn: str) -> Queue | None:
        return next((q for q in self.queues.values() if q.arn == arn), None)

    # ------------------------------------------------------------------ queues

    def op_CreateQueue(self, params: Mapping[str, Any]) -> dict[str, Any]:
        name = str(params["QueueName"])
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,80}", name):
            if name.endswith(".fifo"):
                raise NotEmulated("FIFO queues")
            raise _invalid("Can only include alphanumeric characters, hyphens, or underscores. 1 to 80 in length")
        attributes = {str(k): str(v) for k, v in (params.get("Attributes") or {}).items()}
        self._check_attributes(attributes)
        existing = self.queues.get(name)
        if existing is not None:
            differing = {k: v for k, v in attributes.items() if existing.attributes.get(k) != v}
            if differing:
                raise _error(
                    "QueueAlreadyExists",
                    f"A queue already exists with the same name and a different value for attribute(s) {', '.join(sorted(differing))}",
                )
            return {"QueueUrl": existing.url}
        url = f"{self.base_url}/{self.account_id}/{name}"
        arn = f"arn:aws:sqs:{self.region}:{self.account_id}:{name}"
        self.queues[name] = Queue(name, url, arn, attributes)
        return {"QueueUrl": url}

    def _check_attributes(self, attributes: Mapping[str, str]) -> None:
        for name, value in attributes.items():
            if name == "FifoQueue":
                if value.lower() == "true":
                    raise NotEmulated("FIFO queues")
                continue
            if name not in _SETTABLE:
                raise _error("InvalidAttributeName", f"Unknown Attribute {name}.")
        limits = {
            "DelaySeconds": (0, MAX_DELAY_SECONDS),
            "VisibilityTimeout": (0, MAX_VISIBILITY_SECONDS),
            "MessageRetentionPeriod": (60, 1209600),
            "ReceiveMessageWaitTimeSeconds": (0, MAX_WAIT_SECONDS),
            "MaximumMessageSize": (1024, MAX_MESSAGE_BYTES),
        }
        for name, (low, high) in limits.items():
            if name in attributes and not (attributes[name].isdigit() and low <= int(attributes[name]) <= high):
                raise _invalid(f"Invalid value for the parameter {name}.")
        if attributes.get("RedrivePolicy"):
            policy = json.loads(attributes["RedrivePolicy"])
            if "deadLetterTargetArn" not in policy or "maxReceiveCount" not in policy:
                raise _invalid("Value for parameter RedrivePolicy is invalid.")
            if self._by_arn(str(policy["deadLetterTargetArn"])) is None:
                raise _error("AWS.SimpleQueueService.NonExistentQueue", "Dead letter target does not exist")

    def op_GetQueueUrl(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return {"QueueUrl": self.queue(params["QueueName"]).url}

    def op_ListQueues(self, params: Mapping[str, Any]) -> dict[str, Any]:
        prefix = str(params.get("QueueNamePrefix", ""))
        urls = [q.url for name, q in sorted(self.queues.items()) if name.startswith(prefix)]
        return {"QueueUrls": urls} if urls else {}

    def op_DeleteQueue(self, params: Mapping[str, Any]) -> dict[str, Any]:
        queue = self.queue(params["QueueUrl"])
        del self.queues[queue.name]
        return {}

    def op_PurgeQueue(self, params: Mapping[str, Any]) -> dict[str, Any]:
        self.queue(params["QueueUrl"]).purge()
        return {}

    def op_SetQueueAttributes(self, params: Mapping[str, Any]) -> dict[str, Any]:
        queue = self.queue(params["QueueUrl"])
        attributes = {str(k): str(v) for k, v in params["Attributes"].items()}
        attributes.pop("FifoQueue", None)
        self._check_attributes(attributes)
        queue.attributes.update(attributes)
        queue.modified = self.clock()
        return {}

    def op_GetQueueAttributes(self, params: Mapping[str, Any]) -> dict[str, Any]:
        queue = self.queue(params["QueueUrl"])
        queue.promote(self.clock())
        values = {
            **queue.attributes,
            "QueueArn": queue.arn,
            "ApproximateNumberOfMessages": str(queue.counts["visible"]),
            "ApproximateNumberOfMessagesNotVisible": str(queue.counts["inflight"]),
            "ApproximateNumberOfMessagesDelayed": str(queue.counts["delayed"]),
            "CreatedTimestamp": str(int(queue.created)),
            "LastModifiedTimestamp": str(int(queue.modified)),
        }
        wanted = list(params.get("AttributeNames") or [])
        if "All" in wanted:
            return {"Attributes": values}
        unknown = [name for name in wanted if name not in values and name not in _SETTABLE]
        if unknown:
            raise _error("InvalidAttributeName", f"Unknown Attribute {unknown[0]}.")
        chosen = {name: values[name] for name in wanted if name in values}
        return {"Attributes": chosen} if chosen else {}

    # ------------------------------------------------------------------ messages

    def op_SendMessage(self, params: Mapping[str, Any]) -> dict[str, Any]:
        queue = self.queue(params["QueueUrl"])
        message = self._message(queue, params)
        queue.add(message, self.clock())
        self.arrived.notify_all()
        reply = {"MessageId": message.message_id, "MD5OfMessageBody": message.md5_body}
        if message.md5_attributes:
            reply["MD5OfMessageAttributes"] = message.md5_attributes
        return reply

    def op_SendMessageBatch(self, params: Mapping[str, Any]) -> dict[str, Any]:
        queue = self.queue(params["QueueUrl"])
        entries = list(params.get("Entries") or [])
        self._check_batch(entries)
        total = sum(
            len(str(e.get("MessageBody", "")).encode()) + _attributes_size(e.get("MessageAttributes")) for e in entries
        )
        if total > queue.setting("MaximumMessageSize"):
            raise _error(
                "AWS.SimpleQueueService.BatchRequestTooLong",
                f"Batch requests cannot be longer than {queue.setting('MaximumMessageSize')} bytes.",
            )
        successful: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        now = self.clock()
        for entry in entries:
            try:
                message = self._message(queue, entry)
            except ServiceError as exc:
                failed.append({"Id": entry["Id"], "SenderFault": True, "Code": exc.code, "Message": exc.message})
                continue
            queue.add(message, now)
            result = {"Id": entry["Id"], "MessageId": message.message_id, "MD5OfMessageBody": message.md5_body}
            if message.md5_attributes:
                result["MD5OfMessageAttributes"] = message.md5_attributes
            successful.append(result)
        self.arrived.notify_all()
        return {"Successful": successful, "Failed": failed}

    def _message(self, queue: Queue, params: Mapping[str, Any]) -> Message:
        body = params.get("MessageBody")
        if body is None or body == "":
            raise _error("MissingParameter", "The request must contain the parameter MessageBody.")
        body = str(body)
        if _INVALID_BODY.search(body):
            raise _invalid(
                "Invalid characters found. Valid unicode characters are #x9 | #xA | #xD | #x20 to #xD7FF | #xE000 to #xFFFD | #x10000 to #x10FFFF"
            )
        attributes = _check_message_attributes(params.get("MessageAttributes") or {})
        size = len(body.encode()) + _attributes_size(attributes)
        if size > queue.setting("MaximumMessageSize"):
            raise _invalid(
                f"One or more parameters are invalid. Reason: Message must be shorter than {queue.setting('MaximumMessageSize')} bytes."
            )
        if params.get("MessageSystemAttributes"):
            raise NotEmulated("MessageSystemAttributes")
        delay = params.get("DelaySeconds")
        delay = queue.setting("DelaySeconds") if delay is None else int(delay)
        if not 0 <= delay <= MAX_DELAY_SECONDS:
            raise _invalid(
                f"Value {delay} for parameter DelaySeconds is invalid. Reason: must be between 0 and 900, if provided."
            )
        now = self.clock()
        return Message(
            message_id=str(uuid.uuid4()),
            body=body,
            attributes=attributes,
            sent=now,
            visible_at=now + delay,
            md5_body=md5_of_body(body),
            md5_attributes=md5_of_attributes(attributes) if attributes else None,
        )

    @staticmethod
    def _check_batch(entries: Sequence[Mapping[str, Any]]) -> None:
        if not entries:
            raise _error(
                "AWS.SimpleQueueService.EmptyBatchRequest",
                "There should be at least one SendMessageBatchRequestEntry in the request.",
            )
        if len(entries) > 10:
            raise _error(
                "AWS.SimpleQueueService.TooManyEntriesInBatchRequest",
                f"Maximum number of entries per request are 10. You have sent {len(entries)}.",
            )
        ids = [str(e.get("Id", "")) for e in entries]
        if len(set(ids)) != len(ids):
            raise _error(
                "AWS.SimpleQueueService.BatchEntryIdsNotDistinct",
                "Two or more batch entries in the request have the same Id.",
            )
        for identifier in ids:
            if not re.fullmatch(r"[A-Za-z0-9_-]{1,80}", identifier):
                raise _error(
                    "AWS.SimpleQueueService.InvalidBatchEntryId",
                    "A batch entry id can only contain alphanumeric characters, hyphens and underscores. It can be at most 80 letters long.",
                )

    def op_ReceiveMessage(self, params: Mapping[str, Any]) -> dict[str, Any]:
        queue = self.queue(params["QueueUrl"])
        count = int(params.get("MaxNumberOfMessages", 1))
        if not 1 <= count <= 10:
            raise _invalid(
                f"Value {count} for parameter MaxNumberOfMessages is invalid. Reason: must be between 1 and 10, if provided."
            )
        wait = params.get("WaitTimeSeconds")
        wait = queue.setting("ReceiveMessageWaitTimeSeconds") if wait is None else int(wait)
        if not 0 <= wait <= MAX_WAIT_SECONDS:
            raise _invalid(
                f"Value {wait} for parameter WaitTimeSeconds is invalid. Reason: must be &lt;= 0 and &gt;= 20 if provided."
            )
        visibility = params.get("VisibilityTimeout")
        visibility = queue.setting("VisibilityTimeout") if visibility is None else int(visibility)
        if not 0 <= visibility <= MAX_VISIBILITY_SECONDS:
            raise _invalid(f"Value {visibility} for parameter VisibilityTimeout is invalid.")
        deadline = time.monotonic() + wait
        while True:
            taken = self._take(queue, count, visibility)
            if taken or wait == 0:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            # Long polling: wake on a send, or when the earliest invisible message becomes visible.
            next_visible = queue.waiting[0][0] - self.clock() if queue.waiting else remaining
            self.arrived.wait(max(0.0, min(remaining, next_visible, 1.0)))
            if queue.name not in self.queues:
                break
        system_names = set(params.get("MessageSystemAttributeNames") or []) | set(params.get("AttributeNames") or [])
        attribute_names = list(params.get("MessageAttributeNames") or [])
        messages = [
            self._as_reply(queue, message, receipt, system_names, attribute_names) for message, receipt in taken
        ]
        return {"Messages": messages} if messages else {}

    def _take(self, queue: Queue, count: int, visibility: int) -> list[tuple[Message, str]]:
        now = self.clock()
        queue.promote(now)
        retention = queue.setting("MessageRetentionPeriod")
        redrive = queue.redrive()
        taken: list[tuple[Message, str]] = []
        while queue.visible and len(taken) < count:
            message = queue.visible.popleft()
            if message.state != "visible":
                continue
            if message.sent + retention < now:
                queue.remove(message)
                continue
            if redrive is not None and message.receive_count >= redrive[1]:
                dead = self._by_arn(redrive[0])
                queue.remove(message)
                if dead is not None:
                    self._dead_letter(dead, message, now)
                continue
            message.receive_count += 1
            if message.first_receive is None:
                message.first_receive = now
            receipt = base64.b64encode(f"{queue.name}:{message.message_id}:{uuid.uuid4().hex}".encode()).decode()
            message.receipts.add(receipt)
            queue.receipts[receipt] = message
            queue.hide(message, now + visibility)
            taken.append((message, receipt))
        return taken

    @staticmethod
    def _dead_letter(dead: Queue, message: Message, now: float) -> None:
        # The dead letter keeps its id, body, attributes and first enqueue time.
        moved = Message(
            message_id=message.message_id,
            body=message.body,
            attributes=message.attributes,
            sent=message.sent,
            visible_at=now,
            md5_body=message.md5_body,
            md5_attributes=message.md5_attributes,
        )
        dead.add(moved, now)

    @staticmethod
    def _as_reply(
        queue: Queue, message: Message, receipt: str, system_names: set[str], attribute_names: list[str]
    ) -> dict[str, Any]:
        reply: dict[str, Any] = {
            "MessageId": message.message_id,
            "ReceiptHandle": receipt,
            "MD5OfBody": message.md5_body,
            "Body": message.body,
        }
        system = {
            "SenderId": "AIDAIT2UOQQY3AUEKVGXU",
            "SentTimestamp": str(int(message.sent * 1000)),
            "ApproximateReceiveCount": str(message.receive_count),
            "ApproximateFirstReceiveTimestamp": str(int((message.first_receive or message.sent) * 1000)),
        }
        if system_names:
            chosen = system if "All" in system_names else {k: val for k, val in system.items() if k in system_names}
            if chosen:
                reply["Attributes"] = chosen
        if attribute_names and message.attributes:
            chosen_attributes = {
                name: dict(value)
                for name, value in message.attributes.items()
                if any(_attribute_matches(pattern, name) for pattern in attribute_names)
            }
            if chosen_attributes:
                reply["MessageAttributes"] = chosen_attributes
                reply["MD5OfMessageAttributes"] = md5_of_attributes(chosen_attributes)
        return reply

    def op_DeleteMessage(self, params: Mapping[str, Any]) -> dict[str, Any]:
        queue = self.queue(params["QueueUrl"])
        self._delete(queue, str(params["ReceiptHandle"]))
        return {}

    def _delete(self, queue: Queue, receipt: str) -> None:
        message = queue.receipts.get(receipt)
        if message is None:
            if _receipt_of(queue, receipt):
                return  # a message already deleted: SQS answers success
            raise _error(
                "ReceiptHandleIsInvalid", f'The input receipt handle "{receipt}" is not a valid receipt handle.'
            )
        queue.remove(message)

    def op_DeleteMessageBatch(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return self._each_entry(params, lambda queue, entry: self._delete(queue, str(entry["ReceiptHandle"])))

    def _each_entry(self, params: Mapping[str, Any], act: Callable[[Queue, Mapping[str, Any]], None]) -> dict[str, Any]:
        """A batch call on receipt handles: `act` on each entry, its ServiceError a failed entry, not the call's."""
        queue = self.queue(params["QueueUrl"])
        entries = list(params.get("Entries") or [])
        self._check_batch([{"Id": e.get("Id"), "MessageBody": "x"} for e in entries])
        successful: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        for entry in entries:
            try:
                act(queue, entry)
            except ServiceError as exc:
                failed.append({"Id": entry["Id"], "SenderFault": True, "Code": exc.code, "Message": exc.message})
            else:
                successful.append({"Id": entry["Id"]})
        return {"Successful": successful, "Failed": failed}

    def op_ChangeMessageVisibility(self, params: Mapping[str, Any]) -> dict[str, Any]:
        queue = self.queue(params["QueueUrl"])
        self._change_visibility(queue, str(params["ReceiptHandle"]), int(params["VisibilityTimeout"]))
        return {}

    def _change_visibility(self, queue: Queue, receipt: str, timeout: int) -> None:
        if not 0 <= timeout <= MAX_VISIBILITY_SECONDS:
            raise _invalid(
                f"Value {timeout} for parameter VisibilityTimeout is invalid. Reason: Must be between 0 and 43200."
            )
        message = queue.receipts.get(receipt)
        if message is None:
            raise _error(
                "ReceiptHandleIsInvalid", f'The input receipt handle "{receipt}" is not a valid receipt handle.'
            )
        if message.state != "inflight":
            raise _error(
                "AWS.SimpleQueueService.MessageNotInflight",
                "Message does not exist or is not available for visibility timeout change.",
            )
        now = self.clock()
        queue.hide(message, now + timeout)
        if timeout == 0:
            queue.promote(now)
            self.arrived.notify_all()

    def op_ChangeMessageVisibilityBatch(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return self._each_entry(
            params,
            lambda queue, entry: self._change_visibility(
                queue, str(entry["ReceiptHandle"]), int(entry.get("VisibilityTimeout", 0))
            ),
        )


def _receipt_of(queue: Queue, receipt: str) -> bool:
    """True when `receipt` is a handle this emulator issued for `queue` (the message may be gone since)."""
    try:
        return base64.b64decode(receipt.encode(), validate=True).decode().startswith(queue.name + ":")
    except (ValueError, UnicodeDecodeError):
        return False


def _attribute_matches(pattern: str, name: str) -> bool:
    if pattern in ("All", ".*"):
        return True
    if pattern.endswith(".*"):
        return name.startswith(pattern[:-1])
    return fnmatch.fnmatchcase(name, pattern) if "*" in pattern else name == pattern


def _check_message_attributes(attributes: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    if len(attributes) > 10:
        raise _invalid(f"Number of message attributes [{len(attributes)}] exceeds the allowed maximum [10].")
    checked: dict[str, dict[str, Any]] = {}
    for name, attribute in attributes.items():
        data_type = str(attribute.get("DataType", ""))
        base = data_type.split(".", 1)[0]
        if base not in ("String", "Number", "Binary"):
            raise _invalid(
                f"The type of message (user) attribute '{name}' is invalid. You must use only the following supported type prefixes: Binary, Number, String."
            )
        if attribute.get("StringListValues") or attribute.get("BinaryListValues"):
            raise NotEmulated("list message attribute values")
        if base == "Binary":
            raw = attribute.get("BinaryValue")
            if raw is None:
                raise _invalid(f"Message (user) attribute '{name}' must contain a non-empty value of type 'Binary'.")
            value = raw.encode() if isinstance(raw, str) else bytes(raw)
            checked[str(name)] = {"BinaryValue": value, "DataType": data_type}
        else:
            text = attribute.get("StringValue")
            if text is None or text == "":
                raise _invalid(f"Message (user) attribute '{name}' must contain a non-empty value of type '{base}'.")
            checked[str(name)] = {"StringValue": str(text), "DataType": data_type}
    return checked


def _attributes_size(attributes: Mapping[str, Any] | None) -> int:
    total = 0
    for name, attribute in (attributes or {}).items():
        total += len(str(name).encode()) + len(str(attribute.get("DataType", "")).encode())
        raw = attribute.get("BinaryValue", attribute.get("StringValue", ""))
        total += len(raw) if isinstance(raw, bytes) else len(str(raw).encode())
    return total
