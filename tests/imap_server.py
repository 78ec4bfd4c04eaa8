"""A real IMAP server for tests: Debian's Dovecot (`dovecot-imapd`) on 127.0.0.1, with a throw-away
configuration in a temporary folder: a passwd-file of users with plain passwords, Maildirs in the same folder.

`DovecotServer` starts it and stops it; `add_user` makes a mailbox (the passwd-file is read at each login, so
users can be added while it runs); `append` puts a message in a folder as an MTA's delivery would.
"""

from __future__ import annotations

import contextlib
import functools
import grp
import imaplib
import os
import pwd
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

START_SECONDS = 15.0
USERS = 500  # mailboxes a test session may take


@functools.cache
def _install() -> bool:
    """Install Debian's `dovecot-imapd` (root on Debian only); True when the binary is there after."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return False
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "dovecot-imapd"]):
        if subprocess.run(command, env=env, capture_output=True, timeout=600).returncode != 0:
            return False
    return _binary() is not None


def _binary() -> str | None:
    return shutil.which("dovecot") or ("/usr/sbin/dovecot" if os.path.exists("/usr/sbin/dovecot") else None)


def dovecot_binary() -> str:
    """The path of `dovecot`; the test is skipped only when it is missing and not installable."""
    path = _binary() or (_binary() if _install() else None)
    if path is None:
        pytest.skip("dovecot is missing and cannot be installed here (apt-get install dovecot-imapd; .ci/run does it)")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _users() -> tuple[str, str]:
    """(internal and mail user, login user): Dovecot's own unprivileged users when run as root, else ourselves."""
    if os.geteuid() != 0:
        me = pwd.getpwuid(os.geteuid()).pw_name
        return me, me
    for internal, login in (("dovecot", "dovenull"), ("nobody", "nobody")):
        try:
            pwd.getpwnam(internal)
            pwd.getpwnam(login)
        except KeyError:
            continue
        return internal, login
    raise RuntimeError("no unprivileged user for dovecot")


class DovecotServer:
    """One Dovecot instance: IMAP on `port` (plain; with a certificate, STARTTLS offered there too) and, with a
    certificate, implicit TLS on `tls_port`."""

    def __init__(self, root: Path, *, cert: Path | None = None, key: Path | None = None) -> None:
        self.root = root
        self.host = "127.0.0.1"
        self.port = _free_port()
        self.cert, self.key = cert, key
        self.tls_port = _free_port() if cert is not None else 0
        self.users_file = root / "users"
        self.process: subprocess.Popen[bytes] | None = None
        self._next_user = 0

    def start(self) -> DovecotServer:
        """Write the configuration and start the server in the foreground (a child of this process)."""
        binary = dovecot_binary()
        internal, login = _users()
        account = pwd.getpwnam(internal)
        for folder in ("run", "state", "mail", "home"):
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        # Dovecot reads the passwd-file again only when its mtime changes: users added within one second could go
        # unseen, so every user the session will need is written before it starts.
        self.users_file.write_text("".join(f"u{n}:{{PLAIN}}secret-{n}\n" for n in range(USERS)))
        self._next_user = 0
        os.chmod(self.root, 0o755)
        for folder in ("mail", "home"):
            if os.geteuid() == 0:
                os.chown(self.root / folder, account.pw_uid, account.pw_gid)
        config = self.root / "dovecot.conf"
        config.write_text(
            f"""
base_dir = {self.root}/run
state_dir = {self.root}/state
log_path = {self.root}/dovecot.log
protocols = imap
listen = {self.host}
{self._ssl()}
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = {internal}
default_internal_group = {grp.getgrgid(account.pw_gid).gr_name}
default_login_user = {login}
mail_location = maildir:{self.root}/mail/%u
mail_uid = {account.pw_uid}
mail_gid = {account.pw_gid}
first_valid_uid = 1
first_valid_gid = 1
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {self.users_file}
}}
userdb {{
  driver = static
  args = uid={account.pw_uid} gid={account.pw_gid} home={self.root}/home/%u
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = {self.host}
    port = {self.port}
  }}
  inet_listener imaps {{
    address = {self.host}
    port = {self.tls_port}
  }}
}}
service anvil {{
  chroot =
}}
"""
        )
        self.process = subprocess.Popen(
            [binary, "-F", "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"dovecot exited: {self._log()}")
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), timeout=0.5) as s:
                if s.recv(64).startswith(b"* OK"):
                    return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"dovecot did not start: {self._log()}")

    def _ssl(self) -> str:
        if self.cert is None or self.key is None:
            return "ssl = no"
        return f"ssl = yes\nssl_cert = <{self.cert}\nssl_key = <{self.key}"

    def _log(self) -> str:
        path = self.root / "dovecot.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def stop(self) -> None:
        """Stop the server (its own child processes go with it)."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def add_user(self) -> tuple[str, str]:
        """A mailbox user no test had (name, password)."""
        n = self._next_user
        if n >= USERS:
            raise RuntimeError(f"more than {USERS} mailboxes asked of one Dovecot")
        self._next_user += 1
        return f"u{n}", f"secret-{n}"

    @contextlib.contextmanager
    def session(self, user: str, password: str) -> Iterator[imaplib.IMAP4]:
        """A logged-in IMAP session of `user` (what a test uses to append and look)."""
        imap = imaplib.IMAP4(self.host, self.port, timeout=10)
        try:
            imap.login(user, password)
            yield imap
        finally:
            with contextlib.suppress(Exception):
                imap.logout()

    def append(self, user: str, password: str, raw: bytes, folder: str = "INBOX") -> None:
        """Deliver `raw` to the user's folder (made when missing)."""
        with self.session(user, password) as imap:
            if folder != "INBOX":
                imap.create(folder)
            status, _ = imap.append(folder, None, None, raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
            assert status == "OK"

    def uids(self, user: str, password: str, folder: str = "INBOX", criteria: str = "ALL") -> list[int]:
        """UIDs of the folder's messages matching `criteria`."""
        with self.session(user, password) as imap:
            status, _ = imap.select(f'"{folder}"')
            if status != "OK":
                return []
            status, data = imap.uid("SEARCH", criteria)
            return [int(n) for n in (data[0] or b"").split()]
