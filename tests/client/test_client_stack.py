"""gmp-client against the local stack `make run` starts (over HTTP, delivering to its SMTP sink): every route,
with the admin token and a tenant key, once with `Client` and once with `AsyncClient`."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from gmp_client import (
    Account,
    AsyncClient,
    AuthError,
    Client,
    ClientAuth,
    ForbiddenError,
    Message,
    NotFoundError,
    Tenant,
    ValidationError,
)

from tests.polling import wait_until
from tests.runtimes import RUNTIMES, running

TOKEN = "gmp-client-admin-token"
FAR_FUTURE = 4_000_000_000  # deferred_ts of messages that must stay queued while the test looks at them

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", params=RUNTIMES)
def stack(request: pytest.FixtureRequest) -> Iterator[Any]:
    """`make run` (the one-machine runtime) and `make run-aws` (the handlers around moto)."""
    with running(request.param, api_token=TOKEN, scheduler_interval=0.5) as service:
        yield service


class CountingTransport(httpx.HTTPTransport):
    """The real transport, counting requests per path."""

    def __init__(self) -> None:
        super().__init__()
        self.paths: Counter[str] = Counter()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.paths[request.url.path] += 1
        return super().handle_request(request)


class AsyncCountingTransport(httpx.AsyncHTTPTransport):
    """The real async transport, counting requests per path."""

    def __init__(self) -> None:
        super().__init__()
        self.paths: Counter[str] = Counter()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.paths[request.url.path] += 1
        return await super().handle_async_request(request)


async def collect(entries: AsyncIterator[Any]) -> list[Any]:
    return [entry async for entry in entries]


class Blocking:
    """An AsyncClient driven from the test's plain code: each coroutine run to its end on the test's loop, so
    one scenario exercises both clients."""

    def __init__(self, client: AsyncClient, loop: asyncio.AbstractEventLoop) -> None:
        self._client = client
        self._loop = loop

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._client, name)
        if name == "iter_command_log":
            return lambda *args, **kwargs: iter(self._loop.run_until_complete(collect(method(*args, **kwargs))))
        return lambda *args, **kwargs: self._loop.run_until_complete(method(*args, **kwargs))


Connect = Callable[..., Any]  # (token, counting=False) -> Client, or an AsyncClient behind Blocking


@pytest.fixture(params=["sync", "async"])
def connect(request: pytest.FixtureRequest, stack: Any) -> Iterator[Connect]:
    """A factory of clients of the stack, of one flavour; `.flavour` names it (tenant ids differ per flavour)."""
    closers: list[Callable[[], None]] = []
    loop = asyncio.new_event_loop()

    def make(token: str | None, counting: bool = False) -> Any:
        if request.param == "sync":
            sync = Client(stack.url, token, transport=CountingTransport() if counting else None)
            closers.append(sync.close)
            return sync
        asynchronous = AsyncClient(stack.url, token, transport=AsyncCountingTransport() if counting else None)
        closers.append(lambda: loop.run_until_complete(asynchronous.aclose()))
        return Blocking(asynchronous, loop)

    make.flavour = request.param  # type: ignore[attr-defined]
    yield make
    for close in closers:
        close()
    loop.close()


def message(message_id: str, **fields: Any) -> Message:
    return Message(id=message_id, account_id="sink", from_="Acme <noreply@acme.test>", to=["a@example.test"],
                   subject=f"Hello {message_id}", **fields)  # fmt: skip


def test_every_route_answers_through_the_client(stack: Any, connect: Connect) -> None:
    tenant_id = f"acme-{connect.flavour}"  # type: ignore[attr-defined]
    admin = connect(TOKEN)
    assert admin.health()
    assert connect(None).health().status == "ok"
    assert admin.status().ok is True

    key = admin.create_tenant(Tenant(id=tenant_id, name="Acme", client_auth=ClientAuth(method="bearer", token="cb")))
    assert key is not None and len(key) == 43
    assert admin.create_tenant({"id": tenant_id, "name": "Acme Inc"}) is None  # existed: config overwritten, no key
    assert admin.get_tenant(tenant_id).name == "Acme Inc"
    assert tenant_id in {t.id for t in admin.list_tenants()}
    assert tenant_id in {t.id for t in admin.list_tenants(active_only=True)}
    admin.update_tenant(tenant_id, name="Acme Ltd", client_auth={"method": "basic", "user": "u", "password": "p"})
    shown = admin.get_tenant(tenant_id)
    assert (shown.name, shown.client_auth.method, shown.client_auth.user) == ("Acme Ltd", "basic", "u")
    assert tenant_id in {row.id for row in admin.sync_status().tenants}

    tenant = connect(key)
    assert tenant.get_tenant(tenant_id).id == tenant_id
    tenant.upsert_account(Account(id="sink", host="127.0.0.1", port=stack.smtp_sink_port))
    admin.upsert_account({"id": "spare", "tenant_id": tenant_id, "host": "smtp.example.test", "port": 587})
    assert {a.id for a in tenant.list_accounts()} == {"sink", "spare"}
    assert {a.id for a in admin.list_accounts(tenant_id)} == {"sink", "spare"}

    # One message delivered to the sink, two held for later in a batch.
    result = tenant.add_messages(
        [
            message("now-1"),
            message("later-1", deferred_ts=FAR_FUTURE, batch_code="spring"),
            message("later-2", deferred_ts=FAR_FUTURE, batch_code="spring"),
            {"id": "bad-1", "account_id": "nope", "from": "a@acme.test", "to": "b@example.test", "subject": "x"},
        ],
        default_priority="high",
    )
    assert result.queued == 3
    assert [(r.id, r.reason) for r in result.rejected] == [("bad-1", "account not found for tenant")]
    sent = wait_until(lambda: (r := tenant.get_message("now-1")).status == "sent" and r)
    assert sent.sent_ts is not None and sent.history and sent.history[0].event_type == "queued"
    assert sent.message["from"] == "Acme <noreply@acme.test>"
    assert admin.get_message("later-1", tenant_id).status == "deferred"
    assert {r.id for r in tenant.list_messages(active_only=True)} == {"later-1", "later-2"}
    assert {r.id for r in admin.list_messages(tenant_id)} == {"now-1", "later-1", "later-2", "bad-1"}
    assert tenant.status().pending_messages == 2

    suspended = tenant.suspend(batch_code="spring")
    assert (suspended.suspended_batches, suspended.pending_messages) == (["spring"], 2)
    assert admin.activate(tenant_id, "spring").suspended_batches == []
    assert admin.suspend(tenant_id).suspended_batches == ["*"]
    assert tenant.activate().suspended_batches == []

    tenant.run_now()
    admin.run_now()
    deleted = tenant.delete_messages(["later-1", "ghost"])
    assert (deleted.removed, deleted.not_found) == (1, ["ghost"])
    assert admin.delete_messages(["later-2"], tenant_id).removed == 1
    assert tenant.cleanup_messages(older_than_seconds=0).removed >= 0
    assert admin.cleanup_messages(tenant_id=tenant_id).removed >= 0

    logged = admin.command_log(tenant_id=tenant_id, limit=1000)
    assert {"POST /tenant", "POST /commands/add-messages", "PUT /tenant/" + tenant_id} <= {
        c.endpoint for c in logged.commands
    }
    assert "gmp_sent_total" in admin.metrics_text()

    tenant.delete_account("spare")
    admin.delete_account("sink", tenant_id)
    assert tenant.list_accounts() == []

    new_key = admin.rotate_api_key(tenant_id, expires_at=FAR_FUTURE)
    with pytest.raises(AuthError) as old:
        tenant.status()
    assert old.value.detail == "Invalid or missing API token"
    assert connect(new_key).get_tenant(tenant_id).api_key_expires_at == FAR_FUTURE
    admin.revoke_api_key(tenant_id)
    with pytest.raises(AuthError):
        connect(new_key).status()

    admin.delete_tenant(tenant_id)
    with pytest.raises(NotFoundError) as gone:
        admin.get_tenant(tenant_id)
    assert gone.value.detail == f"Tenant '{tenant_id}' not found"


# Sync only, on `make run` only: the split is the client's, whatever serves it (4,000 conditional writes through
# moto's server take ~2 minutes, more than the client's 30 s per request on a busy machine); the async client
# splits with the same `_core.chunks`, and test_client_retries.py checks the split without a server.
@pytest.mark.parametrize("connect", ["sync"], indirect=True)
def test_add_messages_sends_2500_messages_in_3_requests(stack: Any, connect: Connect) -> None:
    from local.embedded import EmbeddedService

    if not isinstance(stack, EmbeddedService):
        pytest.skip("the client's split does not depend on the runtime: run against make run's, the quick one")
    tenant_id = f"bulk-{connect.flavour}"  # type: ignore[attr-defined]
    admin = connect(TOKEN)
    tenant = connect(admin.create_tenant({"id": tenant_id}), counting=True)
    tenant.upsert_account({"id": "sink", "host": "127.0.0.1", "port": stack.smtp_sink_port})
    batch = [message(f"m-{i}", deferred_ts=FAR_FUTURE) for i in range(2500)]

    result = tenant.add_messages(batch)

    assert (result.queued, result.rejected) == (2500, [])
    transport = (tenant if isinstance(tenant, Client) else tenant._client)._http._transport
    assert transport.paths["/commands/add-messages"] == 3
    assert len(tenant.list_messages(active_only=True)) == 2500
    again = tenant.add_messages(batch[:1500])  # re-submitting unsent ids overwrites them: nothing doubles
    assert again.queued == 1500 and tenant.status().pending_messages == 2500
    admin.delete_tenant(tenant_id)


def test_iterating_the_command_log_follows_every_page(stack: Any, connect: Connect) -> None:
    tenant_id = f"log-{connect.flavour}"  # type: ignore[attr-defined]
    admin = connect(TOKEN)
    admin.create_tenant({"id": tenant_id})
    for i in range(11):
        admin.update_tenant(tenant_id, name=f"Name {i}")

    first = admin.command_log(tenant_id=tenant_id, limit=5)
    assert len(first.commands) == 5 and first.next_cursor
    second = admin.command_log(tenant_id=tenant_id, limit=5, cursor=first.next_cursor)
    assert {c.request_id for c in first.commands}.isdisjoint(c.request_id for c in second.commands)

    entries = list(admin.iter_command_log(tenant_id=tenant_id, limit=5))
    assert len(entries) == 12  # the creation and 11 updates, over 3 pages
    assert [e.payload.get("name") for e in entries[:11]] == [f"Name {i}" for i in reversed(range(11))]
    assert [e.command_ts for e in entries] == sorted((e.command_ts for e in entries), reverse=True)
    admin.delete_tenant(tenant_id)


def test_errors_carry_the_apis_detail(stack: Any, connect: Connect) -> None:
    tenant_id = f"err-{connect.flavour}"  # type: ignore[attr-defined]
    admin = connect(TOKEN)
    with pytest.raises(AuthError) as bad_token:
        connect("not-a-token").status()
    assert bad_token.value.detail == "Invalid or missing API token"

    with pytest.raises(NotFoundError) as unknown:
        admin.get_tenant("no-such-tenant")
    assert unknown.value.detail == "Tenant 'no-such-tenant' not found"

    tenant = connect(admin.create_tenant({"id": tenant_id}))
    with pytest.raises(ForbiddenError):
        tenant.list_tenants()
    with pytest.raises(AuthError) as other:
        tenant.list_messages(tenant_id="someone-else")
    assert other.value.detail == "Token not authorized for this tenant"
    with pytest.raises(NotFoundError):
        tenant.get_message("never-submitted")
    with pytest.raises(ValidationError) as invalid:
        tenant.upsert_account({"id": "x", "host": "h", "port": 25, "colour": "blue"})
    assert any(e["loc"][-1] == "colour" for e in invalid.value.errors)
    admin.delete_tenant(tenant_id)


def test_the_client_readme_examples_run_as_written(stack: Any, capsys: pytest.CaptureFixture[str]) -> None:
    readme = (Path(__file__).resolve().parents[2] / "client" / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert len(blocks) == 2
    for block in blocks:
        # The README names `make run`'s defaults; this stack listens on free ports with its own token.
        code = (
            block.replace("http://127.0.0.1:8000", stack.url)
            .replace('"admin-secret"', repr(TOKEN))
            .replace("port=1025", f"port={stack.smtp_sink_port}")
        )
        exec(compile(code, "client/README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert "1 []" in printed  # queued 1, nothing rejected
    assert "POST /tenant" in printed
