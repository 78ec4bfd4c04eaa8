"""The local stack: resources from template.yaml, the API Gateway emulation, the SMTP sink, the SQS poller."""

from __future__ import annotations

import json
import os
import smtplib
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import httpx
import pytest

from local.apigw import ApiGateway, Route
from local.lambda_runtime import LambdaFunction
from local.pollers import (
    PollerContext,
    SchedulePoller,
    SqsPoller,
    SqsSource,
    StreamPoller,
    pollers_from_template,
)
from local.stack import LocalStack
from local.template import Template
from tests.polling import wait_until

ARCHITECTURE_ENV = {
    "TenantsTable": "TENANTS_TABLE",
    "MessagesTable": "MESSAGES_TABLE",
    "PayloadsTable": "PAYLOADS_TABLE",
    "StateTable": "STATE_TABLE",
    "PayloadBucket": "PAYLOAD_BUCKET",
    "SecretsKey": "SECRETS_KEY_ID",
    "ImmediateQueue": "IMMEDIATE_QUEUE_URL",
    "HighQueue": "HIGH_QUEUE_URL",
    "MediumQueue": "MEDIUM_QUEUE_URL",
    "LowQueue": "LOW_QUEUE_URL",
    "DeadLetterQueue": "DEAD_LETTER_QUEUE_URL",
}


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    """The whole local stack on free ports, without pollers (the tests drive their own)."""
    with LocalStack(http_port=0, smtp_sink_port=0, moto_port=0, run_pollers=False, endpoint_url="") as running:
        yield running


@pytest.fixture(scope="module")
def template() -> Template:
    return Template.load()


@pytest.fixture
def sqs(stack: LocalStack) -> Any:
    assert stack.emulator is not None
    return stack.emulator.client("sqs")


def _resources(template: Template, resource_type: str) -> dict[str, Any]:
    return {
        logical_id: resource.get("Properties") or {}
        for logical_id, resource in template.resources.items()
        if resource.get("Type") == resource_type
    }


def test_every_table_of_the_template_exists_with_its_key_schema(stack: LocalStack, template: Template) -> None:
    assert stack.emulator is not None
    dynamodb = stack.emulator.client("dynamodb")
    tables = _resources(template, "AWS::DynamoDB::Table")
    assert tables
    for logical_id, properties in tables.items():
        name = stack.emulator.resources[logical_id].ref
        table = dynamodb.describe_table(TableName=name)["Table"]
        assert table["KeySchema"] == properties["KeySchema"]
        assert {(a["AttributeName"], a["AttributeType"]) for a in table["AttributeDefinitions"]} == {
            (a["AttributeName"], a["AttributeType"]) for a in properties["AttributeDefinitions"]
        }
        wanted_indexes = {
            index["IndexName"]: (index["KeySchema"], index["Projection"])
            for index in properties.get("GlobalSecondaryIndexes", [])
        }
        actual_indexes = {
            index["IndexName"]: (index["KeySchema"], index["Projection"])
            for index in table.get("GlobalSecondaryIndexes", [])
        }
        assert actual_indexes == wanted_indexes
        if "StreamSpecification" in properties:
            assert table["StreamSpecification"] == {
                "StreamEnabled": True,
                "StreamViewType": properties["StreamSpecification"]["StreamViewType"],
            }
        if "TimeToLiveSpecification" in properties:
            ttl = dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
            assert ttl["TimeToLiveStatus"] == "ENABLED"
            assert ttl["AttributeName"] == properties["TimeToLiveSpecification"]["AttributeName"]


