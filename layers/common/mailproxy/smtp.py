"""SMTP transport: reused aiosmtplib connections per account (each for at most its ttl), errors classified."""

from __future__ import annotations

import asyncio
import contextlib
import select
import ssl
import threading
import time
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import aiosmtplib

from mailproxy import outbound
from mailproxy.email_builder import OutgoingEmail
from mailproxy.errors import (
    DeliveryError,
    DestinationNotAllowed,
    PermanentDeliveryError,
    TemporaryDeliveryError,
)
from mailproxy.logs import logger
from mailproxy.sessions import Lease

IMPLICIT_TLS_PORT = 465
# A liveness probe should fail fast: a dead pooled connection costs a reconnect, not a full timeout.
PROBE_TIMEOUT_SECONDS = 5.0
# A connection used this recently is reused without a NOOP first: within a batch, messages go back to
# back, and a round trip per message would double the SMTP time. Servers close idle sessions after
# minutes (RFC 5321 suggests 5); a close or a 421 that did arrive shows on the socket (`_quiet`).
PROBE_AFTER_IDLE_SECONDS = 10.0
QUIT_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class AccountConfig:
    """How to reach and log in to one SMTP account (`key` is "tenant_id/account_id").

    A dataclass, unlike the package's other value types (NamedTuples, cheaper to make at a cold start):
    it holds a password, and a NamedTuple would give it away to iteration, `_asdict()` and `json.dumps`
    (a list), where this one shows only its repr, without the password.
    """

    key: str
    host: str
    port: int
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    use_tls: bool | None = None
    timeout: float = 30.0
    verify_tls: bool = True
    ttl: float | None = None  # the account's `ttl`: seconds a pooled connection may live (None: no limit)

    @property
    def implicit_tls(self) -> bool:
        """TLS from the first byte: port 465 unless TLS is switched off."""
        return self.use_tls is not False and self.port == IMPLICIT_TLS_PORT

    @property
    def starttls_required(self) -> bool:
        """`use_tls: true` on any port but 465: the server must offer STARTTLS."""
        return self.use_tls is True and self.port != IMPLICIT_TLS_PORT


def smtp_reason(code: int, message: str) -> str:
    """An SMTP answer as a one-line reason, e.g. `451 4.3.0 Try again later (SMTP 451)`."""
    text = " ".join(message.split())
    return f"{code} {text} (SMTP {code})" if text else f"{code} (SMTP {code})"


def _response_error(code: int, message: str) -> DeliveryError:
    if 500 <= code <= 599:
        return PermanentDeliveryError(smtp_reason(code, message), smtp_code=code)
    return TemporaryDeliveryError(smtp_reason(code, message), smtp_code=code)


