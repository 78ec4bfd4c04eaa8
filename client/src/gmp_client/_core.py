"""What the sync and the async client share: each route as a `Call`, reading replies, and the retry policy.

The two clients differ only in how they send a request and wait; everything decided about a route (its
path, body, how its reply is read, whether it may be retried) is here, once.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from .errors import ApiError, ConnectionFailed, NotFoundError, error_for
from .models import (
    Account,
    AccountInfo,
    AddMessagesResult,
    CleanupResult,
    CommandLogPage,
    DeleteMessagesResult,
    HealthReply,
    KeyReply,
    Message,
    MessageRecord,
    Rejection,
    ResumeResult,
    StatusReply,
    SuppressionsAdded,
    SuppressionsPage,
    SuspensionReply,
    SyncStatusReply,
    Tenant,
    TenantInfo,
    UnexpectedReply,
    UploadReply,
    _plain,
)

__version__ = "0.1.0"
MAX_MESSAGES_PER_REQUEST = 1000  # the API refuses more in one add-messages request
RETRY_STATUSES = frozenset({429, 502, 503, 504})
MAX_RETRY_AFTER = 60.0  # seconds: a server asking to wait longer gets its error raised instead
MAX_BACKOFF = 10.0


@dataclass(frozen=True, slots=True)
class Call[T]:
    """One request of a route and how to read its reply."""

    method: str
    path: str
    read: Callable[[Any], T]
    params: Mapping[str, Any] | None = None
    body: Any = None
    # Safe to send again after a failure the request may have got through (5xx, a reply lost): see README.
    idempotent: bool = True
    headers: Mapping[str, str] | None = None
    text: bool = False  # the reply is text (metrics), not JSON


def query(**values: Any) -> dict[str, Any]:
    """Query parameters without the unset ones; booleans as the API spells them."""
    return {k: ("true" if v else "false") if isinstance(v, bool) else v for k, v in values.items() if v is not None}


def segment(value: str) -> str:
    """An id as one path segment."""
    return quote(str(value), safe="")


def _none(_: Any) -> None:
    return None


def _plain_body(item: Any) -> Any:
    """A request model (or a dict written by hand) as its JSON object."""
    if isinstance(item, Message | Account | Tenant):
        return item.to_dict()
    if isinstance(item, Mapping):
        # `from_` is accepted in a dict too, as the Message model names it.
        return {("from" if k == "from_" else k): v for k, v in item.items()}
    raise TypeError(f"expected a model or a dict, got {type(item).__name__}")


# ---------------------------------------------------------------- the routes


def health() -> Call[HealthReply]:
    """`GET /health`."""
    return Call("GET", "/health", HealthReply.from_dict)


def status() -> Call[StatusReply]:
    """`GET /status`."""
    return Call("GET", "/status", StatusReply.from_dict)


def metrics_text(metrics_token: str | None) -> Call[str]:
    """`GET /metrics` (bearer token when the deployment requires one)."""
    headers = {"Authorization": f"Bearer {metrics_token}"} if metrics_token else None
    return Call("GET", "/metrics", str, headers=headers, text=True)


def add_messages(messages: Sequence[Any], default_priority: int | str | None) -> Call[AddMessagesResult]:
    """`POST /commands/add-messages` of at most 1000 messages; retried: see README (idempotent per message id)."""
    body: dict[str, Any] = {"messages": [_plain_body(m) for m in messages]}
    if default_priority is not None:
        body["default_priority"] = default_priority
    return Call("POST", "/commands/add-messages", AddMessagesResult.from_dict, body=body)


def chunks(messages: Sequence[Any], size: int = MAX_MESSAGES_PER_REQUEST) -> list[Sequence[Any]]:
    """The messages in requests the API accepts; one (empty) request for an empty list."""
    return [messages[i : i + size] for i in range(0, len(messages), size)] or [messages]


def nothing_queued(error: ApiError) -> AddMessagesResult | None:
    """A chunk's 400 "No message was queued" as its result (queued 0, its rejections), else None: a real error."""
    detail = error.detail
    if error.status_code != 400 or not isinstance(detail, dict) or not isinstance(detail.get("rejected"), list):
        return None
    return AddMessagesResult(ok=False, queued=0, rejected=[Rejection.from_dict(r) for r in detail["rejected"]])


