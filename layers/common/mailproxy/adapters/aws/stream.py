"""MessagesTable's DynamoDB stream, as the reporter's changes (`ports.Change`)."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from mailproxy.adapters.aws.dynamo import Item, from_attr
from mailproxy.logs import logger
from mailproxy.report_format import Change

TTL_PRINCIPAL = "dynamodb.amazonaws.com"


def _stream_attr(attr: Mapping[str, Any]) -> Any:
    """A stream image's attribute value (Lambda gives binary as base64 text)."""
    ((kind, value),) = attr.items()
    if kind == "B" and isinstance(value, str):
        return base64.b64decode(value)
    if kind == "M":
        return {k: _stream_attr(v) for k, v in value.items()}
    if kind == "L":
        return [_stream_attr(v) for v in value]
    return from_attr(attr)


def stream_image(image: Mapping[str, Any] | None) -> Item | None:
    """A NEW_IMAGE/OLD_IMAGE of a Lambda stream record as a dict."""
    if not image:
        return None
    return {k: _stream_attr(v) for k, v in image.items()}


def _is_ttl_removal(record: Mapping[str, Any]) -> bool:
    identity = record.get("userIdentity") or {}
    return (
        record.get("eventName") == "REMOVE"
        and identity.get("type") == "Service"
        and identity.get("principalId") == TTL_PRINCIPAL
    )


def changes(records: list[dict[str, Any]]) -> list[Change]:
    """The changes a batch of stream records carries; an unreadable record is logged and skipped."""
    found: list[Change] = []
    for record in records:
        try:
            change = record["dynamodb"]
            key = stream_image(change["Keys"]) or {}
            created = change.get("ApproximateCreationDateTime")
            found.append(
                Change(
                    tenant_id=str(key["tenant_id"]),
                    id=str(key["id"]),
                    old=stream_image(change.get("OldImage")),
                    new=stream_image(change.get("NewImage")),
                    expired=_is_ttl_removal(record),
                    ts=int(created) if isinstance(created, int | float) and not isinstance(created, bool) else None,
                    seq=str(change.get("SequenceNumber", "")),
                )
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            logger().exception("unreadable stream record skipped", extra={"event_id": record.get("eventID")})
    return found
