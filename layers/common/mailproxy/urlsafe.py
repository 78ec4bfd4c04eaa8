"""Unpadded URL-safe base64 (RFC 4648 §5), and the opaque page cursors the API's listings hand out with it;
unpadded lower-case base32 (§6) for what may be read without regard to case (an address's local part, a
Message-ID)."""

from __future__ import annotations

import base64
import binascii
import json


def encode(data: bytes) -> str:
    """`data` as unpadded URL-safe base64."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def decode(text: str) -> bytes:
    """The bytes of unpadded (or padded) URL-safe base64; ValueError when it is not that."""
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"not URL-safe base64: {exc}") from exc


def b32(data: bytes) -> str:
    """`data` as unpadded lower-case base32."""
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


def unb32(text: str) -> bytes:
    """The bytes of unpadded base32 in either case; ValueError (binascii.Error) when it is not that."""
    return base64.b32decode(text.upper() + "=" * (-len(text) % 8))


def cursor(field: str, value: str) -> str:
    """An opaque cursor carrying one value (where the next page starts). The value's characters go in as UTF-8,
    not as `\\uXXXX` escapes: a 320-octet non-ASCII address made a cursor over the 1000 characters the route
    takes back."""
    return encode(json.dumps({field: value}, ensure_ascii=False, separators=(",", ":")).encode())


def cursor_value(text: str, field: str) -> object:
    """The value a cursor of ours carries in `field` (any JSON value: the caller checks it); ValueError when the
    text is not such a cursor."""
    try:
        decoded = json.loads(decode(text))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError("not a cursor") from exc
    if not isinstance(decoded, dict) or field not in decoded:
        raise ValueError("not a cursor")
    return decoded[field]
