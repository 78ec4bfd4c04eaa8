"""The errors the emulated services answer with, as botocore clients see them (`ClientError` codes)."""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """An AWS error reply: its code, message, HTTP status and any extra top-level fields."""

    def __init__(self, code: str, message: str, *, status: int = 400, **extra: Any) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.extra = extra


class ValidationError(ServiceError):
    """DynamoDB's ValidationException."""

    def __init__(self, message: str) -> None:
        super().__init__("ValidationException", message)


class ConditionalCheckFailed(ServiceError):
    """A condition expression that did not hold; `item` is the old item when the caller asked for it."""

    def __init__(self, item: dict[str, Any] | None = None) -> None:
        extra: dict[str, Any] = {"Item": item} if item is not None else {}
        super().__init__("ConditionalCheckFailedException", "The conditional request failed", **extra)


class ResourceNotFound(ServiceError):
    """A table or stream that does not exist."""

    def __init__(self, message: str = "Requested resource not found") -> None:
        super().__init__("ResourceNotFoundException", message)


class NotEmulated(ServiceError):
    """An operation or parameter the local emulator does not play: a loud error rather than a wrong answer."""

    def __init__(self, what: str) -> None:
        super().__init__("NotImplementedLocally", f"{what} is not emulated by the local stack's fast backend")
