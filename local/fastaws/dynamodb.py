"""An in-memory DynamoDB (and DynamoDB Streams) for the local stack: the operations the service uses, atomically.

Each operation runs under one lock, so a conditional write, a batch or a transaction is atomic as in
DynamoDB. Items are stored in botocore's parsed shape and never mutated once stored (a write stores a
new item), so stream images and replies can be built without defensive copies of the store.
"""

from __future__ import annotations

import bisect
import datetime
import threading
import uuid
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from local.fastaws import expressions as ex
from local.fastaws import values as v
from local.fastaws.errors import ConditionalCheckFailed, NotEmulated, ResourceNotFound, ServiceError, ValidationError
from local.fastaws.streams import Stream
from local.fastaws.updates import apply_update

MAX_HASH_KEY_BYTES = 2048
MAX_RANGE_KEY_BYTES = 1024
PAGE_BYTES = 1024 * 1024
EMPTY: tuple[()] = ()
_LEGACY = (
    "AttributesToGet",
    "Expected",
    "AttributeUpdates",
    "KeyConditions",
    "QueryFilter",
    "ScanFilter",
    "ConditionalOperator",
)


@dataclass(frozen=True)
class KeySchema:
    """The key of a table or index: hash attribute, optional range attribute, and their types."""

    hash_name: str
    hash_type: str
    range_name: str | None = None
    range_type: str | None = None

    @property
    def names(self) -> list[str]:
        return [self.hash_name] + ([self.range_name] if self.range_name else [])

    def as_request(self) -> list[dict[str, str]]:
        schema = [{"AttributeName": self.hash_name, "KeyType": "HASH"}]
        if self.range_name:
            schema.append({"AttributeName": self.range_name, "KeyType": "RANGE"})
        return schema


def _schema(key_schema: Sequence[Mapping[str, str]], types: Mapping[str, str], where: str) -> KeySchema:
    hashes = [k["AttributeName"] for k in key_schema if k.get("KeyType") == "HASH"]
    ranges = [k["AttributeName"] for k in key_schema if k.get("KeyType") == "RANGE"]
    if len(hashes) != 1 or len(ranges) > 1 or len(key_schema) != len(hashes) + len(ranges):
        raise ValidationError(f"1 validation error detected: Invalid KeySchema of {where}")
    for name in hashes + ranges:
        if name not in types:
            raise ValidationError(
                "One or more parameter values were invalid: Some index key attributes are not defined in "
                f"AttributeDefinitions. Keys: [{name}], AttributeDefinitions: {sorted(types)}"
            )
    range_name = ranges[0] if ranges else None
    return KeySchema(hashes[0], types[hashes[0]], range_name, types[range_name] if range_name else None)


@dataclass
class Index:
    """A global secondary index: sparse (only items with its key attributes), kept sorted per partition."""

    name: str
    schema: KeySchema
    projection: dict[str, Any]
    arn: str
    # index hash → sorted [(index range, table hash, table range)]
    partitions: dict[Any, list[tuple[Any, Any, Any]]] = field(default_factory=dict)

    def entry(self, item: Mapping[str, v.Value], table_key: tuple[Any, Any]) -> tuple[Any, tuple[Any, Any, Any]] | None:
        """(index hash, entry) of an item, None when the item lacks the index's key (sparse index)."""
        hash_value = item.get(self.schema.hash_name)
        if hash_value is None:
            return None
        range_sortable: Any = EMPTY
        if self.schema.range_name:
            range_value = item.get(self.schema.range_name)
            if range_value is None:
                return None
            range_sortable = v.sortable(range_value)
        return v.sortable(hash_value), (range_sortable, table_key[0], table_key[1])

    def check(self, item: Mapping[str, v.Value]) -> None:
        """DynamoDB refuses an item whose index key attribute has another type than the index's, or is empty."""
        for name, wanted in (
            (self.schema.hash_name, self.schema.hash_type),
            (self.schema.range_name, self.schema.range_type),
        ):
            if name is None or name not in item:
                continue
            actual = v.kind(item[name])
            if actual != wanted:
                raise ValidationError(
                    f"One or more parameter values were invalid: Type mismatch for Index Key {name} "
                    f"Expected: {wanted} Actual: {actual} IndexName: {self.name}"
                )
            if actual in ("S", "B") and len(item[name][actual]) == 0:
                raise ValidationError(
                    "One or more parameter values are not valid. A value specified for a secondary index key is not "
                    "supported. The AttributeValue for a key attribute cannot contain an empty string value. "
                    f"IndexName: {self.name}, IndexKey: {name}"
                )

    def add(self, item: Mapping[str, v.Value], table_key: tuple[Any, Any]) -> None:
        found = self.entry(item, table_key)
        if found is not None:
            bisect.insort(self.partitions.setdefault(found[0], []), found[1])

    def remove(self, item: Mapping[str, v.Value], table_key: tuple[Any, Any]) -> None:
        found = self.entry(item, table_key)
        if found is None:
            return
        entries = self.partitions.get(found[0])
        if not entries:
            return
        position = bisect.bisect_left(entries, found[1])
        if position < len(entries) and entries[position] == found[1]:
            del entries[position]
        if not entries:
            del self.partitions[found[0]]

    def project(self, item: Mapping[str, v.Value], table_schema: KeySchema) -> v.Item:
        """The item as the index holds it (ALL, KEYS_ONLY or INCLUDE)."""
        kind = self.projection.get("ProjectionType", "ALL")
        if kind == "ALL":
            return dict(item)
        keep = set(table_schema.names) | set(self.schema.names)
        if kind == "INCLUDE":
            keep |= set(self.projection.get("NonKeyAttributes", []))
        return {name: value for name, value in item.items() if name in keep}


