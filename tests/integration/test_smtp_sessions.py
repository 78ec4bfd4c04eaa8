"""Concurrent SMTP sessions per account (docs/delivery.md "Concurrent sessions"): a batch's messages for one
account go out over up to `max_connections` sessions at once, every sender together never opens more, a
message that finds no session free waits without an attempt counted, and nothing is sent twice."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from mailproxy import clock, smtp

from bench.sink import CountingHandler, counting_sink
from tests.conftest import Storage
from tests.integration.delivery import Delivery, message, senders_racing

pytestmark = pytest.mark.both_storages

REPLY_DELAY_MS = 40  # long enough that sessions overlap, short enough for a quick test


@pytest.fixture
def sink() -> Iterator[tuple[int, CountingHandler]]:
    with counting_sink(reply_delay_ms=REPLY_DELAY_MS) as running:
        yield running


def make_delivery(storage: Storage, api: TestClient, admin: dict[str, str], port: int, **account: Any) -> Delivery:
    reply = api.post("/tenant", json={"id": "acme", "name": "Acme"}, headers=admin)
    assert reply.status_code == 200, reply.text
    key = {"X-API-Token": reply.json()["api_key"]}
    body = {"id": "smtp", "host": "127.0.0.1", "port": port, "use_tls": False, **account}
    assert api.post("/account", json=body, headers=key).status_code == 200, body
    return Delivery(storage, api, admin, "acme", key)


def deliver_all(delivery: Delivery, handler: CountingHandler, count: int, timeout: float = 30.0) -> None:
    """Pump (and let handed-back messages come back) until `count` messages were accepted."""
    deadline = time.monotonic() + timeout
    while handler.accepted < count and time.monotonic() < deadline:
        delivery.pump()
        time.sleep(0.2)
    assert handler.accepted == count


def answer_no_mail_until(released: threading.Event, handler: CountingHandler, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sink answers no MAIL until `released` is set (30 s at most): its sessions stay open, each in a transaction."""
    answer_mail = handler.handle_MAIL

    async def answer_mail_once_released(*args: Any) -> str:
        await asyncio.to_thread(released.wait, 30)
        return await answer_mail(*args)

    monkeypatch.setattr(handler, "handle_MAIL", answer_mail_once_released)


def test_a_batch_goes_out_over_the_accounts_sessions_at_once_and_keeps_them(
    storage: Storage, api: TestClient, admin: dict[str, str], sink: tuple[int, CountingHandler]
) -> None:
    port, handler = sink
    delivery = make_delivery(storage, api, admin, port, max_connections=4)
    delivery.submit(*(message(f"m-{n}") for n in range(10)))
    delivery.pump()

    assert sorted(handler.arrivals) == sorted(f"m-{n}" for n in range(10))
    assert handler.max_open_sessions == 4  # the batch used every session it may, and no more
    assert smtp.default_pool().connections_opened == 4

    delivery.submit(*(message(f"n-{n}") for n in range(10)))
    delivery.pump()
    assert handler.accepted == 20
    assert smtp.default_pool().connections_opened == 4  # the next batch reuses them
    assert {r["status"] for r in delivery.records().values()} == {"sent"}


def test_the_account_shows_its_session_limit_and_refuses_a_nonsense_one(
    storage: Storage, api: TestClient, admin: dict[str, str], sink: tuple[int, CountingHandler]
) -> None:
    delivery = make_delivery(storage, api, admin, sink[0])
    [shown] = api.get("/accounts", headers=delivery.key).json()["accounts"]
    assert shown["max_connections"] == 5  # genro-mail-proxy's pool size
    for bad in (0, -1, "many", 1001):
        body = {"id": "smtp", "host": "127.0.0.1", "port": sink[0], "max_connections": bad}
        reply = api.post("/account", json=body, headers=delivery.key)
        assert reply.status_code == 422, bad
        assert reply.json()["detail"][0]["loc"] == ["body", "max_connections"]


