"""Delivery reports as API.md's "Delivery reports" describes them, to a real HTTP callback on loopback.

The sender runs from the queues (Delivery.pump). On AWS the reporter runs from MessagesTable's real stream
(played by the local stack's StreamPoller with the template's filters) and from the schedule event; on
SQLite from the messages' change log and the schedule, as the one-machine runtime runs it.
"""

from __future__ import annotations

import abc
import base64
import http.server
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from mailproxy import clock as service_clock
from mailproxy import report_format, reports

from local.lambda_runtime import LambdaFunction
from local.pollers import PollerContext, StreamPoller, pollers_from_template
from tests.conftest import AwsEnv, Storage
from tests.integration.delivery import Delivery, Runner, SqliteRunner, message
from tests.integration.smtp_servers import RunningServer, free_port

EVENTS = Path(__file__).resolve().parents[2] / "events"
pytestmark = pytest.mark.both_storages
# moto answers the classic streams endpoint; botocore now derives an account-specific one from the ARN.
STREAMS_ENDPOINT = "https://streams.dynamodb.us-east-1.amazonaws.com"


# ---------------------------------------------------------------------- the client's callback


@dataclass
class Call:
    """One request the callback received."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def report(self) -> list[dict[str, Any]]:
        """The delivery_report entries of the call."""
        entries: list[dict[str, Any]] = self.body["delivery_report"]
        return entries


Responder = Callable[[Call], tuple[int, bytes]]


def ok(call: Call) -> tuple[int, bytes]:
    """The default answer: a plain acknowledgement."""
    return 200, b'{"ok": true}'


@dataclass
class Callback:
    """A genro-mail-proxy client's sync endpoint: an http.server on 127.0.0.1 in a thread."""

    port: int
    calls: list[Call] = field(default_factory=list)
    respond: Responder = ok
    server: http.server.ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        """The tenant's client_base_url."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Callback:
        """Listen (again) on the port."""
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                call = Call(self.path, dict(self.headers.items()), json.loads(self.rfile.read(length)))
                owner.calls.append(call)
                status, body = owner.respond(call)
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop listening."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def entries(self, path: str | None = None) -> list[dict[str, Any]]:
        """Every entry received (on one path), in order."""
        return [e for c in self.calls if path is None or c.path == path for e in c.report]

    def reports(self) -> list[Call]:
        """The calls that carried entries (not heartbeats)."""
        return [c for c in self.calls if c.report]

    def heartbeats(self) -> list[Call]:
        """The calls with an empty report."""
        return [c for c in self.calls if not c.report]


@pytest.fixture
def callback() -> Iterator[Callback]:
    running = Callback(free_port()).start()
    yield running
    running.stop()


# ---------------------------------------------------------------------- the service


class Clock:
    """The service's clock, moved by hand (the SMTP servers and the stream keep real time)."""

    def __init__(self) -> None:
        self.now = int(time.time())

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: int) -> None:
        """Let time pass."""
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(service_clock, "now_ts", fake)
    return fake


class Reporter(abc.ABC):
    """The reporter driven by its two triggers: the changes of message records, and the schedule."""

    @abc.abstractmethod
    def stream(self) -> int:
        """Deliver every new change of a message record; how many."""

    @abc.abstractmethod
    def tick(self) -> dict[str, Any]:
        """One scheduled run."""

    @abc.abstractmethod
    def expire(self, now: int) -> int:
        """Retention at `now` (DynamoDB's TTL and the reporter's handling of its removals); messages deleted."""


@dataclass
class AwsReporter(Reporter):
    """The ReporterFunction: MessagesTable's stream through the template's filters, and the schedule event."""

    poller: StreamPoller

    def stream(self) -> int:
        """Deliver every new stream record (through the template's filters); how many."""
        handled = 0
        while count := self.poller.poll_once():
            handled += count
        assert self.poller.discarded == 0
        return handled

    def tick(self) -> dict[str, Any]:
        """One scheduled run through the handler, with the sample schedule event."""
        from functions.reporter.app import handler

        event = json.loads((EVENTS / "schedule.json").read_text())
        result: dict[str, Any] = LambdaFunction.wrap(handler).load()(event, None)
        return result

    def expire(self, now: int) -> int:
        """The TTL as the AWS-fidelity mode plays it on moto (local/ttl.py)."""
        from local.ttl import expire_due

        return expire_due(now)


