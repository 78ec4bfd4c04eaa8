"""Request models: priorities, the `from` alias, unknown fields, the limits a client runs into."""

from __future__ import annotations

from typing import Any

import pytest
from mailproxy.models import (
    Account,
    AddMessages,
    Attachment,
    Message,
    Tenant,
    TenantFields,
    is_tenant_id,
    priority_of,
)
from pydantic import ValidationError


def message(**fields: Any) -> dict[str, Any]:
    return {"id": "m-1", "account_id": "smtp", "from": "noreply@acme.test", "to": "a@b.test", "subject": "Hi", **fields}


def error_locations(exc: pytest.ExceptionInfo[ValidationError]) -> set[tuple[Any, ...]]:
    return {tuple(e["loc"]) for e in exc.value.errors()}


@pytest.mark.parametrize(
    ("given", "expected"),
    [(0, 0), (1, 1), (2, 2), (3, 3), (-1, 0), (-1000, 0), (4, 3), (10**12, 3)],
)
def test_integer_priorities_are_clamped_to_0_3(given: int, expected: int) -> None:
    assert priority_of(given) == expected


@pytest.mark.parametrize(
    ("label", "expected"),
    [("immediate", 0), ("high", 1), ("medium", 2), ("low", 3), ("HIGH", 1), ("Low", 3), (" Immediate ", 0)],
)
def test_priority_labels_are_read_in_any_case(label: str, expected: int) -> None:
    assert priority_of(label) == expected


def test_a_missing_priority_takes_the_default() -> None:
    assert priority_of(None) == 2
    assert priority_of(None, 0) == 0


@pytest.mark.parametrize("label", ["urgent", "", "2", "medium-high"])
def test_an_unknown_priority_label_is_refused(label: str) -> None:
    with pytest.raises(ValidationError) as exc:
        Message.model_validate(message(priority=label))
    assert ("priority",) in error_locations(exc)


def test_an_unknown_default_priority_label_is_refused() -> None:
    with pytest.raises(ValidationError) as exc:
        AddMessages.model_validate({"messages": [], "default_priority": "soon"})
    assert ("default_priority",) in error_locations(exc)


def test_the_sender_is_given_as_from_and_stored_as_from() -> None:
    parsed = Message.model_validate(message(**{"from": "Acme <noreply@acme.test>"}))
    assert parsed.from_ == "Acme <noreply@acme.test>"
    payload = parsed.payload()
    assert payload["from"] == "Acme <noreply@acme.test>"
    assert "from_" not in payload


def test_the_payload_keeps_only_the_fields_given_plus_defaults() -> None:
    payload = Message.model_validate(message()).payload()
    assert payload == {
        "id": "m-1",
        "account_id": "smtp",
        "from": "noreply@acme.test",
        "to": "a@b.test",
        "subject": "Hi",
        "body": "",
        "content_type": "plain",
    }


@pytest.mark.parametrize("missing", ["id", "account_id", "from", "to", "subject"])
def test_a_message_without_a_required_field_is_invalid(missing: str) -> None:
    fields = message()
    del fields[missing]
    with pytest.raises(ValidationError) as exc:
        Message.model_validate(fields)
    assert (missing,) in error_locations(exc)


def test_unknown_message_fields_are_refused_by_name() -> None:
    with pytest.raises(ValidationError) as exc:
        Message.model_validate(message(colour="blue", sender="x@y.test"))
    assert error_locations(exc) == {("colour",), ("sender",)}
    assert {e["type"] for e in exc.value.errors()} == {"extra_forbidden"}


