"""How delivery reports are posted: urllib through the outbound guard, no redirect followed."""

from __future__ import annotations

import http.client
import urllib.error
import urllib.request
from typing import Any, Protocol

from mailproxy import outbound_http
from mailproxy.errors import DestinationNotAllowed

MAX_REPLY_BYTES = 1_000_000


class ReportFailed(Exception):
    """A call that did not end in a 2xx: its entries are sent again later."""


class ReportHttp(Protocol):
    """How reports are posted: the body of a 2xx answer, else ReportFailed."""

    def post(self, url: str, *, headers: dict[str, str], body: bytes, timeout: float) -> bytes:
        """POST `body`; the response body of a 2xx answer."""
        ...


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is not an acknowledgement (urllib would turn the POST into a GET)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class UrllibReportHttp:
    """ReportHttp over urllib through the outbound guard: a callback must not reach the runtime API,
    the metadata service or a private host; a refused one is retried as an unreachable one."""

    def post(self, url: str, *, headers: dict[str, str], body: bytes, timeout: float) -> bytes:
        """POST `body`; the response body of a 2xx answer, ReportFailed otherwise. `timeout` bounds the whole
        call, not each socket operation: a server that trickles its answer cannot hold the reporter."""
        if not url.lower().startswith(("http://", "https://")):
            raise ReportFailed(f"not an http(s) URL: {url!r}")
        request = urllib.request.Request(url, data=body, method="POST", headers=headers)
        with outbound_http.Deadline(timeout) as deadline:
            opener = outbound_http.http_opener(_NoRedirect(), deadline=deadline)
            try:
                with opener.open(request, timeout=timeout) as response:
                    status = int(response.status)
                    data = response.read(MAX_REPLY_BYTES)
            except urllib.error.HTTPError as exc:
                raise ReportFailed(f"HTTP {exc.code}") from exc
            except DestinationNotAllowed as exc:
                raise ReportFailed(str(exc)) from exc
            except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
                if deadline.expired or isinstance(exc, TimeoutError):
                    raise ReportFailed(f"timed out after {timeout:g} s") from exc
                if isinstance(exc, urllib.error.URLError):
                    raise ReportFailed(str(exc.reason)) from exc
                raise ReportFailed(str(exc) or type(exc).__name__) from exc
            if deadline.expired:  # the shutdown may read as a clean end of the body
                raise ReportFailed(f"timed out after {timeout:g} s")
        if not 200 <= status < 300:
            raise ReportFailed(f"HTTP {status}")
        return bytes(data)
