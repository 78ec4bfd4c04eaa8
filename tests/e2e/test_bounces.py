"""The whole bounce loop over both local runtimes (`make run` and `make run-aws`), as a client and an MTA see
it: a message goes out with its VERP return path, the sink refuses nothing, a DSN about it lands in the bounce
mailbox (a real Dovecot), and the tenant's callback receives the bounce; GET /messages and /metrics show it.

The suppression list and the account pause (issue 13, parts 4 and 5) are another branch's: once merged, this
test goes on to the next message being suppressed and the account pausing."""

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
    monkeypatch.setenv("GMP_BOUNCE_INTERVAL", "0.5")  # make run's loop; make run-aws ticks every schedule
    with running(request.param, api_token=TOKEN, scheduler_interval=0.5) as running_service:
        yield running_service


def test_a_dsn_in_the_bounce_mailbox_reaches_the_tenants_callback(
    service: Any, callback: SyncEndpoint, dovecot: DovecotServer
) -> None:
    user, password = dovecot.add_user()
    admin = {"X-API-Token": TOKEN}
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
        account = {"id": "sink", "host": "127.0.0.1", "port": service.smtp_sink_port, "bounce_mailbox": mailbox}
        assert http.post("/account", json=account, headers=key).status_code == 200
        message = {"id": "m-1", "account_id": "sink", "from": "a@acme.test", "to": "gone@example.test", "subject": "Hi"}
        assert http.post("/commands/add-messages", json={"messages": [message]}, headers=key).json()["queued"] == 1

        [sent] = service.smtp_sink.wait_for(1, timeout=30)
        assert sent.mail_from.startswith("bounces+") and sent.mail_from.endswith("@bounce.test")
        wait_until(lambda: any(e.get("sent_ts") for e in callback.entries()))

        # The receiving MTA refuses the address later: its DSN returns to the VERP address, quoting nothing.
        dovecot.append(user, password, dsn(to=sent.mail_from, recipient="gone@example.test", returned=False))

        bounce = wait_until(lambda: next((e for e in callback.entries() if "bounce_ts" in e), None), timeout=30)
        assert bounce["id"] == "m-1"
        assert (bounce["bounce_type"], bounce["bounce_code"], bounce["recipient"]) == (
            "hard",
            "550",
            "gone@example.test",
        )

        listed = http.get("/messages", params={"include_history": "true"}, headers=key).json()["messages"]
        [record] = listed
        assert [e["event_type"] for e in record["history"]][-1] == "bounce"
        metrics = http.get("/metrics").text
        assert 'gmp_bounces_total{account_id="sink",tenant_id="acme",type="hard"} 1.0' in metrics
        assert dovecot.uids(user, password, criteria="UNKEYWORD $GmpProcessed") == []
