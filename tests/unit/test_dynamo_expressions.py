"""The expression builder of the AWS adapter: the exact text, names and values a request carries (no AWS)."""

from __future__ import annotations

from typing import Any

import pytest
from mailproxy.adapters.aws.expressions import (
    Update,
    absent,
    at_most,
    begins_with,
    between,
    equals,
    exists,
    expression,
    is_in,
    less_than,
    partition,
)
from mailproxy.domain import Counter, MessageStatus


def test_every_name_and_value_is_a_placeholder() -> None:
    update = Update().set("status", "sent").set("size", 3)
    assert expression(update) == {
        "UpdateExpression": "SET #n0 = :v0, #n1 = :v1",
        "ExpressionAttributeNames": {"#n0": "status", "#n1": "size"},
        "ExpressionAttributeValues": {":v0": {"S": "sent"}, ":v1": {"N": "3"}},
    }


def test_set_if_absent_and_append_start_what_is_missing() -> None:
    update = Update().set_if_absent("created_at", 10).append("history", [{"type": "queued"}])
    assert expression(update) == {
        "UpdateExpression": "SET #n0 = if_not_exists(#n0, :v0), #n1 = list_append(if_not_exists(#n1, :v1), :v2)",
        "ExpressionAttributeNames": {"#n0": "created_at", "#n1": "history"},
        "ExpressionAttributeValues": {
            ":v0": {"N": "10"},
            ":v1": {"L": []},
            ":v2": {"L": [{"M": {"type": {"S": "queued"}}}]},
        },
    }


def test_set_add_and_remove_become_one_clause_each() -> None:
    update = Update().remove("claim_id").add("claims", 1).set("claim_ts", 5).remove("claim_ts_old", "pack")
    assert expression(update)["UpdateExpression"] == "SET #n0 = :v0 ADD #n1 :v1 REMOVE #n2, #n3, #n4"
    assert expression(update)["ExpressionAttributeNames"] == {
        "#n0": "claim_ts",
        "#n1": "claims",
        "#n2": "claim_id",
        "#n3": "claim_ts_old",
        "#n4": "pack",
    }


def test_an_update_of_removals_only_carries_no_values() -> None:
    assert expression(Update().remove("lease_until", "lease_id")) == {
        "UpdateExpression": "REMOVE #n0, #n1",
        "ExpressionAttributeNames": {"#n0": "lease_until", "#n1": "lease_id"},
    }


def test_a_name_used_twice_has_one_placeholder_and_each_value_its_own() -> None:
    update = Update().set("claim_ts", 7).set("updated_at", 7)
    request = expression(update, equals("claim_ts", 3) | at_most("updated_at", 7))
    assert request == {
        "UpdateExpression": "SET #n0 = :v0, #n1 = :v1",
        "ConditionExpression": "#n0 = :v2 OR #n1 <= :v3",
        "ExpressionAttributeNames": {"#n0": "claim_ts", "#n1": "updated_at"},
        "ExpressionAttributeValues": {":v0": {"N": "7"}, ":v1": {"N": "7"}, ":v2": {"N": "3"}, ":v3": {"N": "7"}},
    }


def test_the_text_depends_on_the_shape_of_a_request_not_on_its_values() -> None:
    def text(a: object, b: object) -> tuple[str, str]:
        request = expression(Update().set("a", a), equals("b", b))
        return request["UpdateExpression"], request["ConditionExpression"]

    assert text(1, 1) == text(1, 2) == text(True, "x")


def test_enum_members_are_stored_as_their_plain_values() -> None:
    request = expression(Update().set_if_absent(Counter.SENT, 0), equals("status", MessageStatus.SENT))
    assert request["ExpressionAttributeNames"] == {"#n0": "sent", "#n1": "status"}
    assert type(request["ExpressionAttributeNames"]["#n0"]) is str
    assert request["ExpressionAttributeValues"] == {":v0": {"N": "0"}, ":v1": {"S": "sent"}}


def test_a_none_value_is_stored_as_null() -> None:
    assert expression(Update().set("api_key_expires_at", None))["ExpressionAttributeValues"] == {":v0": {"NULL": True}}


def test_a_condition_alone_serves_a_put_or_a_delete() -> None:
    assert expression(condition=absent("id")) == {
        "ConditionExpression": "attribute_not_exists(#n0)",
        "ExpressionAttributeNames": {"#n0": "id"},
    }
    assert expression(condition=exists("pk"))["ConditionExpression"] == "attribute_exists(#n0)"


