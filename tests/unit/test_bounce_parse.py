"""The bounce parser over a corpus of real-world formats (tests/fixtures/bounces/, written from each MTA's
published format): what failed, for whom, how final, and which message it was about."""

from __future__ import annotations

import pytest
from mailproxy.bounce_parse import BounceType, ReportKind, parse

from tests.bounce_mail import arf, dsn, fixture

# file → (recipient, type, enhanced status, SMTP code, X-Genro-Mail-ID, a phrase of the reason)
CORPUS = {
    "postfix-user-unknown.eml": ("nobody@example.org", BounceType.HARD, "5.1.1", "550", "postfix-1", "User unknown"),
    "exim-mailbox-full.eml": ("full@example.net", BounceType.SOFT, "4.2.2", "452", "exim-1", "over quota"),
    "exchange-ndr.eml": (
        "gone@contoso.example.com",
        BounceType.HARD,
        "5.1.10",
        "550",
        "exchange-1",
        "RecipientNotFound",
    ),
    "gmail-dsn.eml": ("missing.person@gmail.example.com", BounceType.HARD, "5.1.1", "550", "gmail-1", "does not exist"),
    "qmail-failure-notice.eml": (
        "olduser@qmail.example.biz",
        BounceType.HARD,
        "5.1.1",
        "550",
        "qmail-1",
        "No such user",
    ),
}


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_each_mta_format_gives_the_failed_recipient_its_status_and_the_original_message(name: str) -> None:
    recipient, bounce_type, status, smtp_code, genro_id, phrase = CORPUS[name]
    parsed = parse(fixture(name))
    assert parsed.kind == ReportKind.BOUNCE
    [failure] = parsed.failures
    assert failure.recipient == recipient
    assert failure.bounce_type == bounce_type
    assert failure.status == status
    assert failure.smtp_code == smtp_code
    assert failure.code == smtp_code  # genro's bounce_code: the SMTP reply code first
    assert phrase in failure.reason
    assert parsed.genro_id == genro_id


def test_the_addresses_a_report_was_sent_to_carry_a_verp_token() -> None:
    assert parse(fixture("gmail-dsn.eml")).addresses == ("bounces+ab12cd34@bounce.example.com",)


def test_an_arf_report_is_a_complaint_about_the_original_recipient() -> None:
    parsed = parse(fixture("arf-complaint.eml"))
    assert parsed.kind == ReportKind.COMPLAINT
    [failure] = parsed.failures
    assert (failure.recipient, failure.bounce_type, failure.reason) == (
        "annoyed@isp.example.com",
        None,
        "complaint: abuse",
    )
    assert parsed.genro_id == "arf-1"


@pytest.mark.parametrize("name", ["out-of-office.eml", "vacation-no-headers.eml"])
def test_auto_replies_are_not_bounces(name: str) -> None:
    parsed = parse(fixture(name))
    assert parsed.kind == ReportKind.AUTO_REPLY
    assert parsed.failures == ()


@pytest.mark.parametrize(
    "raw", [fixture("malformed.eml"), fixture("malformed-report.eml"), b"", b"\xff\xfe\x00", b"From: x"]
)
def test_malformed_mail_is_nothing_and_never_raises(raw: bytes) -> None:
    parsed = parse(raw)
    assert parsed.kind == ReportKind.OTHER
    assert parsed.failures == ()


def test_a_dsn_of_delivered_or_relayed_recipients_is_no_failure() -> None:
    raw = dsn(to="b@x.test", recipient="ok@example.test", status="2.0.0", action="delivered", diagnostic="smtp; 250 OK")
    assert parse(raw).kind == ReportKind.OTHER


def test_a_delayed_dsn_is_soft_and_a_failed_one_without_a_code_is_hard() -> None:
    delayed = parse(dsn(to="b@x.test", recipient="r@example.test", status="4.4.7", action="delayed", diagnostic=""))
    assert delayed.failures[0].bounce_type == BounceType.SOFT
    failed = parse(dsn(to="b@x.test", recipient="r@example.test", status="", action="failed", diagnostic="x; gone"))
    assert failed.failures[0].bounce_type == BounceType.HARD


def test_a_dsn_names_each_failed_recipient_of_a_message() -> None:
    raw = dsn(to="b@x.test", recipient="one@example.test", genro_id="m-1").replace(
        b"Final-Recipient: rfc822; one@example.test",
        b"Final-Recipient: rfc822; one@example.test\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
        b"Final-Recipient: rfc822; two@example.test",
    )
    assert {f.recipient for f in parse(raw).failures} == {"one@example.test", "two@example.test"}


def test_a_made_complaint_names_its_recipient_and_message() -> None:
    parsed = parse(arf(to="b@x.test", recipient="r@example.test", genro_id="m-9"))
    assert (parsed.kind, parsed.failures[0].recipient, parsed.genro_id) == (
        ReportKind.COMPLAINT,
        "r@example.test",
        "m-9",
    )


def test_the_returned_message_id_is_read_from_the_returned_headers_not_the_reports_own() -> None:
    returned = parse(dsn(to="b@x.test", recipient="r@example.test", message_id="abc.def@acme.test"))
    assert returned.message_id == "<abc.def@acme.test>"  # the report's own Message-Id is <dsn-...>
    folded = dsn(to="b@x.test", recipient="r@example.test", message_id="abc@acme.test").replace(
        b"Message-ID: <abc@acme.test>", b"Message-ID:\r\n <abc@acme.test>"
    )
    assert parse(folded).message_id == "<abc@acme.test>"
    assert parse(dsn(to="b@x.test", recipient="r@example.test", returned=False)).message_id is None
