"""Listing, deleting and cleaning up messages; suspend and activate; the pending count they keep."""

from __future__ import annotations

import time
from typing import Any

import mailproxy.clock
import pytest
from fastapi.testclient import TestClient

from tests.conftest import AccountFactory, AwsEnv, TenantFactory
from tests.integration.api_support import add, by_id, message, pending, records
from tests.integration.delivery import Runner

pytestmark = pytest.mark.both_storages

RECORD_KEYS = {
    "pk",
    "id",
    "tenant_id",
    "account_id",
    "priority",
    "batch_code",
    "status",
    "deferred_ts",
    "sent_ts",
    "error_ts",
    "error",
    "created_at",
    "updated_at",
    "message",
}


@pytest.fixture
def key(make_tenant: TenantFactory, make_account: AccountFactory) -> dict[str, str]:
    _, headers = make_tenant("acme")
    make_account("acme")
    return headers


def delete(api: TestClient, headers: dict[str, str], *ids: str, **params: Any) -> Any:
    return api.post("/commands/delete-messages", json={"ids": list(ids)}, params=params, headers=headers)


# ---------------------------------------------------------------- GET /messages


def test_a_record_has_the_documented_fields(api: TestClient, key: dict[str, str]) -> None:
    add(api, key, message("m-1", batch_code="spring"))
    (record,) = records(api, key)
    assert set(record) == RECORD_KEYS
    assert (record["id"], record["tenant_id"], record["account_id"]) == ("m-1", "acme", "smtp")
    assert (record["priority"], record["batch_code"], record["status"]) == (2, "spring", "pending")
    assert record["sent_ts"] is None and record["error"] is None
    assert record["pk"] and record["created_at"] and record["updated_at"]
    assert record["message"]["subject"] == "Hello"