def merge_added(results: Sequence[AddMessagesResult], error: ApiError | None = None) -> AddMessagesResult:
    """One result of several add-messages requests: queued summed, rejections in order.

    A chunk with nothing queued answers 400; over the whole list that is an error only if nothing at all was
    queued (as one request of every message would have answered): then `error`, with every rejection, is raised.
    """
    rejected: list[Rejection] = [r for result in results for r in result.rejected]
    queued = sum(r.queued for r in results)
    if error is not None and queued == 0:
        raise error_for(
            error.status_code,
            {**error.detail, "rejected": [r.to_dict() for r in rejected]},
            method=error.method,
            url=error.url,
        )
    return AddMessagesResult(ok=True, queued=queued, rejected=rejected)


def list_messages(tenant_id: str | None, active_only: bool, include_history: bool) -> Call[list[MessageRecord]]:
    """`GET /messages`."""
    params = query(tenant_id=tenant_id, active_only=active_only, include_history=include_history)
    return Call("GET", "/messages", lambda d: [MessageRecord.from_dict(m) for m in d["messages"]], params=params)


def find_message(records: list[MessageRecord], message_id: str, tenant_id: str | None) -> MessageRecord:
    """The record of `message_id`, else NotFoundError (404, as the API would)."""
    for record in records:
        if record.id == message_id:
            return record
    where = f" for tenant '{tenant_id}'" if tenant_id else ""
    raise NotFoundError(404, f"Message '{message_id}' not found{where}", method="GET", url="/messages")


def delete_messages(ids: Iterable[str], tenant_id: str | None) -> Call[DeleteMessagesResult]:
    """`POST /commands/delete-messages` (deleting twice removes nothing more: safe to retry)."""
    return Call(
        "POST",
        "/commands/delete-messages",
        DeleteMessagesResult.from_dict,
        params=query(tenant_id=tenant_id),
        body={"ids": list(ids)},
    )


def cleanup_messages(older_than_seconds: int | None, tenant_id: str | None) -> Call[CleanupResult]:
    """`POST /commands/cleanup-messages`."""
    body = {} if older_than_seconds is None else {"older_than_seconds": older_than_seconds}
    return Call(
        "POST", "/commands/cleanup-messages", CleanupResult.from_dict, params=query(tenant_id=tenant_id), body=body
    )


def run_now() -> Call[None]:
    """`POST /commands/run-now` (a nudge: running it twice is harmless)."""
    return Call("POST", "/commands/run-now", _none)


def suspend(tenant_id: str | None, batch_code: str | None) -> Call[SuspensionReply]:
    """`POST /commands/suspend` (sets a state: safe to retry)."""
    params = query(tenant_id=tenant_id, batch_code=batch_code)
    return Call("POST", "/commands/suspend", SuspensionReply.from_dict, params=params)


def activate(tenant_id: str | None, batch_code: str | None) -> Call[SuspensionReply]:
    """`POST /commands/activate` (sets a state: safe to retry)."""
    params = query(tenant_id=tenant_id, batch_code=batch_code)
    return Call("POST", "/commands/activate", SuspensionReply.from_dict, params=params)


def upsert_account(account: Account | Mapping[str, Any]) -> Call[None]:
    """`POST /account`: an upsert on tenant and id, so safe to retry."""
    return Call("POST", "/account", _none, body=_plain_body(account))


def list_accounts(tenant_id: str | None) -> Call[list[AccountInfo]]:
    """`GET /accounts`."""
    return Call(
        "GET",
        "/accounts",
        lambda d: [AccountInfo.from_dict(a) for a in d["accounts"]],
        params=query(tenant_id=tenant_id),
    )


