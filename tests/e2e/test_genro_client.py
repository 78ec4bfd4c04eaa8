"""genro-mail-proxy 0.6.10's own Python client (`mail_proxy.client.MailProxyClient`, from its wheel, unchanged)
driven method by method against the local stack `make run` starts, delivering to its SMTP sink.

Where a method cannot work by design, the test names the line of API.md that says so and asserts that answer.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from mail_proxy.client import MailProxyClient, connect

from tests.polling import wait_until
from tests.runtimes import RUNTIMES, running

TOKEN = "genro-client-admin-token"
SYNC_INTERVAL = 4  # seconds between heartbeats: short, so a window of a few intervals stays short
SCHEDULER_INTERVAL = 0.5
PDF = b"%PDF-1.4 genro client report"

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", params=RUNTIMES)
def stack(request: pytest.FixtureRequest) -> Iterator[Any]:
    """`make run` (the one-machine runtime) and `make run-aws` (the handlers around moto)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GMP_SYNC_INTERVAL", str(SYNC_INTERVAL))
        with running(request.param, api_token=TOKEN, scheduler_interval=SCHEDULER_INTERVAL) as service:
            yield service


@pytest.fixture(scope="module")
def admin(stack: Any) -> MailProxyClient:
    return MailProxyClient(stack.url, token=TOKEN, name="local")


def http_error(call: Callable[[], Any]) -> requests.Response:
    """The response of a call genro's client raises HTTPError for."""
    with pytest.raises(requests.HTTPError) as caught:
        call()
    response = caught.value.response
    assert response is not None
    return response


def new_tenant(admin: MailProxyClient, stack: Any, tenant_id: str, **fields: Any) -> MailProxyClient:
    """A tenant created with the admin client; a client holding its key (as a tenant's application has)."""
    created = admin.tenants.add({"id": tenant_id, "name": tenant_id.title(), **fields})
    assert created["ok"] is True and len(created["api_key"]) == 43
    return MailProxyClient(stack.url, token=created["api_key"], tenant_id=tenant_id)


def new_account_body(tenant_id: str, account_id: str, port: int, **fields: Any) -> dict[str, Any]:
    """What genro's REPL `new_account()` posts: its AccountCreate form dumped without None, so with its
    defaults `ttl: 300` and `limit_behavior: "defer"` always present."""
    return {
        "id": account_id,
        "tenant_id": tenant_id,
        "host": "127.0.0.1",
        "port": port,
        "use_tls": False,  # the sink speaks plain SMTP
        "ttl": 300,
        "limit_behavior": "defer",
        **fields,
    }


def new_message_body(message_id: str, account_id: str, **fields: Any) -> dict[str, Any]:
    """What genro's REPL `new_message()` posts: its MessageCreate form dumped by field name, so `from_addr`."""
    return {
        "id": message_id,
        "account_id": account_id,
        "from_addr": "Shop <noreply@shop.test>",
        "to": ["alice@example.test"],
        "subject": f"Subject {message_id}",
        "body": f"Body of {message_id}",
        "content_type": "plain",
        "priority": 2,
        **fields,
    }


# ---------------------------------------------------------------------- service and tenants (admin token)


def test_the_admin_checks_the_service_and_manages_tenants(stack: Any, admin: MailProxyClient) -> None:
    assert admin.health() is True
    assert admin.status()["ok"] is True and admin.status()["active"] is True
    assert admin.run_now() == {"ok": True}
    assert repr(admin) == "<MailProxyClient 'local' (connected)>"
    assert connect(stack.url, token=TOKEN).status()["ok"] is True
    # API.md "Authentication": no open mode. genro's health() reads /status, which needs a token.
    assert MailProxyClient(stack.url).health() is False

    new_tenant(admin, stack, "acme", client_base_url="http://127.0.0.1:9", active=False)
    assert admin.tenants.add({"id": "acme", "name": "Acme Corp", "active": False}) == {"ok": True}  # overwrite
    [acme] = [t for t in admin.tenants.list() if t.id == "acme"]
    assert (acme.name, acme.active, acme.client_base_url) == ("Acme Corp", False, None)
    got = admin.tenants.get("acme")
    assert got is not None
    assert (got.client_sync_path, got.client_attachment_path) == ("/mail-proxy/sync", "/mail-proxy/attachments")
    # API.md "Routes": GET /tenant/{id} of a tenant that does not exist is a 404 (genro's get() raises for it).
    assert http_error(lambda: admin.tenants.get("ghost")).status_code == 404
    assert repr(admin.tenants).startswith("<TenantsAPI: ")

    assert admin.tenants.delete("acme") == {"ok": True}
    assert "acme" not in [t.id for t in admin.tenants.list()]


