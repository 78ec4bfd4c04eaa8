"""Fetch a message's attachments (inline base64, a URL, the tenant's endpoint or S3) before sending.

HTTP uses the standard library in a worker thread: the sender function carries no HTTP client package.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import http.client
import json
import mimetypes
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from typing import Any, Protocol

from mailproxy import outbound_http
from mailproxy.email_builder import Attachment
from mailproxy.errors import AttachmentError, DestinationNotAllowed
from mailproxy.settings import get_large_file_settings, get_outbound_settings

DEFAULT_TIMEOUT_SECONDS = 10.0  # per socket operation; GMP_ATTACHMENT_FETCH_SECONDS bounds a whole fetch
READ_CHUNK_BYTES = 64 * 1024
DEFAULT_ATTACHMENT_PATH = "/mail-proxy/attachments"
FETCH_MODES = ("base64", "http_url", "endpoint", "s3")

# A marker with the separators around it: what is left of them is decided by `clean_filename`.
_MD5_MARKER = re.compile(r"(?P<left>[-_. ]*)\{MD5:[0-9A-Za-z]*\}(?P<right>[-_ ]*)")


class _FetchFailed(Exception):
    """Why one attachment could not be fetched (becomes an AttachmentError naming the file)."""


class AttachmentHttp(Protocol):
    """The HTTP client attachments are fetched with: answers the body of a 2xx response, else raises."""

    async def request(
        self, method: str, url: str, *, headers: dict[str, str], body: bytes | None, timeout: float
    ) -> bytes:
        """The response body of a 2xx answer; any exception means the fetch failed."""
        ...


class UrllibHttp:
    """AttachmentHttp over urllib in a worker thread, every connection (redirects too) through the
    outbound guard: a tenant's URL must not reach the runtime API, the metadata service or a private host.
    The body is read in chunks and dropped past `max_bytes`; the whole exchange ends at `deadline` seconds.
    """

    def __init__(self, *, max_bytes: int | None = None, deadline: float | None = None) -> None:
        limits = get_outbound_settings()
        self.max_bytes = limits.max_attachment_bytes if max_bytes is None else max_bytes
        self.deadline = limits.attachment_fetch_seconds if deadline is None else deadline

    async def request(
        self, method: str, url: str, *, headers: dict[str, str], body: bytes | None, timeout: float
    ) -> bytes:
        """The response body of a 2xx answer; raises on any other status, timeout or network error."""
        return await asyncio.to_thread(self._request, method, url, headers, body, timeout)

    def _request(self, method: str, url: str, headers: dict[str, str], body: bytes | None, timeout: float) -> bytes:
        request = urllib.request.Request(url, data=body, method=method)
        for name, value in headers.items():
            if name.lower() == "authorization":
                # Credentials go to the host the client named, never to where it redirects.
                request.add_unredirected_header(name, value)
            else:
                request.add_header(name, value)
        with outbound_http.Deadline(self.deadline) as deadline:
            opener = outbound_http.http_opener(deadline=deadline)
            try:
                with opener.open(request, timeout=min(timeout, self.deadline)) as response:
                    status = int(response.status)
                    data = self._read(response)
            except _FetchFailed:
                raise
            except urllib.error.HTTPError as exc:
                raise _FetchFailed(f"HTTP {exc.code} {exc.reason}") from exc
            except (urllib.error.URLError, TimeoutError, OSError, http.client.HTTPException) as exc:
                if deadline.expired:
                    raise _FetchFailed(f"timed out after {self.deadline:g} s") from exc
                if isinstance(exc, urllib.error.URLError):
                    raise _FetchFailed(f"{exc.reason}") from exc
                if isinstance(exc, TimeoutError):
                    raise _FetchFailed(f"timed out after {timeout:g} s") from exc
                raise _FetchFailed(str(exc) or type(exc).__name__) from exc
            except DestinationNotAllowed as exc:
                raise _FetchFailed(str(exc)) from exc
            if deadline.expired:  # the shutdown may read as a clean end of the body
                raise _FetchFailed(f"timed out after {self.deadline:g} s")
        if not 200 <= status < 300:
            raise _FetchFailed(f"HTTP {status}")
        return data

    def _read(self, response: Any) -> bytes:
        declared = response.headers.get("Content-Length")
        if declared is not None and declared.strip().isdigit() and int(declared) > self.max_bytes:
            raise _FetchFailed(f"larger than {self.max_bytes} bytes")  # refused before reading a byte of it
        return _read_capped(response.read, self.max_bytes)


def _read_capped(read: Any, max_bytes: int) -> bytes:
    """Read with `read(n)` until the end, failing as soon as more than `max_bytes` arrived."""
    parts: list[bytes] = []
    total = 0
    while True:
        chunk = read(min(READ_CHUNK_BYTES, max_bytes + 1 - total))
        if not chunk:
            return b"".join(parts)
        total += len(chunk)
        if total > max_bytes:
            raise _FetchFailed(f"larger than {max_bytes} bytes")
        parts.append(chunk)


def _auth_headers(auth: dict[str, Any] | None) -> dict[str, str]:
    """The Authorization header of an auth object, or why there can be none (a failed fetch)."""
    from mailproxy.outbound_http import auth_headers

    try:
        return auth_headers(auth)
    except ValueError as exc:
        raise _FetchFailed(str(exc)) from exc


def _attachment_auth(spec: dict[str, Any], tenant: dict[str, Any]) -> dict[str, Any] | None:
    """The attachment's own credentials, unsealed (mailproxy.attachment_auth)."""
    from mailproxy.attachment_auth import opened_auth

    return opened_auth(spec, str(tenant.get("id") or ""))


