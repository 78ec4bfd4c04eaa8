"""What a message found in a bounce mailbox says: a delivery failure (DSN, RFC 3464, or a non-standard
bounce), a complaint (ARF, RFC 5965), or nothing we act on (an auto-reply, a stray message).

Pure: standard library `email` only, no storage, no network. `parse(raw)` reads the bytes of one message;
what it finds to correlate the report with the original message (the returned `X-Genro-Mail-ID` and the
addresses a VERP return path may be in) is handed to `mailproxy.bounces`.
"""

from __future__ import annotations

import email
import email.header
import email.policy
import re
from collections.abc import Iterable
from email.message import Message
from enum import StrEnum
from typing import NamedTuple

from mailproxy.addresses import find_addresses, first_address

MAX_REASON_CHARS = 500  # what a report and a history event carry of a diagnostic
MAX_SCAN_CHARS = 64_000  # heuristics read no further into a body


class ReportKind(StrEnum):
    """What a message in a bounce mailbox is."""

    BOUNCE = "bounce"
    COMPLAINT = "complaint"
    AUTO_REPLY = "auto-reply"  # out-of-office, vacation, autoresponders: never a bounce
    OTHER = "other"  # nothing recognised (a stray message, a malformed one)


class BounceType(StrEnum):
    """How final a failure is: `hard` (5.x.x, 5xx: the address will not work) or `soft` (4.x.x, 4xx)."""

    HARD = "hard"
    SOFT = "soft"


class Failure(NamedTuple):
    """One recipient a report is about."""

    recipient: str
    bounce_type: BounceType | None  # None for a complaint
    status: str | None  # the enhanced status code (`5.1.1`, RFC 3463) when the report gives one
    smtp_code: str | None  # the SMTP reply code (`550`) when the report gives one

    @property
    def code(self) -> str | None:
        """The `bounce_code` a tenant receives: the SMTP reply code as genro-mail-proxy reports it, else the
        enhanced status."""
        return self.smtp_code or self.status

    reason: str  # the diagnostic text (or the complaint's feedback type)
    # True when no field of the report names the recipient and it was taken from the returned copy's To: that
    # may be anyone the message went to (another To, while the complainant was in Cc or Bcc).
    guessed: bool = False


class Parsed(NamedTuple):
    """A parsed message of a bounce mailbox."""

    kind: ReportKind
    failures: tuple[Failure, ...] = ()
    genro_id: str | None = None  # X-Genro-Mail-ID of the returned message
    addresses: tuple[str, ...] = ()  # where the report was sent (To, Delivered-To...): a VERP address is here
    message_id: str | None = None  # Message-ID of the returned message, <...> included


# -------------------------------------------------------------------------------------------- patterns

_ENHANCED = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_SMTP_CODE = re.compile(r"(?<![\d.])([45][0-5]\d)(?=[\s\-]|$)")
# The value with its continuation lines: the builder folds a long id into RFC 2047 encoded words.
_GENRO_ID = re.compile(r"^X-Genro-Mail-ID:[ \t]*(.*(?:\r?\n[ \t].*)*)", re.I | re.M)
_MESSAGE_ID = re.compile(r"^Message-ID:[ \t]*(?:\r?\n[ \t]+)?(<[^<>\s]{1,998}>)", re.I | re.M)

_BOUNCE_SUBJECTS = re.compile(
    r"undeliver|undelivered mail|delivery status notification \((?:failure|delay)|delivery (?:has )?failed|"
    r"delivery failure|failure notice|returned mail|mail delivery (?:failed|system)|non[- ]?delivery|"
    r"could not be delivered|rejected|bounced",
    re.I,
)
_BOUNCE_SENDERS = ("mailer-daemon", "postmaster", "mail-daemon", "maildelivery", "mailerdaemon")
_AUTO_SUBJECTS = re.compile(
    r"^\s*(?:auto(?:matic)?[\s-]*(?:reply|response|antwort)|out of (?:the )?office|abwesend|absence|vacation|"
    r"away from|réponse automatique|risposta automatica|fuori sede)",
    re.I,
)
# Phrases of a body that say the address itself is gone (hard) or the failure is passing (soft), as MTAs word it.
_HARD_PHRASES = re.compile(
    r"user unknown|unknown user|no such (?:user|mailbox|recipient)|mailbox (?:unavailable|not found|does not exist)|"
    r"does not exist|address rejected|recipient (?:address )?rejected|invalid (?:recipient|mailbox|address)|"
    r"account (?:has been )?disabled|not our customer|no mailbox here|unrouteable address",
    re.I,
)
_SOFT_PHRASES = re.compile(
    r"mailbox (?:is )?full|over quota|quota exceeded|insufficient storage|temporar|try again later|"
    r"delivery (?:temporarily )?(?:delayed|suspended)|will retry|greylist",
    re.I,
)


