"""Delivery as API.md's "Delivery semantics" describes it, against a real SMTP server on loopback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from mailproxy import smtp

from tests.conftest import Storage
from tests.integration.delivery import Delivery, SqliteRunner, mail_ids, message, parsed, senders_racing
from tests.integration.smtp_servers import (
    SMTP_PASSWORD,
    SMTP_USER,
    RunningServer,
    SelfSignedCert,
    free_port,
    make_self_signed_cert,
    smtp_server,
    start_server,
)

EVENTS = Path(__file__).resolve().parents[2] / "events"

pytestmark = pytest.mark.both_storages


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries due at once, so a test can watch every attempt."""
    monkeypatch.setenv("GMP_RETRY_DELAYS", "0")
    monkeypatch.setenv("GMP_MAX_RETRIES", "2")
    from mailproxy.settings import get_settings

    get_settings.cache_clear()


def make_delivery(storage: Storage, api: TestClient, admin: dict[str, str], port: int, **account: Any) -> Delivery:
    reply = api.post("/tenant", json={"id": "acme", "name": "Acme"}, headers=admin)
    assert reply.status_code == 200, reply.text
    key = {"X-API-Token": reply.json()["api_key"]}
    body = {"id": "smtp", "host": "127.0.0.1", "port": port, "use_tls": False, **account}
    assert api.post("/account", json=body, headers=key).status_code == 200
    return Delivery(storage, api, admin, "acme", key)


@pytest.fixture
def delivery(storage: Storage, api: TestClient, admin: dict[str, str], server: RunningServer) -> Delivery:
    return make_delivery(storage, api, admin, server.port)


def test_message_arrives_with_the_headers_and_envelope_api_md_promises(
    delivery: Delivery, server: RunningServer
) -> None:
    delivery.submit(
        message(
            "m-1",
            to="Alice <alice@example.test>",
            cc="carol@example.test",
            bcc=["hidden@example.test"],
            reply_to="replies@acme.test",
            return_path="bounces@acme.test",
            subject="Καλημέρα — 日本語 🎉",
            body="<p>Grüße</p>",
            content_type="html",
            headers={"X-Campaign": 42},
        )
    )
    assert delivery.pump() == 1

    [received] = server.handler.received
    mail = parsed(received.content)
    assert received.mail_from == "bounces@acme.test"
    assert sorted(received.rcpt_tos) == ["alice@example.test", "carol@example.test", "hidden@example.test"]
    assert mail["From"] == "Acme <noreply@acme.test>"
    assert mail["To"] == "Alice <alice@example.test>"
    assert mail["Cc"] == "carol@example.test"
    assert mail["Bcc"] is None and b"hidden@example.test" not in received.content.split(b"\r\n\r\n", 1)[0]
    assert mail["Reply-To"] == "replies@acme.test"
    assert mail["Subject"] == "Καλημέρα — 日本語 🎉"
    assert mail["X-Genro-Mail-ID"] == "m-1"
    assert mail["X-Campaign"] == "42"
    assert mail["Date"] is not None
    assert mail["Message-ID"].endswith("@acme.test>")
    assert mail.get_content_type() == "text/html"
    assert "Grüße" in mail.get_content()

    record = delivery.records()["m-1"]
    assert record["status"] == "sent" and record["sent_ts"] is not None
    assert [e["event_type"] for e in record["history"]] == ["queued", "sent"]
    assert delivery.pending() == 0
    assert delivery.counters() == {"sent": 1, "errors": 0, "deferred": 0, "rate_limited": 0}


def test_redelivered_sqs_message_is_not_sent_twice(delivery: Delivery, server: RunningServer) -> None:
    from functions.sender.app import handler

    delivery.submit(message("m-1"))
    [body] = delivery.drain(2)
    record = {"messageId": "sqs-1", "receiptHandle": "r", "body": json.dumps(body)}
    assert handler({"Records": [record]}, None) == {"batchItemFailures": []}
    assert handler({"Records": [record]}, None) == {"batchItemFailures": []}

    assert mail_ids(server.handler.received) == ["m-1"]
    assert delivery.pending() == 0
    assert delivery.counters()["sent"] == 1


def test_message_put_on_the_queue_twice_is_sent_once(delivery: Delivery, server: RunningServer) -> None:
    delivery.submit(message("m-1"))
    [body] = delivery.drain(2)
    for _ in range(2):
        delivery.put(body)
    delivery.pump()

    assert mail_ids(server.handler.received) == ["m-1"]
    assert delivery.counters()["sent"] == 1


