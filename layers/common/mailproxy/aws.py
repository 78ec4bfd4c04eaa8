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


@functools.cache
def client(service: str) -> Any:
    """A boto3 client for `service`, one per process (clients are thread-safe)."""
    from botocore.config import Config

    config = Config(retries={"max_attempts": 4, "mode": "standard"}, connect_timeout=5, read_timeout=30)
    return _session().client(service, config=config)  # type: ignore[call-overload]


def reset_clients() -> None:
    """Forget every cached client (tests call this between moto contexts)."""
    client.cache_clear()
    _session.cache_clear()
