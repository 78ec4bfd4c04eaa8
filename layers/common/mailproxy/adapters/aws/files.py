"""Large files on AWS: objects of the stack's `LargeFileBucket`, first downloads in `StateTable`.

The bucket's lifecycle rules delete uploads after `LargeFileUploadExpirationDays` and stored files after the
number of days their key names (`files/<days>d/...`, docs/large-files.md); a download record carries the
table's TTL (`expires_at`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from mailproxy.adapters.aws.dynamo import conditional_write, ddb, from_item, to_item
from mailproxy.adapters.aws.expressions import absent, expression
from mailproxy.aws import client, error_code
from mailproxy.errors import ConfigurationError
from mailproxy.settings import get_large_file_settings, get_settings

if TYPE_CHECKING:
    from mailproxy import ports

MULTIPART_PART_BYTES = 8 * 1024 * 1024


def _bucket() -> str:
    bucket = get_large_file_settings().bucket
    if not bucket:
        raise ConfigurationError("LARGE_FILE_BUCKET is not set: large files cannot be stored")
    return bucket


def _table() -> str:
    return get_settings().state_table


def presigned_upload(key: str, *, max_bytes: int, expires_in: int) -> dict[str, Any] | None:
    """An S3 POST policy for exactly `key`, at most `max_bytes`, valid `expires_in` seconds."""
    form: dict[str, Any] = client("s3").generate_presigned_post(
        Bucket=_bucket(),
        Key=key,
        Conditions=[["content-length-range", 1, max_bytes]],
        ExpiresIn=expires_in,
    )
    return {"url": form["url"], "fields": dict(form["fields"])}


def write(key: str, chunks: Iterable[bytes]) -> int:
    """Store the file at `key` (one PutObject: the sender stores what it already holds in memory)."""
    body = b"".join(chunks)
    client("s3").put_object(Bucket=_bucket(), Key=key, Body=body)
    return len(body)


def size(key: str) -> int | None:
    """ContentLength of the object, None when it does not exist."""
    try:
        reply = client("s3").head_object(Bucket=_bucket(), Key=key)
    except Exception as exc:
        if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
            return None
        raise
    return int(reply["ContentLength"])


def read(key: str, *, max_bytes: int) -> bytes:
    """The object's bytes; FileNotFoundError when missing, ValueError when larger than `max_bytes`."""
    try:
        reply = client("s3").get_object(Bucket=_bucket(), Key=key)
    except Exception as exc:
        if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
            raise FileNotFoundError(key) from exc
        raise
    body = reply["Body"]
    try:
        if int(reply.get("ContentLength") or 0) > max_bytes:
            raise ValueError(f"larger than {max_bytes} bytes")
        data: bytes = body.read(max_bytes + 1)
    finally:
        body.close()
    if len(data) > max_bytes:
        raise ValueError(f"larger than {max_bytes} bytes")
    return data


def copy(source: str, target: str) -> None:
    """A server-side copy (CopyObject up to 5 GB, the bytes never reach the function)."""
    bucket = _bucket()
    client("s3").copy_object(Bucket=bucket, Key=target, CopySource={"Bucket": bucket, "Key": source})


def download(key: str, *, filename: str, mime_type: str, expires_in: int) -> tuple[str, str]:
    """A fresh presigned GET of the object, naming the file for the browser."""
    from urllib.parse import quote

    disposition = f"attachment; filename*=UTF-8''{quote(filename, safe='')}"
    url = client("s3").generate_presigned_url(
        "get_object",
        Params={
            "Bucket": _bucket(),
            "Key": key,
            "ResponseContentDisposition": disposition,
            "ResponseContentType": mime_type,
        },
        ExpiresIn=expires_in,
    )
    return "redirect", str(url)


def signing_key() -> None:
    """None: on AWS the deployment's secret (LINK_SIGNING_SECRET_ARN) is the signing material."""
    return None


def first_download(link_id: str, *, now: int, keep_until: int) -> int:
    """Record `now` as the link's first download unless one is recorded; the first download's time."""
    key = {"pk": f"DOWNLOAD#{link_id}", "sk": "first"}
    item = to_item({**key, "ts": now, "expires_at": keep_until})
    if conditional_write(ddb().put_item, TableName=_table(), Item=item, **expression(condition=absent("pk"))):
        return now
    reply = ddb().get_item(TableName=_table(), Key=to_item(key), ConsistentRead=True)
    return int(from_item(reply["Item"])["ts"]) if "Item" in reply else now


def forget_tenant(tenant_id: str) -> None:
    """Nothing at once: the bucket's lifecycle rules delete the tenant's objects (a listing and delete of
    every object under two prefixes would need the intake to hold s3:ListBucket and s3:DeleteObject), and
    no link of a tenant that no longer exists is served meanwhile."""


if TYPE_CHECKING:

    def _implements() -> ports.LargeFiles:
        from mailproxy.adapters.aws import files

        return files
