"""Authentication and tenant scoping, as a client observes them on every route of the API."""

from __future__ import annotations

import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import ADMIN_TOKEN, AccountFactory, TenantFactory
from tests.integration.api_support import INVALID_TOKEN, WRONG_TENANT, add, message
from tests.integration.delivery import Runner

# Every route but /health, /metrics, /docs and /openapi.json: (method, path, request keywords).
TENANT_ROUTES: list[tuple[str, str, dict[str, Any]]] = [
    ("GET", "/status", {}),
    ("POST", "/commands/add-messages", {"json": {"messages": [message()]}}),
    ("GET", "/messages", {}),
    ("POST", "/commands/delete-messages", {"json": {"ids": ["m-1"]}}),
    ("POST", "/commands/cleanup-messages", {"json": {}}),
    ("POST", "/commands/run-now", {}),
    ("POST", "/commands/suspend", {}),
    ("POST", "/commands/activate", {}),
    ("POST", "/account", {"json": {"id": "smtp2", "host": "smtp.example.test", "port": 25}}),
    ("GET", "/accounts", {}),
    ("DELETE", "/account/smtp", {}),
    ("GET", "/tenant/{tenant}", {}),
    ("PUT", "/tenant/{tenant}", {"json": {"name": "Renamed"}}),
]
ADMIN_ROUTES: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/tenant", {"json": {"id": "intruder"}}),
    ("GET", "/tenants", {}),
    ("GET", "/tenants/sync-status", {}),
    ("DELETE", "/tenant/{tenant}", {}),
    ("POST", "/tenant/{tenant}/api-key", {"json": {}}),
    ("DELETE", "/tenant/{tenant}/api-key", {}),
    ("GET", "/command-log", {}),
]
ALL_ROUTES = TENANT_ROUTES + ADMIN_ROUTES

pytestmark = pytest.mark.both_storages


def route_id(route: tuple[str, str, dict[str, Any]]) -> str:
    return f"{route[0]} {route[1]}"


def call(
    api: TestClient, route: tuple[str, str, dict[str, Any]], tenant: str, headers: dict[str, str], **extra: Any
) -> Any:
    method, path, keywords = route
    return api.request(method, path.format(tenant=tenant), headers=headers, **{**keywords, **extra})


@pytest.fixture
def tenant(make_tenant: TenantFactory, make_account: AccountFactory) -> tuple[str, dict[str, str]]:
    tenant_id, key = make_tenant("acme")
    make_account(tenant_id)
    return tenant_id, key


def expect_each(replies: dict[str, Any], status: int, body: dict[str, Any] | None = None) -> None:
    """Assert every reply (by route) has `status` (and `body`), listing every route that does not."""
    wrong = {
        route: (reply.status_code, reply.text[:200])
        for route, reply in replies.items()
        if reply.status_code != status or (body is not None and reply.json() != body)
    }
    assert not wrong, f"expected {status} {body or ''} from every route; these differ: {wrong}"


def test_every_route_refuses_a_call_without_a_token(api: TestClient, tenant: Any) -> None:
    replies = {route_id(r): call(api, r, tenant[0], {}) for r in ALL_ROUTES}
    expect_each(replies, 401, INVALID_TOKEN)


def test_every_route_refuses_an_unknown_token(api: TestClient, tenant: Any) -> None:
    replies = {route_id(r): call(api, r, tenant[0], {"X-API-Token": "not-a-key-" + "x" * 33}) for r in ALL_ROUTES}
    expect_each(replies, 401, INVALID_TOKEN)


@pytest.mark.parametrize("token", ["", " ", ADMIN_TOKEN + "x", ADMIN_TOKEN[:-1], "x" * 5000])
def test_near_misses_of_the_admin_token_are_refused(api: TestClient, tenant: Any, token: str) -> None:
    reply = api.get("/tenants", headers={"X-API-Token": token})
    assert reply.status_code == 401
    assert reply.json() == INVALID_TOKEN


def test_the_token_is_read_from_x_api_token_only(api: TestClient, tenant: Any) -> None:
    assert api.get("/tenants", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).status_code == 401
    assert api.get("/tenants", params={"X-API-Token": ADMIN_TOKEN}).status_code == 401
    assert api.get("/tenants", headers={"x-api-token": ADMIN_TOKEN}).status_code == 200


def test_every_admin_route_is_forbidden_to_a_tenant_key(api: TestClient, tenant: Any) -> None:
    tenant_id, key = tenant
    replies = {route_id(r): call(api, r, tenant_id, key) for r in ADMIN_ROUTES}
    expect_each(replies, 403)
    assert api.get(f"/tenant/{tenant_id}", headers=key).status_code == 200, "the forbidden calls changed nothing"


def test_a_tenant_key_works_on_every_tenant_route_without_naming_its_tenant(api: TestClient, tenant: Any) -> None:
    tenant_id, key = tenant
    replies = {route_id(r): call(api, r, tenant_id, key) for r in TENANT_ROUTES}
    expect_each(replies, 200)


