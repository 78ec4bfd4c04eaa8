"""Secrets sealed at rest on one machine: AES-256-GCM, bound to a context as KMS binds its encryption context.

A sealed secret is `version byte | 12-byte random nonce | ciphertext and tag`; the context string
(`tenant/<id>`, `account/<tenant>/<id>`) is the associated data, so a ciphertext sealed for one tenant or
account cannot be opened as another's. The key is GMP_SEALING_KEY (base64 of 32 bytes) when set, else
`sealing.key` in the data directory, made on first use readable by its owner only. The key is never logged,
never in an error, never in a repr.
"""

from __future__ import annotations

import base64
import binascii
import os
import threading
import time
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mailproxy.errors import ConfigurationError, MailProxyError

if TYPE_CHECKING:
    from mailproxy import ports

KEY_FILE = "sealing.key"
KEY_BYTES = 32
NONCE_BYTES = 12
VERSION = b"\x01"
# A process that lost the race to create the key file may read it before the winner has written it.
KEY_FILE_WAIT_SECONDS = 2.0


class SecretUnreadable(MailProxyError):
    """A sealed secret that this key and context cannot open (another key, another context, or damaged)."""


class SqliteSealer:
    """Ports' Sealer with AES-256-GCM and a local key (GMP_SEALING_KEY, else `sealing.key` in the data dir)."""

    def __init__(self, data_dir: str, key: str) -> None:
        self._data_dir = data_dir
        self._given = key
        self._aead: AESGCM | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SqliteSealer(data_dir={self._data_dir!r})"

    def encrypt_secret(self, plaintext: str, *, context: str) -> bytes:
        """The sealed form of `plaintext`, openable only under the same `context`."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._cipher().encrypt(nonce, plaintext.encode("utf-8"), _associated(context))
        return VERSION + nonce + sealed

    def decrypt_secret(self, ciphertext: bytes, *, context: str) -> str:
        """The plaintext of a sealed secret; SecretUnreadable if this key and `context` do not open it."""
        blob = bytes(ciphertext)
        if len(blob) < 1 + NONCE_BYTES + 16 or blob[:1] != VERSION:
            raise SecretUnreadable(f"not a sealed secret of a known version (context {context!r})")
        try:
            plain = self._cipher().decrypt(blob[1 : 1 + NONCE_BYTES], blob[1 + NONCE_BYTES :], _associated(context))
        except InvalidTag:
            raise SecretUnreadable(
                f"the secret cannot be opened under context {context!r}: sealed for another context or "
                "with another key (GMP_SEALING_KEY or the data directory's sealing.key changed?)"
            ) from None
        return plain.decode("utf-8")

    def _cipher(self) -> AESGCM:
        with self._lock:
            if self._aead is None:
                self._aead = AESGCM(self._key())
            return self._aead

    def _key(self) -> bytes:
        if self._given:
            return _decode_key(self._given, "GMP_SEALING_KEY")
        return key_file(os.path.join(self._data_dir, KEY_FILE))


def _associated(context: str) -> bytes:
    return VERSION + context.encode("utf-8")


def _decode_key(text: str, where: str) -> bytes:
    """32 bytes from their base64; a ConfigurationError naming `where` (never the value) otherwise."""
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigurationError(f"{where} is not base64 (it must be 32 random bytes in base64)") from None
    if len(key) != KEY_BYTES:
        raise ConfigurationError(f"{where} must be {KEY_BYTES} bytes in base64, not {len(key)} bytes")
    return key


def key_file(path: str) -> bytes:
    """The key of `path`, made first (mode 0600) if there is none; two processes racing end with one key."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fresh = base64.b64encode(os.urandom(KEY_BYTES)) + b"\n"
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_key_file(path)
    try:
        os.write(descriptor, fresh)
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    return base64.b64decode(fresh)


def _read_key_file(path: str) -> bytes:
    deadline = time.monotonic() + KEY_FILE_WAIT_SECONDS
    while True:
        with open(path, "rb") as handle:
            text = handle.read().decode("ascii", "replace")
        # Empty between the creator's open and its one write of the whole line.
        if text.strip() or time.monotonic() > deadline:
            return _decode_key(text, f"the sealing key file {path}")
        time.sleep(0.01)


if TYPE_CHECKING:  # mypy checks that the class is the port (open_stores builds Stores from an untyped dict)

    def _implements_port() -> ports.Sealer:
        return SqliteSealer("data", "")