class SqliteReporter(Reporter):
    """The reporter over SQLite, as the one-machine runtime runs it: the messages' change log in batches
    (dropped once handled, kept to come again when the owed events could not be stored), and the schedule."""

    batch_size = 100  # the stream event source mapping's BatchSize

    def stream(self, *, twice: bool = False) -> int:
        """Hand the logged changes to the reporter, oldest first, until none is left; how many. `twice`: each
        batch is handed over again before it is dropped (a reporter that died before dropping it)."""
        from mailproxy.adapters.sqlite.messages import SqliteMessages
        from mailproxy.report_format import Change
        from mailproxy.stores import stores

        log = stores().messages
        assert isinstance(log, SqliteMessages)
        handled = 0
        while rows := log.changes(self.batch_size):
            changes = [
                Change(r["tenant_id"], r["id"], r["old"], r["new"], r["expired"], r["ts"], str(r["seq"])) for r in rows
            ]
            for _ in range(2 if twice else 1):
                assert reports.handle_changes(changes), "the owed events could not be stored"
            log.drop_changes(rows[-1]["seq"])
            handled += len(rows)
        return handled

    def tick(self) -> dict[str, Any]:
        """One scheduled run."""
        return dict(reports.run_schedule())

    def expire(self, now: int) -> int:
        """Retention as the one-machine runtime runs it: expired records deleted and logged as expired
        changes, which the reporter handles (a message whose report is still owed is put back)."""
        from mailproxy.adapters.sqlite.messages import SqliteMessages
        from mailproxy.stores import stores

        log = stores().messages
        assert isinstance(log, SqliteMessages)
        expired = log.expire(now)
        self.stream()
        return sum(1 for item in expired if log.get_state(str(item["tenant_id"]), str(item["id"])) is None)


@pytest.fixture
def reporter(storage: Storage, monkeypatch: pytest.MonkeyPatch) -> Reporter:
    if not isinstance(storage, dict):  # SQLite (AwsEnv is a dict; see delivery.runner)
        return SqliteReporter()
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB_STREAMS", STREAMS_ENDPOINT)
    resolver = storage.emulator.resolver
    functions = {
        spec.logical_id: LambdaFunction.from_spec(spec, timeout_seconds=60.0, memory_size=256)
        for spec in resolver.template.functions(resolver)
    }
    [poller] = [
        p
        for p in pollers_from_template(functions, PollerContext(resolver))
        if isinstance(p, StreamPoller) and p.function.logical_id == "ReporterFunction"
    ]
    poller.starting_position = "TRIM_HORIZON"  # the table is new: every record since its creation
    poller.maximum_retry_attempts = 0
    poller.batching_window = 0.0  # tests step the stream themselves
    return AwsReporter(poller)


@dataclass
class Service:
    """The API, the sender and the reporter over one storage."""

    env: Storage
    api: TestClient
    admin: dict[str, str]
    smtp_port: int
    reporter: Reporter

    def tenant(self, tenant_id: str, **fields: Any) -> Delivery:
        """A tenant with one account on the loopback SMTP server."""
        reply = self.api.post("/tenant", json={"id": tenant_id, "name": tenant_id, **fields}, headers=self.admin)
        assert reply.status_code == 200, reply.text
        key = {"X-API-Token": reply.json()["api_key"]}
        account = {"id": "smtp", "host": "127.0.0.1", "port": self.smtp_port, "use_tls": False}
        assert self.api.post("/account", json=account, headers=key).status_code == 200
        return Delivery(self.env, self.api, self.admin, tenant_id, key)

    def deliver(self, tenant: Delivery) -> None:
        """Send what is queued, then let the stream reach the reporter."""
        tenant.pump()
        self.reporter.stream()

    def message_item(self, tenant_id: str, message_id: str) -> dict[str, Any] | None:
        """The stored state item of a message."""
        from mailproxy.stores import stores

        return stores().messages.get_state(tenant_id, message_id)

    def sync_status(self, tenant_id: str) -> dict[str, Any]:
        """The tenant's row of GET /tenants/sync-status."""
        reply = self.api.get("/tenants/sync-status", headers=self.admin)
        assert reply.status_code == 200, reply.text
        [row] = [r for r in reply.json()["tenants"] if r["id"] == tenant_id]
        return dict(row)


