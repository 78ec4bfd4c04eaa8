"""The parts of `gmp` that need no server: the /metrics parsers, .eml reading, the profiles file, error lines,
and the upload form's POST (to a plain HTTP server on loopback that stands for S3)."""

from __future__ import annotations

import base64
import json
import threading
import tracemalloc
from collections.abc import Iterator
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from gmp_client import ApiError, ConnectionFailed, ForbiddenError, NotFoundError
from gmp_client.cli import compose, config, upload
from gmp_client.cli import metrics as prom
from gmp_client.cli.app import describe, exit_code_of

EXPOSITION = """\
# HELP gmp_sent_total Messages sent, per tenant and account.
# TYPE gmp_sent_total counter
gmp_sent_total{account_id="primary-smtp",tenant_id="acme"} 1523.0
gmp_sent_total{account_id="bulk \\"smtp\\"",tenant_id="acme"} 45678.0
# HELP gmp_errors_total Messages that failed after acceptance, per tenant and account.
# TYPE gmp_errors_total counter
gmp_errors_total{account_id="primary-smtp",tenant_id="acme"} 12.0
# HELP gmp_pending_messages Accepted messages not yet sent.
# TYPE gmp_pending_messages gauge
gmp_pending_messages 42.0
# TYPE gmp_dead_letter_messages gauge
gmp_dead_letter_messages 0.0
# TYPE gmp_report_failures gauge
gmp_report_failures{tenant_id="acme"} 3.0
# TYPE gmp_tenant_pending_messages gauge
gmp_tenant_pending_messages{tenant_id="acme"} 42.0
"""


def test_the_minimal_parser_reads_what_prometheus_clients_parser_reads() -> None:
    assert prom.parse_minimal(EXPOSITION) == prom.parse(EXPOSITION)
    assert ("gmp_sent_total", {"account_id": 'bulk "smtp"', "tenant_id": "acme"}, 45678.0) in prom.parse_minimal(
        EXPOSITION
    )


def test_a_snapshot_sums_per_account_and_rates_follow_the_sent_counter() -> None:
    snap = prom.snapshot(EXPOSITION)
    assert snap.pending == 42 and snap.dead_letters == 0
    assert snap.accounts[("acme", "primary-smtp")] == {"sent": 1523, "errors": 12, "deferred": 0, "rate_limited": 0}
    assert snap.tenants["acme"] == {"report_failures": 3, "pending": 42}
    later = prom.snapshot(EXPOSITION.replace("1523.0", "1583.0"))
    assert prom.rates(snap, later, 60) == {("acme", "primary-smtp"): 1.0, ("acme", 'bulk "smtp"'): 0.0}
    assert prom.rates(later, snap, 60)[("acme", "primary-smtp")] == 0.0  # a counter reset is not negative


def test_an_eml_gives_addresses_bodies_and_base64_attachments(tmp_path: Path) -> None:
    draft = EmailMessage()
    draft["From"] = "Shop <noreply@shop.test>"
    draft["To"] = "Alice <alice@example.test>, bob@example.test"
    draft["Subject"] = "Ciao"
    draft["Message-ID"] = "<abc@shop.test>"
    draft.set_content("only text")
    draft.add_attachment(b"\x00\x01binary", maintype="application", subtype="octet-stream", filename="blob.bin")
    path = tmp_path / "m.eml"
    path.write_bytes(bytes(draft))
    parsed = compose.from_eml(path)
    assert (parsed.sender, parsed.to, parsed.subject) == (
        "Shop <noreply@shop.test>",
        ["Alice <alice@example.test>", "bob@example.test"],
        "Ciao",
    )
    assert (parsed.body.strip(), parsed.content_type, parsed.message_id, parsed.warnings) == (
        "only text",
        "plain",
        "<abc@shop.test>",
        [],
    )
    [attached] = parsed.attachments
    assert attached["filename"] == "blob.bin" and attached["mime_type"] == "application/octet-stream"
    assert base64.b64decode(attached["storage_path"].removeprefix("base64:")) == b"\x00\x01binary"
    message = compose.build(parsed, message_id="m1", account_id="a", tenant_id="t", extra={"priority": None})
    assert message["from"] == "Shop <noreply@shop.test>" and "priority" not in message
    with pytest.raises(config.CliError, match="missing --subject"):
        compose.build(
            compose.Draft(sender="a@b.test", to=["c@d.test"]), message_id="x", account_id="a", tenant_id=None, extra={}
        )
    assert compose.addresses(["a@x.test, b@x.test", "c@x.test"]) == ["a@x.test", "b@x.test", "c@x.test"]


def test_profiles_never_hold_a_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GMP_CONFIG_DIR", str(tmp_path / "gmp"))
    monkeypatch.setenv("MY_TOKEN", "secret-token-value")
    cfg = config.Config(default="p", profiles={"p": config.Profile(name="p", url="http://x", token_env="MY_TOKEN")})
    path = config.save(cfg)
    assert path == tmp_path / "gmp" / "profiles.json" and (path.stat().st_mode & 0o777) == 0o600
    assert "secret-token-value" not in path.read_text()
    loaded = config.load()
    assert loaded.default == "p" and config.token_of(loaded.profiles["p"]) == "secret-token-value"
    # Without GMP_CONFIG_DIR: the platform's config directory, which honours XDG_CONFIG_HOME.
    monkeypatch.delenv("GMP_CONFIG_DIR")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert config.config_path() == tmp_path / "xdg" / "gmp" / "profiles.json"


