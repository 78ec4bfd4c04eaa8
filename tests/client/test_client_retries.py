"""The client's errors, retries and splitting against scripted answers (httpx.MockTransport): no server, no network."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from gmp_client import (
    ApiError,
    AsyncClient,
    AuthError,
    Client,
    ConnectionFailed,
    ForbiddenError,
    Message,
    NotFoundError,
    ValidationError,
)

TOKEN = "tok-secret-0123456789"
STATUS = {"ok": True, "active": True, "scheduler_active": True, "pending_messages": 0, "uptime_seconds": 1}


class Script:
    """Answers in order (the last one repeated), recording every request."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers[min(len(self.requests), len(self.answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer


def client(script: Callable[[httpx.Request], httpx.Response], **kwargs: Any) -> Client:
    return Client("http://proxy.test", TOKEN, transport=httpx.MockTransport(script), backoff=0, **kwargs)


@pytest.fixture
def slept(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    delays: list[float] = []
    monkeypatch.setattr("gmp_client.client.time.sleep", delays.append)
    yield delays


def test_a_get_answered_503_twice_then_200_returns_one_result_after_3_attempts(slept: list[float]) -> None:
    script = Script(httpx.Response(503), httpx.Response(503), httpx.Response(200, json=STATUS))
    assert client(script).status().pending_messages == 0
    assert len(script.requests) == 3
    assert len(slept) == 2


def test_the_async_client_retries_the_same_way() -> None:
    script = Script(httpx.Response(503), httpx.Response(504), httpx.Response(200, json=STATUS))

    async def run() -> int:
        async with AsyncClient("http://proxy.test", TOKEN, transport=httpx.MockTransport(script), backoff=0) as c:
            return (await c.status()).uptime_seconds

    assert asyncio.run(run()) == 1
    assert len(script.requests) == 3


def test_retries_stop_after_the_configured_number_and_raise_the_last_error(slept: list[float]) -> None:
    script = Script(httpx.Response(503, json={"detail": "busy"}))
    with pytest.raises(ApiError) as caught:
        client(script, retries=2).status()
    assert (caught.value.status_code, caught.value.detail) == (503, "busy")
    assert len(script.requests) == 3


def test_backoff_doubles_with_jitter() -> None:
    script = Script(httpx.Response(503))
    delays: list[float] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("gmp_client.client.time.sleep", delays.append)
        with pytest.raises(ApiError):
            Client("http://proxy.test", transport=httpx.MockTransport(script), retries=3, backoff=1).status()
    assert [0.5 <= delays[0] <= 1, 1 <= delays[1] <= 2, 2 <= delays[2] <= 4] == [True] * 3


def test_retry_after_is_honoured(slept: list[float]) -> None:
    script = Script(httpx.Response(429, headers={"Retry-After": "7"}), httpx.Response(200, json=STATUS))
    client(script).status()
    assert slept == [7.0]


def test_a_retry_after_beyond_a_minute_raises_instead_of_hanging(slept: list[float]) -> None:
    script = Script(httpx.Response(503, headers={"Retry-After": "3600"}))
    with pytest.raises(ApiError):
        client(script).status()
    assert len(script.requests) == 1


def test_a_500_is_not_retried(slept: list[float]) -> None:
    script = Script(httpx.Response(500, text="Internal Server Error"))
    with pytest.raises(ApiError) as caught:
        client(script).status()
    assert caught.value.detail == "Internal Server Error"
    assert len(script.requests) == 1


def test_add_messages_is_retried_on_503_since_the_api_makes_it_idempotent_per_message_id(slept: list[float]) -> None:
    script = Script(httpx.Response(503), httpx.Response(200, json={"ok": True, "queued": 1, "rejected": []}))
    result = client(script).add_messages([{"id": "m1", "account_id": "a", "from": "a@x.test", "to": "b@x.test"}])
    assert result.queued == 1
    assert len(script.requests) == 2
    assert json.loads(script.requests[0].content) == json.loads(script.requests[1].content)


def test_create_tenant_is_not_retried_on_503_since_its_key_is_shown_once(slept: list[float]) -> None:
    script = Script(httpx.Response(503), httpx.Response(200, json={"ok": True}))
    with pytest.raises(ApiError):
        client(script).create_tenant({"id": "acme"})
    assert len(script.requests) == 1


def test_create_tenant_is_retried_on_429_which_refuses_before_any_work(slept: list[float]) -> None:
    key = "k" * 43
    script = Script(httpx.Response(429), httpx.Response(200, json={"ok": True, "api_key": key}))
    assert client(script).create_tenant({"id": "acme"}) == key
    assert len(script.requests) == 2


def test_a_connection_never_made_is_retried_for_any_call_a_read_timeout_only_for_idempotent_ones(
    slept: list[float],
) -> None:
    never_made = Script(httpx.ConnectError("refused"), httpx.Response(200, json={"ok": True, "api_key": None}))
    assert client(never_made).create_tenant({"id": "acme"}) is None
    assert len(never_made.requests) == 2

    lost = Script(httpx.ReadTimeout("slow"), httpx.Response(200, json={"ok": True}))
    with pytest.raises(ConnectionFailed):
        client(lost).rotate_api_key("acme")
    assert len(lost.requests) == 1

    lost_get = Script(httpx.ReadTimeout("slow"), httpx.Response(200, json=STATUS))
    assert client(lost_get).status().active is True


@pytest.mark.parametrize(
    ("status", "error"),
    [(401, AuthError), (403, ForbiddenError), (404, NotFoundError), (400, ApiError), (413, ApiError)],
)
def test_each_error_status_raises_its_exception_with_the_apis_detail(status: int, error: type[ApiError]) -> None:
    script = Script(httpx.Response(status, json={"detail": "the reason"}))
    with pytest.raises(error) as caught:
        client(script).list_tenants()
    assert type(caught.value) is error
    assert (caught.value.status_code, caught.value.detail) == (status, "the reason")
    assert "the reason" in str(caught.value)


def test_a_422_keeps_fastapis_list_and_names_the_field() -> None:
    detail = [{"loc": ["body", "messages", 0, "colour"], "msg": "Extra inputs are not permitted", "type": "x"}]
    script = Script(httpx.Response(422, json={"detail": detail}))
    with pytest.raises(ValidationError) as caught:
        client(script).add_messages([{"id": "m"}])
    assert caught.value.detail == detail
    assert "messages.0.colour: Extra inputs are not permitted" in str(caught.value)


def test_the_token_appears_in_no_repr_and_no_error_message() -> None:
    c = client(Script(httpx.Response(401, json={"detail": "Invalid or missing API token"})))
    assert TOKEN not in repr(c)
    with pytest.raises(AuthError) as caught:
        c.status()
    assert TOKEN not in str(caught.value) and TOKEN not in repr(caught.value)
    assert caught.value.detail == "Invalid or missing API token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_an_unreachable_url_raises_connection_failed_in_one_line_naming_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with Client(url, TOKEN, retries=1, backoff=0) as c, pytest.raises(ConnectionFailed) as caught:
        c.status()
    message = str(caught.value)
    assert f"{url}/status" in message and "\n" not in message and TOKEN not in message


def test_a_timeout_raises_connection_failed_saying_so(slept: list[float]) -> None:
    script = Script(httpx.ReadTimeout("timed out"))
    with pytest.raises(ConnectionFailed) as caught:
        client(script, timeout=2.5).status()
    assert "no answer within 2.5 s" in str(caught.value)


def added(request: httpx.Request) -> httpx.Response:
    """An add-messages endpoint: ids starting `bad` rejected; a request queuing nothing answers 400."""
    messages = json.loads(request.content)["messages"]
    assert len(messages) <= 1000
    rejected = [{"id": m["id"], "reason": "invalid address: x"} for m in messages if m["id"].startswith("bad")]
    queued = len(messages) - len(rejected)
    if queued == 0 and rejected:
        return httpx.Response(400, json={"detail": {"error": "No message was queued", "rejected": rejected}})
    return httpx.Response(200, json={"ok": True, "queued": queued, "rejected": rejected})


def message(message_id: str) -> Message:
    return Message(id=message_id, account_id="a", from_="a@x.test", to="b@x.test", subject="s")


def test_add_messages_splits_2500_messages_into_3_requests_and_sums_them() -> None:
    requests: list[int] = []

    def endpoint(request: httpx.Request) -> httpx.Response:
        requests.append(len(json.loads(request.content)["messages"]))
        return added(request)

    result = client(endpoint).add_messages([message(f"m{i}") for i in range(2499)] + [message("bad-1")])
    assert requests == [1000, 1000, 500]
    assert result.queued == 2499
    assert [r.id for r in result.rejected] == ["bad-1"]


def test_a_chunk_queuing_nothing_is_not_an_error_when_another_chunk_queued() -> None:
    batch = [message(f"bad-{i}") for i in range(1000)] + [message("ok")]
    result = client(added).add_messages(batch)
    assert result.queued == 1
    assert len(result.rejected) == 1000


def test_nothing_queued_across_every_chunk_raises_the_400_with_every_rejection() -> None:
    with pytest.raises(ApiError) as caught:
        client(added).add_messages([message(f"bad-{i}") for i in range(1001)])
    assert caught.value.status_code == 400
    assert len(caught.value.detail["rejected"]) == 1001


def test_an_empty_list_is_one_request() -> None:
    script = Script(httpx.Response(200, json={"ok": True, "queued": 0, "rejected": []}))
    assert client(script).add_messages([]).queued == 0
    assert len(script.requests) == 1


def test_requests_carry_the_token_and_the_apis_field_names() -> None:
    script = Script(httpx.Response(200, json={"ok": True, "queued": 1, "rejected": []}))
    client(script).add_messages([message("m1")], default_priority="high")
    request = script.requests[0]
    assert request.headers["X-API-Token"] == TOKEN
    assert json.loads(request.content) == {
        "messages": [{"id": "m1", "account_id": "a", "from": "a@x.test", "to": "b@x.test", "subject": "s"}],
        "default_priority": "high",
    }


def test_a_reply_with_fields_a_newer_server_added_still_reads() -> None:
    script = Script(httpx.Response(200, json={**STATUS, "region": "eu-west-1"}))
    assert client(script).status().active is True


def test_request_models_read_a_dict_with_the_apis_names_and_refuse_unknown_fields() -> None:
    from gmp_client import Attachment

    written = {"id": "m", "account_id": "a", "from_addr": "a@x.test", "to": "b@x.test", "subject": "s",
               "attachments": [{"filename": "r.pdf", "storage_path": "s3://b/k"}]}  # fmt: skip
    parsed = Message.from_dict(written)
    assert parsed.from_ == "a@x.test" and parsed.attachments == [Attachment(filename="r.pdf", storage_path="s3://b/k")]
    assert parsed.to_dict()["from"] == "a@x.test"
    with pytest.raises(TypeError, match="colour"):
        Message.from_dict({**written, "colour": "blue"})


def test_secrets_stay_out_of_the_models_reprs() -> None:
    from gmp_client import Account, ClientAuth, Tenant

    shown = repr(Account(id="a", host="h", port=25, password="smtp-pass")) + repr(
        Tenant(id="t", client_auth=ClientAuth(method="bearer", token="cb-token"))
    )
    assert "smtp-pass" not in shown and "cb-token" not in shown
