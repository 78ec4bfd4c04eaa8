"""Fetch a message's attachments (inline base64, a URL, the tenant's endpoint or S3) before sending.

HTTP uses the standard library in a worker thread: the sender function carries no HTTP client package.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import http.client
import ipaddress
import json
import mimetypes
import os
import re
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from typing import Any, Protocol

from mailproxy.email_builder import Attachment
from mailproxy.errors import AttachmentError

DEFAULT_TIMEOUT_SECONDS = 10.0
DEFAULT_ATTACHMENT_PATH = "/mail-proxy/attachments"
FETCH_MODES = ("base64", "http_url", "endpoint", "s3")

_MD5_MARKER = re.compile(r"\{MD5:([0-9A-Za-z]*)\}")
_MD5_HEX = re.compile(r"^[0-9a-fA-F]{32}$")


class _FetchFailed(Exception):
    """Why one attachment could not be fetched (becomes an AttachmentError naming the file)."""


class AttachmentHttp(Protocol):
    """The HTTP client attachments are fetched with: answers the body of a 2xx response, else raises."""

    async def request(
        self, method: str, url: str, *, headers: dict[str, str], body: bytes | None, timeout: float
    ) -> bytes:
        """The response body of a 2xx answer; any exception means the fetch failed."""
        ...


class _NoInternalRedirect(urllib.request.HTTPRedirectHandler):
    """Follows redirects only to hosts the guard allows (a redirect must not reach the runtime API)."""

    def __init__(self, guard: bool) -> None:
        super().__init__()
        self._guard = guard

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        if self._guard:
            _refuse_internal_host(newurl)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _refuse_internal_host(url: str) -> None:
    """Raise when the URL's host resolves to loopback, link-local or an unspecified address."""
    host = urllib.parse.urlsplit(url).hostname
    if not host:
        raise _FetchFailed(f"no host in {url!r}")
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        raise _FetchFailed(f"cannot resolve {host}: {exc}") from exc
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if address.is_loopback or address.is_link_local or address.is_unspecified:
            raise _FetchFailed(f"refusing internal address {address} of {host}")


class UrllibHttp:
    """AttachmentHttp over urllib in a worker thread.

    In Lambda (`AWS_LAMBDA_RUNTIME_API` set) it refuses loopback and link-local targets: a tenant's
    URL must not reach the runtime API, which would hand over other invocations' events.
    """

    def __init__(self, *, block_internal: bool | None = None) -> None:
        if block_internal is None:
            block_internal = bool(os.environ.get("AWS_LAMBDA_RUNTIME_API"))
        self.block_internal = block_internal

    async def request(
        self, method: str, url: str, *, headers: dict[str, str], body: bytes | None, timeout: float
    ) -> bytes:
        """The response body of a 2xx answer; raises on any other status, timeout or network error."""
        return await asyncio.to_thread(self._request, method, url, headers, body, timeout)

    def _request(self, method: str, url: str, headers: dict[str, str], body: bytes | None, timeout: float) -> bytes:
        if self.block_internal:
            _refuse_internal_host(url)
        request = urllib.request.Request(url, data=body, method=method)
        for name, value in headers.items():
            if name.lower() == "authorization":
                # Credentials go to the host the client named, never to where it redirects.
                request.add_unredirected_header(name, value)
            else:
                request.add_header(name, value)
        opener = urllib.request.build_opener(_NoInternalRedirect(self.block_internal))
        try:
            with opener.open(request, timeout=timeout) as response:
                status = int(response.status)
                data = response.read()
        except urllib.error.HTTPError as exc:
            raise _FetchFailed(f"HTTP {exc.code} {exc.reason}") from exc
        except urllib.error.URLError as exc:
            raise _FetchFailed(f"{exc.reason}") from exc
        except TimeoutError as exc:
            raise _FetchFailed(f"timed out after {timeout:g} s") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise _FetchFailed(str(exc) or type(exc).__name__) from exc
        if not 200 <= status < 300:
            raise _FetchFailed(f"HTTP {status}")
        return bytes(data)


