"""The message `gmp send` submits: from its flags, or from an .eml file parsed with the standard library.

The API carries one body per message (`body` with `content_type` plain or html). An .eml whose body has
both a text and an html alternative is sent as its html part; the text alternative is dropped (and said so).
Attachments travel inline as `base64:` storage paths.
"""

from __future__ import annotations

import base64
import mimetypes
import uuid
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import getaddresses
from pathlib import Path
from typing import Any

from .config import CliError


@dataclass
class Draft:
    """What the message will hold, filled from an .eml first and then from the flags."""

    sender: str | None = None
    to: list[str] = field(default_factory=list)
    cc: list[str] = field(default_factory=list)
    bcc: list[str] = field(default_factory=list)
    reply_to: str | None = None
    subject: str | None = None
    body: str = ""
    content_type: str = "plain"
    message_id: str | None = None
    attachments: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def addresses(values: list[str] | None) -> list[str]:
    """Repeated and comma-separated address flags as one list."""
    found: list[str] = []
    for value in values or []:
        found += [a.strip() for a in value.split(",") if a.strip()]
    return found


def attachment(filename: str, content: bytes, mime_type: str | None = None) -> dict[str, Any]:
    """An inline attachment of the API: `base64:` content, its MIME type guessed from the name when not given."""
    mime = mime_type or mimetypes.guess_type(filename)[0] or "application/octet-stream"
    return {
        "filename": filename,
        "storage_path": "base64:" + base64.b64encode(content).decode("ascii"),
        "mime_type": mime,
    }


def attach_file(path: Path) -> dict[str, Any]:
    """A file given with --attach."""
    try:
        return attachment(path.name, path.read_bytes())
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from exc


UPLOAD_PREFIX = "upload:"  # the storage_path of a file uploaded with `gmp files upload` (POST /large-files)


def upload_attachment(value: str) -> dict[str, Any]:
    """An attachment given with --attach-upload `upload:<id>=<name>`: the service fetches it from its uploads."""
    reference, sep, filename = value.partition("=")
    reference, filename = reference.strip(), filename.strip()
    if not reference.startswith(UPLOAD_PREFIX) or reference == UPLOAD_PREFIX:
        raise CliError(f"--attach-upload {value!r}: expected upload:<id>=<file name> (gmp files upload prints it)")
    if not sep or not filename:
        raise CliError(f"--attach-upload {value!r}: give the file's name too: {reference}=<file name>")
    return {
        "filename": filename,
        "storage_path": reference,
        "fetch_mode": "upload",
        "mime_type": mimetypes.guess_type(filename)[0] or "application/octet-stream",
    }


def _header_addresses(msg: EmailMessage, name: str) -> list[str]:
    values = msg.get_all(name) or []
    return [addr if not real else f"{real} <{addr}>" for real, addr in getaddresses([str(v) for v in values]) if addr]


def from_eml(path: Path) -> Draft:
    """A draft from an RFC 5322 file: From, To, Cc, Bcc, Reply-To, Subject, Message-ID, body, attachments."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from exc
    msg = BytesParser(policy=policy.default).parsebytes(raw)
    if not isinstance(msg, EmailMessage):  # pragma: no cover - policy.default always builds EmailMessage
        raise CliError(f"{path} is not an email message")
    draft = Draft()
    senders = _header_addresses(msg, "From")
    draft.sender = senders[0] if senders else None
    draft.to = _header_addresses(msg, "To")
    draft.cc = _header_addresses(msg, "Cc")
    draft.bcc = _header_addresses(msg, "Bcc")
    reply_to = _header_addresses(msg, "Reply-To")
    draft.reply_to = reply_to[0] if reply_to else None
    draft.subject = str(msg["Subject"]) if msg["Subject"] is not None else None
    if msg["Message-ID"]:
        draft.message_id = str(msg["Message-ID"]).strip()
    html = msg.get_body(preferencelist=("html",))
    text = msg.get_body(preferencelist=("plain",))
    if html is not None:
        draft.body, draft.content_type = str(html.get_content()), "html"
        if text is not None and text is not html:
            draft.warnings.append("the message has text and html bodies; the API carries one: sending the html")
    elif text is not None:
        draft.body = str(text.get_content())
    for part in msg.iter_attachments():
        content = part.get_payload(decode=True)
        if not isinstance(content, bytes):
            continue
        name = part.get_filename() or f"attachment-{len(draft.attachments) + 1}"
        draft.attachments.append(attachment(name, content, part.get_content_type()))
    return draft


def new_id() -> str:
    """An id for a message sent without --id."""
    return f"gmp-{uuid.uuid4().hex}"


def build(
    draft: Draft, *, message_id: str, account_id: str, tenant_id: str | None, extra: dict[str, Any]
) -> dict[str, Any]:
    """The API's Message, after checking what the API requires is there."""
    missing = [
        flag
        for flag, value in (("--from", draft.sender), ("--to", draft.to), ("--subject", draft.subject))
        if not value
    ]
    if missing:
        raise CliError("missing " + ", ".join(missing) + " (give the flags or an .eml file that has them)")
    message: dict[str, Any] = {
        "id": message_id,
        "account_id": account_id,
        "from": draft.sender,
        "to": draft.to,
        "subject": draft.subject,
        "body": draft.body,
        "content_type": draft.content_type,
    }
    if tenant_id:
        message["tenant_id"] = tenant_id
    for key, value in (("cc", draft.cc), ("bcc", draft.bcc), ("reply_to", draft.reply_to)):
        if value:
            message[key] = value
    if draft.attachments:
        message["attachments"] = draft.attachments
    message.update({k: v for k, v in extra.items() if v is not None})
    return message
