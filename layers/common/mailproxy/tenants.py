"""Tenants, their API keys and SMTP accounts in `TenantsTable`."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from mailproxy.crypto import decrypt_secret, encrypt_secret
from mailproxy.dynamo import (
    Item,
    batch_get,
    batch_write,
    conditional_write,
    ddb,
    from_item,
    query_all,
    scan_all,
    to_attr,
    to_item,
)
from mailproxy.settings import get_settings

TENANT_CONFIG_FIELDS = (
    "name",
    "client_base_url",
    "client_sync_path",
    "client_attachment_path",
    "active",
    "rate_limits",
    "large_file_config",
)
# What an admin decides for a tenant: a tenant key may not change them (PUT /tenant/{id} → 403), so an admin's
# deactivation or quota sticks. Every other TENANT_CONFIG_FIELDS entry and client_auth are the tenant's own.
ADMIN_ONLY_FIELDS = ("active", "rate_limits")
DEFAULT_SYNC_PATH = "/mail-proxy/sync"
DEFAULT_ATTACHMENT_PATH = "/mail-proxy/attachments"
ACCOUNT_FIELDS = (
    "host",
    "port",
    "user",
    "use_tls",
    "limit_per_minute",
    "limit_per_hour",
    "limit_per_day",
    "limit_behavior",
    "batch_size",
    "ttl",
)
DEFAULT_CONNECTION_TTL = 300  # seconds a pooled SMTP connection may live: genro-mail-proxy's default


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


def config_values(
    fields: dict[str, Any], tenant_id: str, *, encrypt: Callable[..., bytes] = encrypt_secret
) -> dict[str, Any]:
    """Tenant fields as stored: client_auth split into a visible method/user and a part sealed by `encrypt`
    (KMS here; the SQLite adapter passes its own sealer)."""
    values = {name: fields[name] for name in TENANT_CONFIG_FIELDS if name in fields}
    if "client_auth" in fields:
        auth = fields["client_auth"] or {"method": "none"}
        values["client_auth_method"] = auth.get("method") or "none"
        values["client_auth_user"] = auth.get("user")
        secrets = {k: auth[k] for k in ("token", "password") if auth.get(k)}
        values["client_auth_enc"] = encrypt(json.dumps(secrets), context=f"tenant/{tenant_id}") if secrets else None
    return values


def create_tenant(tenant: dict[str, Any], *, key_hash: str, now: int) -> bool:
    """Store a new tenant and its key hash together; False if the tenant already exists."""
    tenant_id = tenant["id"]
    config = {"client_auth": None, "active": True, **tenant}
    values = config_values(config, tenant_id)
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
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                },
                {"Put": {"TableName": _table(), "Item": to_item(key_item)}},
            ],
        )
        is not None
    )


def update_tenant(tenant_id: str, fields: dict[str, Any], *, now: int, replace: bool = False) -> bool:
    """Change the given config fields (all of them, defaults for the rest, when `replace`); False if absent."""
    values = config_values(replacement(fields) if replace else fields, tenant_id)
    values["updated_at"] = now
    sets, removes, names, attrs = [], [], {}, {}
    for index, (name, value) in enumerate(values.items()):
        names[f"#f{index}"] = name
        if value is None:
            removes.append(f"#f{index}")
        else:
            sets.append(f"#f{index} = :v{index}")
            attrs[f":v{index}"] = to_attr(value)
    expression = "SET " + ", ".join(sets)
    if removes:
        expression += " REMOVE " + ", ".join(removes)
    return (
        conditional_write(
            ddb().update_item,
            TableName=_table(),
            Key=_tenant_key(tenant_id),
            UpdateExpression=expression,
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=attrs,
        )
        is not None
    )


def replacement(fields: dict[str, Any]) -> dict[str, Any]:
    """The fields of a whole replacement (PUT): the given ones, defaults for every other config field."""
    replaced = {"client_auth": None, "active": True, **{k: None for k in TENANT_CONFIG_FIELDS}, **fields}
    replaced["active"] = True if replaced["active"] is None else replaced["active"]
    return replaced


def list_tenants(*, active_only: bool = False) -> list[Item]:
    """Every tenant, sorted by id."""
    tenants = list(
        scan_all(
            TableName=_table(),
            FilterExpression="sk = :t",
            ExpressionAttributeValues={":t": {"S": "TENANT"}},
        )
    )
    if active_only:
        tenants = [t for t in tenants if t.get("active", True)]
    return sorted(tenants, key=lambda t: str(t["id"]))


def public_tenant(item: Item) -> dict[str, Any]:
    """A tenant as the API shows it: flat, no key hash, no secret."""
    auth: dict[str, Any] = {"method": item.get("client_auth_method", "none")}
    if item.get("client_auth_user"):
        auth["user"] = item["client_auth_user"]
    return {
        "id": item["id"],
        "name": item.get("name"),
        "client_base_url": item.get("client_base_url"),
        "client_sync_path": item.get("client_sync_path") or DEFAULT_SYNC_PATH,
        "client_attachment_path": item.get("client_attachment_path") or DEFAULT_ATTACHMENT_PATH,
        "client_auth": auth,
        "active": bool(item.get("active", True)),
        "api_key_expires_at": item.get("api_key_expires_at"),
        "has_api_key": bool(item.get("api_key_hash")),
        "suspended_batches": list(item.get("suspended_batches") or []),
        "rate_limits": item.get("rate_limits"),
        "large_file_config": item.get("large_file_config"),
        "created_at": item.get("created_at"),
        "updated_at": item.get("updated_at"),
    }


def client_auth(item: Item) -> dict[str, Any]:
    """The tenant's decrypted `client_auth` ({method, token, user, password}) for outgoing calls."""
    auth: dict[str, Any] = {
        "method": item.get("client_auth_method", "none"),
        "user": item.get("client_auth_user"),
    }
    if item.get("client_auth_enc"):
        auth.update(json.loads(decrypt_secret(bytes(item["client_auth_enc"]), context=f"tenant/{item['id']}")))
    return auth


