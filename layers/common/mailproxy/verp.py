"""VERP return paths: `bounces+<token>@domain`, a return path per message, so that a bounce that quotes nothing
of the original message still names it (docs/bounces.md).

The token is `<signature><form><message id>`: the signature, 8 base32 characters, is an HMAC-SHA256 (40 bits
kept) of the tenant and the message id under the service's signing key, so a token cannot be forged nor moved
to another tenant; the message id follows as it is when it is lowercase letters, digits and hyphens (form `l`,
a uuid fits), else in base32 (form `b`). Everything is case-insensitive, since some MTAs fold the local part.
A message whose token would make the local part longer than RFC 5321's 64 octets goes out with the plain
return path (its bounce is then matched by the headers it returns).

The signing key is made once, sealed by the sealer port (context `service/verp`) and kept by the BounceState
port: the first process to store one wins, every process then reads that one.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import threading

from mailproxy.stores import Stores, stores
from mailproxy.urlsafe import b32, unb32

MAX_LOCAL_PART = 64  # RFC 5321 4.5.3.1.1
SIGNATURE_CHARS = 8  # 40 bits: a forger must guess 2**40 tokens for one message of one tenant
KEY_CONTEXT = "service/verp"
_LITERAL = re.compile(r"^[a-z0-9-]+$")
_BASE32 = re.compile(r"^[a-z2-7]+$")

_cached: tuple[Stores, bytes] | None = None  # the key of the current ports (a test's new database has its own)
_lock = threading.Lock()


def _signature(key: bytes, tenant_id: str, message_id: str) -> str:
    digest = hmac.new(key, f"{tenant_id}\0{message_id}".encode(), hashlib.sha256).digest()
    return b32(digest[:5])


def ensure_signing_key() -> bytes:
    """The signing key, made and stored on first use (an account or tenant that turns VERP on calls this)."""
    found = signing_key()
    if found is not None:
        return found
    sealed = stores().sealer.encrypt_secret(b32(os.urandom(32)), context=KEY_CONTEXT)
    stored = stores().bounces.offer_signing_key(sealed)
    return _open(stored)


def signing_key() -> bytes | None:
    """The signing key, or None when none was made yet (no account has turned VERP on). Cached per process."""
    global _cached
    current = stores()
    with _lock:
        if _cached is not None and _cached[0] is current:
            return _cached[1]
    sealed = current.bounces.sealed_signing_key()
    if sealed is None:
        return None
    key = _open(sealed)
    with _lock:
        _cached = (current, key)
    return key


def _open(sealed: bytes) -> bytes:
    return stores().sealer.decrypt_secret(sealed, context=KEY_CONTEXT).encode("ascii")


def return_path(address: str, tenant_id: str, message_id: str, key: bytes) -> str | None:
    """`local+<token>@domain` for the message, or None when it would not fit a local part."""
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        return None
    base = local.split("+", 1)[0]
    lowered = message_id.lower()
    if lowered == message_id and _LITERAL.match(message_id):
        encoded = "l" + message_id
    else:
        encoded = "b" + b32(message_id.encode("utf-8"))
    token = _signature(key, tenant_id, message_id) + encoded
    verp_local = f"{base}+{token}"
    return f"{verp_local}@{domain}" if len(verp_local) <= MAX_LOCAL_PART else None


def message_of(address: str, bounce_address: str, tenant_id: str, key: bytes) -> str | None:
    """The message id a VERP `address` names, when it is a signed token of the tenant on `bounce_address`'s
    local part and domain; else None (not a VERP address, another tenant's, or forged)."""
    local, at, domain = address.strip().lower().rpartition("@")
    own_local, _, own_domain = bounce_address.strip().lower().rpartition("@")
    base, plus, token = local.partition("+")
    if not at or not plus or domain != own_domain or base != own_local.split("+", 1)[0]:
        return None
    if len(token) <= SIGNATURE_CHARS + 1:
        return None
    signature, form, payload = token[:SIGNATURE_CHARS], token[SIGNATURE_CHARS], token[SIGNATURE_CHARS + 1 :]
    if form == "l" and _LITERAL.match(payload):
        message_id = payload
    elif form == "b" and _BASE32.match(payload):
        try:
            message_id = unb32(payload).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return None
    else:
        return None
    if not hmac.compare_digest(signature, _signature(key, tenant_id, message_id)):
        return None
    return message_id
