"""The Tenants port: tenants, their API keys and SMTP accounts, as intake, auth and the sender rely on them."""

from __future__ import annotations

import json
import threading

from mailproxy.stores import Stores
from mailproxy.tenants import account_password, is_held, public_account, public_tenant

NOW = 1_800_000_000


def _create(stores: Stores, tenant_id: str = "acme", key_hash: str = "h-acme", **fields: object) -> bool:
    return stores.tenants.create_tenant(
        {"id": tenant_id, "name": tenant_id.title(), **fields}, key_hash=key_hash, now=NOW
    )


def test_creating_a_tenant_twice_keeps_the_first(stores: Stores) -> None:
    assert _create(stores, name="First") is True
    assert _create(stores, name="Second", key_hash="h-other") is False
    tenant = stores.tenants.get_tenant("acme")
    assert tenant is not None
    assert tenant["name"] == "First"
    assert stores.tenants.lookup_api_key("h-other") is None
    shown = public_tenant(tenant)
    assert shown["active"] is True
    assert shown["has_api_key"] is True
    assert shown["suspended_batches"] == []
    assert shown["created_at"] == shown["updated_at"] == NOW
    assert stores.tenants.get_tenant("nobody") is None


def test_a_tenant_created_again_under_its_id_is_another_incarnation(stores: Stores) -> None:
    # Download links name the incarnation that issued them: one created again in the same second is told apart.
    _create(stores)
    first = (stores.tenants.get_tenant("acme") or {})["incarnation"]
    stores.tenants.update_tenant("acme", {"name": "Only"}, now=NOW, replace=True)
    stores.tenants.set_api_key("acme", key_hash="h-new", expires_at=None, now=NOW)
    stores.tenants.change_suspended_batches("acme", "b-1", suspend=True, now=NOW)
    stores.tenants.note_suppressions("acme")
    assert (stores.tenants.get_tenant("acme") or {})["incarnation"] == first  # kept by every later write
    assert stores.tenants.delete_tenant("acme") is True
    _create(stores)
    again = (stores.tenants.get_tenant("acme") or {})["incarnation"]
    assert isinstance(first, str) and len(first) >= 12 and again != first
    assert "incarnation" not in public_tenant(stores.tenants.get_tenant("acme") or {})


def test_a_key_hash_finds_its_tenant_with_the_expiry_as_stored(stores: Stores) -> None:
    _create(stores, key_hash="h1")
    _create(stores, "beta", key_hash="h2", api_key_expires_at=NOW + 60)
    assert stores.tenants.lookup_api_key("h1") is not None
    assert stores.tenants.lookup_api_key("h1")["tenant_id"] == "acme"  # type: ignore[index]
    assert stores.tenants.lookup_api_key("h1").get("expires_at") is None  # type: ignore[union-attr]
    beta = stores.tenants.lookup_api_key("h2")
    assert beta is not None
    assert (beta["tenant_id"], beta["expires_at"]) == ("beta", NOW + 60)
    assert stores.tenants.lookup_api_key("unknown") is None


def test_a_new_key_replaces_the_old_one_at_once(stores: Stores) -> None:
    _create(stores, key_hash="old")
    assert stores.tenants.set_api_key("acme", key_hash="new", expires_at=NOW + 3600, now=NOW + 1) is True
    assert stores.tenants.lookup_api_key("old") is None
    found = stores.tenants.lookup_api_key("new")
    assert found is not None
    assert (found["tenant_id"], found["expires_at"]) == ("acme", NOW + 3600)
    tenant = stores.tenants.get_tenant("acme") or {}
    assert (tenant["api_key_hash"], tenant["api_key_expires_at"], tenant["updated_at"]) == ("new", NOW + 3600, NOW + 1)

    assert stores.tenants.set_api_key("acme", key_hash=None, expires_at=None, now=NOW + 2) is True
    assert stores.tenants.lookup_api_key("new") is None
    assert public_tenant(stores.tenants.get_tenant("acme") or {})["has_api_key"] is False
    assert stores.tenants.set_api_key("nobody", key_hash="x", expires_at=None, now=NOW) is False
    assert stores.tenants.lookup_api_key("x") is None


def test_an_update_changes_the_given_fields_and_none_removes_one(stores: Stores) -> None:
    _create(stores, client_base_url="https://acme.example", rate_limits={"per_day": 100})
    assert stores.tenants.update_tenant("acme", {"name": "Acme Ltd", "client_base_url": None}, now=NOW + 5) is True
    tenant = stores.tenants.get_tenant("acme") or {}
    assert tenant["name"] == "Acme Ltd"
    assert tenant.get("client_base_url") is None
    assert tenant["rate_limits"] == {"per_day": 100}
    assert (tenant["created_at"], tenant["updated_at"]) == (NOW, NOW + 5)
    assert stores.tenants.update_tenant("nobody", {"name": "x"}, now=NOW) is False
    assert stores.tenants.get_tenant("nobody") is None


