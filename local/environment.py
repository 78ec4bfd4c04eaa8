"""Changes to os.environ that can be undone, so an in-process stack leaves the test process as it found it."""

from __future__ import annotations

import os
import secrets
import sys


class EnvironmentPatch:
    """Sets environment variables and remembers the previous values for `restore()`."""

    def __init__(self) -> None:
        self._saved: dict[str, str | None] = {}

    def _remember(self, key: str) -> None:
        if key not in self._saved:
            self._saved[key] = os.environ.get(key)

    def set(self, key: str, value: str) -> None:
        """Set `key` to `value`."""
        self._remember(key)
        os.environ[key] = value

    def setdefault(self, key: str, value: str) -> str:
        """Set `key` unless the user already gave it a non-empty value; return the value in force."""
        current = os.environ.get(key, "")
        if current.strip():
            return current
        self.set(key, value)
        return value

    def unset(self, key: str) -> None:
        """Remove `key` from the environment."""
        self._remember(key)
        os.environ.pop(key, None)

    def restore(self) -> None:
        """Put back every variable this patch changed."""
        for key, value in self._saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved.clear()


def reset_package_caches() -> None:
    """A cold start for the package: every cached factory of `mailproxy` (settings, stores, clients, the admin
    token...) reads the environment again, also when one test process starts several services in turn."""
    for name, module in list(sys.modules.items()):
        if name != "mailproxy" and not name.startswith("mailproxy."):
            continue
        for value in list(vars(module).values()):
            if isinstance(value, type):
                continue  # a cache class's own method; its instances are cleared
            if getattr(value, "__module__", None) == name and callable(getattr(value, "cache_clear", None)):
                value.cache_clear()


# The SMTP sink and a developer's callback listen on loopback: the outbound guard lets them through locally.
LOCAL_ALLOWED_NETWORKS = "127.0.0.0/8,::1/128"


def admin_token(patch: EnvironmentPatch, given: str | None) -> tuple[str, bool]:
    """The local admin token: `given`, else GMP_API_TOKEN, else one generated (and set for the package);
    whether it was generated (the banner then shows it)."""
    if given:
        patch.set("GMP_API_TOKEN", given)
    token = os.environ.get("GMP_API_TOKEN", "").strip()
    if token:
        return token, False
    token = secrets.token_urlsafe(32)
    patch.set("GMP_API_TOKEN", token)
    return token, True


def admin_token_line(token: str, generated: bool) -> str:
    """The banner's line about the admin token: shown only when it was generated."""
    shown, note = (
        (token, "generated; set GMP_API_TOKEN to choose it") if generated else ("(hidden)", "from GMP_API_TOKEN")
    )
    return f"  Admin token   {shown}   ({note}; header X-API-Token)"
