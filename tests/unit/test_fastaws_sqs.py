"""The fast backend's SQS answers as SQS does: delays, visibility, receive counts, redrive, batches."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

from local.fastaws import hook
from tests.unit.fastaws_support import backend, client

__all__ = ["backend"]


class Clock:
    """The backend's time, moved by the test instead of waited for."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(backend: hook.FastAws) -> Clock:
    fake = Clock()
    backend.sqs.clock = fake
    return fake


@pytest.fixture
def sqs(backend: hook.FastAws, clock: Clock) -> Any:
    return client("sqs")


def make_queues(sqs: Any, max_receive: int = 2) -> tuple[str, str]:
    dead = sqs.create_queue(QueueName="dlq")["QueueUrl"]
    dead_arn = sqs.get_queue_attributes(QueueUrl=dead, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    policy = json.dumps({"deadLetterTargetArn": dead_arn, "maxReceiveCount": max_receive})
    main = sqs.create_queue(QueueName="main", Attributes={"VisibilityTimeout": "30", "RedrivePolicy": policy})[
        "QueueUrl"
    ]
    return main, dead


def depth(sqs: Any, url: str) -> tuple[int, int, int]:
    names = [
        "ApproximateNumberOfMessages",
        "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed",
    ]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    visible, inflight, delayed = (int(attributes[name]) for name in names)
    return visible, inflight, delayed


def test_a_batch_send_reports_md5s_and_delays_hold_messages_back(sqs: Any, clock: Clock) -> None:
    url, _ = make_queues(sqs)
    reply = sqs.send_message_batch(
        QueueUrl=url,
        Entries=[
            {
                "Id": "now",
                "MessageBody": "héllo",
                "MessageAttributes": {"kind": {"DataType": "String", "StringValue": "a"}},
            },
            {"Id": "later", "MessageBody": "later", "DelaySeconds": 60},
        ],
    )
    assert reply["Failed"] == []
    first = next(entry for entry in reply["Successful"] if entry["Id"] == "now")
    assert first["MD5OfMessageBody"] == hashlib.md5("héllo".encode()).hexdigest()
    assert "MD5OfMessageAttributes" in first
    assert depth(sqs, url) == (1, 0, 1)
    [message] = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"])["Messages"]
    assert message["Body"] == "héllo"
    assert message["MessageAttributes"] == {"kind": {"DataType": "String", "StringValue": "a"}}
    assert message["MD5OfMessageAttributes"] == first["MD5OfMessageAttributes"]
    clock.now += 20
    assert depth(sqs, url) == (0, 1, 1)
    clock.now += 41  # past the delay and past the received message's 30 s visibility timeout
    assert depth(sqs, url) == (2, 0, 0)


def test_a_received_message_is_invisible_until_its_timeout_and_counts_its_receives(sqs: Any, clock: Clock) -> None:
    url, _ = make_queues(sqs, max_receive=5)
    sqs.send_message(QueueUrl=url, MessageBody="m")
    first = sqs.receive_message(QueueUrl=url, MessageSystemAttributeNames=["All"])["Messages"][0]
    assert first["Attributes"]["ApproximateReceiveCount"] == "1"
    assert "Messages" not in sqs.receive_message(QueueUrl=url)
    clock.now += 31
    second = sqs.receive_message(QueueUrl=url, MessageSystemAttributeNames=["ApproximateReceiveCount"])["Messages"][0]
    assert second["Attributes"] == {"ApproximateReceiveCount": "2"}
    assert second["ReceiptHandle"] != first["ReceiptHandle"]
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=second["ReceiptHandle"], VisibilityTimeout=0)
    third = sqs.receive_message(QueueUrl=url)["Messages"][0]
    sqs.delete_message(QueueUrl=url, ReceiptHandle=third["ReceiptHandle"])
    clock.now += 31
    assert "Messages" not in sqs.receive_message(QueueUrl=url)
    assert depth(sqs, url) == (0, 0, 0)


def test_a_message_received_max_receive_count_times_moves_to_the_dead_letter_queue(sqs: Any, clock: Clock) -> None:
    url, dead = make_queues(sqs, max_receive=2)
    sent = sqs.send_message(QueueUrl=url, MessageBody="poison")["MessageId"]
    for _ in range(2):
        assert sqs.receive_message(QueueUrl=url)["Messages"][0]["MessageId"] == sent
        clock.now += 31
    assert "Messages" not in sqs.receive_message(QueueUrl=url)  # the third receive moves it instead
    [dead_letter] = sqs.receive_message(QueueUrl=dead)["Messages"]
    assert dead_letter["MessageId"] == sent and dead_letter["Body"] == "poison"


def test_batch_limits_and_bad_receipts_fail_as_in_sqs(sqs: Any) -> None:
    url, _ = make_queues(sqs)
    with pytest.raises(ClientError) as too_many:
        sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": str(n), "MessageBody": "x"} for n in range(11)])
    assert too_many.value.response["Error"]["Code"] == "AWS.SimpleQueueService.TooManyEntriesInBatchRequest"
    with pytest.raises(ClientError) as same_ids:
        sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": "a", "MessageBody": "x"}, {"Id": "a", "MessageBody": "y"}])
    assert same_ids.value.response["Error"]["Code"] == "AWS.SimpleQueueService.BatchEntryIdsNotDistinct"
    reply = sqs.delete_message_batch(QueueUrl=url, Entries=[{"Id": "a", "ReceiptHandle": "not-a-handle"}])
    assert reply["Successful"] == [] and reply["Failed"][0]["Code"] == "ReceiptHandleIsInvalid"
    with pytest.raises(ClientError) as unknown:
        sqs.get_queue_url(QueueName="absent")
    assert unknown.value.response["Error"]["Code"] == "AWS.SimpleQueueService.NonExistentQueue"


def test_a_deep_queue_costs_no_more_per_message(sqs: Any) -> None:
    url, _ = make_queues(sqs)
    for start in range(0, 5000, 10):
        sqs.send_message_batch(
            QueueUrl=url, Entries=[{"Id": str(n), "MessageBody": str(n)} for n in range(start, start + 10)]
        )
    assert depth(sqs, url) == (5000, 0, 0)
    received = 0
    while received < 5000:
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
        sqs.delete_message_batch(
            QueueUrl=url, Entries=[{"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(messages)]
        )
        received += len(messages)
    assert depth(sqs, url) == (0, 0, 0)
