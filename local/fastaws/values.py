"""DynamoDB attribute values in botocore's parsed shape (`{"S": "x"}`, `{"N": "1"}`, `{"B": b"..."}`...).

Items are kept in that shape, so a reply needs no conversion, only a copy (callers may mutate what they get).
"""

from __future__ import annotations

import decimal
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from local.fastaws.errors import ValidationError

Value = dict[str, Any]
Item = dict[str, Value]

SET_TYPES = frozenset({"SS", "NS", "BS"})
SCALAR_TYPES = frozenset({"S", "N", "B"})
ALL_TYPES = frozenset({"S", "N", "B", "BOOL", "NULL", "M", "L", "SS", "NS", "BS"})
MAX_ITEM_BYTES = 400 * 1024
# DynamoDB numbers: up to 38 digits of precision.
NUMBERS = decimal.Context(prec=38, traps=[decimal.InvalidOperation, decimal.Overflow, decimal.Inexact])


def kind(value: Value) -> str:
    """The type tag of an attribute value."""
    for tag in value:
        return tag
    raise ValidationError("Supplied AttributeValue is empty, must contain exactly one of the supported datatypes")


def copy_value(value: Value) -> Value:
    """A deep copy of an attribute value (faster than copy.deepcopy on this shape)."""
    ((tag, raw),) = value.items()
    if tag == "M":
        return {"M": {name: copy_value(v) for name, v in raw.items()}}
    if tag == "L":
        return {"L": [copy_value(v) for v in raw]}
    if tag in SET_TYPES:
        return {tag: list(raw)}
    return {tag: raw}


def copy_item(item: Mapping[str, Value]) -> Item:
    """A deep copy of an item."""
    return {name: copy_value(value) for name, value in item.items()}


def number(text: str) -> Decimal:
    """A DynamoDB number as a Decimal; ValidationException for text that is not one."""
    try:
        parsed = Decimal(text)
    except (decimal.InvalidOperation, TypeError, ValueError):
        raise ValidationError("A value provided cannot be converted into a number") from None
    if not parsed.is_finite():
        raise ValidationError("A value provided cannot be converted into a number")
    return parsed


def number_text(value: Decimal) -> str:
    """The canonical text DynamoDB returns for a number (`1.50` → `1.5`, `1E+2` → `100`)."""
    if value == 0:
        return "0"
    text = format(value.normalize(NUMBERS), "f")
    return text


def normalize_value(value: Any, *, path: str = "") -> Value:
    """A request's attribute value checked as DynamoDB checks it, copied, numbers in canonical form."""
    if not isinstance(value, Mapping) or len(value) != 1:
        raise ValidationError(
            "Supplied AttributeValue has more than one datatypes set, must contain exactly one of the supported datatypes"
            if isinstance(value, Mapping) and value
            else "Supplied AttributeValue is empty, must contain exactly one of the supported datatypes"
        )
    ((tag, raw),) = value.items()
    if tag == "S":
        return {"S": str(raw)}
    if tag == "N":
        text = str(raw)
        # Plain integers without leading zeros are already canonical (most numbers: timestamps, counters).
        digits = text[1:] if text[:1] == "-" else text
        if digits.isdigit() and digits.isascii() and (digits[0] != "0" or digits == "0") and len(digits) <= 38:
            return {"N": "0" if digits == "0" else text}
        return {"N": number_text(number(text))}
    if tag == "B":
        return {"B": raw.encode() if isinstance(raw, str) else bytes(raw)}
    if tag == "BOOL":
        return {"BOOL": bool(raw)}
    if tag == "NULL":
        if raw is not True:
            raise ValidationError(
                "One or more parameter values were invalid: Null attribute value types must have the value of true"
            )
        return {"NULL": True}
    if tag == "M":
        return {"M": {str(name): normalize_value(v, path=f"{path}.{name}") for name, v in raw.items()}}
    if tag == "L":
        return {"L": [normalize_value(v, path=path) for v in raw]}
    if tag in SET_TYPES:
        members = list(raw)
        if not members:
            raise ValidationError(
                "One or more parameter values were invalid: An "
                + {"SS": "string", "NS": "number", "BS": "binary"}[tag]
                + " set  may not be empty"
            )
        if tag == "NS":
            members = [number_text(number(str(m))) for m in members]
            distinct = {number(m) for m in members}
        elif tag == "BS":
            members = [m.encode() if isinstance(m, str) else bytes(m) for m in members]
            distinct = set(members)
        else:
            members = [str(m) for m in members]
            distinct = set(members)
        if len(distinct) != len(members):
            raise ValidationError("One or more parameter values were invalid: Input collection contains duplicates")
        return {tag: members}
    raise ValidationError(f"Supplied AttributeValue has an unknown datatype {tag}")


