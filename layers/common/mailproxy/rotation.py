"""Rotation of a generated token secret (the admin token) by Secrets Manager's four-step protocol.

Secrets Manager calls the rotation function once per step with the same `ClientRequestToken` (the new
version's id): createSecret stores a new random token as AWSPENDING, setSecret has nothing to set (the
service reads the secret itself), testSecret checks the pending token, finishSecret moves AWSCURRENT to
it. Every step may be retried, so each is idempotent. Containers pick the new token up within
GMP_SECRET_MAX_AGE_SECONDS, or at once when a caller presents it (mailproxy.auth).
"""

from __future__ import annotations

import secrets
import string
from typing import Any

TOKEN_LENGTH = 43  # as the deploy generates it (GenerateSecretString, no punctuation)
ALPHABET = string.ascii_letters + string.digits
STEPS = ("createSecret", "setSecret", "testSecret", "finishSecret")


class RotationError(Exception):
    """The rotation cannot go on (Secrets Manager marks it failed and retries later)."""


def new_token() -> str:
    """A fresh token: 43 random letters and digits (about 256 bits)."""
    return "".join(secrets.choice(ALPHABET) for _ in range(TOKEN_LENGTH))


def rotate(event: dict[str, Any], manager: Any = None) -> None:
    """Run one step of the rotation Secrets Manager asks for (`SecretId`, `ClientRequestToken`, `Step`)."""
    if manager is None:
        from mailproxy.aws import client

        manager = client("secretsmanager")
    arn, version, step = event["SecretId"], event["ClientRequestToken"], event["Step"]
    if step not in STEPS:
        raise RotationError(f"unknown step {step!r}")
    described = manager.describe_secret(SecretId=arn)
    if not described.get("RotationEnabled"):
        raise RotationError(f"rotation is not enabled for {arn}")
    stages = described.get("VersionIdsToStages", {})
    if version not in stages:
        raise RotationError(f"version {version} is not a version of {arn}")
    if "AWSCURRENT" in stages[version]:
        return  # already finished (a retried call)
    if "AWSPENDING" not in stages[version]:
        raise RotationError(f"version {version} of {arn} is not pending")
    if step == "createSecret":
        _create(manager, arn, version)
    elif step == "testSecret":
        _test(manager, arn, version)
    elif step == "finishSecret":
        current = next(v for v, s in stages.items() if "AWSCURRENT" in s)
        manager.update_secret_version_stage(
            SecretId=arn, VersionStage="AWSCURRENT", MoveToVersionId=version, RemoveFromVersionId=current
        )
    # setSecret: no other system holds the token; the service reads the secret itself.


def _create(manager: Any, arn: str, version: str) -> None:
    manager.get_secret_value(SecretId=arn, VersionStage="AWSCURRENT")  # fails early if there is no current one
    try:
        manager.get_secret_value(SecretId=arn, VersionId=version, VersionStage="AWSPENDING")
        return  # created by an earlier try of this step
    except manager.exceptions.ResourceNotFoundException:
        pass
    manager.put_secret_value(
        SecretId=arn, ClientRequestToken=version, SecretString=new_token(), VersionStages=["AWSPENDING"]
    )


def _test(manager: Any, arn: str, version: str) -> None:
    pending = manager.get_secret_value(SecretId=arn, VersionId=version, VersionStage="AWSPENDING")
    token = str(pending.get("SecretString") or "")
    if len(token) != TOKEN_LENGTH or any(c not in ALPHABET for c in token):
        raise RotationError(f"the pending token of {arn} is not {TOKEN_LENGTH} letters and digits")
    current = manager.get_secret_value(SecretId=arn, VersionStage="AWSCURRENT")
    if current.get("SecretString") == token:
        raise RotationError(f"the pending token of {arn} is the current one")