def test_every_queue_of_the_template_exists_with_its_redrive_policy(stack: LocalStack, template: Template) -> None:
    assert stack.emulator is not None
    queues = _resources(template, "AWS::SQS::Queue")
    assert queues
    sqs = stack.emulator.client("sqs")
    for logical_id, properties in queues.items():
        url = stack.emulator.resources[logical_id].ref
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        for key in ("VisibilityTimeout", "MessageRetentionPeriod"):
            if key in properties:
                assert attributes[key] == str(properties[key])
        if "RedrivePolicy" in properties:
            policy = json.loads(attributes["RedrivePolicy"])
            dead_letter_id = properties["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
            assert policy["deadLetterTargetArn"] == stack.emulator.resources[dead_letter_id].attributes["Arn"]
            assert int(policy["maxReceiveCount"]) == int(properties["RedrivePolicy"]["maxReceiveCount"])


def test_every_bucket_and_key_of_the_template_exists(stack: LocalStack, template: Template) -> None:
    assert stack.emulator is not None
    s3 = stack.emulator.client("s3")
    kms = stack.emulator.client("kms")
    buckets = {bucket["Name"] for bucket in s3.list_buckets()["Buckets"]}
    for logical_id in _resources(template, "AWS::S3::Bucket"):
        assert stack.emulator.resources[logical_id].ref in buckets
    for logical_id in _resources(template, "AWS::KMS::Key"):
        key = kms.describe_key(KeyId=stack.emulator.resources[logical_id].attributes["Arn"])["KeyMetadata"]
        assert key["Enabled"]


def test_env_vars_name_the_created_resources(stack: LocalStack, template: Template) -> None:
    assert stack.emulator is not None
    for logical_id, variable in ARCHITECTURE_ENV.items():
        resource = stack.emulator.resources[logical_id]
        expected = resource.attributes["Arn"] if variable == "SECRETS_KEY_ID" else resource.ref
        assert os.environ[variable] == expected
        assert stack.environment[variable] == expected
    assert os.environ["AWS_ENDPOINT_URL"] == stack.endpoint_url
    assert os.environ["GMP_API_TOKEN"] == stack.api_token
    assert os.environ["GMP_SCHEDULER_INTERVAL"] == "1"


def test_a_second_stack_in_the_process_has_its_own_data_and_restores_the_environment(stack: LocalStack) -> None:
    assert stack.emulator is not None
    before = dict(os.environ)
    with LocalStack(http_port=0, smtp_sink=False, moto_port=0, run_pollers=False, endpoint_url="") as second:
        assert second.emulator is not None
        second.emulator.client("dynamodb").put_item(
            TableName=os.environ["TENANTS_TABLE"], Item={"pk": {"S": "only-in-second"}, "sk": {"S": "x"}}
        )
        second.emulator.client("s3").put_object(Bucket=os.environ["PAYLOAD_BUCKET"], Key="k", Body=b"v")
    assert dict(os.environ) == before
    first = stack.emulator.client("dynamodb").scan(TableName=os.environ["TENANTS_TABLE"])["Items"]
    assert {"pk": {"S": "only-in-second"}, "sk": {"S": "x"}} not in first
    assert stack.emulator.client("s3").list_objects_v2(Bucket=os.environ["PAYLOAD_BUCKET"]).get("KeyCount") == 0


def test_unknown_route_answers_403_missing_authentication_token(stack: LocalStack) -> None:
    # /health only has GET: another method on it is not routed to the proxy, as in API Gateway.
    response = httpx.post(f"{stack.url}/health")
    assert response.status_code == 403
    assert response.json() == {"message": "Missing Authentication Token"}


def test_body_over_10_mb_answers_413_without_calling_the_handler(stack: LocalStack) -> None:
    response = httpx.post(f"{stack.url}/commands/add-messages", content=b"x" * (10 * 1024 * 1024 + 1), timeout=30)
    assert response.status_code == 413
    assert response.json() == {"message": "Request Too Large"}


def test_health_reaches_the_metrics_function(stack: LocalStack) -> None:
    pytest.importorskip("functions.metrics.app")
    response = httpx.get(f"{stack.url}/health")
    assert response.status_code == 200
    assert response.json() == {"ok": True, "status": "ok"}
    assert response.headers["x-amzn-RequestId"]


def test_smtp_sink_receives_a_message(stack: LocalStack) -> None:
    assert stack.smtp_sink is not None and stack.smtp_sink_port
    message = EmailMessage()
    message["From"] = "noreply@example.test"
    message["To"] = "user@example.test"
    message["Subject"] = "Hello from the sink test"
    message["X-Genro-Mail-ID"] = "m-sink-1"
    message.set_content("body")
    before = stack.smtp_sink.count
    with smtplib.SMTP("127.0.0.1", stack.smtp_sink_port, timeout=10) as client:
        client.login("user", "secret")
        client.send_message(message)
    received = stack.smtp_sink.wait_for(before + 1, timeout=5)[-1]
    assert received.mail_id == "m-sink-1"
    assert received.subject == "Hello from the sink test"
    assert received.rcpt_tos == ("user@example.test",)
    assert received.login == "user"


def _queue(sqs: Any, name: str, visibility_timeout: int = 30) -> str:
    url: str = sqs.create_queue(
        QueueName=f"test-{name}-{uuid.uuid4().hex[:8]}", Attributes={"VisibilityTimeout": str(visibility_timeout)}
    )["QueueUrl"]
    return url


def test_sqs_poller_deletes_successes_and_redelivers_failures_after_the_visibility_timeout(sqs: Any) -> None:
    url = _queue(sqs, "partial", visibility_timeout=1)
    for body in ("ok-1", "fail", "ok-2"):
        sqs.send_message(QueueUrl=url, MessageBody=body)
    events: list[dict[str, Any]] = []

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        events.append(event)
        failures = [{"itemIdentifier": r["messageId"]} for r in event["Records"] if r["body"] == "fail"]
        return {"batchItemFailures": failures}

    poller = SqsPoller(handler, [SqsSource(url, batch_size=10)], client=sqs)
    assert poller.poll_once() == 3
    record = events[0]["Records"][0]
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"].endswith(url.rsplit("/", 1)[1])
    assert record["attributes"]["ApproximateReceiveCount"] == "1"
    assert {"SentTimestamp", "ApproximateFirstReceiveTimestamp"} <= set(record["attributes"])
    assert poller.stats.deleted == 2

    # The failed record is in flight until its visibility timeout, then comes back alone.
    assert poller.poll_once() == 0
    time.sleep(1.5)
    assert poller.poll_once() == 1
    redelivered = events[-1]["Records"]
    assert [r["body"] for r in redelivered] == ["fail"]
    assert redelivered[0]["attributes"]["ApproximateReceiveCount"] == "2"


def test_sqs_poller_leaves_the_whole_batch_when_the_handler_raises(sqs: Any) -> None:
    url = _queue(sqs, "crash", visibility_timeout=1)
    sqs.send_message(QueueUrl=url, MessageBody="boom")

    def handler(event: dict[str, Any], context: Any) -> None:
        raise RuntimeError("crash")

    poller = SqsPoller(handler, [url], client=sqs)
    assert poller.poll_once() == 1
    assert poller.stats.deleted == 0
    time.sleep(1.5)
    assert poller.poll_once() == 1


def test_sqs_redrive_policy_moves_a_poison_message_to_the_dead_letter_queue(sqs: Any) -> None:
    dead_letter_url = _queue(sqs, "dlq")
    dead_letter_arn = sqs.get_queue_attributes(QueueUrl=dead_letter_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    url = sqs.create_queue(
        QueueName=f"test-poison-{uuid.uuid4().hex[:8]}",
        Attributes={
            "VisibilityTimeout": "0",
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dead_letter_arn, "maxReceiveCount": 2}),
        },
    )["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="poison")
    poller = SqsPoller(
        lambda event, context: {"batchItemFailures": [{"itemIdentifier": r["messageId"]} for r in event["Records"]]},
        [url],
        client=sqs,
    )
    assert poller.poll_once() == 1
    assert poller.poll_once() == 1
    assert poller.poll_once() == 0
    moved = sqs.receive_message(QueueUrl=dead_letter_url, MaxNumberOfMessages=10).get("Messages", [])
    assert [m["Body"] for m in moved] == ["poison"]


def test_sqs_poller_drains_the_immediate_queue_before_the_low_queue(sqs: Any) -> None:
    immediate, low = _queue(sqs, "immediate"), _queue(sqs, "low")
    sqs.send_message(QueueUrl=low, MessageBody="low-1")
    sqs.send_message(QueueUrl=immediate, MessageBody="immediate-1")
    sqs.send_message(QueueUrl=immediate, MessageBody="immediate-2")
    bodies: list[list[str]] = []
    poller = SqsPoller(
        lambda event, context: bodies.append([r["body"] for r in event["Records"]]),
        [SqsSource(immediate, batch_size=1), SqsSource(low, batch_size=1)],
        client=sqs,
    )
    while poller.poll_once():
        pass
    assert bodies == [["immediate-1"], ["immediate-2"], ["low-1"]]


def test_sqs_poller_runs_in_its_thread_and_stops_cleanly(sqs: Any) -> None:
    url = _queue(sqs, "threaded")
    seen: list[str] = []
    poller = SqsPoller(
        LambdaFunction(
            "ThreadedFunction", handler=lambda event, context: seen.extend(r["body"] for r in event["Records"])
        ),
        [url],
        client=sqs,
    )
    poller.start()
    try:
        sqs.send_message(QueueUrl=url, MessageBody="hello")
        deadline = time.monotonic() + 5
        while not seen and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        poller.stop()
    assert seen == ["hello"]
    assert not poller.running


def test_api_gateway_prefers_specific_resources_over_the_greedy_proxy(stack: LocalStack) -> None:
    assert stack.api is not None
    api = stack.api

    def routed(method: str, path: str) -> tuple[str, str, dict[str, str]] | None:
        found = api.route(method, path)
        return None if found is None else (found[0].function.logical_id, found[0].resource, found[1])

    assert routed("GET", "/health") == ("MetricsFunction", "/health", {})
    assert routed("GET", "/tenant/t1") == ("IntakeFunction", "/{proxy+}", {"proxy": "tenant/t1"})
    assert routed("DELETE", "/tenant/t1/api-key") == ("IntakeFunction", "/{proxy+}", {"proxy": "tenant/t1/api-key"})
    assert routed("GET", "/") == ("IntakeFunction", "/", {})
    assert routed("POST", "/health") is None


def test_handler_error_answers_502_and_the_event_has_the_rest_proxy_shape() -> None:
    events: list[dict[str, Any]] = []

    def crashing(event: dict[str, Any], context: Any) -> None:
        events.append(event)
        assert context.get_remaining_time_in_millis() > 0
        raise RuntimeError("handler bug")

    gateway = ApiGateway([Route("/items/{id}", "POST", LambdaFunction("CrashFunction", handler=crashing))], port=0)
    gateway.start()
    try:
        response = httpx.post(f"{gateway.url}/items/42?a=1&a=2", json={"k": "v"}, headers={"X-Test": "yes"})
    finally:
        gateway.stop()
    assert response.status_code == 502
    assert response.json() == {"message": "Internal server error"}
    event = events[0]
    assert event["resource"] == "/items/{id}"
    assert event["path"] == "/items/42"
    assert event["httpMethod"] == "POST"
    assert event["pathParameters"] == {"id": "42"}
    assert event["queryStringParameters"] == {"a": "2"}
    assert event["multiValueQueryStringParameters"] == {"a": ["1", "2"]}
    assert event["headers"]["X-Test"] == "yes"
    assert event["multiValueHeaders"]["X-Test"] == ["yes"]
    assert json.loads(event["body"]) == {"k": "v"}
    assert event["isBase64Encoded"] is False
    assert event["requestContext"]["identity"]["sourceIp"] == "127.0.0.1"
    assert event["requestContext"]["resourcePath"] == "/items/{id}"
    assert isinstance(event["requestContext"]["requestTimeEpoch"], int)


def test_template_wires_the_sender_to_the_four_queues_in_priority_order(stack: LocalStack) -> None:
    assert stack.emulator is not None
    functions = {
        logical_id: LambdaFunction(logical_id, handler=lambda event, context: None) for logical_id in stack.functions
    }
    pollers = pollers_from_template(functions, PollerContext(stack.emulator.resolver, scheduler_interval=0.5))
    sqs_pollers = [poller for poller in pollers if isinstance(poller, SqsPoller)]
    assert len(sqs_pollers) == 1
    assert [source.queue_url for source in sqs_pollers[0].sources] == [
        os.environ[name] for name in ("IMMEDIATE_QUEUE_URL", "HIGH_QUEUE_URL", "MEDIUM_QUEUE_URL", "LOW_QUEUE_URL")
    ]
    assert all(source.report_batch_item_failures for source in sqs_pollers[0].sources)
    schedules = {poller.function.logical_id for poller in pollers if isinstance(poller, SchedulePoller)}
    assert schedules == {"SchedulerFunction", "ReporterFunction", "BounceFunction"}
    # The bounce mailboxes keep their own pace (GMP_BOUNCE_INTERVAL): a login every half second is not for them.
    paced = PollerContext(stack.emulator.resolver, scheduler_interval=0.5, schedule_intervals={"BounceFunction": 60})
    intervals = {
        poller.function.logical_id: poller.interval
        for poller in pollers_from_template(functions, paced)
        if isinstance(poller, SchedulePoller)
    }
    assert intervals == {"SchedulerFunction": 0.5, "ReporterFunction": 0.5, "BounceFunction": 60}
    streams = [poller for poller in pollers if isinstance(poller, StreamPoller)]
    assert [poller.stream_arn for poller in streams] == [
        stack.emulator.resources["MessagesTable"].attributes["StreamArn"]
    ]


def test_schedule_poller_sends_scheduled_events_every_interval() -> None:
    events: list[dict[str, Any]] = []
    poller = SchedulePoller(lambda event, context: events.append(event), interval=0.1)
    poller.start()
    try:
        wait_until(lambda: len(events) >= 2, timeout=10)
    finally:
        poller.stop()
    assert events[0]["detail-type"] == "Scheduled Event"
    assert events[0]["source"] == "aws.events"
    assert events[0]["resources"][0].startswith("arn:aws:events:us-east-1:")


def _stream_table(stack: LocalStack) -> tuple[str, str]:
    assert stack.emulator is not None
    dynamodb = stack.emulator.client("dynamodb")
    name = f"test-stream-{uuid.uuid4().hex[:8]}"
    table = dynamodb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )["TableDescription"]
    return name, str(table["LatestStreamArn"])


