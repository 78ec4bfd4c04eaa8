"""The REST API (FastAPI): routes translate HTTP to the use cases of `mailproxy.intake`."""

from __future__ import annotations

import functools
import json
import math
import sys
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.routing import compile_path, get_name

from mailproxy import clock, intake, tenants
from mailproxy.auth import Principal, authenticate, require_admin, scope
from mailproxy.crypto import hash_api_key, new_api_key
from mailproxy.errors import ApiError, BadRequest, ConfigurationError, Forbidden, NotFound
from mailproxy.logs import logger
from mailproxy.models import (
    Account,
    AddMessages,
    AddSuppressions,
    Cleanup,
    DeleteMessages,
    NewApiKey,
    NewUpload,
    Tenant,
    TenantFields,
)
from mailproxy.stores import stores

MUTATING = {"POST", "PUT", "PATCH", "DELETE"}
SECRET_KEYS = {"password", "token", "api_key", "secret", "client_secret", "authorization"}
SECRET_KEYS |= {"imap_password", "bounce_imap_password"}  # genro-mail-proxy's: refused, but logged as sent
MAX_LOGGED_PAYLOAD = 64_000
# A local upload carries a whole file and no API token: nothing to log, and its body is never held here.
UNLOGGED_PATHS = frozenset({"/large-files/receive"})
# The ASGI scope key a server without API Gateway (the one-machine runtime) puts each request's id under.
REQUEST_ID_SCOPE_KEY = "gmp.request_id"

ReplyDocs = Callable[[str], dict[str, Any]]

TokenHeader = Annotated[str | None, Header(alias="X-API-Token", description="Admin token or tenant key")]
TenantQuery = Annotated[str | None, Query(max_length=64, description="Implied by a tenant key")]


async def principal(request: Request, token: TokenHeader = None) -> Principal:
    """The authenticated caller (401 otherwise), remembered for the command log."""
    who = authenticate(token)
    request.state.principal = who
    return who


Caller = Annotated[Principal, Depends(principal)]


async def admin(who: Caller) -> Principal:
    """The caller, who must hold the admin token."""
    require_admin(who)
    return who


Admin = Annotated[Principal, Depends(admin)]


def _scoped(request: Request, who: Principal, tenant_id: str | None) -> str:
    resolved = intake.require_scope(who, tenant_id)
    request.state.tenant_id = resolved
    return resolved


def _scoped_body(request: Request, who: Principal, query_tenant: str | None, body_tenant: str | None) -> str:
    """The tenant of a request that may name it in its query or in its body (the same one, if both)."""
    resolved = _scoped(request, who, query_tenant or body_tenant)
    if query_tenant and body_tenant and body_tenant != query_tenant:
        raise BadRequest("tenant_id of the query and of the body differ")
    return resolved


