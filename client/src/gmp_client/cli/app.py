"""`gmp`: the mail proxy from a shell, on the gmp_client library.

Exit codes (docs/cli.md): 0 ok; 1 the API refused or failed; 2 usage or configuration error; 3 authentication
(401/403); 4 not found (404); 5 the server could not be reached; 6 `send --wait`: the message failed;
7 `send --wait`: still not sent when the wait ended. Every failure is one line on stderr, never a traceback
(set GMP_DEBUG=1 to see one).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Group
from rich.table import Table
from typer.core import TyperGroup

from gmp_client import (
    ApiError,
    AuthError,
    BounceMailbox,
    Client,
    ConnectionFailed,
    ForbiddenError,
    GmpError,
    NotFoundError,
)
from gmp_client.errors import detail_text

from . import compose, config, upload
from . import metrics as prom
from .config import CliError, Profile
from .output import Output, cell, plain, when

EXIT_OK = 0
EXIT_API = 1
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_NOT_FOUND = 4
EXIT_CONNECTION = 5
EXIT_MESSAGE_FAILED = 6
EXIT_WAIT_TIMEOUT = 7


def describe(exc: BaseException) -> str:
    """An exception as the one line the user reads."""
    status = getattr(exc, "status_code", None)
    detail = getattr(exc, "detail", None)
    text = (detail_text(detail) if detail is not None else "") or str(exc) or type(exc).__name__
    text = " ".join(text.split())
    return f"{text} (HTTP {status})" if status else text


def exit_code_of(exc: BaseException) -> int:
    """The documented exit code of a client error."""
    if isinstance(exc, ConnectionFailed):
        return EXIT_CONNECTION
    if isinstance(exc, AuthError | ForbiddenError):
        return EXIT_AUTH
    if isinstance(exc, NotFoundError):
        return EXIT_NOT_FOUND
    status = getattr(exc, "status_code", None)
    if status in (401, 403):
        return EXIT_AUTH
    if status == 404:
        return EXIT_NOT_FOUND
    return EXIT_API


def fail(message: str, code: int) -> NoReturn:
    """Print `gmp: error: ...` on stderr and exit with `code`."""
    typer.echo(f"gmp: error: {message}", err=True)
    raise typer.Exit(code)


class GmpGroup(TyperGroup):
    """The root group: every error below it becomes one line on stderr and its exit code."""

    def invoke(self, ctx: typer.Context) -> Any:  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):  # usage errors: typer prints them, exit 2
            raise
        except CliError as exc:
            fail(str(exc), exc.exit_code)
        except GmpError as exc:
            fail(describe(exc), exit_code_of(exc))
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
        except Exception as exc:
            if os.environ.get("GMP_DEBUG"):
                raise
            fail(f"{type(exc).__name__}: {describe(exc)}", EXIT_API)


app = typer.Typer(
    cls=GmpGroup,
    name="gmp",
    help="The Serverless Mail Proxy from a shell. Exit codes: 0 ok, 1 API error, 2 usage, 3 auth, 4 not found, "
    "5 unreachable, 6 message failed, 7 wait timed out.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
profile_app = typer.Typer(
    help="Named servers and where their tokens are (never the tokens themselves).", no_args_is_help=True
)
tenants_app = typer.Typer(help="Tenants (admin token).", no_args_is_help=True)
accounts_app = typer.Typer(help="A tenant's SMTP accounts.", no_args_is_help=True)
keys_app = typer.Typer(help="Tenant API keys (admin token).", no_args_is_help=True)
messages_app = typer.Typer(help="A tenant's messages.", no_args_is_help=True)
suppressions_app = typer.Typer(help="A tenant's suppression list: addresses never sent to.", no_args_is_help=True)
files_app = typer.Typer(help="Big files, uploaded for messages to attach by reference.", no_args_is_help=True)
app.add_typer(profile_app, name="profile")
app.add_typer(tenants_app, name="tenants")
app.add_typer(accounts_app, name="accounts")
app.add_typer(keys_app, name="keys")
app.add_typer(messages_app, name="messages")
app.add_typer(suppressions_app, name="suppressions")
app.add_typer(files_app, name="files")


@dataclass
class State:
    """The global options, and the client they select."""

    profile_name: str | None
    url: str | None
    as_json: bool
    timeout: float
    retries: int

    @property
    def out(self) -> Output:
        return Output(self.as_json)

    def profile(self) -> Profile | None:
        """The selected profile: --profile, else the default one, else none (then --url is needed)."""
        cfg = config.load()
        name = self.profile_name or cfg.default
        if name is None:
            return None
        try:
            return cfg.profiles[name]
        except KeyError:
            raise CliError(f"no profile {name!r} (gmp profile list)") from None

    @contextmanager
    def client(self) -> Iterator[Client]:
        """A client of the selected server, holding the profile's token."""
        profile = self.profile()
        url = self.url or (profile.url if profile else None)
        if not url:
            raise CliError("no server: give --url (or GMP_URL), or add a profile (gmp profile add)")
        token = config.token_of(profile)
        with Client(url, token, timeout=self.timeout, retries=self.retries) as c:
            yield c

    def tenant(self, given: str | None) -> str | None:
        """--tenant, else the profile's tenant."""
        if given:
            return given
        profile = self.profile()
        return profile.tenant if profile else None

    def account(self, given: str | None) -> str | None:
        """--account, else the profile's account."""
        if given:
            return given
        profile = self.profile()
        return profile.account if profile else None

    def metrics_token(self) -> str | None:
        """The bearer token of /metrics, from the profile's metrics_token_env or $GMP_METRICS_TOKEN."""
        profile = self.profile()
        variable = (profile.metrics_token_env if profile else None) or "GMP_METRICS_TOKEN"
        return os.environ.get(variable) or None


def state(ctx: typer.Context) -> State:
    obj = ctx.find_root().obj
    assert isinstance(obj, State)
    return obj


@app.callback()
def main_options(
    ctx: typer.Context,
    profile: Annotated[
        str | None,
        typer.Option("--profile", "-p", envvar="GMP_PROFILE", help="Profile to use (default: the default profile)."),
    ] = None,
    url: Annotated[
        str | None, typer.Option("--url", envvar="GMP_URL", help="Server URL, overriding the profile's.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of tables.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", envvar="GMP_TIMEOUT", help="Seconds per HTTP request.")] = 30.0,
    retries: Annotated[int, typer.Option("--retries", envvar="GMP_RETRIES", help="Retries of a failed request.")] = 3,
) -> None:
    """The Serverless Mail Proxy from a shell."""
    ctx.obj = State(profile_name=profile, url=url, as_json=as_json, timeout=timeout, retries=retries)