@pytest.fixture
def service(
    storage: Storage, api: TestClient, admin: dict[str, str], server: RunningServer, reporter: Reporter
) -> Service:
    return Service(storage, api, admin, server.port, reporter)


def bearer(token: str = "cb-token-1") -> dict[str, str]:
    return {"method": "bearer", "token": token}


# ---------------------------------------------------------------------- shape, auth, routing


def test_sent_message_is_reported_once_with_bearer_auth_on_the_default_path(
    service: Service, callback: Callback, clock: Clock
) -> None:
    acme = service.tenant("acme", client_base_url=callback.url, client_auth=bearer())
    acme.submit(message("m-1"))
    service.deliver(acme)

    [call] = callback.calls
    assert call.path == "/mail-proxy/sync"
    assert call.headers["Authorization"] == "Bearer cb-token-1"
    assert call.headers["Content-Type"] == "application/json"
    [entry] = call.report
    assert set(entry) == {"id", "sent_ts"}
    assert entry["id"] == "m-1"
    assert isinstance(entry["sent_ts"], int)
    assert entry["sent_ts"] == acme.records()["m-1"]["sent_ts"]
    history = acme.records()["m-1"]["history"]
    assert [e["event_type"] for e in history] == ["queued", "sent"]
    assert history[0]["reported_ts"] is None
    assert history[1]["reported_ts"] == clock.now

    # The mark-reported write comes back on the stream, and the schedule runs: nothing again.
    service.reporter.stream()
    service.reporter.tick()
    service.reporter.stream()
    assert callback.entries() == [entry]


def test_basic_auth_custom_path_and_the_shape_of_error_and_deferred_entries(
    service: Service, callback: Callback
) -> None:
    auth = {"method": "basic", "user": "sync-user", "password": "s3cret"}
    shop = service.tenant("shop", client_base_url=callback.url + "/", client_sync_path="/hooks/sync", client_auth=auth)
    service.api.post(
        "/account",
        json={"id": "smtp", "host": "127.0.0.1", "port": service.smtp_port, "use_tls": False, "limit_per_minute": 1},
        headers=shop.key,
    )
    shop.submit(message("a-1"), message("a-2"), message("bad", to="not an address"))
    service.deliver(shop)

    assert {c.path for c in callback.calls} == {"/hooks/sync"}
    expected = "Basic " + base64.b64encode(b"sync-user:s3cret").decode()
    assert {c.headers["Authorization"] for c in callback.calls} == {expected}
    entries = {e["id"]: e for e in callback.entries()}
    assert set(entries) == {"a-1", "a-2", "bad"}
    assert set(entries["bad"]) == {"id", "error_ts", "error"}
    assert entries["bad"]["error"].startswith("invalid address")
    sent, deferred = sorted(("a-1", "a-2"), key=lambda i: "sent_ts" not in entries[i])
    assert set(entries[sent]) == {"id", "sent_ts"}
    assert set(entries[deferred]) == {"id", "deferred_ts", "deferred_reason"}
    assert entries[deferred]["deferred_reason"] == "rate_limit"
    # deferred_ts is when the next attempt is due: the start of the next minute.
    assert entries[deferred]["deferred_ts"] % 60 == 0
    assert entries[deferred]["deferred_ts"] > entries[sent]["sent_ts"]
    # Entries go out in event order.
    times = [
        e.get("sent_ts") or e.get("error_ts") or 0 for c in callback.calls for e in c.report if "deferred_ts" not in e
    ]
    assert times == sorted(times)


def test_each_tenant_is_called_on_its_own_path_with_only_its_own_results(service: Service, callback: Callback) -> None:
    one = service.tenant("one", client_base_url=callback.url, client_sync_path="/one/sync", client_auth=bearer("t1"))
    two = service.tenant("two", client_base_url=callback.url, client_sync_path="/two/sync", client_auth=bearer("t2"))
    one.submit(message("x-1"), message("x-2"))
    two.submit(message("x-1"), message("y-1"))
    one.pump()
    service.reporter.stream()

    assert sorted(e["id"] for e in callback.entries("/one/sync")) == ["x-1", "x-2"]
    assert sorted(e["id"] for e in callback.entries("/two/sync")) == ["x-1", "y-1"]
    for call in callback.calls:
        assert call.headers["Authorization"] == ("Bearer t1" if call.path == "/one/sync" else "Bearer t2")
    assert len(callback.reports()) == 2  # one call per tenant for the batch


