"""The command log of mutating calls, and the API's own documentation routes."""

from __future__ import annotations

import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import ADMIN_TOKEN, AccountFactory, TenantFactory
from tests.integration.api_support import add, message

pytestmark = pytest.mark.both_storages


def command_log(api: TestClient, admin: dict[str, str], **params: Any) -> dict[str, Any]:
    reply = api.get("/command-log", params=params, headers=admin)
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    return body


def test_every_mutating_call_is_logged_with_its_status_and_reads_are_not(
    api: TestClient, admin: dict[str, str]
) -> None:
    key = {"X-API-Token": api.post("/tenant", json={"id": "acme"}, headers=admin).json()["api_key"]}
    calls: list[tuple[str, str, dict[str, Any], dict[str, str]]] = [
        ("PUT", "/tenant/acme", {"json": {"name": "Acme"}}, key),
        ("POST", "/account", {"json": {"id": "smtp", "host": "smtp.acme.test", "port": 25}}, key),
        ("POST", "/commands/add-messages", {"json": {"messages": [message()]}}, key),
        ("POST", "/commands/add-messages", {"json": {"messages": [message("bad", to=[])]}}, key),
        ("POST", "/commands/delete-messages", {"json": {"ids": ["m-1"]}}, key),
        ("POST", "/commands/cleanup-messages", {"json": {}}, key),
        ("POST", "/commands/suspend", {"params": {"batch_code": "b"}}, key),
        ("POST", "/commands/activate", {"params": {"batch_code": "b"}}, key),
        ("POST", "/commands/run-now", {}, key),
        ("DELETE", "/account/smtp", {}, key),
        ("DELETE", "/account/smtp", {}, key),
        ("POST", "/tenant/acme/api-key", {}, admin),
        ("DELETE", "/tenant/acme/api-key", {}, admin),
        ("DELETE", "/tenant/acme", {}, admin),
    ]
    statuses = []
    for method, path, keywords, headers in calls:
        statuses.append(api.request(method, path, headers=headers, **keywords).status_code)
        api.get("/tenants", headers=admin)  # reads are not logged
    assert statuses == [200, 200, 200, 400, 200, 200, 200, 200, 200, 200, 400, 200, 200, 200]

    log = command_log(api, admin)
    assert log["ok"] is True
    assert log["total"] == 1 + len(calls)
    logged = [(c["endpoint"], c["response_status"], c["tenant_id"]) for c in reversed(log["commands"])]
    expected = [("POST /tenant", 200, "acme")]
    expected += [(f"{m} {p}", s, "acme") for (m, p, _, _), s in zip(calls, statuses, strict=True)]
    assert logged == expected
    for command in log["commands"]:
        assert set(command) == {
            "command_ts",
            "endpoint",
            "tenant_id",
            "payload",
            "response_status",
            "source_ip",
            "request_id",
        }
        assert command["source_ip"] == "testclient"  # Starlette's TestClient's peer address
        assert abs(command["command_ts"] - time.time()) < 120


def test_calls_without_a_valid_token_are_not_logged(api: TestClient, admin: dict[str, str]) -> None:
    api.post("/tenant", json={"id": "intruder"})
    api.post("/tenant", json={"id": "intruder"}, headers={"X-API-Token": "wrong"})
    assert command_log(api, admin)["commands"] == []


