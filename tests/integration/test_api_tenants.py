"""Tenants: creation with a key shown once, overwrite, partial update, keys, deletion with its data."""

from __future__ import annotations

import hashlib
import re
import time

import pytest
from fastapi.testclient import TestClient

from tests.conftest import AccountFactory, AwsEnv, TenantFactory
from tests.integration.api_support import INVALID_TOKEN, add, message, pending
from tests.integration.delivery import Runner

KEY_SHAPE = re.compile(r"^[A-Za-z0-9_-]{43}$")

pytestmark = pytest.mark.both_storages


def test_a_new_tenant_gets_a_43_character_key_once(api: TestClient, admin: dict[str, str]) -> None:
    reply = api.post("/tenant", json={"id": "acme", "name": "Acme"}, headers=admin)
    assert reply.status_code == 200
    body = reply.json()
    assert set(body) == {"ok", "api_key"}
    assert body["ok"] is True
    key = body["api_key"]
    assert KEY_SHAPE.match(key)
    for path in ("/tenant/acme", "/tenants", "/tenants/sync-status", "/command-log"):
        shown = api.get(path, headers=admin)
        assert shown.status_code == 200
        assert key not in shown.text, path
    assert api.get("/status", headers={"X-API-Token": key}).status_code == 200


def test_the_key_is_stored_only_as_its_sha256(api: TestClient, admin: dict[str, str], queues: Runner) -> None:
    key = api.post("/tenant", json={"id": "acme"}, headers=admin).json()["api_key"]
    dump = queues.raw_text()
    assert key not in dump
    digest = hashlib.sha256(key.encode()).hexdigest()
    assert digest in dump
    for path in ("/tenant/acme", "/tenants", "/command-log"):
        assert digest not in api.get(path, headers=admin).text, path


def test_two_tenants_get_different_keys(make_tenant: TenantFactory) -> None:
    _, first = make_tenant("one")
    _, second = make_tenant("two")
    assert first != second


def test_a_tenant_is_shown_flat_with_defaults_and_without_secrets(api: TestClient, admin: dict[str, str]) -> None:
    api.post(
        "/tenant",
        json={
            "id": "acme",
            "name": "Acme",
            "client_base_url": "https://app.acme.test",
            "client_auth": {"method": "bearer", "token": "callback-bearer-secret"},
            "rate_limits": {"hourly": 100},
            "large_file_config": {"enabled": True, "max_size_mb": 5},
        },
        headers=admin,
    )
    reply = api.get("/tenant/acme", headers=admin)
    assert reply.status_code == 200
    tenant = reply.json()
    assert tenant["id"] == "acme"
    assert tenant["name"] == "Acme"
    assert tenant["client_base_url"] == "https://app.acme.test"
    assert tenant["client_sync_path"] == "/mail-proxy/sync"
    assert tenant["client_attachment_path"] == "/mail-proxy/attachments"
    assert tenant["client_auth"] == {"method": "bearer"}
    assert tenant["active"] is True
    assert tenant["rate_limits"] == {"hourly": 100}
    assert tenant["large_file_config"] == {"enabled": True, "max_size_mb": 5}
    assert "callback-bearer-secret" not in reply.text
    assert "api_key_hash" not in tenant


def test_callback_secrets_are_encrypted_at_rest_and_never_shown(
    api: TestClient, admin: dict[str, str], queues: Runner
) -> None:
    body = {"id": "acme", "client_auth": {"method": "basic", "user": "hook-user", "password": "hook-pass-s3cret"}}
    created = api.post("/tenant", json=body, headers=admin)
    api.put("/tenant/acme", json={"client_auth": {"method": "bearer", "token": "hook-token-s3cret"}}, headers=admin)
    api.post("/tenant", json={**body, "name": "again"}, headers=admin)
    replies = [created, api.get("/tenant/acme", headers=admin), api.get("/tenants", headers=admin)]
    replies.append(api.get("/command-log", headers=admin))
    for reply in replies:
        assert "hook-pass-s3cret" not in reply.text
        assert "hook-token-s3cret" not in reply.text
    dump = queues.raw_text()
    assert "hook-pass-s3cret" not in dump
    assert "hook-token-s3cret" not in dump


