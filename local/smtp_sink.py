"""An SMTP server on loopback that accepts every message, logs it and keeps it, so mail can be seen arriving."""

from __future__ import annotations

import email
import email.policy
import logging
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, Session

logger = logging.getLogger(__name__)

DEFAULT_PORT = 1025


@dataclass(frozen=True)
class ReceivedMail:
    """One message as the sink received it: envelope, parsed message and raw bytes."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage
    raw: bytes
    login: str | None = None
    received_at: float = field(default_factory=time.time)

    @property
    def subject(self) -> str:
        """The Subject header (decoded), or an empty string."""
        return str(self.message.get("Subject", ""))

    @property
    def mail_id(self) -> str | None:
        """The X-Genro-Mail-ID header the service puts on every email."""
        value = self.message.get("X-Genro-Mail-ID")
        return None if value is None else str(value)


class _SinkHandler:
    def __init__(self, sink: SmtpSink) -> None:
        self._sink = sink

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content or b""
        if isinstance(raw, str):
            raw = raw.encode()
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)  # guaranteed by policy.default
        login_bytes = getattr(session.auth_data, "login", None)
        login = login_bytes.decode(errors="replace") if isinstance(login_bytes, bytes) else None
        mail = ReceivedMail(
            mail_from=str(envelope.mail_from or ""),
            rcpt_tos=tuple(str(rcpt) for rcpt in envelope.rcpt_tos),
            message=message,
            raw=raw,
            login=login,
        )
        self._sink.record(mail)
        return "250 Message accepted for delivery"


@dataclass(frozen=True)
class _Login:
    login: bytes


def _accept_any_login(server: Any, session: Session, envelope: Envelope, mechanism: str, auth_data: Any) -> AuthResult:
    # Accounts configured with a user and password must be able to log in; the sink checks nothing
    # and keeps only the login, never the password.
    login = getattr(auth_data, "login", b"")
    return AuthResult(success=True, auth_data=_Login(login if isinstance(login, bytes) else b""))


class _Controller(Controller):
    def _trigger_server(self) -> None:
        # With port 0 the OS picks the port: learn it before aiosmtpd connects to check the server is up.
        sockets = getattr(self.server, "sockets", None)
        if self.port == 0 and sockets:
            self.port = sockets[0].getsockname()[1]
        super()._trigger_server()  # type: ignore[no-untyped-call]


class _QuietAuthWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        # AUTH without TLS is the point of a loopback sink; aiosmtpd's warning about it is noise here.
        return "auth_require_tls" not in record.getMessage() and "Requiring AUTH" not in record.getMessage()


class SmtpSink:
    """aiosmtpd on 127.0.0.1 that logs every message (from, to, subject, X-Genro-Mail-ID) and keeps it."""

    def __init__(self, host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> None:
        self.host = host
        self.port = port
        self._controller: _Controller | None = None
        self._messages: list[ReceivedMail] = []
        self._received = threading.Condition()

    def start(self) -> None:
        """Start listening; `port` holds the bound port afterwards."""
        logging.getLogger("mail.log").addFilter(_QuietAuthWarning())
        self._controller = _Controller(
            _SinkHandler(self),
            hostname=self.host,
            port=self.port,
            authenticator=_accept_any_login,
            auth_require_tls=False,
            data_size_limit=64 * 1024 * 1024,
            enable_SMTPUTF8=True,
        )
        self._controller.start()
        self.port = self._controller.port
        logger.info("SMTP sink listening on %s:%d", self.host, self.port)

    def stop(self) -> None:
        """Stop listening."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def record(self, mail: ReceivedMail) -> None:
        """Keep and log one received message."""
        logger.info(
            "SMTP sink received %s from %s to %s subject %r",
            mail.mail_id or "(no X-Genro-Mail-ID)",
            mail.mail_from,
            ", ".join(mail.rcpt_tos),
            mail.subject,
        )
        with self._received:
            self._messages.append(mail)
            self._received.notify_all()

    @property
    def messages(self) -> list[ReceivedMail]:
        """Every message received so far, oldest first."""
        with self._received:
            return list(self._messages)

    @property
    def count(self) -> int:
        """How many messages were received."""
        with self._received:
            return len(self._messages)

    def clear(self) -> None:
        """Forget the messages received so far."""
        with self._received:
            self._messages.clear()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[ReceivedMail]:
        """Wait until at least `count` messages arrived; return them (fewer if the timeout passes)."""
        with self._received:
            self._received.wait_for(lambda: len(self._messages) >= count, timeout)
            return list(self._messages)

    def __enter__(self) -> SmtpSink:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
