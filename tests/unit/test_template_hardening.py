"""template.yaml keeps its growth and incident-trail guards: logs that are kept (and not forever), a WAF
log without tokens, an intake that cannot starve the senders, a reporter stream that cannot fail
silently, tables that cannot be deleted by accident, and no write access where none is needed."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import pytest

from local.template import Template

TEMPLATE = Template.load()
RESOURCES = TEMPLATE.resources
FUNCTIONS = {spec.logical_id: spec for spec in TEMPLATE.functions()}
TABLES = sorted(k for k, v in RESOURCES.items() if v["Type"] == "AWS::DynamoDB::Table")
LOG_GROUPS = {k: v for k, v in RESOURCES.items() if v["Type"] == "AWS::Logs::LogGroup"}


def properties(logical_id: str) -> Mapping[str, Any]:
    props: Mapping[str, Any] = RESOURCES[logical_id].get("Properties") or {}
    return props


def test_every_log_group_has_a_retention_from_the_log_retention_parameter() -> None:
    parameter = TEMPLATE.parameters["LogRetentionDays"]
    assert 1 <= int(parameter["Default"]) <= 3653
    assert LOG_GROUPS
    for logical_id, group in LOG_GROUPS.items():
        assert group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}, logical_id


@pytest.mark.parametrize("function", sorted(FUNCTIONS))
def test_every_function_logs_to_a_log_group_of_the_stack(function: str) -> None:
    group = properties(function).get("LoggingConfig", {}).get("LogGroup")
    assert isinstance(group, dict) and group.get("Ref") in LOG_GROUPS, function


def test_the_api_writes_json_access_logs_with_request_ip_route_method_status_and_latency() -> None:
    setting = properties("Api")["AccessLogSetting"]
    assert setting["DestinationArn"] == {"Fn::GetAtt": ["ApiAccessLogGroup", "Arn"]}
    fields = json.loads(setting["Format"])
    values = set(fields.values())
    for variable in (
        "$context.requestId",
        "$context.identity.sourceIp",
        "$context.resourcePath",
        "$context.httpMethod",
        "$context.status",
        "$context.responseLatency",
    ):
        assert variable in values, variable
    # Access logs need the region's API Gateway CloudWatch role before the stage is made.
    assert "ApiLoggingReady" in json.dumps(RESOURCES["Api"].get("DependsOn"))
    assert "ApiGatewayAccount" in json.dumps(RESOURCES["ApiLoggingReady"]["Metadata"])


def test_the_waf_logs_to_an_aws_waf_logs_group_with_tokens_redacted() -> None:
    [config] = [v for v in RESOURCES.values() if v["Type"] == "AWS::WAFv2::LoggingConfiguration"]
    assert config["Properties"]["ResourceArn"] == {"Fn::GetAtt": ["WebAcl", "Arn"]}
    [destination] = config["Properties"]["LogDestinationConfigs"]
    assert "${WafLogGroup}" in destination["Fn::Sub"]
    assert properties("WafLogGroup")["LogGroupName"]["Fn::Sub"].startswith("aws-waf-logs-")
    redacted = {field["SingleHeader"]["Name"].lower() for field in config["Properties"]["RedactedFields"]}
    assert {"x-api-token", "authorization"} <= redacted


def test_the_intake_has_reserved_concurrency_from_a_parameter() -> None:
    value = json.dumps(properties("IntakeFunction")["ReservedConcurrentExecutions"])
    assert '"Ref": "IntakeReservedConcurrency"' in value
    assert int(TEMPLATE.parameters["IntakeReservedConcurrency"]["Default"]) > 0


def test_the_reporter_stream_has_an_on_failure_queue_and_an_iterator_age_alarm() -> None:
    [stream] = FUNCTIONS["ReporterFunction"].events_of_type("DynamoDB")
    destination = stream.properties["DestinationConfig"]["OnFailure"]
    assert destination["Type"] == "SQS"
    queue = destination["Destination"]["Fn::GetAtt"][0]
    assert RESOURCES[queue]["Type"] == "AWS::SQS::Queue"
    alarms = [v["Properties"] for v in RESOURCES.values() if v["Type"] == "AWS::CloudWatch::Alarm"]
    assert any(
        a["MetricName"] == "IteratorAge"
        and {"Name": "FunctionName", "Value": {"Ref": "ReporterFunction"}} in a["Dimensions"]
        for a in alarms
    )
    assert any(
        a["MetricName"] == "ApproximateNumberOfMessagesVisible"
        and {"Name": "QueueName", "Value": {"Fn::GetAtt": [queue, "QueueName"]}} in a["Dimensions"]
        for a in alarms
    )


def test_command_log_write_failures_are_counted_from_the_intake_log_and_alarmed() -> None:
    [metric_filter] = [v["Properties"] for v in RESOURCES.values() if v["Type"] == "AWS::Logs::MetricFilter"]
    assert metric_filter["LogGroupName"] == {"Ref": "IntakeFunctionLogGroup"}
    assert "command log entry not stored" in metric_filter["FilterPattern"]
    name = metric_filter["MetricTransformations"][0]["MetricName"]
    alarms = [v["Properties"] for v in RESOURCES.values() if v["Type"] == "AWS::CloudWatch::Alarm"]
    assert any(a["MetricName"] == name for a in alarms)


@pytest.mark.parametrize("table", TABLES)
def test_every_table_is_protected_from_deletion(table: str) -> None:
    assert properties(table)["DeletionProtectionEnabled"] is True
    assert RESOURCES[table]["DeletionPolicy"] == "Retain"
    assert RESOURCES[table]["UpdateReplacePolicy"] == "Retain"


READ_ACTIONS = {
    "dynamodb:GetItem",
    "dynamodb:BatchGetItem",
    "dynamodb:Query",
    "dynamodb:Scan",
    "dynamodb:DescribeTable",
    "dynamodb:ConditionCheckItem",
}


def _statements(function: str) -> list[Mapping[str, Any]]:
    """The inline statements of a function's policies (SAM's `- Statement:` entries)."""
    found: list[Mapping[str, Any]] = []
    for policy in properties(function).get("Policies") or []:
        if isinstance(policy, dict) and isinstance(policy.get("Statement"), list):
            found += [s for s in policy["Statement"] if s.get("Effect") == "Allow"]
    return found


def _actions(statement: Mapping[str, Any]) -> list[str]:
    actions = statement.get("Action")
    return [actions] if isinstance(actions, str) else list(actions or [])


def _table_access(function: str) -> dict[str, set[str]]:
    """table → {"read", "write"}: what a function's SAM policy templates and inline statements let it do."""
    found: dict[str, set[str]] = {}
    for policy in properties(function).get("Policies") or []:
        if isinstance(policy, dict):
            for name, args in policy.items():
                if name.startswith("DynamoDB") and isinstance(args, dict):
                    kinds = {"read"} if name == "DynamoDBReadPolicy" else {"read", "write"}
                    found.setdefault(args["TableName"]["Ref"], set()).update(kinds)
    for statement in _statements(function):
        target = json.dumps(statement.get("Resource"))
        for table in TABLES:
            if f'"{table}"' in target or "${" + table + "." in target:
                for action in _actions(statement):
                    if action.startswith("dynamodb:"):
                        found.setdefault(table, set()).add("read" if action in READ_ACTIONS else "write")
    return found


