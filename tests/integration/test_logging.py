"""Logs as DESIGN.md "Observability" describes them: JSON or text, the events at their levels, never a secret."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from mailproxy.logs import configure_logging, service_name

from tests.conftest import Storage
from tests.integration.delivery import Delivery, message
from tests.integration.smtp_servers import SMTP_PASSWORD, SMTP_USER, RunningServer, authenticator, smtp_server

pytestmark = pytest.mark.both_storages
BODY = "Distinctive-body-7f3a9c: the quarterly numbers nobody may read in a log"
CALLBACK_TOKEN = "callback-bearer-token-91b2e4"
ATTACHMENT_TOKEN = "attachment-bearer-token-c7d5a1"

Capture = Callable[[str], io.StringIO]


@pytest.fixture
def capture(monkeypatch: pytest.MonkeyPatch) -> Iterator[Capture]:
    """Switch LOG_FORMAT (and LOG_LEVEL=DEBUG), then read what the package's real handler writes."""
    logger = logging.getLogger(service_name())
    streams: list[tuple[logging.StreamHandler[Any], Any]] = []

    def start(log_format: str) -> io.StringIO:
        monkeypatch.setenv("LOG_FORMAT", log_format)
        monkeypatch.setenv("LOG_LEVEL", "DEBUG")
        configure_logging()
        buffer = io.StringIO()
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler):
                streams.append((handler, handler.setStream(buffer)))
        return buffer

    yield start
    for handler, original in reversed(streams):
        handler.setStream(original)
    monkeypatch.setenv("LOG_FORMAT", "json")
    monkeypatch.setenv("LOG_LEVEL", "WARNING")
    configure_logging()


@pytest.fixture
def server() -> Iterator[RunningServer]:
    with smtp_server(auth_required=True, authenticator=authenticator) as running:
        yield running


@pytest.fixture
def delivery(storage: Storage, api: TestClient, admin: dict[str, str], server: RunningServer) -> Delivery:
    """Tenant acme (bearer client_auth) with account smtp that logs in with a password."""
    tenant = {
        "id": "acme",
        "name": "Acme",
        "client_base_url": "http://127.0.0.1:9/",
        "client_auth": {"method": "bearer", "token": CALLBACK_TOKEN},
    }
    reply = api.post("/tenant", json=tenant, headers=admin)
    assert reply.status_code == 200, reply.text
    key = {"X-API-Token": reply.json()["api_key"]}
    account = {"id": "smtp", "host": "127.0.0.1", "port": server.port, "use_tls": False}
    account |= {"user": SMTP_USER, "password": SMTP_PASSWORD, "limit_per_hour": 4}
    assert api.post("/account", json=account, headers=key).status_code == 200
    return Delivery(storage, api, admin, "acme", key)


def full_flow(delivery: Delivery) -> None:
    """Sent, failed 550, deferred 451, rate-limited, attachment failure, and API calls that carry secrets."""
    attachment = {
        "filename": "report.pdf",
        "storage_path": "http://127.0.0.1:9/report.pdf",
        "auth": {"method": "bearer", "token": ATTACHMENT_TOKEN},
    }
    delivery.submit(
        message("m-1", body=BODY),
        message("m-2", to="reject550@example.test", body=BODY),
        message("m-3", to="temp451@example.test", body=BODY),
        message("m-4", body=BODY, attachments=[attachment]),
        message("m-5", body=BODY),
        message("m-6", body=BODY),
    )
    delivery.pump()
    delivery.scheduler()
    # Calls that fail validation or auth with secrets in them.
    delivery.api.post("/account", json={"id": "x", "password": SMTP_PASSWORD, "bogus": 1}, headers=delivery.key)
    delivery.api.get("/status", headers={"X-API-Token": delivery.key["X-API-Token"] + "x"})
    delivery.api.get("/messages", params={"include_history": "true"}, headers=delivery.key)


def test_json_logs_carry_timestamp_level_message_and_the_ids(delivery: Delivery, capture: Capture) -> None:
    out = capture("json")
    delivery.submit(message("m-1"))
    delivery.pump()

    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    [sent] = [line for line in lines if line["message"] == "Message m-1 sent via smtp"]
    assert sent["level"] == "INFO"
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}", sent["timestamp"])
    assert (sent["tenant_id"], sent["account_id"], sent["message_id"]) == ("acme", "smtp", "m-1")


def test_text_format_is_the_guides_line(delivery: Delivery, capture: Capture) -> None:
    out = capture("text")
    delivery.submit(message("m-1"))
    delivery.pump()

    assert re.search(
        r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO     Message m-1 sent via smtp$", out.getvalue(), re.M
    ), out.getvalue()


def test_log_level_hides_what_is_below_it(
    delivery: Delivery, capture: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = capture("text")
    monkeypatch.setenv("LOG_LEVEL", "WARNING")
    configure_logging()
    delivery.submit(message("m-1"), message("m-2", to="temp451@example.test"))
    delivery.pump()

    assert "sent via" not in out.getvalue()
    assert "WARNING  Temporary error for message m-2" in out.getvalue()


def test_each_observability_event_is_logged_at_its_level(delivery: Delivery, capture: Capture) -> None:
    out = capture("json")
    full_flow(delivery)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]

    def level_of(pattern: str) -> set[str]:
        return {line["level"] for line in lines if re.search(pattern, line["message"])}

    assert level_of(r"^Message m-1 sent via smtp$") == {"INFO"}
    assert level_of(r"^Rate limit hit for smtp") == {"WARNING"}
    assert level_of(r"^Temporary error for message m-3: 451") == {"WARNING"}
    assert level_of(r"^Retry 1 of message m-3 scheduled") == {"WARNING"}
    assert level_of(r"^Message m-2 failed: 550") == {"ERROR"}
    assert level_of(r"^Message m-4 failed: Attachment fetch failed for report.pdf") == {"ERROR"}
    for line in lines:
        if line.get("message_id"):
            assert line["tenant_id"] == "acme" and line["account_id"] == "smtp", line


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_no_body_password_or_token_is_ever_logged(
    delivery: Delivery, capture: Capture, caplog: pytest.LogCaptureFixture, admin: dict[str, str], log_format: str
) -> None:
    caplog.set_level(logging.DEBUG, logger=service_name())
    caplog.set_level(logging.INFO)
    out = capture(log_format)
    full_flow(delivery)

    logged = out.getvalue() + "\n" + "\n".join(r.getMessage() + str(r.__dict__) for r in caplog.records)
    assert "Message m-1 sent via smtp" in logged  # the capture did see the flow
    secrets = {
        "body": BODY[:24],
        "SMTP password": SMTP_PASSWORD,
        "callback token": CALLBACK_TOKEN,
        "attachment token": ATTACHMENT_TOKEN,
        "tenant key": delivery.key["X-API-Token"],
        "admin token": admin["X-API-Token"],
    }
    leaked = [name for name, secret in secrets.items() if secret in logged]
    assert not leaked, leaked


def test_the_service_name_comes_from_powertools_service_name(monkeypatch: pytest.MonkeyPatch) -> None:
    from mailproxy.logs import logger

    monkeypatch.delenv("POWERTOOLS_SERVICE_NAME", raising=False)
    assert service_name() == "mail-proxy"
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "mail-proxy-eu")
    monkeypatch.setenv("LOG_FORMAT", "json")
    configure_logging()
    buffer = io.StringIO()
    for handler in logging.getLogger("mail-proxy-eu").handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(buffer)
    logger().warning("named after the service")
    line = json.loads(buffer.getvalue().splitlines()[-1])
    assert (line["service"], line["message"]) == ("mail-proxy-eu", "named after the service")
