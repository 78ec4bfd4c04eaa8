"""The contract suite: every port behaviour, run against both adapters.

`stores` is the adapter under test: the SQLite one over a fresh database file, and the AWS one over the
template's resources in moto (`aws_env`). A test here states what a use case may rely on, whichever
runtime it runs in.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from mailproxy.stores import Stores

ADAPTERS = ("sqlite", "aws")


@pytest.fixture(params=ADAPTERS)
def adapter(request: pytest.FixtureRequest) -> str:
    """The name of the adapter under test."""
    return str(request.param)


@pytest.fixture
def stores(
    adapter: str, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Stores]:
    """The ports of the adapter under test, over empty storage."""
    from mailproxy import stores as registry
    from mailproxy.settings import get_settings

    if adapter == "aws":
        request.getfixturevalue("aws_env")
        from mailproxy.adapters.aws import aws_stores

        yield aws_stores()
        return
    monkeypatch.setenv("GMP_STORAGE", "sqlite")
    monkeypatch.setenv("GMP_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    registry.reset()
    from mailproxy.adapters.sqlite import sqlite_stores

    made = sqlite_stores()
    yield made
    registry.reset()
    get_settings.cache_clear()
