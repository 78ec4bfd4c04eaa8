"""Domain errors: the API maps them to status codes in one place, the sender to retry/defer/fail."""

from __future__ import annotations

from typing import Any


class MailProxyError(Exception):
    """Base of every error the package raises on purpose."""


class ConfigurationError(MailProxyError):
    """The function's environment is incomplete or malformed."""


class ApiError(MailProxyError):
    """An error with an HTTP status and a FastAPI-shaped `detail`."""

    status_code = 400

    def __init__(self, detail: Any) -> None:
        super().__init__(str(detail))
        self.detail = detail


class BadRequest(ApiError):
    """The request is well-formed but cannot be honoured (400)."""

    status_code = 400


class Unauthorized(ApiError):
    """Missing, unknown or expired token, or a token for another tenant (401)."""

    status_code = 401


class Forbidden(ApiError):
    """A tenant key on an admin-only route (403)."""

    status_code = 403


class NotFound(ApiError):
    """The named tenant or resource does not exist (404)."""

    status_code = 404


class UnprocessableEntity(ApiError):
    """A request that misses a scoping field the token does not imply (422)."""

    status_code = 422


class DeliveryError(MailProxyError):
    """A send attempt failed; `temporary` decides between retrying and failing the message."""

    temporary = False

    def __init__(self, reason: str, *, smtp_code: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.smtp_code = smtp_code


class TemporaryDeliveryError(DeliveryError):
    """Network error, timeout or SMTP 4xx: the message is retried later."""

    temporary = True


class PermanentDeliveryError(DeliveryError):
    """SMTP 5xx, authentication or TLS failure, every recipient refused: the message fails."""


class AttachmentError(PermanentDeliveryError):
    """An attachment could not be fetched: a permanent error of that message."""


class DestinationNotAllowed(MailProxyError):
    """An outbound connection (SMTP, attachment, callback) to an address the guard refuses."""