# ---------------------------------------------------------------------- failures and retries


@pytest.mark.aws_only("replays a DynamoDB stream record")
def test_a_stream_batch_that_comes_back_after_its_call_is_not_reported_again(
    service: Service, callback: Callback
) -> None:
    from mailproxy.adapters.aws.dynamo import to_attr

    from functions.reporter.app import handler

    acme = service.tenant("acme", client_base_url=callback.url)
    acme.submit(message("m-1"))
    service.deliver(acme)
    assert [e["id"] for e in callback.entries()] == ["m-1"]
    # The same record again, as Lambda hands back a batch it could not checkpoint: same time and sequence.
    [acked] = [i for i in service.env.table_items("STATE_TABLE") if i["pk"] == "LEDGER#acme"]
    created, sequence, _ = str(acked["sk"]).split("#")
    item = service.message_item("acme", "m-1")
    assert item is not None
    before = {**item, "status": "sending", "history": item["history"][:-1]}
    record = {
        "eventName": "MODIFY",
        "dynamodb": {
            "Keys": {"tenant_id": {"S": "acme"}, "id": {"S": "m-1"}},
            "NewImage": {k: to_attr(v) for k, v in item.items()},
            "OldImage": {k: to_attr(v) for k, v in before.items()},
            "ApproximateCreationDateTime": int(created),
            "SequenceNumber": sequence.lstrip("0"),
        },
    }
    assert handler({"Records": [record]}, None) == {"batchItemFailures": []}
    service.reporter.tick()
    assert [e["id"] for e in callback.entries()] == ["m-1"]
    assert not [i for i in service.env.table_items("STATE_TABLE") if i["pk"] == "OUTBOX#acme"]


@pytest.mark.sqlite_only("SQLite's twin of test_a_stream_batch_that_comes_back_after_its_call_is_not_reported_again")
def test_a_change_batch_handled_again_before_it_was_dropped_is_not_reported_again(
    service: Service, callback: Callback
) -> None:
    from mailproxy.stores import stores

    assert isinstance(service.reporter, SqliteReporter)
    acme = service.tenant("acme", client_base_url=callback.url)
    acme.submit(message("m-1"))
    acme.pump()
    service.reporter.stream(twice=True)
    service.reporter.tick()
    assert [e["id"] for e in callback.entries()] == ["m-1"]
    assert stores().outbox.chunks("acme") == []


def test_a_failed_call_is_retried_with_the_same_entries_then_never_again(
    service: Service, callback: Callback, clock: Clock
) -> None:
    answers = iter([500])
    callback.respond = lambda call: (next(answers, 200), b'{"ok": true}')
    acme = service.tenant("acme", client_base_url=callback.url)
    acme.submit(message("m-1"), message("m-2"))
    service.deliver(acme)
    [first] = callback.reports()
    assert all(e["reported_ts"] is None for r in acme.records().values() for e in r["history"])

    service.reporter.tick()  # within the backoff: no call
    assert len(callback.reports()) == 1
    clock.advance(report_format.RETRY_BASE_SECONDS + 1)
    service.reporter.tick()
    second = callback.reports()[1]
    assert second.report == first.report

    service.reporter.stream()
    clock.advance(report_format.RETRY_MAX_SECONDS)
    service.reporter.tick()
    service.reporter.stream()
    assert len(callback.reports()) == 2
    assert all(e["reported_ts"] is not None for r in acme.records().values() for e in r["history"][1:])


