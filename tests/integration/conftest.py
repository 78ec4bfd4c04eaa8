"""Fixtures of the integration tier: a loopback SMTP server, and no SMTP connection outliving a test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from mailproxy import smtp

from tests.integration.smtp_servers import RunningServer, smtp_server


@pytest.fixture(autouse=True)
def fresh_smtp_pool() -> Iterator[None]:
    """Each test starts with no pooled SMTP connection (as a cold container would) and leaves none."""
    smtp.run(smtp.default_pool().close_all())
    smtp.reset_pool()
    yield
    smtp.run(smtp.default_pool().close_all())
    smtp.reset_pool()


@pytest.fixture
def server() -> Iterator[RunningServer]:
    """A routing aiosmtpd server on 127.0.0.1 (see smtp_servers.py), stopped after the test."""
    with smtp_server() as running:
        yield running
