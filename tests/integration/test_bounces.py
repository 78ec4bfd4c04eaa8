"""Bounces and complaints read from a real IMAP server (Dovecot on loopback), on both storages: what the tenant's
callback receives, what GET /messages shows, what is counted, and that nothing is read twice or skipped."""

from __future__ import annotations

import email
from typing import Any

import pytest
from mailproxy import bounces
from mailproxy.stores import stores

from tests.bounce_mail import arf, dsn, fixture
from tests.imap_server import DovecotServer
from tests.integration.delivery import Delivery, message
from tests.integration.smtp_servers import RunningServer
from tests.integration.test_reports import Callback, Service

pytestmark = pytest.mark.both_storages

RETURN_PATH = "bounces@bounce.test"


class Box:
    """A user's mailbox on the test Dovecot."""

    def __init__(self, server: DovecotServer) -> None:
        self.server = server
        self.user, self.password = server.add_user()

    def config(self, **fields: Any) -> dict[str, Any]:
        """The `bounce_mailbox` object naming this mailbox."""
        return {
            "host": self.server.host,
            "port": self.server.port,
            "use_tls": False,
            "user": self.user,
            "password": self.password,
            "return_path": RETURN_PATH,
            **fields,
        }

    def append(self, raw: bytes, folder: str = "INBOX") -> None:
        self.server.append(self.user, self.password, raw, folder)

    def uids(self, folder: str = "INBOX", criteria: str = "ALL") -> list[int]:
        return self.server.uids(self.user, self.password, folder, criteria)


@pytest.fixture
def box(dovecot: DovecotServer) -> Box:
    return Box(dovecot)


def tenant_with_mailbox(service: Service, callback: Callback, box: Box, **mailbox: Any) -> Delivery:
    acme = service.tenant("acme", client_base_url=callback.url)
    account = {
        "id": "smtp",
        "host": "127.0.0.1",
        "port": service.smtp_port,
        "use_tls": False,
        "bounce_mailbox": box.config(**mailbox),
    }
    reply = service.api.post("/account", json=account, headers=acme.key)
    assert reply.status_code == 200, reply.text
    return acme


def bounce_entries(callback: Callback) -> list[dict[str, Any]]:
    return [e for call in callback.calls for e in call.report if "bounce_ts" in e]


