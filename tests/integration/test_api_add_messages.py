"""POST /commands/add-messages: what is queued, what is rejected and why, and where each message goes."""

from __future__ import annotations

import base64
import os
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import AccountFactory, AwsEnv, TenantFactory
from tests.integration.api_support import add, by_id, message, pending, records
from tests.integration.delivery import Runner

pytestmark = pytest.mark.both_storages


@pytest.fixture
def key(make_tenant: TenantFactory, make_account: AccountFactory) -> dict[str, str]:
    _, headers = make_tenant("acme")
    make_account("acme")
    return headers


def test_valid_messages_are_queued_and_listed_as_pending(api: TestClient, key: dict[str, str], queues: Runner) -> None:
    reply = add(api, key, message("m-1"), message("m-2", to="bob@example.test, carol@example.test"))
    assert reply.status_code == 200
    assert reply.json() == {"ok": True, "queued": 2, "rejected": []}
    listed = by_id(api, key)
    assert {i: r["status"] for i, r in listed.items()} == {"m-1": "pending", "m-2": "pending"}
    assert listed["m-2"]["message"]["to"] == "bob@example.test, carol@example.test"
    assert pending(api, key) == 2
    assert [b["id"] for b in queues.drain(2)] == ["m-1", "m-2"]


def test_a_queue_message_carries_the_tenant_the_id_a_revision_and_the_payload(
    api: TestClient, key: dict[str, str], queues: Runner
) -> None:
    add(api, key, message("m-1", subject="Invoice 42"))
    (body,) = queues.drain(2)
    assert (body["tenant_id"], body["id"]) == ("acme", "m-1")
    assert body["rev"]
    assert body["payload"]["subject"] == "Invoice 42"
    assert body["payload"]["from"] == "Acme <noreply@acme.test>"


def test_each_message_goes_to_the_queue_of_its_priority(api: TestClient, key: dict[str, str], queues: Runner) -> None:
    reply = add(
        api,
        key,
        message("now", priority="immediate"),
        message("soon", priority=1),
        message("normal"),
        message("later", priority="low"),
    )
    assert reply.json()["queued"] == 4
    assert {p: [b["id"] for b in bodies] for p, bodies in queues.drain_all().items()} == {
        0: ["now"],
        1: ["soon"],
        2: ["normal"],
        3: ["later"],
    }


@pytest.mark.parametrize(
    ("given", "expected"),
    [("IMMEDIATE", 0), ("High", 1), ("mEdIuM", 2), ("low", 3), (0, 0), (3, 3), (-7, 0), (10**30, 3)],
)
def test_priorities_are_read_as_labels_in_any_case_and_clamped(
    api: TestClient, key: dict[str, str], queues: Runner, given: Any, expected: int
) -> None:
    assert add(api, key, message(priority=given)).status_code == 200
    assert records(api, key)[0]["priority"] == expected
    assert [b["id"] for b in queues.drain(expected)] == ["m-1"]


def test_the_default_priority_applies_to_messages_without_one(api: TestClient, key: dict[str, str]) -> None:
    add(api, key, message("plain"), message("own", priority="low"), default_priority="HIGH")
    add(api, key, message("clamped"), default_priority=9)
    add(api, key, message("none"))
    priorities = {i: r["priority"] for i, r in by_id(api, key).items()}
    assert priorities == {"plain": 1, "own": 3, "clamped": 3, "none": 2}


def test_an_unknown_priority_label_is_a_422(api: TestClient, key: dict[str, str], queues: Runner) -> None:
    for body in ({"messages": [message(priority="urgent")]}, {"messages": [message()], "default_priority": "asap"}):
        reply = api.post("/commands/add-messages", json=body, headers=key)
        assert reply.status_code == 422
    assert queues.stored()["messages"] == []


def test_an_empty_list_is_accepted_with_nothing_queued(api: TestClient, key: dict[str, str], queues: Runner) -> None:
    reply = add(api, key)
    assert reply.status_code == 200
    assert reply.json() == {"ok": True, "queued": 0, "rejected": []}
    assert queues.queued_total() == 0


