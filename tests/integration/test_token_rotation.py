"""The admin token's rotation function, step by step on moto's Secrets Manager, and what the API then accepts."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from mailproxy.rotation import ALPHABET, STEPS, RotationError, rotate

from tests.conftest import AwsEnv

FIRST = "A" * 43


class RotatingSecretsManager:
    """moto's Secrets Manager as a rotation function sees it during a rotation.

    Before calling createSecret, AWS makes the new version (the `ClientRequestToken`) labelled AWSPENDING and
    without a value; moto cannot hold a version without a value, so `describe_secret` adds it here, until the
    function writes it. Every other call goes to moto unchanged.
    """

    def __init__(self, client: Any, version: str) -> None:
        self.client = client
        self.version = version

    def describe_secret(self, SecretId: str) -> dict[str, Any]:
        described: dict[str, Any] = self.client.describe_secret(SecretId=SecretId)
        described["RotationEnabled"] = True
        described.setdefault("VersionIdsToStages", {}).setdefault(self.version, ["AWSPENDING"])
        return described

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


@pytest.fixture
def secret(aws_env: AwsEnv) -> str:
    arn: str = aws_env.client("secretsmanager").create_secret(Name="admin-token", SecretString=FIRST)["ARN"]
    return arn


def current_token(client: Any, arn: str) -> str:
    """AWSCURRENT named: moto 5.2 answers its old default version to a call without a stage after a rotation."""
    token: str = client.get_secret_value(SecretId=arn, VersionStage="AWSCURRENT")["SecretString"]
    return token


def run(manager: Any, arn: str, version: str, *steps: str) -> None:
    for step in steps:
        rotate({"SecretId": arn, "ClientRequestToken": version, "Step": step}, manager)


def test_the_four_steps_replace_the_token_with_a_new_random_one(aws_env: AwsEnv, secret: str) -> None:
    client = aws_env.client("secretsmanager")
    version = str(uuid.uuid4())
    manager = RotatingSecretsManager(client, version)

    run(manager, secret, version, "createSecret", "createSecret")  # a retried step creates nothing more
    pending = client.get_secret_value(SecretId=secret, VersionId=version, VersionStage="AWSPENDING")["SecretString"]
    assert current_token(client, secret) == FIRST  # not current before finishSecret
    run(manager, secret, version, "setSecret", "testSecret", "finishSecret")

    current = current_token(client, secret)
    assert current == pending != FIRST
    assert len(current) == 43 and set(current) <= set(ALPHABET)
    assert client.get_secret_value(SecretId=secret, VersionStage="AWSPREVIOUS")["SecretString"] == FIRST
    run(manager, secret, version, *STEPS)  # retried after the end: nothing changes
    assert current_token(client, secret) == current


def test_two_rotations_never_give_the_same_token(aws_env: AwsEnv, secret: str) -> None:
    client = aws_env.client("secretsmanager")
    tokens = set()
    for _ in range(2):
        version = str(uuid.uuid4())
        run(RotatingSecretsManager(client, version), secret, version, *STEPS)
        tokens.add(current_token(client, secret))
    assert len(tokens) == 2 and FIRST not in tokens


def test_a_version_that_is_not_pending_or_a_secret_without_rotation_is_refused(aws_env: AwsEnv, secret: str) -> None:
    client = aws_env.client("secretsmanager")
    with pytest.raises(RotationError, match="rotation is not enabled"):
        run(client, secret, str(uuid.uuid4()), "createSecret")
    manager = RotatingSecretsManager(client, str(uuid.uuid4()))
    with pytest.raises(RotationError, match="is not a version"):
        run(manager, secret, str(uuid.uuid4()), "createSecret")
    with pytest.raises(RotationError, match="unknown step"):
        run(manager, secret, manager.version, "dropSecret")


def test_after_a_rotation_the_api_takes_the_new_admin_token_and_refuses_the_old(
    api: TestClient, aws_env: AwsEnv, secret: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mailproxy import secret_cache
    from mailproxy.settings import get_settings

    monkeypatch.setenv("ADMIN_TOKEN_SECRET_ARN", secret)
    monkeypatch.delenv("GMP_API_TOKEN")
    get_settings.cache_clear()
    assert api.get("/tenants", headers={"X-API-Token": FIRST}).status_code == 200

    client = aws_env.client("secretsmanager")
    version = str(uuid.uuid4())
    run(RotatingSecretsManager(client, version), secret, version, *STEPS)
    new = current_token(client, secret)
    later = secret_cache.time.monotonic() + 11
    monkeypatch.setattr(secret_cache.time, "monotonic", lambda: later)

    assert api.get("/tenants", headers={"X-API-Token": new}).status_code == 200
    assert api.get("/tenants", headers={"X-API-Token": FIRST}).status_code == 401
