"""Counting what the service asks of AWS: requests by service and operation, DynamoDB units, time in calls.

Hooks go on botocore's event system (`before-parameter-build`, `before-call`, `after-call`) of the boto3
session `mailproxy.aws` creates its clients from, so every call the handlers make is seen, and nothing
else. DynamoDB request units are computed from item sizes (moto reports no consumed capacity), following
AWS's published rules; the rules are in `docs/performance.md` and below, next to the code applying them.
"""

from __future__ import annotations

import base64
import math
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

SQS_CHUNK = 64 * 1024  # SQS bills each 64 KB chunk of a request's payload as one request
KB = 1024
# Assumed in-region round trip per request, for Lambda's billed duration (docs/performance.md).
LATENCY_SECONDS = {"dynamodb": 0.005, "sqs": 0.008, "kms": 0.006, "s3": 0.015, "secretsmanager": 0.01}
POOL_OVERLAP = 16


def attr_size(value: Mapping[str, Any]) -> int:
    """Bytes of one attribute value as DynamoDB counts them (docs: "Item sizes and formats")."""
    ((kind, raw),) = value.items()
    if kind == "S":
        return len(str(raw).encode("utf-8"))
    if kind == "N":
        digits = str(raw).lstrip("-").replace(".", "").lstrip("0") or "0"
        return math.ceil(len(digits) / 2) + 1
    if kind == "B":
        return len(base64.b64decode(raw)) if isinstance(raw, str) else len(bytes(raw))
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(str(v).encode("utf-8")) for v in raw)
    if kind == "NS":
        return sum(attr_size({"N": v}) for v in raw)
    if kind == "BS":
        return sum(attr_size({"B": v}) for v in raw)
    if kind == "L":
        return 3 + sum(attr_size(v) + 1 for v in raw)
    if kind == "M":
        return 3 + sum(len(k.encode("utf-8")) + attr_size(v) + 1 for k, v in raw.items())
    raise ValueError(f"unknown attribute type {kind}")


def item_size(item: Mapping[str, Any] | None) -> int:
    """Bytes of an item in wire format: attribute names plus values."""
    if not item:
        return 0
    return sum(len(name.encode("utf-8")) + attr_size(value) for name, value in item.items())


def write_units(size: int) -> int:
    """Write request units of one write touching `size` bytes: 1 per KB, rounded up, at least 1."""
    return max(1, math.ceil(size / KB))


def read_units(size: int, consistent: bool) -> float:
    """Read request units of one item read: 1 per 4 KB strongly consistent, half that eventually consistent."""
    units = max(1, math.ceil(size / (4 * KB)))
    return float(units) if consistent else units / 2


@dataclass
class Tally:
    """What a run asked of AWS."""

    calls: Counter[str] = field(default_factory=Counter)  # "service.Operation" -> requests
    billed_requests: Counter[str] = field(default_factory=Counter)  # SQS in 64 KB chunks, others 1 per call
    wru: Counter[str] = field(default_factory=Counter)  # table -> write request units (GSI writes included)
    rru: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))  # table -> read request units
    gsi_wru: Counter[str] = field(default_factory=Counter)
    seconds_in_calls: float = 0.0  # wall time spent inside AWS calls (the emulator's share, mostly)
    cpu_in_calls: float = 0.0  # CPU time of the calling threads inside AWS calls (every thread)
    latency: float = 0.0  # modelled in-region wait of the calls: sequential in the caller, pooled ones overlap

    def total_calls(self, prefix: str = "") -> int:
        """Requests whose "service.Operation" starts with `prefix`."""
        return sum(n for name, n in self.calls.items() if name.startswith(prefix))

    def add(self, other: Tally) -> None:
        """Add another tally's counts to this one."""
        self.calls.update(other.calls)
        self.billed_requests.update(other.billed_requests)
        self.wru.update(other.wru)
        self.gsi_wru.update(other.gsi_wru)
        for table, units in other.rru.items():
            self.rru[table] += units
        self.seconds_in_calls += other.seconds_in_calls
        self.cpu_in_calls += other.cpu_in_calls
        self.latency += other.latency