def test_more_than_1000_messages_are_refused_and_nothing_is_stored(
    api: TestClient, key: dict[str, str], queues: Runner
) -> None:
    reply = add(api, key, *[message(f"m-{n}") for n in range(1001)])
    assert reply.status_code == 400
    assert reply.json() == {"detail": {"error": "Cannot enqueue more than 1000 messages at once"}}
    assert queues.stored()["messages"] == []
    assert queues.stored()["payloads"] == []
    assert queues.queued_total() == 0
    assert pending(api, key) == 0


def test_a_request_of_exactly_1000_messages_is_within_the_limit(api: TestClient, key: dict[str, str]) -> None:
    # One id repeated 1000 times: the limit counts the request's messages, and moto stays fast with one write.
    reply = add(api, key, *[message("m-1", subject=f"version {n}") for n in range(1000)])
    assert reply.status_code == 200
    assert reply.json() == {"ok": True, "queued": 1, "rejected": []}
    assert records(api, key)[0]["message"]["subject"] == "version 999"


@pytest.mark.parametrize("empty", [[], "", [""], " , "])
def test_an_empty_to_rejects_that_message_with_missing_to(api: TestClient, key: dict[str, str], empty: Any) -> None:
    reply = add(api, key, message("ok"), message("no-rcpt", to=empty))
    assert reply.status_code == 200
    assert reply.json() == {"ok": True, "queued": 1, "rejected": [{"id": "no-rcpt", "reason": "missing to"}]}


@pytest.mark.parametrize(
    ("field", "value", "bad"),
    [
        ("to", ["good@example.test", "bad@"], "bad@"),
        ("to", "good@example.test, not an address", "not an address"),
        ("cc", ["carol@"], "carol@"),
        ("bcc", "x@y", "x@y"),
        ("from", "noreply-at-acme.test", "noreply-at-acme.test"),
        ("reply_to", "Support <support@@acme.test>", "Support <support@@acme.test>"),
        ("return_path", "bounces@", "bounces@"),
    ],
)
def test_a_bad_address_rejects_that_message_naming_the_address(
    api: TestClient, key: dict[str, str], queues: Runner, field: str, value: Any, bad: str
) -> None:
    reply = add(api, key, message("good"), message("bad", **{field: value}))
    assert reply.status_code == 200
    assert reply.json()["rejected"] == [{"id": "bad", "reason": f"invalid address: {bad}"}]
    assert [b["id"] for b in queues.drain(2)] == ["good"]


def test_display_names_and_quoted_commas_are_valid_addresses(api: TestClient, key: dict[str, str]) -> None:
    reply = add(
        api,
        key,
        message(to='"Doe, John" <john@example.test>, Jane <jane@example.test>', cc=["<bare@example.test>"]),
    )
    assert reply.json() == {"ok": True, "queued": 1, "rejected": []}


def test_a_message_for_an_account_the_tenant_does_not_have_is_rejected(
    api: TestClient, key: dict[str, str], make_tenant: TenantFactory, make_account: AccountFactory
) -> None:
    make_tenant("globex")
    make_account("globex", "globex-only")
    reply = add(
        api, key, message("ok"), message("nope", account_id="missing"), message("theirs", account_id="globex-only")
    )
    assert reply.status_code == 200
    assert reply.json()["rejected"] == [
        {"id": "nope", "reason": "account not found for tenant"},
        {"id": "theirs", "reason": "account not found for tenant"},
    ]


def test_a_request_whose_every_message_is_rejected_answers_400_with_the_list(
    api: TestClient, key: dict[str, str], queues: Runner
) -> None:
    reply = add(api, key, message("a", to=[]), message("b", account_id="missing"))
    assert reply.status_code == 400
    detail = reply.json()["detail"]
    assert isinstance(detail["error"], str) and detail["error"]
    assert detail["rejected"] == [
        {"id": "a", "reason": "missing to"},
        {"id": "b", "reason": "account not found for tenant"},
    ]
    assert queues.queued_total() == 0
    assert pending(api, key) == 0


