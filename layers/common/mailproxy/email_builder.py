"""Turn a stored message (the payload as submitted) into the MIME email and SMTP envelope to send."""

from __future__ import annotations

import base64
import email.policy
import email.utils
import functools
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from email.errors import HeaderParseError
from email.headerregistry import Address, HeaderRegistry, UnstructuredHeader
from email.message import EmailMessage
from email.policy import Policy
from typing import Any, NamedTuple

from mailproxy.addresses import address_pairs
from mailproxy.errors import PermanentDeliveryError
from mailproxy.limits import is_structural_header

# Parsed headers kept for reuse, least recently used dropped first. Only short values: a parse tree
# takes hundreds of times its text (a 1 000-character To list, ~0.4 MB), values that long rarely
# repeat, and the repeated ones are short (the MIME headers, a tenant's From, the Date of a second).
# 256 values of at most 100 characters hold a few MB (~20 MB for the densest values).
_HEADER_CACHE_SIZE = 256
_CACHED_VALUE_CHARS = 100
_NEVER_REPEATED = frozenset({"message-id", "x-genro-mail-id"})


class _FoldedOnce:
    """A header that keeps its folded text per folding policy: one shared by many messages (a tenant's From,
    the MIME headers, see _HeaderClasses) is folded once, not each time a message carrying it is sent.
    Folding reads only the parse tree, which never changes, and these three settings of the policy."""

    def fold(self, *, policy: Policy) -> str:
        """The header as it goes on the wire (the email package calls this when generating)."""
        key = (policy.max_line_length, policy.utf8, policy.linesep)  # type: ignore[attr-defined]
        folds: dict[tuple[Any, ...], str] = self.__dict__.setdefault("_folds", {})
        folded = folds.get(key)
        if folded is None:
            folded = folds[key] = super().fold(policy=policy)  # type: ignore[misc]
        return folded


class _HeaderClasses(HeaderRegistry):
    """The stdlib's header registry, making each header's class once and each short header once per value.

    `HeaderRegistry.__getitem__` builds a new class each time it is called (a few dozen µs, ten-odd
    times per message: a third of building an email); the classes it builds are the same each time.
    Parsing a value is most of the rest, and many values repeat from message to message: a parsed
    header is immutable (folding reads its parse tree, never changes it), so messages can share one.
    """

    def __init__(self) -> None:
        super().__init__()
        self._made: dict[str, type] = {}
        self._parsed = functools.lru_cache(maxsize=_HEADER_CACHE_SIZE)(functools.partial(HeaderRegistry.__call__, self))

    def __getitem__(self, name: str) -> type:
        key = name.lower()
        made = self._made.get(key)
        if made is None:
            made = super().__getitem__(name)
            made = self._made[key] = type(made.__name__, (_FoldedOnce, made), {})
        return made

    def __call__(self, name: str, value: Any) -> Any:
        if type(value) is str and len(value) <= _CACHED_VALUE_CHARS and name.lower() not in _NEVER_REPEATED:
            return self._parsed(name, value)
        return super().__call__(name, value)


# SMTP line endings, and bodies kept 7-bit (quoted-printable or base64) so any relay accepts them
# whether or not it offers 8BITMIME; headers are RFC 2047-encoded either way.
_POLICY = email.policy.SMTP.clone(cte_type="7bit", header_factory=_HeaderClasses())

# RFC 5322 field names: printable ASCII without the colon.
_HEADER_NAME = re.compile(r"^[!-9;-~]+$")

# UTF-8 bytes per encoded word: 39 bytes make a 64-character word, so `Subject: <word>` fits in 78.
_ENCODED_WORD_BYTES = 39

# Longer lines get a transfer encoding (RFC 5322 recommends 78, SMTP allows 998).
_MAX_TEXT_LINE = 78


