"""Reports as MTAs and mailbox providers write them, made for a given message: what tests append to a bounce
mailbox (the fixed formats of many MTAs are under tests/fixtures/bounces/)."""

from __future__ import annotations

from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "bounces"


def fixture(name: str) -> bytes:
    """A report of the corpus, as stored."""
    return (FIXTURES / name).read_bytes()


def dsn(
    *,
    to: str,
    recipient: str,
    genro_id: str | None = None,
    message_id: str | None = None,
    status: str = "5.1.1",
    diagnostic: str = "smtp; 550 5.1.1 <{recipient}>: Recipient address rejected: User unknown",
    action: str = "failed",
    returned: bool = True,
    original_headers: str | None = None,
) -> bytes:
    """A Postfix-style RFC 3464 DSN sent to `to` about `recipient`; it returns the original headers when
    `returned` (`original_headers` as they were sent, else X-Genro-Mail-ID and Message-ID as given), else
    nothing of the original message."""
    headers = ""
    if returned and original_headers is not None:
        headers = original_headers
    elif returned:
        headers = "\n".join(
            line
            for line in (
                "From: Acme <noreply@acme.test>",
                f"To: {recipient}",
                "Subject: Hello",
                f"Message-ID: <{message_id}>" if message_id else "",
                f"X-Genro-Mail-ID: {genro_id}" if genro_id else "",
            )
            if line
        )
    returned_part = (
        f"""--BOUNDARY
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers

{headers}

"""
        if returned
        else ""
    )
    text = f"""Return-Path: <>
Delivered-To: {to}
Date: Thu, 03 Dec 2026 10:15:02 +0000
From: MAILER-DAEMON@mx.acme.test (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
To: {to}
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="BOUNDARY"
Message-Id: <dsn-{recipient}@mx.acme.test>

--BOUNDARY
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

I'm sorry to have to inform you that your message could not be delivered.

--BOUNDARY
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.acme.test

Final-Recipient: rfc822; {recipient}
Action: {action}
Status: {status}
Diagnostic-Code: {diagnostic.format(recipient=recipient)}

{returned_part}--BOUNDARY--
"""
    return text.replace("\n", "\r\n").encode()


def arf(*, to: str, recipient: str, genro_id: str) -> bytes:
    """An RFC 5965 abuse report of `recipient` about the message `genro_id`."""
    text = f"""From: Feedback Loop <fbl@isp.test>
To: {to}
Subject: Abuse report
Date: Thu, 03 Dec 2026 15:20:00 +0000
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="ARF"

--ARF
Content-Type: text/plain

This is an email abuse report.

--ARF
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: Test/1.0
Version: 1
Original-Rcpt-To: <{recipient}>

--ARF
Content-Type: message/rfc822

From: Acme <noreply@acme.test>
To: {recipient}
Subject: Hello
X-Genro-Mail-ID: {genro_id}

Buy now.
--ARF--
"""
    return text.replace("\n", "\r\n").encode()
