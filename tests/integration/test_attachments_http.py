"""Fetching attachments over a real loopback HTTP server, and from S3 (moto)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from mailproxy import aws
from mailproxy.attachments import fetch_attachments
from mailproxy.email_builder import Attachment
from mailproxy.errors import AttachmentError

PDF = b"%PDF-1.7 fake but binary \x00\xff\x10"


@dataclass
class FileServer:
    """A loopback HTTP server: GET /files/<name>, POST /mail-proxy/attachments, /slow and /moved."""

    base_url: str
    requests: list[dict[str, Any]] = field(default_factory=list)


def make_handler(log: list[dict[str, Any]], files: dict[str, bytes]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            pass

        def _record(self, body: bytes | None) -> None:
            log.append(
                {
                    "method": self.command,
                    "path": self.path,
                    "authorization": self.headers.get("Authorization"),
                    "content_type": self.headers.get("Content-Type"),
                    "body": body,
                }
            )

        def _answer(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            self._record(None)
            if self.path == "/slow":
                time.sleep(5.0)
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up, as meant
                    self._answer(200, b"late")
            elif self.path == "/moved":
                self.send_response(302)
                self.send_header("Location", "/files/report.pdf")
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif self.path.startswith("/files/") and self.path[7:] in files:
                self._answer(200, files[self.path[7:]])
            else:
                self._answer(404, b"not found")

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self._record(body)
            if self.path != "/mail-proxy/attachments":
                self._answer(404, b"not found")
                return
            storage_path = json.loads(body)["storage_path"]
            if storage_path in files:
                self._answer(200, files[storage_path])
            else:
                self._answer(500, b"boom")

    return Handler


@pytest.fixture
def file_server() -> Iterator[FileServer]:
    log: list[dict[str, Any]] = []
    files = {"report.pdf": PDF, "docs/42": b"endpoint bytes"}
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(log, files))
    server.block_on_close = False  # do not wait for /slow's sleeping handler at teardown
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield FileServer(f"http://127.0.0.1:{server.server_address[1]}", log)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def fetch(specs: list[dict[str, Any]], tenant: dict[str, Any] | None = None, **kwargs: Any) -> list[Attachment]:
    return asyncio.run(fetch_attachments(specs, tenant=tenant or {"id": "t1"}, **kwargs))


def test_http_url_is_fetched_with_bearer_auth(file_server: FileServer) -> None:
    [got] = fetch(
        [
            {
                "filename": "report.pdf",
                "storage_path": f"{file_server.base_url}/files/report.pdf",
                "auth": {"method": "bearer", "token": "file-token"},
                "content_md5": hashlib.md5(PDF).hexdigest(),
            }
        ]
    )

    assert got == Attachment("report.pdf", PDF, "application/pdf")
    [request] = file_server.requests
    assert (request["method"], request["path"], request["authorization"]) == (
        "GET",
        "/files/report.pdf",
        "Bearer file-token",
    )


def test_endpoint_mode_posts_the_storage_path_with_the_tenants_basic_auth(file_server: FileServer) -> None:
    tenant = {
        "id": "t1",
        "client_base_url": file_server.base_url + "/",
        "client_auth": {"method": "basic", "user": "acme", "password": "pässword"},
    }

    [got] = fetch([{"filename": "doc.txt", "storage_path": "docs/42"}], tenant)

    assert got == Attachment("doc.txt", b"endpoint bytes", "text/plain")
    [request] = file_server.requests
    assert request["method"] == "POST"
    assert request["path"] == "/mail-proxy/attachments"
    assert request["content_type"] == "application/json"
    assert json.loads(request["body"]) == {"storage_path": "docs/42"}
    expected = "Basic " + base64.b64encode("acme:pässword".encode()).decode()
    assert request["authorization"] == expected


def test_endpoint_error_status_is_an_attachment_error(file_server: FileServer) -> None:
    tenant = {"id": "t1", "client_base_url": file_server.base_url}

    with pytest.raises(AttachmentError, match=r"^Attachment fetch failed for missing\.txt: HTTP 500"):
        fetch([{"filename": "missing.txt", "storage_path": "docs/none"}], tenant)


def test_missing_file_404_is_an_attachment_error(file_server: FileServer) -> None:
    with pytest.raises(AttachmentError, match=r"^Attachment fetch failed for gone\.pdf: HTTP 404"):
        fetch([{"filename": "gone.pdf", "storage_path": f"{file_server.base_url}/files/gone.pdf"}])


def test_slow_server_times_out_as_an_attachment_error(file_server: FileServer) -> None:
    started = time.monotonic()

    with pytest.raises(AttachmentError, match=r"^Attachment fetch failed for slow\.bin: timed out"):
        fetch([{"filename": "slow.bin", "storage_path": f"{file_server.base_url}/slow"}], timeout=0.3)

    assert time.monotonic() - started < 3  # cut at the 0.3 s timeout, not the server's 5 s answer


def test_redirect_is_followed_without_the_credentials(file_server: FileServer) -> None:
    spec = {
        "filename": "report.pdf",
        "storage_path": f"{file_server.base_url}/moved",
        "auth": {"method": "bearer", "token": "file-token"},
    }

    [got] = fetch([spec])

    assert got.content == PDF
    assert [(r["path"], r["authorization"]) for r in file_server.requests] == [
        ("/moved", "Bearer file-token"),
        ("/files/report.pdf", None),
    ]


@pytest.fixture
def s3_bucket(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    from moto import mock_aws

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("PAYLOAD_BUCKET", raising=False)
    aws.reset_clients()
    with mock_aws():
        s3 = aws.client("s3")
        s3.create_bucket(Bucket="tenant-files")
        s3.put_object(Bucket="tenant-files", Key="t1/invoices/2024/inv 1.pdf", Body=PDF)
        s3.create_bucket(Bucket="payload-bucket")
        s3.put_object(Bucket="payload-bucket", Key="payloads/t2/x/1.json.z", Body=b"other tenant")
        yield "tenant-files"
    aws.reset_clients()


def test_s3_object_is_fetched(s3_bucket: str) -> None:
    [got] = fetch([{"filename": "inv.pdf", "storage_path": f"s3://{s3_bucket}/t1/invoices/2024/inv 1.pdf"}])

    assert got == Attachment("inv.pdf", PDF, "application/pdf")


def test_missing_s3_object_is_an_attachment_error(s3_bucket: str) -> None:
    with pytest.raises(AttachmentError, match=r"^Attachment fetch failed for nope\.pdf: S3 error: .*NoSuchKey"):
        fetch([{"filename": "nope.pdf", "storage_path": f"s3://{s3_bucket}/t1/nope.pdf", "fetch_mode": "s3"}])


def test_the_payload_bucket_is_not_readable_as_an_attachment(s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYLOAD_BUCKET", "payload-bucket")

    with pytest.raises(AttachmentError, match=r"not readable"):
        fetch([{"filename": "steal.bin", "storage_path": "s3://payload-bucket/payloads/t2/x/1.json.z"}])


def test_the_large_file_bucket_is_not_readable_as_an_attachment(
    s3_bucket: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    # The sender's role reads every tenant's uploads and stored files; the tenant prefix alone would let a tenant
    # named "uploads" (or "files") name any other tenant's, links expired or tenant deleted.
    from mailproxy.settings import get_large_file_settings

    monkeypatch.setenv("LARGE_FILE_BUCKET", "large-file-bucket")
    get_large_file_settings.cache_clear()
    request.addfinalizer(get_large_file_settings.cache_clear)
    s3 = aws.client("s3")
    s3.create_bucket(Bucket="large-file-bucket")
    s3.put_object(Bucket="large-file-bucket", Key="uploads/acme/" + "a" * 24, Body=b"acme's upload")

    with pytest.raises(AttachmentError, match=r"not readable"):
        fetch(
            [{"filename": "steal.bin", "storage_path": "s3://large-file-bucket/uploads/acme/" + "a" * 24}],
            tenant={"id": "uploads"},
        )
