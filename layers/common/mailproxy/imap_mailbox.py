"""One session with a bounce mailbox over IMAP (standard library `imaplib`, blocking: the poller runs it in a
thread of its own, never on an event loop). The connection goes through the outbound address guard.

TLS as an SMTP account's `use_tls` says it: null gives implicit TLS on 993 and STARTTLS elsewhere when the
server offers it, and a password is never sent over a session that stayed plain; true requires TLS; false
is plain (a server on loopback in tests).
"""

from __future__ import annotations

import contextlib
import imaplib
import re
import socket
import ssl
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from mailproxy import outbound
from mailproxy.errors import DestinationNotAllowed, MailProxyError

IMPLICIT_TLS_PORT = 993
PROCESSED_KEYWORD = "$GmpProcessed"  # what a processed message left in place is flagged with (and \Seen)
_UIDVALIDITY = re.compile(rb"UIDVALIDITY (\d+)")


class MailboxError(MailProxyError):
    """The mailbox could not be read: connection, TLS, login or folder (logged; the next run tries again)."""


@dataclass(frozen=True)
class MailboxConfig:
    """How to reach one bounce mailbox. A dataclass that keeps the password out of its repr."""

    host: str
    port: int
    user: str
    password: str | None = field(default=None, repr=False)
    use_tls: bool | None = None
    folder: str = "INBOX"
    processed_folder: str | None = None
    timeout: float = 30.0
    verify_tls: bool = True

    @property
    def identity(self) -> str:
        """What names the mailbox: a new one (another host, user or folder) is read from its start."""
        return f"imap://{self.user}@{self.host}:{self.port}/{self.folder}"


class _Guarded(imaplib.IMAP4):
    """IMAP4 whose socket is opened by the outbound guard."""

    def _create_socket(self, timeout: float | None) -> socket.socket:
        return outbound.connect(self.host, self.port, timeout)


class _GuardedSSL(imaplib.IMAP4_SSL, _Guarded):
    """IMAP4 over implicit TLS, its socket opened by the outbound guard (IMAP4_SSL wraps `_Guarded`'s socket)."""


def _quote(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


class MailboxSession:
    """An open, logged-in session with the folder selected: `with MailboxSession(config) as box: ...`."""

    def __init__(self, config: MailboxConfig) -> None:
        self.config = config
        self._imap: imaplib.IMAP4 | None = None
        self.uidvalidity = 0
        self._can_move = False

    def __enter__(self) -> MailboxSession:
        try:
            self._open()
        except (OSError, imaplib.IMAP4.error, ssl.SSLError, DestinationNotAllowed) as exc:
            self.close()
            raise MailboxError(f"{self.config.identity}: {type(exc).__name__}: {exc}") from exc
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def _context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        if not self.config.verify_tls:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def _open(self) -> None:
        c = self.config
        implicit = c.use_tls is not False and c.port == IMPLICIT_TLS_PORT
        imap: imaplib.IMAP4
        if implicit:
            imap = _GuardedSSL(c.host, c.port, ssl_context=self._context(), timeout=c.timeout)
        else:
            imap = _Guarded(c.host, c.port, timeout=c.timeout)
        self._imap = imap
        secure = implicit
        if not implicit and c.use_tls is not False:
            if "STARTTLS" in imap.capabilities:
                imap.starttls(ssl_context=self._context())
                secure = True
            elif c.use_tls is True:
                raise MailboxError(f"{c.identity}: the server offers no STARTTLS and use_tls is true")
        if c.password is None:
            raise MailboxError(f"{c.identity}: no password")
        if not secure and c.use_tls is None:
            raise MailboxError(
                f"{c.identity}: the session stayed plain; the password is not sent (use_tls false allows it)"
            )
        imap.login(c.user, c.password)
        status, _ = imap.select(_quote(c.folder))
        if status != "OK":
            raise MailboxError(f"{c.identity}: cannot select the folder")
        self.uidvalidity = self._read_uidvalidity()
        # Servers announce more once logged in (Dovecot: MOVE); imaplib keeps the greeting's list.
        status, data = imap.capability()
        announced = bytes(data[-1] or b"").upper().split() if status == "OK" and data else []
        self._can_move = b"MOVE" in announced or "MOVE" in imap.capabilities

    def _read_uidvalidity(self) -> int:
        imap = self._session()
        value = imap.untagged_responses.get("UIDVALIDITY")
        if value and isinstance(value[0], bytes) and value[0].isdigit():
            return int(value[0])
        status, data = imap.status(_quote(self.config.folder), "(UIDVALIDITY)")
        match = _UIDVALIDITY.search(data[0] or b"") if status == "OK" and data and isinstance(data[0], bytes) else None
        if match is None:
            raise MailboxError(f"{self.config.identity}: the server gave no UIDVALIDITY")
        return int(match.group(1))

    def _session(self) -> imaplib.IMAP4:
        if self._imap is None:
            raise MailboxError("the mailbox session is closed")
        return self._imap

    def _uid(self, command: str, *args: str) -> list[Any]:
        try:
            status, data = self._session().uid(command, *args)
        except (OSError, imaplib.IMAP4.error, ssl.SSLError) as exc:
            raise MailboxError(f"{self.config.identity}: UID {command}: {exc}") from exc
        if status != "OK":
            raise MailboxError(f"{self.config.identity}: UID {command} answered {status}")
        return list(data or [])

    def uids_after(self, last_uid: int, *, unprocessed_only: bool = False) -> list[int]:
        """UIDs above `last_uid`, ascending; with `unprocessed_only` those not flagged processed (a mailbox read
        afresh: a new UIDVALIDITY, or a first visit)."""
        criteria = [f"UID {last_uid + 1}:*"]
        if unprocessed_only:
            criteria.append(f"UNKEYWORD {PROCESSED_KEYWORD}")
        data = self._uid("SEARCH", *criteria)
        found = sorted({int(n) for chunk in data if chunk for n in bytes(chunk).split()})
        return [uid for uid in found if uid > last_uid]  # `n:*` also names the last message when n is above it

    def fetch(self, uid: int) -> bytes | None:
        """The whole message `uid` (read without setting \\Seen), or None when it is gone."""
        for part in self._uid("FETCH", str(uid), "(BODY.PEEK[])"):
            if isinstance(part, tuple) and len(part) == 2 and isinstance(part[1], bytes):
                return part[1]
        return None

    def done(self, uid: int) -> None:
        """Mark `uid` processed: moved to the processed folder when there is one, else flagged where it is."""
        target = self.config.processed_folder
        if target:
            if self._can_move:
                self._uid("MOVE", str(uid), _quote(target))
                return
            self._uid("COPY", str(uid), _quote(target))
            self._uid("STORE", str(uid), "+FLAGS.SILENT", "(\\Deleted)")
            self._session().expunge()
            return
        self._uid("STORE", str(uid), "+FLAGS.SILENT", f"(\\Seen {PROCESSED_KEYWORD})")

    def close(self) -> None:
        """Log out (quietly: the session may already be broken)."""
        imap, self._imap = self._imap, None
        if imap is None:
            return
        try:
            imap.logout()
        except (OSError, imaplib.IMAP4.error, ssl.SSLError):
            with contextlib.suppress(OSError):
                imap.shutdown()