def test_a_rejected_message_is_recorded_as_failed_with_its_reason(
    api: TestClient, key: dict[str, str], queues: Runner
) -> None:
    add(api, key, message("bad", to=["bob@"]))
    (record,) = records(api, key, include_history="true")
    assert record["status"] == "error"
    assert record["error"] == "invalid address: bob@"
    assert record["error_ts"] is not None
    assert [e["event_type"] for e in record["history"]] == ["error"]
    assert record["history"][0]["reported_ts"] is None
    assert pending(api, key) == 0
    assert queues.queued_total() == 0


def test_a_message_already_sent_is_not_sent_again(api: TestClient, key: dict[str, str], queues: Runner) -> None:
    add(api, key, message("m-1"))
    queues.drain(2)
    queues.finish_message("acme", "m-1")
    reply = add(api, key, message("m-1", subject="Again"))
    assert reply.status_code == 200
    assert reply.json() == {"ok": True, "queued": 0, "rejected": [{"id": "m-1", "reason": "already sent"}]}
    assert queues.queued_total() == 0
    (record,) = records(api, key)
    assert record["status"] == "sent"
    assert record["message"]["subject"] == "Hello"


def test_a_failed_message_is_not_sent_again_either(api: TestClient, key: dict[str, str]) -> None:
    add(api, key, message("bad", to=[]))
    reply = add(api, key, message("bad"), message("new"))
    assert reply.status_code == 200
    assert reply.json() == {"ok": True, "queued": 1, "rejected": [{"id": "bad", "reason": "already sent"}]}
    assert records(api, key)[0]["status"] == "error"


def test_already_sent_alongside_other_rejections_is_a_400(api: TestClient, key: dict[str, str], queues: Runner) -> None:
    add(api, key, message("m-1"))
    queues.finish_message("acme", "m-1")
    reply = add(api, key, message("m-1"), message("m-2", to=[]))
    assert reply.status_code == 400
    assert reply.json()["detail"]["rejected"] == [
        {"id": "m-1", "reason": "already sent"},
        {"id": "m-2", "reason": "missing to"},
    ]


def test_resubmitting_an_unsent_id_overwrites_it(api: TestClient, key: dict[str, str], queues: Runner) -> None:
    add(api, key, message("m-1", subject="First", priority="low"))
    reply = add(api, key, message("m-1", subject="Second", priority="high", batch_code="spring"))
    assert reply.status_code == 200
    assert reply.json() == {"ok": True, "queued": 1, "rejected": []}
    (record,) = records(api, key)
    assert (record["priority"], record["batch_code"], record["status"]) == (1, "spring", "pending")
    assert record["message"]["subject"] == "Second"
    assert pending(api, key) == 1
    (newest,) = queues.drain(1)
    (stale,) = queues.drain(3)
    assert newest["payload"]["subject"] == "Second"
    assert stale["rev"] != newest["rev"]


def test_resubmitting_can_move_a_message_from_now_to_later(api: TestClient, key: dict[str, str]) -> None:
    add(api, key, message("m-1"))
    later = int(time.time()) + 7200
    add(api, key, message("m-1", deferred_ts=later))
    (record,) = records(api, key)
    assert (record["status"], record["deferred_ts"]) == ("deferred", later)
    assert pending(api, key) == 1


def test_a_repeated_id_in_one_request_counts_once_and_the_last_wins(api: TestClient, key: dict[str, str]) -> None:
    reply = add(api, key, message("m-1", subject="one"), message("m-1", subject="two"))
    assert reply.json()["queued"] == 1
    (record,) = records(api, key)
    assert record["message"]["subject"] == "two"
    assert pending(api, key) == 1