def test_the_deployment_ceiling_bounds_every_account(
    storage: Storage,
    api: TestClient,
    admin: dict[str, str],
    sink: tuple[int, CountingHandler],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mailproxy.settings import get_settings

    monkeypatch.setenv("GMP_SMTP_MAX_CONNECTIONS", "2")
    get_settings.cache_clear()
    port, handler = sink
    delivery = make_delivery(storage, api, admin, port, max_connections=8)
    delivery.submit(*(message(f"m-{n}") for n in range(8)))
    delivery.pump()
    assert handler.accepted == 8
    assert handler.max_open_sessions == 2


def test_senders_racing_never_open_more_than_the_accounts_sessions_and_send_nothing_twice(
    storage: Storage, api: TestClient, admin: dict[str, str], sink: tuple[int, CountingHandler]
) -> None:
    port, handler = sink
    delivery = make_delivery(storage, api, admin, port, max_connections=3)
    delivery.submit(*(message(f"m-{n}") for n in range(24)))
    bodies = delivery.drain(2)
    assert len(bodies) == 24
    senders_racing(bodies, 4)

    assert handler.max_open_sessions <= 3
    first_round = handler.accepted
    records = delivery.records()
    waiting = [r for r in records.values() if r["status"] == "pending"]
    assert first_round + len(waiting) == 24
    # Who found no session free waits for one: no attempt counted, nothing in its history but being queued.
    assert all(r.get("attempts", 0) in (0, None) for r in waiting)
    assert all([e["event_type"] for e in r["history"]] == ["queued"] for r in waiting)

    deliver_all(delivery, handler, 24)
    assert sorted(handler.arrivals) == sorted(f"m-{n}" for n in range(24))  # each once
    assert handler.max_open_sessions <= 3
    assert {r["status"] for r in delivery.records().values()} == {"sent"}


@pytest.fixture
def two_sent(storage: Storage, api: TestClient, admin: dict[str, str], sink: tuple[int, CountingHandler]) -> Delivery:
    """An account of 2 sessions whose first two messages went out, its two connections left open."""
    port, handler = sink
    delivery = make_delivery(storage, api, admin, port, max_connections=2)
    delivery.submit(message("m-1"), message("m-2"))
    delivery.pump()
    assert (handler.accepted, handler.open_sessions) == (2, 2)
    return delivery


def test_a_sender_never_leaves_open_a_connection_its_lease_no_longer_counts(
    two_sent: Delivery, sink: tuple[int, CountingHandler], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Closed first, then given back: a connection given back while still open could be opened again by
    another sender in its place, one more than the account's limit at the provider."""
    from mailproxy import sender
    from mailproxy.stores import stores

    delivery, handler = two_sent, sink[1]
    pool, port = smtp.default_pool(), stores().sessions
    real_hold = port.hold
    uncounted: list[tuple[int, int]] = []

    def hold(tenant_id: str, account_id: str, holder: str, **asked: Any) -> int:
        granted = real_hold(tenant_id, account_id, holder, **asked)
        counted = max(granted, asked.get("open_now", 0))
        if holder == pool.holder and pool.open_count("acme/smtp") > counted:
            uncounted.append((pool.open_count("acme/smtp"), counted))
        return granted

    monkeypatch.setattr(port, "hold", hold)
    now = clock.now_ts()
    assert real_hold("acme", "smtp", "other", wanted=2, limit=2, now=now, until=now + 30) == 0  # short
    delivery.submit(message("m-3"))
    delivery.pump()  # the fair share is 1 of 2: one connection is closed
    assert handler.accepted == 3
    assert handler.wait_open_sessions(1) == 1
    sender.release_sessions()  # a worker that stops
    assert pool.open_count("acme/smtp") == 0
    assert real_hold("acme", "smtp", "other", wanted=2, limit=2, now=now, until=now + 30) == 2
    assert uncounted == []


def test_a_dead_senders_sessions_are_free_again_once_its_lease_lapses(
    two_sent: Delivery, sink: tuple[int, CountingHandler], monkeypatch: pytest.MonkeyPatch
) -> None:
    delivery, handler = two_sent, sink[1]
    smtp.reset_pool()  # the container is gone (its connections stay open at the server, as a frozen one's)

    delivery.submit(message("m-3"))
    delivery.pump()
    assert handler.accepted == 2  # both sessions are still leased to the dead container
    assert delivery.records()["m-3"]["status"] == "pending"

    later = clock.now_ts() + 60
    monkeypatch.setattr(clock, "now_ts", lambda: later)
    deliver_all(delivery, handler, 3)


def test_a_living_sender_closes_its_connections_before_its_lease_lapses(
    two_sent: Delivery, sink: tuple[int, CountingHandler], monkeypatch: pytest.MonkeyPatch
) -> None:
    delivery, handler = two_sent, sink[1]
    later = clock.now_ts() + 60
    monkeypatch.setattr(clock, "now_ts", lambda: later)
    delivery.submit(message("m-3"))
    delivery.pump()
    # Its lease had lapsed: the old connections were closed (QUIT) before new sessions were leased.
    assert handler.accepted == 3
    assert smtp.default_pool().connections_opened == 3
    assert handler.max_open_sessions == 2


def test_a_slow_account_does_not_delay_another_accounts_mail(
    storage: Storage, api: TestClient, admin: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with counting_sink() as (slow_port, slow), counting_sink() as (fast_port, fast):
        # The slow account's server answers no MAIL until the fast account's mail is all in (30 s at most):
        # mail sent one account after the other would not get there.
        fast_is_in = threading.Event()
        answer_no_mail_until(fast_is_in, slow, monkeypatch)
        delivery = make_delivery(storage, api, admin, slow_port, max_connections=1)
        body = {"id": "fast", "host": "127.0.0.1", "port": fast_port, "use_tls": False, "max_connections": 1}
        assert api.post("/account", json=body, headers=delivery.key).status_code == 200
        slow_ones = [message(f"slow-{n}") for n in range(4)]
        fast_ones = [message(f"fast-{n}", account_id="fast") for n in range(4)]
        delivery.submit(*[m for pair in zip(slow_ones, fast_ones, strict=True) for m in pair])
        done = threading.Thread(target=delivery.pump)
        done.start()
        try:
            assert fast.wait_for(4, timeout=20)
        finally:
            fast_is_in.set()
            done.join()
        assert slow.accepted == 4


def test_building_a_long_email_does_not_hold_the_other_sessions(
    storage: Storage, api: TestClient, admin: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mailproxy import sender

    with counting_sink() as (slow_port, slow), counting_sink() as (fast_port, fast):
        # The slow account's email takes until the fast account's mail is in to build (as megabytes of
        # attachments to encode would): built on the event loop, it would hold the fast account's replies.
        fast_is_in = threading.Event()
        build_email = sender.build_email

        def build_email_once_released(payload: dict[str, Any], **kwargs: Any) -> Any:
            if payload["id"] == "slow":
                fast_is_in.wait(10)
            return build_email(payload, **kwargs)

        monkeypatch.setattr(sender, "build_email", build_email_once_released)
        delivery = make_delivery(storage, api, admin, slow_port)
        body = {"id": "fast", "host": "127.0.0.1", "port": fast_port, "use_tls": False}
        assert api.post("/account", json=body, headers=delivery.key).status_code == 200
        delivery.submit(message("slow"), *(message(f"fast-{n}", account_id="fast") for n in range(3)))
        done = threading.Thread(target=delivery.pump)
        done.start()
        try:
            assert fast.wait_for(3, timeout=8)
        finally:
            fast_is_in.set()
            done.join()
        assert list(slow.arrivals) == ["slow"]


def test_an_account_groups_sessions_decrypt_the_tenants_client_auth_once(
    storage: Storage, api: TestClient, admin: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Messages with attachments need the tenant's client_auth (for fetches): one decrypt (a KMS call on AWS)
    # serves the group, however many of its sessions start at once.
    from mailproxy import tenants

    decrypts: list[str] = []
    client_auth = tenants.client_auth

    def slow_client_auth(item: dict[str, Any]) -> dict[str, Any]:
        decrypts.append(str(item["id"]))
        time.sleep(0.2)  # a KMS round trip: the other sessions ask meanwhile
        return client_auth(item)

    monkeypatch.setattr(tenants, "client_auth", slow_client_auth)
    with counting_sink() as (port, handler):
        delivery = make_delivery(storage, api, admin, port, max_connections=4)
        attachment = {"filename": "a.txt", "storage_path": "base64:" + base64.b64encode(b"hello").decode()}
        delivery.submit(*(message(f"m-{n}", attachments=[attachment]) for n in range(4)))
        delivery.pump()
        assert sorted(handler.arrivals) == [f"m-{n}" for n in range(4)]
    assert decrypts == [delivery.tenant_id]


def test_a_sender_that_finishes_makes_room_for_one_that_is_short_and_closes_the_rest(
    storage: Storage, api: TestClient, admin: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mailproxy.stores import stores

    from functions.sender.app import handler as sender_handler

    with counting_sink() as (port, handler):
        other_asked = threading.Event()
        answer_no_mail_until(other_asked, handler, monkeypatch)
        delivery = make_delivery(storage, api, admin, port, max_connections=4)
        delivery.submit(*(message(f"m-{n}") for n in range(4)))
        bodies = delivery.drain(2)
        sending = threading.Thread(
            target=sender_handler,
            args=({"Records": [{"messageId": b["id"], "body": json.dumps(b)} for b in bodies]}, None),
        )
        sending.start()
        try:
            deadline = time.monotonic() + 10
            while handler.open_sessions < 4 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert handler.open_sessions == 4
            now = clock.now_ts()
            # Another sender asks while all four are busy: nothing now, but it is on record as short.
            assert stores().sessions.hold("acme", "smtp", "other", wanted=4, limit=4, now=now, until=now + 30) == 0
        finally:
            other_asked.set()
            sending.join()
        assert handler.accepted == 4
        # The first sender's group ended: it kept its fair share (2) of connections open and closed the others.
        assert handler.wait_open_sessions(2) == 2
        assert stores().sessions.hold("acme", "smtp", "other", wanted=4, limit=4, now=now, until=now + 30) == 2


def test_a_connection_beyond_a_lease_that_shrank_mid_transaction_is_closed_when_it_ends() -> None:
    import asyncio

    from mailproxy.email_builder import build_email
    from mailproxy.sessions import Lease

    async def scenario(port: int, handler: CountingHandler) -> tuple[int, int]:
        pool = smtp.SmtpPool()
        account = smtp.AccountConfig(key="acme/smtp", host="127.0.0.1", port=port, use_tls=False, verify_tls=False)
        pool.leases[account.key] = Lease("acme", "smtp", 10**10, 2)
        emails = [build_email(message(f"m-{n}"), message_id=f"<m-{n}@acme.test>", attachments=[]) for n in range(2)]
        sends = [asyncio.create_task(pool.send(account, email)) for email in emails]
        while handler.open_sessions < 2:
            await asyncio.sleep(0.01)
        pool.leases[account.key] = Lease("acme", "smtp", 10**10, 1)  # renewed smaller: another sender was short
        await asyncio.gather(*sends)
        kept = pool.open_count(account.key)
        still_open = await asyncio.to_thread(handler.wait_open_sessions, 1)
        await pool.close_all()
        return kept, still_open

    with counting_sink(reply_delay_ms=100) as (port, handler):
        kept, still_open = asyncio.run(scenario(port, handler))
    assert (kept, still_open) == (1, 1)


def test_a_sender_busy_with_another_account_still_closes_connections_before_their_lease_lapses(
    two_sent: Delivery, sink: tuple[int, CountingHandler], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch of a slow account can outlast the lease of another account's idle connections: they are closed
    while it runs, not when it ends, since the others may open those sessions as soon as the lease lapsed."""
    from mailproxy import sender

    delivery, kept = two_sent, sink[1]
    monkeypatch.setattr(sender, "CLOSE_LAPSED_EVERY_SECONDS", 0.05, raising=False)
    real_now, moved = clock.now_ts, [0]
    monkeypatch.setattr(clock, "now_ts", lambda: real_now() + moved[0])
    open_at_second_message: list[int] = []
    with counting_sink(reply_delay_ms=300) as (slow_port, slow):
        real_data = slow.handle_DATA

        async def data(server: Any, session: Any, envelope: Any) -> str:
            if slow.accepted == 0:
                moved[0] = 60  # the slow account's first message took a minute: the idle connections' lease lapsed
            else:
                open_at_second_message.append(kept.open_sessions)
            return await real_data(server, session, envelope)

        monkeypatch.setattr(slow, "handle_DATA", data)
        body = {"id": "slow", "host": "127.0.0.1", "port": slow_port, "use_tls": False, "max_connections": 1}
        assert delivery.api.post("/account", json=body, headers=delivery.key).status_code == 200
        delivery.submit(message("s-1", account_id="slow"), message("s-2", account_id="slow"))
        delivery.pump()
        assert slow.accepted == 2
    assert open_at_second_message == [0]


def test_a_connection_being_closed_stays_counted_until_the_server_has_let_it_go() -> None:
    """A QUIT takes a round trip: a sender asking for its lease meanwhile (its batch's closer runs beside its
    account groups) must still count the connection, or another sender could open one in its place while the
    server has it open."""
    import asyncio

    from aiosmtpd.smtp import MISSING
    from mailproxy.email_builder import build_email
    from mailproxy.sessions import Lease

    quitting = threading.Event()

    async def slow_quit(server: Any, session: Any, envelope: Any) -> Any:
        quitting.set()
        await asyncio.sleep(0.3)  # a provider 300 ms away, as the QUIT sees it
        return MISSING

    async def scenario(port: int, handler: CountingHandler) -> tuple[int, int]:
        pool = smtp.SmtpPool()
        account = smtp.AccountConfig(key="acme/smtp", host="127.0.0.1", port=port, use_tls=False, verify_tls=False)
        pool.leases[account.key] = Lease("acme", "smtp", 100, 1)
        await pool.send(account, build_email(message("m-1"), message_id="<m-1@acme.test>", attachments=[]))
        closing = asyncio.create_task(pool.close_lapsed(100))  # the lease lapses now
        while not quitting.is_set():
            await asyncio.sleep(0.01)
        seen = (pool.open_count(account.key), handler.open_sessions)
        await closing
        return seen

    with counting_sink() as (port, handler):
        handler.handle_QUIT = slow_quit  # type: ignore[attr-defined]
        counted, open_at_server = asyncio.run(scenario(port, handler))
    assert (counted, open_at_server) == (1, 1)