def test_posting_an_existing_tenant_overwrites_its_config_and_keeps_its_key(
    api: TestClient, admin: dict[str, str], make_tenant: TenantFactory
) -> None:
    _, key = make_tenant(
        "acme", client_base_url="https://old.acme.test", rate_limits={"daily": 5}, client_sync_path="/old/sync"
    )
    reply = api.post("/tenant", json={"id": "acme", "name": "Acme 2"}, headers=admin)
    assert reply.status_code == 200
    assert reply.json() == {"ok": True}
    tenant = api.get("/tenant/acme", headers=key).json()
    assert tenant["name"] == "Acme 2"
    assert tenant["client_base_url"] is None
    assert tenant["rate_limits"] is None
    assert tenant["client_sync_path"] == "/mail-proxy/sync"
    assert tenant["active"] is True


def test_put_changes_only_the_fields_given(api: TestClient, make_tenant: TenantFactory) -> None:
    _, key = make_tenant("acme", client_base_url="https://app.acme.test", rate_limits={"daily": 5})
    before = api.get("/tenant/acme", headers=key).json()
    reply = api.put("/tenant/acme", json={"name": "Renamed", "client_sync_path": "/hooks/sync"}, headers=key)
    assert reply.status_code == 200
    assert reply.json() == {"ok": True}
    after = api.get("/tenant/acme", headers=key).json()
    assert after["name"] == "Renamed"
    assert after["client_sync_path"] == "/hooks/sync"
    unchanged = {k for k in before if k not in ("name", "client_sync_path", "updated_at")}
    assert {k: after[k] for k in unchanged} == {k: before[k] for k in unchanged}


def test_put_with_an_empty_body_changes_nothing(api: TestClient, make_tenant: TenantFactory) -> None:
    _, key = make_tenant("acme")
    before = api.get("/tenant/acme", headers=key).json()
    assert api.put("/tenant/acme", json={}, headers=key).status_code == 200
    assert api.get("/tenant/acme", headers=key).json() == before


def test_routes_of_a_tenant_that_does_not_exist_answer_404(api: TestClient, admin: dict[str, str]) -> None:
    not_found = {"detail": "Tenant 'ghost' not found"}
    calls = [
        api.get("/tenant/ghost", headers=admin),
        api.put("/tenant/ghost", json={"name": "x"}, headers=admin),
        api.put("/tenant/ghost", json={}, headers=admin),
        api.delete("/tenant/ghost", headers=admin),
        api.post("/tenant/ghost/api-key", json={}, headers=admin),
        api.delete("/tenant/ghost/api-key", headers=admin),
        api.get("/messages", params={"tenant_id": "ghost"}, headers=admin),
        api.get("/accounts", params={"tenant_id": "ghost"}, headers=admin),
        api.post("/account", json={"id": "a", "tenant_id": "ghost", "host": "h.test", "port": 25}, headers=admin),
        api.post("/commands/delete-messages", params={"tenant_id": "ghost"}, json={"ids": ["x"]}, headers=admin),
        api.post("/commands/cleanup-messages", params={"tenant_id": "ghost"}, json={}, headers=admin),
        add(api, admin, message(tenant_id="ghost")),
    ]
    assert [(c.status_code, c.json()) for c in calls] == [(404, not_found)] * len(calls)
    assert api.get("/tenants", headers=admin).json()["tenants"] == []


def test_rotating_the_key_stops_the_old_one_at_once(
    api: TestClient, admin: dict[str, str], make_tenant: TenantFactory
) -> None:
    _, old = make_tenant("acme")
    reply = api.post("/tenant/acme/api-key", headers=admin)
    assert reply.status_code == 200
    new_key = reply.json()["api_key"]
    assert KEY_SHAPE.match(new_key)
    assert new_key != old["X-API-Token"]
    assert api.get("/status", headers=old).status_code == 401
    assert api.get("/status", headers=old).json() == INVALID_TOKEN
    assert api.get("/status", headers={"X-API-Token": new_key}).status_code == 200


