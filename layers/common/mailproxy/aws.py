"""Cached AWS clients, created on first use (never at import), so moto and cold starts stay cheap.

boto3 honours `AWS_ENDPOINT_URL`, which is how the local stack points every client at its emulator.
"""

from __future__ import annotations

import functools
from typing import Any


@functools.cache
def _session() -> Any:
    import boto3

    return boto3.session.Session()


def _config() -> Any:
    from botocore.config import Config

    return Config(retries={"max_attempts": 4, "mode": "standard"}, connect_timeout=5, read_timeout=30)


@functools.cache
def client(service: str) -> Any:
    """A boto3 client for `service`, one per process (clients are thread-safe)."""
    return _session().client(service, config=_config())  # type: ignore[call-overload]


def scoped_client(service: str, credentials: dict[str, Any]) -> Any:
    """A boto3 client for `service` with temporary credentials (an assumed role's, as STS answers them);
    not cached here. A session of its own: sessions are not safe to share between threads."""
    import boto3

    return boto3.session.Session().client(  # type: ignore[call-overload]
        service,
        config=_config(),
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
    )


def reset_clients() -> None:
    """Forget every cached client (tests call this between moto contexts)."""
    client.cache_clear()
    _session.cache_clear()


def error_code(exc: BaseException) -> str:
    """The AWS error code an SDK exception carries (`NoSuchKey`, `ConditionalCheckFailedException`...), or ""
    for any other exception: read from its `response`, so callers need not import botocore's classes."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return ""
    return str(response.get("Error", {}).get("Code") or "")