def _probe_pydantic_v1_only_once_imported() -> None:
    """Keep FastAPI from importing `pydantic.v1` (about 45 ms of a cold start) just to say a type is not a v1 model.

    FastAPI asks of every route parameter, and of any reply value its encoder does not know, whether it is a
    `pydantic.v1` model, importing `pydantic.v1` to find out. No v1 model can exist before `pydantic.v1` is
    imported, so until then the answer is no without the import (fastapi/fastapi#16374 proposed the same).
    The names are FastAPI's private ones (FastAPI is pinned); if they move, FastAPI keeps its own check and
    `tests/unit/test_import_paths.py` says so.
    """
    from fastapi import encoders
    from fastapi._compat import shared

    def guarded(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
        def v1_imported_and(value: Any) -> bool:
            return "pydantic.v1" in sys.modules and check(value)

        return v1_imported_and

    for module, name in ((shared, "is_pydantic_v1_model_class"), (encoders, "is_pydantic_v1_model_instance")):
        check = getattr(module, name, None)
        if check is not None and check.__name__ != "v1_imported_and":
            setattr(module, name, guarded(check))


def create_app(documented: bool = False) -> FastAPI:
    """The API application (its routes, error handlers and command log).

    The app that serves calls leaves out the reply models, which only the OpenAPI schema uses: its
    `/openapi.json` is the schema of a `documented` twin, built on the first request for it.
    """
    _probe_pydantic_v1_only_once_imported()
    app = FastAPI(
        title="Serverless Mail Proxy",
        version="0.1.0",
        description="genro-mail-proxy's REST API on AWS managed services.",
        responses=_error_docs() if documented else None,
        docs_url=None,
        redoc_url=None,
    )
    if not documented:
        app.router.route_class = LazyRoute
    _install_docs(app)
    _install_error_handlers(app)
    app.add_middleware(CommandLog)
    _install_routes(app, _reply_docs if documented else _no_reply_docs)
    if not documented:
        app.openapi = functools.partial(_documented_schema, app)  # type: ignore[method-assign]
    return app


class LazyRoute(APIRoute):
    """An APIRoute that makes its validators (FastAPI's costly part) when first used, not at start.

    Matching a request needs only the path pattern and the methods, set here; the first access to any
    other attribute (its handler, when a request reaches it) builds the whole route as APIRoute would.
    A cold start then builds the route it serves, not all of them.
    """

    _building = threading.RLock()

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        self._pending = (path, endpoint, kwargs)
        self.path = path
        self.path_regex, self.path_format, self.param_convertors = compile_path(path)
        self.methods = {method.upper() for method in kwargs.get("methods") or ["GET"]}
        self.name = get_name(endpoint) if kwargs.get("name") is None else kwargs["name"]
        self.include_in_schema = kwargs.get("include_in_schema", True)

    def __getattr__(self, name: str) -> Any:
        with LazyRoute._building:
            pending = self.__dict__.pop("_pending", None)
            if pending is not None:
                path, endpoint, kwargs = pending
                super().__init__(path, endpoint, **kwargs)
        # Built now (here or by another thread meanwhile); a name the route lacks still raises.
        return object.__getattribute__(self, name)


def _documented_schema(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema is None:
        twin = create_app(documented=True)
        twin.servers = app.servers  # FastAPI adds the request's root_path to the serving app's servers
        app.openapi_schema = twin.openapi()
    return app.openapi_schema


def _error_docs() -> dict[int | str, dict[str, Any]]:
    from mailproxy.replies import ERRORS

    return ERRORS


def _reply_docs(model: str) -> dict[str, Any]:
    """Route arguments that document the 200 reply as the named model of `mailproxy.replies`."""
    from mailproxy import replies

    # Handlers still return plain dicts: the model documents the reply and does not filter it.
    return {"response_model": None, "responses": {200: {"model": getattr(replies, model)}}}


def _no_reply_docs(model: str) -> dict[str, Any]:
    return {"response_model": None}


def _install_docs(app: FastAPI) -> None:
    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        # A relative schema URL works both at /docs locally and under the stage prefix (/prod/docs) on AWS.
        return get_swagger_ui_html(openapi_url="openapi.json", title="Serverless Mail Proxy")


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)

    @app.exception_handler(ConfigurationError)
    async def misconfigured(request: Request, exc: ConfigurationError) -> JSONResponse:
        logger().error("service misconfigured: %s", exc)
        return JSONResponse({"detail": "Service misconfigured"}, status_code=500)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)


