"""Tenant isolation of attachments through the real handlers on moto: s3:// files and attachment credentials."""

from __future__ import annotations

import json
import threading
import time
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from fastapi.testclient import TestClient
from mailproxy import aws
from mailproxy.tenant_files import tenant_s3

from tests.conftest import AwsEnv
from tests.integration.delivery import Delivery, message, parsed
from tests.integration.smtp_servers import RunningServer

PDF = b"%PDF-1.7 acme's own contract"
ATTACHMENT_TOKEN = "attachment-bearer-9f3c1d77e2"
ATTACHMENT_PASSWORD = "attachment-basic-pw-51aa0c"


@pytest.fixture
def delivery(aws_env: AwsEnv, api: TestClient, admin: dict[str, str], server: RunningServer) -> Iterator[Delivery]:
    """Tenants acme and tenantB sharing the `tenant-files` bucket; acme has account smtp on the loopback server."""
    s3 = aws_env.client("s3")
    s3.create_bucket(Bucket="tenant-files")
    s3.put_object(Bucket="tenant-files", Key="acme/contract.pdf", Body=PDF)
    s3.put_object(Bucket="tenant-files", Key="tenantB/contract.pdf", Body=b"tenantB's confidential contract")
    s3.put_object(Bucket="tenant-files", Key="acme2/contract.pdf", Body=b"acme2's confidential contract")
    keys = {}
    for tenant_id in ("acme", "tenantB", "acme2"):
        reply = api.post("/tenant", json={"id": tenant_id, "name": tenant_id}, headers=admin)
        assert reply.status_code == 200, reply.text
        keys[tenant_id] = {"X-API-Token": reply.json()["api_key"]}
    body = {"id": "smtp", "host": "127.0.0.1", "port": server.port, "use_tls": False}
    assert api.post("/account", json=body, headers=keys["acme"]).status_code == 200
    tenant_s3.cache_clear()
    yield Delivery(aws_env, api, admin, "acme", keys["acme"])
    tenant_s3.cache_clear()


def s3_attachment(path: str) -> dict[str, Any]:
    return {"filename": "contract.pdf", "storage_path": path}


def test_a_tenant_mails_its_own_s3_file_but_never_another_tenants(delivery: Delivery, server: RunningServer) -> None:
    delivery.submit(
        message("own", attachments=[s3_attachment("s3://tenant-files/acme/contract.pdf")]),
        message("steal", attachments=[s3_attachment("s3://tenant-files/tenantB/contract.pdf")]),
        message("prefix", attachments=[s3_attachment("s3://tenant-files/acme2/contract.pdf")]),
        message("dots", attachments=[s3_attachment("s3://tenant-files/acme/../tenantB/contract.pdf")]),
        message("encoded", attachments=[s3_attachment("s3://tenant-files/acme/%2e%2e/tenantB/contract.pdf")]),
    )
    delivery.pump()

    records = delivery.records()
    assert records["own"]["status"] == "sent"
    for refused in ("steal", "prefix", "dots", "encoded"):
        assert records[refused]["status"] == "error"
        error = records[refused]["error"]
        assert error.startswith("Attachment fetch failed for contract.pdf: "), error
        assert "tenantB" not in error and "acme2" not in error, error
    [received] = server.handler.received
    [attachment] = parsed(received.content).iter_attachments()
    assert attachment.get_content() == PDF
    assert b"confidential" not in b"".join(m.content for m in server.handler.received)


