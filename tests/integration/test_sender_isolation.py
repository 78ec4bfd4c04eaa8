"""No single message or destination holds the sender: time limits per message and per account group,
a byte cap per built message, and account groups that run side by side within a batch."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from fastapi.testclient import TestClient

from tests.conftest import Storage
from tests.integration.delivery import Runner, mail_ids, message, runner
from tests.integration.smtp_servers import HOST, RoutingHandler, free_port

pytestmark = pytest.mark.both_storages
# These wait out real SMTP stalls (12 s each): the sender's time limits, the same code on either storage.
STALLS_ONCE = "12 s of SMTP stalls testing the sender's time limits, not storage (passes on SQLite): run on AWS only"


@dataclass
class StallingHandler(RoutingHandler):
    """Waits `per_command` seconds before answering MAIL, RCPT and DATA, and `at_data` more at DATA."""

    per_command: float = 0.0
    at_data: float = 0.0
    arrivals: list[float] = field(default_factory=list)  # time.monotonic() of each accepted message

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        await asyncio.sleep(self.per_command)
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]) -> str:
        await asyncio.sleep(self.per_command)
        return await super().handle_RCPT(server, session, envelope, address, rcpt_options)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await asyncio.sleep(self.per_command + self.at_data)
        self.arrivals.append(time.monotonic())
        return await super().handle_DATA(server, session, envelope)


@contextlib.contextmanager
def stalling_server(per_command: float = 0.0, at_data: float = 0.0) -> Iterator[tuple[int, StallingHandler]]:
    handler = StallingHandler(per_command=per_command, at_data=at_data)
    port = free_port()
    controller = Controller(handler, hostname=HOST, port=port, server_hostname="mx.test", auth_require_tls=False)
    controller.start()
    try:
        yield port, handler
    finally:
        controller.stop()


@dataclass
class Tenants:
    """Several tenants, each with one `smtp` account, driven through the API with the admin token."""

    env: Storage
    api: TestClient
    admin: dict[str, str]

    @property
    def queues(self) -> Runner:
        """The storage's queues."""
        return runner(self.env)

    def add(self, tenant_id: str, port: int, **fields: Any) -> None:
        assert self.api.post("/tenant", json={"id": tenant_id}, headers=self.admin).status_code == 200
        account = {"id": "smtp", "tenant_id": tenant_id, "host": HOST, "port": port, "use_tls": False, **fields}
        assert self.api.post("/account", json=account, headers=self.admin).status_code == 200

    def submit(self, *messages: dict[str, Any]) -> dict[str, Any]:
        reply = self.api.post("/commands/add-messages", json={"messages": list(messages)}, headers=self.admin)
        assert reply.status_code == 200, reply.text
        body: dict[str, Any] = reply.json()
        return body

    def one_batch(self) -> list[dict[str, Any]]:
        """Every visible queue message, as the records of one SQS batch (in submission order)."""
        bodies = [b for bodies in self.queues.drain_all().values() for b in bodies]
        return [
            {"messageId": f"sqs-{b['tenant_id']}-{b['id']}-{n}", "body": json.dumps(b)} for n, b in enumerate(bodies)
        ]

    def scheduler_round(self) -> None:
        self.queues.scheduler()

    def records(self, tenant_id: str) -> dict[str, dict[str, Any]]:
        reply = self.api.get(
            "/messages", params={"tenant_id": tenant_id, "include_history": "true"}, headers=self.admin
        )
        assert reply.status_code == 200, reply.text
        return {r["id"]: r for r in reply.json()["messages"]}

    def counters(self, tenant_id: str) -> dict[str, int]:
        from mailproxy.stores import stores

        for row in stores().counters.counter_rows():
            if row["tenant_id"] == tenant_id:
                return {k: int(row.get(k, 0)) for k in ("sent", "errors", "deferred", "rate_limited")}
        return {}