def _install_routes(app: FastAPI, reply: ReplyDocs) -> None:
    # The handlers are coroutines although they wait on DynamoDB: a Lambda container serves one request at a
    # time in Mangum's own event loop (the local stack gives each request a thread and a loop), so FastAPI's
    # thread pool would buy nothing, and its first use costs a cold start anyio's worker machinery (~15 ms).
    @app.get("/status", tags=["service"], **reply("StatusReply"))
    async def get_status(who: Caller) -> dict[str, Any]:
        """Service state; a tenant key sees its own pending count."""
        return intake.status(who)

    @app.post("/commands/add-messages", tags=["messages"], **reply("AddMessagesReply"))
    async def add_messages(request: Request, who: Caller, body: AddMessages) -> dict[str, Any]:
        """Queue messages for delivery."""
        ids = {m.tenant_id for m in body.messages if m.tenant_id}
        if len(ids) == 1:
            request.state.tenant_id = next(iter(ids))
        elif not who.is_admin:
            request.state.tenant_id = who.tenant_id
        return intake.add_messages(who, body)

    @app.get("/messages", tags=["messages"], **reply("MessagesReply"))
    async def list_messages(
        request: Request,
        who: Caller,
        tenant_id: TenantQuery = None,
        active_only: bool = False,
        include_history: bool = False,
    ) -> dict[str, Any]:
        """The tenant's messages by priority, then age."""
        resolved = _scoped(request, who, tenant_id)
        records = intake.list_messages(resolved, active_only=active_only, include_history=include_history)
        return {"ok": True, "messages": records}

    @app.post("/commands/delete-messages", tags=["messages"], **reply("DeleteMessagesReply"))
    async def delete_messages(
        request: Request, who: Caller, body: DeleteMessages, tenant_id: TenantQuery = None
    ) -> dict[str, Any]:
        """Delete messages by id."""
        resolved = _scoped_body(request, who, tenant_id, body.tenant_id)
        return intake.delete_messages(resolved, body.ids)

    @app.post("/commands/cleanup-messages", tags=["messages"], **reply("CleanupReply"))
    async def cleanup_messages(
        request: Request,
        who: Caller,
        body: Annotated[Cleanup | None, Body()] = None,
        tenant_id: TenantQuery = None,
    ) -> dict[str, Any]:
        """Remove processed, fully reported messages older than `older_than_seconds`."""
        body = body or Cleanup()
        resolved = _scoped_body(request, who, tenant_id, body.tenant_id)
        return intake.cleanup_messages(resolved, body.older_than_seconds)

    @app.post("/commands/run-now", tags=["service"], **reply("Ok"))
    async def run_now(request: Request, who: Caller) -> dict[str, Any]:
        """Ask the scheduler and the reporter to run now."""
        request.state.tenant_id = who.tenant_id
        return intake.run_now(who)

    @app.post("/commands/suspend", tags=["messages"], **reply("SuspensionReply"))
    async def suspend(
        request: Request,
        who: Caller,
        tenant_id: TenantQuery = None,
        batch_code: Annotated[str | None, Query(max_length=64)] = None,
    ) -> dict[str, Any]:
        """Hold a tenant's messages, or one batch of them."""
        resolved = scope(who, tenant_id)
        request.state.tenant_id = resolved
        return intake.suspend(resolved, batch_code)

    @app.post("/commands/activate", tags=["messages"], **reply("SuspensionReply"))
    async def activate(
        request: Request,
        who: Caller,
        tenant_id: TenantQuery = None,
        batch_code: Annotated[str | None, Query(max_length=64)] = None,
    ) -> dict[str, Any]:
        """Release held messages."""
        resolved = scope(who, tenant_id)
        request.state.tenant_id = resolved
        return intake.activate(resolved, batch_code)

    @app.post("/account", tags=["accounts"], **reply("Ok"))
    async def put_account(request: Request, who: Caller, body: Account) -> dict[str, Any]:
        """Create or replace an SMTP account of the tenant."""
        resolved = _scoped(request, who, body.tenant_id)
        tenants.ensure_verp_key(body.bounce_mailbox)
        stores().tenants.put_account(resolved, body.model_dump(), now=clock.now_ts())
        stores().counters.ensure_counters(resolved, body.id)
        return {"ok": True}

    @app.get("/accounts", tags=["accounts"], **reply("AccountsReply"))
    async def list_accounts(request: Request, who: Caller, tenant_id: TenantQuery = None) -> dict[str, Any]:
        """The tenant's accounts, without passwords."""
        resolved = _scoped(request, who, tenant_id)
        return {"ok": True, "accounts": [tenants.public_account(a) for a in stores().tenants.list_accounts(resolved)]}

    # `:path`: an account id may hold a slash, which arrives decoded in the path.
    @app.delete("/account/{account_id:path}", tags=["accounts"], **reply("Ok"))
    async def delete_account(
        request: Request,
        who: Caller,
        account_id: Annotated[str, Path(min_length=1, max_length=255)],
        tenant_id: TenantQuery = None,
    ) -> dict[str, Any]:
        """Delete an account; its pending messages then fail."""
        from mailproxy import reputation
        from mailproxy.settings import get_settings

        resolved = _scoped(request, who, tenant_id)
        # Deleting lifts the pause: a tenant that may not resume would add the account again, unpaused.
        if (
            not who.is_admin
            and not get_settings().tenant_may_resume
            and reputation.is_paused(stores().tenants.get_tenant(resolved) or {}, account_id)
        ):
            raise Forbidden(
                f"Account '{account_id}' is paused: only the admin token may delete it (GMP_TENANT_MAY_RESUME is off)"
            )
        if len(account_id) > 64 or not stores().tenants.delete_account(resolved, account_id):
            raise BadRequest(f"Account '{account_id}' not found for tenant '{resolved}'")
        reputation.forget_account(resolved, account_id)
        return {"ok": True}

    # `:path`: an account id may hold a slash, which arrives decoded in the path.
    @app.post("/account/{account_id:path}/resume", tags=["accounts"], **reply("ResumeReply"))
    async def resume_account(
        request: Request,
        who: Caller,
        account_id: Annotated[str, Path(min_length=1, max_length=255)],
        tenant_id: TenantQuery = None,
    ) -> dict[str, Any]:
        """Resume an account the reputation guard paused and release its held messages (admin token, or the
        tenant's key when GMP_TENANT_MAY_RESUME is set); 400 if it is not paused."""
        from mailproxy import reputation
        from mailproxy.settings import get_settings

        if not who.is_admin and not get_settings().tenant_may_resume:
            raise Forbidden("Only the admin token may resume a paused account (GMP_TENANT_MAY_RESUME is off)")
        resolved = _scoped(request, who, tenant_id)
        released = reputation.resume(resolved, account_id) if len(account_id) <= 64 else None
        if released is None:
            raise BadRequest(f"Account '{account_id}' of tenant '{resolved}' is not paused")
        return {"ok": True, "account_id": account_id, "released": released}

    @app.get("/suppressions", tags=["suppressions"], **reply("SuppressionsReply"))
    async def list_suppressions(
        request: Request,
        who: Caller,
        tenant_id: TenantQuery = None,
        limit: Annotated[int, Query(ge=1, le=1000, description="Entries per page at most (address order)")] = 100,
        cursor: Annotated[
            str | None, Query(max_length=1000, description="`next_cursor` of the previous page, to continue it")
        ] = None,
    ) -> dict[str, Any]:
        """The tenant's suppression list, one page at a time: addresses never sent to (bounced, complained, or
        added by the tenant)."""
        from mailproxy import suppression

        resolved = _scoped(request, who, tenant_id)
        return suppression.list_page(resolved, limit=limit, cursor=cursor)

    @app.post("/suppressions", tags=["suppressions"], **reply("AddSuppressionsReply"))
    async def add_suppressions(
        request: Request, who: Caller, body: AddSuppressions, tenant_id: TenantQuery = None
    ) -> dict[str, Any]:
        """Suppress addresses: the sender drops them from every message from now on."""
        from mailproxy import suppression
        from mailproxy.addresses import bare_address, is_valid_address

        resolved = _scoped_body(request, who, tenant_id, body.tenant_id)
        invalid = [a for a in body.addresses if not is_valid_address(a)]
        if invalid:
            raise BadRequest(f"invalid address: {invalid[0]}")
        bare = [bare_address(a) for a in body.addresses]
        return suppression.add(resolved, bare, reason=body.reason, now=clock.now_ts())

    # `:path`: an address may hold a slash (a dot-atom character), which arrives decoded in the path.
    @app.delete("/suppressions/{address:path}", tags=["suppressions"], **reply("Ok"))
    async def remove_suppression(
        request: Request,
        who: Caller,
        address: Annotated[str, Path(min_length=1, max_length=320)],
        tenant_id: TenantQuery = None,
    ) -> dict[str, Any]:
        """Take an address off the tenant's suppression list (404 if it is not on it)."""
        from mailproxy import suppression

        resolved = _scoped(request, who, tenant_id)
        if not suppression.remove(resolved, address):
            raise NotFound(f"Address '{address}' is not suppressed for tenant '{resolved}'")
        return {"ok": True}

    @app.post("/tenant", tags=["tenants"], **reply("KeyReply"))
    async def post_tenant(request: Request, who: Admin, body: Tenant) -> dict[str, Any]:
        """Create a tenant (its key is shown once) or overwrite its configuration (key kept)."""
        request.state.tenant_id = body.id
        now = clock.now_ts()
        fields = body.model_dump(exclude_none=True, exclude={"api_key_expires_at"})
        fields["client_auth"] = body.client_auth.model_dump() if body.client_auth else None
        tenants.ensure_verp_key(body.bounce_mailbox)
        key = new_api_key()
        created = stores().tenants.create_tenant(
            {**fields, "api_key_expires_at": body.api_key_expires_at}, key_hash=hash_api_key(key), now=now
        )
        if created:
            return {"ok": True, "api_key": key}
        fields.pop("id")
        stores().tenants.update_tenant(body.id, fields, now=now, replace=True)
        _release_if_active(body.id)
        return {"ok": True}

    @app.get("/tenants", tags=["tenants"], **reply("TenantsReply"))
    async def list_tenants(who: Admin, active_only: bool = False) -> dict[str, Any]:
        """Every tenant, without secrets."""
        return {
            "ok": True,
            "tenants": [tenants.public_tenant(t) for t in stores().tenants.list_tenants(active_only=active_only)],
        }

    @app.get("/tenants/sync-status", tags=["tenants"], **reply("SyncStatusReply"))
    async def sync_status(who: Admin) -> dict[str, Any]:
        """When each tenant was last reported to and is next due."""
        return intake.sync_status()

    @app.get("/tenant/{tenant_id}", tags=["tenants"], **reply("TenantView"))
    async def get_tenant(
        request: Request, who: Caller, tenant_id: Annotated[str, Path(max_length=255)]
    ) -> dict[str, Any]:
        """One tenant, without secrets."""
        resolved = _scoped(request, who, tenant_id)
        return tenants.public_tenant(intake.require_tenant(resolved))

    @app.put("/tenant/{tenant_id}", tags=["tenants"], **reply("Ok"))
    async def put_tenant(
        request: Request, who: Caller, body: TenantFields, tenant_id: Annotated[str, Path(max_length=255)]
    ) -> dict[str, Any]:
        """Change the given fields of a tenant.

        A tenant key may change `name`, `client_base_url`, `client_sync_path`, `client_attachment_path`,
        `client_auth` and `large_file_config`; `active` and `rate_limits` need the admin token (403).
        """
        resolved = _scoped(request, who, tenant_id)
        fields = body.model_dump(exclude_unset=True)
        admin_only = [name for name in tenants.ADMIN_ONLY_FIELDS if name in fields]
        if admin_only and not who.is_admin:
            named = ", ".join(f"'{name}'" for name in admin_only)
            raise Forbidden(
                f"{'Fields' if len(admin_only) > 1 else 'Field'} {named} can only be changed with the admin token"
            )
        if "client_auth" in fields:
            fields["client_auth"] = body.client_auth.model_dump() if body.client_auth else None
        if "bounce_mailbox" in fields:  # the whole mailbox, defaults included: it replaces the stored one
            fields["bounce_mailbox"] = body.bounce_mailbox.model_dump() if body.bounce_mailbox else None
        tenants.ensure_verp_key(body.bounce_mailbox)
        if fields and not stores().tenants.update_tenant(resolved, fields, now=clock.now_ts()):
            raise NotFound(f"Tenant '{resolved}' not found")
        _release_if_active(resolved)
        return {"ok": True}

    @app.delete("/tenant/{tenant_id}", tags=["tenants"], **reply("Ok"))
    async def delete_tenant(
        request: Request, who: Admin, tenant_id: Annotated[str, Path(max_length=255)]
    ) -> dict[str, Any]:
        """Delete a tenant with its accounts and messages."""
        request.state.tenant_id = tenant_id
        intake.delete_tenant(tenant_id)
        return {"ok": True}

    @app.post("/tenant/{tenant_id}/api-key", tags=["tenants"], **reply("KeyReply"))
    async def rotate_key(
        request: Request,
        who: Admin,
        tenant_id: Annotated[str, Path(max_length=255)],
        body: Annotated[NewApiKey | None, Body()] = None,
    ) -> dict[str, Any]:
        """Issue a new key for the tenant; the old one stops working at once."""
        request.state.tenant_id = tenant_id
        intake.require_tenant(tenant_id)
        key = new_api_key()
        expires_at = body.expires_at if body else None
        if not stores().tenants.set_api_key(
            tenant_id, key_hash=hash_api_key(key), expires_at=expires_at, now=clock.now_ts()
        ):
            raise NotFound(f"Tenant '{tenant_id}' not found")
        return {"ok": True, "api_key": key}

    @app.delete("/tenant/{tenant_id}/api-key", tags=["tenants"], **reply("Ok"))
    async def revoke_key(
        request: Request, who: Admin, tenant_id: Annotated[str, Path(max_length=255)]
    ) -> dict[str, Any]:
        """Revoke the tenant's key."""
        request.state.tenant_id = tenant_id
        intake.require_tenant(tenant_id)
        if not stores().tenants.set_api_key(tenant_id, key_hash=None, expires_at=None, now=clock.now_ts()):
            raise NotFound(f"Tenant '{tenant_id}' not found")
        return {"ok": True}

    @app.get("/command-log", tags=["service"], **reply("CommandLogReply"))
    async def command_log(
        who: Admin,
        tenant_id: TenantQuery = None,
        since_ts: Annotated[int | None, Query(ge=0, le=10**11)] = None,
        until_ts: Annotated[int | None, Query(ge=0, le=10**11)] = None,
        limit: Annotated[int, Query(ge=1, le=10_000, description="Entries per page at most (newest first)")] = 100,
        cursor: Annotated[
            str | None, Query(max_length=200, description="`next_cursor` of the previous page, to continue it")
        ] = None,
    ) -> dict[str, Any]:
        """Every mutating call, newest first, secrets removed, one page at a time (`total`: entries in this page)."""
        commands, next_cursor = stores().commands.list_commands(
            tenant_id=tenant_id, since_ts=since_ts, until_ts=until_ts, limit=limit, cursor=cursor, now=clock.now_ts()
        )
        return {"ok": True, "commands": commands, "total": len(commands), "next_cursor": next_cursor}

    _install_large_file_routes(app, reply)


