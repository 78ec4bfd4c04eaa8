"""Applying a parsed update expression to an item, as DynamoDB does.

Every right-hand side is read from the item as it was before the update; then SET, REMOVE, ADD and
DELETE are applied to a copy. Nested SETs need their parent to exist; a SET past the end of a list
appends; REMOVEs of list elements use the original indexes.

Stored items are never mutated, so the copy is copy-on-write: the top level and the containers on the
paths an action changes are copied, everything else is shared with the old item.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from local.fastaws import values as v
from local.fastaws.errors import ValidationError
from local.fastaws.expressions import Action, Path, Values

_INVALID_PATH = "The document path provided in the update expression is invalid for update"


def apply_update(
    old: Mapping[str, v.Value], actions: Iterable[Action], values: Values, key_names: Iterable[str]
) -> tuple[v.Item, set[str]]:
    """The item after `actions`, and the top-level attributes they touched."""
    keys = set(key_names)
    actions = list(actions)
    for action in actions:
        top = action.path[0]
        if top in keys:
            raise ValidationError(
                f"One or more parameter values were invalid: Cannot update attribute {top}. "
                "This attribute is part of the key"
            )
    # Right-hand sides come from the original item.
    computed = [
        (action, action.operand.value(old, values) if action.operand is not None else None) for action in actions
    ]
    new = _Copy(old)
    removals: list[Path] = []
    for action, value in computed:
        if action.verb == "SET":
            assert value is not None
            _set(new, action.path, value)
        elif action.verb == "REMOVE":
            removals.append(action.path)
        elif action.verb == "ADD":
            assert value is not None
            _add(new, action.path, value)
        else:
            assert value is not None
            _delete(new, action.path, value)
    _remove_all(new, removals)
    return new.item, {str(action.path[0]) for action in actions}


class _Copy:
    """The new item: a shallow copy whose containers are copied the first time an action goes through them."""

    def __init__(self, old: Mapping[str, v.Value]) -> None:
        self.item: v.Item = dict(old)
        self._fresh: set[int] = set()

    def container(self, path: Path) -> Any:
        """The (copied) container holding the last step of `path`; ValidationException if a step is missing."""
        container: Any = self.item
        for depth, step in enumerate(path[:-1]):
            if isinstance(container, dict):
                if not isinstance(step, str) or step not in container:
                    raise ValidationError(_INVALID_PATH)
            elif not isinstance(step, int) or step >= len(container):
                raise ValidationError(_INVALID_PATH)
            current = container[step]
            tag = "L" if isinstance(path[depth + 1], int) else "M"
            inner = current.get(tag)
            if inner is None:
                raise ValidationError(_INVALID_PATH)
            if id(inner) not in self._fresh:
                inner = list(inner) if tag == "L" else dict(inner)
                self._fresh.add(id(inner))
                container[step] = {tag: inner}
            container = inner
        return container


def _set(item: _Copy, path: Path, value: v.Value) -> None:
    _put(item.container(path), path[-1], value)


def _remove_all(item: _Copy, paths: list[Path]) -> None:
    # Locate every target first, then delete list elements from the highest index down.
    targets: list[tuple[Any, str | int]] = []
    for path in paths:
        try:
            container = item.container(path)
        except ValidationError:
            continue
        targets.append((container, path[-1]))
    for container, last in sorted(targets, key=lambda t: t[1] if isinstance(t[1], int) else -1, reverse=True):
        if isinstance(container, list):
            if isinstance(last, int) and last < len(container):
                del container[last]
        else:
            container.pop(last, None)


def _add(item: _Copy, path: Path, value: v.Value) -> None:
    tag = v.kind(value)
    if tag != "N" and tag not in v.SET_TYPES:
        raise ValidationError(
            f"Invalid UpdateExpression: Incorrect operand type for operator or function; operator: ADD, operand type: {_type_name(tag)}"
        )
    container = item.container(path)
    last = path[-1]
    current = _get(container, last)
    if current is None:
        _put(container, last, value)
        return
    if v.kind(current) != tag:
        raise ValidationError("An operand in the update expression has an incorrect data type")
    if tag == "N":
        total = v.NUMBERS.add(Decimal(current["N"]), Decimal(value["N"]))
        _put(container, last, {"N": v.number_text(total)})
        return
    merged = list(current[tag])
    present = {_member_key(tag, m) for m in merged}
    for member in value[tag]:
        if _member_key(tag, member) not in present:
            merged.append(member)
            present.add(_member_key(tag, member))
    _put(container, last, {tag: merged})


def _delete(item: _Copy, path: Path, value: v.Value) -> None:
    tag = v.kind(value)
    if tag not in v.SET_TYPES:
        raise ValidationError(
            f"Invalid UpdateExpression: Incorrect operand type for operator or function; operator: DELETE, operand type: {_type_name(tag)}"
        )
    container = item.container(path)
    last = path[-1]
    current = _get(container, last)
    if current is None:
        return
    if v.kind(current) != tag:
        raise ValidationError("An operand in the update expression has an incorrect data type")
    gone = {_member_key(tag, m) for m in value[tag]}
    kept = [m for m in current[tag] if _member_key(tag, m) not in gone]
    if kept:
        _put(container, last, {tag: kept})
    elif isinstance(container, list):
        assert isinstance(last, int)
        del container[last]
    else:
        container.pop(last, None)


def _get(container: Any, last: str | int) -> v.Value | None:
    if isinstance(container, list):
        return container[last] if isinstance(last, int) and last < len(container) else None
    result: v.Value | None = container.get(last)
    return result


def _put(container: Any, last: str | int, value: v.Value) -> None:
    if isinstance(container, list):
        assert isinstance(last, int)
        if last < len(container):
            container[last] = value
        else:
            container.append(value)
    else:
        container[last] = value


def _member_key(tag: str, member: Any) -> Any:
    return v.number(member) if tag == "NS" else member


def _type_name(tag: str) -> str:
    return tag