def _tls_failure(exc: BaseException) -> ssl.SSLError | None:
    """The TLS error behind `exc`, if any (aiosmtplib wraps it in its own connect errors)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        # An EOF mid-handshake is the peer hanging up, not a certificate or protocol problem.
        if isinstance(current, ssl.SSLError) and not isinstance(current, ssl.SSLEOFError | ssl.SSLZeroReturnError):
            return current
        current = current.__cause__ or current.__context__
    return None


def classify(exc: Exception) -> DeliveryError | None:
    """The DeliveryError an SMTP failure amounts to, or None when it is not a delivery failure."""
    if isinstance(exc, DeliveryError):
        return exc
    tls_error = _tls_failure(exc)
    if tls_error is not None:
        return PermanentDeliveryError(f"TLS failure: {tls_error}")
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        refusals = exc.recipients
        # Every recipient refused: permanent only if every refusal is; a 4xx one may pass later.
        temporary = [r for r in refusals if not 500 <= r.code <= 599]
        if not refusals:
            return PermanentDeliveryError("all recipients refused")
        first = (temporary or refusals)[0]
        return _response_error(first.code, first.message)
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return PermanentDeliveryError(
            f"authentication failed: {smtp_reason(exc.code, exc.message)}", smtp_code=exc.code
        )
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return _response_error(exc.code, exc.message)
    if isinstance(
        exc,
        aiosmtplib.SMTPServerDisconnected
        | aiosmtplib.SMTPConnectError
        | aiosmtplib.SMTPTimeoutError
        | TimeoutError
        | OSError,
    ):
        return TemporaryDeliveryError(f"{type(exc).__name__}: {exc}")
    if isinstance(exc, aiosmtplib.SMTPException | ValueError):
        # No AUTH offered, SMTPUTF8 needed but missing, an address aiosmtplib refuses: retrying cannot help.
        return PermanentDeliveryError(f"{type(exc).__name__}: {exc}")
    return None


class _Pooled:
    """An open connection of the pool, with the account it was opened for."""

    __slots__ = ("account", "last_used", "opened_at", "smtp")

    def __init__(self, account: AccountConfig, smtp: aiosmtplib.SMTP) -> None:
        self.account = account
        self.smtp = smtp
        self.last_used = 0.0  # time.monotonic() of its last transaction
        self.opened_at = time.monotonic()

    def expired(self) -> bool:
        """Older than the account's ttl: to be replaced by a new connection."""
        ttl = self.account.ttl
        return ttl is not None and time.monotonic() - self.opened_at > ttl


def _quiet(smtp: aiosmtplib.SMTP) -> bool:
    """True when nothing arrived on an idle connection since its last reply: no close, no unsolicited
    421. Checked on the socket, without a round trip; anything else sends the connection to a NOOP."""
    transport = smtp.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return False
    return not readable


def _close_quietly(smtp: aiosmtplib.SMTP) -> None:
    # The transport may belong to a loop that is already closed; there is nothing left to release then.
    with contextlib.suppress(Exception):
        smtp.close()


