"""Serving boto3 calls from the fast backend in-process, through botocore's event hooks.

`before-parameter-build` keeps the call's parameters (already validated by botocore's model), and
`before-call` answers with the backend's reply instead of sending an HTTP request, as moto's own mock
does one step later. Which backend answers depends on the client's endpoint: a stack registers the
endpoint of its moto server (KMS, S3... still go there), the in-process test emulator registers AWS's
own endpoints. A client whose endpoint has no backend is not touched.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from local.fastaws.dynamodb import DynamoDB
from local.fastaws.errors import ServiceError
from local.fastaws.sqs import Sqs

logger = logging.getLogger(__name__)

AWS_ENDPOINTS = "aws"
_PARAMS_KEY = "fastaws_params"
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


@dataclass
class _Response:
    """The little of an HTTP response botocore looks at after a `before-call` answer."""

    status_code: int
    headers: dict[str, str] = field(default_factory=dict)
    content: bytes = b""
    text: str = ""


_backends: dict[str, FastAws] = {}
_lock = threading.Lock()
_installed = False


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
    """Add the hooks to botocore's built-in handlers, so every session created from now on has them."""
    global _installed
    if _installed:
        return
    from botocore import handlers

    handlers.BUILTIN_HANDLERS.append(("before-parameter-build", _keep_params))
    handlers.BUILTIN_HANDLERS.append(("before-call", _answer))
    _installed = True


def _keep_params(params: dict[str, Any], model: Any, context: dict[str, Any] | None = None, **_: Any) -> None:
    if context is not None and model.service_model.service_name in _SERVICES and _backends:
        context[_PARAMS_KEY] = params


def _answer(
    model: Any, params: Mapping[str, Any], context: dict[str, Any] | None = None, **_: Any
) -> tuple[_Response, dict[str, Any]] | None:
    if context is None or _PARAMS_KEY not in context:
        return None
    backend = _backends.get(endpoint_key(str(params.get("url", ""))))
    if backend is None:
        return None
    service = model.service_model.service_name
    request_id = str(uuid.uuid4())
    metadata = {"RequestId": request_id, "HTTPStatusCode": 200, "HTTPHeaders": {}, "RetryAttempts": 0}
    try:
        reply = backend.handle(service, model.name, context.pop(_PARAMS_KEY))
    except ServiceError as exc:
        metadata["HTTPStatusCode"] = exc.status
        error = {
            "Error": {"Code": exc.code, "Message": exc.message},
            "ResponseMetadata": metadata,
            "message": exc.message,
        }
        error.update(exc.extra)
        return _Response(exc.status), error
    reply["ResponseMetadata"] = metadata
    return _Response(200), reply
