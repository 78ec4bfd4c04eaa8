"""Credentials of an attachment (`auth` of an http_url or endpoint attachment), sealed while the message waits.

A payload travels in a queue message, a pack in S3 and maybe `PayloadsTable` until it is sent: its
attachments' token and password are kept there only as a KMS ciphertext (`auth_enc`, bound to the tenant
by the encryption context), as the tenant's `client_auth` is. `auth` keeps only the method and the user.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from mailproxy.stores import stores

SECRET_FIELDS = ("token", "password")
SEALED_FIELD = "auth_enc"


def _context(tenant_id: str) -> str:
    return f"attachment/{tenant_id}"


def seal_payload(payload: dict[str, Any], tenant_id: str, sealed: dict[str, str]) -> dict[str, Any]:
    """The payload with every attachment's token and password replaced by their ciphertext.

    `sealed` maps a secret's JSON to its ciphertext for one request: a token shared by many messages
    costs one KMS call.
    """
    attachments = payload.get("attachments")
    if not attachments or not any((a.get("auth") or {}).keys() & set(SECRET_FIELDS) for a in attachments):
        return payload
    changed = []
    for attachment in attachments:
        auth = attachment.get("auth") or {}
        secrets = {k: auth[k] for k in SECRET_FIELDS if auth.get(k)}
        if not secrets:
            changed.append(attachment)
            continue
        text = json.dumps(secrets, sort_keys=True)
        if text not in sealed:
            sealed[text] = base64.b64encode(stores().sealer.encrypt_secret(text, context=_context(tenant_id))).decode(
                "ascii"
            )
        visible = {k: v for k, v in auth.items() if k not in SECRET_FIELDS}
        changed.append({**attachment, "auth": visible, SEALED_FIELD: sealed[text]})
    return {**payload, "attachments": changed}


def opened_auth(spec: dict[str, Any], tenant_id: str) -> dict[str, Any] | None:
    """The attachment's `auth` with its sealed token and password decrypted (a payload stored before
    sealing carries them in clear and is used as it is)."""
    auth = spec.get("auth")
    ciphertext = spec.get(SEALED_FIELD)
    if not ciphertext:
        return auth if isinstance(auth, dict) else None
    secrets = json.loads(stores().sealer.decrypt_secret(base64.b64decode(ciphertext), context=_context(tenant_id)))
    return {**(auth if isinstance(auth, dict) else {}), **secrets}