def test_two_tenants_may_use_the_same_message_id(
    api: TestClient, key: dict[str, str], make_tenant: TenantFactory, make_account: AccountFactory
) -> None:
    _, other = make_tenant("globex")
    make_account("globex")
    assert add(api, key, message("m-1", subject="acme")).json()["queued"] == 1
    assert add(api, other, message("m-1", subject="globex")).json()["queued"] == 1
    assert records(api, key)[0]["message"]["subject"] == "acme"
    assert records(api, other)[0]["message"]["subject"] == "globex"


def test_a_schedule_within_15_minutes_waits_on_the_queue_with_a_delay(
    api: TestClient, key: dict[str, str], queues: Runner
) -> None:
    due = int(time.time()) + 600
    add(api, key, message("m-1", deferred_ts=due))
    (record,) = records(api, key)
    assert (record["status"], record["deferred_ts"]) == ("deferred", due)
    assert queues.queue_depth(2) == {"visible": 0, "delayed": 1}
    assert queues.drain(2) == []
    assert pending(api, key) == 1


def test_a_schedule_beyond_15_minutes_is_parked_off_the_queues(
    api: TestClient, key: dict[str, str], aws_env: AwsEnv
) -> None:
    due = int(time.time()) + 3600
    add(api, key, message("m-1", deferred_ts=due))
    (record,) = records(api, key)
    assert (record["status"], record["deferred_ts"]) == ("deferred", due)
    assert aws_env.queued_total() == 0
    (item,) = aws_env.table_items("MESSAGES_TABLE")
    assert (item["park_shard"], item["park_ts"]) == ("P", due)
    assert pending(api, key) == 1


def test_a_schedule_in_the_past_means_now(api: TestClient, key: dict[str, str], queues: Runner) -> None:
    add(api, key, message("m-1", deferred_ts=int(time.time()) - 3600), message("m-2", deferred_ts=0))
    assert {r["id"]: (r["status"], r["deferred_ts"]) for r in records(api, key)} == {
        "m-1": ("pending", None),
        "m-2": ("pending", None),
    }
    assert queues.queue_depth(2) == {"visible": 2, "delayed": 0}


def test_payloads_too_big_for_a_queue_message_or_a_table_item_are_kept_in_s3_and_still_listed(
    api: TestClient, key: dict[str, str], aws_env: AwsEnv
) -> None:
    body = base64.b64encode(os.urandom(420_000)).decode()  # ~560 KB that does not compress below 350 KB
    later = int(time.time()) + 3600  # parked: its payload is pinned, one item (here an S3 object) of its own
    reply = add(api, key, message("big", body=body), message("later", body=body, deferred_ts=later))
    assert reply.status_code == 200
    assert reply.json()["queued"] == 2
    (item,) = aws_env.table_items("PAYLOADS_TABLE")
    assert item["id"] == "later" and "payload" not in item
    objects = aws_env.client("s3").list_objects_v2(Bucket=aws_env["PAYLOAD_BUCKET"])["Contents"]
    keys = sorted(o["Key"] for o in objects)
    assert len(keys) == 2 and item["payload_s3_key"] in keys and item["payload_s3_key"].startswith("payloads/acme/")
    assert [k for k in keys if k.startswith("payloads/packs/acme/")]  # the queued one, in its request's pack
    assert {r["id"]: r["message"]["body"] for r in records(api, key)} == {"big": body, "later": body}
    (queued,) = aws_env.drain(2)
    assert "payload" not in queued  # too big for a queue message: the sender reads it from its pack


def test_deleting_a_big_message_removes_its_s3_object(api: TestClient, key: dict[str, str], aws_env: AwsEnv) -> None:
    add(api, key, message("big", body=base64.b64encode(os.urandom(420_000)).decode()))
    api.post("/commands/delete-messages", json={"ids": ["big"]}, headers=key)
    assert aws_env.client("s3").list_objects_v2(Bucket=aws_env["PAYLOAD_BUCKET"]).get("KeyCount") == 0