TenantOpt = Annotated[str | None, typer.Option("--tenant", "-t", help="Tenant id (default: the profile's).")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]


def confirm(what: str, yes: bool) -> None:
    """Ask before destroying something; without a terminal, --yes is required."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise CliError(f"{what}: add --yes to confirm")
    if not typer.confirm(f"{what}?", default=False):
        raise typer.Exit(EXIT_USAGE)


def timestamp(value: str | None) -> int | None:
    """A time option: unix seconds, or an ISO date/time (local time unless it names a zone)."""
    if value is None:
        return None
    try:
        return int(float(value))
    except ValueError:
        pass
    try:
        return int(dt.datetime.fromisoformat(value).timestamp())
    except ValueError:
        raise CliError(f"not a time: {value!r} (unix seconds or ISO 8601)") from None


def read_secret(prompt: str, from_stdin: bool) -> str:
    """A secret read from stdin (--...-stdin) or typed without echo; never from argv."""
    if from_stdin or not sys.stdin.isatty():
        value = sys.stdin.readline().strip()
    else:
        value = str(typer.prompt(prompt, hide_input=True)).strip()
    if not value:
        raise CliError(f"{prompt}: nothing given")
    return value


BounceMailboxOpt = Annotated[
    Path | None,
    typer.Option(
        "--bounce-mailbox",
        help="JSON file of the IMAP mailbox bounces arrive in ('-': stdin): host, user, port, use_tls, folder, "
        "processed_folder, return_path, verp, password (or --bounce-password-env).",
    ),
]
BouncePasswordOpt = Annotated[
    str | None,
    typer.Option("--bounce-password-env", help="Environment variable holding the bounce mailbox's password."),
]


def bounce_mailbox(path: Path | None, password_env: str | None) -> dict[str, Any] | None:
    """The `bounce_mailbox` of --bounce-mailbox FILE, checked against the API's fields before any call.

    A file (or stdin), never a JSON argument: the mailbox's password must not reach argv, where `ps` and the
    shell's history would show it."""
    if path is None:
        if password_env:
            raise CliError("--bounce-password-env needs --bounce-mailbox")
        return None
    try:
        data = json.loads(sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read {path}: {exc}") from exc
    except ValueError as exc:
        raise CliError(f"--bounce-mailbox {path}: not JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise CliError(f"--bounce-mailbox {path}: expected a JSON object")
    if password_env:
        password = os.environ.get(password_env)
        if not password:
            raise CliError(f"${password_env} is not set")
        data["password"] = password
    try:
        return BounceMailbox.from_dict(data).to_dict()
    except TypeError as exc:  # an unknown field, or host/user missing
        raise CliError(f"--bounce-mailbox {path}: {str(exc).removeprefix('BounceMailbox.__init__() ')}") from None


# ------------------------------------------------------------------------------------------------ profiles


@profile_app.command("add")
def profile_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Profile name.")],
    url: Annotated[str, typer.Option("--url", help="Server URL, e.g. http://127.0.0.1:8000.")],
    token_env: Annotated[
        str | None, typer.Option("--token-env", help="Environment variable holding the token.")
    ] = None,
    use_keyring: Annotated[
        bool, typer.Option("--keyring", help="Keep the token in the system keyring (typed, or read from stdin).")
    ] = False,
    token_stdin: Annotated[
        bool, typer.Option("--token-stdin", help="With --keyring: read the token from stdin.")
    ] = False,
    tenant: Annotated[str | None, typer.Option("--tenant", help="Default --tenant of commands.")] = None,
    account: Annotated[str | None, typer.Option("--account", help="Default --account of gmp send.")] = None,
    metrics_token_env: Annotated[
        str | None, typer.Option("--metrics-token-env", help="Environment variable holding /metrics' bearer token.")
    ] = None,
    default: Annotated[bool, typer.Option("--default/--no-default", help="Make it the default profile.")] = False,
) -> None:
    """Add or replace a profile. The token stays in the environment or the keyring, never in the file."""
    if token_env and use_keyring:
        raise CliError("give --token-env or --keyring, not both")
    if use_keyring:
        config.store_in_keyring(name, read_secret(f"token for {name}", token_stdin))
    elif not token_env:
        token_env = config.DEFAULT_TOKEN_ENV
    cfg = config.load()
    old = cfg.profiles.get(name)
    if old is not None and old.keyring and not use_keyring:
        config.forget_keyring(name)
    cfg.profiles[name] = Profile(
        name=name,
        url=url.rstrip("/"),
        token_env=token_env,
        keyring=use_keyring,
        tenant=tenant,
        account=account,
        metrics_token_env=metrics_token_env,
    )
    if default or cfg.default is None:
        cfg.default = name
    path = config.save(cfg)
    state(ctx).out.result(
        {"profile": name, "path": str(path), "default": cfg.default == name},
        f"Profile {name} saved in {path}" + (" (default)" if cfg.default == name else ""),
    )


@profile_app.command("list")
def profile_list(ctx: typer.Context) -> None:
    """The profiles (the token's location, never the token)."""
    cfg = config.load()
    rows = [{**p.public(), "default": name == cfg.default} for name, p in sorted(cfg.profiles.items())]
    for row in rows:
        row["token"] = "keyring" if row.pop("keyring") else f"${row.pop('token_env') or config.DEFAULT_TOKEN_ENV}"
        row.pop("token_env", None)
    state(ctx).out.table(rows, ["name", "url", "token", "tenant", "account", "default"], title="Profiles")


@profile_app.command("show")
def profile_show(ctx: typer.Context, name: Annotated[str | None, typer.Argument()] = None) -> None:
    """One profile (the selected one without a name)."""
    st = state(ctx)
    cfg = config.load()
    chosen = name or st.profile_name or cfg.default
    if chosen is None or chosen not in cfg.profiles:
        raise CliError(f"no profile {chosen!r} (gmp profile list)")
    profile = cfg.profiles[chosen]
    data = {**profile.public(), "default": chosen == cfg.default, "token_found": bool(_token_found(profile))}
    st.out.record(data, title=f"Profile {chosen}")


def _token_found(profile: Profile) -> bool:
    try:
        return config.token_of(profile) is not None
    except CliError:
        return False


@profile_app.command("use")
def profile_use(ctx: typer.Context, name: str) -> None:
    """Make a profile the default."""
    cfg = config.load()
    if name not in cfg.profiles:
        raise CliError(f"no profile {name!r} (gmp profile list)")
    cfg.default = name
    config.save(cfg)
    state(ctx).out.result({"default": name}, f"Default profile: {name}")


@profile_app.command("remove")
def profile_remove(ctx: typer.Context, name: str) -> None:
    """Remove a profile (and its keyring entry)."""
    cfg = config.load()
    profile = cfg.profiles.pop(name, None)
    if profile is None:
        raise CliError(f"no profile {name!r} (gmp profile list)")
    if profile.keyring:
        config.forget_keyring(name)
    if cfg.default == name:
        cfg.default = next(iter(sorted(cfg.profiles)), None)
    config.save(cfg)
    state(ctx).out.result({"removed": name}, f"Profile {name} removed")


# ------------------------------------------------------------------------------------------------ tenants


def _save_key(st: State, profile_name: str, tenant_id: str, key: str) -> None:
    """Keep a new tenant key in the keyring as a profile of that tenant (on the current server)."""
    current = st.profile()
    url = st.url or (current.url if current else None)
    if not url:
        raise CliError("--save-profile needs a server URL (--url or a profile)")
    config.store_in_keyring(profile_name, key)
    cfg = config.load()
    cfg.profiles[profile_name] = Profile(name=profile_name, url=url, keyring=True, tenant=tenant_id)
    config.save(cfg)


def _announce_key(st: State, tenant_id: str, key: str | None, save_profile: str | None, what: str) -> None:
    if key and save_profile:
        _save_key(st, save_profile, tenant_id, key)
        st.out.result(
            {"tenant_id": tenant_id, "profile": save_profile},
            f"{what}; its API key is in the keyring as profile {save_profile} (gmp -p {save_profile} ...)",
        )
        return
    if key:
        st.out.result({"tenant_id": tenant_id, "api_key": key}, f"{what}. API key (shown once): {key}")
    else:
        st.out.result({"tenant_id": tenant_id, "api_key": None}, f"{what} (key unchanged)")


SaveProfileOpt = Annotated[
    str | None,
    typer.Option("--save-profile", help="Keep the new key in the keyring as this profile instead of printing it."),
]


@tenants_app.command("list")
def tenants_list(
    ctx: typer.Context, active_only: Annotated[bool, typer.Option("--active-only", help="Active tenants only.")] = False
) -> None:
    """Every tenant."""
    st = state(ctx)
    with st.client() as c:
        rows = plain(c.list_tenants(active_only=active_only))
    st.out.table(rows, ["id", "name", "active", "client_base_url", "api_key_expires_at"], title="Tenants")


@tenants_app.command("show")
def tenants_show(ctx: typer.Context, tenant_id: str) -> None:
    """One tenant (secrets are never returned)."""
    st = state(ctx)
    with st.client() as c:
        st.out.record(plain(c.get_tenant(tenant_id)), title=f"Tenant {tenant_id}")


@tenants_app.command("create")
def tenants_create(
    ctx: typer.Context,
    tenant_id: str,
    name: Annotated[str | None, typer.Option("--name")] = None,
    client_base_url: Annotated[str | None, typer.Option("--client-base-url", help="Where delivery reports go.")] = None,
    sync_path: Annotated[str | None, typer.Option("--sync-path")] = None,
    attachment_path: Annotated[str | None, typer.Option("--attachment-path")] = None,
    inactive: Annotated[bool, typer.Option("--inactive", help="Create it inactive (messages held).")] = False,
    key_expires_at: Annotated[str | None, typer.Option("--key-expires-at", help="Unix seconds or ISO time.")] = None,
    mailbox: BounceMailboxOpt = None,
    mailbox_password_env: BouncePasswordOpt = None,
    save_profile: SaveProfileOpt = None,
) -> None:
    """Create a tenant (or overwrite an existing one's config); prints its new API key once."""
    st = state(ctx)
    body: dict[str, Any] = {"id": tenant_id, "name": name or tenant_id, "active": not inactive}
    for field, value in (
        ("client_base_url", client_base_url),
        ("client_sync_path", sync_path),
        ("client_attachment_path", attachment_path),
        ("api_key_expires_at", timestamp(key_expires_at)),
        ("bounce_mailbox", bounce_mailbox(mailbox, mailbox_password_env)),
    ):
        if value is not None:
            body[field] = value
    with st.client() as c:
        key = c.create_tenant(body)
    _announce_key(
        st, tenant_id, key, save_profile, f"Tenant {tenant_id} created" if key else f"Tenant {tenant_id} updated"
    )


@tenants_app.command("update")
def tenants_update(
    ctx: typer.Context,
    tenant_id: str,
    name: Annotated[str | None, typer.Option("--name")] = None,
    client_base_url: Annotated[str | None, typer.Option("--client-base-url")] = None,
    sync_path: Annotated[str | None, typer.Option("--sync-path")] = None,
    attachment_path: Annotated[str | None, typer.Option("--attachment-path")] = None,
    active: Annotated[bool | None, typer.Option("--active/--inactive", help="Activate or deactivate.")] = None,
    mailbox: BounceMailboxOpt = None,
    mailbox_password_env: BouncePasswordOpt = None,
    no_mailbox: Annotated[
        bool, typer.Option("--no-bounce-mailbox", help="Remove the tenant's bounce mailbox.")
    ] = False,
) -> None:
    """Change only the fields given."""
    st = state(ctx)
    fields: dict[str, Any] = {
        k: v
        for k, v in (
            ("name", name),
            ("client_base_url", client_base_url),
            ("client_sync_path", sync_path),
            ("client_attachment_path", attachment_path),
            ("active", active),
            ("bounce_mailbox", bounce_mailbox(mailbox, mailbox_password_env)),
        )
        if v is not None
    }
    if no_mailbox:
        if "bounce_mailbox" in fields:
            raise CliError("give --bounce-mailbox or --no-bounce-mailbox, not both")
        fields["bounce_mailbox"] = None  # PUT's null: the stored mailbox is removed
    if not fields:
        raise CliError("nothing to change: give at least one option")
    with st.client() as c:
        c.update_tenant(tenant_id, **fields)
    st.out.result({"ok": True, "tenant_id": tenant_id, "changed": sorted(fields)}, f"Tenant {tenant_id} updated")


@tenants_app.command("delete")
def tenants_delete(ctx: typer.Context, tenant_id: str, yes: YesOpt = False) -> None:
    """Delete a tenant with its accounts and messages."""
    st = state(ctx)
    confirm(f"Delete tenant {tenant_id} with its accounts and messages", yes)
    with st.client() as c:
        c.delete_tenant(tenant_id)
    st.out.result({"ok": True, "tenant_id": tenant_id}, f"Tenant {tenant_id} deleted")


# ------------------------------------------------------------------------------------------------ keys


ExpiresOpt = Annotated[str | None, typer.Option("--expires-at", help="Key expiry: unix seconds or ISO time.")]


@keys_app.command("create")
def keys_create(
    ctx: typer.Context, tenant_id: str, expires_at: ExpiresOpt = None, save_profile: SaveProfileOpt = None
) -> None:
    """Issue a key for a tenant (one whose key was revoked); any old key stops working."""
    _new_key(ctx, tenant_id, expires_at, save_profile, f"Key issued for {tenant_id}")


@keys_app.command("rotate")
def keys_rotate(
    ctx: typer.Context, tenant_id: str, expires_at: ExpiresOpt = None, save_profile: SaveProfileOpt = None
) -> None:
    """Replace a tenant's key: the old one stops working at once."""
    _new_key(ctx, tenant_id, expires_at, save_profile, f"Key of {tenant_id} rotated")


def _new_key(ctx: typer.Context, tenant_id: str, expires_at: str | None, save_profile: str | None, done: str) -> None:
    # One API call for both commands (POST /tenant/{id}/api-key): creating after a revoke is rotating.
    st = state(ctx)
    with st.client() as c:
        key = c.rotate_api_key(tenant_id, expires_at=timestamp(expires_at))
    _announce_key(st, tenant_id, key, save_profile, done)


@keys_app.command("revoke")
def keys_revoke(ctx: typer.Context, tenant_id: str, yes: YesOpt = False) -> None:
    """Revoke a tenant's key (the tenant can no longer call the API until a key is created)."""
    st = state(ctx)
    confirm(f"Revoke the API key of {tenant_id}", yes)
    with st.client() as c:
        c.revoke_api_key(tenant_id)
    st.out.result({"ok": True, "tenant_id": tenant_id}, f"Key of {tenant_id} revoked")


# ------------------------------------------------------------------------------------------------ accounts


@accounts_app.command("list")
def accounts_list(ctx: typer.Context, tenant: TenantOpt = None) -> None:
    """A tenant's accounts (without passwords)."""
    st = state(ctx)
    with st.client() as c:
        rows = plain(c.list_accounts(tenant_id=st.tenant(tenant)))
    st.out.table(
        rows,
        ["id", "tenant_id", "host", "port", "user", "use_tls", "limit_per_minute", "limit_per_hour", "limit_per_day"],
        title="Accounts",
    )


@accounts_app.command("add")
def accounts_add(
    ctx: typer.Context,
    account_id: str,
    host: Annotated[str, typer.Option("--host")],
    port: Annotated[int, typer.Option("--port")],
    tenant: TenantOpt = None,
    user: Annotated[str | None, typer.Option("--user")] = None,
    password_env: Annotated[
        str | None, typer.Option("--password-env", help="Environment variable holding the SMTP password.")
    ] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the SMTP password from stdin.")
    ] = False,
    use_tls: Annotated[
        bool | None, typer.Option("--tls/--no-tls", help="Require TLS, or plain SMTP (default: TLS when offered).")
    ] = None,
    limit_per_minute: Annotated[int | None, typer.Option("--limit-per-minute")] = None,
    limit_per_hour: Annotated[int | None, typer.Option("--limit-per-hour")] = None,
    limit_per_day: Annotated[int | None, typer.Option("--limit-per-day")] = None,
    limit_behavior: Annotated[str | None, typer.Option("--limit-behavior", help="defer or reject.")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size")] = None,
    ttl: Annotated[int | None, typer.Option("--ttl", help="Seconds a pooled connection lives.")] = None,
    max_connections: Annotated[
        int | None, typer.Option("--max-connections", help="SMTP sessions open at once (default 5).")
    ] = None,
    mailbox: BounceMailboxOpt = None,
    mailbox_password_env: BouncePasswordOpt = None,
) -> None:
    """Add or replace an SMTP account (the password never on the command line)."""
    st = state(ctx)
    tenant_id = st.tenant(tenant)
    if not tenant_id:
        raise CliError("which tenant? give --tenant (or a profile with one)")
    if password_stdin and str(mailbox) == "-":
        raise CliError("stdin holds one of --password-stdin and --bounce-mailbox -, not both")
    body: dict[str, Any] = {"id": account_id, "tenant_id": tenant_id, "host": host, "port": port}
    if password_env:
        password = os.environ.get(password_env)
        if not password:
            raise CliError(f"${password_env} is not set")
        body["password"] = password
    elif password_stdin:
        body["password"] = read_secret("SMTP password", True)
    for key, value in (
        ("user", user),
        ("use_tls", use_tls),
        ("limit_per_minute", limit_per_minute),
        ("limit_per_hour", limit_per_hour),
        ("limit_per_day", limit_per_day),
        ("limit_behavior", limit_behavior),
        ("batch_size", batch_size),
        ("ttl", ttl),
        ("max_connections", max_connections),
        ("bounce_mailbox", bounce_mailbox(mailbox, mailbox_password_env)),
    ):
        if value is not None:
            body[key] = value
    with st.client() as c:
        c.upsert_account(body)
    st.out.result({"ok": True, "tenant_id": tenant_id, "account_id": account_id}, f"Account {account_id} saved")


@accounts_app.command("delete")
def accounts_delete(ctx: typer.Context, account_id: str, tenant: TenantOpt = None, yes: YesOpt = False) -> None:
    """Delete an account (its pending messages then fail)."""
    st = state(ctx)
    confirm(f"Delete account {account_id}", yes)
    with st.client() as c:
        c.delete_account(account_id, tenant_id=st.tenant(tenant))
    st.out.result({"ok": True, "account_id": account_id}, f"Account {account_id} deleted")


@accounts_app.command("resume")
def accounts_resume(ctx: typer.Context, account_id: str, tenant: TenantOpt = None) -> None:
    """Resume an account the reputation guard paused: its held messages go out (admin token)."""
    st = state(ctx)
    with st.client() as c:
        reply = plain(c.resume_account(account_id, tenant_id=st.tenant(tenant)))
    st.out.result(reply, f"Account {account_id} resumed; {reply.get('released', 0)} held message(s) released")


# ------------------------------------------------------------------------------------------------ suppressions

MAX_ADDRESSES_PER_REQUEST = 1000  # POST /suppressions takes 1 to 1000 addresses


@suppressions_app.command("list")
def suppressions_list(
    ctx: typer.Context,
    tenant: TenantOpt = None,
    limit: Annotated[int, typer.Option("--limit", help="Entries per page (1-1000).")] = 100,
    all_pages: Annotated[bool, typer.Option("--all", help="Every page, not only the first.")] = False,
    cursor: Annotated[str | None, typer.Option("--cursor", help="Continue from a previous page's cursor.")] = None,
) -> None:
    """The suppressed addresses, in address order, and what put each there."""
    st = state(ctx)
    tenant_id = st.tenant(tenant)
    next_cursor = None
    with st.client() as c:
        if all_pages:
            entries = plain(list(c.iter_suppressions(tenant_id, limit=limit)))
        else:
            page = c.list_suppressions(tenant_id, limit=limit, cursor=cursor)
            entries = plain(page.suppressions)
            next_cursor = page.next_cursor
    rows = [{**e, "since": when(e.get("created_at"))} for e in entries]
    st.out.table(
        rows,
        ["address", "source", "reason", "code", "message_id", "account_id", "since"],
        title="Suppressed addresses",
        data={"suppressions": entries, "next_cursor": next_cursor},
    )
    if next_cursor and not st.out.as_json:
        more = f"gmp suppressions list{f' -t {tenant_id}' if tenant else ''} --limit {limit} --cursor {next_cursor}"
        st.out.note(f"more: {more}  (or --all)")


def _addresses_of(given: list[str] | None, from_file: Path | None) -> list[str]:
    """The arguments' addresses (comma-separated too), then the file's, one a line ('#' starts a comment)."""
    found = compose.addresses(given or [])
    if from_file is not None:
        for line in _read_text(from_file).splitlines():
            found.extend(compose.addresses([line.split("#", 1)[0]]))
    if not found:
        raise CliError("no address given: name some, or --file FILE")
    return list(dict.fromkeys(found))


@suppressions_app.command("add")
def suppressions_add(
    ctx: typer.Context,
    addresses: Annotated[list[str] | None, typer.Argument(help="Addresses to suppress.")] = None,
    from_file: Annotated[
        Path | None, typer.Option("--file", help="Addresses from a file, one a line ('-': stdin).")
    ] = None,
    reason: Annotated[str | None, typer.Option("--reason", help="Why (kept with each entry).")] = None,
    tenant: TenantOpt = None,
) -> None:
    """Never send to these addresses again (requests of 1000 addresses)."""
    st = state(ctx)
    wanted = _addresses_of(addresses, from_file)
    tenant_id = st.tenant(tenant)
    added: list[str] = []
    already: list[str] = []
    with st.client() as c:
        for start in range(0, len(wanted), MAX_ADDRESSES_PER_REQUEST):
            chunk = wanted[start : start + MAX_ADDRESSES_PER_REQUEST]
            reply = c.add_suppressions(chunk, reason=reason, tenant_id=tenant_id)
            added.extend(reply.added)
            already.extend(reply.already_suppressed)
    st.out.result(
        {"ok": True, "added": added, "already_suppressed": already},
        f"Suppressed {len(added)}" + (f"; already on the list: {', '.join(already)}" if already else ""),
    )


@suppressions_app.command("remove")
def suppressions_remove(
    ctx: typer.Context,
    addresses: Annotated[list[str], typer.Argument(help="Addresses to send to again.")],
    tenant: TenantOpt = None,
) -> None:
    """Take addresses off the list: they are sent to again. Exit 4 if one was not on it."""
    st = state(ctx)
    tenant_id = st.tenant(tenant)
    removed: list[str] = []
    not_found: list[str] = []
    with st.client() as c:
        for address in addresses:
            try:
                c.remove_suppression(address, tenant_id=tenant_id)
            except NotFoundError:
                not_found.append(address)
            else:
                removed.append(address)
    st.out.result(
        {"ok": not not_found, "removed": removed, "not_found": not_found},
        f"Removed {', '.join(removed)}" if removed else None,
    )
    if not_found:
        fail(f"not on the suppression list: {', '.join(not_found)}", EXIT_NOT_FOUND)


# ------------------------------------------------------------------------------------------------ files


@files_app.command("upload")
def files_upload(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="The file to upload.")],
    name: Annotated[str | None, typer.Option("--name", help="Its name in the message (default: the file's).")] = None,
    tenant: TenantOpt = None,
) -> None:
    """Upload a big file (past the 6 MB of a request); prints the `upload:<id>` reference a message attaches."""
    st = state(ctx)
    size = upload.file_size(path)
    filename = name or path.name
    with st.client() as c:
        reply = c.create_upload(tenant_id=st.tenant(tenant), filename=filename, size=size)
        if size > reply.max_bytes:  # the API refuses it when given the size; a check before sending anyway
            raise CliError(f"{path}: {size} bytes, over the upload limit of {reply.max_bytes}")
        form = reply.upload
        if form.method.upper() != "POST":
            raise CliError(f"the server's upload form uses {form.method}, which gmp does not know")
        upload.post_form(
            form.url, form.fields, form.file_field, path, filename=filename, base_url=c.base_url, timeout=st.timeout
        )
    reference = reply.attachment.storage_path
    st.out.result(
        {
            "upload_id": reply.upload_id,
            "size": size,
            "expires_at": reply.expires_at,
            "attachment": {**plain(reply.attachment), "filename": filename},
        },
        reference,
    )
    if not st.out.as_json:
        st.out.note(f"send it: gmp send ... --attach-upload {reference}={filename}")


