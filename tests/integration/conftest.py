"""Fixtures of the integration tier: a loopback SMTP server, no SMTP connection outliving a test, and the
queues of the storage under test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from mailproxy import smtp

from tests.conftest import Storage
from tests.integration.delivery import Runner, runner
from tests.integration.smtp_servers import RunningServer, smtp_server

# The reporter tests' service (API, sender, reporter over one storage) and callback, for the bounce tests too.
from tests.integration.test_reports import callback, clock, reporter, service  # noqa: F401


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


@pytest.fixture
def queues(storage: Storage) -> Runner:
    """The work queues and stored records of `storage`, as a test looks into them (see delivery.Runner)."""
    return runner(storage)
