"""The outbound guard in every client: SMTP, attachment fetches and delivery-report callbacks.

The servers listen on loopback; the tests allow only what each needs (GMP_ALLOWED_NETWORKS) and prove
that everything else is refused before a byte is sent, that a name is resolved once (DNS rebinding), and
that TLS still verifies the certificate against the name, not the address connected to.
"""

from __future__ import annotations

import asyncio
import datetime
import socket
import ssl
import threading
import traceback
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from mailproxy import smtp
from mailproxy.attachments import fetch_attachments
from mailproxy.email_builder import build_email
from mailproxy.errors import AttachmentError, PermanentDeliveryError
from mailproxy.report_http import ReportFailed, UrllibReportHttp
from mailproxy.settings import get_outbound_settings
from mailproxy.smtp import AccountConfig

from tests.integration.smtp_servers import RunningServer, send_once, start_server

HINT = r"\(set GMP_ALLOWED_NETWORKS to allow it\)"
REBIND_HOST = "files.rebind.test"


def allow(monkeypatch: pytest.MonkeyPatch, networks: str) -> None:
    monkeypatch.setenv("GMP_ALLOWED_NETWORKS", networks)
    get_outbound_settings.cache_clear()


class HttpLog:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Host)
        self.server_names: list[str | None] = []


@pytest.fixture
def http_server() -> Iterator[tuple[int, HttpLog]]:
    log = HttpLog()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _answer(self) -> None:
            log.requests.append((self.command, self.path, self.headers.get("Host")))
            if self.path.startswith("/redirect-to/"):
                self.send_response(302)
                self.send_header("Location", "http://" + self.path[len("/redirect-to/") :])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = b"file bytes"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1]), log
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def fetch(url: str) -> bytes:
    [got] = asyncio.run(fetch_attachments([{"filename": "f.bin", "storage_path": url}], tenant={"id": "t1"}))
    return got.content


