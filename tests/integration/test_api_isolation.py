"""No tenant can read or change another tenant's data: tenant B's key tried on every route against tenant A."""

from __future__ import annotations

import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import AccountFactory, TenantFactory
from tests.integration.api_support import WRONG_TENANT, add, message
from tests.integration.delivery import Runner

pytestmark = pytest.mark.both_storages

A = "acme"


def snapshot(queues: Runner, api: TestClient, admin: dict[str, str]) -> dict[str, Any]:
    """Everything of tenant A as stored and as the API shows it."""
    return {
        **queues.stored(A),
        "tenant": api.get(f"/tenant/{A}", headers=admin).json(),
        "accounts": api.get("/accounts", params={"tenant_id": A}, headers=admin).json(),
        "messages": api.get("/messages", params={"tenant_id": A, "include_history": "true"}, headers=admin).json(),
    }


def test_tenant_b_cannot_read_or_change_anything_of_tenant_a(
    api: TestClient, admin: dict[str, str], make_tenant: TenantFactory, make_account: AccountFactory, queues: Runner
) -> None:
    _, a_key = make_tenant(A, client_base_url="https://app.acme.test")
    make_account(A, "a-smtp", password="a-smtp-password")
    _, b_key = make_tenant("globex")
    make_account("globex", "smtp")
    later = int(time.time()) + 3600
    add(api, a_key, message("a-1", account_id="a-smtp"), message("a-2", account_id="a-smtp", deferred_ts=later))
    add(api, a_key, message("a-failed", account_id="a-smtp", to=[]))
    api.post("/commands/suspend", params={"batch_code": "a-batch"}, headers=a_key)
    add(api, a_key, message("a-held", account_id="a-smtp", batch_code="a-batch"))
    queued_before = queues.queued_total()
    before = snapshot(queues, api, admin)

    naming_a: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", "/messages", {"params": {"tenant_id": A}}),
        ("GET", "/messages", {"params": {"tenant_id": A, "active_only": "true", "include_history": "true"}}),
        ("POST", "/commands/add-messages", {"json": {"messages": [message("a-1", tenant_id=A, account_id="a-smtp")]}}),
        ("POST", "/commands/add-messages", {"json": {"messages": [message("new", tenant_id=A, account_id="a-smtp")]}}),
        ("POST", "/commands/delete-messages", {"params": {"tenant_id": A}, "json": {"ids": ["a-1", "a-2"]}}),
        ("POST", "/commands/delete-messages", {"json": {"ids": ["a-1"], "tenant_id": A}}),
        ("POST", "/commands/cleanup-messages", {"params": {"tenant_id": A}, "json": {"older_than_seconds": 0}}),
        ("POST", "/commands/cleanup-messages", {"json": {"tenant_id": A, "older_than_seconds": 0}}),
        ("POST", "/commands/suspend", {"params": {"tenant_id": A}}),
        ("POST", "/commands/activate", {"params": {"tenant_id": A}}),
        ("POST", "/commands/activate", {"params": {"tenant_id": A, "batch_code": "a-batch"}}),
        ("POST", "/account", {"json": {"id": "a-smtp", "tenant_id": A, "host": "evil.test", "port": 25}}),
        ("GET", "/accounts", {"params": {"tenant_id": A}}),
        ("DELETE", "/account/a-smtp", {"params": {"tenant_id": A}}),
        ("GET", f"/tenant/{A}", {}),
        ("PUT", f"/tenant/{A}", {"json": {"client_base_url": "https://evil.test"}}),
        ("PUT", f"/tenant/{A}", {"json": {"active": False}}),
        ("DELETE", f"/tenant/{A}", {}),
        ("POST", f"/tenant/{A}/api-key", {"json": {}}),
        ("DELETE", f"/tenant/{A}/api-key", {}),
        ("POST", "/tenant", {"json": {"id": A, "client_base_url": "https://evil.test"}}),
        ("GET", "/tenants", {}),
        ("GET", "/tenants/sync-status", {}),
        ("GET", "/command-log", {"params": {"tenant_id": A}}),
    ]
    let_through = {}
    for method, path, keywords in naming_a:
        reply = api.request(method, path, headers=b_key, **keywords)
        if reply.status_code not in (401, 403):
            let_through[f"{method} {path} {keywords}"] = (reply.status_code, reply.text[:200])
        elif reply.status_code == 401:
            assert reply.json() == WRONG_TENANT, (method, path)
        for secret in ("a-smtp-password", a_key["X-API-Token"]):
            assert secret not in reply.text
    assert not let_through, f"tenant B's key was not refused: {let_through}"

    # Without naming A, B's key acts on B's own (empty) data: A's ids and account are simply not B's.
    deleted = api.post("/commands/delete-messages", json={"ids": ["a-1", "a-2", "a-held"]}, headers=b_key)
    assert deleted.json() == {"ok": True, "removed": 0, "not_found": ["a-1", "a-2", "a-held"], "unauthorized": []}
    assert api.delete("/account/a-smtp", headers=b_key).status_code == 400
    assert api.post("/commands/activate", params={"batch_code": "a-batch"}, headers=b_key).status_code == 200
    assert api.post("/commands/cleanup-messages", json={"older_than_seconds": 0}, headers=b_key).json()["removed"] == 0
    assert api.get("/messages", headers=b_key).json()["messages"] == []
    assert api.get("/accounts", headers=b_key).json()["accounts"][0]["id"] == "smtp"
    rejected = add(api, b_key, message("a-1", account_id="a-smtp"))
    assert rejected.json()["detail"]["rejected"] == [{"id": "a-1", "reason": "account not found for tenant"}]

    assert snapshot(queues, api, admin) == before
    assert queues.queued_total() == queued_before
    assert api.get("/status", headers=a_key).json()["pending_messages"] == 3


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/commands/delete-messages", {"ids": ["x"]}),
        ("/commands/cleanup-messages", {}),
        ("/suppressions", {"addresses": ["x@example.test"]}),
        ("/large-files", {}),
    ],
)
def test_a_request_naming_two_tenants_is_refused_and_changes_nothing(
    api: TestClient, admin: dict[str, str], make_tenant: TenantFactory, queues: Runner, path: str, body: dict[str, Any]
) -> None:
    make_tenant(A)
    make_tenant("globex")
    before = snapshot(queues, api, admin)
    reply = api.post(path, params={"tenant_id": A}, json={**body, "tenant_id": "globex"}, headers=admin)
    assert reply.status_code == 400, reply.text
    assert reply.json()["detail"] == "tenant_id of the query and of the body differ"
    assert snapshot(queues, api, admin) == before
    assert api.get("/suppressions", params={"tenant_id": "globex"}, headers=admin).json()["suppressions"] == []