def test_comparisons_render_their_operators() -> None:
    condition = less_than("lease_until", 9) & at_most("retry_at", 9) & equals("v", 2)
    assert expression(condition=condition)["ConditionExpression"] == "#n0 < :v0 AND #n1 <= :v1 AND #n2 = :v2"


def test_is_in_lists_its_values() -> None:
    request = expression(condition=is_in("status", ["pending", "deferred"]))
    assert request["ConditionExpression"] == "#n0 IN (:v0, :v1)"
    assert request["ExpressionAttributeValues"] == {":v0": {"S": "pending"}, ":v1": {"S": "deferred"}}


@pytest.mark.parametrize("count", [0, 101])
def test_is_in_refuses_what_dynamodb_would(count: int) -> None:
    with pytest.raises(ValueError, match="IN takes 1 to 100 values"):
        is_in("status", range(count))


def test_nested_compositions_are_bracketed_and_same_operators_flattened() -> None:
    takeable = is_in("status", ["pending"]) | (equals("status", "sending") & at_most("claim_ts", 5))
    due = absent("deferred_ts") | at_most("deferred_ts", 9)
    condition = equals("rev", "r1") & takeable & due
    assert expression(condition=condition)["ConditionExpression"] == (
        "#n0 = :v0 AND (#n1 IN (:v1) OR (#n1 = :v2 AND #n2 <= :v3)) AND (attribute_not_exists(#n3) OR #n3 <= :v4)"
    )


def test_an_attribute_changed_twice_is_refused_before_any_call() -> None:
    with pytest.raises(ValueError, match="'pack' is changed twice"):
        Update().set("pack", "k").remove("pack")


def test_an_empty_update_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one attribute"):
        expression(Update())


def test_a_transaction_update_action_takes_the_same_kwargs() -> None:
    action = {
        "Update": {"TableName": "T", "Key": {"pk": {"S": "P"}}, **expression(Update().add("n", -2), exists("pk"))}
    }
    assert action["Update"] == {
        "TableName": "T",
        "Key": {"pk": {"S": "P"}},
        "UpdateExpression": "ADD #n0 :v0",
        "ConditionExpression": "attribute_exists(#n1)",
        "ExpressionAttributeNames": {"#n0": "n", "#n1": "pk"},
        "ExpressionAttributeValues": {":v0": {"N": "-2"}},
    }


def test_a_query_of_one_partition_names_its_key_and_projection() -> None:
    request = expression(key=partition("pk", "LEDGER#acme"), projection=["pk", "sk"])
    assert request == {
        "KeyConditionExpression": "#n0 = :v0",
        "ProjectionExpression": "#n0, #n1",
        "ExpressionAttributeNames": {"#n0": "pk", "#n1": "sk"},
        "ExpressionAttributeValues": {":v0": {"S": "LEDGER#acme"}},
    }


def test_a_key_condition_narrows_the_sort_key_by_prefix_range_or_bound() -> None:
    def key(sort: Any) -> tuple[str, dict[str, Any]]:
        request = expression(key=partition("pk", "P") & sort)
        return request["KeyConditionExpression"], request["ExpressionAttributeValues"]

    assert key(begins_with("sk", "ACCOUNT#")) == (
        "#n0 = :v0 AND begins_with(#n1, :v1)",
        {":v0": {"S": "P"}, ":v1": {"S": "ACCOUNT#"}},
    )
    assert key(between("sk", "a", "b")) == (
        "#n0 = :v0 AND #n1 BETWEEN :v1 AND :v2",
        {":v0": {"S": "P"}, ":v1": {"S": "a"}, ":v2": {"S": "b"}},
    )
    assert key(at_most("sk", "z"))[0] == "#n0 = :v0 AND #n1 <= :v1"
    assert key(less_than("sk", "z"))[0] == "#n0 = :v0 AND #n1 < :v1"
    assert key(equals("sk", "z"))[0] == "#n0 = :v0 AND #n1 = :v1"


def test_a_key_condition_dynamodb_would_refuse_is_refused_before_any_call() -> None:
    with pytest.raises(ValueError, match="one sort-key condition"):
        partition("pk", "P") & at_most("sk", "b") & equals("sk", "a")
    with pytest.raises(ValueError, match="a comparison, between or begins_with"):
        partition("pk", "P") & is_in("sk", ["a"])
    with pytest.raises(ValueError, match="a comparison, between or begins_with"):
        partition("pk", "P") & (equals("sk", "a") | equals("sk", "b"))


