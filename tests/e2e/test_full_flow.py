"""The whole flow over HTTP through `make run`'s stack: submit, deliver to the sink, report to the client."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.callbacks import SyncEndpoint, sync_endpoint
from tests.polling import wait_until
from tests.runtimes import RUNTIMES, running

TOKEN = "e2e-admin-token"
pytestmark = pytest.mark.e2e


@pytest.fixture
def client() -> Iterator[SyncEndpoint]:
    with sync_endpoint() as endpoint:
        yield endpoint


@pytest.fixture(params=RUNTIMES)
def stack(request: pytest.FixtureRequest) -> Iterator[Any]:
    """`make run` (the one-machine runtime) and `make run-aws` (the handlers around moto)."""
    with running(request.param, api_token=TOKEN) as service:
        yield service


def test_client_sees_every_result_of_its_messages_through_the_local_stack(stack: Any, client: SyncEndpoint) -> None:
    admin = {"X-API-Token": TOKEN}
    with httpx.Client(base_url=stack.url, timeout=30) as http:
        tenant = {"id": "acme", "client_base_url": client.url, "client_auth": {"method": "bearer", "token": "cb-token"}}
        key = {"X-API-Token": http.post("/tenant", json=tenant, headers=admin).json()["api_key"]}
        account = {"id": "sink", "host": "127.0.0.1", "port": stack.smtp_sink_port}
        assert http.post("/account", json=account, headers=key).status_code == 200
        messages = [
            {"id": "ok-1", "account_id": "sink", "from": "a@acme.test", "to": "b@example.test", "subject": "One"},
            {"id": "ok-2", "account_id": "sink", "from": "a@acme.test", "to": "c@example.test", "subject": "Two"},
            {"id": "bad-1", "account_id": "nope", "from": "a@acme.test", "to": "d@example.test", "subject": "Bad"},
        ]
        reply = http.post("/commands/add-messages", json={"messages": messages}, headers=key)
        assert reply.json()["queued"] == 2

        assert stack.smtp_sink is not None
        received = stack.smtp_sink.wait_for(2, timeout=30)
        assert sorted(m.mail_id or "" for m in received) == ["ok-1", "ok-2"]

        entries = wait_until(lambda: len({e["id"] for e in client.entries()}) >= 3 and client.entries())
        by_id = {e["id"]: e for e in entries}
        assert "sent_ts" in by_id["ok-1"] and "sent_ts" in by_id["ok-2"]
        assert by_id["bad-1"]["error"] == "account not found for tenant"
        assert len([e for e in entries if e["id"] == "ok-1"]) == 1  # reported once
        assert set(client.auth) == {"Bearer cb-token"}

        history = http.get("/messages", params={"include_history": "true"}, headers=key).json()["messages"]
        sent = [r for r in history if r["status"] == "sent"]
        assert len(sent) == 2
        wait_until(
            lambda: all(
                e["reported_ts"] is not None
                for r in http.get("/messages", params={"include_history": "true"}, headers=key).json()["messages"]
                for e in r["history"]
                if e["event_type"] in ("sent", "error")
            )
        )
        metrics = http.get("/metrics").text
        assert 'gmp_sent_total{account_id="sink",tenant_id="acme"} 2.0' in metrics
        assert "gmp_pending_messages 0.0" in metrics
