"""Request and reply models of the REST API: frozen dataclasses whose fields are the OpenAPI schema's properties.

Replies are read with `from_dict`, which ignores fields a newer server may add; requests are written with
`to_dict`, which leaves out what was not set (None) so the server applies its own defaults. A test compares
every model with `/openapi.json`, so a drift between the two fails.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Self

from .errors import GmpError

Priority = int | str  # 0..3 or immediate / high / medium / low
Recipients = Sequence[str] | str  # a list or a comma-separated string
MessageStatus = Literal["pending", "deferred", "suspended", "sending", "sent", "error"]


class UnexpectedReply(GmpError):
    """A 2xx reply whose body is not what the API documents (a proxy's page, a missing field)."""


def _plain(value: Any) -> Any:
    """A value as JSON: models through their `to_dict`, sequences as lists."""
    if isinstance(value, _Model):
        return value.to_dict()
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


class _Model:
    """What every model shares: `to_dict`, `from_dict` and the API's name of each field."""

    __slots__ = ()
    # A field whose value is a model (or a list of models): read with that model's from_dict.
    _nested: ClassVar[Mapping[str, type[_Model]]] = {}
    # A field whose API name is a Python keyword: `from_` is "from".
    _api_names: ClassVar[Mapping[str, str]] = {}

    @classmethod
    def api_fields(cls) -> list[str]:
        """The JSON names of the model's fields, as the API (and its OpenAPI schema) spells them."""
        return [cls._api_names.get(f.name, f.name) for f in dataclasses.fields(cls)]  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """The model of a JSON object; fields it does not know are ignored (a newer server's additions)."""
        if not isinstance(data, Mapping):
            raise UnexpectedReply(f"expected an object for {cls.__name__}, got {type(data).__name__}")
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            name = cls._api_names.get(f.name, f.name)
            if name not in data:
                continue
            value = data[name]
            nested = cls._nested.get(f.name)
            if nested is not None and value is not None:
                value = [nested.from_dict(v) for v in value] if isinstance(value, list) else nested.from_dict(value)
            kwargs[f.name] = value
        try:
            return cls(**kwargs)
        except TypeError as exc:  # a required field absent
            raise UnexpectedReply(f"{cls.__name__}: {exc}") from None

    def to_dict(self, *, drop_none: bool = False) -> dict[str, Any]:
        """The model as the API's JSON object (`drop_none`: leave out unset fields)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if drop_none and value is None:
                continue
            out[self._api_names.get(f.name, f.name)] = _plain(value)
        return out


class _Request(_Model):
    """A body the client sends: unset (None) fields are left out so the server's defaults apply."""

    __slots__ = ()

    def to_dict(self, *, drop_none: bool = True) -> dict[str, Any]:
        """The JSON body, without the fields left unset."""
        return _Model.to_dict(self, drop_none=drop_none)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """The model of a body written as a dict; an unknown field is a TypeError (the server would answer 422)."""
        attributes = {f.name: f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        attributes |= {api: name for name, api in cls._api_names.items()}
        attributes |= {alias: attributes[api] for alias, api in cls._aliases.items()}
        unknown = sorted(set(data) - set(attributes))
        if unknown:
            raise TypeError(f"{cls.__name__}: unknown field(s) {', '.join(unknown)}")
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            name = attributes[key]
            nested = cls._nested.get(name)
            if nested is not None and isinstance(value, list):
                value = [nested.from_dict(v) if isinstance(v, Mapping) else v for v in value]
            elif nested is not None and isinstance(value, Mapping):
                value = nested.from_dict(value)
            kwargs[name] = value
        return cls(**kwargs)

    # Other names the API accepts for a field (genro's `from_addr`).
    _aliases: ClassVar[Mapping[str, str]] = {}


# ---------------------------------------------------------------- requests


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientAuth(_Request):
    """How the service authenticates to the tenant's callback and attachment endpoint (or an attachment's URL)."""

    method: Literal["none", "bearer", "basic"] = "none"
    token: str | None = field(default=None, repr=False)
    user: str | None = None
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Attachment(_Request):
    """An attachment of a message: where the service fetches it."""

    filename: str
    storage_path: str
    mime_type: str | None = None
    fetch_mode: Literal["base64", "http_url", "endpoint", "s3"] | None = None
    content_md5: str | None = None
    auth: ClientAuth | Mapping[str, Any] | None = field(default=None, repr=False)

    _nested = {"auth": ClientAuth}


@dataclass(frozen=True, slots=True, kw_only=True)
class Message(_Request):
    """A message to queue (`POST /commands/add-messages`); `from_` is sent as `from`."""

    id: str
    account_id: str
    from_: str
    to: Recipients
    subject: str
    tenant_id: str | None = None
    cc: Recipients | None = None
    bcc: Recipients | None = None
    reply_to: str | None = None
    return_path: str | None = None
    body: str | None = None
    content_type: Literal["plain", "html"] | None = None
    headers: Mapping[str, Any] | None = None
    message_id: str | None = None
    attachments: Sequence[Attachment | Mapping[str, Any]] | None = None
    priority: Priority | None = None
    deferred_ts: int | None = None
    batch_code: str | None = None

    _nested = {"attachments": Attachment}
    _api_names = {"from_": "from"}
    _aliases = {"from_addr": "from"}


@dataclass(frozen=True, slots=True, kw_only=True)
class BounceMailbox(_Request):
    """The IMAP mailbox an account's (or a tenant's) bounces arrive in; its password is sealed and never shown."""

    host: str
    user: str
    port: int | None = None
    use_tls: bool | None = None
    password: str | None = field(default=None, repr=False)
    folder: str | None = None
    processed_folder: str | None = None
    return_path: str | None = None
    verp: bool | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Account(_Request):
    """An SMTP account of a tenant (`POST /account`, an upsert on tenant and id)."""

    id: str
    host: str
    port: int
    tenant_id: str | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    use_tls: bool | None = None
    limit_per_minute: int | None = None
    limit_per_hour: int | None = None
    limit_per_day: int | None = None
    limit_behavior: Literal["defer", "reject"] | None = None
    batch_size: int | None = None
    ttl: int | None = None
    max_connections: int | None = None
    bounce_mailbox: BounceMailbox | Mapping[str, Any] | None = None

    _nested = {"bounce_mailbox": BounceMailbox}


@dataclass(frozen=True, slots=True, kw_only=True)
class TenantRateLimits(_Request):
    """A tenant's `rate_limits` (stored and returned for compatibility, not enforced)."""

    per_minute: int | None = None
    per_hour: int | None = None
    per_day: int | None = None
    hourly: int | None = None
    daily: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Tenant(_Request):
    """A tenant (`POST /tenant`: creates it, or overwrites the configuration of an existing one)."""

    id: str
    name: str | None = None
    client_base_url: str | None = None
    client_sync_path: str | None = None
    client_attachment_path: str | None = None
    client_auth: ClientAuth | Mapping[str, Any] | None = field(default=None, repr=False)
    active: bool | None = None
    rate_limits: TenantRateLimits | Mapping[str, Any] | None = None
    large_file_config: Mapping[str, Any] | None = None
    bounce_mailbox: BounceMailbox | Mapping[str, Any] | None = None
    api_key_expires_at: int | None = None

    _nested = {"client_auth": ClientAuth, "rate_limits": TenantRateLimits, "bounce_mailbox": BounceMailbox}


# The fields `update_tenant` may change (`PUT /tenant/{id}`: the schema's TenantFields).
TENANT_UPDATE_FIELDS = (
    "name",
    "client_base_url",
    "client_sync_path",
    "client_attachment_path",
    "client_auth",
    "active",
    "rate_limits",
    "large_file_config",
    "bounce_mailbox",
)


# ---------------------------------------------------------------- replies


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthReply(_Model):
    """`GET /health`: true when the service answers."""

    ok: bool
    status: str = "ok"

    def __bool__(self) -> bool:
        return self.ok


@dataclass(frozen=True, slots=True, kw_only=True)
class Rejection(_Model):
    """A message not queued, and why."""

    id: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusReply(_Model):
    """`GET /status` (pending is the tenant's own count with a tenant key)."""

    ok: bool = True
    active: bool
    scheduler_active: bool
    pending_messages: int
    uptime_seconds: int


@dataclass(frozen=True, slots=True, kw_only=True)
class AddMessagesResult(_Model):
    """`POST /commands/add-messages`, summed over the requests a long list was split into."""

    ok: bool = True
    queued: int
    rejected: list[Rejection] = field(default_factory=list)

    _nested = {"rejected": Rejection}


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryEvent(_Model):
    """One event of a message's history."""

    event_type: str | None = None
    event_ts: int | None = None
    description: str | None = None
    reported_ts: int | None = None
    bounce_type: str | None = None  # bounce and complaint events
    bounce_code: str | None = None
    bounce_status: str | None = None
    recipient: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageRecord(_Model):
    """A message as `GET /messages` lists it; `history` only with include_history."""

    pk: str | None = None
    id: str
    tenant_id: str
    account_id: str | None = None
    priority: int
    batch_code: str | None = None
    status: MessageStatus
    deferred_ts: int | None = None
    sent_ts: int | None = None
    error_ts: int | None = None
    error: str | None = None
    created_at: int | None = None
    updated_at: int | None = None
    message: dict[str, Any] = field(default_factory=dict)
    history: list[HistoryEvent] | None = None

    _nested = {"history": HistoryEvent}


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteMessagesResult(_Model):
    """`POST /commands/delete-messages`."""

    ok: bool = True
    removed: int
    not_found: list[str] = field(default_factory=list)
    unauthorized: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True, kw_only=True)
class CleanupResult(_Model):
    """`POST /commands/cleanup-messages`."""

    ok: bool = True
    removed: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SuspensionReply(_Model):
    """`POST /commands/suspend` and `/commands/activate`: what is suspended now."""

    ok: bool = True
    tenant_id: str
    batch_code: str | None = None
    suspended_batches: list[str] = field(default_factory=list)
    pending_messages: int


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountInfo(_Model):
    """An SMTP account as the API shows it: no password, `has_password` instead."""

    id: str
    tenant_id: str
    host: str | None = None
    port: int | None = None
    user: str | None = None
    use_tls: bool | None = None
    limit_per_minute: int | None = None
    limit_per_hour: int | None = None
    limit_per_day: int | None = None
    limit_behavior: str = "defer"
    batch_size: int | None = None
    ttl: int = 300
    max_connections: int = 5
    has_password: bool = False
    bounce_mailbox: dict[str, Any] | None = None
    created_at: int | None = None
    updated_at: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientAuthInfo(_Model):
    """A tenant's `client_auth` as shown: the method and user, never a secret."""

    method: str
    user: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TenantInfo(_Model):
    """A tenant as the API shows it: flat, no key hash, no secret."""

    id: str
    name: str | None = None
    client_base_url: str | None = None
    client_sync_path: str = "/mail-proxy/sync"
    client_attachment_path: str = "/mail-proxy/attachments"
    client_auth: ClientAuthInfo = field(default_factory=lambda: ClientAuthInfo(method="none"))
    active: bool = True
    api_key_expires_at: int | None = None
    has_api_key: bool = False
    suspended_batches: list[str] = field(default_factory=list)
    paused_accounts: dict[str, Any] = field(default_factory=dict)  # account id → {paused_ts, reason}
    rate_limits: dict[str, Any] | None = None
    large_file_config: dict[str, Any] | None = None
    bounce_mailbox: dict[str, Any] | None = None
    created_at: int | None = None
    updated_at: int | None = None

    _nested = {"client_auth": ClientAuthInfo}


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyReply(_Model):
    """A tenant key, shown this once (`POST /tenant` answers it only for a new tenant)."""

    ok: bool = True
    api_key: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncRow(_Model):
    """One tenant's report schedule."""

    id: str
    name: str | None = None
    active: bool
    client_base_url: str | None = None
    last_sync_ts: int | None = None
    next_sync_due: int | None = None
    in_dnd: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncStatusReply(_Model):
    """`GET /tenants/sync-status`."""

    ok: bool = True
    sync_interval_seconds: int
    tenants: list[SyncRow] = field(default_factory=list)

    _nested = {"tenants": SyncRow}


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandEntry(_Model):
    """One logged mutating call (secrets removed from its payload)."""

    command_ts: int
    endpoint: str
    tenant_id: str | None = None
    payload: Any = None
    response_status: int
    source_ip: str | None = None
    request_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandLogPage(_Model):
    """`GET /command-log`: one page, newest first; `next_cursor` continues it (None on the last page)."""

    ok: bool = True
    commands: list[CommandEntry] = field(default_factory=list)
    total: int = 0
    next_cursor: str | None = None

    _nested = {"commands": CommandEntry}


@dataclass(frozen=True, slots=True, kw_only=True)
class SuppressionEntry(_Model):
    """An address on the tenant's suppression list: never sent to while it is there."""

    address: str
    source: str
    reason: str | None = None
    code: str | None = None
    message_id: str | None = None
    account_id: str | None = None
    created_at: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SuppressionsPage(_Model):
    """`GET /suppressions`: one page in address order; `next_cursor` continues it (None on the last page)."""

    ok: bool = True
    suppressions: list[SuppressionEntry] = field(default_factory=list)
    total: int = 0
    next_cursor: str | None = None

    _nested = {"suppressions": SuppressionEntry}


@dataclass(frozen=True, slots=True, kw_only=True)
class SuppressionsAdded(_Model):
    """`POST /suppressions`: the addresses added, and those already on the list."""

    ok: bool = True
    added: list[str] = field(default_factory=list)
    already_suppressed: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True, kw_only=True)
