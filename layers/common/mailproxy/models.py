"""Request models of the REST API (pydantic, used by the intake function only)."""

from __future__ import annotations

import json
import math
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from mailproxy.domain import MAX_MESSAGE_ID_CHARS
from mailproxy.tenants import DEFAULT_CONNECTION_TTL

MAX_MESSAGES_PER_REQUEST = 1000
MAX_TIMESTAMP = 253_402_300_799  # 9999-12-31: keeps numbers inside DynamoDB's range
TENANT_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
_TENANT_ID_RE = re.compile(TENANT_ID_PATTERN)


def _no_surrogates(value: str) -> str:
    # A lone surrogate ("\ud800") parses as JSON but cannot be stored as UTF-8.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("text must be valid Unicode (no lone surrogates)") from exc
    return value


def _fits_kms(value: str) -> str:
    if len(value.encode("utf-8")) > MAX_SECRET_BYTES:
        raise ValueError(f"must fit in {MAX_SECRET_BYTES} bytes of UTF-8")
    return value


def _single_line(value: str) -> str:
    if "\r" in value or "\n" in value or "\x00" in value:
        raise ValueError("must not contain line breaks or NUL")
    return value


MAX_SECRET_BYTES = 4096  # KMS Encrypt takes at most 4096 bytes of plaintext
MAX_CONFIG_BYTES = 64_000  # rate_limits / large_file_config: well inside a 400 KB DynamoDB item
_MAX_DEPTH = 16  # DynamoDB refuses documents nested deeper than 32 levels


