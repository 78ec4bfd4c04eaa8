"""Email address lists: splitting the API's list-or-comma-string form and checking syntax."""

from __future__ import annotations

import functools
import re
from email.utils import parseaddr

# RFC 5322 dot-atom local part (or a quoted string) @ a domain of labels; IDN domains allowed.
# {U} is the non-ASCII range \u0080-\uffff, or nothing in the ASCII-only form of the pattern.
_LOCAL = r'(?:[A-Za-z0-9!#$%&\'*+/=?^_`{{|}}~{U}-]+(?:\.[A-Za-z0-9!#$%&\'*+/=?^_`{{|}}~{U}-]+)*|"[^"\\\r\n]*")'
_LABEL = r"[A-Za-z0-9{U}](?:[A-Za-z0-9{U}-]{{0,61}}[A-Za-z0-9{U}])?"
_ADDR = rf"^{_LOCAL}@{_LABEL}(?:\.{_LABEL})+$|^{_LOCAL}@\[[0-9A-Fa-f:.]+\]$"
NON_ASCII = r"\u0080-\uffff"


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
        entries.extend(_split_commas(item))
    return entries


def _split_commas(text: str) -> list[str]:
    # Commas inside quotes or angle brackets belong to a display name or an address.
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


def is_valid_address(entry: str) -> bool:
    """True when `entry` is `addr` or `Name <addr>` with a syntactically valid address."""
    if len(entry) > 998 or any(c in entry for c in "\r\n\x00"):
        return False
    name, addr = parseaddr(entry)
    if not addr or len(addr) > 320:
        return False
    if not name and entry.strip() not in (addr, f"<{addr}>"):  # `<addr>` is a mailbox without a name
        return False
    return bool(_address_pattern(addr.isascii()).match(addr))