def test_stream_poller_delivers_dynamodb_stream_events(stack: LocalStack) -> None:
    assert stack.emulator is not None
    dynamodb = stack.emulator.client("dynamodb")
    name, stream_arn = _stream_table(stack)
    events: list[dict[str, Any]] = []
    poller = StreamPoller(
        lambda event, context: events.append(event),
        stream_arn,
        client=stack.emulator.client("dynamodbstreams"),
        filters=[{"eventName": ["MODIFY"], "dynamodb": {"NewImage": {"status": {"S": ["sent"]}}}}],
    )
    poller.start()
    dynamodb.put_item(TableName=name, Item={"pk": {"S": "m1"}, "status": {"S": "pending"}, "raw": {"B": b"\x00"}})
    dynamodb.put_item(TableName=name, Item={"pk": {"S": "m1"}, "status": {"S": "sent"}, "raw": {"B": b"\x00"}})
    deadline = time.monotonic() + 5
    while not events and time.monotonic() < deadline:
        time.sleep(0.05)
    poller.stop()
    [record] = events[0]["Records"]
    assert record["eventName"] == "MODIFY"
    assert record["eventSource"] == "aws:dynamodb"
    assert record["eventSourceARN"] == stream_arn
    assert record["dynamodb"]["Keys"] == {"pk": {"S": "m1"}}
    assert record["dynamodb"]["OldImage"]["status"] == {"S": "pending"}
    assert record["dynamodb"]["NewImage"]["raw"] == {"B": "AA=="}
    assert isinstance(record["dynamodb"]["ApproximateCreationDateTime"], int)


