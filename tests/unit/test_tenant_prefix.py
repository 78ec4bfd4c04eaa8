"""A tenant reads only its own files from the shared attachment buckets (no AWS: refused before any call)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from mailproxy.attachments import fetch_attachments
from mailproxy.errors import AttachmentError, ConfigurationError
from mailproxy.tenant_files import OutsideTenantFiles, session_policy, tenant_object, tenant_prefix


def fetch_as(tenant_id: str, storage_path: str) -> Any:
    spec = {"filename": "contract.pdf", "storage_path": storage_path, "fetch_mode": "s3"}
    return asyncio.run(fetch_attachments([spec], tenant={"id": tenant_id}, blocked_buckets=[]))


def test_a_key_under_the_tenants_prefix_is_its_file() -> None:
    assert tenant_object("s3://tenant-files/acme/2024/contract 1.pdf", "acme") == (
        "tenant-files",
        "acme/2024/contract 1.pdf",
    )


@pytest.mark.parametrize(
    "storage_path",
    [
        "s3://tenant-files/tenantB/contract.pdf",  # another tenant's file
        "s3://tenant-files/acme2/contract.pdf",  # a tenant whose id starts with ours
        "s3://tenant-files/acme",  # the prefix without its slash
        "s3://tenant-files/acme/",  # the prefix itself, no file
        "s3://tenant-files/acme/../tenantB/contract.pdf",
        "s3://tenant-files/acme/./x/../../tenantB/contract.pdf",
        "s3://tenant-files/acme//contract.pdf",
        "s3://tenant-files//acme/contract.pdf",
        "s3://tenant-files/acme/%2e%2e/tenantB/contract.pdf",  # dot segments once decoded
        "s3://tenant-files/acme/%2E%2E%2ftenantB%2fcontract.pdf",
        "s3://tenant-files/%61cme/contract.pdf",  # "acme" once decoded: not literally the prefix
        "s3://tenant-files/acme/contract.pdf\n",
        "s3://tenant-files/ACME/contract.pdf",  # keys are case-sensitive, and so are tenant ids
        "s3://user@tenant-files/acme/contract.pdf",  # not a bucket name
        "s3://tenant-files:443/acme/contract.pdf",
        "s3://*/acme/contract.pdf",
    ],
)
def test_anything_outside_the_tenants_prefix_is_refused(storage_path: str) -> None:
    with pytest.raises(OutsideTenantFiles):
        tenant_object(storage_path, "acme")


def test_the_refusal_is_an_attachment_error_that_names_no_other_tenants_data() -> None:
    with pytest.raises(AttachmentError) as caught:
        fetch_as("acme", "s3://tenant-files/tenantB/secret-plans.pdf")

    text = str(caught.value)
    assert text.startswith("Attachment fetch failed for contract.pdf: ")
    assert "tenantB" not in text and "secret-plans" not in text


def test_a_query_or_fragment_sign_is_part_of_the_key_not_a_way_around_the_check() -> None:
    assert tenant_object("s3://tenant-files/acme/a?b#c", "acme") == ("tenant-files", "acme/a?b#c")
    with pytest.raises(OutsideTenantFiles):
        tenant_object("s3://tenant-files/tenantB/x?/acme/y", "acme")


def test_the_operator_can_map_tenants_to_another_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GMP_ATTACHMENT_S3_PREFIX", "mail/{tenant_id}/outgoing/")

    assert tenant_prefix("acme") == "mail/acme/outgoing/"
    assert tenant_object("s3://files/mail/acme/outgoing/x.pdf", "acme") == ("files", "mail/acme/outgoing/x.pdf")
    with pytest.raises(OutsideTenantFiles):
        tenant_object("s3://files/acme/x.pdf", "acme")


@pytest.mark.parametrize(
    "template", ["{tenant_id}", "/{tenant_id}/", "files/", "{tenant_id}/*/", "a//{tenant_id}/", "../{tenant_id}/"]
)
def test_a_prefix_template_that_cannot_isolate_tenants_is_a_configuration_error(
    template: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GMP_ATTACHMENT_S3_PREFIX", template)

    with pytest.raises(ConfigurationError, match="GMP_ATTACHMENT_S3_PREFIX"):
        tenant_prefix("acme")


def test_the_session_policy_allows_only_the_tenants_prefix_of_that_bucket() -> None:
    assert session_policy("tenant-files", "acme", "aws-cn") == {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "TenantFiles",
                "Effect": "Allow",
                "Action": "s3:GetObject",
                "Resource": "arn:aws-cn:s3:::tenant-files/acme/*",
            }
        ],
    }


def test_an_s3_refusal_tells_the_tenant_its_code_not_the_role_account_or_key(monkeypatch: pytest.MonkeyPatch) -> None:
    from botocore.exceptions import ClientError

    class Refusing:
        def get_object(self, **_: Any) -> Any:
            raise ClientError(
                {
                    "Error": {
                        "Code": "AccessDenied",
                        "Message": "User: arn:aws:sts::123456789012:assumed-role/Reader/gmp-acme is not authorized "
                        'to perform: s3:GetObject on resource: "arn:aws:s3:::tenant-files/acme/x.pdf"',
                    }
                },
                "GetObject",
            )

    monkeypatch.setattr("mailproxy.tenant_files.tenant_s3", lambda tenant_id, bucket: Refusing())
    with pytest.raises(AttachmentError) as caught:
        fetch_as("acme", "s3://tenant-files/acme/x.pdf")

    assert str(caught.value) == "Attachment fetch failed for contract.pdf: S3 error: AccessDenied"