class Attachment(NamedTuple):
    """One file attached to an email: the name sent, its bytes and its MIME type."""

    filename: str
    content: bytes
    mime_type: str = "application/octet-stream"

    def __repr__(self) -> str:
        return f"Attachment(filename={self.filename!r}, {len(self.content)} bytes, mime_type={self.mime_type!r})"


class OutgoingEmail(NamedTuple):
    """A built email: the MIME message, the envelope sender and every envelope recipient."""

    message: EmailMessage
    sender: str
    recipients: list[str]

    def as_bytes(self) -> bytes:
        """The message as it goes on the wire (CRLF line endings, no Bcc header)."""
        return self.message.as_bytes(policy=_POLICY)


def _set_addresses(msg: EmailMessage, name: str, pairs: list[tuple[str, str]]) -> None:
    short = sum(len(n) + len(a) for n, a in pairs) <= _CACHED_VALUE_CHARS
    msg[name] = (_address_header if short else _address_header.__wrapped__)(name, tuple(pairs))


@functools.lru_cache(maxsize=_HEADER_CACHE_SIZE)
def _address_header(name: str, pairs: tuple[tuple[str, str], ...]) -> Any:
    # The parsed header, shared by every message with the same addresses (see _HeaderClasses).
    return _POLICY.header_factory(name, [Address(display_name=n, addr_spec=a) for n, a in pairs])  # type: ignore[attr-defined]


class _EncodedHeader(str):
    """An unstructured header with non-ASCII text, encoded and folded here rather than by the stdlib.

    CPython 3.12's folder can put a space between two encoded words, where readers drop it
    (RFC 2047 6.2): long Greek or Cyrillic subjects arrive with words glued together (gh-144156).
    Each word here is a self-contained run of characters, spaces included, so nothing is lost.
    """

    name: str
    words: tuple[str, ...]

    def __new__(cls, name: str, value: str) -> _EncodedHeader:
        header = super().__new__(cls, value)
        header.name = name
        header.words = tuple(_encoded_words(value))
        return header

    def fold(self, *, policy: Policy) -> str:
        """The header as it goes on the wire (the email package calls this when generating)."""
        return f"{self.name}: " + (policy.linesep + " ").join(self.words) + policy.linesep


def _encoded_words(text: str) -> list[str]:
    chunks: list[bytes] = []
    chunk = b""
    for char in text:
        encoded = char.encode("utf-8")
        if chunk and len(chunk) + len(encoded) > _ENCODED_WORD_BYTES:
            chunks.append(chunk)
            chunk = b""
        chunk += encoded
    if chunk or not chunks:
        chunks.append(chunk)
    return [f"=?utf-8?b?{base64.b64encode(part).decode('ascii')}?=" for part in chunks]


def _set_header(msg: EmailMessage, name: str, value: str) -> None:
    """Set an unstructured header, encoding non-ASCII text ourselves (see _EncodedHeader)."""
    del msg[name]
    if value.isascii() or not issubclass(msg.policy.header_factory[name], UnstructuredHeader):  # type: ignore[attr-defined]
        msg[name] = value
    else:
        msg[name] = _EncodedHeader(name, value)


def _one_line(value: object) -> str:
    # A CR or LF in a header value would let a client inject headers; fold them to spaces.
    return " ".join(str(value).splitlines()).strip()


def _angle(message_id: str) -> str:
    message_id = message_id.strip()
    return message_id if message_id.startswith("<") else f"<{message_id}>"


