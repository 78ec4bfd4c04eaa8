"""The suppression list and the reputation guard (issue 13, docs/suppressions.md), through the real API, the real
sender and an aiosmtpd server on loopback, on both storages."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from mailproxy import suppression

from tests.callbacks import SyncEndpoint, sync_endpoint
from tests.conftest import Storage
from tests.integration.delivery import Delivery, mail_ids, message, parsed
from tests.integration.smtp_servers import RunningServer

pytestmark = pytest.mark.both_storages

NOW = 1_800_000_000


@pytest.fixture
def delivery(storage: Storage, api: TestClient, admin: dict[str, str], server: RunningServer) -> Delivery:
    reply = api.post("/tenant", json={"id": "acme", "name": "Acme"}, headers=admin)
    assert reply.status_code == 200, reply.text
    key = {"X-API-Token": reply.json()["api_key"]}
    body = {"id": "smtp", "host": "127.0.0.1", "port": server.port, "use_tls": False}
    assert api.post("/account", json=body, headers=key).status_code == 200
    return Delivery(storage, api, admin, "acme", key)


@pytest.fixture
def mail_commands(server: RunningServer) -> list[str]:
    """Every MAIL FROM the SMTP server is sent: a transaction begun, even one that delivers nothing."""
    seen: list[str] = []

    async def handle_MAIL(server_: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        seen.append(address)
        envelope.mail_from = address
        return "250 OK"

    server.handler.handle_MAIL = handle_MAIL  # type: ignore[attr-defined]
    return seen


def _suppressed_counter(account_id: str = "smtp") -> int:
    from mailproxy.stores import stores

    rows = {(r["tenant_id"], r["account_id"]): r for r in stores().counters.counter_rows()}
    return int(rows.get(("acme", account_id), {}).get("suppressed", 0))


def test_a_hard_bounce_suppresses_the_recipient_who_is_then_dropped_from_a_message(
    delivery: Delivery, server: RunningServer
) -> None:
    suppression.note_bounce(
        "acme", "smtp", "Bob <bob@Example.TEST>", "hard", message_id="m-0", code="5.1.1", reason="no such user", ts=NOW
    )
    delivery.submit(message("m-1", to="alice@example.test", cc=["bob@example.test"], bcc="BOB@example.test"))
    delivery.pump()
    [received] = server.handler.received
    # The domain is compared without case, the local part as written: `BOB@` is another mailbox.
    assert sorted(received.rcpt_tos) == ["BOB@example.test", "alice@example.test"]
    assert parsed(received.content)["Cc"] is None
    assert delivery.records()["m-1"]["status"] == "sent"
    assert _suppressed_counter() == 1

    listed = delivery.api.get("/suppressions", headers=delivery.key).json()
    [entry] = listed["suppressions"]
    assert entry == {
        "address": "bob@example.test",
        "source": "hard",
        "reason": "no such user",
        "code": "5.1.1",
        "message_id": "m-0",
        "account_id": "smtp",
        "created_at": NOW,
    }


def test_a_message_left_with_no_recipient_fails_suppressed_without_an_smtp_transaction(
    delivery: Delivery, server: RunningServer, mail_commands: list[str]
) -> None:
    suppression.note_bounce(
        "acme", "smtp", "bob@example.test", "complaint", message_id="m-0", code=None, reason="abuse", ts=NOW
    )
    delivery.submit(message("m-1", to="bob@example.test"), message("m-2", to="carol@example.test"))
    delivery.pump()
    assert mail_ids(server.handler.received) == ["m-2"]
    assert mail_commands == ["noreply@acme.test"]  # m-2's only: m-1 never began a transaction
    record = delivery.records()["m-1"]
    assert record["status"] == "error"
    assert record["error"] == "suppressed: bob@example.test"
    assert delivery.counters()["errors"] == 1
    assert _suppressed_counter() == 1
    assert delivery.pending() == 0


def test_soft_bounces_suppress_only_after_the_limit_within_the_window(
    delivery: Delivery, server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GMP_SOFT_BOUNCE_LIMIT", "3")
    monkeypatch.setenv("GMP_SOFT_BOUNCE_WINDOW_SECONDS", "3600")
    from mailproxy.settings import get_settings

    get_settings.cache_clear()

    def soft(ts: int) -> None:
        suppression.note_bounce(
            "acme", "smtp", "bob@example.test", "soft", message_id="m", code="4.2.2", reason="mailbox full", ts=ts
        )

    soft(NOW)
    soft(NOW + 1000)
    soft(NOW + 3700)  # the first one left the window: two within it
    assert delivery.api.get("/suppressions", headers=delivery.key).json()["suppressions"] == []
    delivery.submit(message("m-1", to="bob@example.test"))
    delivery.pump()
    assert mail_ids(server.handler.received) == ["m-1"]

    soft(NOW + 3800)  # three within the hour
    [entry] = delivery.api.get("/suppressions", headers=delivery.key).json()["suppressions"]
    assert entry["source"] == "soft" and entry["reason"] == "3 soft bounces within 3600 s; last: mailbox full"
    delivery.submit(message("m-2", to="bob@example.test"))
    delivery.pump()
    assert mail_ids(server.handler.received) == ["m-1"]
    assert delivery.records()["m-2"]["error"] == "suppressed: bob@example.test"


def test_soft_bounces_past_the_limit_leave_an_existing_entry_as_it_is(
    delivery: Delivery, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GMP_SOFT_BOUNCE_LIMIT", "2")
    from mailproxy.settings import get_settings

    get_settings.cache_clear()
    suppression.note_bounce(
        "acme", "smtp", "gone@example.test", "hard", message_id="m-0", code="5.1.1", reason="no such user", ts=NOW
    )
    added = delivery.api.post(
        "/suppressions", json={"addresses": ["vip@example.test"], "reason": "asked us"}, headers=delivery.key
    )
    assert added.json()["added"] == ["vip@example.test"]
    before = delivery.api.get("/suppressions", headers=delivery.key).json()["suppressions"]

    for address in ("gone@example.test", "vip@example.test", "new@example.test"):
        for n in range(3):
            suppression.note_bounce(
                "acme", "smtp", address, "soft", message_id="m-1", code="4.2.2", reason="mailbox full", ts=NOW + n
            )

    after = {e["address"]: e for e in delivery.api.get("/suppressions", headers=delivery.key).json()["suppressions"]}
    # The hard bounce and the tenant's own entry keep their source, reason and time; only the new address is added.
    assert [after[e["address"]] for e in before] == before
    assert (after["new@example.test"]["source"], after["new@example.test"]["created_at"]) == ("soft", NOW + 1)


def test_the_tenant_lists_adds_and_removes_entries_page_by_page(delivery: Delivery, server: RunningServer) -> None:
    api, key = delivery.api, delivery.key
    added = api.post(
        "/suppressions", json={"addresses": ["c@x.test", "A <a@X.test>", "b@x.test", "c@x.test"]}, headers=key
    )
    assert added.status_code == 200, added.text
    assert added.json() == {"ok": True, "added": ["c@x.test", "a@x.test", "b@x.test"], "already_suppressed": []}
    again = api.post("/suppressions", json={"addresses": ["a@x.TEST"], "reason": "asked"}, headers=key)
    assert again.json() == {"ok": True, "added": [], "already_suppressed": ["a@x.test"]}

    first = api.get("/suppressions", params={"limit": 2}, headers=key).json()
    assert [e["address"] for e in first["suppressions"]] == ["a@x.test", "b@x.test"]
    assert first["total"] == 2 and first["next_cursor"]
    assert first["suppressions"][0]["source"] == "manual"
    rest = api.get("/suppressions", params={"limit": 2, "cursor": first["next_cursor"]}, headers=key).json()
    assert [e["address"] for e in rest["suppressions"]] == ["c@x.test"] and rest["next_cursor"] is None

    assert api.delete("/suppressions/b@X.test", headers=key).status_code == 200
    assert api.delete("/suppressions/b@x.test", headers=key).status_code == 404
    assert [e["address"] for e in api.get("/suppressions", headers=key).json()["suppressions"]] == [
        "a@x.test",
        "c@x.test",
    ]
    # An address may hold a slash (a dot-atom character), which the path carries encoded.
    assert api.post("/suppressions", json={"addresses": ["a/b@x.test"]}, headers=key).status_code == 200
    assert api.delete("/suppressions/a%2Fb@x.test", headers=key).status_code == 200
    assert api.delete("/suppressions/a%2Fb@x.test", headers=key).status_code == 404
    # An admin names the tenant.
    listed = api.get("/suppressions", params={"tenant_id": "acme"}, headers=delivery.admin)
    assert len(listed.json()["suppressions"]) == 2
    # Removed means sent again.
    delivery.submit(message("m-1", to="b@x.test"), message("m-2", to="a@x.test"))
    delivery.pump()
    assert mail_ids(server.handler.received) == ["m-1"]


def test_a_list_pages_past_its_longest_addresses(delivery: Delivery) -> None:
    # A cursor carries the address a page ends on: one of 320 octets, none of them ASCII, is still a cursor the
    # route takes back (it was over its 1000 characters, and the list could not be read past it).
    api, key = delivery.api, delivery.key
    longest = ["\u00e9" * 150 + "@example.com", "\u00e8" * 150 + "@example.com", "z@x.test"]
    assert api.post("/suppressions", json={"addresses": longest}, headers=key).status_code == 200
    seen, cursor = [], None
    for _ in range(len(longest)):
        page = api.get("/suppressions", params={"limit": 1, **({"cursor": cursor} if cursor else {})}, headers=key)
        assert page.status_code == 200, page.text
        seen += [e["address"] for e in page.json()["suppressions"]]
        cursor = page.json()["next_cursor"]
    assert sorted(seen) == sorted(longest) and cursor is None


def test_bad_input_to_the_suppression_routes_is_a_4xx(delivery: Delivery) -> None:
    api, key = delivery.api, delivery.key
    assert api.post("/suppressions", json={"addresses": ["not an address"]}, headers=key).status_code == 400
    assert api.post("/suppressions", json={"addresses": []}, headers=key).status_code == 422
    # Under 320 characters, over 320 octets (1209): no SMTP path holds it, nor a DynamoDB key (1024 bytes).
    long = '"' + "\U0001f600" * 300 + '"@x.test'
    assert api.post("/suppressions", json={"addresses": [long]}, headers=key).json() == {
        "detail": f"invalid address: {long}"
    }
    # Over 320 characters: the same clear refusal, not the model's; a long display name is no fault.
    longer = "x" * 330 + "@x.test"
    assert api.post("/suppressions", json={"addresses": [longer]}, headers=key).json() == {
        "detail": f"invalid address: {longer}"
    }
    named = api.post("/suppressions", json={"addresses": ["N" * 400 + " <named@x.test>"]}, headers=key)
    assert named.json()["added"] == ["named@x.test"]
    assert api.post("/suppressions", json={"addresses": ["a@x.test"], "x": 1}, headers=key).status_code == 422
    assert api.get("/suppressions", params={"cursor": "!!"}, headers=key).status_code == 400
    assert api.get("/suppressions", params={"cursor": "eyJhZnRlciI6IFsxXX0"}, headers=key).status_code == 400
    assert api.get("/suppressions", params={"limit": 0}, headers=key).status_code == 422
    assert api.get("/suppressions", headers=delivery.admin).status_code == 422  # the admin names a tenant
    assert api.get("/suppressions", params={"tenant_id": "nobody"}, headers=delivery.admin).status_code == 404
    assert api.get("/suppressions").status_code == 401


def test_another_tenant_can_neither_see_nor_remove_an_entry(delivery: Delivery) -> None:
    api = delivery.api
    api.post("/suppressions", json={"addresses": ["bob@x.test"]}, headers=delivery.key)
    reply = api.post("/tenant", json={"id": "beta", "name": "Beta"}, headers=delivery.admin)
    beta = {"X-API-Token": reply.json()["api_key"]}
    assert api.get("/suppressions", headers=beta).json()["suppressions"] == []
    assert api.get("/suppressions", params={"tenant_id": "acme"}, headers=beta).status_code == 401
    assert api.delete("/suppressions/bob@x.test", headers=beta).status_code == 404
    assert api.delete("/suppressions/bob@x.test", params={"tenant_id": "acme"}, headers=beta).status_code == 401
    body = {"addresses": ["eve@x.test"], "tenant_id": "acme"}
    assert api.post("/suppressions", json=body, headers=beta).status_code == 401
    assert [e["address"] for e in api.get("/suppressions", headers=delivery.key).json()["suppressions"]] == [
        "bob@x.test"
    ]


def test_deleting_the_tenant_deletes_its_list(delivery: Delivery) -> None:
    delivery.api.post("/suppressions", json={"addresses": ["bob@x.test"]}, headers=delivery.key)
    assert delivery.api.delete("/tenant/acme", headers=delivery.admin).status_code == 200
    from mailproxy.stores import stores

    assert stores().suppressions.list_entries("acme", after=None, limit=10) == []


# ---------------------------------------------------------------------- the reputation guard


@pytest.fixture
def low_thresholds(monkeypatch: pytest.MonkeyPatch) -> None:
    """A guard that acts on a handful of sends: 20 % bounces or 10 % complaints over at least 5 sends."""
    monkeypatch.setenv("GMP_REPUTATION_MIN_SENDS", "5")
    monkeypatch.setenv("GMP_BOUNCE_RATE_LIMIT", "0.2")
    monkeypatch.setenv("GMP_COMPLAINT_RATE_LIMIT", "0.1")
    from mailproxy.settings import get_settings

    get_settings.cache_clear()


@pytest.fixture
def callback(delivery: Delivery) -> Iterator[SyncEndpoint]:
    with sync_endpoint() as endpoint:
        reply = delivery.api.put("/tenant/acme", json={"client_base_url": endpoint.url}, headers=delivery.key)
        assert reply.status_code == 200, reply.text
        yield endpoint


def _send(delivery: Delivery, count: int, start: int = 0) -> None:
    delivery.submit(*(message(f"s-{n}", to=f"user{n}@example.test") for n in range(start, start + count)))
    delivery.pump()


def _bounce(n: int, kind: str = "hard") -> None:
    suppression.note_bounce(
        "acme", "smtp", f"user{n}@example.test", kind, message_id=f"s-{n}", code="5.1.1", reason="unknown", ts=NOW
    )


def _run_reporter() -> None:
    from mailproxy import reports

    reports.run_schedule()


def test_one_bounce_of_few_sends_does_not_pause(
    delivery: Delivery, server: RunningServer, low_thresholds: None
) -> None:
    _send(delivery, 3)
    _bounce(0)  # a third of the sends, but under the minimum volume
    delivery.submit(message("m-1"))
    delivery.pump()
    assert "m-1" in mail_ids(server.handler.received)


def test_the_account_pauses_over_the_bounce_rate_and_the_tenant_is_told(
    delivery: Delivery, server: RunningServer, low_thresholds: None, callback: SyncEndpoint
) -> None:
    _send(delivery, 10)
    assert len(server.handler.received) == 10
    _bounce(0)
    delivery.submit(message("m-1"))
    delivery.pump()
    assert "m-1" in mail_ids(server.handler.received)  # 1 of 11: under 20 %

    _bounce(1)
    _bounce(2)  # 3 of 11: paused
    delivery.submit(message("m-2"), message("m-3", batch_code="promo"))
    delivery.pump()
    assert not {"m-2", "m-3"} & set(mail_ids(server.handler.received))
    records = delivery.records()
    assert records["m-2"]["status"] == "suspended" and records["m-3"]["status"] == "suspended"
    assert delivery.pending() == 2
    tenant = delivery.api.get("/tenant/acme", headers=delivery.key).json()
    assert set(tenant["paused_accounts"]) == {"smtp"}
    assert tenant["paused_accounts"]["smtp"]["reason"].startswith("bounce rate 27.27% over 11 sends")

    # The tenant is told in its next report (asked for at once), and at every one while paused.
    _run_reporter()
    told = [r for r in callback.reports if r.get("paused_accounts")]
    assert told, callback.reports
    [paused] = told[-1]["paused_accounts"]
    assert paused["account_id"] == "smtp" and paused["reason"].startswith("bounce rate")

    metrics = _metrics_text()
    assert 'gmp_account_paused{account_id="smtp",tenant_id="acme"} 1.0' in metrics


def test_a_complaint_rate_over_its_limit_pauses_too(
    delivery: Delivery, server: RunningServer, low_thresholds: None
) -> None:
    _send(delivery, 10)
    _bounce(0, "complaint")  # 10 % of 10 sends
    delivery.submit(message("m-1"))
    delivery.pump()
    assert "m-1" not in mail_ids(server.handler.received)
    tenant = delivery.api.get("/tenant/acme", headers=delivery.admin).json()
    assert tenant["paused_accounts"]["smtp"]["reason"].startswith("complaint rate 10.00% over 10 sends")


def test_an_admin_resumes_the_account_and_its_held_messages_go(
    delivery: Delivery, server: RunningServer, low_thresholds: None, callback: SyncEndpoint
) -> None:
    _send(delivery, 5)
    _bounce(0)
    _bounce(1)
    delivery.submit(message("m-1"), message("m-2"))
    delivery.pump()
    assert not {"m-1", "m-2"} & set(mail_ids(server.handler.received))

    # A tenant key may not resume unless the operator allows it.
    assert delivery.api.post("/account/smtp/resume", headers=delivery.key).status_code == 403
    reply = delivery.api.post("/account/smtp/resume", params={"tenant_id": "acme"}, headers=delivery.admin)
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"ok": True, "account_id": "smtp", "released": 2}
    delivery.pump()
    assert {"m-1", "m-2"} <= set(mail_ids(server.handler.received))
    assert delivery.api.get("/tenant/acme", headers=delivery.key).json()["paused_accounts"] == {}
    again = delivery.api.post("/account/smtp/resume", params={"tenant_id": "acme"}, headers=delivery.admin)
    assert again.status_code == 400
    # The window's bounces were forgotten: the next one alone does not pause it again.
    _bounce(2)
    delivery.submit(message("m-3"))
    delivery.pump()
    assert "m-3" in mail_ids(server.handler.received)
    assert 'gmp_account_paused{account_id="smtp",tenant_id="acme"} 0.0' in _metrics_text()
    callback.reports.clear()
    _run_reporter()
    assert not any(r.get("paused_accounts") for r in callback.reports)


def test_an_account_whose_id_holds_a_slash_is_resumed(delivery: Delivery) -> None:
    from mailproxy import reputation

    body = {"id": "eu/smtp", "host": "127.0.0.1", "port": 25, "use_tls": False}
    assert delivery.api.post("/account", json=body, headers=delivery.key).status_code == 200
    assert reputation.pause("acme", "eu/smtp", reason="bounce rate 50.00% over 6 sends (limit 20.00%)")
    reply = delivery.api.post("/account/eu%2Fsmtp/resume", params={"tenant_id": "acme"}, headers=delivery.admin)
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"ok": True, "account_id": "eu/smtp", "released": 0}


def test_a_tenant_resumes_its_account_when_the_operator_allows_it(
    delivery: Delivery, server: RunningServer, low_thresholds: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GMP_TENANT_MAY_RESUME", "true")
    from mailproxy.settings import get_settings

    get_settings.cache_clear()
    _send(delivery, 5)
    _bounce(0, "complaint")
    delivery.submit(message("m-1"))
    delivery.pump()
    assert delivery.records()["m-1"]["status"] == "suspended"
    reply = delivery.api.post("/account/smtp/resume", headers=delivery.key)
    assert reply.status_code == 200, reply.text
    delivery.pump()
    assert "m-1" in mail_ids(server.handler.received)


def test_activating_a_tenant_does_not_release_a_paused_accounts_messages(
    delivery: Delivery, server: RunningServer, low_thresholds: None
) -> None:
    _send(delivery, 5)
    _bounce(0)
    _bounce(1)
    delivery.submit(message("m-1"))
    assert delivery.api.post("/commands/suspend", headers=delivery.key).status_code == 200
    delivery.pump()
    assert delivery.api.post("/commands/activate", headers=delivery.key).status_code == 200
    assert delivery.queued_total() == 0  # not put back on a queue (the sender would only hold it again)
    delivery.pump()
    assert "m-1" not in mail_ids(server.handler.received)
    assert delivery.records()["m-1"]["status"] == "suspended"


def _metrics_text() -> str:
    from mailproxy import metrics

    return metrics.render().decode()


def _pause_with_one_held(delivery: Delivery) -> None:
    """Pause the account on its bounce rate (2 of 5 under the low thresholds), holding m-1."""
    _send(delivery, 5)
    _bounce(0)
    _bounce(1)
    delivery.submit(message("m-1"))
    delivery.pump()
    assert delivery.records()["m-1"]["status"] == "suspended"


def test_deleting_a_paused_account_fails_its_held_messages(
    delivery: Delivery, server: RunningServer, low_thresholds: None
) -> None:
    _pause_with_one_held(delivery)
    deleted = delivery.api.delete("/account/smtp", params={"tenant_id": "acme"}, headers=delivery.admin)
    assert deleted.status_code == 200
    assert delivery.api.get("/tenant/acme", headers=delivery.key).json()["paused_accounts"] == {}
    delivery.pump()
    record = delivery.records()["m-1"]
    assert record["status"] == "error" and record["error"] == "Account 'smtp' not found for tenant 'acme'"
    assert 'gmp_account_paused{account_id="smtp",tenant_id="acme"} 0.0' in _metrics_text()


def test_a_tenant_cannot_lift_a_pause_by_deleting_its_account_and_adding_it_again(
    delivery: Delivery, server: RunningServer, low_thresholds: None
) -> None:
    _pause_with_one_held(delivery)

    # Resuming is the admin's (GMP_TENANT_MAY_RESUME is off): so is deleting the paused account, which lifts it.
    assert delivery.api.delete("/account/smtp", headers=delivery.key).status_code == 403
    body = {"id": "smtp", "host": "127.0.0.1", "port": server.port, "use_tls": False}
    assert delivery.api.post("/account", json=body, headers=delivery.key).status_code == 200
    delivery.pump()
    assert "m-1" not in mail_ids(server.handler.received)
    assert set(delivery.api.get("/tenant/acme", headers=delivery.key).json()["paused_accounts"]) == {"smtp"}


def test_a_recipient_taken_off_the_list_is_mailed_on_the_messages_next_attempt(
    delivery: Delivery, server: RunningServer
) -> None:
    """The filter changes what one attempt sends, never the stored message: a message that waits (here for an
    SMTP session another sender holds) still has every recipient when it comes back."""
    import time

    from mailproxy import clock
    from mailproxy.stores import stores

    delivery.set_account(server.port, max_connections=1)
    squatter = stores().sessions.hold("acme", "smtp", "squatter", wanted=1, limit=1, now=clock.now_ts(), until=10**10)
    assert squatter == 1
    suppression.note_bounce("acme", "smtp", "gone@example.test", "hard", message_id=None, code=None, reason="x", ts=NOW)
    delivery.submit(message("m-1", to="kept@example.test", cc=["gone@example.test"]))
    delivery.pump()  # no session free: back on the queue, its payload whole
    assert server.handler.received == []

    assert delivery.api.delete("/suppressions/gone@example.test", headers=delivery.key).status_code == 200
    stores().sessions.hold("acme", "smtp", "squatter", wanted=0, limit=1, now=clock.now_ts(), until=clock.now_ts())
    deadline = time.monotonic() + 15
    while not server.handler.received and time.monotonic() < deadline:
        time.sleep(0.5)
        delivery.pump()
    [received] = server.handler.received
    assert sorted(received.rcpt_tos) == ["gone@example.test", "kept@example.test"]


def test_only_a_tenant_with_a_list_pays_its_read_at_send(
    delivery: Delivery, server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mailproxy.stores import stores
    from mailproxy.tenants import HAS_SUPPRESSIONS

    port = stores().suppressions
    real_find = port.find
    reads: list[int] = []

    def counting_find(keys: Any) -> Any:
        reads.append(len(keys))
        return real_find(keys)

    monkeypatch.setattr(port, "find", counting_find)
    delivery.submit(message("m-1"))
    delivery.pump()
    assert mail_ids(server.handler.received) == ["m-1"]
    assert reads == []  # no list: no read, not even an empty one
    assert not stores().tenants.get_tenant("acme").get(HAS_SUPPRESSIONS)  # type: ignore[union-attr]

    reply = delivery.api.post("/suppressions", json={"addresses": ["gone@example.test"]}, headers=delivery.key)
    assert reply.status_code == 200, reply.text
    assert stores().tenants.get_tenant("acme").get(HAS_SUPPRESSIONS)  # type: ignore[union-attr]
    reads.clear()
    delivery.submit(message("m-2", to="gone@example.test"), message("m-3"))
    delivery.pump()
    assert mail_ids(server.handler.received) == ["m-1", "m-3"]
    assert delivery.records()["m-2"]["error"] == "suppressed: gone@example.test"
    assert reads == [2]  # one read for the batch's two recipients


def test_adding_by_hand_never_overwrites_an_entry_a_bounce_wrote_meanwhile(
    delivery: Delivery, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mailproxy.stores import stores

    suppression.note_bounce(
        "acme", "smtp", "bob@example.test", "hard", message_id="m-0", code="5.1.1", reason="gone", ts=NOW
    )
    # The API's read of the list happened just before the bounce was written.
    monkeypatch.setattr(stores().suppressions, "find", lambda keys: {})
    reply = delivery.api.post("/suppressions", json={"addresses": ["bob@example.test"]}, headers=delivery.key)
    assert reply.status_code == 200, reply.text
    assert reply.json()["added"] == []
    monkeypatch.undo()
    [entry] = delivery.api.get("/suppressions", headers=delivery.key).json()["suppressions"]
    assert (entry["source"], entry["reason"], entry["code"]) == ("hard", "gone", "5.1.1")
