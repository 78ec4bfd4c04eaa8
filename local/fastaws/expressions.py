"""DynamoDB expressions: parsed once per text (cached), then evaluated against items.

Covers condition and filter expressions (comparators, IN, BETWEEN, AND/OR/NOT, parentheses,
attribute_exists, attribute_not_exists, attribute_type, begins_with, contains, size), update expressions
(SET with `+`/`-`, if_not_exists, list_append; REMOVE; ADD; DELETE), key conditions and projections,
with nested paths (`#a.b[3].#c`). Expression attribute names are resolved at parse time; values are
looked up at evaluation, so one parse serves every request with the same text and names.
"""

from __future__ import annotations

import functools
import importlib.util
import pathlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from local.fastaws import values as v
from local.fastaws.errors import ValidationError

Path = tuple[str | int, ...]
Values = Mapping[str, v.Value]

_TOKEN = re.compile(
    r"\s*(?:(?P<name>#[A-Za-z0-9_]+)|(?P<value>:[A-Za-z0-9_]+)|(?P<ident>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<number>\d+)|(?P<op><>|<=|>=|[=<>()\[\],.+\-]))"
)
_COMPARATORS = frozenset({"=", "<>", "<", "<=", ">", ">="})
_CONDITION_FUNCTIONS = frozenset(
    {"attribute_exists", "attribute_not_exists", "attribute_type", "begins_with", "contains", "size"}
)
_UPDATE_FUNCTIONS = frozenset({"if_not_exists", "list_append"})


@functools.cache
def reserved_words() -> frozenset[str]:
    """DynamoDB's reserved words (AWS's published list, as shipped in moto's package data)."""
    # Read the file from moto's package directory without importing moto.dynamodb (a second of imports).
    spec = importlib.util.find_spec("moto")
    if spec is None or not spec.submodule_search_locations:  # pragma: no cover - moto is a dev dependency
        return frozenset()
    path = pathlib.Path(next(iter(spec.submodule_search_locations))) / "dynamodb" / "parsing" / "reserved_keywords.txt"
    try:
        text = path.read_text()
    except OSError:  # pragma: no cover
        return frozenset()
    return frozenset(word.strip().upper() for word in text.split() if word.strip())


@dataclass(frozen=True)
class Token:
    kind: str  # name, value, ident, number, op, end
    text: str


def _tokenize(expression: str, what: str) -> list[Token]:
    tokens: list[Token] = []
    position = 0
    text = expression.rstrip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise ValidationError(
                f'Invalid {what}: Syntax error; token: "{text[position:].strip()[:1]}", near: "{text[max(0, position - 5) : position + 5].strip()}"'
            )
        position = match.end()
        group = match.lastgroup
        assert group is not None
        tokens.append(Token(group, match.group(group)))
    tokens.append(Token("end", "<EOF>"))
    return tokens


# ---------------------------------------------------------------------- operands


class Operand:
    """Something that evaluates to an attribute value, or None when it names a missing attribute."""

    def value(self, item: Mapping[str, v.Value], values: Values) -> v.Value | None:
        raise NotImplementedError


@dataclass(frozen=True)
class PathOperand(Operand):
    path: Path

    def value(self, item: Mapping[str, v.Value], values: Values) -> v.Value | None:
        return resolve(item, self.path)


@dataclass(frozen=True)
class ValueOperand(Operand):
    placeholder: str

    def value(self, item: Mapping[str, v.Value], values: Values) -> v.Value | None:
        return values[self.placeholder]


@dataclass(frozen=True)
class SizeOperand(Operand):
    path: Path

    def value(self, item: Mapping[str, v.Value], values: Values) -> v.Value | None:
        found = resolve(item, self.path)
        size = v.size_of(found) if found is not None else None
        return None if size is None else {"N": str(size)}


