"""Large files in the one-machine runtime over HTTP (issue 14): a 30 MB file uploaded through the runtime's own
upload route (past the 10 MB body limit of every other route, never buffered), sent as a link that the same
runtime serves, counted in /metrics."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from local.embedded import EmbeddedService
from tests.runtimes import running

TOKEN = "embedded-admin-token"
MB = 1024 * 1024
pytestmark = pytest.mark.e2e


@pytest.fixture
def service() -> Iterator[EmbeddedService]:
    with running("embedded", api_token=TOKEN, scheduler_interval=0.5, sender_workers=1) as started:
        yield started


def test_a_30_mb_upload_goes_out_as_a_link_the_runtime_serves(service: EmbeddedService) -> None:
    content = bytes(range(256)) * (30 * MB // 256)
    admin = {"X-API-Token": TOKEN}
    with httpx.Client(base_url=service.url, timeout=60) as http:
        config = {"enabled": True, "max_size_mb": 10, "action": "rewrite"}
        tenant = {"id": "acme", "name": "Acme", "large_file_config": config}
        key = {"X-API-Token": http.post("/tenant", json=tenant, headers=admin).json()["api_key"]}
        account = {"id": "sink", "host": "127.0.0.1", "port": service.smtp_sink_port}
        assert http.post("/account", json=account, headers=key).status_code == 200

        reply = http.post("/large-files", json={"filename": "video.mp4"}, headers=key).json()
        form = reply["upload"]
        assert form["url"] == f"{service.url}/large-files/receive"
        sent = httpx.post(form["url"], data=form["fields"], files={"file": ("video.mp4", content)}, timeout=60)
        assert sent.status_code == 204, sent.text

        message = {
            "id": "m-1",
            "account_id": "sink",
            "from": "a@acme.test",
            "to": "b@example.test",
            "subject": "The video",
            "body": "Here it is.",
            "attachments": [reply["attachment"]],
        }
        assert http.post("/commands/add-messages", json={"messages": [message]}, headers=key).json()["queued"] == 1

        assert service.smtp_sink is not None
        [mail] = service.smtp_sink.wait_for(1, timeout=30)
        body = mail.message.get_body(preferencelist=("plain",)).get_content()
        assert "Large attachments available for download" in body and "video.mp4 (30.0 MB)" in body
        [link] = re.findall(r"http://\S+/large-files/\S+", body)
        assert link.startswith(service.url)

        got = http.get(link[len(service.url) :])
        assert got.status_code == 200 and got.content == content
        assert "video.mp4" in got.headers["content-disposition"]
        assert http.get("/large-files/v1.e30.AAAA").status_code == 403
        assert 'gmp_large_file_downloads_total{tenant_id="acme"} 1.0' in http.get("/metrics").text


def test_malformed_tokens_are_refused_not_failed(service: EmbeddedService) -> None:
    from tests.integration.test_large_files import forged_tokens

    with httpx.Client(base_url=service.url, timeout=60) as http:
        for token in forged_tokens("acme", "d"):
            got = http.get(f"/large-files/{token}")
            assert got.status_code == 403 and "Link not valid" in got.text, (token[:80], got.status_code)
        for token in forged_tokens("acme", "u"):
            sent = http.post("/large-files/receive", data={"token": token}, files={"file": ("x", b"x")})
            assert sent.status_code == 403, (token[:80], sent.text)