# ---------------------------------------------------------------------- a tenant's whole day (its key)


def test_a_tenant_sends_lists_and_manages_its_messages_with_genros_client(stack: Any, admin: MailProxyClient) -> None:
    assert stack.smtp_sink is not None
    port = stack.smtp_sink_port
    shop = new_tenant(admin, stack, "shop")
    assert shop.health() is True

    # Accounts, as new_account() sends them (ttl included); PEC is refused with a reason.
    assert shop.accounts.add(new_account_body("shop", "sink", port)) == {"ok": True}
    assert shop.accounts.add(new_account_body("shop", "short", port, ttl=60, limit_per_minute=100)) == {"ok": True}
    refused = http_error(
        lambda: shop.accounts.add(new_account_body("shop", "pec", 465, is_pec_account=True, imap_host="imap.pec.test"))
    )
    assert refused.status_code == 422
    assert "PEC accounts are not supported" in refused.json()["detail"][0]["msg"]
    assert [a.id for a in shop.accounts.list()] == ["short", "sink"]
    sink, short = shop.accounts.get("sink"), shop.accounts.get("short")
    assert sink is not None and short is not None
    assert (sink.ttl, sink.use_tls, sink.limit_behavior) == (300, False, "defer")
    assert (short.ttl, short.limit_per_minute) == (60, 100)
    assert shop.accounts.get("pec") is None
    assert repr(shop.accounts) == "<AccountsAPI: 2 accounts>"

    # Messages: priorities, a schedule, a batch held by its suspension, attachments, a rejection.
    held = shop.suspend("shop", batch_code="spring")
    assert (held["suspended_batches"], held["pending_messages"]) == (["spring"], 0)
    wrong_marker = "{MD5:" + hashlib.md5(b"an older version").hexdigest() + "}"  # genro's cache key only
    attachments = [
        {"filename": f"report_{wrong_marker}.pdf", "storage_path": "base64:" + base64.b64encode(PDF).decode()},
        {
            "filename": "notes.txt",
            "storage_path": base64.b64encode(b"plain notes").decode(),
            "fetch_mode": "base64",
            "content_md5": hashlib.md5(b"plain notes").hexdigest(),
        },
    ]
    reply = shop.messages.add(
        [
            new_message_body("welcome", "sink"),
            new_message_body("invoice", "short", priority="immediate", attachments=attachments),
            new_message_body("later", "sink", priority="low", deferred_ts=int(time.time()) + 3600),
            new_message_body("spring-1", "sink", batch_code="spring"),
            new_message_body("lost", "nope", subject="Never sent"),
        ]
    )
    assert reply == {"ok": True, "queued": 4, "rejected": [{"id": "lost", "reason": "account not found for tenant"}]}

    arrived = {m.mail_id: m for m in stack.smtp_sink.wait_for(2, timeout=30)}
    assert sorted(arrived) == ["invoice", "welcome"]
    assert arrived["welcome"].message["From"] == "Shop <noreply@shop.test>"
    files = {part.get_filename(): part.get_content() for part in arrived["invoice"].message.iter_attachments()}
    assert files == {"report.pdf": PDF, "notes.txt": "plain notes"}

    # Every read of the tenant's messages works, the rejected one included (it used to list message: null).
    wait_until(lambda: len(shop.messages.sent()) == 2)
    listed = {m.id: m for m in shop.messages.list()}
    assert {i: m.status for i, m in listed.items()} == {
        "invoice": "sent",
        "welcome": "sent",
        "spring-1": "pending",  # held by its batch's suspension: genro's client has no "suspended"
        "lost": "error",
        "later": "deferred",
    }
    assert {i: m.priority for i, m in listed.items()} == {
        "invoice": 0,
        "welcome": 2,
        "spring-1": 2,
        "lost": 2,
        "later": 3,
    }
    assert (listed["welcome"].from_addr, listed["welcome"].to) == ("Shop <noreply@shop.test>", ["alice@example.test"])
    [lost] = shop.messages.errors()
    assert (lost.id, lost.subject, lost.error, lost.account_id) == (
        "lost",
        "Never sent",
        "account not found for tenant",
        "nope",
    )
    assert [m.id for m in shop.messages.pending()] == ["spring-1"]
    assert [m.id for m in shop.messages.list(active_only=True)] == ["spring-1", "later"]
    got = shop.messages.get("invoice")
    assert got is not None and got.sent_ts is not None and got.subject == "Subject invoice"
    assert shop.messages.get("nothing") is None
    assert shop.stats() == {"total": 5, "pending": 1, "sent": 2, "errors": 1, "accounts": 2}
    assert repr(shop.messages) == "<MessagesAPI: 5 messages>"
    assert shop.status()["pending_messages"] == 2

    # Suspend and activate: the held batch goes out on activation.
    released = shop.activate("shop", batch_code="spring")
    assert released["suspended_batches"] == []
    assert "spring-1" in {m.mail_id for m in stack.smtp_sink.wait_for(3, timeout=30)}
    # The sink has it before the sender has recorded it and closed its batch (which counts it out of pending).
    wait_until(lambda: shop.status()["pending_messages"] == 1)
    assert shop.suspend("shop")["suspended_batches"] == ["*"]
    # API.md "Suspend/activate": one batch of a fully suspended tenant cannot be activated (400).
    assert http_error(lambda: shop.activate("shop", batch_code="spring")).status_code == 400
    assert shop.activate("shop") == {
        "ok": True,
        "tenant_id": "shop",
        "batch_code": None,
        "suspended_batches": [],
        "pending_messages": 1,
    }
    assert shop.run_now() == {"ok": True}

    # Delete: the tenant key implies the tenant. The admin token must name it: API.md "Message" (a scoped
    # route without tenant_id is a 422), and genro's delete() sends none unless given.
    assert shop.messages.delete("later") == {"ok": True, "removed": 1, "not_found": [], "unauthorized": []}
    assert http_error(lambda: admin.messages.delete(["welcome"])).status_code == 422
    assert admin.messages.delete(["welcome", "ghost"], tenant_id="shop") == {
        "ok": True,
        "removed": 1,
        "not_found": ["ghost"],
        "unauthorized": [],
    }
    wait_until(lambda: shop.messages.get("spring-1") is not None and shop.messages.get("spring-1").status == "sent")
    # Cleanup: the tenant has no callback, so its finished messages need no acknowledgement first.
    assert shop.messages.cleanup("shop", older_than_seconds=0) == {"ok": True, "removed": 3}
    assert shop.messages.list() == []
    assert shop.stats()["total"] == 0

    # Accounts: genro's delete() names no tenant, so it works with the tenant's key only (as above: 422).
    assert http_error(lambda: admin.accounts.delete("short")).status_code == 422
    assert shop.accounts.delete("short") == {"ok": True}
    assert [a.id for a in shop.accounts.list()] == ["sink"]

    # API.md "Authentication": a tenant key on an admin-only route is a 403.
    assert http_error(lambda: shop.tenants.list()).status_code == 403
    assert http_error(lambda: shop.tenants.add({"id": "other"})).status_code == 403
    assert shop.tenants.get("shop") is not None
    assert http_error(lambda: shop.tenants.delete("shop")).status_code == 403