# ------------------------------------------------------------------------------------------------ messages

MESSAGE_COLUMNS = ["id", "status", "account_id", "priority", "batch_code", "subject", "to", "updated", "error"]


def _message_row(record: dict[str, Any]) -> dict[str, Any]:
    payload = record.get("message") or {}
    return {
        **record,
        "subject": payload.get("subject") if isinstance(payload, dict) else None,
        "to": payload.get("to") if isinstance(payload, dict) else None,
        "updated": when(record.get("updated_at")),
    }


@messages_app.command("list")
def messages_list(
    ctx: typer.Context,
    tenant: TenantOpt = None,
    active_only: Annotated[bool, typer.Option("--active-only", help="Unsent messages only.")] = False,
    status: Annotated[list[str] | None, typer.Option("--status", help="Only this status (repeatable).")] = None,
    account: Annotated[str | None, typer.Option("--account", help="Only this account's.")] = None,
    batch: Annotated[str | None, typer.Option("--batch", help="Only this batch's.")] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="At most this many.")] = None,
) -> None:
    """A tenant's messages, in the service's order (priority, then age)."""
    st = state(ctx)
    with st.client() as c:
        records = plain(c.list_messages(tenant_id=st.tenant(tenant), active_only=active_only))
    wanted = set(status or [])
    records = [
        r
        for r in records
        if (not wanted or r.get("status") in wanted)
        and (account is None or r.get("account_id") == account)
        and (batch is None or r.get("batch_code") == batch)
    ][: limit if limit is not None else None]
    st.out.table([_message_row(r) for r in records], MESSAGE_COLUMNS, title="Messages", data=records)


