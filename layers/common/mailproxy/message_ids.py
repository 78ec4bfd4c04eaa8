"""The Message-ID the service gives a message it derives one for: the record's uuid and, encoded, the message's
id, so that a report returning only the Message-ID still names its message, without an index by uuid
(docs/bounces.md). The uuid proves the report saw the message: a bounce is believed only when it matches."""

from __future__ import annotations

import re

from mailproxy.urlsafe import b32, unb32

# Longer ids go out as `<uuid@domain>` alone (a Message-ID is one unfoldable header line): 160 characters of
# base32 are 100 bytes of id, which most ids are well under.
MAX_ENCODED_ID_CHARS = 160
_OURS = re.compile(rf"([0-9a-f]{{32}})\.([a-z2-7]{{1,{MAX_ENCODED_ID_CHARS}}})")


def derived(uid: str, message_id: str, domain: str) -> str:
    """`<uid.<base32 of the id>@domain>`, or `<uid@domain>` when the id is too long to carry."""
    encoded = b32(message_id.encode())
    local = f"{uid}.{encoded}" if len(encoded) <= MAX_ENCODED_ID_CHARS else uid
    return f"<{local}@{domain}>"


def message_of(header: str) -> tuple[str, str] | None:
    """The (uid, message id) a Message-ID of `derived` carries; None for any other Message-ID."""
    local = header.strip().removeprefix("<").removesuffix(">").rpartition("@")[0]
    found = _OURS.fullmatch(local.lower())
    if found is None:
        return None
    try:
        message_id = unb32(found.group(2)).decode()
    except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
        return None
    return (found.group(1), message_id) if message_id else None
