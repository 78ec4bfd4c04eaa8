"""Real SMTP servers on 127.0.0.1 for integration tests (aiosmtpd), and a self-signed certificate.

The answer at RCPT depends on the recipient's local part: `reject550@…` is refused permanently,
`temp451@…` temporarily, `flaky451@…` temporarily the first time only, anything else is accepted. Every accepted DATA is kept in `handler.received`.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

HOST = "127.0.0.1"
SMTP_USER = "mailer"
SMTP_PASSWORD = "s3cret-pässword"


@dataclass
class Received:
    """One message as the server got it: the envelope and the raw bytes."""

    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    tls: bool
    authenticated: bool


@dataclass
class RoutingHandler:
    """An aiosmtpd handler whose RCPT answer depends on the recipient."""

    received: list[Received] = field(default_factory=list)
    refused_once: set[str] = field(default_factory=set)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]) -> str:
        local = address.split("@", 1)[0].lower()
        if local.startswith("reject550"):
            return "550 5.1.1 User unknown"
        if local.startswith("temp451"):
            return "451 4.3.0 Try again later"
        if local.startswith("flaky451") and address not in self.refused_once:
            self.refused_once.add(address)
            return "451 4.3.0 Try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append(
            Received(
                mail_from=envelope.mail_from,
                rcpt_tos=list(envelope.rcpt_tos),
                content=bytes(envelope.original_content or envelope.content),
                # Covers STARTTLS and implicit TLS alike (aiosmtpd sets session.ssl for STARTTLS only).
                tls=server.transport.get_extra_info("ssl_object") is not None,
                authenticated=bool(session.authenticated),
            )
        )
        return "250 Message accepted for delivery"


def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    """Accept only SMTP_USER / SMTP_PASSWORD."""
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login.decode() == SMTP_USER
        and auth_data.password.decode() == SMTP_PASSWORD
    )
    # handled=False: aiosmtpd itself answers 235 or 535.
    return AuthResult(success=ok, handled=False)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class SelfSignedCert:
    """A certificate for 127.0.0.1/localhost and its key, as PEM files."""

    cert_path: Path
    key_path: Path

    def server_context(self) -> ssl.SSLContext:
        """A server-side TLS context presenting this certificate."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(self.cert_path), str(self.key_path))
        return context


def make_self_signed_cert(directory: Path) -> SelfSignedCert:
    """Generate a throwaway self-signed certificate with the `cryptography` package."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / "cert.pem"
    key_path = directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return SelfSignedCert(cert_path, key_path)


@dataclass
class RunningServer:
    """A started aiosmtpd server: where it listens and what it received."""

    port: int
    handler: RoutingHandler
    controller: Controller

    def stop(self) -> None:
        """Stop listening and close every session."""
        self.controller.stop()


def start_server(port: int | None = None, **smtp_options: Any) -> RunningServer:
    """Start an aiosmtpd server on 127.0.0.1 (`smtp_options` go to aiosmtpd's SMTP)."""
    handler = RoutingHandler()
    smtp_options.setdefault("auth_require_tls", False)
    smtp_options.setdefault("server_hostname", "mx.test")
    last_error: Exception | None = None
    # A free port may be taken between probing and binding; try a few.
    for _ in range(5):
        chosen = port or free_port()
        controller = Controller(handler, hostname=HOST, port=chosen, **smtp_options)
        try:
            controller.start()
        except Exception as exc:  # bind races surface here
            last_error = exc
            with contextlib.suppress(Exception):
                controller.stop()
            if port:
                break
            continue
        return RunningServer(chosen, handler, controller)
    raise RuntimeError(f"could not start SMTP server: {last_error}")


@contextlib.contextmanager
def smtp_server(port: int | None = None, **smtp_options: Any) -> Iterator[RunningServer]:
    """A server for the duration of a `with` block."""
    server = start_server(port, **smtp_options)
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never says a word (for timeouts)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind((HOST, 0))
    listener.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept_loop() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            accepted.append(conn)

    thread = threading.Thread(target=accept_loop, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        listener.close()


def send_once(config: Any, email: Any) -> None:
    """Send `email` through a fresh SmtpPool with `config` (an AccountConfig), then QUIT: one real session."""
    import asyncio

    from mailproxy.smtp import SmtpPool

    async def scenario() -> None:
        pool = SmtpPool()
        try:
            await pool.send(config, email)
        finally:
            await pool.close_all()

    asyncio.run(scenario())
