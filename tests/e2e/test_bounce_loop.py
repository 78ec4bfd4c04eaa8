"""The whole bounce loop over both local runtimes (`make run` and `make run-aws`), as a client and an MTA see
it: a message goes out with its VERP return path, the sink refuses nothing, a DSN about it lands in the bounce
mailbox (a real Dovecot), and the tenant's callback receives the bounce; GET /messages and /metrics show it.

Then the rest of the loop (docs/suppressions.md): the bounced address is suppressed for the tenant's next
message, and the account, whose bounce rate crossed its (lowered) threshold, is paused until resumed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.bounce_mail import dsn
from tests.callbacks import SyncEndpoint, sync_endpoint
from tests.imap_server import DovecotServer
from tests.polling import wait_until
from tests.runtimes import RUNTIMES, running

TOKEN = "bounce-e2e-admin-token"
RETURN_PATH = "bounces@bounce.test"
pytestmark = pytest.mark.e2e


@pytest.fixture
def callback() -> Iterator[SyncEndpoint]:
    with sync_endpoint() as endpoint:
        yield endpoint


@pytest.fixture(params=RUNTIMES)
def service(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("GMP_BOUNCE_INTERVAL", "0.5")  # both runtimes poll bounce mailboxes at this pace
    # The reputation guard's threshold within a test's reach: one hard bounce in two sends pauses the account.
    monkeypatch.setenv("GMP_REPUTATION_MIN_SENDS", "2")
    monkeypatch.setenv("GMP_BOUNCE_RATE_LIMIT", "0.5")
    with running(request.param, api_token=TOKEN, scheduler_interval=0.5) as running_service:
        yield running_service


def test_the_whole_loop_a_bounce_suppresses_the_address_and_pauses_the_account(
    service: Any, callback: SyncEndpoint, dovecot: DovecotServer
) -> None:
    user, password = dovecot.add_user()
    admin = {"X-API-Token": TOKEN}
    sink = service.smtp_sink
    with httpx.Client(base_url=service.url, timeout=30) as http:
        tenant = {"id": "acme", "name": "Acme", "client_base_url": callback.url}
        key = {"X-API-Token": http.post("/tenant", json=tenant, headers=admin).json()["api_key"]}
        mailbox = {
            "host": dovecot.host,
            "port": dovecot.port,
            "use_tls": False,
            "user": user,
            "password": password,
            "return_path": RETURN_PATH,
            "verp": True,
        }
        for account_id, extra in (("sink", {"bounce_mailbox": mailbox}), ("other", {})):
            account = {"id": account_id, "host": "127.0.0.1", "port": service.smtp_sink_port, **extra}
            assert http.post("/account", json=account, headers=key).status_code == 200

        def send(message_id: str, account_id: str, to: str) -> None:
            body = {
                "messages": [
                    {"id": message_id, "account_id": account_id, "from": "a@acme.test", "to": to, "subject": "Hi"}
                ]
            }
            assert http.post("/commands/add-messages", json=body, headers=key).json()["queued"] == 1

        def record(message_id: str) -> dict[str, Any]:
            listed = http.get("/messages", params={"include_history": "true"}, headers=key).json()["messages"]
            return next(r for r in listed if r["id"] == message_id)

        # 1. Two messages go out; the sink refuses nothing.
        send("m-1", "sink", "gone@example.test")
        send("m-2", "sink", "ok@example.test")
        sent = {m.rcpt_tos[0]: m for m in sink.wait_for(2, timeout=30)}
        assert set(sent) == {"gone@example.test", "ok@example.test"}
        for message in sent.values():  # each with its own VERP return path on the bounce mailbox's address
            assert message.mail_from.startswith("bounces+") and message.mail_from.endswith("@bounce.test")

        # 2. Later the receiving side bounces one: its DSN returns to the VERP address, quoting nothing.
        bounced = sent["gone@example.test"]
        dovecot.append(user, password, dsn(to=bounced.mail_from, recipient="gone@example.test", returned=False))

        # 3. The tenant's callback receives the bounce; GET /messages and /metrics show it; the DSN is processed.
        bounce = wait_until(lambda: next((e for e in callback.entries() if "bounce_ts" in e), None), timeout=30)
        assert (bounce["id"], bounce["bounce_type"], bounce["bounce_code"], bounce["recipient"]) == (
            "m-1",
            "hard",
            "550",
            "gone@example.test",
        )
        assert [e["event_type"] for e in record("m-1")["history"]][-1] == "bounce"
        hard = 'gmp_bounces_total{account_id="sink",tenant_id="acme",type="hard"} 1.0'
        wait_until(lambda: hard in http.get("/metrics").text, timeout=30)  # the counters follow the events
        wait_until(lambda: dovecot.uids(user, password, criteria="UNKEYWORD $GmpProcessed") == [], timeout=30)

        # 4. One hard bounce in two sends crossed the (lowered) bounce-rate limit: the account is paused, and the
        # tenant hears of it in its reports.
        paused = wait_until(lambda: http.get("/tenant/acme", headers=key).json().get("paused_accounts"), timeout=30)
        assert "sink" in paused
        wait_until(lambda: any(r.get("paused_accounts") for r in callback.reports), timeout=30)
        assert 'gmp_account_paused{account_id="sink",tenant_id="acme"} 1.0' in http.get("/metrics").text

        # 5. The address is suppressed: the tenant's next message to it, by another account, fails unsent.
        send("m-3", "other", "gone@example.test")
        failed = wait_until(lambda: (r := record("m-3"))["status"] == "error" and r, timeout=30)
        assert failed["error"] == "suppressed: gone@example.test"
        # 6. The paused account's messages are held, not sent, until an admin resumes it.
        send("m-4", "sink", "ok@example.test")
        wait_until(lambda: record("m-4")["status"] == "suspended", timeout=30)
        assert sink.count == 2
        assert http.post("/account/sink/resume", params={"tenant_id": "acme"}, headers=admin).status_code == 200
        wait_until(lambda: record("m-4")["status"] == "sent", timeout=30)
        assert sink.count == 3
