"""The reporter's pure logic: entries, replies, backoff, auth, stream images and who is due."""

from __future__ import annotations

import base64

from mailproxy import reports


def item(message_id: str, status: str, *events: dict[str, object]) -> dict[str, object]:
    return {"id": message_id, "status": status, "history": [{"event_type": "queued", "event_ts": 1}, *events]}


def test_entries_have_the_api_shapes_and_come_in_event_order() -> None:
    items = [
        item("late", "sent", {"event_type": "sent", "event_ts": 30}),
        item(
            "retried",
            "error",
            {
                "event_type": "deferred",
                "event_ts": 10,
                "description": "451 4.3.0 Try again later (SMTP 451)",
                "deferred_ts": 70,
                "deferred_reason": "451 4.3.0 Try again later (SMTP 451)",
            },
            {"event_type": "error", "event_ts": 20, "description": "Max retries (1) exceeded"},
        ),
    ]
    entries, marks = reports.build_report(items)
    assert entries == [
        {"id": "retried", "deferred_ts": 70, "deferred_reason": "451 4.3.0 Try again later (SMTP 451)"},
        {"id": "retried", "error_ts": 20, "error": "Max retries (1) exceeded"},
        {"id": "late", "sent_ts": 30},
    ]
    assert [(m.id, m.events, m.final) for m in marks] == [
        ("late", [(1, "sent", 30)], True),
        ("retried", [(1, "deferred", 10), (2, "error", 20)], True),
    ]


def test_reported_and_queued_events_are_left_out() -> None:
    deferred = item(
        "m",
        "deferred",
        {"event_type": "deferred", "event_ts": 5, "deferred_ts": 65, "deferred_reason": "rate_limit", "reported_ts": 6},
        {"event_type": "deferred", "event_ts": 70, "deferred_ts": 130, "deferred_reason": "rate_limit"},
    )
    entries, marks = reports.build_report([deferred, item("q", "pending")])
    assert entries == [{"id": "m", "deferred_ts": 130, "deferred_reason": "rate_limit"}]
    assert [(m.events, m.final) for m in marks] == [([(2, "deferred", 70)], False)]


def test_any_2xx_body_is_an_acknowledgement_and_only_json_objects_carry_directives() -> None:
    assert reports.parse_reply(b"") == reports.Reply()
    assert reports.parse_reply(b"<html>ok</html>") == reports.Reply()
    assert reports.parse_reply(b"[1, 2]") == reports.Reply()
    assert reports.parse_reply(b'{"ok": true, "queued": "3"}').queued == 0
    reply = reports.parse_reply(b'{"ok": true, "queued": 2, "next_sync_after": 1700000000.5, "error": "x"}')
    assert (reply.queued, reply.next_sync_after, reply.extra) == (2, 1700000000, {"error": "x"})


def test_backoff_doubles_from_thirty_seconds_up_to_fifteen_minutes() -> None:
    assert [reports.retry_delay(n) for n in range(1, 8)] == [30, 60, 120, 240, 480, 900, 900]


def test_client_auth_becomes_the_authorization_header() -> None:
    assert reports.auth_headers({"method": "bearer", "token": "t"}) == {"Authorization": "Bearer t"}
    basic = reports.auth_headers({"method": "basic", "user": "u", "password": "p"})
    assert basic == {"Authorization": "Basic " + base64.b64encode(b"u:p").decode()}
    assert reports.auth_headers({"method": "none"}) == {}
    assert reports.auth_headers(None) == {}


def test_sync_url_joins_base_and_path_with_the_default_path() -> None:
    assert reports.sync_url({"client_base_url": "https://app.test/"}) == "https://app.test/mail-proxy/sync"
    assert reports.sync_url({"client_base_url": "https://app.test/x", "client_sync_path": "hook"}) == (
        "https://app.test/x/hook"
    )


def test_stream_images_decode_numbers_lists_and_base64_binaries() -> None:
    image = {
        "id": {"S": "m"},
        "n": {"N": "3"},
        "raw": {"B": base64.b64encode(b"\x00\x01").decode()},
        "history": {"L": [{"M": {"event_type": {"S": "sent"}, "event_ts": {"N": "9"}}}]},
    }
    assert reports.stream_image(image) == {
        "id": "m",
        "n": 3,
        "raw": b"\x00\x01",
        "history": [{"event_type": "sent", "event_ts": 9}],
    }
    assert reports.stream_image(None) is None


def test_who_is_called_by_the_scheduled_run() -> None:
    tenant = {"id": "t", "client_base_url": "https://app.test", "active": True}
    now = 1000
    plan = reports._plan
    assert plan(tenant, {}, now, forced=False, flush_all=False) == (tenant, True, False)  # never synced
    assert plan(tenant, {"next_sync_due": 1001}, now, forced=False, flush_all=False) is None
    assert plan(tenant, {"next_sync_due": 900, "dnd_until": 1100}, now, forced=False, flush_all=False) is None
    assert plan(tenant, {"dnd_until": 1100}, now, forced=True, flush_all=False) == (tenant, True, True)
    owed = {"owed_rev": 2, "done_rev": 1, "next_sync_due": 2000, "dnd_until": 5000}
    assert plan(tenant, owed, now, forced=False, flush_all=False) == (tenant, False, False)
    assert plan(tenant, {**owed, "retry_at": 1010}, now, forced=False, flush_all=False) is None
    assert plan(tenant, {**owed, "retry_at": 1010}, now, forced=False, flush_all=True) == (tenant, False, True)
    asleep = {**tenant, "active": False}
    assert plan(asleep, {}, now, forced=True, flush_all=False) is None
    assert plan(asleep, owed, now, forced=False, flush_all=False) == (asleep, False, False)


def test_a_backlog_is_taken_in_whole_chunks_oldest_first() -> None:
    chunks = [{"sk": "2", "ids": ["c", "d"]}, {"sk": "1", "ids": ["a", "b"]}, {"sk": "3", "ids": ["e"]}]
    assert reports._take(chunks, 4) == (["a", "b", "c", "d"], ["1", "2"], True)
    assert reports._take(chunks, 1) == (["a", "b"], ["1"], True)
    assert reports._take(chunks, 10) == (["a", "b", "c", "d", "e"], ["1", "2", "3"], False)