class DynamoSizer:
    """Looks items up in moto's in-process backend (no request) to size writes before and after."""

    def __init__(self, region: str = "us-east-1") -> None:
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.dynamodb.models import dynamodb_backends

        self._backend = dynamodb_backends[DEFAULT_ACCOUNT_ID][region]

    def item(self, table: str, key: Mapping[str, Any]) -> dict[str, Any] | None:
        """The stored item (wire format) with this key, or None."""
        try:
            found = self._backend.get_item(table, dict(key))
        except Exception:
            return None
        return found.to_json()["Attributes"] if found is not None else None

    def key_of(self, table: str, item: Mapping[str, Any]) -> dict[str, Any]:
        """The primary key attributes of a full item."""
        names = [k["AttributeName"] for k in self._backend.get_table(table).schema]
        return {name: item[name] for name in names if name in item}

    def gsi_keys(self, table: str) -> list[tuple[str, ...]]:
        """For each global secondary index, its key attribute names."""
        indexes = self._backend.get_table(table).global_indexes
        return [tuple(k["AttributeName"] for k in index.schema) for index in indexes]

    def gsi_writes(self, table: str, before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> int:
        """Index write units of a write: a put when the item enters or changes in an index, a delete when it leaves."""
        units = 0
        for keys in self.gsi_keys(table):
            was = bool(before) and all(k in before for k in keys)  # type: ignore[operator]
            now = bool(after) and all(k in after for k in keys)  # type: ignore[operator]
            if was and now:
                moved = any(before[k] != after[k] for k in keys)  # type: ignore[index]
                units += 2 if moved else (1 if before != after else 0)
            elif was or now:
                units += 1  # projected items here are keys + priority: well under 1 KB
        return units


class Meter:
    """Registers on a boto3 session and tallies every call its clients make."""

    def __init__(self, sizer: DynamoSizer | None = None) -> None:
        self.tally = Tally()
        self.sizer = sizer
        self._lock = threading.Lock()
        self._sections: list[tuple[Tally, int]] = []

    def attach(self, session: Any) -> None:
        """Count calls of clients created from `session` from now on (boto3 or botocore session)."""
        events = session.events if hasattr(session, "events") else session.get_component("event_emitter")
        events.register("before-parameter-build", self._before)
        events.register("after-call", self._after)
        events.register("after-call-error", self._after_error)

    @contextmanager
    def section(self) -> Iterator[Tally]:
        """A tally of the calls made, by any thread, while the block runs (one invocation at a time)."""
        local = Tally()
        entry = (local, threading.get_ident())
        self._sections.append(entry)
        try:
            yield local
        finally:
            self._sections.remove(entry)

    def _before(self, params: Mapping[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
        context["meter_started"] = time.perf_counter()
        context["meter_cpu"] = time.thread_time()
        service = model.service_model.service_name
        context["meter_name"] = f"{service}.{model.name}"
        if service == "dynamodb" and self.sizer is not None:
            context["meter_before"] = self._dynamo_before(model.name, params)
        if service == "sqs":
            context["meter_billed"] = self._sqs_billed(model.name, params)

    def _after(self, model: Any, parsed: Mapping[str, Any], context: dict[str, Any], **_: Any) -> None:
        self._finish(model, parsed, context)

    def _after_error(self, model: Any, context: dict[str, Any], **_: Any) -> None:
        self._finish(model, {}, context)

    def _finish(self, model: Any, parsed: Mapping[str, Any], context: dict[str, Any]) -> None:
        name = context.get("meter_name")
        if name is None or context.get("meter_done"):
            return
        context["meter_done"] = True
        elapsed = time.perf_counter() - context.get("meter_started", time.perf_counter())
        cpu = time.thread_time() - context.get("meter_cpu", time.thread_time())
        latency = LATENCY_SECONDS.get(name.split(".")[0], 0.01)
        caller = threading.get_ident()
        wru: Counter[str] = Counter()
        gsi: Counter[str] = Counter()
        rru: dict[str, float] = {}
        if "meter_before" in context:
            wru, gsi, rru = self._dynamo_after(model.name, context["meter_before"], parsed)
        with self._lock:
            targets = [(self.tally, caller), *list(self._sections)]
            for tally, invoker in targets:
                tally.calls[name] += 1
                tally.billed_requests[name] += context.get("meter_billed", 1)
                tally.wru.update(wru)
                tally.gsi_wru.update(gsi)
                for table, units in rru.items():
                    tally.rru[table] += units
                tally.seconds_in_calls += elapsed
                tally.cpu_in_calls += cpu
                # A call from a worker thread of the handler overlaps others (intake's pool has 16 threads).
                tally.latency += latency if caller == invoker else latency / POOL_OVERLAP

    # ------------------------------------------------------------------ SQS

    @staticmethod
    def _sqs_billed(operation: str, params: Mapping[str, Any]) -> int:
        if operation == "SendMessageBatch":
            size = sum(len(str(e.get("MessageBody", "")).encode("utf-8")) for e in params.get("Entries", []))
        elif operation == "SendMessage":
            size = len(str(params.get("MessageBody", "")).encode("utf-8"))
        else:
            return 1
        return max(1, math.ceil(size / SQS_CHUNK))

    # ------------------------------------------------------------------ DynamoDB

    def _dynamo_before(self, operation: str, params: Mapping[str, Any]) -> dict[str, Any]:
        assert self.sizer is not None
        sizer = self.sizer
        state: dict[str, Any] = {"writes": [], "reads": []}
        if operation in ("PutItem", "UpdateItem", "DeleteItem"):
            table = params["TableName"]
            key = params["Key"] if "Key" in params else sizer.key_of(table, params["Item"])
            state["writes"].append((table, dict(key), sizer.item(table, key), 1))
        elif operation == "BatchWriteItem":
            for table, requests in params.get("RequestItems", {}).items():
                for request in requests:
                    if "PutRequest" in request:
                        key = sizer.key_of(table, request["PutRequest"]["Item"])
                    else:
                        key = request["DeleteRequest"]["Key"]
                    state["writes"].append((table, dict(key), sizer.item(table, key), 1))
        elif operation == "TransactWriteItems":
            for action in params.get("TransactItems", []):
                ((_kind, body),) = action.items()
                table = body["TableName"]
                key = body["Key"] if "Key" in body else sizer.key_of(table, body["Item"])
                state["writes"].append((table, dict(key), sizer.item(table, key), 2))  # transactions bill 2x
        elif operation == "GetItem":
            table = params["TableName"]
            state["reads"].append((table, item_size(sizer.item(table, params["Key"])), params.get("ConsistentRead")))
        elif operation == "BatchGetItem":
            for table, request in params.get("RequestItems", {}).items():
                for key in request.get("Keys", []):
                    state["reads"].append((table, item_size(sizer.item(table, key)), request.get("ConsistentRead")))
        elif operation in ("Query", "Scan"):
            state["scan"] = (params["TableName"], bool(params.get("ConsistentRead")))
        return state

    def _dynamo_after(
        self, operation: str, state: Mapping[str, Any], parsed: Mapping[str, Any]
    ) -> tuple[Counter[str], Counter[str], dict[str, float]]:
        assert self.sizer is not None
        wru: Counter[str] = Counter()
        gsi: Counter[str] = Counter()
        rru: dict[str, float] = defaultdict(float)
        for table, key, before, factor in state["writes"]:
            after = self.sizer.item(table, key)
            # A write is billed on the larger of the item before and after (a failed condition still costs).
            wru[table] += factor * write_units(max(item_size(before), item_size(after)))
            index_units = self.sizer.gsi_writes(table, before, after) * factor
            wru[table] += index_units
            gsi[table] += index_units
        for table, size, consistent in state["reads"]:
            rru[table] += read_units(size, bool(consistent))
        if "scan" in state:
            table, consistent = state["scan"]
            # Query and Scan sum the sizes of the items read, then round up to 4 KB once.
            size = sum(item_size(i) for i in parsed.get("Items", []))
            rru[table] += read_units(size, consistent)
        return wru, gsi, dict(rru)
