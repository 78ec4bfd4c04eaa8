"""The exceptions a call raises: one type per kind of failure, each carrying what the API answered."""

from __future__ import annotations

from typing import Any


class GmpError(Exception):
    """Every error of this client (catch this one to catch them all)."""


class ApiError(GmpError):
    """The API answered with an error status: `status_code` and its `detail` (FastAPI's shape)."""

    def __init__(self, status_code: int, detail: Any, *, method: str = "", url: str = "") -> None:
        self.status_code = status_code
        self.detail = detail
        self.method = method
        self.url = url
        super().__init__(self._message())

    def _message(self) -> str:
        where = f" ({self.method} {self.url})" if self.method else ""
        return f"{self.status_code}: {detail_text(self.detail)}{where}"


class AuthError(ApiError):
    """401: the token is missing, unknown, expired, or names another tenant."""


class ForbiddenError(ApiError):
    """403: a tenant key on an admin-only route."""


class NotFoundError(ApiError):
    """404: the tenant (or, for `get_message`, the message) does not exist."""


class ValidationError(ApiError):
    """422: the request's schema was refused; `detail` keeps FastAPI's list of errors, each naming its field."""

    @property
    def errors(self) -> list[dict[str, Any]]:
        """FastAPI's error entries (`loc`, `msg`, `type`...)."""
        return [e for e in self.detail if isinstance(e, dict)] if isinstance(self.detail, list) else []


class ConnectionFailed(GmpError):
    """The API could not be reached (refused, DNS, TLS, timeout): no answer to read."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"cannot reach {url}: {reason}")


_BY_STATUS: dict[int, type[ApiError]] = {401: AuthError, 403: ForbiddenError, 404: NotFoundError, 422: ValidationError}


def error_for(status_code: int, detail: Any, *, method: str = "", url: str = "") -> ApiError:
    """The exception of an error reply: its own type for 401, 403, 404 and 422, else ApiError."""
    return _BY_STATUS.get(status_code, ApiError)(status_code, detail, method=method, url=url)


def detail_text(detail: Any) -> str:
    """A one-line reading of a `detail`: the text, the `error` of an object, or each 422 entry's field and message."""
    if isinstance(detail, str):
        return " ".join(detail.split())
    if isinstance(detail, dict) and "error" in detail:
        text = detail_text(detail["error"])
        rejected = detail.get("rejected")
        if isinstance(rejected, list) and rejected:
            reasons = "; ".join(f"{r.get('id')}: {r.get('reason')}" for r in rejected[:5] if isinstance(r, dict))
            more = f" (+{len(rejected) - 5} more)" if len(rejected) > 5 else ""
            text = f"{text} [{reasons}{more}]"
        return text
    if isinstance(detail, list):
        parts = []
        for entry in detail:
            if isinstance(entry, dict) and "msg" in entry:
                loc = ".".join(str(p) for p in entry.get("loc", ()) if p != "body")
                parts.append(f"{loc}: {entry['msg']}" if loc else str(entry["msg"]))
            else:
                parts.append(str(entry))
        return "; ".join(parts)
    return " ".join(str(detail).split())
