"""Property-based run of the whole OpenAPI schema against the intake app: never a 5xx, and every
response matches what the schema declares for its operation and status.

One emulated account serves the module (module-scoped), so its state stays bounded by the examples run.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from functions.intake.app import app
from tests.conftest import ADMIN_TOKEN, AwsEnv

# The admin run adds schemathesis' coverage phase (boundary values of every field); the tenant run only fuzzes.
admin_schema = schemathesis.openapi.from_asgi("/openapi.json", app)
tenant_schema = schemathesis.openapi.from_asgi("/openapi.json", app)
tenant_schema.config.phases.coverage.enabled = False
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
BOUNDED = settings(
    max_examples=8,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def tenant_key(module_aws_env: AwsEnv) -> Iterator[str]:
    """A tenant with an account and a few messages to act on; its key."""
    with TestClient(app) as api:
        admin = {"X-API-Token": ADMIN_TOKEN}
        key = api.post("/tenant", json={"id": "acme", "name": "Acme"}, headers=admin).json()["api_key"]
        api.post(
            "/account", json={"id": "smtp", "tenant_id": "acme", "host": "smtp.acme.test", "port": 25}, headers=admin
        )
        messages = [
            {"id": f"m-{n}", "account_id": "smtp", "from": "a@acme.test", "to": "b@example.test", "subject": "Hi"}
            for n in range(3)
        ]
        assert (
            api.post("/commands/add-messages", json={"messages": messages}, headers={"X-API-Token": key}).status_code
            == 200
        )
    yield key


def call_and_check(case: Any, token: str) -> None:
    case.headers = {**(case.headers or {}), "X-API-Token": token}
    response = case.call()
    case.validate_response(response, checks=CHECKS)


@tenant_schema.parametrize()
@BOUNDED
def test_no_request_with_a_tenant_key_gets_a_5xx_or_an_undeclared_response(case: Any, tenant_key: str) -> None:
    call_and_check(case, tenant_key)


@admin_schema.parametrize()
@BOUNDED
def test_no_request_with_the_admin_token_gets_a_5xx_or_an_undeclared_response(case: Any, tenant_key: str) -> None:
    call_and_check(case, ADMIN_TOKEN)
