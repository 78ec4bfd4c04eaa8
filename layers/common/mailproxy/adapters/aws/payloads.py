"""Message payloads, written once per submission.

Messages that go on a queue at once are written together: one S3 object per request and tenant (a
"pack", one PUT however many messages; their record names it in `pack`). The queue message carries
the payload itself, so the pack is read only to list messages or in recovery. Messages that wait
(held by a suspension, scheduled or deferred past 15 minutes) are "pinned": compressed in
`PayloadsTable` (or in S3 when too big), one item each, because they may outlive a pack, whose
objects S3 expires after `PackExpirationDays`.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from mailproxy.adapters.aws.dynamo import batch_get, batch_write, query_all
from mailproxy.adapters.aws.expressions import expression, partition
from mailproxy.aws import client, error_code
from mailproxy.compression import compress_json, decompress_json
from mailproxy.messages import pinned_keys
from mailproxy.settings import get_settings

MAX_ITEM_PAYLOAD = 350_000  # DynamoDB items stop at 400 KB; leave room for the keys
PACK_PREFIX = "payloads/packs/"  # under payloads/: the same policies; a lifecycle rule of its own


def _s3_key(tenant_id: str, message_id: str, rev: str) -> str:
    digest = hashlib.sha256(message_id.encode("utf-8")).hexdigest()
    return f"payloads/{tenant_id}/{digest}/{rev}.json.z"


def payload_item(tenant_id: str, message_id: str, rev: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The `PayloadsTable` item of a payload, first uploading it to S3 when it is too big for an item."""
    blob = compress_json(payload)
    item: dict[str, Any] = {"tenant_id": tenant_id, "id": message_id, "rev": rev}
    if len(blob) > MAX_ITEM_PAYLOAD:
        key = _s3_key(tenant_id, message_id, rev)
        client("s3").put_object(Bucket=get_settings().payload_bucket, Key=key, Body=blob)
        item["payload_s3_key"] = key
    else:
        item["payload"] = blob
    return item


def store(tenant_id: str, entries: list[tuple[str, str, dict[str, Any]]]) -> None:
    """Store (id, rev, payload) entries one item each (they may outlive any pack)."""
    store_payloads([payload_item(tenant_id, message_id, rev, payload) for message_id, rev, payload in entries])


def store_payloads(items: list[dict[str, Any]]) -> None:
    """Write payload items (from `payload_item`) by 25."""
    batch_write(get_settings().payloads_table, puts=items)


def _payload_of(item: dict[str, Any]) -> dict[str, Any]:
    if "payload" in item:
        return dict(decompress_json(bytes(item["payload"])))
    body = client("s3").get_object(Bucket=get_settings().payload_bucket, Key=item["payload_s3_key"])["Body"]
    return dict(decompress_json(body.read()))


def store_pack(tenant_id: str, entries: Iterable[tuple[str, str, dict[str, Any]]]) -> str | None:
    """Write (id, rev, payload) entries of one tenant as one pack; its key (None when there are none)."""
    packed = {message_id: [rev, payload] for message_id, rev, payload in entries}
    if not packed:
        return None
    key = f"{PACK_PREFIX}{tenant_id}/{uuid.uuid4().hex}.json.z"
    _write_pack(key, packed)
    return key


def _write_pack(key: str, packed: dict[str, list[Any]]) -> None:
    body = compress_json(packed)
    client("s3").put_object(Bucket=get_settings().payload_bucket, Key=key, Body=body)


def _read_pack(key: str) -> dict[str, list[Any]] | None:
    """A pack's entries (id → [rev, payload]), or None when it is gone (expired, or emptied)."""
    try:
        body = client("s3").get_object(Bucket=get_settings().payload_bucket, Key=key)["Body"]
    except Exception as exc:
        if error_code(exc) not in ("NoSuchKey", "404"):
            raise
        return None
    return dict(decompress_json(body.read()))


def pin(tenant_id: str, message_id: str, rev: str, payload: dict[str, Any]) -> None:
    """Store one payload on its own (a message that will wait longer than a pack lives)."""
    store_payloads([payload_item(tenant_id, message_id, rev, payload)])


def load_payloads(records: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], tuple[str, dict[str, Any]]]:
    """(tenant_id, id) → (rev, payload) for each stored payload of these message records (one read of
    each pack they name, one BatchGetItem for the pinned ones)."""
    records = list(records)
    found: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}
    pinned = pinned_keys(records)
    if pinned:
        items = batch_get(get_settings().payloads_table, [{"tenant_id": t, "id": i} for t, i in pinned])
        found.update({(str(i["tenant_id"]), str(i["id"])): (str(i["rev"]), _payload_of(i)) for i in items})
    by_pack: dict[str, list[tuple[str, str]]] = {}
    for record in records:
        if record.get("pack"):
            by_pack.setdefault(str(record["pack"]), []).append((str(record["tenant_id"]), str(record["id"])))
    for key, wanted in by_pack.items():
        packed = _read_pack(key)
        if packed is None:
            continue  # expired by the lifecycle rule: the payload is gone
        for tenant_id, message_id in wanted:
            if message_id in packed:
                rev, payload = packed[message_id]
                found[(tenant_id, message_id)] = (str(rev), payload)
    return found


def forget(records: Iterable[Mapping[str, Any]]) -> None:
    """Delete the payloads of messages their owner deleted: pinned ones, and their entries in packs
    (a pack is rewritten without them, or deleted once empty; packs are never written otherwise, so
    a rewrite cannot drop a live message's payload)."""
    records = list(records)
    delete_payloads(pinned_keys(records))
    by_pack: dict[str, set[str]] = {}
    for record in records:
        if record.get("pack"):
            by_pack.setdefault(str(record["pack"]), set()).add(str(record["id"]))
    bucket = get_settings().payload_bucket
    for key, ids in by_pack.items():
        packed = _read_pack(key)
        if packed is None:
            continue
        kept = {message_id: entry for message_id, entry in packed.items() if message_id not in ids}
        if not kept:
            client("s3").delete_object(Bucket=bucket, Key=key)
        elif len(kept) < len(packed):
            _write_pack(key, kept)


def delete_packs(tenant_id: str) -> None:
    """Delete every pack of a tenant (cascade of a tenant deletion)."""
    bucket = get_settings().payload_bucket
    pages = client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{PACK_PREFIX}{tenant_id}/")
    for page in pages:
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            client("s3").delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})


def delete_tenant_payloads(tenant_id: str) -> None:
    """Delete every payload of a tenant: its packs, and its pinned ones (its partition of PayloadsTable)
    with their S3 objects."""
    delete_packs(tenant_id)
    items = query_all(
        TableName=get_settings().payloads_table,
        **expression(key=partition("tenant_id", tenant_id), projection=["tenant_id", "id"]),
    )
    delete_payloads([(tenant_id, str(i["id"])) for i in items])


def delete_payloads(keys: list[tuple[str, str]]) -> None:
    """Delete payload items and their S3 objects."""
    if not keys:
        return
    table = get_settings().payloads_table
    items = batch_get(
        table,
        [{"tenant_id": t, "id": i} for t, i in keys],
        **expression(projection=["tenant_id", "id", "payload_s3_key"]),
    )
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
