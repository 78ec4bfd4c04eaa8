"""The BounceState port and the messages port's later events: what the bounce poller relies on, on both adapters."""

from __future__ import annotations

import pytest
from mailproxy.domain import EventType, MessageStatus
from mailproxy.messages import event
from mailproxy.stores import Stores

from tests.contract.test_messages import NOW, TENANT, claim, finish, submit


def test_a_mailbox_has_no_position_until_one_is_saved_and_then_the_last_one(stores: Stores) -> None:
    assert stores.bounces.position("t1/acc") is None
    stores.bounces.save_position("t1/acc", identity="imap://h:993/u/INBOX", uidvalidity=7, last_uid=3, now=NOW)
    stores.bounces.save_position("t1/acc", identity="imap://h:993/u/INBOX", uidvalidity=7, last_uid=9, now=NOW + 1)
    stores.bounces.save_position("t1/*", identity="imap://other/INBOX", uidvalidity=1, last_uid=2, now=NOW)
    found = stores.bounces.position("t1/acc")
    assert found is not None
    assert (found["identity"], found["uidvalidity"], found["last_uid"]) == ("imap://h:993/u/INBOX", 7, 9)
    tenant_box = stores.bounces.position("t1/*")
    assert tenant_box is not None and tenant_box["last_uid"] == 2


def test_forgetting_a_tenant_drops_its_mailboxes_only(stores: Stores) -> None:
    for box in ("t1/a", "t1/*", "t2/a"):
        stores.bounces.save_position(box, identity="i", uidvalidity=1, last_uid=5, now=NOW)
    stores.bounces.forget_tenant("t1")
    assert stores.bounces.position("t1/a") is None
    assert stores.bounces.position("t1/*") is None
    assert stores.bounces.position("t2/a") is not None


def test_the_first_signing_key_offered_is_the_one_kept(stores: Stores) -> None:
    assert stores.bounces.sealed_signing_key() is None
    assert stores.bounces.offer_signing_key(b"first") == b"first"
    assert stores.bounces.offer_signing_key(b"second") == b"first"
    assert stores.bounces.sealed_signing_key() == b"first"


def _sent(stores: Stores) -> None:
    submit(stores.messages)
    assert claim(stores.messages, "c1") is not None
    assert finish(stores.messages, "c1")


def test_a_later_event_is_appended_once_per_key(stores: Stores) -> None:
    _sent(stores)
    bounce = event(EventType.BOUNCE, NOW + 60, "550 5.1.1 unknown", bounce_type="hard", recipient="a@x.test")
    assert stores.messages.add_event(TENANT, "m1", bounce, key="bounce:a@x.test", now=NOW + 61)
    assert not stores.messages.add_event(TENANT, "m1", bounce, key="bounce:a@x.test", now=NOW + 62)
    complaint = event(EventType.COMPLAINT, NOW + 90, "complaint: abuse", recipient="a@x.test")
    assert stores.messages.add_event(TENANT, "m1", complaint, key="complaint:a@x.test", now=NOW + 91)
    record = stores.messages.get_state(TENANT, "m1")
    assert record is not None
    assert [e["event_type"] for e in record["history"]][-2:] == [EventType.BOUNCE, EventType.COMPLAINT]
    assert record["history"][-2]["recipient"] == "a@x.test"
    assert record["status"] == MessageStatus.SENT  # a bounce changes no status
    assert record["updated_at"] == NOW + 91


@pytest.mark.parametrize("message_id", ["absent"])
def test_no_event_is_added_to_a_message_that_does_not_exist(stores: Stores, message_id: str) -> None:
    bounce = event(EventType.BOUNCE, NOW, "x", bounce_type="hard")
    assert not stores.messages.add_event(TENANT, message_id, bounce, key="bounce:a@x.test", now=NOW)
    assert stores.messages.get_state(TENANT, message_id) is None
