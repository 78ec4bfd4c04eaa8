"""Fetching attachments without the network: inline base64 and a recording HTTP fake."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from dataclasses import dataclass, field
from typing import Any

import pytest
from mailproxy.attachments import AttachmentHttp, fetch_attachments
from mailproxy.email_builder import Attachment
from mailproxy.errors import AttachmentError

TENANT: dict[str, Any] = {"id": "t1", "client_base_url": "https://client.test"}


@dataclass
class RecordingHttp:
    """An AttachmentHttp that answers from a dict and records every request."""

    answers: dict[str, bytes] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)

    async def request(
        self, method: str, url: str, *, headers: dict[str, str], body: bytes | None, timeout: float
    ) -> bytes:
        self.requests.append({"method": method, "url": url, "headers": headers, "body": body})
        if url not in self.answers:
            raise RuntimeError("HTTP 404 Not Found")
        return self.answers[url]


def fetch(specs: list[dict[str, Any]], http: AttachmentHttp | None = None, **kwargs: Any) -> list[Attachment]:
    return asyncio.run(fetch_attachments(specs, tenant=kwargs.pop("tenant", TENANT), http=http, **kwargs))


def b64(data: bytes) -> str:
    return "base64:" + base64.b64encode(data).decode()


def test_base64_content_is_decoded() -> None:
    [got] = fetch([{"filename": "hello.txt", "storage_path": b64(b"hello world")}])

    assert got == Attachment("hello.txt", b"hello world", "text/plain")


def test_base64_wrapped_in_lines_is_accepted() -> None:
    data = bytes(range(256)) * 4
    wrapped = base64.encodebytes(data).decode()  # 76-character lines, as mail clients write it

    [got] = fetch([{"filename": "blob.bin", "storage_path": wrapped, "fetch_mode": "base64"}])

    assert got.content == data


def test_bad_base64_fails_with_the_documented_message() -> None:
    with pytest.raises(AttachmentError) as caught:
        fetch([{"filename": "broken.pdf", "storage_path": "base64:not*base64!"}])

    assert str(caught.value).startswith("Attachment fetch failed for broken.pdf: ")
    assert caught.value.temporary is False


def test_md5_marker_is_removed_from_the_name_sent() -> None:
    content = b"%PDF report"
    md5 = hashlib.md5(content).hexdigest()

    [got] = fetch([{"filename": f"report{{MD5:{md5}}}.pdf", "storage_path": b64(content)}])

    assert got.filename == "report.pdf"
    assert got.mime_type == "application/pdf"


def test_an_md5_marker_is_only_a_cache_key_and_never_fails_the_message() -> None:
    # genro-mail-proxy keys its attachment cache on the marker and never checks it against the content.
    [got] = fetch([{"filename": "report_{MD5:" + "0" * 32 + "}.pdf", "storage_path": b64(b"data")}])

    assert (got.filename, got.content) == ("report.pdf", b"data")


def test_content_md5_is_verified() -> None:
    content = b"exact bytes"
    good = hashlib.md5(content).hexdigest()

    [got] = fetch([{"filename": "a.bin", "storage_path": b64(content), "content_md5": good.upper()}])
    assert got.content == content

    with pytest.raises(AttachmentError) as caught:
        fetch([{"filename": "a.bin", "storage_path": b64(content), "content_md5": "f" * 32}])
    assert str(caught.value) == f"Attachment fetch failed for a.bin: MD5 mismatch (expected {'f' * 32}, got {good})"
    assert caught.value.temporary is False


def test_an_explicit_content_md5_is_checked_even_beside_a_marker() -> None:
    marker = "{MD5:" + hashlib.md5(b"other").hexdigest() + "}"
    with pytest.raises(AttachmentError, match=r"^Attachment fetch failed for r_\{MD5:[0-9a-f]+\}\.pdf: MD5 mismatch"):
        fetch([{"filename": f"r_{marker}.pdf", "storage_path": b64(b"data"), "content_md5": "0" * 32}])


@pytest.mark.parametrize(
    ("submitted", "sent"),
    [
        ("report_{MD5}.pdf", "report.pdf"),
        ("report{MD5}.pdf", "report.pdf"),
        ("{MD5}_report.pdf", "report.pdf"),
        ("report_{MD5}", "report"),
        ("report_{MD5}_final.pdf", "report_final.pdf"),
        ("report-{MD5}.pdf", "report.pdf"),  # genro-mail-proxy leaves report-.pdf
        ("report {MD5}.pdf", "report.pdf"),  # genro: "report .pdf"
        ("report.{MD5}.pdf", "report.pdf"),  # genro: report..pdf
        ("report-{MD5}-v2.pdf", "report-v2.pdf"),  # genro: report--v2.pdf
        ("a_{MD5}_{MD5}.pdf", "a.pdf"),
        ("my__file_{MD5}.pdf", "my__file.pdf"),  # the rest of the name is left alone (genro: my_file.pdf)
        ("{MD5}", "attachment"),
    ],
)
def test_an_md5_marker_is_removed_with_the_separator_it_leaves_behind(submitted: str, sent: str) -> None:
    marker = "{MD5:" + "ab" * 16 + "}"

    [got] = fetch([{"filename": submitted.replace("{MD5}", marker), "storage_path": b64(b"x")}])

    assert got.filename == sent


@pytest.mark.parametrize(
    ("filename", "mime_type", "expected"),
    [
        ("photo.JPG", None, "image/jpeg"),
        ("table.csv", None, "text/csv"),
        ("no-extension", None, "application/octet-stream"),
        ("weird.zzzunknown", None, "application/octet-stream"),
        ("photo.jpg", "image/webp", "image/webp"),
    ],
)
def test_mime_type_is_the_override_else_a_guess_else_octet_stream(
    filename: str, mime_type: str | None, expected: str
) -> None:
    spec: dict[str, Any] = {"filename": filename, "storage_path": b64(b"x")}
    if mime_type:
        spec["mime_type"] = mime_type

    [got] = fetch([spec])

    assert got.mime_type == expected


def test_attachments_keep_their_order() -> None:
    specs = [{"filename": f"f{i}.txt", "storage_path": b64(str(i).encode())} for i in range(5)]

    assert [a.content for a in fetch(specs)] == [b"0", b"1", b"2", b"3", b"4"]


def test_http_url_is_fetched_with_the_attachments_bearer_token() -> None:
    http = RecordingHttp(answers={"https://files.test/a.pdf": b"pdf"})

    [got] = fetch(
        [
            {
                "filename": "a.pdf",
                "storage_path": "https://files.test/a.pdf",
                "auth": {"method": "bearer", "token": "tok"},
            }
        ],
        http,
    )

    assert got.content == b"pdf"
    assert http.requests == [
        {
            "method": "GET",
            "url": "https://files.test/a.pdf",
            "headers": {"Authorization": "Bearer tok"},
            "body": None,
        }
    ]


def test_other_paths_are_posted_to_the_tenants_attachment_endpoint() -> None:
    http = RecordingHttp(answers={"https://client.test/files/get": b"file bytes"})
    tenant = {**TENANT, "client_attachment_path": "/files/get", "client_auth": {"method": "none"}}

    [got] = fetch([{"filename": "doc.txt", "storage_path": "docs/42"}], http, tenant=tenant)

    assert got.content == b"file bytes"
    [request] = http.requests
    assert (request["method"], request["url"], request["body"]) == (
        "POST",
        "https://client.test/files/get",
        b'{"storage_path": "docs/42"}',
    )


def test_endpoint_mode_without_a_base_url_fails() -> None:
    with pytest.raises(AttachmentError, match=r"^Attachment fetch failed for doc\.txt: .*client_base_url"):
        fetch([{"filename": "doc.txt", "storage_path": "docs/42"}], RecordingHttp(), tenant={"id": "t1"})


def test_an_http_failure_names_the_file() -> None:
    with pytest.raises(AttachmentError, match=r"^Attachment fetch failed for gone\.pdf: HTTP 404"):
        fetch([{"filename": "gone.pdf", "storage_path": "https://files.test/gone.pdf"}], RecordingHttp())


def test_the_services_own_bucket_cannot_be_read() -> None:
    spec = {"filename": "x.json", "storage_path": "s3://payload-bucket/payloads/t2/abc/1.json.z"}

    with pytest.raises(AttachmentError, match=r"not readable"):
        fetch([spec], blocked_buckets=["payload-bucket"])


def test_the_payload_bucket_is_blocked_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYLOAD_BUCKET", "payload-bucket")
    spec = {"filename": "x.json", "storage_path": "s3://payload-bucket/payloads/t2/abc/1.json.z"}

    with pytest.raises(AttachmentError, match=r"not readable"):
        fetch([spec])


def test_unknown_fetch_mode_fails() -> None:
    with pytest.raises(AttachmentError, match=r"unknown fetch_mode"):
        fetch([{"filename": "a", "storage_path": "x", "fetch_mode": "filesystem"}])


def test_no_attachments_means_no_work() -> None:
    assert fetch([], RecordingHttp()) == []
