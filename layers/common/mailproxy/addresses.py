"""Email addresses: the one module that parses them.

Two readings, kept as they were when they lived apart (issue 12 may make them one): intake checks each
entry of the API's list-or-comma-string form (`split_addresses`, `is_valid_address`); the sender builds
the email from the (display name, address) pairs `email.utils.getaddresses` finds (`address_pairs`). A
third finds addresses written in free text, as bounce reports mention them (`find_addresses`).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator
from email.utils import getaddresses, parseaddr

# RFC 5322 dot-atom local part (or a quoted string) @ a domain of labels; IDN domains allowed.
# {U} is the non-ASCII range \u0080-\uffff, or nothing in the ASCII-only form of the pattern.
_DOT_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{{|}}~{U}-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{{|}}~{U}-]+)*"
_LOCAL = rf'(?:{_DOT_ATOM}|"[^"\\\r\n]*")'
_LABEL = r"[A-Za-z0-9{U}](?:[A-Za-z0-9{U}-]{{0,61}}[A-Za-z0-9{U}])?"
_ADDR = rf"^{_LOCAL}@{_LABEL}(?:\.{_LABEL})+$|^{_LOCAL}@\[[0-9A-Fa-f:.]+\]$"
# An entry that is only an ASCII dot-atom @ labels: parseaddr reads it back whole as the address.
_BARE_ADDR = rf"{_DOT_ATOM}@{_LABEL}(?:\.{_LABEL})+"
NON_ASCII = r"\u0080-\uffff"
# Parsed address texts keep only pairs of strings, so longer texts can be kept (not a whole list's).
_ADDRESS_CACHE_SIZE = 512
_CACHED_ADDRESS_CHARS = 1_000
# Octets of an address in UTF-8 (RFC 3696's 64 + 1 + 255): counted in characters, a non-ASCII address passed at
# up to 1280 bytes, which no SMTP path holds and DynamoDB refuses as a key (1024 bytes: the suppression list).
_MAX_ADDRESS = 320
# An address written in free text (a bounce's prose, a header value), with or without its angle brackets.
_IN_TEXT = r"<?([A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)>?"


@functools.cache
def _address_pattern(ascii_only: bool) -> re.Pattern[str]:
    # The non-ASCII ranges cost ~40 ms to compile and cannot match an ASCII address: most calls skip them.
    return re.compile(_ADDR.format(U="" if ascii_only else NON_ASCII))


def split_addresses(value: str | list[str] | None) -> list[str]:
    """The entries of a recipient field: a list as given, or a comma-separated string split."""
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    entries: list[str] = []
    for item in items:
        entries.extend(_split_commas(item) if len(item) > _CACHED_ADDRESS_CHARS else _split_commas_cached(item))
    return entries


@functools.lru_cache(maxsize=_ADDRESS_CACHE_SIZE)
def _split_commas_cached(text: str) -> tuple[str, ...]:
    # A tenant's From (`Name <addr>`) comes with every message: walked once.
    return tuple(_split_commas(text))


def _split_commas(text: str) -> list[str]:
    # Commas inside quotes or angle brackets belong to a display name or an address.
    if '"' not in text and "<" not in text:
        # Neither (most entries): every comma separates, found without walking the text in Python.
        return [part.strip() for part in text.split(",") if part.strip()]
    parts: list[str] = []
    current: list[str] = []
    quoted = angled = False
    for char in text:
        if char == '"' and not angled:
            quoted = not quoted
        elif char == "<" and not quoted:
            angled = True
        elif char == ">" and not quoted:
            angled = False
        if char == "," and not quoted and not angled:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [part.strip() for part in parts if part.strip()]


def bare_address(entry: str) -> str:
    """The address of `Name <addr>` or of a bare address."""
    return parseaddr(entry)[1] or entry.strip()


@functools.cache
def _bare_address() -> re.Pattern[str]:
    return re.compile(_BARE_ADDR.format(U=""))


def is_valid_address(entry: str) -> bool:
    """True when `entry` is `addr` or `Name <addr>` with a syntactically valid address."""
    if len(entry) <= _MAX_ADDRESS and _bare_address().fullmatch(entry):
        return True  # the common case, without parsing: what the checks below accept
    if len(entry) > _CACHED_ADDRESS_CHARS:
        return _is_valid_address(entry)
    return _valid_address_cached(entry)


@functools.lru_cache(maxsize=_ADDRESS_CACHE_SIZE)
def _valid_address_cached(entry: str) -> bool:
    # A tenant sends from the same few `Name <addr>` entries, and parsing one costs tens of µs.
    return _is_valid_address(entry)


def _is_valid_address(entry: str) -> bool:
    if len(entry) > 998 or any(c in entry for c in "\r\n\x00"):
        return False
    try:
        name, addr = parseaddr(entry)
    except RecursionError:  # the parser recurses once per nested "(" comment: a few hundred overflow the stack
        return False
    if not addr or len(addr.encode("utf-8", "surrogatepass")) > _MAX_ADDRESS:
        return False
    if not name and entry.strip() not in (addr, f"<{addr}>"):  # `<addr>` is a mailbox without a name
        return False
    return bool(_address_pattern(addr.isascii()).match(addr))


def _items(value: str | Iterable[str] | None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(item) for item in value]


def address_pairs(value: str | Iterable[str] | None) -> list[tuple[str, str]]:
    """(display name, address) pairs of a list or comma-separated string; ValueError on garbage."""
    pairs: list[tuple[str, str]] = []
    for item in _items(value):
        if not item.strip():
            continue
        parse = _parsed_addresses if len(item) <= _CACHED_ADDRESS_CHARS else _parsed_addresses.__wrapped__
        pairs.extend(parse(item))
    return pairs


@functools.lru_cache(maxsize=_ADDRESS_CACHE_SIZE)
def _parsed_addresses(item: str) -> tuple[tuple[str, str], ...]:
    # Cached: a tenant sends from the same few addresses, and parsing one costs tens of µs.
    parsed = getaddresses([item])
    # getaddresses answers ('', '') for text it cannot parse rather than raising.
    if not parsed or any(not addr or "@" not in addr for _, addr in parsed):
        raise ValueError(f"invalid address: {item.strip()}")
    return tuple((name, addr) for name, addr in parsed)


def parse_addresses(value: str | list[str] | None) -> list[str]:
    """The bare addresses of a list or comma-separated string (display names dropped)."""
    return [addr for _, addr in address_pairs(value)]


def address_domain(entry: str) -> str:
    """What follows the last `@` of the address of `Name <addr>` or of a bare address (all of it without one)."""
    if len(entry) > _CACHED_ADDRESS_CHARS:
        return _address_domain(entry)
    return _address_domain_cached(entry)


def _address_domain(entry: str) -> str:
    return parseaddr(entry)[1].rpartition("@")[2]


# The sender asks for the domain of each message's From (its Message-ID's right side): a tenant's few.
_address_domain_cached = functools.lru_cache(maxsize=_ADDRESS_CACHE_SIZE)(_address_domain)


def suppression_key(entry: str) -> str:
    """The address of `entry` as the suppression list compares it: the local part as written (RFC 5321 lets a
    server tell `Bob` from `bob`), the domain in lower case (domains never differ by case)."""
    local, at, domain = bare_address(entry).rpartition("@")
    return f"{local}@{domain.lower()}" if at else domain.strip()


@functools.cache
def _in_text() -> re.Pattern[str]:
    return re.compile(_IN_TEXT)


def find_addresses(text: str) -> Iterator[tuple[str, int]]:
    """Each address written in free text (a bounce's prose, a header value), lowercased, with the position
    where its mention ends."""
    for match in _in_text().finditer(text):
        yield match.group(1).lower(), match.end()


def first_address(text: str) -> str:
    """The first address written in free text, lowercased; "" when there is none."""
    return next((address for address, _ in find_addresses(text)), "")