def test_the_admin_token_works_on_every_tenant_route_when_it_names_the_tenant(
    api: TestClient, admin: dict[str, str], tenant: Any
) -> None:
    tenant_id, _ = tenant
    replies = {}
    for method, path, keywords in TENANT_ROUTES:
        keywords = {**keywords}
        if path == "/commands/add-messages":
            keywords["json"] = {"messages": [message(tenant_id=tenant_id)]}
        elif path == "/account":
            keywords["json"] = {**keywords["json"], "tenant_id": tenant_id}
        named = "{tenant}" in path or path in ("/status", "/commands/run-now", "/commands/add-messages", "/account")
        params = {} if named else {"tenant_id": tenant_id}
        replies[f"{method} {path}"] = api.request(
            method, path.format(tenant=tenant_id), headers=admin, params=params, **keywords
        )
    expect_each(replies, 200)


SCOPED_BY_QUERY: list[tuple[str, str, dict[str, Any]]] = [
    ("GET", "/messages", {}),
    ("POST", "/commands/delete-messages", {"json": {"ids": ["m-1"]}}),
    ("POST", "/commands/cleanup-messages", {"json": {}}),
    ("POST", "/commands/suspend", {}),
    ("POST", "/commands/activate", {}),
    ("GET", "/accounts", {}),
    ("DELETE", "/account/smtp", {}),
]


def test_the_admin_token_must_name_the_tenant_on_scoped_routes(
    api: TestClient, admin: dict[str, str], tenant: Any
) -> None:
    replies = {route_id(r): call(api, r, tenant[0], admin) for r in SCOPED_BY_QUERY}
    expect_each(replies, 422)
    assert all("tenant_id" in str(r.json()["detail"]) for r in replies.values())
    assert api.get("/accounts", params={"tenant_id": tenant[0]}, headers=admin).json()["accounts"], "nothing deleted"


def test_the_admin_token_must_name_the_tenant_of_each_message(
    api: TestClient, admin: dict[str, str], tenant: Any, queues: Runner
) -> None:
    reply = add(api, admin, message())
    assert reply.status_code == 422
    assert queues.stored()["messages"] == []


def test_the_admin_token_must_name_the_tenant_of_an_account(
    api: TestClient, admin: dict[str, str], tenant: Any
) -> None:
    reply = api.post("/account", json={"id": "a2", "host": "h.test", "port": 25}, headers=admin)
    assert reply.status_code == 422


@pytest.fixture
def other(make_tenant: TenantFactory, make_account: AccountFactory) -> str:
    tenant_id, _ = make_tenant("globex")
    make_account(tenant_id)
    return tenant_id


NAMING_ANOTHER_TENANT: list[tuple[str, str, dict[str, Any]]] = [
    ("GET", "/messages", {"params": {"tenant_id": "globex"}}),
    ("POST", "/commands/delete-messages", {"params": {"tenant_id": "globex"}, "json": {"ids": ["m-1"]}}),
    ("POST", "/commands/delete-messages", {"json": {"ids": ["m-1"], "tenant_id": "globex"}}),
    ("POST", "/commands/cleanup-messages", {"params": {"tenant_id": "globex"}, "json": {}}),
    ("POST", "/commands/cleanup-messages", {"json": {"tenant_id": "globex", "older_than_seconds": 0}}),
    ("POST", "/commands/suspend", {"params": {"tenant_id": "globex"}}),
    ("POST", "/commands/suspend", {"params": {"tenant_id": "globex", "batch_code": "b1"}}),
    ("POST", "/commands/activate", {"params": {"tenant_id": "globex"}}),
    ("POST", "/commands/activate", {"params": {"tenant_id": "globex", "batch_code": "b1"}}),
    ("POST", "/account", {"json": {"id": "smtp", "tenant_id": "globex", "host": "evil.test", "port": 25}}),
    ("GET", "/accounts", {"params": {"tenant_id": "globex"}}),
    ("DELETE", "/account/smtp", {"params": {"tenant_id": "globex"}}),
    ("GET", "/tenant/globex", {}),
    ("PUT", "/tenant/globex", {"json": {"name": "Owned"}}),
    ("POST", "/commands/add-messages", {"json": {"messages": [message(tenant_id="globex")]}}),
]


def test_a_tenant_key_naming_another_tenant_is_refused_with_401_on_every_route(
    api: TestClient, tenant: Any, other: str, admin: dict[str, str]
) -> None:
    _, key = tenant
    replies = {
        f"{method} {path} {sorted(keywords)}": api.request(method, path, headers=key, **keywords)
        for method, path, keywords in NAMING_ANOTHER_TENANT
    }
    expect_each(replies, 401, WRONG_TENANT)
    theirs = api.get("/tenant/globex", headers=admin).json()
    assert theirs["name"] == "Tenant globex"
    assert theirs["suspended_batches"] == []
    accounts = api.get("/accounts", params={"tenant_id": "globex"}, headers=admin).json()["accounts"]
    assert [(a["id"], a["host"]) for a in accounts] == [("smtp", "smtp.example.test")]
    assert api.get("/messages", params={"tenant_id": "globex"}, headers=admin).json()["messages"] == []


