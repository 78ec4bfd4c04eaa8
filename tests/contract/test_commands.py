"""The CommandLog port: the audit trail of API commands, newest first, filtered and paged by an opaque cursor."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from mailproxy.errors import BadRequest
from mailproxy.settings import get_settings
from mailproxy.stores import Stores

NOW = 1_800_000_000
DAY = 86_400


def _log(stores: Stores, ts: int, tenant_id: str | None = "acme", **fields: Any) -> None:
    stores.commands.log_command(
        ts=ts,
        endpoint=fields.pop("endpoint", "POST /commands/add-messages"),
        tenant_id=tenant_id,
        payload=fields.pop("payload", {"n": ts}),
        response_status=fields.pop("response_status", 200),
        **fields,
    )


def _list(stores: Stores, **query: Any) -> tuple[list[dict[str, Any]], str | None]:
    arguments: dict[str, Any] = {"tenant_id": None, "since_ts": None, "until_ts": None, "limit": 100, "now": NOW}
    return stores.commands.list_commands(**{**arguments, **query})


def test_a_logged_command_comes_back_with_every_field(stores: Stores) -> None:
    payload = {"messages": [{"id": "m1", "subject": "Olá", "deep": {"a": [1, 2.5, None, True]}}]}
    _log(stores, NOW - 10, payload=payload, response_status=207, source_ip="203.0.113.9", request_id="req-1")
    _log(stores, NOW - 5, tenant_id=None, endpoint="POST /tenant", payload=[1, "two"], response_status=201)
    commands, cursor = _list(stores)
    assert cursor is None
    assert commands == [
        {
            "command_ts": NOW - 5,
            "endpoint": "POST /tenant",
            "tenant_id": None,
            "response_status": 201,
            "source_ip": None,
            "request_id": None,
            "payload": [1, "two"],
        },
        {
            "command_ts": NOW - 10,
            "endpoint": "POST /commands/add-messages",
            "tenant_id": "acme",
            "response_status": 207,
            "source_ip": "203.0.113.9",
            "request_id": "req-1",
            "payload": payload,
        },
    ]


def test_commands_are_listed_newest_first_even_within_one_second(stores: Stores) -> None:
    for n in range(3):
        _log(stores, NOW - 100, payload={"n": n})
    _log(stores, NOW - 200, payload={"n": "older"})
    _log(stores, NOW - 50, payload={"n": "newer"})
    commands, _ = _list(stores)
    assert [c["payload"]["n"] for c in commands] == ["newer", 2, 1, 0, "older"]


def test_filters_by_tenant_and_time_keep_both_ends(stores: Stores) -> None:
    for ts, tenant_id in ((NOW - 300, "acme"), (NOW - 200, "beta"), (NOW - 100, "acme"), (NOW - 50, None)):
        _log(stores, ts, tenant_id=tenant_id)
    assert [c["command_ts"] for c in _list(stores, tenant_id="acme")[0]] == [NOW - 100, NOW - 300]
    assert [c["command_ts"] for c in _list(stores, tenant_id="beta")[0]] == [NOW - 200]
    assert _list(stores, tenant_id="nobody")[0] == []
    between = _list(stores, since_ts=NOW - 200, until_ts=NOW - 100)[0]
    assert [c["command_ts"] for c in between] == [NOW - 100, NOW - 200]
    assert [c["command_ts"] for c in _list(stores, since_ts=NOW - 100, tenant_id="acme")[0]] == [NOW - 100]


def test_pages_follow_the_cursor_to_the_end_without_repeating_or_skipping(stores: Stores) -> None:
    for ts in range(NOW - 3 * DAY, NOW, DAY // 4):  # across several UTC days
        _log(stores, ts)
        _log(stores, ts, tenant_id="beta")
    for tenant_id, expected in ((None, 24), ("acme", 12)):
        seen: list[int] = []
        cursor: str | None = None
        pages = 0
        while True:
            page, cursor = _list(stores, tenant_id=tenant_id, limit=5, cursor=cursor)
            pages += 1
            assert len(page) <= 5
            seen += [c["command_ts"] for c in page]
            if cursor is None:
                break
            assert isinstance(cursor, str)
        assert len(seen) == expected
        assert seen == sorted(seen, reverse=True)
        assert pages == -(-expected // 5)
        if tenant_id == "acme":
            assert seen == list(range(NOW - DAY // 4, NOW - 3 * DAY - 1, -DAY // 4))


def test_a_full_last_page_says_there_is_no_more(stores: Stores) -> None:
    for n in range(4):
        _log(stores, NOW - n)
    page, cursor = _list(stores, limit=4)
    assert (len(page), cursor) == (4, None)
    page, cursor = _list(stores, limit=3)
    assert len(page) == 3
    assert cursor is not None
    rest, end = _list(stores, limit=3, cursor=cursor)
    assert ([c["command_ts"] for c in rest], end) == ([NOW - 3], None)


@pytest.mark.parametrize(
    "cursor",
    [
        "not base64!",
        "bm90IGpzb24",  # "not json"
        base64.urlsafe_b64encode(json.dumps({"after": "x"}).encode()).decode(),
        base64.urlsafe_b64encode(json.dumps({"before": 12}).encode()).decode(),
        base64.urlsafe_b64encode(json.dumps({"before": "1' OR 1=1 --"}).encode()).decode(),
        base64.urlsafe_b64encode(json.dumps(["before"]).encode()).decode(),
    ],
)
def test_a_cursor_the_service_did_not_issue_is_a_bad_request(stores: Stores, cursor: str) -> None:
    _log(stores, NOW - 1)
    with pytest.raises(BadRequest, match="Invalid cursor"):
        _list(stores, cursor=cursor)


def test_nothing_older_than_the_retention_is_listed(stores: Stores) -> None:
    retention = get_settings().command_log_retention_days * DAY
    _log(stores, NOW - retention - 1, payload={"n": "expired"})
    _log(stores, NOW - retention + 1, payload={"n": "kept"})
    assert [c["payload"]["n"] for c in _list(stores)[0]] == ["kept"]
    assert [c["payload"]["n"] for c in _list(stores, since_ts=0)[0]] == ["kept"]


def test_a_page_stops_at_its_byte_cap_and_the_rest_follows_the_cursor(stores: Stores) -> None:
    from mailproxy.command_log import MAX_COMMAND_PAGE_BYTES

    size = 380_000  # below DynamoDB's item limit; eleven of them pass the page's cap
    count = MAX_COMMAND_PAGE_BYTES // size + 2
    for n in range(count):
        _log(stores, NOW - n, payload={"n": n, "blob": "x" * size})
    page, cursor = _list(stores, limit=100)
    assert len(page) == MAX_COMMAND_PAGE_BYTES // size
    assert cursor is not None
    rest, end = _list(stores, limit=100, cursor=cursor)
    assert end is None
    assert [c["payload"]["n"] for c in page + rest] == list(range(count))
