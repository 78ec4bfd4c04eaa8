"""Secrets at rest: SMTP passwords and callback secrets encrypted with the service's KMS key."""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets

from mailproxy.aws import client
from mailproxy.settings import get_settings


def encrypt_secret(plaintext: str, *, context: str) -> bytes:
    """KMS ciphertext of `plaintext`, bound to `context` (tenant/account) by the encryption context."""
    reply = client("kms").encrypt(
        KeyId=get_settings().secrets_key_id,
        Plaintext=plaintext.encode("utf-8"),
        EncryptionContext={"gmp": context},
    )
    return bytes(reply["CiphertextBlob"])


@functools.lru_cache(maxsize=1024)
def decrypt_secret(ciphertext: bytes, *, context: str) -> str:
    """The plaintext of a KMS ciphertext, cached per container (one KMS call per secret)."""
    reply = client("kms").decrypt(CiphertextBlob=ciphertext, EncryptionContext={"gmp": context})
    return bytes(reply["Plaintext"]).decode("utf-8")


def new_api_key() -> str:
    """A fresh tenant key: 43 url-safe characters."""
    return secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    """The SHA-256 hex digest under which a tenant key is stored."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def tokens_equal(given: str, expected: str) -> bool:
    """Constant-time comparison of two tokens."""
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass"))