def test_a_scan_filters_with_the_conditions_of_a_write() -> None:
    request = expression(filter=at_most("expires_at", 9) & begins_with("sk", "T"), projection=["pk", "sk"])
    assert request == {
        "FilterExpression": "#n0 <= :v0 AND begins_with(#n1, :v1)",
        "ProjectionExpression": "#n2, #n1",
        "ExpressionAttributeNames": {"#n0": "expires_at", "#n1": "sk", "#n2": "pk"},
        "ExpressionAttributeValues": {":v0": {"N": "9"}, ":v1": {"S": "T"}},
    }


def test_a_query_filters_what_its_key_condition_read() -> None:
    request = expression(key=partition("pk", "P"), filter=equals("status", "sent"))
    assert request["KeyConditionExpression"] == "#n0 = :v0"
    assert request["FilterExpression"] == "#n1 = :v1"


def test_a_projection_is_a_list_of_names_not_one_string() -> None:
    with pytest.raises(TypeError, match="attribute names"):
        expression(projection="pk, sk")


def _cancelled(*codes: str) -> Exception:
    from botocore.exceptions import ClientError

    return ClientError(
        {
            "Error": {"Code": "TransactionCanceledException", "Message": "Transaction cancelled"},
            "CancellationReasons": [{"Code": code} for code in codes],
        },
        "TransactWriteItems",
    )


def test_a_cancelled_transaction_is_a_lost_race_only_when_a_condition_failed() -> None:
    from botocore.exceptions import ClientError
    from mailproxy.adapters.aws.dynamo import is_conditional_failure, is_transaction_conflict

    assert is_conditional_failure(_cancelled("None", "ConditionalCheckFailed"))
    assert not is_transaction_conflict(_cancelled("TransactionConflict", "ConditionalCheckFailed"))
    # Another transaction writing the same items, or throttling: an error, not "someone else got there first".
    assert not is_conditional_failure(_cancelled("None", "TransactionConflict"))
    assert is_transaction_conflict(_cancelled("None", "TransactionConflict"))
    assert not is_conditional_failure(_cancelled("ThrottlingError"))
    assert not is_transaction_conflict(_cancelled("ThrottlingError"))
    single = ClientError({"Error": {"Code": "ConditionalCheckFailedException", "Message": "x"}}, "UpdateItem")
    assert is_conditional_failure(single) and not is_transaction_conflict(single)
    assert not is_conditional_failure(ValueError("not an AWS error"))


def test_a_batch_closing_in_a_transaction_conflict_tries_again(aws_env: Any, monkeypatch: Any) -> None:
    from mailproxy.adapters.aws import state
    from mailproxy.adapters.aws.dynamo import ddb
    from mailproxy.domain import Counter, JournalKind

    journal = state.open_journal(JournalKind.SEND, [], due_ts=10**11)
    client = ddb()
    real = client.transact_write_items
    calls = {"n": 0}

    def conflicting(**kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise _cancelled("None", "TransactionConflict", "None")
        return real(**kwargs)

    monkeypatch.setattr(client, "transact_write_items", conflicting)
    state.close_batch(journal, counters={("acme", "smtp"): {Counter.SENT: 1}}, pending={"acme": -1})
    assert calls["n"] == 2
    assert state.pending_count("acme") == -1
    assert state.due_journals(10**12) == []


def _dynamodb_requests_built_by_hand() -> list[str]:
    """Where the package writes a DynamoDB expression itself, or makes its own DynamoDB client."""
    import ast
    from pathlib import Path

    import mailproxy

    package = Path(mailproxy.__file__).parent
    aws = package / "adapters" / "aws"
    found = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [node.arg or ""] if isinstance(node, ast.keyword) else []
            if isinstance(node, ast.Dict):
                names = [str(k.value) for k in node.keys if isinstance(k, ast.Constant)]
            writes_expression = any(n.endswith(("Expression", "ExpressionAttributeNames")) for n in names)
            makes_client = (
                isinstance(node, ast.Call)
                and (getattr(node.func, "id", None) or getattr(node.func, "attr", None)) in ("client", "scoped_client")
                and bool(node.args)
                and isinstance(node.args[0], ast.Constant)
                and node.args[0].value == "dynamodb"
            )
            if (writes_expression and path != aws / "expressions.py") or (makes_client and path != aws / "dynamo.py"):
                found.append(f"{path.relative_to(package)}:{getattr(node, 'lineno', 0)}")
    return found


def test_every_dynamodb_request_goes_through_the_helpers() -> None:
    # STYLE: one builder for every expression (expressions.py), one DynamoDB client (dynamo.ddb).
    assert _dynamodb_requests_built_by_hand() == []
