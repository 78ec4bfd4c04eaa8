"""The one-machine runtime (`make run`) over HTTP and SMTP, as a client sees it: tenant, account, messages that
arrive at the SMTP sink, delivery reports at the client's callback, /health and /metrics."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from local.embedded import EmbeddedService
from local.embedded.service import DataDirInUse
from tests.callbacks import SyncEndpoint, sync_endpoint
from tests.polling import wait_until

TOKEN = "embedded-admin-token"
pytestmark = pytest.mark.e2e


@pytest.fixture
def callback() -> Iterator[SyncEndpoint]:
    with sync_endpoint() as endpoint:
        yield endpoint


@pytest.fixture
def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[EmbeddedService]:
    monkeypatch.delenv("METRICS_TOKEN", raising=False)
    with EmbeddedService(
        data_dir=tmp_path / "data",
        http_port=0,
        smtp_sink_port=0,
        api_token=TOKEN,
        scheduler_interval=0.5,
        sender_workers=1,
    ) as running:
        yield running


def test_messages_submitted_over_http_arrive_by_smtp_and_are_reported_to_the_callback(
    service: EmbeddedService, callback: SyncEndpoint
) -> None:
    admin = {"X-API-Token": TOKEN}
    with httpx.Client(base_url=service.url, timeout=30) as http:
        tenant = {"id": "acme", "name": "Acme", "client_base_url": callback.url}
        key = {"X-API-Token": http.post("/tenant", json=tenant, headers=admin).json()["api_key"]}
        account = {"id": "sink", "host": "127.0.0.1", "port": service.smtp_sink_port}
        assert http.post("/account", json=account, headers=key).status_code == 200
        messages = [
            {"id": f"m-{n}", "account_id": "sink", "from": "a@acme.test", "to": "b@example.test", "subject": f"#{n}"}
            for n in range(5)
        ]
        messages.append(
            {"id": "bad", "account_id": "nope", "from": "a@acme.test", "to": "b@example.test", "subject": "?"}
        )
        assert http.post("/commands/add-messages", json={"messages": messages}, headers=key).json()["queued"] == 5

        assert service.smtp_sink is not None
        received = service.smtp_sink.wait_for(5, timeout=30)
        assert sorted(m.mail_id or "" for m in received) == [f"m-{n}" for n in range(5)]

        reported = wait_until(
            lambda: {e["id"]: e for e in callback.entries()} if len(callback.entries()) >= 6 else None
        )
        assert all("sent_ts" in reported[f"m-{n}"] for n in range(5))
        assert reported["bad"]["error"] == "account not found for tenant"

        listed = http.get("/messages", params={"include_history": "true"}, headers=key).json()["messages"]
        assert sorted(r["id"] for r in listed if r["status"] == "sent") == [f"m-{n}" for n in range(5)]
        metrics = wait_until(
            lambda: (text := http.get("/metrics").text) and "gmp_pending_messages 0.0" in text and text
        )
        assert 'gmp_sent_total{account_id="sink",tenant_id="acme"} 5.0' in metrics


def test_health_is_open_and_metrics_follow_the_metrics_function_token_rules(
    service: EmbeddedService, monkeypatch: pytest.MonkeyPatch
) -> None:
    with httpx.Client(base_url=service.url, timeout=30) as http:
        health = http.get("/health")
        assert health.status_code == 200 and health.json() == {"ok": True, "status": "ok"}
        assert "gmp_pending_messages 0.0" in http.get("/metrics").text

        monkeypatch.setenv("METRICS_TOKEN", "scrape-me")
        refused = http.get("/metrics")
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        assert http.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
        scraped = http.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
        assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain")
        assert http.get("/health").status_code == 200  # never behind the token


def test_a_body_over_api_gateways_quota_is_refused_with_413(service: EmbeddedService) -> None:
    with httpx.Client(base_url=service.url, timeout=30) as http:
        reply = http.post(
            "/commands/add-messages",
            content=b"x" * (10 * 1024 * 1024 + 1),
            headers={"X-API-Token": TOKEN, "Content-Type": "application/json"},
        )
        assert reply.status_code == 413


def test_a_second_runtime_on_the_same_data_directory_refuses_to_start(service: EmbeddedService) -> None:
    second = EmbeddedService(data_dir=service.data_dir, http_port=0, smtp_sink=False, sender_workers=1)
    with pytest.raises(DataDirInUse, match="used by another runtime"):
        second.start()
    with httpx.Client(base_url=service.url, timeout=30) as http:
        assert http.get("/metrics").status_code == 200  # the first one goes on


def test_a_killed_sender_worker_is_replaced_and_mail_still_goes_out(service: EmbeddedService) -> None:
    workers = service.workers
    assert workers is not None
    [pid] = wait_until(lambda: workers.pids)
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: workers.restarts == 1 and workers.pids and workers.pids != [pid])

    with httpx.Client(base_url=service.url, timeout=30) as http:
        key = {
            "X-API-Token": http.post("/tenant", json={"id": "acme"}, headers={"X-API-Token": TOKEN}).json()["api_key"]
        }
        http.post("/account", json={"id": "sink", "host": "127.0.0.1", "port": service.smtp_sink_port}, headers=key)
        message = {"id": "after", "account_id": "sink", "from": "a@acme.test", "to": "b@example.test", "subject": "!"}
        assert http.post("/commands/add-messages", json={"messages": [message]}, headers=key).json()["queued"] == 1
    assert service.smtp_sink is not None
    assert [m.mail_id for m in service.smtp_sink.wait_for(1, timeout=30)] == ["after"]


def test_two_workers_share_an_accounts_sessions_and_never_open_more(tmp_path: Path) -> None:
    """Issue 17 over make run: two worker processes, an account of 3 sessions, a provider 20 ms away."""
    from bench.sink import counting_sink

    with (
        counting_sink(reply_delay_ms=20) as (port, sink),
        EmbeddedService(
            data_dir=tmp_path / "data", http_port=0, smtp_sink_port=0, api_token=TOKEN, sender_workers=2
        ) as running,
        httpx.Client(base_url=running.url, timeout=30) as http,
    ):
        admin = {"X-API-Token": TOKEN}
        key = {"X-API-Token": http.post("/tenant", json={"id": "acme"}, headers=admin).json()["api_key"]}
        account = {"id": "slow", "host": "127.0.0.1", "port": port, "use_tls": False, "max_connections": 3}
        assert http.post("/account", json=account, headers=key).status_code == 200
        messages = [
            {"id": f"m-{n}", "account_id": "slow", "from": "a@acme.test", "to": "b@example.test", "subject": f"#{n}"}
            for n in range(120)
        ]
        assert http.post("/commands/add-messages", json={"messages": messages}, headers=key).json()["queued"] == 120
        assert sink.wait_for(120, timeout=60)
        wait_until(lambda: http.get("/status", headers=key).json()["pending_messages"] == 0, timeout=30)
    assert sorted(sink.arrivals) == sorted(f"m-{n}" for n in range(120))  # each once
    assert sink.accepted == 120
    assert sink.max_open_sessions == 3  # used, and never more, across both workers


def test_an_account_whose_server_hangs_does_not_hold_another_accounts_mail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 17 over make run: one worker process runs batches side by side (GMP_SENDER_BATCHES), so a batch
    waiting on a server that does not answer holds its own account's mail, not the next batch's."""
    import asyncio
    import threading

    from bench.sink import counting_sink

    released = threading.Event()
    with (
        counting_sink() as (hung_port, hung),
        counting_sink() as (fast_port, fast),
        EmbeddedService(
            data_dir=tmp_path / "data", http_port=0, smtp_sink_port=0, api_token=TOKEN, sender_workers=1
        ) as running,
        httpx.Client(base_url=running.url, timeout=30) as http,
    ):
        answer_mail = hung.handle_MAIL

        async def answer_mail_once_released(*args: object) -> str:
            await asyncio.to_thread(released.wait, 30)
            return await answer_mail(*args)

        monkeypatch.setattr(hung, "handle_MAIL", answer_mail_once_released)
        try:
            admin = {"X-API-Token": TOKEN}
            key = {"X-API-Token": http.post("/tenant", json={"id": "acme"}, headers=admin).json()["api_key"]}
            for account_id, port in (("hung", hung_port), ("fast", fast_port)):
                account = {"id": account_id, "host": "127.0.0.1", "port": port, "use_tls": False}
                assert http.post("/account", json=account, headers=key).status_code == 200

            def submit(account_id: str, count: int) -> None:
                fields = {"account_id": account_id, "from": "a@acme.test", "to": "b@x.test", "subject": "!"}
                messages = [{"id": f"{account_id}-{n}", **fields} for n in range(count)]
                assert http.post("/commands/add-messages", json={"messages": messages}, headers=key).status_code == 200

            submit("hung", 5)
            assert wait_until(lambda: hung.open_sessions >= 1, timeout=20)  # its batch is under way, and waits
            submit("fast", 1)
            assert fast.wait_for(1, timeout=20)  # about 5 s after the hung batch began, not its 30 s time limit
            assert hung.accepted == 0  # that one still waits
        finally:
            released.set()
        assert hung.wait_for(5, timeout=30)
