"""Reply models of the REST API: they document its OpenAPI schema and are not built to serve a call.

Only `mailproxy.api` imports this module, when `/openapi.json` is first asked for: defining these models
and a validator for each route's replies cost the intake's cold start about 75 ms.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class ErrorReply(BaseModel):
    """Every error: FastAPI's shape."""

    detail: Any


class Ok(BaseModel):
    """A plain acknowledgement."""

    ok: bool = True


class Rejection(BaseModel):
    """A message not queued, and why."""

    id: str
    reason: str


class StatusReply(Ok):
    """`GET /status`."""

    active: bool
    scheduler_active: bool
    pending_messages: int
    uptime_seconds: int


class AddMessagesReply(Ok):
    """`POST /commands/add-messages`."""

    queued: int
    rejected: list[Rejection]


class HistoryEvent(BaseModel):
    """One event of a message's history."""

    event_type: str | None
    event_ts: int | None
    description: str | None
    reported_ts: int | None
    bounce_type: Literal["hard", "soft", "complaint"] | None = Field(
        default=None, description="Bounce and complaint events only (docs/bounces.md)"
    )
    bounce_code: str | None = Field(
        default=None, description="Bounce events: the SMTP reply code (550), else the enhanced status"
    )
    bounce_status: str | None = Field(default=None, description="Bounce events: the enhanced status (5.1.1)")
    recipient: str | None = Field(default=None, description="Bounce and complaint events: the address concerned")


class MessageRecord(BaseModel):
    """A message as `GET /messages` lists it (API.md "Records")."""

    pk: str | None
    id: str
    tenant_id: str
    account_id: str | None
    priority: int
    batch_code: str | None
    status: Literal["pending", "deferred", "suspended", "sending", "sent", "error"]
    deferred_ts: int | None
    sent_ts: int | None
    error_ts: int | None
    error: str | None
    created_at: int | None
    updated_at: int | None
    message: dict[str, Any] = Field(
        description="The payload as submitted (rejected messages too), `from` under that name, without inline "
        "base64 content or any attachment's auth; `{}` when the payload is no longer stored (never null)"
    )
    history: list[HistoryEvent] | None = Field(default=None, description="With include_history=true only")


class MessagesReply(Ok):
    """`GET /messages`."""

    messages: list[MessageRecord]


class DeleteMessagesReply(Ok):
    """`POST /commands/delete-messages`."""

    removed: int
    not_found: list[str]
    unauthorized: list[str]


class CleanupReply(Ok):
    """`POST /commands/cleanup-messages`."""

    removed: int


class SuspensionReply(Ok):
    """`POST /commands/suspend` and `/commands/activate`."""

    tenant_id: str
    batch_code: str | None
    suspended_batches: list[str]
    pending_messages: int


class AccountView(BaseModel):
    """An SMTP account as shown: no password."""

    id: str
    tenant_id: str
    host: str | None
    port: int | None
    user: str | None
    use_tls: bool | None
    limit_per_minute: int | None
    limit_per_hour: int | None
    limit_per_day: int | None
    limit_behavior: str
    batch_size: int | None
    ttl: int = Field(description="Seconds a pooled SMTP connection may live (default 300)")
    max_connections: int = Field(
        description="SMTP sessions the account may have open at once across every sender (default 5; "
        "the deployment's GMP_SMTP_MAX_CONNECTIONS caps it)"
    )
    has_password: bool
    bounce_mailbox: dict[str, Any] | None = Field(
        default=None, description="Where the account's bounces arrive (its password never shown: has_password)"
    )
    created_at: int | None
    updated_at: int | None


class AccountsReply(Ok):
    """`GET /accounts`."""

    accounts: list[AccountView]


class ClientAuthView(BaseModel):
    """A tenant's `client_auth` as shown: the method and user, never a secret."""

    method: str
    user: str | None = None


