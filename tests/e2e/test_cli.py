"""`gmp`, the command line (client/src/gmp_client/cli), against the local stack `make run` starts.

Commands run through typer's runner (in-process) and once as a real subprocess; their `--json` output is
parsed. Mail goes to the stack's SMTP sink (`gmp send`, `--wait` seeing it sent) and to a server that refuses
`reject550@…` (`--wait` seeing it fail). Profiles live in a temporary GMP_CONFIG_DIR; the keyring is the null
backend (no keyring) except where a test installs an in-memory one.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import keyring
import pytest
from gmp_client.cli import app
from keyring.backend import KeyringBackend
from typer.testing import CliRunner

from tests.bounce_mail import dsn
from tests.imap_server import DovecotServer
from tests.integration.smtp_servers import RunningServer, free_port, smtp_server
from tests.polling import wait_until
from tests.runtimes import running

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "cli-admin-token-0123456789abcdefghijklmnopqrstuvwxyz"
PDF = b"%PDF-1.4 gmp cli attachment"


UPLOAD_LIMIT = 8 * 1024 * 1024


@pytest.fixture(scope="module")
def stack() -> Iterator[Any]:
    """What `make run` starts (the one-machine runtime): the command line's users talk to it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GMP_BOUNCE_INTERVAL", "0.5")  # the bounce mailboxes read every half second
        # The reputation guard within a test's reach: one hard bounce in two sends pauses the account.
        patch.setenv("GMP_REPUTATION_MIN_SENDS", "2")
        patch.setenv("GMP_BOUNCE_RATE_LIMIT", "0.5")
        patch.setenv("GMP_LARGE_FILE_UPLOAD_MAX_BYTES", str(UPLOAD_LIMIT))
        with running("embedded", api_token=TOKEN, scheduler_interval=0.5) as service:
            yield service


@pytest.fixture(scope="module")
def refusing_server() -> Iterator[RunningServer]:
    """An SMTP server refusing `reject550@…` permanently."""
    with smtp_server() as server:
        yield server


@pytest.fixture()
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment of every gmp run: a temporary config dir, no keyring, the admin token in a variable."""
    values = {
        "GMP_CONFIG_DIR": str(tmp_path / "config"),
        "PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring",
        "GMP_TEST_ADMIN": TOKEN,
        "GMP_RETRIES": "0",
        "GMP_TIMEOUT": "10",
        "COLUMNS": "200",
    }
    # GMP_API_TOKEN stays: the in-process stack reads its admin token from it.
    for name in ("GMP_PROFILE", "GMP_URL", "GMP_METRICS_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


@pytest.fixture()
def gmp(env: dict[str, str]) -> Any:
    """Run gmp in-process: gmp("tenants", "list") → the click Result (stdout and stderr apart)."""
    runner = CliRunner()

    def run(*args: str, input: str | None = None) -> Any:
        return runner.invoke(app, list(args), input=input, env=env, catch_exceptions=True)

    return run


@pytest.fixture()
def admin(stack: Any, gmp: Any) -> Any:
    """gmp with a default profile `local` holding the admin token's variable name."""
    ok(gmp("profile", "add", "local", "--url", stack.url, "--token-env", "GMP_TEST_ADMIN"))
    return gmp


def ok(result: Any) -> Any:
    assert result.exit_code == 0, (result.exit_code, result.stdout, result.stderr, result.exception)
    return result


def as_json(result: Any) -> Any:
    return json.loads(ok(result).stdout)


def one_line_error(result: Any, code: int) -> str:
    """The run failed with `code` and said so in one line of stderr, without a traceback."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr, result.exception)
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gmp: error: "), result.stderr
    assert "Traceback" not in result.output
    return str(lines[0])


def new_tenant(gmp: Any, stack: Any, tenant_id: str) -> str:
    """A tenant with an account `sink` on the stack's SMTP sink: its key."""
    created = as_json(gmp("--json", "tenants", "create", tenant_id, "--name", tenant_id.title()))
    assert created["tenant_id"] == tenant_id and len(created["api_key"]) == 43
    port = str(stack.smtp_sink_port)
    ok(gmp("accounts", "add", "sink", "-t", tenant_id, "--host", "127.0.0.1", "--port", port, "--no-tls"))
    return str(created["api_key"])


# ---------------------------------------------------------------------------------------------- profiles