def test_the_log_keeps_the_payload_with_every_secret_removed(
    api: TestClient, admin: dict[str, str], make_account: AccountFactory
) -> None:
    secrets = ["callback-token-s3cret", "callback-pass-s3cret", "smtp-pass-s3cret", "attach-token-s3cret"]
    reply = api.post(
        "/tenant",
        json={"id": "acme", "name": "Acme", "client_auth": {"method": "bearer", "token": secrets[0]}},
        headers=admin,
    )
    key = {"X-API-Token": reply.json()["api_key"]}
    api.put(
        "/tenant/acme", json={"client_auth": {"method": "basic", "user": "hook", "password": secrets[1]}}, headers=key
    )
    make_account("acme", user="mailer", password=secrets[2])
    attachment = {
        "filename": "a.pdf",
        "storage_path": "https://files.test/a",
        "auth": {"method": "bearer", "token": secrets[3]},
    }
    add(api, key, message(attachments=[attachment]))
    api.post("/tenant/acme/api-key", headers=admin)

    reply = api.get("/command-log", headers=admin)
    for secret in [*secrets, key["X-API-Token"], ADMIN_TOKEN]:
        assert secret not in reply.text
    payloads = {c["endpoint"]: c["payload"] for c in reply.json()["commands"]}
    assert payloads["POST /tenant"]["name"] == "Acme"
    assert payloads["POST /tenant"]["client_auth"] == {"method": "bearer", "token": "***"}
    assert payloads["POST /account"]["user"] == "mailer"
    assert payloads["POST /account"]["password"] == "***"
    logged_message = payloads["POST /commands/add-messages"]["messages"][0]
    assert logged_message["subject"] == "Hello"
    assert logged_message["attachments"][0]["auth"]["token"] == "***"


def test_the_log_can_be_filtered_by_tenant_and_time_and_limited(
    api: TestClient, admin: dict[str, str], make_tenant: TenantFactory
) -> None:
    _, acme = make_tenant("acme")
    _, globex = make_tenant("globex")
    for _ in range(3):
        api.post("/commands/run-now", headers=acme)
    api.post("/commands/run-now", headers=globex)

    assert command_log(api, admin)["total"] == 6
    only_acme = command_log(api, admin, tenant_id="acme")
    assert only_acme["total"] == 4
    assert {c["tenant_id"] for c in only_acme["commands"]} == {"acme"}
    limited = command_log(api, admin, tenant_id="acme", limit=2)
    # `total` counts the page (as genro's); the rest is behind `next_cursor`.
    assert (len(limited["commands"]), limited["total"]) == (2, 2)
    rest = command_log(api, admin, tenant_id="acme", limit=2, cursor=limited["next_cursor"])
    assert (rest["total"], rest["next_cursor"]) == (2, None)
    now = int(time.time())
    assert command_log(api, admin, since_ts=now + 3600)["total"] == 0
    assert command_log(api, admin, until_ts=now - 3600)["total"] == 0
    assert command_log(api, admin, since_ts=now - 60, until_ts=now + 60)["total"] == 6


def test_the_log_lists_the_newest_call_first(
    api: TestClient, admin: dict[str, str], make_tenant: TenantFactory
) -> None:
    _, key = make_tenant("acme")
    api.put("/tenant/acme", json={"name": "last"}, headers=key)
    commands = command_log(api, admin)["commands"]
    assert [c["endpoint"] for c in commands] == ["PUT /tenant/acme", "POST /tenant"]
    assert commands[0]["command_ts"] >= commands[1]["command_ts"]


def test_the_openapi_schema_and_the_docs_are_public(api: TestClient) -> None:
    schema = api.get("/openapi.json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    for path in (
        "/status",
        "/commands/add-messages",
        "/messages",
        "/commands/delete-messages",
        "/commands/cleanup-messages",
        "/commands/run-now",
        "/commands/suspend",
        "/commands/activate",
        "/account",
        "/accounts",
        "/account/{account_id}",
        "/tenant",
        "/tenants",
        "/tenants/sync-status",
        "/tenant/{tenant_id}",
        "/tenant/{tenant_id}/api-key",
        "/command-log",
    ):
        assert path in paths, path
    docs = api.get("/docs")
    assert docs.status_code == 200
    assert "text/html" in docs.headers["content-type"]


def test_the_openapi_403_names_the_admin_only_fields_a_tenant_key_is_refused(api: TestClient) -> None:
    # PUT /tenant/{id} with a tenant key naming `active` or `rate_limits` is a 403 too, not only an admin route.
    put = api.get("/openapi.json").json()["paths"]["/tenant/{tenant_id}"]["put"]
    forbidden = put["responses"]["403"]["description"]
    assert "active" in forbidden and "rate_limits" in forbidden, forbidden