# -------------------------------------------------------------------------------------------- entry point


def parse(raw: bytes) -> Parsed:
    """What the message `raw` reports; ReportKind.OTHER for anything unreadable (it never raises on input)."""
    try:
        msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    except Exception:
        return Parsed(ReportKind.OTHER)
    try:
        return _classify(msg)
    except Exception:
        return Parsed(ReportKind.OTHER, addresses=_addresses(msg))


def _classify(msg: Message) -> Parsed:
    addresses = _addresses(msg)
    report_type = _report_type(msg)
    if report_type == "feedback-report":
        return _complaint(msg, addresses)
    if report_type == "delivery-status":
        failures = _dsn_failures(msg)
        # A DSN whose every recipient was delivered, relayed or expanded is not a failure.
        return _report(ReportKind.BOUNCE if failures else ReportKind.OTHER, failures, msg, addresses)
    # A non-standard bounce may say Auto-Submitted too (Exim's do): what it says of a recipient decides.
    if _looks_like_bounce(msg):
        failures = _heuristic_failures(msg)
        if failures:
            return _report(ReportKind.BOUNCE, failures, msg, addresses)
    if _is_auto_reply(msg):
        return Parsed(ReportKind.AUTO_REPLY, addresses=addresses)
    return Parsed(ReportKind.OTHER, addresses=addresses)


# -------------------------------------------------------------------------------------------- DSN (RFC 3464)


def _report_type(msg: Message) -> str:
    if msg.get_content_type() != "multipart/report":
        return ""
    value = msg.get_param("report-type")
    return value.strip().lower() if isinstance(value, str) else ""


def _status_fields(msg: Message, *types: str) -> str:
    """The text of the first part of one of `types` (message/delivery-status, message/feedback-report)."""
    for part in msg.walk():
        if part.get_content_type() not in types:
            continue
        payload = part.get_payload()
        if isinstance(payload, list):
            # The email package parses a message/* part's groups as sub-messages made of headers only.
            return "\n\n".join(_headers_text(p) for p in payload if isinstance(p, Message))
        if isinstance(payload, str):
            body = part.get_payload(decode=True)
            return body.decode("utf-8", "replace") if isinstance(body, bytes) else payload
    return ""


def _headers_text(part: Message) -> str:
    return "\n".join(f"{name}: {value}" for name, value in part.items())


def _groups(text: str) -> list[dict[str, str]]:
    """RFC 3464's field groups (per-message, then per-recipient), unfolded, names lowercased; a repeated name
    keeps its first value."""
    groups: list[dict[str, str]] = []
    current: dict[str, str] = {}
    name = ""
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line.strip():
            if current:
                groups.append(current)
            current, name = {}, ""
            continue
        if line[0] in " \t" and name:
            current[name] += " " + line.strip()
            continue
        field, sep, value = line.partition(":")
        if not sep:
            continue
        name = field.strip().lower()
        if name in current:
            name = ""  # a repeated field: its continuation lines belong to nothing we keep
            continue
        current[name] = value.strip()
    if current:
        groups.append(current)
    return groups


def _typed_value(value: str) -> str:
    """`rfc822; user@example.com` → `user@example.com` (the address-type or diagnostic-type dropped)."""
    kind, sep, rest = value.partition(";")
    return rest.strip() if sep else kind.strip()


def _dsn_failures(msg: Message) -> tuple[Failure, ...]:
    failures: list[Failure] = []
    for group in _groups(_status_fields(msg, "message/delivery-status", "text/delivery-status")):
        # The address as the message was sent to it (Original-Recipient) before the one it ended at (forwarding).
        recipient = first_address(_typed_value(group.get("original-recipient") or "")) or first_address(
            _typed_value(group.get("final-recipient") or "")
        )
        if not recipient:
            continue  # the per-message group, or a recipient we cannot name
        action = group.get("action", "").strip().lower()
        if action in ("delivered", "relayed", "expanded"):
            continue
        status = group.get("status", "")
        diagnostic = _typed_value(group.get("diagnostic-code", ""))
        enhanced = _enhanced(status) or _enhanced(diagnostic)
        smtp = _smtp_code(diagnostic) or _smtp_code(status)
        bounce_type = _type_of(enhanced, smtp, action, diagnostic)
        if bounce_type is None:
            continue  # a 2.x.x status, or nothing that says it failed
        reason = diagnostic or status or action
        failures.append(Failure(recipient, bounce_type, enhanced, smtp, _clip(reason)))
    return tuple(failures)