def test_a_replacement_resets_every_field_not_given(stores: Stores) -> None:
    _create(stores, client_base_url="https://acme.example", active=False, rate_limits={"per_day": 100})
    assert stores.tenants.update_tenant("acme", {"name": "Only"}, now=NOW + 5, replace=True) is True
    tenant = stores.tenants.get_tenant("acme") or {}
    shown = public_tenant(tenant)
    assert (shown["name"], shown["active"], shown["client_base_url"], shown["rate_limits"]) == (
        "Only",
        True,
        None,
        None,
    )
    assert tenant["api_key_hash"] == "h-acme"  # the key is not a config field


def test_a_tenants_callback_secret_is_sealed_under_its_own_context(stores: Stores) -> None:
    _create(stores, client_auth={"method": "bearer", "token": "tok-s3cret"})
    tenant = stores.tenants.get_tenant("acme") or {}
    assert tenant["client_auth_method"] == "bearer"
    sealed = bytes(tenant["client_auth_enc"])
    assert b"tok-s3cret" not in sealed
    assert "tok-s3cret" not in json.dumps(public_tenant(tenant))
    assert json.loads(stores.sealer.decrypt_secret(sealed, context="tenant/acme")) == {"token": "tok-s3cret"}

    stores.tenants.update_tenant("acme", {"client_auth": {"method": "basic", "user": "u", "password": "pw"}}, now=NOW)
    tenant = stores.tenants.get_tenant("acme") or {}
    assert (tenant["client_auth_method"], tenant["client_auth_user"]) == ("basic", "u")
    secret = stores.sealer.decrypt_secret(bytes(tenant["client_auth_enc"]), context="tenant/acme")
    assert json.loads(secret) == {"password": "pw"}
    stores.tenants.update_tenant("acme", {"client_auth": None}, now=NOW)
    tenant = stores.tenants.get_tenant("acme") or {}
    assert tenant["client_auth_method"] == "none"
    assert tenant.get("client_auth_enc") is None


def test_tenants_are_listed_by_id_and_inactive_ones_can_be_left_out(stores: Stores) -> None:
    _create(stores, "zeta", key_hash="z")
    _create(stores, "alpha", key_hash="a", active=False)
    _create(stores, "mid", key_hash="m")
    assert [t["id"] for t in stores.tenants.list_tenants()] == ["alpha", "mid", "zeta"]
    assert [t["id"] for t in stores.tenants.list_tenants(active_only=True)] == ["mid", "zeta"]


def test_suspended_batches_hold_the_tenants_messages(stores: Stores) -> None:
    _create(stores)
    change = stores.tenants.change_suspended_batches
    assert change("acme", "b1", suspend=True, now=NOW + 1) == ["b1"]
    tenant = stores.tenants.get_tenant("acme") or {}
    assert tenant["suspended_batches"] == ["b1"]
    assert tenant["updated_at"] == NOW + 1
    assert is_held(tenant, "b1") and not is_held(tenant, "b2") and not is_held(tenant, None)
    assert change("acme", "b1", suspend=True, now=NOW + 1) == ["b1"]  # once
    assert change("acme", None, suspend=True, now=NOW + 2) == ["*"]
    assert is_held(stores.tenants.get_tenant("acme") or {}, None)
    assert change("acme", None, suspend=False, now=NOW + 3) == []
    assert not is_held(stores.tenants.get_tenant("acme") or {}, "b1")


def test_batches_suspended_and_activated_at_once_are_all_kept(stores: Stores) -> None:
    _create(stores)
    for round_ in range(5):
        stores.tenants.change_suspended_batches("acme", "old", suspend=True, now=NOW)
        batches = [f"r{round_}-b{n}" for n in range(7)]
        start = threading.Barrier(len(batches) + 1)

        def change(batch: str, start: threading.Barrier = start) -> None:
            start.wait()
            stores.tenants.change_suspended_batches("acme", batch, suspend=batch != "old", now=NOW)

        threads = [threading.Thread(target=change, args=(b,)) for b in [*batches, "old"]]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        kept = (stores.tenants.get_tenant("acme") or {})["suspended_batches"]
        assert sorted(kept) == sorted(batches)
        stores.tenants.change_suspended_batches("acme", None, suspend=False, now=NOW)


def test_suspending_a_tenant_deleted_meanwhile_changes_nothing(stores: Stores) -> None:
    # a deletion between intake's read and its write must not bring the tenant back or fail
    assert stores.tenants.change_suspended_batches("gone", None, suspend=True, now=NOW) is None
    assert stores.tenants.get_tenant("gone") is None


def _account(account_id: str, **fields: object) -> dict[str, object]:
    return {"id": account_id, "host": "smtp.example", "port": 587, "user": "u", "limit_per_minute": 10, **fields}