# The tables each function writes (by the modules it runs); every other table it touches is read-only.
WRITES = {
    "IntakeFunction": {"TenantsTable", "MessagesTable", "PayloadsTable", "StateTable"},
    "MetricsFunction": set(),
    "SenderFunction": {"MessagesTable", "PayloadsTable", "StateTable"},
    "SchedulerFunction": {"MessagesTable", "PayloadsTable", "StateTable"},
    "ReporterFunction": {"MessagesTable", "PayloadsTable", "StateTable"},
    # TenantsTable: the reputation guard pauses an account a bounce or complaint puts over a threshold.
    "BounceFunction": {"MessagesTable", "StateTable", "TenantsTable"},
}


@pytest.mark.parametrize("function", sorted(WRITES))
def test_no_function_may_write_a_table_it_never_writes(function: str) -> None:
    for table, access in _table_access(function).items():
        if table not in WRITES[function]:
            assert access == {"read"}, (function, table, access)


@pytest.mark.parametrize("function", sorted(WRITES))
def test_every_function_may_write_the_tables_it_writes(function: str) -> None:
    access = _table_access(function)
    for table in WRITES[function]:
        assert "write" in access.get(table, set()), (function, table)


def test_the_bounce_function_may_pause_an_account_and_nothing_more_of_the_tenants_table() -> None:
    [pause] = [s for s in _statements("BounceFunction") if "TenantsTable" in json.dumps(s.get("Resource"))]
    assert _actions(pause) == ["dynamodb:UpdateItem"]  # set_account_pause; its reads are DynamoDBReadPolicy's
    templates = [
        name
        for policy in properties("BounceFunction")["Policies"]
        for name, args in policy.items()
        if isinstance(args, dict) and args.get("TableName") == {"Ref": "TenantsTable"}
    ]
    assert templates == ["DynamoDBReadPolicy"]


@pytest.mark.parametrize("function", sorted(f for f in WRITES if "PayloadsTable" in _table_access(f)))
def test_a_function_that_reads_payloads_may_read_their_objects_in_s3(function: str) -> None:
    # A payload is in a pack (an S3 object) or, when too big for an item, in an object of its own.
    granted = [
        s
        for s in _statements(function)
        if "s3:GetObject" in _actions(s) and s.get("Resource") == {"Fn::Sub": "${PayloadBucket.Arn}/payloads/*"}
    ]
    assert granted, function


def test_the_bounce_function_learns_an_expired_pack_is_gone_rather_than_forbidden() -> None:
    listing = [s for s in _statements("BounceFunction") if "s3:ListBucket" in _actions(s)]
    assert [s["Resource"] for s in listing] == [{"Fn::GetAtt": ["PayloadBucket", "Arn"]}]


def test_the_command_log_index_is_sparse_on_the_state_table() -> None:
    [index] = properties("StateTable")["GlobalSecondaryIndexes"]
    assert index["IndexName"] == "CommandLogByTenant"
    assert [k["AttributeName"] for k in index["KeySchema"]] == ["log_tenant", "sk"]
    assert re.search(r"GMP_COMMAND_LOG_RETENTION_DAYS", json.dumps(FUNCTIONS["IntakeFunction"].environment))