@dataclass
class Partition:
    ranges: list[Any] = field(default_factory=list)
    items: dict[Any, v.Item] = field(default_factory=dict)
    sizes: dict[Any, int] = field(default_factory=dict)  # each item's size, so an update need not measure it all


class Table:
    """One table: items by partition and sorted range key, its GSIs, stream and TTL setting."""

    def __init__(self, request: Mapping[str, Any], region: str, account_id: str) -> None:
        self.name = str(request["TableName"])
        definitions = request.get("AttributeDefinitions") or []
        types = {d["AttributeName"]: d["AttributeType"] for d in definitions}
        self.attribute_definitions = [dict(d) for d in definitions]
        self.schema = _schema(request.get("KeySchema") or [], types, "the table")
        self.arn = f"arn:aws:dynamodb:{region}:{account_id}:table/{self.name}"
        self.table_id = str(uuid.uuid4())
        self.created = datetime.datetime.now(datetime.UTC)
        self.billing_mode = request.get("BillingMode", "PROVISIONED")
        self.throughput = dict(
            request.get("ProvisionedThroughput") or {"ReadCapacityUnits": 0, "WriteCapacityUnits": 0}
        )
        self.indexes: dict[str, Index] = {}
        used = set(self.schema.names)
        for index in request.get("GlobalSecondaryIndexes") or []:
            schema = _schema(index["KeySchema"], types, f"index {index['IndexName']}")
            used |= set(schema.names)
            self.indexes[index["IndexName"]] = Index(
                index["IndexName"],
                schema,
                dict(index.get("Projection") or {"ProjectionType": "ALL"}),
                f"{self.arn}/index/{index['IndexName']}",
            )
        if request.get("LocalSecondaryIndexes"):
            raise NotEmulated("LocalSecondaryIndexes")
        if set(types) - used:
            raise ValidationError(
                "One or more parameter values were invalid: Some AttributeDefinitions are not used. "
                f"AttributeDefinitions: {sorted(types)}, keys used: {sorted(used)}"
            )
        stream_spec = request.get("StreamSpecification") or {}
        self.stream: Stream | None = None
        if stream_spec.get("StreamEnabled"):
            self.stream = Stream(self.name, self.arn, stream_spec["StreamViewType"], self.schema.as_request(), region)
        self.ttl_attribute: str | None = None
        self.partitions: dict[Any, Partition] = {}
        self._scan_order: list[tuple[int, Any]] | None = None
        self.item_count = 0

    # -- keys

    def key_of(self, key: Mapping[str, v.Value], *, exact: bool) -> tuple[Any, Any]:
        """The sortable (hash, range) of a key or item; ValidationException when it does not match the schema."""
        schema = self.schema
        if exact and len(key) != len(schema.names):
            raise ValidationError("The provided key element does not match the schema")
        hash_value = key.get(schema.hash_name)
        if hash_value is None or v.kind(hash_value) != schema.hash_type:
            raise ValidationError(
                "The provided key element does not match the schema"
                if exact
                else f"One or more parameter values were invalid: Missing the key {schema.hash_name} in the item"
                if hash_value is None
                else f"One or more parameter values were invalid: Type mismatch for key {schema.hash_name} expected: "
                f"{schema.hash_type} actual: {v.kind(hash_value)}"
            )
        _check_key_value(hash_value, MAX_HASH_KEY_BYTES, "hashkey")
        range_sortable: Any = EMPTY
        if schema.range_name:
            range_value = key.get(schema.range_name)
            if range_value is None or v.kind(range_value) != schema.range_type:
                raise ValidationError(
                    "The provided key element does not match the schema"
                    if exact
                    else f"One or more parameter values were invalid: Missing the key {schema.range_name} in the item"
                    if range_value is None
                    else f"One or more parameter values were invalid: Type mismatch for key {schema.range_name} "
                    f"expected: {schema.range_type} actual: {v.kind(range_value)}"
                )
            _check_key_value(range_value, MAX_RANGE_KEY_BYTES, "rangekey")
            range_sortable = v.sortable(range_value)
        return v.sortable(hash_value), range_sortable

    def key_item(self, item: Mapping[str, v.Value]) -> v.Item:
        """The key attributes of an item."""
        return {name: item[name] for name in self.schema.names}

    # -- reads and writes (callers hold the backend's lock)

    def get(self, key: tuple[Any, Any]) -> v.Item | None:
        partition = self.partitions.get(key[0])
        return partition.items.get(key[1]) if partition is not None else None

    def write(self, key: tuple[Any, Any], new: v.Item | None, touched: set[str] | None = None) -> v.Item | None:
        """Store `new` (None deletes) at `key`, keeping indexes and stream in step; the old item.

        `touched` names the only attributes that may differ from the old item (an update's).
        """
        partition = self.partitions.get(key[0])
        old = partition.items.get(key[1]) if partition is not None else None
        size = 0
        if new is not None:
            if old is not None and touched is not None and partition is not None:
                size = partition.sizes[key[1]] + sum(
                    _attribute_size(name, new.get(name)) - _attribute_size(name, old.get(name)) for name in touched
                )
            else:
                size = v.item_size(new)
            if size > v.MAX_ITEM_BYTES:
                raise ValidationError("Item size has exceeded the maximum allowed size")
            for index in self.indexes.values():
                index.check(new)
        if old is None and new is None:
            return None
        old_size = partition.sizes.get(key[1], 0) if partition is not None else 0
        for index in self.indexes.values():
            if touched is not None and old is not None and new is not None and touched.isdisjoint(index.schema.names):
                continue  # the update left this index's key alone: its entry stays
            if old is not None:
                index.remove(old, key)
            if new is not None:
                index.add(new, key)
        if new is not None:
            if partition is None:
                partition = self.partitions[key[0]] = Partition()
                self._scan_order = None
            if old is None:
                bisect.insort(partition.ranges, key[1])
                self.item_count += 1
            partition.items[key[1]] = new
            partition.sizes[key[1]] = size
        elif partition is not None:
            del partition.items[key[1]]
            del partition.sizes[key[1]]
            del partition.ranges[bisect.bisect_left(partition.ranges, key[1])]
            self.item_count -= 1
            if not partition.items:
                del self.partitions[key[0]]
                self._scan_order = None
        if self.stream is not None:
            self.stream.append(old, new, self.schema.names, touched, (old_size, size))
        return old

    def scan_order(self) -> list[tuple[int, Any]]:
        """Partitions in a stable order that is not insertion order (as DynamoDB's hash order)."""
        if self._scan_order is None:
            self._scan_order = sorted((zlib.crc32(repr(h).encode()), h) for h in self.partitions)
        return self._scan_order

    def describe(self) -> dict[str, Any]:
        size = sum(sum(p.sizes.values()) for p in self.partitions.values())
        description: dict[str, Any] = {
            "TableName": self.name,
            "TableArn": self.arn,
            "TableId": self.table_id,
            "TableStatus": "ACTIVE",
            "KeySchema": self.schema.as_request(),
            "AttributeDefinitions": [dict(d) for d in self.attribute_definitions],
            "CreationDateTime": self.created,
            "ItemCount": self.item_count,
            "TableSizeBytes": size,
            "ProvisionedThroughput": {**self.throughput, "NumberOfDecreasesToday": 0},
            "BillingModeSummary": {"BillingMode": self.billing_mode},
            "DeletionProtectionEnabled": False,
        }
        if self.indexes:
            description["GlobalSecondaryIndexes"] = [
                {
                    "IndexName": index.name,
                    "KeySchema": index.schema.as_request(),
                    "Projection": dict(index.projection),
                    "IndexStatus": "ACTIVE",
                    "IndexArn": index.arn,
                    "ItemCount": sum(len(e) for e in index.partitions.values()),
                    "IndexSizeBytes": 0,
                    "ProvisionedThroughput": {
                        "ReadCapacityUnits": 0,
                        "WriteCapacityUnits": 0,
                        "NumberOfDecreasesToday": 0,
                    },
                }
                for index in self.indexes.values()
            ]
        if self.stream is not None:
            description["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": self.stream.view_type}
            description["LatestStreamArn"] = self.stream.arn
            description["LatestStreamLabel"] = self.stream.label
        return description