def clean_filename(filename: str) -> str:
    """The name sent: every `{MD5:…}` marker removed with the separator it leaves behind
    (`report_{MD5:ab12}.pdf` → `report.pdf`; between two words one separator stays: `a_{MD5:ab12}_b` → `a_b`)."""
    while (found := _MD5_MARKER.search(filename)) is not None:
        before, after = filename[: found.start()], filename[found.end() :]
        # Between two parts of the name one separator stays; next to the extension, the start or the end, none.
        joined = bool(before) and bool(after) and not after.startswith(".")
        kept = (found["left"] or found["right"])[:1] if joined else ""
        filename = before + kept + after
    return filename.strip()


def mime_type(spec: dict[str, Any], filename: str) -> str:
    """An attachment's MIME type: the one it gives, else a guess from its name, else application/octet-stream."""
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
    max_bytes = get_outbound_settings().max_attachment_bytes
    if len(compact) // 4 * 3 - compact[-2:].count("=") > max_bytes:  # the decoded size, before decoding
        raise _FetchFailed(f"larger than {max_bytes} bytes")
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

    max_bytes = get_outbound_settings().max_attachment_bytes
    response = tenant_s3(tenant_id, bucket).get_object(Bucket=bucket, Key=key)
    body = response["Body"]
    try:
        if int(response.get("ContentLength") or 0) > max_bytes:
            raise _FetchFailed(f"larger than {max_bytes} bytes")
        return _read_capped(body.read, max_bytes)
    finally:
        body.close()


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
    except _FetchFailed:
        raise
    except Exception as exc:  # botocore's errors are not imported here: keep the layer light
        # S3's message can name the reader role, the account and the key: the tenant is told the code.
        from mailproxy.aws import error_code

        raise _FetchFailed(f"S3 error: {error_code(exc) or type(exc).__name__}") from exc


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
    filename = clean_filename(str(spec.get("filename") or ""))
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

    # An explicit content_md5 is the client asserting the content: a mismatch fails the message. A `{MD5:…}`
    # marker in the name is only genro-mail-proxy's cache key, never checked (docs/decisions.md, issue 16).
    expected = str(spec.get("content_md5") or "").strip().lower()
    if expected:
        actual = hashlib.md5(content, usedforsecurity=False).hexdigest()
        if actual != expected:
            raise _FetchFailed(f"MD5 mismatch (expected {expected}, got {actual})")
    return Attachment(filename=filename or "attachment", content=content, mime_type=mime_type(spec, filename))


def _default_blocked_buckets() -> frozenset[str]:
    """The stack's own buckets, which the sender's role reads: every tenant's payloads, and every tenant's large
    files (a tenant is held to them through `upload:` references and links, never by a key it names)."""
    # The outbound and large-file settings, not get_settings(): this must work where only some settings exist.
    buckets = {get_outbound_settings().payload_bucket, get_large_file_settings().bucket}
    return frozenset(b for b in buckets if b)


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
