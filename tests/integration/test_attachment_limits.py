"""A fetched attachment is capped in bytes (read in chunks, aborted past the cap) and in total time; a
delivery report's call to a tenant is capped in total time too."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import threading
import time
import tracemalloc
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from mailproxy.attachments import UrllibHttp, fetch_attachments
from mailproxy.errors import AttachmentError
from mailproxy.report_http import ReportFailed, UrllibReportHttp
from mailproxy.settings import get_outbound_settings

CAP = 1024 * 1024
# Seconds within which a 1 s deadline has visibly cut an exchange: ample slack on a loaded machine, and still
# short of the 5 s that any slower path takes here (the server's hold, the fetch's socket timeout).
CUT_WITHIN = 4.0


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        with contextlib.suppress(OSError):  # the client hangs up, as meant
            if self.path == "/endless":
                self.send_response(200)
                self.send_header("Connection", "close")
                self.end_headers()
                block = b"x" * 65536
                while True:  # no Content-Length: the body ends when the server closes, i.e. never
                    self.wfile.write(block)
            elif self.path == "/declared-huge":
                self.send_response(200)
                self.send_header("Content-Length", str(10**12))
                self.end_headers()
                self.wfile.write(b"x")
                time.sleep(5)
            elif self.path == "/trickle":
                self._trickle()

    def do_POST(self) -> None:  # a tenant's sync endpoint that answers a byte at a time
        with contextlib.suppress(OSError):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self._trickle()

    def _trickle(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        for _ in range(1000):  # one byte well within the per-operation timeout, forever
            self.wfile.write(b"x")
            self.wfile.flush()
            time.sleep(0.2)


@pytest.fixture
def base_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.block_on_close = False
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def fetch(storage_path: str, **kwargs: Any) -> None:
    spec = {"filename": "big.bin", "storage_path": storage_path}
    asyncio.run(fetch_attachments([spec], tenant={"id": "t1"}, **kwargs))


def test_an_endless_body_is_aborted_at_the_cap_quickly_with_bounded_memory(base_url: str) -> None:
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(AttachmentError, match=rf"^Attachment fetch failed for big\.bin: larger than {CAP} bytes$"):
            fetch(f"{base_url}/endless", http=UrllibHttp(max_bytes=CAP, deadline=20))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert time.monotonic() - started < 5
    assert peak < 4 * CAP


def test_a_declared_length_above_the_cap_is_refused_before_reading(base_url: str) -> None:
    started = time.monotonic()

    with pytest.raises(AttachmentError, match=rf"larger than {CAP} bytes$"):
        fetch(f"{base_url}/declared-huge", http=UrllibHttp(max_bytes=CAP, deadline=20))

    assert time.monotonic() - started < CUT_WITHIN  # the server keeps the connection open for 5 s


def test_a_trickling_server_is_cut_at_the_whole_fetch_deadline(base_url: str) -> None:
    started = time.monotonic()

    with pytest.raises(AttachmentError, match=r"^Attachment fetch failed for big\.bin: timed out after 1 s$"):
        # Each byte comes within the 5 s socket timeout: only the whole-fetch deadline stops it.
        fetch(f"{base_url}/trickle", http=UrllibHttp(max_bytes=CAP, deadline=1), timeout=5.0)

    assert time.monotonic() - started < CUT_WITHIN


def test_a_sync_endpoint_that_trickles_its_answer_is_cut_at_the_calls_timeout(base_url: str) -> None:
    started = time.monotonic()

    with pytest.raises(ReportFailed, match=r"^timed out after 1 s$"):
        # Each byte comes well within the 1 s socket timeout: only the whole call's deadline stops it.
        UrllibReportHttp().post(f"{base_url}/mail-proxy/sync", headers={}, body=b"{}", timeout=1.0)

    assert time.monotonic() - started < CUT_WITHIN  # the trickle itself lasts 200 s


def test_base64_is_capped_by_its_decoded_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GMP_MAX_ATTACHMENT_BYTES", "10")
    get_outbound_settings.cache_clear()
    ten, eleven = base64.b64encode(b"0123456789").decode(), base64.b64encode(b"0123456789A").decode()

    fetch(f"base64:{ten}")
    with pytest.raises(AttachmentError, match=r"^Attachment fetch failed for big\.bin: larger than 10 bytes$"):
        fetch(f"base64:{eleven}")


def test_the_cap_and_deadline_default_to_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    assert (UrllibHttp().max_bytes, UrllibHttp().deadline) == (25 * 1024 * 1024, 30.0)
    monkeypatch.setenv("GMP_MAX_ATTACHMENT_BYTES", "1000")
    monkeypatch.setenv("GMP_ATTACHMENT_FETCH_SECONDS", "2.5")
    get_outbound_settings.cache_clear()
    assert (UrllibHttp().max_bytes, UrllibHttp().deadline) == (1000, 2.5)


def test_an_s3_object_above_the_cap_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from mailproxy import aws
    from moto import mock_aws

    for name, value in (
        ("AWS_DEFAULT_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "t"),
        ("AWS_SECRET_ACCESS_KEY", "t"),
    ):
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("PAYLOAD_BUCKET", raising=False)
    monkeypatch.setenv("GMP_MAX_ATTACHMENT_BYTES", "10")
    get_outbound_settings.cache_clear()
    aws.reset_clients()
    try:
        with mock_aws():
            aws.client("s3").create_bucket(Bucket="files")
            aws.client("s3").put_object(Bucket="files", Key="t1/ok", Body=b"0123456789")
            aws.client("s3").put_object(Bucket="files", Key="t1/big", Body=b"0123456789A")
            fetch("s3://files/t1/ok")  # under the tenant's own prefix
            with pytest.raises(AttachmentError, match=r"^Attachment fetch failed for big\.bin: larger than 10 bytes$"):
                fetch("s3://files/t1/big")
    finally:
        aws.reset_clients()