def test_a_profile_names_where_the_token_is_and_never_holds_it(stack: Any, gmp: Any, env: dict[str, str]) -> None:
    ok(gmp("profile", "add", "local", "--url", stack.url, "--token-env", "GMP_TEST_ADMIN", "--tenant", "acme"))
    stored = (Path(env["GMP_CONFIG_DIR"]) / "profiles.json").read_text()
    assert TOKEN not in stored
    assert json.loads(stored) == {
        "default": "local",
        "profiles": {"local": {"url": stack.url, "token_env": "GMP_TEST_ADMIN", "tenant": "acme"}},
    }
    [listed] = as_json(gmp("--json", "profile", "list"))
    assert (listed["name"], listed["token"], listed["default"]) == ("local", "$GMP_TEST_ADMIN", True)
    shown = as_json(gmp("--json", "profile", "show"))
    assert shown["token_found"] is True and TOKEN not in json.dumps(shown)
    assert TOKEN not in gmp("profile", "show").stdout

    # No keyring backend: the token is refused rather than kept anywhere in plain text.
    refused = gmp("profile", "add", "vault", "--url", stack.url, "--keyring", "--token-stdin", input=TOKEN + "\n")
    assert "no usable keyring" in one_line_error(refused, 2)
    assert "vault" not in (Path(env["GMP_CONFIG_DIR"]) / "profiles.json").read_text()

    ok(gmp("profile", "add", "other", "--url", "http://127.0.0.1:9", "--default"))
    assert as_json(gmp("--json", "profile", "show"))["name"] == "other"
    ok(gmp("profile", "use", "local"))
    ok(gmp("profile", "remove", "other"))
    assert [p["name"] for p in as_json(gmp("--json", "profile", "list"))] == ["local"]
    assert "no profile 'ghost'" in one_line_error(gmp("-p", "ghost", "tenants", "list"), 2)