def delete_account(account_id: str, tenant_id: str | None) -> Call[None]:
    """`DELETE /account/{id}`."""
    return Call("DELETE", f"/account/{segment(account_id)}", _none, params=query(tenant_id=tenant_id))


def create_tenant(tenant: Tenant | Mapping[str, Any]) -> Call[str | None]:
    """`POST /tenant`: never retried after it may have got through, since the new key is shown only once."""
    return Call("POST", "/tenant", lambda d: KeyReply.from_dict(d).api_key, body=_plain_body(tenant), idempotent=False)


def list_tenants(active_only: bool) -> Call[list[TenantInfo]]:
    """`GET /tenants`."""
    return Call(
        "GET",
        "/tenants",
        lambda d: [TenantInfo.from_dict(t) for t in d["tenants"]],
        params=query(active_only=active_only),
    )


def get_tenant(tenant_id: str) -> Call[TenantInfo]:
    """`GET /tenant/{id}`."""
    return Call("GET", f"/tenant/{segment(tenant_id)}", TenantInfo.from_dict)


def update_tenant(tenant_id: str, fields: Mapping[str, Any]) -> Call[None]:
    """`PUT /tenant/{id}`: only the fields given change (a None is sent, as a null)."""
    return Call("PUT", f"/tenant/{segment(tenant_id)}", _none, body={k: _plain(v) for k, v in fields.items()})


def delete_tenant(tenant_id: str) -> Call[None]:
    """`DELETE /tenant/{id}`."""
    return Call("DELETE", f"/tenant/{segment(tenant_id)}", _none)


def rotate_api_key(tenant_id: str, expires_at: int | None) -> Call[str]:
    """`POST /tenant/{id}/api-key`: not retried after it may have got through (each call makes a new key)."""
    body = {} if expires_at is None else {"expires_at": expires_at}
    return Call("POST", f"/tenant/{segment(tenant_id)}/api-key", _key, body=body, idempotent=False)


def _key(data: Any) -> str:
    key = KeyReply.from_dict(data).api_key
    if not key:
        raise UnexpectedReply("the reply carries no api_key")
    return key


def revoke_api_key(tenant_id: str) -> Call[None]:
    """`DELETE /tenant/{id}/api-key`."""
    return Call("DELETE", f"/tenant/{segment(tenant_id)}/api-key", _none)


def sync_status() -> Call[SyncStatusReply]:
    """`GET /tenants/sync-status`."""
    return Call("GET", "/tenants/sync-status", SyncStatusReply.from_dict)


def command_log(
    tenant_id: str | None, since_ts: int | None, until_ts: int | None, limit: int, cursor: str | None
) -> Call[CommandLogPage]:
    """`GET /command-log`: one page."""
    params = query(tenant_id=tenant_id, since_ts=since_ts, until_ts=until_ts, limit=limit, cursor=cursor)
    return Call("GET", "/command-log", CommandLogPage.from_dict, params=params)


def resume_account(account_id: str, tenant_id: str | None) -> Call[ResumeResult]:
    """`POST /account/{id}/resume`: release an account the reputation guard paused."""
    path = f"/account/{segment(account_id)}/resume"
    return Call("POST", path, ResumeResult.from_dict, params=query(tenant_id=tenant_id))


def list_suppressions(tenant_id: str | None, limit: int, cursor: str | None) -> Call[SuppressionsPage]:
    """`GET /suppressions`: one page."""
    params = query(tenant_id=tenant_id, limit=limit, cursor=cursor)
    return Call("GET", "/suppressions", SuppressionsPage.from_dict, params=params)


def add_suppressions(addresses: Sequence[str], reason: str | None, tenant_id: str | None) -> Call[SuppressionsAdded]:
    """`POST /suppressions` (idempotent: an address already listed is left as it is)."""
    body: dict[str, Any] = {"addresses": list(addresses)}
    if reason is not None:
        body["reason"] = reason
    return Call("POST", "/suppressions", SuppressionsAdded.from_dict, body=body, params=query(tenant_id=tenant_id))


