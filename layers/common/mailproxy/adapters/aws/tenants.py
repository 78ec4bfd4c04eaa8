"""Tenants, their API keys and SMTP accounts in `TenantsTable`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mailproxy.adapters.aws.dynamo import (
    Item,
    batch_get,
    batch_write,
    conditional_write,
    ddb,
    from_item,
    query_all,
    scan_all,
    to_item,
)
from mailproxy.adapters.aws.expressions import Update, absent, begins_with, equals, exists, expression, partition
from mailproxy.adapters.aws.sealer import encrypt_secret
from mailproxy.settings import get_settings
from mailproxy.tenants import (
    ACCOUNT_FIELDS,
    HAS_SUPPRESSIONS,
    account_secrets,
    config_values,
    new_incarnation,
    paused_after,
    replacement,
    suspended_after,
)


def _table() -> str:
    return get_settings().tenants_table


def _tenant_key(tenant_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"TENANT#{tenant_id}"}, "sk": {"S": "TENANT"}}


def _key_item_key(key_hash: str) -> dict[str, Any]:
    return {"pk": {"S": f"APIKEY#{key_hash}"}, "sk": {"S": "APIKEY"}}


def get_tenant(tenant_id: str) -> Item | None:
    """The stored tenant (secrets still encrypted), or None."""
    reply = ddb().get_item(TableName=_table(), Key=_tenant_key(tenant_id), ConsistentRead=True)
    return from_item(reply["Item"]) if "Item" in reply else None


def create_tenant(tenant: dict[str, Any], *, key_hash: str, now: int) -> bool:
    """Store a new tenant and its key hash together; False if the tenant already exists."""
    tenant_id = tenant["id"]
    config = {"client_auth": None, "active": True, **tenant}
    values = config_values(config, tenant_id, encrypt=encrypt_secret)
    item = {
        "pk": f"TENANT#{tenant_id}",
        "sk": "TENANT",
        "id": tenant_id,
        **values,
        "api_key_hash": key_hash,
        "api_key_expires_at": tenant.get("api_key_expires_at"),
        "suspended_batches": [],
        "created_at": now,
        "updated_at": now,
        "incarnation": new_incarnation(),
    }
    key_item = {"pk": f"APIKEY#{key_hash}", "sk": "APIKEY", "tenant_id": tenant_id}
    if tenant.get("api_key_expires_at") is not None:
        key_item["expires_at"] = tenant["api_key_expires_at"]
    return (
        conditional_write(
            ddb().transact_write_items,
            TransactItems=[
                {
                    "Put": {
                        "TableName": _table(),
                        "Item": to_item(item),
                        **expression(condition=absent("pk")),
                    }
                },
                {"Put": {"TableName": _table(), "Item": to_item(key_item)}},
            ],
        )
        is not None
    )


def update_tenant(tenant_id: str, fields: dict[str, Any], *, now: int, replace: bool = False) -> bool:
    """Change the given config fields (all of them, defaults for the rest, when `replace`); False if absent."""
    values = config_values(replacement(fields) if replace else fields, tenant_id, encrypt=encrypt_secret)
    values["updated_at"] = now
    update = Update()
    for name, value in values.items():
        if value is None:
            update.remove(name)
        else:
            update.set(name, value)
    return (
        conditional_write(
            ddb().update_item, TableName=_table(), Key=_tenant_key(tenant_id), **expression(update, exists("pk"))
        )
        is not None
    )


def list_tenants(*, active_only: bool = False) -> list[Item]:
    """Every tenant, sorted by id."""
    tenants = list(scan_all(TableName=_table(), **expression(filter=equals("sk", "TENANT"))))
    if active_only:
        tenants = [t for t in tenants if t.get("active", True)]
    return sorted(tenants, key=lambda t: str(t["id"]))


def delete_tenant(tenant_id: str) -> bool:
    """Delete a tenant with its accounts and key; False if it did not exist."""
    tenant = get_tenant(tenant_id)
    if tenant is None:
        return False
    items = list(
        query_all(TableName=_table(), **expression(key=partition("pk", f"TENANT#{tenant_id}"), projection=["pk", "sk"]))
    )

    keys = [{"pk": i["pk"], "sk": i["sk"]} for i in items]
    if tenant.get("api_key_hash"):
        keys.append({"pk": f"APIKEY#{tenant['api_key_hash']}", "sk": "APIKEY"})
    batch_write(_table(), deletes=keys)
    return True


def set_api_key(tenant_id: str, *, key_hash: str | None, expires_at: int | None, now: int) -> bool:
    """Replace (or with None remove) the tenant's key: the old one stops working at once."""
    tenant = get_tenant(tenant_id)
    if tenant is None:
        return False
    actions: list[dict[str, Any]] = []
    if tenant.get("api_key_hash"):
        actions.append({"Delete": {"TableName": _table(), "Key": _key_item_key(tenant["api_key_hash"])}})
    if key_hash:
        key_item: dict[str, Any] = {"pk": f"APIKEY#{key_hash}", "sk": "APIKEY", "tenant_id": tenant_id}
        if expires_at is not None:
            key_item["expires_at"] = expires_at
        actions.append({"Put": {"TableName": _table(), "Item": to_item(key_item)}})
        update = Update().set("api_key_hash", key_hash).set("api_key_expires_at", expires_at).set("updated_at", now)
    else:
        update = Update().set("updated_at", now).remove("api_key_hash", "api_key_expires_at")
    actions.append(
        {"Update": {"TableName": _table(), "Key": _tenant_key(tenant_id), **expression(update, exists("pk"))}}
    )
    return conditional_write(ddb().transact_write_items, TransactItems=actions) is not None


