"""The claim counter: a message whose attempts keep ending unfinished (crash, timeout) fails after
GMP_MAX_CLAIM_ATTEMPTS, is counted and reported, and is never sent twice nor failed under a live sender."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from mailproxy import smtp

from tests.conftest import Storage
from tests.integration.delivery import Delivery, container_died, mail_ids, message
from tests.integration.smtp_servers import RunningServer

pytestmark = pytest.mark.both_storages

ABANDONED = "Abandoned after 3 attempts that did not finish (sender crashed or timed out)"


class ContainerDied(BaseException):
    """What a Lambda container's sudden death looks like to the code it was running."""


def use_settings(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    from mailproxy.settings import get_settings

    get_settings.cache_clear()


@pytest.fixture
def delivery(
    storage: Storage, api: TestClient, admin: dict[str, str], server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> Delivery:
    # Claims and journals go stale at once, so a redelivery or a scheduler round recovers them now.
    use_settings(monkeypatch, GMP_CLAIM_TIMEOUT_SECONDS="0", GMP_INTAKE_GRACE_SECONDS="0")
    key = {"X-API-Token": api.post("/tenant", json={"id": "acme"}, headers=admin).json()["api_key"]}
    account = {"id": "smtp", "host": "127.0.0.1", "port": server.port, "use_tls": False}
    assert api.post("/account", json=account, headers=key).status_code == 200
    return Delivery(storage, api, admin, "acme", key)


def records_of(bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"messageId": f"sqs-{b['id']}", "body": json.dumps(b)} for b in bodies]


REAL_SEND = smtp.SmtpPool.send


def crash_on(monkeypatch: pytest.MonkeyPatch, poison_id: str, error: BaseException) -> None:
    """Sending `poison_id` raises `error`; every other message goes out."""
    real_send = REAL_SEND

    async def send(self: smtp.SmtpPool, account: Any, email: Any) -> dict[str, str]:
        if str(email.message["X-Genro-Mail-ID"]) == poison_id:
            raise error
        return await real_send(self, account, email)

    monkeypatch.setattr(smtp.SmtpPool, "send", send)


def test_a_message_that_kills_its_sender_each_time_fails_after_three_attempts(
    delivery: Delivery, server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from functions.sender.app import handler

    delivery.submit(message("poison"))
    crash_on(monkeypatch, "poison", ContainerDied())
    for attempt in range(3):
        bodies = delivery.drain(2)
        assert [b["id"] for b in bodies] == ["poison"], f"attempt {attempt + 1} was not re-queued"
        with pytest.raises(ContainerDied):
            handler({"Records": records_of(bodies)}, None)
        container_died()
        delivery.scheduler()  # finishes the dead batch: re-queues twice, then gives up

    assert delivery.queued_total() == 0  # never re-queued again
    record = delivery.records()["poison"]
    assert (record["status"], record["error"]) == ("error", ABANDONED)
    assert [e["event_type"] for e in record["history"]][-1] == "error"  # reported like any failure
    assert delivery.counters() == {"sent": 0, "errors": 1, "deferred": 0, "rate_limited": 0}
    assert delivery.pending() == 0
    assert server.handler.received == []


def test_an_unexpected_error_in_one_message_leaves_the_batch_going_and_is_abandoned_after_three(
    delivery: Delivery, server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from functions.sender.app import handler

    delivery.submit(message("ok-1"), message("poison"), message("ok-2"))
    crash_on(monkeypatch, "poison", RuntimeError("a bug"))
    bodies = delivery.drain(2)
    assert handler({"Records": records_of(bodies)}, None) == {"batchItemFailures": []}
    assert sorted(mail_ids(server.handler.received)) == ["ok-1", "ok-2"]  # the batch went on
    assert delivery.records()["poison"]["status"] == "sending"  # its claim is left to crash recovery

    for _ in range(3):
        delivery.scheduler()
        delivery.pump()

    statuses = {i: (r["status"], r["error"]) for i, r in delivery.records().items()}
    assert statuses == {"ok-1": ("sent", None), "ok-2": ("sent", None), "poison": ("error", ABANDONED)}
    assert sorted(mail_ids(server.handler.received)) == ["ok-1", "ok-2"]  # nothing sent twice
    assert delivery.counters() == {"sent": 2, "errors": 1, "deferred": 0, "rate_limited": 0}
    assert delivery.pending() == 0


def test_sqs_redelivering_a_message_whose_claims_kept_dying_fails_it_without_sending(
    delivery: Delivery, server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from functions.sender.app import handler

    delivery.submit(message("poison"))
    bodies = delivery.drain(2)
    crash_on(monkeypatch, "poison", ContainerDied())
    for _ in range(3):  # SQS redelivers the same record after each death; no scheduler round in between
        with pytest.raises(ContainerDied):
            handler({"Records": records_of(bodies)}, None)
        container_died()
    monkeypatch.setattr(smtp.SmtpPool, "send", REAL_SEND)

    assert handler({"Records": records_of(bodies)}, None) == {"batchItemFailures": []}
    delivery.scheduler()  # the dead batches' journals: nothing left to re-queue
    assert delivery.records()["poison"]["error"] == ABANDONED
    assert server.handler.received == []
    assert delivery.counters()["errors"] == 1
    assert delivery.pending() == 0
    assert delivery.queued_total() == 0


def test_recovering_a_stale_claim_never_fails_a_message_a_live_sender_holds(
    delivery: Delivery, server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mailproxy import scheduler
    from mailproxy.stores import stores

    from functions.sender.app import handler

    use_settings(monkeypatch, GMP_MAX_CLAIM_ATTEMPTS="2")
    delivery.submit(message("m-1"))
    bodies = delivery.drain(2)
    crash_on(monkeypatch, "m-1", ContainerDied())
    with pytest.raises(ContainerDied):
        handler({"Records": records_of(bodies)}, None)  # first claim dies: its journal is left open
    container_died()
    [dead_journal] = stores().journals.due_journals(10**11)
    real_send = REAL_SEND

    async def send_while_the_scheduler_recovers(self: smtp.SmtpPool, account: Any, email: Any) -> dict[str, str]:
        item = stores().messages.get_state("acme", "m-1") or {}
        assert item["claims"] == 2 and item["claim_id"] != dead_journal["sk"]  # the live sender's claim
        # The scheduler finishes the dead batch right now, while this sender holds the message.
        scheduler.finish_journal(dead_journal, 10**11)
        return await real_send(self, account, email)

    monkeypatch.setattr(smtp.SmtpPool, "send", send_while_the_scheduler_recovers)
    assert handler({"Records": records_of(bodies)}, None) == {"batchItemFailures": []}

    record = delivery.records()["m-1"]
    assert (record["status"], record["error"]) == ("sent", None)
    assert mail_ids(server.handler.received) == ["m-1"]
    assert delivery.counters() == {"sent": 1, "errors": 0, "deferred": 0, "rate_limited": 0}
    assert delivery.pending() == 0


def test_claims_that_record_a_result_reset_the_counter(
    delivery: Delivery, server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One attempt allowed, yet a message deferred by a 451 goes out on its retry: deferrals are not crashes.
    use_settings(monkeypatch, GMP_MAX_CLAIM_ATTEMPTS="1", GMP_RETRY_DELAYS="0")
    delivery.submit(message("m-1", to="flaky451@example.test"))
    delivery.pump()

    assert mail_ids(server.handler.received) == ["m-1"]
    assert delivery.records()["m-1"]["status"] == "sent"


def test_a_crash_in_a_batch_loses_none_of_the_other_messages_counts(
    delivery: Delivery, server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The batch is left open for its crashed message; its other results must still be counted, even when one
    # of them (a deferral) is sent again before the scheduler finishes the open batch.
    from functions.sender.app import handler

    use_settings(monkeypatch, GMP_RETRY_DELAYS="0")
    delivery.submit(message("ok"), message("flaky", to="flaky451@example.test"), message("poison"))
    crash_on(monkeypatch, "poison", RuntimeError("a bug"))
    bodies = delivery.drain(2)
    assert handler({"Records": records_of(bodies)}, None) == {"batchItemFailures": []}
    assert delivery.records()["flaky"]["status"] == "deferred"
    delivery.pump()  # the deferral's own copy: sent, before any scheduler round
    assert delivery.records()["flaky"]["status"] == "sent"

    for _ in range(3):
        delivery.scheduler()
        delivery.pump()

    statuses = {i: (r["status"], r["error"]) for i, r in delivery.records().items()}
    assert statuses == {"ok": ("sent", None), "flaky": ("sent", None), "poison": ("error", ABANDONED)}
    assert sorted(mail_ids(server.handler.received)) == ["flaky", "ok"]
    assert delivery.counters() == {"sent": 2, "errors": 1, "deferred": 1, "rate_limited": 0}
    assert delivery.pending() == 0