def _json_text(value: Any, depth: int = 0) -> Any:
    """Check every string (keys included) of a free-form JSON value for lone surrogates."""
    if depth > _MAX_DEPTH:
        raise ValueError(f"nested more than {_MAX_DEPTH} levels deep")
    if isinstance(value, str):
        _no_surrogates(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            _no_surrogates(str(key))
            _json_text(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _json_text(item, depth + 1)
    return value


def _storable(value: Any) -> Any:
    """A free-form JSON value that DynamoDB can hold as a document (else a 422, not a failed write)."""
    _json_text(value)
    for node in _nodes(value):
        if isinstance(node, dict) and any(key == "" for key in node):
            raise ValueError("object keys must not be empty")
        if isinstance(node, bool):
            continue
        if isinstance(node, int) and abs(node) >= 10**38:
            raise ValueError("numbers must have at most 38 digits")
        if isinstance(node, float) and not (math.isfinite(node) and (node == 0 or 1e-130 <= abs(node) < 1e126)):
            raise ValueError("numbers must be finite, between 1e-130 and 1e126 in magnitude")
    if len(json.dumps(value, ensure_ascii=False).encode("utf-8")) > MAX_CONFIG_BYTES:
        raise ValueError(f"at most {MAX_CONFIG_BYTES} bytes of JSON")
    return value


def _nodes(value: Any) -> list[Any]:
    found = [value]
    if isinstance(value, dict):
        for item in value.values():
            found += _nodes(item)
    elif isinstance(value, list):
        for item in value:
            found += _nodes(item)
    return found


Text = Annotated[str, AfterValidator(_no_surrogates)]
Line = Annotated[str, AfterValidator(_no_surrogates), AfterValidator(_single_line)]
TenantId = Annotated[str, Field(pattern=TENANT_ID_PATTERN)]
Timestamp = Annotated[int, Field(ge=-MAX_TIMESTAMP, le=MAX_TIMESTAMP)]
# No length bound here: GMP_MAX_RECIPIENTS counts to + cc + bcc together, as a per-message rejection.
Addresses = list[Line] | Text
JsonText = Annotated[Any, AfterValidator(_json_text)]
Document = Annotated[dict[str, Any], AfterValidator(_storable)]
MessageId = Annotated[
    str,
    Field(min_length=1, max_length=MAX_MESSAGE_ID_CHARS),
    AfterValidator(_no_surrogates),
    AfterValidator(_single_line),
]


def is_tenant_id(value: str) -> bool:
    """True when `value` has the shape of a tenant id."""
    return bool(_TENANT_ID_RE.fullmatch(value))  # `$` alone would accept a trailing newline


class Strict(BaseModel):
    """Base of every request model: unknown fields are a 422 naming them."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ClientAuth(Strict):
    """How the service authenticates to a tenant's endpoints (or an attachment URL)."""

    method: Literal["none", "bearer", "basic"] = "none"
    # A bearer token travels as a header value: a line break could never be sent, and the error would quote it.
    token: Line | None = Field(default=None, max_length=4096)
    user: Text | None = Field(default=None, max_length=1024)
    password: Text | None = Field(default=None, max_length=4096)

    @model_validator(mode="after")
    def _secrets_fit_kms(self) -> ClientAuth:
        # Stored as one KMS ciphertext of this JSON (mailproxy.tenants): too long would fail the write.
        secrets = {k: v for k, v in (("token", self.token), ("password", self.password)) if v}
        if len(json.dumps(secrets).encode("utf-8")) > MAX_SECRET_BYTES:
            raise ValueError(f"token and password must fit in {MAX_SECRET_BYTES} bytes together")
        return self


class Attachment(Strict):
    """An attachment reference of a message."""

    filename: Line = Field(
        min_length=1,
        max_length=255,
        description="The name sent; a `{MD5:<hex>}` marker (genro-mail-proxy's cache key, never checked against "
        "the content) is removed with the separator it leaves: `report_{MD5:ab12}.pdf` is sent as `report.pdf`",
    )
    storage_path: Text = Field(min_length=1)
    mime_type: Line | None = Field(default=None, max_length=255)
    fetch_mode: Literal["base64", "http_url", "endpoint", "s3", "upload"] | None = Field(
        default=None,
        description="How storage_path is read; by default from its form (`base64:`, `http(s)://`, `s3://`, "
        "`upload:<id>` of POST /large-files, else the tenant's endpoint)",
    )
    content_md5: str | None = Field(
        default=None,
        pattern=r"^[0-9a-fA-F]{32}$",
        description="MD5 of the content, checked once fetched: a mismatch fails the message permanently with "
        "`Attachment fetch failed for <filename>: MD5 mismatch (expected <hex>, got <hex>)`",
    )
    auth: ClientAuth | None = None


class Message(Strict):
    """A message as an application submits it (API.md "Message")."""

    id: MessageId  # it is also the X-Genro-Mail-ID header: one line
    tenant_id: Text | None = Field(default=None, max_length=64)
    account_id: Text = Field(min_length=1, max_length=64)
    from_: Line = Field(
        validation_alias=AliasChoices("from", "from_addr"),
        serialization_alias="from",
        min_length=1,
        max_length=998,
        description="The sender; `from_addr` is accepted in its place (genro-mail-proxy's client sends it), "
        "the stored payload keeps `from`",
    )
    to: Addresses = Field(description="List or comma string; to + cc + bcc at most GMP_MAX_RECIPIENTS (1000)")
    cc: Addresses | None = None
    bcc: Addresses | None = None
    reply_to: Line | None = Field(default=None, max_length=998)
    return_path: Line | None = Field(default=None, max_length=998)
    subject: Line = Field(min_length=1, max_length=10_000, description="At most GMP_MAX_HEADER_VALUE_BYTES (16 KB)")
    body: Text = ""
    content_type: Literal["plain", "html"] = "plain"
    headers: dict[Line, JsonText] | None = Field(
        default=None,
        description="Extra headers; not From, To, Cc, Bcc, Sender, Date, Message-ID, MIME-Version, Return-Path,"
        " X-Genro-Mail-ID or Content-*; each value at most GMP_MAX_HEADER_VALUE_BYTES (16 KB), every header"
        " together at most GMP_MAX_HEADER_BYTES (100 KB)",
    )
    message_id: Line | None = Field(default=None, max_length=998)
    attachments: list[Attachment] | None = Field(default=None, max_length=1000)
    priority: int | str | None = None
    deferred_ts: Timestamp | None = None
    batch_code: Text | None = Field(default=None, max_length=64)

    @field_validator("priority")
    @classmethod
    def _known_priority(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, str) and value.strip().lower() not in PRIORITY_LABELS:
            raise ValueError("priority must be 0..3 or immediate, high, medium, low")
        return value

    def payload(self) -> dict[str, Any]:
        """The message as stored and sent: submitted fields only, `from` under its own name."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


PRIORITY_LABELS = {"immediate": 0, "high": 1, "medium": 2, "low": 3}


def priority_of(value: int | str | None, default: int = 2) -> int:
    """A priority label or int as 0..3 (ints clamped, labels in any case)."""
    if value is None:
        return default
    if isinstance(value, str):
        return PRIORITY_LABELS[value.strip().lower()]
    return min(3, max(0, value))


class AddMessages(Strict):
    """Body of `POST /commands/add-messages`."""

    messages: list[Message]
    default_priority: int | str | None = None

    @field_validator("default_priority")
    @classmethod
    def _known_default(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, str) and value.strip().lower() not in PRIORITY_LABELS:
            raise ValueError("default_priority must be 0..3 or immediate, high, medium, low")
        return value


class DeleteMessages(Strict):
    """Body of `POST /commands/delete-messages`."""

    ids: list[MessageId] = Field(max_length=10_000)
    tenant_id: Text | None = Field(default=None, max_length=64)


class Cleanup(Strict):
    """Body of `POST /commands/cleanup-messages`."""

    older_than_seconds: int | None = Field(default=None, ge=0, le=MAX_TIMESTAMP)
    tenant_id: Text | None = Field(default=None, max_length=64)


# genro-mail-proxy 0.6's AccountPayload fields for PEC (Italian certified mail) accounts and their IMAP inbox.
PEC_FIELDS = ("is_pec_account", "imap_host", "imap_port", "imap_user", "imap_password", "imap_ssl", "imap_folder")


class BounceMailbox(Strict):
    """An IMAP mailbox that receives the bounces of an account, or of every account of a tenant (docs/bounces.md)."""

    host: Line = Field(min_length=1, max_length=255)
    port: int = Field(default=993, ge=1, le=65535)
    use_tls: bool | None = Field(
        default=None,
        description="null: implicit TLS on 993, elsewhere STARTTLS when offered (no password over a plain "
        "session); true: TLS required; false: plain (a test server on loopback)",
    )
    user: Line = Field(min_length=1, max_length=1024)
    password: Annotated[Text, AfterValidator(_fits_kms)] | None = Field(
        default=None, max_length=4096, description="Sealed at rest like SMTP passwords; never shown"
    )
    folder: Line = Field(default="INBOX", min_length=1, max_length=255)
    processed_folder: Line | None = Field(
        default=None,
        max_length=255,
        description="Move what was processed there; else it is flagged \\Seen and $GmpProcessed where it is",
    )
    return_path: Line | None = Field(
        default=None,
        max_length=254,
        description="The address of this mailbox: the envelope sender (MAIL FROM) of the account's messages "
        "that give no return_path of their own",
    )
    verp: bool = Field(
        default=False,
        description="Send each message with its own return path, return_path's local part + a signed token "
        "(bounces+<token>@domain), so that a bounce quoting nothing is still matched",
    )

    @field_validator("return_path")
    @classmethod
    def _one_address(cls, value: str | None) -> str | None:
        from mailproxy.addresses import is_valid_address

        if value is not None and ("<" in value or not is_valid_address(value)):
            raise ValueError("return_path must be a bare email address")
        return value

    @model_validator(mode="after")
    def _verp_needs_return_path(self) -> BounceMailbox:
        if self.verp and not self.return_path:
            raise ValueError("verp needs a return_path (the address the tokens are added to)")
        return self


class Account(Strict):
    """An SMTP account of a tenant (API.md "Account"). genro-mail-proxy's PEC fields (`is_pec_account`, `imap_*`)
    are refused with a 422 "PEC accounts are not supported" unless null or false."""

    id: Text = Field(min_length=1, max_length=64)
    tenant_id: Text | None = Field(default=None, max_length=64)
    host: Line = Field(min_length=1, max_length=255)
    port: int = Field(ge=1, le=65535)
    user: Text | None = Field(default=None, max_length=1024)
    password: Annotated[Text, AfterValidator(_fits_kms)] | None = Field(default=None, max_length=4096)
    use_tls: bool | None = None
    limit_per_minute: int | None = Field(default=None, ge=-MAX_TIMESTAMP, le=MAX_TIMESTAMP)
    limit_per_hour: int | None = Field(default=None, ge=-MAX_TIMESTAMP, le=MAX_TIMESTAMP)
    limit_per_day: int | None = Field(default=None, ge=-MAX_TIMESTAMP, le=MAX_TIMESTAMP)
    limit_behavior: Literal["defer", "reject"] = "defer"
    batch_size: int | None = Field(default=None, ge=1, le=10_000)
    bounce_mailbox: BounceMailbox | None = Field(
        default=None, description="Where this account's bounces arrive (else the tenant's bounce_mailbox)"
    )
    ttl: int = Field(
        default=DEFAULT_CONNECTION_TTL,
        ge=0,
        le=MAX_TIMESTAMP,
        description="Seconds a pooled SMTP connection of the account may live: an older one is closed with "
        "QUIT and a new one opened (genro-mail-proxy's pool; default 300, null means the default); "
        "0: a new connection for every message",
    )

    max_connections: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description="SMTP sessions the account may have open at once, across every sender of the service "
        "(default 5, genro-mail-proxy's pool size; never above the deployment's GMP_SMTP_MAX_CONNECTIONS)",
    )

    @field_validator("ttl", mode="before")
    @classmethod
    def _default_ttl(cls, value: Any) -> Any:
        return DEFAULT_CONNECTION_TTL if value is None else value  # genro's AccountPayload allows null

    @model_validator(mode="before")
    @classmethod
    def _no_pec(cls, data: Any) -> Any:
        # genro-mail-proxy's PEC (certified mail) fields ask for receipts read over IMAP, which this service
        # does not do: say so rather than "extra field". Left at null/false by a client, they ask for nothing.
        if isinstance(data, dict):
            asked = [name for name in PEC_FIELDS if data.get(name) not in (None, False)]
            if asked:
                raise PydanticCustomError(
                    "pec_not_supported",
                    "PEC accounts are not supported (fields {fields})",
                    {"fields": ", ".join(asked)},
                )
            data = {k: v for k, v in data.items() if k not in PEC_FIELDS}
        return data


MAX_QUOTA = 10**12  # far above any real quota, well inside DynamoDB's numbers


class TenantRateLimits(Strict):
    """A tenant's quota across all its accounts (`rate_limits`): messages accepted per UTC minute, hour, day.

    genro-mail-proxy's keys `hourly` and `daily` are accepted as `per_hour` and `per_day`; 0 or absent
    means unlimited, as there.
    """

    per_minute: int | None = Field(default=None, ge=0, le=MAX_QUOTA)
    per_hour: int | None = Field(default=None, ge=0, le=MAX_QUOTA)
    per_day: int | None = Field(default=None, ge=0, le=MAX_QUOTA)
    hourly: int | None = Field(default=None, ge=0, le=MAX_QUOTA)
    daily: int | None = Field(default=None, ge=0, le=MAX_QUOTA)

    @model_validator(mode="after")
    def _one_name_per_window(self) -> TenantRateLimits:
        for genro, ours in (("hourly", "per_hour"), ("daily", "per_day")):
            if getattr(self, genro) is not None and getattr(self, ours) is not None:
                raise ValueError(f"give {genro} or {ours}, not both")
        return self


_TENANT_WRITABLE = "Tenant key or admin token."
_ADMIN_ONLY = "Admin token only: with a tenant key, PUT /tenant/{id} naming it is a 403."


class TenantFields(Strict):
    """The configurable fields of a tenant, every one optional (the body of `PUT /tenant/{id}`).

    A tenant key may write every field but `active` and `rate_limits` (docs/api-fields.md).
    """

    name: Text | None = Field(default=None, max_length=255, description=_TENANT_WRITABLE)
    client_base_url: Line | None = Field(default=None, max_length=2048, description=_TENANT_WRITABLE)
    client_sync_path: Line | None = Field(default=None, max_length=1024, description=_TENANT_WRITABLE)
    client_attachment_path: Line | None = Field(default=None, max_length=1024, description=_TENANT_WRITABLE)
    client_auth: ClientAuth | None = Field(default=None, description=_TENANT_WRITABLE)
    active: bool | None = Field(default=None, description=f"{_ADMIN_ONLY} An inactive tenant's messages are held.")
    rate_limits: TenantRateLimits | None = Field(
        default=None, description=f"{_ADMIN_ONLY} The tenant's sending quotas."
    )
    large_file_config: Document | None = Field(
        default=None,
        description=f"{_TENANT_WRITABLE} How the tenant's large attachments are handled (docs/large-files.md): "
        "`enabled`, `max_size_mb` (10), `action` (`warn`, `reject`, `rewrite`), `file_ttl_days` (30, at most 365), "
        "`lifespan_after_download_days`, `public_base_url`; other keys are kept as given.",
    )
    bounce_mailbox: BounceMailbox | None = Field(
        default=None,
        description=f"{_TENANT_WRITABLE} Where bounces arrive for the accounts that name no bounce_mailbox "
        "(docs/bounces.md); null removes it",
    )

    @field_validator("large_file_config")
    @classmethod
    def _large_file_fields(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value:
            from mailproxy.large_files import config_problems

            problems = config_problems(value)
            if problems:
                raise ValueError("; ".join(problems))
        return value

    @field_validator("client_base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and value != "" and not re.match(r"^https?://[^\s/]+", value):
            raise ValueError("client_base_url must be an http:// or https:// URL")
        return value

    @field_validator("client_sync_path", "client_attachment_path")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is not None and value != "" and not value.startswith("/"):
            raise ValueError("path must start with /")
        return value


class Tenant(TenantFields):
    """Body of `POST /tenant` (API.md "Tenant")."""

    id: TenantId
    api_key_expires_at: Timestamp | None = None


class NewApiKey(Strict):
    """Body of `POST /tenant/{id}/api-key`."""

    expires_at: Timestamp | None = None


MAX_SUPPRESSIONS_PER_REQUEST = 1000


class AddSuppressions(Strict):
    """Body of `POST /suppressions`: addresses the tenant never wants mailed (docs/suppressions.md)."""

    # An entry is a line as a recipient's is (`Name <addr>` may be long); its address is checked as at intake.
    addresses: list[Annotated[Line, Field(min_length=1, max_length=998)]] = Field(
        min_length=1, max_length=MAX_SUPPRESSIONS_PER_REQUEST
    )
    reason: Line | None = Field(default=None, max_length=500)
    tenant_id: Text | None = Field(default=None, max_length=64)


class NewUpload(Strict):
    """Body of `POST /large-files` (every field optional)."""

    tenant_id: Text | None = Field(default=None, max_length=64, description="Implied by a tenant key")
    filename: Line | None = Field(default=None, min_length=1, max_length=255, description="Copied to the reference")
    size: int | None = Field(default=None, ge=1, description="The file's size, refused at once when over the limit")
