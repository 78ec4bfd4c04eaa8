"""The domain's enums are the strings they replace: what is stored, queued and shown does not change."""

from __future__ import annotations

import json
import typing

from mailproxy.adapters.aws.dynamo import to_attr
from mailproxy.compression import compress_json, decompress_json
from mailproxy.domain import FINAL, PENDING_STATUSES, REPORTABLE_EVENTS, UNSENT, EventType, MessageStatus, Outcome
from mailproxy.replies import MessageRecord


def test_a_status_is_stored_as_its_plain_string() -> None:
    attr = to_attr({"status": MessageStatus.SENT, "history": [{"event_type": EventType.DEFERRED}]})
    assert attr == {"M": {"status": {"S": "sent"}, "history": {"L": [{"M": {"event_type": {"S": "deferred"}}}]}}}
    assert type(attr["M"]["status"]["S"]) is str


def test_an_enum_in_json_is_the_same_text_as_the_string() -> None:
    value = {"status": MessageStatus.ERROR, "outcome": Outcome.LOST_CLAIM}
    assert json.dumps(value) == '{"status": "error", "outcome": "lost-claim"}'
    assert decompress_json(compress_json(value)) == {"status": "error", "outcome": "lost-claim"}


def test_a_status_read_back_from_storage_is_found_in_the_status_sets() -> None:
    assert "pending" in UNSENT and "sending" in PENDING_STATUSES and "sent" not in PENDING_STATUSES
    assert "error" in FINAL and "deferred" in REPORTABLE_EVENTS and "queued" not in REPORTABLE_EVENTS


def test_the_documented_record_lists_every_status() -> None:
    documented = typing.get_args(MessageRecord.model_fields["status"].annotation)
    assert documented == tuple(MessageStatus)