@pytest.mark.parametrize(
    ("host", "rule"),
    [
        ("localhost", "loopback"),
        ("127.0.0.1", "loopback"),
        ("[::ffff:127.0.0.1]", "loopback"),
        ("10.0.0.1", "private network"),
        ("192.168.0.10", "private network"),
        ("169.254.169.254", "link-local"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("0.0.0.0", "unspecified address"),
        ("224.0.0.1", "multicast"),
    ],
)
def test_attachment_urls_to_internal_addresses_are_refused(
    host: str, rule: str, http_server: tuple[int, HttpLog], monkeypatch: pytest.MonkeyPatch
) -> None:
    port, log = http_server
    allow(monkeypatch, "")

    with pytest.raises(
        AttachmentError, match=rf"^Attachment fetch failed for f\.bin: destination not allowed: {rule} {HINT}$"
    ):
        fetch(f"http://{host}:{port}/file")

    assert log.requests == []


def test_a_redirect_to_an_internal_address_is_refused(
    http_server: tuple[int, HttpLog], monkeypatch: pytest.MonkeyPatch
) -> None:
    port, log = http_server
    allow(monkeypatch, "127.0.0.1/32")  # the first server only

    with pytest.raises(AttachmentError, match=rf"destination not allowed: link-local {HINT}"):
        fetch(f"http://127.0.0.1:{port}/redirect-to/169.254.169.254/latest/meta-data/")

    assert [path for _, path, _ in log.requests] == ["/redirect-to/169.254.169.254/latest/meta-data/"]


def test_the_allow_list_opens_a_private_relay(
    http_server: tuple[int, HttpLog], monkeypatch: pytest.MonkeyPatch
) -> None:
    port, _ = http_server
    allow(monkeypatch, "127.0.0.0/8")

    assert fetch(f"http://localhost:{port}/file") == b"file bytes"


class RebindingResolver:
    """A DNS answer that changes: the checked address first, an internal one on any later query."""

    def __init__(self, first: str, later: str) -> None:
        self.first, self.later = first, later
        self.queries = 0
        self._real = socket.getaddrinfo

    def __call__(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in (REBIND_HOST, "smtp.rebind.test"):
            return self._real(host, port, *args, **kwargs)
        self.queries += 1
        address = self.first if self.queries == 1 else self.later
        return self._real(address, port, *args, **kwargs)


def test_a_name_is_resolved_once_and_connected_to_where_it_was_checked(
    http_server: tuple[int, HttpLog], monkeypatch: pytest.MonkeyPatch
) -> None:
    port, log = http_server
    allow(monkeypatch, "127.0.0.1/32")  # 127.0.0.2 is loopback too, but not allowed, and nothing listens there
    resolver = RebindingResolver("127.0.0.1", "127.0.0.2")
    monkeypatch.setattr(socket, "getaddrinfo", resolver)

    assert fetch(f"http://{REBIND_HOST}:{port}/file") == b"file bytes"

    assert resolver.queries == 1
    assert log.requests == [("GET", "/file", f"{REBIND_HOST}:{port}")]


def test_a_callback_to_an_internal_address_is_refused_as_a_failed_call(
    http_server: tuple[int, HttpLog], monkeypatch: pytest.MonkeyPatch
) -> None:
    port, log = http_server
    allow(monkeypatch, "")

    for url in (f"http://localhost:{port}/mail-proxy/sync", "http://169.254.170.2/v2/credentials"):
        with pytest.raises(ReportFailed, match=r"^destination not allowed: (loopback|link-local) "):
            UrllibReportHttp().post(url, headers={}, body=b"{}", timeout=2.0)

    assert log.requests == []


def test_a_callback_to_an_allowed_network_is_posted(
    http_server: tuple[int, HttpLog], monkeypatch: pytest.MonkeyPatch
) -> None:
    port, log = http_server
    allow(monkeypatch, "127.0.0.0/8")

    UrllibReportHttp().post(f"http://localhost:{port}/mail-proxy/sync", headers={}, body=b"{}", timeout=2.0)

    assert [(method, path) for method, path, _ in log.requests] == [("POST", "/mail-proxy/sync")]


# ---------------------------------------------------------------------- SMTP


def outgoing() -> Any:
    payload = {"id": "m-1", "from": "noreply@acme.test", "to": "ok@rcpt.test", "subject": "Hi", "body": "Hi"}
    return build_email(payload, message_id="m-1@mailproxy.test", attachments=[])


def send(config: AccountConfig) -> None:
    send_once(config, outgoing())


@pytest.fixture
def smtp_server() -> Iterator[RunningServer]:
    server = start_server()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("host", "rule"),
    [
        ("localhost", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("10.0.0.1", "private network"),
        ("169.254.169.254", "link-local"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("fd12::1", "unique local address"),
    ],
)
def test_smtp_hosts_at_internal_addresses_are_a_permanent_error(
    host: str, rule: str, smtp_server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    allow(monkeypatch, "")

    with pytest.raises(PermanentDeliveryError, match=rf"^destination not allowed: {rule} {HINT}$"):
        send(AccountConfig(key="t1/smtp", host=host, port=smtp_server.port, timeout=2.0))

    assert smtp_server.handler.received == []


def test_an_smtp_host_is_resolved_once(smtp_server: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    allow(monkeypatch, "127.0.0.1/32")
    resolver = RebindingResolver("127.0.0.1", "127.0.0.2")
    monkeypatch.setattr(socket, "getaddrinfo", resolver)

    send(AccountConfig(key="t1/smtp", host="smtp.rebind.test", port=smtp_server.port, timeout=5.0))

    assert resolver.queries == 1
    assert len(smtp_server.handler.received) == 1


# ---------------------------------------------------------------------- TLS keeps the name


def _certificate(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate valid for `name` only (no IP address in it)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@pytest.fixture
def trusted_cert(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A certificate for REBIND_HOST that the clients trust (SSL_CERT_FILE is OpenSSL's default store)."""
    cert_path, key_path = _certificate(tmp_path, REBIND_HOST)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_path))
    return cert_path, key_path


def _server_context(cert: tuple[Path, Path], server_names: list[str | None]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert[0]), str(cert[1]))
    context.sni_callback = lambda sock, name, ctx: server_names.append(name)  # type: ignore[assignment,misc,return-value]
    return context


def test_https_verifies_the_certificate_against_the_name_and_sends_it_as_sni(
    trusted_cert: tuple[Path, Path], http_server: tuple[int, HttpLog], monkeypatch: pytest.MonkeyPatch
) -> None:
    names: list[str | None] = []
    context = _server_context(trusted_cert, names)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve_once() -> None:
        conn, _ = listener.accept()
        with context.wrap_socket(conn, server_side=True) as tls:
            tls.recv(65536)
            tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nTLS")

    thread = threading.Thread(target=serve_once, daemon=True)
    thread.start()
    allow(monkeypatch, "127.0.0.1/32")
    monkeypatch.setattr(socket, "getaddrinfo", RebindingResolver("127.0.0.1", "127.0.0.2"))
    try:
        assert fetch(f"https://{REBIND_HOST}:{port}/file") == b"TLS"
    finally:
        thread.join(5)
        listener.close()

    assert names == [REBIND_HOST]


def test_smtp_implicit_tls_verifies_the_certificate_against_the_account_host(
    trusted_cert: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    names: list[str | None] = []
    server = start_server(ssl_context=_server_context(trusted_cert, names))
    monkeypatch.setattr(smtp, "IMPLICIT_TLS_PORT", server.port)
    allow(monkeypatch, "127.0.0.1/32")
    monkeypatch.setattr(socket, "getaddrinfo", RebindingResolver("127.0.0.1", "127.0.0.2"))
    try:
        send(AccountConfig(key="t1/smtp", host="smtp.rebind.test", port=server.port, timeout=5.0))
    except PermanentDeliveryError as exc:
        # The certificate names REBIND_HOST, not smtp.rebind.test: verification is against the host name.
        assert "TLS failure" in exc.reason
    else:
        pytest.fail("a certificate for another name was accepted")
    monkeypatch.setattr(socket, "getaddrinfo", RebindingResolver("127.0.0.1", "127.0.0.2"))
    try:
        send(AccountConfig(key="t1/smtp", host=REBIND_HOST, port=server.port, timeout=5.0))
    finally:
        server.stop()

    assert [name for name in names if name] == ["smtp.rebind.test", REBIND_HOST]  # None: aiosmtpd's own start-up probe
    assert [got.tls for got in server.handler.received] == [True]


# ---------------------------------------------------------------------- credentials in errors


@pytest.mark.parametrize("token", ["s3cr3t-token\nX-Injected: 1", "s3cr3t-token\r\n", "s3cr3t\rtoken"])
def test_a_credential_no_header_can_carry_is_refused_without_quoting_it(
    http_server: tuple[int, HttpLog], monkeypatch: pytest.MonkeyPatch, token: str
) -> None:
    # http.client's refusal quotes the header value, and the error becomes the message's error (GET /messages,
    # the delivery report) or the callback's last_error and a log line: the token must not be in it.
    port, log = http_server
    allow(monkeypatch, "127.0.0.0/8")
    url = f"http://127.0.0.1:{port}/file"
    spec = {"filename": "f.bin", "storage_path": url, "auth": {"method": "bearer", "token": token}}

    with pytest.raises(AttachmentError, match=r"Authorization") as refused:
        asyncio.run(fetch_attachments([spec], tenant={"id": "t1"}))
    with pytest.raises(ReportFailed, match=r"Authorization") as failed:
        UrllibReportHttp().post(url, headers={"Authorization": f"Bearer {token}"}, body=b"{}", timeout=2.0)

    for error in (refused.value, failed.value):
        assert "s3cr3t" not in str(error)
        assert "s3cr3t" not in "".join(traceback.format_exception(error))
    assert log.requests == []