def test_one_message_of_another_tenant_refuses_the_whole_request(
    api: TestClient, tenant: Any, other: str, queues: Runner
) -> None:
    _, key = tenant
    reply = add(api, key, message("mine"), message("theirs", tenant_id="globex"))
    assert reply.status_code == 401
    assert reply.json() == WRONG_TENANT
    assert queues.stored()["messages"] == []
    assert queues.queued_total() == 0


def test_a_tenant_key_naming_a_tenant_that_does_not_exist_is_refused_with_401(api: TestClient, tenant: Any) -> None:
    _, key = tenant
    reply = api.get("/messages", params={"tenant_id": "nobody"}, headers=key)
    assert reply.status_code == 401
    assert reply.json() == WRONG_TENANT


def test_a_tenant_key_may_name_its_own_tenant(api: TestClient, tenant: Any) -> None:
    tenant_id, key = tenant
    assert api.get("/messages", params={"tenant_id": tenant_id}, headers=key).status_code == 200
    assert add(api, key, message(tenant_id=tenant_id)).status_code == 200
    assert api.post("/commands/suspend", params={"tenant_id": tenant_id}, headers=key).status_code == 200
    assert api.post("/commands/activate", params={"tenant_id": tenant_id}, headers=key).status_code == 200


def test_an_expired_key_is_refused_with_401(api: TestClient, make_tenant: TenantFactory) -> None:
    _, key = make_tenant("late", api_key_expires_at=int(time.time()) - 1)
    for path in ("/status", "/messages", "/accounts", "/tenant/late"):
        reply = api.get(path, headers=key)
        assert reply.status_code == 401, path
        assert reply.json() == INVALID_TOKEN


def test_a_key_with_a_future_expiry_works(api: TestClient, make_tenant: TenantFactory) -> None:
    _, key = make_tenant("early", api_key_expires_at=int(time.time()) + 3600)
    assert api.get("/status", headers=key).status_code == 200


def test_a_tenant_key_sees_only_its_own_pending_count(
    api: TestClient, admin: dict[str, str], tenant: Any, other: str
) -> None:
    tenant_id, key = tenant
    assert add(api, admin, message("a", tenant_id=tenant_id)).status_code == 200
    assert add(api, admin, message("b", tenant_id="globex"), message("c", tenant_id="globex")).status_code == 200
    assert api.get("/status", headers=key).json()["pending_messages"] == 1
    assert api.get("/status", headers=admin).json()["pending_messages"] == 3


class _Clock:
    """time.monotonic of mailproxy.secret_cache, moved by hand."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_on_aws_a_rotated_admin_token_takes_over_within_seconds_and_the_old_one_stops(
    api: TestClient, aws_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mailproxy import aws, secret_cache
    from mailproxy.settings import get_settings

    secrets_manager = aws_env.client("secretsmanager")
    arn = secrets_manager.create_secret(Name="admin", SecretString="admin-token-one-" + "x" * 27)["ARN"]
    monkeypatch.setenv("ADMIN_TOKEN_SECRET_ARN", arn)
    monkeypatch.delenv("GMP_API_TOKEN")
    get_settings.cache_clear()
    clock = _Clock()
    monkeypatch.setattr(secret_cache.time, "monotonic", clock)
    reads: list[Any] = []
    aws.client("secretsmanager").meta.events.register(
        "provide-client-params.secrets-manager.GetSecretValue", lambda params, **_: reads.append(params)
    )

    def status(token: str) -> int:
        return api.get("/tenants", headers={"X-API-Token": token}).status_code

    one, two = "admin-token-one-" + "x" * 27, "admin-token-two-" + "y" * 27
    assert [status(one) for _ in range(5)] == [200] * 5
    assert len(reads) == 1  # read once, then cached
    # Unknown tokens cannot make every request a Secrets Manager call: one look per 10 s at most.
    assert [status("guess-" + str(n)) for n in range(20)] == [401] * 20
    assert len(reads) == 1

    secrets_manager.put_secret_value(SecretId=arn, SecretString=two)
    clock.now += 11
    assert status(two) == 200  # presenting the new token re-reads the secret
    assert status(one) == 401  # and the old one stops at once in this container
    assert len(reads) == 2

    # Nobody presents the new token: the old one still stops once the cached copy is 300 s old.
    three = "admin-token-three-" + "z" * 25
    secrets_manager.put_secret_value(SecretId=arn, SecretString=three)
    clock.now += 299
    assert status(two) == 200
    clock.now += 2
    assert status(two) == 401
    assert status(three) == 200