def test_an_account_is_upserted_keeping_its_creation_time_and_sealing_its_password(stores: Stores) -> None:
    _create(stores)
    stores.tenants.put_account("acme", _account("main", password="smtp-pw"), now=NOW)
    stored = stores.tenants.get_account("acme", "main") or {}
    assert (stored["tenant_id"], stored["host"], stored["limit_per_minute"]) == ("acme", "smtp.example", 10)
    assert b"smtp-pw" not in bytes(stored["password_enc"])
    assert stores.sealer.decrypt_secret(bytes(stored["password_enc"]), context="account/acme/main") == "smtp-pw"
    assert public_account(stored)["has_password"] is True

    stores.tenants.put_account("acme", _account("main", port=465), now=NOW + 10)
    replaced = stores.tenants.get_account("acme", "main") or {}
    assert (replaced["port"], replaced["created_at"], replaced["updated_at"]) == (465, NOW, NOW + 10)
    assert replaced.get("password_enc") is None  # a replacement without a password has none
    assert account_password(replaced) is None
    assert stores.tenants.get_account("acme", "other") is None


def test_accounts_are_listed_by_id_and_deleted_once(stores: Stores) -> None:
    _create(stores)
    _create(stores, "beta", key_hash="hb")
    for account_id in ("b", "a", "c"):
        stores.tenants.put_account("acme", _account(account_id), now=NOW)
    stores.tenants.put_account("beta", _account("a"), now=NOW)
    assert [a["id"] for a in stores.tenants.list_accounts("acme")] == ["a", "b", "c"]
    assert stores.tenants.account_ids("acme") == {"a", "b", "c"}
    assert stores.tenants.delete_account("acme", "b") is True
    assert stores.tenants.delete_account("acme", "b") is False
    assert stores.tenants.delete_account("acme", "zz") is False
    assert stores.tenants.account_ids("acme") == {"a", "c"}
    assert stores.tenants.account_ids("beta") == {"a"}
    assert stores.tenants.list_accounts("nobody") == []


def test_tenants_and_accounts_are_read_together_only_where_they_exist(stores: Stores) -> None:
    _create(stores)
    _create(stores, "beta", key_hash="hb")
    stores.tenants.put_account("acme", _account("a"), now=NOW)
    stores.tenants.put_account("beta", _account("b"), now=NOW)
    found_tenants, found_accounts = stores.tenants.get_tenants_and_accounts(
        {"acme", "beta", "ghost"}, {("acme", "a"), ("beta", "b"), ("acme", "b"), ("ghost", "a")}
    )
    assert set(found_tenants) == {"acme", "beta"}
    assert found_tenants["beta"]["id"] == "beta"
    assert set(found_accounts) == {("acme", "a"), ("beta", "b")}
    assert found_accounts[("beta", "b")]["tenant_id"] == "beta"
    assert set(stores.tenants.get_tenants({"beta", "ghost"})) == {"beta"}
    assert stores.tenants.get_tenants(set()) == {}
    assert stores.tenants.get_tenants_and_accounts(set(), set()) == ({}, {})


def test_deleting_a_tenant_removes_its_accounts_and_key_only(stores: Stores) -> None:
    _create(stores, key_hash="ka")
    _create(stores, "beta", key_hash="kb")
    stores.tenants.put_account("acme", _account("a"), now=NOW)
    stores.tenants.put_account("beta", _account("a"), now=NOW)
    assert stores.tenants.delete_tenant("acme") is True
    assert stores.tenants.get_tenant("acme") is None
    assert stores.tenants.lookup_api_key("ka") is None
    assert stores.tenants.list_accounts("acme") == []
    assert stores.tenants.delete_tenant("acme") is False
    assert stores.tenants.lookup_api_key("kb") is not None
    assert stores.tenants.account_ids("beta") == {"a"}
    assert _create(stores, key_hash="ka2") is True  # the id is free again


def test_a_tenant_is_marked_as_having_a_suppression_list_and_stays_so(stores: Stores) -> None:
    from mailproxy.tenants import HAS_SUPPRESSIONS

    assert stores.tenants.create_tenant({"id": "acme"}, key_hash="h1", now=1)
    assert not stores.tenants.get_tenant("acme").get(HAS_SUPPRESSIONS)  # type: ignore[union-attr]
    stores.tenants.note_suppressions("acme")
    stores.tenants.note_suppressions("acme")
    assert stores.tenants.update_tenant("acme", {"name": "Acme"}, now=2, replace=True)
    assert stores.tenants.get_tenant("acme").get(HAS_SUPPRESSIONS) is True  # type: ignore[union-attr]
    stores.tenants.note_suppressions("nobody")  # a tenant that is gone: nothing, no error
    assert stores.tenants.get_tenant("nobody") is None
