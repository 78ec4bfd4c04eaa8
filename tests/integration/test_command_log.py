"""GET /command-log as an incident trail: bounded (retention), paged by cursor, newest first, with the caller's IP."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import sqlite3
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import ADMIN_TOKEN, AwsEnv, Storage, TenantFactory
from tests.integration.delivery import Runner, SqliteRunner
from tests.integration.test_metrics import samples, scrape

pytestmark = pytest.mark.both_storages

DAY = 86400


def page(api: TestClient, admin: dict[str, str], **params: Any) -> dict[str, Any]:
    reply = api.get("/command-log", params=params, headers=admin)
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    return body


def log_entries(tenant_id: str | None, count: int, *, ts: int, endpoint: str = "POST /commands/run-now") -> None:
    """Write `count` entries straight to the log, as the middleware does, all at `ts`."""
    from mailproxy.stores import stores

    for n in range(count):
        stores().commands.log_command(
            ts=ts, endpoint=endpoint, tenant_id=tenant_id, payload={"n": n}, response_status=200, source_ip="192.0.2.1"
        )


def test_pages_walk_the_whole_log_newest_first_without_gaps_or_repeats(api: TestClient, admin: dict[str, str]) -> None:
    now = int(time.time())
    for days_ago in (3, 2, 0):  # three day partitions
        log_entries("acme", 4, ts=now - days_ago * DAY)
    seen: list[dict[str, Any]] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 5}
        if cursor:
            params["cursor"] = cursor
        body = page(api, admin, **params)
        assert body["ok"] is True
        assert body["total"] == len(body["commands"]) <= 5
        seen += body["commands"]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert len(seen) == 12
    stamps = [c["command_ts"] for c in seen]
    assert stamps == sorted(stamps, reverse=True)
    # Within one second the newest call comes first too: payload n was written in order 0..3.
    assert [c["payload"]["n"] for c in seen[:4]] == [3, 2, 1, 0]


def test_a_tenant_filter_reads_that_tenant_only_and_a_window_bounds_the_days(
    api: TestClient, admin: dict[str, str]
) -> None:
    now = int(time.time())
    log_entries("acme", 3, ts=now - DAY)
    log_entries("globex", 3, ts=now - DAY)
    log_entries(None, 2, ts=now)
    assert {c["tenant_id"] for c in page(api, admin, tenant_id="acme")["commands"]} == {"acme"}
    assert page(api, admin, tenant_id="acme")["total"] == 3
    assert page(api, admin)["total"] == 8
    assert page(api, admin, since_ts=now - 60)["total"] == 2
    assert page(api, admin, until_ts=now - 60, tenant_id="globex")["total"] == 3


@pytest.mark.aws_only("counts DynamoDB queries and scans")
def test_a_read_queries_only_what_its_page_needs_and_never_scans(
    api: TestClient, admin: dict[str, str], aws_env: AwsEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mailproxy.adapters.aws.dynamo import ddb
    from mailproxy.adapters.aws.state import COMMAND_LOG_INDEX

    now = int(time.time())
    log_entries("acme", 40, ts=now)
    log_entries("globex", 40, ts=now)
    client = ddb()
    calls: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    for operation in ("query", "scan"):
        original = getattr(client, operation)

        def spy(*args: Any, _name: str = operation, _call: Any = original, **kwargs: Any) -> Any:
            reply = _call(*args, **kwargs)
            calls.append((_name, kwargs, reply))
            return reply

        monkeypatch.setattr(client, operation, spy)
    assert page(api, admin, tenant_id="acme", limit=5)["total"] == 5
    assert page(api, admin, limit=5)["total"] == 5
    # A read of the log: of its index (a tenant's), or of a day's partition of the table (everyone's).
    log_reads = [
        (name, kwargs, reply)
        for name, kwargs, reply in calls
        if kwargs.get("IndexName") == COMMAND_LOG_INDEX or "CMDLOG#" in str(kwargs.get("ExpressionAttributeValues"))
    ]
    # One query per read (two when a read starts within the clock-skew allowance of a UTC midnight).
    assert {name for name, _, _ in log_reads} == {"query"}
    assert 2 <= len(log_reads) <= 4
    for _, kwargs, reply in log_reads:
        assert kwargs["ScanIndexForward"] is False
        assert reply["ScannedCount"] <= 7


@pytest.mark.aws_only("counts the items DynamoDB reads")
def test_a_large_limit_reads_no_further_than_the_page_size_cap(
    api: TestClient, admin: dict[str, str], aws_env: AwsEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    # limit=10000 over entries of up to 64 KB each read every one of them (640 MB, in a 512 MB function with
    # 29 s) although the page stops at MAX_COMMAND_PAGE_BYTES: here, a 10 KB cap over 60 entries of 2 KB.
    from mailproxy.adapters.aws import state
    from mailproxy.adapters.aws.dynamo import ddb

    now = int(time.time())
    for n in range(60):
        state.log_command(
            ts=now, endpoint="POST /x", tenant_id="acme", payload={"n": n, "pad": "x" * 2000}, response_status=200
        )
    import mailproxy.command_log

    monkeypatch.setattr(mailproxy.command_log, "MAX_COMMAND_PAGE_BYTES", 10_000)  # read at each listing
    monkeypatch.setattr(state, "COMMAND_QUERY_PAGE", 10, raising=False)
    client = ddb()
    read: list[int] = []
    original = client.query

    def spy(*args: Any, **kwargs: Any) -> Any:
        reply = original(*args, **kwargs)
        read.append(len(reply.get("Items", [])))
        return reply

    monkeypatch.setattr(client, "query", spy)
    seen: list[int] = []
    cursor = None
    for tenant_id in (None, "acme"):
        seen, cursor = [], None
        while True:
            read.clear()
            params: dict[str, Any] = {"limit": 10_000, "tenant_id": tenant_id, "cursor": cursor}
            body = page(api, admin, **{k: v for k, v in params.items() if v is not None})
            assert 1 <= body["total"] <= 5
            assert sum(read) <= 20, read
            seen += [c["payload"]["n"] for c in body["commands"]]
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert seen == list(range(59, -1, -1))


@pytest.mark.sqlite_only("SQLite's twin of test_a_large_limit_reads_no_further_than_the_page_size_cap")
def test_a_large_limit_pages_by_the_page_size_cap(
    api: TestClient, admin: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mailproxy.adapters.sqlite import commands
    from mailproxy.stores import stores

    now = int(time.time())
    for n in range(60):
        stores().commands.log_command(
            ts=now, endpoint="POST /x", tenant_id="acme", payload={"n": n, "pad": "x" * 2000}, response_status=200
        )
    monkeypatch.setattr(commands, "MAX_COMMAND_PAGE_BYTES", 10_000)
    for tenant_id in (None, "acme"):
        seen: list[int] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 10_000, "tenant_id": tenant_id, "cursor": cursor}
            body = page(api, admin, **{k: v for k, v in params.items() if v is not None})
            assert 1 <= body["total"] <= 5
            seen += [c["payload"]["n"] for c in body["commands"]]
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert seen == list(range(59, -1, -1))


@pytest.mark.parametrize(
    "cursor",
    [
        "not-a-cursor",
        "%%%",
        base64.urlsafe_b64encode(b'{"before": "000000000001#x"}').decode(),
        base64.urlsafe_b64encode(b'{"before": 12}').decode(),
        base64.urlsafe_b64encode(b'["before"]').decode(),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
        "x" * 201,
    ],
)
def test_a_forged_cursor_is_a_400_not_a_500(api: TestClient, admin: dict[str, str], cursor: str) -> None:
    reply = api.get("/command-log", params={"cursor": cursor}, headers=admin)
    assert reply.status_code == (422 if len(cursor) > 200 else 400), reply.text


@pytest.mark.sqlite_only("SQLite's twin of test_entries_expire_after_the_retention_and_older_ones_are_not_shown")
def test_entries_expire_after_the_retention_on_sqlite(
    api: TestClient, admin: dict[str, str], queues: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mailproxy.settings import get_settings
    from mailproxy.stores import stores

    monkeypatch.setenv("GMP_COMMAND_LOG_RETENTION_DAYS", "2")
    get_settings.cache_clear()
    now = int(time.time())
    log_entries("acme", 1, ts=now - 3 * DAY)
    api.post("/tenant", json={"id": "acme"}, headers=admin)
    assert [c["endpoint"] for c in page(api, admin)["commands"]] == ["POST /tenant"]
    stores().service.delete_expired(now)  # the one-machine runtime's sweeper (each write sweeps too)
    assert isinstance(queues, SqliteRunner)
    rows = queues.database().read("SELECT endpoint, expires_at - command_ts AS kept FROM command_log")
    assert [(r["endpoint"], r["kept"]) for r in rows] == [("POST /tenant", 2 * DAY)]


def test_entries_expire_after_the_retention_and_older_ones_are_not_shown(
    api: TestClient, admin: dict[str, str], aws_env: AwsEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mailproxy.settings import get_settings

    from local.ttl import expire_state

    monkeypatch.setenv("GMP_COMMAND_LOG_RETENTION_DAYS", "2")
    get_settings.cache_clear()
    now = int(time.time())
    log_entries("acme", 1, ts=now - 3 * DAY)
    api.post("/tenant", json={"id": "acme"}, headers=admin)
    items = [i for i in aws_env.table_items("STATE_TABLE") if str(i["pk"]).startswith("CMDLOG#")]
    assert sorted(int(i["expires_at"]) - int(i["command_ts"]) for i in items) == [2 * DAY, 2 * DAY]
    assert [c["endpoint"] for c in page(api, admin)["commands"]] == ["POST /tenant"]
    assert expire_state(now) >= 1  # the TTL (played locally by the stack's sweeper) removes it
    assert len([i for i in aws_env.table_items("STATE_TABLE") if str(i["pk"]).startswith("CMDLOG#")]) == 1


def rest_event(method: str, path: str, body: dict[str, Any], source_ip: str) -> dict[str, Any]:
    """An API Gateway REST proxy event, as local/apigw.py and AWS build it."""
    headers = {"X-API-Token": ADMIN_TOKEN, "Content-Type": "application/json", "Host": "api.example.test"}
    return {
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": {"proxy": path.lstrip("/")},
        "stageVariables": None,
        "requestContext": {
            "resourcePath": "/{proxy+}",
            "httpMethod": method,
            "path": f"/prod{path}",
            "stage": "prod",
            "requestId": "req-42",
            "identity": {"sourceIp": source_ip, "userAgent": "test"},
        },
        "body": json.dumps(body),
        "isBase64Encoded": False,
    }


def test_the_callers_source_ip_from_api_gateway_is_recorded(api: TestClient, admin: dict[str, str]) -> None:
    from functions.intake.app import handler

    # Mangum runs on the thread's event loop, as in a Lambda container; an earlier asyncio.run may have unset it.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        response = handler(rest_event("POST", "/tenant", {"id": "acme"}, "203.0.113.9"), None)
    finally:
        asyncio.set_event_loop(None)
        loop.close()
    assert response["statusCode"] == 200, response
    [command] = page(api, admin)["commands"]
    assert command["source_ip"] == "203.0.113.9"
    assert command["request_id"] == "req-42"  # the requestId of API Gateway's access-log line
    assert command["tenant_id"] == "acme"


def test_an_entry_that_cannot_be_written_is_counted_and_logged_and_the_call_still_answers(
    api: TestClient,
    admin: dict[str, str],
    make_tenant: TenantFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    storage: Storage,
) -> None:
    from botocore.exceptions import ClientError
    from mailproxy.stores import stores

    make_tenant("acme")

    def refused(**entry: Any) -> None:
        if not isinstance(storage, dict):  # SQLite (AwsEnv is a dict)
            raise sqlite3.OperationalError("database is locked")
        raise ClientError(
            {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}}, "PutItem"
        )

    monkeypatch.setattr(stores().commands, "log_command", refused)
    with caplog.at_level(logging.ERROR):
        reply = api.put("/tenant/acme", json={"name": "secret-looking body text"}, headers=admin)
    assert reply.status_code == 200
    values = samples(scrape()["body"])
    assert values[("gmp_command_log_write_failures_total", ())] == 1
    [record] = [r for r in caplog.records if r.getMessage() == "command log entry not stored"]
    command = record.__dict__["command"]
    assert command["endpoint"] == "PUT /tenant/acme"
    assert command["tenant_id"] == "acme"
    assert command["response_status"] == 200
    assert "secret-looking" not in json.dumps(record.__dict__, default=str)  # bodies never go to logs
