"""Profiles: a named server URL and where its token lives, stored as JSON under the user's config directory.

The file never holds a token. A profile names either an environment variable (`token_env`) or a keyring entry
(`keyring: true`, service `gmp`, user = the profile's name) that holds it. The directory is
`$GMP_CONFIG_DIR` when set, else platformdirs' user config directory for `gmp` (which honours `XDG_CONFIG_HOME`).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

KEYRING_SERVICE = "gmp"
DEFAULT_TOKEN_ENV = "GMP_API_TOKEN"
PROFILE_FIELDS = ("url", "token_env", "keyring", "tenant", "account", "metrics_token_env")


class CliError(Exception):
    """A failure the CLI reports as one line and an exit code (2: usage or configuration, by default)."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class Profile:
    """Where a server is and how to find its token; never the token itself."""

    name: str
    url: str
    token_env: str | None = None
    keyring: bool = False
    tenant: str | None = None
    account: str | None = None
    metrics_token_env: str | None = None

    def public(self) -> dict[str, Any]:
        """What `gmp profile list/show` prints (no secret: the token's location only)."""
        return asdict(self)


@dataclass
class Config:
    """The whole profiles file."""

    default: str | None = None
    profiles: dict[str, Profile] = field(default_factory=dict)


def config_dir() -> Path:
    """`$GMP_CONFIG_DIR`, else the platform's user config directory for gmp."""
    override = os.environ.get("GMP_CONFIG_DIR")
    if override:
        return Path(override)
    import platformdirs

    return Path(platformdirs.user_config_dir("gmp", appauthor=False))


def config_path() -> Path:
    """The profiles file."""
    return config_dir() / "profiles.json"


def load() -> Config:
    """The stored profiles (an empty config when there is no file yet)."""
    path = config_path()
    if not path.exists():
        return Config()
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        profiles = {
            name: Profile(name=name, **{k: v for k, v in body.items() if k in PROFILE_FIELDS})
            for name, body in raw.get("profiles", {}).items()
        }
    except (ValueError, TypeError, AttributeError) as exc:
        raise CliError(f"cannot read {path}: {exc}") from exc
    return Config(default=raw.get("default"), profiles=profiles)


def save(config: Config) -> Path:
    """Write the profiles file (mode 0600: it names where secrets are, though it holds none)."""
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {
        "default": config.default,
        "profiles": {
            name: {k: v for k, v in asdict(p).items() if k != "name" and v not in (None, False)}
            for name, p in sorted(config.profiles.items())
        },
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
    os.chmod(tmp, 0o600)
    tmp.replace(path)
    return path


def store_in_keyring(profile: str, token: str) -> None:
    """Put a profile's token in the system keyring; a CliError when no backend keeps it."""
    try:
        import keyring
        from keyring.errors import KeyringError
    except ImportError as exc:
        raise CliError("the keyring package is not installed: use --token-env") from exc
    try:
        keyring.set_password(KEYRING_SERVICE, profile, token)
        kept = keyring.get_password(KEYRING_SERVICE, profile)
    except KeyringError as exc:
        raise CliError(f"no usable keyring ({exc}): use --token-env") from exc
    if kept != token:
        raise CliError("no usable keyring backend (the token was not kept): use --token-env")


def forget_keyring(profile: str) -> None:
    """Remove a profile's keyring entry, if any (no error without one or without a backend)."""
    try:
        import keyring

        keyring.delete_password(KEYRING_SERVICE, profile)
    except Exception:
        pass


def token_of(profile: Profile | None) -> str | None:
    """The token a profile points at (its env var, or its keyring entry), else `$GMP_API_TOKEN`."""
    if profile is not None and profile.keyring:
        try:
            import keyring
            from keyring.errors import KeyringError
        except ImportError as exc:
            raise CliError(f"profile {profile.name!r} keeps its token in the keyring, which is not installed") from exc
        try:
            token = keyring.get_password(KEYRING_SERVICE, profile.name)
        except KeyringError as exc:
            raise CliError(f"cannot read the keyring: {exc}") from exc
        if not token:
            raise CliError(f"no token in the keyring for profile {profile.name!r} (gmp profile add it again)")
        return token
    variable = (profile.token_env if profile else None) or DEFAULT_TOKEN_ENV
    return os.environ.get(variable) or None