def _attribute_size(name: str, value: v.Value | None) -> int:
    return 0 if value is None else len(name.encode()) + v.value_size(value)


def _check_key_value(value: v.Value, limit: int, what: str) -> None:
    tag = v.kind(value)
    raw = value[tag]
    if tag in ("S", "B") and len(raw) == 0:
        raise ValidationError(
            "One or more parameter values are not valid. The AttributeValue for a key attribute cannot contain an "
            "empty string value."
        )
    size = len(raw.encode()) if tag == "S" else len(raw) if tag == "B" else 0
    if size > limit:
        if what == "hashkey":
            raise ValidationError(
                f"One or more parameter values were invalid: Size of hashkey has exceeded the maximum size limit of {limit} bytes"
            )
        raise ValidationError(
            f"One or more parameter values were invalid: Aggregated size of all range keys has exceeded the size limit of {limit} bytes"
        )


@dataclass
class _Write:
    """A prepared write of a batch or transaction, applied only once every check passed."""

    table: Table
    key: tuple[Any, Any]
    new: v.Item | None


class DynamoDB:
    """The tables of one emulated account, and the DynamoDB and DynamoDB Streams operations on them."""

    def __init__(self, region: str, account_id: str) -> None:
        self.region = region
        self.account_id = account_id
        self.tables: dict[str, Table] = {}
        self.lock = threading.RLock()

    def handle(self, operation: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """Run one operation (DynamoDB's or DynamoDB Streams') and return its reply."""
        method: Callable[[Mapping[str, Any]], dict[str, Any]] | None = getattr(self, f"op_{operation}", None)
        if method is None:
            raise NotEmulated(f"DynamoDB {operation}")
        for legacy in _LEGACY:
            if legacy in params:
                raise NotEmulated(f"the legacy parameter {legacy}")
        with self.lock:
            return method(params)

    def table(self, name: Any) -> Table:
        table = self.tables.get(str(name).rsplit("/", 1)[-1] if str(name).startswith("arn:") else str(name))
        if table is None:
            raise ResourceNotFound()
        return table

    # ------------------------------------------------------------------ control plane

    def op_CreateTable(self, params: Mapping[str, Any]) -> dict[str, Any]:
        name = str(params["TableName"])
        if name in self.tables:
            raise ServiceError("ResourceInUseException", f"Table already exists: {name}")
        table = Table(params, self.region, self.account_id)
        self.tables[name] = table
        return {"TableDescription": table.describe()}

    def op_DescribeTable(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return {"Table": self.table(params["TableName"]).describe()}

    def op_DeleteTable(self, params: Mapping[str, Any]) -> dict[str, Any]:
        table = self.table(params["TableName"])
        del self.tables[table.name]
        return {"TableDescription": {**table.describe(), "TableStatus": "DELETING"}}

    def op_ListTables(self, params: Mapping[str, Any]) -> dict[str, Any]:
        names = sorted(self.tables)
        start = params.get("ExclusiveStartTableName")
        if start:
            names = [n for n in names if n > start]
        limit = int(params.get("Limit", 100))
        reply: dict[str, Any] = {"TableNames": names[:limit]}
        if len(names) > limit:
            reply["LastEvaluatedTableName"] = names[limit - 1]
        return reply

    def op_UpdateTimeToLive(self, params: Mapping[str, Any]) -> dict[str, Any]:
        table = self.table(params["TableName"])
        spec = params["TimeToLiveSpecification"]
        if spec.get("Enabled") and table.ttl_attribute:
            raise ValidationError("TimeToLive is already enabled")
        table.ttl_attribute = str(spec["AttributeName"]) if spec.get("Enabled") else None
        return {"TimeToLiveSpecification": dict(spec)}

    def op_DescribeTimeToLive(self, params: Mapping[str, Any]) -> dict[str, Any]:
        table = self.table(params["TableName"])
        if table.ttl_attribute is None:
            return {"TimeToLiveDescription": {"TimeToLiveStatus": "DISABLED"}}
        return {"TimeToLiveDescription": {"TimeToLiveStatus": "ENABLED", "AttributeName": table.ttl_attribute}}

    # ------------------------------------------------------------------ single items

    def op_GetItem(self, params: Mapping[str, Any]) -> dict[str, Any]:
        table = self.table(params["TableName"])
        key = table.key_of(params["Key"], exact=True)
        projection = self._projection(params)
        found = table.get(key)
        if found is None:
            return {}
        return {"Item": self._shape(found, projection)}

    def op_PutItem(self, params: Mapping[str, Any]) -> dict[str, Any]:
        table = self.table(params["TableName"])
        item = v.normalize_item(params["Item"])
        return self._replace(table, table.key_of(item, exact=False), item, params)

    def op_DeleteItem(self, params: Mapping[str, Any]) -> dict[str, Any]:
        table = self.table(params["TableName"])
        return self._replace(table, table.key_of(params["Key"], exact=True), None, params)

    def _replace(
        self, table: Table, key: tuple[Any, Any], item: v.Item | None, params: Mapping[str, Any]
    ) -> dict[str, Any]:
        """PutItem (`item`) or DeleteItem (None): the condition checked on the old item, then the write."""
        condition = self._condition(params, "ConditionExpression")
        returns = params.get("ReturnValues", "NONE")
        if returns not in ("NONE", "ALL_OLD"):
            raise ValidationError("ReturnValues can only be ALL_OLD or NONE")
        old = table.get(key)
        self._check(condition, old, params)
        table.write(key, item)
        return {"Attributes": v.copy_item(old)} if returns == "ALL_OLD" and old is not None else {}

    def op_UpdateItem(self, params: Mapping[str, Any]) -> dict[str, Any]:
        table = self.table(params["TableName"])
        key_item = v.normalize_item(params["Key"])
        key = table.key_of(key_item, exact=True)
        new, old, touched = self._updated(table, key, key_item, params)
        try:
            table.write(key, new, touched if old is not None else None)
        except ValidationError as exc:
            if exc.message.startswith("Item size"):
                raise ValidationError("Item size to update has exceeded the maximum allowed size") from None
            raise
        returns = params.get("ReturnValues", "NONE")
        if returns == "ALL_NEW":
            return {"Attributes": v.copy_item(new)}
        if returns == "ALL_OLD":
            return {"Attributes": v.copy_item(old)} if old else {}
        if returns == "UPDATED_NEW":
            chosen = {n: v.copy_value(new[n]) for n in touched if n in new}
            return {"Attributes": chosen} if chosen else {}
        if returns == "UPDATED_OLD":
            chosen = {n: v.copy_value(old[n]) for n in touched if old and n in old}
            return {"Attributes": chosen} if chosen else {}
        if returns != "NONE":
            raise ValidationError(f"Invalid ReturnValues: {returns}")
        return {}

    def _updated(
        self, table: Table, key: tuple[Any, Any], key_item: v.Item, params: Mapping[str, Any]
    ) -> tuple[v.Item, v.Item | None, set[str]]:
        """(new item, old item, touched attributes) of an UpdateItem, after its condition held."""
        names = params.get("ExpressionAttributeNames")
        values = self._values(params)
        used: list[ex.Parsed[Any]] = []
        update_text = params.get("UpdateExpression")
        update = ex.parse_update(update_text, ex.names_key(names)) if update_text else None
        if update is not None:
            used.append(update)
        condition = None
        if params.get("ConditionExpression"):
            condition = ex.parse_condition(params["ConditionExpression"], ex.names_key(names))
            used.append(condition)
        ex.check_placeholders(names, params.get("ExpressionAttributeValues"), used)
        old = table.get(key)
        if condition is not None and not condition.tree.holds(old or {}, values):
            self._failed(old, params)
        base = old if old is not None else key_item
        if update is None:
            return dict(base), old, set()
        new, touched = apply_update(base, update.tree, values, table.schema.names)
        return new, old, touched

    # ------------------------------------------------------------------ batches and transactions

    def op_BatchGetItem(self, params: Mapping[str, Any]) -> dict[str, Any]:
        requests = params["RequestItems"]
        if sum(len(r.get("Keys", [])) for r in requests.values()) > 100:
            raise ValidationError("Too many items requested for the BatchGetItem call")
        responses: dict[str, list[v.Item]] = {}
        for name, request in requests.items():
            table = self.table(name)
            projection = self._projection(request)
            keys = [table.key_of(k, exact=True) for k in request["Keys"]]
            if len(set(keys)) != len(keys):
                raise ValidationError("Provided list of item keys contains duplicates")
            found = [table.get(k) for k in keys]
            responses[name] = [self._shape(item, projection) for item in found if item is not None]
        return {"Responses": responses, "UnprocessedKeys": {}}

    def op_BatchWriteItem(self, params: Mapping[str, Any]) -> dict[str, Any]:
        requests = params["RequestItems"]
        if sum(len(r) for r in requests.values()) > 25:
            raise ValidationError(
                "1 validation error detected: Value at 'requestItems' failed to satisfy constraint: "
                "Map value must satisfy constraint: [Member must have length less than or equal to 25]"
            )
        writes: list[_Write] = []
        for name, entries in requests.items():
            table = self.table(name)
            seen: set[tuple[Any, Any]] = set()
            for entry in entries:
                if "PutRequest" in entry:
                    item = v.normalize_item(entry["PutRequest"]["Item"])
                    key = table.key_of(item, exact=False)
                    new: v.Item | None = item
                    if v.item_size(item) > v.MAX_ITEM_BYTES:
                        raise ValidationError("Item size has exceeded the maximum allowed size")
                    for index in table.indexes.values():
                        index.check(item)
                else:
                    key = table.key_of(entry["DeleteRequest"]["Key"], exact=True)
                    new = None
                if key in seen:
                    raise ValidationError("Provided list of item keys contains duplicates")
                seen.add(key)
                writes.append(_Write(table, key, new))
        for write in writes:
            write.table.write(write.key, write.new)
        return {"UnprocessedItems": {}}

    def op_TransactWriteItems(self, params: Mapping[str, Any]) -> dict[str, Any]:
        actions = params["TransactItems"]
        if len(actions) > 100:
            raise ValidationError("Member must have length less than or equal to 100")
        writes: list[_Write | None] = []
        reasons: list[dict[str, Any]] = []
        targets: set[tuple[str, tuple[Any, Any]]] = set()
        for action in actions:
            ((verb, request),) = action.items()
            table = self.table(request["TableName"])
            if verb == "Put":
                item = v.normalize_item(request["Item"])
                key = table.key_of(item, exact=False)
            else:
                item = v.normalize_item(request["Key"])
                key = table.key_of(item, exact=True)
            if (table.name, key) in targets:
                raise ValidationError("Transaction request cannot include multiple operations on one item")
            targets.add((table.name, key))
            try:
                writes.append(self._transact_action(verb, table, key, item, request))
                reasons.append({"Code": "None"})
            except ConditionalCheckFailed as failed:
                writes.append(None)
                reason: dict[str, Any] = {"Code": "ConditionalCheckFailed", "Message": "The conditional request failed"}
                if "Item" in failed.extra:
                    reason["Item"] = failed.extra["Item"]
                reasons.append(reason)
            except ValidationError as invalid:
                if invalid.message.startswith("Invalid") or "ExpressionAttribute" in invalid.message:
                    raise
                writes.append(None)
                reasons.append({"Code": "ValidationError", "Message": invalid.message})
        if any(reason["Code"] != "None" for reason in reasons):
            codes = ", ".join(reason["Code"] for reason in reasons)
            raise ServiceError(
                "TransactionCanceledException",
                f"Transaction cancelled, please refer cancellation reasons for specific reasons [{codes}]",
                CancellationReasons=reasons,
            )
        for write in writes:
            if write is not None and write.new is not _UNCHANGED:
                write.table.write(write.key, write.new)
        return {}

    def _transact_action(
        self, verb: str, table: Table, key: tuple[Any, Any], item: v.Item, request: Mapping[str, Any]
    ) -> _Write:
        if verb == "Update":
            new, _, _ = self._updated(table, key, item, request)
            if v.item_size(new) > v.MAX_ITEM_BYTES:
                raise ValidationError("Item size to update has exceeded the maximum allowed size")
            for index in table.indexes.values():
                index.check(new)
            return _Write(table, key, new)
        condition = self._condition(request, "ConditionExpression")
        if verb == "ConditionCheck" and condition is None:
            raise ValidationError("The ConditionExpression of a ConditionCheck must be set")
        self._check(condition, table.get(key), request)
        if verb == "Put":
            if v.item_size(item) > v.MAX_ITEM_BYTES:
                raise ValidationError("Item size has exceeded the maximum allowed size")
            for index in table.indexes.values():
                index.check(item)
            return _Write(table, key, item)
        if verb == "Delete":
            return _Write(table, key, None)
        if verb == "ConditionCheck":
            return _Write(table, key, _UNCHANGED)
        raise ValidationError(f"Unknown transaction action {verb}")

    def op_TransactGetItems(self, params: Mapping[str, Any]) -> dict[str, Any]:
        responses: list[dict[str, Any]] = []
        for action in params["TransactItems"]:
            request = action["Get"]
            table = self.table(request["TableName"])
            found = table.get(table.key_of(request["Key"], exact=True))
            projection = self._projection(request)
            responses.append({"Item": self._shape(found, projection)} if found is not None else {})
        return {"Responses": responses}

    # ------------------------------------------------------------------ query and scan

    def op_Query(self, params: Mapping[str, Any]) -> dict[str, Any]:
        table = self.table(params["TableName"])
        index = self._index(table, params)
        schema = index.schema if index else table.schema
        names = params.get("ExpressionAttributeNames")
        values = self._values(params)
        if not params.get("KeyConditionExpression"):
            raise ValidationError(
                "Either the KeyConditions or KeyConditionExpression parameter must be specified in the request."
            )
        key_condition = ex.parse_condition(
            params["KeyConditionExpression"], ex.names_key(names), "KeyConditionExpression"
        )
        used: list[ex.Parsed[Any]] = [key_condition]
        filter_ = self._parsed_filter(params, names, used)
        if filter_ is not None:
            for path in _paths_of(filter_.tree):
                if path[0] in schema.names:
                    raise ValidationError(
                        f"Filter Expression can only contain non-primary key attributes: Primary key attribute: {path[0]}"
                    )
        projection = self._parsed_projection(params, names, used)
        ex.check_placeholders(names, params.get("ExpressionAttributeValues"), used)
        hash_value, low, high, prefix = _key_range(key_condition.tree, schema, values)
        forward = params.get("ScanIndexForward", True)
        start = params.get("ExclusiveStartKey")
        if index is None:
            partition = table.partitions.get(hash_value)
            ranges = partition.ranges if partition else []
            lo, hi = _bounds(ranges, low, high, prefix, lambda r: r)
            if start:
                position = table.key_of(v.normalize_item(start), exact=True)[1]
                if forward:
                    lo = max(lo, bisect.bisect_right(ranges, position, lo, hi))
                else:
                    hi = min(hi, bisect.bisect_left(ranges, position, lo, hi))
            chosen = ranges[lo:hi]
            assert partition is not None or not chosen
            rows: Iterator[tuple[v.Item, int]] = (
                (partition.items[r], partition.sizes[r])  # type: ignore[union-attr]
                for r in (chosen if forward else reversed(chosen))
            )
        else:
            entries = index.partitions.get(hash_value, [])
            lo, hi = _bounds(entries, low, high, prefix, lambda e: e[0])
            if start:
                start_item = v.normalize_item(start)
                table_key = table.key_of(start_item, exact=False)
                found = index.entry(start_item, table_key)
                if found is None:
                    raise ValidationError("The provided starting key is invalid")
                if forward:
                    lo = max(lo, bisect.bisect_right(entries, found[1], lo, hi))
                else:
                    hi = min(hi, bisect.bisect_left(entries, found[1], lo, hi))
            chosen_entries = entries[lo:hi]
            ordered = chosen_entries if forward else list(reversed(chosen_entries))
            rows = (_index_row(index, table, (e[1], e[2])) for e in ordered)
        return self._page(table, index, rows, params, filter_, projection, values)

    def op_Scan(self, params: Mapping[str, Any]) -> dict[str, Any]:
        table = self.table(params["TableName"])
        index = self._index(table, params)
        if "Segment" in params or "TotalSegments" in params:
            raise NotEmulated("parallel Scan (Segment, TotalSegments)")
        names = params.get("ExpressionAttributeNames")
        values = self._values(params)
        used: list[ex.Parsed[Any]] = []
        filter_ = self._parsed_filter(params, names, used)
        projection = self._parsed_projection(params, names, used)
        ex.check_placeholders(names, params.get("ExpressionAttributeValues"), used)
        start = params.get("ExclusiveStartKey")
        start_key = table.key_of(v.normalize_item(start), exact=False) if start else None
        if index is not None:
            raise NotEmulated("Scan of a secondary index")
        return self._page(table, None, self._scan_rows(table, start_key), params, filter_, projection, values)

    def _scan_rows(self, table: Table, start: tuple[Any, Any] | None) -> Iterator[tuple[v.Item, int]]:
        order = table.scan_order()
        first = 0
        if start is not None:
            first = bisect.bisect_left(order, (zlib.crc32(repr(start[0]).encode()), start[0]))
        for position in range(first, len(order)):
            hash_value = order[position][1]
            partition = table.partitions.get(hash_value)
            if partition is None:
                continue
            ranges = partition.ranges
            begin = 0
            if start is not None and hash_value == start[0]:
                begin = bisect.bisect_right(ranges, start[1])
            for range_value in ranges[begin:]:
                yield partition.items[range_value], partition.sizes[range_value]

    def _page(
        self,
        table: Table,
        index: Index | None,
        rows: Iterator[tuple[v.Item, int]],
        params: Mapping[str, Any],
        filter_: ex.Parsed[ex.Condition] | None,
        projection: ex.Parsed[tuple[ex.Path, ...]] | None,
        values: ex.Values,
    ) -> dict[str, Any]:
        limit = params.get("Limit")
        if limit is not None and int(limit) < 1:
            raise ValidationError("Limit must be greater than or equal to 1")
        select = params.get("Select", "ALL_ATTRIBUTES")
        if select not in ("ALL_ATTRIBUTES", "COUNT", "ALL_PROJECTED_ATTRIBUTES", "SPECIFIC_ATTRIBUTES"):
            raise ValidationError(f"Invalid Select: {select}")
        items: list[v.Item] = []
        scanned = 0
        count = 0
        read_bytes = 0
        last: v.Item | None = None
        more = False
        for row, size in rows:
            if (limit is not None and scanned >= int(limit)) or read_bytes >= PAGE_BYTES:
                more = True
                break
            scanned += 1
            read_bytes += size
            last = row
            if filter_ is not None and not filter_.tree.holds(row, values):
                continue
            count += 1
            if select != "COUNT":
                items.append(self._shape(row, projection.tree if projection else None))
        # Like DynamoDB, a page stopped by Limit returns LastEvaluatedKey even when nothing follows.
        if limit is not None and scanned >= int(limit) and last is not None:
            more = True
        reply: dict[str, Any] = {"Count": count, "ScannedCount": scanned}
        if select != "COUNT":
            reply["Items"] = items
        if more and last is not None:
            names = set(table.schema.names) | (set(index.schema.names) if index else set())
            reply["LastEvaluatedKey"] = {n: v.copy_value(last[n]) for n in names if n in last}
        return reply

    # ------------------------------------------------------------------ streams

    def op_ListStreams(self, params: Mapping[str, Any]) -> dict[str, Any]:
        wanted = params.get("TableName")
        streams = [
            {"StreamArn": t.stream.arn, "TableName": t.name, "StreamLabel": t.stream.label}
            for t in self.tables.values()
            if t.stream is not None and (wanted is None or t.name == wanted)
        ]
        return {"Streams": streams}

    def _stream(self, arn: str) -> Stream:
        for table in self.tables.values():
            if table.stream is not None and table.stream.arn == arn:
                return table.stream
        raise ResourceNotFound(f"Requested resource not found: Stream: {arn} not found")

    def op_DescribeStream(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return {"StreamDescription": self._stream(str(params["StreamArn"])).description()}

    def op_GetShardIterator(self, params: Mapping[str, Any]) -> dict[str, Any]:
        stream = self._stream(str(params["StreamArn"]))
        iterator = stream.iterator(
            str(params["ShardId"]), str(params["ShardIteratorType"]), params.get("SequenceNumber")
        )
        return {"ShardIterator": iterator}

    def op_GetRecords(self, params: Mapping[str, Any]) -> dict[str, Any]:
        try:
            arn, shard_id, position = str(params["ShardIterator"]).rsplit("|", 2)
            start = int(position)
        except ValueError:
            raise ValidationError("Invalid ShardIterator") from None
        stream = self._stream(arn)
        if shard_id != stream.shard_id:
            raise ValidationError("Invalid ShardIterator")
        limit = int(params.get("Limit", 1000))
        if not 1 <= limit <= 1000:
            raise ValidationError("Limit must be between 1 and 1000")
        records, following = stream.read(start, limit)
        return {"Records": records, "NextShardIterator": f"{arn}|{shard_id}|{following}"}

    # ------------------------------------------------------------------ helpers

    def _index(self, table: Table, params: Mapping[str, Any]) -> Index | None:
        name = params.get("IndexName")
        if name is None:
            return None
        index = table.indexes.get(name)
        if index is None:
            raise ValidationError(f"The table does not have the specified index: {name}")
        if params.get("ConsistentRead"):
            raise ValidationError("Consistent reads are not supported on global secondary indexes")
        return index

    @staticmethod
    def _values(params: Mapping[str, Any]) -> dict[str, v.Value]:
        raw = params.get("ExpressionAttributeValues")
        if raw is None:
            return {}
        return {str(name): v.normalize_value(value) for name, value in raw.items()}

    def _condition(self, params: Mapping[str, Any], field_name: str) -> ex.Parsed[ex.Condition] | None:
        names = params.get("ExpressionAttributeNames")
        values = params.get("ExpressionAttributeValues")
        text = params.get(field_name)
        parsed = ex.parse_condition(text, ex.names_key(names)) if text else None
        ex.check_placeholders(names, values, [parsed] if parsed else [])
        return parsed

    def _check(self, condition: ex.Parsed[ex.Condition] | None, old: v.Item | None, params: Mapping[str, Any]) -> None:
        if condition is not None and not condition.tree.holds(old or {}, self._values(params)):
            self._failed(old, params)

    @staticmethod
    def _failed(old: v.Item | None, params: Mapping[str, Any]) -> None:
        wanted = params.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD"
        raise ConditionalCheckFailed(v.copy_item(old) if wanted and old is not None else None)

    @staticmethod
    def _parsed_filter(
        params: Mapping[str, Any], names: Mapping[str, str] | None, used: list[ex.Parsed[Any]]
    ) -> ex.Parsed[ex.Condition] | None:
        text = params.get("FilterExpression")
        if not text:
            return None
        parsed = ex.parse_condition(text, ex.names_key(names), "FilterExpression")
        used.append(parsed)
        return parsed

    @staticmethod
    def _parsed_projection(
        params: Mapping[str, Any], names: Mapping[str, str] | None, used: list[ex.Parsed[Any]]
    ) -> ex.Parsed[tuple[ex.Path, ...]] | None:
        text = params.get("ProjectionExpression")
        if not text:
            return None
        parsed = ex.parse_projection(text, ex.names_key(names))
        used.append(parsed)
        return parsed

    def _projection(self, params: Mapping[str, Any]) -> tuple[ex.Path, ...] | None:
        names = params.get("ExpressionAttributeNames")
        text = params.get("ProjectionExpression")
        parsed = ex.parse_projection(text, ex.names_key(names)) if text else None
        ex.check_placeholders(names, None, [parsed] if parsed else [])
        return parsed.tree if parsed else None

    @staticmethod
    def _shape(item: v.Item, projection: tuple[ex.Path, ...] | None) -> v.Item:
        return ex.project(item, projection) if projection else v.copy_item(item)


def _index_row(index: Index, table: Table, key: tuple[Any, Any]) -> tuple[v.Item, int]:
    item = index.project(table.get(key) or {}, table.schema)
    return item, v.item_size(item)


# A ConditionCheck's "write": the item stays as it is.
_UNCHANGED: Any = object()


def _paths_of(condition: ex.Condition) -> Iterator[ex.Path]:
    """Every document path a condition reads."""
    for value in vars(condition).values():
        candidates = value if isinstance(value, tuple) and value and not isinstance(value[0], str | int) else (value,)
        for candidate in candidates:
            if isinstance(candidate, ex.Condition):
                yield from _paths_of(candidate)
            elif isinstance(candidate, ex.PathOperand | ex.SizeOperand):
                yield candidate.path
    if isinstance(condition, ex.Exists | ex.AttributeType):
        yield condition.path


def _key_range(
    condition: ex.Condition, schema: KeySchema, values: ex.Values
) -> tuple[Any, tuple[Any, bool] | None, tuple[Any, bool] | None, Any]:
    """(hash value, low bound, high bound, prefix) of a key condition; bounds are (value, inclusive)."""
    parts = [condition.left, condition.right] if isinstance(condition, ex.And) else [condition]
    if len(parts) > 2 or any(isinstance(p, ex.And | ex.Or | ex.Not) for p in parts):
        raise ValidationError("Invalid KeyConditionExpression: Conditions can be of length 1 or 2 only")
    hash_value: Any = None
    low: tuple[Any, bool] | None = None
    high: tuple[Any, bool] | None = None
    prefix: Any = None
    for part in parts:
        if isinstance(part, ex.Comparison) and part.op == "=" and _key_path(part.left) == schema.hash_name:
            if hash_value is not None:
                raise ValidationError("Invalid KeyConditionExpression: The hash key is used more than once")
            hash_value = _key_value(part.right, schema.hash_type, values)
            continue
        name = _key_path(part.operand if isinstance(part, ex.Between | ex.BeginsWith) else getattr(part, "left", None))
        if schema.range_name is None or name != schema.range_name or (low, high, prefix) != (None, None, None):
            raise ValidationError(
                f"Query condition missed key schema element: {schema.hash_name}"
                if name != schema.range_name
                else "Invalid KeyConditionExpression: The range key is used more than once"
            )
        range_type = schema.range_type or "S"
        if isinstance(part, ex.Comparison):
            if part.op == "<>":
                raise ValidationError(
                    "Invalid KeyConditionExpression: Invalid operator used in KeyConditionExpression: <>"
                )
            bound = _key_value(part.right, range_type, values)
            if part.op == "=":
                low, high = (bound, True), (bound, True)
            elif part.op in ("<", "<="):
                high = (bound, part.op == "<=")
            else:
                low = (bound, part.op == ">=")
        elif isinstance(part, ex.Between):
            lo, hi = _key_value(part.low, range_type, values), _key_value(part.high, range_type, values)
            if lo > hi:
                raise ValidationError(
                    "Invalid KeyConditionExpression: The BETWEEN operator requires upper bound to be greater than or "
                    "equal to lower bound"
                )
            low, high = (lo, True), (hi, True)
        elif isinstance(part, ex.BeginsWith):
            if range_type == "N":
                raise ValidationError(
                    "Invalid KeyConditionExpression: Incorrect operand type for operator or function; operator or function: begins_with, operand type: N"
                )
            prefix = _key_value(part.prefix, range_type, values)
        else:
            raise ValidationError("Invalid operator used in KeyConditionExpression")
    if hash_value is None:
        raise ValidationError(f"Query condition missed key schema element: {schema.hash_name}")
    return hash_value, low, high, prefix


def _key_path(operand: Any) -> str | None:
    if isinstance(operand, ex.PathOperand) and len(operand.path) == 1:
        return str(operand.path[0])
    return None


def _key_value(operand: ex.Operand, wanted: str, values: ex.Values) -> Any:
    if not isinstance(operand, ex.ValueOperand):
        raise ValidationError("Invalid KeyConditionExpression: the key must be compared with a value")
    value = values[operand.placeholder]
    if v.kind(value) != wanted:
        raise ValidationError(
            "One or more parameter values were invalid: Condition parameter type does not match schema type"
        )
    return v.sortable(value)


def _bounds(
    entries: Sequence[Any],
    low: tuple[Any, bool] | None,
    high: tuple[Any, bool] | None,
    prefix: Any,
    key: Callable[[Any], Any],
) -> tuple[int, int]:
    lo, hi = 0, len(entries)
    if low is not None:
        lo = (bisect.bisect_left if low[1] else bisect.bisect_right)(entries, low[0], key=key)
    if high is not None:
        hi = (bisect.bisect_right if high[1] else bisect.bisect_left)(entries, high[0], key=key)
    if prefix is not None:
        lo = max(lo, bisect.bisect_left(entries, prefix, key=key))
        end = lo
        while end < hi and key(entries[end]).startswith(prefix):
            end += 1
        hi = end
    return lo, max(lo, hi)