def resolve(item: Mapping[str, v.Value], path: Path) -> v.Value | None:
    """The value at a document path, or None when any step is missing or of the wrong type."""
    first = path[0]
    current: v.Value | None = item.get(first) if isinstance(first, str) else None
    for step in path[1:]:
        if current is None:
            return None
        if isinstance(step, int):
            listed = current.get("L")
            current = listed[step] if listed is not None and step < len(listed) else None
        else:
            mapped = current.get("M")
            current = mapped.get(step) if mapped is not None else None
    return current


# ---------------------------------------------------------------------- conditions


class Condition:
    """A boolean expression over an item."""

    def holds(self, item: Mapping[str, v.Value], values: Values) -> bool:
        raise NotImplementedError


def _compare(op: str, left: v.Value | None, right: v.Value | None) -> bool:
    if op == "=":
        return v.equal(left, right)
    if op == "<>":
        # A missing attribute is not equal to anything.
        return not v.equal(left, right)
    if left is None or right is None:
        return False
    tag = v.kind(left)
    if tag != v.kind(right) or tag not in v.SCALAR_TYPES:
        return False
    a, b = v.sortable(left), v.sortable(right)
    if op == "<":
        return bool(a < b)
    if op == "<=":
        return bool(a <= b)
    if op == ">":
        return bool(a > b)
    return bool(a >= b)


@dataclass(frozen=True)
class Comparison(Condition):
    op: str
    left: Operand
    right: Operand

    def holds(self, item: Mapping[str, v.Value], values: Values) -> bool:
        return _compare(self.op, self.left.value(item, values), self.right.value(item, values))


@dataclass(frozen=True)
class Between(Condition):
    operand: Operand
    low: Operand
    high: Operand

    def holds(self, item: Mapping[str, v.Value], values: Values) -> bool:
        low, high = self.low.value(item, values), self.high.value(item, values)
        if low is not None and high is not None and _compare(">", low, high):
            raise ValidationError(
                "Invalid ConditionExpression: The BETWEEN operator requires upper bound to be greater than or "
                f"equal to lower bound; lower operand: {low}, upper operand: {high}"
            )
        found = self.operand.value(item, values)
        return _compare(">=", found, low) and _compare("<=", found, high)


@dataclass(frozen=True)
class In(Condition):
    operand: Operand
    choices: tuple[Operand, ...]

    def holds(self, item: Mapping[str, v.Value], values: Values) -> bool:
        found = self.operand.value(item, values)
        return found is not None and any(v.equal(found, c.value(item, values)) for c in self.choices)


@dataclass(frozen=True)
class And(Condition):
    left: Condition
    right: Condition

    def holds(self, item: Mapping[str, v.Value], values: Values) -> bool:
        return self.left.holds(item, values) and self.right.holds(item, values)


@dataclass(frozen=True)
class Or(Condition):
    left: Condition
    right: Condition

    def holds(self, item: Mapping[str, v.Value], values: Values) -> bool:
        return self.left.holds(item, values) or self.right.holds(item, values)


@dataclass(frozen=True)
class Not(Condition):
    inner: Condition

    def holds(self, item: Mapping[str, v.Value], values: Values) -> bool:
        return not self.inner.holds(item, values)


@dataclass(frozen=True)
class Exists(Condition):
    path: Path
    wanted: bool

    def holds(self, item: Mapping[str, v.Value], values: Values) -> bool:
        return (resolve(item, self.path) is not None) == self.wanted


@dataclass(frozen=True)
class AttributeType(Condition):
    path: Path
    type_operand: Operand

    def holds(self, item: Mapping[str, v.Value], values: Values) -> bool:
        found = resolve(item, self.path)
        wanted = self.type_operand.value(item, values)
        if wanted is None or v.kind(wanted) != "S" or wanted["S"] not in v.ALL_TYPES:
            raise ValidationError(
                "Invalid ConditionExpression: Invalid attribute type name found; type: "
                f"{wanted}, valid types: {{B,NULL,SS,BOOL,L,BS,N,NS,S,M}}"
            )
        return found is not None and v.kind(found) == wanted["S"]