@pytest.mark.sqlite_only("SQLite's twin of the two S3 payload tests above")
def test_payloads_too_big_for_a_queue_entry_are_listed_and_deleted_with_their_messages(
    api: TestClient, key: dict[str, str], queues: Runner
) -> None:
    body = base64.b64encode(os.urandom(420_000)).decode()
    later = int(time.time()) + 3600  # parked: its payload is pinned
    reply = add(api, key, message("big", body=body), message("later", body=body, deferred_ts=later))
    assert reply.json()["queued"] == 2
    assert {r["id"]: r["message"]["body"] for r in records(api, key)} == {"big": body, "later": body}
    (queued,) = queues.drain(2)
    assert "payload" not in queued  # too big for a queue entry: the sender reads it from the database
    assert len(queues.stored()["payloads"]) == 2
    reply = api.post("/commands/delete-messages", json={"ids": ["big", "later"]}, headers=key)
    assert reply.json()["removed"] == 2
    assert queues.stored()["payloads"] == []


def test_a_header_value_with_a_line_break_rejects_the_message(
    api: TestClient, key: dict[str, str], queues: Runner
) -> None:
    reply = add(api, key, message("ok"), message("evil", headers={"X-Campaign": "a\r\nBcc: victim@example.test"}))
    assert reply.status_code == 200
    assert reply.json()["rejected"] == [{"id": "evil", "reason": "invalid header: X-Campaign"}]
    assert [b["id"] for b in queues.drain(2)] == ["ok"]


def test_header_values_are_stored_as_given(api: TestClient, key: dict[str, str]) -> None:
    add(api, key, message(headers={"X-Campaign": "spring", "X-Count": 3}))
    assert records(api, key)[0]["message"]["headers"] == {"X-Campaign": "spring", "X-Count": 3}


def test_the_admin_may_submit_for_several_tenants_in_one_request(
    api: TestClient,
    admin: dict[str, str],
    key: dict[str, str],
    make_tenant: TenantFactory,
    make_account: AccountFactory,
) -> None:
    _, other = make_tenant("globex")
    make_account("globex")
    reply = add(api, admin, message("a", tenant_id="acme"), message("g", tenant_id="globex"))
    assert reply.json() == {"ok": True, "queued": 2, "rejected": []}
    assert [r["id"] for r in records(api, key)] == ["a"]
    assert [r["id"] for r in records(api, other)] == ["g"]


def test_one_unknown_tenant_refuses_the_whole_admin_request(
    api: TestClient, admin: dict[str, str], key: dict[str, str], queues: Runner
) -> None:
    reply = add(api, admin, message("a", tenant_id="acme"), message("g", tenant_id="ghost"))
    assert reply.status_code == 404
    assert reply.json() == {"detail": "Tenant 'ghost' not found"}
    assert queues.stored()["messages"] == []
    assert queues.queued_total() == 0


def test_from_addr_is_accepted_in_place_of_from_and_stored_as_from(
    api: TestClient, key: dict[str, str], queues: Runner
) -> None:
    submitted = message("m-1")
    submitted["from_addr"] = submitted.pop("from")
    reply = add(api, key, submitted)
    assert reply.json() == {"ok": True, "queued": 1, "rejected": []}
    shown = by_id(api, key)["m-1"]["message"]
    assert shown["from"] == "Acme <noreply@acme.test>" and "from_addr" not in shown
    (body,) = queues.drain(2)
    assert body["payload"]["from"] == "Acme <noreply@acme.test>"


def test_from_and_from_addr_together_are_a_422_naming_from_addr(api: TestClient, key: dict[str, str]) -> None:
    reply = add(api, key, message("m-1", from_addr="other@acme.test"))
    assert reply.status_code == 422
    assert reply.json()["detail"][0]["loc"] == ["body", "messages", 0, "from_addr"]


def test_a_bad_from_addr_rejects_the_message_like_a_bad_from(api: TestClient, key: dict[str, str]) -> None:
    submitted = message("m-1")
    submitted["from_addr"] = "not an address"
    del submitted["from"]
    reply = add(api, key, submitted)
    assert reply.status_code == 400
    assert reply.json()["detail"]["rejected"] == [{"id": "m-1", "reason": "invalid address: not an address"}]