def _enhanced(text: str) -> str | None:
    match = _ENHANCED.search(text)
    return ".".join(match.groups()) if match else None


def _smtp_code(text: str) -> str | None:
    match = _SMTP_CODE.search(text.strip())
    return match.group(1) if match else None


def _type_of(enhanced: str | None, smtp: str | None, action: str, text: str) -> BounceType | None:
    """hard for a permanent failure (5.x.x, 5xx, `failed`), soft for a transient one (4.x.x, 4xx, `delayed`)."""
    first = (enhanced or smtp or "")[:1]
    if first == "5":
        return BounceType.HARD
    if first == "4":
        return BounceType.SOFT
    if first == "2":
        return None
    if action == "failed":
        return BounceType.SOFT if _SOFT_PHRASES.search(text) else BounceType.HARD
    if action == "delayed":
        return BounceType.SOFT
    return None


# -------------------------------------------------------------------------------------------- ARF (RFC 5965)


def _complaint(msg: Message, addresses: tuple[str, ...]) -> Parsed:
    fields: dict[str, str] = {}
    for group in _groups(_status_fields(msg, "message/feedback-report")):
        for name, value in group.items():
            fields.setdefault(name, value)
    recipient = first_address(fields.get("original-rcpt-to", ""))
    guessed = not recipient
    if guessed:
        recipient = _returned_header(msg, "To")
    feedback = fields.get("feedback-type", "abuse").strip().lower() or "abuse"
    if not recipient:
        return _report(ReportKind.COMPLAINT, (), msg, addresses)
    reason = _clip(f"complaint: {feedback}")
    failure = Failure(recipient, None, None, None, reason, guessed=guessed)
    return _report(ReportKind.COMPLAINT, (failure,), msg, addresses)


# -------------------------------------------------------------------------------------------- the returned message


def _returned_parts(msg: Message) -> Iterable[str]:
    """The text of every part that returns the original message or its headers (message/rfc822,
    text/rfc822-headers, message/rfc822-headers), then the text of the message's own parts."""
    returned: list[str] = []
    plain: list[str] = []
    for part in msg.walk():
        kind = part.get_content_type()
        if kind in ("message/rfc822", "message/global"):
            payload = part.get_payload()
            if isinstance(payload, list):
                returned.extend(_headers_text(p) for p in payload if isinstance(p, Message))
            elif isinstance(payload, str):
                returned.append(payload)
        elif kind in ("text/rfc822-headers", "message/rfc822-headers", "text/plain"):
            body = part.get_payload(decode=True)
            text = body.decode("utf-8", "replace")[:MAX_SCAN_CHARS] if isinstance(body, bytes) else ""
            (plain if kind == "text/plain" else returned).append(text)
    return [*returned, *plain]


def _report(kind: ReportKind, failures: tuple[Failure, ...], msg: Message, addresses: tuple[str, ...]) -> Parsed:
    """A report, with the X-Genro-Mail-ID and the Message-ID of the returned message found in what it returns."""
    genro_id = message_id = None
    for text in _returned_parts(msg):
        if genro_id is None and (m := _GENRO_ID.search(text)):
            genro_id = _decoded(m.group(1)).strip() or None
        if message_id is None and (m := _MESSAGE_ID.search(text)):
            message_id = m.group(1)
    return Parsed(kind, failures, genro_id, addresses, message_id)


def _returned_header(msg: Message, name: str) -> str:
    pattern = re.compile(rf"^{re.escape(name)}:[ \t]*(.+)$", re.I | re.M)
    for text in _returned_parts(msg):
        if m := pattern.search(text):
            return first_address(m.group(1))
    return ""


# -------------------------------------------------------------------------------------------- heuristics