class MemoryKeyring(KeyringBackend):
    """A keyring kept in memory (what a desktop's keyring does, for the test's duration)."""

    # Below every recommended backend: keyring picks its default among the KeyringBackend subclasses it knows,
    # which include this one once the module is imported; only the fixture may install it.
    priority = -100  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.entries: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.entries.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.entries[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        self.entries.pop((service, username), None)


@pytest.fixture()
def memory_keyring(monkeypatch: pytest.MonkeyPatch) -> Iterator[MemoryKeyring]:
    previous = keyring.get_keyring()
    ring = MemoryKeyring()
    keyring.set_keyring(ring)
    try:
        yield ring
    finally:
        keyring.set_keyring(previous)


def test_a_keyring_profile_and_a_new_tenant_key_saved_there(
    stack: Any, gmp: Any, env: dict[str, str], memory_keyring: MemoryKeyring
) -> None:
    ok(gmp("profile", "add", "vault", "--url", stack.url, "--keyring", "--token-stdin", input=TOKEN + "\n"))
    assert memory_keyring.entries == {("gmp", "vault"): TOKEN}
    stored = (Path(env["GMP_CONFIG_DIR"]) / "profiles.json").read_text()
    assert TOKEN not in stored and json.loads(stored)["profiles"]["vault"]["keyring"] is True
    assert "ring" not in [t["id"] for t in as_json(gmp("--json", "tenants", "list"))]

    # The tenant's key goes to the keyring as a profile of that tenant, and is not printed.
    created = ok(gmp("tenants", "create", "ring", "--save-profile", "ring-key"))
    key = memory_keyring.entries[("gmp", "ring-key")]
    assert len(key) == 43 and key not in created.stdout
    assert as_json(gmp("--json", "-p", "ring-key", "tenants", "show", "ring"))["id"] == "ring"
    # A tenant key on an admin-only route: 403, exit 3.
    one_line_error(gmp("-p", "ring-key", "tenants", "list"), 3)
    ok(gmp("tenants", "delete", "ring", "--yes"))


# ---------------------------------------------------------------------------------------------- admin commands


def test_tenants_accounts_and_keys(stack: Any, admin: Any) -> None:
    gmp = admin
    first_key = new_tenant(gmp, stack, "acme")
    assert "acme" in [t["id"] for t in as_json(gmp("--json", "tenants", "list"))]
    ok(gmp("tenants", "update", "acme", "--inactive", "--client-base-url", "http://127.0.0.1:9"))
    shown = as_json(gmp("--json", "tenants", "show", "acme"))
    assert (shown["active"], shown["client_base_url"]) == (False, "http://127.0.0.1:9")
    assert "acme" not in [t["id"] for t in as_json(gmp("--json", "tenants", "list", "--active-only"))]
    ok(gmp("tenants", "update", "acme", "--active"))
    assert "acme" in ok(gmp("tenants", "list")).stdout  # the table for people

    [account] = as_json(gmp("--json", "accounts", "list", "-t", "acme"))
    assert (account["id"], account["port"], account["use_tls"]) == ("sink", stack.smtp_sink_port, False)
    assert "password" not in account or not account["password"]

    # The tenant's own key works until it is rotated; the new one works; revoked, none does.
    as_tenant = ["--url", stack.url, "--retries", "0"]
    os.environ["GMP_TEST_TENANT"] = first_key
    try:
        ok(gmp("profile", "add", "acme", "--url", stack.url, "--token-env", "GMP_TEST_TENANT", "--tenant", "acme"))
        assert as_json(gmp("--json", "-p", "acme", "accounts", "list"))[0]["id"] == "sink"
        rotated = as_json(gmp("--json", "keys", "rotate", "acme"))["api_key"]
        assert len(rotated) == 43 and rotated != first_key
        assert "Invalid or missing API token" in one_line_error(gmp("-p", "acme", "accounts", "list"), 3)
        os.environ["GMP_TEST_TENANT"] = rotated
        ok(gmp("-p", "acme", "accounts", "list"))
        ok(gmp("keys", "revoke", "acme", "--yes"))
        one_line_error(gmp("-p", "acme", "accounts", "list"), 3)
        issued = as_json(gmp("--json", "keys", "create", "acme"))["api_key"]
        os.environ["GMP_TEST_TENANT"] = issued
        ok(gmp("-p", "acme", *as_tenant, "accounts", "list"))
    finally:
        del os.environ["GMP_TEST_TENANT"]

    ok(gmp("accounts", "add", "spare", "-t", "acme", "--host", "127.0.0.1", "--port", "2525"))
    ok(gmp("accounts", "delete", "spare", "-t", "acme", "--yes"))
    assert [a["id"] for a in as_json(gmp("--json", "accounts", "list", "-t", "acme"))] == ["sink"]
    # Destroying needs --yes without a terminal.
    assert "--yes" in one_line_error(gmp("tenants", "delete", "acme"), 2)
    ok(gmp("tenants", "delete", "acme", "--yes"))
    assert "not found" in one_line_error(gmp("tenants", "show", "acme"), 4)


# ---------------------------------------------------------------------------------------------- send


def test_send_from_flags_waits_until_sent_and_the_messages_commands_see_it(
    stack: Any, admin: Any, tmp_path: Path
) -> None:
    gmp = admin
    assert stack.smtp_sink is not None
    new_tenant(gmp, stack, "shop")
    report = tmp_path / "report.pdf"
    report.write_bytes(PDF)
    body = tmp_path / "body.txt"
    body.write_text("Hello from gmp\n")
    sent = as_json(
        gmp(
            "--json", "send", "-t", "shop", "--account", "sink", "--id", "flags-1",
            "--from", "Shop <noreply@shop.test>", "--to", "alice@example.test,bob@example.test",
            "--cc", "carol@example.test", "--subject", "From the CLI", "--body-file", str(body),
            "--attach", str(report), "--header", "X-Campaign: spring", "--wait", "--wait-timeout", "60",
        )
    )  # fmt: skip
    assert sent["id"] == "flags-1" and sent["status"] == "sent" and sent["sent_ts"]
    [mail] = [m for m in stack.smtp_sink.wait_for(1, timeout=30) if m.mail_id == "flags-1"]
    assert mail.subject == "From the CLI"
    assert sorted(mail.rcpt_tos) == ["alice@example.test", "bob@example.test", "carol@example.test"]
    assert mail.message["X-Campaign"] == "spring"
    text = mail.message.get_body(preferencelist=("plain",))
    assert text is not None and text.get_content().strip() == "Hello from gmp"
    files = {p.get_filename(): p.get_content() for p in mail.message.iter_attachments()}
    assert files == {"report.pdf": PDF}

    # Without --wait (and for people) it prints the id alone.
    plain_run = ok(
        gmp("send", "-t", "shop", "-a", "sink", "--id", "flags-2", "--from", "noreply@shop.test",
            "--to", "dave@example.test", "--subject", "Second", "--body", "hi", "--batch", "spring")
    )  # fmt: skip
    assert plain_run.stdout.strip() == "flags-2"

    records = as_json(gmp("--json", "messages", "list", "-t", "shop"))
    assert {r["id"] for r in records} >= {"flags-1", "flags-2"}
    assert [r["id"] for r in as_json(gmp("--json", "messages", "list", "-t", "shop", "--batch", "spring"))] == [
        "flags-2"
    ]
    assert [
        r["id"] for r in as_json(gmp("--json", "messages", "list", "-t", "shop", "--status", "sent", "--limit", "1"))
    ]
    shown = as_json(gmp("--json", "messages", "show", "flags-1", "-t", "shop"))
    assert shown["status"] == "sent"
    assert [h["event_type"] for h in shown["history"]][-1] == "sent"
    people = ok(gmp("messages", "show", "flags-1", "-t", "shop")).stdout
    assert "History" in people and "From the CLI" in people
    assert "flags-1" in ok(gmp("messages", "list", "-t", "shop")).stdout

    stack.smtp_sink.wait_for(2, timeout=30)
    deleted = as_json(gmp("--json", "messages", "delete", "flags-2", "ghost-id", "-t", "shop", "--yes"))
    assert deleted["removed"] == 1 and deleted["not_found"] == ["ghost-id"]
    cleaned = as_json(gmp("--json", "messages", "cleanup", "-t", "shop", "--older-than", "0"))
    assert isinstance(cleaned["removed"], int)
    assert "not found" in one_line_error(gmp("messages", "show", "ghost-id", "-t", "shop"), 4)
    ok(gmp("tenants", "delete", "shop", "--yes"))


def test_send_an_eml_file_with_html_and_an_attachment(stack: Any, admin: Any, tmp_path: Path) -> None:
    gmp = admin
    assert stack.smtp_sink is not None
    new_tenant(gmp, stack, "eml")
    draft = EmailMessage()
    draft["From"] = "Eml Shop <noreply@eml.test>"
    draft["To"] = "Erin <erin@example.test>, frank@example.test"
    draft["Cc"] = "grace@example.test"
    draft["Subject"] = "Ciao è l'eml"
    draft.set_content("text alternative")
    draft.add_alternative("<p>html <b>body</b></p>", subtype="html")
    draft.add_attachment(PDF, maintype="application", subtype="pdf", filename="invoice.pdf")
    path = tmp_path / "mail.eml"
    path.write_bytes(bytes(draft))

    result = ok(gmp("send", str(path), "-t", "eml", "-a", "sink", "--id", "eml-1", "--wait", "--wait-timeout", "60"))
    assert result.stdout.strip() == "eml-1"
    assert "sending the html" in result.stderr and "sent at" in result.stderr
    [mail] = [m for m in stack.smtp_sink.wait_for(1, timeout=30) if m.mail_id == "eml-1"]
    assert mail.subject == "Ciao è l'eml"
    assert mail.message["From"] == "Eml Shop <noreply@eml.test>"
    assert sorted(mail.rcpt_tos) == ["erin@example.test", "frank@example.test", "grace@example.test"]
    html = mail.message.get_body(preferencelist=("html",))
    assert html is not None and "<b>body</b>" in html.get_content()
    assert {p.get_filename(): p.get_content() for p in mail.message.iter_attachments()} == {"invoice.pdf": PDF}
    ok(gmp("tenants", "delete", "eml", "--yes"))


def test_send_wait_reports_a_failed_message(stack: Any, admin: Any, refusing_server: RunningServer) -> None:
    gmp = admin
    new_tenant(gmp, stack, "bounce")
    port = str(refusing_server.port)
    ok(gmp("accounts", "add", "strict", "-t", "bounce", "--host", "127.0.0.1", "--port", port, "--no-tls"))
    result = gmp(
        "send", "-t", "bounce", "-a", "strict", "--id", "b-1", "--from", "a@bounce.test",
        "--to", "reject550@example.test", "--subject", "No", "--body", "x", "--wait", "--wait-timeout", "60",
    )  # fmt: skip
    assert result.exit_code == 6, (result.stdout, result.stderr)
    assert result.stdout.strip() == "b-1"
    assert "message b-1 failed" in result.stderr and "550" in result.stderr
    # Held by a suspension, it is neither sent nor failed when the wait ends: exit 7.
    ok(gmp("suspend", "-t", "bounce"))
    held = gmp(
        "--json", "send", "-t", "bounce", "-a", "strict", "--id", "b-2", "--from", "a@bounce.test",
        "--to", "ok@example.test", "--subject", "Later", "--body", "x", "--wait", "--wait-timeout", "1",
    )  # fmt: skip
    assert held.exit_code == 7 and json.loads(held.stdout)["status"] == "suspended", (held.stdout, held.stderr)
    assert held.stderr.strip() == "gmp: error: message b-2 still suspended after 1 s"
    # A message the API rejects at once (unknown account): one line, exit 1.
    rejected = gmp("send", "-t", "bounce", "-a", "nope", "--from", "a@bounce.test", "--to", "x@example.test",
                   "--subject", "s", "--body", "b")  # fmt: skip
    assert "account not found" in one_line_error(rejected, 1)
    # Missing fields are a usage error before any call.
    assert "--subject" in one_line_error(
        gmp("send", "-t", "bounce", "-a", "strict", "--from", "a@b.test", "--to", "x@y.test"), 2
    )
    ok(gmp("tenants", "delete", "bounce", "--yes"))


# ---------------------------------------------------------------------------------------------- suppressions


def test_suppressions_list_add_remove_and_a_suppressed_address_is_not_sent_to(
    stack: Any, admin: Any, tmp_path: Path
) -> None:
    gmp = admin
    new_tenant(gmp, stack, "quiet")
    listed = tmp_path / "unsubscribed.txt"
    listed.write_text("# asked to stop\ncarol@example.test\n\ndave@example.test  # by phone\n")
    added = as_json(
        gmp("--json", "suppressions", "add", "alice@example.test,Bob <bob@Example.TEST>", "--file", str(listed),
            "--reason", "asked to stop", "-t", "quiet")
    )  # fmt: skip
    assert added == {
        "ok": True,
        "added": ["alice@example.test", "bob@example.test", "carol@example.test", "dave@example.test"],
        "already_suppressed": [],
    }
    again = ok(gmp("suppressions", "add", "alice@example.test", "erin@example.test", "-t", "quiet")).stdout
    assert again.strip() == "Suppressed 1; already on the list: alice@example.test"

    # Paged in address order: --limit and --cursor, or --all.
    first = as_json(gmp("--json", "suppressions", "list", "-t", "quiet", "--limit", "2"))
    assert [e["address"] for e in first["suppressions"]] == ["alice@example.test", "bob@example.test"]
    assert first["next_cursor"]
    rest = as_json(
        gmp("--json", "suppressions", "list", "-t", "quiet", "--limit", "10", "--cursor", first["next_cursor"])
    )
    assert [e["address"] for e in rest["suppressions"]] == [
        "carol@example.test",
        "dave@example.test",
        "erin@example.test",
    ]
    assert rest["next_cursor"] is None
    every = as_json(gmp("--json", "suppressions", "list", "-t", "quiet", "--all", "--limit", "2"))
    assert len(every["suppressions"]) == 5
    alice = every["suppressions"][0]
    assert (alice["source"], alice["reason"]) == ("manual", "asked to stop")
    people = ok(gmp("suppressions", "list", "-t", "quiet", "--limit", "2"))
    assert "alice@example.test" in people.stdout and "manual" in people.stdout
    assert "--cursor" in people.stderr  # how to see the next page

    # A suppressed recipient is dropped at send: the message to it alone fails unsent.
    refused = gmp("send", "-t", "quiet", "-a", "sink", "--from", "a@quiet.test", "--to", "bob@example.test",
                  "--subject", "No", "--body", "x", "--wait", "--wait-timeout", "60")  # fmt: skip
    assert refused.exit_code == 6 and "suppressed: bob@example.test" in refused.stderr, refused.stderr

    removed = as_json(gmp("--json", "suppressions", "remove", "bob@example.test", "erin@example.test", "-t", "quiet"))
    assert removed == {"ok": True, "removed": ["bob@example.test", "erin@example.test"], "not_found": []}
    ok(gmp("send", "-t", "quiet", "-a", "sink", "--from", "a@quiet.test", "--to", "bob@example.test",
           "--subject", "Again", "--body", "x", "--wait", "--wait-timeout", "60"))  # fmt: skip
    # Errors: an address not on the list (exit 4, the others still removed), a malformed one (exit 1), no address.
    missing = gmp("suppressions", "remove", "ghost@example.test", "dave@example.test", "-t", "quiet")
    assert "not on the suppression list: ghost@example.test" in one_line_error(missing, 4)
    assert missing.stdout.strip() == "Removed dave@example.test"
    assert "invalid address: not-an-address" in one_line_error(
        gmp("suppressions", "add", "not-an-address", "-t", "quiet"), 1
    )
    assert "no address given" in one_line_error(gmp("suppressions", "add", "-t", "quiet"), 2)
    remaining = as_json(gmp("--json", "suppressions", "list", "-t", "quiet"))["suppressions"]
    assert [e["address"] for e in remaining] == ["alice@example.test", "carol@example.test"]
    ok(gmp("tenants", "delete", "quiet", "--yes"))


# ---------------------------------------------------------------------------------------------- bounces, resume


def test_a_bounce_mailbox_from_a_file_a_paused_account_and_accounts_resume(
    stack: Any, admin: Any, env: dict[str, str], tmp_path: Path, dovecot: DovecotServer
) -> None:
    gmp = admin
    assert stack.smtp_sink is not None
    new_tenant(gmp, stack, "rep")
    user, password = dovecot.add_user()
    mailbox = tmp_path / "mailbox.json"
    mailbox.write_text(json.dumps({
        "host": dovecot.host, "port": dovecot.port, "use_tls": False, "user": user,
        "return_path": "bounces@rep.test", "verp": True,
    }))  # fmt: skip
    env["GMP_TEST_IMAP_PASSWORD"] = password
    port = str(stack.smtp_sink_port)
    ok(gmp("accounts", "add", "sink", "-t", "rep", "--host", "127.0.0.1", "--port", port, "--no-tls",
           "--bounce-mailbox", str(mailbox), "--bounce-password-env", "GMP_TEST_IMAP_PASSWORD"))  # fmt: skip
    [account] = as_json(gmp("--json", "accounts", "list", "-t", "rep"))
    assert (account["bounce_mailbox"]["user"], account["bounce_mailbox"]["verp"]) == (user, True)
    assert password not in json.dumps(account)
    # Not paused yet: resuming is refused.
    assert "is not paused" in one_line_error(gmp("accounts", "resume", "sink", "-t", "rep"), 1)

    def send(message_id: str, to: str, *wait: str) -> Any:
        return ok(gmp("send", "-t", "rep", "-a", "sink", "--id", message_id, "--from", "a@rep.test", "--to", to,
                      "--subject", "Hi", "--body", "x", *wait))  # fmt: skip

    send("rep-1", "gone@example.test", "--wait", "--wait-timeout", "60")
    send("rep-2", "ok@example.test", "--wait", "--wait-timeout", "60")
    [bounced] = [m for m in stack.smtp_sink.messages if m.mail_id == "rep-1"]
    # The receiving side bounces one later: its DSN lands in the mailbox the file named.
    dovecot.append(user, password, dsn(to=bounced.mail_from, recipient="gone@example.test", returned=False))

    def paused() -> Any:
        return as_json(gmp("--json", "tenants", "show", "rep"))["paused_accounts"]

    assert "sink" in wait_until(paused, timeout=30)
    [entry] = as_json(gmp("--json", "suppressions", "list", "-t", "rep"))["suppressions"]
    assert (entry["address"], entry["source"], entry["message_id"]) == ("gone@example.test", "hard", "rep-1")

    # The paused account's messages are held until it is resumed.
    send("rep-3", "ok@example.test")
    wait_until(lambda: as_json(gmp("--json", "messages", "show", "rep-3", "-t", "rep"))["status"] == "suspended")
    resumed = as_json(gmp("--json", "accounts", "resume", "sink", "-t", "rep"))
    assert resumed == {"ok": True, "account_id": "sink", "released": 1}
    wait_until(lambda: as_json(gmp("--json", "messages", "show", "rep-3", "-t", "rep"))["status"] == "sent")
    assert as_json(gmp("--json", "tenants", "show", "rep"))["paused_accounts"] == {}
    assert "is not paused" in one_line_error(gmp("accounts", "resume", "sink", "-t", "rep"), 1)

    # The tenant's own mailbox, then none; a file the API would refuse is a usage error before any call.
    ok(gmp("tenants", "update", "rep", "--bounce-mailbox", str(mailbox)))
    assert as_json(gmp("--json", "tenants", "show", "rep"))["bounce_mailbox"]["host"] == dovecot.host
    ok(gmp("tenants", "update", "rep", "--no-bounce-mailbox"))
    assert as_json(gmp("--json", "tenants", "show", "rep"))["bounce_mailbox"] is None
    mailbox.write_text(json.dumps({"host": dovecot.host, "user": user, "pasword": "typo"}))
    assert "pasword" in one_line_error(gmp("tenants", "update", "rep", "--bounce-mailbox", str(mailbox)), 2)
    ok(gmp("tenants", "delete", "rep", "--yes"))


# ---------------------------------------------------------------------------------------------- large files


def test_files_upload_and_send_it_by_reference(stack: Any, admin: Any, tmp_path: Path) -> None:
    gmp = admin
    assert stack.smtp_sink is not None
    new_tenant(gmp, stack, "files")
    big = tmp_path / "video.mp4"
    content = os.urandom(3 * 1024 * 1024)
    big.write_bytes(content)
    uploaded = as_json(gmp("--json", "files", "upload", str(big), "-t", "files"))
    reference = uploaded["attachment"]["storage_path"]
    assert reference == f"upload:{uploaded['upload_id']}" and uploaded["size"] == len(content)
    assert uploaded["attachment"] == {"storage_path": reference, "fetch_mode": "upload", "filename": "video.mp4"}

    people = ok(gmp("files", "upload", str(big), "-t", "files", "--name", "clip.mp4"))
    second = people.stdout.strip()
    assert second.startswith("upload:") and second != reference
    assert f"--attach-upload {second}=clip.mp4" in people.stderr

    ok(gmp("send", "-t", "files", "-a", "sink", "--id", "big-1", "--from", "a@files.test", "--to", "x@example.test",
           "--subject", "Big", "--body", "see attached", "--attach-upload", f"{reference}=video.mp4",
           "--attach-upload", f"{second}=clip.mp4", "--wait", "--wait-timeout", "60"))  # fmt: skip
    [mail] = [m for m in stack.smtp_sink.messages if m.mail_id == "big-1"]
    assert {p.get_filename(): p.get_content() for p in mail.message.iter_attachments()} == {
        "video.mp4": content,
        "clip.mp4": content,
    }

    # Errors: an upload past the limit (the API refuses it before anything is sent), a missing file, an empty
    # one, a reference without its name, and one naming no upload (the message fails at send).
    huge = tmp_path / "huge.bin"
    with huge.open("wb") as f:
        f.truncate(UPLOAD_LIMIT + 1)
    assert "File too large for an upload" in one_line_error(gmp("files", "upload", str(huge), "-t", "files"), 1)
    assert "not a file" in one_line_error(gmp("files", "upload", str(tmp_path / "nope"), "-t", "files"), 2)
    (tmp_path / "empty").write_bytes(b"")
    assert "is empty" in one_line_error(gmp("files", "upload", str(tmp_path / "empty"), "-t", "files"), 2)
    assert "Tenant 'ghost' not found" in one_line_error(gmp("files", "upload", str(big), "-t", "ghost"), 4)
    no_name = gmp("send", "-t", "files", "-a", "sink", "--from", "a@files.test", "--to", "x@example.test",
                  "--subject", "s", "--body", "b", "--attach-upload", reference)  # fmt: skip
    assert "give the file's name too" in one_line_error(no_name, 2)
    unknown = gmp("send", "-t", "files", "-a", "sink", "--from", "a@files.test", "--to", "x@example.test",
                  "--subject", "s", "--body", "b", "--attach-upload", f"upload:{"N" * 24}=x.bin",
                  "--wait", "--wait-timeout", "60")  # fmt: skip
    assert unknown.exit_code == 6 and "upload not found" in unknown.stderr, unknown.stderr
    ok(gmp("tenants", "delete", "files", "--yes"))


# ---------------------------------------------------------------------------------------------- service


def test_suspend_activate_run_now_sync_status_and_command_log(stack: Any, admin: Any) -> None:
    gmp = admin
    new_tenant(gmp, stack, "ops")
    held = as_json(gmp("--json", "suspend", "-t", "ops", "--batch", "promo"))
    assert held["suspended_batches"] == ["promo"]
    assert as_json(gmp("--json", "activate", "-t", "ops", "--batch", "promo"))["suspended_batches"] == []
    assert "pending" in ok(gmp("suspend", "-t", "ops")).stdout
    ok(gmp("activate", "-t", "ops"))
    assert as_json(gmp("--json", "run-now")) == {"ok": True}
    sync = as_json(gmp("--json", "sync-status"))
    assert "ops" in [t["id"] for t in sync["tenants"]]
    ok(gmp("sync-status"))
    log = as_json(gmp("--json", "command-log", "-t", "ops", "--limit", "2"))
    assert len(log["commands"]) == 2 and all(c["tenant_id"] == "ops" for c in log["commands"])
    every = as_json(gmp("--json", "command-log", "-t", "ops", "--all", "--limit", "2"))
    endpoints = [c["endpoint"] for c in every["commands"]]
    assert len(endpoints) >= 5 and any("suspend" in e for e in endpoints)
    ok(gmp("command-log", "--since", "2020-01-01T00:00:00", "--limit", "3"))
    ok(gmp("tenants", "delete", "ops", "--yes"))


def test_status_and_top(stack: Any, admin: Any) -> None:
    gmp = admin
    assert stack.smtp_sink is not None
    new_tenant(gmp, stack, "stats")
    ok(gmp("send", "-t", "stats", "-a", "sink", "--from", "a@stats.test", "--to", "z@example.test",
           "--subject", "count me", "--body", "x", "--wait", "--wait-timeout", "60"))  # fmt: skip
    reading = as_json(gmp("--json", "status"))
    assert reading["health"]["ok"] is True and reading["status"]["ok"] is True
    assert isinstance(reading["status"]["pending_messages"], int)
    accounts = {(a["tenant_id"], a["account_id"]): a for a in reading["metrics"]["accounts"]}
    assert accounts[("stats", "sink")]["sent"] >= 1 and accounts[("stats", "sink")]["errors"] == 0
    assert reading["metrics"]["pending_messages"] is not None
    screen = ok(gmp("status")).stdout
    assert "health" in screen and "stats" in screen and "report" in screen

    lines = ok(gmp("--json", "top", "--iterations", "2", "--interval", "0.2")).stdout.strip().splitlines()
    assert len(lines) == 2
    last = json.loads(lines[1])
    assert "sent_per_second" in last["metrics"]["accounts"][0]
    assert "sent/min" in ok(gmp("top", "--iterations", "1", "--interval", "0")).stdout
    ok(gmp("tenants", "delete", "stats", "--yes"))


def test_the_readmes_gmp_walkthrough_runs_as_written(stack: Any, gmp: Any) -> None:
    """README "The same with `gmp`", each command as written (the test's ports in place of the defaults)."""
    assert stack.smtp_sink is not None
    blocks = re.findall(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), flags=re.S)
    [block] = [b for b in blocks if "gmp profile add local" in b]
    block = block.replace("http://127.0.0.1:8000", stack.url).replace("--port 1025", f"--port {stack.smtp_sink_port}")
    commands = [shlex.split(line, comments=True) for line in block.replace("\\\n", " ").splitlines()]
    outputs = {}
    for words in commands:
        if not words or words[0] == "export":  # the in-process stack's token is already in GMP_API_TOKEN
            continue
        assert words[0] == "gmp", words
        outputs[" ".join(words[1:3])] = ok(gmp(*words[1:])).stdout
    assert "welcome-1" in [m.mail_id for m in stack.smtp_sink.wait_for(1, timeout=30)]
    assert "History" in outputs["messages show"] and "acme" in outputs["status"]
    assert json.loads(outputs["--json messages"])[0]["status"] == "sent"
    ok(gmp("tenants", "delete", "acme", "--yes"))


