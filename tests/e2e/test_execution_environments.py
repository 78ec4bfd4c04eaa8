"""The sender in worker processes (`GMP_LAMBDA_PROCESSES`, as `make run` does): mail still reaches the sink once."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import httpx
import pytest

from local.stack import LocalStack

TOKEN = "admin-token-0123456789abcdefghijklmnopqrstuvwxyz"

pytestmark = pytest.mark.e2e


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalStack]:
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "ADMIN_TOKEN_SECRET_ARN"):
        monkeypatch.delenv(name, raising=False)
    with LocalStack(http_port=0, smtp_sink_port=0, moto_port=0, api_token=TOKEN, lambda_processes=2) as running:
        yield running


def test_messages_sent_from_worker_processes_reach_the_sink_once_and_are_recorded_sent(stack: LocalStack) -> None:
    assert stack.smtp_sink is not None
    assert [pool.function.logical_id for pool in stack.environment_pools] == ["SenderFunction"]
    assert all(worker.process.pid != os.getpid() for pool in stack.environment_pools for worker in pool._workers)
    client = httpx.Client(base_url=stack.url, timeout=30)
    tenant = client.post("/tenant", json={"id": "acme", "name": "Acme"}, headers={"X-API-Token": TOKEN})
    key = {"X-API-Token": tenant.json()["api_key"]}
    account = {"id": "sink", "host": "127.0.0.1", "port": stack.smtp_sink_port, "use_tls": False}
    assert client.post("/account", json=account, headers=key).status_code == 200
    batch = [
        {
            "id": f"m-{n}",
            "account_id": "sink",
            "from": "a@x.test",
            "to": [f"b{n}@y.test"],
            "subject": f"s{n}",
            "body": "hi",
        }
        for n in range(25)
    ]
    reply = client.post("/commands/add-messages", json={"messages": batch}, headers=key)
    assert reply.json()["queued"] == 25

    received = stack.smtp_sink.wait_for(25, timeout=60)
    assert sorted(mail.mail_id for mail in received) == sorted(m["id"] for m in batch)
    deadline = time.monotonic() + 20
    statuses: set[str] = set()
    while statuses != {"sent"} and time.monotonic() < deadline:
        listing = client.get("/messages", params={"tenant_id": "acme"}, headers={"X-API-Token": TOKEN})
        statuses = {m["status"] for m in listing.json()["messages"]}
        time.sleep(0.2)
    assert statuses == {"sent"}
    time.sleep(0.5)
    assert stack.smtp_sink.count == 25