def test_a_rotated_key_can_be_given_an_expiry(
    api: TestClient, admin: dict[str, str], make_tenant: TenantFactory
) -> None:
    make_tenant("acme")
    past = api.post("/tenant/acme/api-key", json={"expires_at": int(time.time()) - 10}, headers=admin).json()["api_key"]
    assert api.get("/status", headers={"X-API-Token": past}).status_code == 401
    later = int(time.time()) + 3600
    future = api.post("/tenant/acme/api-key", json={"expires_at": later}, headers=admin).json()["api_key"]
    assert api.get("/status", headers={"X-API-Token": future}).status_code == 200
    assert api.get("/tenant/acme", headers=admin).json()["api_key_expires_at"] == later


def test_a_tenant_created_with_an_expiry_in_the_past_cannot_use_its_key(
    api: TestClient, admin: dict[str, str], make_tenant: TenantFactory
) -> None:
    expired = int(time.time()) - 60
    _, key = make_tenant("acme", api_key_expires_at=expired)
    assert api.get("/messages", headers=key).json() == INVALID_TOKEN
    assert api.get("/tenant/acme", headers=admin).json()["api_key_expires_at"] == expired


def test_revoking_the_key_stops_it_and_a_new_one_can_be_issued(
    api: TestClient, admin: dict[str, str], make_tenant: TenantFactory
) -> None:
    _, key = make_tenant("acme")
    reply = api.delete("/tenant/acme/api-key", headers=admin)
    assert reply.status_code == 200
    assert reply.json() == {"ok": True}
    assert api.get("/status", headers=key).status_code == 401
    assert api.get("/tenant/acme", headers=admin).json()["has_api_key"] is False
    assert api.delete("/tenant/acme/api-key", headers=admin).status_code == 200  # revoking twice is harmless
    fresh = api.post("/tenant/acme/api-key", headers=admin).json()["api_key"]
    assert api.get("/status", headers={"X-API-Token": fresh}).status_code == 200
    assert api.get("/status", headers=key).status_code == 401


def test_deleting_a_tenant_removes_its_accounts_messages_key_and_pending_count(
    api: TestClient, admin: dict[str, str], make_tenant: TenantFactory, make_account: AccountFactory, queues: Runner
) -> None:
    _, key = make_tenant("acme")
    make_tenant("other")
    for tenant_id in ("acme", "other"):
        make_account(tenant_id, password="smtp-pass")
        reply = add(api, admin, message("m-1", tenant_id=tenant_id), message("m-2", tenant_id=tenant_id))
        assert reply.json()["queued"] == 2
    add(api, admin, message("big", tenant_id="acme", body="x" * 10, to=["not an address"]))
    assert pending(api, admin) == 4

    reply = api.delete("/tenant/acme", headers=admin)
    assert reply.status_code == 200
    assert reply.json() == {"ok": True}

    assert api.get("/tenant/acme", headers=admin).status_code == 404
    assert api.get("/status", headers=key).json() == INVALID_TOKEN
    assert pending(api, admin) == 2
    assert [t["id"] for t in api.get("/tenants", headers=admin).json()["tenants"]] == ["other"]
    gone, kept = queues.stored("acme"), queues.stored("other")
    assert gone["tenants"] == gone["messages"] == gone["payloads"] == []  # its packs went too
    assert kept["tenants"] and kept["messages"] and kept["payloads"]
    assert api.get("/accounts", params={"tenant_id": "other"}, headers=admin).json()["accounts"]


def test_a_deleted_tenant_can_be_created_again_with_a_new_key(
    api: TestClient, admin: dict[str, str], make_tenant: TenantFactory, make_account: AccountFactory
) -> None:
    _, old = make_tenant("acme")
    make_account("acme")
    add(api, old, message("m-1"))
    api.delete("/tenant/acme", headers=admin)
    _, new = make_tenant("acme")
    assert new != old
    assert api.get("/status", headers=old).status_code == 401
    assert api.get("/messages", headers=new).json()["messages"] == []
    assert api.get("/accounts", headers=new).json()["accounts"] == []
    assert api.get("/status", headers=new).json()["pending_messages"] == 0


