"""Fault tests: crashes at each step. Each states what was lost and what was sent twice."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from mailproxy import smtp

from tests.conftest import Storage
from tests.integration.delivery import Delivery, container_died, mail_ids, message, parsed
from tests.integration.smtp_servers import RunningServer

pytestmark = pytest.mark.both_storages


class ContainerDied(BaseException):
    """What a Lambda container's sudden death looks like to the code it was running."""


@pytest.fixture
def delivery(
    storage: Storage, api: TestClient, admin: dict[str, str], server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> Delivery:
    # Claims and journals go stale at once, so a redelivery or a scheduler round can take over now.
    monkeypatch.setenv("GMP_CLAIM_TIMEOUT_SECONDS", "0")
    monkeypatch.setenv("GMP_INTAKE_GRACE_SECONDS", "0")
    from mailproxy.settings import get_settings

    get_settings.cache_clear()
    key = {"X-API-Token": api.post("/tenant", json={"id": "acme"}, headers=admin).json()["api_key"]}
    account = {"id": "smtp", "host": "127.0.0.1", "port": server.port, "use_tls": False}
    assert api.post("/account", json=account, headers=key).status_code == 200
    return Delivery(storage, api, admin, "acme", key)


def records_of(bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"messageId": f"sqs-{b['id']}", "body": json.dumps(b)} for b in bodies]


def test_handler_dying_mid_batch_loses_nothing_and_sends_nothing_twice(
    delivery: Delivery, server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from functions.sender.app import handler

    delivery.submit(*(message(f"m-{n}") for n in range(5)))
    bodies = delivery.drain(2)
    real_send = smtp.SmtpPool.send
    sends = {"n": 0}

    async def dying_send(self: smtp.SmtpPool, account: Any, email: Any) -> dict[str, str]:
        sends["n"] += 1
        if sends["n"] == 3:
            raise ContainerDied  # before the third transaction starts
        return await real_send(self, account, email)

    monkeypatch.setattr(smtp.SmtpPool, "send", dying_send)
    with pytest.raises(ContainerDied):
        handler({"Records": records_of(bodies)}, None)
    monkeypatch.setattr(smtp.SmtpPool, "send", real_send)
    container_died()

    # SQS redelivers the whole batch (nothing was deleted); the scheduler finishes the dead batch's journal.
    assert handler({"Records": records_of(bodies)}, None) == {"batchItemFailures": []}
    delivery.scheduler()

    sent = mail_ids(server.handler.received)
    assert sorted(sent) == [f"m-{n}" for n in range(5)]  # lost: nothing; sent twice: nothing
    assert {r["status"] for r in delivery.records().values()} == {"sent"}
    assert delivery.counters()["sent"] == 5
    assert delivery.pending() == 0


def test_dying_between_the_smtp_reply_and_the_record_resends_with_the_same_message_id(
    delivery: Delivery, server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one window no design closes (docs/delivery.md): the copy carries the same Message-ID."""
    from mailproxy.stores import stores

    messages = stores().messages

    from functions.sender.app import handler

    delivery.submit(message("m-1"))
    bodies = delivery.drain(2)
    real_finish = messages.finish

    def dying_finish(*args: Any, **kwargs: Any) -> bool:
        raise ContainerDied

    monkeypatch.setattr(messages, "finish", dying_finish)
    with pytest.raises(ContainerDied):
        handler({"Records": records_of(bodies)}, None)
    monkeypatch.setattr(messages, "finish", real_finish)
    container_died()
    handler({"Records": records_of(bodies)}, None)
    delivery.scheduler()

    copies = [parsed(r.content) for r in server.handler.received]
    assert [c["X-Genro-Mail-ID"] for c in copies] == ["m-1", "m-1"]
    assert copies[0]["Message-ID"] == copies[1]["Message-ID"]  # receivers can de-duplicate
    assert delivery.records()["m-1"]["status"] == "sent"
    assert delivery.counters()["sent"] == 1
    assert delivery.pending() == 0


def test_dying_after_the_record_sends_nothing_twice(
    delivery: Delivery, server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mailproxy.stores import stores

    state = stores().journals

    from functions.sender.app import handler

    delivery.submit(message("m-1"), message("m-2"))
    bodies = delivery.drain(2)
    real_close = state.close_batch

    def dying_close(*args: Any, **kwargs: Any) -> None:
        raise ContainerDied

    monkeypatch.setattr(state, "close_batch", dying_close)
    with pytest.raises(ContainerDied):
        handler({"Records": records_of(bodies)}, None)
    monkeypatch.setattr(state, "close_batch", real_close)
    handler({"Records": records_of(bodies)}, None)
    delivery.scheduler()

    assert sorted(mail_ids(server.handler.received)) == ["m-1", "m-2"]  # lost: nothing; twice: nothing
    assert delivery.counters()["sent"] == 2  # counted once, by the scheduler finishing the journal
    assert delivery.pending() == 0


def test_message_accepted_but_never_enqueued_is_recovered_by_the_scheduler(
    delivery: Delivery, server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mailproxy.stores import stores

    queue = stores().queue

    def sqs_down(entries: Any) -> None:
        raise RuntimeError("SQS unavailable")

    real_enqueue = queue.enqueue
    monkeypatch.setattr(queue, "enqueue", sqs_down)
    assert delivery.submit(message("m-1"))["queued"] == 1
    monkeypatch.setattr(queue, "enqueue", real_enqueue)
    assert delivery.queued_total() == 0
    assert delivery.pending() == 1

    delivery.scheduler()
    delivery.pump()
    assert mail_ids(server.handler.received) == ["m-1"]
    assert delivery.pending() == 0


def test_intake_dying_before_counting_is_counted_and_enqueued_by_the_scheduler(
    delivery: Delivery, server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mailproxy import intake
    from mailproxy.stores import stores

    queue = stores().queue

    def dying_enqueue(entries: Any) -> None:
        raise ContainerDied

    from mailproxy.auth import Principal
    from mailproxy.models import AddMessages

    real_enqueue = queue.enqueue
    monkeypatch.setattr(queue, "enqueue", dying_enqueue)
    request = AddMessages.model_validate({"messages": [message("m-1"), message("m-2")]})
    with pytest.raises(ContainerDied):  # called in-process: a dying container never answers over HTTP
        intake.add_messages(Principal(is_admin=False, tenant_id="acme"), request)
    monkeypatch.setattr(queue, "enqueue", real_enqueue)
    assert delivery.pending() == 0  # the count was never applied

    delivery.scheduler()
    assert delivery.pending() == 2
    delivery.pump()
    assert sorted(mail_ids(server.handler.received)) == ["m-1", "m-2"]
    assert delivery.pending() == 0
