"""Large attachments (issue 14, docs/large-files.md): the tenant's large_file_config at send time, uploads that
bypass the API, signed download links that expire, on both storages (S3 on moto, the data directory)."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from mailproxy import clock

from tests.conftest import Storage
from tests.integration.delivery import Delivery, message, parsed
from tests.integration.smtp_servers import RunningServer
from tests.integration.test_delivery import make_delivery

pytestmark = pytest.mark.both_storages

BASE = "http://testserver"
MB = 1024 * 1024
LINK = re.compile(r"http://testserver/large-files/[A-Za-z0-9._-]+")


@pytest.fixture
def links(storage: Storage, monkeypatch: pytest.MonkeyPatch) -> None:
    """Links name the test client's server; on AWS the signing key stands for LinkSigningSecret (the data
    directory's own key file signs on SQLite)."""
    from mailproxy.settings import get_large_file_settings

    monkeypatch.setenv("GMP_PUBLIC_BASE_URL", BASE)
    if not isinstance(storage, dict):
        monkeypatch.delenv("GMP_LINK_SIGNING_KEY", raising=False)
    else:
        monkeypatch.setenv("GMP_LINK_SIGNING_KEY", "test-link-signing-key")
    get_large_file_settings.cache_clear()


@pytest.fixture
def delivery(storage: Storage, api: TestClient, admin: dict[str, str], server: RunningServer, links: None) -> Delivery:
    return make_delivery(storage, api, admin, server.port)


def configure(delivery: Delivery, **config: Any) -> None:
    reply = delivery.api.put(
        f"/tenant/{delivery.tenant_id}", json={"large_file_config": {"enabled": True, **config}}, headers=delivery.key
    )
    assert reply.status_code == 200, reply.text


def inline(name: str, content: bytes, **fields: Any) -> dict[str, Any]:
    return {"filename": name, "storage_path": "base64:" + base64.b64encode(content).decode(), **fields}


def upload(api: TestClient, key: dict[str, str], content: bytes, filename: str = "big.bin") -> dict[str, Any]:
    """Upload through the form POST /large-files returns (S3's presigned POST, or the local route)."""
    reply = api.post("/large-files", json={"filename": filename, "size": len(content)}, headers=key)
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    form = body["upload"]
    if form["url"].startswith(BASE):
        sent = api.post(form["url"][len(BASE) :], data=form["fields"], files={"file": (filename, content)})
        assert sent.status_code == 204, sent.text
    else:
        import requests

        sent = requests.post(form["url"], data=form["fields"], files={"file": (filename, content)}, timeout=60)
        assert sent.status_code in (200, 204), sent.text
    attachment: dict[str, Any] = body["attachment"]
    return attachment


def download(api: TestClient, url: str) -> tuple[int, bytes, dict[str, str]]:
    """Follow a link as a mail reader would: the service's answer, then S3's when it redirects there."""
    reply = api.get(url[len(BASE) :], follow_redirects=False)
    if reply.status_code != 302:
        return reply.status_code, reply.content, dict(reply.headers)
    from mailproxy import aws

    target = urlsplit(reply.headers["location"])
    bucket = target.netloc.split(".", 1)[0]
    obj = aws.client("s3").get_object(Bucket=bucket, Key=target.path.lstrip("/"))
    return 200, obj["Body"].read(), {"location": reply.headers["location"]}


def received_links(server: RunningServer) -> tuple[Any, list[str]]:
    [received] = server.handler.received
    mail = parsed(received.content)
    body = mail.get_body(preferencelist=("html", "plain"))
    assert body is not None
    return mail, LINK.findall(body.get_content())


def status(delivery: Delivery, message_id: str) -> dict[str, Any]:
    return delivery.records()[message_id]