def remove_suppression(address: str, tenant_id: str | None) -> Call[None]:
    """`DELETE /suppressions/{address}`."""
    return Call("DELETE", f"/suppressions/{segment(address)}", _none, params=query(tenant_id=tenant_id))


def create_upload(tenant_id: str | None, filename: str | None, size: int | None) -> Call[UploadReply]:
    """`POST /large-files`: a form to upload one big file with (docs/large-files.md); each call is a new upload."""
    body = {k: v for k, v in (("filename", filename), ("size", size)) if v is not None}
    return Call(
        "POST", "/large-files", UploadReply.from_dict, params=query(tenant_id=tenant_id), body=body, idempotent=False
    )


# ---------------------------------------------------------------- replies and retries


def read_reply[T](call: Call[T], response: httpx.Response) -> T:
    """The call's result, or the API's error as an exception carrying its detail."""
    if response.is_success:
        if call.text:
            return call.read(response.text)
        try:
            data = response.json()
        except ValueError:
            raise UnexpectedReply(f"{call.method} {response.request.url}: not JSON: {response.text[:200]!r}") from None
        try:
            return call.read(data)
        except (KeyError, TypeError) as exc:
            raise UnexpectedReply(f"{call.method} {call.path}: unexpected reply ({exc})") from None
    raise error_for(response.status_code, error_detail(response), method=call.method, url=str(response.request.url))


def error_detail(response: httpx.Response) -> Any:
    """The `detail` of an error reply, else its text (a gateway's page), else the status' reason."""
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, dict) and "detail" in data:
        return data["detail"]
    if isinstance(data, dict) and "message" in data:  # API Gateway's own errors: {"message": "..."}
        return data["message"]
    text = " ".join(response.text.split())[:500]
    return text or response.reason_phrase


def retry_delay(
    call: Call[Any],
    attempt: int,
    retries: int,
    backoff: float,
    response: httpx.Response | None = None,
    error: httpx.TransportError | None = None,
) -> float | None:
    """Seconds to wait before sending `call` again after `attempt` (0 = the first) failed, or None: give up."""
    if attempt >= retries:
        return None
    if response is not None:
        # 429 is a refusal before any work (API Gateway throttling, WAF): every call may be sent again.
        if response.status_code not in RETRY_STATUSES or (response.status_code != 429 and not call.idempotent):
            return None
        after = retry_after(response)
        if after is not None:
            return after if after <= MAX_RETRY_AFTER else None
    elif error is not None:
        # A connection never made carried nothing: any call may be sent again; otherwise idempotent ones only.
        never_sent = isinstance(error, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
        if not (never_sent or call.idempotent):
            return None
    wait: float = min(MAX_BACKOFF, backoff * 2**attempt)
    return wait / 2 + random.uniform(0, wait / 2)  # jitter: clients failing together do not retry together


def retry_after(response: httpx.Response) -> float | None:
    """The Retry-After header in seconds (a number or an HTTP date), if any."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def connection_failed(base_url: str, call: Call[Any], error: httpx.TransportError, timeout: float) -> ConnectionFailed:
    """The one-line error of a request that got no answer, naming the URL (never a token)."""
    url = f"{base_url.rstrip('/')}{call.path}"
    if isinstance(error, httpx.TimeoutException):
        reason = f"no answer within {timeout:g} s ({type(error).__name__})"
    else:
        reason = " ".join(str(error).split()) or type(error).__name__
    return ConnectionFailed(url, reason)


def token_headers(token: str | None) -> dict[str, str]:
    """The headers every request carries."""
    headers = {"User-Agent": f"gmp-client/{__version__}", "Accept": "application/json"}
    if token:
        headers["X-API-Token"] = token
    return headers
