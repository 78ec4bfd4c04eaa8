"""The one builder of DynamoDB expressions: updates, conditions, key conditions, filters and projections as
values, rendered to request kwargs.

Every attribute name is escaped (`#n0`...) and every value is a placeholder (`:v0`...), so no reserved word,
no typo in a hand-kept `ExpressionAttributeNames` and no unused placeholder (which DynamoDB refuses) can
slip in. `expression(update=..., condition=...)` gives the kwargs of `update_item`, `put_item`, `delete_item`
and of a TransactWriteItems `Update`, `Put` or `Delete` action alike; `expression(key=..., filter=...,
projection=...)` those of a `query`, `scan` or one table's part of a `batch_get_item`.

    update = Update().set("status", "sent").append("history", [event]).remove("claim_id")
    ddb().update_item(TableName=t, Key=k, **expression(update, equals("claim_id", claim)))
    query_all(TableName=t, **expression(key=partition("pk", p) & begins_with("sk", "ACCOUNT#"), projection=["sk"]))
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from mailproxy.adapters.aws.dynamo import to_attr


class _Placeholders:
    """Names and values met while rendering: one placeholder per attribute name, one per value written.

    Values are never shared, even equal ones: the text then depends on the request's shape alone, not on
    its data (what a reader of a log, and an emulator's parse cache, expect)."""

    __slots__ = ("_by_name", "names", "values")

    def __init__(self) -> None:
        self.names: dict[str, str] = {}  # "#n0" → attribute name
        self.values: dict[str, dict[str, Any]] = {}  # ":v0" → attribute value
        self._by_name: dict[str, str] = {}

    def name(self, attribute: str) -> str:
        if attribute not in self._by_name:
            self._by_name[attribute] = token = f"#n{len(self.names)}"
            self.names[token] = str(attribute)  # a StrEnum member as its plain value
        return self._by_name[attribute]

    def value(self, value: Any) -> str:
        token = f":v{len(self.values)}"
        self.values[token] = to_attr(value)
        return token


# Conditions ------------------------------------------------------------------------------------------------


class Condition:
    """A condition on an item's attributes; `a & b` and `a | b` compose (AND binds tighter, as in DynamoDB).

    Plain classes with slots, not dataclasses or an ABC: making those at import costs about 2 ms of every
    cold start."""

    __slots__ = ()

    def render(self, p: _Placeholders) -> str:
        """The expression text, its names and values registered in `p`."""
        raise NotImplementedError

    def __and__(self, other: Condition) -> Condition:
        return _Both("AND", (*_parts(self, "AND"), *_parts(other, "AND")))

    def __or__(self, other: Condition) -> Condition:
        return _Both("OR", (*_parts(self, "OR"), *_parts(other, "OR")))


def _parts(condition: Condition, operator: str) -> tuple[Condition, ...]:
    """`condition`'s own parts when it joins them with `operator` (so `a & b & c` is one flat AND)."""
    return condition.parts if isinstance(condition, _Both) and condition.operator == operator else (condition,)


class _Both(Condition):
    __slots__ = ("operator", "parts")

    def __init__(self, operator: str, parts: tuple[Condition, ...]) -> None:
        self.operator = operator  # AND, OR
        self.parts = parts

    def render(self, p: _Placeholders) -> str:
        rendered = (part.render(p) for part in self.parts)
        # A nested AND/OR is always bracketed: the text reads as the code composed it.
        return f" {self.operator} ".join(
            f"({text})" if isinstance(part, _Both) else text for part, text in zip(self.parts, rendered, strict=True)
        )


class _Function(Condition):
    __slots__ = ("function", "name")

    def __init__(self, function: str, name: str) -> None:
        self.function = function  # attribute_exists, attribute_not_exists
        self.name = name

    def render(self, p: _Placeholders) -> str:
        return f"{self.function}({p.name(self.name)})"


class _Compare(Condition):
    __slots__ = ("name", "operator", "value")

    def __init__(self, name: str, operator: str, value: Any) -> None:
        self.name = name
        self.operator = operator  # =, <, <=
        self.value = value

    def render(self, p: _Placeholders) -> str:
        return f"{p.name(self.name)} {self.operator} {p.value(self.value)}"


class _Between(Condition):
    __slots__ = ("high", "low", "name")

    def __init__(self, name: str, low: Any, high: Any) -> None:
        self.name = name
        self.low = low
        self.high = high

    def render(self, p: _Placeholders) -> str:
        return f"{p.name(self.name)} BETWEEN {p.value(self.low)} AND {p.value(self.high)}"


class _BeginsWith(Condition):
    __slots__ = ("name", "prefix")

    def __init__(self, name: str, prefix: str) -> None:
        self.name = name
        self.prefix = prefix

    def render(self, p: _Placeholders) -> str:
        return f"begins_with({p.name(self.name)}, {p.value(self.prefix)})"


class _In(Condition):
    __slots__ = ("name", "values")

    def __init__(self, name: str, values: tuple[Any, ...]) -> None:
        self.name = name
        self.values = values

    def render(self, p: _Placeholders) -> str:
        return f"{p.name(self.name)} IN ({', '.join(p.value(v) for v in self.values)})"


def exists(name: str) -> Condition:
    """The item has attribute `name` (on a key attribute: the item exists)."""
    return _Function("attribute_exists", name)


def absent(name: str) -> Condition:
    """The item lacks attribute `name` (on a key attribute: there is no such item)."""
    return _Function("attribute_not_exists", name)


def lacks(name: str, member: str) -> Condition:
    """The set (or string) `name` does not contain `member` (true when the attribute is absent)."""
    return _Lacks(name, member)


class _Lacks(Condition):
    __slots__ = ("member", "name")

    def __init__(self, name: str, member: str) -> None:
        self.name = name
        self.member = member

    def render(self, p: _Placeholders) -> str:
        return f"NOT contains({p.name(self.name)}, {p.value(self.member)})"


def equals(name: str, value: Any) -> Condition:
    """Attribute `name` equals `value`."""
    return _Compare(name, "=", value)


def less_than(name: str, value: Any) -> Condition:
    """Attribute `name` is below `value` (false when it is absent)."""
    return _Compare(name, "<", value)


def at_most(name: str, value: Any) -> Condition:
    """Attribute `name` is at most `value` (false when it is absent)."""
    return _Compare(name, "<=", value)


def between(name: str, low: Any, high: Any) -> Condition:
    """Attribute `name` is from `low` to `high`, both included."""
    return _Between(name, low, high)


def begins_with(name: str, prefix: str) -> Condition:
    """The string `name` starts with `prefix`."""
    return _BeginsWith(name, prefix)


def is_in(name: str, values: Iterable[Any]) -> Condition:
    """Attribute `name` equals one of `values` (1 to 100 of them)."""
    chosen = tuple(values)
    if not 1 <= len(chosen) <= 100:
        raise ValueError(f"IN takes 1 to 100 values, got {len(chosen)}")
    return _In(name, chosen)


# Key conditions --------------------------------------------------------------------------------------------


class KeyCondition:
    """The items of one partition a Query reads: `partition(...)`, narrowed by `& <sort-key condition>`."""

    __slots__ = ("partition", "sort")

    def __init__(self, partition: Condition, sort: Condition | None = None) -> None:
        self.partition = partition
        self.sort = sort

    def __and__(self, sort: Condition) -> KeyCondition:
        # DynamoDB takes one condition on the sort key, and only these: refuse the rest here, readably.
        if self.sort is not None:
            raise ValueError("a key condition takes one sort-key condition")
        if not isinstance(sort, _Compare | _Between | _BeginsWith):
            raise ValueError("a sort-key condition is a comparison, between or begins_with")
        return KeyCondition(self.partition, sort)

    def render(self, p: _Placeholders) -> str:
        """The KeyConditionExpression text, its names and values registered in `p`."""
        text = self.partition.render(p)
        return text if self.sort is None else f"{text} AND {self.sort.render(p)}"


def partition(name: str, value: Any) -> KeyCondition:
    """Every item whose partition key `name` is `value` (of a table, or of the index a Query names)."""
    return KeyCondition(equals(name, value))


# Updates ---------------------------------------------------------------------------------------------------


class Update:
    """The changes of one UpdateItem, collected by chained calls; each attribute changed at most once."""

    __slots__ = ("_adds", "_removes", "_sets", "_touched")

    def __init__(self) -> None:
        self._sets: list[tuple[str, str, Any]] = []  # (name, form, value); form: value, if_absent, append
        self._adds: list[tuple[str, int | frozenset[str]]] = []
        self._removes: list[str] = []
        self._touched: set[str] = set()

    def _touch(self, name: str) -> None:
        # DynamoDB refuses two actions on one attribute ("Two document paths overlap"): fail here, readably.
        if name in self._touched:
            raise ValueError(f"attribute {name!r} is changed twice in one update")
        self._touched.add(name)

    def set(self, name: str, value: Any) -> Update:
        """Store `value` in `name` (None stores DynamoDB's NULL: `remove` takes an attribute away)."""
        self._touch(name)
        self._sets.append((name, "value", value))
        return self

    def set_if_absent(self, name: str, value: Any) -> Update:
        """Store `value` in `name` unless the item has it already (`if_not_exists`)."""
        self._touch(name)
        self._sets.append((name, "if_absent", value))
        return self

    def append(self, name: str, items: list[Any]) -> Update:
        """Append `items` to the list `name`, starting it when absent."""
        self._touch(name)
        self._sets.append((name, "append", items))
        return self

    def add(self, name: str, number: int | frozenset[str]) -> Update:
        """Add `number` to the number `name` (an absent one counts as 0), or a set's members to the string set
        `name` (an absent one starts empty)."""
        self._touch(name)
        self._adds.append((name, number))
        return self

    def remove(self, *names: str) -> Update:
        """Take these attributes away (nothing happens to an absent one)."""
        for name in names:
            self._touch(name)
            self._removes.append(name)
        return self

    def render(self, p: _Placeholders) -> str:
        """The UpdateExpression text, its names and values registered in `p`."""
        sets = []
        for name, form, value in self._sets:
            n = p.name(name)
            if form == "if_absent":
                sets.append(f"{n} = if_not_exists({n}, {p.value(value)})")
            elif form == "append":
                sets.append(f"{n} = list_append(if_not_exists({n}, {p.value([])}), {p.value(value)})")
            else:
                sets.append(f"{n} = {p.value(value)}")
        clauses = []
        if sets:
            clauses.append("SET " + ", ".join(sets))
        if self._adds:
            clauses.append("ADD " + ", ".join(f"{p.name(name)} {p.value(number)}" for name, number in self._adds))
        if self._removes:
            clauses.append("REMOVE " + ", ".join(p.name(name) for name in self._removes))
        if not clauses:
            raise ValueError("an update changes at least one attribute")
        return " ".join(clauses)


def expression(
    update: Update | None = None,
    condition: Condition | None = None,
    *,
    key: KeyCondition | None = None,
    filter: Condition | None = None,  # DynamoDB's word (FilterExpression), though it shadows the builtin
    projection: Iterable[str] = (),
) -> dict[str, Any]:
    """The request kwargs of an update, condition, key condition, filter and/or projection (the attributes
    read): `UpdateExpression`, `ConditionExpression`, `KeyConditionExpression`, `FilterExpression`,
    `ProjectionExpression`, `ExpressionAttributeNames` and `ExpressionAttributeValues`, each only when there
    is something in it."""
    if isinstance(projection, str):
        raise TypeError("projection takes attribute names, not one string")
    p = _Placeholders()
    kwargs: dict[str, Any] = {}
    if update is not None:
        kwargs["UpdateExpression"] = update.render(p)
    if condition is not None:
        kwargs["ConditionExpression"] = condition.render(p)
    if key is not None:
        kwargs["KeyConditionExpression"] = key.render(p)
    if filter is not None:
        kwargs["FilterExpression"] = filter.render(p)
    if names := [p.name(name) for name in projection]:
        kwargs["ProjectionExpression"] = ", ".join(names)
    if p.names:
        kwargs["ExpressionAttributeNames"] = p.names
    if p.values:
        kwargs["ExpressionAttributeValues"] = p.values
    return kwargs
