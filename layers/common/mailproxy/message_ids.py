"""The Message-ID the service gives a message it derives one for: the record's uuid and, encoded, the message's
id, so that a report returning only the Message-ID still names its message, without an index by uuid
(docs/bounces.md). The uuid proves the report saw the message: a bounce is believed only when it matches."""

from __future__ import annotations

import base64
import binascii
import re

# Longer ids go out as `<uuid@domain>` alone (a Message-ID is one unfoldable header line): 160 characters of
# base32 are 100 bytes of id, which most ids are well under.
MAX_ENCODED_ID_CHARS = 160
_OURS = re.compile(rf"([0-9a-f]{{32}})\.([a-z2-7]{{1,{MAX_ENCODED_ID_CHARS}}})")


def derived(uid: str, message_id: str, domain: str) -> str:
    """`<uid.<base32 of the id>@domain>`, or `<uid@domain>` when the id is too long to carry."""
    encoded = base64.b32encode(message_id.encode()).decode("ascii").rstrip("=").lower()
    local = f"{uid}.{encoded}" if len(encoded) <= MAX_ENCODED_ID_CHARS else uid
    return f"<{local}@{domain}>"


def message_of(header: str) -> tuple[str, str] | None:
    """The (uid, message id) a Message-ID of `derived` carries; None for any other Message-ID."""
    local = header.strip().removeprefix("<").removesuffix(">").rpartition("@")[0]
    found = _OURS.fullmatch(local.lower())
    if found is None:
        return None
    encoded = found.group(2).upper()
    try:
        message_id = base64.b32decode(encoded + "=" * (-len(encoded) % 8)).decode()
    except (binascii.Error, ValueError):  # UnicodeDecodeError is a ValueError
        return None
    return (found.group(1), message_id) if message_id else None