def history(acme: Delivery, message_id: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = acme.records()[message_id]["history"]
    return events


def account_counters(tenant_id: str = "acme", account_id: str = "smtp") -> dict[str, Any]:
    [row] = [
        r for r in stores().counters.counter_rows() if (r["tenant_id"], r["account_id"]) == (tenant_id, account_id)
    ]
    return row


def reputation_window(tenant_id: str = "acme", account_id: str = "smtp") -> dict[str, int]:
    from mailproxy import clock

    return stores().counters.add_reputation(tenant_id, account_id, bounces=0, complaints=0, now=clock.now_ts())


def unmatched(tenant_id: str = "acme") -> int:
    return int(stores().counters.tenant_counter_rows().get(tenant_id, {}).get(bounces.UNMATCHED, 0))


def test_a_dsn_for_a_sent_message_reaches_the_callback_and_the_history(
    service: Service, callback: Callback, box: Box, server: RunningServer
) -> None:
    acme = tenant_with_mailbox(service, callback, box)
    acme.submit(message("m-1", to="nobody@example.test"))
    service.deliver(acme)
    [received] = server.handler.received
    assert received.mail_from == RETURN_PATH  # the account's bounce mailbox is the envelope sender
    pk = acme.records()["m-1"]["pk"]

    box.append(dsn(to=RETURN_PATH, recipient="nobody@example.test", genro_id="m-1", message_id=f"{pk}@acme.test"))
    totals = bounces.run()
    service.reporter.stream()

    assert totals["recorded"] == 1
    [entry] = bounce_entries(callback)
    assert entry["id"] == "m-1"
    assert entry["bounce_type"] == "hard"
    assert entry["bounce_code"] == "550"
    assert entry["bounce_status"] == "5.1.1"
    assert entry["recipient"] == "nobody@example.test"
    assert "User unknown" in entry["bounce_reason"]
    assert isinstance(entry["bounce_ts"], int)
    [event] = [e for e in history(acme, "m-1") if e["event_type"] == "bounce"]
    assert event["bounce_type"] == "hard" and event["recipient"] == "nobody@example.test"
    assert event["reported_ts"] is not None
    assert acme.records()["m-1"]["status"] == "sent"  # a bounce adds an event; the send result stays
    assert account_counters()["bounces_hard"] == 1
    assert box.uids(criteria="UNKEYWORD $GmpProcessed") == []  # flagged processed where it lies

    # Read again: nothing new, nothing twice.
    assert bounces.run()["messages"] == 0
    service.reporter.stream()
    assert len(bounce_entries(callback)) == 1


def test_a_verp_return_path_matches_a_bounce_that_quotes_nothing(
    service: Service, callback: Callback, box: Box, server: RunningServer
) -> None:
    acme = tenant_with_mailbox(service, callback, box, verp=True)
    acme.submit(message("m-1", to="gone@example.test"), message("Order/42", to="gone2@example.test"))
    service.deliver(acme)
    envelopes = {r.rcpt_tos[0]: r.mail_from for r in server.handler.received}
    for address in envelopes.values():
        local, _, domain = address.partition("@")
        assert local.startswith("bounces+") and domain == "bounce.test" and len(local) <= 64

    for recipient, return_path in envelopes.items():
        box.append(dsn(to=return_path, recipient=recipient, returned=False))
    assert bounces.run()["recorded"] == 2
    service.reporter.stream()

    assert {(e["id"], e["recipient"]) for e in bounce_entries(callback)} == {
        ("m-1", "gone@example.test"),
        ("Order/42", "gone2@example.test"),
    }
    assert unmatched() == 0


def test_a_bounce_that_returns_only_the_message_id_is_matched_by_it(
    service: Service, callback: Callback, box: Box, server: RunningServer
) -> None:
    # No VERP, no X-Genro-Mail-ID returned: the Message-ID the service derived names the message by its id, and
    # its uuid proves the report saw it (one with another uuid is someone guessing).
    acme = tenant_with_mailbox(service, callback, box)
    acme.submit(message("Order/42", to="gone@example.test"), message("m-2", to="other@example.test"))
    service.deliver(acme)
    sent = {r.rcpt_tos[0]: email.message_from_bytes(r.content)["Message-ID"] for r in server.handler.received}
    assert sent["gone@example.test"].startswith(f"<{acme.records()['Order/42']['pk']}.")
    box.append(dsn(to=RETURN_PATH, recipient="gone@example.test", message_id=sent["gone@example.test"][1:-1]))
    guessed = "0" * 32 + sent["other@example.test"][33:-1]
    box.append(dsn(to=RETURN_PATH, recipient="other@example.test", message_id=guessed))

    totals = bounces.run()
    service.reporter.stream()

    assert (totals["recorded"], totals["unmatched"]) == (1, 1)
    assert [(e["id"], e["recipient"]) for e in bounce_entries(callback)] == [("Order/42", "gone@example.test")]
    assert [e["event_type"] for e in history(acme, "m-2")] == ["queued", "sent"]


def test_a_long_id_folded_into_encoded_words_is_matched_by_its_header(
    service: Service, callback: Callback, box: Box, server: RunningServer
) -> None:
    # An id too long for one header line goes out folded into RFC 2047 encoded words, and too long for the
    # Message-ID to carry (over 100 bytes): the report's X-Genro-Mail-ID is read unfolded and decoded.
    long_id = "Invoice/2026-12/" + "\u00e9" * 20 + "-" + "9" * 100
    acme = tenant_with_mailbox(service, callback, box)
    acme.submit(message(long_id, to="gone@example.test"))
    service.deliver(acme)
    [received] = server.handler.received
    sent_headers = received.content.split(b"\r\n\r\n", 1)[0].decode("ascii").replace("\r\n", "\n")
    assert "X-Genro-Mail-ID: =?utf-8?" in sent_headers  # folded as the builder writes it
    box.append(dsn(to=RETURN_PATH, recipient="gone@example.test", original_headers=sent_headers))
    assert bounces.run()["recorded"] == 1
    service.reporter.stream()
    assert [(e["id"], e["recipient"]) for e in bounce_entries(callback)] == [(long_id, "gone@example.test")]


def test_a_forged_or_foreign_verp_token_and_an_unknown_id_are_counted_unmatched_and_change_nothing(
    service: Service, callback: Callback, box: Box
) -> None:
    acme = tenant_with_mailbox(service, callback, box, verp=True)
    acme.submit(message("m-1", to="a@example.test"))
    service.deliver(acme)
    box.append(dsn(to="bounces+aaaaaaaalm-1@bounce.test", recipient="a@example.test", returned=False))
    box.append(dsn(to=RETURN_PATH, recipient="a@example.test", genro_id="not-ours"))

    totals = bounces.run()
    service.reporter.stream()

    assert (totals["messages"], totals["recorded"], totals["unmatched"]) == (2, 0, 2)
    assert unmatched() == 2
    assert bounce_entries(callback) == []
    assert [e["event_type"] for e in history(acme, "m-1")] == ["queued", "sent"]
    assert box.uids(criteria="UNKEYWORD $GmpProcessed") == []


def test_auto_replies_and_malformed_mail_are_not_bounces(service: Service, callback: Callback, box: Box) -> None:
    acme = tenant_with_mailbox(service, callback, box)
    acme.submit(message("m-1", to="a@example.test"))
    service.deliver(acme)
    for name in ("out-of-office.eml", "vacation-no-headers.eml", "malformed.eml", "malformed-report.eml"):
        box.append(fixture(name))

    totals = bounces.run()

    assert (totals["messages"], totals["recorded"], totals["unmatched"]) == (4, 0, 0)
    assert unmatched() == 0
    assert [e["event_type"] for e in history(acme, "m-1")] == ["queued", "sent"]
    assert box.uids(criteria="UNKEYWORD $GmpProcessed") == []


def test_a_complaint_and_a_soft_bounce_are_reported_with_their_own_types(
    service: Service, callback: Callback, box: Box
) -> None:
    acme = tenant_with_mailbox(service, callback, box)
    acme.submit(message("m-1", to="annoyed@example.test"), message("m-2", to="full@example.test"))
    service.deliver(acme)
    box.append(arf(to=RETURN_PATH, recipient="annoyed@example.test", genro_id="m-1"))
    box.append(
        dsn(
            to=RETURN_PATH,
            recipient="full@example.test",
            genro_id="m-2",
            status="4.2.2",
            action="delayed",
            diagnostic="smtp; 452 4.2.2 Mailbox full",
        )
    )
    assert bounces.run()["recorded"] == 2
    service.reporter.stream()

    by_id = {e["id"]: e for e in bounce_entries(callback)}
    assert by_id["m-1"]["bounce_type"] == "complaint"
    assert by_id["m-1"]["recipient"] == "annoyed@example.test"
    assert by_id["m-2"]["bounce_type"] == "soft" and by_id["m-2"]["bounce_code"] == "452"
    assert [e["event_type"] for e in history(acme, "m-1")][-1] == "complaint"
    counters = account_counters()
    assert (counters["complaints"], counters["bounces_soft"], counters.get("bounces_hard", 0)) == (1, 1, 0)


def test_a_report_read_again_after_a_crash_is_recorded_once(service: Service, callback: Callback, box: Box) -> None:
    acme = tenant_with_mailbox(service, callback, box)
    acme.submit(message("m-1", to="nobody@example.test"))
    service.deliver(acme)
    raw = dsn(to=RETURN_PATH, recipient="nobody@example.test", genro_id="m-1")
    box.append(raw)
    # A poller that recorded the report, then died before flagging it and saving its position.
    [mailbox] = bounces.mailboxes(stores().tenants.get_tenant("acme") or {}, stores().tenants.list_accounts("acme"))
    assert bounces.process(mailbox, raw, None).recorded == 1

    totals = bounces.run()
    service.reporter.stream()

    assert (totals["messages"], totals["recorded"]) == (1, 0)
    assert len(bounce_entries(callback)) == 1
    assert [e["event_type"] for e in history(acme, "m-1")].count("bounce") == 1
    assert account_counters()["bounces_hard"] == 1
    assert reputation_window()["bounces"] == 1  # the reputation guard is not told twice either


def test_nothing_is_skipped_or_read_twice_across_runs_and_a_new_uidvalidity(
    service: Service, callback: Callback, box: Box
) -> None:
    acme = tenant_with_mailbox(service, callback, box)
    acme.submit(*(message(f"m-{n}", to=f"r{n}@example.test") for n in range(3)))
    service.deliver(acme)
    box.append(dsn(to=RETURN_PATH, recipient="r0@example.test", genro_id="m-0"))
    assert bounces.run()["recorded"] == 1
    box.append(dsn(to=RETURN_PATH, recipient="r1@example.test", genro_id="m-1"))
    assert bounces.run()["recorded"] == 1
    position = stores().bounces.position("acme/smtp")
    assert position is not None and position["last_uid"] == max(box.uids())

    # The mailbox renumbered (another UIDVALIDITY): what is flagged processed is not read again.
    stores().bounces.save_position(
        "acme/smtp", identity=position["identity"], uidvalidity=1, last_uid=10_000, now=position["updated_at"]
    )
    box.append(dsn(to=RETURN_PATH, recipient="r2@example.test", genro_id="m-2"))
    totals = bounces.run()

    assert (totals["messages"], totals["recorded"]) == (1, 1)
    service.reporter.stream()
    assert sorted(e["id"] for e in bounce_entries(callback)) == ["m-0", "m-1", "m-2"]


def test_processed_reports_move_to_the_processed_folder(service: Service, callback: Callback, box: Box) -> None:
    box.append(fixture("out-of-office.eml"), folder="Processed")  # makes the folder
    acme = tenant_with_mailbox(service, callback, box, processed_folder="Processed")
    acme.submit(message("m-1", to="nobody@example.test"))
    service.deliver(acme)
    box.append(dsn(to=RETURN_PATH, recipient="nobody@example.test", genro_id="m-1"))

    assert bounces.run()["recorded"] == 1

    assert box.uids() == []
    assert len(box.uids("Processed")) == 2


def test_the_tenants_mailbox_serves_accounts_that_name_none(
    service: Service, callback: Callback, box: Box, server: RunningServer
) -> None:
    acme = service.tenant("acme", client_base_url=callback.url, bounce_mailbox=box.config())
    acme.submit(message("m-1", to="nobody@example.test"))
    service.deliver(acme)
    assert server.handler.received[0].mail_from == RETURN_PATH
    box.append(dsn(to=RETURN_PATH, recipient="nobody@example.test", genro_id="m-1"))

    assert bounces.run()["recorded"] == 1
    assert stores().bounces.position("acme/*") is not None


def test_mailbox_passwords_are_never_shown_and_a_bad_mailbox_is_skipped(
    service: Service, callback: Callback, box: Box
) -> None:
    acme = tenant_with_mailbox(service, callback, box)
    [account] = service.api.get("/accounts", headers=acme.key).json()["accounts"]
    assert account["bounce_mailbox"]["user"] == box.user
    assert account["bounce_mailbox"]["has_password"] is True
    assert "password" not in account["bounce_mailbox"]
    assert box.password not in service.api.get("/accounts", headers=acme.key).text

    wrong = {"id": "other", "host": "127.0.0.1", "port": service.smtp_port, "use_tls": False}
    wrong["bounce_mailbox"] = box.config(password="wrong", folder="Elsewhere")
    assert service.api.post("/account", json=wrong, headers=acme.key).status_code == 200
    guarded = {"id": "meta", "host": "127.0.0.1", "port": service.smtp_port, "use_tls": False}
    guarded["bounce_mailbox"] = box.config(host="169.254.169.254", user="x")
    assert service.api.post("/account", json=guarded, headers=acme.key).status_code == 200

    totals = bounces.run()

    assert (totals["mailboxes"], totals["failed"]) == (1, 2)


def test_bounces_complaints_and_unmatched_reports_are_exposed_to_prometheus(
    service: Service, callback: Callback, box: Box
) -> None:
    from mailproxy import metrics

    acme = tenant_with_mailbox(service, callback, box)
    acme.submit(message("m-1", to="gone@example.test"), message("m-2", to="annoyed@example.test"))
    service.deliver(acme)
    box.append(dsn(to=RETURN_PATH, recipient="gone@example.test", genro_id="m-1"))
    box.append(arf(to=RETURN_PATH, recipient="annoyed@example.test", genro_id="m-2"))
    box.append(dsn(to=RETURN_PATH, recipient="x@example.test", genro_id="nobody-knows"))
    bounces.run()

    text = metrics.render().decode()

    assert 'gmp_bounces_total{account_id="smtp",tenant_id="acme",type="hard"} 1.0' in text
    assert 'gmp_bounces_total{account_id="smtp",tenant_id="acme",type="soft"} 0.0' in text
    assert 'gmp_complaints_total{account_id="smtp",tenant_id="acme"} 1.0' in text
    assert 'gmp_bounce_reports_unmatched_total{tenant_id="acme"} 1.0' in text


def test_a_message_with_its_own_return_path_keeps_it(
    service: Service, callback: Callback, box: Box, server: RunningServer
) -> None:
    from mailproxy import verp

    acme = tenant_with_mailbox(service, callback, box, verp=True)
    acme.submit(
        message("m-1", to="a@example.test", return_path="own@acme.test"),
        message("m-2", to="b@example.test"),  # no return path of its own: the mailbox's, with its VERP token
    )
    service.deliver(acme)
    envelopes = {r.rcpt_tos[0]: r.mail_from for r in server.handler.received}
    key = verp.signing_key()
    assert key is not None
    assert envelopes == {
        "a@example.test": "own@acme.test",
        "b@example.test": verp.return_path(RETURN_PATH, "acme", "m-2", key),
    }
    assert envelopes["b@example.test"].startswith("bounces+")


def test_a_bounce_mailbox_is_validated_replaced_and_removed(service: Service, callback: Callback, box: Box) -> None:
    acme = service.tenant("acme")
    put = service.api.put
    bad = [
        {**box.config(), "verp": True, "return_path": None},  # VERP needs the address it adds tokens to
        {**box.config(), "return_path": "Bounces <b@x.test>"},
        {**box.config(), "port": 0},
        {**box.config(), "colour": "blue"},
    ]
    for mailbox in bad:
        assert put("/tenant/acme", json={"bounce_mailbox": mailbox}, headers=acme.key).status_code == 422, mailbox
    assert put("/tenant/acme", json={"bounce_mailbox": box.config(port=None)}, headers=acme.key).status_code == 422

    assert (
        put("/tenant/acme", json={"bounce_mailbox": box.config(folder="Bounces")}, headers=acme.key).status_code == 200
    )
    shown = service.api.get("/tenant/acme", headers=acme.key).json()["bounce_mailbox"]
    assert (shown["folder"], shown["has_password"], shown["use_tls"]) == ("Bounces", True, False)
    assert "password" not in shown

    assert put("/tenant/acme", json={"bounce_mailbox": None}, headers=acme.key).status_code == 200
    assert service.api.get("/tenant/acme", headers=acme.key).json()["bounce_mailbox"] is None
    tenant = stores().tenants.get_tenant("acme") or {}
    assert "bounce_password_enc" not in tenant and "bounce_mailbox" not in tenant


def test_a_report_naming_someone_the_message_was_not_sent_to_or_an_absurd_id_is_unmatched(
    service: Service, callback: Callback, box: Box
) -> None:
    acme = tenant_with_mailbox(service, callback, box)
    acme.submit(message("m-1", to="a@example.test"))
    service.deliver(acme)
    # A forged report naming two strangers (one report, counted once), and one with an absurd id.
    forged = dsn(to=RETURN_PATH, recipient="ceo@example.test", genro_id="m-1").replace(
        b"Final-Recipient: rfc822; ceo@example.test\r\n",
        b"Final-Recipient: rfc822; cfo@example.test\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
        b"Final-Recipient: rfc822; ceo@example.test\r\n",
    )
    box.append(forged)
    box.append(dsn(to=RETURN_PATH, recipient="a@example.test", genro_id="m" * 5000))

    totals = bounces.run()

    assert (totals["messages"], totals["recorded"]) == (2, 0)
    assert totals["unmatched"] == unmatched() == 2  # the run's totals and the tenant counter agree
    assert [e["event_type"] for e in history(acme, "m-1")] == ["queued", "sent"]


def test_one_message_collects_a_bounded_number_of_bounces(
    service: Service, callback: Callback, box: Box, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bounces, "MAX_LATER_EVENTS", 3)
    acme = tenant_with_mailbox(service, callback, box)
    recipients = [f"r{n}@example.test" for n in range(5)]
    acme.submit(message("m-1", to=", ".join(recipients)))
    service.deliver(acme)
    [mailbox] = bounces.mailboxes(stores().tenants.get_tenant("acme") or {}, stores().tenants.list_accounts("acme"))

    recorded = [
        bounces.process(mailbox, dsn(to=RETURN_PATH, recipient=r, genro_id="m-1"), None).recorded for r in recipients
    ]

    assert recorded == [1, 1, 1, 0, 0]
    assert [e["event_type"] for e in history(acme, "m-1")].count("bounce") == 3


def test_a_report_about_a_message_never_sent_is_unmatched(service: Service, callback: Callback, box: Box) -> None:
    acme = tenant_with_mailbox(service, callback, box)
    acme.submit(message("later", to="a@example.test", deferred_ts=2_000_000_000))  # accepted, not sent
    box.append(dsn(to=RETURN_PATH, recipient="a@example.test", genro_id="later"))

    assert bounces.run()["recorded"] == 0

    assert unmatched() == 1
    assert [e["event_type"] for e in history(acme, "later")] == ["queued"]


def test_a_payload_that_cannot_be_read_leaves_the_report_for_the_next_poll(
    service: Service, callback: Callback, box: Box, monkeypatch: pytest.MonkeyPatch
) -> None:
    acme = tenant_with_mailbox(service, callback, box)
    acme.submit(message("m-1", to="nobody@example.test"))
    service.deliver(acme)
    box.append(dsn(to=RETURN_PATH, recipient="nobody@example.test", genro_id="m-1"))

    def unavailable(records: Any) -> Any:
        raise RuntimeError("payload storage unavailable")

    # Not taken as "payload unknown" (which would believe the report about anyone): the report waits.
    with monkeypatch.context() as patch:
        patch.setattr(stores().payloads, "load_payloads", unavailable)
        totals = bounces.run()
    assert (totals["failed"], totals["recorded"]) == (1, 0)
    assert box.uids(criteria="UNKEYWORD $GmpProcessed") == box.uids()
    assert stores().suppressions.find({("acme", "nobody@example.test")}) == {}

    totals = bounces.run()

    assert (totals["messages"], totals["recorded"]) == (1, 1)
    assert set(stores().suppressions.find({("acme", "nobody@example.test")})) == {("acme", "nobody@example.test")}


def test_a_report_naming_an_absurd_address_of_a_message_whose_payload_expired_does_not_stop_the_mailbox(
    service: Service, callback: Callback, box: Box, monkeypatch: pytest.MonkeyPatch
) -> None:
    acme = tenant_with_mailbox(service, callback, box)
    acme.submit(message("m-1", to="nobody@example.test"))
    service.deliver(acme)
    monkeypatch.setattr(stores().payloads, "load_payloads", lambda records: {})  # its pack expired
    # 1100 characters: no address (320 octets at most), and a key DynamoDB refuses (1024 bytes).
    absurd = "x" * 1088 + "@example.test"
    box.append(dsn(to=RETURN_PATH, recipient=absurd, genro_id="m-1"))
    box.append(dsn(to=RETURN_PATH, recipient="nobody@example.test", genro_id="m-1"))

    totals = bounces.run()

    assert (totals["failed"], totals["messages"], totals["recorded"], totals["unmatched"]) == (0, 2, 1, 1)
    assert box.uids(criteria="UNKEYWORD $GmpProcessed") == []
    assert [e["address"] for e in stores().suppressions.list_entries("acme", after=None, limit=10)] == [
        "nobody@example.test"
    ]


def test_a_complaint_that_names_no_recipient_is_not_pinned_on_the_first_address_of_the_returned_to(
    service: Service, callback: Callback, box: Box
) -> None:
    acme = tenant_with_mailbox(service, callback, box)
    acme.submit(message("m-1", to="alice@example.test, bob@example.test"), message("m-2", to="carol@example.test"))
    service.deliver(acme)

    def anonymous(genro_id: str, to: str) -> bytes:
        # Feedback loops often leave Original-Rcpt-To out: the returned copy's To names every visible recipient.
        report = arf(to=RETURN_PATH, recipient=to, genro_id=genro_id)
        return report.replace(f"Original-Rcpt-To: <{to}>\r\n".encode(), b"")

    box.append(anonymous("m-1", "alice@example.test, bob@example.test"))  # which of the two complained?
    box.append(anonymous("m-2", "carol@example.test"))  # sent to one address: it is hers

    totals = bounces.run()

    assert (totals["recorded"], totals["unmatched"]) == (1, 1)
    assert [e["address"] for e in stores().suppressions.list_entries("acme", after=None, limit=10)] == [
        "carol@example.test"
    ]
    assert [e["event_type"] for e in history(acme, "m-1")] == ["queued", "sent"]


def test_a_bounce_of_a_mixed_case_recipient_suppresses_the_next_message_to_it(
    service: Service, callback: Callback, box: Box, server: RunningServer
) -> None:
    from tests.integration.delivery import mail_ids

    acme = tenant_with_mailbox(service, callback, box)
    acme.submit(message("m-1", to="John Smith <John.Smith@Example.test>"))
    service.deliver(acme)
    # The reporting server writes the address its own way; the parser compares it without case.
    box.append(dsn(to=RETURN_PATH, recipient="john.smith@EXAMPLE.test", genro_id="m-1"))
    assert bounces.run()["recorded"] == 1
    service.reporter.stream()

    # Recorded, reported and suppressed as the message spelled it: the sender looks its own spelling up.
    [entry] = bounce_entries(callback)
    assert entry["recipient"] == "John.Smith@Example.test"
    [event] = [e for e in history(acme, "m-1") if e["event_type"] == "bounce"]
    assert event["recipient"] == "John.Smith@Example.test"
    acme.submit(message("m-2", to="John.Smith@Example.test"))
    service.deliver(acme)

    assert mail_ids(server.handler.received) == ["m-1"]
    record = acme.records()["m-2"]
    assert (record["status"], record["error"]) == ("error", "suppressed: John.Smith@Example.test")


def test_a_crash_between_recording_a_bounce_and_suppressing_its_address_loses_neither(
    service: Service, callback: Callback, box: Box, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mailproxy import suppression

    acme = tenant_with_mailbox(service, callback, box)
    acme.submit(message("m-1", to="nobody@example.test"))
    service.deliver(acme)
    box.append(dsn(to=RETURN_PATH, recipient="nobody@example.test", genro_id="m-1"))
    done: list[str] = []

    def crash_after_the_first(name: str, write: Any) -> Any:
        # Whichever of the two writes comes first completes, then the poller dies before the other.
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            result = write(*args, **kwargs)
            done.append(name)
            if len(done) == 1:
                raise RuntimeError("the poller died here")
            return result

        return wrapped

    with monkeypatch.context() as patch:
        patch.setattr(stores().messages, "add_event", crash_after_the_first("event", stores().messages.add_event))
        patch.setattr(suppression, "note_bounce", crash_after_the_first("suppression", suppression.note_bounce))
        assert bounces.run()["failed"] == 1
    assert len(done) == 1

    totals = bounces.run()
    service.reporter.stream()

    assert (totals["messages"], totals["failed"]) == (1, 0)
    assert set(stores().suppressions.find({("acme", "nobody@example.test")})) == {("acme", "nobody@example.test")}
    assert [e["event_type"] for e in history(acme, "m-1")].count("bounce") == 1
    assert len(bounce_entries(callback)) == 1


@pytest.mark.parametrize("route", ["POST /account", "POST /tenant", "PUT /tenant"])
def test_every_route_that_turns_verp_on_makes_the_signing_key_first(
    service: Service, callback: Callback, box: Box, route: str
) -> None:
    acme = service.tenant("acme", bounce_mailbox=box.config()) if route == "POST /tenant" else service.tenant("acme")
    assert stores().bounces.sealed_signing_key() is None  # a mailbox without VERP makes none
    mailbox = box.config(verp=True)
    if route == "POST /account":
        reply = service.api.post(
            "/account",
            json={"id": "smtp", "host": "127.0.0.1", "port": service.smtp_port, "bounce_mailbox": mailbox},
            headers=acme.key,
        )
    elif route == "POST /tenant":
        reply = service.api.post(
            "/tenant", json={"id": "acme", "name": "Acme", "bounce_mailbox": mailbox}, headers=service.admin
        )
    else:
        reply = service.api.put("/tenant/acme", json={"bounce_mailbox": mailbox}, headers=acme.key)

    assert reply.status_code == 200, reply.text
    assert stores().bounces.sealed_signing_key() is not None
