"""Secrets at rest on AWS: sealed with the service's KMS key, bound to an encryption context."""

from __future__ import annotations

import functools

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