@pytest.mark.parametrize(
    ("model", "fields"),
    [
        (Account, {"id": "a", "host": "h", "port": 25, "pasword": "typo"}),
        (Tenant, {"id": "t1", "colour": "blue"}),
        (TenantFields, {"nme": "typo"}),
        (Attachment, {"filename": "a.txt", "storage_path": "base64:AA==", "size": 2}),
        (AddMessages, {"messages": [], "priority": 1}),
    ],
)
def test_every_request_model_refuses_unknown_fields(model: type, fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as exc:
        model.model_validate(fields)  # type: ignore[attr-defined]
    assert "extra_forbidden" in {e["type"] for e in exc.value.errors()}


def test_rate_limits_and_large_file_config_are_accepted_for_compatibility() -> None:
    tenant = Tenant.model_validate({"id": "t1", "rate_limits": {"hourly": 10}, "large_file_config": {"enabled": False}})
    assert tenant.model_dump(exclude_unset=True)["rate_limits"] == {"hourly": 10}
    assert tenant.large_file_config == {"enabled": False}


@pytest.mark.parametrize("field", ["from", "reply_to", "return_path", "message_id"])
def test_single_line_fields_refuse_line_breaks(field: str) -> None:
    with pytest.raises(ValidationError) as exc:
        Message.model_validate(message(**{field: "a@b.test\r\nBcc: victim@x.test"}))
    assert (field,) in error_locations(exc)


def test_a_lone_surrogate_is_refused() -> None:
    with pytest.raises(ValidationError) as exc:
        Message.model_validate(message(subject="bad \ud800 text"))
    assert ("subject",) in error_locations(exc)


def test_ids_are_limited_to_255_characters() -> None:
    Message.model_validate(message(id="x" * 255))
    with pytest.raises(ValidationError):
        Message.model_validate(message(id="x" * 256))
    with pytest.raises(ValidationError):
        Message.model_validate(message(id=""))


def test_recipients_may_be_a_list_or_a_comma_string() -> None:
    assert Message.model_validate(message(to=["a@b.test", "c@d.test"])).to == ["a@b.test", "c@d.test"]
    assert Message.model_validate(message(to="a@b.test, c@d.test")).to == "a@b.test, c@d.test"


@pytest.mark.parametrize("tenant_id", ["t1", "acme_prod-2", "A" * 64])
def test_tenant_ids_of_letters_digits_dash_and_underscore_are_valid(tenant_id: str) -> None:
    assert is_tenant_id(tenant_id)
    Tenant.model_validate({"id": tenant_id})


@pytest.mark.parametrize("tenant_id", ["", "A" * 65, "a b", "a/b", "a'b", "é", "t1\n", "t1;drop"])
def test_other_tenant_ids_are_invalid(tenant_id: str) -> None:
    assert not is_tenant_id(tenant_id)
    with pytest.raises(ValidationError):
        Tenant.model_validate({"id": tenant_id})


def test_client_base_url_must_be_http() -> None:
    TenantFields.model_validate({"client_base_url": "https://app.test"})
    with pytest.raises(ValidationError):
        TenantFields.model_validate({"client_base_url": "ftp://app.test"})


def test_account_port_must_be_a_tcp_port() -> None:
    Account.model_validate({"id": "a", "host": "h", "port": 465})
    for port in (0, 65536, -1):
        with pytest.raises(ValidationError):
            Account.model_validate({"id": "a", "host": "h", "port": port})


def test_limit_behavior_is_defer_or_reject() -> None:
    assert Account.model_validate({"id": "a", "host": "h", "port": 25}).limit_behavior == "defer"
    with pytest.raises(ValidationError):
        Account.model_validate({"id": "a", "host": "h", "port": 25, "limit_behavior": "drop"})


def test_attachment_md5_must_be_32_hex_digits() -> None:
    Attachment.model_validate({"filename": "a", "storage_path": "p", "content_md5": "0" * 32})
    with pytest.raises(ValidationError):
        Attachment.model_validate({"filename": "a", "storage_path": "p", "content_md5": "xyz"})


@pytest.mark.parametrize("field", ["id", "subject"])
def test_ids_and_subjects_are_one_line_because_they_become_headers(field: str) -> None:
    for bad in ("two\r\nlines", "two\nlines", "nul\x00"):
        with pytest.raises(ValidationError) as exc:
            Message.model_validate(message(**{field: bad}))
        assert (field,) in error_locations(exc)


def test_header_values_may_be_any_json_but_not_lone_surrogates() -> None:
    headers = {"X-Count": 3, "X-Flag": True, "X-List": [1, "a"], "X-Map": {"a": None}}
    assert Message.model_validate(message(headers=headers)).headers == headers
    with pytest.raises(ValidationError):
        Message.model_validate(message(headers={"X-Deep": {"a": ["\udc00"]}}))


@pytest.mark.parametrize(
    "config",
    [
        {"": 1},
        {"a": {"": 1}},
        {"a": 10**38},
        {"a": float("inf")},
        {"a": float("nan")},
        {"a": 1e-200},
        {"a": 1e200},
        {"a": "x" * 70_000},
        {"\ud800": 1},
    ],
)
def test_configuration_blobs_must_be_storable_in_dynamodb(config: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        TenantFields.model_validate({"rate_limits": config})
    with pytest.raises(ValidationError):
        TenantFields.model_validate({"large_file_config": config})


def test_configuration_blobs_nested_too_deeply_are_refused() -> None:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(20):
        node["a"] = {}
        node = node["a"]
    with pytest.raises(ValidationError):
        TenantFields.model_validate({"rate_limits": deep})


def test_ordinary_configuration_blobs_are_kept_as_given() -> None:
    config = {"hourly": 100, "ratio": 0.5, "tiers": [1, None, {"x": True}], "zero": 0, "big": 10**37, "tiny": 1e-100}
    assert TenantFields.model_validate({"large_file_config": config}).large_file_config == config


def test_credentials_must_fit_one_kms_encryption() -> None:
    from mailproxy.models import ClientAuth

    ClientAuth.model_validate({"method": "bearer", "token": "t" * 4000})
    with pytest.raises(ValidationError):
        ClientAuth.model_validate({"method": "basic", "token": "t" * 2100, "password": "p" * 2100})
    with pytest.raises(ValidationError):
        ClientAuth.model_validate({"method": "basic", "password": "é" * 1000})  # JSON-escaped: 6 bytes each
    Account.model_validate({"id": "a", "host": "h", "port": 25, "password": "p" * 4096})
    with pytest.raises(ValidationError):
        Account.model_validate({"id": "a", "host": "h", "port": 25, "password": "é" * 2049})
