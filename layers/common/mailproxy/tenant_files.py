"""A tenant's own files in the shared attachment buckets: the key prefix that is its, and S3 access bound to it.

Every tenant attaches `s3://` files from the same buckets (`AttachmentReadArns`), so the key alone decides
whose file it is: only keys under the tenant's prefix (`GMP_ATTACHMENT_S3_PREFIX`, default `{tenant_id}/`)
are read. The code refuses any other key; on AWS the objects are also read with credentials of
`AttachmentReaderRole` assumed with a session policy that allows that prefix alone, so a bug in the check
still cannot reach another tenant's file.

Its settings are the outbound ones (`get_outbound_settings`), as `mailproxy.attachments`'s: fetching must
work where only some of the service's settings exist.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.parse
from typing import Any

from mailproxy.errors import ConfigurationError
from mailproxy.settings import get_outbound_settings

DEFAULT_PREFIX_TEMPLATE = "{tenant_id}/"
SESSION_SECONDS = 900  # the shortest session STS grants; role chaining allows at most an hour
SESSION_MARGIN_SECONDS = 60  # renewed this long before it expires, so no read starts on a dying session
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_SESSION_NAME_CHARS = re.compile(r"[^\w+=,.@-]")


class OutsideTenantFiles(Exception):
    """An s3:// path that is not a file of the tenant's (the message names no key: it may be another tenant's)."""


def prefix_template() -> str:
    """GMP_ATTACHMENT_S3_PREFIX, checked: relative, one `{tenant_id}`, ending with `/`, no IAM wildcard."""
    template = get_outbound_settings().attachment_s3_prefix or DEFAULT_PREFIX_TEMPLATE
    segments = template.split("/")
    if (
        template.count("{tenant_id}") != 1
        or not template.endswith("/")
        or template.startswith("/")
        or any(c in template for c in "*?$%\\")
        or any(s in ("", ".", "..") for s in segments[:-1])
    ):
        raise ConfigurationError(
            "GMP_ATTACHMENT_S3_PREFIX must contain {tenant_id} once, end with '/', and have no empty, '.' or "
            f"'..' segment nor any of * ? $ % \\; got {template!r}"
        )
    return template


def tenant_prefix(tenant_id: str) -> str:
    """The key prefix of the tenant's files (ends with `/`, so `acme/` never matches `acme2/...`)."""
    if not tenant_id or "/" in tenant_id or tenant_id in (".", ".."):
        raise OutsideTenantFiles("no tenant to read files for")
    return prefix_template().replace("{tenant_id}", tenant_id)


def _clean_key(key: str, prefix: str) -> bool:
    segments = key.split("/")
    return (
        key.startswith(prefix)
        and len(key) > len(prefix)
        and not any(s in ("", ".", "..") for s in segments)
        and not any(ord(c) < 32 or c == "\x7f" for c in key)
    )


def tenant_object(storage_path: str, tenant_id: str) -> tuple[str, str]:
    """(bucket, key) of an `s3://bucket/key` path when the key is the tenant's; OutsideTenantFiles otherwise.

    The key is taken literally (as the AWS CLI does), and its percent-decoded form must pass too, so no
    layer that decodes or normalises it (`..`, `//`, `%2e%2e`, `%2f`) can land outside the prefix.
    """
    if not storage_path[:5].lower() == "s3://":
        raise OutsideTenantFiles("not an s3://bucket/key path")
    bucket, _, key = storage_path[5:].partition("/")
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise OutsideTenantFiles("not an s3://bucket/key path")
    prefix = tenant_prefix(tenant_id)
    if not (_clean_key(key, prefix) and _clean_key(urllib.parse.unquote(key), prefix)):
        raise OutsideTenantFiles(f"the key is not under the tenant's prefix {prefix}")
    return bucket, key


def session_policy(bucket: str, tenant_id: str, partition: str = "aws") -> dict[str, Any]:
    """The session policy of the tenant's reading session: GetObject on its prefix of that bucket, nothing else."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "TenantFiles",
                "Effect": "Allow",
                "Action": "s3:GetObject",
                "Resource": f"arn:{partition}:s3:::{bucket}/{tenant_prefix(tenant_id)}*",
            }
        ],
    }


class TenantS3Clients:
    """S3 clients per (tenant, bucket): credentials of the reader role scoped to the tenant's prefix, each
    kept for the session's lifetime. Without a reader role (locally, in tests) the service's own client."""

    def __init__(self) -> None:
        self._sessions: dict[tuple[str, str], tuple[Any, float]] = {}
        self._lock = threading.Lock()
        # One AssumeRole per (tenant, bucket) at a time: concurrent sessions fetching the same tenant's files
        # wait for the first one's credentials instead of each asking STS.
        self._making: dict[tuple[str, str], threading.Lock] = {}

    def cache_clear(self) -> None:
        """Forget every session (tests, a new stack)."""
        with self._lock:
            self._sessions.clear()

    def __call__(self, tenant_id: str, bucket: str) -> Any:
        """The S3 client that reads the tenant's files in `bucket`."""
        from mailproxy.aws import client

        role_arn = get_outbound_settings().attachment_reader_role_arn
        if not role_arn:
            return client("s3")
        with self._lock:
            making = self._making.setdefault((tenant_id, bucket), threading.Lock())
        with making:
            return self._client(role_arn, tenant_id, bucket)

    def _client(self, role_arn: str, tenant_id: str, bucket: str) -> Any:
        from mailproxy.aws import client, scoped_client

        now = time.time()
        with self._lock:
            cached = self._sessions.get((tenant_id, bucket))
            if cached is not None and cached[1] - SESSION_MARGIN_SECONDS > now:
                return cached[0]
        partition = role_arn.split(":")[1] if role_arn.count(":") >= 5 else "aws"
        reply = client("sts").assume_role(
            RoleArn=role_arn,
            RoleSessionName=_SESSION_NAME_CHARS.sub("-", f"gmp-{tenant_id}")[:64],
            DurationSeconds=SESSION_SECONDS,
            Policy=json.dumps(session_policy(bucket, tenant_id, partition), separators=(",", ":")),
        )
        credentials = reply["Credentials"]
        expires = credentials["Expiration"]
        expires_at = expires.timestamp() if hasattr(expires, "timestamp") else now + SESSION_SECONDS
        s3 = scoped_client("s3", credentials)
        with self._lock:
            self._sessions[(tenant_id, bucket)] = (s3, expires_at)
        return s3


tenant_s3 = TenantS3Clients()
