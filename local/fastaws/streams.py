"""DynamoDB Streams of the emulated tables: one open shard per stream, records kept 24 hours."""

from __future__ import annotations

import datetime
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from local.fastaws import values as v
from local.fastaws.errors import ServiceError, ValidationError

RETENTION_SECONDS = 24 * 3600
# Sequence numbers are decimal strings that grow; AWS's have 21 digits or more.
_SEQUENCE_BASE = 10**20


@dataclass
class StreamRecord:
    sequence: int
    created: float
    event_name: str
    keys: v.Item
    old_image: v.Item | None
    new_image: v.Item | None
    size: int
    event_id: str = field(default_factory=lambda: uuid.uuid4().hex)


class Stream:
    """The change log of one table (NEW_AND_OLD_IMAGES, NEW_IMAGE, OLD_IMAGE or KEYS_ONLY)."""

    def __init__(
        self, table_name: str, table_arn: str, view_type: str, key_schema: list[dict[str, str]], region: str
    ) -> None:
        created = datetime.datetime.now(datetime.UTC)
        self.label = created.strftime("%Y-%m-%dT%H:%M:%S.") + f"{created.microsecond // 1000:03d}"
        self.arn = f"{table_arn}/stream/{self.label}"
        self.table_name = table_name
        self.view_type = view_type
        self.key_schema = key_schema
        self.region = region
        self.created = created
        self.shard_id = f"shardId-{int(created.timestamp() * 1000):020d}-{uuid.uuid4().hex[:8]}"
        self.records: list[StreamRecord] = []
        self._first = 0  # absolute index of records[0] after trimming
        self._next_sequence = _SEQUENCE_BASE + 1

    def append(
        self,
        old: v.Item | None,
        new: v.Item | None,
        key_names: list[str],
        touched: set[str] | None = None,
        sizes: tuple[int, int] = (0, 0),
    ) -> None:
        """Record a change; nothing when the item did not change, as DynamoDB Streams.

        `touched` (an update's attributes) limits the comparison to what the write could have changed;
        `sizes` are the old and new items' sizes, which make the record's SizeBytes.
        """
        if old is not None and new is not None and _same_item(old, new, touched):
            return
        if old is None and new is None:
            return
        source = new if new is not None else old
        assert source is not None
        keys = {name: v.copy_value(source[name]) for name in key_names}
        event = "INSERT" if old is None else "REMOVE" if new is None else "MODIFY"
        keep_new = self.view_type in ("NEW_IMAGE", "NEW_AND_OLD_IMAGES")
        keep_old = self.view_type in ("OLD_IMAGE", "NEW_AND_OLD_IMAGES")
        # Stored items are never mutated in place (updates build a new item), so images can be shared.
        record = StreamRecord(
            sequence=self._next_sequence,
            created=time.time(),
            event_name=event,
            keys=keys,
            old_image=old if keep_old else None,
            new_image=new if keep_new else None,
            size=v.item_size(keys) + (sizes[1] if keep_new else 0) + (sizes[0] if keep_old else 0),
        )
        self._next_sequence += 1
        self.records.append(record)
        self._trim(record.created)

    def _trim(self, now: float) -> None:
        cutoff = now - RETENTION_SECONDS
        drop = 0
        while drop < len(self.records) and self.records[drop].created < cutoff:
            drop += 1
        if drop:
            del self.records[:drop]
            self._first += drop

    def description(self) -> dict[str, Any]:
        """DescribeStream's StreamDescription."""
        shard: dict[str, Any] = {
            "ShardId": self.shard_id,
            "SequenceNumberRange": {"StartingSequenceNumber": str(_SEQUENCE_BASE + 1)},
        }
        return {
            "StreamArn": self.arn,
            "StreamLabel": self.label,
            "StreamStatus": "ENABLED",
            "StreamViewType": self.view_type,
            "CreationRequestDateTime": self.created,
            "TableName": self.table_name,
            "KeySchema": [dict(k) for k in self.key_schema],
            "Shards": [shard],
        }

    def iterator(self, shard_id: str, iterator_type: str, sequence_number: str | None) -> str:
        """A shard iterator: the absolute position of the next record to read."""
        if shard_id != self.shard_id:
            raise ServiceError("ResourceNotFoundException", f"Shard {shard_id} does not exist")
        end = self._first + len(self.records)
        if iterator_type == "TRIM_HORIZON":
            position = self._first
        elif iterator_type == "LATEST":
            position = end
        elif iterator_type in ("AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER"):
            if sequence_number is None:
                raise ValidationError("Must specify a SequenceNumber for " + iterator_type)
            wanted = int(sequence_number)
            position = end
            for index, record in enumerate(self.records):
                if record.sequence >= wanted:
                    position = self._first + index
                    if iterator_type == "AFTER_SEQUENCE_NUMBER" and record.sequence == wanted:
                        position += 1
                    break
        else:
            raise ValidationError(f"Invalid ShardIteratorType {iterator_type}")
        return f"{self.arn}|{self.shard_id}|{position}"

    def read(self, position: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        """Records from an absolute position (as GetRecords returns them) and the next position."""
        start = max(position, self._first) - self._first
        chosen = self.records[start : start + limit]
        return [self._as_reply(record) for record in chosen], self._first + start + len(chosen)

    def _as_reply(self, record: StreamRecord) -> dict[str, Any]:
        body: dict[str, Any] = {
            "ApproximateCreationDateTime": datetime.datetime.fromtimestamp(int(record.created), datetime.UTC),
            "Keys": v.copy_item(record.keys),
            "SequenceNumber": str(record.sequence),
            "SizeBytes": record.size,
            "StreamViewType": self.view_type,
        }
        if record.new_image is not None:
            body["NewImage"] = v.copy_item(record.new_image)
        if record.old_image is not None:
            body["OldImage"] = v.copy_item(record.old_image)
        return {
            "eventID": record.event_id,
            "eventName": record.event_name,
            "eventVersion": "1.1",
            "eventSource": "aws:dynamodb",
            "awsRegion": self.region,
            "dynamodb": body,
        }


def _same_item(a: Mapping[str, v.Value], b: Mapping[str, v.Value], touched: set[str] | None) -> bool:
    if touched is not None:
        return all(_same(a.get(name), b.get(name)) for name in touched)
    return a.keys() == b.keys() and all(v.equal(a[name], b[name]) for name in a)


def _same(a: v.Value | None, b: v.Value | None) -> bool:
    return (a is None and b is None) or v.equal(a, b)