def lookup_api_key(key_hash: str) -> Item | None:
    """The key item ({tenant_id, expires_at}) of a key hash, or None."""
    reply = ddb().get_item(TableName=_table(), Key=_key_item_key(key_hash))
    return from_item(reply["Item"]) if "Item" in reply else None


def change_suspended_batches(tenant_id: str, batch_code: str | None, *, suspend: bool, now: int) -> list[str] | None:
    """Suspend or activate a batch (None: the whole tenant); the batches after it, None if there is no such
    tenant. The list is rewritten whole under its version `suspended_v` (a lost race reads again)."""
    batches: list[str] = []

    def change(tenant: Item) -> dict[str, Any]:
        batches[:] = suspended_after(tenant.get("suspended_batches"), batch_code, suspend=suspend)
        return {"suspended_batches": batches, "updated_at": now}

    return batches if _rewrite_tenant(tenant_id, "suspended_v", change) else None


def note_suppressions(tenant_id: str) -> None:
    """Mark the tenant as having a suppression list (never unmarked); nothing if it does not exist."""
    conditional_write(
        ddb().update_item,
        TableName=_table(),
        Key=_tenant_key(tenant_id),
        **expression(Update().set(HAS_SUPPRESSIONS, True), exists("pk")),
    )


def _account_key(tenant_id: str, account_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"TENANT#{tenant_id}"}, "sk": {"S": f"ACCOUNT#{account_id}"}}


def put_account(tenant_id: str, account: dict[str, Any], *, now: int) -> None:
    """Create or replace an account (upsert on tenant + id), its password encrypted."""
    item = {
        "pk": f"TENANT#{tenant_id}",
        "sk": f"ACCOUNT#{account['id']}",
        "id": account["id"],
        "tenant_id": tenant_id,
        **{name: account.get(name) for name in ACCOUNT_FIELDS},
        "updated_at": now,
    }
    item.update(account_secrets(tenant_id, account, encrypt=encrypt_secret))
    existing = get_account(tenant_id, account["id"])
    item["created_at"] = existing.get("created_at", now) if existing else now
    ddb().put_item(TableName=_table(), Item=to_item(item))


