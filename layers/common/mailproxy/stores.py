"""The one place a use case gets its ports: the adapter `GMP_STORAGE` names, made once per process."""

from __future__ import annotations

import functools

from mailproxy.ports import Stores
from mailproxy.settings import get_settings


@functools.cache
def stores() -> Stores:
    """The ports of this process: the AWS adapter (Lambda, the AWS-fidelity local mode) or SQLite (`make run`)."""
    if get_settings().storage == "sqlite":
        from mailproxy.adapters.sqlite import sqlite_stores

        return sqlite_stores()
    from mailproxy.adapters.aws import aws_stores

    return aws_stores()


def reset() -> None:
    """Forget the ports made (tests that change GMP_STORAGE or its settings)."""
    stores.cache_clear()
