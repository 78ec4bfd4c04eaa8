"""Bounds on one message at intake: each is a per-message rejection, the request's other messages are queued."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from tests.conftest import AccountFactory, TenantFactory
from tests.integration.api_support import add, by_id, message, pending
from tests.integration.delivery import Runner

pytestmark = pytest.mark.both_storages


@pytest.fixture
def key(make_tenant: TenantFactory, make_account: AccountFactory) -> dict[str, str]:
    _, headers = make_tenant("acme")
    make_account("acme")
    return headers


def addresses(count: int, prefix: str = "user") -> list[str]:
    return [f"{prefix}{n}@example.test" for n in range(count)]


def test_more_recipients_than_the_limit_reject_that_message_only(
    api: TestClient, key: dict[str, str], queues: Runner
) -> None:
    # to as a list, cc as a comma string, bcc: counted together after splitting.
    crowded = message("crowded", to=addresses(600), cc=", ".join(addresses(300, "cc")), bcc=addresses(101, "bcc"))
    reply = add(api, key, message("ok"), crowded)

    assert reply.status_code == 200
    assert reply.json()["rejected"] == [{"id": "crowded", "reason": "too many recipients: 1001 (limit 1000)"}]
    assert [b["id"] for b in queues.drain(2)] == ["ok"]
    record = by_id(api, key)["crowded"]
    assert (record["status"], record["error"]) == ("error", "too many recipients: 1001 (limit 1000)")
    assert pending(api, key) == 1


def test_exactly_the_limit_of_recipients_is_accepted(api: TestClient, key: dict[str, str]) -> None:
    reply = add(api, key, message("full", to=addresses(500), cc=addresses(250, "cc"), bcc=addresses(250, "bcc")))
    assert reply.json() == {"ok": True, "queued": 1, "rejected": []}


def test_twenty_thousand_recipients_are_refused_without_parsing_them(api: TestClient, key: dict[str, str]) -> None:
    started = time.monotonic()
    reply = add(api, key, message("ok"), message("huge", to=", ".join(addresses(20_000))))
    elapsed = time.monotonic() - started

    assert reply.json()["rejected"] == [{"id": "huge", "reason": "too many recipients: 20000 (limit 1000)"}]
    assert elapsed < 10  # generous: the count is linear; validating every address first took seconds


def test_the_recipient_limit_is_configurable(
    api: TestClient, key: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GMP_MAX_RECIPIENTS", "2")
    from mailproxy.settings import get_settings

    get_settings.cache_clear()
    reply = add(api, key, message("two", to=addresses(2)), message("three", to=addresses(2), cc="c@example.test"))
    assert reply.json()["rejected"] == [{"id": "three", "reason": "too many recipients: 3 (limit 2)"}]


def test_a_header_value_over_16_kb_rejects_the_message(api: TestClient, key: dict[str, str]) -> None:
    reply = add(api, key, message("ok"), message("long", headers={"X-Note": "x" * 800_000}))
    assert reply.json()["rejected"] == [{"id": "long", "reason": "header too long: X-Note: 800000 bytes (limit 16384)"}]


def test_a_subject_over_16_kb_of_utf8_rejects_the_message(api: TestClient, key: dict[str, str]) -> None:
    reply = add(api, key, message("ok"), message("cjk", subject="日" * 6_000))  # 6 000 characters, 18 000 bytes
    assert reply.json()["rejected"] == [{"id": "cjk", "reason": "header too long: Subject: 18000 bytes (limit 16384)"}]


def test_headers_over_100_kb_together_reject_the_message(api: TestClient, key: dict[str, str]) -> None:
    custom = {f"X-Part-{n}": "v" * 10_000 for n in range(11)}
    reply = add(api, key, message("ok"), message("heavy", headers=custom))

    [rejection] = reply.json()["rejected"]
    assert rejection["id"] == "heavy"
    assert rejection["reason"].startswith("headers too large: ") and rejection["reason"].endswith("(limit 102400)")


@pytest.mark.parametrize(
    "name",
    [
        "From",
        "to",
        "CC",
        "Bcc",
        "Sender",
        "Date",
        "Message-ID",
        "MIME-Version",
        "Content-Type",
        "content-id",
        "Return-Path",
        "X-Genro-Mail-ID",
    ],
)
def test_a_custom_header_cannot_replace_a_structural_one(api: TestClient, key: dict[str, str], name: str) -> None:
    reply = add(api, key, message("ok"), message("forged", headers={name: "ceo@bank.test"}))
    assert reply.json()["rejected"] == [{"id": "forged", "reason": f"invalid header: {name}"}]


def test_reply_to_and_ordinary_custom_headers_are_accepted(api: TestClient, key: dict[str, str]) -> None:
    reply = add(api, key, message("ok", headers={"Reply-To": "help@acme.test", "List-Unsubscribe": "<https://u>"}))
    assert reply.json() == {"ok": True, "queued": 1, "rejected": []}
