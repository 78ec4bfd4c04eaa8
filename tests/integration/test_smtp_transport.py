"""The SMTP transport against real aiosmtpd servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import email
import email.policy
import time
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from mailproxy import smtp
from mailproxy.email_builder import OutgoingEmail, build_email
from mailproxy.errors import PermanentDeliveryError, TemporaryDeliveryError
from mailproxy.smtp import AccountConfig, SmtpPool

from tests.integration.smtp_servers import (
    HOST,
    SMTP_PASSWORD,
    SMTP_USER,
    RoutingHandler,
    RunningServer,
    SelfSignedCert,
    authenticator,
    free_port,
    make_self_signed_cert,
    send_once,
    silent_server,
    smtp_server,
    start_server,
)


def outgoing(to: Any = "ok@rcpt.test", **fields: Any) -> OutgoingEmail:
    payload = {"id": "m-1", "from": "Acme <noreply@acme.test>", "to": to, "subject": "Hello", "body": "Hi"}
    payload.update(fields)
    return build_email(payload, message_id="m-1.stable@mailproxy.test", attachments=[])


def account(port: int, **fields: Any) -> AccountConfig:
    fields.setdefault("timeout", 5.0)
    return AccountConfig(key="t1/smtp", host=HOST, port=port, **fields)


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> SelfSignedCert:
    return make_self_signed_cert(tmp_path_factory.mktemp("tls"))


def test_sent_email_arrives_with_its_headers_and_envelope(server: RunningServer) -> None:
    mail = outgoing(
        to="Ann <ok-ann@rcpt.test>",
        cc=["ok-cc@rcpt.test"],
        bcc="ok-hidden@rcpt.test",
        return_path="bounces@acme.test",
        subject="Καλημέρα 日本語 🎉",
    )

    async def scenario() -> dict[str, str]:
        pool = SmtpPool()
        try:
            return await pool.send(account(server.port), mail)
        finally:
            await pool.close_all()

    refused = asyncio.run(scenario())

    assert refused == {}
    [got] = server.handler.received
    assert got.mail_from == "bounces@acme.test"
    assert got.rcpt_tos == ["ok-ann@rcpt.test", "ok-cc@rcpt.test", "ok-hidden@rcpt.test"]
    parsed = email.message_from_bytes(got.content, policy=email.policy.default)
    assert parsed["Subject"] == "Καλημέρα 日本語 🎉"
    assert parsed["X-Genro-Mail-ID"] == "m-1"
    assert parsed["Message-ID"] == "<m-1.stable@mailproxy.test>"
    assert parsed["Bcc"] is None
    assert b"ok-hidden" not in got.content
    assert got.tls is False


def test_connection_is_reused_across_sends(server: RunningServer) -> None:
    async def scenario() -> int:
        pool = SmtpPool()
        try:
            for _ in range(3):
                await pool.send(account(server.port), outgoing())
            return pool.connections_opened
        finally:
            await pool.close_all()

    assert asyncio.run(scenario()) == 1
    assert len(server.handler.received) == 3


class PoolClock:
    """The pool's monotonic clock, standing still until the test moves it: a connection's age and idle time
    are what the test says, however slowly a loaded machine runs the sends between."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def pool_clock(monkeypatch: pytest.MonkeyPatch) -> PoolClock:
    """Give `mailproxy.smtp` a PoolClock for `time` (it reads nothing else of it)."""
    clock = PoolClock()
    monkeypatch.setattr(smtp, "time", clock)
    return clock


