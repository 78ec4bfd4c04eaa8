"""Building the MIME email and envelope from a stored message."""

# ruff: noqa: RUF001 - Greek and Cyrillic text is the point of these tests

from __future__ import annotations

import email
import email.policy
import email.utils
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage, MIMEPart
from typing import Any

import pytest
from mailproxy.addresses import parse_addresses
from mailproxy.email_builder import Attachment, OutgoingEmail, build_email
from mailproxy.errors import PermanentDeliveryError


def build(attachments: list[Attachment] | None = None, **fields: Any) -> OutgoingEmail:
    payload: dict[str, Any] = {
        "id": "m-1",
        "from": "Acme Shop <noreply@acme.test>",
        "to": ["ann@example.test"],
        "subject": "Your order",
        "body": "Thanks!",
    }
    payload.update(fields)
    return build_email(payload, message_id="derived-1@mailproxy.test", attachments=attachments or [])


def on_the_wire(outgoing: OutgoingEmail) -> EmailMessage:
    """The message as a receiver parses it from the bytes sent."""
    parsed = email.message_from_bytes(outgoing.as_bytes(), policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def text_of(part: MIMEPart | None) -> str:
    """A text part's content with line endings as a mail client shows them."""
    assert part is not None
    content = part.get_content()
    assert isinstance(content, str)
    return content.replace("\r\n", "\n")


def test_from_keeps_its_display_name() -> None:
    received = on_the_wire(build())

    assert received["From"] == "Acme Shop <noreply@acme.test>"


def test_to_and_cc_accept_lists_and_comma_separated_strings() -> None:
    outgoing = build(to="ann@example.test, Bob <bob@example.test>", cc=["carl@example.test"])
    received = on_the_wire(outgoing)

    assert received["To"] == "ann@example.test, Bob <bob@example.test>"
    assert received["Cc"] == "carl@example.test"
    assert outgoing.recipients == ["ann@example.test", "bob@example.test", "carl@example.test"]


def test_bcc_gets_the_mail_but_no_bcc_header() -> None:
    outgoing = build(bcc="hidden@example.test")

    assert "hidden@example.test" in outgoing.recipients
    assert outgoing.message["Bcc"] is None
    assert b"hidden@example.test" not in outgoing.as_bytes()


def test_recipients_are_deduplicated_in_order() -> None:
    outgoing = build(to="ann@example.test, bob@example.test", cc="ANN@example.test", bcc=["bob@example.test"])

    assert outgoing.recipients == ["ann@example.test", "bob@example.test"]


def test_reply_to_header_is_set() -> None:
    received = on_the_wire(build(reply_to="Support <help@acme.test>"))

    assert received["Reply-To"] == "Support <help@acme.test>"


def test_envelope_sender_is_the_return_path_when_given() -> None:
    outgoing = build(return_path="bounces@acme.test")

    assert outgoing.sender == "bounces@acme.test"
    assert outgoing.message["Return-Path"] is None
    assert on_the_wire(outgoing)["From"] == "Acme Shop <noreply@acme.test>"


def test_envelope_sender_is_the_bare_from_address_otherwise() -> None:
    assert build().sender == "noreply@acme.test"


def test_custom_headers_are_added_as_strings_and_replace_same_named_ones() -> None:
    received = on_the_wire(build(headers={"X-Campaign": 42, "subject": "Replaced", "X-Flag": True}))

    assert received["X-Campaign"] == "42"
    assert received["X-Flag"] == "True"
    assert received.get_all("Subject") == ["Replaced"]


def test_custom_header_values_cannot_inject_new_headers() -> None:
    received = on_the_wire(build(headers={"X-Note": "a\r\nBcc: victim@example.test"}))

    assert received["Bcc"] is None
    assert received["X-Note"] == "a Bcc: victim@example.test"


def test_invalid_custom_header_name_is_a_permanent_error() -> None:
    with pytest.raises(PermanentDeliveryError, match="invalid header name"):
        build(headers={"Bad Name": "x"})


def test_every_email_carries_its_genro_mail_id() -> None:
    received = on_the_wire(build(id="order-77", headers={"X-Other": "x"}))

    assert received.get_all("X-Genro-Mail-ID") == ["order-77"]


def test_message_id_given_by_the_client_is_used() -> None:
    received = on_the_wire(build(message_id="<client-1@acme.test>"))

    assert received["Message-ID"] == "<client-1@acme.test>"


def test_message_id_without_angle_brackets_gets_them() -> None:
    assert build(message_id="client-2@acme.test").message["Message-ID"] == "<client-2@acme.test>"


def test_generated_message_id_is_the_callers_stable_one() -> None:
    first, retry = build(), build()

    assert first.message["Message-ID"] == retry.message["Message-ID"] == "<derived-1@mailproxy.test>"


def test_date_is_added_in_utc_when_absent() -> None:
    received = on_the_wire(build())

    sent_at = email.utils.parsedate_to_datetime(received["Date"])
    assert sent_at.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - sent_at) < timedelta(minutes=1)


