"""Tenants and their SMTP accounts: the fields they have, how they are shown, their secrets opened."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from typing import Any, Protocol

from mailproxy.adapters.aws.dynamo import (
    Item,
)
from mailproxy.sessions import DEFAULT_MAX_CONNECTIONS
from mailproxy.stores import stores

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
    "max_connections",
)


# Set on a tenant record before its first suppression entry is written: the sender reads only marked tenants'
# lists, so a tenant without one pays no read per recipient (docs/suppressions.md).
HAS_SUPPRESSIONS = "has_suppressions"

DEFAULT_CONNECTION_TTL = 300  # seconds a pooled SMTP connection may live: genro-mail-proxy's default


BOUNCE_PASSWORD = "bounce_password_enc"  # the bounce mailbox's IMAP password, sealed


def bounce_values(mailbox: dict[str, Any] | None, context: str, *, encrypt: Callable[..., bytes]) -> dict[str, Any]:
    """A bounce mailbox (docs/bounces.md) as stored: `bounce_mailbox` without its password, and the password
    sealed by `encrypt` under `context` (None values: the field is taken away)."""
    if not mailbox:
        return {"bounce_mailbox": None, BOUNCE_PASSWORD: None}
    shown = {k: v for k, v in mailbox.items() if k != "password" and v is not None}
    password = mailbox.get("password")
    return {"bounce_mailbox": shown, BOUNCE_PASSWORD: encrypt(password, context=context) if password else None}


def account_secrets(tenant_id: str, account: dict[str, Any], *, encrypt: Callable[..., bytes]) -> dict[str, Any]:
    """An account's sealed fields (SMTP password, bounce mailbox password) and its bounce mailbox, as stored;
    absent ones left out."""
    account_id = account["id"]
    values: dict[str, Any] = {}
    if account.get("password"):
        values["password_enc"] = encrypt(account["password"], context=f"account/{tenant_id}/{account_id}")
    bounce = bounce_values(account.get("bounce_mailbox"), f"bounce/{tenant_id}/{account_id}", encrypt=encrypt)
    values.update({k: v for k, v in bounce.items() if v is not None})
    return values


def bounce_password(item: Item, context: str) -> str | None:
    """The opened IMAP password of a stored bounce mailbox (an account's or a tenant's), or None."""
    if not item.get(BOUNCE_PASSWORD):
        return None
    return stores().sealer.decrypt_secret(bytes(item[BOUNCE_PASSWORD]), context=context)


def public_bounce_mailbox(item: Item) -> dict[str, Any] | None:
    """A stored bounce mailbox as the API shows it: no password, `has_password` instead."""
    mailbox = item.get("bounce_mailbox")
    if not isinstance(mailbox, dict):
        return None
    return {**mailbox, "has_password": bool(item.get(BOUNCE_PASSWORD))}


class VerpChoice(Protocol):
    """A bounce mailbox as given to the API (`models.BounceMailbox`): whether it turns VERP on."""

    @property
    def verp(self) -> bool: ...


def ensure_verp_key(mailbox: VerpChoice | None) -> None:
    """Before an account's or a tenant's bounce mailbox is stored: make the VERP signing key if it turns VERP on
    (the sender signs with it from the account's next message)."""
    if mailbox is not None and mailbox.verp:
        from mailproxy import verp  # only an account or tenant turning VERP on needs it

        verp.ensure_signing_key()


def config_values(fields: dict[str, Any], tenant_id: str, *, encrypt: Callable[..., bytes]) -> dict[str, Any]:
    """Tenant fields as stored: client_auth split into a visible method/user and a part sealed by `encrypt`
    (the adapter's sealer); the bounce mailbox's password sealed likewise."""
    values = {name: fields[name] for name in TENANT_CONFIG_FIELDS if name in fields}
    if "bounce_mailbox" in fields:
        values.update(bounce_values(fields["bounce_mailbox"], f"bounce/{tenant_id}", encrypt=encrypt))
    if "client_auth" in fields:
        auth = fields["client_auth"] or {"method": "none"}
        values["client_auth_method"] = auth.get("method") or "none"
        values["client_auth_user"] = auth.get("user")
        secrets = {k: auth[k] for k in ("token", "password") if auth.get(k)}
        values["client_auth_enc"] = encrypt(json.dumps(secrets), context=f"tenant/{tenant_id}") if secrets else None
    return values


def replacement(fields: dict[str, Any]) -> dict[str, Any]:
    """The fields of a whole replacement (PUT): the given ones, defaults for every other config field."""
    replaced = {
        "client_auth": None,
        "bounce_mailbox": None,
        "active": True,
        **{k: None for k in TENANT_CONFIG_FIELDS},
        **fields,
    }
    replaced["active"] = True if replaced["active"] is None else replaced["active"]
    return replaced


def new_incarnation() -> str:
    """A new tenant's incarnation: random, so a tenant created again under a deleted one's id, even within the
    same second, is told apart from it (its download links name the incarnation that issued them)."""
    return secrets.token_urlsafe(9)


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
        "paused_accounts": _paused_view(item),
        "rate_limits": item.get("rate_limits"),
        "large_file_config": item.get("large_file_config"),
        "bounce_mailbox": public_bounce_mailbox(item),
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
        auth.update(
            json.loads(stores().sealer.decrypt_secret(bytes(item["client_auth_enc"]), context=f"tenant/{item['id']}"))
        )
    return auth


def public_account(item: Item) -> dict[str, Any]:
    """An account as the API shows it: no password."""
    shown = {"id": item["id"], "tenant_id": item["tenant_id"]}
    shown.update({name: item.get(name) for name in ACCOUNT_FIELDS})
    shown["limit_behavior"] = shown.get("limit_behavior") or "defer"
    shown["ttl"] = connection_ttl(item)
    shown["max_connections"] = item.get("max_connections") or DEFAULT_MAX_CONNECTIONS
    shown["has_password"] = bool(item.get("password_enc"))
    shown["bounce_mailbox"] = public_bounce_mailbox(item)
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
    return stores().sealer.decrypt_secret(
        bytes(item["password_enc"]), context=f"account/{item['tenant_id']}/{item['id']}"
    )


def is_held(tenant: dict[str, Any], batch_code: str | None, account_id: str | None = None) -> bool:
    """True when the tenant's messages of this batch (and account) must wait: inactive, fully suspended, batch
    suspended, or the account paused by the reputation guard (`paused_accounts`)."""
    batches = tenant.get("suspended_batches") or []
    if account_id is not None and account_id in (tenant.get("paused_accounts") or {}):
        return True
    return not tenant.get("active", True) or "*" in batches or (batch_code is not None and batch_code in batches)


def suspended_after(batches: list[str] | None, batch_code: str | None, *, suspend: bool) -> list[str]:
    """A tenant's `suspended_batches` once a batch (None: the whole tenant, `"*"`) is suspended or activated.
    Activating one batch of a wholly suspended tenant leaves `"*"` (intake refuses that with a 400 first)."""
    current = list(batches or [])
    if batch_code is None:
        return ["*"] if suspend else []
    if not suspend:
        return [b for b in current if b != batch_code]
    return current if "*" in current or batch_code in current else [*current, batch_code]


def _paused_view(item: Item) -> dict[str, Any]:
    """The tenant's accounts paused by the reputation guard: why and since when."""
    paused = item.get("paused_accounts") or {}
    return {
        account_id: {"paused_ts": info.get("paused_ts"), "reason": info.get("reason")}
        for account_id, info in sorted(paused.items())
    }


def paused_after(paused: dict[str, Any] | None, account_id: str, pause: dict[str, Any] | None) -> dict[str, Any] | None:
    """A tenant's `paused_accounts` once the account is paused (`pause`: why and when) or resumed (None); None
    when that changes nothing (already paused, or not paused)."""
    after = dict(paused or {})
    if (account_id in after) == (pause is not None):
        return None
    if pause is None:
        after.pop(account_id)
    else:
        after[account_id] = pause
    return after