@dataclass(frozen=True)
class BeginsWith(Condition):
    operand: Operand
    prefix: Operand

    def holds(self, item: Mapping[str, v.Value], values: Values) -> bool:
        found, prefix = self.operand.value(item, values), self.prefix.value(item, values)
        if prefix is not None and v.kind(prefix) not in ("S", "B"):
            raise ValidationError(
                "Invalid ConditionExpression: Incorrect operand type for operator or function; "
                f"operator or function: begins_with, operand type: {v.kind(prefix)}"
            )
        if found is None or prefix is None or v.kind(found) != v.kind(prefix):
            return False
        return bool(found[v.kind(found)].startswith(prefix[v.kind(prefix)]))


@dataclass(frozen=True)
class Contains(Condition):
    operand: Operand
    needle: Operand

    def holds(self, item: Mapping[str, v.Value], values: Values) -> bool:
        found, needle = self.operand.value(item, values), self.needle.value(item, values)
        if found is None or needle is None:
            return False
        tag, raw = v.kind(found), found[v.kind(found)]
        needle_tag = v.kind(needle)
        if tag in ("S", "B"):
            return needle_tag == tag and needle[tag] in raw
        if tag in v.SET_TYPES:
            return needle_tag == tag[0] and any(v.equal({needle_tag: m}, needle) for m in raw)
        if tag == "L":
            return any(v.equal(member, needle) for member in raw)
        return False


# ---------------------------------------------------------------------- update actions


class UpdateValue:
    """The right-hand side of a SET action."""

    def value(self, item: Mapping[str, v.Value], values: Values) -> v.Value:
        raise NotImplementedError


_MISSING = "The provided expression refers to an attribute that does not exist in the item"


@dataclass(frozen=True)
class Plain(UpdateValue):
    operand: Operand

    def value(self, item: Mapping[str, v.Value], values: Values) -> v.Value:
        found = self.operand.value(item, values)
        if found is None:
            raise ValidationError(_MISSING)
        return found


@dataclass(frozen=True)
class IfNotExists(UpdateValue):
    path: Path
    default: UpdateValue

    def value(self, item: Mapping[str, v.Value], values: Values) -> v.Value:
        found = resolve(item, self.path)
        return found if found is not None else self.default.value(item, values)


@dataclass(frozen=True)
class ListAppend(UpdateValue):
    first: UpdateValue
    second: UpdateValue

    def value(self, item: Mapping[str, v.Value], values: Values) -> v.Value:
        a, b = self.first.value(item, values), self.second.value(item, values)
        if v.kind(a) != "L" or v.kind(b) != "L":
            raise ValidationError(
                "Invalid UpdateExpression: Incorrect operand type for operator or function; operator or function: "
                f"list_append, operand type: {v.kind(a) if v.kind(a) != 'L' else v.kind(b)}"
            )
        return {"L": [*a["L"], *b["L"]]}


@dataclass(frozen=True)
class Arithmetic(UpdateValue):
    op: str
    left: UpdateValue
    right: UpdateValue

    def value(self, item: Mapping[str, v.Value], values: Values) -> v.Value:
        a, b = self.left.value(item, values), self.right.value(item, values)
        if v.kind(a) != "N" or v.kind(b) != "N":
            raise ValidationError("An operand in the update expression has an incorrect data type")
        x, y = Decimal(a["N"]), Decimal(b["N"])
        try:
            result = v.NUMBERS.add(x, y) if self.op == "+" else v.NUMBERS.subtract(x, y)
        except ArithmeticError:
            raise ValidationError(
                "Number overflow. Attempting to store a number with magnitude larger than supported range"
            ) from None
        return {"N": v.number_text(result)}


@dataclass(frozen=True)
class Action:
    verb: str  # SET, REMOVE, ADD, DELETE
    path: Path
    operand: UpdateValue | None = None


@dataclass(frozen=True)
class Parsed[T]:
    """A parsed expression and the placeholders it uses (for DynamoDB's unused-placeholder errors)."""

    tree: T
    names: frozenset[str]
    values: frozenset[str]


# ---------------------------------------------------------------------- parser