def test_no_keyring_backend_refuses_rather_than_keeping_the_token(monkeypatch: pytest.MonkeyPatch) -> None:
    import keyring
    from keyring.backends.null import Keyring

    previous = keyring.get_keyring()
    keyring.set_keyring(Keyring())
    try:
        with pytest.raises(config.CliError, match="no usable keyring"):
            config.store_in_keyring("p", "tok")
        with pytest.raises(config.CliError, match="no token in the keyring"):
            config.token_of(config.Profile(name="p", url="http://x", keyring=True))
    finally:
        keyring.set_keyring(previous)


def test_errors_read_as_one_line_with_their_exit_code() -> None:
    rejected = ApiError(
        400, {"error": "No messages queued", "rejected": [{"id": "m1", "reason": "invalid address: x"}]}
    )
    assert describe(rejected) == "No messages queued [m1: invalid address: x] (HTTP 400)"
    assert exit_code_of(rejected) == 1
    assert exit_code_of(NotFoundError(404, "Tenant 'x' not found")) == 4
    unreachable = ConnectionFailed("http://127.0.0.1:9", "connection refused")
    assert (describe(unreachable), exit_code_of(unreachable)) == (
        "cannot reach http://127.0.0.1:9: connection refused",
        5,
    )
    assert json.dumps(describe(ApiError(422, [{"loc": ["body", "to"], "msg": "field required"}]))) == json.dumps(
        "to: field required (HTTP 422)"
    )


def test_an_upload_reference_names_its_file() -> None:
    assert compose.upload_attachment("upload:kq3_x-Y=Video Clip.mp4") == {
        "filename": "Video Clip.mp4",
        "storage_path": "upload:kq3_x-Y",
        "fetch_mode": "upload",
        "mime_type": "video/mp4",
    }
    with pytest.raises(config.CliError, match="give the file's name too"):
        compose.upload_attachment("upload:kq3")
    with pytest.raises(config.CliError, match="expected upload:<id>=<file name>"):
        compose.upload_attachment("s3://bucket/key=a.bin")


class FormReceiver(BaseHTTPRequestHandler):
    """Reads a POST in 64 KiB pieces (as storage would), keeping its head, its tail and its length."""

    seen: dict[str, Any] = {}
    status = 204

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        head, tail, left = b"", b"", length
        while left:
            piece = self.rfile.read(min(left, 65536))
            left -= len(piece)
            head = head or piece[:4096]
            tail = (tail + piece)[-4096:]
        type(self).seen = {"headers": dict(self.headers), "head": head, "tail": tail, "length": length}
        self.send_response(self.status)
        body = (
            b"<Error><Code>AccessDenied</Code><Message>Policy expired</Message></Error>" if self.status >= 400 else b""
        )
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture()
def form_server() -> Iterator[tuple[str, type[FormReceiver]]]:
    handler = type("Receiver", (FormReceiver,), {"seen": {}, "status": 204})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def test_the_upload_form_is_posted_fields_first_file_last_streamed_from_disk(
    tmp_path: Path, form_server: tuple[str, type[FormReceiver]]
) -> None:
    url, receiver = form_server
    size = 48 * 1024 * 1024
    path = tmp_path / "big.bin"
    with path.open("wb") as f:  # a real file of that size, written in pieces
        for _ in range(size // (1024 * 1024)):
            f.write(b"\xab" * (1024 * 1024))
    fields = {"key": "uploads/acme/kq3", "policy": "eyJ...", "x-amz-signature": "f00"}
    tracemalloc.start()
    try:
        upload.post_form(url + "/", fields, "file", path, filename="big.bin", base_url="http://api.invalid", timeout=30)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024, f"{peak} bytes held to upload {size}"  # never the file in memory
    seen = receiver.seen
    headers = {k.lower(): v for k, v in seen["headers"].items()}
    assert "x-api-token" not in headers  # the form is its own authority: the API's token never goes to storage
    assert headers["content-type"].startswith("multipart/form-data; boundary=")
    assert "transfer-encoding" not in headers and seen["length"] > size  # a length, as S3 requires
    head = seen["head"].decode("latin-1")
    positions = [head.index(f'name="{name}"') for name in (*fields, "file")]
    assert positions == sorted(positions)  # every field, then the file
    assert 'name="file"; filename="big.bin"' in head
    assert (
        seen["tail"]
        .rstrip(b"\r\n-")
        .endswith(b"\xab" * 64 + b"\r\n--" + headers["content-type"].split("=")[1].encode())
    )


def test_a_refused_upload_is_the_clients_error_and_a_closed_port_a_connection_failure(
    tmp_path: Path, form_server: tuple[str, type[FormReceiver]]
) -> None:
    url, receiver = form_server
    receiver.status = 403
    path = tmp_path / "a.txt"
    path.write_text("x")
    with pytest.raises(ForbiddenError) as refused:
        upload.post_form(url, {"token": "t"}, "file", path, filename="a.txt", base_url=url, timeout=5)
    assert "AccessDenied" in describe(refused.value) and exit_code_of(refused.value) == 3
    # A form naming a path is the API server's.
    receiver.status = 204
    upload.post_form("/large-files/receive", {"token": "t"}, "file", path, filename="a.txt", base_url=url, timeout=5)
    assert receiver.seen["length"] > 1
    with pytest.raises(ConnectionFailed):
        upload.post_form("http://127.0.0.1:9/", {}, "file", path, filename="a.txt", base_url=url, timeout=5)
    empty = tmp_path / "empty"
    empty.touch()
    with pytest.raises(config.CliError, match="is empty"):
        upload.file_size(empty)