# ---------------------------------------------------------------------------------------------- errors


def test_errors_are_one_line_and_an_exit_code(stack: Any, gmp: Any, env: dict[str, str]) -> None:
    env["GMP_TEST_BAD"] = "not-the-token"
    ok(gmp("profile", "add", "bad", "--url", stack.url, "--token-env", "GMP_TEST_BAD"))
    assert "Invalid or missing API token" in one_line_error(gmp("tenants", "list"), 3)
    ok(gmp("profile", "add", "local", "--url", stack.url, "--token-env", "GMP_TEST_ADMIN", "--default"))
    assert "Tenant 'ghost' not found" in one_line_error(gmp("tenants", "show", "ghost"), 4)
    assert "not found" in one_line_error(gmp("accounts", "list", "-t", "ghost"), 4)
    closed = f"http://127.0.0.1:{free_port()}"
    one_line_error(gmp("--url", closed, "tenants", "list"), 5)
    one_line_error(gmp("--url", closed, "status"), 5)
    assert gmp("tenants", "show").exit_code == 2  # click's usage error
    assert "not a time" in one_line_error(gmp("command-log", "--since", "yesterday-ish"), 2)
    env["GMP_CONFIG_DIR"] = str(Path(env["GMP_CONFIG_DIR"]) / "empty")
    assert "no server" in one_line_error(gmp("tenants", "list"), 2)