def test_nothing_is_dropped_while_the_client_is_down_and_all_arrives_once_it_is_up(
    service: Service, clock: Clock
) -> None:
    down = Callback(free_port())
    acme = service.tenant("acme", client_base_url=down.url)
    acme.submit(message("m-1"))
    service.deliver(acme)
    acme.submit(message("m-2"), message("m-3"))
    service.deliver(acme)
    clock.advance(report_format.RETRY_BASE_SECONDS + 1)
    service.reporter.tick()  # still down: backoff doubles

    status = service.sync_status("acme")
    assert status["last_sync_ts"] is None

    down.start()
    try:
        clock.advance(2 * report_format.RETRY_BASE_SECONDS + 1)
        service.reporter.tick()
        assert sorted(e["id"] for e in down.entries()) == ["m-1", "m-2", "m-3"]
        assert len(down.reports()) == 1
        service.reporter.stream()
        clock.advance(report_format.RETRY_MAX_SECONDS)
        service.reporter.tick()
        assert sorted(e["id"] for e in down.entries()) == ["m-1", "m-2", "m-3"]
    finally:
        down.stop()


def test_a_2xx_that_is_not_json_acknowledges_the_entries(service: Service, callback: Callback, clock: Clock) -> None:
    callback.respond = lambda call: (200, b"<html>thanks</html>")
    acme = service.tenant("acme", client_base_url=callback.url)
    acme.submit(message("m-1"))
    service.deliver(acme)
    clock.advance(report_format.RETRY_MAX_SECONDS)
    service.reporter.tick()
    service.reporter.stream()
    assert [e["id"] for e in callback.entries()] == ["m-1"]
    assert acme.records()["m-1"]["history"][-1]["reported_ts"] is not None


# ---------------------------------------------------------------------- the protocol's replies