@messages_app.command("show")
def messages_show(ctx: typer.Context, message_id: str, tenant: TenantOpt = None) -> None:
    """One message, with its history."""
    st = state(ctx)
    with st.client() as c:
        record = plain(c.get_message(message_id, tenant_id=st.tenant(tenant)))
    if st.out.as_json:
        st.out.json(record)
        return
    fields = {k: v for k, v in record.items() if k not in ("history", "message")}
    for key in ("created_at", "updated_at", "sent_ts", "error_ts", "deferred_ts"):
        if fields.get(key):
            fields[key] = f"{fields[key]} ({when(fields[key])})"
    payload = record.get("message") or {}
    if isinstance(payload, dict):
        for key in ("from", "to", "cc", "subject", "content_type"):
            if payload.get(key):
                fields[f"message.{key}"] = payload[key]
        if payload.get("attachments"):
            fields["message.attachments"] = [a.get("filename") for a in payload["attachments"] if isinstance(a, dict)]
    st.out.record(fields, title=f"Message {message_id}")
    history = [
        {**h, "at": when(h.get("event_ts")), "reported": when(h.get("reported_ts"))}
        for h in record.get("history") or []
    ]
    if history:
        st.out.table(history, [("at", "when"), ("event_type", "event"), "description", "reported"], title="History")