def test_stream_poller_retries_from_the_first_reported_failure(stack: LocalStack) -> None:
    assert stack.emulator is not None
    dynamodb = stack.emulator.client("dynamodb")
    name, stream_arn = _stream_table(stack)
    delivered: list[list[str]] = []

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        keys = [r["dynamodb"]["Keys"]["pk"]["S"] for r in event["Records"]]
        delivered.append(keys)
        failed = [r for r in event["Records"] if r["dynamodb"]["Keys"]["pk"]["S"] == "b"]
        if len(delivered) == 1 and failed:
            return {"batchItemFailures": [{"itemIdentifier": failed[0]["dynamodb"]["SequenceNumber"]}]}
        return {"batchItemFailures": []}

    poller = StreamPoller(
        handler,
        stream_arn,
        client=stack.emulator.client("dynamodbstreams"),
        report_batch_item_failures=True,
        batching_window=0.5,
    )
    poller.start()
    for key in ("a", "b", "c"):
        dynamodb.put_item(TableName=name, Item={"pk": {"S": key}})
    deadline = time.monotonic() + 5
    while len(delivered) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    poller.stop()
    assert delivered == [["a", "b", "c"], ["b", "c"]]


def _claim_race(dynamodb: Any, table: str, contenders: int) -> list[int]:
    """Contenders that won one conditional claim of the same fresh item, all starting together."""
    key = {"pk": {"S": f"race-{uuid.uuid4().hex}"}, "sk": {"S": "claim"}}
    dynamodb.put_item(TableName=table, Item={**key, "status": {"S": "pending"}, "rev": {"N": "1"}})
    winners: list[int] = []
    barrier = threading.Barrier(contenders)
    # botocore makes a client's exception classes on first use, unlocked: threads racing to make them
    # get different ConditionalCheckFailedException classes, and `except` misses the others'.
    refused = dynamodb.exceptions.ConditionalCheckFailedException

    def claim(n: int) -> None:
        barrier.wait()
        try:
            dynamodb.update_item(
                TableName=table,
                Key=key,
                UpdateExpression="SET #s = :sending, claim_id = :n, attempts = if_not_exists(attempts, :zero) + :one",
                ConditionExpression="#s = :pending AND rev = :rev",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={
                    ":sending": {"S": "sending"},
                    ":pending": {"S": "pending"},
                    ":rev": {"N": "1"},
                    ":n": {"N": str(n)},
                    ":zero": {"N": "0"},
                    ":one": {"N": "1"},
                },
            )
            winners.append(n)
        except refused:
            pass

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(contenders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return winners


def test_concurrent_conditional_updates_let_exactly_one_claim_win(stack: LocalStack) -> None:
    # moto checks a condition and then writes without a lock; the emulator serialises DynamoDB requests.
    assert stack.emulator is not None
    dynamodb = stack.emulator.client("dynamodb")
    switch_interval = sys.getswitchinterval()
    # Frequent thread switches make an unguarded check-then-write race show up within a few rounds.
    sys.setswitchinterval(1e-6)
    try:
        winner_counts = [len(_claim_race(dynamodb, os.environ["STATE_TABLE"], 6)) for _ in range(30)]
    finally:
        sys.setswitchinterval(switch_interval)
    assert winner_counts == [1] * 30