# ---------------------------------------------------------------------- a client that keeps answering queued > 0


class QueuedCallback:
    """A tenant's sync endpoint that always answers `queued: 3`, recording when each call came."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, list[dict[str, Any]]]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
                owner.calls.append((time.monotonic(), body.get("delivery_report", [])))
                answer = json.dumps({"ok": True, "queued": 3}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def queued_callback() -> Iterator[QueuedCallback]:
    callback = QueuedCallback()
    yield callback
    callback.server.shutdown()
    callback.server.server_close()


def test_a_callback_that_always_answers_queued_is_called_for_results_and_heartbeats_only(
    stack: Any, admin: MailProxyClient, queued_callback: QueuedCallback
) -> None:
    busy = new_tenant(admin, stack, "busy", client_base_url=queued_callback.url)
    try:
        wait_until(lambda: queued_callback.calls)  # the first heartbeat
        start = queued_callback.calls[0][0]
        window = 3 * SYNC_INTERVAL
        assert busy.accounts.add(new_account_body("busy", "sink", stack.smtp_sink_port)) == {"ok": True}
        busy.messages.add([new_message_body("b-1", "sink")])
        time.sleep(window + 0.5 - (time.monotonic() - start))
    finally:
        admin.tenants.delete("busy")  # the stack outlives this callback

    calls = [(ts - start, report) for ts, report in queued_callback.calls if ts - start <= window + 0.5]
    reported = [e["id"] for _, report in calls for e in report]
    assert reported == ["b-1"]  # its result, as soon as it existed
    heartbeats = [ts for ts, report in calls if not report]
    # One heartbeat per interval (scheduler ticks are 0.5 s: the loop this replaced made ~25 calls here).
    assert len(heartbeats) <= window // SYNC_INTERVAL + 1
    assert len(calls) <= window // SYNC_INTERVAL + 2