def test_tenants_are_listed_by_id_and_can_be_filtered_to_active_ones(
    api: TestClient, admin: dict[str, str], make_tenant: TenantFactory
) -> None:
    make_tenant("zeta")
    make_tenant("alpha", active=False)
    make_tenant("mid")
    listed = api.get("/tenants", headers=admin).json()
    assert listed["ok"] is True
    assert [t["id"] for t in listed["tenants"]] == ["alpha", "mid", "zeta"]
    active = api.get("/tenants", params={"active_only": "true"}, headers=admin).json()["tenants"]
    assert [t["id"] for t in active] == ["mid", "zeta"]
    assert all("api_key" not in t and "api_key_hash" not in t for t in listed["tenants"])


def test_a_tenant_key_can_read_and_change_its_own_tenant_but_not_delete_it(
    api: TestClient, make_tenant: TenantFactory
) -> None:
    _, key = make_tenant("acme")
    assert api.get("/tenant/acme", headers=key).json()["id"] == "acme"
    assert api.put("/tenant/acme", json={"name": "Mine"}, headers=key).status_code == 200
    assert api.get("/tenant/acme", headers=key).json()["name"] == "Mine"
    assert api.delete("/tenant/acme", headers=key).status_code == 403
    assert api.post("/tenant/acme/api-key", headers=key).status_code == 403
    assert api.get("/tenant/acme", headers=key).status_code == 200


def test_a_tenant_key_cannot_undo_an_admins_deactivation_nor_change_its_quotas(
    api: TestClient, admin: dict[str, str], make_tenant: TenantFactory, make_account: AccountFactory
) -> None:
    _, key = make_tenant("acme", rate_limits={"daily": 5})
    make_account("acme")
    assert api.put("/tenant/acme", json={"active": False}, headers=admin).status_code == 200

    for body, detail in (
        ({"active": True}, "Field 'active' can only be changed with the admin token"),
        ({"rate_limits": None}, "Field 'rate_limits' can only be changed with the admin token"),
        ({"rate_limits": {"daily": 10_000}}, "Field 'rate_limits' can only be changed with the admin token"),
        (
            {"name": "Sneaky", "active": True, "rate_limits": {}},
            "Fields 'active', 'rate_limits' can only be changed with the admin token",
        ),
    ):
        reply = api.put("/tenant/acme", json=body, headers=key)
        assert (reply.status_code, reply.json()) == (403, {"detail": detail}), body

    tenant = api.get("/tenant/acme", headers=key).json()
    assert (tenant["active"], tenant["rate_limits"], tenant["name"]) == (False, {"daily": 5}, "Tenant acme")
    # Still held: the tenant's own activate lifts a suspension, never an admin's deactivation.
    add(api, key, message("m-1"))
    api.post("/commands/activate", headers=key)
    [record] = api.get("/messages", headers=key).json()["messages"]
    assert record["status"] == "suspended"


def test_a_tenant_key_changes_every_field_that_is_its_own(api: TestClient, make_tenant: TenantFactory) -> None:
    _, key = make_tenant("acme")
    own = {
        "name": "Acme Ltd",
        "client_base_url": "https://hooks.acme.test",
        "client_sync_path": "/s",
        "client_attachment_path": "/a",
        "client_auth": {"method": "basic", "user": "hook", "password": "hook-pw"},
        "large_file_config": {"enabled": True, "max_size_mb": 10},
    }
    assert api.put("/tenant/acme", json=own, headers=key).status_code == 200
    tenant = api.get("/tenant/acme", headers=key).json()
    assert {k: tenant[k] for k in own} == {**own, "client_auth": {"method": "basic", "user": "hook"}}