class SmtpPool:
    """Open SMTP connections per account key, each used by one transaction at a time, checked before reuse
    and replaced when dead.

    The pool opens a connection whenever a transaction finds none idle: how many run at once for an account
    is the caller's to bound (the sender runs at most as many as the account's session lease grants, and
    `trim`s the idle ones beyond it). `holder` names this pool in those leases (`mailproxy.sessions`), and
    `leases` remembers each account's lease, so `close_lapsed` closes the connections before their lease
    lapses and another sender may open them.
    """

    def __init__(self, *, probe_timeout: float = PROBE_TIMEOUT_SECONDS) -> None:
        self.probe_timeout = probe_timeout
        self.holder = uuid.uuid4().hex
        self.leases: dict[str, Lease] = {}  # account key -> this pool's lease on the account's sessions
        self.connections_opened = 0
        self.connections_expired = 0  # closed (with QUIT) because they outlived their account's ttl
        self.probes_sent = 0  # NOOPs before a reuse (a connection idle for a while, or one the server wrote to)
        self._idle: dict[str, list[_Pooled]] = {}  # the most recently used last
        self._busy: dict[str, int] = {}
        self._closing: dict[str, int] = {}  # saying QUIT: still open at the server until it answers
        self._loop: asyncio.AbstractEventLoop | None = None

    def _bind_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # Connections belong to the loop that made them; another loop cannot use them.
            for idle in self._idle.values():
                for pooled in idle:
                    _close_quietly(pooled.smtp)
            self._idle.clear()
            self._busy.clear()
            self._closing.clear()
            self._loop = loop

    def open_count(self, key: str) -> int:
        """Connections of the account open now: idle in the pool, in a transaction, or being closed."""
        return len(self._idle.get(key, ())) + self._busy.get(key, 0) + self._closing.get(key, 0)

    async def send(self, account: AccountConfig, email: OutgoingEmail) -> dict[str, str]:
        """Send one email through the account; the refused recipients (if some were accepted) by address."""
        self._bind_loop()
        # One transaction at a time per connection: SMTP does not interleave envelopes.
        pooled = await self._checkout(account)
        pooled.last_used = time.monotonic()
        try:
            refused, _ = await pooled.smtp.send_message(email.message, sender=email.sender, recipients=email.recipients)
        except BaseException as exc:
            # After a refused envelope aiosmtplib has sent RSET: the connection is clean if still open.
            clean = isinstance(exc, aiosmtplib.SMTPResponseException | aiosmtplib.SMTPRecipientsRefused)
            self._checkin(pooled, keep=clean and pooled.smtp.is_connected)
            error = classify(exc) if isinstance(exc, Exception) else None
            if error is None:
                raise
            raise error from exc
        self._checkin(pooled, keep=True)
        return {address: smtp_reason(answer.code, answer.message) for address, answer in refused.items()}

    async def _checkout(self, account: AccountConfig) -> _Pooled:
        """An idle connection of the account that is still good (the most recently used first), else a new one."""
        key = account.key
        idle = self._idle.setdefault(key, [])
        self._busy[key] = self._busy.get(key, 0) + 1
        try:
            while idle:
                pooled = idle.pop()
                if pooled.expired():
                    self.connections_expired += 1
                    await _quit(pooled)
                    continue
                # A changed account (new host, rotated password) must not keep the old session.
                recent = time.monotonic() - pooled.last_used < PROBE_AFTER_IDLE_SECONDS
                unprobed = recent and pooled.smtp.is_connected and _quiet(pooled.smtp)
                if pooled.account == account and (unprobed or await self._alive(pooled.smtp)):
                    return pooled
                _close_quietly(pooled.smtp)
            smtp = await self._open(account)
        except BaseException:
            self._busy[key] -= 1
            raise
        self.connections_opened += 1
        return _Pooled(account, smtp)

    def _checkin(self, pooled: _Pooled, *, keep: bool) -> None:
        """A transaction is over: its connection back to the idle ones, or closed."""
        key = pooled.account.key
        self._busy[key] -= 1
        lease = self.leases.get(key)
        if lease is not None and self.open_count(key) >= lease.sessions:
            keep = False  # the lease shrank while this transaction ran: one connection too many
        if keep:
            self._idle.setdefault(key, []).append(pooled)
        else:
            _close_quietly(pooled.smtp)

    async def _alive(self, smtp: aiosmtplib.SMTP) -> bool:
        if not smtp.is_connected:
            return False
        self.probes_sent += 1
        try:
            await smtp.noop(timeout=self.probe_timeout)
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            return False
        except BaseException:
            # Cut mid-probe (the sender's message time limit): the NOOP's answer may still come and would be
            # read as the answer to the next command on this connection. It is closed (and so replaced).
            _close_quietly(smtp)
            raise
        return True

    async def _open(self, account: AccountConfig) -> aiosmtplib.SMTP:
        try:
            # The guard resolves and checks the host once; aiosmtplib gets the socket, and the host name
            # for SNI and certificate verification (implicit TLS and STARTTLS alike).
            sock = await outbound.open_socket(account.host, account.port, account.timeout)
        except DestinationNotAllowed as exc:
            raise PermanentDeliveryError(str(exc)) from exc
        except (OSError, TimeoutError) as exc:
            raise TemporaryDeliveryError(f"cannot connect to {account.host}:{account.port}: {exc}") from exc
        smtp = aiosmtplib.SMTP(
            hostname=account.host,
            sock=sock,
            timeout=account.timeout,
            use_tls=account.implicit_tls,
            # STARTTLS is decided in _open, not by aiosmtplib's "if offered": `use_tls: false` stays plain.
            start_tls=False,
            validate_certs=account.verify_tls,
        )
        try:
            await smtp.connect()
            credentials = bool(account.user and account.password)
            if account.use_tls is False:
                if credentials:
                    # The account's explicit choice (a relay on a private network), as genro's clients expect.
                    logger().warning(f"Account {account.key}: credentials sent over plain SMTP (use_tls: false)")
            elif not account.implicit_tls:
                await smtp.ehlo()
                if smtp.supports_extension("starttls"):
                    # use_tls null: STARTTLS whenever offered (Postfix's "may"); true: required.
                    await smtp.starttls()
                elif account.starttls_required:
                    raise PermanentDeliveryError(f"STARTTLS required but not offered by {account.host}:{account.port}")
                elif credentials:
                    raise PermanentDeliveryError(
                        f"refusing to send credentials over an unencrypted connection: {account.host} offers no"
                        " STARTTLS (set use_tls: false to allow plain SMTP)"
                    )
            if account.user and account.password:
                try:
                    await smtp.login(account.user, account.password)
                except aiosmtplib.SMTPAuthenticationError:
                    raise
                except aiosmtplib.SMTPResponseException as exc:
                    # A refused login is an authentication failure whatever code it carries.
                    raise PermanentDeliveryError(
                        f"authentication failed: {smtp_reason(exc.code, exc.message)}", smtp_code=exc.code
                    ) from exc
        except BaseException as exc:
            _close_quietly(smtp)
            error = classify(exc) if isinstance(exc, Exception) else None
            if error is None or error is exc:
                raise
            raise error from exc
        return smtp

    async def trim(self, key: str, keep: int) -> None:
        """Close (QUIT) idle connections of the account until at most `keep` are open, the oldest first."""
        idle = self._idle.get(key, [])
        while idle and self.open_count(key) > keep:
            await self._quit(idle.pop(0))

    async def close_lapsed(self, now: float, margin: float = 0.0) -> None:
        """Close the idle connections of every account whose session lease ends before `now + margin`."""
        self._bind_loop()
        for key in list(self.leases):
            # Read again for each key: a lease may have been renewed while an earlier key's QUIT was awaited.
            lease = self.leases.get(key)
            if lease is not None and lease.until <= now + margin and not self._busy.get(key):
                del self.leases[key]
                await self.trim(key, 0)

    async def close_all(self) -> None:
        """Say QUIT to every idle connection and forget them all."""
        pooled_list = [pooled for idle in self._idle.values() for pooled in idle]
        self._idle.clear()
        self.leases.clear()
        for pooled in pooled_list:
            await self._quit(pooled)

    async def _quit(self, pooled: _Pooled) -> None:
        """QUIT an idle connection, counted as open until it is closed."""
        key = pooled.account.key
        self._closing[key] = self._closing.get(key, 0) + 1
        try:
            await _quit(pooled)
        finally:
            self._closing[key] -= 1