def test_warn_sends_the_attachment_and_logs(
    delivery: Delivery, server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    configure(delivery, max_size_mb=0.1, action="warn")
    delivery.submit(message("m-1", attachments=[inline("photo.jpg", b"x" * 200_000)]))
    with caplog.at_level("WARNING"):
        delivery.pump()

    assert status(delivery, "m-1")["status"] == "sent"
    [received] = server.handler.received
    [part] = list(parsed(received.content).iter_attachments())
    assert part.get_filename() == "photo.jpg"
    assert "Attachment 'photo.jpg' (0.3 MB) exceeds limit (0.1 MB): sending anyway" in caplog.text


def test_reject_fails_the_message_naming_the_file_and_sizes(delivery: Delivery, server: RunningServer) -> None:
    configure(delivery, max_size_mb=0.1, action="reject")
    delivery.submit(message("m-1", attachments=[inline("report.pdf", b"x" * 200_000)]))
    delivery.pump()

    record = status(delivery, "m-1")
    assert record["status"] == "error"
    # The encoded size counts: 200 000 bytes are 0.26 MB in base64 with line breaks.
    assert record["error"] == "Attachment 'report.pdf' (0.3 MB) exceeds limit (0.1 MB)"
    assert server.handler.received == []


def test_an_attachment_under_the_limit_is_sent_as_it_is(delivery: Delivery, server: RunningServer) -> None:
    configure(delivery, max_size_mb=1, action="reject")
    delivery.submit(message("m-1", attachments=[inline("small.txt", b"hello")]))
    delivery.pump()

    assert status(delivery, "m-1")["status"] == "sent"
    assert [p.get_filename() for p in parsed(server.handler.received[0].content).iter_attachments()] == ["small.txt"]


def test_rewrite_links_the_file_in_an_html_footer_with_its_name_escaped(
    delivery: Delivery, server: RunningServer
) -> None:
    configure(delivery, max_size_mb=0.01, action="rewrite")
    content = bytes(range(256)) * 100
    name = 'a<b>&"c".bin'
    delivery.submit(
        message(
            "m-1",
            content_type="html",
            body="<html><body><p>Hello</p></body></html>",
            attachments=[inline(name, content), inline("keep.txt", b"small")],
        )
    )
    delivery.pump()

    assert status(delivery, "m-1")["status"] == "sent"
    mail, found = received_links(server)
    html = mail.get_body(preferencelist=("html",)).get_content()
    assert "Large attachments available for download" in html
    assert "a&lt;b&gt;&amp;&quot;c&quot;.bin" in html and name not in html
    assert html.rstrip().endswith("</body></html>")  # the footer goes inside the body
    assert [p.get_filename() for p in mail.iter_attachments()] == ["keep.txt"]
    [url] = found
    code, got, _ = download(delivery.api, url)
    assert (code, got) == (200, content)


def test_a_link_serves_a_file_whose_given_mime_type_is_no_mime_type(delivery: Delivery, server: RunningServer) -> None:
    configure(delivery, max_size_mb=0.01, action="rewrite")
    content = b"1" * 30_000
    delivery.submit(message("m-1", attachments=[inline("data.bin", content, mime_type="application/\u20ac")]))
    delivery.pump()

    _, [url] = received_links(server)
    code, got, headers = download(delivery.api, url)
    assert (code, got) == (200, content)  # not a 500: no HTTP header holds "€"
    found = headers.get("content-type") or headers["location"]
    assert "octet-stream" in found


def test_rewrite_in_a_plain_text_body(delivery: Delivery, server: RunningServer) -> None:
    configure(delivery, max_size_mb=0.01, action="rewrite", file_ttl_days=7)
    delivery.submit(message("m-1", attachments=[inline("data.csv", b"1,2,3\n" * 5000)]))
    delivery.pump()

    mail, [url] = received_links(server)
    text = mail.get_body(preferencelist=("plain",)).get_content().replace("\r\n", "\n")
    assert "Large attachments available for download:\n  - data.csv (0.0 MB): " + url in text
    assert "Links expire after 7 days" in text
    assert list(mail.iter_attachments()) == []


def test_a_30_mb_upload_is_sent_as_a_link_that_works_then_expires(
    delivery: Delivery, server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(delivery, max_size_mb=10, action="rewrite", file_ttl_days=1)
    content = b"0123456789abcdef" * (30 * MB // 16)
    reference = upload(delivery.api, delivery.key, content)
    assert reference["storage_path"].startswith("upload:")
    delivery.submit(message("m-1", attachments=[reference]))
    delivery.pump()

    assert status(delivery, "m-1")["status"] == "sent"
    mail, [url] = received_links(server)
    assert "big.bin (30.0 MB)" in mail.get_body(preferencelist=("plain",)).get_content()
    assert len(server.handler.received[0].content) < 100_000  # the file is not in the email
    code, got, _ = download(delivery.api, url)
    assert code == 200 and got == content

    later = clock.now_ts() + 86400 + 1
    monkeypatch.setattr(clock, "now_ts", lambda: later)
    code, page, headers = download(delivery.api, url)
    assert code == 410
    assert b"Link expired" in page and b"big.bin" in page
    assert headers["content-type"].startswith("text/html")


def test_downloads_are_counted(delivery: Delivery, server: RunningServer, api: TestClient) -> None:
    configure(delivery, max_size_mb=0.01, action="rewrite")
    delivery.submit(message("m-1", attachments=[inline("a.bin", b"z" * 30_000)]))
    delivery.pump()
    _, [url] = received_links(server)
    for _ in range(2):
        assert download(api, url)[0] == 200

    from mailproxy import metrics

    assert f'gmp_large_file_downloads_total{{tenant_id="{delivery.tenant_id}"}} 2.0' in metrics.render().decode()


def test_lifespan_after_download_shortens_the_link(
    delivery: Delivery, server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(delivery, max_size_mb=0.01, action="rewrite", file_ttl_days=30, lifespan_after_download_days=1)
    delivery.submit(message("m-1", attachments=[inline("a.bin", b"z" * 30_000)]))
    delivery.pump()
    _, [url] = received_links(server)
    start = clock.now_ts()
    monkeypatch.setattr(clock, "now_ts", lambda: start + 5 * 86400)  # unopened, still valid after 5 days
    assert download(delivery.api, url)[0] == 200
    monkeypatch.setattr(clock, "now_ts", lambda: start + 5 * 86400 + 3600)
    assert download(delivery.api, url)[0] == 200
    monkeypatch.setattr(clock, "now_ts", lambda: start + 6 * 86400 + 1)  # a day after the first download
    assert download(delivery.api, url)[0] == 410


def test_forged_or_altered_tokens_are_refused(delivery: Delivery, server: RunningServer) -> None:
    configure(delivery, max_size_mb=0.01, action="rewrite")
    delivery.submit(message("m-1", attachments=[inline("a.bin", b"z" * 30_000)]))
    delivery.pump()
    _, [url] = received_links(server)
    version, tenant_id, claims, mac = url.rsplit("/", 1)[1].split(".")

    decoded = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
    for change in ({"t": "other-tenant", "k": decoded["k"].replace(delivery.tenant_id, "other-tenant")}, {"e": 2**40}):
        altered = base64.urlsafe_b64encode(json.dumps({**decoded, **change}).encode()).rstrip(b"=").decode()
        code, page, _ = download(delivery.api, f"{BASE}/large-files/{version}.{tenant_id}.{altered}.{mac}")
        assert code == 403 and b"Link not valid" in page
    assert download(delivery.api, f"{BASE}/large-files/{version}.other-tenant.{claims}.{mac}")[0] == 403
    assert download(delivery.api, f"{BASE}/large-files/{version}.{tenant_id}.{claims}.{mac[:-2]}AA")[0] == 403
    assert download(delivery.api, f"{BASE}/large-files/not-a-token")[0] == 403


def test_another_tenants_upload_cannot_be_attached(
    delivery: Delivery, server: RunningServer, api: TestClient, admin: dict[str, str]
) -> None:
    reply = api.post("/tenant", json={"id": "rival", "name": "Rival"}, headers=admin)
    rival = {"X-API-Token": reply.json()["api_key"]}
    reference = upload(api, rival, b"rival's secret file")
    delivery.submit(message("m-1", attachments=[{**reference, "filename": "stolen.txt"}]))
    delivery.pump()

    record = status(delivery, "m-1")
    assert record["status"] == "error"
    assert record["error"].startswith("Attachment fetch failed for stolen.txt: upload not found")
    assert server.handler.received == []


def test_an_upload_too_big_for_any_email_fails_the_message_without_being_read(
    delivery: Delivery, server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mailproxy.settings import get_settings
    from mailproxy.stores import stores

    reference = upload(delivery.api, delivery.key, b"x" * 30_000)  # no large_file_config: sent as it is
    monkeypatch.setenv("GMP_MAX_MESSAGE_BYTES", "20000")
    get_settings.cache_clear()
    read: list[str] = []
    real_read = stores().large_files.read
    monkeypatch.setattr(stores().large_files, "read", lambda key, **kw: read.append(key) or real_read(key, **kw))
    delivery.submit(message("m-1", attachments=[reference]))
    delivery.pump()

    record = status(delivery, "m-1")
    assert record["status"] == "error"
    assert record["error"].startswith("message too large: ") and record["error"].endswith(" bytes (limit 20000)")
    # A 100 MB upload read whole into the sender's memory, to be refused once encoded, can end its process.
    assert read == []
    assert server.handler.received == []


def test_an_upload_under_the_limit_is_attached(delivery: Delivery, server: RunningServer) -> None:
    configure(delivery, max_size_mb=10, action="rewrite")
    reference = upload(delivery.api, delivery.key, b"%PDF small", filename="small.pdf")
    delivery.submit(message("m-1", attachments=[reference]))
    delivery.pump()

    [part] = list(parsed(server.handler.received[0].content).iter_attachments())
    assert (part.get_filename(), part.get_content_type(), part.get_content()) == (
        "small.pdf",
        "application/pdf",
        b"%PDF small",
    )


def test_a_retry_reuses_the_stored_file(delivery: Delivery, server: RunningServer, monkeypatch: Any) -> None:
    configure(delivery, max_size_mb=0.01, action="rewrite")
    from mailproxy.stores import stores

    files = stores().large_files
    stored: list[str] = []
    write, copy = files.write, files.copy

    def counted_write(key: str, chunks: Any) -> int:
        stored.append(key)
        return write(key, chunks)

    def counted_copy(source: str, target: str) -> None:
        stored.append(target)
        copy(source, target)

    monkeypatch.setattr(files, "write", counted_write)
    monkeypatch.setattr(files, "copy", counted_copy)
    monkeypatch.setenv("GMP_RETRY_DELAYS", "0")
    from mailproxy.settings import get_settings

    get_settings.cache_clear()
    reference = upload(delivery.api, delivery.key, b"u" * 40_000)
    stored.clear()
    delivery.submit(message("m-1", to="flaky451@example.test", attachments=[inline("a.bin", b"z" * 30_000), reference]))
    delivery.pump()
    delivery.scheduler()
    delivery.pump()

    assert status(delivery, "m-1")["status"] == "sent"
    assert len(stored) == 2  # one per file, although the message was built twice
    _, found = received_links(server)
    assert len(found) == 2


def test_an_upload_past_its_size_limit_is_refused(
    delivery: Delivery, api: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mailproxy.settings import get_large_file_settings

    monkeypatch.setenv("GMP_LARGE_FILE_UPLOAD_MAX_BYTES", "1000")
    get_large_file_settings.cache_clear()
    reply = api.post("/large-files", json={"size": 2000}, headers=delivery.key)
    assert reply.status_code == 400
    form = api.post("/large-files", json={}, headers=delivery.key).json()["upload"]
    if form["url"].startswith(BASE):
        sent = api.post(form["url"][len(BASE) :], data=form["fields"], files={"file": ("x", b"x" * 2000)})
        assert sent.status_code == 413
        forged = {"token": form["fields"]["token"][:-3] + "AAA"}
        assert api.post(form["url"][len(BASE) :], data=forged, files={"file": ("x", b"x")}).status_code == 403
    else:
        # S3 enforces the policy (moto does not): its conditions are the limit and the one key of the upload.
        policy = json.loads(base64.b64decode(form["fields"]["policy"]))
        assert ["content-length-range", 1, 1000] in policy["conditions"]
        assert {"key": f"uploads/{delivery.tenant_id}/{form['fields']['key'].rsplit('/', 1)[1]}"} in policy[
            "conditions"
        ]


@pytest.mark.sqlite_only("the one-machine runtime's own upload route (S3 takes the form on AWS)")
def test_the_local_upload_route_holds_one_file_within_its_limit_and_bounded_fields(
    delivery: Delivery, api: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mailproxy.settings import get_large_file_settings
    from mailproxy.stores import stores

    monkeypatch.setenv("GMP_LARGE_FILE_UPLOAD_MAX_BYTES", "1000")
    get_large_file_settings.cache_clear()
    created = api.post("/large-files", json={}, headers=delivery.key).json()
    url, token = created["upload"]["url"][len(BASE) :], created["upload"]["fields"]["token"]
    key = f"uploads/{delivery.tenant_id}/{created['upload_id']}"

    def form(*parts: tuple[str, bytes]) -> Any:
        body = b"".join(
            b'--B\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n' % (name.encode(), value)
            for name, value in parts
        )
        return api.post(url, content=body + b"--B--\r\n", headers={"content-type": "multipart/form-data; boundary=B"})

    # Three files of 900 bytes under a limit of 1000: not one upload of 2700 bytes.
    sent = form(("token", token.encode()), *[("file", b"y" * 900)] * 3)
    assert sent.status_code == 400, sent.text
    assert stores().large_files.size(key) is None
    # Text fields are held in memory and this route takes no API token: their total is bounded, not only each.
    sent = form(*[(f"f{n}", b"z" * 16_000) for n in range(100)], ("token", token.encode()), ("file", b"y"))
    assert sent.status_code == 400, sent.text
    assert stores().large_files.size(key) is None
    assert form(("token", token.encode()), ("file", b"y" * 900)).status_code == 204
    assert stores().large_files.size(key) == 900


def test_the_config_is_checked(delivery: Delivery) -> None:
    for bad in ({"action": "drop"}, {"max_size_mb": -1}, {"file_ttl_days": 400}, {"public_base_url": "ftp://x"}):
        reply = delivery.api.put(f"/tenant/{delivery.tenant_id}", json={"large_file_config": bad}, headers=delivery.key)
        assert reply.status_code == 422, bad


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _signed(tenant_id: str, body: bytes) -> str:
    """A token whose claims segment is `body`, MAC'd with the deployment's real key: what only a holder of the
    signing material could make, so the route must not trust it to be well-formed either."""
    import hashlib
    import hmac

    from mailproxy import large_files

    signed = f"{large_files.TOKEN_VERSION}.{tenant_id}.{_b64(body)}"
    mac = hmac.new(large_files._tenant_key(tenant_id), signed.encode("ascii"), hashlib.sha256).digest()
    return f"{signed}.{_b64(mac)}"


DEEP = b"[" * 3000  # json.loads recurses past Python's limit on this (RecursionError)


def _claims(tenant_id: str, kind: str) -> dict[str, Any]:
    key = f"files/30d/{tenant_id}/{'a' * 40}" if kind == "d" else f"uploads/{tenant_id}/{'a' * 24}"
    return {"v": kind, "t": tenant_id, "k": key, "n": "a.bin", "m": "text/plain" if kind == "d" else 1000, "i": "x"}


def forged_tokens(tenant_id: str, kind: str) -> list[str]:
    """Tokens anyone can make that decode badly: each must be a 403, never a 500."""
    deep, claims = DEEP, _claims(tenant_id, kind)
    return [
        f"v1.{_b64(deep)}.AAAA",  # the reviewer's: under the 4096 limit, decoded before any MAC check
        f"v2.{tenant_id}.{_b64(deep)}.AAAA",
        f"v2.{tenant_id}.@@@@.AAAA",  # not base64url
        f"v2.{tenant_id}.A.AAAA",  # impossible base64 length
        f"v2.{tenant_id}.{_b64(b'{}')}.A",
        f"v2.{tenant_id}.{_b64(json.dumps({**claims, 'e': 10**1000}).encode())}.AAAA",
        f"v2.{_b64(b'x' * 30)}.{_b64(b'{}')}.AAAA",  # not a tenant id
        f"v2..{_b64(b'{}')}.AAAA",
    ]


def malformed_tokens(tenant_id: str, kind: str) -> list[str]:
    """Forged tokens, and tokens MAC'd with the real key whose claims are not what the service signs."""
    deep, claims = DEEP, _claims(tenant_id, kind)
    return [
        *forged_tokens(tenant_id, kind),
        _signed(tenant_id, deep),
        _signed(tenant_id, b"\xff\xfe not utf-8"),
        _signed(tenant_id, b"[1, 2]"),  # JSON, not an object
        _signed(tenant_id, b'"text"'),
        _signed(tenant_id, json.dumps({**claims, "e": 10**300, "l": 86400}).encode()),  # huge numbers
        _signed(tenant_id, json.dumps({**claims, "e": 1e308 * 10}).encode()),  # Infinity
        _signed(tenant_id, json.dumps({**claims, "e": clock.now_ts() + 3600, "l": 10**300}).encode()),
        _signed(tenant_id, json.dumps({**claims, "e": clock.now_ts() + 3600, "t": "rival"}).encode()),
        _signed(tenant_id, json.dumps({**claims, "e": clock.now_ts() + 3600, "c": "yesterday"}).encode()),
        _signed(tenant_id, json.dumps({**claims, "e": clock.now_ts() + 3600, "c": 10**300}).encode()),
        _signed(tenant_id, json.dumps({**claims, "e": clock.now_ts() + 3600, "g": 7}).encode()),
    ]


def test_malformed_download_tokens_answer_the_not_valid_page(delivery: Delivery) -> None:
    for token in malformed_tokens(delivery.tenant_id, "d"):
        code, page, headers = download(delivery.api, f"{BASE}/large-files/{token}")
        assert code == 403, (token[:80], code, page[:300])
        assert b"Link not valid" in page and headers["content-type"].startswith("text/html")


def test_malformed_upload_tokens_are_refused_by_the_receive_route(storage: Storage, delivery: Delivery) -> None:
    tokens = malformed_tokens(delivery.tenant_id, "u")
    if isinstance(storage, dict):
        # AWS uploads go to S3: the route is the one-machine runtime's alone, and answers before any token is read.
        sent = delivery.api.post("/large-files/receive", data={"token": tokens[0]}, files={"file": ("x", b"x")})
        assert sent.status_code == 404, sent.text
        return
    for token in tokens:
        sent = delivery.api.post("/large-files/receive", data={"token": token}, files={"file": ("x", b"x")})
        assert sent.status_code == 403, (token[:80], sent.text)


def test_a_deleted_tenants_links_are_gone_and_count_nothing(
    storage: Storage, delivery: Delivery, server: RunningServer, api: TestClient, admin: dict[str, str]
) -> None:
    from mailproxy import metrics

    configure(delivery, max_size_mb=0.01, action="rewrite", lifespan_after_download_days=1)
    delivery.submit(message("m-1", attachments=[inline("a.bin", b"z" * 30_000)]))
    delivery.pump()
    _, [url] = received_links(server)
    assert download(api, url)[0] == 200
    counted = f'gmp_large_file_downloads_total{{tenant_id="{delivery.tenant_id}"}}'
    before = [line for line in metrics.render().decode().splitlines() if line.startswith(counted)]

    assert api.delete(f"/tenant/{delivery.tenant_id}", headers=admin).status_code == 200
    after_deletion = [line for line in metrics.render().decode().splitlines() if line.startswith(counted)]
    for _ in range(2):
        code, page, headers = download(api, url)
        assert code == 410
        assert b"no longer available" in page and b"a.bin" in page
        assert headers["content-type"].startswith("text/html")
    now = [line for line in metrics.render().decode().splitlines() if line.startswith(counted)]
    assert now == after_deletion and len(before) == 1  # no download of a deleted tenant is counted
    if not isinstance(storage, dict):  # one machine: the tenant's stored files went with it
        files = [p for p in (Path(storage.data_dir) / "large-files").rglob("*") if p.is_file()]
        assert not [p for p in files if delivery.tenant_id in p.parts]


@pytest.mark.parametrize("gap", [60, 0], ids=["a-minute-later", "within-the-same-second"])
def test_a_deleted_tenants_link_stays_withdrawn_when_its_id_is_taken_again(
    delivery: Delivery,
    server: RunningServer,
    api: TestClient,
    admin: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    gap: int,
) -> None:
    # The link key is made from the tenant's id: a new tenant of the same id must not serve the old one's file,
    # which on AWS stays in the bucket until the lifecycle rules remove it; not even one made in the second the
    # link was issued (the issue time alone could not tell them apart).
    issued = clock.now_ts()
    monkeypatch.setattr(clock, "now_ts", lambda: issued)
    configure(delivery, max_size_mb=0.01, action="rewrite")
    delivery.submit(message("m-1", attachments=[inline("old.bin", b"z" * 30_000)]))
    delivery.pump()
    _, [url] = received_links(server)
    assert download(api, url)[0] == 200

    assert api.delete(f"/tenant/{delivery.tenant_id}", headers=admin).status_code == 200
    monkeypatch.setattr(clock, "now_ts", lambda: issued + gap)
    again = api.post("/tenant", json={"id": delivery.tenant_id, "name": "Someone else"}, headers=admin)
    assert again.status_code == 200, again.text
    code, page, _ = download(api, url)
    assert code == 410
    assert b"withdrawn" in page and b"old.bin" in page


def test_a_link_issued_before_links_named_their_tenant_is_withdrawn_by_its_issue_time(
    delivery: Delivery, server: RunningServer, api: TestClient, admin: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Links issued on 2026-12-04, before tenants had an incarnation, carry only their issue time (`c`): theirs
    # still serves its tenant, and is withdrawn once a tenant is created again under the id after it.
    configure(delivery, max_size_mb=0.01, action="rewrite")
    delivery.submit(message("m-1", attachments=[inline("old.bin", b"z" * 30_000)]))
    delivery.pump()
    _, [url] = received_links(server)
    tenant_id, body = url.rsplit("/", 1)[1].split(".")[1:3]
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    assert claims.pop("g")  # what a link names now
    earlier = f"{BASE}/large-files/{_signed(tenant_id, json.dumps(claims).encode())}"
    assert download(api, earlier)[0] == 200

    assert api.delete(f"/tenant/{delivery.tenant_id}", headers=admin).status_code == 200
    later = clock.now_ts() + 60
    monkeypatch.setattr(clock, "now_ts", lambda: later)
    assert api.post("/tenant", json={"id": delivery.tenant_id}, headers=admin).status_code == 200
    code, page, _ = download(api, earlier)
    assert code == 410 and b"withdrawn" in page