class TenantView(BaseModel):
    """A tenant as shown: flat, no key hash, no secret."""

    id: str
    name: str | None
    client_base_url: str | None
    client_sync_path: str
    client_attachment_path: str
    client_auth: ClientAuthView
    active: bool
    api_key_expires_at: int | None
    has_api_key: bool
    suspended_batches: list[str]
    paused_accounts: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Accounts the reputation guard paused, each with `paused_ts` and `reason` (docs/suppressions.md)",
    )
    rate_limits: dict[str, Any] | None
    large_file_config: dict[str, Any] | None
    bounce_mailbox: dict[str, Any] | None = Field(
        default=None, description="Where bounces arrive for accounts that name none (password never shown)"
    )
    created_at: int | None
    updated_at: int | None


class TenantsReply(Ok):
    """`GET /tenants`."""

    tenants: list[TenantView]


class KeyReply(Ok):
    """A tenant key, shown this once (`POST /tenant` answers it only for a new tenant)."""

    api_key: str | None = Field(default=None, min_length=43, max_length=43)


class SyncRow(BaseModel):
    """One tenant's report schedule."""

    id: str
    name: str | None
    active: bool
    client_base_url: str | None
    last_sync_ts: int | None
    next_sync_due: int | None
    in_dnd: bool


class SyncStatusReply(Ok):
    """`GET /tenants/sync-status`."""

    sync_interval_seconds: int
    tenants: list[SyncRow]


class Command(BaseModel):
    """One logged mutating call."""

    command_ts: int
    endpoint: str
    tenant_id: str | None
    payload: Any
    response_status: int
    source_ip: str | None = Field(
        description="The caller's address as API Gateway saw it (requestContext.identity.sourceIp); locally the peer"
    )
    request_id: str | None = Field(description="API Gateway's request id: the requestId of its access-log line")


class CommandLogReply(Ok):
    """`GET /command-log`: one page, newest first."""

    commands: list[Command]
    total: int = Field(description="Entries in this page (as genro-mail-proxy: the length of `commands`)")
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next (older) page; null when this page is the last. Opaque."
    )


class SuppressionView(BaseModel):
    """An address on the tenant's suppression list."""

    address: str = Field(description="The address as compared: its domain in lower case")
    source: str = Field(description="`hard`, `soft` or `complaint` (a bounce or a complaint), or `manual`")
    reason: str | None
    code: str | None = Field(description="The bounce's status code (`5.1.1`, `550`), when it had one")
    message_id: str | None = Field(description="The message whose bounce or complaint suppressed it")
    account_id: str | None
    created_at: int | None


class SuppressionsReply(Ok):
    """`GET /suppressions`: one page, in address order."""

    suppressions: list[SuppressionView]
    total: int = Field(description="Entries in this page")
    next_cursor: str | None = Field(description="Pass as `cursor` to get the next page; null on the last. Opaque.")


class AddSuppressionsReply(Ok):
    """`POST /suppressions`."""

    added: list[str]
    already_suppressed: list[str]


class ResumeReply(Ok):
    """`POST /account/{account_id}/resume`."""

    account_id: str
    released: int = Field(description="Held messages of the account put back on their queues")


class UploadForm(BaseModel):
    """The form that uploads the file: POST `url` as multipart/form-data with every field of `fields`, then
    the file last, in the field named `file_field` (an S3 POST policy on AWS, the service's own route locally)."""

    method: Literal["POST"] = "POST"
    url: str
    fields: dict[str, str]
    file_field: Literal["file"] = "file"


class UploadReference(BaseModel):
    """What to put in a message's attachment (with its `filename`) to send the uploaded file."""

    storage_path: str = Field(description="`upload:<upload_id>`")
    fetch_mode: Literal["upload"] = "upload"
    filename: str | None = None


class UploadReply(Ok):
    """`POST /large-files`: an upload of the tenant's, valid until `expires_at`, at most `max_bytes`."""

    upload_id: str
    max_bytes: int
    expires_at: int
    upload: UploadForm
    attachment: UploadReference


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorReply, "description": text}
    for code, text in (
        (400, "Rejected request"),
        (401, "Invalid or missing API token, or a token for another tenant"),
        (
            403,
            "Admin token required: an admin-only route, or an admin-only field (`active`, `rate_limits`)"
            " in a tenant key's PUT /tenant/{id}",
        ),
        (404, "Not found"),
        (413, "Request too large"),
    )
}