@messages_app.command("delete")
def messages_delete(
    ctx: typer.Context,
    ids: Annotated[list[str], typer.Argument(help="Message ids.")],
    tenant: TenantOpt = None,
    yes: YesOpt = False,
) -> None:
    """Delete messages (unsent ones are then never sent)."""
    st = state(ctx)
    confirm(f"Delete {len(ids)} message(s)", yes)
    with st.client() as c:
        reply = plain(c.delete_messages(ids, tenant_id=st.tenant(tenant)))
    reply = reply if isinstance(reply, dict) else {"result": reply}
    not_found = reply.get("not_found") or []
    st.out.result(
        reply,
        f"Removed {reply.get('removed', '?')}"
        + (f"; not found: {', '.join(map(str, not_found))}" if not_found else ""),
    )


@messages_app.command("cleanup")
def messages_cleanup(
    ctx: typer.Context,
    tenant: TenantOpt = None,
    older_than: Annotated[int | None, typer.Option("--older-than", help="Seconds since processed.")] = None,
) -> None:
    """Remove processed, fully reported messages now (what retention does later)."""
    st = state(ctx)
    with st.client() as c:
        reply = plain(c.cleanup_messages(older_than_seconds=older_than, tenant_id=st.tenant(tenant)))
    reply = reply if isinstance(reply, dict) else {"result": reply}
    st.out.result(reply, f"Removed {reply.get('removed', '?')}")


