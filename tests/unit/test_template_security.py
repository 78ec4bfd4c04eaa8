"""Secure defaults of template.yaml, evaluated with the local stack's resolver under several parameter sets."""

from __future__ import annotations

from typing import Any

import pytest

from local.template import PhysicalResource, Resolver, Template

TEMPLATE = Template.load()


class _AnyAttribute(dict[str, str]):
    """Every attribute of a fake resource: `<LogicalId>.<Attribute>`, or the given ones."""

    def __init__(self, logical_id: str, **given: str) -> None:
        super().__init__(given)
        self.logical_id = logical_id

    def __contains__(self, key: object) -> bool:
        return True

    def __missing__(self, key: str) -> str:
        return f"{self.logical_id}.{key}"


FAKE = {
    logical_id: PhysicalResource(logical_id, str(resource.get("Type")), logical_id, _AnyAttribute(logical_id))
    for logical_id, resource in TEMPLATE.resources.items()
}
FAKE["MetricsTokenSecret"] = PhysicalResource(
    "MetricsTokenSecret", "AWS::SecretsManager::Secret", "arn:aws:secretsmanager:r:1:secret:metrics", {}
)
FAKE["AttachmentReaderRole"] = PhysicalResource(
    "AttachmentReaderRole", "AWS::IAM::Role", "reader", {"Arn": "arn:aws:iam::1:role/reader"}
)


def resolver(**parameters: Any) -> Resolver:
    return Resolver(TEMPLATE, FAKE, parameter_overrides=parameters)


def function(logical_id: str, **parameters: Any) -> dict[str, Any]:
    """A function's resolved environment and policies under these parameters."""
    r = resolver(**parameters)
    properties = TEMPLATE.resources[logical_id]["Properties"]
    return {
        "env": r.resolve(properties.get("Environment", {}).get("Variables", {})),
        "policies": r.resolve(properties.get("Policies", [])),
    }


def metrics_secret_created(**parameters: Any) -> bool:
    return "MetricsTokenSecret" in TEMPLATE.resources_of_type("AWS::SecretsManager::Secret", resolver(**parameters))


def test_metrics_requires_a_generated_token_by_default() -> None:
    metrics = function("MetricsFunction")

    assert metrics_secret_created()
    assert metrics["env"] == {"METRICS_TOKEN_SECRET_ARN": "arn:aws:secretsmanager:r:1:secret:metrics"}
    assert "METRICS_TOKEN" not in metrics["env"]  # no plaintext token in the environment
    granted = [s for p in metrics["policies"] if "Statement" in p for s in p["Statement"]]
    assert {"Sid": "MetricsToken", "Effect": "Allow", "Action": "secretsmanager:GetSecretValue"}.items() <= next(
        s for s in granted if s.get("Sid") == "MetricsToken"
    ).items()
    assert TEMPLATE.data["Outputs"]["MetricsTokenSecretArn"]["Condition"] == "MetricsTokenRequired"
    assert "MetricsToken" not in TEMPLATE.parameters  # the plaintext parameter is gone


@pytest.mark.parametrize(
    ("parameters", "token"),
    [
        ({"MetricsPublic": "true"}, False),
        ({"MetricsAllowedCidrs": "203.0.113.0/24"}, False),
        # Without the WAF no allow-list is enforced: the token stays.
        ({"MetricsAllowedCidrs": "203.0.113.0/24", "EnableWaf": "false"}, True),
        ({"EnableWaf": "false"}, True),
    ],
)
def test_only_an_enforced_allow_list_or_an_explicit_opening_drops_the_token(
    parameters: dict[str, str], token: bool
) -> None:
    assert metrics_secret_created(**parameters) is token
    assert bool(function("MetricsFunction", **parameters)["env"]["METRICS_TOKEN_SECRET_ARN"]) is token


def test_the_sender_cannot_read_attachment_buckets_itself_only_assume_the_reader_role() -> None:
    sender = function("SenderFunction", AttachmentReadArns="arn:aws:s3:::tenant-files/*")
    statements = [s for p in sender["policies"] if "Statement" in p for s in p["Statement"]]

    assert {
        "Sid": "AssumeAttachmentReader",
        "Effect": "Allow",
        "Action": "sts:AssumeRole",
        "Resource": "arn:aws:iam::1:role/reader",
    } in statements
    assert not [s for s in statements if "tenant-files" in str(s.get("Resource"))]
    assert sender["env"]["ATTACHMENT_READER_ROLE_ARN"] == "arn:aws:iam::1:role/reader"
    assert sender["env"]["GMP_ATTACHMENT_S3_PREFIX"] == "{tenant_id}/"
    reader = resolver(AttachmentReadArns="arn:aws:s3:::tenant-files/*").resolve(
        TEMPLATE.resources["AttachmentReaderRole"]["Properties"]["Policies"]
    )
    assert reader[0]["PolicyDocument"]["Statement"] == [
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": ["arn:aws:s3:::tenant-files/*"]}
    ]


def test_the_admin_token_can_be_rotated_on_a_schedule_by_the_rotation_function() -> None:
    def rotation(**parameters: Any) -> dict[str, Any]:
        return TEMPLATE.resources_of_type("AWS::SecretsManager::RotationSchedule", resolver(**parameters))

    assert rotation() == {}  # off by default: rotating breaks clients that hold the token
    [(_, schedule)] = rotation(AdminTokenRotationDays="30").items()
    resolved = resolver(AdminTokenRotationDays="30").resolve(schedule)
    assert resolved["SecretId"] == "AdminTokenSecret"
    assert resolved["RotationLambdaARN"] == "TokenRotationFunction.Arn"
    assert resolved["RotationRules"] == {"AutomaticallyAfterDays": "30"}
    assert resolved["RotateImmediatelyOnUpdate"] is False
    [permission] = TEMPLATE.resources_of_type("AWS::Lambda::Permission", resolver(AdminTokenRotationDays="30")).values()
    assert resolver().resolve(permission)["SourceArn"] == "AdminTokenSecret"
    rotator = function("TokenRotationFunction")
    [statement] = rotator["policies"][0]["Statement"]
    assert statement["Resource"] == "AdminTokenSecret"  # it can touch the admin token's secret only