async def _quit(pooled: _Pooled) -> None:
    """Say QUIT (briefly) and close."""
    try:
        if pooled.smtp.is_connected:
            await pooled.smtp.quit(timeout=min(QUIT_TIMEOUT_SECONDS, pooled.account.timeout))
    except (aiosmtplib.SMTPException, OSError, TimeoutError, RuntimeError):
        pass  # a server that went away needs no goodbye
    finally:
        _close_quietly(pooled.smtp)


_per_thread = threading.local()


def default_pool() -> SmtpPool:
    """This thread's pool, so warm Lambda invocations reuse their connections (Lambda runs one thread)."""
    pool: SmtpPool | None = getattr(_per_thread, "pool", None)
    if pool is None:
        pool = _per_thread.pool = SmtpPool()
    return pool


def reset_pool() -> None:
    """Forget this thread's pool (tests; its connections must be closed first)."""
    _per_thread.pool = None


def _event_loop() -> asyncio.AbstractEventLoop:
    loop: asyncio.AbstractEventLoop | None = getattr(_per_thread, "loop", None)
    if loop is None or loop.is_closed():
        loop = _per_thread.loop = asyncio.new_event_loop()
    return loop


def run[T](coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` on this thread's persistent loop: pooled connections are bound to it and outlive invocations."""
    return _event_loop().run_until_complete(coro)