# ------------------------------------------------------------------------------------------------ service


def _suspension(ctx: typer.Context, verb: str, tenant: str | None, batch: str | None) -> None:
    st = state(ctx)
    with st.client() as c:
        call = c.suspend if verb == "suspend" else c.activate
        reply = plain(call(tenant_id=st.tenant(tenant), batch_code=batch))
    reply = reply if isinstance(reply, dict) else {"result": reply}
    suspended = reply.get("suspended_batches") or []
    st.out.result(
        reply,
        f"{reply.get('tenant_id', '')}: suspended batches [{', '.join(map(str, suspended))}], "
        f"{reply.get('pending_messages', '?')} pending",
    )


BatchOpt = Annotated[str | None, typer.Option("--batch", help="Only this batch (default: the whole tenant).")]


@app.command()
def suspend(ctx: typer.Context, tenant: TenantOpt = None, batch: BatchOpt = None) -> None:
    """Hold a tenant's (or one batch's) messages."""
    _suspension(ctx, "suspend", tenant, batch)


@app.command()
def activate(ctx: typer.Context, tenant: TenantOpt = None, batch: BatchOpt = None) -> None:
    """Release held messages."""
    _suspension(ctx, "activate", tenant, batch)


@app.command("run-now")
def run_now(ctx: typer.Context) -> None:
    """Report to tenants and re-queue due deferred messages now."""
    st = state(ctx)
    with st.client() as c:
        c.run_now()
    st.out.result({"ok": True}, "Done")


@app.command("sync-status")
def sync_status(ctx: typer.Context) -> None:
    """When each tenant was last reported to, and when it is due (admin token)."""
    st = state(ctx)
    with st.client() as c:
        reply = plain(c.sync_status())
    tenants = reply.get("tenants", []) if isinstance(reply, dict) else reply
    rows = [{**t, "last_sync": when(t.get("last_sync_ts")), "next_due": when(t.get("next_sync_due"))} for t in tenants]
    interval = reply.get("sync_interval_seconds") if isinstance(reply, dict) else None
    st.out.table(
        rows,
        ["id", "name", "active", "client_base_url", "last_sync", "next_due", "in_dnd"],
        title=f"Sync (every {interval} s)" if interval else "Sync",
        data=reply,
    )


@app.command("command-log")
def command_log(
    ctx: typer.Context,
    tenant: TenantOpt = None,
    since: Annotated[str | None, typer.Option("--since", help="Unix seconds or ISO time.")] = None,
    until: Annotated[str | None, typer.Option("--until", help="Unix seconds or ISO time.")] = None,
    limit: Annotated[int, typer.Option("--limit", help="Entries per page.")] = 100,
    all_pages: Annotated[bool, typer.Option("--all", help="Every page, not only the first.")] = False,
    cursor: Annotated[str | None, typer.Option("--cursor", help="Continue from a previous page's cursor.")] = None,
) -> None:
    """Every mutating call, secrets removed (admin token)."""
    st = state(ctx)
    tenant_id, since_ts, until_ts = st.tenant(tenant), timestamp(since), timestamp(until)
    next_cursor = None
    with st.client() as c:
        if all_pages:
            entries = plain(list(c.iter_command_log(tenant_id, since_ts, until_ts, limit=limit)))
        else:
            page = c.command_log(tenant_id, since_ts, until_ts, limit=limit, cursor=cursor)
            entries = plain(page.commands)
            next_cursor = page.next_cursor
    rows = [{**e, "when": when(e.get("command_ts")), "body": e.get("payload")} for e in entries]
    st.out.table(
        rows,
        ["when", "endpoint", "tenant_id", "response_status", "body"],
        title="Command log",
        data={"commands": entries, "next_cursor": next_cursor},
    )
    if next_cursor and not st.out.as_json:
        st.out.note(f"more: gmp command-log --cursor {next_cursor}  (or --all)")