def test_the_log_stays_readable_whatever_the_request_bodies_held(
    api: TestClient, admin: dict[str, str], make_tenant: TenantFactory
) -> None:
    _, key = make_tenant("acme")
    bodies = [
        b'{"rate_limits": {"a": 1e400}, "name": NaN}',
        b'{"name": "\\ud800"}',
        b'{"rate_limits": {"": {"": 1}}}',
        b'{"rate_limits": ' + b'{"a": ' * 60 + b"1" + b"}" * 60 + b"}",
        b'{"rate_limits": {"a": 100000000000000000000000000000000000000000000}}',
        b"\xff\xfe not json",
        b"[" * 100_000 + b"]" * 100_000,
    ]
    for body in bodies:
        reply = api.put("/tenant/acme", content=body, headers={**key, "content-type": "application/json"})
        assert 400 <= reply.status_code < 500, body[:40]
    log = command_log(api, admin, tenant_id="acme")
    # The two bodies that are not JSON at all are refused before the token is read, so they are not logged.
    assert log["total"] == 1 + 5
    assert [c["response_status"] for c in log["commands"][:5]] == [422] * 5
    assert log["commands"][4]["payload"] == {"rate_limits": {"a": "1e400"}, "name": "NaN"}
    assert log["commands"][3]["payload"] == {"name": "\\ud800"}


def test_rich_replies_match_the_models_the_openapi_schema_declares(
    api: TestClient, admin: dict[str, str], make_account: AccountFactory
) -> None:
    from mailproxy import replies as declared

    created = api.post(
        "/tenant",
        json={
            "id": "acme",
            "name": "Acme",
            "client_base_url": "https://app.acme.test",
            "client_auth": {"method": "basic", "user": "hook", "password": "p"},
            "api_key_expires_at": int(time.time()) + 3600,
            "rate_limits": {"hourly": 5},
        },
        headers=admin,
    )
    declared.KeyReply.model_validate(created.json(), strict=True)
    key = {"X-API-Token": created.json()["api_key"]}
    make_account("acme", password="secret", use_tls=True, limit_per_minute=5, batch_size=10)
    later = int(time.time()) + 3600
    added = add(api, key, message("a", batch_code="b1"), message("b", deferred_ts=later), message("c", to=[]))
    declared.AddMessagesReply.model_validate(added.json(), strict=True)
    add(api, key, message("a", subject="again"))
    suspended = api.post("/commands/suspend", params={"batch_code": "b2"}, headers=key)
    declared.SuspensionReply.model_validate(suspended.json(), strict=True)

    reads: list[tuple[type[Any], str, dict[str, Any], dict[str, str]]] = [
        (declared.StatusReply, "/status", {}, key),
        (declared.MessagesReply, "/messages", {"include_history": "true"}, key),
        (declared.MessagesReply, "/messages", {"active_only": "true"}, key),
        (declared.AccountsReply, "/accounts", {}, key),
        (declared.TenantView, "/tenant/acme", {}, key),
        (declared.TenantsReply, "/tenants", {}, admin),
        (declared.SyncStatusReply, "/tenants/sync-status", {}, admin),
        (declared.CommandLogReply, "/command-log", {}, admin),
    ]
    for model, path, params, headers in reads:
        reply = api.get(path, params=params, headers=headers)
        assert reply.status_code == 200, path
        model.model_validate(reply.json(), strict=True)
    deleted = api.post("/commands/delete-messages", json={"ids": ["a", "zzz"]}, headers=key)
    declared.DeleteMessagesReply.model_validate(deleted.json(), strict=True)
    cleaned = api.post("/commands/cleanup-messages", json={"older_than_seconds": 0}, headers=key)
    declared.CleanupReply.model_validate(cleaned.json(), strict=True)


def test_a_time_window_that_ends_before_it_starts_lists_nothing(api: TestClient, admin: dict[str, str]) -> None:
    reply = api.get("/command-log", params={"since_ts": 2_000_000_000, "until_ts": 1_000_000_000}, headers=admin)
    assert reply.status_code == 200
    assert reply.json()["commands"] == []
