"""Message payloads, written once per submission: compressed in `PayloadsTable`, or in S3 when too big."""

from __future__ import annotations

import hashlib
import json
import zlib
from typing import Any

from mailproxy.aws import client
from mailproxy.dynamo import batch_get, batch_write
from mailproxy.settings import get_settings

MAX_ITEM_PAYLOAD = 350_000  # DynamoDB items stop at 400 KB; leave room for the keys


def encode(payload: dict[str, Any]) -> bytes:
    """The compressed JSON form of a payload."""
    return zlib.compress(json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8"), 6)


def decode(blob: bytes) -> dict[str, Any]:
    """A payload from its compressed JSON form."""
    value: dict[str, Any] = json.loads(zlib.decompress(blob).decode("utf-8"))
    return value


def _s3_key(tenant_id: str, message_id: str, rev: str) -> str:
    digest = hashlib.sha256(message_id.encode("utf-8")).hexdigest()
    return f"payloads/{tenant_id}/{digest}/{rev}.json.z"


def payload_item(tenant_id: str, message_id: str, rev: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The `PayloadsTable` item of a payload, first uploading it to S3 when it is too big for an item."""
    blob = encode(payload)
    item: dict[str, Any] = {"tenant_id": tenant_id, "id": message_id, "rev": rev}
    if len(blob) > MAX_ITEM_PAYLOAD:
        key = _s3_key(tenant_id, message_id, rev)
        client("s3").put_object(Bucket=get_settings().payload_bucket, Key=key, Body=blob)
        item["payload_s3_key"] = key
    else:
        item["payload"] = blob
    return item


def store_payloads(items: list[dict[str, Any]]) -> None:
    """Write payload items (from `payload_item`) by 25."""
    batch_write(get_settings().payloads_table, puts=items)


def _payload_of(item: dict[str, Any]) -> dict[str, Any]:
    if "payload" in item:
        return decode(bytes(item["payload"]))
    body = client("s3").get_object(Bucket=get_settings().payload_bucket, Key=item["payload_s3_key"])["Body"]
    return decode(body.read())


def load_payloads(keys: list[tuple[str, str]]) -> dict[tuple[str, str], tuple[str, dict[str, Any]]]:
    """(tenant_id, id) → (rev, payload) for each stored payload among `keys`."""
    items = batch_get(get_settings().payloads_table, [{"tenant_id": t, "id": i} for t, i in keys])
    return {(str(i["tenant_id"]), str(i["id"])): (str(i["rev"]), _payload_of(i)) for i in items}


def delete_payloads(keys: list[tuple[str, str]]) -> None:
    """Delete payload items and their S3 objects."""
    if not keys:
        return
    table = get_settings().payloads_table
    items = batch_get(table, [{"tenant_id": t, "id": i} for t, i in keys], projection="tenant_id, id, payload_s3_key")
    s3_keys = [str(i["payload_s3_key"]) for i in items if i.get("payload_s3_key")]
    for start in range(0, len(s3_keys), 1000):
        client("s3").delete_objects(
            Bucket=get_settings().payload_bucket,
            Delete={"Objects": [{"Key": k} for k in s3_keys[start : start + 1000]], "Quiet": True},
        )
    batch_write(table, deletes=[{"tenant_id": t, "id": i} for t, i in keys])


def delete_payload(tenant_id: str, message_id: str) -> None:
    """Delete one payload (and its S3 object)."""
    delete_payloads([(tenant_id, message_id)])