def delete_tenant(tenant_id: str) -> bool:
    """Delete a tenant with its accounts and key; False if it did not exist."""
    tenant = get_tenant(tenant_id)
    if tenant is None:
        return False
    items = list(
        query_all(
            TableName=_table(),
            KeyConditionExpression="pk = :p",
            ExpressionAttributeValues={":p": {"S": f"TENANT#{tenant_id}"}},
            ProjectionExpression="pk, sk",
        )
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
        update = "SET api_key_hash = :h, api_key_expires_at = :e, updated_at = :n"
        attrs = {":h": to_attr(key_hash), ":e": to_attr(expires_at), ":n": to_attr(now)}
    else:
        update = "SET updated_at = :n REMOVE api_key_hash, api_key_expires_at"
        attrs = {":n": to_attr(now)}
    actions.append(
        {
            "Update": {
                "TableName": _table(),
                "Key": _tenant_key(tenant_id),
                "UpdateExpression": update,
                "ConditionExpression": "attribute_exists(pk)",
                "ExpressionAttributeValues": attrs,
            }
        }
    )
    return conditional_write(ddb().transact_write_items, TransactItems=actions) is not None


def lookup_api_key(key_hash: str) -> Item | None:
    """The key item ({tenant_id, expires_at}) of a key hash, or None."""
    reply = ddb().get_item(TableName=_table(), Key=_key_item_key(key_hash))
    return from_item(reply["Item"]) if "Item" in reply else None


def set_suspended_batches(tenant_id: str, batches: list[str], *, now: int) -> None:
    """Store the tenant's suspended batches (`["*"]`: the whole tenant)."""
    ddb().update_item(
        TableName=_table(),
        Key=_tenant_key(tenant_id),
        UpdateExpression="SET suspended_batches = :b, updated_at = :n",
        ConditionExpression="attribute_exists(pk)",
        ExpressionAttributeValues={":b": to_attr(batches), ":n": to_attr(now)},
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
    if account.get("password"):
        item["password_enc"] = encrypt_secret(account["password"], context=f"account/{tenant_id}/{account['id']}")
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
            KeyConditionExpression="pk = :p AND begins_with(sk, :a)",
            ExpressionAttributeValues={":p": {"S": f"TENANT#{tenant_id}"}, ":a": {"S": "ACCOUNT#"}},
            ConsistentRead=True,
        )
    )


def account_ids(tenant_id: str) -> set[str]:
    """The ids of the tenant's accounts."""
    return {str(a["id"]) for a in list_accounts(tenant_id)}


def public_account(item: Item) -> dict[str, Any]:
    """An account as the API shows it: no password."""
    shown = {"id": item["id"], "tenant_id": item["tenant_id"]}
    shown.update({name: item.get(name) for name in ACCOUNT_FIELDS})
    shown["limit_behavior"] = shown.get("limit_behavior") or "defer"
    shown["ttl"] = connection_ttl(item)
    shown["has_password"] = bool(item.get("password_enc"))
    shown["created_at"] = item.get("created_at")
    shown["updated_at"] = item.get("updated_at")
    return shown


def connection_ttl(item: Item) -> int:
    """How long (seconds) a pooled SMTP connection of the account may live."""
    ttl = item.get("ttl")
    return DEFAULT_CONNECTION_TTL if ttl is None else int(ttl)


def account_password(item: Item) -> str | None:
    """The decrypted SMTP password of an account (cached per container), or None."""
    if not item.get("password_enc"):
        return None
    return decrypt_secret(bytes(item["password_enc"]), context=f"account/{item['tenant_id']}/{item['id']}")


def delete_account(tenant_id: str, account_id: str) -> bool:
    """Delete an account; False if the tenant has no such account."""
    return (
        conditional_write(
            ddb().delete_item,
            TableName=_table(),
            Key=_account_key(tenant_id, account_id),
            ConditionExpression="attribute_exists(pk)",
        )
        is not None
    )


def is_held(tenant: dict[str, Any], batch_code: str | None) -> bool:
    """True when the tenant's messages of this batch must wait: inactive, fully suspended, or batch suspended."""
    batches = tenant.get("suspended_batches") or []
    return not tenant.get("active", True) or "*" in batches or (batch_code is not None and batch_code in batches)
