"""Low-level DynamoDB helpers: typed (de)serialisation and batched calls with unprocessed retries."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from decimal import Decimal
from typing import Any

from mailproxy.aws import client, error_code

Item = dict[str, Any]


def to_attr(value: Any) -> dict[str, Any]:
    """A Python value as a DynamoDB attribute value (ints stay exact, floats go through str)."""
    if value is None:
        return {"NULL": True}
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, int | Decimal):
        return {"N": str(value)}
    if isinstance(value, float):
        return {"N": repr(value)}
    if isinstance(value, str):
        return {"S": value if type(value) is str else str(value)}  # a StrEnum member is stored as its plain value
    if isinstance(value, bytes | bytearray):
        return {"B": bytes(value)}
    if isinstance(value, Mapping):
        return {"M": {str(k): to_attr(v) for k, v in value.items()}}
    if isinstance(value, list | tuple):
        return {"L": [to_attr(v) for v in value]}
    if isinstance(value, set | frozenset):
        return {"SS": sorted(str(v) for v in value)}
    raise TypeError(f"cannot store {type(value).__name__} in DynamoDB")


def from_attr(attr: Mapping[str, Any]) -> Any:
    """A DynamoDB attribute value as a Python value (numbers as int when integral)."""
    ((kind, value),) = attr.items()
    if kind == "S":
        return value
    if kind == "N":
        return int(value) if value.lstrip("-").isdigit() else float(value)
    if kind == "BOOL":
        return value
    if kind == "NULL":
        return None
    if kind == "B":
        return bytes(value)
    if kind == "M":
        return {k: from_attr(v) for k, v in value.items()}
    if kind == "L":
        return [from_attr(v) for v in value]
    if kind in ("SS", "NS", "BS"):
        return set(value)
    raise TypeError(f"unknown DynamoDB type {kind}")


def to_item(values: Mapping[str, Any]) -> dict[str, Any]:
    """A dict as a DynamoDB item (None values left out)."""
    return {k: to_attr(v) for k, v in values.items() if v is not None}


def from_item(item: Mapping[str, Any]) -> Item:
    """A DynamoDB item as a dict."""
    return {k: from_attr(v) for k, v in item.items()}


def ddb() -> Any:
    """The process's DynamoDB client."""
    return client("dynamodb")


def chunks[T](values: list[T], size: int) -> Iterator[list[T]]:
    """`values` in consecutive slices of at most `size`."""
    for start in range(0, len(values), size):
        yield values[start : start + size]


def batch_get(table: str, keys: list[dict[str, Any]], **read: Any) -> list[Item]:
    """Every existing item among `keys` (BatchGetItem by 100, unprocessed keys retried); `read` joins the
    table's request (an `expression(projection=[...])`)."""
    found: list[Item] = []
    for part in chunks(keys, 100):
        request: dict[str, Any] = {**read, "Keys": [to_item(k) for k in part], "ConsistentRead": True}
        pending: dict[str, Any] = {table: request}
        for attempt in range(8):
            reply = ddb().batch_get_item(RequestItems=pending)
            found.extend(from_item(i) for i in reply.get("Responses", {}).get(table, []))
            pending = reply.get("UnprocessedKeys") or {}
            if not pending:
                break
            time.sleep(min(0.05 * 2**attempt, 1.0))
    return found


def batch_write(table: str, puts: Iterable[Mapping[str, Any]] = (), deletes: Iterable[Mapping[str, Any]] = ()) -> None:
    """Put and delete items by 25 (BatchWriteItem), retrying unprocessed ones."""
    requests: list[dict[str, Any]] = [{"PutRequest": {"Item": to_item(i)}} for i in puts]
    requests += [{"DeleteRequest": {"Key": to_item(k)}} for k in deletes]
    for part in chunks(requests, 25):
        pending: dict[str, Any] = {table: part}
        for attempt in range(10):
            reply = ddb().batch_write_item(RequestItems=pending)
            pending = reply.get("UnprocessedItems") or {}
            if not pending:
                break
            time.sleep(min(0.05 * 2**attempt, 1.0))
        else:
            raise RuntimeError(f"BatchWriteItem on {table} left items unprocessed")


def query_all(**kwargs: Any) -> Iterator[Item]:
    """Every item a Query returns, following pagination."""
    while True:
        reply = ddb().query(**kwargs)
        yield from (from_item(i) for i in reply.get("Items", []))
        if "LastEvaluatedKey" not in reply:
            return
        kwargs["ExclusiveStartKey"] = reply["LastEvaluatedKey"]


def scan_all(**kwargs: Any) -> Iterator[Item]:
    """Every item a Scan returns, following pagination."""
    while True:
        reply = ddb().scan(**kwargs)
        yield from (from_item(i) for i in reply.get("Items", []))
        if "LastEvaluatedKey" not in reply:
            return
        kwargs["ExclusiveStartKey"] = reply["LastEvaluatedKey"]


def conditional_write(call: Callable[..., dict[str, Any]], **request: Any) -> dict[str, Any] | None:
    """Run a conditional write (`ddb().update_item`, `put_item`, `transact_write_items`...): its reply, or
    None when DynamoDB refused it because a condition did not hold (a lost race, not an error)."""
    try:
        return call(**request)
    except Exception as exc:
        if is_conditional_failure(exc):
            return None
        raise


def _cancellation_codes(exc: Exception) -> list[str]:
    if error_code(exc) != "TransactionCanceledException":
        return []
    response = getattr(exc, "response", None) or {}
    return [str((reason or {}).get("Code") or "None") for reason in response.get("CancellationReasons") or []]


def is_conditional_failure(exc: Exception) -> bool:
    """True when a condition failed (a lost race, not an error): a ConditionalCheckFailedException, or a
    cancelled transaction one of whose conditions failed. A transaction cancelled by a conflict with another
    one, or by throttling, is an error (`is_transaction_conflict` tells the first apart)."""
    code = error_code(exc)
    if code == "ConditionalCheckFailedException":
        return True
    return "ConditionalCheckFailed" in _cancellation_codes(exc)


def is_transaction_conflict(exc: Exception) -> bool:
    """True for a transaction cancelled only because another one was writing the same items: trying again is
    the cure (DynamoDB does not retry these itself)."""
    codes = _cancellation_codes(exc)
    return "TransactionConflict" in codes and "ConditionalCheckFailed" not in codes