class _Parser:
    def __init__(self, expression: str, names: Mapping[str, str], what: str) -> None:
        self.what = what
        self.tokens = _tokenize(expression, what)
        self.position = 0
        self.names = names
        self.used_names: set[str] = set()
        self.used_values: set[str] = set()
        if self.tokens[0].kind == "end":
            raise ValidationError(f"Invalid {what}: The expression can not be empty;")

    # -- token helpers

    @property
    def token(self) -> Token:
        return self.tokens[self.position]

    def peek(self, offset: int = 1) -> Token:
        return self.tokens[min(self.position + offset, len(self.tokens) - 1)]

    def advance(self) -> Token:
        token = self.token
        self.position += 1
        return token

    def is_keyword(self, word: str) -> bool:
        return self.token.kind == "ident" and self.token.text.upper() == word

    def expect(self, text: str) -> None:
        if self.token.text != text:
            self.syntax_error()
        self.advance()

    def syntax_error(self) -> None:
        raise ValidationError(f'Invalid {self.what}: Syntax error; token: "{self.token.text}", near: "{self._near()}"')

    def _near(self) -> str:
        start = max(0, self.position - 1)
        return " ".join(t.text for t in self.tokens[start : self.position + 2] if t.kind != "end")

    def finish(self) -> None:
        if self.token.kind != "end":
            self.syntax_error()

    # -- paths and operands

    def path(self) -> Path:
        steps: list[str | int] = [self.element()]
        while True:
            if self.token.text == "." and self.peek().kind in ("name", "ident"):
                self.advance()
                steps.append(self.element())
            elif self.token.text == "[":
                self.advance()
                if self.token.kind != "number":
                    self.syntax_error()
                steps.append(int(self.advance().text))
                self.expect("]")
            else:
                return tuple(steps)

    def element(self) -> str:
        token = self.token
        if token.kind == "name":
            self.advance()
            if token.text not in self.names:
                raise ValidationError(
                    f"Invalid {self.what}: An expression attribute name used in the document path is not defined; "
                    f"attribute name: {token.text}"
                )
            self.used_names.add(token.text)
            return self.names[token.text]
        if token.kind == "ident":
            if token.text.upper() in reserved_words():
                raise ValidationError(
                    f"Invalid {self.what}: Attribute name is a reserved keyword; reserved keyword: {token.text}"
                )
            self.advance()
            return token.text
        self.syntax_error()
        raise AssertionError  # unreachable

    def value_placeholder(self) -> str:
        token = self.advance()
        self.used_values.add(token.text)
        return token.text

    def operand(self) -> Operand:
        token = self.token
        if token.kind == "value":
            return ValueOperand(self.value_placeholder())
        if token.kind == "ident" and token.text == "size" and self.peek().text == "(":
            self.advance()
            self.expect("(")
            path = self.path()
            self.expect(")")
            return SizeOperand(path)
        if token.kind == "ident" and self.peek().text == "(":
            raise ValidationError(f"Invalid {self.what}: Invalid function name; function: {token.text}")
        if token.kind in ("name", "ident"):
            return PathOperand(self.path())
        self.syntax_error()
        raise AssertionError  # unreachable

    # -- conditions

    def condition(self) -> Condition:
        left = self.conjunction()
        while self.is_keyword("OR"):
            self.advance()
            left = Or(left, self.conjunction())
        return left

    def conjunction(self) -> Condition:
        left = self.negation()
        while self.is_keyword("AND"):
            self.advance()
            left = And(left, self.negation())
        return left

    def negation(self) -> Condition:
        if self.is_keyword("NOT"):
            self.advance()
            return Not(self.negation())
        return self.primary()

    def primary(self) -> Condition:
        token = self.token
        if token.text == "(":
            self.advance()
            inner = self.condition()
            self.expect(")")
            return inner
        if token.kind == "ident" and self.peek().text == "(" and token.text != "size":
            return self.function()
        left = self.operand()
        if self.token.text in _COMPARATORS:
            op = self.advance().text
            return Comparison(op, left, self.operand())
        if self.is_keyword("BETWEEN"):
            self.advance()
            low = self.operand()
            if not self.is_keyword("AND"):
                self.syntax_error()
            self.advance()
            return Between(left, low, self.operand())
        if self.is_keyword("IN"):
            self.advance()
            self.expect("(")
            choices = [self.operand()]
            while self.token.text == ",":
                self.advance()
                choices.append(self.operand())
            self.expect(")")
            if len(choices) > 100:
                raise ValidationError(
                    f"Invalid {self.what}: The IN operator is provided with too many operands; number of operands: {len(choices)}"
                )
            return In(left, tuple(choices))
        self.syntax_error()
        raise AssertionError  # unreachable

    def function(self) -> Condition:
        name = self.advance().text
        if name not in _CONDITION_FUNCTIONS:
            raise ValidationError(f"Invalid {self.what}: Invalid function name; function: {name}")
        self.expect("(")
        result: Condition
        if name in ("attribute_exists", "attribute_not_exists"):
            result = Exists(self.path(), name == "attribute_exists")
        elif name == "attribute_type":
            path = self.path()
            self.expect(",")
            result = AttributeType(path, self.operand())
        else:
            first = self.operand()
            self.expect(",")
            second = self.operand()
            result = BeginsWith(first, second) if name == "begins_with" else Contains(first, second)
        self.expect(")")
        return result

    # -- updates

    def update(self) -> tuple[Action, ...]:
        actions: list[Action] = []
        seen: set[str] = set()
        while self.token.kind != "end":
            clause = self.token.text.upper() if self.token.kind == "ident" else ""
            if clause not in ("SET", "REMOVE", "ADD", "DELETE"):
                self.syntax_error()
            if clause in seen:
                raise ValidationError(
                    f'Invalid UpdateExpression: The "{clause}" section can only be used once in an update expression;'
                )
            seen.add(clause)
            self.advance()
            while True:
                actions.append(self.action(clause))
                if self.token.text != ",":
                    break
                self.advance()
        if not actions:
            self.syntax_error()
        _check_overlaps([a.path for a in actions])
        return tuple(actions)

    def action(self, clause: str) -> Action:
        path = self.path()
        if clause == "SET":
            self.expect("=")
            return Action("SET", path, self.set_value())
        if clause == "REMOVE":
            return Action("REMOVE", path)
        if self.token.kind != "value":
            self.syntax_error()
        return Action(clause, path, Plain(ValueOperand(self.value_placeholder())))

    def set_value(self) -> UpdateValue:
        left = self.set_operand()
        if self.token.text in ("+", "-"):
            op = self.advance().text
            return Arithmetic(op, left, self.set_operand())
        return left

    def set_operand(self) -> UpdateValue:
        token = self.token
        if token.kind == "ident" and self.peek().text == "(":
            name = self.advance().text
            if name not in _UPDATE_FUNCTIONS:
                raise ValidationError(f"Invalid UpdateExpression: Invalid function name; function: {name}")
            self.expect("(")
            if name == "if_not_exists":
                path = self.path()
                self.expect(",")
                result: UpdateValue = IfNotExists(path, self.set_operand())
            else:
                first = self.set_operand()
                self.expect(",")
                result = ListAppend(first, self.set_operand())
            self.expect(")")
            return result
        if token.kind == "value":
            return Plain(ValueOperand(self.value_placeholder()))
        if token.kind in ("name", "ident"):
            return Plain(PathOperand(self.path()))
        self.syntax_error()
        raise AssertionError  # unreachable

    # -- projections

    def projection(self) -> tuple[Path, ...]:
        paths = [self.path()]
        while self.token.text == ",":
            self.advance()
            paths.append(self.path())
        _check_overlaps(paths, what="ProjectionExpression")
        return tuple(paths)


