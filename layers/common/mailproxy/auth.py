"""Who is calling: the admin token or a tenant key, and which tenant a call may touch."""

from __future__ import annotations

from typing import NamedTuple

from mailproxy import clock
from mailproxy.crypto import hash_api_key, tokens_equal
from mailproxy.errors import ConfigurationError, Forbidden, Unauthorized, UnprocessableEntity
from mailproxy.secret_cache import secrets
from mailproxy.settings import get_settings
from mailproxy.stores import stores

INVALID_TOKEN = "Invalid or missing API token"
WRONG_TENANT = "Token not authorized for this tenant"
ROTATION_RECHECK_SECONDS = 10.0  # an unknown token re-reads the admin secret at most this often per container


class Principal(NamedTuple):
    """The caller: the admin, or one tenant."""

    is_admin: bool
    tenant_id: str | None = None


def admin_token(max_age: float | None = None) -> str:
    """The admin token: GMP_API_TOKEN, else the Secrets Manager secret, read again once the copy this
    container holds is older than `max_age` (default GMP_SECRET_MAX_AGE_SECONDS), so a rotation applies."""
    settings = get_settings()
    if settings.admin_token:
        return settings.admin_token
    if settings.admin_token_secret_arn:
        age = settings.secret_max_age_seconds if max_age is None else min(max_age, settings.secret_max_age_seconds)
        return secrets.get(settings.admin_token_secret_arn, max_age=age)
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
    key = stores().tenants.lookup_api_key(hash_api_key(token))
    if key is None:
        # Just rotated? The new admin token works as soon as it is read: look again, at most every few seconds.
        if tokens_equal(token, admin_token(max_age=ROTATION_RECHECK_SECONDS)):
            return Principal(is_admin=True)
        raise Unauthorized(INVALID_TOKEN)
    expires_at = key.get("expires_at")
    if expires_at is not None and int(expires_at) <= clock.now_ts():
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