def _auth_headers(auth: dict[str, Any] | None) -> dict[str, str]:
    """The Authorization header of a `{"method": none|bearer|basic, ...}` object."""
    if not auth:
        return {}
    method = str(auth.get("method") or "none").lower()
    if method == "none":
        return {}
    if method == "bearer":
        return {"Authorization": f"Bearer {auth.get('token') or ''}"}
    if method == "basic":
        pair = f"{auth.get('user') or ''}:{auth.get('password') or ''}".encode()
        return {"Authorization": "Basic " + base64.b64encode(pair).decode("ascii")}
    raise _FetchFailed(f"unsupported auth method {method!r}")


def _attachment_auth(spec: dict[str, Any], tenant: dict[str, Any]) -> dict[str, Any] | None:
    """The attachment's own credentials, unsealed (mailproxy.attachment_auth)."""
    from mailproxy.attachment_auth import opened_auth

    return opened_auth(spec, str(tenant.get("id") or ""))


def _clean_filename(filename: str) -> tuple[str, str | None]:
    """The name to send (any `{MD5:<hex>}` marker removed) and the marker's md5 when it is one."""
    markers = _MD5_MARKER.findall(filename)
    md5 = next((value.lower() for value in markers if _MD5_HEX.match(value)), None)
    return _MD5_MARKER.sub("", filename).strip(), md5


def _mime_type(spec: dict[str, Any], filename: str) -> str:
    given = str(spec.get("mime_type") or "").strip()
    if given:
        return given
    guessed, _ = mimetypes.guess_type(filename, strict=False)
    return guessed or "application/octet-stream"


def _fetch_mode(storage_path: str, given: str | None) -> str:
    if given:
        if given not in FETCH_MODES:
            raise _FetchFailed(f"unknown fetch_mode {given!r}")
        return given
    lowered = storage_path.lower()
    if lowered.startswith("base64:"):
        return "base64"
    if lowered.startswith(("http://", "https://")):
        return "http_url"
    if lowered.startswith("s3://"):
        return "s3"
    return "endpoint"


def _decode_base64(storage_path: str) -> bytes:
    data = storage_path[len("base64:") :] if storage_path.lower().startswith("base64:") else storage_path
    # Clients wrap base64 in lines; whitespace is not content, anything else outside the alphabet is.
    compact = "".join(data.split())
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _FetchFailed(f"invalid base64 ({exc})") from exc


def _s3_location(storage_path: str) -> tuple[str, str]:
    parsed = urllib.parse.urlsplit(storage_path)
    bucket, key = parsed.netloc, parsed.path.lstrip("/")
    if parsed.scheme.lower() != "s3" or not bucket or not key:
        raise _FetchFailed(f"not an s3://bucket/key path: {storage_path!r}")
    return bucket, key


def _read_s3_object(bucket: str, key: str, tenant_id: str) -> bytes:
    from mailproxy.tenant_files import tenant_s3

    response = tenant_s3(tenant_id, bucket).get_object(Bucket=bucket, Key=key)
    return bytes(response["Body"].read())


async def _fetch_s3(storage_path: str, blocked_buckets: frozenset[str], tenant_id: str) -> bytes:
    from mailproxy.tenant_files import OutsideTenantFiles, tenant_object

    bucket, key = _s3_location(storage_path)
    if bucket in blocked_buckets:
        # The service's own bucket holds every tenant's payloads: a tenant must not read it.
        raise _FetchFailed(f"bucket {bucket} is not readable for attachments")
    try:
        # The buckets are shared: only keys under the tenant's own prefix are its files.
        bucket, key = tenant_object(storage_path, tenant_id)
    except OutsideTenantFiles as exc:
        raise _FetchFailed(str(exc)) from exc
    try:
        return await asyncio.to_thread(_read_s3_object, bucket, key, tenant_id)
    except Exception as exc:  # botocore's errors are not imported here: keep the layer light
        # S3's message can name the reader role, the account and the key: the tenant is told the code.
        code = getattr(exc, "response", {}).get("Error", {}).get("Code")
        raise _FetchFailed(f"S3 error: {code or type(exc).__name__}") from exc


