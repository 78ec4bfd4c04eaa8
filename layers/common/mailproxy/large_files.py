"""Large attachments (docs/large-files.md): the tenant's `large_file_config` applied when a message is sent, the
signed links that replace a rewritten attachment, the download route behind them, and uploads that bring big
files to storage without passing through the API.

- **Deciding.** An attachment counts by its size on the wire, base64 with its line breaks (`encoded_size`):
  that is what a recipient's server compares with its limit. Above `max_size_mb`, `warn` sends it and logs,
  `reject` fails the message (`Attachment '<name>' (<x> MB) exceeds limit (<y> MB)`), `rewrite` stores the
  file and puts a link in a footer of the body ("Large attachments available for download").
- **Storing.** Keys are made here, from the message's tenant: `uploads/<tenant>/<id>` (what a tenant uploaded)
  and `files/<days>d/<tenant>/<file id>` (what a link serves; the bucket's lifecycle rule of `<days>` deletes
  it). A file id is derived from the message and the content, so a retried message finds the file it stored.
- **Links.** `<public base URL>/large-files/<token>`: the token is its tenant and the link's claims (key,
  name, expiry, life after the first download) with an HMAC-SHA256 under a key of the tenant's own, derived
  from the deployment's signing secret, checked before the claims are decoded. Nothing in a link can be
  changed without the key, nor used past its expiry.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import html
import json
import math
import re
import secrets
from collections.abc import AsyncIterator, Callable
from typing import IO, Any, NamedTuple

from mailproxy import clock, urlsafe
from mailproxy.email_builder import Attachment
from mailproxy.errors import AttachmentError, ConfigurationError, PermanentDeliveryError, TemporaryDeliveryError
from mailproxy.logs import logger
from mailproxy.settings import get_large_file_settings, get_settings
from mailproxy.stores import stores

MB = 1024 * 1024
ACTIONS = ("warn", "reject", "rewrite")
DEFAULT_MAX_SIZE_MB = 10.0
DEFAULT_FILE_TTL_DAYS = 30
MAX_FILE_TTL_DAYS = 365
# The bucket has one lifecycle rule per step (template.yaml): a file is kept under the smallest step that
# covers its tenant's file_ttl_days, its link dies at exactly file_ttl_days.
TTL_STEPS = (1, 7, 30, 90, 180, 365)
UPLOAD_RETENTION_DAYS = 7  # uploads/ is emptied after this long (LargeFileUploadExpirationDays on AWS)
UPLOAD_PREFIX = "upload:"
FETCH_MODE = "upload"
ROUTE = "/large-files"
FOOTER_TITLE = "Large attachments available for download"
TOKEN_VERSION = "v2"  # v1 put the tenant inside the claims, so they were decoded before the MAC was checked
MAX_TOKEN_CHARS = 4096
MAX_CLAIM_TS = 2**40  # a claimed time past this is not one this service signs (year 36812)
MAX_FORM_FIELD_BYTES = 16 * 1024
MAX_FORM_FIELDS_BYTES = 64 * 1024  # all text fields of a local upload form: held in memory, before any token
_UPLOAD_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")
_B64URL = re.compile(r"[A-Za-z0-9_-]+")
_LINE_CHARS = 76  # base64 line length of a MIME part
# A MIME type as RFC 6838 names one (ASCII): the only kind a download's Content-Type is given.
_MIME_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}")


class LinkRefused(Exception):
    """A download or upload token that is not accepted: the HTTP status and a sentence for a person."""

    def __init__(self, status: int, reason: str, filename: str = "") -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.filename = filename


# ---------------------------------------------------------------------------------------------- configuration


class LargeFileConfig(NamedTuple):
    """A tenant's `large_file_config`, genro-mail-proxy's fields with their defaults."""

    enabled: bool = False
    max_size_mb: float = DEFAULT_MAX_SIZE_MB
    action: str = "warn"
    file_ttl_days: int = DEFAULT_FILE_TTL_DAYS
    lifespan_after_download_days: float | None = None
    public_base_url: str = ""

    @property
    def limit_bytes(self) -> int:
        """The largest encoded attachment that is sent as it is."""
        return int(self.max_size_mb * MB)


def config_problems(config: dict[str, Any]) -> list[str]:
    """What is wrong with a `large_file_config` (fields this service reads; genro's others are kept as given)."""
    problems = []

    def number(name: str, low: float, high: float) -> None:
        value = config.get(name)
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
            problems.append(f"{name} must be a number from {low:g} to {high:g}")

    if "enabled" in config and not isinstance(config["enabled"], bool):
        problems.append("enabled must be true or false")
    if config.get("action") is not None and config.get("action") not in ACTIONS:
        problems.append(f"action must be one of {', '.join(ACTIONS)}")
    number("max_size_mb", 0.001, 1_000_000)
    number("file_ttl_days", 1, MAX_FILE_TTL_DAYS)
    number("lifespan_after_download_days", 0.001, MAX_FILE_TTL_DAYS)
    url = config.get("public_base_url")
    if url is not None and (not isinstance(url, str) or not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", url)):
        problems.append("public_base_url must be an http:// or https:// URL without query")
    return problems


def config_of(tenant: dict[str, Any]) -> LargeFileConfig:
    """The tenant's configuration, defaults where a field is missing (or stored before it was checked)."""
    raw = tenant.get("large_file_config")
    if not isinstance(raw, dict) or config_problems(raw):
        return LargeFileConfig()  # none, or one stored before it was checked: attachments are sent as they are
    lifespan = raw.get("lifespan_after_download_days")
    return LargeFileConfig(
        enabled=raw.get("enabled") is True,
        max_size_mb=float(raw.get("max_size_mb") or DEFAULT_MAX_SIZE_MB),
        action=str(raw.get("action") or "warn"),
        file_ttl_days=math.ceil(float(raw.get("file_ttl_days") or DEFAULT_FILE_TTL_DAYS)),
        lifespan_after_download_days=float(lifespan) if lifespan else None,
        public_base_url=str(raw.get("public_base_url") or "").rstrip("/"),
    )


def encoded_size(raw_bytes: int) -> int:
    """The bytes an attachment of `raw_bytes` takes in the message: base64, in 76-character lines with CRLF."""
    encoded = 4 * math.ceil(raw_bytes / 3)
    return encoded + 2 * math.ceil(encoded / _LINE_CHARS)


def ttl_step(days: int) -> int:
    """The lifecycle step that keeps a file at least `days`."""
    return next((step for step in TTL_STEPS if step >= days), TTL_STEPS[-1])


# ---------------------------------------------------------------------------------------------- keys


def upload_key(tenant_id: str, upload_id: str) -> str:
    """The storage key of one of the tenant's uploads."""
    return f"uploads/{tenant_id}/{upload_id}"


def file_key(tenant_id: str, file_id: str, ttl_days: int) -> str:
    """The storage key of a file a link serves, under the lifecycle step of its life."""
    return f"files/{ttl_step(ttl_days)}d/{tenant_id}/{file_id}"


def is_tenant_file(key: str, tenant_id: str) -> bool:
    """True when `key` is a stored file of this tenant (a link never serves anything else)."""
    parts = key.split("/")
    return (
        len(parts) == 4
        and parts[0] == "files"
        and parts[1] in {f"{s}d" for s in TTL_STEPS}
        and parts[2] == tenant_id
        and bool(_UPLOAD_ID.fullmatch(parts[3]))
    )


def upload_id_of(spec: dict[str, Any]) -> str | None:
    """The upload id of an `upload:<id>` attachment (fetch_mode `upload`), None for any other kind."""
    path = str(spec.get("storage_path") or "").strip()
    prefixed = path.lower().startswith(UPLOAD_PREFIX)
    if spec.get("fetch_mode") == FETCH_MODE:
        return path[len(UPLOAD_PREFIX) :] if prefixed else path
    if spec.get("fetch_mode") is None and prefixed:
        return path[len(UPLOAD_PREFIX) :]
    return None


# ---------------------------------------------------------------------------------------------- signing


def _master_key() -> bytes:
    """The deployment's signing material: GMP_LINK_SIGNING_KEY, else the LINK_SIGNING_SECRET_ARN secret (AWS),
    else `link-signing.key` of the data directory (the one-machine runtime, made on first use)."""
    settings = get_large_file_settings()
    if settings.signing_key:
        return settings.signing_key.encode("utf-8")
    if settings.signing_secret_arn:
        from mailproxy.secret_cache import secrets as secret_values

        value = secret_values.get(settings.signing_secret_arn, max_age=get_settings().secret_max_age_seconds)
        return value.encode("utf-8")
    own = stores().large_files.signing_key()
    if own is None:
        raise ConfigurationError("no link signing key: set LINK_SIGNING_SECRET_ARN or GMP_LINK_SIGNING_KEY")
    return own


def _tenant_key(tenant_id: str) -> bytes:
    # A key per tenant: a token names its tenant, and only that tenant's key verifies it.
    return hmac.new(_master_key(), b"gmp-large-file-links\x00" + tenant_id.encode("utf-8"), hashlib.sha256).digest()


def _mac(tenant_id: str, signed: str) -> bytes:
    return hmac.new(_tenant_key(tenant_id), signed.encode("ascii"), hashlib.sha256).digest()


def sign(claims: dict[str, Any]) -> str:
    """A token carrying `claims` (which name their tenant, `t`): `v2.<tenant>.<claims>.<mac>`."""
    tenant_id = str(claims["t"])
    body = urlsafe.encode(json.dumps(claims, sort_keys=True, separators=(",", ":")).encode("utf-8"))
    signed = f"{TOKEN_VERSION}.{tenant_id}.{body}"
    return f"{signed}.{urlsafe.encode(_mac(tenant_id, signed))}"


def verify(token: str, kind: str, *, now: int) -> dict[str, Any]:
    """The claims of a token of `kind` ("d" download, "u" upload) that this deployment signed; LinkRefused
    (403 not valid, 410 expired) otherwise. The MAC is checked before anything of the claims is decoded: the
    tenant whose key signs them travels beside them, in plain."""
    refused = LinkRefused(403, "This link is not valid.")
    parts = token.split(".")
    if len(token) > MAX_TOKEN_CHARS or len(parts) != 4 or parts[0] != TOKEN_VERSION:
        raise refused
    version, tenant_id, body, mac = parts
    if not all(_B64URL.fullmatch(part) for part in (tenant_id, body, mac)):  # a tenant id has these characters too
        raise refused
    try:
        given = urlsafe.decode(mac)
    except ValueError:
        raise refused from None
    if not hmac.compare_digest(given, _mac(tenant_id, f"{version}.{tenant_id}.{body}")):
        raise refused
    claims = _claims(body, tenant_id, kind)
    if claims is None:  # signed here, yet not claims this service makes: refused all the same
        raise refused
    if now >= claims["e"]:
        raise LinkRefused(410, "This link has expired.", str(claims.get("n") or ""))
    return claims


def _claims(body: str, tenant_id: str, kind: str) -> dict[str, Any] | None:
    """The claims of a token whose MAC matched, None when they are not what `sign` makes (any decoding error:
    bad base64 or UTF-8, JSON nested past the recursion limit, a number out of range)."""
    try:
        claims = json.loads(urlsafe.decode(body))
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return None
    if not isinstance(claims, dict) or claims.get("t") != tenant_id or claims.get("v") != kind:
        return None
    expires, lifespan = claims.get("e"), claims.get("l")
    if type(expires) is not int or not 0 < expires < MAX_CLAIM_TS:
        return None
    if lifespan is not None and (type(lifespan) is not int or not 0 < lifespan <= MAX_FILE_TTL_DAYS * 86400):
        return None
    issued = claims.get("c")  # absent from links issued before 2026-12-04
    if issued is not None and (type(issued) is not int or not 0 < issued < MAX_CLAIM_TS):
        return None
    if not all(isinstance(claims.get(name, ""), str) for name in ("k", "n", "i", "g")):
        return None
    limit = claims.get("m")  # the file's type in a download, the size limit in an upload
    if not (isinstance(limit, str) if kind == "d" else type(limit) is int and 0 < limit < MAX_CLAIM_TS):
        return None
    return claims


# ---------------------------------------------------------------------------------------------- at send time


class Link(NamedTuple):
    """A rewritten attachment: its name, its size and where it is downloaded."""

    filename: str
    size_bytes: int
    url: str


async def attachments_for_send(
    payload: dict[str, Any], *, tenant: dict[str, Any], seed: str
) -> tuple[list[Attachment], dict[str, Any]]:
    """The attachments to put in the email, and the payload to build it from (its body with the download
    footer when some were rewritten). `seed` is stable across a message's attempts (its stored uid): a retry
    finds the files the earlier attempt stored."""
    from mailproxy.attachments import clean_filename, fetch_attachments, mime_type

    specs: list[dict[str, Any]] = list(payload.get("attachments") or [])
    config = config_of(tenant)
    tenant_id = str(tenant.get("id") or "")
    fetched_at = [i for i, spec in enumerate(specs) if upload_id_of(spec) is None]
    fetched = await fetch_attachments([specs[i] for i in fetched_at], tenant=tenant) if fetched_at else []
    by_index: dict[int, Attachment] = dict(zip(fetched_at, fetched, strict=True))
    attachments: list[Attachment] = []
    links: list[Link] = []
    for index, spec in enumerate(specs):
        filename = clean_filename(str(spec.get("filename") or "")) or "attachment"
        got = by_index.get(index)
        if got is None:
            upload = _upload_of(spec, tenant_id, filename)
            size = await asyncio.to_thread(stores().large_files.size, upload)
            if size is None:
                raise AttachmentError(
                    f"Attachment fetch failed for {spec.get('filename') or filename}: upload not found "
                    "(never uploaded, another tenant's, or expired)"
                )
            if _decide(config, filename, size, tenant_id) == "rewrite":
                file_id = _file_id(tenant_id, seed, index, f"{upload}\x00{size}")
                links.append(await _link(config, tenant, file_id, filename, spec, size, source=upload))
                continue
            # Refused before it is read: an upload may be 100 MB, read whole into the sender's memory to be
            # refused once encoded (the limit the sender checks on the email) it can end the process.
            encoded, cap = encoded_size(size), get_settings().max_message_bytes
            if encoded > cap:
                raise PermanentDeliveryError(f"message too large: {encoded} bytes (limit {cap})")
            max_bytes = get_large_file_settings().upload_max_bytes
            content = await asyncio.to_thread(stores().large_files.read, upload, max_bytes=max_bytes)
            attachments.append(Attachment(filename, content, mime_type(spec, filename)))
            continue
        if _decide(config, got.filename, len(got.content), tenant_id) == "rewrite":
            file_id = _file_id(tenant_id, seed, index, hashlib.sha256(got.content).hexdigest())
            links.append(await _link(config, tenant, file_id, got.filename, spec, len(got.content), data=got))
            continue
        attachments.append(got)
    if links:
        payload = {**payload, "body": with_footer(str(payload.get("body") or ""), payload, links, config)}
    return attachments, payload


def _upload_of(spec: dict[str, Any], tenant_id: str, filename: str) -> str:
    upload_id = upload_id_of(spec) or ""
    if not _UPLOAD_ID.fullmatch(upload_id):
        raise AttachmentError(f"Attachment fetch failed for {filename}: not an upload:<id> reference")
    # The key is made from the message's own tenant: another tenant's upload id names nothing here.
    return upload_key(tenant_id, upload_id)


def _decide(config: LargeFileConfig, filename: str, raw_bytes: int, tenant_id: str) -> str:
    """ "attach" or "rewrite"; PermanentDeliveryError when the tenant rejects the attachment."""
    encoded = encoded_size(raw_bytes)
    if not config.enabled or encoded <= config.limit_bytes:
        return "attach"
    over = f"Attachment '{filename}' ({encoded / MB:.1f} MB) exceeds limit ({config.max_size_mb:.1f} MB)"
    if config.action == "reject":
        raise PermanentDeliveryError(over)
    if config.action == "rewrite":
        return "rewrite"
    logger().warning(f"{over}: sending anyway (large_file_config action warn)", extra={"tenant_id": tenant_id})
    return "attach"


def _file_id(tenant_id: str, seed: str, index: int, content_id: str) -> str:
    text = f"{tenant_id}\x00{seed}\x00{index}\x00{content_id}"
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:40]


async def _link(
    config: LargeFileConfig,
    tenant: dict[str, Any],
    file_id: str,
    filename: str,
    spec: dict[str, Any],
    size: int,
    *,
    source: str | None = None,
    data: Attachment | None = None,
) -> Link:
    """Store the file once (a retry finds it stored) and make its signed link."""
    from mailproxy.attachments import mime_type

    tenant_id = str(tenant.get("id") or "")
    base = config.public_base_url or get_large_file_settings().public_base_url
    if not base:
        raise TemporaryDeliveryError("no public URL for download links (GMP_PUBLIC_BASE_URL or public_base_url)")
    key = file_key(tenant_id, file_id, config.file_ttl_days)
    files = stores().large_files
    try:
        if await asyncio.to_thread(files.size, key) is None:
            if source is not None:
                await asyncio.to_thread(files.copy, source, key)
            elif data is not None:
                await asyncio.to_thread(files.write, key, [data.content])
            logger().info(
                f"Large attachment {filename} ({size / MB:.1f} MB) stored for download",
                extra={"tenant_id": tenant_id},
            )
    except Exception as exc:
        from mailproxy.aws import error_code

        code = error_code(exc) or type(exc).__name__
        raise TemporaryDeliveryError(f"Large attachment {filename} could not be stored ({code})") from exc
    now = clock.now_ts()
    claims: dict[str, Any] = {
        "v": "d",
        "t": tenant_id,
        "k": key,
        "n": filename,
        "m": data.mime_type if data is not None else mime_type(spec, filename),
        "e": now + config.file_ttl_days * 86400,
        "i": file_id,
        "c": now,  # when it was issued: a tenant deleted and created again since does not inherit it
    }
    if tenant.get("incarnation"):  # the tenant that issued it (tenants created before 2026-12-04 have none)
        claims["g"] = str(tenant["incarnation"])
    if config.lifespan_after_download_days:
        claims["l"] = int(config.lifespan_after_download_days * 86400)
    return Link(filename, size, f"{base}{ROUTE}/{sign(claims)}")


def with_footer(body: str, payload: dict[str, Any], links: list[Link], config: LargeFileConfig) -> str:
    """The body with the download footer, in the body's own format (HTML escaped where it is HTML)."""
    days = config.file_ttl_days
    expiry = f"Links expire after {days} day{'s' if days != 1 else ''}"
    if config.lifespan_after_download_days:
        after = config.lifespan_after_download_days
        expiry += f", or {after:g} day{'s' if after != 1 else ''} after the first download"
    if str(payload.get("content_type") or "plain").lower() == "html":
        items = "".join(
            f'<li><a href="{html.escape(link.url, quote=True)}">{html.escape(link.filename, quote=True)}</a>'
            f" ({link.size_bytes / MB:.1f} MB)</li>"
            for link in links
        )
        footer = (
            '<hr style="margin-top: 20px;">'
            f"<p><strong>{FOOTER_TITLE}:</strong></p>"
            f"<ul>{items}</ul>"
            f"<p><em>{expiry}.</em></p>"
        )
        closing = body.lower().rfind("</body>")
        return body[:closing] + footer + body[closing:] if closing >= 0 else body + footer
    lines = "\n".join(f"  - {link.filename} ({link.size_bytes / MB:.1f} MB): {link.url}" for link in links)
    return f"{body}\n\n---\n{FOOTER_TITLE}:\n{lines}\n({expiry}.)"


# ---------------------------------------------------------------------------------------------- uploads


def new_upload(tenant_id: str, *, filename: str | None, size: int | None) -> dict[str, Any]:
    """An upload for the tenant: the form to send the file with and the attachment reference to name it by."""
    settings = get_large_file_settings()
    max_bytes = settings.upload_max_bytes
    if size is not None and size > max_bytes:
        from mailproxy.errors import BadRequest

        raise BadRequest(f"File too large for an upload: {size} bytes (limit {max_bytes})")
    upload_id = secrets.token_urlsafe(18)
    key = upload_key(tenant_id, upload_id)
    expires_at = clock.now_ts() + settings.upload_seconds
    form = stores().large_files.presigned_upload(key, max_bytes=max_bytes, expires_in=settings.upload_seconds)
    if form is None:
        if not settings.public_base_url:
            raise ConfigurationError("GMP_PUBLIC_BASE_URL is not set: the upload route cannot be named")
        token = sign({"v": "u", "t": tenant_id, "k": key, "m": max_bytes, "e": expires_at})
        form = {"url": f"{settings.public_base_url}{ROUTE}/receive", "fields": {"token": token}}
    reference: dict[str, Any] = {"storage_path": f"{UPLOAD_PREFIX}{upload_id}", "fetch_mode": FETCH_MODE}
    if filename:
        reference["filename"] = filename
    return {
        "ok": True,
        "upload_id": upload_id,
        "max_bytes": max_bytes,
        "expires_at": expires_at,
        "upload": {"method": "POST", "url": form["url"], "fields": form["fields"], "file_field": "file"},
        "attachment": reference,
    }


class UploadRefused(Exception):
    """A local upload that is not stored: the HTTP status and why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


async def receive_upload(content_type: str, stream: AsyncIterator[bytes]) -> int:
    """Store a multipart upload to the service's own route (the one-machine runtime): the form's `token`
    names the key and the size limit; the `file` field is streamed to a temporary file, then stored."""
    import tempfile

    if get_settings().storage != "sqlite":
        raise UploadRefused(404, "Uploads go to the form POST /large-files returns")
    boundary = _boundary(content_type)
    checked: list[dict[str, Any]] = []

    def file_limit(fields: dict[str, str]) -> int:
        # The token comes before the file (as S3 requires the file last), and is checked as the file begins,
        # as S3 checks a policy as the request starts: an upload under way when the token expires is kept.
        if "token" not in fields:
            raise UploadRefused(400, "The token field must come before the file")
        checked.append(_upload_claims(fields["token"]))
        return int(checked[0].get("m") or 0)

    with tempfile.TemporaryFile() as spool:
        fields, written = await _read_form(stream, boundary, spool, file_limit)
        if "token" not in fields:
            raise UploadRefused(400, "The form has no token field")
        if written is None:
            raise UploadRefused(400, "The form has no file field")
        claims = checked[0]
        spool.seek(0)
        size = await asyncio.to_thread(
            stores().large_files.write, str(claims["k"]), iter(lambda: spool.read(1024 * 1024), b"")
        )
    return size


def _upload_claims(token: str) -> dict[str, Any]:
    try:
        claims = verify(token, "u", now=clock.now_ts())
    except LinkRefused as exc:
        raise UploadRefused(403, "The upload token is not valid or has expired") from exc
    key = str(claims.get("k") or "")
    parts = key.split("/")
    if len(parts) != 3 or parts[0] != "uploads" or parts[1] != claims["t"] or not _UPLOAD_ID.fullmatch(parts[2]):
        raise UploadRefused(403, "The upload token is not valid or has expired")
    return claims


def _boundary(content_type: str) -> bytes:
    kind, _, params = content_type.partition(";")
    if kind.strip().lower() != "multipart/form-data":
        raise UploadRefused(400, "An upload is a multipart/form-data form")
    for param in params.split(";"):
        name, _, value = param.strip().partition("=")
        if name.lower() == "boundary" and value.strip('"'):
            return value.strip('"').encode("latin-1")
    raise UploadRefused(400, "The form has no boundary")


async def _read_form(
    stream: AsyncIterator[bytes], boundary: bytes, sink: IO[bytes], file_limit: Callable[[dict[str, str]], int]
) -> tuple[dict[str, str], int | None]:
    """Parse a multipart form from `stream`: its text fields, and the `file` field written to `sink` (its size,
    None when it has none). The file is never held in memory whole."""
    chunks = stream.__aiter__()
    buffer = bytearray()
    ended = False

    async def more() -> None:
        nonlocal ended
        if ended:
            raise UploadRefused(400, "The form ends too early")
        try:
            buffer.extend(await chunks.__anext__())
        except StopAsyncIteration:
            ended = True

    opening = b"--" + boundary
    delimiter = b"\r\n" + opening
    while len(buffer) < len(opening) + 2:
        await more()
    if not buffer.startswith(opening):
        raise UploadRefused(400, "The form does not start with its boundary")
    del buffer[: len(opening)]
    fields: dict[str, str] = {}
    written: int | None = None
    text_bytes = 0  # names and values of the text fields: each one is bounded, and so is their sum
    while True:
        while len(buffer) < 2:
            await more()
        if buffer[:2] == b"--":
            return fields, written
        while (end := buffer.find(b"\r\n\r\n")) < 0:
            if len(buffer) > MAX_FORM_FIELD_BYTES:
                raise UploadRefused(400, "A part's headers are too long")
            await more()
        headers = bytes(buffer[2:end]).decode("utf-8", "replace")
        del buffer[: end + 4]
        name = _field_name(headers)
        is_file = name == "file"
        if is_file and written is not None:
            # A second file would be appended to the first: together past the size limit each one is held to.
            raise UploadRefused(400, "The form has more than one file field")
        limit = file_limit(fields) if is_file else MAX_FORM_FIELD_BYTES
        size = 0
        value = bytearray()
        while True:
            found = buffer.find(delimiter)
            keep = len(buffer) if found >= 0 else max(0, len(buffer) - len(delimiter))
            take = found if found >= 0 else keep
            size += take
            if size > limit:
                raise UploadRefused(413 if is_file else 400, f"The {name or 'form'} field is larger than {limit} bytes")
            if is_file:
                sink.write(buffer[:take])
            else:
                value += buffer[:take]
            del buffer[:take]
            if found >= 0:
                del buffer[: len(delimiter)]
                break
            await more()
        if is_file:
            written = size
            continue
        text_bytes += len(name) + size
        if text_bytes > MAX_FORM_FIELDS_BYTES:
            raise UploadRefused(400, f"The form's fields are larger than {MAX_FORM_FIELDS_BYTES} bytes in all")
        if name:
            fields[name] = value.decode("utf-8", "replace").strip()


def _field_name(headers: str) -> str:
    for line in headers.split("\r\n"):
        key, _, value = line.partition(":")
        if key.strip().lower() == "content-disposition":
            found = re.search(r'\bname="([^"]*)"', value) or re.search(r"\bname=([^;\s]+)", value)
            return found.group(1) if found else ""
    return ""


# ---------------------------------------------------------------------------------------------- downloads


class Download(NamedTuple):
    """How a valid link is answered: a redirect to a short-lived URL, or a local file to stream."""

    kind: str  # "redirect" or "path"
    target: str
    filename: str
    mime_type: str


def open_link(token: str) -> Download:
    """Check a download token and count the download; LinkRefused (403 forged, 410 expired, gone, or of a
    tenant that no longer exists)."""
    now = clock.now_ts()
    claims = verify(token, "d", now=now)
    tenant_id, key, filename = str(claims["t"]), str(claims.get("k") or ""), str(claims.get("n") or "file")
    if not is_tenant_file(key, tenant_id):
        raise LinkRefused(403, "This link is not valid.")
    tenant = stores().tenants.get_tenant(tenant_id)
    # Deleted: its links end with it, and count nothing. Created again under the same id (the same link key)
    # since the link was issued: the link was the deleted tenant's, whose files may outlive it (on S3 until the
    # lifecycle rules remove them).
    if tenant is None or not _issued_by(claims, tenant):
        raise LinkRefused(410, "This link has been withdrawn.", filename)
    expires = int(claims["e"])
    lifespan = claims.get("l")
    files = stores().large_files
    if isinstance(lifespan, int) and lifespan > 0:
        first = files.first_download(str(claims.get("i") or key), now=now, keep_until=expires + 86400)
        if now >= first + lifespan:
            raise LinkRefused(410, "This link has expired.", filename)
        expires = min(expires, first + lifespan)
    if files.size(key) is None:
        raise LinkRefused(410, "This file is no longer available.", filename)
    stores().counters.add_tenant_counters(tenant_id, {DOWNLOADS_COUNTER: 1})
    # The type the tenant gave (an attachment's `mime_type` is free text): a header cannot hold "€" (a 500).
    mime = str(claims.get("m") or "")
    mime = mime if _MIME_TYPE.fullmatch(mime) else "application/octet-stream"
    redirect = min(get_large_file_settings().redirect_seconds, max(1, expires - now))
    kind, target = files.download(key, filename=filename, mime_type=mime, expires_in=redirect)
    return Download(kind, target, filename, mime)


DOWNLOADS_COUNTER = "large_file_downloads"


def _issued_by(claims: dict[str, Any], tenant: dict[str, Any]) -> bool:
    """Whether a link was issued by this tenant, not by a deleted one of the same id: by the incarnation it
    names; one issued before links named it, by its issue time against the tenant's creation (to the second)."""
    if "g" in claims:
        return bool(claims["g"] == tenant.get("incarnation"))
    issued = claims.get("c")
    return issued is None or issued >= int(tenant.get("created_at") or 0)


def refusal_page(refused: LinkRefused) -> str:
    """The readable page of a refused link (410 expired, 403 not valid)."""
    title = "Link expired" if refused.status == 410 else "Link not valid"
    named = (
        f" The file <strong>{html.escape(refused.filename)}</strong> is no longer available."
        if (refused.filename and refused.status == 410)
        else ""
    )
    return (
        '<!doctype html><html><head><meta charset="utf-8"><title>'
        f'{title}</title></head><body style="font-family: sans-serif; max-width: 40em; margin: 3em auto">'
        f"<h1>{title}</h1><p>{html.escape(refused.reason)}{named}</p>"
        "<p>Ask the sender of the email for a new link.</p></body></html>"
    )
