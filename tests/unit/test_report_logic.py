"""The reporter's pure logic: entries, replies, backoff, auth, stream images and who is due."""

from __future__ import annotations

import base64

import pytest
from mailproxy import outbound_http, report_format, reports
from mailproxy.adapters.aws import stream


def item(message_id: str, status: str, *events: dict[str, object]) -> dict[str, object]:
    return {"id": message_id, "status": status, "history": [{"event_type": "queued", "event_ts": 1}, *events]}


def owed(old: dict[str, object] | None, new: dict[str, object]) -> list[report_format.Owed]:
    return report_format.appended_events(old, new)


def test_entries_have_the_api_shapes_and_come_in_event_order() -> None:
    late = item("late", "sent", {"event_type": "sent", "event_ts": 30})
    retried = item(
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
    )
    events = owed(None, late) + owed(None, retried)
    assert report_format.build_report(events) == [
        {"id": "retried", "deferred_ts": 70, "deferred_reason": "451 4.3.0 Try again later (SMTP 451)"},
        {"id": "retried", "error_ts": 20, "error": "Max retries (1) exceeded"},
        {"id": "late", "sent_ts": 30},
    ]
    assert [e.key for e in events] == [
        ("late", 1, "sent", 30),
        ("retried", 1, "deferred", 10),
        ("retried", 2, "error", 20),
    ]


def test_only_the_events_a_change_appended_are_owed_and_queued_events_never() -> None:
    first = {"event_type": "deferred", "event_ts": 5, "deferred_ts": 65, "deferred_reason": "rate_limit"}
    second = {"event_type": "deferred", "event_ts": 70, "deferred_ts": 130, "deferred_reason": "rate_limit"}
    before, after = item("m", "deferred", first), item("m", "deferred", first, second)
    assert report_format.build_report(owed(before, after)) == [
        {"id": "m", "deferred_ts": 130, "deferred_reason": "rate_limit"}
    ]
    assert owed(after, after) == []  # a change that added no event (a claim, an unpark) owes nothing
    assert owed(None, item("q", "pending")) == []


def test_chunks_and_ledger_keys_survive_their_compressed_form() -> None:
    from mailproxy import ledger

    events = owed(None, item("m-é", "error", {"event_type": "error", "event_ts": 3, "description": "550 no ✉"}))
    assert report_format.decode_events(report_format.encode_events(events)) == events
    acks = {e.key: 1795867215 for e in events}
    assert ledger.decode_acks(ledger.encode_acks(acks)) == acks


def test_a_stream_batch_names_its_chunk_after_its_first_record() -> None:
    key = report_format.chunk_key(1795867215, "111100000000012345678901", now=5)
    assert key == report_format.chunk_key(1795867215, "111100000000012345678901", now=99)  # a retried batch
    assert report_format.chunk_ts(key) == 1795867215
    assert report_format.chunk_key(None, "2", now=7) < report_format.chunk_key(None, "10", now=7)


def test_any_2xx_body_is_an_acknowledgement_and_only_json_objects_carry_directives() -> None:
    assert report_format.parse_reply(b"") == report_format.Reply()
    assert report_format.parse_reply(b"<html>ok</html>") == report_format.Reply()
    assert report_format.parse_reply(b"[1, 2]") == report_format.Reply()
    assert report_format.parse_reply(b'{"ok": true, "queued": "3"}').queued == 0
    reply = report_format.parse_reply(b'{"ok": true, "queued": 2, "next_sync_after": 1700000000.5, "error": "x"}')
    assert (reply.queued, reply.next_sync_after, reply.extra) == (2, 1700000000, {"error": "x"})


@pytest.mark.parametrize(
    "body",
    [
        b'{"next_sync_after": Infinity, "queued": NaN}',
        b'{"next_sync_after": 1e400, "queued": -Infinity}',
        b'{"next_sync_after": 1e300, "queued": -3}',  # past what DynamoDB can store, and a negative count
    ],
)
def test_numbers_no_clock_or_table_can_hold_are_no_directive(body: bytes) -> None:
    # Python's JSON reads Infinity and NaN; int() of them raised after the report was acknowledged.
    assert report_format.parse_reply(body) == report_format.Reply()


def test_backoff_doubles_from_thirty_seconds_up_to_fifteen_minutes() -> None:
    assert [report_format.retry_delay(n) for n in range(1, 8)] == [30, 60, 120, 240, 480, 900, 900]


def test_client_auth_becomes_the_authorization_header() -> None:
    assert outbound_http.auth_headers({"method": "bearer", "token": "t"}) == {"Authorization": "Bearer t"}
    basic = outbound_http.auth_headers({"method": "basic", "user": "u", "password": "p"})
    assert basic == {"Authorization": "Basic " + base64.b64encode(b"u:p").decode()}
    assert outbound_http.auth_headers({"method": "none"}) == {}
    assert outbound_http.auth_headers(None) == {}


def test_sync_url_joins_base_and_path_with_the_default_path() -> None:
    assert report_format.sync_url({"client_base_url": "https://app.test/"}) == "https://app.test/mail-proxy/sync"
    assert report_format.sync_url({"client_base_url": "https://app.test/x", "client_sync_path": "hook"}) == (
        "https://app.test/x/hook"
    )


def test_stream_images_decode_numbers_lists_and_base64_binaries() -> None:
    image = {
        "id": {"S": "m"},
        "n": {"N": "3"},
        "raw": {"B": base64.b64encode(b"\x00\x01").decode()},
        "history": {"L": [{"M": {"event_type": {"S": "sent"}, "event_ts": {"N": "9"}}}]},
    }
    assert stream.stream_image(image) == {
        "id": "m",
        "n": 3,
        "raw": b"\x00\x01",
        "history": [{"event_type": "sent", "event_ts": 9}],
    }
    assert stream.stream_image(None) is None


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
    def chunk(sk: str, *ids: str) -> dict[str, object]:
        events = [report_format.Owed(i, 1, {"event_type": "sent", "event_ts": 1}) for i in ids]
        return {"sk": sk, "events": report_format.encode_events(events)}

    def taken(limit: int) -> tuple[list[str], bool]:
        used, more = reports._take([chunk("2", "c", "d"), chunk("1", "a", "b"), chunk("3", "e")], limit)
        return [str(c["sk"]) for c in used], more

    assert taken(4) == (["1", "2"], True)
    assert taken(1) == (["1"], True)
    assert taken(10) == (["1", "2", "3"], False)