def test_on_aws_each_tenant_reads_through_a_session_scoped_to_its_prefix(
    delivery: Delivery, server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    iam = delivery.env.client("iam")
    role = iam.create_role(RoleName="AttachmentReaderRole", AssumeRolePolicyDocument=json.dumps({"Statement": []}))
    monkeypatch.setenv("ATTACHMENT_READER_ROLE_ARN", role["Role"]["Arn"])
    assumed: list[dict[str, Any]] = []
    aws.client("sts").meta.events.register(
        "provide-client-params.sts.AssumeRole", lambda params, **_: assumed.append(dict(params))
    )

    delivery.submit(
        *(message(f"own-{n}", attachments=[s3_attachment("s3://tenant-files/acme/contract.pdf")]) for n in range(3))
    )
    delivery.pump()

    assert {r["status"] for r in delivery.records().values()} == {"sent"}
    # One session for the tenant, kept for the next messages: moto does not enforce the session policy,
    # so what is asserted is the policy sent, which AWS intersects with the role's own.
    [call] = assumed
    assert call["RoleArn"] == role["Role"]["Arn"]
    assert call["RoleSessionName"] == "gmp-acme"
    assert call["DurationSeconds"] == 900
    assert json.loads(call["Policy"]) == {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "TenantFiles",
                "Effect": "Allow",
                "Action": "s3:GetObject",
                "Resource": "arn:aws:s3:::tenant-files/acme/*",
            }
        ],
    }
    # The object was read with the assumed credentials, not the sender's own.
    scoped = tenant_s3("acme", "tenant-files")
    assert scoped is not aws.client("s3")
    assert scoped._request_signer._credentials.access_key != aws.client("s3")._request_signer._credentials.access_key


# ------------------------------------------------------------------ attachment credentials at rest


class _FileHandler(BaseHTTPRequestHandler):
    seen: list[str | None] = []

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        type(self).seen.append(self.headers.get("Authorization"))
        self.send_response(200)
        self.send_header("Content-Length", "5")
        self.end_headers()
        self.wfile.write(b"hello")


@pytest.fixture
def file_url() -> Iterator[str]:
    _FileHandler.seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _FileHandler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/report.pdf"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def credentialed(url: str) -> list[dict[str, Any]]:
    return [
        {"filename": "a.pdf", "storage_path": url, "auth": {"method": "bearer", "token": ATTACHMENT_TOKEN}},
        {
            "filename": "b.pdf",
            "storage_path": url,
            "auth": {"method": "basic", "user": "files", "password": ATTACHMENT_PASSWORD},
        },
    ]


def stored_text(env: AwsEnv) -> str:
    """Everything the service keeps about messages: queue bodies, S3 objects (decompressed) and tables."""
    texts = [json.dumps(body) for bodies in env.drain_all().values() for body in bodies]
    s3 = env.client("s3")
    for obj in s3.list_objects_v2(Bucket=env["PAYLOAD_BUCKET"]).get("Contents", []):
        texts.append(
            zlib.decompress(s3.get_object(Bucket=env["PAYLOAD_BUCKET"], Key=obj["Key"])["Body"].read()).decode()
        )
    for table in ("PAYLOADS_TABLE", "MESSAGES_TABLE"):
        for item in env.table_items(table):
            texts += [zlib.decompress(bytes(v)).decode() for v in item.values() if isinstance(v, bytes | bytearray)]
        texts.append(env.raw_table_dump(table))
    return "\n".join(texts)


def test_attachment_credentials_are_stored_only_encrypted(delivery: Delivery, file_url: str) -> None:
    # One goes on a queue at once (queue body + pack), one waits past 15 minutes (pinned in PayloadsTable).
    delivery.submit(
        message("now", attachments=credentialed(file_url)),
        message("later", attachments=credentialed(file_url), deferred_ts=int(time.time()) + 3600),
    )

    text = stored_text(delivery.env)
    assert "auth_enc" in text  # the payloads were read: the credentials are in them, sealed
    assert ATTACHMENT_TOKEN not in text
    assert ATTACHMENT_PASSWORD not in text


def test_sealed_attachment_credentials_still_reach_the_file_server(
    delivery: Delivery, server: RunningServer, file_url: str
) -> None:
    delivery.submit(message("m-1", attachments=credentialed(file_url)))
    delivery.pump()

    assert delivery.records()["m-1"]["status"] == "sent"
    assert sorted(_FileHandler.seen) == sorted(
        [f"Bearer {ATTACHMENT_TOKEN}", "Basic ZmlsZXM6YXR0YWNobWVudC1iYXNpYy1wdy01MWFhMGM="]
    )
    listed = delivery.api.get("/messages", headers=delivery.key).text
    assert "auth_enc" not in listed and ATTACHMENT_TOKEN not in listed
