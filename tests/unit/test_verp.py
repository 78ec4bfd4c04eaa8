"""VERP tokens: what a message's return path carries, read back only for the tenant it was signed for."""

from __future__ import annotations

import pytest
from mailproxy import report_format, verp

KEY = b"k" * 52


@pytest.mark.parametrize("message_id", ["m-1", "0f8e6a52-6a4e-4d0e-9a55-2f1d3c9b7e01", "Order/42", "Ünïcode é"])
def test_a_token_names_its_message_for_its_tenant_only(message_id: str) -> None:
    address = verp.return_path("bounces@bounce.test", "acme", message_id, KEY)
    assert address is not None
    local, _, domain = address.partition("@")
    assert local.startswith("bounces+") and domain == "bounce.test" and len(local) <= verp.MAX_LOCAL_PART
    assert verp.message_of(address, "bounces@bounce.test", "acme", KEY) == message_id
    assert verp.message_of(address.upper(), "bounces@bounce.test", "acme", KEY) == message_id  # a folded local part
    assert verp.message_of(address, "bounces@bounce.test", "other", KEY) is None
    assert verp.message_of(address, "bounces@bounce.test", "acme", b"another key") is None
    assert verp.message_of(address, "bounces@elsewhere.test", "acme", KEY) is None


def test_a_changed_token_is_refused() -> None:
    address = verp.return_path("bounces@bounce.test", "acme", "m-1", KEY)
    assert address is not None
    forged = address.replace("lm-1@", "lm-2@")
    assert verp.message_of(forged, "bounces@bounce.test", "acme", KEY) is None
    for junk in (
        "bounces@bounce.test",
        "bounces+@bounce.test",
        "bounces+short@bounce.test",
        "x+aaaaaaaalm-1@bounce.test",
    ):
        assert verp.message_of(junk, "bounces@bounce.test", "acme", KEY) is None


def test_an_id_too_long_for_a_local_part_gets_no_token() -> None:
    assert verp.return_path("bounces@bounce.test", "acme", "x" * 80, KEY) is None


def test_a_bounce_event_is_reported_as_genro_enterprise_does_plus_the_recipient() -> None:
    event = {
        "event_type": "bounce",
        "event_ts": 1_800_000_000,
        "description": "550 5.1.1 User unknown",
        "bounce_type": "hard",
        "bounce_code": "550",
        "bounce_status": "5.1.1",
        "recipient": "a@x.test",
    }
    assert report_format.entry("m-1", event) == {
        "id": "m-1",
        "bounce_ts": 1_800_000_000,
        "bounce_type": "hard",
        "bounce_code": "550",
        "bounce_status": "5.1.1",
        "bounce_reason": "550 5.1.1 User unknown",
        "recipient": "a@x.test",
    }
    complaint = report_format.entry("m-1", {"event_type": "complaint", "event_ts": 5, "bounce_type": "complaint"})
    assert complaint["bounce_type"] == "complaint" and complaint["bounce_ts"] == 5