def _is_auto_reply(msg: Message) -> bool:
    """RFC 3834's Auto-Submitted: auto-replied, the vacation headers MTAs and Exchange add, or the usual subjects."""
    auto = str(msg.get("Auto-Submitted", "")).strip().lower()
    if auto.startswith("auto-replied"):
        return True
    if str(msg.get("X-Autoreply", "")).strip().lower() in ("yes", "true") or msg.get("X-Autorespond"):
        return True
    suppress = str(msg.get("X-Auto-Response-Suppress", "")).lower()
    precedence = str(msg.get("Precedence", "")).strip().lower()
    subject = _subject(msg)
    if _AUTO_SUBJECTS.search(subject):
        return True
    return precedence == "auto_reply" or ("oof" in suppress and not _BOUNCE_SUBJECTS.search(subject))


def _looks_like_bounce(msg: Message) -> bool:
    sender = str(msg.get("From", "")).lower()
    return any(name in sender for name in _BOUNCE_SENDERS) or bool(_BOUNCE_SUBJECTS.search(_subject(msg)))


def _subject(msg: Message) -> str:
    return _decoded(str(msg.get("Subject", "")))


def _decoded(value: str) -> str:
    """A header value unfolded, its RFC 2047 encoded words decoded (as it is, when they do not decode)."""
    unfolded = re.sub(r"\r?\n(?=[ \t])", "", value)
    try:
        return str(email.header.make_header(email.header.decode_header(unfolded)))
    except Exception:
        return unfolded


def _first_text(msg: Message) -> str:
    for part in msg.walk():
        if part.get_content_type() == "text/plain" and part.get_content_disposition() != "attachment":
            body = part.get_payload(decode=True)
            if isinstance(body, bytes):
                charset = part.get_content_charset() or "utf-8"
                try:
                    return body.decode(charset, "replace")[:MAX_SCAN_CHARS]
                except LookupError:
                    return body.decode("utf-8", "replace")[:MAX_SCAN_CHARS]
    return ""


def _heuristic_failures(msg: Message) -> tuple[Failure, ...]:
    """A non-standard bounce (qmail, old Exim, some gateways): each address the text names before the
    returned message, with the status and reply code near it."""
    text = _first_text(msg)
    # What follows the returned message's marker is the original message, not the report.
    for marker in (
        "--- Below this line is a copy of the message",
        "------ This is a copy of the message",
        "Original message follows",
        "----- Original message -----",
        "Received: ",
    ):
        cut = text.find(marker)
        if cut > 0:
            text = text[:cut]
    own = {a for a in _addresses(msg)} | {first_address(str(msg.get("From", "")))}
    failures: list[Failure] = []
    seen: set[str] = set()
    paragraphs = [p for p in re.split(r"\n\s*\n", text) if p.strip()]
    for index, paragraph in enumerate(paragraphs):
        for recipient, end in find_addresses(paragraph):
            if recipient in seen or recipient in own or recipient.startswith(_BOUNCE_SENDERS):
                continue
            # The reason is the address's paragraph, or the next one when the address stands alone (qmail).
            context = paragraph[end:].strip() or (paragraphs[index + 1] if index + 1 < len(paragraphs) else "")
            nearby = paragraph + "\n" + context
            enhanced, smtp = _enhanced(nearby), _smtp_code_anywhere(nearby)
            bounce_type = _type_of(enhanced, smtp, "failed", nearby)
            if bounce_type is None:
                continue
            seen.add(recipient)
            reason = " ".join(context.split()).lstrip(":;, ") or " ".join(paragraph.split())
            failures.append(Failure(recipient, bounce_type, enhanced, smtp, _clip(reason)))
    return tuple(failures)


def _smtp_code_anywhere(text: str) -> str | None:
    match = re.search(r"(?<![\d.])([45][0-5]\d)(?=[\s\-])", text)
    return match.group(1) if match else None


# -------------------------------------------------------------------------------------------- small helpers


def _addresses(msg: Message) -> tuple[str, ...]:
    """Where the report was sent: To, Delivered-To, X-Original-To, Envelope-To (a VERP token is in one)."""
    found: list[str] = []
    for name in ("Delivered-To", "X-Original-To", "Envelope-To", "To", "X-Envelope-To"):
        for value in msg.get_all(name) or []:
            for address, _ in find_addresses(str(value)):
                if address not in found:
                    found.append(address)
    return tuple(found)


def _clip(text: str) -> str:
    return " ".join(text.split())[:MAX_REASON_CHARS]