def normalize_item(item: Any) -> Item:
    """A request's item, checked and copied."""
    if not isinstance(item, Mapping):
        raise ValidationError("Item must be a map")
    return {str(name): normalize_value(value, path=str(name)) for name, value in item.items()}


def equal(a: Value | None, b: Value | None) -> bool:
    """DynamoDB equality: same type and same value (numbers by value, sets regardless of order)."""
    if a is b:
        return a is not None  # stored items share unchanged values: identity is the common, cheap case
    if a is None or b is None:
        return False
    ((ta, ra),) = a.items()
    ((tb, rb),) = b.items()
    if ta != tb:
        return False
    if ta == "N":
        return number(ra) == number(rb)
    if ta == "NS":
        return {number(x) for x in ra} == {number(x) for x in rb}
    if ta in ("SS", "BS"):
        return set(ra) == set(rb)
    if ta == "M":
        return ra.keys() == rb.keys() and all(equal(ra[k], rb[k]) for k in ra)
    if ta == "L":
        return len(ra) == len(rb) and all(equal(x, y) for x, y in zip(ra, rb, strict=True))
    return bool(ra == rb)


def sortable(value: Value) -> Any:
    """The Python value that orders as DynamoDB orders a scalar (numbers by value, strings and binary by bytes)."""
    ((tag, raw),) = value.items()
    if tag == "N":
        return number(raw)
    return raw


def value_size(value: Value) -> int:
    """Bytes a value counts for in DynamoDB's item size (the documented rules, rounded as AWS does)."""
    for tag, raw in value.items():
        if tag == "S":
            return len(raw) if raw.isascii() else len(raw.encode())
        if tag == "N":
            # Leading and trailing zeros do not count: one byte per two significant digits, plus one.
            digits = len(raw.lstrip("-").replace(".", "").strip("0")) or 1
            return (digits + 1) // 2 + 1
        if tag == "M":
            return 3 + sum((len(k) if k.isascii() else len(k.encode())) + value_size(v) + 1 for k, v in raw.items())
        if tag == "L":
            return 3 + sum(value_size(v) + 1 for v in raw)
        if tag == "B":
            return len(raw)
        if tag in ("BOOL", "NULL"):
            return 1
        if tag == "SS":
            return sum(len(m.encode()) for m in raw)
        if tag == "BS":
            return sum(len(m) for m in raw)
        if tag == "NS":
            return sum(value_size({"N": m}) for m in raw)
    return 0


def item_size(item: Mapping[str, Value]) -> int:
    """An item's size as DynamoDB counts it against the 400 KB limit: names plus values."""
    return sum(
        (len(name) if name.isascii() else len(name.encode())) + value_size(value) for name, value in item.items()
    )


def size_of(value: Value) -> int | None:
    """The `size()` function: length of a string, binary, list, map or set; None for other types."""
    ((tag, raw),) = value.items()
    if tag == "S":
        return len(raw)
    if tag in ("B", "L", "M") or tag in SET_TYPES:
        return len(raw)
    return None
