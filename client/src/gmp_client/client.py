"""`Client`: every route of the API as a method, over one httpx.Client, with retries."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Self

import httpx

from . import _core
from ._core import Call
from .errors import ApiError
from .models import (
    Account,
    AccountInfo,
    AddMessagesResult,
    CleanupResult,
    CommandEntry,
    CommandLogPage,
    DeleteMessagesResult,
    HealthReply,
    Message,
    MessageRecord,
    ResumeResult,
    StatusReply,
    SuppressionEntry,
    SuppressionsAdded,
    SuppressionsPage,
    SuspensionReply,
    SyncStatusReply,
    Tenant,
    TenantInfo,
    UploadReply,
)


class Client:
    """A client of the mail proxy's REST API: the admin token or a tenant key; use it as a context manager."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        retries: int = 3,
        transport: httpx.BaseTransport | None = None,
        backoff: float = 0.5,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff  # seconds before the first retry, doubled at each
        self._http = httpx.Client(
            base_url=self.base_url, headers=_core.token_headers(token), timeout=timeout, transport=transport
        )
        self._has_token = token is not None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r}, token={'***' if self._has_token else None})"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def _send[T](self, call: Call[T]) -> T:
        """Send `call`, again after a retryable failure (README "Retries"), and read its reply."""
        attempt = 0
        while True:
            try:
                response = self._http.request(
                    call.method,
                    call.path,
                    params=call.params,
                    json=call.body,
                    headers=call.headers,
                )
            except httpx.TransportError as exc:
                delay = _core.retry_delay(call, attempt, self.retries, self.backoff, error=exc)
                if delay is None:
                    raise _core.connection_failed(self.base_url, call, exc, self.timeout) from None
            else:
                delay = _core.retry_delay(call, attempt, self.retries, self.backoff, response=response)
                if delay is None:
                    return _core.read_reply(call, response)
            time.sleep(delay)
            attempt += 1

    # ------------------------------------------------------------ service

    def health(self) -> HealthReply:
        """`GET /health`: true when the service answers (no token needed)."""
        return self._send(_core.health())

    def status(self) -> StatusReply:
        """`GET /status`: scheduler state and pending count (the tenant's own with a tenant key)."""
        return self._send(_core.status())

    def metrics_text(self, metrics_token: str | None = None) -> str:
        """`GET /metrics`: the Prometheus text (`metrics_token` when the deployment requires one)."""
        return self._send(_core.metrics_text(metrics_token))

    # ------------------------------------------------------------ messages

    def add_messages(
        self, messages: Sequence[Message | Mapping[str, Any]], default_priority: int | str | None = None
    ) -> AddMessagesResult:
        """Queue messages, in requests of at most 1000; the results summed (queued) and joined (rejected)."""
        results: list[AddMessagesResult] = []
        refused: ApiError | None = None
        for chunk in _core.chunks(messages):
            try:
                results.append(self._send(_core.add_messages(chunk, default_priority)))
            except ApiError as exc:
                partial = _core.nothing_queued(exc)
                if partial is None:
                    raise
                results.append(partial)
                refused = refused or exc
        return _core.merge_added(results, refused)

    def list_messages(
        self, tenant_id: str | None = None, active_only: bool = False, include_history: bool = False
    ) -> list[MessageRecord]:
        """`GET /messages`: by priority then age; `active_only`: unsent only."""
        return self._send(_core.list_messages(tenant_id, active_only, include_history))

    def get_message(self, message_id: str, tenant_id: str | None = None) -> MessageRecord:
        """One message with its history; NotFoundError if the tenant has no such id."""
        records = self.list_messages(tenant_id=tenant_id, include_history=True)
        return _core.find_message(records, message_id, tenant_id)

    def delete_messages(self, ids: Iterable[str], tenant_id: str | None = None) -> DeleteMessagesResult:
        """`POST /commands/delete-messages`."""
        return self._send(_core.delete_messages(ids, tenant_id))

    def cleanup_messages(self, older_than_seconds: int | None = None, tenant_id: str | None = None) -> CleanupResult:
        """`POST /commands/cleanup-messages`: remove reported messages (older than the retention by default)."""
        return self._send(_core.cleanup_messages(older_than_seconds, tenant_id))

    def run_now(self) -> None:
        """`POST /commands/run-now`: report now (a tenant key) or every due tenant and message (admin)."""
        self._send(_core.run_now())

    def suspend(self, tenant_id: str | None = None, batch_code: str | None = None) -> SuspensionReply:
        """`POST /commands/suspend`: the whole tenant, or one batch."""
        return self._send(_core.suspend(tenant_id, batch_code))

    def activate(self, tenant_id: str | None = None, batch_code: str | None = None) -> SuspensionReply:
        """`POST /commands/activate`: the whole tenant, or one batch."""
        return self._send(_core.activate(tenant_id, batch_code))

    # ------------------------------------------------------------ accounts

    def upsert_account(self, account: Account | Mapping[str, Any]) -> None:
        """`POST /account`: create or replace the tenant's account of that id."""
        self._send(_core.upsert_account(account))

    def list_accounts(self, tenant_id: str | None = None) -> list[AccountInfo]:
        """`GET /accounts` (no passwords)."""
        return self._send(_core.list_accounts(tenant_id))

    def delete_account(self, account_id: str, tenant_id: str | None = None) -> None:
        """`DELETE /account/{id}`."""
        self._send(_core.delete_account(account_id, tenant_id))

    def resume_account(self, account_id: str, tenant_id: str | None = None) -> ResumeResult:
        """`POST /account/{id}/resume`: release an account the reputation guard paused (admin, or the tenant if
        the service allows it); its held messages go out."""
        return self._send(_core.resume_account(account_id, tenant_id))

    # ------------------------------------------------------------ suppression list

    def list_suppressions(
        self, tenant_id: str | None = None, limit: int = 100, cursor: str | None = None
    ) -> SuppressionsPage:
        """`GET /suppressions`: one page in address order; pass its `next_cursor` as `cursor` for the next one."""
        return self._send(_core.list_suppressions(tenant_id, limit, cursor))

    def iter_suppressions(self, tenant_id: str | None = None, limit: int = 100) -> Iterator[SuppressionEntry]:
        """Every suppressed address, page after page (`limit` per request)."""
        cursor: str | None = None
        while True:
            page = self.list_suppressions(tenant_id, limit, cursor)
            yield from page.suppressions
            if not page.next_cursor or not page.suppressions:
                return
            cursor = page.next_cursor

    def add_suppressions(
        self, addresses: Sequence[str], reason: str | None = None, tenant_id: str | None = None
    ) -> SuppressionsAdded:
        """`POST /suppressions`: never send to these addresses again."""
        return self._send(_core.add_suppressions(addresses, reason, tenant_id))

    def remove_suppression(self, address: str, tenant_id: str | None = None) -> None:
        """`DELETE /suppressions/{address}`; NotFoundError when it is not on the list."""
        self._send(_core.remove_suppression(address, tenant_id))

    # ------------------------------------------------------------ tenants

    def create_tenant(self, tenant: Tenant | Mapping[str, Any]) -> str | None:
        """`POST /tenant`: the new tenant's API key (shown once), or None when it existed (its config overwritten)."""
        return self._send(_core.create_tenant(tenant))

    def list_tenants(self, active_only: bool = False) -> list[TenantInfo]:
        """`GET /tenants` (admin)."""
        return self._send(_core.list_tenants(active_only))

    def get_tenant(self, tenant_id: str) -> TenantInfo:
        """`GET /tenant/{id}`; NotFoundError if absent."""
        return self._send(_core.get_tenant(tenant_id))

    def update_tenant(self, tenant_id: str, **fields: Any) -> None:
        """`PUT /tenant/{id}`: change only the fields given (`active=False`, `client_base_url=...`)."""
        self._send(_core.update_tenant(tenant_id, fields))

    def delete_tenant(self, tenant_id: str) -> None:
        """`DELETE /tenant/{id}`: with its accounts and messages."""
        self._send(_core.delete_tenant(tenant_id))

    def rotate_api_key(self, tenant_id: str, expires_at: int | None = None) -> str:
        """`POST /tenant/{id}/api-key`: a new key (the old one stops working at once)."""
        return self._send(_core.rotate_api_key(tenant_id, expires_at))

    def revoke_api_key(self, tenant_id: str) -> None:
        """`DELETE /tenant/{id}/api-key`."""
        self._send(_core.revoke_api_key(tenant_id))

    def sync_status(self) -> SyncStatusReply:
        """`GET /tenants/sync-status` (admin)."""
        return self._send(_core.sync_status())

    # ------------------------------------------------------------ large files

    def create_upload(
        self, *, tenant_id: str | None = None, filename: str | None = None, size: int | None = None
    ) -> UploadReply:
        """`POST /large-files`: the form that uploads one big file and the attachment reference naming it."""
        return self._send(_core.create_upload(tenant_id, filename, size))

    # ------------------------------------------------------------ command log

    def command_log(
        self,
        tenant_id: str | None = None,
        since_ts: int | None = None,
        until_ts: int | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> CommandLogPage:
        """`GET /command-log`: one page, newest first; pass its `next_cursor` as `cursor` for the next one."""
        return self._send(_core.command_log(tenant_id, since_ts, until_ts, limit, cursor))

    def iter_command_log(
        self,
        tenant_id: str | None = None,
        since_ts: int | None = None,
        until_ts: int | None = None,
        limit: int = 100,
    ) -> Iterator[CommandEntry]:
        """Every logged command, newest first, page after page (`limit` per request)."""
        cursor: str | None = None
        while True:
            page = self.command_log(tenant_id, since_ts, until_ts, limit, cursor)
            yield from page.commands
            if not page.next_cursor or not page.commands:
                return
            cursor = page.next_cursor
