"""API keys and token comparison (secrets at rest are sealed by the adapters: `ports.Sealer`)."""

from __future__ import annotations

import hashlib
import hmac
import secrets


def new_api_key() -> str:
    """A fresh tenant key: 43 url-safe characters."""
    return secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    """The SHA-256 hex digest under which a tenant key is stored."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def tokens_equal(given: str, expected: str) -> bool:
    """Constant-time comparison of two tokens."""
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass"))
