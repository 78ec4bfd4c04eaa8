"""Helpers of the API tests: message bodies and the calls every test makes."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from httpx import Response

INVALID_TOKEN = {"detail": "Invalid or missing API token"}
WRONG_TENANT = {"detail": "Token not authorized for this tenant"}


def message(message_id: str = "m-1", /, **fields: Any) -> dict[str, Any]:
    """A valid message for `POST /commands/add-messages` (add `tenant_id` when using the admin token)."""
    return {
        "id": message_id,
        "account_id": "smtp",
        "from": "Acme <noreply@acme.test>",
        "to": ["alice@example.test"],
        "subject": "Hello",
        "body": "Hi Alice",
        **fields,
    }


def add(api: TestClient, headers: dict[str, str], *messages: dict[str, Any], **body: Any) -> Response:
    """POST the messages to /commands/add-messages."""
    reply: Response = api.post("/commands/add-messages", json={"messages": list(messages), **body}, headers=headers)
    return reply


def records(
    api: TestClient, headers: dict[str, str], tenant_id: str | None = None, **params: Any
) -> list[dict[str, Any]]:
    """The tenant's message records from GET /messages (asserting a 200)."""
    if tenant_id is not None:
        params["tenant_id"] = tenant_id
    reply = api.get("/messages", params=params, headers=headers)
    assert reply.status_code == 200, reply.text
    result: list[dict[str, Any]] = reply.json()["messages"]
    return result


def by_id(
    api: TestClient, headers: dict[str, str], tenant_id: str | None = None, **params: Any
) -> dict[str, dict[str, Any]]:
    """The tenant's message records keyed by id."""
    return {r["id"]: r for r in records(api, headers, tenant_id, **params)}


def pending(api: TestClient, headers: dict[str, str]) -> int:
    """`pending_messages` of GET /status for this token."""
    reply = api.get("/status", headers=headers)
    assert reply.status_code == 200, reply.text
    count: int = reply.json()["pending_messages"]
    return count