# ------------------------------------------------------------------------------------------------ send


FINAL = {"sent", "error"}


@app.command()
def send(
    ctx: typer.Context,
    eml: Annotated[Path | None, typer.Argument(help="An .eml file to send (flags override its headers).")] = None,
    to: Annotated[list[str] | None, typer.Option("--to", help="Recipient (repeatable, or comma-separated).")] = None,
    cc: Annotated[list[str] | None, typer.Option("--cc")] = None,
    bcc: Annotated[list[str] | None, typer.Option("--bcc")] = None,
    sender: Annotated[str | None, typer.Option("--from", help="Sender, e.g. 'Shop <noreply@shop.test>'.")] = None,
    reply_to: Annotated[str | None, typer.Option("--reply-to")] = None,
    subject: Annotated[str | None, typer.Option("--subject")] = None,
    body: Annotated[str | None, typer.Option("--body", help="Plain-text body.")] = None,
    body_file: Annotated[
        Path | None, typer.Option("--body-file", help="Plain-text body from a file ('-': stdin).")
    ] = None,
    html_file: Annotated[Path | None, typer.Option("--html-file", help="HTML body from a file.")] = None,
    attach: Annotated[list[Path] | None, typer.Option("--attach", help="File to attach (repeatable).")] = None,
    attach_upload: Annotated[
        list[str] | None,
        typer.Option("--attach-upload", help="A file of gmp files upload: upload:<id>=<name> (repeatable)."),
    ] = None,
    account: Annotated[
        str | None, typer.Option("--account", "-a", help="Sending account (default: the profile's).")
    ] = None,
    tenant: TenantOpt = None,
    message_id: Annotated[str | None, typer.Option("--id", help="Message id (default: a new gmp-<uuid>).")] = None,
    priority: Annotated[str | None, typer.Option("--priority", help="0-3 or immediate/high/medium/low.")] = None,
    batch: Annotated[str | None, typer.Option("--batch", help="Batch code, for suspend/activate.")] = None,
    at: Annotated[str | None, typer.Option("--at", help="Not before this time (unix seconds or ISO).")] = None,
    header: Annotated[
        list[str] | None, typer.Option("--header", help="Extra header 'Name: value' (repeatable).")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Follow the message until it is sent or fails.")] = False,
    wait_timeout: Annotated[float, typer.Option("--wait-timeout", help="Seconds --wait waits.")] = 300.0,
) -> None:
    """Send a message from flags or an .eml file; prints its id."""
    st = state(ctx)
    draft = compose.from_eml(eml) if eml is not None else compose.Draft()
    if sum(x is not None for x in (body, body_file, html_file)) > 1:
        raise CliError("give one of --body, --body-file, --html-file (the API carries one body)")
    if sender:
        draft.sender = sender
    if to:
        draft.to = compose.addresses(to)
    if cc:
        draft.cc = compose.addresses(cc)
    if bcc:
        draft.bcc = compose.addresses(bcc)
    if reply_to:
        draft.reply_to = reply_to
    if subject:
        draft.subject = subject
    if body is not None:
        draft.body, draft.content_type = body, "plain"
    elif body_file is not None:
        draft.body, draft.content_type = _read_text(body_file), "plain"
    elif html_file is not None:
        draft.body, draft.content_type = _read_text(html_file), "html"
    for path in attach or []:
        draft.attachments.append(compose.attach_file(path))
    for reference in attach_upload or []:
        draft.attachments.append(compose.upload_attachment(reference))
    for warning in draft.warnings:
        st.out.note(f"gmp: warning: {warning}")
    account_id = st.account(account)
    if not account_id:
        raise CliError("which account? give --account (or a profile with one)")
    headers: dict[str, str] = {}
    for item in header or []:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise CliError(f"--header {item!r}: expected 'Name: value'")
        headers[name.strip()] = value.strip()
    mid = message_id or compose.new_id()
    tenant_id = st.tenant(tenant)
    message = compose.build(
        draft,
        message_id=mid,
        account_id=account_id,
        tenant_id=tenant_id,
        extra={
            "priority": int(priority) if priority and priority.isdigit() else priority,
            "batch_code": batch,
            "deferred_ts": timestamp(at),
            "headers": headers or None,
            "message_id": draft.message_id,
        },
    )
    with st.client() as c:
        result = plain(c.add_messages([message]))
        rejected = result.get("rejected") or []
        if rejected:
            reasons = "; ".join(f"{r.get('id')}: {r.get('reason')}" for r in rejected)
            fail(f"rejected: {reasons}", EXIT_API)
        if not wait:
            st.out.result({"id": mid, "queued": result.get("queued")}, mid)
            return
        if not st.out.as_json:
            st.out.console.print(mid, highlight=False, markup=False)
        record = _follow(st, c, mid, tenant_id, wait_timeout)
    status = record.get("status")
    st.out.result(
        {"id": mid, "status": status, "sent_ts": record.get("sent_ts"), "error": record.get("error")},
        None,
    )
    if status == "sent":
        if not st.out.as_json:
            st.out.note(f"sent at {when(record.get('sent_ts'))}")
        return
    if status == "error":
        fail(f"message {mid} failed: {record.get('error')}", EXIT_MESSAGE_FAILED)
    fail(f"message {mid} still {status} after {wait_timeout:g} s", EXIT_WAIT_TIMEOUT)


def _read_text(path: Path) -> str:
    try:
        return sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read {path}: {exc}") from exc


def _follow(st: State, c: Client, message_id: str, tenant_id: str | None, timeout: float) -> dict[str, Any]:
    """Poll the message until it is sent or failed (or `timeout` passes): its last record."""
    deadline = time.monotonic() + timeout
    last_status = None
    record: dict[str, Any] = {"status": "unknown"}
    while True:
        try:
            record = plain(c.get_message(message_id, tenant_id=tenant_id))
        except NotFoundError:
            record = {"status": "unknown"}
        status = record.get("status")
        if status != last_status and not st.out.as_json:
            st.out.note(f"{message_id}: {status}")
        last_status = status
        if status in FINAL or time.monotonic() >= deadline:
            return record
        time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))