def test_queued_reply_loop_reports_the_callbacks_own_new_messages_without_waiting(
    service: Service, callback: Callback, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GMP_SYNC_INTERVAL", "3600")
    from mailproxy.settings import get_settings

    get_settings.cache_clear()
    acme = service.tenant("acme", client_base_url=callback.url)
    outbox = [["m-2", "m-3"], ["m-4"]]

    def client_app(call: Call) -> tuple[int, bytes]:
        # A genro-mail-proxy client: each sync pushes what it has queued, with its tenant key.
        if not outbox:
            return 200, json.dumps({"ok": True, "queued": 0}).encode()
        batch = outbox.pop(0)
        acme.submit(*(message(i) for i in batch))
        return 200, json.dumps({"ok": True, "queued": len(batch)}).encode()

    callback.respond = client_app
    acme.submit(message("m-1"))
    for _ in range(3):
        service.deliver(acme)
    ids = [e["id"] for e in callback.entries()]
    assert ids[0] == "m-1" and sorted(ids[1:3]) == ["m-2", "m-3"] and ids[3:] == ["m-4"]
    assert len(callback.reports()) == 3
    assert callback.heartbeats() == []


def test_do_not_disturb_holds_heartbeats_not_events_and_tenant_run_now_overrides_it(
    service: Service, callback: Callback, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GMP_SYNC_INTERVAL", "10")
    from mailproxy.settings import get_settings

    get_settings.cache_clear()
    quiet_until = clock.now + 3600
    callback.respond = lambda call: (200, json.dumps({"ok": True, "next_sync_after": quiet_until}).encode())
    acme = service.tenant("acme", client_base_url=callback.url)
    service.reporter.tick()
    assert len(callback.heartbeats()) == 1

    status = service.sync_status("acme")
    assert status["in_dnd"] is True
    assert status["next_sync_due"] == quiet_until
    assert status["last_sync_ts"] == clock.now

    clock.advance(600)
    service.reporter.tick()
    assert len(callback.heartbeats()) == 1  # no heartbeat inside do-not-disturb
    acme.submit(message("m-1"))
    service.deliver(acme)
    assert [e["id"] for e in callback.entries()] == ["m-1"]  # events still go out

    assert service.api.post("/commands/run-now", headers=acme.key).status_code == 200
    service.reporter.tick()
    assert len(callback.heartbeats()) == 2  # the tenant asked: called now, even in do-not-disturb
    from mailproxy.stores import stores

    assert stores().service.run_now_requests() == {}
    service.reporter.tick()
    assert len(callback.heartbeats()) == 2


def test_admin_run_now_retries_a_tenant_in_backoff_at_once(service: Service, callback: Callback, clock: Clock) -> None:
    answers = iter([503])
    callback.respond = lambda call: (next(answers, 200), b"{}")
    acme = service.tenant("acme", client_base_url=callback.url)
    acme.submit(message("m-1"))
    service.deliver(acme)
    assert len(callback.reports()) == 1

    service.api.post("/commands/run-now", headers=service.admin)
    service.reporter.tick()
    assert [len(c.report) for c in callback.reports()] == [1, 1]
    from mailproxy.stores import stores

    assert stores().service.run_now_requests() == {}


def test_heartbeats_every_interval_to_active_tenants_with_a_url_only(
    service: Service, callback: Callback, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GMP_SYNC_INTERVAL", "300")
    from mailproxy.settings import get_settings

    get_settings.cache_clear()
    service.tenant("live", client_base_url=callback.url, client_sync_path="/live")
    service.tenant("asleep", client_base_url=callback.url, client_sync_path="/asleep", active=False)
    service.tenant("nourl")

    service.reporter.tick()
    assert [(c.path, c.report) for c in callback.calls] == [("/live", [])]
    clock.advance(299)
    service.reporter.tick()
    assert len(callback.calls) == 1
    clock.advance(1)
    service.reporter.tick()
    assert [c.path for c in callback.calls] == ["/live", "/live"]
    assert service.sync_status("live")["next_sync_due"] == clock.now + 300
    assert service.sync_status("asleep")["last_sync_ts"] is None

    # The first heartbeat after a next_sync_after comes exactly then.
    callback.respond = lambda call: (200, json.dumps({"ok": True, "next_sync_after": clock.now + 1000}).encode())
    clock.advance(300)
    service.reporter.tick()
    callback.respond = ok
    clock.advance(999)
    service.reporter.tick()
    assert len(callback.calls) == 3
    clock.advance(1)
    service.reporter.tick()
    assert len(callback.calls) == 4


def test_an_inactive_tenant_still_gets_the_results_it_produced(service: Service, callback: Callback) -> None:
    acme = service.tenant("acme", client_base_url=callback.url, active=False)
    acme.submit(message("held"), message("bad", to="nope"))
    service.deliver(acme)
    service.reporter.tick()
    assert [e["id"] for e in callback.entries()] == ["bad"]
    assert callback.heartbeats() == []


# ---------------------------------------------------------------------- retention


def test_retention_expires_only_fully_reported_messages(
    service: Service, callback: Callback, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GMP_REPORT_RETENTION_SECONDS", "100")
    from mailproxy.settings import get_settings

    get_settings.cache_clear()
    acme = service.tenant("acme", client_base_url=callback.url)
    down = service.tenant("down", client_base_url=f"http://127.0.0.1:{free_port()}")
    acme.submit(message("done"), message("later", deferred_ts=int(time.time()) + 3600))
    down.submit(message("unreported"))
    service.deliver(acme)

    done = service.message_item("acme", "done")
    unreported = service.message_item("down", "unreported")
    assert done is not None and unreported is not None and unreported["status"] == "sent"
    # The retention runs from the result; a message whose report is still owed is kept past it.
    assert done["expires_at"] == done["sent_ts"] + 100
    assert "expires_at" not in (service.message_item("acme", "later") or {})
    sent_ts = int(done["sent_ts"])  # the other one may have been sent in the second before or after
    expire_due = service.reporter.expire

    assert expire_due(sent_ts + 99) == 0
    assert expire_due(sent_ts + 100) == 1  # "unreported", expired or not, is kept
    assert service.message_item("acme", "done") is None
    assert service.message_item("acme", "later") is not None
    assert service.message_item("down", "unreported") is not None
    listed = service.api.get("/messages", headers=acme.key).json()["messages"]
    assert [(r["id"], r["message"]["subject"]) for r in listed] == [("later", "Subject later")]
    assert expire_due(sent_ts + 10**6) == 0
    assert service.message_item("down", "unreported") is not None


@pytest.mark.aws_only("plays a TTL removal on the DynamoDB stream")
def test_a_ttl_removal_on_the_stream_deletes_a_pinned_payload(service: Service, callback: Callback) -> None:
    from mailproxy.adapters.aws.messages import delete_state

    acme = service.tenant("acme", client_base_url=callback.url)
    acme.submit(message("m-1", deferred_ts=int(time.time()) + 3600))  # parked: its payload is stored on its own
    assert [i["id"] for i in service.env.table_items("PAYLOADS_TABLE")] == ["m-1"]
    assert delete_state("acme", "m-1") is not None  # as TTL would
    record = {
        "eventName": "REMOVE",
        "userIdentity": {"type": "Service", "principalId": "dynamodb.amazonaws.com"},
        "dynamodb": {"Keys": {"tenant_id": {"S": "acme"}, "id": {"S": "m-1"}}, "SequenceNumber": "1"},
    }
    from functions.reporter.app import handler

    assert handler({"Records": [record]}, None) == {"batchItemFailures": []}
    assert service.env.table_items("PAYLOADS_TABLE") == []


@pytest.mark.sqlite_only("SQLite's twin of test_a_ttl_removal_on_the_stream_deletes_a_pinned_payload")
def test_an_expiry_on_the_change_log_deletes_a_pinned_payload(service: Service, queues: Runner) -> None:
    from mailproxy.adapters.sqlite.messages import SqliteMessages
    from mailproxy.stores import stores

    acme = service.tenant("acme")  # no callback: nothing is owed
    acme.submit(message("m-1"))
    assert service.api.post("/commands/suspend", headers=acme.key).status_code == 200
    acme.pump()  # held: its payload is pinned, as a hold can outlast a pack
    assert service.api.post("/commands/activate", headers=acme.key).status_code == 200
    service.deliver(acme)
    sent = service.message_item("acme", "m-1")
    assert sent is not None and sent["status"] == "sent"
    assert isinstance(queues, SqliteRunner)
    pinned = "SELECT id FROM payloads WHERE tenant_id = 'acme' AND pack = ''"
    assert [r["id"] for r in queues.database().read(pinned)] == ["m-1"]
    log = stores().messages
    assert isinstance(log, SqliteMessages)
    assert [g["id"] for g in log.expire(int(sent["expires_at"]))] == ["m-1"]
    service.reporter.stream()
    assert service.message_item("acme", "m-1") is None
    assert queues.database().read(pinned) == []  # pinned payloads never expire: the removal deletes them


@pytest.mark.aws_only("plays a TTL removal on the DynamoDB stream")
def test_a_ttl_removal_of_a_message_still_owed_puts_it_back_and_reports_it_once(
    service: Service, callback: Callback
) -> None:
    from mailproxy.adapters.aws.dynamo import to_attr
    from mailproxy.adapters.aws.messages import delete_state

    from functions.reporter.app import handler

    acme = service.tenant("acme", client_base_url=f"http://127.0.0.1:{free_port()}")  # down for now
    acme.submit(message("m-1"))
    service.deliver(acme)
    old = delete_state("acme", "m-1")  # as TTL would, before the client was ever reachable
    assert old is not None and old["status"] == "sent"
    record = {
        "eventName": "REMOVE",
        "userIdentity": {"type": "Service", "principalId": "dynamodb.amazonaws.com"},
        "dynamodb": {
            "Keys": {"tenant_id": {"S": "acme"}, "id": {"S": "m-1"}},
            "OldImage": {k: to_attr(v) for k, v in old.items()},
            "SequenceNumber": "9" * 30,
        },
    }
    assert handler({"Records": [record]}, None) == {"batchItemFailures": []}
    item = service.message_item("acme", "m-1")
    assert item is not None and item["status"] == "sent" and item["expires_at"] >= old["expires_at"]

    def outbox() -> list[str]:
        return sorted(str(i["sk"]) for i in service.env.table_items("STATE_TABLE") if i["pk"] == "OUTBOX#acme")

    owed = outbox()
    service.reporter.stream()  # the put-back comes through the stream: nothing new is owed
    assert outbox() == owed and len(owed) == 1
    reply = service.api.put("/tenant/acme", json={"client_base_url": callback.url}, headers=service.admin)
    assert reply.status_code == 200, reply.text
    service.api.post("/commands/run-now", headers=acme.key)
    service.reporter.tick()
    assert [e["id"] for e in callback.entries()] == ["m-1"]


@pytest.mark.sqlite_only("SQLite's twin of test_a_ttl_removal_of_a_message_still_owed_puts_it_back_and_reports_it_once")
def test_an_expiry_of_a_message_still_owed_puts_it_back_and_reports_it_once(
    service: Service, callback: Callback
) -> None:
    from mailproxy.adapters.sqlite.messages import SqliteMessages
    from mailproxy.stores import stores

    acme = service.tenant("acme", client_base_url=f"http://127.0.0.1:{free_port()}")  # down for now
    acme.submit(message("m-1"))
    service.deliver(acme)
    old = service.message_item("acme", "m-1")
    assert old is not None and old["status"] == "sent"
    log = stores().messages
    assert isinstance(log, SqliteMessages)
    assert [g["id"] for g in log.expire(int(old["expires_at"]))] == ["m-1"]  # the retention, before any report
    service.reporter.stream()  # the expiry on the change log: put back
    item = service.message_item("acme", "m-1")
    assert item is not None and item["status"] == "sent" and item["expires_at"] >= old["expires_at"]

    owed = stores().outbox.chunks("acme")
    service.reporter.stream()  # the put-back comes through the change log: nothing new is owed
    assert stores().outbox.chunks("acme") == owed and len(owed) == 1
    reply = service.api.put("/tenant/acme", json={"client_base_url": callback.url}, headers=service.admin)
    assert reply.status_code == 200, reply.text
    service.api.post("/commands/run-now", headers=acme.key)
    service.reporter.tick()
    assert [e["id"] for e in callback.entries()] == ["m-1"]


def test_cleanup_messages_agrees_with_retention(service: Service, callback: Callback) -> None:
    acme = service.tenant("acme", client_base_url=callback.url)
    down = service.tenant("down", client_base_url=f"http://127.0.0.1:{free_port()}")
    acme.submit(message("done"))
    down.submit(message("unreported"))
    service.deliver(acme)
    for tenant in (acme, down):
        reply = service.api.post("/commands/cleanup-messages", json={"older_than_seconds": 0}, headers=tenant.key)
        assert reply.status_code == 200
    assert service.message_item("acme", "done") is None
    assert service.message_item("down", "unreported") is not None


# ---------------------------------------------------------------------- sample event


def test_the_sample_stream_event_reports_its_sent_message(
    aws_env: AwsEnv, service: Service, callback: Callback
) -> None:
    from mailproxy.adapters.aws.dynamo import to_attr

    event = json.loads((EVENTS / "dynamodb-stream.json").read_text())
    service.tenant("acme", client_base_url=callback.url)
    image = event["Records"][0]["dynamodb"]["NewImage"]
    aws_env.client("dynamodb").put_item(TableName=aws_env["MESSAGES_TABLE"], Item=image)
    from functions.reporter.app import handler

    assert handler(event, None) == {"batchItemFailures": []}
    assert callback.entries() == [{"id": "m-1", "sent_ts": 1795867215}]
    item = service.message_item("acme", "m-1")
    assert item is not None and to_attr(item["status"]) == image["status"]
    reply = service.api.get("/messages", params={"tenant_id": "acme", "include_history": "true"}, headers=service.admin)
    [record] = reply.json()["messages"]
    assert record["history"][1]["reported_ts"] is not None


def test_a_callback_that_always_answers_queued_is_not_called_at_every_tick(
    service: Service, callback: Callback, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GMP_SYNC_INTERVAL", "60")
    from mailproxy.settings import get_settings

    get_settings.cache_clear()
    callback.respond = lambda call: (200, json.dumps({"ok": True, "queued": 7}).encode())
    acme = service.tenant("acme", client_base_url=callback.url)

    service.reporter.tick()
    for _ in range(59):  # a minute of scheduler ticks, one a second
        clock.advance(1)
        service.reporter.tick()
    assert len(callback.heartbeats()) == 1

    acme.submit(message("m-1"))
    service.deliver(acme)  # a new result: reported at once, without waiting for the heartbeat
    assert [e["id"] for e in callback.entries()] == ["m-1"]
    assert len(callback.calls) == 2

    clock.advance(1)
    service.reporter.tick()
    assert len(callback.calls) == 2
    clock.advance(59)  # a full interval after the last call
    service.reporter.tick()
    assert len(callback.heartbeats()) == 2
    assert service.sync_status("acme")["next_sync_due"] == clock.now + 60