def test_gmp_as_a_real_process(stack: Any, env: dict[str, str]) -> None:
    """The installed entry point, run as a process: JSON on stdout, and a one-line error on stderr."""
    # This worktree's client first, whatever the (shared) virtualenv has installed.
    path = os.pathsep.join(p for p in (str(ROOT / "client" / "src"), os.environ.get("PYTHONPATH", "")) if p)
    process_env = {**os.environ, **env, "GMP_TEST_ADMIN": TOKEN, "PYTHONPATH": path}
    gmp = [sys.executable, "-m", "gmp_client.cli"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*gmp, *args], env=process_env, capture_output=True, text=True, timeout=60)

    added = run("profile", "add", "local", "--url", stack.url, "--token-env", "GMP_TEST_ADMIN")
    assert added.returncode == 0, added.stderr
    reading = run("--json", "status")
    assert reading.returncode == 0, reading.stderr
    assert json.loads(reading.stdout)["health"]["ok"] is True
    missing = run("tenants", "show", "ghost")
    assert missing.returncode == 4
    assert missing.stderr.strip() == "gmp: error: Tenant 'ghost' not found (HTTP 404)"
    assert "Traceback" not in missing.stderr
    closed = run("--url", f"http://127.0.0.1:{free_port()}", "status")
    assert closed.returncode == 5 and len(closed.stderr.strip().splitlines()) == 1 and "Traceback" not in closed.stderr
    # The console script `gmp` (client/pyproject.toml) is this module's main.
    assert 'gmp = "gmp_client.cli:main"' in (ROOT / "client" / "pyproject.toml").read_text()