def _install_large_file_routes(app: FastAPI, reply: ReplyDocs) -> None:
    """Uploads of big files and the download links of rewritten attachments (docs/large-files.md)."""

    @app.post("/large-files", tags=["large files"], **reply("UploadReply"))
    async def new_upload(
        request: Request, who: Caller, body: Annotated[NewUpload | None, Body()] = None, tenant_id: TenantQuery = None
    ) -> dict[str, Any]:
        """An upload for one big file: POST the returned form (the file never passes through this API), then
        name `attachment.storage_path` (`upload:<id>`) in a message's attachment."""
        from mailproxy import large_files

        body = body or NewUpload()
        resolved = _scoped_body(request, who, tenant_id, body.tenant_id)  # an unknown tenant is refused here
        return large_files.new_upload(resolved, filename=body.filename, size=body.size)

    @app.post(
        "/large-files/receive",
        tags=["large files"],
        status_code=204,
        responses={204: {"description": "Stored"}, 403: {"description": "Token not valid or expired"}},
    )
    async def receive_upload(request: Request) -> Response:
        """The one-machine runtime's upload route (AWS uploads go to S3): the multipart form of `POST
        /large-files` (its `token` field, then the `file`), no X-API-Token. 413 past the upload's size limit."""
        from mailproxy import large_files

        try:
            await large_files.receive_upload(request.headers.get("content-type", ""), request.stream())
        except large_files.UploadRefused as exc:
            return JSONResponse({"detail": exc.reason}, status_code=exc.status)
        return Response(status_code=204)

    @app.get(
        "/large-files/{token}",
        tags=["large files"],
        response_class=HTMLResponse,
        responses={
            200: {"description": "The file (one-machine runtime)", "content": {"application/octet-stream": {}}},
            302: {"description": "To a short-lived URL of the file (AWS)"},
            403: {"description": "A link this service did not sign, or a token that does not decode (HTML page)"},
            410: {"description": "An expired link, a file no longer kept, or a deleted tenant's link (HTML page)"},
        },
    )
    async def download(token: Annotated[str, Path(max_length=4096)]) -> Response:
        """A download link of a rewritten attachment, as the email carries it: no X-API-Token, the signed
        token is the authority. Each download is counted (`gmp_large_file_downloads_total`)."""
        from fastapi.responses import FileResponse, RedirectResponse

        from mailproxy import large_files

        try:
            found = large_files.open_link(token)
        except large_files.LinkRefused as exc:
            return HTMLResponse(large_files.refusal_page(exc), status_code=exc.status)
        headers = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
        if found.kind == "redirect":
            return RedirectResponse(found.target, status_code=302, headers=headers)
        return FileResponse(found.target, media_type=found.mime_type, filename=found.filename, headers=headers)