class ResumeResult(_Model):
    """`POST /account/{id}/resume`: the held messages released."""

    ok: bool = True
    account_id: str
    released: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class UploadForm(_Model):
    """The form that uploads a big file: POST `url` as multipart/form-data, `fields` first, the file last."""

    method: str = "POST"
    url: str
    fields: dict[str, str] = field(default_factory=dict)
    file_field: str = "file"


@dataclass(frozen=True, slots=True, kw_only=True)
class UploadReference(_Model):
    """What a message's attachment names to send the uploaded file (`upload:<id>`)."""

    storage_path: str
    fetch_mode: str = "upload"
    filename: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class UploadReply(_Model):
    """`POST /large-files`: an upload of the tenant's (docs/large-files.md)."""

    ok: bool = True
    upload_id: str
    max_bytes: int
    expires_at: int
    upload: UploadForm
    attachment: UploadReference

    _nested = {"upload": UploadForm, "attachment": UploadReference}


# Each model and the OpenAPI component it mirrors (the schema test walks this table).
SCHEMAS: dict[type[_Model], str] = {
    ClientAuth: "ClientAuth",
    Attachment: "Attachment",
    Message: "Message",
    BounceMailbox: "BounceMailbox",
    Account: "Account",
    TenantRateLimits: "TenantRateLimits",
    Tenant: "Tenant",
    Rejection: "Rejection",
    StatusReply: "StatusReply",
    AddMessagesResult: "AddMessagesReply",
    HistoryEvent: "HistoryEvent",
    MessageRecord: "MessageRecord",
    DeleteMessagesResult: "DeleteMessagesReply",
    CleanupResult: "CleanupReply",
    SuspensionReply: "SuspensionReply",
    AccountInfo: "AccountView",
    ClientAuthInfo: "ClientAuthView",
    TenantInfo: "TenantView",
    KeyReply: "KeyReply",
    SyncRow: "SyncRow",
    SyncStatusReply: "SyncStatusReply",
    CommandEntry: "Command",
    CommandLogPage: "CommandLogReply",
    SuppressionEntry: "SuppressionView",
    SuppressionsPage: "SuppressionsReply",
    SuppressionsAdded: "AddSuppressionsReply",
    ResumeResult: "ResumeReply",
    UploadForm: "UploadForm",
    UploadReference: "UploadReference",
    UploadReply: "UploadReply",
}