def test_sync_status_lists_every_tenant_with_its_report_schedule(
    api: TestClient, admin: dict[str, str], make_tenant: TenantFactory
) -> None:
    make_tenant("acme", client_base_url="https://app.acme.test")
    make_tenant("quiet", active=False)
    reply = api.get("/tenants/sync-status", headers=admin)
    assert reply.status_code == 200
    body = reply.json()
    assert body["ok"] is True
    assert body["sync_interval_seconds"] == 300
    assert [row["id"] for row in body["tenants"]] == ["acme", "quiet"]
    for row in body["tenants"]:
        assert set(row) == {"id", "name", "active", "client_base_url", "last_sync_ts", "next_sync_due", "in_dnd"}
        assert row["last_sync_ts"] is None
        assert row["in_dnd"] is False
    assert body["tenants"][0]["client_base_url"] == "https://app.acme.test"
    assert body["tenants"][0]["active"] is True
    assert body["tenants"][1]["active"] is False


def test_tenant_ids_must_be_letters_digits_dash_or_underscore(
    api: TestClient, admin: dict[str, str], queues: Runner
) -> None:
    for bad in ("", "a b", "a/b", "x" * 65, "t'1", "é"):
        reply = api.post("/tenant", json={"id": bad}, headers=admin)
        assert reply.status_code == 422, bad
    assert queues.stored()["tenants"] == []


def test_the_openapi_schema_says_which_tenant_fields_a_tenant_key_may_write(api: TestClient) -> None:
    fields = api.get("/openapi.json").json()["components"]["schemas"]["TenantFields"]["properties"]
    admin_only = {name for name, field in fields.items() if field.get("description", "").startswith("Admin token only")}
    tenant_writable = {
        name for name, field in fields.items() if "Tenant key or admin token" in field.get("description", "")
    }
    assert admin_only == {"active", "rate_limits"}
    assert tenant_writable == set(fields) - admin_only


# The audit trail (expired by its retention) and the /metrics counters (never go down, docs/monitoring.md).
def _leave_every_kind_of_state(
    api: TestClient, admin: dict[str, str], make_tenant: TenantFactory, make_account: AccountFactory
) -> None:
    """Two tenants, `acme` and `other`, each with everything a tenant leaves in storage: accounts (one deleted),
    messages (one parked, its payload pinned; one refused by the quota), a run-now request, rate windows (the
    deleted account's too), owed reports, a ledger, a suppression list, soft bounces, a paused account and bounce
    mailbox positions."""
    from mailproxy.ratelimit import Limits
    from mailproxy.report_format import Owed
    from mailproxy.stores import stores

    now = int(time.time())
    for tenant_id in ("acme", "other"):
        _, key = make_tenant(tenant_id, client_base_url="http://127.0.0.1:9/", rate_limits={"per_hour": 2})
        make_account(tenant_id)
        make_account(tenant_id, "old")
        assert api.delete("/account/old", params={"tenant_id": tenant_id}, headers=admin).status_code == 200
        later = message("later", tenant_id=tenant_id, deferred_ts=now + 86_400)  # parked: its payload is pinned
        reply = add(api, admin, message("m-1", tenant_id=tenant_id), later, message("over", tenant_id=tenant_id))
        assert [r["reason"] for r in reply.json()["rejected"]] == ["tenant quota exceeded: 2 messages per hour"]
        assert api.post("/commands/run-now", headers=key).status_code == 200
        for account_id in ("smtp", "old"):
            stores().rates.reserve(tenant_id, account_id, Limits(per_minute=10), 1, now)
        sent = {"event_type": "sent", "event_ts": now}
        stores().outbox.owe(tenant_id, [Owed("m-1", 1, sent)], f"{now:012d}#1")
        stores().ledger.record(tenant_id, {f"{now:012d}#0": {("m-0", 1, "sent", now): now}})
        # A suppression list, soft bounces counted, and a paused account.
        body = {"addresses": ["bob@x.test"]}
        assert api.post("/suppressions", params={"tenant_id": tenant_id}, json=body, headers=admin).status_code == 200
        stores().suppressions.note_soft_bounce(tenant_id, "eve@x.test", ts=now, window_seconds=3600)
        from mailproxy import reputation

        assert reputation.pause(tenant_id, "smtp", reason="test")
        # Where the bounce poller stopped in the tenant's mailbox and in one account's (docs/bounces.md).
        for scope in ("*", "smtp"):
            stores().bounces.save_position(
                f"{tenant_id}/{scope}", identity="imap://b@h/INBOX", uidvalidity=1, last_uid=9, now=now
            )