def _release_if_active(tenant_id: str) -> None:
    tenant = stores().tenants.get_tenant(tenant_id)
    if tenant is not None and tenant.get("active", True):
        intake.release_held(tenant)


def redact(value: Any) -> Any:
    """A copy of a JSON value with every secret replaced by `***`."""
    if isinstance(value, dict):
        return {k: "***" if str(k).lower() in SECRET_KEYS and v else redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def _finite_float(text: str) -> float | str:
    value = float(text)
    return value if math.isfinite(value) else text


def _showable(value: Any) -> Any:
    """`value` with lone surrogates (valid JSON escapes, invalid UTF-8) written out as the text `\\ud800`."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_showable(str(k)): _showable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_showable(v) for v in value]
    return value


def _logged_payload(body: bytes, query: str) -> Any:
    try:
        # Infinity/NaN (or 1e400) cannot be rendered back as JSON: they are kept as their text.
        payload: Any = json.loads(body, parse_constant=str, parse_float=_finite_float) if body else None
    except (ValueError, RecursionError):
        payload = {"unparsed_bytes": len(body)}
    payload = redact(payload)
    text = json.dumps(payload, ensure_ascii=False)
    if len(text.encode("utf-8", "surrogatepass")) > MAX_LOGGED_PAYLOAD:
        summary: dict[str, Any] = {"truncated": True, "bytes": len(body)}
        if isinstance(payload, dict) and isinstance(payload.get("messages"), list):
            summary["message_ids"] = [m.get("id") for m in payload["messages"][:100] if isinstance(m, dict)]
        payload = summary
    payload = _showable(payload)
    return {"query": query, "body": payload} if query else payload


Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class CommandLog:
    """ASGI middleware that records every authenticated mutating call in the command log."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope_: Scope, receive: Receive, send: Send) -> None:
        """Pass the call through, keeping its body and status, then log it."""
        if scope_["type"] != "http" or scope_["method"] not in MUTATING or scope_["path"] in UNLOGGED_PATHS:
            await self.app(scope_, receive, send)
            return
        chunks: list[bytes] = []
        status = {"code": 500}

        async def receive_and_keep() -> MutableMapping[str, Any]:
            message = await receive()
            if message["type"] == "http.request":
                chunks.append(message.get("body", b""))
            return message

        async def send_and_note(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        await self.app(scope_, receive_and_keep, send_and_note)
        request_state = scope_.get("state") or {}
        who = request_state.get("principal")
        if who is None:
            return  # unauthenticated calls are refused and not logged
        client = scope_.get("client")
        event = scope_.get("aws.event") or {}
        entry: dict[str, Any] = {
            "ts": clock.now_ts(),
            "endpoint": f"{scope_['method']} {scope_['path']}",
            "tenant_id": request_state.get("tenant_id") or who.tenant_id,
            "response_status": status["code"],
            # API Gateway's requestContext.identity.sourceIp (Mangum's scope client), locally the peer address.
            "source_ip": str(client[0]) if client and client[0] else None,
            # API Gateway's requestId (Mangum's aws.event), or the one the one-machine runtime gives each request.
            "request_id": (event.get("requestContext") or {}).get("requestId") or scope_.get(REQUEST_ID_SCOPE_KEY),
        }
        body = b"".join(chunks)
        try:
            query = scope_.get("query_string", b"").decode("latin-1")
            stores().commands.log_command(**entry, payload=_logged_payload(body, query))
        except Exception as exc:  # the reply is already out: whatever broke the write, it is counted, not raised
            _command_log_write_failed(entry, len(body), exc)


def _command_log_write_failed(entry: dict[str, Any], body_bytes: int, exc: Exception) -> None:
    """Keep the trail of a call whose log entry could not be stored: the entry (not its body) in the
    function's log, and +1 on `gmp_command_log_write_failures_total`."""
    logger().error(
        "command log entry not stored",
        extra={"command": {**entry, "body_bytes": body_bytes}, "error": f"{type(exc).__name__}: {exc}"},
    )
    try:
        stores().counters.count_command_log_failure()
    except Exception:  # the table that refused the entry may refuse the count too; the log line above stays
        logger().exception("command log failure not counted")
