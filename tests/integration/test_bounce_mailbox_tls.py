"""How the poller logs in to a bounce mailbox, against Dovecot: TLS as an SMTP account's `use_tls` says
(implicit on 993, STARTTLS elsewhere), a password never sent over a session that stayed plain, certificates
verified unless GMP_IMAP_VERIFY_TLS is off."""

from __future__ import annotations

import pytest
from mailproxy import imap_mailbox
from mailproxy.imap_mailbox import MailboxConfig, MailboxError, MailboxSession

from tests.bounce_mail import fixture
from tests.imap_server import DovecotServer


def config(server: DovecotServer, port: int, **fields: object) -> MailboxConfig:
    user, password = server.add_user()
    server.append(user, password, fixture("postfix-user-unknown.eml"))
    values: dict[str, object] = {"host": server.host, "port": port, "user": user, "password": password, **fields}
    return MailboxConfig(**values)  # type: ignore[arg-type]


def test_starttls_is_used_when_offered_and_required_when_asked(dovecot_tls: DovecotServer) -> None:
    for use_tls in (None, True):
        with MailboxSession(config(dovecot_tls, dovecot_tls.port, use_tls=use_tls, verify_tls=False)) as box:
            assert box.uids_after(0) == [1]
            assert b"5.1.1" in (box.fetch(1) or b"")


def test_implicit_tls_on_the_imaps_port(dovecot_tls: DovecotServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(imap_mailbox, "IMPLICIT_TLS_PORT", dovecot_tls.tls_port)  # 993 stands for this port
    with MailboxSession(config(dovecot_tls, dovecot_tls.tls_port, verify_tls=False)) as box:
        assert box.uids_after(0) == [1]


def test_an_unverifiable_certificate_is_refused(dovecot_tls: DovecotServer) -> None:
    with pytest.raises(MailboxError, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        MailboxSession(config(dovecot_tls, dovecot_tls.port, use_tls=True)).__enter__()


def test_no_password_goes_over_a_session_that_stayed_plain(dovecot: DovecotServer) -> None:
    with pytest.raises(MailboxError, match="stayed plain"):
        MailboxSession(config(dovecot, dovecot.port)).__enter__()
    with pytest.raises(MailboxError, match="offers no STARTTLS"):
        MailboxSession(config(dovecot, dovecot.port, use_tls=True)).__enter__()
    with MailboxSession(config(dovecot, dovecot.port, use_tls=False)) as box:  # the account's explicit choice
        assert box.uids_after(0) == [1]


def test_a_wrong_password_or_folder_is_a_mailbox_error(dovecot: DovecotServer) -> None:
    good = config(dovecot, dovecot.port, use_tls=False)
    for wrong in (
        MailboxConfig(good.host, good.port, good.user, "wrong", use_tls=False),
        MailboxConfig(good.host, good.port, good.user, good.password, use_tls=False, folder="Nowhere"),
    ):
        with pytest.raises(MailboxError):
            MailboxSession(wrong).__enter__()