def test_back_to_back_sends_reuse_the_connection_without_a_noop_and_an_idle_one_is_probed(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(smtp, "PROBE_AFTER_IDLE_SECONDS", 0.3)
    clock = pool_clock(monkeypatch)

    async def scenario() -> tuple[int, int]:
        pool = SmtpPool()
        try:
            for _ in range(3):
                await pool.send(account(server.port), outgoing())
            back_to_back = pool.probes_sent
            clock.advance(0.5)
            await pool.send(account(server.port), outgoing())
            return back_to_back, pool.probes_sent
        finally:
            await pool.close_all()

    assert asyncio.run(scenario()) == (0, 1)
    assert len(server.handler.received) == 4


def test_connection_survives_between_run_calls_on_the_default_pool(server: RunningServer) -> None:
    smtp.reset_pool()
    try:
        smtp.run(smtp.default_pool().send(account(server.port), outgoing()))
        smtp.run(smtp.default_pool().send(account(server.port), outgoing()))
        assert smtp.default_pool().connections_opened == 1
        assert len(server.handler.received) == 2
    finally:
        smtp.run(smtp.default_pool().close_all())
        smtp.reset_pool()


def test_some_refused_recipients_still_count_as_sent(server: RunningServer) -> None:
    async def scenario() -> dict[str, str]:
        pool = SmtpPool()
        try:
            return await pool.send(account(server.port), outgoing(to="ok@rcpt.test, reject550@rcpt.test"))
        finally:
            await pool.close_all()

    refused = asyncio.run(scenario())

    assert refused == {"reject550@rcpt.test": "550 5.1.1 User unknown (SMTP 550)"}
    assert [r.rcpt_tos for r in server.handler.received] == [["ok@rcpt.test"]]


def test_every_recipient_refused_with_5xx_is_permanent(server: RunningServer) -> None:
    async def scenario() -> None:
        pool = SmtpPool()
        try:
            await pool.send(account(server.port), outgoing(to="reject550@rcpt.test, reject550-b@rcpt.test"))
        finally:
            await pool.close_all()

    with pytest.raises(PermanentDeliveryError) as caught:
        asyncio.run(scenario())

    assert caught.value.smtp_code == 550
    assert caught.value.reason == "550 5.1.1 User unknown (SMTP 550)"
    assert server.handler.received == []


def test_a_4xx_refusal_is_temporary_with_the_smtp_code_in_the_reason(server: RunningServer) -> None:
    async def scenario() -> None:
        pool = SmtpPool()
        try:
            await pool.send(account(server.port), outgoing(to="temp451@rcpt.test, reject550@rcpt.test"))
        finally:
            await pool.close_all()

    with pytest.raises(TemporaryDeliveryError) as caught:
        asyncio.run(scenario())

    assert caught.value.smtp_code == 451
    assert caught.value.reason == "451 4.3.0 Try again later (SMTP 451)"
    assert caught.value.temporary is True


def test_connection_stays_usable_after_a_refused_message(server: RunningServer) -> None:
    async def scenario() -> int:
        pool = SmtpPool()
        try:
            with pytest.raises(PermanentDeliveryError):
                await pool.send(account(server.port), outgoing(to="reject550@rcpt.test"))
            await pool.send(account(server.port), outgoing())
            return pool.connections_opened
        finally:
            await pool.close_all()

    assert asyncio.run(scenario()) == 1
    assert len(server.handler.received) == 1


def test_connection_closed_by_the_server_is_replaced() -> None:
    # aiosmtpd closes a session idle for longer than `timeout`: the pool must notice and reconnect.
    with smtp_server(timeout=0.3) as server:

        async def scenario() -> int:
            pool = SmtpPool()
            try:
                await pool.send(account(server.port), outgoing())
                await asyncio.sleep(0.8)
                await pool.send(account(server.port), outgoing())
                return pool.connections_opened
            finally:
                await pool.close_all()

        assert asyncio.run(scenario()) == 2
        assert len(server.handler.received) == 2


def test_connection_to_a_restarted_server_is_replaced() -> None:
    first = start_server()
    port = first.port

    async def scenario() -> tuple[int, int, int]:
        pool = SmtpPool()
        try:
            await pool.send(account(port), outgoing())
            first.stop()
            second = start_server(port)
            try:
                await pool.send(account(port), outgoing())
                return pool.connections_opened, len(first.handler.received), len(second.handler.received)
            finally:
                second.stop()
        finally:
            await pool.close_all()

    try:
        assert asyncio.run(scenario()) == (2, 1, 1)
    finally:
        if first.controller.server is not None:
            first.stop()


def test_server_down_is_temporary() -> None:
    async def scenario() -> None:
        await SmtpPool().send(account(free_port()), outgoing())

    with pytest.raises(TemporaryDeliveryError):
        asyncio.run(scenario())


def test_server_that_never_greets_times_out_as_temporary() -> None:
    with silent_server() as port:

        async def scenario() -> None:
            pool = SmtpPool()
            await pool.send(AccountConfig(key="t1/slow", host=HOST, port=port, timeout=0.5), outgoing())

        started = time.monotonic()
        with pytest.raises(TemporaryDeliveryError):
            asyncio.run(scenario())
        assert time.monotonic() - started < 5


# aiosmtpd warns that AUTH without TLS is unsafe: true, and what these plain-text tests want.
plain_auth = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")


@plain_auth
def test_login_with_the_right_password_delivers() -> None:
    with smtp_server(authenticator=authenticator, auth_required=True) as server:

        async def scenario() -> None:
            pool = SmtpPool()
            try:
                config = account(server.port, use_tls=False, user=SMTP_USER, password=SMTP_PASSWORD)
                await pool.send(config, outgoing())
            finally:
                await pool.close_all()

        asyncio.run(scenario())

    [got] = server.handler.received
    assert got.authenticated is True


@plain_auth
def test_wrong_password_is_permanent() -> None:
    with smtp_server(authenticator=authenticator, auth_required=True) as server:

        async def scenario() -> None:
            await SmtpPool().send(account(server.port, use_tls=False, user=SMTP_USER, password="wrong"), outgoing())

        with pytest.raises(PermanentDeliveryError) as caught:
            asyncio.run(scenario())

    assert caught.value.smtp_code == 535
    assert caught.value.reason.startswith("authentication failed: 535")
    assert server.handler.received == []


@plain_auth
def test_sending_without_login_to_a_server_that_requires_it_is_permanent() -> None:
    with smtp_server(authenticator=authenticator, auth_required=True) as server:

        async def scenario() -> None:
            await SmtpPool().send(account(server.port), outgoing())

        with pytest.raises(PermanentDeliveryError) as caught:
            asyncio.run(scenario())

    assert caught.value.smtp_code == 530


def test_use_tls_true_upgrades_with_starttls(cert: SelfSignedCert) -> None:
    with smtp_server(tls_context=cert.server_context(), require_starttls=True) as server:

        async def scenario() -> None:
            pool = SmtpPool()
            try:
                await pool.send(account(server.port, use_tls=True, verify_tls=False), outgoing())
            finally:
                await pool.close_all()

        asyncio.run(scenario())

    [got] = server.handler.received
    assert got.tls is True


def test_starttls_and_login_together(cert: SelfSignedCert) -> None:
    with smtp_server(
        tls_context=cert.server_context(),
        require_starttls=True,
        authenticator=authenticator,
        auth_required=True,
        auth_require_tls=True,
    ) as server:

        async def scenario() -> None:
            pool = SmtpPool()
            try:
                config = account(server.port, use_tls=True, verify_tls=False, user=SMTP_USER, password=SMTP_PASSWORD)
                await pool.send(config, outgoing())
            finally:
                await pool.close_all()

        asyncio.run(scenario())

    [got] = server.handler.received
    assert (got.tls, got.authenticated) == (True, True)


def test_untrusted_certificate_is_a_permanent_tls_failure_by_default(cert: SelfSignedCert) -> None:
    with smtp_server(tls_context=cert.server_context(), require_starttls=True) as server:

        async def scenario() -> None:
            await SmtpPool().send(account(server.port, use_tls=True), outgoing())

        with pytest.raises(PermanentDeliveryError) as caught:
            asyncio.run(scenario())

    assert caught.value.reason.startswith("TLS failure:")
    assert "certificate" in caught.value.reason.lower()
    assert server.handler.received == []


def test_use_tls_true_fails_permanently_when_starttls_is_not_offered(server: RunningServer) -> None:
    async def scenario() -> None:
        await SmtpPool().send(account(server.port, use_tls=True), outgoing())

    with pytest.raises(PermanentDeliveryError) as caught:
        asyncio.run(scenario())

    assert caught.value.reason == f"STARTTLS required but not offered by {HOST}:{server.port}"
    assert server.handler.received == []


def test_use_tls_false_stays_plain_even_when_starttls_is_offered(cert: SelfSignedCert) -> None:
    with smtp_server(tls_context=cert.server_context()) as server:
        send_one(account(server.port, use_tls=False))

    [got] = server.handler.received
    assert got.tls is False


def send_one(config: AccountConfig) -> None:
    send_once(config, outgoing())


@pytest.mark.parametrize("credentials", [False, True])
def test_default_use_tls_upgrades_with_starttls_when_offered(
    credentials: bool, cert: SelfSignedCert, monkeypatch: pytest.MonkeyPatch
) -> None:
    login = {"user": SMTP_USER, "password": SMTP_PASSWORD} if credentials else {}
    with smtp_server(tls_context=cert.server_context(), authenticator=authenticator) as server:
        send_one(account(server.port, use_tls=None, verify_tls=False, **login))

    [got] = server.handler.received
    assert got.tls is True
    assert got.authenticated is credentials


def test_default_use_tls_without_starttls_sends_plain_when_there_is_no_password(server: RunningServer) -> None:
    send_one(account(server.port, use_tls=None))

    [got] = server.handler.received
    assert got.tls is False


def test_default_use_tls_never_sends_a_password_over_a_plain_session() -> None:
    with smtp_server(authenticator=authenticator) as server, pytest.raises(PermanentDeliveryError) as caught:
        send_one(account(server.port, use_tls=None, user=SMTP_USER, password=SMTP_PASSWORD))

    assert caught.value.reason == (
        f"refusing to send credentials over an unencrypted connection: {HOST} offers no STARTTLS"
        " (set use_tls: false to allow plain SMTP)"
    )
    assert server.handler.received == []


def test_use_tls_false_logs_in_over_plain_smtp_with_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    warnings: list[str] = []
    monkeypatch.setattr(smtp.logger(), "warning", lambda message, *args, **kwargs: warnings.append(message))
    with smtp_server(authenticator=authenticator) as server:
        send_one(account(server.port, use_tls=False, user=SMTP_USER, password=SMTP_PASSWORD))

    [got] = server.handler.received
    assert (got.tls, got.authenticated) == (False, True)
    assert warnings == ["Account t1/smtp: credentials sent over plain SMTP (use_tls: false)"]


def implicit_tls_server(cert: SelfSignedCert, monkeypatch: pytest.MonkeyPatch) -> RunningServer:
    server = start_server(ssl_context=cert.server_context())
    # Port 465 needs privileges: make the test's port the implicit-TLS port instead.
    monkeypatch.setattr(smtp, "IMPLICIT_TLS_PORT", server.port)
    return server


@pytest.mark.parametrize("use_tls", [None, True])
def test_account_on_the_implicit_tls_port_speaks_tls_from_the_first_byte(
    use_tls: bool | None, cert: SelfSignedCert, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = implicit_tls_server(cert, monkeypatch)
    try:

        async def scenario() -> None:
            pool = SmtpPool()
            try:
                await pool.send(account(server.port, use_tls=use_tls, verify_tls=False), outgoing())
            finally:
                await pool.close_all()

        asyncio.run(scenario())
    finally:
        server.stop()

    [got] = server.handler.received
    assert got.tls is True


def test_implicit_tls_with_an_untrusted_certificate_is_permanent(
    cert: SelfSignedCert, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = implicit_tls_server(cert, monkeypatch)
    try:

        async def scenario() -> None:
            await SmtpPool().send(account(server.port), outgoing())

        with pytest.raises(PermanentDeliveryError) as caught:
            asyncio.run(scenario())
    finally:
        server.stop()

    assert caught.value.reason.startswith("TLS failure:")


def test_changed_account_settings_open_a_new_connection(server: RunningServer) -> None:
    async def scenario() -> int:
        pool = SmtpPool()
        try:
            await pool.send(account(server.port), outgoing())
            await pool.send(account(server.port, timeout=6.0), outgoing())
            return pool.connections_opened
        finally:
            await pool.close_all()

    assert asyncio.run(scenario()) == 2


class SessionCountingHandler(RoutingHandler):
    """A RoutingHandler that also counts the client connections that delivered and the QUITs it got."""

    def __init__(self) -> None:
        super().__init__()
        self.peers: list[Any] = []
        self.quits = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if session.peer not in self.peers:
            self.peers.append(session.peer)
        return await super().handle_DATA(server, session, envelope)

    async def handle_QUIT(self, server: Any, session: Any, envelope: Any) -> str:
        self.quits += 1
        return "221 Bye"


def test_a_connection_older_than_the_account_ttl_is_closed_with_quit_and_replaced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = pool_clock(monkeypatch)
    handler = SessionCountingHandler()
    controller = Controller(handler, hostname=HOST, port=free_port(), server_hostname="mx.test")
    controller.start()

    async def scenario() -> tuple[int, int]:
        pool = SmtpPool()
        try:
            await pool.send(account(controller.port, ttl=0.5), outgoing())
            await pool.send(account(controller.port, ttl=0.5), outgoing())  # young: reused
            clock.advance(0.7)
            await pool.send(account(controller.port, ttl=0.5), outgoing())  # too old: a new session
            return pool.connections_opened, handler.quits
        finally:
            await pool.close_all()

    try:
        opened, quits_before_close = asyncio.run(scenario())
    finally:
        controller.stop()
    assert (opened, quits_before_close) == (2, 1)
    assert len(handler.peers) == 2
    assert len(handler.received) == 3


class SlowNoopHandler(RoutingHandler):
    """A RoutingHandler that answers NOOP after `noop_delay` seconds (a slow server probed before reuse)."""

    def __init__(self, noop_delay: float) -> None:
        super().__init__()
        self.noop_delay = noop_delay

    async def handle_NOOP(self, server: Any, session: Any, envelope: Any, arg: str) -> str:
        await asyncio.sleep(self.noop_delay)
        return "250 OK"


def test_a_send_cancelled_during_the_reuse_probe_leaves_no_half_read_connection_in_the_pool(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The message time limit (asyncio.wait_for in the sender) may run out while the pool probes an idle
    # connection. The probe's answer then arrives later: a connection kept in the pool would pair it with the
    # next message's MAIL, every later reply would answer the command before, and DATA would get RCPT's 250.
    monkeypatch.setattr(smtp, "PROBE_AFTER_IDLE_SECONDS", 0.0)  # every reuse is probed
    handler = SlowNoopHandler(noop_delay=0.6)
    controller = Controller(handler, hostname=HOST, port=free_port(), server_hostname="mx.test")
    controller.start()

    async def scenario() -> dict[str, str]:
        pool = SmtpPool()
        try:
            await pool.send(account(controller.port), outgoing(to="ok-first@rcpt.test"))
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(pool.send(account(controller.port), outgoing(to="ok-cut@rcpt.test")), 0.2)
            # The next message of the group starts at once, before the cut probe's answer is in.
            return await pool.send(account(controller.port), outgoing(to="ok-next@rcpt.test"))
        finally:
            await pool.close_all()

    try:
        refused = asyncio.run(scenario())
    finally:
        controller.stop()
    assert refused == {}
    assert [r.rcpt_tos for r in handler.received] == [["ok-first@rcpt.test"], ["ok-next@rcpt.test"]]
