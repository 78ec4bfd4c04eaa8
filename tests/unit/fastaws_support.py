"""boto3 clients answered by a fresh fast backend (local/fastaws), with no network and no moto."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from local.fastaws import hook


@pytest.fixture
def backend(monkeypatch: pytest.MonkeyPatch) -> Iterator[hook.FastAws]:
    """A fast backend answering AWS's own endpoints, unregistered after the test."""
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    fast = hook.FastAws("us-east-1", "123456789012")
    hook.register(fast, None)
    yield fast
    hook.unregister(None)


def client(service: str) -> Any:
    """A boto3 client of `service` in us-east-1."""
    return boto3.session.Session(region_name="us-east-1").client(service)  # type: ignore[call-overload]
