"""The fast backend's DynamoDB answers as DynamoDB does, for every expression form the service uses."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from local.fastaws import hook
from tests.unit.fastaws_support import backend, client

__all__ = ["backend"]

KEY = {"pk": {"S": "p"}, "sk": {"S": "s"}}


@pytest.fixture
def ddb(backend: hook.FastAws) -> Any:
    dynamodb = client("dynamodb")
    dynamodb.create_table(
        TableName="t",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
            {"AttributeName": "park_shard", "AttributeType": "S"},
            {"AttributeName": "park_ts", "AttributeType": "N"},
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "Parked",
                "KeySchema": [
                    {"AttributeName": "park_shard", "KeyType": "HASH"},
                    {"AttributeName": "park_ts", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["status"]},
            }
        ],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    return dynamodb


def error_code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def get(ddb: Any, key: dict[str, Any] = KEY) -> dict[str, Any] | None:
    reply: dict[str, Any] = ddb.get_item(TableName="t", Key=key, ConsistentRead=True)
    return reply.get("Item")


def update(ddb: Any, expression: str, values: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    request: dict[str, Any] = {"TableName": "t", "Key": KEY, "UpdateExpression": expression, **kwargs}
    if values:
        request["ExpressionAttributeValues"] = values
    return ddb.update_item(**request)


def test_a_failed_condition_leaves_the_item_unchanged_and_can_return_it(ddb: Any) -> None:
    ddb.put_item(TableName="t", Item={**KEY, "v": {"N": "1"}})
    with pytest.raises(ClientError) as failed:
        update(
            ddb,
            "SET v = :two",
            {":two": {"N": "2"}, ":one": {"N": "1"}},
            ConditionExpression="v > :one",
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
    assert error_code(failed) == "ConditionalCheckFailedException"
    assert failed.value.response["Item"]["v"] == {"N": "1"}
    assert get(ddb) == {**KEY, "v": {"N": "1"}}


def test_list_append_on_a_missing_list_needs_if_not_exists(ddb: Any) -> None:
    event = {":e": {"L": [{"S": "queued"}]}}
    with pytest.raises(ClientError) as missing:
        update(ddb, "SET h = list_append(h, :e)", event)
    assert error_code(missing) == "ValidationException"
    assert get(ddb) is None
    update(ddb, "SET h = list_append(if_not_exists(h, :empty), :e)", {**event, ":empty": {"L": []}})
    update(ddb, "SET h = list_append(if_not_exists(h, :empty), :e)", {**event, ":empty": {"L": []}})
    assert get(ddb) == {**KEY, "h": {"L": [{"S": "queued"}, {"S": "queued"}]}}


def test_nested_paths_set_inside_list_elements_and_need_their_parent(ddb: Any) -> None:
    history = {"L": [{"M": {"t": {"S": "queued"}}}, {"M": {"t": {"S": "sent"}}}]}
    ddb.put_item(TableName="t", Item={**KEY, "history": history})
    update(
        ddb,
        "SET #h[1].#r = :now, #h[7] = :extra",
        {":now": {"N": "5"}, ":extra": {"S": "appended"}},
        ExpressionAttributeNames={"#h": "history", "#r": "reported_ts"},
    )
    item = get(ddb)
    assert item is not None
    assert item["history"]["L"][1] == {"M": {"t": {"S": "sent"}, "reported_ts": {"N": "5"}}}
    assert item["history"]["L"][2] == {"S": "appended"}  # past the end: appended
    with pytest.raises(ClientError) as invalid:
        update(ddb, "SET nothing.here = :v", {":v": {"N": "1"}})
    assert error_code(invalid) == "ValidationException"


def test_removing_list_elements_uses_the_original_indexes(ddb: Any) -> None:
    ddb.put_item(TableName="t", Item={**KEY, "l": {"L": [{"N": str(n)} for n in range(5)]}})
    update(ddb, "REMOVE l[1], l[3], nope")
    assert get(ddb) == {**KEY, "l": {"L": [{"N": "0"}, {"N": "2"}, {"N": "4"}]}}


def test_every_set_reads_the_item_as_it_was_before_the_update(ddb: Any) -> None:
    ddb.put_item(TableName="t", Item={**KEY, "a": {"N": "1"}, "b": {"N": "2"}})
    update(ddb, "SET a = b, b = a, c = a + b, d = b - :ten", {":ten": {"N": "10"}})
    assert get(ddb) == {**KEY, "a": {"N": "2"}, "b": {"N": "1"}, "c": {"N": "3"}, "d": {"N": "-8"}}


def test_add_counts_from_nothing_and_refuses_other_types(ddb: Any) -> None:
    update(ddb, "ADD n :d, tags :t", {":d": {"N": "-1"}, ":t": {"SS": ["x"]}})
    update(ddb, "ADD n :d, tags :t", {":d": {"N": "3.50"}, ":t": {"SS": ["x", "y"]}})
    item = get(ddb)
    assert item is not None
    assert item["n"] == {"N": "2.5"}
    assert sorted(item["tags"]["SS"]) == ["x", "y"]
    with pytest.raises(ClientError) as wrong:
        update(ddb, "ADD n :s", {":s": {"S": "text"}})
    assert error_code(wrong) == "ValidationException"
    with pytest.raises(ClientError) as missing:
        update(ddb, "SET m = absent + :one", {":one": {"N": "1"}})
    assert error_code(missing) == "ValidationException"


@pytest.mark.parametrize(
    ("condition", "holds"),
    [
        ("s IN (:a, :b)", True),
        ("s IN (:b)", False),
        ("n BETWEEN :one AND :ten", True),
        ("NOT n BETWEEN :one AND :two", True),
        ("s = :b OR (n >= :ten AND s = :a)", False),
        ("nope <> :a", True),  # a missing attribute is not equal to anything
        ("nope = :a OR nope < :a", False),
        ("n < :a", False),  # different types never compare
        ("begins_with(s, :prefix) AND size(s) = :five AND attribute_type(n, :N)", True),
        ("contains(l, :a) AND contains(s, :prefix)", True),
        ("attribute_exists(l[0]) AND attribute_not_exists(l[5])", True),
    ],
)
def test_condition_operators_hold_as_in_dynamodb(ddb: Any, condition: str, holds: bool) -> None:
    ddb.put_item(TableName="t", Item={**KEY, "s": {"S": "alpha"}, "n": {"N": "5"}, "l": {"L": [{"S": "alpha"}]}})
    values = {
        ":a": {"S": "alpha"},
        ":b": {"S": "beta"},
        ":one": {"N": "1"},
        ":two": {"N": "2"},
        ":ten": {"N": "10"},
        ":five": {"N": "5"},
        ":prefix": {"S": "al"},
        ":N": {"S": "N"},
    }
    used = {name: value for name, value in values.items() if name in condition}
    try:
        ddb.put_item(
            TableName="t",
            Item={**KEY, "x": {"BOOL": True}},
            ConditionExpression=condition,
            **({"ExpressionAttributeValues": used} if used else {}),
        )
        held = True
    except ClientError as exc:
        assert exc.response["Error"]["Code"] == "ConditionalCheckFailedException"
        held = False
    assert held is holds


@pytest.mark.parametrize(
    ("request_fields", "message"),
    [
        (
            {"UpdateExpression": "SET a = :a", "ExpressionAttributeValues": {":a": {"S": "x"}, ":b": {"S": "y"}}},
            "unused",
        ),
        ({"UpdateExpression": "SET a = :a"}, "not defined"),
        ({"UpdateExpression": "SET #a = :a", "ExpressionAttributeValues": {":a": {"S": "x"}}}, "not defined"),
        ({"UpdateExpression": "SET status = :a", "ExpressionAttributeValues": {":a": {"S": "x"}}}, "reserved keyword"),
        ({"UpdateExpression": "SET pk = :a", "ExpressionAttributeValues": {":a": {"S": "x"}}}, "part of the key"),
        ({"UpdateExpression": "SET a = :a, a.b = :a", "ExpressionAttributeValues": {":a": {"S": "x"}}}, "overlap"),
        (
            {"UpdateExpression": "SET a = :a SET b = :a", "ExpressionAttributeValues": {":a": {"S": "x"}}},
            "only be used once",
        ),
    ],
)
def test_bad_expressions_are_validation_errors_that_change_nothing(
    ddb: Any, request_fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(ClientError) as invalid:
        ddb.update_item(TableName="t", Key=KEY, **request_fields)
    assert error_code(invalid) == "ValidationException"
    assert message in invalid.value.response["Error"]["Message"]
    assert get(ddb) is None


@pytest.mark.parametrize(
    "item",
    [
        {"pk": {"S": "p"}},  # no sort key
        {"pk": {"N": "1"}, "sk": {"S": "s"}},  # wrong key type
        {"pk": {"S": ""}, "sk": {"S": "s"}},  # empty key string
        {"pk": {"S": "x" * 2049}, "sk": {"S": "s"}},  # partition key over 2048 bytes
        {"pk": {"S": "p"}, "sk": {"S": "x" * 1025}},  # sort key over 1024 bytes
        {**KEY, "big": {"S": "x" * 400 * 1024}},  # item over 400 KB
        {**KEY, "park_shard": {"N": "1"}},  # index key of the wrong type
        {**KEY, "tags": {"SS": []}},  # empty set
    ],
)
def test_items_dynamodb_refuses_are_refused(ddb: Any, item: dict[str, Any]) -> None:
    with pytest.raises(ClientError) as invalid:
        ddb.put_item(TableName="t", Item=item)
    assert error_code(invalid) == "ValidationException"


def test_numbers_come_back_in_canonical_form(ddb: Any) -> None:
    ddb.put_item(TableName="t", Item={**KEY, "a": {"N": "1.50"}, "b": {"N": "007"}, "c": {"N": "1E+2"}})
    assert get(ddb) == {**KEY, "a": {"N": "1.5"}, "b": {"N": "7"}, "c": {"N": "100"}}


def _parked(ddb: Any, **kwargs: Any) -> list[str]:
    reply = ddb.query(
        TableName="t",
        IndexName="Parked",
        KeyConditionExpression="park_shard = :s AND park_ts <= :now",
        ExpressionAttributeValues={":s": {"S": "0"}, ":now": {"N": "100"}},
        **kwargs,
    )
    return [item["sk"]["S"] for item in reply["Items"]]


def test_a_sparse_index_holds_only_items_with_its_keys_and_projects_what_it_includes(ddb: Any) -> None:
    for n, due in enumerate(["50", "10", None, "500"]):
        item = {"pk": {"S": "p"}, "sk": {"S": f"m{n}"}, "status": {"S": "deferred"}, "body": {"S": "x"}}
        if due is not None:
            item |= {"park_shard": {"S": "0"}, "park_ts": {"N": due}}
        ddb.put_item(TableName="t", Item=item)
    assert _parked(ddb) == ["m1", "m0"]  # by due, the item without keys absent, the one due later too
    ddb.update_item(
        TableName="t", Key={"pk": {"S": "p"}, "sk": {"S": "m1"}}, UpdateExpression="REMOVE park_shard, park_ts"
    )
    ddb.update_item(
        TableName="t",
        Key={"pk": {"S": "p"}, "sk": {"S": "m2"}},
        UpdateExpression="SET park_shard = :s, park_ts = :d",
        ExpressionAttributeValues={":s": {"S": "0"}, ":d": {"N": "1"}},
    )
    assert _parked(ddb) == ["m2", "m0"]
    [first] = ddb.query(
        TableName="t",
        IndexName="Parked",
        KeyConditionExpression="park_shard = :s",
        ExpressionAttributeValues={":s": {"S": "0"}},
        Limit=1,
    )["Items"]
    assert set(first) == {"pk", "sk", "park_shard", "park_ts", "status"}  # INCLUDE: keys and status, not body
    with pytest.raises(ClientError) as consistent:
        _parked(ddb, ConsistentRead=True)
    assert error_code(consistent) == "ValidationException"


def test_query_orders_pages_and_filters_as_dynamodb(ddb: Any) -> None:
    for n in range(7):
        ddb.put_item(TableName="t", Item={"pk": {"S": "q"}, "sk": {"S": f"k{n}"}, "odd": {"BOOL": n % 2 == 1}})
    pages: list[list[str]] = []
    request: dict[str, Any] = {
        "TableName": "t",
        "KeyConditionExpression": "pk = :p AND begins_with(sk, :k)",
        "FilterExpression": "odd = :t",
        "ExpressionAttributeValues": {":p": {"S": "q"}, ":k": {"S": "k"}, ":t": {"BOOL": True}},
        "ScanIndexForward": False,
        "Limit": 3,
    }
    while True:
        reply = ddb.query(**request)
        assert reply["ScannedCount"] <= 3  # Limit counts items read, before the filter
        pages.append([item["sk"]["S"] for item in reply["Items"]])
        if "LastEvaluatedKey" not in reply:
            break
        request["ExclusiveStartKey"] = reply["LastEvaluatedKey"]
    assert pages == [["k5"], ["k3", "k1"], []]  # a page stopped by Limit has a LastEvaluatedKey, even the last
    between = ddb.query(
        TableName="t",
        KeyConditionExpression="pk = :p AND sk BETWEEN :a AND :b",
        ExpressionAttributeValues={":p": {"S": "q"}, ":a": {"S": "k2"}, ":b": {"S": "k4"}},
        ProjectionExpression="sk",
    )["Items"]
    assert between == [{"sk": {"S": "k2"}}, {"sk": {"S": "k3"}}, {"sk": {"S": "k4"}}]
    with pytest.raises(ClientError) as key_filter:
        ddb.query(
            TableName="t",
            KeyConditionExpression="pk = :p",
            FilterExpression="sk = :k",
            ExpressionAttributeValues={":p": {"S": "q"}, ":k": {"S": "k1"}},
        )
    assert error_code(key_filter) == "ValidationException"


def test_a_transaction_with_one_failed_condition_writes_nothing_and_says_which(ddb: Any) -> None:
    ddb.put_item(TableName="t", Item={**KEY, "v": {"N": "1"}})
    other = {"pk": {"S": "p"}, "sk": {"S": "other"}}
    with pytest.raises(ClientError) as cancelled:
        ddb.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": "t", "Item": {**other, "v": {"N": "9"}}}},
                {
                    "Update": {
                        "TableName": "t",
                        "Key": KEY,
                        "UpdateExpression": "SET v = :v",
                        "ConditionExpression": "attribute_not_exists(pk)",
                        "ExpressionAttributeValues": {":v": {"N": "2"}},
                    }
                },
            ]
        )
    assert error_code(cancelled) == "TransactionCanceledException"
    assert [r["Code"] for r in cancelled.value.response["CancellationReasons"]] == ["None", "ConditionalCheckFailed"]
    assert get(ddb, other) is None
    assert get(ddb) == {**KEY, "v": {"N": "1"}}
    with pytest.raises(ClientError) as twice:
        ddb.transact_write_items(
            TransactItems=[{"Put": {"TableName": "t", "Item": KEY}}, {"Delete": {"TableName": "t", "Key": KEY}}]
        )
    assert error_code(twice) == "ValidationException"


def test_batches_refuse_duplicate_keys_and_return_only_existing_items(ddb: Any) -> None:
    with pytest.raises(ClientError) as duplicates:
        ddb.batch_write_item(RequestItems={"t": [{"PutRequest": {"Item": KEY}}, {"DeleteRequest": {"Key": KEY}}]})
    assert error_code(duplicates) == "ValidationException"
    ddb.batch_write_item(RequestItems={"t": [{"PutRequest": {"Item": {**KEY, "v": {"S": "x"}}}}]})
    reply = ddb.batch_get_item(
        RequestItems={"t": {"Keys": [KEY, {"pk": {"S": "p"}, "sk": {"S": "absent"}}], "ProjectionExpression": "v"}}
    )
    assert reply["Responses"] == {"t": [{"v": {"S": "x"}}]}
    assert reply["UnprocessedKeys"] == {}


def test_the_stream_records_inserts_modifications_and_removals_but_not_unchanged_writes(ddb: Any) -> None:
    streams = client("dynamodbstreams")
    arn = ddb.describe_table(TableName="t")["Table"]["LatestStreamArn"]
    [shard] = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]
    latest = streams.get_shard_iterator(StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="LATEST")
    ddb.put_item(TableName="t", Item={**KEY, "v": {"N": "1"}})
    ddb.put_item(TableName="t", Item={**KEY, "v": {"N": "1"}})  # no change: no record
    update(ddb, "SET v = :v", {":v": {"N": "1"}})  # no change either
    update(ddb, "SET v = :v", {":v": {"N": "2"}})
    ddb.delete_item(TableName="t", Key=KEY)
    reply = streams.get_records(ShardIterator=latest["ShardIterator"])
    records = reply["Records"]
    assert [r["eventName"] for r in records] == ["INSERT", "MODIFY", "REMOVE"]
    insert, modify, remove = (r["dynamodb"] for r in records)
    assert insert["Keys"] == KEY and "OldImage" not in insert and insert["NewImage"]["v"] == {"N": "1"}
    assert modify["OldImage"]["v"] == {"N": "1"} and modify["NewImage"]["v"] == {"N": "2"}
    assert remove["OldImage"]["v"] == {"N": "2"} and "NewImage" not in remove
    numbers = [int(r["dynamodb"]["SequenceNumber"]) for r in records]
    assert numbers == sorted(numbers) and len(set(numbers)) == 3
    assert streams.get_records(ShardIterator=reply["NextShardIterator"])["Records"] == []


def test_ttl_is_described_as_set_and_missing_tables_are_not_found(ddb: Any) -> None:
    ddb.update_time_to_live(TableName="t", TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"})
    described = ddb.describe_time_to_live(TableName="t")["TimeToLiveDescription"]
    assert described == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires_at"}
    with pytest.raises(ClientError) as missing:
        ddb.get_item(TableName="absent", Key=KEY)
    assert error_code(missing) == "ResourceNotFoundException"