def _check_overlaps(paths: Sequence[Path], what: str = "UpdateExpression") -> None:
    for index, first in enumerate(paths):
        for second in paths[index + 1 :]:
            shorter = min(len(first), len(second))
            if first[:shorter] == second[:shorter]:
                kind = "conflict" if len(first) == len(second) else "overlap"
                raise ValidationError(
                    f"Invalid {what}: Two document paths {kind} with each other; must remove or rewrite one of these "
                    f"paths; path one: {list(first)}, path two: {list(second)}"
                )


def _parse[T](
    expression: str, names: tuple[tuple[str, str], ...], what: str, rule: Callable[[_Parser], T]
) -> Parsed[T]:
    parser = _Parser(expression, dict(names), what)
    tree = rule(parser)
    parser.finish()
    return Parsed(tree, frozenset(parser.used_names), frozenset(parser.used_values))


@functools.lru_cache(maxsize=4096)
def parse_condition(
    expression: str, names: tuple[tuple[str, str], ...], what: str = "ConditionExpression"
) -> Parsed[Condition]:
    """A condition, filter or key condition expression."""
    return _parse(expression, names, what, _Parser.condition)


@functools.lru_cache(maxsize=4096)
def parse_update(expression: str, names: tuple[tuple[str, str], ...]) -> Parsed[tuple[Action, ...]]:
    """An update expression: its actions in order."""
    return _parse(expression, names, "UpdateExpression", _Parser.update)


