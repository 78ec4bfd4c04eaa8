"""Who is calling: the admin token or a tenant key, and which tenant a call may touch."""

from __future__ import annotations

import functools
import time
from typing import NamedTuple

from mailproxy import tenants
from mailproxy.aws import client
from mailproxy.crypto import hash_api_key, tokens_equal
from mailproxy.errors import ConfigurationError, Forbidden, Unauthorized, UnprocessableEntity
from mailproxy.settings import get_settings

INVALID_TOKEN = "Invalid or missing API token"
WRONG_TENANT = "Token not authorized for this tenant"


class Principal(NamedTuple):
    """The caller: the admin, or one tenant."""

    is_admin: bool
    tenant_id: str | None = None


@functools.cache
def admin_token() -> str:
    """The admin token: GMP_API_TOKEN, else the Secrets Manager secret (read once per container)."""
    settings = get_settings()
    if settings.admin_token:
        return settings.admin_token
    if settings.admin_token_secret_arn:
        secret = client("secretsmanager").get_secret_value(SecretId=settings.admin_token_secret_arn)
        token = str(secret.get("SecretString") or "").strip()
        if token:
            return token
    raise ConfigurationError("no admin token: set GMP_API_TOKEN or ADMIN_TOKEN_SECRET_ARN")


def authenticate(token: str | None) -> Principal:
    """The principal a token stands for; 401 when missing, unknown or expired."""
    expected = admin_token()
    if not token:
        raise Unauthorized(INVALID_TOKEN)
    if tokens_equal(token, expected):
        return Principal(is_admin=True)
    if len(token) > 512:
        raise Unauthorized(INVALID_TOKEN)
    key = tenants.lookup_api_key(hash_api_key(token))
    if key is None:
        raise Unauthorized(INVALID_TOKEN)
    expires_at = key.get("expires_at")
    if expires_at is not None and int(expires_at) <= time.time():
        raise Unauthorized(INVALID_TOKEN)
    return Principal(is_admin=False, tenant_id=str(key["tenant_id"]))


def require_admin(principal: Principal) -> None:
    """403 for a tenant key on an admin-only route."""
    if not principal.is_admin:
        raise Forbidden("Admin token required")


def scope(principal: Principal, tenant_id: str | None) -> str:
    """The tenant a call acts on: implied by a tenant key, required with the admin token."""
    if principal.is_admin:
        if not tenant_id:
            raise UnprocessableEntity(
                [
                    {
                        "loc": ["query", "tenant_id"],
                        "msg": "tenant_id is required with the admin token",
                        "type": "missing",
                    }
                ]
            )
        return tenant_id
    if tenant_id and tenant_id != principal.tenant_id:
        raise Unauthorized(WRONG_TENANT)
    return principal.tenant_id or ""
