"""Bad and hostile input: a clear 4xx every time, never a 5xx, and nothing stored or queued.

Each test sends a family of bad requests against one fresh stack and lists every request that was not
refused as expected, so one run names all the gaps at once.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx import Response

from tests.conftest import AccountFactory, TenantFactory
from tests.integration.api_support import add, message, records
from tests.integration.delivery import Runner

pytestmark = pytest.mark.both_storages

HOSTILE_TEXT = [
    'O\'Brien "quoted" `tick`',
    "'; DROP TABLE messages; --",
    "x' OR '1'='1",
    "<script>alert('x')</script><img src=x onerror=alert(1)>",
    "😀 émoji ünïcödé 中文 العربية",
    "${jndi:ldap://evil.test/a} {{7*7}} %s %n",
    "../../etc/passwd",
    "a" * 255,
]


@pytest.fixture
def key(make_tenant: TenantFactory, make_account: AccountFactory) -> dict[str, str]:
    _, headers = make_tenant("acme")
    make_account("acme")
    return headers


@pytest.fixture
def nothing_stored(queues: Runner, key: dict[str, str]) -> Callable[[], None]:
    """A check that no message, payload, queue message or tenant data was added since the tenant was made."""
    tenants_before = queues.stored()["tenants"]

    def check() -> None:
        stored = queues.stored()
        assert stored["messages"] == []
        assert stored["payloads"] == []
        assert queues.queued_total() == 0
        assert stored["tenants"] == tenants_before

    return check


def raw(api: TestClient, method: str, path: str, body: bytes, headers: dict[str, str]) -> Response:
    reply: Response = api.request(method, path, content=body, headers={**headers, "content-type": "application/json"})
    return reply


def message_json(**fields: str) -> bytes:
    """A one-message add-messages body as JSON bytes, each of `fields` given as raw JSON text."""
    values = {name: json.dumps(value) for name, value in message().items()}
    values.update(fields)
    members = ", ".join(f'"{name}": {value}' for name, value in values.items())
    return f'{{"messages": [{{{members}}}]}}'.encode()


def loc_names(reply: Response) -> set[str]:
    detail = reply.json().get("detail")
    if not isinstance(detail, list):
        return set()
    return {str(part) for error in detail for part in error.get("loc", [])}


def expect(
    cases: Iterable[tuple[str, Callable[[], Response]]], low: int, high: int | None = None, *, named: bool = False
) -> None:
    """Send every labelled request; fail listing each one whose status is outside low..high (or, when
    `named`, whose 422 does not name the field its label gives)."""
    wrong = {}
    for label, send in cases:
        reply = send()
        if not (low <= reply.status_code <= (high or low)) or (named and label not in loc_names(reply)):
            wrong[label] = (reply.status_code, reply.text[:300])
    assert not wrong, f"expected {low}..{high or low}: {wrong}"


# ---------------------------------------------------------------- malformed bodies


def test_malformed_json_is_a_422_and_stores_nothing(
    api: TestClient, key: dict[str, str], nothing_stored: Callable[[], None]
) -> None:
    bodies = [b'{"messages": [', b"hello", b"", b'{"messages": []}}', b"{'messages': []}", b'{"messages": [,]}']
    routes = [("POST", "/commands/add-messages"), ("POST", "/account"), ("PUT", "/tenant/acme")]
    expect(
        ((f"{m} {p} {b!r}", partial(raw, api, m, p, b, key)) for b in bodies for m, p in routes),
        422,
    )
    nothing_stored()


def test_bytes_that_are_not_utf8_are_a_400(
    api: TestClient, key: dict[str, str], nothing_stored: Callable[[], None]
) -> None:
    reply = raw(api, "POST", "/commands/add-messages", b'{"messages": [{"id": "\xff\xfe"}]}', key)
    assert reply.status_code == 400
    assert reply.json()["detail"]
    nothing_stored()


def test_a_body_that_is_not_an_object_is_a_422(
    api: TestClient, key: dict[str, str], nothing_stored: Callable[[], None]
) -> None:
    routes = ["/commands/add-messages", "/account", "/commands/delete-messages"]
    bodies = [b"[]", b"null", b'"messages"', b"42", b"true"]
    expect(((f"{p} {b!r}", partial(raw, api, "POST", p, b, key)) for p in routes for b in bodies), 422)
    nothing_stored()


# ---------------------------------------------------------------- wrong types and unknown fields


def test_wrong_types_in_a_message_are_a_422_naming_the_field(
    api: TestClient, key: dict[str, str], nothing_stored: Callable[[], None]
) -> None:
    without_subject = {k: v for k, v in message().items() if k != "subject"}
    cases = [
        ("messages", {"messages": "m-1"}),
        ("to", {"messages": [message(to=42)]}),
        ("id", {"messages": [message(id=7)]}),
        ("priority", {"messages": [message(priority=1.5)]}),
        ("priority", {"messages": [message(priority=[1])]}),
        ("priority", {"messages": [message(priority="urgent")]}),
        ("deferred_ts", {"messages": [message(deferred_ts="tomorrow")]}),
        ("deferred_ts", {"messages": [message(deferred_ts=1.5)]}),
        ("deferred_ts", {"messages": [message(deferred_ts=10**30)]}),
        ("headers", {"messages": [message(headers=["X-A: b"])]}),
        ("attachments", {"messages": [message(attachments={"filename": "a"})]}),
        ("storage_path", {"messages": [message(attachments=[{"filename": "a"}])]}),
        (
            "content_md5",
            {"messages": [message(attachments=[{"filename": "a", "storage_path": "p", "content_md5": "zz"}])]},
        ),
        ("content_type", {"messages": [message(content_type="markdown")]}),
        ("body", {"messages": [message(body=None)]}),
        ("subject", {"messages": [without_subject]}),
        ("subject", {"messages": [message(subject="")]}),
        ("default_priority", {"messages": [message()], "default_priority": "asap"}),
    ]
    for field, body in cases:
        reply = api.post("/commands/add-messages", json=body, headers=key)
        assert reply.status_code == 422, (field, reply.text)
        assert field in loc_names(reply), (field, reply.text)
    nothing_stored()


def test_wrong_types_elsewhere_are_a_422_naming_the_field(
    api: TestClient, key: dict[str, str], nothing_stored: Callable[[], None]
) -> None:
    cases: list[tuple[str, str, str, dict[str, Any]]] = [
        ("port", "POST", "/account", {"id": "a", "host": "h.test", "port": "smtp"}),
        ("port", "POST", "/account", {"id": "a", "host": "h.test", "port": 70000}),
        ("use_tls", "POST", "/account", {"id": "a", "host": "h.test", "port": 25, "use_tls": "maybe"}),
        ("limit_per_minute", "POST", "/account", {"id": "a", "host": "h.test", "port": 25, "limit_per_minute": "ten"}),
        ("limit_behavior", "POST", "/account", {"id": "a", "host": "h.test", "port": 25, "limit_behavior": "drop"}),
        ("id", "POST", "/account", {"id": ["a"], "host": "h.test", "port": 25}),
        ("host", "POST", "/account", {"id": "a", "host": "h.test\r\nX: y", "port": 25}),
        ("active", "PUT", "/tenant/acme", {"active": "yes please"}),
        ("method", "PUT", "/tenant/acme", {"client_auth": {"method": "oauth"}}),
        ("client_base_url", "PUT", "/tenant/acme", {"client_base_url": "javascript:alert(1)"}),
        ("client_sync_path", "PUT", "/tenant/acme", {"client_sync_path": "no-slash"}),
        ("rate_limits", "PUT", "/tenant/acme", {"rate_limits": [1, 2]}),
        ("ids", "POST", "/commands/delete-messages", {"ids": "m-1"}),
        ("ids", "POST", "/commands/delete-messages", {"ids": [1, 2]}),
        ("ids", "POST", "/commands/delete-messages", {"ids": [""]}),
        ("older_than_seconds", "POST", "/commands/cleanup-messages", {"older_than_seconds": "old"}),
        ("older_than_seconds", "POST", "/commands/cleanup-messages", {"older_than_seconds": -1}),
    ]
    for field, method, path, body in cases:
        reply = api.request(method, path, json=body, headers=key)
        assert reply.status_code == 422, (field, body, reply.text)
        assert field in loc_names(reply), (field, body, reply.text)
    nothing_stored()
    assert api.get("/tenant/acme", headers=key).json()["client_auth"] == {"method": "none"}


def test_unknown_fields_are_a_422_naming_them(
    api: TestClient, admin: dict[str, str], key: dict[str, str], nothing_stored: Callable[[], None]
) -> None:
    attachment = {"filename": "a", "storage_path": "p"}
    cases: list[tuple[str, str, str, dict[str, Any], dict[str, str]]] = [
        ("prioritty", "POST", "/commands/add-messages", {"messages": [], "prioritty": 1}, key),
        ("sender", "POST", "/commands/add-messages", {"messages": [message(sender="x@y.test")]}, key),
        ("html_body", "POST", "/commands/add-messages", {"messages": [message(html_body="<b>hi</b>")]}, key),
        (
            "path",
            "POST",
            "/commands/add-messages",
            {"messages": [message(attachments=[{**attachment, "path": "x"}])]},
            key,
        ),
        (
            "key",
            "POST",
            "/commands/add-messages",
            {"messages": [message(attachments=[{**attachment, "auth": {"key": "k"}}])]},
            key,
        ),
        ("ssl", "POST", "/account", {"id": "a", "host": "h.test", "port": 25, "ssl": True}, key),
        ("callback_url", "POST", "/tenant", {"id": "t2", "callback_url": "https://x.test"}, admin),
        ("nmae", "PUT", "/tenant/acme", {"nmae": "typo"}, key),
        ("secret", "PUT", "/tenant/acme", {"client_auth": {"method": "bearer", "secret": "s"}}, key),
        ("all", "POST", "/commands/delete-messages", {"ids": [], "all": True}, key),
        ("older_than", "POST", "/commands/cleanup-messages", {"older_than": 5}, key),
        ("expires", "POST", "/tenant/acme/api-key", {"expires": 5}, admin),
    ]
    for unknown, method, path, body, headers in cases:
        reply = api.request(method, path, json=body, headers=headers)
        assert reply.status_code == 422, (unknown, reply.text)
        errors = reply.json()["detail"]
        assert any(e["loc"][-1] == unknown and e["type"] == "extra_forbidden" for e in errors), (unknown, errors)
    nothing_stored()
    assert api.get("/status", headers=key).status_code == 200, "the refused api-key call did not rotate the key"


# ---------------------------------------------------------------- hostile but valid text


def test_hostile_but_valid_ids_and_subjects_are_stored_exactly_as_given(
    api: TestClient, key: dict[str, str], queues: Runner
) -> None:
    for text in HOSTILE_TEXT:
        reply = add(api, key, message(text, subject=text, body=text, headers={"X-Note": text}))
        assert reply.status_code == 200, (text, reply.text)
        assert reply.json() == {"ok": True, "queued": 1, "rejected": []}
        (record,) = records(api, key)
        assert record["id"] == text
        assert (record["message"]["subject"], record["message"]["body"]) == (text, text)
        assert record["message"]["headers"] == {"X-Note": text}
        (queued,) = queues.drain(2)
        assert queued["id"] == text
        deleted = api.post("/commands/delete-messages", json={"ids": [text]}, headers=key)
        assert deleted.json()["removed"] == 1, text
    assert records(api, key) == []


def test_a_subject_of_10000_characters_is_accepted_and_one_more_is_not(api: TestClient, key: dict[str, str]) -> None:
    assert add(api, key, message("long", subject="s" * 10_000)).status_code == 200
    reply = add(api, key, message("longer", subject="s" * 10_001))
    assert reply.status_code == 422
    assert "subject" in loc_names(reply)
    assert [r["id"] for r in records(api, key)] == ["long"]


def test_10000_character_identifiers_are_a_4xx(
    api: TestClient, admin: dict[str, str], key: dict[str, str], nothing_stored: Callable[[], None]
) -> None:
    long = "x" * 10_000
    for field in ("id", "account_id", "batch_code", "tenant_id"):
        reply = add(api, key, message(**{field: long}))
        assert reply.status_code == 422, field
        assert field in loc_names(reply), field
    expect(
        [
            ("GET tenant", lambda: api.get(f"/tenant/{long}", headers=admin)),
            ("PUT tenant", lambda: api.put(f"/tenant/{long}", json={"name": "x"}, headers=admin)),
            ("DELETE tenant", lambda: api.delete(f"/tenant/{long}", headers=admin)),
            ("POST api-key", lambda: api.post(f"/tenant/{long}/api-key", headers=admin)),
            ("GET messages", lambda: api.get("/messages", params={"tenant_id": long}, headers=admin)),
            ("DELETE account", lambda: api.delete(f"/account/{long}", headers=key)),
            ("suspend", lambda: api.post("/commands/suspend", params={"batch_code": long}, headers=key)),
            ("delete ids", lambda: api.post("/commands/delete-messages", json={"ids": [long]}, headers=key)),
            ("account id", lambda: api.post("/account", json={"id": long, "host": "h.test", "port": 25}, headers=key)),
        ],
        422,
    )
    nothing_stored()


# ---------------------------------------------------------------- invalid text: surrogates, NUL, line breaks


def test_a_lone_surrogate_inside_a_json_string_is_a_422(
    api: TestClient, admin: dict[str, str], key: dict[str, str], nothing_stored: Callable[[], None]
) -> None:
    in_message = [
        {"id": '"a\\ud800b"'},
        {"subject": '"bad \\ud800"'},
        {"body": '"\\udfff alone"'},
        {"from": '"x\\ud800@acme.test"'},
        {"to": '["a\\ud800@example.test"]'},
        {"cc": '"a\\ud800@example.test"'},
        {"headers": '{"X-A": "\\ud800"}'},
        {"headers": '{"\\ud800": "v"}'},
        {"headers": '{"X-A": {"deep": ["\\ud800"]}}'},
        {"attachments": '[{"filename": "\\ud800.txt", "storage_path": "base64:AA=="}]'},
        {"attachments": '[{"filename": "a", "storage_path": "p", "auth": {"method": "bearer", "token": "\\ud800"}}]'},
        {"batch_code": '"\\ud800"'},
    ]
    cases = [
        (str(fields), lambda fields=fields: raw(api, "POST", "/commands/add-messages", message_json(**fields), key))
        for fields in in_message
    ]
    elsewhere = [
        ("PUT", "/tenant/acme", b'{"name": "\\ud800"}', key),
        ("PUT", "/tenant/acme", b'{"rate_limits": {"hourly": "\\ud800"}}', key),
        ("PUT", "/tenant/acme", b'{"large_file_config": {"\\ud800": 1}}', key),
        ("PUT", "/tenant/acme", b'{"client_auth": {"method": "bearer", "token": "\\ud800"}}', key),
        ("POST", "/account", b'{"id": "a", "host": "h.test", "port": 25, "password": "\\ud800"}', key),
        ("POST", "/account", b'{"id": "\\ud800", "host": "h.test", "port": 25}', key),
        ("POST", "/commands/delete-messages", b'{"ids": ["\\ud800"]}', key),
        ("POST", "/tenant", b'{"id": "t2", "name": "\\udc00"}', admin),
    ]
    cases += [(f"{m} {p} {b!r}", partial(raw, api, m, p, b, h)) for m, p, b, h in elsewhere]
    expect(cases, 422)
    nothing_stored()


def test_line_breaks_or_nul_in_a_header_field_are_a_422_naming_it(
    api: TestClient, key: dict[str, str], nothing_stored: Callable[[], None]
) -> None:
    cases = [
        ("id", "m-1\r\nBcc: victim@example.test"),
        ("id", "m-1\x00"),
        ("subject", "Hello\r\nBcc: victim@example.test"),
        ("subject", "Hello\nX-Spam: no"),
        ("subject", "Hello\x00"),
        ("from", "noreply@acme.test\r\nBcc: victim@example.test"),
        ("reply_to", "support@acme.test\nBcc: victim@example.test"),
        ("return_path", "bounce@acme.test\rX: y"),
        ("message_id", "<id@acme.test>\r\nBcc: victim@example.test"),
        ("to", ["alice@example.test\r\nBcc: victim@example.test"]),
        ("cc", ["carol@example.test\nBcc: victim@example.test"]),
        ("headers", {"X-A\r\nBcc": "victim@example.test"}),
    ]
    for field, value in cases:
        reply = add(api, key, message(**{field: value}))
        assert reply.status_code == 422, (field, reply.text)
        assert field in loc_names(reply), (field, reply.text)
    nothing_stored()


def test_a_bearer_token_with_a_line_break_is_a_422_naming_it(
    api: TestClient, key: dict[str, str], nothing_stored: Callable[[], None]
) -> None:
    # No HTTP header can carry it, and the client library's refusal would quote the token back.
    for token in ("s3cr3t\nX-Evil: 1", "s3cr3t\r\n", "s3cr3t\x00"):
        auth = {"method": "bearer", "token": token}
        attachment = {"filename": "a.pdf", "storage_path": "https://files.example.test/a.pdf", "auth": auth}
        reply = add(api, key, message(attachments=[attachment]))
        assert reply.status_code == 422, reply.text
        assert "token" in loc_names(reply)
        assert "s3cr3t" not in reply.text
        reply = api.put("/tenant/acme", json={"client_auth": auth}, headers=key)
        assert reply.status_code == 422, reply.text
        assert "token" in loc_names(reply)
    nothing_stored()


def test_a_header_that_could_inject_or_break_the_email_rejects_the_message(
    api: TestClient, key: dict[str, str], queues: Runner
) -> None:
    cases = [
        ({"X-Campaign": "spring\r\nBcc: victim@example.test"}, "X-Campaign"),
        ({"X-Campaign": "spring\x00"}, "X-Campaign"),
        ({"Bcc: victim@example.test": "x"}, "Bcc: victim@example.test"),
        ({"X Campaign": "spring"}, "X Campaign"),
        ({"": "spring"}, ""),
        ({"X-Ünïcode": "spring"}, "X-Ünïcode"),
    ]
    for number, (headers, name) in enumerate(cases):
        reply = add(api, key, message(f"evil-{number}", headers=headers))
        assert reply.status_code == 400, (headers, reply.text)
        assert reply.json()["detail"]["rejected"] == [{"id": f"evil-{number}", "reason": f"invalid header: {name}"}]
    assert queues.queued_total() == 0
    assert {r["status"] for r in records(api, key)} == {"error"}


def test_an_address_of_deeply_nested_comments_rejects_the_message_not_the_request(
    api: TestClient, key: dict[str, str], queues: Runner
) -> None:
    # The standard library's address parser recurses once per "(": 997 of them (a 998-character entry)
    # overflowed Python's stack, and the RecursionError was a 500.
    nested = "(" * 997
    for field in ("from", "to", "cc", "bcc", "reply_to", "return_path"):
        reply = add(api, key, message(f"nested-{field}", **{field: nested}))
        assert reply.status_code == 400, (field, reply.text)
        assert reply.json()["detail"]["rejected"] == [{"id": f"nested-{field}", "reason": f"invalid address: {nested}"}]
    assert queues.queued_total() == 0


# ---------------------------------------------------------------- hostile tenant ids


def test_a_tenant_id_that_does_not_exist_is_a_404_naming_it(
    api: TestClient, admin: dict[str, str], nothing_stored: Callable[[], None]
) -> None:
    for tenant_id in ["x' OR '1'='1", "<b>acme</b>", "acme\x00", "😀", "acme; DROP TABLE tenants", "ACME", "acme "]:
        expected = (404, {"detail": f"Tenant '{tenant_id}' not found"})
        replies = [
            api.get("/messages", params={"tenant_id": tenant_id}, headers=admin),
            api.get("/accounts", params={"tenant_id": tenant_id}, headers=admin),
            api.post("/commands/cleanup-messages", params={"tenant_id": tenant_id}, headers=admin),
            api.post("/commands/delete-messages", params={"tenant_id": tenant_id}, json={"ids": ["m"]}, headers=admin),
            add(api, admin, message(tenant_id=tenant_id)),
            api.post("/account", json={"id": "a", "tenant_id": tenant_id, "host": "h.test", "port": 25}, headers=admin),
        ]
        assert [(r.status_code, r.json()) for r in replies] == [expected] * len(replies), tenant_id
    nothing_stored()


def test_creating_a_tenant_with_a_hostile_id_is_a_422(
    api: TestClient, admin: dict[str, str], nothing_stored: Callable[[], None]
) -> None:
    for tenant_id in ["x' OR '1'='1", "<b>acme</b>", "acme\r\nX: y", "acme\n", "😀", "a" * 65, "", "a/b", None, 42]:
        reply = api.post("/tenant", json={"id": tenant_id}, headers=admin)
        assert reply.status_code == 422, tenant_id
        assert "id" in loc_names(reply)
    nothing_stored()


def test_hostile_tenant_ids_in_the_path_are_a_4xx(
    api: TestClient, admin: dict[str, str], nothing_stored: Callable[[], None]
) -> None:
    cases = []
    for tenant_id in ["%27%20OR%201=1", "%3Cscript%3E", "%00", "%ED%A0%80", "..%2F..%2Fetc", "%F0%9F%98%80"]:
        path = f"/tenant/{tenant_id}"
        cases += [
            (f"GET {path}", lambda path=path: api.get(path, headers=admin)),
            (f"PUT {path}", lambda path=path: api.put(path, json={"name": "x"}, headers=admin)),
            (f"DELETE {path}", lambda path=path: api.delete(path, headers=admin)),
            (f"POST {path}/api-key", lambda path=path: api.post(f"{path}/api-key", headers=admin)),
            (f"DELETE {path}/api-key", lambda path=path: api.delete(f"{path}/api-key", headers=admin)),
        ]
    expect(cases, 400, 499)
    nothing_stored()


# ---------------------------------------------------------------- values DynamoDB cannot hold


def test_configuration_blobs_dynamodb_cannot_store_are_a_422(
    api: TestClient, admin: dict[str, str], key: dict[str, str], nothing_stored: Callable[[], None]
) -> None:
    blobs = [
        b'{"hourly": 1e400}',
        b'{"hourly": 100000000000000000000000000000000000000000}',
        b'{"hourly": 1e-200}',
        b'{"": 1}',
        b'{"a": {"": true}}',
        b'{"a": ' * 40 + b"1" + b"}" * 40,
        b'{"a": "' + b"x" * 70_000 + b'"}',
    ]
    cases = []
    for blob in blobs:
        for field in (b"rate_limits", b"large_file_config"):
            label = f"{field.decode()}={blob[:40]!r}"
            body = b'{"' + field + b'": ' + blob + b"}"
            cases.append((label, lambda body=body: raw(api, "PUT", "/tenant/acme", body, key)))
            created = b'{"id": "t2", "' + field + b'": ' + blob + b"}"
            cases.append(("POST " + label, lambda created=created: raw(api, "POST", "/tenant", created, admin)))
    expect(cases, 422)
    nothing_stored()
    assert api.get("/tenant/acme", headers=key).json()["rate_limits"] is None


def test_free_form_configuration_is_stored_and_returned_as_given(
    api: TestClient, admin: dict[str, str], key: dict[str, str]
) -> None:
    config = {"hourly": 100, "ratio": 0.5, "tiers": [1, None, {"x": True}], "note": "ok", "empty": {}}
    reply = api.put("/tenant/acme", json={"large_file_config": config}, headers=key)
    assert reply.status_code == 200
    tenant = api.get("/tenant/acme", headers=key).json()
    assert tenant["large_file_config"] == config


# ---------------------------------------------------------------- query parameters


def test_query_parameters_of_the_wrong_type_are_a_422(
    api: TestClient, admin: dict[str, str], key: dict[str, str]
) -> None:
    expect(
        [
            ("active_only", lambda: api.get("/messages", params={"active_only": "perhaps"}, headers=key)),
            ("include_history", lambda: api.get("/messages", params={"include_history": "2"}, headers=key)),
            ("active_only", lambda: api.get("/tenants", params={"active_only": "nope"}, headers=admin)),
            ("limit", lambda: api.get("/command-log", params={"limit": 0}, headers=admin)),
            ("limit", lambda: api.get("/command-log", params={"limit": "all"}, headers=admin)),
            ("since_ts", lambda: api.get("/command-log", params={"since_ts": -1}, headers=admin)),
            ("until_ts", lambda: api.get("/command-log", params={"until_ts": 10**20}, headers=admin)),
            ("batch_code", lambda: api.post("/commands/suspend", params={"batch_code": "b" * 65}, headers=key)),
        ],
        422,
        named=True,
    )


def test_credentials_too_long_to_encrypt_are_a_422(
    api: TestClient, admin: dict[str, str], key: dict[str, str], nothing_stored: Callable[[], None]
) -> None:
    too_long = {"method": "basic", "user": "u", "token": "t" * 4096, "password": "p" * 4096}
    expect(
        [
            ("PUT client_auth", lambda: api.put("/tenant/acme", json={"client_auth": too_long}, headers=key)),
            ("POST tenant", lambda: api.post("/tenant", json={"id": "t2", "client_auth": too_long}, headers=admin)),
            (
                "POST account",
                lambda: api.post(
                    "/account", json={"id": "a", "host": "h.test", "port": 25, "password": "é" * 2049}, headers=key
                ),
            ),
        ],
        422,
    )
    nothing_stored()