# ------------------------------------------------------------------------------------------------ status, top


@dataclass
class Reading:
    """One look at the service: health, /status, /metrics."""

    at: float
    healthy: bool
    health_error: str | None
    status: dict[str, Any] | None
    status_error: str | None
    metrics: prom.Snapshot | None
    metrics_error: str | None

    def as_dict(self, rates: dict[tuple[str, str], float] | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {
            "at": self.at,
            "health": {"ok": self.healthy, "error": self.health_error},
            "status": self.status,
            "status_error": self.status_error,
            "metrics": self.metrics.as_dict() if self.metrics else None,
            "metrics_error": self.metrics_error,
        }
        if rates is not None and data["metrics"]:
            for row in data["metrics"]["accounts"]:
                row["sent_per_second"] = rates.get((row["tenant_id"], row["account_id"]), 0.0)
        return data


def _attempt(call: Callable[[], Any]) -> tuple[Any, str | None]:
    """The call's result, or the API's refusal as text (an unreachable server still raises)."""
    try:
        return call(), None
    except ApiError as exc:
        return None, describe(exc)


def read_service(st: State, c: Client) -> Reading:
    """Health, /status and /metrics; a failure of one of the last two is shown, not fatal."""
    health, health_error = _attempt(c.health)
    healthy = health is not None and bool(health)
    if health is not None and not healthy:
        health_error = f"/health answered {plain(health)}"
    status, status_error = _attempt(c.status)
    text, metrics_error = _attempt(lambda: c.metrics_text(metrics_token=st.metrics_token()))
    return Reading(
        at=time.time(),
        healthy=healthy,
        health_error=health_error,
        status=plain(status) if status is not None else None,
        status_error=status_error,
        metrics=prom.snapshot(text) if text is not None else None,
        metrics_error=metrics_error,
    )


def render(reading: Reading, url: str, rates: dict[tuple[str, str], float] | None = None) -> Group:
    """The one screen of `gmp status` (and each refresh of `gmp top`, with rates)."""
    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="bold")
    summary.add_column()
    summary.add_row("server", url)
    summary.add_row("health", "ok" if reading.healthy else f"DOWN: {reading.health_error}")
    if reading.status is not None:
        s = reading.status
        summary.add_row("active", cell(s.get("active")))
        summary.add_row("scheduler", cell(s.get("scheduler_active")))
        summary.add_row("pending", cell(s.get("pending_messages")))
        summary.add_row("uptime", f"{s.get('uptime_seconds')} s")
    else:
        summary.add_row("status", f"unavailable: {reading.status_error}")
    snap = reading.metrics
    parts: list[Any] = [summary]
    if snap is None:
        summary.add_row("metrics", f"unavailable: {reading.metrics_error}")
        return Group(*parts)
    if snap.dead_letters is not None:
        summary.add_row("dead letters", f"{snap.dead_letters:g}")
    if snap.scheduler_last_run:
        summary.add_row("scheduler ran", f"{max(0.0, reading.at - snap.scheduler_last_run):.0f} s ago")
    accounts = Table(title="Accounts", header_style="bold")
    headings = ["tenant", "account", "sent", "errors", "deferred", "rate limited"]
    if rates is not None:
        headings.append("sent/min")
    for heading in headings:
        accounts.add_column(heading, justify="left" if heading in ("tenant", "account") else "right")
    for (tenant_id, account_id), figures in sorted(snap.accounts.items()):
        row = [tenant_id, account_id] + [f"{figures[k]:g}" for k in ("sent", "errors", "deferred", "rate_limited")]
        if rates is not None:
            row.append(f"{rates.get((tenant_id, account_id), 0.0) * 60:.1f}")
        accounts.add_row(*row)
    parts.append(accounts)
    backlog = Table(title="Tenants: pending and report backlog", header_style="bold")
    for heading in ("tenant", "pending", "report failures", "last report acknowledged"):
        backlog.add_column(heading, justify="left" if heading == "tenant" else "right")
    for tenant_id, figures in sorted(snap.tenants.items()):
        backlog.add_row(
            tenant_id,
            f"{figures['pending']:g}" if "pending" in figures else "",
            f"{figures['report_failures']:g}" if "report_failures" in figures else "",
            when(figures.get("report_last_success")),
        )
    parts.append(backlog)
    return Group(*parts)


def _server_url(st: State) -> str:
    profile = st.profile()
    return st.url or (profile.url if profile else "")


@app.command()
def status(ctx: typer.Context) -> None:
    """Health, pending, sent/errors per account and the report backlog, as one screen."""
    st = state(ctx)
    with st.client() as c:
        reading = read_service(st, c)
    if st.out.as_json:
        st.out.json(reading.as_dict())
    else:
        st.out.console.print(render(reading, _server_url(st)))
    if not reading.healthy:
        raise typer.Exit(EXIT_API)


@app.command()
def top(
    ctx: typer.Context,
    interval: Annotated[float, typer.Option("--interval", "-n", help="Seconds between refreshes.")] = 2.0,
    iterations: Annotated[
        int, typer.Option("--iterations", help="Stop after this many refreshes (0: until Ctrl-C).")
    ] = 0,
) -> None:
    """`gmp status`, refreshed live, with send rates per account (--json: one JSON line per refresh)."""
    from rich.live import Live

    st = state(ctx)
    url = _server_url(st)
    previous: Reading | None = None
    count = 0
    with st.client() as c:
        live = None if st.out.as_json else Live(console=st.out.console, auto_refresh=False, transient=False)
        try:
            if live is not None:
                live.start()
            while True:
                reading = read_service(st, c)
                rates = (
                    prom.rates(previous.metrics, reading.metrics, reading.at - previous.at)
                    if previous and previous.metrics and reading.metrics
                    else {}
                )
                if live is None:
                    sys.stdout.write(json.dumps(reading.as_dict(rates), default=str) + "\n")
                    sys.stdout.flush()
                else:
                    live.update(render(reading, url, rates), refresh=True)
                previous = reading
                count += 1
                if iterations and count >= iterations:
                    return
                time.sleep(interval)
        except KeyboardInterrupt:
            return
        finally:
            if live is not None:
                live.stop()


def main() -> None:
    """The `gmp` console script (and `python -m gmp_client.cli`)."""
    app(prog_name="gmp")