@pytest.mark.parametrize(
    "name",
    [
        "Date",
        "message-id",
        "FROM",
        "To",
        "Cc",
        "Bcc",
        "Sender",
        "MIME-Version",
        "Content-Type",
        "content-transfer-encoding",
        "Content-Disposition",
        "X-Genro-Mail-ID",
        "Return-Path",
    ],
)
def test_a_custom_header_cannot_replace_a_structural_one(name: str) -> None:
    # A message stored before intake refused these fails rather than going out with a forged header.
    with pytest.raises(PermanentDeliveryError, match=f"invalid header: {name}"):
        build(headers={name: "x@evil.test"})


def test_reply_to_and_other_custom_headers_replace_their_namesakes() -> None:
    received = on_the_wire(build(reply_to="a@acme.test", headers={"Reply-To": "b@acme.test", "Subject": "New"}))

    assert received.get_all("Reply-To") == ["b@acme.test"]
    assert received.get_all("Subject") == ["New"]


@pytest.mark.parametrize(
    "subject",
    ["Γειά σου κόσμε", "こんにちは世界", "Offre spéciale 🎉 -50 %", ", ".join(["Привет мир"] * 12)],
)
def test_utf8_subject_and_body_round_trip(subject: str) -> None:
    outgoing = build(subject=subject, body=f"{subject}\nsecond line ✓")
    raw = outgoing.as_bytes()
    received = on_the_wire(outgoing)

    assert raw.isascii()  # headers RFC 2047-encoded and a 7-bit body: any relay takes it
    assert received["Subject"] == subject
    body = received.get_body(("plain",))
    assert text_of(body) == f"{subject}\nsecond line ✓\n"
    assert body is not None and body.get_content_charset() == "utf-8"


def test_non_ascii_display_name_round_trips() -> None:
    fields: dict[str, Any] = {"from": "Ελένη Παπαδοπούλου <eleni@acme.test>"}
    received = on_the_wire(build(**fields))

    assert received["From"] == "Ελένη Παπαδοπούλου <eleni@acme.test>"


def test_lines_end_with_crlf() -> None:
    raw = build(body="one\ntwo\n").as_bytes()

    assert b"\r\n" in raw
    assert b"\n" not in raw.replace(b"\r\n", b"")


def test_plain_is_the_default_content_type() -> None:
    assert on_the_wire(build()).get_content_type() == "text/plain"


def test_html_body_is_sent_as_text_html() -> None:
    received = on_the_wire(build(body="<p>Hi <b>Ann</b></p>", content_type="html"))

    assert received.get_content_type() == "text/html"
    assert text_of(received) == "<p>Hi <b>Ann</b></p>\n"


