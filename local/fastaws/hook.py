"""Serving boto3 calls from the fast backend in-process, by short-circuiting botocore's client call.

A boto3 call normally validates its parameters against the service model, resolves the endpoint,
serialises the request, signs it, sends it and parses the reply: about 0.6 ms of CPU per call, more
than the emulated operation itself. For a client of DynamoDB, DynamoDB Streams or SQS whose endpoint
has a registered backend, `_make_api_call` instead runs the client's parameter events (so handlers that
fill parameters, like idempotency tokens, still run), checks the parameter names against the model,
and hands the parameters to the backend; its reply (already in botocore's parsed shape) or its error
(as the modeled exception class, a `ClientError`) is what the caller gets. Every other client, service
and endpoint goes through botocore untouched (moto keeps KMS, S3, Secrets Manager...).

Which backend answers depends on the client's endpoint: a stack registers the endpoint of its moto
server, the in-process test emulator registers AWS's own endpoints.
"""

from __future__ import annotations

import functools
import logging
import threading
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from local.fastaws.dynamodb import DynamoDB
from local.fastaws.errors import ServiceError
from local.fastaws.sqs import Sqs

logger = logging.getLogger(__name__)

AWS_ENDPOINTS = "aws"
_SERVICES = ("dynamodb", "dynamodbstreams", "sqs")


class FastAws:
    """The emulated DynamoDB, DynamoDB Streams and SQS of one account."""

    def __init__(self, region: str, account_id: str, endpoint_url: str = "") -> None:
        self.region = region
        self.account_id = account_id
        self.dynamodb = DynamoDB(region, account_id)
        self.sqs = Sqs(region, account_id, endpoint_url or f"https://sqs.{region}.amazonaws.com")

    def handle(self, service: str, operation: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """One call's reply (raises ServiceError for an AWS error)."""
        if service == "sqs":
            return self.sqs.handle(operation, params)
        return self.dynamodb.handle(operation, params)


_backends: dict[str, FastAws] = {}
_lock = threading.Lock()
_installed = False


@functools.lru_cache(maxsize=256)
def endpoint_key(url: str) -> str:
    """The registry key of an endpoint URL: scheme and host:port, or AWS_ENDPOINTS for AWS's own."""
    parts = urlsplit(url)
    if parts.hostname and parts.hostname.endswith(("amazonaws.com", "amazonaws.com.cn")):
        return AWS_ENDPOINTS
    return f"{parts.scheme}://{parts.netloc}"


def register(backend: FastAws, endpoint_url: str | None) -> None:
    """Answer calls to `endpoint_url` (None: AWS's own endpoints) from `backend`."""
    install()
    with _lock:
        _backends[endpoint_key(endpoint_url) if endpoint_url else AWS_ENDPOINTS] = backend


def unregister(endpoint_url: str | None) -> None:
    """Stop answering calls to `endpoint_url`."""
    with _lock:
        _backends.pop(endpoint_key(endpoint_url) if endpoint_url else AWS_ENDPOINTS, None)


def install() -> None:
    """Route the calls of DynamoDB, DynamoDB Streams and SQS clients to a registered backend (idempotent)."""
    global _installed
    with _lock:
        if _installed:
            return
        from botocore.client import BaseClient

        # A private method of botocore (pinned in requirements-dev.txt): the one place every call goes through.
        original = getattr(BaseClient, "_make_api_call")  # noqa: B009

        def _make_api_call(client: Any, operation_name: str, api_params: dict[str, Any]) -> Any:
            backend = _backend_of(client)
            if backend is None:
                return original(client, operation_name, api_params)
            return _call(client, backend, operation_name, api_params)

        setattr(BaseClient, "_make_api_call", _make_api_call)  # noqa: B010
        _installed = True


def _backend_of(client: Any) -> FastAws | None:
    if not _backends:
        return None
    meta = client.meta
    if meta.service_model.service_name not in _SERVICES:
        return None
    return _backends.get(endpoint_key(str(meta.endpoint_url)))


def _call(client: Any, backend: FastAws, operation_name: str, api_params: dict[str, Any]) -> dict[str, Any]:
    from botocore.exceptions import ParamValidationError

    operation = client.meta.service_model.operation_model(operation_name)
    context: dict[str, Any] = {"client_region": client.meta.region_name, "client_config": client.meta.config}
    params = client._emit_api_params(api_params=api_params, operation_model=operation, context=context)
    problems = _parameter_problems(operation, params)
    if problems:
        raise ParamValidationError(report="\n".join(problems))
    metadata = {"RequestId": str(uuid.uuid4()), "HTTPStatusCode": 200, "HTTPHeaders": {}, "RetryAttempts": 0}
    try:
        reply = backend.handle(operation.service_model.service_name, operation_name, params)
    except ServiceError as exc:
        metadata["HTTPStatusCode"] = exc.status
        error: dict[str, Any] = {"Error": {"Code": exc.code, "Message": exc.message}, "ResponseMetadata": metadata}
        error.update(exc.extra)
        raise client.exceptions.from_code(exc.code)(error, operation_name) from None
    reply["ResponseMetadata"] = metadata
    return reply


def _parameter_problems(operation: Any, params: Mapping[str, Any]) -> list[str]:
    """botocore's checks of the top-level parameters: unknown names and missing required ones.

    The values are checked by the backend as the service checks them (attribute values, sizes, ranges);
    botocore's full type walk of every nested value costs more than the operation.
    """
    shape = operation.input_shape
    if shape is None:
        return [f'Unknown parameter in input: "{name}"' for name in params]
    members = shape.members
    problems = [
        f'Unknown parameter in input: "{name}", must be one of: {", ".join(members)}'
        for name in params
        if name not in members
    ]
    problems += [
        f'Missing required parameter in input: "{name}"' for name in shape.required_members if name not in params
    ]
    return problems