def get_account(tenant_id: str, account_id: str) -> Item | None:
    """The stored account (password still encrypted), or None."""
    reply = ddb().get_item(TableName=_table(), Key=_account_key(tenant_id, account_id), ConsistentRead=True)
    return from_item(reply["Item"]) if "Item" in reply else None


def get_tenants_and_accounts(
    tenant_ids: set[str], account_keys: set[tuple[str, str]]
) -> tuple[dict[str, Item], dict[tuple[str, str], Item]]:
    """The stored tenants and (tenant_id, account_id) accounts that exist among those asked for, read
    together (one BatchGetItem for up to 100 of them)."""
    keys = [{"pk": f"TENANT#{t}", "sk": "TENANT"} for t in sorted(tenant_ids)]
    keys += [{"pk": f"TENANT#{t}", "sk": f"ACCOUNT#{a}"} for t, a in sorted(account_keys)]
    found_tenants: dict[str, Item] = {}
    found_accounts: dict[tuple[str, str], Item] = {}
    for item in batch_get(_table(), keys):
        if item["sk"] == "TENANT":
            found_tenants[str(item["pk"]).removeprefix("TENANT#")] = item
        else:
            found_accounts[(str(item["tenant_id"]), str(item["id"]))] = item
    return found_tenants, found_accounts


def get_tenants(tenant_ids: set[str]) -> dict[str, Item]:
    """The stored tenants among those asked for, read together."""
    return get_tenants_and_accounts(tenant_ids, set())[0] if tenant_ids else {}


def list_accounts(tenant_id: str) -> list[Item]:
    """The tenant's accounts, sorted by id."""
    return list(
        query_all(
            TableName=_table(),
            **expression(key=partition("pk", f"TENANT#{tenant_id}") & begins_with("sk", "ACCOUNT#")),
            ConsistentRead=True,
        )
    )


def account_ids(tenant_id: str) -> set[str]:
    """The ids of the tenant's accounts."""
    return {str(a["id"]) for a in list_accounts(tenant_id)}


def delete_account(tenant_id: str, account_id: str) -> bool:
    """Delete an account; False if the tenant has no such account."""
    return (
        conditional_write(
            ddb().delete_item,
            TableName=_table(),
            Key=_account_key(tenant_id, account_id),
            **expression(condition=exists("pk")),
        )
        is not None
    )


REWRITE_ATTEMPTS = 5


def _rewrite_tenant(tenant_id: str, version: str, change: Callable[[Item], dict[str, Any] | None]) -> bool | None:
    """Set the values `change` makes of the tenant item as read, if the item's `version` attribute is still
    the one read (a lost race reads again): True once written, False when `change` made none (None), None
    when there is no such tenant."""
    for _ in range(REWRITE_ATTEMPTS):
        tenant = get_tenant(tenant_id)
        if tenant is None:
            return None
        values = change(tenant)
        if values is None:
            return False
        seen = tenant.get(version)
        update = Update().set(version, int(seen or 0) + 1)
        for name, value in values.items():
            update.set(name, value)
        # exists("pk"): a tenant deleted since the read is not written back as a bare item
        condition = exists("pk") & (absent(version) if seen is None else equals(version, seen))
        done = conditional_write(
            ddb().update_item, TableName=_table(), Key=_tenant_key(tenant_id), **expression(update, condition)
        )
        if done is not None:
            return True
    raise RuntimeError(f"tenant {tenant_id}: {version} kept losing races")


def set_account_pause(tenant_id: str, account_id: str, pause: dict[str, Any] | None, *, now: int) -> bool:
    """Pause (`pause`: why and when) or resume (None) an account in the tenant's `paused_accounts` map; True when
    this call changed it. The map is rewritten whole under its version `paused_v` (a lost race reads again)."""

    def change(tenant: Item) -> dict[str, Any] | None:
        paused = paused_after(tenant.get("paused_accounts"), account_id, pause)
        return None if paused is None else {"paused_accounts": paused}

    return bool(_rewrite_tenant(tenant_id, "paused_v", change))
