"""The envelope sender (MAIL FROM) a message goes out with when its account, or its tenant, names a bounce
mailbox with a `return_path` (docs/bounces.md): that address, or with `verp` one of its own per message."""

from __future__ import annotations

from typing import Any

from mailproxy.logs import logger


def bounce_return_path(tenant: dict[str, Any], account: dict[str, Any], message_id: str) -> str | None:
    """The return path of the account's bounce mailbox (else the tenant's) for this message; None when neither
    names one (the message then goes out with its `from`, or its own `return_path`)."""
    mailbox = account.get("bounce_mailbox") or tenant.get("bounce_mailbox")
    if not isinstance(mailbox, dict) or not mailbox.get("return_path"):
        return None
    address = str(mailbox["return_path"])
    if not mailbox.get("verp"):
        return address
    # Imported here: the sender loads this module for every message, the VERP code only for VERP accounts
    # (tests/unit/test_import_paths.py keeps it off the sender's cold start).
    from mailproxy import verp

    key = verp.signing_key()  # read once per process (a storage read, then cached)
    tenant_id = str(tenant["id"])
    personal = verp.return_path(address, tenant_id, message_id, key) if key is not None else None
    if personal is None:
        logger().info(
            "VERP return path not used (no signing key yet, or the message id is too long for a local part)",
            extra={"tenant_id": tenant_id, "account_id": account.get("id"), "message_id": message_id},
        )
        return address
    return personal