KEPT_AFTER_DELETION = ("CMDLOG#", "COUNTERS", "TENANT_COUNTERS")


def test_deleting_a_tenant_leaves_nothing_of_it_in_any_table_or_bucket(
    api: TestClient, admin: dict[str, str], make_tenant: TenantFactory, make_account: AccountFactory, aws_env: AwsEnv
) -> None:
    _leave_every_kind_of_state(api, admin, make_tenant, make_account)

    def mentions(tenant_id: str) -> list[str]:
        found = [
            f"{table}: {item}"
            for table in ("TENANTS_TABLE", "MESSAGES_TABLE", "PAYLOADS_TABLE", "STATE_TABLE")
            for item in aws_env.table_items(table)
            if tenant_id in str(item) and not str(item.get("pk", "")).startswith(KEPT_AFTER_DELETION)
        ]
        s3 = aws_env.client("s3")
        found += [o["Key"] for o in s3.list_objects_v2(Bucket=aws_env["PAYLOAD_BUCKET"]).get("Contents", [])]
        return [f for f in found if tenant_id in f]

    before = mentions("acme")
    for kind in ("TENANT#", "APIKEY#", "QUOTA#", "RATE#acme#smtp", "RATE#acme#old", "PENDING", "RUNNOW"):
        assert any(kind in f for f in before), kind
    assert any("OUTBOX#" in f for f in before) and any("LEDGER#" in f for f in before)
    assert any("'sk': 'acme'" in f and "SYNC" in f for f in before)
    assert any(f.startswith("PAYLOADS_TABLE") for f in before) and any("packs/acme/" in f for f in before)
    assert any("BOUNCE#acme" in f for f in before)
    other_before = mentions("other")

    assert api.delete("/tenant/acme", headers=admin).status_code == 200

    assert mentions("acme") == []
    assert mentions("other") == other_before
    kept = {(i["pk"], i["sk"]) for i in aws_env.table_items("STATE_TABLE") if i["pk"] in KEPT_AFTER_DELETION}
    assert {("COUNTERS", "acme#smtp"), ("COUNTERS", "acme#old"), ("TENANT_COUNTERS", "acme")} <= kept


# The SQLite tables that keep a deleted tenant's rows, as on AWS: the audit trail and the /metrics counters;
# and the messages' change feed, as DynamoDB's stream, until the reporter has read it.
SQLITE_KEPT_AFTER_DELETION = ("command_log", "account_counters", "tenant_counters", "message_changes")


@pytest.mark.sqlite_only("SQLite's twin of test_deleting_a_tenant_leaves_nothing_of_it_in_any_table_or_bucket")
def test_deleting_a_tenant_leaves_nothing_of_it_in_any_sqlite_table(
    api: TestClient, admin: dict[str, str], make_tenant: TenantFactory, make_account: AccountFactory, queues: Runner
) -> None:
    from mailproxy.stores import stores

    from tests.integration.delivery import SqliteRunner

    assert isinstance(queues, SqliteRunner)
    _leave_every_kind_of_state(api, admin, make_tenant, make_account)
    for tenant_id in ("acme", "other"):
        stores().outbox.acquire(tenant_id, "lease-1", int(time.time()), ignore_backoff=True)  # the reporter's lease

    def mentions(tenant_id: str) -> dict[str, list[str]]:
        tables = queues.tables(tenant_id)
        return {t: rows for t, rows in tables.items() if rows and t not in SQLITE_KEPT_AFTER_DELETION}

    before = mentions("acme")
    expected = {"tenants", "tenant_accounts", "api_keys", "messages", "payloads", "rate_windows", "pending"}
    expected |= {"run_now", "report_outbox", "report_ledger", "report_sync", "bounce_positions"}
    assert expected <= set(before), expected - set(before)
    other_before = mentions("other")

    assert api.delete("/tenant/acme", headers=admin).status_code == 200

    assert mentions("acme") == {}
    assert mentions("other") == other_before
    kept = queues.tables("acme")
    assert kept["account_counters"] and kept["tenant_counters"]
