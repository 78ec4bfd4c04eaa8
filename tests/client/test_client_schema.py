"""The client's models and routes against the API's own OpenAPI schema: a field or route added, renamed or
removed on either side fails here, so the client cannot drift from the server."""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

import gmp_client
import pytest
from gmp_client import _core
from gmp_client.models import SCHEMAS, TENANT_UPDATE_FIELDS, HealthReply, _Model


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    from mailproxy.api import create_app

    openapi: dict[str, Any] = create_app(documented=True).openapi()
    return openapi


def component(schema: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = schema["components"]["schemas"][name]
    return found


def required_fields(model: type[_Model]) -> set[str]:
    names = {f.name: n for f, n in zip(dataclasses.fields(model), model.api_fields(), strict=True)}  # type: ignore[arg-type]
    return {
        names[f.name]
        for f in dataclasses.fields(model)  # type: ignore[arg-type]
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }


@pytest.mark.parametrize("model", list(SCHEMAS), ids=lambda m: m.__name__)
def test_each_model_has_exactly_the_fields_of_its_schema(schema: dict[str, Any], model: type[_Model]) -> None:
    properties = set(component(schema, SCHEMAS[model])["properties"])
    assert set(model.api_fields()) == properties


@pytest.mark.parametrize("model", list(SCHEMAS), ids=lambda m: m.__name__)
def test_a_model_requires_no_field_the_schema_leaves_optional(schema: dict[str, Any], model: type[_Model]) -> None:
    # A reply model requiring a field the server may omit would fail on a valid reply; a request model
    # requiring an optional field would refuse a valid request.
    required = set(component(schema, SCHEMAS[model]).get("required", []))
    assert required_fields(model) <= required


@pytest.mark.parametrize("model", [m for m in SCHEMAS if m.__name__ in {"Message", "Account", "Tenant", "Attachment"}])
def test_a_request_model_requires_every_field_the_schema_requires(schema: dict[str, Any], model: type[_Model]) -> None:
    required = set(component(schema, SCHEMAS[model]).get("required", []))
    assert required_fields(model) == required


def test_every_reply_schema_of_the_api_has_a_client_model(schema: dict[str, Any]) -> None:
    mirrored = set(SCHEMAS.values())
    # Shapes the client reads without a model of their own: `Ok` (methods answer None), the error shapes
    # (carried by the exceptions), and the request bodies a method builds from its arguments.
    handled_otherwise = {
        "Ok",
        "ErrorReply",
        "HTTPValidationError",
        "ValidationError",
        "AccountsReply",
        "MessagesReply",
        "TenantsReply",
        "AddMessages",
        "AddSuppressions",
        "DeleteMessages",
        "Cleanup",
        "NewApiKey",
        "TenantFields",
        "NewUpload",
    }
    assert set(schema["components"]["schemas"]) - mirrored == handled_otherwise


def test_update_tenant_fields_are_the_schemas(schema: dict[str, Any]) -> None:
    assert set(TENANT_UPDATE_FIELDS) == set(component(schema, "TenantFields")["properties"])


def test_health_reply_has_the_fields_the_health_route_answers() -> None:
    # /health is the MetricsFunction's, outside the intake's schema: its fixed body is the reference.
    from functions.metrics.app import HEALTH_BODY

    assert set(HealthReply.api_fields()) == set(json.loads(HEALTH_BODY))


def every_call() -> list[_core.Call[Any]]:
    """A call of every route, each optional argument set, `ID` for every id."""
    return [
        _core.status(),
        _core.add_messages([], 1),
        _core.list_messages("ID", True, True),
        _core.delete_messages(["a"], "ID"),
        _core.cleanup_messages(1, "ID"),
        _core.run_now(),
        _core.suspend("ID", "b"),
        _core.activate("ID", "b"),
        _core.upsert_account({"id": "a"}),
        _core.list_accounts("ID"),
        _core.delete_account("ID", "ID"),
        _core.create_tenant({"id": "t"}),
        _core.list_tenants(True),
        _core.sync_status(),
        _core.get_tenant("ID"),
        _core.update_tenant("ID", {"name": "n"}),
        _core.delete_tenant("ID"),
        _core.rotate_api_key("ID", 1),
        _core.revoke_api_key("ID"),
        _core.command_log("ID", 1, 2, 3, "c"),
        _core.resume_account("ID", "ID"),
        _core.list_suppressions("ID", 1, "c"),
        _core.add_suppressions(["a@x.test"], "r", "ID"),
        _core.remove_suppression("ID", "ID"),
        _core.create_upload("ID", "f", 1),
    ]


def test_the_client_calls_every_route_of_the_schema_with_every_query_parameter(schema: dict[str, Any]) -> None:
    routes = {
        (method.upper(), re.sub(r"\{[^}]+\}", "ID", path)): {
            p["name"] for p in operation.get("parameters", []) if p["in"] == "query"
        }
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
    }
    # Reached by a mail reader's browser and by the upload form, never with an API token: not the client's.
    for route in (("GET", "/large-files/ID"), ("POST", "/large-files/receive")):
        routes.pop(route)
    called = {(call.method, call.path): set(call.params or {}) for call in every_call()}
    assert called == routes


def test_the_package_exports_the_interface_the_cli_codes_against() -> None:
    for name in (
        "Client",
        "AsyncClient",
        "ApiError",
        "AuthError",
        "ForbiddenError",
        "NotFoundError",
        "ValidationError",
        "ConnectionFailed",
    ):
        assert hasattr(gmp_client, name), name