def use_settings(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    from mailproxy.settings import get_settings

    get_settings.cache_clear()


@pytest.fixture
def tenants(storage: Storage, api: TestClient, admin: dict[str, str]) -> Tenants:
    return Tenants(storage, api, admin)


def for_tenant(tenant_id: str, message_id: str, **fields: Any) -> dict[str, Any]:
    return {**message(message_id), **fields, "tenant_id": tenant_id}


@pytest.mark.aws_only(STALLS_ONCE)
def test_a_stalled_server_does_not_delay_another_accounts_mail(
    tenants: Tenants, monkeypatch: pytest.MonkeyPatch
) -> None:
    from functions.sender.app import handler

    # Only the message time limit stops the stalled transaction (the SMTP timeout is far longer).
    use_settings(
        monkeypatch,
        GMP_SMTP_TIMEOUT_SECONDS="120",
        GMP_MESSAGE_TIME_LIMIT_SECONDS="12",
        GMP_ACCOUNT_TIME_LIMIT_SECONDS="15",
    )
    with stalling_server(at_data=60) as (slow_port, slow), stalling_server() as (fast_port, fast):
        # One session: its two messages go one after the other, and the second meets the account's limit.
        tenants.add("slow-co", slow_port, max_connections=1)
        tenants.add("fast-co", fast_port)
        # The stalled account's messages come first in the batch: sent one group after another, the fast
        # account would wait at least the 12 s message limit.
        tenants.submit(for_tenant("slow-co", "s-1"), for_tenant("slow-co", "s-2"))
        tenants.submit(*(for_tenant("fast-co", f"f-{n}") for n in range(3)))
        batch = tenants.one_batch()
        assert [json.loads(r["body"])["tenant_id"] for r in batch][:2] == ["slow-co", "slow-co"]

        started = time.monotonic()
        assert handler({"Records": batch}, None) == {"batchItemFailures": []}
        elapsed = time.monotonic() - started

        assert sorted(mail_ids(fast.received)) == ["f-0", "f-1", "f-2"]
        assert max(fast.arrivals) - started < 10  # generous: they go out in well under a second
        assert elapsed < 45  # the stall is 60 s; the group stops at its limits
        assert slow.received == []

    slow_records = tenants.records("slow-co")
    first = slow_records["s-1"]
    assert first["status"] == "deferred"  # a timed-out attempt: retried later like any temporary failure
    assert [e["description"] for e in first["history"] if e["event_type"] == "deferred"] == [
        "message time limit exceeded (12 s)"
    ]
    # s-2 did not fit in the account's 15 s: handed back unsent, not counted as an attempt.
    second = slow_records["s-2"]
    assert second["status"] == "pending"
    assert [e["event_type"] for e in second["history"]] == ["queued"]
    assert [b["id"] for b in tenants.queues.drain(2)] == ["s-2"]
    assert tenants.counters("fast-co")["sent"] == 3
    assert tenants.counters("slow-co") == {"sent": 0, "errors": 0, "deferred": 1, "rate_limited": 0}


def test_a_built_message_over_the_byte_cap_fails_permanently(tenants: Tenants, monkeypatch: pytest.MonkeyPatch) -> None:
    from functions.sender.app import handler

    use_settings(monkeypatch, GMP_MAX_MESSAGE_BYTES="20000")
    with stalling_server() as (port, server):
        tenants.add("acme", port)
        tenants.submit(for_tenant("acme", "big", body="x" * 30_000), for_tenant("acme", "small"))
        assert handler({"Records": tenants.one_batch()}, None) == {"batchItemFailures": []}
        assert mail_ids(server.received) == ["small"]

    record = tenants.records("acme")["big"]
    assert record["status"] == "error"
    assert record["error"].startswith("message too large: ") and record["error"].endswith(" bytes (limit 20000)")
    size = int(record["error"].split()[3])
    assert 30_000 < size < 32_000  # the size on the wire, give or take the MIME boundaries
    assert tenants.counters("acme") == {"sent": 1, "errors": 1, "deferred": 0, "rate_limited": 0}


ABANDONED = "Abandoned after 3 attempts that did not finish (sender crashed or timed out)"


@pytest.mark.aws_only(STALLS_ONCE)
def test_poison_messages_in_a_batch_fail_on_their_own_while_the_other_tenants_mail_goes_out(
    tenants: Tenants, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mailproxy import smtp

    from functions.sender.app import handler

    use_settings(
        monkeypatch,
        GMP_CLAIM_TIMEOUT_SECONDS="0",  # a crashed claim is stale at once: the next round recovers it
        GMP_INTAKE_GRACE_SECONDS="0",
        GMP_RETRY_DELAYS="0",
        GMP_MAX_RETRIES="2",
        GMP_SMTP_TIMEOUT_SECONDS="3",
        GMP_MESSAGE_TIME_LIMIT_SECONDS="4",
        GMP_ACCOUNT_TIME_LIMIT_SECONDS="6",
    )
    real_send = smtp.SmtpPool.send

    async def send(self: smtp.SmtpPool, account: Any, email: Any) -> dict[str, str]:
        if str(email.message["X-Genro-Mail-ID"]) == "crash":
            raise RuntimeError("a bug this message triggers")  # what a crash of its sender looks like
        return await real_send(self, account, email)

    monkeypatch.setattr(smtp.SmtpPool, "send", send)
    # Answers every command just under the 3 s SMTP timeout: without a message time limit, minutes per batch.
    with stalling_server() as (fast_port, fast), stalling_server(per_command=2.5) as (slow_port, slow):
        for tenant_id in ("good-a", "good-b", "crashy"):
            tenants.add(tenant_id, fast_port)
        tenants.add("slowpoke", slow_port)
        reply = tenants.submit(
            for_tenant("slowpoke", "slow"),
            for_tenant("crashy", "crash"),
            for_tenant("good-a", "crowded", to=[f"r{n}@example.test" for n in range(1001)]),
            for_tenant("good-b", "huge-header", headers={"X-Big": "x" * 800_000}),
            for_tenant("good-a", "a-1"),
            for_tenant("good-a", "a-2"),
            for_tenant("good-b", "b-1"),
        )
        assert reply["queued"] == 5
        assert reply["rejected"] == [
            {"id": "crowded", "reason": "too many recipients: 1001 (limit 1000)"},
            {"id": "huge-header", "reason": "header too long: X-Big: 800000 bytes (limit 16384)"},
        ]

        started = time.monotonic()
        handler({"Records": tenants.one_batch()}, None)
        assert sorted(mail_ids(fast.received)) == ["a-1", "a-2", "b-1"]
        assert max(fast.arrivals) - started < 10  # generous: the poison ones do not hold them

        for _ in range(8):  # scheduler rounds and redeliveries until the poison ones are settled
            tenants.scheduler_round()
            batch = tenants.one_batch()
            if not batch:
                break
            handler({"Records": batch}, None)
        assert slow.received == []

    outcome = {
        (tenant_id, message_id): (record["status"], record["error"])
        for tenant_id in ("good-a", "good-b", "crashy", "slowpoke")
        for message_id, record in tenants.records(tenant_id).items()
    }
    assert outcome == {
        ("good-a", "a-1"): ("sent", None),
        ("good-a", "a-2"): ("sent", None),
        ("good-a", "crowded"): ("error", "too many recipients: 1001 (limit 1000)"),
        ("good-b", "b-1"): ("sent", None),
        ("good-b", "huge-header"): ("error", "header too long: X-Big: 800000 bytes (limit 16384)"),
        ("crashy", "crash"): ("error", ABANDONED),
        ("slowpoke", "slow"): ("error", "Max retries (2) exceeded: message time limit exceeded (4 s)"),
    }  # nothing lost: every message ended sent or failed
    assert sorted(mail_ids(fast.received)) == ["a-1", "a-2", "b-1"]  # nothing sent twice
    assert tenants.counters("crashy") == {"sent": 0, "errors": 1, "deferred": 0, "rate_limited": 0}
    assert tenants.counters("slowpoke") == {"sent": 0, "errors": 1, "deferred": 2, "rate_limited": 0}
    assert tenants.counters("good-a")["sent"] == 2 and tenants.counters("good-b")["sent"] == 1
    assert tenants.queues.queued_total() == 0
    assert tenants.api.get("/status", headers=tenants.admin).json()["pending_messages"] == 0


def test_an_unexpected_error_in_one_accounts_group_leaves_the_others_going_and_loses_nothing(
    tenants: Tenants, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mailproxy.stores import stores

    ratelimit = stores().rates

    from functions.sender.app import handler

    use_settings(monkeypatch, GMP_CLAIM_TIMEOUT_SECONDS="0")
    real_reserve = ratelimit.reserve

    def reserve(tenant_id: str, *args: Any, **kwargs: Any) -> Any:
        if tenant_id == "broken":
            raise RuntimeError("a bug in this account's rate-limit path")
        return real_reserve(tenant_id, *args, **kwargs)

    monkeypatch.setattr(ratelimit, "reserve", reserve)
    with stalling_server() as (port, server):
        tenants.add("broken", port)
        tenants.add("fine", port)
        tenants.submit(for_tenant("broken", "x-1"), for_tenant("fine", "ok-1"))
        assert handler({"Records": tenants.one_batch()}, None) == {"batchItemFailures": []}
        assert mail_ids(server.received) == ["ok-1"]
        assert tenants.records("broken")["x-1"]["status"] == "sending"  # left to crash recovery

        monkeypatch.setattr(ratelimit, "reserve", real_reserve)  # the bug is fixed and deployed
        tenants.scheduler_round()
        handler({"Records": tenants.one_batch()}, None)
        assert sorted(mail_ids(server.received)) == ["ok-1", "x-1"]

    assert tenants.records("broken")["x-1"]["status"] == "sent"
    assert tenants.counters("fine")["sent"] == 1 and tenants.counters("broken")["sent"] == 1
    assert tenants.api.get("/status", headers=tenants.admin).json()["pending_messages"] == 0
