"""SMTP accounts: upsert, listing without passwords, deletion."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.conftest import AccountFactory, TenantFactory
from tests.integration.delivery import Runner

PASSWORD = "smtp-pa55word-never-shown"

pytestmark = pytest.mark.both_storages


def accounts(api: TestClient, headers: dict[str, str], tenant_id: str | None = None) -> list[dict[str, object]]:
    params = {"tenant_id": tenant_id} if tenant_id else {}
    reply = api.get("/accounts", params=params, headers=headers)
    assert reply.status_code == 200, reply.text
    assert reply.json()["ok"] is True
    listed: list[dict[str, object]] = reply.json()["accounts"]
    return listed


def test_an_account_is_created_and_listed_with_its_settings(api: TestClient, make_tenant: TenantFactory) -> None:
    _, key = make_tenant("acme")
    body = {
        "id": "primary",
        "host": "smtp.acme.test",
        "port": 465,
        "user": "mailer",
        "password": PASSWORD,
        "use_tls": True,
        "limit_per_minute": 10,
        "limit_per_hour": 100,
        "limit_per_day": 0,
        "limit_behavior": "reject",
        "batch_size": 50,
    }
    reply = api.post("/account", json=body, headers=key)
    assert reply.status_code == 200
    assert reply.json() == {"ok": True}
    (shown,) = accounts(api, key)
    expected = {k: v for k, v in body.items() if k != "password"}
    assert {k: shown[k] for k in expected} == expected
    assert shown["tenant_id"] == "acme"
    assert shown["has_password"] is True
    assert "password" not in shown


def test_an_account_without_optional_fields_gets_the_defaults(api: TestClient, make_tenant: TenantFactory) -> None:
    _, key = make_tenant("acme")
    api.post("/account", json={"id": "plain", "host": "smtp.acme.test", "port": 25}, headers=key)
    (shown,) = accounts(api, key)
    assert shown["limit_behavior"] == "defer"
    assert shown["use_tls"] is None
    assert shown["user"] is None
    assert shown["has_password"] is False


def test_posting_the_same_account_id_replaces_it(api: TestClient, make_tenant: TenantFactory) -> None:
    _, key = make_tenant("acme")
    api.post(
        "/account", json={"id": "smtp", "host": "old.acme.test", "port": 25, "user": "u", "password": "p"}, headers=key
    )
    created_at = accounts(api, key)[0]["created_at"]
    api.post("/account", json={"id": "smtp", "host": "new.acme.test", "port": 587}, headers=key)
    (shown,) = accounts(api, key)
    assert (shown["host"], shown["port"], shown["user"], shown["has_password"]) == ("new.acme.test", 587, None, False)
    assert shown["created_at"] == created_at


def test_the_password_appears_in_no_response_and_not_in_clear_in_the_table(
    api: TestClient, admin: dict[str, str], make_tenant: TenantFactory, queues: Runner
) -> None:
    _, key = make_tenant("acme")
    replies = [
        api.post(
            "/account",
            json={"id": "smtp", "host": "smtp.acme.test", "port": 587, "user": "u", "password": PASSWORD},
            headers=key,
        )
    ]
    replies += [
        api.get("/accounts", headers=key),
        api.get("/accounts", params={"tenant_id": "acme"}, headers=admin),
        api.get("/tenant/acme", headers=key),
        api.get("/tenants", headers=admin),
        api.get("/command-log", headers=admin),
    ]
    assert all(r.status_code == 200 for r in replies)
    assert not [r.request.url for r in replies if PASSWORD in r.text]
    assert PASSWORD not in queues.raw_text()


def test_accounts_are_listed_per_tenant(
    api: TestClient, admin: dict[str, str], make_tenant: TenantFactory, make_account: AccountFactory
) -> None:
    _, acme = make_tenant("acme")
    _, globex = make_tenant("globex")
    make_account("acme", "a1")
    make_account("acme", "a2")
    make_account("globex", "g1")
    assert [a["id"] for a in accounts(api, acme)] == ["a1", "a2"]
    assert [a["id"] for a in accounts(api, globex)] == ["g1"]
    assert [a["id"] for a in accounts(api, admin, "globex")] == ["g1"]


def test_two_tenants_may_use_the_same_account_id(
    api: TestClient, make_tenant: TenantFactory, make_account: AccountFactory
) -> None:
    _, acme = make_tenant("acme")
    _, globex = make_tenant("globex")
    make_account("acme", "smtp", host="smtp.acme.test")
    make_account("globex", "smtp", host="smtp.globex.test")
    assert accounts(api, acme)[0]["host"] == "smtp.acme.test"
    assert accounts(api, globex)[0]["host"] == "smtp.globex.test"


def test_deleting_an_account_removes_it(
    api: TestClient, make_tenant: TenantFactory, make_account: AccountFactory
) -> None:
    _, key = make_tenant("acme")
    make_account("acme", "a1")
    make_account("acme", "a2")
    reply = api.delete("/account/a1", headers=key)
    assert reply.status_code == 200
    assert reply.json() == {"ok": True}
    assert [a["id"] for a in accounts(api, key)] == ["a2"]


def test_an_account_whose_id_holds_a_slash_is_deleted(
    api: TestClient, make_tenant: TenantFactory, make_account: AccountFactory
) -> None:
    _, key = make_tenant("acme")
    make_account("acme", "eu/smtp")
    make_account("acme", "eu")
    reply = api.delete("/account/eu%2Fsmtp", headers=key)
    assert reply.status_code == 200, reply.text
    assert [a["id"] for a in accounts(api, key)] == ["eu"]


def test_deleting_an_account_that_does_not_exist_answers_400(
    api: TestClient, admin: dict[str, str], make_tenant: TenantFactory, make_account: AccountFactory
) -> None:
    _, key = make_tenant("acme")
    make_account("acme", "a1")
    api.delete("/account/a1", headers=key)
    again = api.delete("/account/a1", headers=key)
    assert again.status_code == 400
    assert again.json() == {"detail": "Account 'a1' not found for tenant 'acme'"}
    never = api.delete("/account/never", params={"tenant_id": "acme"}, headers=admin)
    assert never.status_code == 400
    too_long = api.delete("/account/" + "x" * 100, headers=key)
    assert too_long.status_code == 400


def test_deleting_another_tenants_account_by_id_answers_400_and_keeps_it(
    api: TestClient, admin: dict[str, str], make_tenant: TenantFactory, make_account: AccountFactory
) -> None:
    _, acme = make_tenant("acme")
    make_tenant("globex")
    make_account("globex", "theirs")
    reply = api.delete("/account/theirs", headers=acme)
    assert reply.status_code == 400
    assert [a["id"] for a in accounts(api, admin, "globex")] == ["theirs"]


def test_an_account_for_a_tenant_that_does_not_exist_answers_404(
    api: TestClient, admin: dict[str, str], queues: Runner
) -> None:
    reply = api.post("/account", json={"id": "a", "tenant_id": "ghost", "host": "h.test", "port": 25}, headers=admin)
    assert reply.status_code == 404
    assert reply.json() == {"detail": "Tenant 'ghost' not found"}
    assert queues.stored()["tenants"] == []


def test_unknown_account_fields_are_refused_by_name(api: TestClient, make_tenant: TenantFactory) -> None:
    _, key = make_tenant("acme")
    reply = api.post(
        "/account", json={"id": "a", "host": "h.test", "port": 25, "pasword": "typo", "tls": True}, headers=key
    )
    assert reply.status_code == 422
    named = {tuple(e["loc"])[-1] for e in reply.json()["detail"]}
    assert named == {"pasword", "tls"}
    assert accounts(api, key) == []


def test_ttl_is_accepted_stored_and_listed_as_genro_mail_proxy_sends_it(
    api: TestClient, make_tenant: TenantFactory
) -> None:
    _, key = make_tenant("acme")
    for account_id, ttl in (("short", 60), ("none", None), ("zero", 0)):
        reply = api.post(
            "/account", json={"id": account_id, "host": "smtp.acme.test", "port": 25, "ttl": ttl}, headers=key
        )
        assert reply.status_code == 200, reply.text
    api.post("/account", json={"id": "absent", "host": "smtp.acme.test", "port": 25}, headers=key)
    assert {a["id"]: a["ttl"] for a in accounts(api, key)} == {"absent": 300, "none": 300, "short": 60, "zero": 0}


def test_a_negative_ttl_is_a_422_naming_it(api: TestClient, make_tenant: TenantFactory) -> None:
    _, key = make_tenant("acme")
    reply = api.post("/account", json={"id": "smtp", "host": "smtp.acme.test", "port": 25, "ttl": -1}, headers=key)
    assert reply.status_code == 422
    assert reply.json()["detail"][0]["loc"] == ["body", "ttl"]


def test_pec_fields_are_refused_saying_pec_is_not_supported(api: TestClient, make_tenant: TenantFactory) -> None:
    _, key = make_tenant("acme")
    body = {
        "id": "pec",
        "host": "smtp.pec.test",
        "port": 465,
        "is_pec_account": True,
        "imap_host": "imap.pec.test",
        "imap_folder": "INBOX",
    }
    reply = api.post("/account", json=body, headers=key)
    assert reply.status_code == 422
    [error] = reply.json()["detail"]
    assert error["msg"] == "PEC accounts are not supported (fields is_pec_account, imap_host, imap_folder)"
    assert error["type"] == "pec_not_supported"
    assert accounts(api, key) == []


def test_pec_fields_left_empty_ask_for_nothing_and_are_not_stored(api: TestClient, make_tenant: TenantFactory) -> None:
    _, key = make_tenant("acme")
    # genro-mail-proxy's AccountPayload dumped whole: every PEC field present, null or false.
    empty = dict.fromkeys(("imap_host", "imap_port", "imap_user", "imap_password", "imap_ssl", "imap_folder"))
    body = {"id": "smtp", "host": "smtp.acme.test", "port": 25, "is_pec_account": False, **empty}
    assert api.post("/account", json=body, headers=key).status_code == 200
    (shown,) = accounts(api, key)
    assert not any(name.startswith(("imap_", "is_pec")) for name in shown)


def test_an_unknown_account_field_is_still_a_422_naming_it(api: TestClient, make_tenant: TenantFactory) -> None:
    _, key = make_tenant("acme")
    reply = api.post("/account", json={"id": "smtp", "host": "h.test", "port": 25, "pool_size": 3}, headers=key)
    assert reply.status_code == 422
    assert reply.json()["detail"][0]["loc"] == ["body", "pool_size"]


def test_a_refused_pec_accounts_imap_password_is_not_kept_in_the_command_log(
    api: TestClient, admin: dict[str, str], make_tenant: TenantFactory
) -> None:
    _, key = make_tenant("acme")
    body = {"id": "pec", "host": "smtp.pec.test", "port": 465, "is_pec_account": True, "imap_password": "imap-s3cret"}
    assert api.post("/account", json=body, headers=key).status_code == 422
    log = api.get("/command-log", headers=admin)
    assert log.status_code == 200
    assert "imap-s3cret" not in log.text
    [logged] = [c for c in log.json()["commands"] if c["endpoint"].endswith("/account")]
    assert logged["payload"]["imap_password"] == "***" and logged["response_status"] == 422