def test_sample_sqs_event_drives_the_real_handler(delivery: Delivery, server: RunningServer) -> None:
    from functions.sender.app import handler

    delivery.submit(message("m-1"))
    [body] = delivery.drain(2)
    event = json.loads((EVENTS / "sqs-batch.json").read_text())
    event["Records"] = event["Records"][:1]
    event["Records"][0]["body"] = json.dumps(body)
    assert handler(event, None) == {"batchItemFailures": []}
    assert mail_ids(server.handler.received) == ["m-1"]


def test_two_senders_racing_on_one_message_send_it_once(delivery: Delivery, server: RunningServer) -> None:
    import threading

    from functions.sender.app import handler

    delivery.submit(message("m-1"))
    [body] = delivery.drain(2)
    barrier = threading.Barrier(4)
    results: list[Any] = []

    def race(n: int) -> None:
        barrier.wait()
        results.append(handler({"Records": [{"messageId": f"sqs-{n}", "body": json.dumps(body)}]}, None))

    threads = [threading.Thread(target=race, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(results) == 4
    assert mail_ids(server.handler.received) == ["m-1"]
    assert delivery.counters()["sent"] == 1
    assert delivery.pending() == 0


def test_permanent_550_fails_the_message_with_the_smtp_reason(delivery: Delivery) -> None:
    delivery.submit(message("m-1", to="reject550@example.test"))
    delivery.pump()

    record = delivery.records()["m-1"]
    assert record["status"] == "error"
    assert "550" in record["error"]
    assert delivery.pending() == 0
    assert delivery.counters() == {"sent": 0, "errors": 1, "deferred": 0, "rate_limited": 0}


def test_temporary_451_is_retried_and_then_fails_after_max_retries(quick_retries: None, delivery: Delivery) -> None:
    delivery.submit(message("m-1", to="temp451@example.test"))
    delivery.pump()

    record = delivery.records()["m-1"]
    assert record["status"] == "error"
    assert record["error"].startswith("Max retries (2) exceeded: 451")
    deferrals = [e for e in record["history"] if e["event_type"] == "deferred"]
    assert len(deferrals) == 2
    assert delivery.counters() == {"sent": 0, "errors": 1, "deferred": 2, "rate_limited": 0}
    assert delivery.pending() == 0


def test_451_once_then_accepted_is_sent_on_retry(
    quick_retries: None, delivery: Delivery, server: RunningServer
) -> None:
    delivery.submit(message("m-1", to="flaky451@example.test"))
    delivery.pump()

    assert mail_ids(server.handler.received) == ["m-1"]
    record = delivery.records()["m-1"]
    assert record["status"] == "sent"
    [deferral] = [e for e in record["history"] if e["event_type"] == "deferred"]
    assert "451" in deferral["description"]
    assert delivery.counters() == {"sent": 1, "errors": 0, "deferred": 1, "rate_limited": 0}


def test_retry_is_deferred_by_the_configured_delay(delivery: Delivery, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GMP_RETRY_DELAYS", "120,600")
    from mailproxy.settings import get_settings

    get_settings.cache_clear()
    delivery.submit(message("m-1", to="temp451@example.test"))
    delivery.pump()

    record = delivery.records()["m-1"]
    assert record["status"] == "deferred"
    assert 110 <= record["deferred_ts"] - record["updated_at"] <= 130
    assert delivery.queue_depth(2)["delayed"] == 1


def test_smtp_server_down_then_up_delivers_the_message(
    quick_retries: None, storage: Storage, api: TestClient, admin: dict[str, str]
) -> None:
    port = free_port()
    delivery = make_delivery(storage, api, admin, port, limit_behavior="defer")
    delivery.submit(message("m-1"))
    delivery.runner.pump_once()  # nobody listens: a temporary failure, retried at once

    assert delivery.records()["m-1"]["status"] == "deferred"
    server = start_server(port)
    try:
        delivery.pump()
        assert mail_ids(server.handler.received) == ["m-1"]
    finally:
        server.stop()
    assert delivery.records()["m-1"]["status"] == "sent"


def test_login_and_starttls_with_the_accounts_password(
    storage: Storage, api: TestClient, admin: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GMP_SMTP_VERIFY_TLS", "false")  # the test's certificate is self-signed
    cert: SelfSignedCert = make_self_signed_cert(tmp_path)
    with smtp_server(
        tls_context=cert.server_context(), require_starttls=True, auth_required=True, authenticator=_authenticator()
    ) as server:
        delivery = make_delivery(storage, api, admin, server.port, use_tls=True, user=SMTP_USER, password=SMTP_PASSWORD)
        delivery.submit(message("m-1"))
        delivery.pump()
        [received] = server.handler.received
        smtp.run(smtp.default_pool().close_all())  # else stopping the server waits 30 s for the pooled TLS session
    assert received.tls and received.authenticated
    assert delivery.records()["m-1"]["status"] == "sent"


def _authenticator() -> Any:
    from tests.integration.smtp_servers import authenticator

    return authenticator


def test_wrong_password_fails_the_message_permanently(storage: Storage, api: TestClient, admin: dict[str, str]) -> None:
    with smtp_server(auth_required=True, authenticator=_authenticator()) as server:
        delivery = make_delivery(storage, api, admin, server.port, use_tls=False, user=SMTP_USER, password="wrong")
        delivery.submit(message("m-1"))
        delivery.pump()
        assert server.handler.received == []
    record = delivery.records()["m-1"]
    assert record["status"] == "error" and "authentication failed" in record["error"]


def test_rate_limit_defers_what_is_over_to_the_next_window(delivery: Delivery, server: RunningServer) -> None:
    delivery.set_account(server.port, limit_per_minute=2)
    delivery.submit(*(message(f"m-{n}") for n in range(5)))
    delivery.pump()

    assert len(server.handler.received) == 2
    records = delivery.records()
    deferred = [r for r in records.values() if r["status"] == "deferred"]
    assert len(deferred) == 3
    for record in deferred:
        assert record["deferred_ts"] % 60 == 0  # the start of the next UTC minute
        [event] = [e for e in record["history"] if e["event_type"] == "deferred"]
        assert event["description"] == "rate_limit"
    assert delivery.counters() == {"sent": 2, "errors": 0, "deferred": 3, "rate_limited": 3}
    assert delivery.pending() == 3


def test_rate_limit_with_reject_fails_what_is_over(delivery: Delivery, server: RunningServer) -> None:
    delivery.set_account(server.port, limit_per_hour=1, limit_behavior="reject")
    delivery.submit(message("m-1"), message("m-2"))
    delivery.pump()

    statuses = sorted(r["status"] for r in delivery.records().values())
    assert statuses == ["error", "sent"]
    [failed] = [r for r in delivery.records().values() if r["status"] == "error"]
    assert failed["error"] == "rate_limit_exceeded"
    assert delivery.counters() == {"sent": 1, "errors": 0, "deferred": 0, "rate_limited": 1}
    assert delivery.pending() == 0


def test_failed_send_gives_its_rate_slot_back(delivery: Delivery, server: RunningServer) -> None:
    delivery.set_account(server.port, limit_per_minute=1)
    delivery.submit(message("m-1", to="reject550@example.test"))
    delivery.pump()
    delivery.submit(message("m-2"))
    delivery.pump()

    assert mail_ids(server.handler.received) == ["m-2"]


def test_many_concurrent_senders_never_exceed_the_accounts_limit(delivery: Delivery, server: RunningServer) -> None:
    # Sessions enough for every slot the rate limit grants: this test is about the rate windows alone.
    delivery.set_account(server.port, limit_per_minute=7, max_connections=10)
    delivery.submit(*(message(f"m-{n}") for n in range(24)))
    senders_racing(delivery.drain(2), 4)

    sent = mail_ids(server.handler.received)
    assert len(sent) == len(set(sent)) <= 7
    records = delivery.records().values()
    assert sum(r["status"] == "sent" for r in records) == len(sent)
    assert sum(r["status"] == "deferred" for r in records) == 24 - len(sent)
    # The window may roll over mid-test; then at most two windows' worth went out.
    assert len(sent) == 7 or {r["deferred_ts"] for r in records if r["status"] == "deferred"}


def test_messages_of_a_deleted_account_fail_with_the_api_md_error(delivery: Delivery, server: RunningServer) -> None:
    delivery.submit(message("m-1"))
    assert delivery.api.delete("/account/smtp", headers=delivery.key).status_code == 200
    delivery.pump()

    record = delivery.records()["m-1"]
    assert record["status"] == "error"
    assert record["error"] == "Account 'smtp' not found for tenant 'acme'"
    assert server.handler.received == []
    assert delivery.counters()["errors"] == 1


def test_a_deleted_tenants_messages_are_never_sent(delivery: Delivery, server: RunningServer) -> None:
    delivery.submit(message("m-1"))
    body = delivery.drain(2)
    assert delivery.api.delete("/tenant/acme", headers=delivery.admin).status_code == 200
    from functions.sender.app import handler

    handler({"Records": [{"messageId": "x", "body": json.dumps(b)} for b in body]}, None)
    assert server.handler.received == []


def test_suspended_tenant_is_held_and_sent_on_activation(delivery: Delivery, server: RunningServer) -> None:
    delivery.submit(message("m-1"))
    assert delivery.api.post("/commands/suspend", headers=delivery.key).status_code == 200
    delivery.pump()
    assert server.handler.received == []
    assert delivery.records()["m-1"]["status"] == "suspended"
    assert delivery.pending() == 1

    assert delivery.api.post("/commands/activate", headers=delivery.key).status_code == 200
    delivery.pump()
    assert mail_ids(server.handler.received) == ["m-1"]
    assert delivery.pending() == 0


@pytest.mark.aws_only("deletes a pack's S3 object; the SQLite twin sweeps the pack's rows")
def test_a_held_message_keeps_its_payload_after_its_pack_expires(delivery: Delivery, server: RunningServer) -> None:
    delivery.submit(message("m-1"), message("m-2"))
    assert delivery.api.post("/commands/suspend", headers=delivery.key).status_code == 200
    delivery.pump()  # held: the sender stores each payload on its own, since a hold can outlast a pack
    s3, bucket = delivery.env.client("s3"), delivery.env["PAYLOAD_BUCKET"]
    packs = s3.list_objects_v2(Bucket=bucket, Prefix="payloads/packs/").get("Contents", [])
    assert len(packs) == 1
    s3.delete_object(Bucket=bucket, Key=packs[0]["Key"])  # as the lifecycle rule does after PackExpirationDays

    assert delivery.api.post("/commands/activate", headers=delivery.key).status_code == 200
    delivery.pump()
    assert sorted(mail_ids(server.handler.received)) == ["m-1", "m-2"]
    assert {r["message"]["to"][0] for r in delivery.records().values()} == {"alice@example.test"}


@pytest.mark.sqlite_only("SQLite's twin of test_a_held_message_keeps_its_payload_after_its_pack_expires")
def test_a_held_message_keeps_its_payload_after_its_pack_is_swept(delivery: Delivery, server: RunningServer) -> None:
    import time

    from mailproxy.adapters.sqlite.payloads import PACK_EXPIRATION_SECONDS
    from mailproxy.stores import stores

    delivery.submit(message("m-1"), message("m-2"))
    assert delivery.api.post("/commands/suspend", headers=delivery.key).status_code == 200
    delivery.pump()  # held: the sender stores each payload on its own, since a hold can outlast a pack
    stores().service.delete_expired(int(time.time()) + PACK_EXPIRATION_SECONDS + 1)  # the packs' expiry, swept
    assert isinstance(delivery.runner, SqliteRunner)
    stored = delivery.runner.database().read("SELECT pack, COUNT(*) AS n FROM payloads GROUP BY pack")
    assert [(r["pack"], r["n"]) for r in stored] == [("", 2)]  # pinned only: the pack is gone

    assert delivery.api.post("/commands/activate", headers=delivery.key).status_code == 200
    delivery.pump()
    assert sorted(mail_ids(server.handler.received)) == ["m-1", "m-2"]
    assert {r["message"]["to"][0] for r in delivery.records().values()} == {"alice@example.test"}


def test_suspended_batch_is_held_while_others_go(delivery: Delivery, server: RunningServer) -> None:
    assert (
        delivery.api.post("/commands/suspend", params={"batch_code": "promo"}, headers=delivery.key).status_code == 200
    )
    delivery.submit(message("m-1", batch_code="promo"), message("m-2"))
    delivery.pump()
    assert mail_ids(server.handler.received) == ["m-2"]

    delivery.api.post("/commands/activate", params={"batch_code": "promo"}, headers=delivery.key)
    delivery.pump()
    assert sorted(mail_ids(server.handler.received)) == ["m-1", "m-2"]


def test_inactive_tenant_is_held_until_reactivated(delivery: Delivery, server: RunningServer) -> None:
    delivery.api.put("/tenant/acme", json={"active": False}, headers=delivery.admin)
    delivery.submit(message("m-1"))
    delivery.pump()
    assert server.handler.received == []

    delivery.api.put("/tenant/acme", json={"active": True}, headers=delivery.admin)
    delivery.pump()
    assert mail_ids(server.handler.received) == ["m-1"]


def test_message_scheduled_beyond_15_minutes_waits_for_the_scheduler(delivery: Delivery, server: RunningServer) -> None:
    import time

    delivery.submit(message("m-1", deferred_ts=int(time.time()) + 3600))
    assert delivery.queued_total() == 0
    delivery.scheduler()
    delivery.pump()
    assert server.handler.received == []

    delivery.age_message("m-1", 3600)
    assert delivery.scheduler()["requeued"] == 1
    delivery.pump()
    assert mail_ids(server.handler.received) == ["m-1"]
    assert delivery.scheduler()["requeued"] == 0


def test_attachment_failure_is_a_permanent_error_of_that_message(delivery: Delivery, server: RunningServer) -> None:
    delivery.submit(
        message(
            "m-1", attachments=[{"filename": "a.pdf", "storage_path": "base64:not base64!", "fetch_mode": "base64"}]
        ),
        message("m-2", attachments=[{"filename": "ok.txt", "storage_path": "base64:aGVsbG8="}]),
    )
    delivery.pump()

    records = delivery.records()
    assert records["m-1"]["status"] == "error"
    assert records["m-1"]["error"].startswith("Attachment fetch failed for a.pdf")
    [received] = server.handler.received
    attachment = next(parsed(received.content).iter_attachments())
    assert attachment.get_filename() == "ok.txt" and attachment.get_content() == "hello"


def test_immediate_messages_go_before_a_backlog_of_lower_priorities(delivery: Delivery, server: RunningServer) -> None:
    delivery.submit(*(message(f"low-{n}", priority="low") for n in range(12)))
    delivery.submit(message("urgent", priority="immediate"))
    delivery.pump()

    # It leads the first batch, whose messages start together over the account's 5 sessions.
    assert mail_ids(server.handler.received).index("urgent") < 5
    assert len(server.handler.received) == 13


def test_one_smtp_connection_serves_every_batch_of_a_one_session_account(
    delivery: Delivery, server: RunningServer
) -> None:
    delivery.set_account(server.port, max_connections=1)
    delivery.submit(*(message(f"m-{n}") for n in range(10)))
    delivery.pump()
    delivery.submit(*(message(f"n-{n}") for n in range(10)))
    delivery.pump()

    assert len(server.handler.received) == 20
    assert smtp.default_pool().connections_opened == 1


def test_no_send_starts_when_the_invocation_has_too_little_time_left(delivery: Delivery, server: RunningServer) -> None:
    from functions.sender.app import handler

    class AlmostOutOfTime:
        def get_remaining_time_in_millis(self) -> int:
            return 2_000  # less than the SMTP timeout plus the time to record a result

    delivery.submit(message("m-1"))
    [body] = delivery.drain(2)
    reply = handler({"Records": [{"messageId": "sqs-1", "body": json.dumps(body)}]}, AlmostOutOfTime())

    assert reply == {"batchItemFailures": [{"itemIdentifier": "sqs-1"}]}  # SQS brings it back later
    assert server.handler.received == []
    assert delivery.records()["m-1"]["status"] == "pending"
    assert handler({"Records": [{"messageId": "sqs-1", "body": json.dumps(body)}]}, None) == {"batchItemFailures": []}
    assert mail_ids(server.handler.received) == ["m-1"]


def test_an_account_ttl_of_zero_opens_a_new_smtp_connection_for_every_message(
    storage: Storage, api: TestClient, admin: dict[str, str], server: RunningServer
) -> None:
    delivery = make_delivery(storage, api, admin, server.port, ttl=0)
    for message_id in ("m-1", "m-2", "m-3"):
        delivery.submit(message(message_id))
        assert delivery.pump() == 1
    assert mail_ids(server.handler.received) == ["m-1", "m-2", "m-3"]
    pool = smtp.default_pool()
    assert (pool.connections_opened, pool.connections_expired) == (3, 2)


def test_an_account_keeps_its_smtp_connection_within_the_default_ttl(
    storage: Storage, api: TestClient, admin: dict[str, str], server: RunningServer
) -> None:
    delivery = make_delivery(storage, api, admin, server.port)
    for message_id in ("m-1", "m-2"):
        delivery.submit(message(message_id))
        assert delivery.pump() == 1
    pool = smtp.default_pool()
    assert (pool.connections_opened, pool.connections_expired) == (1, 0)