def test_messages_are_listed_by_priority_then_age(
    api: TestClient, key: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    start = int(time.time()) - 100
    for offset, message_id, priority in [
        (0, "z-low-old", 3),
        (5, "y-high-old", 1),
        (10, "a-low-new", 3),
        (20, "b-high-new", 1),
    ]:
        monkeypatch.setattr(mailproxy.clock, "now_ts", lambda offset=offset: start + offset)
        add(api, key, message(message_id, priority=priority))
    monkeypatch.undo()
    add(api, key, message("now", priority="immediate"))
    assert [r["id"] for r in records(api, key)] == ["now", "y-high-old", "b-high-new", "z-low-old", "a-low-new"]


def test_active_only_lists_the_unsent_messages(api: TestClient, key: dict[str, str], queues: Runner) -> None:
    add(api, key, message("pending"), message("later", deferred_ts=int(time.time()) + 3600), message("sent"))
    add(api, key, message("failed", to=[]))
    queues.finish_message("acme", "sent")
    assert {r["id"] for r in records(api, key)} == {"pending", "later", "sent", "failed"}
    assert {r["id"] for r in records(api, key, active_only="true")} == {"pending", "later"}


def test_history_is_shown_only_on_request(api: TestClient, key: dict[str, str]) -> None:
    add(api, key, message("m-1"))
    add(api, key, message("m-1", subject="again"))
    assert "history" not in records(api, key)[0]
    (record,) = records(api, key, include_history="true")
    assert [e["event_type"] for e in record["history"]] == ["queued", "queued"]
    for event in record["history"]:
        assert set(event) == {"event_type", "event_ts", "description", "reported_ts"}
        assert isinstance(event["event_ts"], int)


def test_a_listed_message_leaves_out_inline_content_and_attachment_credentials(
    api: TestClient, key: dict[str, str]
) -> None:
    attachments = [
        {"filename": "inline.txt", "storage_path": "base64:SGVsbG8gd29ybGQ="},
        {"filename": "raw.bin", "storage_path": "SGVsbG8gd29ybGQ=", "fetch_mode": "base64"},
        {
            "filename": "report.pdf",
            "storage_path": "https://files.acme.test/report.pdf",
            "auth": {"method": "bearer", "token": "attachment-bearer-s3cret"},
        },
        {
            "filename": "doc.odt",
            "storage_path": "docs/42",
            "auth": {"method": "basic", "user": "u", "password": "attachment-basic-s3cret"},
        },
    ]
    add(api, key, message("m-1", attachments=attachments))
    reply = api.get("/messages", headers=key)
    assert "SGVsbG8gd29ybGQ=" not in reply.text
    assert "attachment-bearer-s3cret" not in reply.text
    assert "attachment-basic-s3cret" not in reply.text
    shown = reply.json()["messages"][0]["message"]["attachments"]
    assert shown == [
        {"filename": "inline.txt"},
        {"filename": "raw.bin", "fetch_mode": "base64"},
        {"filename": "report.pdf", "storage_path": "https://files.acme.test/report.pdf"},
        {"filename": "doc.odt", "storage_path": "docs/42"},
    ]


def test_sent_ts_is_only_shown_for_sent_messages(api: TestClient, key: dict[str, str], aws_env: AwsEnv) -> None:
    add(api, key, message("m-1"))
    aws_env.client("dynamodb").update_item(
        TableName=aws_env["MESSAGES_TABLE"],
        Key={"tenant_id": {"S": "acme"}, "id": {"S": "m-1"}},
        UpdateExpression="SET sent_ts = :t",
        ExpressionAttributeValues={":t": {"N": "1700000000"}},
    )
    assert records(api, key)[0]["sent_ts"] is None
    aws_env.finish_message("acme", "m-1")
    assert records(api, key)[0]["sent_ts"] == 1700000000


# ---------------------------------------------------------------- delete-messages


def test_deleting_messages_reports_removed_and_not_found(api: TestClient, key: dict[str, str]) -> None:
    add(api, key, message("m-1"), message("m-2"))
    reply = delete(api, key, "m-1", "ghost", "m-1")
    assert reply.status_code == 200
    assert reply.json() == {"ok": True, "removed": 1, "not_found": ["ghost"], "unauthorized": []}
    assert [r["id"] for r in records(api, key)] == ["m-2"]
    assert pending(api, key) == 1


def test_deleting_decrements_the_pending_count_by_the_unsent_messages_only(
    api: TestClient, admin: dict[str, str], key: dict[str, str], queues: Runner
) -> None:
    later = int(time.time()) + 3600
    add(api, key, message("a"), message("b"), message("c", deferred_ts=later), message("d"))
    add(api, key, message("failed", to=[]))
    queues.finish_message("acme", "d")
    assert pending(api, key) == 3
    assert delete(api, key, "a").json()["removed"] == 1
    assert pending(api, key) == 2
    reply = delete(api, key, "a", "b", "c", "d", "failed")
    assert reply.json() == {"ok": True, "removed": 4, "not_found": ["a"], "unauthorized": []}
    assert pending(api, key) == 0
    assert pending(api, admin) == 0
    assert records(api, key) == []


def test_the_admin_deletes_by_naming_the_tenant_in_the_query_or_the_body(
    api: TestClient, admin: dict[str, str], key: dict[str, str]
) -> None:
    add(api, key, message("m-1"), message("m-2"))
    assert delete(api, admin, "m-1", tenant_id="acme").json()["removed"] == 1
    reply = api.post("/commands/delete-messages", json={"ids": ["m-2"], "tenant_id": "acme"}, headers=admin)
    assert reply.json()["removed"] == 1
    assert records(api, key) == []


def test_a_query_and_a_body_naming_different_tenants_are_refused(
    api: TestClient, admin: dict[str, str], key: dict[str, str], make_tenant: TenantFactory
) -> None:
    make_tenant("globex")
    add(api, key, message("m-1"))
    reply = api.post(
        "/commands/delete-messages",
        params={"tenant_id": "acme"},
        json={"ids": ["m-1"], "tenant_id": "globex"},
        headers=admin,
    )
    assert reply.status_code == 400
    assert [r["id"] for r in records(api, key)] == ["m-1"]


def test_deleting_an_empty_list_removes_nothing(api: TestClient, key: dict[str, str]) -> None:
    add(api, key, message("m-1"))
    assert delete(api, key).json() == {"ok": True, "removed": 0, "not_found": [], "unauthorized": []}
    assert pending(api, key) == 1


# ---------------------------------------------------------------- cleanup-messages


def test_cleanup_removes_finished_messages_older_than_asked(
    api: TestClient, key: dict[str, str], queues: Runner
) -> None:
    add(api, key, message("done"), message("waiting"))
    add(api, key, message("failed", to=[]))
    queues.finish_message("acme", "done")
    reply = api.post("/commands/cleanup-messages", json={"older_than_seconds": 0}, headers=key)
    assert reply.status_code == 200
    assert reply.json() == {"ok": True, "removed": 2}
    assert [(r["id"], r["message"]["subject"]) for r in records(api, key)] == [("waiting", "Hello")]
    assert pending(api, key) == 1


def test_cleanup_keeps_recent_messages_by_default(api: TestClient, key: dict[str, str], queues: Runner) -> None:
    add(api, key, message("done"))
    queues.finish_message("acme", "done")
    assert api.post("/commands/cleanup-messages", headers=key).json() == {"ok": True, "removed": 0}
    assert api.post("/commands/cleanup-messages", json={}, headers=key).json() == {"ok": True, "removed": 0}
    assert [r["id"] for r in records(api, key)] == ["done"]


def test_cleanup_keeps_results_the_tenants_callback_has_not_acknowledged(
    api: TestClient, make_tenant: TenantFactory, make_account: AccountFactory
) -> None:
    _, key = make_tenant("hooked", client_base_url="https://app.hooked.test")
    make_account("hooked")
    add(api, key, message("failed", to=[]))
    assert api.post("/commands/cleanup-messages", json={"older_than_seconds": 0}, headers=key).json()["removed"] == 0
    assert [r["id"] for r in records(api, key)] == ["failed"]


def test_cleanup_touches_only_the_named_tenant(
    api: TestClient,
    admin: dict[str, str],
    key: dict[str, str],
    make_tenant: TenantFactory,
    make_account: AccountFactory,
) -> None:
    _, other = make_tenant("globex")
    make_account("globex")
    add(api, key, message("failed", to=[]))
    add(api, other, message("failed", to=[]))
    reply = api.post(
        "/commands/cleanup-messages", params={"tenant_id": "globex"}, json={"older_than_seconds": 0}, headers=admin
    )
    assert reply.json()["removed"] == 1
    assert [r["id"] for r in records(api, key)] == ["failed"]
    assert records(api, other) == []


# ---------------------------------------------------------------- suspend / activate


def test_suspending_the_tenant_holds_new_messages_off_the_queues(
    api: TestClient, key: dict[str, str], queues: Runner
) -> None:
    add(api, key, message("before"))
    queues.drain(2)
    reply = api.post("/commands/suspend", headers=key)
    assert reply.status_code == 200
    assert reply.json() == {
        "ok": True,
        "tenant_id": "acme",
        "batch_code": None,
        "suspended_batches": ["*"],
        "pending_messages": 1,
    }
    assert add(api, key, message("held", priority="high")).json()["queued"] == 1
    assert by_id(api, key)["held"]["status"] == "suspended"
    assert queues.queued_total() == 0
    assert pending(api, key) == 2
    assert api.get("/status", headers=key).json()["active"] is False
    assert api.get("/tenant/acme", headers=key).json()["suspended_batches"] == ["*"]


def test_activating_the_tenant_sends_the_held_messages(api: TestClient, key: dict[str, str], queues: Runner) -> None:
    api.post("/commands/suspend", headers=key)
    add(api, key, message("held-1", priority="high"), message("held-2", priority="low"))
    reply = api.post("/commands/activate", headers=key)
    assert reply.status_code == 200
    assert reply.json() == {
        "ok": True,
        "tenant_id": "acme",
        "batch_code": None,
        "suspended_batches": [],
        "pending_messages": 2,
    }
    assert {r["id"]: r["status"] for r in records(api, key)} == {"held-1": "pending", "held-2": "pending"}
    queued = queues.drain_all()
    assert [b["id"] for b in queued[1]] == ["held-1"]
    assert [b["id"] for b in queued[3]] == ["held-2"]
    assert queued[1][0]["payload"]["subject"] == "Hello"
    assert api.get("/status", headers=key).json()["active"] is True


def test_suspending_a_batch_holds_only_that_batch(api: TestClient, key: dict[str, str], queues: Runner) -> None:
    add(api, key, message("spring-1", batch_code="spring"))
    reply = api.post("/commands/suspend", params={"batch_code": "spring"}, headers=key)
    assert reply.json() == {
        "ok": True,
        "tenant_id": "acme",
        "batch_code": "spring",
        "suspended_batches": ["spring"],
        "pending_messages": 1,
    }
    queues.drain(2)
    add(api, key, message("spring-2", batch_code="spring"), message("summer-1", batch_code="summer"), message("plain"))
    statuses = {r["id"]: r["status"] for r in records(api, key)}
    assert statuses == {"spring-1": "pending", "spring-2": "suspended", "summer-1": "pending", "plain": "pending"}
    assert sorted(b["id"] for b in queues.drain(2)) == ["plain", "summer-1"]
    again = api.post("/commands/suspend", params={"batch_code": "summer"}, headers=key).json()
    assert again["suspended_batches"] == ["spring", "summer"]
    assert again["pending_messages"] == 1


def test_activating_a_batch_sends_its_held_messages_only(api: TestClient, key: dict[str, str], queues: Runner) -> None:
    api.post("/commands/suspend", params={"batch_code": "spring"}, headers=key)
    api.post("/commands/suspend", params={"batch_code": "summer"}, headers=key)
    add(api, key, message("spring-1", batch_code="spring"), message("summer-1", batch_code="summer"))
    reply = api.post("/commands/activate", params={"batch_code": "spring"}, headers=key)
    assert reply.json() == {
        "ok": True,
        "tenant_id": "acme",
        "batch_code": "spring",
        "suspended_batches": ["summer"],
        "pending_messages": 1,
    }
    assert [b["id"] for b in queues.drain(2)] == ["spring-1"]
    assert by_id(api, key)["summer-1"]["status"] == "suspended"


def test_activating_one_batch_of_a_fully_suspended_tenant_is_refused(
    api: TestClient, key: dict[str, str], queues: Runner
) -> None:
    api.post("/commands/suspend", headers=key)
    add(api, key, message("m-1", batch_code="spring"))
    reply = api.post("/commands/activate", params={"batch_code": "spring"}, headers=key)
    assert reply.status_code == 400
    assert api.get("/tenant/acme", headers=key).json()["suspended_batches"] == ["*"]
    assert queues.queued_total() == 0


def test_suspending_a_batch_of_a_fully_suspended_tenant_keeps_it_fully_suspended(
    api: TestClient, key: dict[str, str]
) -> None:
    api.post("/commands/suspend", headers=key)
    reply = api.post("/commands/suspend", params={"batch_code": "spring"}, headers=key)
    assert reply.status_code == 200
    assert reply.json()["suspended_batches"] == ["*"]


def test_suspend_and_activate_of_an_unknown_tenant_answer_400(
    api: TestClient, admin: dict[str, str], queues: Runner
) -> None:
    for path in ("/commands/suspend", "/commands/activate"):
        reply = api.post(path, params={"tenant_id": "ghost"}, headers=admin)
        assert reply.status_code == 400, path
        assert "ghost" in reply.json()["detail"]
    assert queues.stored()["tenants"] == []


def test_an_inactive_tenants_messages_are_held_until_it_is_reactivated(
    api: TestClient, admin: dict[str, str], make_tenant: TenantFactory, make_account: AccountFactory, queues: Runner
) -> None:
    _, key = make_tenant("sleepy", active=False)
    make_account("sleepy")
    assert add(api, key, message("m-1")).json()["queued"] == 1
    assert records(api, key)[0]["status"] == "suspended"
    assert queues.queued_total() == 0
    # Only an admin reactivates a tenant (docs/api-fields.md).
    assert api.put("/tenant/sleepy", json={"active": True}, headers=key).status_code == 403
    assert records(api, key)[0]["status"] == "suspended"
    assert api.put("/tenant/sleepy", json={"active": True}, headers=admin).status_code == 200
    assert records(api, key)[0]["status"] == "pending"
    assert [b["id"] for b in queues.drain(2)] == ["m-1"]


# ---------------------------------------------------------------- run-now and status


def test_run_now_records_a_request_for_the_tenant_or_for_everyone(
    api: TestClient, admin: dict[str, str], key: dict[str, str]
) -> None:
    from mailproxy.stores import stores

    assert api.post("/commands/run-now", headers=key).json() == {"ok": True}
    assert api.post("/commands/run-now", headers=admin).json() == {"ok": True}
    assert set(stores().service.run_now_requests()) == {"acme", "*"}


def test_status_reports_the_service_state(api: TestClient, admin: dict[str, str], key: dict[str, str]) -> None:
    for headers in (admin, key):
        reply = api.get("/status", headers=headers)
        assert reply.status_code == 200
        body = reply.json()
        assert set(body) == {"ok", "active", "scheduler_active", "pending_messages", "uptime_seconds"}
        assert body["ok"] is True and body["active"] is True
        assert body["scheduler_active"] is False  # no scheduler has run in this test
        assert body["pending_messages"] == 0
        assert isinstance(body["uptime_seconds"], int) and body["uptime_seconds"] >= 0


def test_the_pending_count_is_exact_after_adds_overwrites_rejections_and_deletes(
    api: TestClient,
    admin: dict[str, str],
    key: dict[str, str],
    make_tenant: TenantFactory,
    make_account: AccountFactory,
) -> None:
    _, other = make_tenant("globex")
    make_account("globex")
    add(api, key, message("a"), message("b"), message("c", to=[]))
    assert pending(api, key) == 2
    add(api, key, message("a", subject="overwritten"), message("d", deferred_ts=int(time.time()) + 3600))
    assert pending(api, key) == 3
    add(api, other, message("a"))
    api.post("/commands/suspend", headers=key)
    add(api, key, message("e"))
    assert (pending(api, key), pending(api, other), pending(api, admin)) == (4, 1, 5)
    delete(api, key, "b", "c", "zzz")
    assert (pending(api, key), pending(api, admin)) == (3, 4)
    api.post("/commands/activate", headers=key)
    assert pending(api, key) == 3
    delete(api, key, "a", "d", "e")
    assert (pending(api, key), pending(api, other), pending(api, admin)) == (0, 1, 1)


# ---------------------------------------------------------------- rejected messages keep their payload (issue 16)


def test_a_rejected_message_lists_its_payload_as_submitted_without_secrets(
    api: TestClient, key: dict[str, str]
) -> None:
    from mail_proxy.client import Message as GenroMessage

    attachments = [
        {"filename": "inline.txt", "storage_path": "base64:SGVsbG8gd29ybGQ="},
        {
            "filename": "r.pdf",
            "storage_path": "https://f.test/r.pdf",
            "auth": {"method": "bearer", "token": "tok-s3cret"},
        },
    ]
    add(api, key, message("ok"), message("lost", account_id="nope", subject="Invoice", attachments=attachments))
    reply = api.get("/messages", headers=key)
    assert "SGVsbG8gd29ybGQ=" not in reply.text and "tok-s3cret" not in reply.text
    lost = {r["id"]: r for r in reply.json()["messages"]}["lost"]
    assert (lost["status"], lost["error"]) == ("error", "account not found for tenant")
    shown = lost["message"]
    assert (shown["subject"], shown["from"], shown["to"], shown["account_id"]) == (
        "Invoice",
        "Acme <noreply@acme.test>",
        ["alice@example.test"],
        "nope",
    )
    assert shown["attachments"] == [
        {"filename": "inline.txt"},
        {"filename": "r.pdf", "storage_path": "https://f.test/r.pdf"},
    ]
    # genro-mail-proxy's client reads every record of the tenant, the rejected one included.
    parsed = {r["id"]: GenroMessage.from_dict(r) for r in reply.json()["messages"]}
    assert (parsed["lost"].status, parsed["lost"].subject, parsed["lost"].error) == (
        "error",
        "Invoice",
        "account not found for tenant",
    )


@pytest.mark.aws_only("deletes S3 pack objects and payload items through the AWS adapter")
def test_a_record_whose_payload_is_no_longer_stored_lists_an_empty_message(
    api: TestClient, key: dict[str, str]
) -> None:
    from mailproxy.adapters.aws import payloads

    add(api, key, message("packed"), message("rejected", to=[]))
    payloads.delete_packs("acme")  # as the S3 lifecycle expires a pack
    payloads.delete_payload("acme", "rejected")  # as for a rejection recorded before issue 16
    assert {r["id"]: r["message"] for r in records(api, key)} == {"packed": {}, "rejected": {}}


@pytest.mark.sqlite_only("SQLite's twin of test_a_record_whose_payload_is_no_longer_stored_lists_an_empty_message")
def test_a_record_whose_payload_was_swept_lists_an_empty_message(api: TestClient, key: dict[str, str]) -> None:
    from mailproxy.adapters.sqlite.payloads import PACK_EXPIRATION_SECONDS
    from mailproxy.stores import stores

    add(api, key, message("packed"), message("rejected", to=[]))
    stores().service.delete_expired(int(time.time()) + PACK_EXPIRATION_SECONDS + 1)  # the pack's expiry
    stores().payloads.delete_payloads([("acme", "rejected")])  # as for a rejection recorded before issue 16
    assert {r["id"]: r["message"] for r in records(api, key)} == {"packed": {}, "rejected": {}}


def test_deleting_a_rejected_message_deletes_its_stored_payload(api: TestClient, key: dict[str, str]) -> None:
    from mailproxy.stores import stores

    payloads = stores().payloads
    add(api, key, message("ok"), message("rejected", to=[]))
    assert payloads.load_payloads([{"tenant_id": "acme", "id": "rejected"}])
    assert delete(api, key, "rejected").json()["removed"] == 1
    assert payloads.load_payloads([{"tenant_id": "acme", "id": "rejected"}]) == {}