def test_attachments_are_added_with_their_mime_type() -> None:
    pdf = Attachment(filename="invoice.pdf", content=b"%PDF-1.4 fake", mime_type="application/pdf")
    photo = Attachment(filename="fotografía.png", content=b"\x89PNG\r\n\x1a\n", mime_type="image/png")
    received = on_the_wire(build(attachments=[pdf, photo], body="<p>See attached</p>", content_type="html"))

    assert received.get_content_type() == "multipart/mixed"
    parts = list(received.iter_attachments())
    assert [(p.get_filename(), p.get_content_type(), p.get_content()) for p in parts] == [
        ("invoice.pdf", "application/pdf", b"%PDF-1.4 fake"),
        ("fotografía.png", "image/png", b"\x89PNG\r\n\x1a\n"),
    ]
    assert text_of(received.get_body(("html",))) == "<p>See attached</p>\n"


def test_malformed_mime_type_falls_back_to_octet_stream() -> None:
    received = on_the_wire(build(attachments=[Attachment("blob", b"x", "nonsense")]))

    [part] = list(received.iter_attachments())
    assert part.get_content_type() == "application/octet-stream"


def test_message_without_any_recipient_is_a_permanent_error() -> None:
    with pytest.raises(PermanentDeliveryError, match="missing to"):
        build(to=[])


def test_unparseable_address_is_a_permanent_error() -> None:
    with pytest.raises(PermanentDeliveryError, match="invalid address"):
        build(to="not an address")


def test_parse_addresses_drops_display_names() -> None:
    assert parse_addresses('Ann <ann@example.test>, "Doe, John" <john@example.test>') == [
        "ann@example.test",
        "john@example.test",
    ]
    assert parse_addresses(["Bob <bob@example.test>", " ", "carl@example.test"]) == [
        "bob@example.test",
        "carl@example.test",
    ]
    assert parse_addresses(None) == []
    assert parse_addresses("") == []


def test_long_non_latin_subject_keeps_every_space_and_short_lines() -> None:
    # CPython 3.12's own folder glues words together here (gh-144156); the builder must not.
    subject = " ".join(["Ελληνικά", "Привет", "мир", "日本語", "😀"] * 8)
    raw = build(subject=subject, headers={"X-Summary": subject}).as_bytes()
    received = email.message_from_bytes(raw, policy=email.policy.default)

    assert received["Subject"] == subject
    assert received["X-Summary"] == subject
    assert max(len(line) for line in raw.split(b"\r\n")) <= 78


def test_secrets_and_attachment_bytes_never_show_in_a_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    # What a traceback or a debug log of these values prints: never a secret, never the file.
    import json

    from mailproxy import settings
    from mailproxy.smtp import AccountConfig

    config = AccountConfig(key="t1/a", host="smtp.example", port=587, user="u", password="s3cret-pw")
    assert "s3cret-pw" not in repr(config) and "smtp.example" in repr(config)
    assert "s3cret-pw" not in json.dumps({"account": config}, default=str)  # as Powertools logs an `extra`
    attachment = Attachment("report.pdf", b"%PDF-private-bytes")
    assert "private" not in repr(attachment) and "report.pdf" in repr(attachment)
    for name in ("TENANTS_TABLE", "MESSAGES_TABLE", "PAYLOADS_TABLE", "STATE_TABLE", "PAYLOAD_BUCKET"):
        monkeypatch.setenv(name, "x")
    for name in ("SECRETS_KEY_ID", "IMMEDIATE_QUEUE_URL", "HIGH_QUEUE_URL", "MEDIUM_QUEUE_URL", "LOW_QUEUE_URL"):
        monkeypatch.setenv(name, "x")
    monkeypatch.setenv("GMP_API_TOKEN", "admin-s3cret")
    settings.get_settings.cache_clear()
    try:
        loaded = settings.get_settings()
        assert loaded.admin_token == "admin-s3cret" and "admin-s3cret" not in repr(loaded)
    finally:
        settings.get_settings.cache_clear()