def _unique(addresses: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    result: list[str] = []
    for address in addresses:
        # Mailbox names are case-insensitive at every real provider: one copy per mailbox.
        folded = address.lower()
        if folded not in seen:
            seen.add(folded)
            result.append(address)
    return result


def _text_transfer_encoding(text: str) -> str | None:
    """None (7bit) for short-lined ASCII, else the 7-bit encoding that keeps the text smallest."""
    if text.isascii() and all(len(line) <= _MAX_TEXT_LINE for line in text.splitlines()):
        return None
    raw = text.encode("utf-8")
    high = sum(1 for byte in raw if byte > 0x7E)
    # quoted-printable triples every non-ASCII byte, base64 costs a flat third more.
    return "quoted-printable" if high * 2 < len(raw) // 3 else "base64"


def _split_mime_type(mime_type: str) -> tuple[str, str]:
    maintype, _, subtype = mime_type.strip().lower().partition("/")
    if not maintype or not subtype or maintype == "multipart":
        return "application", "octet-stream"
    return maintype, subtype.split(";", 1)[0].strip() or "octet-stream"


def build_email(
    payload: dict[str, Any], *, message_id: str, attachments: list[Attachment], bounce_path: str | None = None
) -> OutgoingEmail:
    """The email and envelope for a stored message; PermanentDeliveryError when it cannot be built. `bounce_path`
    is the envelope sender when the message gives no `return_path` (its account's bounce mailbox, docs/bounces.md)."""
    try:
        return _build(payload, message_id=message_id, attachments=attachments, bounce_path=bounce_path)
    except PermanentDeliveryError:
        raise
    except (ValueError, TypeError, HeaderParseError) as exc:
        # Retrying cannot fix a payload that does not make an email.
        raise PermanentDeliveryError(f"cannot build email: {exc}") from exc


def _build(
    payload: dict[str, Any], *, message_id: str, attachments: list[Attachment], bounce_path: str | None
) -> OutgoingEmail:
    from_pairs = address_pairs(payload.get("from"))
    if len(from_pairs) != 1:
        raise PermanentDeliveryError(f"invalid address: {payload.get('from')}")
    to_pairs = address_pairs(payload.get("to"))
    cc_pairs = address_pairs(payload.get("cc"))
    bcc_pairs = address_pairs(payload.get("bcc"))
    reply_pairs = address_pairs(payload.get("reply_to"))
    return_path = address_pairs(payload.get("return_path"))

    recipients = _unique(addr for _, addr in [*to_pairs, *cc_pairs, *bcc_pairs])
    if not recipients:
        raise PermanentDeliveryError("missing to")

    msg = EmailMessage(policy=_POLICY)
    _set_addresses(msg, "From", from_pairs)
    if to_pairs:
        _set_addresses(msg, "To", to_pairs)
    if cc_pairs:
        _set_addresses(msg, "Cc", cc_pairs)
    if reply_pairs:
        _set_addresses(msg, "Reply-To", reply_pairs)
    _set_header(msg, "Subject", _one_line(payload.get("subject") or ""))

    body = str(payload.get("body") or "")
    subtype = "html" if str(payload.get("content_type") or "plain").lower() == "html" else "plain"
    msg.set_content(body, subtype=subtype, charset="utf-8", cte=_text_transfer_encoding(body))

    for item in attachments:
        maintype, mime_subtype = _split_mime_type(item.mime_type)
        msg.add_attachment(item.content, maintype=maintype, subtype=mime_subtype, filename=item.filename)

    custom = payload.get("headers") or {}
    if not isinstance(custom, dict):
        raise PermanentDeliveryError("headers must be an object")
    for name, value in custom.items():
        name = str(name).strip()
        if not _HEADER_NAME.match(name):
            raise PermanentDeliveryError(f"invalid header name: {name!r}")
        if is_structural_header(name):
            # Intake refuses these; a message stored before it did must not replace them either.
            raise PermanentDeliveryError(f"invalid header: {name}")
        _set_header(msg, name, _one_line(value))

    # Bcc recipients are in the envelope only, never a header.
    msg["Message-ID"] = _angle(str(payload.get("message_id") or message_id))
    msg["Date"] = email.utils.format_datetime(datetime.now(UTC))
    _set_header(msg, "X-Genro-Mail-ID", _one_line(payload.get("id") or ""))

    sender = return_path[0][1] if return_path else bounce_path or from_pairs[0][1]
    return OutgoingEmail(message=msg, sender=sender, recipients=recipients)