@functools.lru_cache(maxsize=1024)
def parse_projection(expression: str, names: tuple[tuple[str, str], ...]) -> Parsed[tuple[Path, ...]]:
    """A projection expression: the document paths it keeps."""
    return _parse(expression, names, "ProjectionExpression", _Parser.projection)


def project(item: Mapping[str, v.Value], paths: Sequence[Path]) -> v.Item:
    """The parts of `item` a projection names (nested paths keep their structure; list elements compact)."""
    result: v.Item = {}
    for path in paths:
        found = resolve(item, path)
        if found is None:
            continue
        _place(result, item, path, v.copy_value(found))
    return result


def _place(result: v.Item, source: Mapping[str, v.Value], path: Path, found: v.Value) -> None:
    first = path[0]
    assert isinstance(first, str)
    if len(path) == 1:
        result[first] = found
        return
    target: Any = result.setdefault(first, {"M": {}} if isinstance(path[1], str) else {"L": []})
    original: Any = source[first]
    for depth, step in enumerate(path[1:], start=1):
        last = depth == len(path) - 1
        nxt = None if last else path[depth + 1]
        if isinstance(step, str):
            container = target.setdefault("M", {})
            original = original["M"][step]
            if last:
                container[step] = found
            else:
                target = container.setdefault(step, {"M": {}} if isinstance(nxt, str) else {"L": []})
        else:
            container = target.setdefault("L", [])
            original = original["L"][step]
            if last:
                container.append(found)
            else:
                target = {"M": {}} if isinstance(nxt, str) else {"L": []}
                container.append(target)


def check_placeholders(
    names: Mapping[str, str] | None, values: Mapping[str, Any] | None, used: Sequence[Parsed[Any]]
) -> None:
    """DynamoDB's checks that every placeholder given is used, and every value used is given."""
    used_names = set().union(*(p.names for p in used)) if used else set()
    used_values = set().union(*(p.values for p in used)) if used else set()
    if names:
        unused = sorted(set(names) - used_names)
        if unused:
            raise ValidationError(
                "Value provided in ExpressionAttributeNames unused in expressions: keys: {" + ", ".join(unused) + "}"
            )
    given = set(values or ())
    if given - used_values:
        raise ValidationError(
            "Value provided in ExpressionAttributeValues unused in expressions: keys: {"
            + ", ".join(sorted(given - used_values))
            + "}"
        )
    missing = sorted(used_values - given)
    if missing:
        raise ValidationError(
            f"Invalid expression: An expression attribute value used in expression is not defined; attribute value: {missing[0]}"
        )
    if names is not None and not names:
        raise ValidationError("ExpressionAttributeNames must not be empty")
    if values is not None and not values:
        raise ValidationError("ExpressionAttributeValues must not be empty")


def names_key(names: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
    """The cache key of an ExpressionAttributeNames map."""
    return tuple(sorted(names.items())) if names else ()