def _endpoint_url(tenant: dict[str, Any]) -> str:
    base = str(tenant.get("client_base_url") or "").strip()
    if not base:
        raise _FetchFailed("tenant has no client_base_url for endpoint attachments")
    path = str(tenant.get("client_attachment_path") or DEFAULT_ATTACHMENT_PATH).strip()
    return base.rstrip("/") + "/" + path.lstrip("/")


async def _fetch_one(
    spec: dict[str, Any],
    *,
    tenant: dict[str, Any],
    http: AttachmentHttp,
    timeout: float,
    blocked_buckets: frozenset[str],
) -> Attachment:
    filename, marker_md5 = _clean_filename(str(spec.get("filename") or ""))
    storage_path = str(spec.get("storage_path") or "")
    if not storage_path:
        raise _FetchFailed("missing storage_path")
    mode = _fetch_mode(storage_path, spec.get("fetch_mode"))

    if mode == "base64":
        content = _decode_base64(storage_path)
    elif mode == "http_url":
        if not storage_path.lower().startswith(("http://", "https://")):
            raise _FetchFailed(f"not an http(s) URL: {storage_path!r}")
        content = await http.request(
            "GET", storage_path, headers=_auth_headers(_attachment_auth(spec, tenant)), body=None, timeout=timeout
        )
    elif mode == "s3":
        content = await _fetch_s3(storage_path, blocked_buckets, str(tenant.get("id") or ""))
    else:
        headers = {"Content-Type": "application/json", **_auth_headers(tenant.get("client_auth"))}
        body = json.dumps({"storage_path": storage_path}).encode()
        content = await http.request("POST", _endpoint_url(tenant), headers=headers, body=body, timeout=timeout)

    expected = str(spec.get("content_md5") or "").strip().lower() or marker_md5
    if expected:
        actual = hashlib.md5(content, usedforsecurity=False).hexdigest()
        if actual != expected:
            raise _FetchFailed(f"MD5 mismatch (expected {expected}, got {actual})")
    return Attachment(filename=filename or "attachment", content=content, mime_type=_mime_type(spec, filename))


def _default_blocked_buckets() -> frozenset[str]:
    # Read directly rather than through get_settings(): this must work where only some settings exist.
    bucket = os.environ.get("PAYLOAD_BUCKET", "").strip()
    return frozenset({bucket}) if bucket else frozenset()


async def fetch_attachments(
    specs: list[dict[str, Any]],
    *,
    tenant: dict[str, Any],
    http: AttachmentHttp | None = None,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    blocked_buckets: Iterable[str] | None = None,
) -> list[Attachment]:
    """Every attachment of a message, in order; AttachmentError naming the first one that fails."""
    if not specs:
        return []
    client = http if http is not None else UrllibHttp()
    blocked = frozenset(blocked_buckets) if blocked_buckets is not None else _default_blocked_buckets()
    results = await asyncio.gather(
        *(_fetch_one(spec, tenant=tenant, http=client, timeout=timeout, blocked_buckets=blocked) for spec in specs),
        # Let every fetch finish so none is left with an unobserved exception; report the first.
        return_exceptions=True,
    )
    attachments: list[Attachment] = []
    for spec, result in zip(specs, results, strict=True):
        if isinstance(result, BaseException):
            filename = spec.get("filename") or "attachment"
            if not isinstance(result, Exception):
                raise result  # cancellation and the like are not attachment failures
            raise AttachmentError(f"Attachment fetch failed for {filename}: {_why(result)}") from result
        attachments.append(result)
    return attachments


def _why(exc: Exception) -> str:
    if isinstance(exc, _FetchFailed):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__
