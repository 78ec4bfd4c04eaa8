"""Secrets Manager values (the admin token, the metrics token) cached for a bounded time.

Read on first use, never at import; kept at most `GMP_SECRET_MAX_AGE_SECONDS` (300), so a rotated
secret takes effect in every warm container within minutes. Powertools' `get_secret(max_age=...)`
does the same, but importing it loads boto3 at import time, which intake's cold start avoids.
"""

from __future__ import annotations

import threading
import time

from mailproxy.errors import ConfigurationError

DEFAULT_MAX_AGE_SECONDS = 300


class SecretCache:
    """ARN → (value, when read); a value older than the caller's `max_age` is read again."""

    def __init__(self) -> None:
        self._values: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def cache_clear(self) -> None:
        """Forget every value (tests, a new local stack)."""
        with self._lock:
            self._values.clear()

    def get(self, secret_arn: str, *, max_age: float) -> str:
        """The secret's current string (stripped), read again when the cached one is older than `max_age` s."""
        now = time.monotonic()
        with self._lock:
            cached = self._values.get(secret_arn)
        if cached is not None and now - cached[1] < max_age:
            return cached[0]
        from mailproxy.aws import client

        # The stage named: AWS's default, and moto (5.2) forgets to move its default after a rotation.
        reply = client("secretsmanager").get_secret_value(SecretId=secret_arn, VersionStage="AWSCURRENT")
        value = str(reply.get("SecretString") or "").strip()
        if not value:
            raise ConfigurationError(f"secret {secret_arn} is empty")
        with self._lock:
            self._values[secret_arn] = (value, now)
        return value


secrets = SecretCache()
